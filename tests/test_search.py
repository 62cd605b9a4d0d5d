"""Searches on the unit (P14, P11): the purpose rules, the criteria, each plate mode, time, camera and place on a
real SQLCipher store (the SQL and the Python matcher must agree), and ``alpr-edge search`` with its login,
refusals and one access-record entry per search."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from edge.access.audit import AuditEntry, AuditLog, create_signing_key, load_signing_key
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
from edge.access.users import UserStore
from edge.cli import build_parser, main
from edge.gps import Fix
from edge.search import (
    EARTH_RADIUS_M,
    CriteriaError,
    FoundRead,
    Place,
    SearchCriteria,
    SearchResult,
    haversine_m,
    search_sqlite,
)
from edge.search_commands import RULE_CRITERIA, run_search
from edge.store.keys import create_key_file, load_key
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


# (mode, pattern, the names of PLATES it must return and no others); headquarters runs the same cases.
MODE_CASES: list[tuple[str, str, set[str]]] = [
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
]


@pytest.mark.parametrize(("mode", "pattern", "expected"), MODE_CASES)
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


EDGE_CASES: list[tuple[tuple[float, float], float]] = [
    (CENTRE, 500.0),
    ((78.2232, 15.6267), 2000.0),  # Longyearbyen: a degree of longitude is 23 km
    ((-33.8688, 151.2093), 50.0),
    ((10.0, 179.9995), 1000.0),  # the circle crosses the antimeridian
    ((-10.0, -179.9995), 1000.0),
    ((89.9999, 0.0), 1000.0),  # the pole is inside the circle
]
BEARINGS = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0, 88.0, 92.0)


def edge_points(centre: tuple[float, float], radius: float) -> list[tuple[bool, tuple[float, float]]]:
    """(inside?, point) 5 cm inside and 5 cm outside the circle on each bearing."""
    out = []
    for bearing in BEARINGS:
        for dist, inside in ((radius - 0.05, True), (radius + 0.05, False)):
            at = destination(*centre, bearing, dist)
            assert abs(haversine_m(*centre, *at) - dist) < 1e-3
            out.append((inside, at))
    return out


@pytest.mark.parametrize(("centre", "radius"), EDGE_CASES)
def test_radius_search_right_at_the_edge(store: ReadStore, centre: tuple[float, float], radius: float) -> None:
    inside, outside = set(), set()
    for i, (is_in, at) in enumerate(edge_points(centre, radius)):
        (inside if is_in else outside).add(add(store, "QZ7XK94", T0 + i, at=at))
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
    assert not SearchCriteria(plate="7ABC123", place=Place(*destination(*CENTRE, 0, 2.0), 1)).matches(r)
    assert not SearchCriteria(plate="7ABC123", place=Place(0, 0, 1000)).matches(dataclasses.replace(r, lat=None))


# --- alpr-edge search ---------------------------------------------------------------------------------------------

PW = "correct horse battery"
AGENCY = ("--for-agency", "Ontario Provincial Police")
PERSON = ("--for-person", "Det. J. Roy")
PURPOSE = ("--for-purpose", "robbery investigation")


class Unit:
    """A unit's files (database, database key, access record key) with reads and accounts, and a way to run
    ``alpr-edge search`` as a person would."""

    def __init__(self, folder: Path) -> None:
        self.db = folder / "reads.db"
        self.key_file = folder / "keys" / "db.key"
        create_key_file(self.key_file)
        self.signer = load_signing_key_for_test(folder / "keys" / "audit.key")
        self.store = ReadStore.open(self.db, load_key(self.key_file), free_bytes=lambda: 1 << 40)
        users = UserStore(self.store._conn, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        for name, role in (("ines", "investigator"), ("tom", "technician"), ("ada", "administrator")):
            users.add(name, role, PW, date(2020, 1, 1))

    def run(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, user: str = "ines",
        password: str = PW,
    ) -> tuple[int, str, str]:  # fmt: skip
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        rc = main(["search", "--user", user, "--password-stdin", "--db", str(self.db), "--key-file",
                   str(self.key_file), *argv])  # fmt: skip
        out, err = capsys.readouterr()
        return rc, out, err

    def entries(self, *actions: str) -> list[AuditEntry]:
        return AuditLog(self.store._conn, self.signer).entries(actions=actions)


def load_signing_key_for_test(path: Path) -> Any:
    create_signing_key(path)
    return load_signing_key(path)


@pytest.fixture
def unit(tmp_path: Path) -> Any:
    u = Unit(tmp_path)
    yield u
    u.store.close()


def test_cli_search_is_recorded_once_with_the_uuids_then_shown(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wanted = {add(unit.store, "7ABC123", T0, at=CENTRE), add(unit.store, "7A8C123", T0 + 1, "rear")}
    add(unit.store, "7ABC124", T0 + 2)
    rc, out, err = unit.run(monkeypatch, capsys, "--plate", "7abc-123", "--mode", "lookalike", "--case", "2026-0042")
    assert rc == 0, err
    assert "7ABC123" in out and "7A8C123" in out and "7ABC124" not in out and "2 read(s)" in out
    assert f"{CENTRE[0]:.6f},{CENTRE[1]:.6f}" in out
    assert [e.action for e in unit.entries("login", "search", "search.refused")] == ["login", "search"]
    [entry] = unit.entries("search")
    assert entry.user == "ines" and entry.role == "investigator" and entry.reason == "case 2026-0042"
    assert set(entry.detail["read_uuids"]) == wanted and entry.detail["results"] == 2
    assert entry.detail["criteria"]["plate"] == "7ABC123" and entry.detail["criteria"]["mode"] == "lookalike"
    assert entry.detail["purpose"]["case_number"] == "2026-0042"
    assert "7ABC" not in caplog.text and "7A8C" not in caplog.text

    rc, out, err = unit.run(monkeypatch, capsys, "--near", f"{CENTRE[0]},{CENTRE[1]}", "--radius-m", "10",
                            "--json", "--reason", GOOD_REASON)  # fmt: skip
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["7ABC123"] and rows[0]["distance_m"] == 0.0
    entries = unit.entries("search")
    assert len(entries) == 2 and entries[1].detail["read_uuids"] == [rows[0]["uuid"]]
    assert entries[1].reason == f"reason: {GOOD_REASON}"
    assert AuditLog(unit.store._conn, unit.signer).verify(unit.signer.public_key()).ok


@pytest.mark.parametrize(
    ("argv", "rule"),
    [
        (("--plate", "7ABC123"), RULE_NO_PURPOSE),
        (("--plate", "7ABC123", "--reason", "stolen car Main St"), RULE_REASON_SHORT),
        (("--plate", "7ABC123", "--reason", "test test test test test test"), RULE_REASON_FILLER),
        (("--plate", "7ABC123", "--case", "OPP-2026-77", *AGENCY, *PURPOSE), RULE_OUTSIDE_FIELDS),  # no person
        (("--plate", "7ABC123", "--reason", GOOD_REASON, *AGENCY, *PERSON, *PURPOSE), RULE_OUTSIDE_CASE),
        (("--plate", "7", "--case", "2026-0042"), RULE_CRITERIA),
        (("--near", "45.5,-73.5", "--case", "2026-0042"), RULE_CRITERIA),
    ],
)
def test_cli_refusals_are_recorded_and_show_nothing(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], rule: str
) -> None:
    add(unit.store, "7ABC123", T0)
    rc, out, err = unit.run(monkeypatch, capsys, *argv)
    assert rc == 2 and out == "" and "search refused" in err and "7ABC123" not in err
    [refused] = unit.entries("search.refused")
    assert refused.detail["rule"] == rule and refused.user == "ines" and refused.reason == rule
    assert unit.entries("search") == []


def test_cli_technician_wrong_password_and_no_login_see_nothing(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add(unit.store, "7ABC123", T0)
    rc, out, err = unit.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042", user="tom")
    assert rc == 2 and out == "" and "needs role investigator or administrator; tom is technician" in err
    rc, out, err = unit.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042", password="not it at all")
    assert rc == 2 and out == "" and "login refused" in err
    with pytest.raises(SystemExit) as e:  # no --user: argparse refuses before anything is opened
        main(["search", "--db", str(unit.db), "--key-file", str(unit.key_file), "--plate", "7ABC123", "--case", "2026"])
    assert e.value.code == 2 and "7ABC123" not in capsys.readouterr().out
    actions = [e.action for e in unit.entries("access.denied", "login.refused", "search", "search.refused")]
    assert actions == ["access.denied", "login.refused"]


def test_cli_shows_nothing_when_the_search_cannot_be_recorded(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add(unit.store, "7ABC123", T0)
    unit.store._conn.execute(
        "CREATE TRIGGER no_search BEFORE INSERT ON audit WHEN NEW.action = 'search' "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    rc, out, err = unit.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042")
    assert rc == 2 and out == "" and "7ABC123" not in err and "cannot record 'search'" in err


def test_the_entry_keeps_the_first_1000_uuids_and_the_true_count() -> None:
    N = range(1500)
    reads = tuple(FoundRead(str(uuid.UUID(int=i)), "", "front", "7ABC123", 0.9, T0 - i, None, None) for i in N)
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def record(action: str, *, reason: str = "", detail: Any = None) -> None:
        calls.append((action, reason, dict(detail)))

    args = build_parser().parse_args(["search", "--user", "ines", "--plate", "7ABC123", "--case", "2026-1", "--json"])
    assert run_search(args, record, lambda c: SearchResult(reads, True)) == 0
    [(action, reason, detail)] = calls
    assert action == "search" and reason == "case 2026-1"
    assert detail["results"] == 1500 and detail["truncated"] is True
    assert detail["read_uuids"] == [r.uuid for r in reads[:1000]]
