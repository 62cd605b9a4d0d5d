"""Manual hot list entries (P5, P6): entered by a member, in force only once an ALPR administrator approves them.

Every change (added, approved, rejected, removed, expired) is a row in ``hotlist_changes`` with its actor, time
and details, written in the same transaction as the change itself, so the record and the entry never disagree.
When an entry takes effect, ``recheck_recent_reads`` checks the reads of the last hours against it.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..store.db import Connection, DBError
from ..store.errors import StoreError
from ..store.reads import ReadStore, StoredRead, check_uuid
from .entry import LIST_CODES, Hit, HotEntry

log = logging.getLogger(__name__)

LIST_ID = "manual"
ADMINISTRATOR = "administrator"
STATUSES = ("pending", "active", "rejected", "removed", "expired")
SYSTEM_ACTOR = "system"  # the actor of changes nobody made by hand (expiry)

ADDED, APPROVED, REJECTED, REMOVED, EXPIRED = (
    "entry-added",
    "entry-approved",
    "entry-rejected",
    "entry-removed",
    "entry-expired",
)
ACTIONS = (ADDED, APPROVED, REJECTED, REMOVED, EXPIRED)

MIN_KNOWN_CHARS = 3  # fewer known characters would match a large share of all reads
MAX_PLATE_LEN = 16
MIN_SYNOPSIS = 10
MAX_NAME = 64
MAX_CASE_NUMBER = 64
MAX_REASON = 200
MAX_INSTRUCTIONS = 500
MAX_SYNOPSIS = 2000
MAX_VEHICLE = 500
MAX_WHY = 500
MAX_RECHECK_HOURS = 720.0
RECHECK_PAGE = 2000
MAX_RECHECK_PAGE = 1_000_000  # ReadStore.list_reads' limit

_STRIP = str.maketrans("", "", " -.")
_STARS = re.compile(r"\*{2,}")
_PLATE = re.compile(r"[A-Z0-9*?]+")
_STATE = re.compile(r"[A-Z0-9]{1,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_COLUMNS = (
    "entry_id, plate_pattern, state, list_code, reason, instructions, vehicle_description, case_number, synopsis, "
    "entered_by, requesting_officer, entered_at, expires_at, status, approved_by, approved_at"
)


class EntryNotFoundError(LookupError):
    """No manual entry has this id."""


class EntryStateError(ValueError):
    """The entry's status does not allow this change (approving a rejected entry, removing a removed one, ...)."""


@dataclass(frozen=True)
class ManualEntry:
    """One row of ``hotlist_manual_entries``: the entry and who entered and approved it."""

    entry_id: str
    plate_pattern: str
    state: str | None
    list_code: str
    reason: str
    instructions: str
    vehicle_description: str | None
    case_number: str
    synopsis: str
    entered_by: str
    requesting_officer: str
    entered_at: float
    expires_at: float | None
    status: str
    approved_by: str | None
    approved_at: float | None

    def hot_entry(self) -> HotEntry:
        """The entry as the matcher sees it (list ``manual``)."""
        return HotEntry(
            entry_id=self.entry_id,
            list_id=LIST_ID,
            plate=self.plate_pattern,
            state=self.state,
            list_code=self.list_code,
            reason=self.reason,
            case_number=self.case_number,
            entered=self.entered_at,
            expires=self.expires_at,
            instructions=self.instructions,
            vehicle_description=self.vehicle_description or "",
            entered_by=self.entered_by,
            requesting_officer=self.requesting_officer,
            synopsis=self.synopsis,
        )


@dataclass(frozen=True)
class Change:
    """One row of ``hotlist_changes`` about a manual entry."""

    seq: int
    at: float
    actor: str
    action: str
    entry_id: str | None
    details: Mapping[str, Any]


# --- validation: everything here comes from a person at a keyboard --------------------------------------------


def normalize_plate(plate: object) -> str:
    """The plate or partial plate in A-Z0-9 with ``*`` (any run) and ``?`` (one character); ValueError naming
    ``plate`` when it cannot be matched."""
    if not isinstance(plate, str):
        raise ValueError("plate: required (a plate or partial plate)")
    norm = plate.strip().upper().translate(_STRIP)
    norm = _STARS.sub("*", norm)
    if not norm:
        raise ValueError("plate: required (a plate or partial plate)")
    if len(norm) > MAX_PLATE_LEN:
        raise ValueError(f"plate: longer than {MAX_PLATE_LEN} characters")
    if not _PLATE.fullmatch(norm):
        bad = "".join(sorted({c for c in norm if not _PLATE.fullmatch(c)}))
        raise ValueError(f"plate: only A-Z, 0-9, * (any run) and ? (one character) are allowed, not {bad!r}")
    known = sum(c not in "*?" for c in norm)
    if known < MIN_KNOWN_CHARS:
        raise ValueError(f"plate: at least {MIN_KNOWN_CHARS} known characters are needed, got {known}")
    return norm


def _text(value: object, field: str, *, low: int = 1, high: int, multiline: bool = False) -> str:
    """A stripped string of low..high characters without control characters (newlines only where allowed)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be text")
    text = value.strip()
    if len(text) < low:
        raise ValueError(f"{field}: required" if low <= 1 else f"{field}: at least {low} characters are required")
    if len(text) > high:
        raise ValueError(f"{field}: at most {high} characters")
    probe = text.replace("\n", " ").replace("\t", " ") if multiline else text
    if _CONTROL.search(probe):
        raise ValueError(f"{field}: control characters are not allowed")
    return text


def _name(value: object, field: str) -> str:
    return _text(value, field, high=MAX_NAME)


def _time(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}: must be a finite time (UTC epoch seconds)")
    return float(value)


def _same_person(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


# --- the entries ----------------------------------------------------------------------------------------------


class ManualEntries:
    """The manual entries of one unit's database, with the approval gate and the change record.

    ``clock`` gives the time of every change (UTC epoch seconds). Roles are the caller's word: it passes the role of
    the logged-in user it authenticated.
    """

    def __init__(self, conn: Connection, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock

    # --- changes

    def add(
        self,
        plate_pattern: str,
        list_code: str,
        reason: str,
        instructions: str,
        case_number: str,
        synopsis: str,
        entered_by: str,
        requesting_officer: str,
        state: str | None = None,
        vehicle_description: str | None = None,
        expires_at: float | None = None,
    ) -> str:
        """Record a new entry, pending approval; returns its id. ValueError names the first bad field.

        A vehicle description never stands alone: reads are matched by plate, so at least a partial plate with
        MIN_KNOWN_CHARS known characters is required with it.
        """
        now = self._clock()
        vehicle = _text(vehicle_description, "vehicle_description", low=0, high=MAX_VEHICLE) or None
        if vehicle is not None and not (isinstance(plate_pattern, str) and plate_pattern.strip()):
            raise ValueError(
                f"plate: a vehicle description needs at least a partial plate ({MIN_KNOWN_CHARS} known characters)"
            )
        plate = normalize_plate(plate_pattern)
        code = _text(list_code, "list_code", high=32).upper()
        if code not in LIST_CODES:
            raise ValueError(f"list_code: must be one of {', '.join(LIST_CODES)}")
        values = {
            "reason": _text(reason, "reason", high=MAX_REASON),
            "instructions": _text(instructions, "instructions", low=0, high=MAX_INSTRUCTIONS),
            "case_number": _text(case_number, "case_number", high=MAX_CASE_NUMBER),
            "synopsis": _text(synopsis, "synopsis", low=MIN_SYNOPSIS, high=MAX_SYNOPSIS, multiline=True),
            "entered_by": _name(entered_by, "entered_by"),
            "requesting_officer": _name(requesting_officer, "requesting_officer"),
        }
        st = _text(state, "state", low=0, high=3).upper() or None
        if st is not None and not _STATE.fullmatch(st):
            raise ValueError("state: 1 to 3 letters or digits (a state or country code such as OR, D, BR)")
        expires: float | None = None
        if expires_at is not None:
            expires = _time(expires_at, "expires_at")
            if expires <= now:
                raise ValueError("expires_at: must be in the future")
        entry_id = str(uuid.uuid4())
        row = ManualEntry(
            entry_id=entry_id,
            plate_pattern=plate,
            state=st,
            list_code=code,
            reason=values["reason"],
            instructions=values["instructions"],
            vehicle_description=vehicle,
            case_number=values["case_number"],
            synopsis=values["synopsis"],
            entered_by=values["entered_by"],
            requesting_officer=values["requesting_officer"],
            entered_at=now,
            expires_at=expires,
            status="pending",
            approved_by=None,
            approved_at=None,
        )
        details = {
            k: v for k, v in _row_values(row).items() if k not in ("entry_id", "status", "approved_by", "approved_at")
        }
        with self._write() as c:
            c.execute(
                f"INSERT INTO hotlist_manual_entries ({_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                tuple(_row_values(row).values()),
            )
            self._record(now, row.entered_by, ADDED, entry_id, details)
        log.info("manual hot list entry %s added by %s, pending approval", entry_id, row.entered_by)
        return entry_id

    def approve(self, entry_id: str, administrator: str, *, role: str) -> HotEntry:
        """Put a pending entry in force; returns it as the matcher sees it (check recent reads against it).

        PermissionError: not an administrator, or the member who entered it (four eyes, P6).
        EntryStateError: not pending, or expired meanwhile (then it is marked expired).
        """
        admin = _name(administrator, "administrator")
        _require_admin(role, admin, "approve")
        now = self._clock()
        with self._write() as c:
            e = self._get_for_update(entry_id)
            if _same_person(e.entered_by, admin):
                raise PermissionError(
                    f"{admin} entered this entry and cannot also approve it: another administrator must (four eyes)"
                )
            if e.status != "pending":
                raise EntryStateError(f"entry {entry_id} is {e.status}; only a pending entry can be approved")
            if e.expires_at is not None and e.expires_at <= now:
                self._expire(c, e, now)
                expired = True
            else:
                c.execute(
                    "UPDATE hotlist_manual_entries SET status = 'active', approved_by = ?, approved_at = ? "
                    "WHERE entry_id = ? AND status = 'pending'",
                    (admin, now, e.entry_id),
                )
                self._record(now, admin, APPROVED, e.entry_id, {"role": role})
                expired = False
        if expired:
            raise EntryStateError(f"entry {entry_id} expired before it was approved")
        log.info("manual hot list entry %s approved by %s: in force", entry_id, admin)
        return self._require(entry_id).hot_entry()

    def reject(self, entry_id: str, administrator: str, why: str, *, role: str) -> None:
        """Refuse a pending entry; it never takes effect. PermissionError unless an administrator."""
        admin = _name(administrator, "administrator")
        reason = _text(why, "why", high=MAX_WHY)
        _require_admin(role, admin, "reject")
        self._close(entry_id, admin, role, reason, ("pending",), "rejected", REJECTED)

    def remove(self, entry_id: str, actor: str, why: str, *, role: str) -> None:
        """Take a pending or active entry out. An administrator may remove any entry, the member who entered it
        only their own; PermissionError otherwise."""
        who = _name(actor, "actor")
        reason = _text(why, "why", high=MAX_WHY)
        e = self._require(entry_id)
        if role != ADMINISTRATOR and not _same_person(e.entered_by, who):
            raise PermissionError(
                f"{who} ({role}) may not remove an entry entered by someone else: "
                "only an administrator or the entering member may"
            )
        self._close(entry_id, who, role, reason, ("pending", "active"), "removed", REMOVED)

    def expire_due(self, now: float | None = None) -> list[str]:
        """Mark pending and active entries whose expiry has passed as expired (and record it); returns their ids.

        ``active`` leaves expired entries out whether or not this has run; this makes the status and the record say
        so. Call it now and then (the daemon) and before listing entries (the commands).
        """
        t = self._clock() if now is None else _time(now, "now")
        done: list[str] = []
        with self._write() as c:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM hotlist_manual_entries WHERE status IN ('pending', 'active') "
                "AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at, entry_id",
                (t,),
            ).fetchall()
            for r in rows:
                e = _row_to_entry(r)
                self._expire(c, e, t)
                done.append(e.entry_id)
        if done:
            log.info("%d manual hot list entr%s expired", len(done), "y" if len(done) == 1 else "ies")
        return done

    # --- queries

    def active(self, now: float) -> list[HotEntry]:
        """The entries in force at ``now``: approved, not expired, not removed (list ``manual``)."""
        t = _time(now, "now")
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM hotlist_manual_entries WHERE status = 'active' "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY entered_at, rowid",
            (t,),
        )
        return [_row_to_entry(r).hot_entry() for r in rows]

    def list(self, status: str | None = None) -> list[ManualEntry]:
        """Entries, oldest first, optionally only those with ``status``."""
        if status is None:
            rows = self._rows(f"SELECT {_COLUMNS} FROM hotlist_manual_entries ORDER BY entered_at, rowid", ())
        else:
            if status not in STATUSES:
                raise ValueError(f"status: must be one of {', '.join(STATUSES)}")
            rows = self._rows(
                f"SELECT {_COLUMNS} FROM hotlist_manual_entries WHERE status = ? ORDER BY entered_at, rowid",
                (status,),
            )
        return [_row_to_entry(r) for r in rows]

    def get(self, entry_id: str) -> ManualEntry | None:
        check_uuid(entry_id, "entry_id")
        rows = self._rows(f"SELECT {_COLUMNS} FROM hotlist_manual_entries WHERE entry_id = ?", (entry_id,))
        return _row_to_entry(rows[0]) if rows else None

    def changes(self, entry_id: str | None = None) -> builtins.list[Change]:
        """The recorded changes of manual entries (of one entry when given), in the order they happened."""
        marks = ", ".join("?" * len(ACTIONS))
        sql = f"SELECT seq, at, actor, action, entry_id, details FROM hotlist_changes WHERE action IN ({marks})"
        params: tuple[object, ...] = ACTIONS
        if entry_id is not None:
            sql += " AND entry_id = ?"
            params = (*ACTIONS, str(entry_id))
        rows = self._rows(sql + " ORDER BY seq", params)
        return [Change(int(s), float(at), str(a), str(act), e, json.loads(d)) for s, at, a, act, e, d in rows]

    # --- internals

    def _close(
        self, entry_id: str, actor: str, role: str, why: str, allowed: tuple[str, ...], status: str, action: str
    ) -> None:
        now = self._clock()
        with self._write() as c:
            e = self._get_for_update(entry_id)
            if e.status not in allowed:
                raise EntryStateError(
                    f"entry {entry_id} is {e.status}; only a {' or '.join(allowed)} entry can be {status}"
                )
            c.execute(
                "UPDATE hotlist_manual_entries SET status = ? WHERE entry_id = ? AND status = ?",
                (status, e.entry_id, e.status),
            )
            self._record(now, actor, action, e.entry_id, {"why": why, "role": role, "previous_status": e.status})
        log.info("manual hot list entry %s %s by %s", entry_id, status, actor)

    def _expire(self, c: Connection, e: ManualEntry, now: float) -> None:
        c.execute(
            "UPDATE hotlist_manual_entries SET status = 'expired' WHERE entry_id = ? AND status = ?",
            (e.entry_id, e.status),
        )
        self._record(now, SYSTEM_ACTOR, EXPIRED, e.entry_id, {"expires_at": e.expires_at, "previous_status": e.status})

    def _record(self, at: float, actor: str, action: str, entry_id: str, details: Mapping[str, object]) -> None:
        self._conn.execute(
            "INSERT INTO hotlist_changes (at, actor, action, entry_id, details) VALUES (?, ?, ?, ?, ?)",
            (at, actor, action, entry_id, json.dumps(dict(details), sort_keys=True)),
        )

    def _get_for_update(self, entry_id: str) -> ManualEntry:
        check_uuid(entry_id, "entry_id")
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM hotlist_manual_entries WHERE entry_id = ?", (str(entry_id),)
        ).fetchone()
        if row is None:
            raise EntryNotFoundError(f"no manual hot list entry {entry_id}")
        return _row_to_entry(row)

    def _require(self, entry_id: str) -> ManualEntry:
        e = self.get(entry_id)
        if e is None:
            raise EntryNotFoundError(f"no manual hot list entry {entry_id}")
        return e

    def _write(self) -> _Transaction:
        return _Transaction(self._conn)

    def _rows(self, sql: str, params: tuple[object, ...]) -> builtins.list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except DBError as e:
            raise StoreError(f"manual hot list entries: query failed: {e}") from e


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls back, so a refused change writes nothing."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __enter__(self) -> Connection:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except DBError as e:
            raise StoreError(f"manual hot list entries: cannot start a transaction: {e}") from e
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except DBError as e:
                self._rollback()
                raise StoreError(f"manual hot list entries: cannot commit: {e}") from e
        self._rollback()
        if isinstance(exc, DBError):
            raise StoreError(f"manual hot list entries: write failed: {exc}") from exc

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.rollback()
        except DBError as e:
            log.error("rollback of a manual hot list change failed: %s", e)


def _require_admin(role: str, who: str, what: str) -> None:
    if role != ADMINISTRATOR:
        raise PermissionError(f"{who} ({role}) may not {what} hot list entries: only an ALPR administrator may")


def _row_values(e: ManualEntry) -> dict[str, object]:
    return {c.strip(): getattr(e, c.strip()) for c in _COLUMNS.split(",")}


def _row_to_entry(row: Any) -> ManualEntry:
    (entry_id, plate, state, code, reason, instructions, vehicle, case_number, synopsis, entered_by, requesting,
     entered_at, expires_at, status, approved_by, approved_at) = row  # fmt: skip
    return ManualEntry(
        entry_id=entry_id,
        plate_pattern=plate,
        state=state,
        list_code=code,
        reason=reason,
        instructions=instructions,
        vehicle_description=vehicle,
        case_number=case_number,
        synopsis=synopsis,
        entered_by=entered_by,
        requesting_officer=requesting,
        entered_at=float(entered_at),
        expires_at=None if expires_at is None else float(expires_at),
        status=status,
        approved_by=approved_by,
        approved_at=None if approved_at is None else float(approved_at),
    )


# --- the check of recent reads when an entry takes effect -----------------------------------------------------

MatchOne = Callable[..., Hit | None]


def recheck_recent_reads(
    store: ReadStore, entry: HotEntry, match_one: MatchOne, hours: float, now: float
) -> list[tuple[StoredRead, Hit]]:
    """The stored reads of the last ``hours`` before ``now`` that ``entry`` matches, newest first, with their hits.

    ``match_one(entry, text, char_confidences, candidates, state, now)`` decides each read (the matcher's rules:
    look-alikes, partial plates, alternative candidates). Reads are fetched a page at a time, so a busy unit's
    hours of reads never sit in memory at once. ``hours`` 0 checks nothing.
    """
    if not isinstance(entry, HotEntry):
        raise ValueError("entry: must be a HotEntry")
    h = _time(hours, "hours")
    if not 0.0 <= h <= MAX_RECHECK_HOURS:
        raise ValueError(f"hours: must be in 0..{MAX_RECHECK_HOURS:g}")
    t = _time(now, "now")
    if h == 0.0:
        return []
    since = t - h * 3600.0
    found: list[tuple[StoredRead, Hit]] = []
    until = t
    at_until: set[str] = set()  # reads already checked whose time is exactly ``until`` (the bound is inclusive)
    page = RECHECK_PAGE
    checked = 0
    while True:
        reads = store.list_reads(limit=page, since=since, until=until)
        fresh = [r for r in reads if r.uuid not in at_until]
        for r in fresh:
            cands = [(c.text, c.confidence) for c in r.candidates]
            hit = match_one(entry, r.text, r.char_confidences, cands, None, t)
            if hit is not None:
                found.append((r, hit))
        checked += len(fresh)
        if len(reads) < page:
            break
        oldest = reads[-1].best_seen
        if oldest == until and not fresh:
            page = min(page * 2, MAX_RECHECK_PAGE)  # a whole page at one instant: widen the page, never loop
            continue
        if oldest != until:
            at_until = set()
        until = oldest
        at_until |= {r.uuid for r in reads if r.best_seen == oldest}
    log.debug(
        "recheck of entry %s: %d read(s) of the last %g h checked, %d hit(s)", entry.entry_id, checked, h, len(found)
    )
    return found
