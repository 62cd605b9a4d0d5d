"""``alpr-edge maintenance log|list``: a technician records and reads the unit's maintenance and calibration records
(P17). Both log in (role technician or administrator); the records are access-record entries (edge.maintenance)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .access.audit import AuditError, AuditLog
from .access.session import AccessDenied, Session, add_login_args, cli_login, open_unit
from .access.users import AuthError
from .maintenance import KINDS, MaintenanceError, describe, list_maintenance, log_maintenance, parse_values
from .store.commands import _parse_time, _store_args, iso_utc
from .store.errors import StoreError


def _run(args: argparse.Namespace, body: Callable[[Session, AuditLog], int]) -> int:
    """Open the unit's store, log in for "maintenance", run ``body``; errors are one line on stderr, status 2."""
    conn = None
    try:
        conn, audit = open_unit(args)
        session = cli_login(args, conn, audit, "maintenance")
        return body(session, audit)
    except (AuthError, AccessDenied, AuditError, StoreError, ValueError) as e:
        # ValueError: MaintenanceError or a bad settings file (ConfigError)
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()


def cmd_log(args: argparse.Namespace) -> int:
    try:
        values = parse_values(args.value or [])
    except MaintenanceError as e:  # before the password prompt: nothing to log in for
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2

    def body(session: Session, audit: AuditLog) -> int:
        e = log_maintenance(session, None, args.kind, args.summary, args.camera, values)
        print(f"recorded {e.detail['kind']} #{e.seq} by {e.user} at {iso_utc(e.at)} (signed; syncs to headquarters)")
        return 0

    return _run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(session: Session, audit: AuditLog) -> int:
        rows = [describe(e) for e in list_maintenance(audit, since=args.since)]
        if args.json:
            for r in rows:
                print(json.dumps(r))
            return 0
        print(f"{'WHEN':<25} {'KIND':<12} {'CAMERA':<10} {'BY':<16} SUMMARY")
        for r in rows:
            values = " ".join(f"{k}={v}" for k, v in r["values"].items())
            print(
                f"{iso_utc(r['at']):<25} {r['kind']:<12} {r['camera'] or '-':<10} {r['user']:<16} {r['summary']}"
                + (f"  [{values}]" if values else "")
            )
        print(f"{len(rows)} record(s)")
        return 0

    return _run(args, body)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``maintenance`` command group to the ``alpr-edge`` parser."""
    m = sub.add_parser(
        "maintenance",
        help="maintenance and calibration records of this unit (P17)",
        description="Record and list the unit's maintenance, calibration, inspection and repair work. Records are "
        "entries of the access record: signed with the unit's key and synced to headquarters, where "
        "'alpr-edge hq maintenance list' and the yearly report show them. Technicians and administrators log in.",
    )
    msub = m.add_subparsers(dest="maintenance_command", required=True, metavar="ACTION", help="what to do")
    log = msub.add_parser(
        "log",
        help="record maintenance or calibration work",
        description="Record one piece of work on the unit (or on one camera) with what was done and any readings.",
    )
    log.add_argument("--kind", required=True, choices=KINDS, help="what kind of work")
    log.add_argument("--summary", required=True, metavar="TEXT", help="what was done (3 to 500 characters)")
    log.add_argument("--camera", default=None, metavar="ID", help="the camera worked on (default: the whole unit)")
    log.add_argument(
        "--value",
        action="append",
        metavar="KEY=VALUE",
        help="a reading or setting recorded with it, e.g. focus=1.25 (repeatable)",
    )
    add_login_args(log)
    _store_args(log, db=True)
    log.set_defaults(func=cmd_log)
    lst = msub.add_parser(
        "list",
        help="list the maintenance and calibration records",
        description="The unit's maintenance and calibration records, oldest first.",
    )
    lst.add_argument("--since", type=_parse_time, default=None, metavar="TIME", help="only records from this time")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    add_login_args(lst)
    _store_args(lst, db=True)
    lst.set_defaults(func=cmd_list)
