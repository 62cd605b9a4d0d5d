"""The unit's outbox: the rows of the encrypted store that headquarters has not yet acknowledged, as batches.

There is no separate queue: a row is "to send" while its ``synced_at`` is NULL (migration 5), so nothing can be lost
between the store and the uplink, offline or across restarts. ``next_batch`` reads unsent rows in priority order
(protocol.KINDS: hits, outcomes, hold events, audit entries, reads, images) and ``apply_ack`` marks exactly the
UUIDs that headquarters acknowledged, in one transaction. Hold events (``hold_events``, migration 7: a hold placed
or released, written by edge.evidence) go as kind ``hold``, so that headquarters keeps a read the unit holds.
Nothing else ever marks a row sent (not a PUBACK, not a timeout).
Items headquarters refuses for good are recorded in ``sync_rejections`` and flagged so they are not resent.

One Outbox per connection and thread (the uplink's); the recorder writes meanwhile through its own connection.
"""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..store.db import Connection, DBError
from ..store.errors import StoreError
from .protocol import KINDS, MAX_ITEMS, MAX_MESSAGE_BYTES, Ack, Batch, Item, check_device, encode_batch, image_uuid

log = logging.getLogger(__name__)

BATCH_OVERHEAD = 256  # the batch's own fields (schema, device, batch_id, created) and brackets
ITEM_OVERHEAD = 64  # {"kind":"outcome","uuid":"<36>","data":},
IMAGE_CHUNK = 8  # images are fetched a few at a time: each may be megabytes
ROW_CHUNK = 200
SYNC_COLUMNS = frozenset({"synced_at", "sync_rejected"})
JSON_COLUMNS = {"reads": ("char_confidences", "candidates"), "hits": ("match_detail",)}


@dataclass(frozen=True)
class _Source:
    """Where the rows of one kind live."""

    kind: str
    table: str


_SOURCES = {
    s.kind: s
    for s in (_Source("hit", "hits"), _Source("outcome", "hit_outcomes"), _Source("hold", "hold_events"),
              _Source("audit", "audit"), _Source("read", "reads"))
}  # fmt: skip
_IMAGE_TABLE = "read_images"
_UNSENT = "synced_at IS NULL AND sync_rejected = 0"


def _audit_wire(row: dict[str, Any]) -> dict[str, Any]:
    """An ``audit`` row in its synced form, AuditEntry.to_json() (ValueError for a row that is not a valid entry)."""
    from ..access.audit import AuditEntry

    try:
        detail = json.loads(row["detail"])
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError("detail: not JSON") from e
    doc = {k: row[k] for k in ("seq", "uuid", "at", "role", "action", "reason", "prev_hash", "hash", "sig")}
    return AuditEntry.from_json({**doc, "user": row["user_name"], "detail": detail}).to_json()


def _estimate(kind: str, data: dict[str, Any]) -> int:
    """The encoded size of one item, without encoding the batch: JSON of the record; base64 for the JPEG."""
    if kind == "image":
        jpeg: bytes = data["jpeg"]
        rest = {k: v for k, v in data.items() if k != "jpeg"}
        return ITEM_OVERHEAD + len(json.dumps(rest, separators=(",", ":"))) + 10 + 4 * ((len(jpeg) + 2) // 3)
    return ITEM_OVERHEAD + len(json.dumps(data, separators=(",", ":")))


class Outbox:
    """Batches of unsent rows in priority order, and the acknowledgements that mark them sent."""

    def __init__(self, conn: Connection, device_id: str, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self.device_id = check_device(device_id)
        self._clock = clock
        self._columns = {s.table: self._table_columns(s.table) for s in _SOURCES.values()}
        # Items handed out in batches and not yet acknowledged: uuid -> (kind, key in its table).
        self._outstanding: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _table_columns(self, table: str) -> tuple[str, ...]:
        try:
            rows = self._conn.execute(f"PRAGMA table_info({table})").fetchall()
        except DBError as e:
            raise StoreError(f"cannot read the columns of {table}: {e}") from e
        cols = tuple(str(r[1]) for r in rows if str(r[1]) not in SYNC_COLUMNS)
        if not cols:
            raise StoreError(f"table {table} is missing: the database is not migrated")
        return cols

    # --- batches ---

    def next_batch(self, max_items: int, max_bytes: int) -> Batch | None:
        """The next batch of unsent items, highest priority first, at most ``max_items`` and about ``max_bytes``
        encoded (a single larger item goes alone, up to protocol.MAX_MESSAGE_BYTES); None when all is sent."""
        max_items = max(1, min(max_items, MAX_ITEMS))
        items: list[Item] = []
        size = BATCH_OVERHEAD
        try:
            for kind in KINDS:
                for item, est in self._unsent(kind):
                    if items and (len(items) >= max_items or size + est > max_bytes):
                        return self._batch(items)
                    if BATCH_OVERHEAD + est > MAX_MESSAGE_BYTES:
                        self._refuse_locally(item, f"{est} bytes encoded, over the message limit")
                        continue
                    items.append(item)
                    size += est
                    if len(items) >= max_items or size >= max_bytes:
                        return self._batch(items)
        except DBError as e:
            raise StoreError(f"cannot read the outbox: {e}") from e
        return self._batch(items) if items else None

    def _batch(self, items: list[Item]) -> Batch:
        for it in items:
            if it.kind == "image":
                self._outstanding[it.uuid] = ("image", (str(it.data["read_uuid"]), str(it.data["kind"])))
            else:
                self._outstanding[it.uuid] = (it.kind, (it.uuid,))
        return Batch(self.device_id, str(uuidlib.uuid4()), float(self._clock()), tuple(items))

    def _unsent(self, kind: str) -> Iterator[tuple[Item, int]]:
        """Unsent items of ``kind`` in rowid (insertion) order, read in chunks (keyset: rowid > last)."""
        if kind == "image":
            yield from self._unsent_images()
            return
        src = _SOURCES.get(kind)
        if src is None:
            return
        cols = self._columns[src.table]
        json_cols = JSON_COLUMNS.get(src.table, ())
        last = -1
        while True:
            rows = self._conn.execute(
                f"SELECT rowid, {', '.join(cols)} FROM {src.table} WHERE {_UNSENT} AND rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (last, ROW_CHUNK),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                last = int(row[0])
                data = dict(zip(cols, row[1:], strict=True))
                for c in json_cols:
                    data[c] = json.loads(data[c])
                if kind == "audit":
                    try:
                        data = _audit_wire(data)
                    except ValueError as e:  # a damaged or tampered row: HQ would refuse it; its gap shows there
                        self._refuse_locally(Item(kind, str(data["uuid"]), {}), f"malformed access record entry: {e}")
                        continue
                yield Item(kind, str(data["uuid"]), data), _estimate(kind, data)

    def _unsent_images(self) -> Iterator[tuple[Item, int]]:
        last = -1
        while True:
            rows = self._conn.execute(
                f"SELECT rowid, read_uuid, kind, jpeg FROM {_IMAGE_TABLE} WHERE {_UNSENT} AND rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (last, IMAGE_CHUNK),
            ).fetchall()
            if not rows:
                return
            for rowid, read_uuid, image_kind, jpeg in rows:
                last = int(rowid)
                data = {"read_uuid": str(read_uuid), "kind": str(image_kind), "jpeg": bytes(jpeg)}
                yield Item("image", image_uuid(str(read_uuid), str(image_kind)), data), _estimate("image", data)

    # --- acknowledgements ---

    def apply_ack(self, ack: Ack) -> tuple[int, int]:
        """Mark the UUIDs headquarters stored as sent and record the ones it refused, in one transaction.

        Returns (rows newly marked sent, rows newly marked refused). UUIDs of items this Outbox did not hand out
        (an ack for a batch sent before a restart) are looked up by UUID; unknown ones change nothing."""
        if ack.device != self.device_id:
            raise ValueError("ack: for another device")
        now = float(self._clock())
        stored = rejected = 0
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
            for uid in ack.stored:
                stored += self._mark(uid, "synced_at = ?", (now,))
            for r in ack.rejected:
                n = self._mark(r.uuid, "sync_rejected = 1", ())
                if n:
                    kind = self._outstanding.get(r.uuid, ("unknown", ()))[0]
                    c.execute(
                        "INSERT OR REPLACE INTO sync_rejections (uuid, kind, reason, at) VALUES (?, ?, ?, ?)",
                        (r.uuid, kind, r.reason, now),
                    )
                    rejected += n
            self._set_state("last_ack", now)
            if not self._anything_unsent():
                self._set_state("last_complete_sync", now)
            c.execute("COMMIT")
        except DBError as e:
            self._rollback()
            raise StoreError(f"cannot record the acknowledgement of batch {ack.batch_id}: {e}") from e
        except BaseException:
            self._rollback()
            raise
        for uid in ack.stored:
            self._outstanding.pop(uid, None)
        for r in ack.rejected:
            self._outstanding.pop(r.uuid, None)
            log.warning("headquarters refused item %s for good: %s", r.uuid, r.reason)
        return stored, rejected

    def _mark(self, uid: str, assignment: str, params: Sequence[object]) -> int:
        """Set ``assignment`` on the unsent row with ``uid``; the number of rows changed (0 or 1)."""
        known = self._outstanding.get(uid)
        if known is not None and known[0] == "image":
            sql = f"UPDATE {_IMAGE_TABLE} SET {assignment} WHERE read_uuid = ? AND kind = ? AND {_UNSENT}"
            return self._conn.execute(sql, (*params, *known[1])).rowcount
        kinds = [known[0]] if known is not None else list(_SOURCES)
        for kind in kinds:
            table = _SOURCES[kind].table
            n = self._conn.execute(f"UPDATE {table} SET {assignment} WHERE uuid = ? AND {_UNSENT}", (*params, uid))
            if n.rowcount:
                return n.rowcount
        return 0

    def refuse_unencodable(self, batch: Batch) -> int:
        """After ``encode_batch(batch)`` failed: refuse (locally, recorded) each item that cannot be encoded even
        alone, so that one bad row never blocks the outbox; returns how many."""
        bad = 0
        for it in batch.items:
            try:
                encode_batch(Batch(batch.device, batch.batch_id, batch.created, (it,)))
            except (ValueError, TypeError) as e:  # ProtocolError (too large) is a ValueError
                self._refuse_locally(it, f"cannot be encoded ({type(e).__name__})")
                bad += 1
        return bad

    def _refuse_locally(self, item: Item, reason: str) -> None:
        """An item that can never be sent (too large for a message): recorded like a refusal so it does not block
        everything behind it."""
        self._outstanding[item.uuid] = (
            (item.kind, (str(item.data["read_uuid"]), str(item.data["kind"])))
            if item.kind == "image"
            else (item.kind, (item.uuid,))
        )
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            self._mark(item.uuid, "sync_rejected = 1", ())
            c.execute(
                "INSERT OR REPLACE INTO sync_rejections (uuid, kind, reason, at) VALUES (?, ?, ?, ?)",
                (item.uuid, item.kind, f"unit: {reason}", float(self._clock())),
            )
            c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._outstanding.pop(item.uuid, None)
        log.error("outbox item %s (%s) cannot be sent: %s", item.uuid, item.kind, reason)

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.rollback()
        except DBError:
            log.error("rollback of the outbox transaction failed", exc_info=True)

    # --- state ---

    def _set_state(self, key: str, value: float) -> None:
        self._conn.execute("INSERT OR REPLACE INTO sync_state (key, value) VALUES (?, ?)", (key, value))

    def _state(self, key: str) -> float | None:
        try:
            row = self._conn.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        except DBError as e:
            raise StoreError(f"cannot read the sync state: {e}") from e
        return None if row is None else float(row[0])

    def _anything_unsent(self) -> bool:
        tables = [s.table for s in _SOURCES.values()] + [_IMAGE_TABLE]
        return any(self._conn.execute(f"SELECT 1 FROM {t} WHERE {_UNSENT} LIMIT 1").fetchone() for t in tables)

    def _pending_counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for kind, src in _SOURCES.items():
            out[kind] = int(self._conn.execute(f"SELECT count(*) FROM {src.table} WHERE {_UNSENT}").fetchone()[0])
        out["image"] = int(self._conn.execute(f"SELECT count(*) FROM {_IMAGE_TABLE} WHERE {_UNSENT}").fetchone()[0])
        return out

    def pending(self) -> dict[str, int]:
        """Items not yet acknowledged (refused ones left out), by kind, every kind of protocol.KINDS present."""
        try:
            return self._pending_counts()
        except DBError as e:
            raise StoreError(f"cannot count the outbox: {e}") from e

    def oldest_pending(self) -> float | None:
        """When the oldest unsent hit, outcome, hold event, access record entry or read was stored (UTC epoch
        seconds); None when none waits."""
        queries = (
            f"SELECT created_at FROM hits WHERE {_UNSENT} ORDER BY rowid LIMIT 1",
            f"SELECT at FROM hit_outcomes WHERE {_UNSENT} ORDER BY rowid LIMIT 1",
            f"SELECT at FROM hold_events WHERE {_UNSENT} ORDER BY rowid LIMIT 1",
            f"SELECT at FROM audit WHERE {_UNSENT} ORDER BY rowid LIMIT 1",
            f"SELECT stored_at FROM reads WHERE {_UNSENT} ORDER BY rowid LIMIT 1",
        )
        try:
            times = [r[0] for q in queries if (r := self._conn.execute(q).fetchone()) is not None]
        except DBError as e:
            raise StoreError(f"cannot read the outbox: {e}") from e
        return float(min(times)) if times else None

    def last_complete_sync(self) -> float | None:
        """When an acknowledgement last left nothing unsent (UTC epoch seconds); None if that never happened."""
        return self._state("last_complete_sync")

    def last_ack(self) -> float | None:
        return self._state("last_ack")

    def rejections(self) -> list[tuple[str, str, str, float]]:
        """(uuid, kind, reason, at) of every refused item, oldest first."""
        try:
            rows = self._conn.execute("SELECT uuid, kind, reason, at FROM sync_rejections ORDER BY at, uuid").fetchall()
        except DBError as e:
            raise StoreError(f"cannot read the sync rejections: {e}") from e
        return [(str(u), str(k), str(r), float(a)) for u, k, r, a in rows]
