"""The evidence export format (P10), shared by the unit and headquarters: writing one, and proving it unaltered.

An export is a folder, or a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` archive of one, for portable media::

    reads.json           the reads: plate, candidates, times, GPS fix, device, camera, holds, hits and outcomes
    images/              crop and scene JPEGs, ``<read uuid>-<kind>.jpg``
    access_record.json   the access-record entries about those reads or the case, each with its hash and signature,
                         and the public key of the chain it belongs to (so each can be checked against that chain)
    manifest.json        SHA-256 and size of every file above; case, who exported, when, from where, tool version
    manifest.sig         base64 Ed25519 signature of manifest.json's bytes
    signer.pem           the signer's public key (the unit's audit key, or headquarters' signing key)

``verify_export`` needs nothing but the export and, to know WHO signed it, the signer's public key obtained
independently (``--public-key``); without one it checks against signer.pem and says so, with its fingerprint.
It never trusts a path or size in the manifest: names are checked before use, archives are read member by
member without extracting, and only regular files count.

Writing goes to a hidden staging folder beside the destination; ``seal`` signs, the caller records the export in
its access record, and only then ``commit`` moves it into place (or packs the archive). An export that could not
be recorded is removed, never left behind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import uuid as uuidlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import __version__
from .access.audit import AuditEntry, signature_ok

FORMAT = "alpr-edge-evidence/1"
MANIFEST, SIGNATURE, SIGNER = "manifest.json", "manifest.sig", "signer.pem"
READS, IMAGES, ACCESS_RECORD = "reads.json", "images", "access_record.json"
CONTROL_FILES = frozenset({MANIFEST, SIGNATURE, SIGNER})
MAX_CONTROL_BYTES = 64 << 20  # manifest.json, its signature, the key: read whole, so bounded
MAX_ACCESS_RECORD_BYTES = 256 << 20
CHUNK = 1 << 20
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class EvidenceError(ValueError):
    """An export cannot be written or read; the message says which file and why."""


def archive_kind(path: Path) -> str | None:
    """The archive kind from the name ("tar", "tar.gz", "zip"), or None for a folder."""
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "evidence"
    return name


def check_relpath(rel: object) -> str:
    """A manifest path: relative, '/'-separated parts of safe characters (no '..', no hidden or absolute names)."""
    if not isinstance(rel, str) or not rel or len(rel) > 512:
        raise EvidenceError(f"manifest: bad file path {rel!r}")
    parts = rel.split("/")
    if not all(_SAFE_PART.fullmatch(p) for p in parts):
        raise EvidenceError(f"manifest: bad file path {rel!r} (relative, parts of A-Z a-z 0-9 . _ - only)")
    return rel


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA256:<hex> of the raw public key: short enough to read out over the telephone to compare."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_pem(data: bytes, what: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise EvidenceError(f"{what}: not a PEM public key") from e
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{what}: not an Ed25519 public key")
    return key


def iso_utc(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- writing ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportMeta:
    case_number: str
    exported_by: str
    role: str
    source: str  # "unit <device id>" or "headquarters"
    exported_at: float
    read_uuids: tuple[str, ...]
    hold_uuids: tuple[str, ...]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest_sha256: str
    files: int  # listed in the manifest
    bytes: int


class ExportWriter:
    """Builds an export in a private staging folder beside ``out``; see the module docstring for the order."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.kind = archive_kind(self.out)
        if self.out.exists() and (self.kind is not None or not self.out.is_dir() or any(self.out.iterdir())):
            raise EvidenceError(f"{self.out} already exists; an export never overwrites anything")
        parent = self.out.parent
        if not parent.is_dir():
            raise EvidenceError(f"{parent} is not a folder")
        self.staging = parent / f".{self.out.name}.partial-{uuidlib.uuid4().hex[:8]}"
        try:
            self.staging.mkdir(mode=0o700)
        except OSError as e:
            raise EvidenceError(f"cannot write in {parent}: {e.strerror}") from e
        self._files: dict[str, tuple[str, int]] = {}
        self._sealed: tuple[str, int] | None = None

    def add(self, rel: str, data: bytes) -> None:
        rel = check_relpath(rel)
        if rel in self._files or rel in CONTROL_FILES or self._sealed:
            raise EvidenceError(f"{rel}: written twice, or after the manifest")
        target = self.staging / rel
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._files[rel] = (hashlib.sha256(data).hexdigest(), len(data))

    def add_json(self, rel: str, obj: object) -> None:
        self.add(rel, canonical_json(obj))

    def seal(self, meta: ExportMeta, signer: Ed25519PrivateKey) -> str:
        """Write manifest.json, its signature and the public key; the manifest's SHA-256 (for the access record)."""
        public = signer.public_key()
        manifest = {
            "format": FORMAT,
            "case_number": meta.case_number,
            "exported_by": meta.exported_by,
            "role": meta.role,
            "source": meta.source,
            "exported_at": iso_utc(meta.exported_at),
            "tool": f"alpr-edge {__version__}",
            "read_count": len(meta.read_uuids),
            "hold_uuids": list(meta.hold_uuids),
            "signer": {"algorithm": "Ed25519", "fingerprint": fingerprint(public)},
            "files": [{"path": p, "sha256": h, "size": n} for p, (h, n) in sorted(self._files.items())],
        }
        data = canonical_json(manifest)
        for rel, content in (
            (MANIFEST, data),
            (SIGNATURE, base64.b64encode(signer.sign(data)) + b"\n"),
            (SIGNER, public_pem(public)),
        ):
            (self.staging / rel).write_bytes(content)
        self._sealed = (hashlib.sha256(data).hexdigest(), sum(n for _, n in self._files.values()))
        return self._sealed[0]

    def commit(self) -> ExportResult:
        """Move the sealed export into place (or pack the archive); the staging folder is gone afterwards."""
        if self._sealed is None:
            raise EvidenceError("commit before seal")
        sha, size = self._sealed
        try:
            if self.kind is None:
                with contextlib.suppress(FileNotFoundError):
                    self.out.rmdir()  # an empty folder given as the destination
                self.staging.rename(self.out)
            else:
                tmp = self.out.with_name(f".{self.out.name}.partial-{uuidlib.uuid4().hex[:8]}")
                try:
                    _pack(self.staging, tmp, self.kind, _stem(self.out))
                    tmp.rename(self.out)
                finally:
                    tmp.unlink(missing_ok=True)
                shutil.rmtree(self.staging)
        except OSError as e:
            self.abort()
            raise EvidenceError(f"cannot write {self.out}: {e}") from e
        return ExportResult(self.out, sha, len(self._files), size)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _pack(folder: Path, dest: Path, kind: str, top: str) -> None:
    """Archive ``folder``'s files under one top folder (unpacking never spills into the current directory)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as raw:
        if kind == "zip":
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for p in files:
                    z.write(p, f"{top}/{p.relative_to(folder).as_posix()}")
        else:
            with tarfile.open(fileobj=raw, mode="w:gz" if kind == "tar.gz" else "w", format=tarfile.PAX_FORMAT) as t:
                for p in files:
                    info = t.gettarinfo(str(p), f"{top}/{p.relative_to(folder).as_posix()}")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with p.open("rb") as f:
                        t.addfile(info, f)
        raw.flush()
        os.fsync(raw.fileno())


# --- reading and verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # "altered", "missing", "extra", "bad-signature", "untrusted-signer", "malformed", "access-record"
    message: str

    def line(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    source: str
    files: int  # listed in the manifest
    bytes: int
    case_number: str
    exported_by: str
    exported_at: str
    origin: str
    signer_fingerprint: str
    key_given: bool  # checked against a key given by the verifier (else signer.pem, which proves integrity only)
    access_entries: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class _Source:
    """The export's regular files by relative path, from a folder or an archive, read without extracting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.others: list[str] = []  # links, devices, folders where files belong: never trusted
        self._closers: list[Callable[[], None]] = []
        self.kind = "folder" if path.is_dir() else archive_kind(path)
        self._open: Callable[[str], IO[bytes]]
        self.files: dict[str, int] = {}
        if self.kind == "folder":
            self._scan_folder()
        elif self.kind in ("tar", "tar.gz"):
            self._scan_tar()
        elif self.kind == "zip":
            self._scan_zip()
        else:
            raise EvidenceError(f"{path}: not a folder, .tar, .tar.gz or .zip")

    def _scan_folder(self) -> None:
        root = self.path
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in [*filenames, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())]:
                p = Path(dirpath) / name
                rel = p.relative_to(root).as_posix()
                st = p.lstat()
                if stat.S_ISREG(st.st_mode):
                    self.files[rel] = st.st_size
                else:
                    self.others.append(rel)

        def opener(rel: str) -> IO[bytes]:
            p = root / rel
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
            return os.fdopen(fd, "rb")

        self._open = opener

    def _scan_tar(self) -> None:
        try:
            t = tarfile.open(self.path, "r:*")  # noqa: SIM115 (closed by close(), after the members are read)
            members = t.getmembers()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise EvidenceError(f"{self.path}: not a readable tar archive: {e}") from e
        self._closers.append(t.close)
        by_name: dict[str, tarfile.TarInfo] = {}
        for m in members:
            if m.isdir():
                continue
            if m.isfile():
                by_name[m.name] = m
            else:
                self.others.append(m.name)
        self._strip({n: m.size for n, m in by_name.items()})

        def opener(rel: str) -> IO[bytes]:
            f = t.extractfile(by_name[self._prefix + rel])
            if f is None:
                raise EvidenceError(f"{rel}: unreadable archive member")
            return f

        self._open = opener

    def _scan_zip(self) -> None:
        try:
            z = zipfile.ZipFile(self.path)
            infos = z.infolist()
        except (OSError, zipfile.BadZipFile) as e:
            raise EvidenceError(f"{self.path}: not a readable zip archive: {e}") from e
        self._closers.append(z.close)
        sizes: dict[str, int] = {}
        for i in infos:
            if i.is_dir():
                continue
            mode = (i.external_attr >> 16) & 0o170000
            if mode and not stat.S_ISREG(mode):
                self.others.append(i.filename)
            else:
                sizes[i.filename] = i.file_size
        self._strip(sizes)
        self._open = lambda rel: z.open(self._prefix + rel)

    def _strip(self, sizes: Mapping[str, int]) -> None:
        """Archives hold one top folder; paths are taken relative to it when every member is inside it."""
        tops = {n.split("/", 1)[0] for n in sizes if "/" in n}
        self._prefix = ""
        if len(tops) == 1 and all("/" in n for n in sizes):
            self._prefix = tops.pop() + "/"
        self.files = {n[len(self._prefix) :]: s for n, s in sizes.items()}

    def read(self, rel: str, limit: int) -> bytes:
        with self._open(rel) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise EvidenceError(f"{rel}: larger than {limit} bytes")
        return data

    def digest(self, rel: str) -> tuple[str, int]:
        h, n = hashlib.sha256(), 0
        with self._open(rel) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest(), n

    def close(self) -> None:
        for c in self._closers:
            c()


EntryChecker = Callable[[Mapping[str, Any], Ed25519PublicKey], str | None]


def check_audit_entry(d: Mapping[str, Any], key: Ed25519PublicKey) -> str | None:
    """What is wrong with one access-record entry as exported (its fields, hash, signature), or None."""
    try:
        e = AuditEntry.from_json(d)
    except ValueError as err:
        return f"malformed ({err})"
    if e.computed_hash() != e.hash:
        return "altered (its fields no longer give its hash)"
    if not signature_ok(key, e.hash, e.sig):
        return "bad signature (not signed by its chain's key)"
    return None


def verify_export(
    path: Path, public_key: Ed25519PublicKey | None = None, *, check_entry: EntryChecker | None = check_audit_entry
) -> VerifyReport:
    """Check ``path`` (folder or archive): the manifest's signature, every listed file's size and SHA-256, no file
    missing or added, and (with ``check_entry``) each access-record entry's hash and signature. EvidenceError only
    when it is not an export at all (no manifest, unreadable archive); everything else is a Problem."""
    src = _Source(Path(path))
    try:
        return _verify(src, public_key, check_entry)
    finally:
        src.close()


def _verify(src: _Source, given: Ed25519PublicKey | None, check_entry: EntryChecker | None) -> VerifyReport:
    problems: list[Problem] = []
    for name in CONTROL_FILES:
        if name not in src.files:
            raise EvidenceError(f"{src.path}: no {name}: not an alpr-edge evidence export")
    raw = src.read(MANIFEST, MAX_CONTROL_BYTES)
    signer = load_public_pem(src.read(SIGNER, MAX_CONTROL_BYTES), SIGNER)
    key = given or signer
    if given is not None and fingerprint(given) != fingerprint(signer):
        problems.append(Problem(SIGNER, "untrusted-signer", f"signed by {fingerprint(signer)}, not by the key given"))
    try:
        key.verify(base64.b64decode(src.read(SIGNATURE, MAX_CONTROL_BYTES).strip(), validate=True), raw)
    except (InvalidSignature, ValueError):
        problems.append(Problem(MANIFEST, "bad-signature", "manifest.sig is not a valid signature of manifest.json"))
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"not format {FORMAT}")
        listed = _listed(manifest)
    except (ValueError, EvidenceError) as e:
        problems.append(Problem(MANIFEST, "malformed", str(e)))
        manifest, listed = {}, {}
    for rel, (sha, size) in sorted(listed.items()):
        if rel not in src.files:
            problems.append(Problem(rel, "missing", "listed in the manifest, not in the export"))
            continue
        got_sha, got_size = src.digest(rel)
        if got_sha != sha or got_size != size:
            problems.append(
                Problem(
                    rel,
                    "altered",
                    f"{got_size} bytes, SHA-256 {got_sha[:16]}...; manifest says {size} bytes, {sha[:16]}...",
                )
            )
    for rel in sorted(set(src.files) - set(listed) - CONTROL_FILES):
        problems.append(Problem(rel, "extra", "not listed in the manifest"))
    for rel in sorted(src.others):
        problems.append(Problem(rel, "extra", "not a regular file (link or device)"))
    entries = 0
    if check_entry is not None and ACCESS_RECORD in listed and ACCESS_RECORD in src.files:
        entries = _check_access_record(src, check_entry, problems)
    return VerifyReport(
        source=str(src.path),
        files=len(listed),
        bytes=sum(s for _, s in listed.values()),
        case_number=str(manifest.get("case_number", "")),
        exported_by=str(manifest.get("exported_by", "")),
        exported_at=str(manifest.get("exported_at", "")),
        origin=str(manifest.get("source", "")),
        signer_fingerprint=fingerprint(signer),
        key_given=given is not None,
        access_entries=entries,
        problems=tuple(problems),
    )


def _listed(manifest: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    files = manifest.get("files")
    if not isinstance(files, list):
        raise EvidenceError("manifest: no list of files")
    out: dict[str, tuple[str, int]] = {}
    for f in files:
        if not isinstance(f, dict):
            raise EvidenceError("manifest: a file entry is not an object")
        rel = check_relpath(f.get("path"))
        sha, size = f.get("sha256"), f.get("size")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise EvidenceError(f"manifest: {rel}: sha256 is not 64 hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise EvidenceError(f"manifest: {rel}: size is not a whole number")
        if rel in out or rel in CONTROL_FILES:
            raise EvidenceError(f"manifest: {rel} listed twice or names a control file")
        out[rel] = (sha, size)
    return out


def _check_access_record(src: _Source, check_entry: EntryChecker, problems: list[Problem]) -> int:
    """Each entry's hash and signature against its chain's key (the entries are a selection: links not checked)."""
    try:
        doc = json.loads(src.read(ACCESS_RECORD, MAX_ACCESS_RECORD_BYTES))
        chains = doc["chains"]
        if not isinstance(chains, list):
            raise TypeError("chains is not a list")
    except (ValueError, KeyError, TypeError, EvidenceError) as e:
        problems.append(Problem(ACCESS_RECORD, "malformed", str(e)))
        return 0
    n = 0
    for chain in chains:
        try:
            key = load_public_pem(str(chain["public_key"]).encode(), f"chain {chain.get('source')!r}")
            entries = chain["entries"]
            if not isinstance(entries, list):
                raise TypeError("entries is not a list")
        except (KeyError, TypeError, AttributeError, EvidenceError) as e:
            problems.append(Problem(ACCESS_RECORD, "malformed", f"a chain: {e}"))
            continue
        for doc in entries:
            n += 1
            why = check_entry(doc, key) if isinstance(doc, dict) else "not an object"
            if why:
                seq = doc.get("seq") if isinstance(doc, dict) else "?"
                problems.append(Problem(ACCESS_RECORD, "access-record", f"{chain.get('source')} entry {seq}: {why}"))
    return n


def summary(report: VerifyReport) -> str:
    """What ``evidence verify`` prints: the verdict first, then what was checked against what."""
    key = "the public key given" if report.key_given else "signer.pem inside the export (integrity only: compare "
    key += "" if report.key_given else "its fingerprint with the signer's published key, or give --public-key)"
    head = "OK: unaltered" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
    lines = [
        f"{head}: {report.source}",
        f"case {report.case_number}, exported by {report.exported_by} from {report.origin} at {report.exported_at}",
        f"{report.files} file(s), {report.bytes} bytes; {report.access_entries} access-record entries checked",
        f"signer {report.signer_fingerprint}, checked against {key}",
    ]
    lines += [p.line() for p in report.problems]
    return "\n".join(lines)


def image_name(read_uuid: str, kind: str) -> str:
    return f"{IMAGES}/{read_uuid}-{kind}.jpg"
