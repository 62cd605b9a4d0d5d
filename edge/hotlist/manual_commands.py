"""``alpr-edge hotlist add|pending|approve|reject|remove|entries``: manual entries from the command line.

Every command logs in first (``--user``, password from the terminal or ``--password-stdin``): the entering member
is the logged-in user, approving or rejecting needs the administrator role (P6), and a role without "hotlist.manage"
(technician, auditor) is refused. The login, each refusal, each entry shown and each change (with the entry id and
case number) go to the access record (P13).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
import time
from collections.abc import Callable
from typing import Protocol

from ..access.audit import AuditError, AuditLog
from ..access.session import Session, record_refused_login, record_viewed, start_session
from ..access.users import User
from ..store.commands import _parse_time, _resolve, _store_args, iso_utc
from ..store.db import Connection
from ..store.errors import StoreError
from ..store.keys import load_key
from ..store.reads import ReadStore
from .entry import LIST_CODES
from .manual import (
    MAX_RECHECK_HOURS,
    STATUSES,
    EntryNotFoundError,
    EntryStateError,
    ManualEntries,
    ManualEntry,
    recheck_recent_reads,
)

DEFAULT_RECHECK_HOURS = 6.0
DEFAULT_LOOKALIKE_LIMIT = 2
MAX_PASSWORD = 1024

# the library names fields by parameter; a person at the command line typed the option
_OPTION_OF = {
    "plate": "--plate",
    "list_code": "--list-code",
    "reason": "--reason",
    "instructions": "--instructions",
    "case_number": "--case-number",
    "synopsis": "--synopsis",
    "requesting_officer": "--requesting-officer",
    "state": "--state",
    "vehicle_description": "--vehicle",
    "expires_at": "--expires",
    "why": "--why",
}


class AuthUser(Protocol):
    """What a login yields: the user's name and role (operator, investigator, administrator, ...)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


# authenticate(name, password, now): the user, or None (or PermissionError/ValueError) when the login fails
Authenticate = Callable[[str, str, float], AuthUser | None]
AuthFactory = Callable[[Connection], Authenticate]


class LoginError(Exception):
    """The user could not be logged in (wrong name or password, locked, disabled, no password given)."""

    def __init__(self, message: str, reason: str = "password") -> None:
        super().__init__(message)
        self.reason = reason  # for the access record only (AuthError.reason when there was one)


def users_authenticator(conn: Connection) -> Authenticate:
    """The unit's user accounts: ``edge.access.users.UserStore(conn).authenticate`` (AuthError, a PermissionError,
    on a refused login). Imported here so that loading the parser does not load Argon2."""
    from ..access.users import UserStore

    auth: Authenticate = UserStore(conn).authenticate
    return auth


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline(MAX_PASSWORD + 2)
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = getpass.getpass(f"password for {args.user}: ")
    if not password or len(password) > MAX_PASSWORD:
        raise LoginError("login failed: no password given" if not password else "login failed: password too long",
                         "no-password" if not password else "password")  # fmt: skip
    return password


def _login(conn: Connection, args: argparse.Namespace, factory: AuthFactory) -> AuthUser:
    password = _read_password(args)
    authenticate = factory(conn)
    try:
        user = authenticate(args.user, password, time.time())
    except (PermissionError, ValueError) as e:
        raise LoginError(f"login failed for {args.user}: {e}", str(getattr(e, "reason", "refused"))) from e
    if user is None:
        raise LoginError(f"login failed for {args.user}: wrong name or password")
    return user


def _session(conn: Connection, args: argparse.Namespace, factory: AuthFactory, audit: AuditLog) -> Session:
    """Log in and check the role ("hotlist.manage"); every outcome is recorded."""
    try:
        who = _login(conn, args, factory)
    except LoginError as e:
        record_refused_login(audit, args.user, e.reason, via="cli")
        raise
    user = who if isinstance(who, User) else User(who.name, who.role, None, False)
    return start_session(audit, user, "hotlist.manage", via="cli")


def _field_message(e: ValueError) -> str:
    text = str(e)
    field, sep, rest = text.partition(":")
    return f"{_OPTION_OF[field]}:{rest}" if sep and field in _OPTION_OF else text


def _run(args: argparse.Namespace, factory: AuthFactory, body: Callable[[Connection, Session], int]) -> int:
    """Open the database, log in, run ``body``; errors are one line on stderr (2: bad input or store, 1: refused)."""
    from ..access.session import open_unit

    conn: Connection | None = None
    try:
        conn, audit = open_unit(args)
        return body(conn, _session(conn, args, factory, audit))
    except AuditError as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    except (LoginError, PermissionError, EntryNotFoundError, EntryStateError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # ConfigError is a ValueError
        print(f"alpr-edge: {_field_message(e)}", file=sys.stderr)
        return 2
    except StoreError as e:  # KeyFileError is a StoreError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()


# --- the commands ---------------------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace, factory: AuthFactory) -> int:
    def body(conn: Connection, session: Session) -> int:
        user = session.user
        entry_id = ManualEntries(conn).add(
            plate_pattern=args.plate,
            list_code=args.list_code,
            reason=args.reason,
            instructions=args.instructions,
            case_number=args.case_number,
            synopsis=args.synopsis,
            entered_by=user.name,
            requesting_officer=args.requesting_officer,
            state=args.state,
            vehicle_description=args.vehicle,
            expires_at=args.expires,
        )
        session.record("hotlist.add", reason=f"case {args.case_number}"[:200], detail={"entry_id": entry_id,
                       "case_number": args.case_number, "list_code": args.list_code})  # fmt: skip
        print(
            f"{entry_id}: entered by {user.name}, pending: it takes effect when another ALPR administrator approves it"
        )
        return 0

    return _run(args, factory, body)


def cmd_list(args: argparse.Namespace, factory: AuthFactory, status: str | None = None) -> int:
    def body(conn: Connection, session: Session) -> int:
        entries = ManualEntries(conn)
        entries.expire_due()
        rows = entries.list(status if status is not None else args.status)
        record_viewed(session, "hotlist.view", "entry_ids", [e.entry_id for e in rows])  # before they are shown
        if args.json:
            for e in rows:
                print(json.dumps(entry_to_json(e)))
        elif status == "pending":
            print(format_blocks(rows) if rows else "(no entries pending approval)")
        else:
            print(format_table(rows))
            if not rows:
                print("(no entries)")
        return 0

    return _run(args, factory, body)


def cmd_approve(args: argparse.Namespace, factory: AuthFactory) -> int:
    def body(conn: Connection, session: Session) -> int:
        user = session.user
        hot = ManualEntries(conn).approve(args.entry_id, user.name, role=user.role)
        session.record("hotlist.approve", reason=f"case {hot.case_number}"[:200],
                       detail={"entry_id": hot.entry_id, "case_number": hot.case_number})  # fmt: skip
        print(f"{hot.entry_id}: approved by {user.name}; in force now")
        hours, limit = _recheck_settings(args)
        if hours == 0:
            return 0
        from .matcher import Matcher  # the matcher's index machinery is needed only here

        db, key_file = _resolve(args)
        with ReadStore.open(db, load_key(key_file), create=False) as store:
            found = recheck_recent_reads(store, hot, Matcher([], lookalike_limit=limit).match_one, hours, time.time())
        record_viewed(session, "reads.view", "read_uuids", [read.uuid for read, _ in found],
                      reason=f"recheck of hot list entry {hot.entry_id}")  # fmt: skip
        print(f"{len(found)} stored read(s) of the last {hours:g} h match it" + (":" if found else ""))
        for read, hit in found:
            print(f"  {read.uuid}  {iso_utc(read.best_seen)}  {read.camera_id}  {hit.kind}  score {hit.score:.2f}")
        return 0

    return _run(args, factory, body)


def cmd_reject(args: argparse.Namespace, factory: AuthFactory) -> int:
    def body(conn: Connection, session: Session) -> int:
        user = session.user
        entries = ManualEntries(conn)
        entries.reject(args.entry_id, user.name, args.why, role=user.role)
        entry = entries.get(args.entry_id)
        session.record("hotlist.reject", reason=args.why[:200], detail={"entry_id": args.entry_id,
                       "case_number": entry.case_number if entry else None})  # fmt: skip
        print(f"{args.entry_id}: rejected by {user.name}; it never takes effect")
        return 0

    return _run(args, factory, body)


def cmd_remove(args: argparse.Namespace, factory: AuthFactory) -> int:
    def body(conn: Connection, session: Session) -> int:
        user = session.user
        entries = ManualEntries(conn)
        entries.remove(args.entry_id, user.name, args.why, role=user.role)
        entry = entries.get(args.entry_id)
        session.record("hotlist.remove", reason=args.why[:200], detail={"entry_id": args.entry_id,
                       "case_number": entry.case_number if entry else None})  # fmt: skip
        print(f"{args.entry_id}: removed by {user.name}; no longer in force")
        return 0

    return _run(args, factory, body)


def _recheck_settings(args: argparse.Namespace) -> tuple[float, int]:
    hours, limit = DEFAULT_RECHECK_HOURS, DEFAULT_LOOKALIKE_LIMIT
    if args.config is not None:
        from ..config import load

        cfg = load(args.config)
        hours, limit = cfg.hotlist.recheck_hours, cfg.hotlist.lookalike_limit
    if args.recheck_hours is not None:
        hours = args.recheck_hours
    return hours, limit


# --- output ---------------------------------------------------------------------------------------------------


def entry_to_json(e: ManualEntry) -> dict[str, object]:
    return {
        "entry_id": e.entry_id,
        "status": e.status,
        "plate": e.plate_pattern,
        "state": e.state,
        "list_code": e.list_code,
        "reason": e.reason,
        "instructions": e.instructions,
        "vehicle_description": e.vehicle_description,
        "case_number": e.case_number,
        "synopsis": e.synopsis,
        "entered_by": e.entered_by,
        "requesting_officer": e.requesting_officer,
        "entered_at": iso_utc(e.entered_at),
        "expires_at": iso_utc(e.expires_at),
        "approved_by": e.approved_by,
        "approved_at": iso_utc(e.approved_at),
    }


def format_table(rows: list[ManualEntry]) -> str:
    lines = [
        f"{'ENTRY':<36}  {'STATUS':<8}  {'PLATE':<16}  {'ST':<3}  {'CODE':<16}  {'CASE':<16}  {'ENTERED BY':<16}  "
        f"{'APPROVED BY':<16}  EXPIRES (UTC)"
    ]
    for e in rows:
        lines.append(
            f"{e.entry_id:<36}  {e.status:<8}  {e.plate_pattern:<16}  {e.state or '-':<3}  {e.list_code:<16}  "
            f"{e.case_number[:16]:<16}  {e.entered_by[:16]:<16}  {(e.approved_by or '-')[:16]:<16}  "
            f"{iso_utc(e.expires_at) or 'until removed'}"
        )
    return "\n".join(lines)


def format_blocks(rows: list[ManualEntry]) -> str:
    """Everything an administrator needs to decide on an entry, one block each."""
    blocks = []
    for e in rows:
        blocks.append(
            "\n".join(
                (
                    f"entry {e.entry_id}",
                    f"  plate:              {e.plate_pattern}" + (f" ({e.state})" if e.state else ""),
                    f"  vehicle:            {e.vehicle_description or '-'}",
                    f"  list code:          {e.list_code}",
                    f"  reason:             {e.reason}",
                    f"  instructions:       {e.instructions or '-'}",
                    f"  case number:        {e.case_number}",
                    f"  synopsis:           {e.synopsis}",
                    f"  entered by:         {e.entered_by} at {iso_utc(e.entered_at)}",
                    f"  requesting officer: {e.requesting_officer}",
                    f"  expires:            {iso_utc(e.expires_at) or 'until removed'}",
                )
            )
        )
    return "\n\n".join(blocks)


# --- the parser -----------------------------------------------------------------------------------------------


def _hours(text: str) -> float:
    try:
        h = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not 0.0 <= h <= MAX_RECHECK_HOURS:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_RECHECK_HOURS:g}")
    return h


def _list_code(text: str) -> str:
    code = text.strip().upper()
    if code not in LIST_CODES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LIST_CODES)}")
    return code


def _login_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="your user name; you are asked for your password")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )
    _store_args(p, db=True)


def register_manual(
    hotlist_sub: argparse._SubParsersAction[argparse.ArgumentParser], authenticator: AuthFactory = users_authenticator
) -> None:
    """Add the manual entry commands to an existing ``hotlist`` subcommand group (shared with the feed's commands).

    ``authenticator`` turns a database connection into the login check (default: the unit's user accounts).
    """
    add = hotlist_sub.add_parser(
        "add",
        help="enter a plate or partial plate; it takes effect once an administrator approves it",
        description="Enter a local hot list entry (P5, P6). You are the entering member; the requesting officer, "
        "case number and a synopsis are required. The entry is pending until another ALPR administrator "
        "approves it.",
    )
    add.add_argument("--plate", required=True, help="plate or partial plate: A-Z 0-9, * any run, ? one character")
    add.add_argument("--list-code", required=True, type=_list_code, help=f"one of {', '.join(LIST_CODES)}")
    add.add_argument("--reason", required=True, help="the reason shown on an alert, e.g. 'Stolen vehicle'")
    add.add_argument("--case-number", required=True, help="the related case number")
    add.add_argument("--synopsis", required=True, help="a short synopsis of the case (at least 10 characters)")
    add.add_argument("--requesting-officer", required=True, help="name of the officer who asked for the entry")
    add.add_argument(
        "--instructions", default="", help="what the officer should do, e.g. 'stop only with probable cause'"
    )
    add.add_argument("--state", default=None, help="issuing state or country code (OR, CA, D, BR), if known")
    add.add_argument("--vehicle", default=None, help="vehicle description (make, model, colour, marks)")
    add.add_argument(
        "--expires", type=_parse_time, default=None, help="ISO-8601 time the entry ends (UTC if no zone); default never"
    )
    _login_args(add)
    add.set_defaults(func=functools.partial(cmd_add, factory=authenticator))

    pending = hotlist_sub.add_parser(
        "pending",
        help="show entries waiting for approval, with everything needed to decide",
        description="Show the manual entries pending approval: plate, vehicle, reason, instructions, case, synopsis, "
        "who entered and who requested them.",
    )
    pending.add_argument("--json", action="store_true", help="one JSON object per line")
    _login_args(pending)
    pending.set_defaults(func=functools.partial(cmd_list, factory=authenticator, status="pending"))

    approve = hotlist_sub.add_parser(
        "approve",
        help="approve a pending entry (administrators; not the member who entered it)",
        description="Put a pending manual entry in force. Only an ALPR administrator may, and never the member who "
        "entered it. The stored reads of the last hours are then checked against it.",
    )
    approve.add_argument("entry_id", metavar="ENTRY_ID", help="the entry's id, as shown by 'hotlist pending'")
    approve.add_argument(
        "--recheck-hours",
        type=_hours,
        default=None,
        help=f"check stored reads of this many hours against the entry (0: none; default from --config's "
        f"[hotlist] recheck_hours, else {DEFAULT_RECHECK_HOURS:g})",
    )
    _login_args(approve)
    approve.set_defaults(func=functools.partial(cmd_approve, factory=authenticator))

    reject = hotlist_sub.add_parser(
        "reject",
        help="reject a pending entry (administrators)",
        description="Refuse a pending manual entry; it never takes effect. The reason is recorded.",
    )
    reject.add_argument("entry_id", metavar="ENTRY_ID", help="the entry's id")
    reject.add_argument("--why", required=True, help="why it is rejected (recorded)")
    _login_args(reject)
    reject.set_defaults(func=functools.partial(cmd_reject, factory=authenticator))

    remove = hotlist_sub.add_parser(
        "remove",
        help="take a pending or active entry out (administrators, or the member who entered it)",
        description="Remove a manual entry: it no longer matches reads. The reason is recorded.",
    )
    remove.add_argument("entry_id", metavar="ENTRY_ID", help="the entry's id")
    remove.add_argument("--why", required=True, help="why it is removed (recorded)")
    _login_args(remove)
    remove.set_defaults(func=functools.partial(cmd_remove, factory=authenticator))

    entries = hotlist_sub.add_parser(
        "entries",
        help="list manual entries and their status",
        description="List manual entries, oldest first: status, plate, code, case, who entered and approved them, "
        "expiry. Entries past their expiry are marked expired first.",
    )
    entries.add_argument("--status", choices=STATUSES, default=None, help="only entries with this status")
    entries.add_argument("--json", action="store_true", help="one JSON object per line with every field")
    _login_args(entries)
    entries.set_defaults(func=functools.partial(cmd_list, factory=authenticator))


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], authenticator: AuthFactory = users_authenticator
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add a ``hotlist`` group with the manual entry commands; returns its subparsers for other hotlist commands."""
    hotlist = sub.add_parser(
        "hotlist",
        help="hot lists: manual entries and their approval",
        description="Hot list commands. Manual entries take effect only after an ALPR administrator approves them.",
    )
    hotlist_sub = hotlist.add_subparsers(dest="hotlist_command", required=True, metavar="ACTION", help="what to do")
    register_manual(hotlist_sub, authenticator)
    return hotlist_sub


__all__ = [
    "AuthFactory",
    "AuthUser",
    "Authenticate",
    "LoginError",
    "register",
    "register_manual",
    "users_authenticator",
]
