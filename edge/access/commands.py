"""``alpr-edge users add|disable|enable|passwd|list``: user accounts from the unit's root shell."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import date

from ..store.commands import _store_args, iso_utc
from ..store.db import Connection
from ..store.errors import StoreError
from .audit import AuditError, AuditLog
from .session import open_unit
from .users import MAX_PASSWORD, ROLES, User, UserError, UserStore

_ACCESS_NOTE = (
    "These commands need the database key and the access record's key (root); each change is recorded in the "
    "access record as user root."
)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from e


def _read_new_password(args: argparse.Namespace) -> str:
    """From stdin (one line) with --password-stdin, else typed twice at the terminal without echo."""
    if args.password_stdin:
        line = sys.stdin.readline(MAX_PASSWORD + 2)
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UserError("password: the two entries differ")
    return first


def _run(
    args: argparse.Namespace, body: Callable[[UserStore], int], *, create: bool = False, action: str | None = None
) -> int:
    """Open the database, run ``body``; errors are one line on stderr, exit status 2.

    These are the root shell's bootstrap commands (no login: the first administrator is made here); with ``action``
    a change that succeeded is recorded as user "root", role "system" (detail: the account named, never a password).
    """
    conn: Connection | None = None
    try:
        conn, audit = open_unit(args, create=create)
        rc = body(UserStore(conn))
        if action is not None and rc == 0:
            _record(audit, action, args)
        return rc
    except (ValueError, StoreError, AuditError) as e:  # UserError, ConfigError are ValueErrors; KeyFileError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()


def _record(audit: AuditLog, action: str, args: argparse.Namespace) -> None:
    detail: dict[str, object] = {"name": args.name.strip().lower()} if getattr(args, "name", None) else {}
    if action == "users.add":
        detail["role"] = args.role
        detail["training_completed"] = args.training_completed.isoformat() if args.training_completed else None
    audit.record("root", "system", action, detail=detail)


def cmd_add(args: argparse.Namespace) -> int:
    def body(users: UserStore) -> int:
        user = users.add(args.name, args.role, _read_new_password(args), args.training_completed)
        when = user.training_completed.isoformat() if user.training_completed else "not recorded (no access yet)"
        print(f"added user {user.name} (role {user.role}, training completed {when})")
        return 0

    return _run(args, body, create=True, action="users.add")


def cmd_passwd(args: argparse.Namespace) -> int:
    def body(users: UserStore) -> int:
        users.change_password(args.name, _read_new_password(args))
        print(f"password of {args.name.strip().lower()} changed")
        return 0

    return _run(args, body, action="users.passwd")


def cmd_disable(args: argparse.Namespace) -> int:
    def body(users: UserStore) -> int:
        users.disable(args.name)
        print(f"user {args.name.strip().lower()} disabled")
        return 0

    return _run(args, body, action="users.disable")


def cmd_enable(args: argparse.Namespace) -> int:
    def body(users: UserStore) -> int:
        users.enable(args.name)
        print(f"user {args.name.strip().lower()} enabled")
        return 0

    return _run(args, body, action="users.enable")


def _state(u: User) -> str:
    if u.disabled:
        return "disabled"
    if u.locked_until is not None:
        return f"locked until {iso_utc(u.locked_until)}"
    return "active"


def user_to_json(u: User) -> dict[str, object]:
    return {
        "name": u.name,
        "role": u.role,
        "training_completed": u.training_completed.isoformat() if u.training_completed else None,
        "disabled": u.disabled,
        "locked_until": iso_utc(u.locked_until),
    }


def cmd_list(args: argparse.Namespace) -> int:
    def body(users: UserStore) -> int:
        rows = users.list()
        if args.json:
            for u in rows:
                print(json.dumps(user_to_json(u)))
            return 0
        print(f"{'NAME':<24}  {'ROLE':<14}  {'TRAINED':<10}  STATE")
        for u in rows:
            trained = u.training_completed.isoformat() if u.training_completed else "-"
            print(f"{u.name:<24}  {u.role:<14}  {trained:<10}  {_state(u)}")
        if not rows:
            print("(no users)")
        return 0

    return _run(args, body, action="users.list")


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the person's own login name (case-insensitive; no shared accounts)")


def _password_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the new password from the first line of standard input (for scripts) instead of asking twice",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``users`` command to the ``alpr-edge`` parser."""
    users = sub.add_parser(
        "users",
        help="manage user accounts (individual logins with roles)",
        description=f"Individual accounts with a role (P12): {', '.join(ROLES)}. Passwords are stored as Argon2id "
        f"hashes, never shown. Accounts are disabled, never deleted. {_ACCESS_NOTE}",
    )
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION", help="what to do")

    add = users_sub.add_parser(
        "add",
        help="create an account (asks for the password twice)",
        description="Create an account. The password needs at least 12 characters, 5 of them different, and must "
        f"not contain the name. No login is possible before the training-completed day. {_ACCESS_NOTE}",
    )
    _name_arg(add)
    add.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    add.add_argument(
        "--training-completed",
        type=_date,
        default=None,
        metavar="DATE",
        help="day the user completed ALPR training (YYYY-MM-DD); without it the account cannot log in yet",
    )
    _password_arg(add)
    _store_args(add, db=True)
    add.set_defaults(func=cmd_add)

    passwd = users_sub.add_parser(
        "passwd",
        help="set a new password (also ends a lockout)",
        description=f"Set a user's password (the same policy as for add) and clear failed logins. {_ACCESS_NOTE}",
    )
    _name_arg(passwd)
    _password_arg(passwd)
    _store_args(passwd, db=True)
    passwd.set_defaults(func=cmd_passwd)

    disable = users_sub.add_parser(
        "disable",
        help="refuse every later login of a user",
        description=f"Disable an account; it is kept so that records naming the user stay valid. {_ACCESS_NOTE}",
    )
    _name_arg(disable)
    _store_args(disable, db=True)
    disable.set_defaults(func=cmd_disable)

    enable = users_sub.add_parser(
        "enable",
        help="allow a disabled user to log in again (also ends a lockout)",
        description=f"Enable a disabled account and clear its failed logins. {_ACCESS_NOTE}",
    )
    _name_arg(enable)
    _store_args(enable, db=True)
    enable.set_defaults(func=cmd_enable)

    lst = users_sub.add_parser(
        "list",
        help="list the accounts (never the password hashes)",
        description=f"List accounts by name: role, training-completed day, and state (active, locked, disabled). "
        f"{_ACCESS_NOTE}",
    )
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    _store_args(lst, db=True)
    lst.set_defaults(func=cmd_list)
