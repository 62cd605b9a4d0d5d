"""The access record (P13): who looked at what, when and why; append-only, hash-chained and signed.

Why it is built this way:
- Entry n's ``hash`` is SHA-256 over the canonical JSON of its fields and entry n-1's hash (``entry_hash``), and
  ``sig`` is the unit's Ed25519 signature of those hash bytes. Changing, deleting, moving or inserting an entry breaks
  the chain, and nobody without the unit's private key can mend it; headquarters keeps a copy and the public key.
- The canonical JSON (sorted keys, no spaces, UTF-8, floats as ``repr``) is also what survives PostgreSQL's jsonb,
  where headquarters keeps the entries: so every number in ``detail`` is finite, below 1e16 in magnitude (jsonb would
  write 1e16 as an integer) and -0.0 is hashed as 0.0; strings hold no NUL.
- ``verify_chain`` takes the entries in the order they are stored (not sorted by seq) and says, per seq, what is
  wrong: "altered" (fields no longer match the hash, or re-hashed without the key), "deleted", "reordered" (an
  entry is in another entry's place), "inserted" (an entry the chain skips, or a second one with the same seq) or
  "bad-signature".
- ``AuditLog.record`` computes seq = last + 1 and the link inside one BEGIN IMMEDIATE transaction, so threads and
  processes writing at once get contiguous seqs, and a power cut leaves either the whole entry or none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import os
import re
import stat
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..store.db import Connection, DBError
from ..store.errors import KeyFileError

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CREDENTIAL_NAME = "alpr-edge-audit-key"  # LoadCredential=alpr-edge-audit-key:/etc/alpr-edge/audit.key
MAX_ENTRY_BYTES = 60 * 1024  # headquarters takes at most 64 KiB of JSON per item
MAX_FLOAT = 1e16  # repr switches to exponent form here, which jsonb would turn into an integer
MAX_DEPTH = 16
_NEAR = 8  # how far from its place verify_chain looks for a renumbered entry's own seq
MAX_NAME = 128
MAX_REASON = 4000
_T = 4e9  # latest plausible epoch second (year 2096)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACTION = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY_FILE_MAX = 4096
FIELDS = ("seq", "uuid", "at", "user", "role", "action", "reason", "detail", "prev_hash", "hash", "sig")


class AuditError(Exception):
    """The entry could not be recorded: the caller must refuse the access."""


# -- canonical form ----------------------------------------------------------------------------------------------


def _canon_value(v: Any, where: str, depth: int = 0) -> Any:
    """``v`` as plain JSON values (tuples become lists, -0.0 becomes 0.0); ValueError naming ``where``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH}")
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v) or abs(v) >= MAX_FLOAT:
            raise ValueError(f"{where}: numbers must be finite and below {MAX_FLOAT:g} in magnitude")
        return v + 0.0  # -0.0 -> 0.0
    if isinstance(v, str):
        if "\x00" in v:
            raise ValueError(f"{where}: a string holds NUL")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where}: a string is not valid Unicode") from e
        return v
    if isinstance(v, list | tuple):
        return [_canon_value(x, where, depth + 1) for x in v]
    if isinstance(v, Mapping):
        out: dict[str, Any] = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: object keys must be strings")
            _canon_value(k, where, depth + 1)
            out[k] = _canon_value(x, where, depth + 1)
        return out
    raise ValueError(f"{where}: {type(v).__name__} is not JSON")


def canonical_json(v: Any) -> str:
    """Sorted keys, no spaces, UTF-8 (not \\u escapes), floats as repr; ValueError for what is not canonical JSON."""
    return json.dumps(
        _canon_value(v, "value"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_hash(
    seq: int,
    uuid: str,
    at: float,
    user: str,
    role: str,
    action: str,
    reason: str,
    detail: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """Hex SHA-256 of the canonical JSON of an entry's fields (its own hash and signature excluded)."""
    doc = {
        "seq": int(seq),
        "uuid": uuid,
        "at": float(at),
        "user": user,
        "role": role,
        "action": action,
        "reason": reason,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


def sign_hash(signer: Ed25519PrivateKey, hash_hex: str) -> str:
    """Base64 Ed25519 signature of the 32 hash bytes."""
    return base64.b64encode(signer.sign(bytes.fromhex(hash_hex))).decode("ascii")


def signature_ok(public_key: Ed25519PublicKey, hash_hex: str, sig: str) -> bool:
    try:
        raw = base64.b64decode(sig.encode("ascii"), validate=True)
        public_key.verify(raw, bytes.fromhex(hash_hex))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


# -- the entry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    uuid: str
    at: float  # UTC epoch seconds
    user: str
    role: str
    action: str
    reason: str
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str
    sig: str  # base64 Ed25519 signature of bytes.fromhex(hash)

    def computed_hash(self, seq: int | None = None) -> str:
        """The hash these fields give (with ``seq`` in place of the entry's own, to recognise a moved entry)."""
        return entry_hash(
            self.seq if seq is None else seq,
            self.uuid,
            self.at,
            self.user,
            self.role,
            self.action,
            self.reason,
            self.detail,
            self.prev_hash,
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form (what the unit syncs as kind "audit")."""
        return {
            "seq": self.seq,
            "uuid": self.uuid,
            "at": self.at,
            "user": self.user,
            "role": self.role,
            "action": self.action,
            "reason": self.reason,
            "detail": _canon_value(self.detail, "detail"),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "sig": self.sig,
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> AuditEntry:
        """Validate the types and forms of every field (not the hash or signature: that is verify_chain's job);
        ValueError naming the field."""
        if not isinstance(d, Mapping):
            raise ValueError("audit entry: expected a JSON object")
        extra = sorted(set(d) - set(FIELDS), key=str)
        if extra:
            raise ValueError(f"{str(extra[0])[:40]}: not a field of an audit entry")
        for f in FIELDS:
            if f not in d:
                raise ValueError(f"{f}: missing")
        seq = d["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
            raise ValueError("seq: expected a whole number >= 1")
        at = d["at"]
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or not 0 <= at <= _T:
            raise ValueError("at: expected a time in epoch seconds")
        if not isinstance(d["uuid"], str) or not _UUID.fullmatch(d["uuid"]):
            raise ValueError("uuid: expected a lower-case UUID")
        for f, n in (("user", MAX_NAME), ("role", MAX_NAME), ("reason", MAX_REASON)):
            v = d[f]
            if not isinstance(v, str) or len(v) > n or "\x00" in v or (f != "reason" and not v):
                raise ValueError(f"{f}: expected a string of {'0' if f == 'reason' else '1'} to {n} characters")
        if not isinstance(d["action"], str) or not _ACTION.fullmatch(d["action"]):
            raise ValueError("action: expected a dotted lower-case name")
        if not isinstance(d["detail"], Mapping):
            raise ValueError("detail: expected a JSON object")
        detail = _canon_value(d["detail"], "detail")
        for f in ("prev_hash", "hash"):
            if not isinstance(d[f], str) or not _HEX64.fullmatch(d[f]):
                raise ValueError(f"{f}: expected 64 lower-case hex digits")
        sig = d["sig"]
        try:
            if not isinstance(sig, str) or len(base64.b64decode(sig.encode("ascii"), validate=True)) != 64:
                raise ValueError
        except (ValueError, binascii.Error, UnicodeEncodeError) as e:
            raise ValueError("sig: expected a base64 Ed25519 signature (64 bytes)") from e
        return AuditEntry(
            seq, d["uuid"], float(at), d["user"], d["role"], d["action"], d["reason"], detail, d["prev_hash"],
            d["hash"], sig,
        )  # fmt: skip


def make_entry(
    signer: Ed25519PrivateKey,
    seq: int,
    prev_hash: str,
    at: float,
    user: str,
    role: str,
    action: str,
    reason: str = "",
    detail: Mapping[str, Any] | None = None,
    uuid: str | None = None,
) -> AuditEntry:
    """A new signed entry after ``prev_hash``; ValueError for a field that cannot be recorded."""
    u = uuid or str(uuidlib.uuid4())
    fields = {
        "seq": seq,
        "uuid": u,
        "at": float(at),
        "user": user,
        "role": role,
        "action": action,
        "reason": reason,
        "detail": _canon_value(detail or {}, "detail"),
        "prev_hash": prev_hash,
        "hash": GENESIS,
        "sig": base64.b64encode(bytes(64)).decode("ascii"),
    }
    checked = AuditEntry.from_json(fields)  # the same rules headquarters applies
    h = checked.computed_hash()
    e = AuditEntry(**{**checked.__dict__, "hash": h, "sig": sign_hash(signer, h)})
    if len(canonical_json(e.to_json()).encode("utf-8")) > MAX_ENTRY_BYTES:
        raise ValueError(f"detail: the entry is over {MAX_ENTRY_BYTES} bytes")
    return e


# -- keys --------------------------------------------------------------------------------------------------------


def create_signing_key(path: Path) -> Ed25519PublicKey:
    """A new Ed25519 key as PEM in ``path`` (mode 0600, fsynced), never overwriting one: the public key registered
    at headquarters verifies the record only as long as the unit keeps signing with the same key."""
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"cannot create the directory of audit key file {path}: {e.strerror}") from e
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError as e:
        raise KeyFileError(
            f"{path} already exists; refusing to overwrite it (headquarters verifies the record with its public key)"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot create audit key file {path}: {e.strerror}") from e
    key = Ed25519PrivateKey.generate()
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        os.fchmod(fd, 0o600)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write audit key file {path}: {e.strerror}") from e
    os.close(fd)
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise KeyFileError(f"wrote audit key file {path} but could not sync its directory: {e.strerror}") from e
    log.info("created audit signing key file %s", path)
    return key.public_key()


def load_signing_key(path: Path, environ: Mapping[str, str] | None = None) -> Ed25519PrivateKey:
    """The unit's signing key: ``$CREDENTIALS_DIRECTORY/alpr-edge-audit-key`` when systemd passed it, else ``path``
    (refused when readable or writable by group or others, or owned by someone else). KeyFileError."""
    env = os.environ if environ is None else environ
    path = Path(path)
    check_mode = True
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).exists():
        path, check_mode = Path(cred_dir) / CREDENTIAL_NAME, False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise KeyFileError(
            f"audit key file {path} does not exist; create it with `alpr-edge keys init` (see --help)"
        ) from e
    except OSError as e:
        raise KeyFileError(f"cannot read audit key file {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"audit key file {path} is not a regular file")
        if check_mode:
            if st.st_mode & 0o077:
                raise KeyFileError(
                    f"audit key file {path} has mode {stat.S_IMODE(st.st_mode):04o} and is readable or writable by "
                    f"group or others; refusing to use it (run `chmod 600 {path}`)"
                )
            if st.st_uid not in (0, os.geteuid()):
                raise KeyFileError(f"audit key file {path} is owned by uid {st.st_uid}, not by root or this user")
        data = os.read(fd, _KEY_FILE_MAX + 1)
    finally:
        os.close(fd)
    try:
        if len(data) > _KEY_FILE_MAX:
            raise ValueError
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"audit key file {path} is not an unencrypted PEM private key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"audit key file {path} is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half as PEM (SubjectPublicKeyInfo), for registration at headquarters."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_pem(data: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text; ValueError if it is not one."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    try:
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as e:
        raise ValueError("not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


# -- verification ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # "altered" | "deleted" | "reordered" | "bad-signature" | "inserted"
    message: str


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _true_seqs(entries: Sequence[AuditEntry], self_ok: Sequence[bool]) -> list[int | None]:
    """For each entry whose fields do not hash with its own seq, the seq they do hash with if it sits in another
    entry's place: found by following prev_hash back to an entry in its right place (or the genesis)."""
    by_hash: dict[str, int] = {}
    for i, e in enumerate(entries):
        by_hash.setdefault(e.hash, i)
    known: dict[int, int | None] = {i: e.seq for i, e in enumerate(entries) if self_ok[i]}

    def resolve(i: int) -> int | None:
        path: list[int] = []
        j: int | None = i
        base: int | None = None
        seen: set[int] = set()
        while j is not None and j not in known:
            if j in seen:  # a cycle of prev_hash links: nothing to anchor it
                break
            seen.add(j)
            path.append(j)
            prev = entries[j].prev_hash
            if prev == GENESIS:
                base, j = 0, None
                break
            j = by_hash.get(prev)
        if j is not None and j in known:
            base = known[j]
        for k in reversed(path):  # from the anchor forwards
            t = _seq_that_hashes(entries[k], base + 1 if base is not None else None)
            known[k] = t
            base = t if t is not None else entries[k].seq  # an entry altered in place keeps its seq
        return known.get(i)

    return [e.seq if self_ok[i] else resolve(i) for i, e in enumerate(entries)]


def _seq_that_hashes(e: AuditEntry, hint: int | None) -> int | None:
    """The seq (other than its own) that the entry's fields hash with: ``hint`` or one near its label (an entry
    renumbered after a deletion or insertion whose neighbour is gone)."""
    tries = [hint] if hint is not None else []
    tries += [e.seq + d for d in range(-_NEAR, _NEAR + 1) if d]
    for t in tries:
        if t != e.seq and t >= 1 and e.computed_hash(t) == e.hash:
            return t
    return None


def verify_chain(entries: Iterable[AuditEntry], public_key: Ed25519PublicKey) -> VerifyResult:
    """Check every entry's hash, signature and link. ``entries`` in the order they are stored (by rowid), not sorted
    by seq, so that a reordering is visible. Gaps at the end cannot be seen here (headquarters' copy shows them)."""
    es = list(entries)
    self_ok = [e.computed_hash() == e.hash for e in es]
    sig_ok = [signature_ok(public_key, e.hash, e.sig) for e in es]
    true = _true_seqs(es, self_ok)
    problems: list[Problem] = []
    covered: set[int] = set()
    seen_labels: set[int] = set()
    moved: list[tuple[int, int]] = []  # (label, true seq) of consecutive moved entries, reported as one run

    def flush_moved() -> None:
        if not moved:
            return
        (a, ta), (b, tb) = moved[0], moved[-1]
        if len(moved) == 1:
            msg = f"seq {a} holds entry {ta} of the chain (moved from its place)"
        else:
            msg = f"seq {a} to {b} hold entries {ta} to {tb} of the chain (renumbered)"
        problems.append(Problem(a, "reordered", msg))
        moved.clear()

    max_label = 0
    for i, e in enumerate(es):
        nxt = es[i + 1] if i + 1 < len(es) else None
        prev = es[i - 1] if i else None
        t = true[i]
        if e.seq in seen_labels:
            flush_moved()
            problems.append(Problem(e.seq, "inserted", f"a second entry numbered {e.seq}"))
            continue
        seen_labels.add(e.seq)
        if self_ok[i] and e.seq < max_label:
            flush_moved()
            problems.append(Problem(e.seq, "reordered", f"seq {e.seq} is stored after seq {max_label}"))
        max_label = max(max_label, e.seq)
        if not self_ok[i] and t is not None:
            offset = e.seq - t
            if moved and (moved[-1][0] + 1 != e.seq or moved[-1][0] - moved[-1][1] != offset):
                flush_moved()
            moved.append((e.seq, t))
        else:
            flush_moved()
        if not self_ok[i] and t is None:
            problems.append(Problem(e.seq, "altered", f"seq {e.seq}: its fields do not match its hash (altered)"))
            covered.add(e.seq)
            continue
        assert t is not None
        if not sig_ok[i]:
            if self_ok[i] and nxt is not None and nxt.prev_hash != e.hash:
                if nxt.prev_hash == e.prev_hash:
                    msg, kind = f"seq {e.seq} is not part of the signed chain (the next entry skips it)", "inserted"
                else:
                    msg, kind = f"seq {e.seq} was altered and re-hashed without the unit's key", "altered"
                    covered.add(e.seq)
                problems.append(Problem(e.seq, kind, msg))
                continue
            problems.append(
                Problem(e.seq, "bad-signature", f"seq {e.seq}: the signature does not verify (forged or altered)")
            )
            covered.add(t)
            continue
        covered.add(t)
        if self_ok[i]:  # a genuine entry in its place: it must follow the one before it
            if e.seq == 1 and e.prev_hash != GENESIS:
                problems.append(Problem(1, "altered", "seq 1 does not start the chain (prev_hash is not the genesis)"))
            elif (
                prev is not None
                and prev.seq == e.seq - 1
                and self_ok[i - 1]
                and sig_ok[i - 1]
                and e.prev_hash != prev.hash
            ):
                problems.append(
                    Problem(e.seq, "altered", f"seq {e.seq} does not follow seq {prev.seq} (another chain's entry)")
                )
    flush_moved()
    top = max(covered, default=0)
    flagged = _labels_of(problems)
    missing = [s for s in range(1, top + 1) if s not in covered and s not in flagged]
    for a, b in _ranges(missing):
        msg = f"entry {a} is missing (deleted)" if a == b else f"entries {a} to {b} are missing ({b - a + 1} deleted)"
        problems.append(Problem(a, "deleted", msg))
    problems.sort(key=lambda p: (p.seq, p.kind != "deleted"))
    return VerifyResult(len(es), tuple(problems))


def _labels_of(problems: Sequence[Problem]) -> set[int]:
    return {p.seq for p in problems if p.kind in ("altered", "inserted")}


def _ranges(nums: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in nums:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


# -- the store ---------------------------------------------------------------------------------------------------

_COLUMNS = "seq, uuid, at, user_name, role, action, reason, detail, prev_hash, hash, sig"


def _from_row(r: Sequence[Any]) -> AuditEntry:
    seq, u, at, user, role, action, reason, detail, prev_hash, h, sig = r
    try:
        d = json.loads(detail)
    except (TypeError, ValueError, RecursionError):
        d = {"_unreadable": str(detail)[:200]}  # shown as altered by verify, never a crash
    if not isinstance(d, dict):
        d = {"_unreadable": str(detail)[:200]}
    return AuditEntry(int(seq), str(u), float(at), str(user), str(role), str(action), str(reason), d, str(prev_hash),
                      str(h), str(sig))  # fmt: skip


class AuditLog:
    """The unit's access record in the SQLCipher store (table ``audit``, migration 6). Thread-safe: one lock around
    each use of the connection; pass ``lock`` to share it with other users of the same connection."""

    def __init__(
        self,
        conn: Connection,
        signer: Ed25519PrivateKey,
        *,
        clock: Callable[[], float] = time.time,
        lock: threading.Lock | threading.RLock | None = None,
    ) -> None:
        self._conn = conn
        self._signer = signer
        self._clock = clock
        self._lock = lock or threading.Lock()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._signer.public_key()

    def record(
        self, user: str, role: str, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one entry, committed (durable) before it returns; AuditError if it cannot be."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                row = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (int(row[0]) + 1, str(row[1])) if row else (1, GENESIS)
                e = make_entry(self._signer, seq, prev, self._clock(), user, role, action, reason, detail)
                c.execute(
                    f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.seq, e.uuid, e.at, e.user, e.role, e.action, e.reason, canonical_json(e.detail), e.prev_hash,
                     e.hash, e.sig),
                )  # fmt: skip
                c.execute("COMMIT")
            except (DBError, ValueError) as err:
                try:
                    if c.in_transaction:
                        c.rollback()
                except DBError:
                    log.error("rollback of the access record transaction failed", exc_info=True)
                raise AuditError(f"cannot record {action!r} in the access record: {err}") from err
        return e

    def entries(
        self,
        *,
        actions: Collection[str] | None = None,
        user: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries in seq order, filtered: any of ``actions``, by ``user``, at in [start, end]; the first ``limit``."""
        where: list[str] = []
        params: list[object] = []
        if actions is not None:
            acts = list(actions)
            if not acts:
                return []
            where.append(f"action IN ({', '.join('?' * len(acts))})")
            params.extend(acts)
        if user is not None:
            where.append("user_name = ?")
            params.append(user)
        if start is not None:
            where.append("at >= ?")
            params.append(float(start))
        if end is not None:
            where.append("at <= ?")
            params.append(float(end))
        sql = f"SELECT {_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            try:
                rows = self._conn.execute(sql, params).fetchall()
            except DBError as e:
                raise AuditError(f"cannot read the access record: {e}") from e
        return [_from_row(r) for r in rows]

    def verify(self, public_key: Ed25519PublicKey) -> VerifyResult:
        """Verify the whole stored chain in storage (rowid) order."""
        with self._lock:
            try:
                rows = self._conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY rowid").fetchall()
            except DBError as e:
                raise AuditError(f"cannot read the access record: {e}") from e
        return verify_chain((_from_row(r) for r in rows), public_key)
