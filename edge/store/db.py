"""Opening the SQLCipher database: raw key, key check, and the pragmas that make a commit durable."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .errors import StoreError

log = logging.getLogger(__name__)

# sqlcipher3 ships no type information; its API is the standard library's sqlite3 (a fork of it), described by the
# protocols below. Its exceptions are its own classes, not sqlite3's.
_sqlcipher: Any = importlib.import_module("sqlcipher3.dbapi2")
DBError: type[Exception] = _sqlcipher.Error
DatabaseError: type[Exception] = _sqlcipher.DatabaseError
IntegrityError: type[Exception] = _sqlcipher.IntegrityError
SQLITE_FULL = 13

BUSY_TIMEOUT_MS = 5000


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a sqlcipher3 connection the store uses."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[object] | Mapping[str, object] = ..., /) -> Cursor: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def error_code(e: BaseException) -> int | None:
    """The primary SQLite result code of a sqlcipher3 error (SQLITE_FULL, SQLITE_IOERR, ...), if it has one."""
    code = getattr(e, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def open_db(path: Path, key: bytes, *, create: bool = True) -> Connection:
    """Open (or create, mode 0600) the encrypted database at ``path``, check the key and set the pragmas.

    The connection is in autocommit mode: callers group their statements in explicit ``BEGIN IMMEDIATE`` / ``COMMIT``.
    """
    path = Path(path)
    if len(key) != 32:
        raise StoreError("the database key must be 32 bytes")
    if not path.exists():
        if not create:
            raise StoreError(f"database {path} does not exist")
        _create_private_file(path)
    try:
        conn = _sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
    except DBError as e:
        raise StoreError(f"cannot open database {path}: {e}") from e
    try:
        _configure(conn, path, key)
    except BaseException:
        conn.close()
        raise
    c: Connection = conn
    return c


def _create_private_file(path: Path) -> None:
    """An empty file is an empty SQLite database; creating it ourselves sets its mode, which SQLite copies to the
    -wal and -shm files."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise StoreError(f"cannot create database {path}: {e.strerror}") from e
    os.close(fd)


def _configure(conn: Any, path: Path, key: bytes) -> None:
    try:
        # Before the key: a wrong key makes SQLCipher log "hmac check failed" to stderr, which would look like damage.
        conn.execute("PRAGMA cipher_log_level = NONE")
    except DBError:
        log.debug("this SQLCipher has no cipher_log_level")
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")  # raw key: no passphrase derivation needed for 256 bits
    except DBError as e:
        raise StoreError(f"cannot set the key of database {path}: {e}") from e
    try:
        # PRAGMA key is accepted whatever the key; the first read of the file tells whether it decrypts.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except DatabaseError as e:
        raise StoreError(
            f"database {path}: the key does not match this database (or the file is not an alpr-edge database)"
        ) from e
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"database {path}: cannot switch to WAL journal mode (got {mode})")
        # FULL: in WAL mode NORMAL may lose the last commits on a power cut; a read the store reported committed
        # must survive one, so every commit fsyncs the WAL.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA secure_delete = ON")  # deleted reads are overwritten, not left in free pages
        conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary tables never reach the disk
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except DBError as e:
        raise StoreError(f"cannot configure database {path}: {e}") from e
