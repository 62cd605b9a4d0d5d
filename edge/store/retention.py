"""Retention on the unit (P10): reads older than ``store.retention_days`` are purged, really gone, and each purge is
recorded in the access record with its counts.

The rules, and why:

- Only what headquarters has acknowledged: the read, each of its images, its hits and their outcomes all have
  ``synced_at`` set (migration 5; set only by headquarters' ack). Anything else waits, counted as "not yet at
  headquarters", so the unit never destroys the only copy. An administrator may force it (``forced: true`` in the
  record), e.g. for a unit that will never sync again; rows headquarters refused for good also need that.
- Never a read with an active hold (``holds.released_at IS NULL``), forced or not.
- With the read go its images, its hits and their outcomes. A hit that matters (a confirmed stop, an arrest) must be
  held as evidence (``alpr-edge evidence hold``) before its read's period ends, or it goes with the read.
- Really gone: ``secure_delete`` (edge.store.db) makes SQLite overwrite deleted cells and freed pages with zeros
  (SQLCipher then encrypts the zeros), and afterwards ``wal_checkpoint(TRUNCATE)`` copies the zeroed pages into
  the database file and empties the WAL, where older page images still held the plate. Sorts and temporary tables
  never reach the disk (``temp_store = MEMORY``; SQLCipher would encrypt them anyway). Free pages stay in the
  file, zeroed, and are reused; no VACUUM, which would rewrite the whole database and need its size again free.
- Short transactions of ``batch`` reads (``BEGIN IMMEDIATE`` .. ``COMMIT``): the recorder waits for one batch at
  most, never for the whole purge.

What this cannot reach: copies outside the database file (backups) and blocks the filesystem or the flash
controller has already released, which hold old ciphertext only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from .db import Connection, DBError, open_db
from .errors import StoreError

log = logging.getLogger(__name__)

DAY = 86400.0
BATCH = 50  # reads per transaction: ~0.13 s of write lock with 250 KB scenes on the dev box, under 1 s on a Pi
CHECKPOINT_TRIES = 5
INTERVAL_S = 3600.0  # the daemon checks hourly: nothing stays more than an hour past its period


class Recorder(Protocol):
    """The part of edge.access.audit.AuditLog a purge uses (the daemon's, or a logged-in administrator's)."""

    def record(
        self, user: str, role: str, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class PurgeResult:
    older_than: float  # reads seen before this UTC epoch second were due
    reads: int  # purged (or, in a dry run, that would be)
    images: int
    hits: int
    outcomes: int
    held_kept: int  # due, kept because held
    unsynced_kept: int  # due, kept because headquarters has not acknowledged all of it
    forced: bool
    dry_run: bool = False
    wal_cleared: bool = True  # the WAL was checkpointed and truncated afterwards

    def detail(self) -> dict[str, Any]:
        """The access record's ``purge`` detail (contract keys, plus whether the WAL was emptied)."""
        d = asdict(self)
        d.pop("dry_run")
        return d


_HELD = "EXISTS (SELECT 1 FROM holds h WHERE h.read_uuid = r.uuid AND h.released_at IS NULL)"
_UNSYNCED = (
    "(r.synced_at IS NULL"
    " OR EXISTS (SELECT 1 FROM read_images i WHERE i.read_uuid = r.uuid AND i.synced_at IS NULL)"
    " OR EXISTS (SELECT 1 FROM hits x WHERE x.read_uuid = r.uuid AND (x.synced_at IS NULL"
    "   OR EXISTS (SELECT 1 FROM hit_outcomes o WHERE o.hit_uuid = x.uuid AND o.synced_at IS NULL))))"
)


def _due(force: bool) -> str:
    return f"r.best_seen < ? AND NOT {_HELD}" + ("" if force else f" AND NOT {_UNSYNCED}")


def _one(conn: Connection, sql: str, params: Sequence[object]) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def purge(
    conn: Connection,
    audit: Recorder | None,
    *,
    retention_days: float,
    user: str = "system",
    role: str = "system",
    force: bool = False,
    dry_run: bool = False,
    batch: int = BATCH,
    clock: Callable[[], float] = time.time,
    record_empty: bool = True,
) -> PurgeResult:
    """Purge the reads due on ``conn`` (see the module docstring); the counts. ``audit`` gets one ``purge`` entry
    (not for a dry run, nor with ``record_empty=False`` when nothing was due: the hourly check stays quiet).

    StoreError when the database fails (what was committed stays purged; the next run goes on).
    """
    if not retention_days > 0:
        raise ValueError("retention_days: must be more than 0")
    cutoff = clock() - retention_days * DAY
    try:
        totals = _count_due(conn, cutoff, force) if dry_run else _delete_due(conn, cutoff, force, max(1, batch))
        held = _one(conn, f"SELECT count(*) FROM reads r WHERE r.best_seen < ? AND {_HELD}", (cutoff,))
        unsynced = 0
        if not force:
            unsynced = _one(
                conn, f"SELECT count(*) FROM reads r WHERE r.best_seen < ? AND NOT {_HELD} AND {_UNSYNCED}", (cutoff,)
            )
    except DBError as e:
        if conn.in_transaction:
            conn.rollback()
        raise StoreError(f"purge failed: {e}") from e
    cleared = True if dry_run or totals[0] == 0 else checkpoint(conn)
    result = PurgeResult(
        cutoff, *totals, held_kept=held, unsynced_kept=unsynced, forced=force, dry_run=dry_run, wal_cleared=cleared
    )
    if audit is not None and not dry_run and (record_empty or result.reads):
        audit.record(user, role, "purge", reason="retention" + (" (forced)" if force else ""), detail=result.detail())
    if result.reads:
        log.info(
            "purge: %d read(s), %d image(s), %d hit(s), %d outcome(s) older than %.1f days; kept %d held, %d not yet "
            "at headquarters%s",
            result.reads,
            result.images,
            result.hits,
            result.outcomes,
            retention_days,
            held,
            unsynced,
            " (forced)" if force else "",
        )
    return result


def _count_due(conn: Connection, cutoff: float, force: bool) -> tuple[int, int, int, int]:
    where = _due(force)
    reads = _one(conn, f"SELECT count(*) FROM reads r WHERE {where}", (cutoff,))
    images = _one(
        conn,
        f"SELECT count(*) FROM read_images WHERE read_uuid IN (SELECT r.uuid FROM reads r WHERE {where})",
        (cutoff,),
    )
    hits = _one(
        conn, f"SELECT count(*) FROM hits WHERE read_uuid IN (SELECT r.uuid FROM reads r WHERE {where})", (cutoff,)
    )
    outcomes = _one(
        conn,
        "SELECT count(*) FROM hit_outcomes WHERE hit_uuid IN (SELECT x.uuid FROM hits x WHERE x.read_uuid IN "
        f"(SELECT r.uuid FROM reads r WHERE {where}))",
        (cutoff,),
    )
    return reads, images, hits, outcomes


def _delete_due(conn: Connection, cutoff: float, force: bool, batch: int) -> tuple[int, int, int, int]:
    """Batch after batch, each chosen inside its own write transaction (so a hold placed meanwhile is honoured)."""
    totals = [0, 0, 0, 0]
    where = _due(force)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            uuids = [
                str(r[0])
                for r in conn.execute(
                    f"SELECT r.uuid FROM reads r WHERE {where} ORDER BY r.best_seen LIMIT ?", (cutoff, batch)
                ).fetchall()
            ]
            if not uuids:
                conn.execute("COMMIT")
                return totals[0], totals[1], totals[2], totals[3]
            marks = _marks(len(uuids))
            hits = [
                str(r[0]) for r in conn.execute(f"SELECT uuid FROM hits WHERE read_uuid IN ({marks})", uuids).fetchall()
            ]
            if hits:
                totals[3] += conn.execute(
                    f"DELETE FROM hit_outcomes WHERE hit_uuid IN ({_marks(len(hits))})", hits
                ).rowcount
                totals[2] += conn.execute(f"DELETE FROM hits WHERE uuid IN ({_marks(len(hits))})", hits).rowcount
            totals[1] += conn.execute(f"DELETE FROM read_images WHERE read_uuid IN ({marks})", uuids).rowcount
            totals[0] += conn.execute(f"DELETE FROM reads WHERE uuid IN ({marks})", uuids).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise


def checkpoint(conn: Connection, tries: int = CHECKPOINT_TRIES) -> bool:
    """Copy the WAL into the database and truncate it to zero bytes; False when readers kept it busy every time
    (the next purge tries again; SQLite also reuses the WAL from its start after any complete checkpoint)."""
    for attempt in range(tries):
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except DBError as e:
            log.warning("WAL checkpoint after purge failed: %s", e)
            busy = 1
        if not busy:
            return True
        time.sleep(0.2 * (attempt + 1))
    log.warning("WAL checkpoint after purge could not complete: readers kept it busy; retried at the next purge")
    return False


class RetentionWorker(threading.Thread):
    """The daemon's scheduled purge: its own thread and connection; checks every ``interval_s`` until ``stop``."""

    def __init__(
        self,
        db_path: Path,
        key: bytes,
        make_recorder: Callable[[Connection], Recorder],
        retention_days: float,
        stop: threading.Event,
        *,
        interval_s: float = INTERVAL_S,
        first_delay_s: float = 60.0,
    ) -> None:
        super().__init__(name="retention", daemon=True)
        self._db_path, self._key = db_path, key
        self._make_recorder = make_recorder
        self.retention_days = retention_days
        self._stop_event = stop
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self.last: PurgeResult | None = None
        self.fault: str | None = None

    def run(self) -> None:
        if self._stop_event.wait(self.first_delay_s):  # let the pipeline start first
            return
        try:
            conn = open_db(self._db_path, self._key, create=False)
        except StoreError as e:
            self.fault = str(e)
            log.error("retention: %s; no purge in this run", e)
            return
        try:
            recorder = self._make_recorder(conn)
            while True:
                try:
                    self.last = purge(conn, recorder, retention_days=self.retention_days, record_empty=False)
                    self.fault = None
                except Exception as e:  # a failed purge must not end the thread: the next hour tries again
                    self.fault = f"purge failed: {e}"
                    log.error("retention: purge failed: %s", e)
                if self._stop_event.wait(self.interval_s):
                    return
        finally:
            conn.close()
