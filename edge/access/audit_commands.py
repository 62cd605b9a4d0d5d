"""``alpr-edge audit verify|list``: check the unit's access record, and read it (auditors and administrators)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..store.commands import _limit, _parse_time, _store_args, iso_utc
from ..store.errors import StoreError
from .audit import AuditEntry, AuditError, load_public_pem
from .session import add_login_args, cli_login, open_unit

MAX_PROBLEMS_SHOWN = 1000


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0: the chain is intact; 1: problems (one line each: seq, kind, what); 2: cannot check."""
    conn = None
    try:
        conn, audit = open_unit(args)
        if args.public_key is not None:
            try:
                key = load_public_pem(Path(args.public_key).read_bytes())
            except (OSError, ValueError) as e:
                raise ValueError(f"--public-key {args.public_key}: {getattr(e, 'strerror', None) or e}") from e
        else:
            key = audit.public_key
        result = audit.verify(key)
        # the check reveals no plate data (only seqs), so it needs no login; it is recorded all the same, and a
        # record that cannot be written must not hide the result
        try:
            audit.record("root", "system", "audit.verify", detail={"entries": result.entries,
                         "problems": len(result.problems), "key": "given" if args.public_key else "unit"})  # fmt: skip
        except AuditError as e:
            print(f"alpr-edge: warning: {e}", file=sys.stderr)
    except (AuditError, StoreError, ValueError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()
    for p in result.problems[:MAX_PROBLEMS_SHOWN]:
        print(f"seq {p.seq}: {p.kind}: {p.message}")
    if len(result.problems) > MAX_PROBLEMS_SHOWN:
        print(f"... and {len(result.problems) - MAX_PROBLEMS_SHOWN} more problems")
    if result.ok:
        print(f"access record intact: {result.entries} entries, hash chain and signatures verified")
        return 0
    print(f"access record NOT intact: {len(result.problems)} problem(s) in {result.entries} entries", file=sys.stderr)
    return 1


def entry_line(e: AuditEntry) -> str:
    detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True)
    if len(detail) > 200:
        detail = detail[:199] + "~"
    reason = f"  reason: {e.reason}" if e.reason else ""
    return f"{e.seq:>7}  {iso_utc(e.at)}  {e.user[:20]:<20}  {e.role[:13]:<13}  {e.action:<16}  {detail}{reason}"


def cmd_list(args: argparse.Namespace) -> int:
    conn = None
    try:
        conn, audit = open_unit(args)
        session = cli_login(args, conn, audit, "audit.view")
        rows = audit.entries(
            actions=args.action, user=args.filter_user, start=args.since, end=args.until, limit=args.limit
        )
        criteria = {"actions": args.action, "user": args.filter_user, "since": iso_utc(args.since),
                    "until": iso_utc(args.until), "limit": args.limit}  # fmt: skip
        session.record("audit.view", detail={"criteria": criteria, "count": len(rows),
                                             "seqs": [rows[0].seq, rows[-1].seq] if rows else []})  # fmt: skip
    except (PermissionError, AuditError, StoreError, ValueError) as e:  # AuthError, AccessDenied, KeyFileError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()
    if args.json:
        for row in rows:
            print(json.dumps(row.to_json(), ensure_ascii=False))
        return 0
    print(f"{'SEQ':>7}  {'TIME (UTC)':<24}  {'USER':<20}  {'ROLE':<13}  {'ACTION':<16}  DETAIL")
    for row in rows:
        print(entry_line(row))
    if not rows:
        print("(no entries)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` command to the ``alpr-edge`` parser."""
    audit = sub.add_parser(
        "audit",
        help="the access record: verify it, read it",
        description="Every access to stored reads, images, hits and hot lists is recorded (P13): who, when, what "
        "and why, hash-chained and signed with the unit's key, kept permanently and sent to headquarters.",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION", help="what to do")

    verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain and signatures; name every altered, deleted, moved or inserted entry",
        description="Verify the whole access record: each entry's hash, its link to the one before and its "
        "signature. Prints one line per problem ('seq N: KIND: ...', KIND altered, deleted, reordered, inserted or "
        "bad-signature); exit 0 when intact, 1 when not, 2 when it cannot be checked. It shows no plate data, so "
        "it needs no login (the check itself is recorded). Entries removed from the very end cannot be seen here: "
        "headquarters' copy shows them.",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        default=None,
        metavar="PEM",
        help="verify with this public key (the one registered at headquarters) instead of the unit's own key file: "
        "catches a record re-signed with a replaced key",
    )
    _store_args(verify, db=True)
    verify.set_defaults(func=cmd_verify)

    lst = audit_sub.add_parser(
        "list",
        help="show entries of the access record (auditors and administrators)",
        description="Show entries in order, filtered by action, user and time. Needs an auditor or administrator "
        "login; the viewing is itself recorded (audit.view).",
    )
    lst.add_argument("--action", action="append", default=None, metavar="ACTION",
                     help="only this action (login, reads.view, search, ...); repeat for several")  # fmt: skip
    lst.add_argument("--of-user", dest="filter_user", default=None, metavar="NAME",
                     help="only entries of this user (the logged-in user is --user)")  # fmt: skip
    lst.add_argument("--since", type=_parse_time, default=None, help="only entries at or after this ISO-8601 time")
    lst.add_argument("--until", type=_parse_time, default=None, help="only entries at or before this ISO-8601 time")
    lst.add_argument("--limit", type=_limit, default=1000, help="at most this many entries (default 1000)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line (the synced form)")
    add_login_args(lst)
    _store_args(lst, db=True)
    lst.set_defaults(func=cmd_list)
