"""User accounts (P12): one login per person, a role, an Argon2id password hash, and no access before training.

Why it is built this way:
- Argon2id through argon2-cffi's PasswordHasher (by default RFC 9106's low-memory profile: 3 passes, 64 MiB,
  4 lanes). A stored hash made with other parameters is replaced at the next successful login.
- ``authenticate`` refuses every failed login with the same AuthError message, and an unknown name costs the same
  Argon2 verification as a known one (against a dummy hash), so the login form cannot tell who has an account. The
  real reason is on the exception (``reason``) for the log only.
- ``max_failures`` wrong passwords in a row lock the account for ``lockout_s``; while it is locked even the right
  password is refused and failures are not counted.
- Accounts are never deleted, only disabled: the access record (issue 7) names users permanently (P13).
- Names are case-insensitive: stored lowercase, so "JSmith" and "jsmith" cannot be two accounts.
- The rules (AccountStore) are apart from where accounts are kept (a UserStorage): the unit's SQLCipher store here,
  headquarters' PostgreSQL in edge.hq.access, so both follow exactly the same rules.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..store.db import Connection, DBError, IntegrityError
from ..store.errors import StoreError

log = logging.getLogger(__name__)

ROLES = ("operator", "investigator", "administrator", "auditor", "technician")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 takes any length; a bound keeps a login form from being handed megabytes
MIN_DISTINCT = 5  # "aaaaaaaaaaaa" and "121212121212" are long but not passwords
MAX_FAILURES = 5
LOCKOUT_S = 15 * 60.0
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{1,63}"
_NAME = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UserError(ValueError):
    """Bad input to an account operation; the message names the field (never contains a password)."""


class UnknownUserError(UserError):
    """An administrative operation named a user that does not exist."""


class DuplicateUserError(UserError):
    """``add`` named a user that already exists."""


class AuthError(PermissionError):
    """A login was refused. ``str()`` is the same for every reason; ``reason`` is for the log only:
    "unknown", "password", "locked", "disabled" or "training"."""

    MESSAGE = "login refused: wrong name or password, or the account is locked, disabled or not yet cleared"

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGE)
        self.reason = reason


@dataclass(frozen=True)
class User:
    name: str
    role: str
    training_completed: date | None  # no access before this day (P12); None: training not recorded, no access
    disabled: bool
    locked_until: float | None = None  # UTC epoch seconds while locked after failed logins


def check_name(name: object) -> str:
    """The stored (lowercase) form of a user name, or UserError."""
    if not isinstance(name, str):
        raise UserError("name: must be a string")
    key = name.strip().lower()
    if not _NAME.fullmatch(key):
        raise UserError("name: 2 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit")
    return key


def check_role(role: object) -> str:
    if role not in ROLES:
        raise UserError(f"role: must be one of {', '.join(ROLES)}")
    assert isinstance(role, str)
    return role


def check_password(password: object, name: str, min_length: int = MIN_PASSWORD) -> str:
    """The password, normalised (NFC), if the policy allows it; UserError saying which rule it breaks."""
    if not isinstance(password, str):
        raise UserError("password: must be a string")
    pw = unicodedata.normalize("NFC", password)
    if len(pw) < min_length:
        raise UserError(f"password: at least {min_length} characters")
    if len(pw) > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} characters")
    if _CONTROL.search(pw):
        raise UserError("password: must not contain control characters")
    if len(set(pw)) < MIN_DISTINCT:
        raise UserError(f"password: at least {MIN_DISTINCT} different characters")
    if name and name.lower() in pw.lower():
        raise UserError("password: must not contain the user name")
    return pw


def _check_date(value: object) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise UserError("training_completed: must be a date (or None)")
    return value


def _finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}: must be a finite number")
    return float(value)


@dataclass(frozen=True)
class UserRow:
    """One stored account as a storage adapter hands it over (the hash never leaves the store's logic)."""

    name: str
    role: str
    password_hash: str
    training_completed: date | None
    disabled: bool
    failed_logins: int
    locked_until: float | None

    def user(self) -> User:
        return User(self.name, self.role, self.training_completed, self.disabled, self.locked_until)


class UserStorage(Protocol):
    """Where accounts are kept: the unit's SQLCipher store (SqliteUserStorage) or headquarters' PostgreSQL
    (edge.hq.access). Each method is one transaction; a failure raises StoreError."""

    def get(self, key: str) -> UserRow | None: ...

    def all(self) -> list[UserRow]: ...

    def insert(self, row: UserRow, now: float) -> bool:
        """False when the name is taken (nothing changed)."""
        ...

    def set_password(self, key: str, pw_hash: str, now: float) -> bool:
        """Also clears failed logins and a lock; False when there is no such user."""
        ...

    def set_disabled(self, key: str, disabled: bool) -> bool:
        """Enabling also clears failed logins and a lock; False when there is no such user."""
        ...

    def failed(self, key: str, max_failures: int, locked_until: float) -> bool:
        """Count a wrong password; at ``max_failures`` lock until ``locked_until`` and restart the count. True when
        the account is locked now."""
        ...

    def succeeded(self, key: str, *, clear_failures: bool, new_hash: str | None, old_hash: str) -> None:
        """After a right password: clear failed logins and/or replace the hash (only if it is still ``old_hash``)."""
        ...


_COLUMNS = "name, role, password_hash, training_completed, disabled, failed_logins, locked_until"


def _row(r: Any) -> UserRow:
    name, role, pw_hash, training, disabled, failed, locked = r
    return UserRow(
        name, role, pw_hash, date.fromisoformat(training) if training else None, bool(disabled), int(failed), locked
    )


class SqliteUserStorage:
    """The unit's ``users`` table (migration 3). Thread-safe: one lock around each use of the connection (the alert
    page serves logins from several threads)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> int:
        """Run ``statements`` in one BEGIN IMMEDIATE transaction; returns the rows the last one changed."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                changed = 0
                for sql, params in statements:
                    changed = c.execute(sql, params).rowcount
                c.execute("COMMIT")
                return changed
            except DBError as e:
                try:
                    if c.in_transaction:
                        c.rollback()
                except DBError:
                    log.error("rollback of the users transaction failed", exc_info=True)
                if isinstance(e, IntegrityError):
                    raise
                raise StoreError(f"cannot update user accounts: {e}") from e

    def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except DBError as e:
                raise StoreError(f"user accounts query failed: {e}") from e

    def get(self, key: str) -> UserRow | None:
        rows = self._fetch(f"SELECT {_COLUMNS} FROM users WHERE name = ?", (key,))
        return _row(rows[0]) if rows else None

    def all(self) -> list[UserRow]:
        return [_row(r) for r in self._fetch(f"SELECT {_COLUMNS} FROM users ORDER BY name", ())]

    def insert(self, row: UserRow, now: float) -> bool:
        sql = (
            "INSERT INTO users (name, role, password_hash, training_completed, disabled, failed_logins, "
            "locked_until, created_at, password_changed_at) VALUES (?, ?, ?, ?, 0, 0, NULL, ?, ?)"
        )
        training = row.training_completed.isoformat() if row.training_completed else None
        try:
            self._write([(sql, (row.name, row.role, row.password_hash, training, now, now))])
        except IntegrityError:
            return False
        return True

    def set_password(self, key: str, pw_hash: str, now: float) -> bool:
        sql = (
            "UPDATE users SET password_hash = ?, password_changed_at = ?, failed_logins = 0, locked_until = NULL "
            "WHERE name = ?"
        )
        return self._write([(sql, (pw_hash, now, key))]) == 1

    def set_disabled(self, key: str, disabled: bool) -> bool:
        if disabled:
            return self._write([("UPDATE users SET disabled = 1 WHERE name = ?", (key,))]) == 1
        sql = "UPDATE users SET disabled = 0, failed_logins = 0, locked_until = NULL WHERE name = ?"
        return self._write([(sql, (key,))]) == 1

    def failed(self, key: str, max_failures: int, locked_until: float) -> bool:
        n = max_failures
        sql = (
            "UPDATE users SET "
            "failed_logins = CASE WHEN failed_logins + 1 >= ? THEN 0 ELSE failed_logins + 1 END, "
            "locked_until = CASE WHEN failed_logins + 1 >= ? THEN ? ELSE NULL END "
            "WHERE name = ?"
        )
        self._write([(sql, (n, n, locked_until, key))])
        after = self.get(key)
        return after is not None and after.locked_until is not None

    def succeeded(self, key: str, *, clear_failures: bool, new_hash: str | None, old_hash: str) -> None:
        statements: list[tuple[str, Sequence[object]]] = []
        if clear_failures:
            statements.append(("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE name = ?", (key,)))
        if new_hash is not None:
            statements.append(
                ("UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?", (new_hash, key, old_hash))
            )
        if statements:
            self._write(statements)


class AccountStore:
    """The account rules (P12) over any UserStorage: policy checks, Argon2id, lockout, training day, disable.
    Argon2 runs outside the storage's lock."""

    def __init__(
        self,
        storage: UserStorage,
        *,
        hasher: PasswordHasher | None = None,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
        min_password: int = MIN_PASSWORD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._hasher = hasher or PasswordHasher()
        if self._hasher.type is not Type.ID:
            raise ValueError("hasher: must produce Argon2id hashes")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or not 1 <= max_failures <= 100:
            raise ValueError("max_failures: must be an integer in 1..100")
        if not 0 < _finite(lockout_s, "lockout_s") <= 7 * 86400:
            raise ValueError("lockout_s: must be in (0, 604800] seconds")
        if isinstance(min_password, bool) or not isinstance(min_password, int) or not 8 <= min_password <= 128:
            raise ValueError("min_password: must be an integer in 8..128")
        self.max_failures = max_failures
        self.lockout_s = float(lockout_s)
        self.min_password = min_password
        self._clock = clock
        self._dummy: str | None = None

    def _must_change(self, changed: bool, key: str) -> None:
        if not changed:
            raise UnknownUserError(f"name: no user named {key!r}")

    # --- administration -------------------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str, training_completed: date | None) -> User:
        """Create an account. UserError (policy, bad field), DuplicateUserError, StoreError."""
        key = check_name(name)
        role = check_role(role)
        pw = check_password(password, key, self.min_password)
        training = _check_date(training_completed)
        row = UserRow(key, role, self._hasher.hash(pw), training, False, 0, None)
        if not self._storage.insert(row, self._clock()):
            raise DuplicateUserError(f"name: a user named {key!r} already exists")
        log.info("user %s added with role %s", key, role)
        return row.user()

    def change_password(self, name: str, new_password: str) -> None:
        """Set a new password (policy checked); also clears a lockout. UserError, UnknownUserError, StoreError."""
        key = check_name(name)
        pw = check_password(new_password, key, self.min_password)
        self._must_change(self._storage.set_password(key, self._hasher.hash(pw), self._clock()), key)
        log.info("password of user %s changed", key)

    def disable(self, name: str) -> None:
        """Refuse every later login of this user (the account stays, for the access record)."""
        key = check_name(name)
        self._must_change(self._storage.set_disabled(key, True), key)
        log.info("user %s disabled", key)

    def enable(self, name: str) -> None:
        """Allow a disabled user to log in again; also clears a lockout."""
        key = check_name(name)
        self._must_change(self._storage.set_disabled(key, False), key)
        log.info("user %s enabled", key)

    def get(self, name: str) -> User | None:
        """The account, or None (also for a name that could not be one)."""
        try:
            key = check_name(name)
        except UserError:
            return None
        row = self._storage.get(key)
        return row.user() if row else None

    def list(self) -> list[User]:
        """Every account, by name (never the hashes)."""
        return [r.user() for r in self._storage.all()]

    # --- logging in -----------------------------------------------------------------------------------------

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(24))
        return self._dummy

    def _verify(self, pw_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(pw_hash, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.error("a stored password hash cannot be verified (damaged or not Argon2)")
            return False

    def authenticate(self, name: str, password: str, now: float) -> User:
        """The user if ``password`` is theirs and they may log in at ``now`` (UTC epoch seconds); else AuthError.

        Refused: unknown name, wrong password, locked (after ``max_failures`` wrong passwords, for ``lockout_s``),
        disabled, or before the training-completed day (the local calendar day).
        """
        now = _finite(now, "now")
        dummy = self._dummy_hash()  # made before the lookup, so the first login costs the same for every name
        try:
            key = check_name(name)
        except UserError:
            key = ""
        pw = unicodedata.normalize("NFC", password) if isinstance(password, str) else ""
        if len(pw) > MAX_PASSWORD:
            raise AuthError("password")
        row = self._storage.get(key) if key else None
        if row is None:
            self._verify(dummy, pw)
            log.info("login refused: unknown user name")
            raise AuthError("unknown")
        ok = self._verify(row.password_hash, pw)
        if row.locked_until is not None and now < row.locked_until:
            log.info("login of user %s refused: locked", key)
            raise AuthError("locked")
        if not ok:
            n = self.max_failures
            if self._storage.failed(row.name, n, now + self.lockout_s):
                log.warning("user %s locked for %.0f s after %d wrong passwords", key, self.lockout_s, n)
            else:
                log.info("login of user %s refused: wrong password", key)
            raise AuthError("password")
        self._succeeded(row, pw)
        if row.disabled:
            log.info("login of user %s refused: disabled", key)
            raise AuthError("disabled")
        if row.training_completed is None or datetime.fromtimestamp(now).date() < row.training_completed:
            log.info("login of user %s refused: training not completed", key)
            raise AuthError("training")
        log.info("user %s logged in", key)
        return User(row.name, row.role, row.training_completed, False, None)

    def _succeeded(self, row: UserRow, pw: str) -> None:
        clear = bool(row.failed_logins or row.locked_until is not None)
        new_hash = None
        if self._hasher.check_needs_rehash(row.password_hash):
            new_hash = self._hasher.hash(pw)  # the same password under the current parameters
            log.info("password hash of user %s renewed with the current Argon2 parameters", row.name)
        if clear or new_hash is not None:
            self._storage.succeeded(row.name, clear_failures=clear, new_hash=new_hash, old_hash=row.password_hash)


class UserStore(AccountStore):
    """The unit's accounts: the ``users`` table (migration 3) of the SQLCipher store. Thread-safe."""

    def __init__(
        self,
        conn: Connection,
        *,
        hasher: PasswordHasher | None = None,
        max_failures: int = MAX_FAILURES,
        lockout_s: float = LOCKOUT_S,
        min_password: int = MIN_PASSWORD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            SqliteUserStorage(conn),
            hasher=hasher,
            max_failures=max_failures,
            lockout_s=lockout_s,
            min_password=min_password,
            clock=clock,
        )
