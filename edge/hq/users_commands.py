"""``alpr-edge hq users add|passwd|disable|enable|list``: headquarters' accounts, from the server's root shell.

The same commands, rules and output as the unit's ``alpr-edge users`` (edge.access.commands), over PostgreSQL. The
person running them holds the database credentials (the server's administrator), so every change is recorded in
headquarters' access record as user "root", role "system", in the same transaction as the change: a change that
cannot be recorded is not made.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

import psycopg

from ..access.audit import AuditError
from ..access.commands import _date, _name_arg, _password_arg, _read_new_password, _state, user_to_json
from ..access.users import ROLES
from ..store.errors import StoreError
from . import schema
from .access import HqAuditLog, HqUserStore, add_signing_key_arg, load_hq_signer

ADMIN = ("root", "system")
_NOTE = (
    "Run by headquarters' server administrator with the database credentials; every change is recorded in "
    "headquarters' access record (issue 7, P13) as root, signed with headquarters' key (--signing-key)."
)

Body = Callable[[psycopg.Connection, HqUserStore, HqAuditLog | None], int]


def _run(args: argparse.Namespace, body: Body, *, records: bool = True) -> int:
    """Connect, check the schema, run ``body``; errors are one line on stderr, exit status 2."""
    from .commands import HqError, _connect_db

    try:
        signer = load_hq_signer(args) if records else None
        with _connect_db(args) as conn:
            if schema.current_version(conn) < 2:
                raise HqError("the headquarters database has no accounts yet: run alpr-edge hq migrate first")
            audit = HqAuditLog(conn, signer) if signer is not None else None
            return body(conn, HqUserStore(conn), audit)
    except (ValueError, StoreError, AuditError, HqError, psycopg.Error) as e:  # UserError, SignerError: ValueErrors
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2


def _record(audit: HqAuditLog | None, action: str, detail: dict[str, Any]) -> None:
    assert audit is not None
    audit.record(*ADMIN, action, detail={**detail, "os_user": getpass.getuser()})


def cmd_add(args: argparse.Namespace) -> int:
    def body(conn: psycopg.Connection, users: HqUserStore, audit: HqAuditLog | None) -> int:
        password = _read_new_password(args)
        with conn.transaction():
            user = users.add(args.name, args.role, password, args.training_completed)
            trained = user.training_completed.isoformat() if user.training_completed else None
            _record(audit, "user.add", {"name": user.name, "role": user.role, "training_completed": trained})
        when = trained or "not recorded (no access yet)"
        print(f"added user {user.name} (role {user.role}, training completed {when})")
        return 0

    return _run(args, body)


def cmd_passwd(args: argparse.Namespace) -> int:
    def body(conn: psycopg.Connection, users: HqUserStore, audit: HqAuditLog | None) -> int:
        password = _read_new_password(args)
        with conn.transaction():
            users.change_password(args.name, password)
            _record(audit, "user.passwd", {"name": args.name.strip().lower()})
        print(f"password of {args.name.strip().lower()} changed")
        return 0

    return _run(args, body)


def _switch(disable: bool) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        def body(conn: psycopg.Connection, users: HqUserStore, audit: HqAuditLog | None) -> int:
            name = args.name.strip().lower()
            with conn.transaction():
                (users.disable if disable else users.enable)(args.name)
                _record(audit, "user.disable" if disable else "user.enable", {"name": name})
            print(f"user {name} {'disabled' if disable else 'enabled'}")
            return 0

        return _run(args, body)

    return cmd


cmd_disable = _switch(True)
cmd_enable = _switch(False)


def cmd_list(args: argparse.Namespace) -> int:
    def body(conn: psycopg.Connection, users: HqUserStore, audit: HqAuditLog | None) -> int:
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

    return _run(args, body, records=False)


def register(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``users`` to the ``hq`` command group."""
    from .commands import add_db_url_arg

    def common(p: argparse.ArgumentParser, *, records: bool = True) -> None:
        if records:
            add_signing_key_arg(p)
        add_db_url_arg(p)

    users = hsub.add_parser(
        "users",
        help="manage headquarters' user accounts (individual logins with roles)",
        description=f"Headquarters' individual accounts with a role (P12): {', '.join(ROLES)}: the same rules as on "
        f"the units (Argon2id hashes, lockout, no access before the training day, disabled never deleted). {_NOTE}",
    )
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION", help="what to do")

    add = usub.add_parser(
        "add",
        help="create an account (asks for the password twice)",
        description="Create an account. The password needs at least 12 characters, 5 of them different, and must "
        f"not contain the name. No login is possible before the training-completed day. {_NOTE}",
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
    common(add)
    add.set_defaults(func=cmd_add)

    passwd = usub.add_parser(
        "passwd",
        help="set a new password (also ends a lockout)",
        description=f"Set a user's password (the same policy as for add) and clear failed logins. {_NOTE}",
    )
    _name_arg(passwd)
    _password_arg(passwd)
    common(passwd)
    passwd.set_defaults(func=cmd_passwd)

    disable = usub.add_parser(
        "disable",
        help="refuse every later login of a user",
        description=f"Disable an account; it is kept so that records naming the user stay valid. {_NOTE}",
    )
    _name_arg(disable)
    common(disable)
    disable.set_defaults(func=cmd_disable)

    enable = usub.add_parser(
        "enable",
        help="allow a disabled user to log in again (also ends a lockout)",
        description=f"Enable a disabled account and clear its failed logins. {_NOTE}",
    )
    _name_arg(enable)
    common(enable)
    enable.set_defaults(func=cmd_enable)

    lst = usub.add_parser(
        "list",
        help="list the accounts (never the password hashes)",
        description="List headquarters' accounts by name: role, training-completed day, and state (active, locked, "
        "disabled). Nothing is recorded: no plate data is shown.",
    )
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    common(lst, records=False)
    lst.set_defaults(func=cmd_list)
