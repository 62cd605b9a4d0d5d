"""Searches at headquarters on a real PostgreSQL: the unit's cases (each plate mode, time, place at the edge of the
radius) give the same reads in PostgreSQL, plus devices; outside-agency searches need an approved request (P11);
``alpr-edge hq search`` logs in, refuses, records one hq_audit entry per search and shows nothing unrecorded."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher

from edge.access.reasons import RULE_NO_PURPOSE, RULE_REASON_FILLER, Purpose, PurposeError, check_purpose
from edge.cli import main
from edge.hotlist.bundle import write_keypair
from edge.hq import schema
from edge.hq.access import HqAuditLog, HqUserStore
from edge.hq.search import RULE_REQUEST, check_request, search_postgres
from edge.search import FoundRead, Place, SearchCriteria

from .sync_env import Postgres, postgres_fixture  # noqa: F401
from .test_search import EDGE_CASES, GOOD_REASON, MODE_CASES, PLATES, T0, edge_points

PW = "correct horse battery"


def insert_read(
    conn: psycopg.Connection,
    text: str,
    t: float,
    *,
    device: str = "unit-1",
    camera: str = "front",
    at: tuple[float, float] | None = None,
) -> str:
    u = str(uuid.uuid4())
    lat, lon = at if at else (None, None)
    conn.execute(
        "INSERT INTO reads (uuid, device_id, camera_id, text, confidence, char_confidences, candidates, box_x, box_y,"
        " box_w, box_h, first_seen, last_seen, best_seen, frames_seen, fix_source, fix_mode, lat, lon, received_at)"
        " VALUES (%s, %s, %s, %s, 0.9, '[]', '[]', 0, 0, 10, 10, %s, %s, %s, 3, %s, %s, %s, %s, %s)",
        (u, device, camera, text, t - 1, t + 1, t, "gpsd" if at else "none", 3 if at else 0, lat, lon, t + 5),
    )
    return u


@pytest.fixture(scope="module")
def module_db(postgres: Postgres) -> Iterator[tuple[psycopg.Connection, dict[str, str]]]:
    """One database with PLATES on two devices (a minute apart, like the unit's test), for the query tests."""
    with schema.connect(postgres.new_database()) as conn:
        schema.migrate(conn)
        ids = {}
        for i, (name, text) in enumerate(PLATES.items()):
            ids[name] = insert_read(conn, text, T0 + 60 * i, device="unit-1" if i < 5 else "unit-2",
                                    camera="front" if i % 2 == 0 else "rear")  # fmt: skip
        yield conn, ids


@pytest.fixture
def fresh(postgres: Postgres) -> Iterator[tuple[str, psycopg.Connection]]:
    url = postgres.new_database()
    with schema.connect(url) as conn:
        schema.migrate(conn)
        yield url, conn


def search(conn: psycopg.Connection, **criteria: Any) -> set[str]:
    return {r.uuid for r in search_postgres(conn, SearchCriteria(**criteria)).reads}


def names(ids: dict[str, str], got: set[str]) -> set[str]:
    back = {v: k for k, v in ids.items()}
    return {back[u] for u in got}


def all_reads(conn: psycopg.Connection) -> list[FoundRead]:
    rows = conn.execute("SELECT uuid::text, device_id, camera_id, text, confidence, best_seen, lat, lon FROM reads")
    return [FoundRead(*r) for r in rows.fetchall()]


# --- the query on PostgreSQL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "pattern", "expected"), MODE_CASES)
def test_each_mode_returns_exactly_the_right_reads(
    module_db: tuple[psycopg.Connection, dict[str, str]], mode: str, pattern: str, expected: set[str]
) -> None:
    conn, ids = module_db
    got = search(conn, plate=pattern, mode=mode)
    assert names(ids, got) == expected
    crit = SearchCriteria(plate=pattern, mode=mode)
    assert {r.uuid for r in all_reads(conn) if crit.matches(r)} == got


def test_devices_cameras_and_time(module_db: tuple[psycopg.Connection, dict[str, str]]) -> None:
    conn, ids = module_db
    assert names(ids, search(conn, devices=("unit-2",))) == {"longer", "short", "other", "o0"}
    assert names(ids, search(conn, plate="7ABC123", mode="lookalike", devices=("unit-1",))) == {"exact", "b8", "i1"}
    assert names(ids, search(conn, devices=("unit-2",), cameras=("rear",))) == {"longer", "other"}
    assert names(ids, search(conn, devices=("unit-1", "unit-9"), since=T0 + 60, until=T0 + 180)) == {"b8", "i1", "near"}
    assert names(ids, search(conn, since=T0 + 60.001, until=T0 + 179.999)) == {"i1"}
    res = search_postgres(conn, SearchCriteria(plate="ABC12", mode="partial", limit=2))
    assert res.truncated and [r.uuid for r in res.reads] == [ids["short"], ids["longer"]]
    assert {r.device_id for r in search_postgres(conn, SearchCriteria(plate="KLM4567", mode="lookalike")).reads} == {
        "unit-2"
    }


@pytest.mark.parametrize(("centre", "radius"), EDGE_CASES)
def test_radius_search_right_at_the_edge(
    fresh: tuple[str, psycopg.Connection], centre: tuple[float, float], radius: float
) -> None:
    _, conn = fresh
    inside, outside = set(), set()
    for i, (is_in, at) in enumerate(edge_points(centre, radius)):
        (inside if is_in else outside).add(insert_read(conn, "QZ7XK94", T0 + i, at=at))
    insert_read(conn, "QZ7XK94", T0)  # no position
    got = search(conn, place=Place(*centre, radius), limit=1000)
    assert got == inside and not got & outside


# --- outside agencies (P11) ---------------------------------------------------------------------------------------

OUTSIDE = ("OPP-2026-77", None, "Ontario Provincial Police", "Det. J. Roy", "robbery investigation")
OUTSIDE_ARGS = ("--for-agency", OUTSIDE[2], "--for-person", OUTSIDE[3], "--for-purpose", OUTSIDE[4])


def add_request(conn: psycopg.Connection, status: str, agency: str = "Ontario Provincial Police") -> str:
    rid = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO outside_requests (id, at, agency, person, purpose, case_number, entered_by, status) "
        "VALUES (%s, %s, %s, 'Det. J. Roy', 'robbery investigation', 'OPP-2026-77', 'clerk', %s)",
        (rid, T0, agency, status),
    )
    return rid


def test_outside_agency_needs_an_approved_request_of_that_agency(fresh: tuple[str, psycopg.Connection]) -> None:
    _, conn = fresh
    purpose = check_purpose(*OUTSIDE)
    approved = add_request(conn, "approved")
    detail = check_request(conn, approved, purpose)
    assert detail["request"]["id"] == approved and detail["request"]["case_number"] == "OPP-2026-77"
    assert check_request(conn, add_request(conn, "approved", "  ontario provincial   POLICE "), purpose)
    for rid, message in (
        (None, "approved written request"),
        ("not-a-uuid", "not a request id"),
        (str(uuid.uuid4()), "no outside-agency request"),
        (add_request(conn, "pending"), "is pending, not approved"),
        (add_request(conn, "denied"), "is denied, not approved"),
        (add_request(conn, "approved", "Sûreté du Québec"), "another agency"),
    ):
        with pytest.raises(PurposeError, match=message) as e:
            check_request(conn, rid, purpose)
        assert e.value.rule == RULE_REQUEST
    own = Purpose("2026-000123", "")
    assert check_request(conn, None, own) == {}
    with pytest.raises(PurposeError, match="only for a search for an outside agency"):
        check_request(conn, approved, own)


# --- the command --------------------------------------------------------------------------------------------------


class Hq:
    """A headquarters database with accounts, a signing key and a URL file, and a way to run ``hq search``."""

    def __init__(self, url: str, conn: psycopg.Connection, folder: Path) -> None:
        self.conn = conn
        self.url_file = folder / "db-url"
        self.url_file.write_text(url)
        self.key = folder / "hq.key"
        write_keypair(self.key, folder / "hq.pub")
        users = HqUserStore(conn, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        for name, role in (("ines", "investigator"), ("tom", "technician"), ("ada", "administrator")):
            users.add(name, role, PW, date(2020, 1, 1))

    def run(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, user: str = "ines",
        password: str = PW,
    ) -> tuple[int, str, str]:  # fmt: skip
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        rc = main(["hq", "search", "--user", user, "--password-stdin", "--signing-key", str(self.key),
                   "--db-url-file", str(self.url_file), *argv])  # fmt: skip
        out, err = capsys.readouterr()
        return rc, out, err

    def entries(self, *actions: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT user_name, role, action, reason, detail FROM hq_audit WHERE action = ANY(%s) ORDER BY seq",
            (list(actions),),
        ).fetchall()
        return [dict(zip(("user", "role", "action", "reason", "detail"), r, strict=True)) for r in rows]


@pytest.fixture
def hq(fresh: tuple[str, psycopg.Connection], tmp_path: Path) -> Hq:
    return Hq(*fresh, tmp_path)


def test_search_is_recorded_once_with_the_uuids_then_shown(
    hq: Hq, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wanted = {insert_read(hq.conn, t, T0 + i, device="unit-3") for i, t in enumerate(("7ABC123", "7A8C123"))}
    insert_read(hq.conn, "7ABC124", T0 + 9, device="unit-3")
    insert_read(hq.conn, "7ABC123", T0 + 9, device="unit-4")
    rc, out, err = hq.run(
        monkeypatch, capsys, "--plate", "7abc123", "--mode", "lookalike", "--device", "unit-3", "--case", "2026-0042"
    )
    assert rc == 0, err
    assert "7ABC123" in out and "7A8C123" in out and "7ABC124" not in out and "unit-3" in out
    [entry] = hq.entries("search")
    assert entry["user"] == "ines" and entry["role"] == "investigator" and entry["reason"] == "case 2026-0042"
    d = entry["detail"]
    assert set(d["read_uuids"]) == wanted and d["results"] == 2 and d["truncated"] is False
    assert d["criteria"]["plate"] == "7ABC123" and d["criteria"]["devices"] == ["unit-3"]
    assert d["purpose"]["case_number"] == "2026-0042"
    assert [e["action"] for e in hq.entries("login", "search")] == ["login", "search"]
    assert "7ABC" not in caplog.text and "7A8C" not in caplog.text

    rc, out, err = hq.run(monkeypatch, capsys, "--plate", "7ABC123", "--json", "--reason", GOOD_REASON)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["device_id"] for r in rows} == {"unit-3", "unit-4"} and {r["text"] for r in rows} == {"7ABC123"}
    assert len(hq.entries("search")) == 2 and hq.entries("search")[1]["detail"]["read_uuids"] == [
        r["uuid"] for r in rows
    ]


@pytest.mark.parametrize(
    ("argv", "rule"),
    [
        (("--plate", "7ABC123"), RULE_NO_PURPOSE),
        (("--plate", "7ABC123", "--reason", "test test test test test test"), RULE_REASON_FILLER),
        (("--plate", "7ABC123", "--case", "OPP-2026-77", *OUTSIDE_ARGS), RULE_REQUEST),
        (("--plate", "7", "--case", "2026-0042"), "search criteria"),
    ],
)
def test_refusals_are_recorded_and_show_nothing(
    hq: Hq, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], rule: str
) -> None:
    insert_read(hq.conn, "7ABC123", T0)
    rc, out, err = hq.run(monkeypatch, capsys, *argv)
    assert rc == 2 and "7ABC123" not in out and "search refused" in err
    [refused] = hq.entries("search.refused")
    assert refused["detail"]["rule"] == rule and refused["user"] == "ines"
    assert hq.entries("search") == []


def test_outside_agency_with_approved_request(
    hq: Hq, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_read(hq.conn, "7ABC123", T0)
    rid = add_request(hq.conn, "approved")
    rc, out, err = hq.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "OPP-2026-77", "--request", rid,
                          *OUTSIDE_ARGS)  # fmt: skip
    assert rc == 0, err
    assert "7ABC123" in out
    [entry] = hq.entries("search")
    assert entry["detail"]["request"]["id"] == rid and entry["detail"]["purpose"]["outside_person"] == "Det. J. Roy"
    assert "for Ontario Provincial Police (Det. J. Roy): robbery investigation" in entry["reason"]


def test_technician_and_wrong_password_see_nothing(
    hq: Hq, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_read(hq.conn, "7ABC123", T0)
    rc, out, err = hq.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042", user="tom")
    assert rc == 2 and out == "" and "technician" in err
    rc, out, err = hq.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042", password="wrong password")
    assert rc == 2 and out == "" and "login refused" in err
    assert [e["action"] for e in hq.entries("access.denied", "login.refused", "search")] == [
        "access.denied",
        "login.refused",
    ]


def test_nothing_is_shown_when_the_search_cannot_be_recorded(
    hq: Hq, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_read(hq.conn, "7ABC123", T0)
    hq.conn.execute(
        "CREATE TRIGGER no_search BEFORE INSERT ON hq_audit FOR EACH ROW WHEN (NEW.action = 'search') "
        "EXECUTE FUNCTION refuse_change()"
    )
    rc, out, err = hq.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042")
    assert rc == 2 and out == "" and "7ABC123" not in err and "cannot record 'search'" in err


def test_signed_chain_still_verifies_after_searches(
    hq: Hq, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.hotlist.bundle import load_private_key

    insert_read(hq.conn, "7ABC123", T0)
    assert hq.run(monkeypatch, capsys, "--plate", "7ABC123", "--case", "2026-0042")[0] == 0
    assert hq.run(monkeypatch, capsys, "--plate", "7ABC123")[0] == 2
    log = HqAuditLog(hq.conn, load_private_key(hq.key))
    assert log.verify(load_private_key(hq.key).public_key()).ok
