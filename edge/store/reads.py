"""The read store: every Read with its GPS fix and JPEGs in the encrypted database, one transaction per read.

One writer: the recorder owns its ReadStore and calls it from one thread at a time. Other processes (the CLI)
may open the same file to query it; WAL lets them read while the recorder writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..gps import Fix
from ..vision.ocr import CHARSET, Candidate
from ..vision.tracker import Read
from .db import SQLITE_FULL, Connection, DBError, IntegrityError, error_code, open_db
from .errors import StoreError, StoreFullError
from .migrations import migrate

log = logging.getLogger(__name__)

MAX_TEXT = 16
MAX_CANDIDATES = 64
MAX_CROP_BYTES = 1 << 20
MAX_SCENE_BYTES = 16 << 20
MAX_NAME = 64  # camera id, region, plate format
DEFAULT_MIN_FREE_BYTES = 64 << 20
DEFAULT_SCENE_MIN_FREE_BYTES = 512 << 20
FIX_SOURCES = ("gpsd", "fixed", "none")
ImageKind = Literal["crop", "scene"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_PLATE_CHARS = frozenset(CHARSET)


@dataclass(frozen=True)
class AddResult:
    uuid: str
    scene_stored: bool  # False when the disk was too full for the scene image


@dataclass(frozen=True)
class StoredRead:
    """A stored Read without its JPEGs (fetch those with ``ReadStore.image``), with its fix."""

    uuid: str
    camera_id: str
    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    candidates: tuple[Candidate, ...]
    region: str | None
    plate_format: str | None
    box: tuple[int, int, int, int]
    first_seen: float
    last_seen: float
    best_seen: float
    frames_seen: int
    fix: Fix
    stored_at: float  # UTC epoch seconds of the commit
    has_scene: bool


@dataclass(frozen=True)
class StoreStatus:
    reads: int
    db_bytes: int  # database file plus its -wal
    free_bytes: int | None  # None when the filesystem could not be asked
    scene_images_on: bool
    fault: str | None  # None when healthy


# --- validation: the Read comes from our own tracker, but nothing is stored unchecked -------------------------


def check_uuid(value: object, field: str = "uuid") -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ValueError(f"{field}: not a lowercase UUID string (8-4-4-4-12 hex digits)")
    return value


def _unit(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{field}: must be a number in 0..1")


def _finite(value: object, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}: must be a finite number")


def _int(value: object, field: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{field}: must be an integer in {low}..{high}")


def _name(value: object, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > MAX_NAME or not _NAME.fullmatch(value):
        raise ValueError(f"{field}: must be 1..{MAX_NAME} characters of A-Z a-z 0-9 _ . : -")


def _plate_text(value: object, field: str, min_len: int) -> None:
    if not isinstance(value, str) or not min_len <= len(value) <= MAX_TEXT or not set(value) <= _PLATE_CHARS:
        raise ValueError(f"{field}: must be {min_len}..{MAX_TEXT} characters of A-Z 0-9")


def _jpeg(value: object, field: str, limit: int) -> None:
    if not isinstance(value, bytes) or not value.startswith(b"\xff\xd8"):
        raise ValueError(f"{field}: not JPEG bytes (must start with FF D8)")
    if len(value) > limit:
        raise ValueError(f"{field}: {len(value)} bytes, more than the limit of {limit}")


def validate_read(read: Read) -> None:
    """Raise ValueError naming the first bad field of ``read``."""
    check_uuid(read.uuid)
    _name(read.camera_id, "camera_id")
    _plate_text(read.text, "text", 1)
    _unit(read.confidence, "confidence")
    if not isinstance(read.char_confidences, tuple) or len(read.char_confidences) > MAX_TEXT:
        raise ValueError(f"char_confidences: must be a tuple of at most {MAX_TEXT} numbers")
    for i, c in enumerate(read.char_confidences):
        _unit(c, f"char_confidences[{i}]")
    if not isinstance(read.candidates, tuple) or len(read.candidates) > MAX_CANDIDATES:
        raise ValueError(f"candidates: must be a tuple of at most {MAX_CANDIDATES} candidates")
    for i, cand in enumerate(read.candidates):
        if not isinstance(cand, Candidate):
            raise ValueError(f"candidates[{i}]: not a Candidate")
        _plate_text(cand.text, f"candidates[{i}].text", 0)
        _unit(cand.confidence, f"candidates[{i}].confidence")
    _name(read.region, "region", optional=True)
    _name(read.plate_format, "plate_format", optional=True)
    if not isinstance(read.box, tuple) or len(read.box) != 4:
        raise ValueError("box: must be a tuple (x, y, w, h)")
    for part, v in zip(("x", "y", "w", "h"), read.box, strict=True):
        _int(v, f"box.{part}", 0, 1 << 16)
    for f in ("first_seen", "last_seen", "best_seen"):
        _finite(getattr(read, f), f)
    if read.last_seen < read.first_seen:
        raise ValueError("last_seen: earlier than first_seen")
    if not read.first_seen <= read.best_seen <= read.last_seen:
        raise ValueError("best_seen: outside first_seen..last_seen")
    _int(read.frames_seen, "frames_seen", 1, 1 << 31)
    _jpeg(read.crop_jpeg, "crop_jpeg", MAX_CROP_BYTES)
    _jpeg(read.scene_jpeg, "scene_jpeg", MAX_SCENE_BYTES)


def validate_fix(fix: Fix) -> None:
    """Raise ValueError naming the first bad field of ``fix`` (as ``fix.FIELD``)."""
    if fix.source not in FIX_SOURCES:
        raise ValueError(f"fix.source: must be one of {', '.join(FIX_SOURCES)}")
    _int(fix.mode, "fix.mode", 0, 3)
    for f in ("lat", "lon", "alt_m", "time", "age_s", "eph_m", "speed_mps", "track_deg"):
        _finite(getattr(fix, f), f"fix.{f}", optional=True)
    if fix.source == "none":
        if fix.mode != 0 or fix.lat is not None or fix.lon is not None:
            raise ValueError("fix.source: 'none' must have mode 0 and no position")
        return
    if fix.mode < 2:
        raise ValueError("fix.mode: a fix with a position must be 2 (2D) or 3 (3D)")
    if fix.lat is None or not -90.0 <= fix.lat <= 90.0:
        raise ValueError("fix.lat: must be in -90..90")
    if fix.lon is None or not -180.0 <= fix.lon <= 180.0:
        raise ValueError("fix.lon: must be in -180..180")


# --- the store -----------------------------------------------------------------------------------------------

_READ_COLUMNS = (
    "uuid, camera_id, text, confidence, char_confidences, candidates, region, plate_format, box_x, box_y, box_w, "
    "box_h, first_seen, last_seen, best_seen, frames_seen, fix_source, fix_mode, lat, lon, alt_m, fix_time, "
    "fix_age_s, eph_m, speed_mps, track_deg, stored_at"
)
_SELECT = (
    f"SELECT {', '.join('r.' + c.strip() for c in _READ_COLUMNS.split(','))}, "
    "EXISTS (SELECT 1 FROM read_images i WHERE i.read_uuid = r.uuid AND i.kind = 'scene') FROM reads r"
)


def _row_to_stored(row: Any) -> StoredRead:
    (uuid, camera_id, text, confidence, char_conf, cands, region, plate_format, bx, by, bw, bh, first_seen,
     last_seen, best_seen, frames_seen, fix_source, fix_mode, lat, lon, alt_m, fix_time, fix_age_s, eph_m,
     speed_mps, track_deg, stored_at, has_scene) = row  # fmt: skip
    return StoredRead(
        uuid=uuid,
        camera_id=camera_id,
        text=text,
        confidence=confidence,
        char_confidences=tuple(float(c) for c in json.loads(char_conf)),
        candidates=tuple(Candidate(str(t), float(c)) for t, c in json.loads(cands)),
        region=region,
        plate_format=plate_format,
        box=(bx, by, bw, bh),
        first_seen=first_seen,
        last_seen=last_seen,
        best_seen=best_seen,
        frames_seen=frames_seen,
        fix=Fix(fix_source, fix_mode, lat, lon, alt_m, fix_time, fix_age_s, eph_m, speed_mps, track_deg),
        stored_at=stored_at,
        has_scene=bool(has_scene),
    )


class ReadStore:
    """Encrypted storage of reads. ``add`` returns only after the read is durable on disk."""

    def __init__(
        self,
        conn: Connection,
        path: Path,
        *,
        min_free_bytes: int,
        scene_min_free_bytes: int,
        free_bytes: Callable[[], int],
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self._path = path
        self._min_free = min_free_bytes
        self._scene_min_free = scene_min_free_bytes
        self._free_bytes = free_bytes
        self._clock = clock
        self._scene_on = True
        self._fault: str | None = None  # the last write failure, cleared by the next successful add

    @classmethod
    def open(
        cls,
        path: Path,
        key: bytes,
        *,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        scene_min_free_bytes: int = DEFAULT_SCENE_MIN_FREE_BYTES,
        free_bytes: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> ReadStore:
        """Open (or, with ``create``, create) the store and apply pending migrations.

        ``free_bytes`` returns the free bytes of the database's filesystem (default: ``shutil.disk_usage``).
        """
        path = Path(path)
        if min_free_bytes < 0 or scene_min_free_bytes < min_free_bytes:
            raise ValueError("scene_min_free_bytes: must be at least min_free_bytes, both >= 0")
        conn = open_db(path, key, create=create)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        if free_bytes is None:
            directory = path.resolve().parent

            def disk_free() -> int:
                return shutil.disk_usage(directory).free

            free_bytes = disk_free
        return cls(
            conn,
            path,
            min_free_bytes=min_free_bytes,
            scene_min_free_bytes=scene_min_free_bytes,
            free_bytes=free_bytes,
            clock=clock,
        )

    def __enter__(self) -> ReadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    # --- writing ---

    def _free(self) -> int | None:
        try:
            return int(self._free_bytes())
        except OSError as e:
            log.warning("cannot read free space of %s: %s", self._path.parent, e)
            return None

    def add(self, read: Read, fix: Fix) -> AddResult:
        """Store ``read`` with ``fix`` and its JPEGs in one transaction; returns once it is committed and durable.

        Raises ValueError (a bad field, named), StoreFullError (disk too full: nothing written) or StoreError.
        """
        validate_read(read)
        validate_fix(fix)
        free = self._free()
        crop_need = len(read.crop_jpeg) * 2  # the WAL, then the checkpoint into the database
        scene_need = len(read.scene_jpeg) * 2
        if free is not None and free - crop_need < self._min_free:
            self._set_scene_on(False, free)
            raise StoreFullError(f"{self._path}: only {free} bytes free on its filesystem; read not stored")
        store_scene = free is None or free - crop_need - scene_need >= self._scene_min_free
        self._set_scene_on(store_scene, free)
        try:
            self._insert(read, fix, store_scene)
        except IntegrityError as e:
            self._rollback()
            if self._conn.execute("SELECT 1 FROM reads WHERE uuid = ?", (read.uuid,)).fetchone():
                raise ValueError("uuid: a read with this uuid is already stored") from e
            raise StoreError(f"{self._path}: read rejected by the database: {e}") from e
        except DBError as e:
            self._rollback()
            if error_code(e) == SQLITE_FULL:
                self._fault = "disk full: the database could not grow"
                raise StoreFullError(f"{self._path}: disk or database full; read not stored") from e
            self._fault = f"write failed: {e}"
            raise StoreError(f"{self._path}: cannot store read: {e}") from e
        self._fault = None
        return AddResult(uuid=read.uuid, scene_stored=store_scene)

    def _insert(self, read: Read, fix: Fix, store_scene: bool) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            f"INSERT INTO reads ({_READ_COLUMNS}) VALUES ({', '.join('?' * 27)})",
            (
                read.uuid,
                read.camera_id,
                read.text,
                float(read.confidence),
                json.dumps([float(x) for x in read.char_confidences]),
                json.dumps([[cand.text, float(cand.confidence)] for cand in read.candidates]),
                read.region,
                read.plate_format,
                *read.box,
                float(read.first_seen),
                float(read.last_seen),
                float(read.best_seen),
                read.frames_seen,
                fix.source,
                fix.mode,
                *(None if v is None else float(v) for v in (fix.lat, fix.lon, fix.alt_m, fix.time, fix.age_s)),
                *(None if v is None else float(v) for v in (fix.eph_m, fix.speed_mps, fix.track_deg)),
                float(self._clock()),
            ),
        )
        c.execute("INSERT INTO read_images (read_uuid, kind, jpeg) VALUES (?, 'crop', ?)", (read.uuid, read.crop_jpeg))
        if store_scene:
            c.execute(
                "INSERT INTO read_images (read_uuid, kind, jpeg) VALUES (?, 'scene', ?)", (read.uuid, read.scene_jpeg)
            )
        c.execute("COMMIT")  # synchronous=FULL: the WAL is fsynced before this returns

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.rollback()
        except DBError as e:  # the connection is unusable; the next call reports it
            log.error("rollback of %s failed: %s", self._path, e)

    def _set_scene_on(self, on: bool, free: int | None) -> None:
        if on == self._scene_on:
            return
        self._scene_on = on
        if on:
            log.info("disk space back (%s bytes free): storing scene images again", free)
        else:
            log.warning("disk nearly full (%s bytes free): scene images are no longer stored", free)

    # --- queries ---

    def get(self, uuid: str) -> StoredRead | None:
        check_uuid(uuid)
        rows = self._rows(f"{_SELECT} WHERE r.uuid = ?", (uuid,))
        return _row_to_stored(rows[0]) if rows else None

    def list_reads(
        self, limit: int = 50, since: float | None = None, until: float | None = None, camera_id: str | None = None
    ) -> list[StoredRead]:
        """Reads newest first (by capture time), optionally from ``since`` up to ``until`` (UTC epoch, inclusive)."""
        _int(limit, "limit", 1, 1_000_000)
        where: list[str] = []
        params: list[object] = []
        if since is not None:
            _finite(since, "since")
            where.append("r.best_seen >= ?")
            params.append(float(since))
        if until is not None:
            _finite(until, "until")
            where.append("r.best_seen <= ?")
            params.append(float(until))
        if camera_id is not None:
            _name(camera_id, "camera_id")
            where.append("r.camera_id = ?")
            params.append(camera_id)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._rows(f"{sql} ORDER BY r.best_seen DESC, r.rowid DESC LIMIT ?", (*params, limit))
        return [_row_to_stored(r) for r in rows]

    def image(self, uuid: str, kind: ImageKind) -> bytes | None:
        check_uuid(uuid)
        if kind not in ("crop", "scene"):
            raise ValueError("kind: must be 'crop' or 'scene'")
        rows = self._rows("SELECT jpeg FROM read_images WHERE read_uuid = ? AND kind = ?", (uuid, kind))
        return bytes(rows[0][0]) if rows else None

    def count(self) -> int:
        return int(self._rows("SELECT count(*) FROM reads", ())[0][0])

    def status(self) -> StoreStatus:
        free = self._free()
        scene_on = free is None or free >= self._scene_min_free
        fault = self._fault
        if fault is None and free is not None:
            if free < self._min_free:
                fault = f"disk full: {free} bytes free, reads refused below {self._min_free}"
            elif not scene_on:
                fault = f"disk nearly full: {free} bytes free, scene images not stored below {self._scene_min_free}"
        db_bytes = 0
        for p in (self._path, self._path.with_name(self._path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                db_bytes += p.stat().st_size
        return StoreStatus(
            reads=self.count(), db_bytes=db_bytes, free_bytes=free, scene_images_on=scene_on, fault=fault
        )

    def integrity_check(self) -> str:
        """``ok``, or SQLite's list of problems, one per line."""
        rows = self._rows("PRAGMA integrity_check", ())
        return "\n".join(str(r[0]) for r in rows)

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except DBError as e:
            raise StoreError(f"{self._path}: query failed: {e}") from e
