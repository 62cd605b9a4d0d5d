"""The monthly audit (P15), the yearly report (P16) and outside-agency requests (P11) at headquarters, on a real
PostgreSQL (tests/sync_env.py) holding a fixture year: searches in headquarters' access record (made by the real
HqAuditLog) and in the units' synced records (signed entries made by edge.access.audit), reads, hits, outcomes,
purges, requests, batches and maintenance records. The PDFs are turned into images and looked at (not blank) and
their text layer is read for the key figures, as a person opening them would."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pypdfium2 as pdfium
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageStat
from psycopg.types.json import Jsonb

from edge.access.audit import GENESIS, make_entry
from edge.access.reasons import check_purpose
from edge.access.session import AccessDenied
from edge.cli import main
from edge.hotlist.bundle import private_key_pem
from edge.hq import audits, render, report, schema
from edge.hq import requests as outside
from edge.hq.access import HqAuditLog, HqSession, HqUserStore

from .sync_env import Postgres, postgres_fixture  # noqa: F401

PW = "correct horse battery"
CHEAP = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}
YEAR = 2025
PNG_DIR = os.environ.get("ALPR_TEST_PNG_DIR")  # set it to keep the pages as PNG files to look at
HOSTILE = "<script>alert(1)</script> stolen vehicle seen near the school this morning"
USERS = (
    ("ivan", "investigator"), ("adam", "administrator"), ("beth", "administrator"), ("alice", "auditor"),
    ("olga", "operator"),
)  # fmt: skip


def ts(month: int, day: int, hour: int = 12, year: int = YEAR) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


# --- the fixture year ---------------------------------------------------------------------------------------------


class Units:
    """Each unit's access record as a real signed chain, stored as headquarters' ingest stores it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.last: dict[str, tuple[int, str]] = {}

    def entry(self, device: str, at: float, action: str, *, user: str = "ines", role: str = "investigator",
              reason: str = "", detail: dict[str, Any] | None = None) -> str:  # fmt: skip
        key = self.keys.setdefault(device, Ed25519PrivateKey.generate())
        seq, prev = self.last.get(device, (0, GENESIS))
        e = make_entry(key, seq + 1, prev, at, user, role, action, reason, detail or {})
        self.last[device] = (e.seq, e.hash)
        self.conn.execute(
            "INSERT INTO audit (uuid, device_id, data, received_at) VALUES (%s, %s, %s, %s)",
            (e.uuid, device, Jsonb(e.to_json()), at + 3600),
        )
        return e.uuid


def search_detail(
    case: str | None, reason: str | None, agency: str | None = None, results: int = 2, request: str | None = None
) -> tuple[str, dict[str, Any]]:
    p = check_purpose(case, reason, agency, "Sgt Lee" if agency else None, "robbery inquiry" if agency else None)
    detail: dict[str, Any] = {
        "criteria": {"plate": "ABC123", "mode": "exact"},
        "results": results,
        "read_uuids": [str(uuid.uuid4()) for _ in range(results)],
        "purpose": p.to_json(),
    }
    if request:
        detail["request"] = {"id": request}
    return p.audit_reason(), detail


def hq_search(conn: psycopg.Connection, key: Ed25519PrivateKey, at: float, user: str, role: str, *args: Any,
              **kw: Any) -> str:  # fmt: skip
    reason, detail = search_detail(*args, **kw)
    return HqAuditLog(conn, key, clock=lambda: at).record(user, role, "search", reason=reason, detail=detail).uuid


def read_row(conn: psycopg.Connection, device: str, seen: float) -> None:
    conn.execute(
        "INSERT INTO reads (uuid, device_id, camera_id, text, confidence, char_confidences, candidates, box_x, box_y,"
        " box_w, box_h, first_seen, last_seen, best_seen, frames_seen, fix_source, fix_mode, received_at) VALUES"
        " (%s, %s, 'front', 'XYZ987', 0.9, '[]', '[]', 0, 0, 10, 5, %s, %s, %s, 3, 'none', 0, %s)",
        (str(uuid.uuid4()), device, seen, seen, seen, seen + 60),
    )


def hit_row(conn: psycopg.Connection, seen: float) -> str:
    h = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO hits (uuid, device_id, read_uuid, camera_id, read_text, read_confidence, seen_at, list_id,"
        " list_version, entry_id, wanted_plate, list_code, reason, instructions, case_number, matched_text,"
        " match_kind, match_detail, list_age_s, list_stale, created_at, received_at) VALUES (%s, 'unit-1', %s,"
        " 'front', 'XYZ987', 0.9, %s, 'ncic', 1, 'e1', 'XYZ987', 'SV', 'stolen vehicle', '', '', 'XYZ987',"
        " 'exact', '{}', 60, false, %s, %s)",
        (h, str(uuid.uuid4()), seen, seen, seen + 60),
    )
    return h


def outcome_row(conn: psycopg.Connection, hit: str, outcome: str, at: float) -> None:
    conn.execute(
        "INSERT INTO hit_outcomes (uuid, device_id, hit_uuid, outcome, officer, at, received_at) "
        "VALUES (%s, 'unit-1', %s, %s, 'off1', %s, %s)",
        (str(uuid.uuid4()), hit, outcome, at, at + 60),
    )


class Fixture:
    """A headquarters database with the fixture year in it; ``march`` and ``feb`` are the searches of each month."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.key = Ed25519PrivateKey.generate()
        self.key_file = folder / "hq-signing.pem"
        self.key_file.write_bytes(private_key_pem(self.key))
        self.key_file.chmod(0o600)
        self.conn = schema.connect(url)
        schema.migrate(self.conn)
        users = HqUserStore(self.conn, hasher=PasswordHasher(**CHEAP))
        for name, role in USERS:
            users.add(name, role, PW, date(2020, 1, 1))
        self.march: list[str] = []
        self.feb: list[str] = []
        self.units = Units(self.conn)
        self._searches()
        self._year()

    def session(self, name: str) -> HqSession:
        user = HqUserStore(self.conn).get(name)
        assert user is not None
        return HqSession(user, HqAuditLog(self.conn, self.key))

    def _searches(self) -> None:
        c, k, u = self.conn, self.key, self.units
        self.request_sp = self._request("State Police", "SP-2025-77", approve=True, at=ts(2, 20))
        for d in range(1, 7):  # six at headquarters by an investigator
            self.march.append(hq_search(c, k, ts(3, d * 3), "ivan", "investigator", f"2025-{d:04d}", None))
        self.march.append(hq_search(c, k, ts(3, 25), "adam", "administrator", None,
                                    "vehicle seen leaving the bank robbery on Main street"))  # fmt: skip
        # an outside-agency search at headquarters without an approved request on file (flagged in the report)
        self.march.append(hq_search(c, k, ts(3, 26), "ivan", "investigator", "CS-0001", None, "County Sheriff"))
        for d in range(1, 6):
            reason, detail = search_detail(f"U1-{d:03d}", None, results=d)
            self.march.append(u.entry("unit-1", ts(3, d * 2, 9), "search", reason=reason, detail=detail))
        reason, detail = search_detail(None, HOSTILE)
        self.march.append(u.entry("unit-1", ts(3, 14, 9), "search", reason=reason, detail=detail))
        reason, detail = search_detail("SP-2025-77", None, "State  police", results=4)  # approved for this case
        self.march.append(u.entry("unit-2", ts(3, 15, 8), "search", reason=reason, detail=detail))
        for d in (17, 19):
            reason, detail = search_detail(f"U2-{d}", None)
            self.march.append(u.entry("unit-2", ts(3, d, 8), "search", reason=reason, detail=detail))
        assert len(self.march) == 17
        for d in (3, 9):  # February: four searches
            self.feb.append(hq_search(c, k, ts(2, d), "ivan", "investigator", f"2025-F{d:03d}", None))
            reason, detail = search_detail(f"F-{d:03d}", None)
            self.feb.append(u.entry("unit-1", ts(2, d + 1), "search", reason=reason, detail=detail))
        for d in (1, 2):  # April
            hq_search(c, k, ts(4, d), "ivan", "investigator", f"2025-A{d:03d}", None)
        # a unit's entry whose time is not a number: never drawn, never counted, never a crash
        c.execute("INSERT INTO audit (uuid, device_id, data, received_at) VALUES (%s, 'unit-2', %s, %s)",
                  (str(uuid.uuid4()), Jsonb({"action": "search", "at": "soon", "user": "x"}), ts(3, 20)))  # fmt: skip
        # other actions in March are not searches
        u.entry("unit-1", ts(3, 5), "reads.view", detail={"read_uuids": [], "count": 0})
        HqAuditLog(c, k, clock=lambda: ts(3, 6)).record("ivan", "investigator", "login")

    def _request(self, agency: str, case: str, *, approve: bool | None, at: float) -> str:
        r = outside.add_request(self.conn, self.session("ivan"), agency, "Sgt Lee", "robbery inquiry", case,
                                clock=lambda: at)  # fmt: skip
        if approve is not None:
            outside.decide(self.conn, self.session("beth"), r.id, approve, "checked the written request form",
                           clock=lambda: at + 3600)  # fmt: skip
        return r.id

    def _year(self) -> None:
        c, u = self.conn, self.units
        self._request("Town PD", "TPD-9", approve=False, at=ts(5, 2))
        self._request("Harbor Police", "HP-1", approve=None, at=ts(6, 2))
        for device, first in (("unit-1", ts(1, 1, 0)), ("unit-2", ts(1, 1, 0)), ("unit-3", ts(1, 5))):
            c.execute("INSERT INTO devices (device_id, first_seen, last_seen, last_sync) VALUES (%s, %s, %s, %s)",
                      (device, first, ts(12, 30), ts(12, 30) if device != "unit-3" else ts(6, 1)))  # fmt: skip
        batches = {
            "unit-1": [ts(1, 1, 0) + i * 10 * 86400 for i in range(37)],
            "unit-2": [ts(1, 2), *(ts(3, 15) + i * 10 * 86400 for i in range(29))],  # 72 days without a transfer
            "unit-3": [ts(1, 5) + i * 7 * 86400 for i in range(21)],  # nothing after 1 June: open gap
        }
        for device, times in batches.items():
            for t in times:
                c.execute("INSERT INTO batches (batch_id, device_id, received_at, items, stored, new, rejected) "
                          "VALUES (%s, %s, %s, 5, 5, 5, 0)", (str(uuid.uuid4()), device, t))  # fmt: skip
        # headquarters' purges (Jan..Oct), reads still stored (Nov, Dec), hits and outcomes
        for m in range(1, 11):
            c.execute("INSERT INTO purges (id, at, by_user, older_than, reads, images, hits, outcomes, held_kept) "
                      "VALUES (%s, %s, 'system', %s, %s, %s, %s, 0, 1)",
                      (str(uuid.uuid4()), ts(m, 20) + 30 * 86400, ts(m, 20), 100 * m, 200 * m, m))  # fmt: skip
        for m, n in ((11, 5), (12, 7)):
            for i in range(n):
                read_row(c, "unit-1", ts(m, 1 + i))
        a, b, d = hit_row(c, ts(12, 1)), hit_row(c, ts(12, 2)), hit_row(c, ts(12, 3))
        outcome_row(c, a, "confirmed", ts(12, 1, 13))
        outcome_row(c, a, "arrest", ts(12, 1, 15))  # the same hit: counted once as confirmed
        outcome_row(c, b, "misread", ts(12, 2, 13))
        outcome_row(c, d, "vehicle_recovered", ts(12, 3, 13))
        # the units' purges and maintenance records (from their access records)
        u.entry("unit-1", ts(3, 31), "purge", user="system", role="system",
                detail={"older_than": ts(3, 1), "reads": 50, "images": 100, "hits": 1, "outcomes": 0,
                        "held_kept": 0, "unsynced_kept": 0, "forced": False})  # fmt: skip
        u.entry("unit-2", ts(7, 1), "purge", user="adam", role="administrator",
                detail={"older_than": ts(6, 1), "reads": 20, "images": 40, "hits": 0, "forced": True})  # fmt: skip
        for device, at, action, kind, cam, summary in (
            ("unit-1", ts(3, 3), "calibration", "calibration", "front", "focus and exposure set after lens swap"),
            ("unit-1", ts(6, 10), "maintenance", "maintenance", "", "cleaned the camera windows"),
            ("unit-2", ts(8, 1), "maintenance", "repair", "rear", "replaced the rear camera cable"),
        ):
            u.entry(device, at, action, user="tom", role="technician",
                    detail={"kind": kind, "camera": cam, "summary": summary, "values": {"focus": "1.25"}})  # fmt: skip


@pytest.fixture
def fx(postgres: Postgres, tmp_path: Path) -> Iterator[Fixture]:
    f = Fixture(postgres.new_database("h4"), tmp_path)
    yield f
    f.conn.close()


def hq(fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], user: str,
       *argv: str) -> tuple[int, str, str]:  # fmt: skip
    """``alpr-edge hq ARGV --user USER --password-stdin`` as a person runs it."""
    monkeypatch.setenv("ALPR_HQ_DB_URL", fx.url)
    monkeypatch.setenv("ALPR_HQ_SIGNING_KEY", str(fx.key_file))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PW + "\n"))
    rc = main(["hq", *argv, "--user", user, "--password-stdin"])
    out, err = capsys.readouterr()
    return rc, out, err


def hq_actions(fx: Fixture) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in fx.conn.execute("SELECT user_name, action FROM hq_audit ORDER BY seq")]


# --- looking at PDFs ----------------------------------------------------------------------------------------------


def look_at(pdf_path: Path, name: str, tmp_path: Path) -> str:
    """Render every page to an image, check none is blank, keep the PNGs; the text layer of all pages, its runs of
    white space (line breaks included) folded to one space."""
    doc = pdfium.PdfDocument(str(pdf_path))
    texts = []
    try:
        assert len(doc) >= 1
        for i in range(len(doc)):
            page = doc[i]
            colour: Image.Image = page.render(scale=1.5).to_pil()
            for folder in filter(None, (tmp_path, PNG_DIR)):
                Path(folder).mkdir(parents=True, exist_ok=True)
                colour.save(Path(folder) / f"{name}-{i + 1}.png")
            image = colour.convert("L")
            dark = sum(image.histogram()[:200]) / (image.width * image.height)
            assert dark > 0.005, f"{name} page {i + 1} is blank ({dark:.4f} of it is ink)"
            assert ImageStat.Stat(image).stddev[0] > 10, f"{name} page {i + 1} has no contrast"
            texts.append(page.get_textpage().get_text_range())
    finally:
        doc.close()
    return " ".join(" ".join(texts).split())


def html_is_self_contained(text: str) -> None:
    assert "<script" not in text.lower().replace("&lt;script", "")
    assert not re.search(r"""(src|href)\s*=|url\(|@import|https?://""", text.replace("http://www.w3.org/2000/svg", ""))


# --- the monthly audit --------------------------------------------------------------------------------------------


def test_draw_takes_ten_from_the_month_only_and_repeats_from_its_seed(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "draw", "--month", "2025-03",
                      "--seed", "march-2025")  # fmt: skip
    assert rc == 0, err
    rid = re.search(r"review ([0-9a-f-]{36})", out)
    assert rid and "10 of 17 search(es) drawn" in out
    review = audits.load_review(fx.conn, rid.group(1))
    drawn = [i.search.audit_uuid for i in review.items]
    assert len(drawn) == 10 == len(set(drawn)) and set(drawn) <= set(fx.march)
    assert review.seed == "march-2025" and review.searches_in_period == 17 and review.drawn_by == "alice"
    assert all(ts(3, 1, 0) <= i.search.at < ts(4, 1, 0) for i in review.items)
    assert {i.search.source for i in review.items} - {"hq", "unit-1", "unit-2"} == set()
    # the same seed over the same searches gives the same sample; another seed another one
    population = audits.searches_in_period(fx.conn, review.period_start, review.period_end, review.drawn_at)
    assert [s.audit_uuid for s in audits.draw_sample(population, "march-2025")] == drawn
    assert [s.audit_uuid for s in audits.draw_sample(population, "other-seed")] != drawn
    assert audits.verify_draw(fx.conn, review)
    assert ("alice", "audit.draw") in hq_actions(fx)
    # one review per month
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "draw", "--month", "2025-03")
    assert rc == 2 and "already has review" in err
    # a sample replaced behind the auditor's back no longer reproduces, and show says so
    other = next(u for u in fx.march if u not in drawn)
    fx.conn.execute("UPDATE audit_review_items SET audit_uuid = %s WHERE review_id = %s AND audit_uuid = %s",
                    (other, review.id, drawn[0]))  # fmt: skip
    assert not audits.verify_draw(fx.conn, audits.load_review(fx.conn, review.id))
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "show", review.id[:8])
    assert rc == 0 and "DOES NOT reproduce" in out


def test_a_month_with_fewer_than_ten_searches_draws_all_and_says_so(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, err = hq(fx, monkeypatch, capsys, "adam", "audit", "monthly", "draw", "--month", "2025-02")
    assert rc == 0, err
    assert "4 of 4 search(es) drawn" in out and "fewer than 10" in out
    rid = re.search(r"review ([0-9a-f-]{36})", out)
    assert rid
    assert {i.search.audit_uuid for i in audits.load_review(fx.conn, rid.group(1)).items} == set(fx.feb)
    rc, out, err = hq(fx, monkeypatch, capsys, "adam", "audit", "monthly", "memo", rid.group(1), "--out",
                      str(tmp_path / "memo"))  # fmt: skip
    assert rc == 0 and "draft" in out
    text = look_at(next((tmp_path / "memo").glob("*.pdf")), "memo-feb", tmp_path)
    assert "DRAFT" in text and "fewer than the 10" in text and "all of them are reviewed" in text
    for bad in ("2030-01", "2025-13", "march"):
        rc, out, err = hq(fx, monkeypatch, capsys, "adam", "audit", "monthly", "draw", "--month", bad)
        assert rc == 2 and "month" in err


def test_findings_then_signoff_by_an_auditor_only_and_the_memorandum(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    start, end = audits.month_bounds(2025, 3)
    review = audits.draw(fx.conn, fx.session("alice"), start, end, seed="s1")
    items = review.items
    alice, adam = fx.session("alice"), fx.session("adam")
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "show", review.id, "--json")
    assert rc == 0
    shown = json.loads(out)
    assert shown["draw_reproduces"] and len(shown["items"]) == 10
    first = shown["items"][0]
    assert first["user"] and first["criteria"] == {"plate": "ABC123", "mode": "exact"} and first["reason"]
    assert first["results"] == len(first["read_uuids"]) and first["finding"] is None
    assert ("alice", "audit.view") in hq_actions(fx)
    # every finding but the last
    for it in items[:-1]:
        who = adam if it.search.user != "adam" else alice
        audits.record_finding(fx.conn, who, review.id, it.search.audit_uuid[:8], "compliant", "")
    with pytest.raises(audits.ReviewError, match="at least 10"):
        audits.record_finding(fx.conn, alice, review.id, items[-1].search.audit_uuid, "non-compliant", "no")
    with pytest.raises(audits.ReviewError, match="not among the searches drawn"):
        audits.record_finding(fx.conn, alice, review.id, str(uuid.uuid4()), "compliant", "")
    own = [it for it in items if it.search.user == "adam"]
    if own:
        with pytest.raises(audits.ReviewError, match="nobody reviews their own"):
            audits.record_finding(fx.conn, adam, review.id, own[0].search.audit_uuid, "compliant", "")
    # sign-off: refused while a search has no finding, and for anyone but an auditor
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "signoff", review.id, "--conclusion",
                      "All searches had a proper case number.", "--out", str(tmp_path / "m"))  # fmt: skip
    assert rc == 2 and "1 of 10 search(es) have no finding yet" in err and not (tmp_path / "m").exists()
    note = "ask the investigator for the case file"
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "finding", review.id,
                      items[-1].search.audit_uuid, "follow-up", "--note", note)  # fmt: skip
    assert rc == 0 and "0 search(es) of the review still without a finding" in out
    for user in ("adam", "ivan"):
        rc, out, err = hq(fx, monkeypatch, capsys, user, "audit", "monthly", "signoff", review.id, "--conclusion",
                          "Everything is in order this month.", "--out", str(tmp_path / "m"))  # fmt: skip
        assert rc == 2 and "audit.signoff: needs role auditor" in err
    with pytest.raises(AccessDenied):
        audits.sign_off(fx.conn, adam, review.id, "Everything is in order this month.", tmp_path / "m")
    assert ("adam", "access.denied") in hq_actions(fx)
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "signoff", review.id, "--conclusion",
                      "Nine compliant; one follow-up with the investigator.", "--out", str(tmp_path / "m"))  # fmt: skip
    assert rc == 0, err
    signed = audits.load_review(fx.conn, review.id)
    assert signed.signed_by == "alice" and signed.signed_at and signed.memo_sha256
    pdf = next((tmp_path / "m").glob("audit-2025-03-*.pdf"))
    html = pdf.with_suffix(".html").read_text()
    assert hashlib.sha256(pdf.read_bytes()).hexdigest() == signed.memo_sha256
    assert oct(pdf.stat().st_mode & 0o777) == "0o600"
    assert ("alice", "audit.signoff") in hq_actions(fx)
    # the memorandum as a person sees it: period, how drawn, each search and finding, conclusion, sign-off
    text = look_at(pdf, "memo-march", tmp_path)
    for needed in ("Monthly audit of searches: March 2025", "2025-03-01 00:00 UTC", "Seed", "s1", "17", "10",
                   "random.Random", "follow-up", "ask the investigator", "Nine compliant; one follow-up",
                   "Signed off by", "alice", "Compliant", "9"):  # fmt: skip
        assert needed in text, needed
    assert "DRAFT" not in text
    for it in signed.items:
        assert it.search.user in text
    html_is_self_contained(html)
    assert "Nine compliant; one follow-up" in html
    # closed: no more findings; the memorandum renders again to the same bytes
    with pytest.raises(audits.ReviewError, match="signed off"):
        audits.record_finding(fx.conn, alice, review.id, items[0].search.audit_uuid, "non-compliant", "late change")
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "memo", review.id[:10], "--out",
                      str(tmp_path / "again"))  # fmt: skip
    assert rc == 0 and "matches the signed memorandum" in out
    rc, out, err = hq(fx, monkeypatch, capsys, "alice", "audit", "monthly", "show")
    assert rc == 0 and review.id in out and "signed by alice" in out


def test_hostile_text_is_escaped_in_the_memorandum(fx: Fixture, tmp_path: Path) -> None:
    start, end = audits.month_bounds(2025, 3)
    review = audits.draw(fx.conn, fx.session("alice"), start, end, seed="x", size=17)  # all of them
    assert len(review.items) == 17
    html = render.to_html(audits.memorandum(review))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    html_is_self_contained(html)
    text = look_at_bytes(render.to_pdf(audits.memorandum(review, now=ts(4, 2))), tmp_path, "memo-all")
    assert "<script>alert(1)</script> stolen vehicle" in text


def look_at_bytes(pdf: bytes, tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    return look_at(path, name, tmp_path)


# --- the yearly report --------------------------------------------------------------------------------------------


def test_yearly_figures(fx: Fixture) -> None:
    r = report.gather(fx.conn, YEAR, ts(6, 1, year=2026))
    assert r.reads == {m: 100 * m for m in range(1, 11)} | {11: 5, 12: 7}  # purged (by cut-off) + still stored
    assert r.hits == {m: m for m in range(1, 11)} | {12: 3}
    assert r.confirmed == {12: 2} and r.outcomes == {"confirmed": 1, "arrest": 1, "misread": 1, "vehicle_recovered": 1}
    assert len(r.searches) == 4 + 17 + 2
    gaps = {g.device_id: g for g in r.gaps}
    assert gaps["unit-1"].longest_days <= 10.1 and gaps["unit-1"].over_limit == 0
    assert gaps["unit-2"].longest_days == 72.0 and gaps["unit-2"].over_limit == 1 and not gaps["unit-2"].open_gap
    assert gaps["unit-3"].open_gap and gaps["unit-3"].longest_days > 200
    assert {(p.device_id, p.reads, p.forced) for p in r.unit_purges} == {("unit-1", 50, False), ("unit-2", 20, True)}
    assert [m.kind for m in r.maintenance] == ["calibration", "maintenance", "repair"]
    assert sorted(s for _, s in r.requests) == ["approved", "denied", "pending"]
    with pytest.raises(report.ReportError):
        report.gather(fx.conn, 2099, ts(6, 1, year=2026))


def test_yearly_report_renders_with_the_key_figures(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = hq(fx, monkeypatch, capsys, "olga", "report", "yearly", "--year", "2025", "--out", str(tmp_path))
    assert rc == 2 and "report: needs role auditor or administrator" in err
    rc, _, err = hq(fx, monkeypatch, capsys, "alice", "report", "yearly", "--year", "2025", "--out", str(tmp_path))
    assert rc == 0, err
    assert ("alice", "report.yearly") in hq_actions(fx)
    text = look_at(tmp_path / "yearly-report-2025.pdf", "yearly", tmp_path)
    flat = text
    for needed in (
        "ALPR yearly report 2025", "Reads 5,512", "Hits 58", "Confirmed hits 2", "Searches 23",
        "case number: 19", "reason: 2", "outside agency: 2", "approved: 1, denied: 1, pending: 1",
        "Units with a sync gap over 30 days 2", "Maintenance and calibration records 3",
        "Reads per month", "Searches per month", "State Police", "County Sheriff", "Town PD",
        "1 search(es) for an outside agency have no approved request", "unit-2", "OVER 30 DAYS", "(still open)",
        "replaced the rear camera cable", "vehicle_recovered",
        # agency: requests, approved, denied, pending, searches, reads returned
        "State Police 1 1 0 0 1 4", "County Sheriff 0 0 0 0 1 2",
        "unit-1 1 1 0 0 0 2025-03-03 12:00 UTC", "unit-3 21 220.5",
    ):  # fmt: skip
        assert needed in flat, needed
    html = (tmp_path / "yearly-report-2025.html").read_text()
    html_is_self_contained(html)
    assert html.count("<svg") == 4 and "5,512" in html


# --- outside-agency requests --------------------------------------------------------------------------------------


def test_requests_need_an_administrator_other_than_who_entered_them(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add = ["requests", "add", "--agency", "Metro Police", "--person", "Det. Ruiz", "--purpose",
           "hit and run investigation", "--case", "MP-2026-4"]  # fmt: skip
    rc, out, err = hq(fx, monkeypatch, capsys, "olga", *add)
    assert rc == 2 and "requests.enter: needs role" in err
    rc, out, err = hq(fx, monkeypatch, capsys, "adam", *add)
    assert rc == 0, err
    rid = re.search(r"request ([0-9a-f-]{36})", out)
    assert rid
    rc, out, err = hq(fx, monkeypatch, capsys, "ivan", "requests", "approve", rid.group(1))
    assert rc == 2 and "requests.decide: needs role administrator" in err
    rc, out, err = hq(fx, monkeypatch, capsys, "adam", "requests", "approve", rid.group(1))
    assert rc == 2 and "who cannot also decide it" in err
    assert outside.find_approved(fx.conn, "metro police", "MP-2026-4") is None
    rc, out, err = hq(fx, monkeypatch, capsys, "beth", "requests", "approve", rid.group(1)[:8], "--note", "form ok")
    assert rc == 0 and "approved" in out, err
    got = outside.find_approved(fx.conn, " METRO   police ", "MP-2026-4")
    assert got is not None and got.decided_by == "beth" and got.entered_by == "adam"
    rc, out, err = hq(fx, monkeypatch, capsys, "beth", "requests", "deny", rid.group(1), "--note", "changed my mind")
    assert rc == 2 and "already approved by beth" in err
    assert [a for _, a in hq_actions(fx) if a.startswith("requests.")][-2:] == ["requests.enter", "requests.approve"]
    rc, out, err = hq(fx, monkeypatch, capsys, "ivan", "requests", "list", "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and {r["agency"] for r in rows} >= {"Metro Police", "State Police", "Town PD"}
    # what a request must say, and what a denial must say
    beth = fx.session("beth")
    for args, message in (
        (("Metro", "", "hit and run", "MP-1"), "missing: person"),
        (("Metro", "Det. Ruiz", "hit and run", "x"), "case number"),
        (("Metro", "Det. Ruiz", "hit and run", ""), "case number"),
        (("Metro\x07", "Det. Ruiz", "hit and run", "MP-1"), "control characters"),
    ):
        with pytest.raises(ValueError, match=message):
            outside.add_request(fx.conn, fx.session("ivan"), *args)
    pending = outside.add_request(fx.conn, fx.session("ivan"), "Metro Police", "Det. Ruiz", "stolen boat", "MP-7")
    with pytest.raises(outside.RequestError, match="a denial says why"):
        outside.decide(fx.conn, beth, pending.id, False, "no")
    assert outside.decide(fx.conn, beth, pending.id, False, "no written form was provided").status == "denied"
    assert outside.find_approved(fx.conn, "Metro Police", "MP-7") is None


def test_units_maintenance_records_at_headquarters(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = hq(fx, monkeypatch, capsys, "ivan", "maintenance", "list")
    assert rc == 2 and "maintenance: needs role technician or administrator" in err
    rc, out, err = hq(fx, monkeypatch, capsys, "adam", "maintenance", "list", "--device", "unit-1", "--json")
    assert rc == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["kind"], r["camera"]) for r in rows] == [("calibration", "front"), ("maintenance", "")]
    assert rows[0]["values"] == {"focus": "1.25"} and rows[0]["user"] == "tom"
    rc, out, err = hq(fx, monkeypatch, capsys, "adam", "maintenance", "list")
    assert rc == 0 and "replaced the rear camera cable" in out and "3 record(s)" in out
