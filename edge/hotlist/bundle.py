"""Signed hot list bundles: headquarters signs, the unit verifies before it believes a single byte.

Container (format 1), all integers big-endian::

    magic        8 bytes   b"ALPRHLB1"
    header_len   4 bytes   length of the header, at most 64 KiB
    header       JSON      UTF-8 object: format, list_id, version, created (ISO-8601 UTC), entry_count,
                           key_id, compression ("gzip"), body_len, csv_len, body_sha256
    sig_len      2 bytes   64
    signature    64 bytes  Ed25519 over magic + header_len + header
    body_len     8 bytes   must equal the header's body_len
    body                   the CSV, gzip-compressed
    (nothing may follow)

The signature covers the header, and the header binds the body by its SHA-256, so any changed byte anywhere is
caught; signing the small header rather than the body keeps verification of a 100 MB extract to one hash pass
without copying it. The body is checked against that hash *before* it is decompressed, so zlib never sees data
headquarters did not sign, and it is decompressed to at most the signed ``csv_len`` (capped) bytes: no
decompression bomb. The body is gzip because a state extract compresses about 5-8 times, which matters on a
cellular link and in the unit's database, and gzip costs a fraction of a second to undo.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .csvformat import DEFAULT_MAX_BYTES, CsvError, parse_csv
from .entry import ListInfo

MAGIC = b"ALPRHLB1"
FORMAT = 1
MAX_HEADER = 64 * 1024
SIG_LEN = 64
DEFAULT_MAX_BUNDLE_BYTES = 256 * 1024 * 1024  # compressed; the CSV cap is csvformat.DEFAULT_MAX_BYTES
DEFAULT_MAX_SKEW_S = 600.0  # a bundle created further in the future than this is refused
LIST_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
RESERVED_LIST_IDS = frozenset({"manual"})  # the unit's own approved manual entries, never from a bundle
_MAX_VERSION = 2**63 - 1
_HEADER_KEYS = frozenset(
    {
        "format",
        "list_id",
        "version",
        "created",
        "entry_count",
        "key_id",
        "compression",
        "body_len",
        "csv_len",
        "body_sha256",
    }
)
_PREFIX = struct.Struct(">I")
_SIGLEN = struct.Struct(">H")
_BODYLEN = struct.Struct(">Q")


class BundleError(ValueError):
    """A bundle that must not be used: unsigned, tampered, wrong key, truncated, malformed, oversized, too new."""


class UntrustedKeyError(BundleError):
    """Signed by a key this unit does not trust (it may be trusted after a configuration change)."""


class FutureBundleError(BundleError):
    """Created in the future beyond the allowed skew (acceptable later, or once a clock is fixed)."""


@dataclass(frozen=True)
class BundleHeader:
    format: int
    list_id: str
    version: int
    created: float
    entry_count: int
    key_id: str
    compression: str
    body_len: int
    csv_len: int
    body_sha256: str


@dataclass(frozen=True)
class VerifiedBundle:
    info: ListInfo
    body: bytes  # the CSV, decompressed
    header: BundleHeader


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_keypair(private_path: Path, public_path: Path) -> str:
    """Create a signing key pair as PEM files (the private one mode 0600, never overwritten); returns the key id."""
    private, public = generate_keypair()
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as e:
        raise BundleError(f"{private_path} already exists; refusing to overwrite a signing key") from e
    except OSError as e:
        raise BundleError(f"cannot create {private_path}: {e.strerror}") from e
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(private_key_pem(private))
        f.flush()
        os.fsync(f.fileno())
    try:
        Path(public_path).write_bytes(public_key_pem(public))
    except OSError as e:
        raise BundleError(f"cannot write {public_path}: {e.strerror}") from e
    return key_id(public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key from a PEM file readable by its owner only."""
    try:
        st = os.stat(path)
        data = Path(path).read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read signing key {path}: {e.strerror}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BundleError(f"signing key {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read public key {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path} is not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path} is not an Ed25519 public key")
    return key


def load_public_keys(paths: Iterable[Path]) -> tuple[Ed25519PublicKey, ...]:
    return tuple(load_public_key(p) for p in paths)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_list_id(list_id: str) -> str:
    if not isinstance(list_id, str) or not LIST_ID_RE.fullmatch(list_id):
        raise BundleError("list_id must be 1..64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
    if list_id in RESERVED_LIST_IDS:
        raise BundleError(f"list_id {list_id!r} is reserved for the unit's manual entries")
    return list_id


def sign_bundle(
    private_key: Ed25519PrivateKey,
    list_id: str,
    version: int,
    csv_bytes: bytes,
    created: float | None = None,
    *,
    entry_count: int | None = None,
) -> bytes:
    """Sign a hot list CSV as a bundle. The CSV is parsed to count its good entries unless ``entry_count`` is given
    (the caller parsed it already); a CSV without a single good entry is refused."""
    check_list_id(list_id)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= _MAX_VERSION:
        raise BundleError("version must be a whole number from 1")
    if entry_count is None:
        try:
            entry_count = parse_csv(csv_bytes, list_id).consume()
        except CsvError as e:
            raise BundleError(str(e)) from e
    if entry_count < 1:
        raise BundleError("the CSV has no good entries")
    created = time.time() if created is None else created
    body = gzip.compress(csv_bytes, compresslevel=6, mtime=0)
    header = {
        "format": FORMAT,
        "list_id": list_id,
        "version": version,
        "created": _iso(created),
        "entry_count": entry_count,
        "key_id": key_id(private_key.public_key()),
        "compression": "gzip",
        "body_len": len(body),
        "csv_len": len(csv_bytes),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    signed = MAGIC + _PREFIX.pack(len(hbytes)) + hbytes
    sig = private_key.sign(signed)
    return b"".join((signed, _SIGLEN.pack(len(sig)), sig, _BODYLEN.pack(len(body)), body))


def _int(h: dict[str, object], name: str, lo: int, hi: int) -> int:
    v = h.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BundleError(f"malformed bundle: header field {name!r} must be a whole number {lo}..{hi}")
    return v


def _header(hbytes: bytes) -> BundleHeader:
    try:
        h = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError("malformed bundle: the header is not UTF-8 JSON") from e
    if not isinstance(h, dict):
        raise BundleError("malformed bundle: the header is not a JSON object")
    if set(h) != _HEADER_KEYS:
        extra, missing = sorted(set(h) - _HEADER_KEYS), sorted(_HEADER_KEYS - set(h))
        raise BundleError(f"malformed bundle: header fields unknown {extra} / missing {missing}")
    fmt = _int(h, "format", 0, 2**31)
    if fmt != FORMAT:
        raise BundleError(f"bundle format {fmt} is not supported (this unit reads format {FORMAT})")
    for name in ("list_id", "created", "key_id", "compression", "body_sha256"):
        if not isinstance(h[name], str):
            raise BundleError(f"malformed bundle: header field {name!r} must be text")
    try:
        list_id = check_list_id(h["list_id"])
    except BundleError as e:
        raise BundleError(f"malformed bundle: {e}") from e
    if h["compression"] != "gzip":
        raise BundleError(f"malformed bundle: compression {h['compression'][:20]!r} is not supported (gzip)")
    if not re.fullmatch(r"[0-9a-f]{64}", h["body_sha256"]) or not re.fullmatch(r"[0-9a-f]{16}", h["key_id"]):
        raise BundleError("malformed bundle: body_sha256 or key_id is not lower-case hex of the right length")
    try:
        dt = datetime.fromisoformat(h["created"].replace("Z", "+00:00"))
    except ValueError as e:
        raise BundleError("malformed bundle: created is not an ISO-8601 time") from e
    if dt.tzinfo is None:
        raise BundleError("malformed bundle: created has no time zone")
    return BundleHeader(
        format=fmt,
        list_id=list_id,
        version=_int(h, "version", 1, _MAX_VERSION),
        created=dt.timestamp(),
        entry_count=_int(h, "entry_count", 1, 2**40),
        key_id=h["key_id"],
        compression=h["compression"],
        body_len=_int(h, "body_len", 1, 2**62),
        csv_len=_int(h, "csv_len", 1, 2**62),
        body_sha256=h["body_sha256"],
    )


def _split(data: bytes, max_bundle_bytes: int) -> tuple[bytes, BundleHeader, bytes, memoryview]:
    """signed part, header, signature, body; structure only (nothing is trusted yet)."""
    if not isinstance(data, bytes | bytearray):
        raise BundleError("a bundle must be bytes")
    if len(data) > max_bundle_bytes:
        raise BundleError(f"bundle is {len(data)} bytes, over the {max_bundle_bytes}-byte limit")
    if len(data) < len(MAGIC) + _PREFIX.size:
        raise BundleError("truncated or not a bundle: too short")
    if data[: len(MAGIC)] != MAGIC:
        if data[:6] == MAGIC[:6]:
            raise BundleError(f"bundle format {data[6:8]!r} is not supported (this unit reads {MAGIC[6:]!r})")
        raise BundleError("not a hot list bundle (no ALPRHLB1 magic): unsigned or some other file")
    view = memoryview(data)
    pos = len(MAGIC)
    (hlen,) = _PREFIX.unpack_from(view, pos)
    pos += _PREFIX.size
    if hlen > MAX_HEADER:
        raise BundleError(f"malformed bundle: header length {hlen} over {MAX_HEADER}")
    if len(data) < pos + hlen + _SIGLEN.size:
        raise BundleError("truncated bundle: it ends inside the header")
    hbytes = bytes(view[pos : pos + hlen])
    pos += hlen
    signed = bytes(view[:pos])
    (slen,) = _SIGLEN.unpack_from(view, pos)
    pos += _SIGLEN.size
    if slen == 0:
        raise BundleError("unsigned bundle: the signature is empty")
    if slen != SIG_LEN:
        raise BundleError(f"malformed bundle: signature length {slen}, Ed25519 signatures are {SIG_LEN}")
    if len(data) < pos + SIG_LEN + _BODYLEN.size:
        raise BundleError("truncated bundle: it ends inside the signature")
    sig = bytes(view[pos : pos + SIG_LEN])
    pos += SIG_LEN
    (blen,) = _BODYLEN.unpack_from(view, pos)
    pos += _BODYLEN.size
    body = view[pos:]
    header = _header(hbytes)
    if len(body) < blen:
        raise BundleError(f"truncated bundle: the body has {len(body)} of {blen} bytes")
    if len(body) > blen:
        raise BundleError(f"malformed bundle: {len(body) - blen} bytes follow the body")
    return signed, header, sig, body


def peek_header(data: bytes, max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES) -> BundleHeader:
    """The header as the bundle claims it, NOT verified: only for choosing what to verify first."""
    return _split(data, max_bundle_bytes)[1]


def verify_bundle(
    data: bytes,
    trusted_public_keys: Sequence[Ed25519PublicKey],
    *,
    now: float | None = None,
    check_time: bool = True,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    max_csv_bytes: int = DEFAULT_MAX_BYTES,
) -> VerifiedBundle:
    """Check structure, signature (by one of the trusted keys), body hash, creation time and size; then decompress.

    ``check_time=False`` skips the future-date check: for a bundle accepted earlier and read back at start-up,
    when a unit without a real-time clock may not know the time yet.
    """
    signed, header, sig, body = _split(data, max_bundle_bytes)
    keys = {key_id(k): k for k in trusted_public_keys}
    if not keys:
        raise BundleError("no trusted public key is configured: cannot verify any bundle")
    key = keys.get(header.key_id)
    if key is None:
        raise UntrustedKeyError(f"bundle signed by an untrusted key (key id {header.key_id})")
    try:
        key.verify(sig, signed)
    except InvalidSignature as e:
        raise BundleError("bad signature: the bundle header was altered or signed by another key") from e
    if hashlib.sha256(body).hexdigest() != header.body_sha256:
        raise BundleError("tampered bundle: the body does not match its signed SHA-256")
    if check_time:
        now = time.time() if now is None else now
        if header.created > now + max_skew_s:
            raise FutureBundleError(
                f"bundle created {_iso(header.created)}, {header.created - now:.0f} s in the future "
                f"(more than the {max_skew_s:.0f} s allowed): the unit's or headquarters' clock is wrong"
            )
    if header.csv_len > max_csv_bytes:
        raise BundleError(f"bundle's list is {header.csv_len} bytes, over the {max_csv_bytes}-byte limit")
    csv_bytes = _gunzip(body, header.csv_len)
    info = ListInfo(header.list_id, header.version, header.created, header.entry_count)
    return VerifiedBundle(info=info, body=csv_bytes, header=header)


def _gunzip(body: memoryview, size: int) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, size + 1)
    except zlib.error as e:
        raise BundleError(f"malformed bundle: the body is not valid gzip ({e})") from e
    if len(out) > size or d.unconsumed_tail:
        raise BundleError(f"malformed bundle: the body decompresses to more than its declared {size} bytes")
    if not d.eof or d.unused_data:
        raise BundleError("malformed bundle: the gzip body is cut short or has trailing data")
    if len(out) != size:
        raise BundleError(f"malformed bundle: the body decompresses to {len(out)} bytes, not {size}")
    return out
