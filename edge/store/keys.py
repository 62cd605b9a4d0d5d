"""The database key: 32 random bytes, hex in a root-only file, or a systemd credential.

The key never comes from the configuration or the command line, and is never printed or logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from .errors import KeyFileError

log = logging.getLogger(__name__)

KEY_BYTES = 32
CREDENTIAL_NAME = "alpr-edge-db-key"  # LoadCredential=alpr-edge-db-key:/etc/alpr-edge/db.key in the unit
DEFAULT_KEY_FILE = Path("/etc/alpr-edge/db.key")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_MAX_FILE_BYTES = 4096  # a key file is 65 bytes; anything much larger is not one


def create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` (mode 0600), never overwriting one: a new key cannot open the old database.

    The file and its directory are fsynced so that a key reported written survives a power cut.
    """
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"cannot create the directory of key file {path}: {e.strerror}") from e
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as e:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite it (the database can only be opened with its own key)"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot create key file {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits, but be explicit
        data = (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode("ascii")
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write key file {path}: {e.strerror}") from e
    os.close(fd)
    try:
        _fsync_dir(path.parent)
    except OSError as e:
        raise KeyFileError(f"wrote key file {path} but could not sync its directory: {e.strerror}") from e
    log.info("created database key file %s", path)


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_key(path: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The 32-byte key: from ``$CREDENTIALS_DIRECTORY/alpr-edge-db-key`` when systemd passed it, else from ``path``.

    A key file readable by group or others is refused (the credential is exempt: systemd makes it private).
    """
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if cred.exists():
            log.debug("database key from systemd credential %s", cred)
            return _parse(cred, _read(cred, check_mode=False))
        log.debug("no credential %s; using key file %s", cred, path)
    return _parse(Path(path), _read(Path(path), check_mode=True))


def _read(path: Path, *, check_mode: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise KeyFileError(
            f"database key file {path} does not exist; create it with `alpr-edge keys init --key-file {path}`"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot read database key file {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)  # checked on the open file, so a swap after the check cannot slip through
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"database key file {path} is not a regular file")
        if check_mode:
            if st.st_mode & 0o077:
                raise KeyFileError(
                    f"database key file {path} has mode {stat.S_IMODE(st.st_mode):04o} and is readable or writable "
                    f"by group or others; refusing to use it (run `chmod 600 {path}`)"
                )
            if st.st_uid not in (0, os.geteuid()):
                raise KeyFileError(
                    f"database key file {path} is owned by uid {st.st_uid}, not by root or this user; refusing it"
                )
        data = os.read(fd, _MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return data


def _parse(path: Path, data: bytes) -> bytes:
    text = data.strip()
    if len(data) > _MAX_FILE_BYTES or len(text) != 2 * KEY_BYTES:
        raise KeyFileError(
            f"database key file {path} is malformed: expected {2 * KEY_BYTES} hex digits ({KEY_BYTES} bytes)"
        )
    if not all(c in _HEX_DIGITS for c in text):
        raise KeyFileError(f"database key file {path} is malformed: it is not hexadecimal")
    return bytes.fromhex(text.decode("ascii"))
