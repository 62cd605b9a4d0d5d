"""Headquarters' accounts and its own access record (P12, P13), in PostgreSQL.

- HqUserStore is the unit's account rules (edge.access.users.AccountStore: Argon2id, lockout, training day,
  disable, the same refusal for every reason) over HQ's ``users`` table (HQ migration 2), so both sides follow one
  implementation of P12.
- HqAuditLog is the unit's hash chain (edge.access.audit: entry_hash, Ed25519 signatures, verify_chain) in table
  ``hq_audit``, signed with headquarters' key. Several HQ processes append to it: each append holds a transaction
  advisory lock, so the next sequence number and previous hash are read and written by one process at a time and the
  chain never forks. The table's trigger refuses UPDATE and DELETE.
- A command that shows plate data logs in with hq_cli_login (the same steps as the unit's cli_login) and records
  what it did through the HqSession.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg.types.json import Jsonb

from ..access.audit import (
    GENESIS,
    AuditEntry,
    AuditError,
    Problem,
    VerifyResult,
    make_entry,
    signature_ok,
    verify_chain,
)
from ..access.session import AccessDenied, read_password, require, typed_name
from ..access.users import (
    LOCKOUT_S,
    MAX_FAILURES,
    MIN_PASSWORD,
    AccountStore,
    AuthError,
    User,
    UserRow,
)
from ..hotlist import bundle as hlb
from ..store.errors import StoreError

log = logging.getLogger(__name__)

SIGNING_KEY_ENV = "ALPR_HQ_SIGNING_KEY"
SIGNING_KEY_CREDENTIAL = "alpr-hq-signing-key"
_AUDIT_LOCK = 0x616C_7072_6871_6175  # pg_advisory_xact_lock key of hq_audit appends ("alprhqau")
VIA = "hq-cli"  # the way in, as the unit's records name theirs ("cli", "alert-page")


class SignerError(ValueError):
    """Headquarters' signing key is missing or unusable; the message says which file and why."""


# --- accounts -----------------------------------------------------------------------------------------------------

_COLUMNS = "name, role, password_hash, training_completed, disabled, failed_logins, locked_until"


def _row(r: Sequence[Any]) -> UserRow:
    name, role, pw_hash, training, disabled, failed, locked = r
    return UserRow(name, role, pw_hash, training, bool(disabled), int(failed), locked)


class PgUserStorage:
    """HQ's ``users`` table as an edge.access.users.UserStorage. ``conn`` is in autocommit mode (schema.connect);
    each method is one transaction (a savepoint when the caller holds one open). Thread-safe."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self._lock = threading.RLock()

    def _run(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> psycopg.Cursor[Any]:
        with self._lock:
            try:
                with self._conn.transaction():
                    return self._conn.execute(sql, params)
            except psycopg.Error as e:
                raise StoreError(f"user accounts: {e}") from e

    def get(self, key: str) -> UserRow | None:
        r = self._run(f"SELECT {_COLUMNS} FROM users WHERE name = %s", (key,)).fetchone()
        return _row(r) if r else None

    def all(self) -> list[UserRow]:
        return [_row(r) for r in self._run(f"SELECT {_COLUMNS} FROM users ORDER BY name", ()).fetchall()]

    def insert(self, row: UserRow, now: float) -> bool:
        sql = (
            "INSERT INTO users (name, role, password_hash, training_completed, disabled, failed_logins, "
            "locked_until, created_at, password_changed_at) VALUES (%s, %s, %s, %s, false, 0, NULL, %s, %s) "
            "ON CONFLICT (name) DO NOTHING"
        )
        return self._run(sql, (row.name, row.role, row.password_hash, row.training_completed, now, now)).rowcount == 1

    def set_password(self, key: str, pw_hash: str, now: float) -> bool:
        sql = (
            "UPDATE users SET password_hash = %s, password_changed_at = %s, failed_logins = 0, locked_until = NULL "
            "WHERE name = %s"
        )
        return self._run(sql, (pw_hash, now, key)).rowcount == 1

    def set_disabled(self, key: str, disabled: bool) -> bool:
        if disabled:
            return self._run("UPDATE users SET disabled = true WHERE name = %s", (key,)).rowcount == 1
        sql = "UPDATE users SET disabled = false, failed_logins = 0, locked_until = NULL WHERE name = %s"
        return self._run(sql, (key,)).rowcount == 1

    def failed(self, key: str, max_failures: int, locked_until: float) -> bool:
        sql = (
            "UPDATE users SET "
            "failed_logins = CASE WHEN failed_logins + 1 >= %(n)s THEN 0 ELSE failed_logins + 1 END, "
            "locked_until = CASE WHEN failed_logins + 1 >= %(n)s THEN %(until)s ELSE NULL END "
            "WHERE name = %(name)s RETURNING locked_until"
        )
        r = self._run(sql, {"n": max_failures, "until": locked_until, "name": key}).fetchone()
        return r is not None and r[0] is not None

    def succeeded(self, key: str, *, clear_failures: bool, new_hash: str | None, old_hash: str) -> None:
        with self._lock:
            try:
                with self._conn.transaction():
                    if clear_failures:
                        self._conn.execute(
                            "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE name = %s", (key,)
                        )
                    if new_hash is not None:
                        self._conn.execute(
                            "UPDATE users SET password_hash = %s WHERE name = %s AND password_hash = %s",
                            (new_hash, key, old_hash),
                        )
            except psycopg.Error as e:
                raise StoreError(f"user accounts: {e}") from e


class HqUserStore(AccountStore):
    """Headquarters' accounts: exactly the unit's rules (UserStore) over PostgreSQL."""

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        hasher: PasswordHasher | None = None,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
        min_password: int = MIN_PASSWORD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            PgUserStorage(conn),
            hasher=hasher,
            max_failures=max_failures,
            lockout_s=lockout_s,
            min_password=min_password,
            clock=clock,
        )


# --- the access record --------------------------------------------------------------------------------------------

AUDIT_COLUMNS = "seq, uuid, at, user_name, role, action, reason, detail, prev_hash, hash, sig"


def row_to_json(r: Sequence[Any]) -> dict[str, Any]:
    """An hq_audit row in AuditEntry.to_json form."""
    seq, uid, at, user, role, action, reason, detail, prev_hash, hash_, sig = r
    return {
        "seq": seq,
        "uuid": str(uid),
        "at": at,
        "user": user,
        "role": role,
        "action": action,
        "reason": reason,
        "detail": detail,
        "prev_hash": prev_hash,
        "hash": hash_,
        "sig": sig,
    }


def read_entries(docs: Iterable[Mapping[str, Any]]) -> tuple[list[AuditEntry], list[Problem]]:
    """Parse stored entries; one that no longer parses is an "altered" Problem (left out of the chain)."""
    entries: list[AuditEntry] = []
    problems: list[Problem] = []
    for d in docs:
        try:
            entries.append(AuditEntry.from_json(d))
        except (ValueError, TypeError) as e:
            seq = d.get("seq") if isinstance(d, Mapping) else None
            n = seq if isinstance(seq, int) and not isinstance(seq, bool) else -1
            problems.append(Problem(n, "altered", f"entry cannot be read: {e}"))
    return entries, problems


def verify_entries(docs: Iterable[Mapping[str, Any]], public_key: Ed25519PublicKey) -> VerifyResult:
    """verify_chain over stored JSON documents (any order), with unreadable entries reported rather than raised."""
    entries, unreadable = read_entries(docs)
    # in seq order (headquarters keeps no insertion order); of two entries with one seq the genuine one first, so
    # that the other is the one reported as inserted
    entries.sort(key=lambda e: (e.seq, not (e.computed_hash() == e.hash and signature_ok(public_key, e.hash, e.sig))))
    result = verify_chain(entries, public_key)
    bad = {p.seq for p in unreadable}
    # an unreadable entry is already reported as altered; do not report its absence from the chain again
    rest = tuple(p for p in result.problems if not (p.kind == "deleted" and p.seq in bad))
    problems = tuple(sorted((*unreadable, *rest), key=lambda p: (p.seq, p.kind)))
    return VerifyResult(result.entries + len(unreadable), problems)


class HqAuditLog:
    """Headquarters' access record in ``hq_audit``: the same chain and signatures as a unit's. Thread-safe, and
    safe with several processes appending (transaction advisory lock)."""

    def __init__(
        self, conn: psycopg.Connection, signer: Ed25519PrivateKey, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._conn = conn
        self._signer = signer
        self._clock = clock
        self._lock = threading.Lock()

    def record(
        self, user: str, role: str, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one signed entry; committed (durable) before it returns, unless the caller holds a transaction
        open on the connection (then it commits with it). AuditError when it cannot be recorded."""
        with self._lock:
            try:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))
                    last = self._conn.execute("SELECT seq, hash FROM hq_audit ORDER BY seq DESC LIMIT 1").fetchone()
                    seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
                    entry = make_entry(self._signer, seq, prev, self._clock(), user, role, action, reason, detail)
                    self._conn.execute(
                        f"INSERT INTO hq_audit ({AUDIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (entry.seq, entry.uuid, entry.at, entry.user, entry.role, entry.action, entry.reason,
                         Jsonb(entry.detail), entry.prev_hash, entry.hash, entry.sig),
                    )  # fmt: skip
            except (psycopg.Error, TypeError, ValueError) as e:
                raise AuditError(f"headquarters' access record: cannot record {action!r}: {e}") from e
        log.info("recorded %s by %s (hq_audit seq %d)", action, user, entry.seq)
        return entry

    def entries(
        self,
        *,
        actions: Collection[str] | None = None,
        user: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries in seq order, filtered as AuditLog.entries (at in [start, end]); the first ``limit``. ValueError
        for an entry that no longer parses (verify finds it)."""
        where: list[str] = ["TRUE"]
        params: list[object] = []
        if actions is not None:
            where.append("action = ANY(%s)")
            params.append(list(actions))
        if user is not None:
            where.append("user_name = %s")
            params.append(user)
        if start is not None:
            where.append("at >= %s")
            params.append(start)
        if end is not None:
            where.append("at <= %s")
            params.append(end)
        sql = f"SELECT {AUDIT_COLUMNS} FROM hq_audit WHERE {' AND '.join(where)} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [AuditEntry.from_json(row_to_json(r)) for r in rows]

    def verify(self, public_key: Ed25519PublicKey) -> VerifyResult:
        """The whole chain in seq order (PostgreSQL has no insertion order to compare with: a reordering shows as
        altered entries, since seq and prev_hash are inside each hash)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {AUDIT_COLUMNS} FROM hq_audit ORDER BY seq").fetchall()
        return verify_entries((row_to_json(r) for r in rows), public_key)


# --- logging in ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HqSession:
    """A logged-in person at headquarters: what they do is recorded under their name and role."""

    user: User
    audit: HqAuditLog

    def record(self, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None) -> AuditEntry:
        return self.audit.record(self.user.name, self.user.role, action, reason=reason, detail=detail)


def add_signing_key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        help=f"headquarters' Ed25519 signing key (PEM, mode 0600) that signs its access record (default: systemd "
        f"credential {SIGNING_KEY_CREDENTIAL}, else ${SIGNING_KEY_ENV})",
    )


def add_hq_login_args(p: argparse.ArgumentParser) -> None:
    """--user, --password-stdin, --signing-key and the database URL options (do not add those again)."""
    from .commands import add_db_url_arg

    p.add_argument("--user", required=True, metavar="NAME", help="your own headquarters login name")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read your password from the first line of standard input instead of asking at the terminal",
    )
    add_signing_key_arg(p)
    add_db_url_arg(p)


def signing_key_path(args: argparse.Namespace) -> Path:
    """--signing-key, else systemd's credential, else $ALPR_HQ_SIGNING_KEY; SignerError when none is given."""
    path: Path | None = getattr(args, "signing_key", None)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None and cred_dir and (Path(cred_dir) / SIGNING_KEY_CREDENTIAL).is_file():
        path = Path(cred_dir) / SIGNING_KEY_CREDENTIAL
    if path is None and os.environ.get(SIGNING_KEY_ENV, "").strip():
        path = Path(os.environ[SIGNING_KEY_ENV].strip())
    if path is None:
        raise SignerError(
            f"no signing key for headquarters' access record: give --signing-key or set ${SIGNING_KEY_ENV}"
        )
    return path


def load_hq_signer(args: argparse.Namespace) -> Ed25519PrivateKey:
    """Headquarters' Ed25519 key (the kind ``alpr-edge hotlist keygen`` makes); SignerError naming the problem."""
    try:
        return hlb.load_private_key(signing_key_path(args))
    except hlb.BundleError as e:
        raise SignerError(str(e)) from e


def hq_cli_login(
    args: argparse.Namespace,
    conn: psycopg.Connection,
    what: str,
    *,
    users: HqUserStore | None = None,
    audit: HqAuditLog | None = None,
    clock: Callable[[], float] = time.time,
) -> HqSession:
    """Log in ``args.user`` for ``what`` (a key of edge.access.session.ROLES_FOR) and record it.

    The same records as the unit's cli_login: "login" on success, "login.refused" (the name as typed, the real
    reason) or "access.denied" on failure, then AuthError / AccessDenied; SignerError or AuditError when nothing can
    be recorded (then nobody logs in).
    """
    audit = audit or HqAuditLog(conn, load_hq_signer(args), clock=clock)
    users = users or HqUserStore(conn, clock=clock)
    password = read_password(args)
    try:
        user = users.authenticate(args.user, password, clock())
    except AuthError as e:
        audit.record(typed_name(args.user), "none", "login.refused", detail={"why": e.reason, "via": VIA, "what": what})
        raise
    try:
        require(user, what)
    except AccessDenied:
        audit.record(user.name, user.role, "access.denied", detail={"what": what, "via": VIA})
        raise
    session = HqSession(user, audit)
    session.record("login", detail={"what": what, "via": VIA})
    return session
