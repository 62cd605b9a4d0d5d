"""Searches on the unit (P14, P11): the purpose rules, the criteria, each plate mode, time, camera and place on a
real SQLCipher store (the SQL and the Python matcher must agree), and ``alpr-edge search`` with its login,
refusals and one access-record entry per search."""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.access.reasons import (
    MIN_REASON,
    RULE_CASE_FORMAT,
    RULE_NO_PURPOSE,
    RULE_OUTSIDE_CASE,
    RULE_OUTSIDE_FIELDS,
    RULE_REASON_FILLER,
    RULE_REASON_SHORT,
    PurposeError,
    check_purpose,
)
from edge.gps import Fix
from edge.search import (
    EARTH_RADIUS_M,
    CriteriaError,
    FoundRead,
    Place,
    SearchCriteria,
    haversine_m,
    search_sqlite,
)
from edge.store.reads import ReadStore, StoredRead
from edge.vision.ocr import Candidate
from edge.vision.tracker import Read

T0 = 1_760_000_000.0
CENTRE = (45.5017, -73.5673)
GOOD_REASON = "Hit and run on Main St, silver sedan seen leaving northbound"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def destination(lat: float, lon: float, bearing_deg: float, dist_m: float) -> tuple[float, float]:
    """The point ``dist_m`` from (lat, lon) on ``bearing_deg``, on the search's sphere (so its haversine
    distance is ``dist_m`` to rounding)."""
    d = dist_m / EARTH_RADIUS_M
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    lon2 = (math.degrees(l2) + 540.0) % 360.0 - 180.0
    return math.degrees(p2), lon2


def make_read(text: str, t: float, camera: str = "front") -> Read:
    return Read(
        uuid=str(uuid.uuid4()),
        camera_id=camera,
        text=text,
        confidence=0.91,
        char_confidences=(0.9,) * len(text),
        candidates=(Candidate(text, 0.91),),
        region="us",
        plate_format="us",
        box=(10, 10, 100, 30),
        crop_jpeg=JPEG,
        scene_jpeg=JPEG,
        first_seen=t - 1.0,
        last_seen=t + 1.0,
        best_seen=t,
        frames_seen=5,
    )


def fix_at(lat: float | None, lon: float | None, t: float) -> Fix:
    if lat is None or lon is None:
        return Fix("none", 0)
    return Fix("gpsd", 3, lat, lon, None, t, 0.2, 4.0, None, None)


def add(store: ReadStore, text: str, t: float, camera: str = "front", at: tuple[float, float] | None = None) -> str:
    r = make_read(text, t, camera)
    store.add(r, fix_at(at[0] if at else None, at[1] if at else None, t))
    return r.uuid


# Plates chosen around 7ABC123: its look-alikes (B/8, 1/I, 0/O), a near miss that is no look-alike (4 for 3,
# T for 7), a longer plate that contains it, and strangers.
PLATES = {
    "exact": "7ABC123",
    "b8": "7A8C123",
    "i1": "7ABCI23",
    "near": "7ABC124",
    "t7": "TABC123",
    "longer": "Q7ABC1234",
    "short": "ABC12",
    "other": "KLM4567",
    "o0": "K1M4567",  # L/1 look-alike of KLM4567
}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = ReadStore.open(tmp_path / "unit.db", os.urandom(32), free_bytes=lambda: 1 << 40)
    yield s
    s.close()


@pytest.fixture
def plates(store: ReadStore) -> dict[str, str]:
    """name -> uuid; one read a minute apart, newest last, on two cameras, without positions."""
    out = {}
    for i, (name, text) in enumerate(PLATES.items()):
        out[name] = add(store, text, T0 + 60 * i, "front" if i % 2 == 0 else "rear")
    return out


def found(store: ReadStore, **criteria: Any) -> set[str]:
    return {r.uuid for r in search_sqlite(store._conn, SearchCriteria(**criteria)).reads}


def as_found(r: StoredRead) -> FoundRead:
    return FoundRead(r.uuid, "", r.camera_id, r.text, r.confidence, r.best_seen, r.fix.lat, r.fix.lon)


# --- purpose (P14, P11) ----------------------------------------------------------------------------------------


def test_a_case_number_alone_is_enough_and_is_recorded_in_one_line() -> None:
    p = check_purpose(" 2026-001234 ", None)
    assert p.case_number == "2026-001234" and p.reason == ""
    assert p.audit_reason() == "case 2026-001234"
    p = check_purpose("CFS/26.0042", "stolen\ncar\tseen")
    assert p.audit_reason() == "case CFS/26.0042: stolen car seen"
    assert set(p.to_json()) == {"case_number", "reason", "outside_agency", "outside_person", "outside_purpose"}


def test_a_detailed_reason_without_case_number() -> None:
    p = check_purpose(None, GOOD_REASON)
    assert p.case_number == "" and p.audit_reason() == f"reason: {GOOD_REASON}"


@pytest.mark.parametrize(
    ("case", "reason", "rule"),
    [
        (None, None, RULE_NO_PURPOSE),
        ("", "   ", RULE_NO_PURPOSE),
        (None, "stolen car Main St", RULE_REASON_SHORT),  # 18 characters
        (None, "x" * 40, RULE_REASON_FILLER),
        (None, "test test test test test test", RULE_REASON_FILLER),
        (None, "asdf qwerty asdf qwerty test 1234 5678", RULE_REASON_FILLER),
        (None, "aaaa bbbb cccc dddd eeee ffff", RULE_REASON_FILLER),
        (None, "checking a plate for a search test", RULE_REASON_FILLER),
        ("12", None, RULE_CASE_FORMAT),
        ("-2026-1", None, RULE_CASE_FORMAT),
        ("2026 001", None, RULE_CASE_FORMAT),
        ("A" * 41, None, RULE_CASE_FORMAT),
    ],
)
def test_refused_purposes_name_the_rule(case: str | None, reason: str | None, rule: str) -> None:
    with pytest.raises(PurposeError) as e:
        check_purpose(case, reason)
    assert e.value.rule == rule


def test_min_reason_is_counted_after_whitespace_is_folded() -> None:
    assert MIN_REASON == 20
    with pytest.raises(PurposeError, match="at least 20 characters"):
        check_purpose(None, "  stolen   car   on   Main  ")
    check_purpose(None, "stolen car on Main St")  # 21 characters, 5 words


def test_control_characters_refused() -> None:
    with pytest.raises(PurposeError, match="control characters"):
        check_purpose("2026-1", "stolen\x1b[2J car")


def test_outside_agency_needs_agency_person_purpose_and_case() -> None:
    p = check_purpose("OPP-2026-77", None, "Ontario Provincial Police", "Det. J. Roy", "robbery investigation")
    assert p.outside and "for Ontario Provincial Police (Det. J. Roy): robbery investigation" in p.audit_reason()
    with pytest.raises(PurposeError) as e:
        check_purpose("OPP-2026-77", None, "Ontario Provincial Police", None, "robbery investigation")
    assert e.value.rule == RULE_OUTSIDE_FIELDS and "person" in str(e.value)
    with pytest.raises(PurposeError) as e:
        check_purpose(None, GOOD_REASON, "Ontario Provincial Police", "Det. J. Roy", "robbery investigation")
    assert e.value.rule == RULE_OUTSIDE_CASE
    with pytest.raises(PurposeError) as e:
        check_purpose("OPP-2026-77", None, "test", "Det. J. Roy", "robbery investigation")
    assert e.value.rule == RULE_OUTSIDE_FIELDS


# --- criteria ---------------------------------------------------------------------------------------------------


def test_plate_pattern_is_normalised() -> None:
    assert SearchCriteria(plate="7abc-123").plate == "7ABC123"
    assert SearchCriteria(plate="7a**c*", mode="wildcard").plate == "7A*C*"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one criterion"),
        ({"plate": "*", "mode": "wildcard"}, "at least one criterion"),
        ({"plate": "Q"}, "at least 2 letters or digits"),
        ({"plate": "Q*?", "mode": "wildcard"}, "at least 2 letters or digits"),
        ({"plate": "QZ7*"}, "use mode wildcard"),
        ({"plate": "QZ7É"}, "only letters A-Z and digits"),
        ({"plate": "QZ7X", "mode": "fuzzy"}, "mode: must be one of"),
        ({"plate": "Q" * 17}, "at most 16"),
        ({"plate": "QZ7X", "since": T0, "until": T0 - 1}, "since: later than until"),
        ({"plate": "QZ7X", "since": math.nan}, "since: must be a time"),
        ({"plate": "QZ7X", "limit": 0}, "limit"),
        ({"plate": "QZ7X", "limit": 10_001}, "limit"),
        ({"plate": "QZ7X", "cameras": ("front door",)}, "camera: each must be"),
        ({"plate": "QZ7X", "cameras": tuple(f"c{i}" for i in range(33))}, "camera: at most 32"),
    ],
)
def test_bad_criteria_are_named_and_never_repeat_the_plate(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CriteriaError, match=message) as e:
        SearchCriteria(**kwargs)
    assert "QZ7" not in str(e.value)


@pytest.mark.parametrize(
    ("lat", "lon", "radius", "message"),
    [(91, 0, 10, "lat"), (0, -180.5, 10, "lon"), (0, 0, 0, "radius"), (0, 0, 200_001, "radius")],
)
def test_bad_place(lat: float, lon: float, radius: float, message: str) -> None:
    with pytest.raises(CriteriaError, match=message):
        Place(lat, lon, radius)


def test_one_character_is_enough_when_something_else_narrows() -> None:
    SearchCriteria(plate="Q", mode="partial", cameras=("front",))
    SearchCriteria(plate="Q", mode="partial", since=T0)
    SearchCriteria(place=Place(*CENTRE, 100))


def test_devices_are_refused_on_the_unit(store: ReadStore) -> None:
    with pytest.raises(CriteriaError, match="device"):
        search_sqlite(store._conn, SearchCriteria(plate="7ABC123", devices=("unit-7",)))


# --- each mode on the real store ----------------------------------------------------------------------------------


def names(plates: dict[str, str], uuids: set[str]) -> set[str]:
    back = {v: k for k, v in plates.items()}
    return {back[u] for u in uuids}


@pytest.mark.parametrize(
    ("mode", "pattern", "expected"),
    [
        ("exact", "7ABC123", {"exact"}),
        ("exact", "7abc 123", {"exact"}),
        ("exact", "7ABC12", set()),
        ("partial", "ABC12", {"exact", "near", "t7", "longer", "short"}),
        ("partial", "C1234", {"longer"}),
        ("wildcard", "7ABC12?", {"exact", "near"}),
        ("wildcard", "*ABC12?", {"exact", "near", "t7"}),
        ("wildcard", "*ABC12*", {"exact", "near", "t7", "longer", "short"}),
        ("wildcard", "7?BC*", {"exact", "i1", "near"}),
        ("wildcard", "7ABC123", {"exact"}),
        ("lookalike", "7ABC123", {"exact", "b8", "i1"}),
        ("lookalike", "7A8CI23", {"exact", "b8", "i1"}),
        ("lookalike", "KLM4567", {"other", "o0"}),
    ],
)
def test_each_mode_returns_exactly_the_right_reads(
    store: ReadStore, plates: dict[str, str], mode: str, pattern: str, expected: set[str]
) -> None:
    got = found(store, plate=pattern, mode=mode)
    assert names(plates, got) == expected
    # the Python matcher gives the same answer over every stored read
    crit = SearchCriteria(plate=pattern, mode=mode)
    everything = [as_found(r) for r in store.list_reads(limit=1000)]
    assert {r.uuid for r in everything if crit.matches(r)} == got


def test_time_range_is_inclusive_at_both_ends(store: ReadStore, plates: dict[str, str]) -> None:
    # reads at T0, T0+60, ..., T0+480, in PLATES' order
    got = found(store, plate="", since=T0 + 60, until=T0 + 180)
    assert names(plates, got) == {"b8", "i1", "near"}
    got = found(store, since=T0 + 60.001, until=T0 + 179.999)
    assert names(plates, got) == {"i1"}
    assert names(plates, found(store, until=T0)) == {"exact"}
    assert names(plates, found(store, since=T0 + 480)) == {"o0"}
    assert names(plates, found(store, plate="7ABC123", mode="lookalike", since=T0 + 1)) == {"b8", "i1"}


def test_camera_filter(store: ReadStore, plates: dict[str, str]) -> None:
    assert names(plates, found(store, plate="7ABC123", mode="lookalike", cameras=("rear",))) == {"b8"}
    assert names(plates, found(store, cameras=("front",))) == {"exact", "i1", "t7", "short", "o0"}
    assert found(store, cameras=("nowhere",)) == set()


def test_limit_keeps_the_newest_and_says_it_cut(store: ReadStore, plates: dict[str, str]) -> None:
    res = search_sqlite(store._conn, SearchCriteria(plate="ABC12", mode="partial", limit=2))
    assert res.truncated and [r.uuid for r in res.reads] == [plates["short"], plates["longer"]]
    res = search_sqlite(store._conn, SearchCriteria(plate="ABC12", mode="partial", limit=5))
    assert not res.truncated and len(res.reads) == 5


# --- place --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("centre", "radius"),
    [
        (CENTRE, 500.0),
        ((78.2232, 15.6267), 2000.0),  # Longyearbyen: a degree of longitude is 23 km
        ((-33.8688, 151.2093), 50.0),
        ((10.0, 179.9995), 1000.0),  # the circle crosses the antimeridian
        ((-10.0, -179.9995), 1000.0),
        ((89.9999, 0.0), 1000.0),  # the pole is inside the circle
    ],
)
def test_radius_search_right_at_the_edge(store: ReadStore, centre: tuple[float, float], radius: float) -> None:
    inside, outside = set(), set()
    for i, bearing in enumerate((0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0, 88.0, 92.0)):
        for dist, bucket in ((radius - 0.05, inside), (radius + 0.05, outside)):
            at = destination(*centre, bearing, dist)
            assert abs(haversine_m(*centre, *at) - dist) < 1e-3
            bucket.add(add(store, "QZ7XK94", T0 + i, at=at))
    far = add(store, "QZ7XK94", T0, at=destination(*centre, 10.0, radius * 3))
    add(store, "QZ7XK94", T0)  # no position: never in a place search
    res = search_sqlite(store._conn, SearchCriteria(place=Place(*centre, radius), limit=1000))
    got = {r.uuid for r in res.reads}
    assert got == inside and not got & (outside | {far})
    assert all(r.distance_m is not None and r.distance_m <= radius for r in res.reads)


def test_place_with_plate_and_limit(store: ReadStore) -> None:
    near = [add(store, "QZ7XK94", T0 + i, at=destination(*CENTRE, 30.0 * i, 100.0)) for i in range(5)]
    add(store, "QZ7XK95", T0 + 10, at=CENTRE)  # another plate at the centre
    add(store, "QZ7XK94", T0 + 20, at=destination(*CENTRE, 0, 5000.0))  # newest, but outside
    res = search_sqlite(store._conn, SearchCriteria(plate="QZ7XK94", place=Place(*CENTRE, 150.0), limit=3))
    assert res.truncated and [r.uuid for r in res.reads] == near[::-1][:3]


def test_criteria_json_is_what_was_asked() -> None:
    c = SearchCriteria(plate="7abc*", mode="wildcard", since=T0, cameras=("front",), place=Place(1.5, 2.5, 300))
    assert c.to_json() == {
        "plate": "7ABC*",
        "mode": "wildcard",
        "since": "2025-10-09T08:53:20.000Z",
        "until": None,
        "cameras": ["front"],
        "devices": [],
        "place": {"lat": 1.5, "lon": 2.5, "radius_m": 300},
        "limit": 200,
    }


def test_matcher_respects_every_criterion() -> None:
    r = FoundRead("u", "unit-1", "front", "7ABC123", 0.9, T0, *CENTRE)
    assert SearchCriteria(plate="7ABC123", devices=("unit-1",)).matches(r)
    assert not SearchCriteria(plate="7ABC123", devices=("unit-2",)).matches(r)
    assert not SearchCriteria(plate="7ABC123", cameras=("rear",)).matches(r)
    assert not SearchCriteria(plate="7ABC123", until=T0 - 1).matches(r)
    assert SearchCriteria(plate="7ABC123", place=Place(*CENTRE, 1)).matches(r)
    assert not SearchCriteria(plate="7ABC123", place=Place(0, 0, 1000)).matches(dataclasses.replace(r, lat=None))
