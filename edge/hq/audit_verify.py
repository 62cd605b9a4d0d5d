"""``alpr-edge hq audit verify``: every unit's access record as received, and headquarters' own, checked end to end.

A unit's entries (table ``audit``, the unit's AuditEntry.to_json documents) are checked in sequence order with
edge.access.audit.verify_chain against the unit's registered public key (devices.audit_key): an entry altered at
headquarters or on the way, a bad signature, entries missing in the middle (deleted on the unit before it synced,
or lost), a duplicated or out-of-place entry. Entries after the last one received are simply not here yet: a chain
that ends early is not a problem. A unit whose entries arrived but whose key was never registered cannot be
verified, and says so (it never passes silently). Headquarters' own chain (hq_audit) is checked against its public
key. Nothing here shows plate data, so it needs no login; it reads only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..access.audit import Problem, load_public_pem
from ..hotlist import bundle as hlb
from . import schema
from .access import AUDIT_COLUMNS, SignerError, add_signing_key_arg, load_hq_signer, row_to_json, verify_entries

HQ = "headquarters"

# the unit's entries in sequence order; a seq that is not a number (tampered) sorts first instead of failing the query
_UNIT_ENTRIES = """
SELECT data FROM audit WHERE device_id = %s
ORDER BY CASE WHEN jsonb_typeof(data->'seq') = 'number' THEN (data->>'seq')::numeric END NULLS FIRST,
         received_at, uuid
"""


class VerifyError(RuntimeError):
    """The verification could not run (database, arguments); the message says why."""


@dataclass(frozen=True)
class ChainReport:
    """One chain's verdict: a unit's (``source`` "device") or headquarters' own (``source`` "hq")."""

    source: str
    name: str
    entries: int
    first_seq: int | None
    last_seq: int | None
    verifiable: bool
    problems: tuple[Problem, ...]
    note: str = ""  # why it cannot be verified

    @property
    def ok(self) -> bool:
        return self.verifiable and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "name": self.name,
            "entries": self.entries,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "verifiable": self.verifiable,
            "ok": self.ok,
            "note": self.note,
            "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in self.problems],
        }


def _seq_range(docs: Sequence[Mapping[str, Any]]) -> tuple[int | None, int | None]:
    seqs = [d.get("seq") for d in docs if isinstance(d, Mapping)]
    ints = [s for s in seqs if isinstance(s, int) and not isinstance(s, bool)]
    return (min(ints), max(ints)) if ints else (None, None)


def verify_device(conn: psycopg.Connection, device: str, audit_key: str | None) -> ChainReport:
    """One unit's chain as received."""
    docs: list[Mapping[str, Any]] = [r[0] for r in conn.execute(_UNIT_ENTRIES, (device,)).fetchall()]
    first, last = _seq_range(docs)
    if audit_key is None:
        note = "no audit key registered" if docs else "nothing received, no audit key registered"
        if docs:
            note += f" (alpr-edge hq devices register {device} --audit-key PEM_FILE)"
        return ChainReport("device", device, len(docs), first, last, not docs, (), note)
    try:
        key = load_public_pem(audit_key)
    except ValueError as e:
        return ChainReport("device", device, len(docs), first, last, False, (), f"registered audit key: {e}")
    result = verify_entries(docs, key)
    return ChainReport("device", device, result.entries, first, last, True, result.problems)


def verify_hq(conn: psycopg.Connection, public_key: Ed25519PublicKey | None) -> ChainReport:
    """Headquarters' own chain, in seq order."""
    rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM hq_audit ORDER BY seq").fetchall()
    docs = [row_to_json(r) for r in rows]
    first, last = _seq_range(docs)
    if public_key is None:
        verifiable = not docs
        note = "" if verifiable else "no public key: give --public-key or --signing-key"
        return ChainReport("hq", HQ, len(docs), first, last, verifiable, (), note)
    result = verify_entries(docs, public_key)
    return ChainReport("hq", HQ, result.entries, first, last, True, result.problems)


def device_keys(conn: psycopg.Connection, device: str | None = None) -> dict[str, str | None]:
    """Every unit known to headquarters (registered, or with entries received) and its audit key."""
    rows = conn.execute(
        "SELECT device_id, audit_key FROM devices UNION "
        "SELECT DISTINCT a.device_id, NULL FROM audit a WHERE NOT EXISTS "
        "(SELECT 1 FROM devices d WHERE d.device_id = a.device_id) ORDER BY 1"
    ).fetchall()
    keys = {str(r[0]): r[1] for r in rows}
    if device is not None:
        if device not in keys:
            raise VerifyError(f"no device {device!r} at headquarters (no entries received, no key registered)")
        return {device: keys[device]}
    return keys


def verify_all(
    conn: psycopg.Connection, *, device: str | None = None, hq_public_key: Ed25519PublicKey | None = None,
    include_hq: bool = True,
) -> list[ChainReport]:  # fmt: skip
    """Each unit's chain (or just ``device``'s), then headquarters' own (unless a single device was asked for)."""
    reports = [verify_device(conn, d, k) for d, k in device_keys(conn, device).items()]
    if include_hq and device is None:
        reports.append(verify_hq(conn, hq_public_key))
    return reports


def _hq_public_key(args: argparse.Namespace) -> Ed25519PublicKey | None:
    """--public-key, else derived from the signing key when one is configured, else None."""
    if args.public_key is not None:
        try:
            return hlb.load_public_key(args.public_key)
        except hlb.BundleError as e:
            raise VerifyError(str(e)) from e
    try:
        return load_hq_signer(args).public_key()
    except SignerError as e:
        if args.signing_key is not None:
            raise VerifyError(str(e)) from e
        return None  # no key configured: reported as unverifiable if headquarters has entries


def _print_text(reports: list[ChainReport]) -> None:
    for r in reports:
        label = f"device {r.name}" if r.source == "device" else r.name
        span = f" (seq {r.first_seq}..{r.last_seq})" if r.first_seq is not None else ""
        if not r.verifiable:
            print(f"{label}: {r.entries} entries{span}: UNVERIFIABLE: {r.note}")
        elif r.problems:
            print(f"{label}: {r.entries} entries{span}: {len(r.problems)} problem(s)")
            for p in r.problems:
                print(f"  seq {p.seq}: {p.kind}: {p.message}")
        else:
            extra = f" ({r.note})" if r.note else ""
            print(f"{label}: {r.entries} entries{span}: chain intact{extra}")


def cmd_verify(args: argparse.Namespace) -> int:
    from .commands import HqError, _connect_db

    try:
        hq_key = None if args.device else _hq_public_key(args)
        with _connect_db(args) as conn:
            if schema.current_version(conn) < 2:
                raise VerifyError("the headquarters database predates the access record: run alpr-edge hq migrate")
            reports = verify_all(conn, device=args.device, hq_public_key=hq_key)
    except (VerifyError, HqError, schema.SchemaError, psycopg.Error) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    if args.json:
        for r in reports:
            print(json.dumps(r.to_json()))
    else:
        _print_text(reports)
    bad = [r for r in reports if not r.ok]
    if bad:
        print(f"alpr-edge: {len(bad)} of {len(reports)} access record(s) did not verify", file=sys.stderr)
    return 1 if bad else 0


def register(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``verify`` to the ``hq audit`` group."""
    from .commands import add_db_url_arg

    v = asub.add_parser(
        "verify",
        help="verify every unit's access record as received, and headquarters' own",
        description="Check each unit's access record (issue 7, P13) as received against the unit's registered "
        "public key: altered entries, bad signatures, entries missing in the middle (deleted before sync or lost), "
        "duplicated or out-of-place entries. Entries after the last one received are not yet here, not a problem. "
        "A unit with entries but no registered key is reported as unverifiable. Then headquarters' own record "
        "against its public key. Exit status 0 only if every record verifies, 1 if any does not, 2 on errors.",
    )
    v.add_argument("--device", default=None, help="check only this unit's record (headquarters' own is skipped)")
    v.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="headquarters' public key (PEM) for its own record (default: derived from the signing key)",
    )
    add_signing_key_arg(v)
    v.add_argument("--json", action="store_true", help="one JSON object per record instead of text")
    add_db_url_arg(v)
    v.set_defaults(func=cmd_verify)
