"""``alpr-edge evidence hold|release|list|export|verify`` and ``alpr-edge purge``: P10 on the unit's command line.

Every command but ``verify`` logs in (edge.access.session) and is recorded in the access record; ``verify`` needs
nothing but the export and, to know who signed it, the signer's public key, so it runs on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import config
from .access.audit import AuditError, load_signing_key
from .access.session import AccessDenied, Session, add_login_args, cli_login, open_unit
from .access.users import AuthError
from .evidence import DETAIL_UUIDS, Evidence, Hold
from .evidence_format import EvidenceError, iso_utc, load_public_pem, summary, verify_export
from .store.commands import _resolve, _store_args, resolve_audit_key
from .store.db import Connection
from .store.errors import StoreError
from .store.retention import PurgeResult, purge

RETENTION_HELP = (
    "Reads older than store.retention_days (default 30) are purged with their images, hits and outcomes, once "
    "headquarters has acknowledged all of them, unless held (P10). A hit that matters (a confirmed stop, an arrest) "
    "must be held as evidence before then, or it goes with its read."
)


def _settings(args: argparse.Namespace) -> config.Config | None:
    return config.load(args.config) if getattr(args, "config", None) is not None else None


def _signer(args: argparse.Namespace) -> Ed25519PrivateKey:
    """The unit's audit key signs exports: one key for the record and the evidence, registered at headquarters."""
    return load_signing_key(resolve_audit_key(args))


def _device_id(args: argparse.Namespace) -> str:
    cfg = _settings(args)
    return cfg.unit.id if cfg else config.UnitConfig().id


def _session(args: argparse.Namespace, what: str, body: Callable[[Session, Connection], int]) -> int:
    """Open the unit, log in for ``what``, run ``body``; every refusal is one line on stderr and exit status 2."""
    conn: Connection | None = None
    try:
        conn, audit = open_unit(args)
        session = cli_login(args, conn, audit, what)
        return body(session, conn)
    except (AuthError, AccessDenied, AuditError, StoreError, EvidenceError, ValueError, OSError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)  # HoldError, PurposeError, ConfigError are ValueErrors
        return 2
    finally:
        if conn is not None:
            conn.close()


def _db_path(args: argparse.Namespace) -> Path:
    return _resolve(args)[0]


def holds_detail(holds: list[Hold]) -> dict[str, Any]:
    """The access-record detail of a hold or release (the first few uuids: a case may hold thousands)."""
    return {
        "case_number": holds[0].case_number,
        "read_uuids": sorted({h.read_uuid for h in holds})[:DETAIL_UUIDS],
        "hold_uuids": [h.uuid for h in holds][:DETAIL_UUIDS],
        "count": len(holds),
    }


def cmd_hold(args: argparse.Namespace) -> int:
    def body(s: Session, conn: Connection) -> int:
        ev = Evidence(conn, _db_path(args))

        def record(holds: list[Hold]) -> None:
            s.record(
                "evidence.hold",
                reason=f"case {args.case}: {args.reason}",
                detail=holds_detail(holds),
            )

        holds = ev.hold(args.read_uuids, args.case, args.reason, s.user.name, record=record)
        for h in holds:
            print(f"{h.uuid}  read {h.read_uuid}  case {h.case_number}  held by {h.held_by} at {iso_utc(h.held_at)}")
        print(f"{len(holds)} read(s) held for case {holds[0].case_number}; they are kept until released")
        return 0

    return _session(args, "evidence.hold", body)


def cmd_release(args: argparse.Namespace) -> int:
    def body(s: Session, conn: Connection) -> int:
        ev = Evidence(conn, _db_path(args))

        def record(holds: list[Hold]) -> None:
            s.record("evidence.release", reason=args.reason, detail=holds_detail(holds))

        released = ev.release(
            hold_uuids=args.hold_uuids, case_number=args.case, reason=args.reason, user=s.user.name, record=record
        )
        print(f"{len(released)} hold(s) released; those reads are purged when past their period and not held else")
        return 0

    return _session(args, "evidence.release", body)


def holds_table(holds: list[Hold]) -> str:
    """One line per hold; where the holds say where they were placed (headquarters' listing), that column and the
    reason too."""
    where = any(h.placed_on is not None for h in holds)
    head = f"{'HOLD':<36}  {'READ':<36}  {'CASE':<20}  {'HELD BY':<16}  {'HELD AT (UTC)':<24}  "
    lines = [head + (f"{'PLACED ON':<20}  {'STATE':<40}  REASON" if where else "STATE")]
    for h in holds:
        state = "active" if h.active else f"released by {h.released_by} {iso_utc(h.released_at)}"
        line = f"{h.uuid:<36}  {h.read_uuid:<36}  {h.case_number:<20}  {h.held_by:<16}  {iso_utc(h.held_at):<24}  "
        lines.append(line + (f"{h.placed_on or '':<20}  {state:<40}  {' '.join(h.reason.split())}" if where else state))
    return "\n".join(lines)


class _Recorder(Protocol):
    def record(self, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None) -> object: ...


def print_holds(session: _Recorder, holds: list[Hold], case_number: str | None, as_json: bool) -> None:
    """Record that holds were listed, then print them (a table, or one JSON object per line); unit and HQ alike."""
    session.record(
        "evidence.list",
        reason=f"case {case_number}" if case_number else "",
        detail={"case_number": case_number or "", "count": len(holds)},
    )
    if as_json:
        for h in holds:
            print(json.dumps(h.to_json()))
    else:
        print(holds_table(holds))
        if not holds:
            print("(no holds)")


def cmd_list(args: argparse.Namespace) -> int:
    def body(s: Session, conn: Connection) -> int:
        print_holds(s, Evidence(conn, _db_path(args)).holds(args.case, active_only=not args.all), args.case, args.json)
        return 0

    return _session(args, "evidence.hold", body)


def cmd_export(args: argparse.Namespace) -> int:
    def body(s: Session, conn: Connection) -> int:
        signer = _signer(args)
        ev = Evidence(conn, _db_path(args))

        def record(detail: Mapping[str, Any]) -> None:
            s.record("evidence.export", reason=f"case {args.case}", detail=detail)

        res = ev.export(
            args.case,
            args.out,
            signer=signer,
            user=s.user.name,
            role=s.user.role,
            device_id=_device_id(args),
            entries=s.audit.entries(),
            record=record,
        )
        print(f"exported case {args.case}: {res.files} file(s), {res.bytes} bytes to {res.path}")
        print(f"manifest SHA-256 {res.manifest_sha256}; check it with: alpr-edge evidence verify {res.path}")
        return 0

    return _session(args, "evidence.export", body)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        key = load_public_pem(args.public_key.read_bytes(), str(args.public_key)) if args.public_key else None
        report = verify_export(args.path, key)
    except (EvidenceError, OSError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0 if report.ok else 1


def purge_line(r: PurgeResult, days: float) -> str:
    verb = "would purge" if r.dry_run else "purged"
    return (
        f"{verb} {r.reads} read(s) older than {days:g} days ({r.images} image(s), {r.hits} hit(s), {r.outcomes} "
        f"outcome(s)){' - forced' if r.forced else ''}; kept {r.held_kept} because held, {r.unsynced_kept} because "
        f"not yet at headquarters"
    )


def cmd_purge(args: argparse.Namespace) -> int:
    def body(s: Session, conn: Connection) -> int:
        cfg = _settings(args)
        days = cfg.store.retention_days if cfg else config.StoreConfig().retention_days
        r = purge(
            conn,
            s.audit,
            retention_days=days,
            user=s.user.name,
            role=s.user.role,
            force=args.force,
            dry_run=args.dry_run,
        )
        print(purge_line(r, days))
        if not r.wal_cleared:
            print("alpr-edge: the WAL could not be emptied (readers busy); the next purge tries again", file=sys.stderr)
        return 0

    return _session(args, "purge.force" if args.force else "maintenance", body)


def _unit_args(p: argparse.ArgumentParser) -> None:
    add_login_args(p)
    _store_args(p, db=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evidence`` and ``purge`` commands to the ``alpr-edge`` parser."""
    ev = sub.add_parser(
        "evidence",
        help="hold reads as evidence, release them, export a case signed, verify an export",
        description=f"Evidence (P10). A held read is never purged. {RETENTION_HELP} Every command but verify needs a "
        "login and is recorded in the access record.",
    )
    esub = ev.add_subparsers(dest="evidence_command", required=True, metavar="ACTION", help="what to do")

    hold = esub.add_parser(
        "hold",
        help="keep reads (and their images, hits, outcomes) for a case; investigator or administrator",
        description=f"Hold reads for a case: they are kept past the retention period until released. {RETENTION_HELP}",
    )
    hold.add_argument("read_uuids", nargs="+", metavar="READ_UUID", help="the reads to hold")
    hold.add_argument("--case", required=True, help="case or call-for-service number")
    hold.add_argument("--reason", required=True, help="why the reads are kept")
    _unit_args(hold)
    hold.set_defaults(func=cmd_hold)

    rel = esub.add_parser(
        "release",
        help="end holds (administrator only); the reads are then purged when past their period",
        description="Release holds by their uuids or every active hold of a case. The hold stays on file with who "
        "released it, when and why.",
    )
    rel.add_argument("hold_uuids", nargs="*", metavar="HOLD_UUID", help="the holds to release")
    rel.add_argument("--case", default=None, help="release every active hold of this case instead")
    rel.add_argument("--reason", required=True, help="why the reads need no longer be kept")
    _unit_args(rel)
    rel.set_defaults(func=cmd_release)

    lst = esub.add_parser("list", help="list holds (no plate text)", description="List holds, active ones by default.")
    lst.add_argument("--case", default=None, help="only this case's holds")
    lst.add_argument("--all", action="store_true", help="released holds too")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    _unit_args(lst)
    lst.set_defaults(func=cmd_list)

    exp = esub.add_parser(
        "export",
        help="write a case's held reads, images and access record, signed, to a folder or archive",
        description="Export every read held for a case: reads.json, images/, access_record.json, manifest.json "
        "(SHA-256 and size of each file), manifest.sig (Ed25519, the unit's audit key) and signer.pem. OUT is a new "
        "folder, or an archive when it ends in .tar, .tar.gz, .tgz or .zip. Investigator or administrator.",
    )
    exp.add_argument("--case", required=True, help="the case whose held reads are exported")
    exp.add_argument("out", type=Path, metavar="OUT", help="new folder, or .tar/.tar.gz/.zip archive, to write")
    _unit_args(exp)
    exp.set_defaults(func=cmd_export)

    ver = esub.add_parser(
        "verify",
        help="prove an export unaltered (no database, no login needed)",
        description="Check an export's signature and every file's SHA-256 and size; report each altered, missing or "
        "extra file, a bad signature, or an access-record entry that no longer matches its hash or signature. "
        "Exit status 0 when unaltered, 1 when not, 2 when it is not an export.",
    )
    ver.add_argument("path", type=Path, metavar="DIR_OR_ARCHIVE", help="the export folder or archive")
    ver.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="the signer's public key (PEM) obtained independently; without it signer.pem inside the "
        "export is used, which proves integrity but not who signed",
    )
    ver.set_defaults(func=cmd_verify)

    pur = sub.add_parser(
        "purge",
        help="purge reads past the retention period now (the daemon also does it hourly)",
        description=f"{RETENTION_HELP} Purged data is overwritten in the database and its WAL. Technician or "
        "administrator; --force (administrator only) also purges reads headquarters has not acknowledged.",
    )
    pur.add_argument(
        "--force",
        action="store_true",
        help="also purge reads not yet at headquarters (administrator; recorded as forced)",
    )
    pur.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    _unit_args(pur)
    pur.set_defaults(func=cmd_purge)
