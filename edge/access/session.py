"""Who may do what (the single place it is decided), and a command-line login that records itself.

Why it is built this way:
- ``ROLES_FOR`` maps each kind of access to the roles allowed it; every command and page asks ``require`` with the
  same names, so a role's powers can be read (and audited) in one table. A technician sees health, logs and
  configuration, never plates or images.
- A login, a refused login and an access refused for the role are all entries in the access record (P13). If the
  record cannot be written the access is refused: nothing is shown that is not recorded.
- A refused login records the name as typed (cleaned and cut short) and the real reason (unknown name, wrong
  password, locked, disabled, training): the person at the keyboard sees one message for every reason, the auditor
  sees which.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store.db import Connection, open_db
from ..store.keys import load_key
from ..store.migrations import migrate
from .audit import AuditEntry, AuditLog, load_signing_key
from .users import MAX_PASSWORD, AuthError, User, UserStore

ROLES_FOR: Mapping[str, tuple[str, ...]] = {
    "reads.view": ("operator", "investigator", "administrator"),  # see stored reads/images
    "hits.view": ("operator", "investigator", "administrator"),
    "search": ("investigator", "administrator"),
    "evidence.hold": ("investigator", "administrator"),
    "evidence.export": ("investigator", "administrator"),
    "evidence.release": ("administrator",),
    "purge.force": ("administrator",),
    "audit.view": ("auditor", "administrator"),  # read the access record, verify it, monthly audit
    "audit.signoff": ("auditor",),
    "report": ("auditor", "administrator"),
    "requests.enter": ("investigator", "administrator"),
    "requests.decide": ("administrator",),
    "maintenance": ("technician", "administrator"),
    "health": ("technician", "administrator", "operator", "investigator", "auditor"),  # no plate data
    "config": ("technician", "administrator"),
    "hotlist.manage": ("operator", "investigator", "administrator"),
}
_PRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_TYPED_NAME = 64
VIEW_CHUNK = 1000  # UUIDs per entry: 1000 of them are about 39 KB, under headquarters' 64 KiB per item


class AccessDenied(PermissionError):  # noqa: N818 (the name is the contract's)
    """The logged-in user's role may not do this; the message names what and which roles may."""


def _roles_text(roles: tuple[str, ...]) -> str:
    return roles[0] if len(roles) == 1 else f"{', '.join(roles[:-1])} or {roles[-1]}"


def require(user: User, what: str) -> None:
    """AccessDenied unless ``user.role`` may do ``what`` (a key of ROLES_FOR; any other is a programming error)."""
    roles = ROLES_FOR.get(what)
    if roles is None:
        raise ValueError(f"unknown kind of access {what!r}")
    if user.role not in roles:
        raise AccessDenied(f"{what}: needs role {_roles_text(roles)}; {user.name} is {user.role}")


@dataclass(frozen=True)
class Session:
    """A logged-in user and the record their accesses go to."""

    user: User
    audit: AuditLog

    def record(self, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None) -> AuditEntry:
        """Record an access by this user (AuditError if it cannot be: then refuse the access)."""
        return self.audit.record(self.user.name, self.user.role, action, reason=reason, detail=detail)


def record_viewed(
    session: Session, action: str, key: str, uuids: Sequence[str], *, reason: str = ""
) -> list[AuditEntry]:
    """Record that the user was shown these records: detail {key: [...], count}, one entry per VIEW_CHUNK UUIDs (at
    least one, also for none), so that every UUID shown is in the record however many there were."""
    total = len(uuids)
    chunks = [uuids[i : i + VIEW_CHUNK] for i in range(0, total, VIEW_CHUNK)] or [uuids[:0]]
    out = []
    for n, chunk in enumerate(chunks, start=1):
        detail: dict[str, Any] = {key: list(chunk), "count": total}
        if len(chunks) > 1:
            detail["part"], detail["parts"] = n, len(chunks)
        out.append(session.record(action, reason=reason, detail=detail))
    return out


def typed_name(name: object) -> str:
    """A name as someone typed it, safe to record: printable ASCII, cut short, never empty."""
    text = _PRINTABLE.sub("?", str(name))[:MAX_TYPED_NAME]
    return text or "(empty)"


def record_refused_login(audit: AuditLog, name: object, why: str, *, via: str) -> AuditEntry:
    """A refused login: the name as typed, the real reason (AuthError.reason) and the way in (cli, alert-page)."""
    return audit.record(typed_name(name), "none", "login.refused", detail={"why": why, "via": via})


def start_session(audit: AuditLog, user: User, what: str, *, via: str) -> Session:
    """``user`` has logged in to do ``what``: record "access.denied" and raise AccessDenied if the role may not,
    else record "login" and return the session."""
    try:
        require(user, what)
    except AccessDenied:
        audit.record(user.name, user.role, "access.denied", detail={"what": what, "via": via})
        raise
    audit.record(user.name, user.role, "login", detail={"what": what, "via": via})
    return Session(user, audit)


def add_login_args(p: argparse.ArgumentParser) -> None:
    """--user NAME (required) and --password-stdin."""
    p.add_argument("--user", required=True, help="your own user name; you are asked for your password")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )


def read_password(args: argparse.Namespace) -> str:
    """From the terminal without echo, or the first line of stdin with --password-stdin."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline(MAX_PASSWORD + 2)
        return line[:-1] if line.endswith("\n") else line
    return getpass.getpass(f"password for {args.user}: ")


def cli_login(
    args: argparse.Namespace,
    conn: Connection,
    audit: AuditLog,
    what: str,
    *,
    clock: Callable[[], float] = time.time,
) -> Session:
    """Log ``args.user`` in for ``what``; every outcome is recorded. AuthError / AccessDenied (the caller prints one
    line on stderr and exits 2); AuditError when the record cannot be written."""
    password = read_password(args)
    try:
        user = UserStore(conn, clock=clock).authenticate(args.user, password, clock())
    except AuthError as e:
        record_refused_login(audit, args.user, e.reason, via="cli")
        raise
    return start_session(audit, user, what, via="cli")


def open_unit(args: argparse.Namespace, *, create: bool = False) -> tuple[Connection, AuditLog]:
    """The unit's database (``--config`` / ``--db`` / ``--key-file``, as every store command resolves them), migrated,
    and its access record signed with the unit's key (``--audit-key-file``, the settings file, or audit.key beside
    the database key). StoreError / KeyFileError / ConfigError."""
    from ..store.commands import _resolve, resolve_audit_key  # imported here: edge.store.commands imports this module

    db, key_file = _resolve(args)
    key = load_key(key_file)
    signer = load_signing_key(resolve_audit_key(args))
    conn = open_db(Path(db), key, create=create)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn, AuditLog(conn, signer)
