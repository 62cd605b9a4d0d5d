"""Headquarters ingest: batches from the units (MQTT v5 shared subscription) into PostgreSQL, then the Ack.

One IngestWorker is one thread with one paho client and one PostgreSQL connection; any number of them (threads
here, processes or machines in production) share ``$share/<group>/alpr/+/up``, and nothing assumes a single one.
For each message, in this order:

1. ``protocol.decode_batch``. A ProtocolError (not JSON, wrong schema, oversized, a batch naming another device
   than its topic, ...) gives one log line naming the device and the reason; nothing is stored and no Ack is sent
   (a document we refused is not trusted for a batch id or item UUIDs; the unit's own encoder validates with the
   same module, so only a broken or hostile sender gets here). The message is still PUBACKed to the broker so that
   it is not redelivered for ever.
2. Each item is validated for its kind (types, required fields, sizes, no NUL, finite numbers); a bad item is
   rejected with a reason naming the field (never its value) and the others are stored. Kind ``hold`` is a hold
   placed or released on the unit (``unit_hold_events``): it keeps that unit's read from headquarters' purge until
   its release arrives, in whichever order the two come (edge.hq.retention).
3. All items go in ONE transaction with ``INSERT ... ON CONFLICT DO NOTHING`` (keyed by UUID, so a redelivered
   batch stores nothing new and is acknowledged again), together with the device registry and a ``batches`` row.
   Should PostgreSQL still refuse an item (a value it cannot hold), the batch is stored again item by item under
   savepoints and that item is rejected: one bad item never blocks the batch for ever.
Retired units (``hq devices retire``): what they still send is stored and acknowledged like anything else, never
dropped (a read is possible evidence, and a unit stolen or put back without telling headquarters must still be
seen), with one warning line per batch, and per newer status, naming the unit (never plate text or positions).

4. COMMIT, then the Ack (``protocol.encode_ack``, QoS 1) to ``alpr/<device>/ack``, then the PUBACK of the batch
   (paho ``manual_ack=True``). A worker that dies before the commit never PUBACKed, so the broker redelivers the
   batch to its persistent session when it comes back; while PostgreSQL is down the worker keeps the batch, does
   not PUBACK it and retries with capped, jittered backoff (the broker holds at most ``receive_maximum`` batches
   in flight to it meanwhile). A lost MQTT connection is re-established with the same backoff.

Statuses: a worker made with ``statuses=True`` (``hq serve`` makes its first worker so) also subscribes to
``alpr/+/status``, not shared: the broker sends retained messages only to plain subscriptions, and those
give headquarters every unit's last status at each connect. QoS 0, so that the broker queues no status for an absent
worker: with a large fleet and a long outage, queued statuses would fill the session's queue and push batches out,
and the retained copy brings the latest status at the reconnect anyway. A status goes through the same queue and
database retry as a batch (no Ack: the unit wants none), checked and stored by edge/hq/device_status.py; a refused
one is one log line and nothing stored. Several such workers store the same status harmlessly (a status never replaces
a newer one). A broker that refuses that subscription leaves batch ingest running, with a warning.

A worker's persistent session is named after ``name``: give each worker a stable name and restart it under the
same name, or the batches in flight to it wait for its session to expire (``session_expiry_s``).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from psycopg.types.json import Jsonb

from ..alerts_mqtt import backoff_delay, tls_context
from ..sync import protocol
from ..sync.protocol import Ack, Batch, Item, ProtocolError, Rejected
from . import device_status, schema

log = logging.getLogger(__name__)

POLL_S = 0.05
MAX_TEXT = 64  # plate text, ids, codes
MAX_LONG_TEXT = 4000  # reason, instructions, notes, a manual entry's synopsis
MAX_NAME = 128  # a person's name: officer, entering member
MAX_LIST = 64  # per-character confidences, candidates
MAX_JSON_BYTES = 64 * 1024  # match_detail, an audit entry
MAX_JSON_DEPTH = 16
STATUS_TOPICS = "alpr/+/status"  # every unit's retained status (not shared: see the module docstring)


class ItemError(ValueError):
    """One item that headquarters refuses; the text names the field, never its value."""


# -- validation: one function per kind, each returning the row to insert ---------------------------------------


def _get(d: dict[str, Any], key: str, required: bool) -> Any:
    v = d.get(key)
    if v is None and required:
        raise ItemError(f"{key}: missing")
    return v


def _text(d: dict[str, Any], key: str, max_len: int = MAX_TEXT, *, required: bool = True) -> str | None:
    v = _get(d, key, required)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > max_len or "\x00" in v:
        raise ItemError(f"{key}: expected a string of at most {max_len} characters")
    return v


def _req_text(d: dict[str, Any], key: str, max_len: int = MAX_TEXT) -> str:
    v = _text(d, key, max_len)
    assert v is not None
    return v


def _num(d: dict[str, Any], key: str, *, required: bool = True, lo: float = -math.inf, hi: float = math.inf) -> Any:
    v = _get(d, key, required)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise ItemError(f"{key}: expected a finite number in [{lo}, {hi}]")
    return float(v)


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = _get(d, key, True)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ItemError(f"{key}: expected a whole number in [{lo}, {hi}]")
    return v


def _uuid(d: dict[str, Any], key: str) -> str:
    try:
        return protocol.check_uuid(d.get(key), key)
    except ProtocolError as e:
        raise ItemError(str(e)) from e


def _maybe_json(v: Any, key: str) -> Any:
    """The unit keeps some JSON as text in SQLite: accept the text or the value itself."""
    if isinstance(v, str):
        if len(v) > MAX_JSON_BYTES:
            raise ItemError(f"{key}: over {MAX_JSON_BYTES} bytes")
        try:
            return json.loads(v)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ItemError(f"{key}: not JSON") from e
    return v


def check_json(v: Any, key: str, depth: int = 0) -> None:
    """What PostgreSQL's jsonb can hold: finite numbers, strings without NUL, bounded nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ItemError(f"{key}: nested deeper than {MAX_JSON_DEPTH}")
    if v is None or isinstance(v, bool | int):
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ItemError(f"{key}: a number is not finite")
    elif isinstance(v, str):
        if "\x00" in v:
            raise ItemError(f"{key}: a string holds NUL")
    elif isinstance(v, list):
        for x in v:
            check_json(x, key, depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            check_json(k, key, depth + 1)
            check_json(x, key, depth + 1)
    else:
        raise ItemError(f"{key}: not JSON")


def _json_doc(v: Any, key: str) -> Jsonb:
    check_json(v, key)
    if len(json.dumps(v, separators=(",", ":"))) > MAX_JSON_BYTES:
        raise ItemError(f"{key}: over {MAX_JSON_BYTES} bytes")
    return Jsonb(v)


def _char_confidences(d: dict[str, Any]) -> Jsonb:
    v = _maybe_json(_get(d, "char_confidences", True), "char_confidences")
    if not isinstance(v, list) or len(v) > MAX_LIST:
        raise ItemError(f"char_confidences: expected a list of at most {MAX_LIST} numbers")
    return Jsonb([_num({"c": x}, "c", lo=0.0, hi=1.0) for x in v])


def _candidates(d: dict[str, Any]) -> Jsonb:
    v = _maybe_json(_get(d, "candidates", True), "candidates")
    if not isinstance(v, list) or len(v) > MAX_LIST:
        raise ItemError(f"candidates: expected a list of at most {MAX_LIST}")
    out = []
    for c in v:
        if isinstance(c, dict):
            c = [c.get("text"), c.get("confidence")]
        if not isinstance(c, list) or len(c) != 2:
            raise ItemError("candidates: each is [text, confidence] or {text, confidence}")
        try:
            out.append([_text({"t": c[0]}, "t"), _num({"c": c[1]}, "c", lo=0.0, hi=1.0)])
        except ItemError as e:
            raise ItemError(f"candidates: {e}") from e
    return Jsonb(out)


_T = 4e9  # latest plausible epoch second (year 2096): bounds every time


def read_row(item: Item, device: str, now: float) -> tuple[Any, ...]:
    """A read as the unit's ``reads`` row (edge/store/migrations.py migration 1), column for column."""
    d = item.data
    return (
        item.uuid,
        device,
        _text(d, "camera_id"),
        _text(d, "text", 32),
        _num(d, "confidence", lo=0.0, hi=1.0),
        _char_confidences(d),
        _candidates(d),
        _text(d, "region", required=False),
        _text(d, "plate_format", required=False),
        *(_int(d, k, -(2**31), 2**31 - 1) for k in ("box_x", "box_y", "box_w", "box_h")),
        _num(d, "first_seen", lo=0, hi=_T),
        _num(d, "last_seen", lo=0, hi=_T),
        _num(d, "best_seen", lo=0, hi=_T),
        _int(d, "frames_seen", 0, 2**31 - 1),
        _text(d, "fix_source"),
        _int(d, "fix_mode", 0, 3),
        _num(d, "lat", required=False, lo=-90, hi=90),
        _num(d, "lon", required=False, lo=-180, hi=180),
        _num(d, "alt_m", required=False),
        _num(d, "fix_time", required=False, lo=0, hi=_T),
        _num(d, "fix_age_s", required=False),
        _num(d, "eph_m", required=False),
        _num(d, "speed_mps", required=False),
        _num(d, "track_deg", required=False),
        _num(d, "stored_at", required=False, lo=0, hi=_T),
        now,
    )


def image_row(item: Item, device: str, now: float) -> tuple[Any, ...]:
    """A crop or scene JPEG (decode_batch checked the bytes, the read UUID and the kind)."""
    d = item.data
    read_uuid, kind = _uuid(d, "read_uuid"), d.get("kind")
    if item.uuid != protocol.image_uuid(read_uuid, str(kind)):
        raise ItemError("uuid: not protocol.image_uuid(read_uuid, kind)")
    jpeg = d.get("jpeg")
    if not isinstance(jpeg, bytes):
        raise ItemError("jpeg: missing")
    return (read_uuid, kind, item.uuid, device, jpeg, now)


def hit_row(item: Item, device: str, now: float) -> tuple[Any, ...]:
    """A hit as the unit's ``hits`` row (migration 4)."""
    d = item.data
    stale = d.get("list_stale")
    if stale not in (True, False, 0, 1):
        raise ItemError("list_stale: expected a boolean")
    return (
        item.uuid,
        device,
        _uuid(d, "read_uuid"),
        _text(d, "camera_id"),
        _text(d, "read_text", 32),
        _num(d, "read_confidence", lo=0.0, hi=1.0),
        _num(d, "seen_at", lo=0, hi=_T),
        _text(d, "list_id"),
        _int(d, "list_version", 0, 2**63 - 1),
        _text(d, "entry_id", 128),
        _text(d, "wanted_plate", 32),
        _text(d, "wanted_state", required=False),
        _text(d, "list_code"),
        _text(d, "reason", MAX_LONG_TEXT),
        _text(d, "instructions", MAX_LONG_TEXT),
        _text(d, "case_number", 128),
        _text(d, "matched_text", 32),
        _text(d, "match_kind"),
        _json_doc(_maybe_json(_get(d, "match_detail", True), "match_detail"), "match_detail"),
        _num(d, "list_age_s"),
        bool(stale),
        _num(d, "created_at", lo=0, hi=_T),
        _num(d, "published_at", required=False, lo=0, hi=_T),
        now,
        # A manual entry's P6 details (unit migration 8); absent from older units and for signed lists' hits.
        _text(d, "entered_by", MAX_NAME, required=False) or None,
        _text(d, "requesting_officer", MAX_NAME, required=False) or None,
        _text(d, "synopsis", MAX_LONG_TEXT, required=False) or None,
    )


def outcome_row(item: Item, device: str, now: float) -> tuple[Any, ...]:
    """An officer's outcome of a hit as the unit's ``hit_outcomes`` row (migration 4)."""
    d = item.data
    return (
        item.uuid,
        device,
        _uuid(d, "hit_uuid"),
        _text(d, "outcome"),
        _text(d, "officer", MAX_NAME),
        _num(d, "at", lo=0, hi=_T),
        _text(d, "note", MAX_LONG_TEXT, required=False) or "",
        now,
    )


def audit_row(item: Item, device: str, now: float) -> tuple[Any, ...]:
    """An access record entry (edge.access.audit.AuditEntry.to_json()), checked field by field and kept whole as
    jsonb. Its hash and signature are verified per unit by ``hq audit verify``, not here: an entry that does not
    verify is evidence and is kept."""
    from ..access.audit import AuditEntry

    try:
        entry = AuditEntry.from_json(item.data)
    except ValueError as e:  # the message names the field, never its value
        raise ItemError(f"audit entry: {e}") from e
    if entry.uuid != item.uuid:
        raise ItemError("uuid: the item's uuid is not the entry's")
    return (item.uuid, device, _json_doc(entry.to_json(), "data"), now)


def hold_row(item: Item, device: str, now: float) -> tuple[Any, ...]:
    """A hold placed or released on the unit (its ``hold_events`` row, unit migration 7). The unit's holds on its
    own reads only: headquarters applies it to the reads of ``device`` (edge.hq.retention)."""
    d = item.data
    if d.get("uuid", item.uuid) != item.uuid:
        raise ItemError("uuid: the item's uuid is not the event's")
    event = d.get("event")
    if event not in ("hold", "release"):
        raise ItemError("event: expected hold or release")
    hold_uuid, read_uuid = _uuid(d, "hold_uuid"), _uuid(d, "read_uuid")
    case_number = _req_text(d, "case_number", 128)
    reason = _req_text(d, "reason", MAX_LONG_TEXT)
    user = _req_text(d, "user_name", 128)
    if not case_number.strip():
        raise ItemError("case_number: empty")
    if not user.strip():
        raise ItemError("user_name: empty")
    if event == "hold" and not reason.strip():
        raise ItemError("reason: empty (a hold says why the read is kept)")
    at = _num(d, "at", lo=0, hi=_T)
    return (item.uuid, device, hold_uuid, event, read_uuid, case_number, reason, user, at, now)


ROWS: dict[str, Callable[[Item, str, float], tuple[Any, ...]]] = {
    "read": read_row,
    "image": image_row,
    "hit": hit_row,
    "outcome": outcome_row,
    "audit": audit_row,
    "hold": hold_row,
}
_READ_COLS = (
    "uuid, device_id, camera_id, text, confidence, char_confidences, candidates, region, plate_format, box_x, box_y, "
    "box_w, box_h, first_seen, last_seen, best_seen, frames_seen, fix_source, fix_mode, lat, lon, alt_m, fix_time, "
    "fix_age_s, eph_m, speed_mps, track_deg, stored_at, received_at"
)
_HIT_COLS = (
    "uuid, device_id, read_uuid, camera_id, read_text, read_confidence, seen_at, list_id, list_version, entry_id, "
    "wanted_plate, wanted_state, list_code, reason, instructions, case_number, matched_text, match_kind, "
    "match_detail, list_age_s, list_stale, created_at, published_at, received_at, entered_by, requesting_officer, "
    "synopsis"
)


def _insert(table: str, cols: str) -> str:
    n = len(cols.split(","))
    return f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * n)}) ON CONFLICT DO NOTHING"


INSERTS: dict[str, str] = {
    "read": _insert("reads", _READ_COLS),
    "image": _insert("read_images", "read_uuid, kind, uuid, device_id, jpeg, received_at"),
    "hit": _insert("hits", _HIT_COLS),
    "outcome": _insert("hit_outcomes", "uuid, device_id, hit_uuid, outcome, officer, at, note, received_at"),
    "audit": _insert("audit", "uuid, device_id, data, received_at"),
    "hold": _insert(
        "unit_hold_events",
        "uuid, device_id, hold_uuid, event, read_uuid, case_number, reason, user_name, at, received_at",
    ),
}
# Newly stored items by kind; the devices registry has a column for each but "holds" (counted in the batch only).
_COUNTERS = {
    "read": "reads", "image": "images", "hit": "hits", "outcome": "outcomes", "audit": "audit", "hold": "holds"
}  # fmt: skip
# A hold arriving locks the reads it holds, as a hold at headquarters does (edge.hq.evidence): a purge running at
# that moment skips them (FOR UPDATE SKIP LOCKED) or has taken them already.
_LOCK_HELD = "SELECT 1 FROM reads WHERE uuid = ANY(%s) AND device_id = %s ORDER BY uuid FOR SHARE"
_REGISTRY = """
INSERT INTO devices AS d (device_id, first_seen, last_seen, last_batch_at, last_sync, batches,
                          reads, images, hits, outcomes, audit, rejected)
VALUES (%(device)s, %(now)s, %(now)s, %(now)s, %(sync)s, 1, %(reads)s, %(images)s, %(hits)s, %(outcomes)s,
        %(audit)s, %(rejected)s)
ON CONFLICT (device_id) DO UPDATE SET
    last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen),
    last_batch_at = GREATEST(d.last_batch_at, EXCLUDED.last_batch_at),
    last_sync = GREATEST(d.last_sync, EXCLUDED.last_sync),
    batches = d.batches + 1, reads = d.reads + EXCLUDED.reads, images = d.images + EXCLUDED.images,
    hits = d.hits + EXCLUDED.hits, outcomes = d.outcomes + EXCLUDED.outcomes, audit = d.audit + EXCLUDED.audit,
    rejected = d.rejected + EXCLUDED.rejected
RETURNING d.retired_at IS NOT NULL
"""


@dataclass(frozen=True)
class StoreResult:
    ack: Ack
    new: int  # items newly inserted (the others of ``ack.stored`` were there already)
    retired: bool = False  # the device is marked retired (stored all the same)


def store_batch(conn: psycopg.Connection, batch: Batch, now: float) -> StoreResult:
    """Validate and store one decoded batch in one transaction (registry and ``batches`` row included); the Ack.

    Idempotent: items already stored count as stored. psycopg.OperationalError (database away) propagates with
    nothing committed. ``conn`` must be in autocommit mode (schema.connect) and not in a transaction.
    """
    rejected: list[Rejected] = []
    rows: dict[str, list[tuple[str, tuple[Any, ...]]]] = {k: [] for k in protocol.KINDS}
    for item in batch.items:
        try:
            rows[item.kind].append((item.uuid, ROWS[item.kind](item, batch.device, now)))
        except ItemError as e:
            rejected.append(Rejected(item.uuid, f"{item.kind}: {e}"))
    for lst in rows.values():
        lst.sort(key=lambda r: r[0])  # one lock order for every worker: no deadlock between two deliveries
    try:
        new, retired = _store(conn, batch, rows, rejected, now, per_item=False)
    except (psycopg.DataError, psycopg.IntegrityError) as e:
        log.warning("batch %s from %s: the database refused an item (%s); storing item by item", batch.batch_id,
                    batch.device, type(e).__name__)  # fmt: skip
        new, retired = _store(conn, batch, rows, rejected, now, per_item=True)
    refused = {r.uuid for r in rejected}
    stored = tuple(it.uuid for it in batch.items if it.uuid not in refused)
    return StoreResult(Ack(batch.device, batch.batch_id, stored, tuple(rejected), now), new, retired)


def _store(
    conn: psycopg.Connection,
    batch: Batch,
    rows: dict[str, list[tuple[str, tuple[Any, ...]]]],
    rejected: list[Rejected],
    now: float,
    *,
    per_item: bool,
) -> tuple[int, bool]:
    """(items newly inserted, whether the device is retired), all committed in one transaction."""
    counts = dict.fromkeys(_COUNTERS.values(), 0)
    refused: list[Rejected] = []
    with conn.transaction(), conn.cursor() as cur:
        for kind, lst in rows.items():
            if not lst:
                continue
            if kind == "hold":
                cur.execute(_LOCK_HELD, (sorted({r[4] for _, r in lst if r[3] == "hold"}), batch.device))
            if not per_item:
                cur.executemany(INSERTS[kind], [r for _, r in lst])
                counts[_COUNTERS[kind]] += max(0, cur.rowcount)
                continue
            for uid, row in lst:
                try:
                    with conn.transaction():
                        cur.execute(INSERTS[kind], row)
                        counts[_COUNTERS[kind]] += max(0, cur.rowcount)
                except (psycopg.DataError, psycopg.IntegrityError) as e:
                    refused.append(Rejected(uid, f"{kind}: refused by the database ({type(e).__name__})"))
        n_rejected = len(rejected) + len(refused)
        n_new = sum(counts.values())
        cur.execute(
            _REGISTRY,
            {"device": batch.device, "now": now, "sync": None if n_rejected else now, "rejected": n_rejected} | counts,
        )
        got = cur.fetchone()
        retired = bool(got and got[0])
        cur.execute(
            "INSERT INTO batches (batch_id, device_id, received_at, items, stored, new, rejected)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (batch.batch_id, batch.device, now, len(batch.items), len(batch.items) - n_rejected, n_new, n_rejected),
        )
    rejected.extend(refused)
    return n_new, retired


# -- the worker ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestStatus:
    """A worker's state; no plate or position in it."""

    name: str
    subscribed: bool  # connected to the broker with the shared subscription granted
    database: bool  # a working PostgreSQL connection
    batches: int  # batches stored and acknowledged (redeliveries included)
    items_stored: int  # acknowledged as stored (new or already there)
    items_new: int
    items_rejected: int
    malformed: int  # messages refused whole (ProtocolError): nothing stored, no Ack
    connects: int
    fault: str | None
    statuses: int = 0  # unit statuses taken in (newer ones stored, the others already there)
    statuses_refused: int = 0


class IngestWorker:
    """One ingest worker on the shared subscription; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        db_url: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        group: str = protocol.SHARED_GROUP,
        name: str = "hq-ingest-1",
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        receive_maximum: int = 8,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        statuses: bool = False,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"broker port: must be 1..65535, got {port}")
        if not 1 <= receive_maximum <= 65535:
            raise ValueError("receive_maximum: must be 1..65535")
        self.host, self.port, self.name, self.group = host, port, name, group
        self._db_url = db_url
        self._tls = tls_context(ca_file, cert_file, key_file)
        self._username, self._password = username, password
        self._stop = stop if stop is not None else threading.Event()
        self._clock = clock
        self._receive_maximum = receive_maximum
        self._session_expiry = session_expiry_s
        self._keepalive = keepalive_s
        self._connect_timeout = connect_timeout_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._rng = random.Random()
        self._statuses = statuses
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._counts = collections.Counter[str]()
        self._subscribed = False
        self._fault: str | None = None

    # --- any thread ---

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("IngestWorker already started")
        self._thread = threading.Thread(target=self._run, name=f"hq-ingest-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the worker to end (batches not yet stored stay un-PUBACKed: the broker redelivers them)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> IngestStatus:
        with self._lock:
            c = self._counts
            return IngestStatus(
                name=self.name,
                subscribed=self._subscribed,
                database=self._conn is not None,
                batches=c["batches"],
                items_stored=c["stored"],
                items_new=c["new"],
                items_rejected=c["rejected"],
                malformed=c["malformed"],
                connects=c["connects"],
                fault=self._fault,
                statuses=c["statuses"],
                statuses_refused=c["statuses_refused"],
            )

    # --- the worker thread ---

    def _set(self, *, fault: str | None = None, subscribed: bool | None = None, **incr: int) -> None:
        with self._lock:
            changed = fault != self._fault
            self._fault = fault
            if subscribed is not None:
                self._subscribed = subscribed
            self._counts.update(incr)
        if fault is not None and changed:
            log.warning("hq ingest %s: %s", self.name, fault)

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    productive = self._attempt()
                except Exception as e:  # a bug or a paho surprise must not end ingest for good
                    log.exception("hq ingest %s: unexpected error", self.name)
                    self._set(fault=f"unexpected error: {type(e).__name__}")
                    productive = False
                attempt = 0 if productive else attempt + 1
                if not self._stop.is_set():
                    self._stop.wait(backoff_delay(max(0, attempt - 1), *self._backoff, self._rng))
        finally:
            self._close_db()

    def _attempt(self) -> bool:
        # Filled from the first packet on: the broker redelivers un-PUBACKed batches right after CONNACK.
        pending: collections.deque[mqtt.MQTTMessage] = collections.deque()
        client = self._connect(pending)
        if client is None:
            return False
        try:
            return self._serve(client, pending)
        finally:
            with self._lock:
                self._subscribed = False
            try:
                client.disconnect()
            except Exception:
                log.debug("disconnect of a dead MQTT connection", exc_info=True)

    def _connect(self, pending: collections.deque[mqtt.MQTTMessage]) -> mqtt.Client | None:
        """Connected with a persistent session and the shared subscription granted, or None (fault recorded)."""
        state: dict[str, Any] = {}

        def on_connect(c: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
            state["connack"] = rc
            if not rc.is_failure:
                topics = [(protocol.ingest_subscription(self.group), 1)]
                c.subscribe(topics + ([(STATUS_TOPICS, 0)] if self._statuses else []))

        def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode], p: Properties | None) -> None:
            state["suback"] = rcs

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"alpr-hq-{self.name}", protocol=mqtt.MQTTv5, manual_ack=True
        )
        client.connect_timeout = self._connect_timeout
        if self._username:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = lambda c, u, msg: pending.append(msg)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry
        props.ReceiveMaximum = self._receive_maximum
        where = f"broker {self.host}:{self.port}"
        try:
            client.connect(self.host, self.port, keepalive=self._keepalive, clean_start=False, properties=props)
        except (OSError, ssl.SSLError, ValueError) as e:
            self._set(fault=f"cannot reach {where}: {e}")
            return None
        deadline = time.monotonic() + self._connect_timeout
        while "suback" not in state and time.monotonic() < deadline and not self._stop.is_set():
            connack = state.get("connack")
            if client.loop(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS or (connack is not None and connack.is_failure):
                break
        rcs: list[ReasonCode] | None = state.get("suback")
        if rcs is None or rcs[0].is_failure:
            connack = state.get("connack")
            if connack is not None and connack.is_failure:
                self._set(fault=f"{where} refused the connection: {connack}")
            elif rcs is not None:
                self._set(fault=f"{where} refused the subscription: {rcs[0]}")
            else:
                self._set(fault=f"{where} did not accept us within {self._connect_timeout}s")
            try:
                client.disconnect()
            except Exception:
                log.debug("disconnect after a failed connect", exc_info=True)
            return None
        if len(rcs) > 1 and rcs[1].is_failure:
            log.warning("hq ingest %s: %s refused the subscription to %s (%s): no unit statuses", self.name, where,
                        STATUS_TOPICS, rcs[1])  # fmt: skip
        self._set(subscribed=True, connects=1)
        log.info("hq ingest %s: subscribed to %s on %s", self.name, protocol.ingest_subscription(self.group), where)
        return client

    def _serve(self, client: mqtt.Client, pending: collections.deque[mqtt.MQTTMessage]) -> bool:
        productive = False
        retry_at = 0.0
        db_attempt = 0
        while not self._stop.is_set():
            rc = client.loop(0.0 if pending and time.monotonic() >= retry_at else POLL_S)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._set(fault=f"connection to broker {self.host}:{self.port} lost ({mqtt.error_string(rc)})")
                return productive
            if not pending or time.monotonic() < retry_at:
                continue
            if self._handle(client, pending[0]):
                pending.popleft()
                productive = True
                db_attempt = 0
            else:  # the database is away: keep the batch (no PUBACK) and try again later
                retry_at = time.monotonic() + backoff_delay(db_attempt, *self._backoff, self._rng)
                db_attempt += 1
        return productive

    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = schema.connect(self._db_url, self._connect_timeout)
            version = schema.current_version(conn)
            if version != len(schema.MIGRATIONS):
                conn.close()
                raise psycopg.OperationalError(
                    f"database schema version {version}, this worker needs {len(schema.MIGRATIONS)}: "
                    "run alpr-edge hq migrate"
                )
            with self._lock:
                self._conn = conn
        return self._conn

    def _close_db(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                log.debug("closing a dead database connection", exc_info=True)

    def _handle(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> bool:
        """Store one message and acknowledge it; False when the database is unavailable (nothing acknowledged)."""
        if msg.topic.endswith("/status"):
            return self._handle_status(client, msg)
        try:
            batch = protocol.decode_batch(bytes(msg.payload), msg.topic)
        except Exception as e:  # ProtocolError, or a payload that surprised the decoder: refused all the same
            try:
                device = protocol.device_of(msg.topic)
            except Exception:
                device = "? (not an alpr/<device>/up topic)"
            why = e if isinstance(e, ProtocolError) else f"undecodable ({type(e).__name__})"
            log.warning("hq ingest %s: batch from device %s refused, nothing stored: %s", self.name, device, why)
            self._set(fault=self._fault, malformed=1)
            client.ack(msg.mid, msg.qos)
            return True
        try:
            result = store_batch(self._db(), batch, self._clock())
        except psycopg.errors.TransactionRollback as e:  # deadlock or serialization: just try again
            log.info("hq ingest %s: batch %s retried (%s)", self.name, batch.batch_id, type(e).__name__)
            return False
        except psycopg.Error as e:
            self._close_db()
            self._set(fault=f"database unavailable, batches wait un-acknowledged: {type(e).__name__}: {e}")
            return False
        ack = result.ack
        client.publish(protocol.ack_topic(batch.device), protocol.encode_ack(ack), qos=1)
        client.ack(msg.mid, msg.qos)  # after the commit and the Ack: a crash before it means redelivery
        self._set(fault=None, batches=1, stored=len(ack.stored), new=result.new, rejected=len(ack.rejected))
        if ack.rejected:
            log.warning(
                "hq ingest %s: batch %s from %s: %d item(s) rejected, first: %s",
                self.name, batch.batch_id, batch.device, len(ack.rejected), ack.rejected[0].reason,
            )  # fmt: skip
        if result.retired:
            log.warning(
                "hq ingest %s: batch %s from retired device %s: %d item(s) stored all the same; reinstate it "
                "('hq devices reinstate') if it is back in service, else find out why it still sends",
                self.name, batch.batch_id, batch.device, len(ack.stored),
            )  # fmt: skip
        log.debug("hq ingest %s: batch %s from %s: %d stored (%d new)", self.name, batch.batch_id, batch.device,
                  len(ack.stored), result.new)  # fmt: skip
        return True

    def _handle_status(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> bool:
        """A unit's status: checked, kept if newer, PUBACKed; False when the database is unavailable."""
        now = self._clock()
        try:
            st = device_status.decode_status(bytes(msg.payload), msg.topic, now)
        except device_status.StatusError as e:
            log.warning("hq ingest %s: status from device %s refused, nothing stored: %s", self.name, e.device,
                        e.reason)  # fmt: skip
            self._set(fault=self._fault, statuses_refused=1)
            client.ack(msg.mid, msg.qos)
            return True
        try:
            newer = device_status.store_status(self._db(), st, now)
            retired = newer and device_status.retired_at(self._db(), st.device) is not None
        except psycopg.errors.TransactionRollback:
            return False
        except psycopg.Error as e:
            self._close_db()
            self._set(fault=f"database unavailable, statuses wait un-acknowledged: {type(e).__name__}: {e}")
            return False
        client.ack(msg.mid, msg.qos)
        self._set(fault=None, statuses=1)
        if retired:  # only a newer status: the retained last words are delivered again at every reconnect
            log.warning("hq ingest %s: new status from retired device %s stored all the same (level %s)", self.name,
                        st.device, st.level)  # fmt: skip
        log.debug("hq ingest %s: status of %s (%s) %s", self.name, st.device, st.level, "stored" if newer else "old")
        return True


def start_workers(count: int, base_name: str, stop: threading.Event, **kwargs: Any) -> Sequence[IngestWorker]:
    """``count`` workers named ``<base_name>-<i>`` sharing ``stop``, started."""
    workers = [IngestWorker(name=f"{base_name}-{i}", stop=stop, **kwargs) for i in range(1, count + 1)]
    for w in workers:
        w.start()
    return workers
