"""``alpr-edge hq devices retire DEVICE --reason TEXT`` and ``hq devices reinstate DEVICE --reason TEXT``.

A unit taken out of service would otherwise be flagged NOT REPORTING (and OVERDUE) forever. Its registry row cannot
be deleted: reads, hits, holds and its access record name it, and its audit key still verifies that record. So
retiring only marks the row (``retired_at``, ``retired_by``, ``retired_reason``, HQ migration 6); the listings hide
or label it, and ingest keeps storing whatever it still sends (evidence is never dropped) with a warning. Each change
is recorded in headquarters' own access record, by the server's administrator (as registrations are,
edge.hq.device_keys), atomically with the change.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from ..access.audit import AuditError
from ..sync import protocol
from .access import HqAuditLog, SignerError, add_signing_key_arg, load_hq_signer
from .device_keys import ADMIN

MIN_REASON = 3
MAX_REASON = 400
_CONTROL = ("Cc", "Cf", "Cs", "Zl", "Zp")  # controls, invisible formatting (bidi overrides), line breaks


class RetireError(ValueError):
    """Nothing was changed; the message names the field at fault or the state that prevents it."""


@dataclass(frozen=True)
class Retirement:
    device: str
    outcome: str  # "retired", "reinstated" or "unchanged"
    retired_at: float | None  # in force after the call (None: in service)
    retired_by: str | None
    reason: str | None


def check_device(device: str) -> str:
    try:
        return protocol.check_device(device)
    except protocol.ProtocolError as e:
        raise RetireError(f"DEVICE: {e}") from e


def check_reason(reason: str) -> str:
    """A reason that reads the same in a terminal, a log and the access record: bounded, one line, visible."""
    text = reason.strip()
    if len(text) < MIN_REASON or len(text) > MAX_REASON:
        raise RetireError(f"--reason: {MIN_REASON} to {MAX_REASON} characters, got {len(text)}")
    bad = next((i for i, c in enumerate(text) if unicodedata.category(c) in _CONTROL), None)
    if bad is not None:
        raise RetireError(f"--reason: no control characters (one at position {bad + 1})")
    return text


def _locked_row(conn: psycopg.Connection, device: str) -> tuple[float | None, str | None, str | None]:
    row = conn.execute(
        "SELECT retired_at, retired_by, retired_reason FROM devices WHERE device_id = %s FOR UPDATE", (device,)
    ).fetchone()
    if row is None:
        raise RetireError(f"DEVICE: no device {device!r} in the registry")
    return row[0], row[1], row[2]


def retire(conn: psycopg.Connection, audit: HqAuditLog, device: str, reason: str, *, now: float) -> Retirement:
    """Mark ``device`` retired and record it, in one transaction; "unchanged" (nothing recorded) when it already is."""
    device, reason = check_device(device), check_reason(reason)
    by = getpass.getuser()
    with conn.transaction():
        at, old_by, old_reason = _locked_row(conn, device)
        if at is not None:
            return Retirement(device, "unchanged", at, old_by, old_reason)
        conn.execute(
            "UPDATE devices SET retired_at = %s, retired_by = %s, retired_reason = %s WHERE device_id = %s",
            (now, by, reason, device),
        )
        audit.record(*ADMIN, "device.retire", reason=reason, detail={"device": device, "os_user": by})
    return Retirement(device, "retired", now, by, reason)


def reinstate(conn: psycopg.Connection, audit: HqAuditLog, device: str, reason: str) -> Retirement:
    """Put a retired ``device`` back in service and record it (with when it was retired), in one transaction."""
    device, reason = check_device(device), check_reason(reason)
    with conn.transaction():
        at, old_by, old_reason = _locked_row(conn, device)
        if at is None:
            return Retirement(device, "unchanged", None, None, None)
        conn.execute(
            "UPDATE devices SET retired_at = NULL, retired_by = NULL, retired_reason = NULL WHERE device_id = %s",
            (device,),
        )
        detail = {"device": device, "os_user": getpass.getuser(), "retired_at": at, "retired_by": old_by,
                  "retired_reason": old_reason}  # fmt: skip
        audit.record(*ADMIN, "device.reinstate", reason=reason, detail=detail)
    return Retirement(device, "reinstated", None, None, None)


# -- the commands -------------------------------------------------------------------------------------------------


def _message(r: Retirement) -> str:
    if r.outcome == "retired":
        return f"{r.device}: retired (recorded); its data is kept, and it is hidden from 'hq devices' without --all"
    if r.outcome == "reinstated":
        return f"{r.device}: back in service (recorded)"
    if r.retired_at is not None:
        return f"{r.device}: already retired by {r.retired_by} ({r.reason}); nothing changed"
    return f"{r.device}: not retired; nothing changed"


def _run(args: argparse.Namespace, change: Callable[[psycopg.Connection, HqAuditLog], Retirement]) -> int:
    """Check the arguments before anything is opened, then make the change; exit 2 with the reason on refusal."""
    from .commands import HqError, _connect_db

    try:
        check_device(args.device)
        check_reason(args.reason)
        signer = load_hq_signer(args)
        with _connect_db(args) as conn:
            got = change(conn, HqAuditLog(conn, signer))
    except (RetireError, SignerError, AuditError, HqError, psycopg.Error) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    print(_message(got))
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    return _run(args, lambda conn, audit: retire(conn, audit, args.device, args.reason, now=time.time()))


def cmd_reinstate(args: argparse.Namespace) -> int:
    return _run(args, lambda conn, audit: reinstate(conn, audit, args.device, args.reason))


def _add(
    dsub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_: str,
    desc: str,
) -> None:
    from .commands import add_db_url_arg

    p = dsub.add_parser(name, help=help_, description=desc)
    p.add_argument("device", metavar="DEVICE", help="the unit's device id, as registered")
    p.add_argument(
        "--reason",
        required=True,
        help=f"why, {MIN_REASON} to {MAX_REASON} characters on one line (kept in the access record)",
    )
    add_signing_key_arg(p)
    add_db_url_arg(p, under_devices=True)
    p.set_defaults(func=func)


def add_retire(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retire`` and ``reinstate`` under ``hq devices``."""
    _add(
        dsub,
        "retire",
        cmd_retire,
        "mark a unit taken out of service (its data is kept; recorded)",
        "Mark a registered unit as taken out of service. Nothing is deleted: its reads, hits, holds and access "
        "record stay, and its audit key still verifies that record. 'hq devices' and 'hq devices status' then "
        "hide it (give --all to list it, shown as RETIRED) and never flag it OVERDUE or NOT REPORTING. Anything it "
        "still sends is stored all the same (evidence is never dropped) and each batch or new status logs a "
        "warning naming the unit. Recorded in headquarters' own access record, signed with headquarters' key.",
    )
    _add(
        dsub,
        "reinstate",
        cmd_reinstate,
        "put a retired unit back in service (recorded)",
        "Undo 'hq devices retire': the unit is listed and flagged again like any other. Recorded in headquarters' "
        "own access record (with when and why it had been retired), signed with headquarters' key.",
    )
