"""The search query (P14), shared by the unit and headquarters: what may be asked, and how it is answered.

``SearchCriteria`` is checked when it is made, so a bad value never reaches a database: a plate pattern (exact,
partial = substring, wildcard = ``*`` any run and ``?`` one character, look-alike = the OCR's confusions of
edge/hotlist/lookalike.py), a time range, cameras (unit) or devices (headquarters), and a place (within
``radius_m`` of a point). One criterion, at least, must narrow the search: a plate pattern needs 2 real
characters unless something else narrows it, so "all plates with an A" over all time is refused.

The same criteria give a Python matcher (``matches``) and SQL for SQLite (the unit's store) and PostgreSQL
(headquarters). The place filter is a bounding box in SQL (an index-friendly range that contains the whole
circle) and then the exact great-circle distance in Python (``collect``), so a read just inside the radius is
found and one just outside is not, whatever the latitude.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .hotlist.lookalike import DEFAULT_TABLE, LookalikeTable
from .store.commands import iso_utc
from .store.db import Connection, DBError
from .store.errors import StoreError

MODES = ("exact", "partial", "wildcard", "lookalike")
DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000
MAX_PATTERN = 16  # the longest plate text stored
MIN_REAL_CHARS = 2  # of a plate pattern that is the only criterion
MAX_IDS = 32  # cameras or devices in one search
MAX_RADIUS_M = 200_000.0
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG); the same in the bounding box and the distance
RECORDED_UUIDS = 1000  # UUIDs of the results kept in the access record

_PLATE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
Dialect = Literal["sqlite", "postgres"]


class CriteriaError(ValueError):
    """A search criterion that cannot be used; the message names it (and never repeats plate text)."""


@dataclass(frozen=True)
class Place:
    """Within ``radius_m`` metres (great-circle) of ``lat``, ``lon`` (WGS84 degrees)."""

    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        for name, value, lo, hi in (("lat", self.lat, -90.0, 90.0), ("lon", self.lon, -180.0, 180.0)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                raise CriteriaError(f"place: {name} must be a number in {lo:g}..{hi:g}")
        r = self.radius_m
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 < r <= MAX_RADIUS_M:
            raise CriteriaError(f"place: radius must be more than 0 and at most {MAX_RADIUS_M:g} metres")

    def distance_m(self, lat: float, lon: float) -> float:
        return haversine_m(self.lat, self.lon, lat, lon)

    def bounding_box(self) -> tuple[float, float, float, float | None, float | None]:
        """(lat_min, lat_max, wrap, lon_min, lon_max) in degrees, containing the whole circle.

        ``lon_min``/``lon_max`` are None when every longitude must be kept (a pole within the circle); ``wrap``
        is 1.0 when the range crosses the antimeridian (keep lon >= lon_min OR lon <= lon_max), else 0.0.
        A small margin keeps rounding from cutting off a read exactly on the circle; the exact test follows.
        """
        delta = self.radius_m / EARTH_RADIUS_M  # angular radius, radians
        margin = 1e-7  # degrees (~1 cm)
        dlat = math.degrees(delta) + margin
        lat_min, lat_max = max(-90.0, self.lat - dlat), min(90.0, self.lat + dlat)
        phi = math.radians(self.lat)
        if lat_max >= 90.0 or lat_min <= -90.0 or math.sin(delta) >= math.cos(phi):
            return lat_min, lat_max, 0.0, None, None
        # The widest longitude difference on a circle of angular radius delta at latitude phi.
        dlon = math.degrees(math.asin(math.sin(delta) / math.cos(phi))) * (1 + 1e-9) + margin
        lon_min, lon_max = self.lon - dlon, self.lon + dlon
        if lon_min < -180.0:
            return lat_min, lat_max, 1.0, lon_min + 360.0, lon_max
        if lon_max > 180.0:
            return lat_min, lat_max, 1.0, lon_min, lon_max - 360.0
        return lat_min, lat_max, 0.0, lon_min, lon_max


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on a sphere of EARTH_RADIUS_M."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def normalise_plate(text: str) -> str:
    """Upper case, without the spaces and hyphens people type ("7abc-123" -> "7ABC123")."""
    return re.sub(r"[\s-]+", "", text).upper()


def _ids(values: object, name: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise CriteriaError(f"{name}: must be a list of ids")
    if len(values) > MAX_IDS:
        raise CriteriaError(f"{name}: at most {MAX_IDS} in one search")
    for v in values:
        if not isinstance(v, str) or not _ID.fullmatch(v):
            raise CriteriaError(f"{name}: each must be 1..64 characters of A-Z a-z 0-9 _ . : -")
    return tuple(dict.fromkeys(values))  # without repeats, in the order given


def _time(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CriteriaError(f"{name}: must be a time (finite UTC epoch seconds)")
    return float(value)


@dataclass(frozen=True)
class FoundRead:
    """One read a search returned: what is shown, and what the matcher looks at."""

    uuid: str
    device_id: str  # '' on the unit (its store holds only its own reads)
    camera_id: str
    text: str
    confidence: float
    best_seen: float  # UTC epoch seconds
    lat: float | None
    lon: float | None
    distance_m: float | None = None  # from the search's place, when it has one

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "device_id": self.device_id,
            "camera_id": self.camera_id,
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "best_seen": iso_utc(self.best_seen),
            "lat": self.lat,
            "lon": self.lon,
            "distance_m": None if self.distance_m is None else round(self.distance_m, 1),
        }


@dataclass(frozen=True)
class SearchResult:
    reads: tuple[FoundRead, ...]  # newest first
    truncated: bool  # more reads matched than the limit


@dataclass(frozen=True)
class Query:
    sql: str
    params: tuple[object, ...]
    limited: bool  # the SQL has the LIMIT (no place filter); else ``collect`` stops at the limit


@dataclass(frozen=True)
class SearchCriteria:
    """What a search asks for; checked (and the plate pattern normalised) when made: CriteriaError."""

    plate: str = ""  # A-Z 0-9 (and * ? in wildcard mode); '' = any plate
    mode: str = "exact"
    since: float | None = None  # UTC epoch seconds, inclusive
    until: float | None = None
    cameras: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # headquarters only
    place: Place | None = None
    limit: int = DEFAULT_LIMIT
    lookalikes: LookalikeTable = field(default=DEFAULT_TABLE, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CriteriaError(f"mode: must be one of {', '.join(MODES)}")
        if not isinstance(self.plate, str):
            raise CriteriaError("plate: must be text")
        plate = normalise_plate(self.plate)
        if self.mode == "wildcard":
            plate = re.sub(r"\*+", "*", plate)
        allowed = _PLATE_CHARS | ({"*", "?"} if self.mode == "wildcard" else set())
        if not set(plate) <= allowed:
            hint = "" if self.mode == "wildcard" else "; '*' and '?' are wildcards: use mode wildcard"
            raise CriteriaError(f"plate: only letters A-Z and digits 0-9{hint}")
        if len(plate) > MAX_PATTERN:
            raise CriteriaError(f"plate: at most {MAX_PATTERN} characters")
        object.__setattr__(self, "plate", plate)
        since, until = _time(self.since, "since"), _time(self.until, "until")
        if since is not None and until is not None and since > until:
            raise CriteriaError("since: later than until")
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)
        object.__setattr__(self, "cameras", _ids(self.cameras, "camera"))
        object.__setattr__(self, "devices", _ids(self.devices, "device"))
        if self.place is not None and not isinstance(self.place, Place):
            raise CriteriaError("place: must be a Place")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise CriteriaError(f"limit: must be a whole number in 1..{MAX_LIMIT}")
        if not isinstance(self.lookalikes, LookalikeTable):
            raise CriteriaError("lookalikes: must be a LookalikeTable")
        real = sum(c in _PLATE_CHARS for c in plate)
        if not self.narrowed:
            if not plate or plate == "*":
                raise CriteriaError("give at least one criterion: plate, time range, camera, device or place")
            if real < MIN_REAL_CHARS:
                raise CriteriaError(
                    f"plate: at least {MIN_REAL_CHARS} letters or digits, unless a time range, camera, device or "
                    f"place narrows the search"
                )

    @property
    def narrowed(self) -> bool:
        """True when something other than the plate narrows the search."""
        return bool(self.since is not None or self.until is not None or self.cameras or self.devices or self.place)

    # --- the matcher ---

    def plate_matches(self, text: str) -> bool:
        p = self.plate
        if not p:
            return True
        if self.mode == "exact":
            return text == p
        if self.mode == "partial":
            return p in text
        if self.mode == "wildcard":
            return re.fullmatch(wildcard_regex(p), text) is not None
        return len(text) == len(p) and self.lookalikes.fold(text) == self.lookalikes.fold(p)

    def matches(self, read: FoundRead) -> bool:
        """The whole test in Python (the SQL gives the same answer; the place is always tested here)."""
        if not self.plate_matches(read.text):
            return False
        if self.since is not None and read.best_seen < self.since:
            return False
        if self.until is not None and read.best_seen > self.until:
            return False
        if self.cameras and read.camera_id not in self.cameras:
            return False
        if self.devices and read.device_id not in self.devices:
            return False
        if self.place is not None:
            if read.lat is None or read.lon is None:
                return False
            return self.place.distance_m(read.lat, read.lon) <= self.place.radius_m
        return True

    def to_json(self) -> dict[str, Any]:
        """For the access record: exactly what was asked."""
        p = self.place
        return {
            "plate": self.plate,
            "mode": self.mode,
            "since": iso_utc(self.since),
            "until": iso_utc(self.until),
            "cameras": list(self.cameras),
            "devices": list(self.devices),
            "place": None if p is None else {"lat": p.lat, "lon": p.lon, "radius_m": p.radius_m},
            "limit": self.limit,
        }


def wildcard_regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


# --- SQL ------------------------------------------------------------------------------------------------------


def _fold_sql(column: str, table: LookalikeTable, dialect: Dialect) -> str:
    """SQL for ``table.fold(column)``: PostgreSQL's translate(), nested replace() in SQLite. The characters
    come from the (validated) table, A-Z 0-9 only, so they are safe as literals."""
    pairs = [(ch, cls[0]) for cls in table.classes for ch in cls[1:]]
    if dialect == "postgres":
        return f"translate({column}, '{''.join(a for a, _ in pairs)}', '{''.join(b for _, b in pairs)}')"
    sql = column
    for a, b in pairs:
        sql = f"replace({sql}, '{a}', '{b}')"
    return sql


def build_query(c: SearchCriteria, dialect: Dialect) -> Query:
    """SELECT uuid, device_id, camera_id, text, confidence, best_seen, lat, lon FROM reads WHERE ..., newest
    first; parameters in the driver's style (? for sqlite3, %s for psycopg)."""
    ph = "?" if dialect == "sqlite" else "%s"
    where: list[str] = []
    params: list[object] = []
    if c.plate:
        if c.mode == "exact":
            where.append(f"text = {ph}")
            params.append(c.plate)
        elif c.mode == "partial":
            where.append(f"instr(text, {ph}) > 0" if dialect == "sqlite" else f"strpos(text, {ph}) > 0")
            params.append(c.plate)
        elif c.mode == "wildcard":
            if dialect == "sqlite":  # GLOB: case-sensitive, * and ? as ours; the pattern has nothing else
                where.append(f"text GLOB {ph}")
                params.append(c.plate)
            else:  # LIKE: % and _; the pattern has no other special characters
                where.append(f"text LIKE {ph}")
                params.append(c.plate.replace("*", "%").replace("?", "_"))
        else:
            where.append(f"length(text) = {ph} AND {_fold_sql('text', c.lookalikes, dialect)} = {ph}")
            params += [len(c.plate), c.lookalikes.fold(c.plate)]
    if c.since is not None:
        where.append(f"best_seen >= {ph}")
        params.append(c.since)
    if c.until is not None:
        where.append(f"best_seen <= {ph}")
        params.append(c.until)
    if c.cameras:
        where.append(f"camera_id IN ({', '.join([ph] * len(c.cameras))})")
        params += c.cameras
    if c.devices:
        if dialect == "sqlite":
            raise CriteriaError("device: the unit's store holds only its own reads; search by camera")
        where.append(f"device_id IN ({', '.join([ph] * len(c.devices))})")
        params += c.devices
    if c.place is not None:
        lat_min, lat_max, wrap, lon_min, lon_max = c.place.bounding_box()
        where.append(f"lat IS NOT NULL AND lon IS NOT NULL AND lat BETWEEN {ph} AND {ph}")
        params += [lat_min, lat_max]
        if lon_min is not None and lon_max is not None:
            where.append(f"(lon >= {ph} OR lon <= {ph})" if wrap else f"lon BETWEEN {ph} AND {ph}")
            params += [lon_min, lon_max]
    cols = (
        "uuid, '' AS device_id" if dialect == "sqlite" else "uuid::text, device_id"
    ) + ", camera_id, text, confidence, best_seen, lat, lon"
    sql = f"SELECT {cols} FROM reads" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY best_seen DESC, uuid"
    limited = c.place is None
    if limited:
        sql += f" LIMIT {ph}"
        params.append(c.limit + 1)  # one more, to tell the user there were more
    return Query(sql, tuple(params), limited)


def collect(rows: Iterable[Any], c: SearchCriteria, *, device_id: str = "") -> SearchResult:
    """The result from the query's rows, in order: the exact place test, then the limit. Stops reading ``rows``
    once it has one more than the limit (to say the result was cut)."""
    found: list[FoundRead] = []
    for uuid, dev, camera, text, conf, best_seen, lat, lon in rows:
        r = FoundRead(str(uuid), dev or device_id, camera, text, float(conf), float(best_seen), lat, lon)
        if c.place is not None:
            if lat is None or lon is None:
                continue
            d = c.place.distance_m(lat, lon)
            if d > c.place.radius_m:
                continue
            r = FoundRead(r.uuid, r.device_id, camera, text, r.confidence, r.best_seen, lat, lon, d)
        found.append(r)
        if len(found) > c.limit:
            return SearchResult(tuple(found[: c.limit]), True)
    return SearchResult(tuple(found), False)


def search_sqlite(conn: Connection, c: SearchCriteria, *, device_id: str = "") -> SearchResult:
    """Run the search on the unit's store (a SQLCipher connection); StoreError when the query fails."""
    q = build_query(c, "sqlite")
    try:
        cur = conn.execute(q.sql, q.params)
        return collect(iter(cur.fetchone, None), c, device_id=device_id)  # row by row: stops at the limit
    except DBError as e:
        raise StoreError(f"search failed: {e}") from e
