"""Evidence on the unit (P10): holds that keep reads from the purge, and the signed export of a case's reads.

A hold names one read, a case number and a reason; a read stays while any hold on it is active, whatever its age
(edge.store.retention never purges it). Holds are released, never deleted, so who held what and why stays on file.
Each hold and each release also writes a row of ``hold_events`` in the same transaction, which the outbox syncs to
headquarters (kind ``hold``): headquarters then keeps the read as long as the unit does and lists the unit's hold
(edge.hq.retention, edge.hq.evidence). An export takes every read actively held under a case, with its images, hits
and outcomes and the access-record entries about it, and writes the folder format of edge.evidence_format, signed
with the unit's audit key. The access-record entries themselves are written by the caller (edge.evidence_commands),
except the export's, which must be recorded after the manifest is signed and before the export is put in place.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .access.audit import AuditEntry
from .access.reasons import check_purpose
from .evidence_format import (
    ACCESS_RECORD,
    READS,
    EvidenceError,
    ExportMeta,
    ExportResult,
    ExportWriter,
    image_name,
    iso_utc,
    public_pem,
)
from .store.commands import read_to_json
from .store.db import Connection, DBError
from .store.errors import StoreError
from .store.reads import ReadStore, check_uuid

MAX_READS = 10_000  # in one hold command or one export
MAX_REASON = 2000
DETAIL_UUIDS = 600  # per list in one access-record entry: two lists of 600 stay under its 60 KiB


class HoldError(ValueError):
    """A hold or release that cannot be made; the message names what was wrong (never plate text)."""


@dataclass(frozen=True)
class Hold:
    uuid: str
    read_uuid: str
    case_number: str
    reason: str
    held_by: str
    held_at: float
    released_by: str | None = None
    released_at: float | None = None
    release_reason: str | None = None
    placed_on: str | None = None  # in headquarters' listing: "headquarters" or "unit <device>" (None elsewhere)

    @property
    def active(self) -> bool:
        return self.released_at is None

    def to_json(self) -> dict[str, Any]:
        where = {} if self.placed_on is None else {"placed_on": self.placed_on}
        return where | {
            "uuid": self.uuid,
            "read_uuid": self.read_uuid,
            "case_number": self.case_number,
            "reason": self.reason,
            "held_by": self.held_by,
            "held_at": iso_utc(self.held_at),
            "released_by": self.released_by,
            "released_at": iso_utc(self.released_at),
            "release_reason": self.release_reason,
        }


def check_hold_purpose(case_number: str | None, reason: str | None) -> tuple[str, str]:
    """Both a case number (P14's format) and a reason: a hold keeps data past its period, so it must say why."""
    if not case_number or not str(case_number).strip():
        raise HoldError("--case: a hold names the case number it is for")
    if not reason or not str(reason).strip():
        raise HoldError("--reason: a hold says why the reads are kept")
    purpose = check_purpose(case_number, reason)  # PurposeError (a ValueError) names the rule broken
    if len(purpose.reason) > MAX_REASON:
        raise HoldError(f"--reason: at most {MAX_REASON} characters")
    return purpose.case_number, purpose.reason


def check_release(hold_uuids: Sequence[str], case_number: str | None, reason: str | None) -> None:
    """A release names either holds or a case, and says why the reads may now be purged."""
    if not reason or not reason.strip():
        raise HoldError("--reason: a release says why the reads may now be purged")
    if bool(hold_uuids) == bool(case_number):
        raise HoldError("give hold uuids or --case, not both")


_HOLD_COLUMNS = "uuid, read_uuid, case_number, reason, held_by, held_at, released_by, released_at, release_reason"


def _hold(row: Sequence[Any]) -> Hold:
    return Hold(
        str(row[0]),
        str(row[1]),
        row[2],
        row[3],
        row[4],
        float(row[5]),
        row[6],
        None if row[7] is None else float(row[7]),
        row[8],
    )


class Evidence:
    """Holds and exports on one unit connection (the caller's: one thread at a time)."""

    def __init__(self, conn: Connection, db_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._db_path = db_path
        self._clock = clock

    # --- holds ---

    def hold(
        self,
        read_uuids: Iterable[str],
        case_number: str,
        reason: str,
        user: str,
        record: Callable[[list[Hold]], object] | None = None,
    ) -> list[Hold]:
        """Hold each read for the case; a read already held for that case keeps its hold. HoldError naming the first
        read that is not stored (nothing is held then). ``record(holds)`` writes the access-record entry before
        anything is written: if it raises, no hold is made."""
        case_number, reason = check_hold_purpose(case_number, reason)
        uuids = list(dict.fromkeys(check_uuid(u, "read uuid") for u in read_uuids))
        if not uuids or len(uuids) > MAX_READS:
            raise HoldError(f"read uuids: give 1..{MAX_READS}")
        now = float(self._clock())
        out: list[Hold] = []
        new: list[Hold] = []
        try:
            for u in uuids:
                if not self._conn.execute("SELECT 1 FROM reads WHERE uuid = ?", (u,)).fetchone():
                    raise HoldError(f"read {u} is not stored on this unit (purged, or never read here)")
                row = self._conn.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds"
                    " WHERE read_uuid = ? AND case_number = ? AND released_at IS NULL",
                    (u, case_number),
                ).fetchone()
                h = _hold(row) if row else Hold(str(uuidlib.uuid4()), u, case_number, reason, user, now)
                out.append(h)
                if not row:
                    new.append(h)
        except DBError as e:
            raise StoreError(f"cannot read the holds: {e}") from e
        if record is not None:
            record(out)
        with self._write():
            for h in new:
                if not self._conn.execute("SELECT 1 FROM reads WHERE uuid = ?", (h.read_uuid,)).fetchone():
                    raise HoldError(f"read {h.read_uuid} was purged meanwhile")
                self._conn.execute(
                    "INSERT INTO holds (uuid, read_uuid, case_number, reason, held_by, held_at) VALUES (?,?,?,?,?,?)",
                    (h.uuid, h.read_uuid, h.case_number, h.reason, h.held_by, h.held_at),
                )
                self._event(h, "hold", h.reason, h.held_by, h.held_at)
        return out

    def release(
        self,
        *,
        hold_uuids: Sequence[str] = (),
        case_number: str | None = None,
        reason: str,
        user: str,
        record: Callable[[list[Hold]], object] | None = None,
    ) -> list[Hold]:
        """Release the given active holds, or every active hold of a case; HoldError when there is none.
        ``record(released)`` writes the access-record entry first, as for ``hold``."""
        check_release(hold_uuids, case_number, reason)
        now = float(self._clock())
        try:
            if case_number:
                rows = self._conn.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds WHERE case_number = ? AND released_at IS NULL",
                    (case_number.strip(),),
                ).fetchall()
                if not rows:
                    raise HoldError(f"case {case_number}: no active hold")
            else:
                rows = []
                for u in dict.fromkeys(hold_uuids):
                    row = self._conn.execute(
                        f"SELECT {_HOLD_COLUMNS} FROM holds WHERE uuid = ?", (check_uuid(u, "hold uuid"),)
                    ).fetchone()
                    if not row:
                        raise HoldError(f"hold {u}: no such hold")
                    if row[7] is not None:
                        raise HoldError(f"hold {u}: already released")
                    rows.append(row)
        except DBError as e:
            raise StoreError(f"cannot read the holds: {e}") from e
        released = [Hold(str(r[0]), str(r[1]), r[2], r[3], r[4], float(r[5]), user, now, reason.strip()) for r in rows]
        if record is not None:
            record(released)
        with self._write():
            for h in released:
                n = self._conn.execute(
                    "UPDATE holds SET released_by = ?, released_at = ?, release_reason = ?"
                    " WHERE uuid = ? AND released_at IS NULL",
                    (user, now, h.release_reason, h.uuid),
                ).rowcount
                if n:  # not when released meanwhile by someone else (that release has its own event)
                    self._event(h, "release", h.release_reason or "", user, now)
        return released

    def _event(self, h: Hold, event: str, reason: str, user: str, at: float) -> None:
        """Queue a hold or release for headquarters (sync kind ``hold``), inside the caller's transaction."""
        self._conn.execute(
            "INSERT INTO hold_events (uuid, hold_uuid, event, read_uuid, case_number, reason, user_name, at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (str(uuidlib.uuid4()), h.uuid, event, h.read_uuid, h.case_number, reason, user, at),
        )

    def holds(self, case_number: str | None = None, *, active_only: bool = False) -> list[Hold]:
        where, params = [], []
        if case_number:
            where.append("case_number = ?")
            params.append(case_number.strip())
        if active_only:
            where.append("released_at IS NULL")
        sql = f"SELECT {_HOLD_COLUMNS} FROM holds" + (" WHERE " + " AND ".join(where) if where else "")
        try:
            rows = self._conn.execute(sql + " ORDER BY held_at, uuid", params).fetchall()
        except DBError as e:
            raise StoreError(f"cannot read the holds: {e}") from e
        return [_hold(r) for r in rows]

    def _write(self) -> _Tx:
        return _Tx(self._conn)

    # --- export ---

    def export(
        self,
        case_number: str,
        out: Path,
        *,
        signer: Ed25519PrivateKey,
        user: str,
        role: str,
        device_id: str,
        entries: Iterable[AuditEntry],
        record: Callable[[Mapping[str, Any]], object],
    ) -> ExportResult:
        """Write the case's actively held reads to ``out`` (folder or archive), signed by ``signer``.

        ``entries`` is the unit's access record (filtered here to what concerns the case or its reads);
        ``record(detail)`` writes the ``evidence.export`` entry: it runs after signing and before the export is put
        in place, and if it raises, nothing is left behind.
        """
        holds = self.holds(case_number, active_only=True)
        if not holds:
            raise HoldError(f"case {case_number}: no read is held for it (hold them first)")
        read_uuids = list(dict.fromkeys(h.read_uuid for h in holds))
        if len(read_uuids) > MAX_READS:
            raise HoldError(f"case {case_number}: more than {MAX_READS} reads; export from headquarters")
        store = ReadStore(
            self._conn, self._db_path, min_free_bytes=0, scene_min_free_bytes=0, free_bytes=lambda: 0, clock=self._clock
        )
        writer = ExportWriter(out)
        try:
            reads: list[dict[str, Any]] = []
            for u in read_uuids:
                r = store.get(u)
                if r is None:  # a held read is never purged; a hold on a read that never was cannot be made
                    raise EvidenceError(f"held read {u} is missing from the database")
                doc = read_to_json(r)
                doc["device"] = device_id
                doc["best_seen_epoch"] = r.best_seen
                images: list[str] = []
                for kind in ("crop", "scene"):
                    jpeg = store.image(u, kind)
                    if jpeg is not None:
                        writer.add(image_name(u, kind), jpeg)
                        images.append(image_name(u, kind))
                doc["images"] = images
                doc["holds"] = [h.to_json() for h in holds if h.read_uuid == u]
                doc["hits"] = self._hits(u)
                reads.append(doc)
            reads.sort(key=lambda d: (d["best_seen_epoch"], d["uuid"]))  # in the order they were seen
            writer.add_json(READS, {"case_number": case_number, "device": device_id, "reads": reads})
            chosen = [e.to_json() for e in entries if concerns(e.to_json(), case_number, set(read_uuids))]
            chain = {
                "source": f"unit {device_id}",
                "public_key": public_pem(signer.public_key()).decode(),
                "entries": chosen,
            }
            writer.add_json(ACCESS_RECORD, {"chains": [chain]})
            meta = ExportMeta(
                case_number,
                user,
                role,
                f"unit {device_id}",
                float(self._clock()),
                tuple(read_uuids),
                tuple(h.uuid for h in holds),
            )
            sha = writer.seal(meta, signer)
            record(
                {
                    "case_number": case_number,
                    "read_uuids": read_uuids[:DETAIL_UUIDS],
                    "hold_uuids": [h.uuid for h in holds][:DETAIL_UUIDS],
                    "path": str(Path(out).resolve()),
                    "manifest_sha256": sha,
                }
            )
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def _hits(self, read_uuid: str) -> list[dict[str, Any]]:
        cols = (
            "uuid, camera_id, read_text, read_confidence, seen_at, list_id, list_version, entry_id, wanted_plate,"
            " wanted_state, list_code, reason, instructions, case_number, matched_text, match_kind, created_at,"
            " published_at"
        )
        names = [c.strip() for c in cols.split(",")]
        out = []
        for row in self._conn.execute(
            f"SELECT {cols} FROM hits WHERE read_uuid = ? ORDER BY created_at", (read_uuid,)
        ).fetchall():
            hit = dict(zip(names, row, strict=True))
            outcomes = self._conn.execute(
                "SELECT uuid, outcome, officer, at, note FROM hit_outcomes WHERE hit_uuid = ? ORDER BY at",
                (hit["uuid"],),
            ).fetchall()
            hit["outcomes"] = [
                {"uuid": o[0], "outcome": o[1], "officer": o[2], "at": iso_utc(o[3]), "note": o[4]} for o in outcomes
            ]
            for t in ("seen_at", "created_at", "published_at"):
                hit[t] = iso_utc(hit[t])
            out.append(hit)
        return out


def concerns(entry: Mapping[str, Any], case_number: str, read_uuids: set[str]) -> bool:
    """An access-record entry is about the case when its detail or purpose names the case, or it lists one of the
    reads (searches, views, holds, exports)."""
    detail = entry.get("detail")
    if not isinstance(detail, Mapping):
        return False
    if detail.get("case_number") == case_number:
        return True
    purpose = detail.get("purpose")
    if isinstance(purpose, Mapping) and purpose.get("case_number") == case_number:
        return True
    listed = detail.get("read_uuids")
    return isinstance(listed, list) and not read_uuids.isdisjoint(str(u) for u in listed)


class _Tx:
    """BEGIN IMMEDIATE .. COMMIT, rolled back on any error; database errors become StoreError."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except DBError as e:
            raise StoreError(f"cannot write the holds: {e}") from e

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self._conn.execute("COMMIT")
                return
            except DBError as e:
                self._conn.rollback()
                raise StoreError(f"cannot write the holds: {e}") from e
        if self._conn.in_transaction:
            self._conn.rollback()
        if isinstance(exc, DBError):
            raise StoreError(f"cannot write the holds: {exc}") from exc
