"""Alerts: a stored read that hits a hot list becomes an Alert at once, for the officer in the car (the local alert
page) and the communications center (MQTT), with the evidence to verify it (P7) and a recorded outcome (P8).

AlertService stores each hit (table ``hits``, one short transaction per read) and then hands the Alert to every
sink. Sinks must not block: each one queues the alert and returns (MqttAlertPublisher does); the service calls
them one after another in the caller's thread, so a slow sink would delay the others and the pipeline. A sink that
raises is logged and counted and the others still get the alert.

Thread safety: the service serialises its use of the connection with a lock, because ``mark_published`` is called
from a publisher's thread while ``raise_alerts`` runs in the recorder's. Give it a connection of its own.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .gps import Fix
from .hotlist.entry import Hit, HotEntry, ListInfo, Substitution
from .store.db import Connection, DBError
from .store.errors import StoreError
from .store.reads import check_uuid, validate_fix
from .vision.tracker import Read

log = logging.getLogger(__name__)

# What an officer can record after checking a hit (P8).
OUTCOMES = (
    "confirmed",
    "misread",
    "not_the_vehicle",
    "no_longer_wanted",
    "arrest",
    "vehicle_recovered",
    "unable_to_locate",
    "other",
)


@dataclass(frozen=True)
class Alert:
    """Everything the officer needs to verify a hit before acting on it."""

    uuid: str  # the hit's uuid
    read_uuid: str
    unit_id: str
    camera_id: str
    read_text: str
    read_confidence: float
    seen_at: float  # UTC epoch seconds: the read's best_seen
    fix: Fix
    hit: Hit  # the wanted entry, how it matched
    list_info: ListInfo
    list_age_s: float  # now - list_info.created when raised
    list_stale: bool  # older than the freshness limit (24 h): shown as "hot list stale"
    crop_jpeg: bytes
    scene_jpeg: bytes | None  # None when the disk was too full to keep scenes
    raised_at: float  # UTC epoch seconds


AlertSink = Callable[[Alert], None]

MAX_OFFICER = 64
MAX_NOTE = 2000
SLOW_SINK_S = 0.05  # a sink taking longer than this is logged: sinks must queue, not work
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline


class UnknownHitError(ValueError):
    """An outcome was recorded for a hit uuid that is not stored."""


@dataclass(frozen=True)
class HitRecord:
    """A stored hit (without images: those stay with the read while it is retained)."""

    uuid: str
    read_uuid: str
    camera_id: str
    read_text: str
    read_confidence: float
    seen_at: float
    list_id: str
    list_version: int
    entry_id: str
    wanted_plate: str
    wanted_state: str | None
    list_code: str
    reason: str
    instructions: str
    case_number: str
    matched_text: str
    match_kind: str
    explanation: str
    candidate_rank: int
    score: float
    substitutions: tuple[Substitution, ...]
    list_age_s: float
    list_stale: bool
    created_at: float
    published_at: float | None  # None until the broker acknowledged it
    last_outcome: str | None  # the newest recorded outcome, if any
    # A manual entry's P6 details (None for a signed list's entry, and for hits stored before migration 8).
    entered_by: str | None = None
    requesting_officer: str | None = None
    synopsis: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What an officer recorded about a hit (P8); a hit may have several (confirmed, then arrest)."""

    uuid: str
    hit_uuid: str
    outcome: str
    officer: str
    at: float
    note: str


@dataclass(frozen=True)
class AlertStatus:
    raised: int
    sink_failures: int  # sink calls that raised
    store_failures: int  # raise_alerts calls whose hits could not be stored (the alerts still went out)
    fault: str | None  # the last store failure, cleared by the next successful store


def _finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}: must be a finite number")
    return float(value)


def _text(value: object, field: str, limit: int, *, required: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string")
    text = value.strip()
    if required and not text:
        raise ValueError(f"{field}: must not be empty")
    if len(text) > limit:
        raise ValueError(f"{field}: at most {limit} characters")
    if _CONTROL.search(text) or (field == "officer" and ("\n" in text or "\t" in text)):
        raise ValueError(f"{field}: must not contain control characters")
    return text


def _detail(hit: Hit) -> str:
    return json.dumps(
        {
            "explanation": hit.explain(),
            "candidate_rank": hit.candidate_rank,
            "score": hit.score,
            "substitutions": [
                {
                    "position": s.position,
                    "read_char": s.read_char,
                    "wanted_char": s.wanted_char,
                    "confidence": s.confidence,
                }
                for s in hit.substitutions
            ],
        }
    )


_HIT_COLUMNS = (
    "uuid, read_uuid, camera_id, read_text, read_confidence, seen_at, list_id, list_version, entry_id, "
    "wanted_plate, wanted_state, list_code, reason, instructions, case_number, matched_text, match_kind, "
    "match_detail, list_age_s, list_stale, created_at, published_at"
)
_INSERT_HIT = (
    f"INSERT INTO hits ({_HIT_COLUMNS}, entered_by, requesting_officer, synopsis) "
    f"VALUES ({', '.join('?' * (len(_HIT_COLUMNS.split(',')) + 3))})"
)
_SELECT_HITS = (
    f"SELECT {', '.join('h.' + c.strip() for c in _HIT_COLUMNS.split(','))}, "
    "h.entered_by, h.requesting_officer, h.synopsis, "
    "(SELECT o.outcome FROM hit_outcomes o WHERE o.hit_uuid = h.uuid ORDER BY o.at DESC, o.rowid DESC LIMIT 1) "
    "FROM hits h"
)


def _row_to_hit(row: Any) -> HitRecord:
    (uuid, read_uuid, camera_id, read_text, read_conf, seen_at, list_id, list_version, entry_id, wanted_plate,
     wanted_state, list_code, reason, instructions, case_number, matched_text, match_kind, detail, list_age_s,
     list_stale, created_at, published_at, entered_by, requesting_officer, synopsis, last_outcome) = row  # fmt: skip
    d = json.loads(detail)
    return HitRecord(
        uuid=uuid,
        read_uuid=read_uuid,
        camera_id=camera_id,
        read_text=read_text,
        read_confidence=read_conf,
        seen_at=seen_at,
        list_id=list_id,
        list_version=list_version,
        entry_id=entry_id,
        wanted_plate=wanted_plate,
        wanted_state=wanted_state,
        list_code=list_code,
        reason=reason,
        instructions=instructions,
        case_number=case_number,
        matched_text=matched_text,
        match_kind=match_kind,
        explanation=str(d.get("explanation", "")),
        candidate_rank=int(d.get("candidate_rank", 0)),
        score=float(d.get("score", 0.0)),
        substitutions=tuple(
            Substitution(int(s["position"]), str(s["read_char"]), str(s["wanted_char"]), float(s["confidence"]))
            for s in d.get("substitutions", ())
        ),
        list_age_s=list_age_s,
        list_stale=bool(list_stale),
        created_at=created_at,
        published_at=published_at,
        last_outcome=last_outcome,
        entered_by=entered_by,
        requesting_officer=requesting_officer,
        synopsis=synopsis,
    )


class HitStore:
    """The ``hits`` and ``hit_outcomes`` tables. Thread-safe: one lock around every use of the connection."""

    def __init__(self, conn: Connection, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = threading.Lock()

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> int:
        """Run ``statements`` in one BEGIN IMMEDIATE transaction; returns the rows the last one changed."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                changed = 0
                for sql, params in statements:
                    changed = c.execute(sql, params).rowcount
                c.execute("COMMIT")
                return changed
            except DBError as e:
                try:
                    if c.in_transaction:
                        c.rollback()
                except DBError:
                    log.error("rollback of the hits transaction failed", exc_info=True)
                raise StoreError(f"cannot store hits: {e}") from e

    def _rows(self, sql: str, params: Sequence[object]) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except DBError as e:
                raise StoreError(f"hits query failed: {e}") from e

    def add(self, alerts: Sequence[Alert]) -> None:
        """Store the hits behind ``alerts`` in one transaction (all or none)."""
        rows = []
        for a in alerts:
            e = a.hit.entry
            rows.append(
                (
                    _INSERT_HIT,
                    (
                        a.uuid,
                        a.read_uuid,
                        a.camera_id,
                        a.read_text,
                        float(a.read_confidence),
                        float(a.seen_at),
                        e.list_id,
                        a.hit.list_version,
                        e.entry_id,
                        e.plate,
                        e.state,
                        e.list_code,
                        e.reason,
                        e.instructions,
                        e.case_number,
                        a.hit.matched_text,
                        a.hit.kind,
                        _detail(a.hit),
                        float(a.list_age_s),
                        int(a.list_stale),
                        float(a.raised_at),
                        None,
                        e.entered_by or None,  # the manual entry's P6 details; NULL for a signed list's
                        e.requesting_officer or None,
                        e.synopsis or None,
                    ),
                )
            )
        self._write(rows)

    def mark_published(self, hit_uuid: str, at: float | None = None) -> bool:
        """Record when the broker acknowledged a hit's alert; only the first acknowledgement counts."""
        check_uuid(hit_uuid, "hit_uuid")
        t = self._clock() if at is None else _finite(at, "at")
        sql = "UPDATE hits SET published_at = ? WHERE uuid = ? AND published_at IS NULL"
        return self._write([(sql, (t, hit_uuid))]) == 1

    def record_outcome(self, hit_uuid: str, outcome: str, officer: str, note: str = "") -> Outcome:
        """Store what an officer found (P8). Raises ValueError naming the bad field, UnknownHitError, StoreError."""
        check_uuid(hit_uuid, "hit_uuid")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: must be one of {', '.join(OUTCOMES)}")
        officer = _text(officer, "officer", MAX_OFFICER, required=True)
        note = _text(note, "note", MAX_NOTE, required=False)
        rec = Outcome(str(uuidlib.uuid4()), hit_uuid, outcome, officer, self._clock(), note)
        # INSERT ... SELECT: the existence check and the insert are one statement inside the write lock.
        sql = (
            "INSERT INTO hit_outcomes (uuid, hit_uuid, outcome, officer, at, note) "
            "SELECT ?, uuid, ?, ?, ?, ? FROM hits WHERE uuid = ?"
        )
        if self._write([(sql, (rec.uuid, outcome, officer, rec.at, note, hit_uuid))]) != 1:
            raise UnknownHitError(f"hit_uuid: no hit {hit_uuid} is stored")
        return rec

    def outcomes(self, hit_uuid: str) -> list[Outcome]:
        """The outcomes recorded for a hit, oldest first."""
        check_uuid(hit_uuid, "hit_uuid")
        rows = self._rows(
            "SELECT uuid, hit_uuid, outcome, officer, at, note FROM hit_outcomes WHERE hit_uuid = ? ORDER BY at, rowid",
            (hit_uuid,),
        )
        return [Outcome(*r) for r in rows]

    def get(self, hit_uuid: str) -> HitRecord | None:
        check_uuid(hit_uuid, "hit_uuid")
        rows = self._rows(f"{_SELECT_HITS} WHERE h.uuid = ?", (hit_uuid,))
        return _row_to_hit(rows[0]) if rows else None

    def list_hits(self, limit: int = 50, since: float | None = None) -> list[HitRecord]:
        """Hits newest first (by when they were raised), optionally from ``since`` (UTC epoch seconds) on."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
            raise ValueError("limit: must be an integer in 1..1000000")
        if since is None:
            rows = self._rows(f"{_SELECT_HITS} ORDER BY h.created_at DESC, h.rowid DESC LIMIT ?", (limit,))
        else:
            rows = self._rows(
                f"{_SELECT_HITS} WHERE h.created_at >= ? ORDER BY h.created_at DESC, h.rowid DESC LIMIT ?",
                (_finite(since, "since"), limit),
            )
        return [_row_to_hit(r) for r in rows]


def _sink_name(sink: AlertSink) -> str:
    return str(getattr(sink, "__qualname__", None) or type(sink).__name__)


class AlertService:
    """Turns the hits of a stored read into Alerts: stored, then handed to every sink (which must not block)."""

    def __init__(
        self,
        conn: Connection,
        unit_id: str,
        sinks: Sequence[AlertSink],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(unit_id, str) or not unit_id:
            raise ValueError("unit_id: must be a non-empty string")
        self.unit_id = unit_id
        self._sinks = tuple(sinks)
        self._clock = clock
        self._store = HitStore(conn, clock)
        self._lock = threading.Lock()
        self._raised = 0
        self._sink_failures = 0
        self._store_failures = 0
        self._fault: str | None = None

    @property
    def store(self) -> HitStore:
        return self._store

    def raise_alerts(
        self,
        read: Read,
        fix: Fix,
        hits: Sequence[Hit],
        lists: Mapping[str, ListInfo],
        stale_after_s: float,
        scene_stored: bool,
        *,
        lists_stale: bool = False,
    ) -> list[Alert]:
        """One Alert per hit of ``read`` (already stored, with ``fix``): stored, then handed to every sink.

        ``lists_stale``: the unit's general lists are past their freshness limit, so every alert says "hot list
        stale" (P4), also one from a fresh manual entry.

        ``lists`` holds the ListInfo of each hit's list (by list id): the list's age and staleness come from its
        signed creation time. Bad input raises ValueError before anything is stored or sent. If the hits cannot be
        stored, the alerts still go to the sinks (an officer is never kept from a hit by a database fault) and then
        StoreError is raised.
        """
        check_uuid(read.uuid, "read.uuid")
        validate_fix(fix)
        if _finite(stale_after_s, "stale_after_s") <= 0:
            raise ValueError("stale_after_s: must be positive")
        now = self._clock()
        alerts: list[Alert] = []
        for i, hit in enumerate(hits):
            if not isinstance(hit, Hit) or not isinstance(hit.entry, HotEntry):
                raise ValueError(f"hits[{i}]: not a Hit")
            info = lists.get(hit.entry.list_id)
            if not isinstance(info, ListInfo):
                raise ValueError(f"hits[{i}]: no ListInfo for list {hit.entry.list_id!r}")
            created = _finite(info.created, f"lists[{info.list_id!r}].created")
            if info.version != hit.list_version:
                log.warning(
                    "hit on list %s version %d raised with ListInfo of version %d: age is the latter's",
                    info.list_id,
                    hit.list_version,
                    info.version,
                )
            age = max(0.0, now - created)  # a list "from the future" means our clock is behind: age unknown, 0
            alerts.append(
                Alert(
                    uuid=str(uuidlib.uuid4()),
                    read_uuid=read.uuid,
                    unit_id=self.unit_id,
                    camera_id=read.camera_id,
                    read_text=read.text,
                    read_confidence=float(read.confidence),
                    seen_at=float(read.best_seen),
                    fix=fix,
                    hit=hit,
                    list_info=info,
                    list_age_s=age,
                    list_stale=lists_stale or age > stale_after_s,
                    crop_jpeg=read.crop_jpeg,
                    scene_jpeg=read.scene_jpeg if scene_stored else None,
                    raised_at=now,
                )
            )
        if not alerts:
            return alerts
        stored: StoreError | None = None
        try:
            self._store.add(alerts)
        except StoreError as e:
            stored = e
            log.error("%d alert(s) of read %s could not be stored (sent anyway): %s", len(alerts), read.uuid, e)
        with self._lock:
            self._raised += len(alerts)
            if stored is None:
                self._fault = None
            else:
                self._store_failures += 1
                self._fault = str(stored)
        for alert in alerts:
            self._deliver(alert)
        log.info("raised %d alert(s) for read %s", len(alerts), read.uuid)
        if stored is not None:
            raise stored
        return alerts

    def _deliver(self, alert: Alert) -> None:
        for sink in self._sinks:
            start = time.monotonic()
            try:
                sink(alert)
            except Exception as e:  # a sink's fault must not keep the alert from the others
                with self._lock:
                    self._sink_failures += 1
                # the message may quote the plate: its text only at DEBUG
                log.error("alert sink %s failed on alert %s: %s", _sink_name(sink), alert.uuid, type(e).__name__)
                log.debug("alert sink %s failure", _sink_name(sink), exc_info=True)
            took = time.monotonic() - start
            if took > SLOW_SINK_S:
                log.warning("alert sink %s took %.0f ms: sinks must queue, not block", _sink_name(sink), took * 1e3)

    def mark_published(self, hit_uuid: str, at: float | None = None) -> None:
        """For a publisher's ``on_published``: record when the broker acknowledged the alert. Never raises."""
        try:
            self._store.mark_published(hit_uuid, at)
        except (StoreError, ValueError) as e:
            log.error("cannot record publication of alert %s: %s", hit_uuid, e)

    def record_outcome(self, hit_uuid: str, outcome: str, officer: str, note: str = "") -> Outcome:
        """Store an officer's outcome for a hit; see HitStore.record_outcome."""
        return self._store.record_outcome(hit_uuid, outcome, officer, note)

    def list_hits(self, limit: int = 50, since: float | None = None) -> list[HitRecord]:
        return self._store.list_hits(limit, since)

    def outcomes(self, hit_uuid: str) -> list[Outcome]:
        return self._store.outcomes(hit_uuid)

    def status(self) -> AlertStatus:
        with self._lock:
            return AlertStatus(self._raised, self._sink_failures, self._store_failures, self._fault)
