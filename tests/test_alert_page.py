"""The in-car alert page in a real headless Chromium (selenium) and over plain HTTP: login, live alerts with both
images beside the wanted plate, the stale banner, outcomes stored with the officer's name on a real SQLCipher
file, escaping of hostile text, CSRF, sessions, and images only for a logged-in officer."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import cv2
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.access.audit import AuditEntry, AuditLog
from edge.access.users import UserStore
from edge.alerts import OUTCOMES, Alert, HitStore
from edge.gps import Fix
from edge.hotlist.entry import Hit, HotEntry, ListInfo, Substitution
from edge.store.db import Connection, open_db
from edge.store.migrations import migrate
from edge.web.alert_page import AlertHub, AlertPage

from .conftest import render_plate, scene_with_plate

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PW = "correct horse battery"
TODAY = datetime.now().date()
HOUR = 3600.0

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="needs Debian chromium + chromium-driver"
)


def jpeg(img: Any) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(buf)


CROP = jpeg(render_plate("7A8C123", (240, 60)))
SCENE = jpeg(cv2.resize(scene_with_plate("7A8C123")[0], (640, 360)))


def make_alert(
    read_text: str = "7A8C123",
    *,
    stale: bool = True,
    reason: str = "Stolen vehicle",
    instructions: str = "Stop only with probable cause",
    scene: bool = True,
    synopsis: str = "",
) -> Alert:
    now = time.time()
    entry = HotEntry(
        entry_id="NCIC-0042",
        list_id="ncic-or",
        plate="7ABC123",
        state="OR",
        list_code="STOLEN_VEHICLE",
        reason=reason,
        case_number="PPB-24-1187",
        entered=now - 86400,
        expires=None,
        instructions=instructions,
        vehicle_description="grey sedan",
        # a manual entry's P6 details (a signed list's entry has none)
        entered_by="sgt.ames" if synopsis else "",
        requesting_officer="Det. Ruiz #4411" if synopsis else "",
        synopsis=synopsis,
    )
    hit = Hit(entry, 42, read_text, 0, "lookalike", (Substitution(2, "8", "B", 0.41),), 0.8)
    age = 30 * HOUR if stale else 2 * HOUR
    return Alert(
        uuid=str(uuid.uuid4()),
        read_uuid=str(uuid.uuid4()),
        unit_id="car-12",
        camera_id="front-left",
        read_text=read_text,
        read_confidence=0.88,
        seen_at=now - 0.2,
        fix=Fix("gpsd", 3, 45.52312, -122.67648, 30.0, now - 0.5, 0.3, 4.0, 12.0, 90.0),
        hit=hit,
        list_info=ListInfo("ncic-or", 42, now - age, 1000),
        list_age_s=age,
        list_stale=stale,
        crop_jpeg=CROP,
        scene_jpeg=SCENE if scene else None,
        raised_at=now,
    )


# --- the unit side: a real SQLCipher file with accounts and hits, the page on a free loopback port -----------


@dataclass
class Unit:
    page: AlertPage
    hub: AlertHub
    users: UserStore
    hits: HitStore
    calls: list[tuple[str, str, str, str]]
    base: str
    audit: AuditLog

    def records(self, action: str, after: int = 0) -> list[AuditEntry]:
        return [e for e in self.audit.entries(actions=[action]) if e.seq > after]

    def last_seq(self) -> int:
        rows = self.audit.entries()
        return rows[-1].seq if rows else 0


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    path, key = tmp_path_factory.mktemp("unit") / "unit.db", os.urandom(32)
    conn: Connection = open_db(path, key)
    migrate(conn)
    hits_conn = open_db(path, key)  # each store its own connection, as in the daemon
    audit_conn = open_db(path, key)
    audit = AuditLog(audit_conn, Ed25519PrivateKey.generate())
    users = UserStore(conn, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    users.add("officer1", "operator", PW, TODAY)
    users.add("detective", "investigator", PW, TODAY)
    users.add("tech", "technician", PW, TODAY)
    users.add("later", "operator", PW, None)
    hits = HitStore(hits_conn)
    calls: list[tuple[str, str, str, str]] = []

    def record(hit_uuid: str, outcome: str, officer: str, note: str) -> None:
        calls.append((hit_uuid, outcome, officer, note))
        hits.record_outcome(hit_uuid, outcome, officer, note)

    hub = AlertHub(keep=20)
    page = AlertPage(hub, users, record, bind="127.0.0.1", port=0, audit=audit)
    page.start()
    try:
        yield Unit(page, hub, users, hits, calls, f"http://127.0.0.1:{page.port}", audit)
    finally:
        page.stop()
        assert audit.verify(audit.public_key).ok
        conn.close()
        hits_conn.close()
        audit_conn.close()


def publish(unit: Unit, alert: Alert, *, store: bool = True) -> Alert:
    if store:
        unit.hits.add([alert])  # as AlertService does before handing it to the sinks
    unit.hub.publish(alert)
    return alert


# --- plain HTTP -----------------------------------------------------------------------------------------------


class Client:
    """http.client without redirects, keeping our cookies."""

    def __init__(self, unit: Unit) -> None:
        self.port = unit.page.port
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, body: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = urlencode(body).encode()
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        for v in r.headers.get_all("Set-Cookie") or []:
            self.set_cookies.append(v)
            name, _, rest = v.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in v:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        c.close()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, out

    def login(self, name: str, password: str = PW) -> int:
        status, _, body = self.request("GET", "/login")
        assert status == 200
        m = re.search(rb'name="csrf" value="([^"]+)"', body)
        assert m
        status, _, _ = self.request("POST", "/login", {"csrf": m.group(1).decode(), "name": name,
                                                        "password": password})  # fmt: skip
        return status

    def csrf(self) -> str:
        status, _, body = self.request("GET", "/")
        assert status == 200
        m = re.search(rb'name="csrf-token" content="([^"]+)"', body)
        assert m
        return m.group(1).decode()


def test_without_login_pages_redirect_and_data_is_refused(unit: Unit) -> None:
    a = publish(unit, make_alert(), store=False)
    c = Client(unit)
    status, headers, _ = c.request("GET", "/")
    assert status == 302 and headers["location"] == "/login"
    assert c.request("GET", "/anything")[0] == 302
    assert c.request("GET", "/events")[0] == 401
    for kind in ("crop", "scene"):
        status, _, body = c.request("GET", f"/image/{a.uuid}/{kind}")
        assert status == 401 and CROP not in body
    assert c.request("POST", "/outcome", {"hit": a.uuid, "outcome": "confirmed"})[0] == 401
    # a made-up session cookie is no session
    c.cookies["alpr_session"] = "A" * 43
    assert c.request("GET", f"/image/{a.uuid}/crop")[0] == 401
    status, headers, body = c.request("GET", "/login")
    assert status == 200 and b'type="password"' in body


def test_login_sets_a_strict_httponly_session_and_security_headers(unit: Unit) -> None:
    a = publish(unit, make_alert(), store=False)
    c = Client(unit)
    before = unit.last_seq()
    assert c.login("officer1") == 303
    [login] = unit.records("login", before)
    assert (login.user, login.role, login.detail) == (
        "officer1",
        "operator",
        {"what": "hits.view", "via": "alert-page"},
    )
    session = [v for v in c.set_cookies if v.startswith("alpr_session=")]
    assert len(session) == 1 and "HttpOnly" in session[0] and "SameSite=Strict" in session[0]
    status, headers, body = c.request("GET", "/")
    assert status == 200 and b"officer1" in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert b"<script>" not in body  # no inline script
    status, headers, body = c.request("GET", f"/image/{a.uuid}/crop")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body == CROP
    assert headers["cache-control"] == "no-store"
    assert c.request("GET", f"/image/{a.uuid}/scene")[2] == SCENE
    views = unit.records("image.view", before)  # each image served is recorded with the user (P13)
    assert [(e.user, e.detail["image"], e.detail["hit_uuids"], e.detail["read_uuids"]) for e in views] == [
        ("officer1", "crop", [a.uuid], [a.read_uuid]),
        ("officer1", "scene", [a.uuid], [a.read_uuid]),
    ]
    assert c.request("GET", f"/image/{uuid.uuid4()}/crop")[0] == 404
    no_scene = publish(unit, make_alert(scene=False), store=False)
    assert c.request("GET", f"/image/{no_scene.uuid}/scene")[0] == 404
    # logging out ends the session on the server, not only in the browser
    token = c.cookies["alpr_session"]
    status, headers, _ = c.request("POST", "/logout", {"csrf": c.csrf()})
    assert status == 303 and headers["location"] == "/login"
    c.cookies["alpr_session"] = token
    assert c.request("GET", f"/image/{a.uuid}/crop")[0] == 401


def test_refused_logins(unit: Unit) -> None:
    c = Client(unit)
    before = unit.last_seq()
    assert c.login("officer1", "wrong password!") == 401
    assert c.login("nobody") == 401
    assert c.login("later") == 401  # training not completed
    assert c.login("tech") == 403  # a technician sees no plates or images
    assert "alpr_session" not in c.cookies
    # each refusal is in the access record with the real reason, which the page never tells
    refused = [(e.user, e.detail["why"]) for e in unit.records("login.refused", before)]
    assert refused == [("officer1", "password"), ("nobody", "unknown"), ("later", "training")]
    [denied] = unit.records("access.denied", before)
    assert (denied.user, denied.role, denied.detail["what"]) == ("tech", "technician", "hits.view")
    assert not unit.records("login", before)
    assert c.request("GET", "/")[0] == 302
    # the login form itself needs its token (no login CSRF)
    c2 = Client(unit)
    status, _, _ = c2.request("POST", "/login", {"csrf": "x" * 43, "name": "officer1", "password": PW})
    assert status == 403 and "alpr_session" not in c2.cookies


def test_outcome_needs_the_csrf_token_and_same_origin(unit: Unit) -> None:
    a = publish(unit, make_alert())
    c = Client(unit)
    assert c.login("detective") == 303
    token = c.csrf()
    before = len(unit.calls)
    form = {"hit": a.uuid, "outcome": "misread", "note": "I was not there"}
    assert c.request("POST", "/outcome", form)[0] == 403
    assert c.request("POST", "/outcome", form, {"X-CSRF-Token": "A" * 43})[0] == 403
    other_site = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
    assert c.request("POST", "/outcome", form, other_site)[0] == 403
    assert len(unit.calls) == before and unit.hits.outcomes(a.uuid) == []
    # bad input is refused before anything is recorded
    bad = {**form, "outcome": "shot_first"}
    status, _, body = c.request("POST", "/outcome", bad, {"X-CSRF-Token": token})
    assert status == 400 and b"outcome: must be one of" in body
    status, _, body = c.request("POST", "/outcome", {**form, "hit": str(uuid.uuid4())}, {"X-CSRF-Token": token})
    assert status == 400 and b"no hit" in body  # the store's UnknownHitError
    status, _, body = c.request("POST", "/outcome", form, {"X-CSRF-Token": token})
    assert status == 200 and json.loads(body)["officer"] == "detective"
    (stored,) = unit.hits.outcomes(a.uuid)
    assert (stored.outcome, stored.officer, stored.note) == ("misread", "detective", "I was not there")


def test_disabling_a_user_ends_the_session(unit: Unit) -> None:
    unit.users.add("temp", "operator", PW, TODAY)
    c = Client(unit)
    assert c.login("temp") == 303
    assert c.request("GET", "/")[0] == 200
    unit.users.disable("temp")
    assert c.request("GET", "/")[0] == 302


def test_idle_session_times_out(unit: Unit) -> None:
    page = AlertPage(unit.hub, unit.users, lambda *a: None, port=0, idle_timeout_s=0.4, max_session_s=60,
                     audit=unit.audit)  # fmt: skip
    page.start()
    try:
        c = Client(unit)
        c.port = page.port
        assert c.login("officer1") == 303
        assert c.request("GET", "/")[0] == 200
        time.sleep(0.6)
        assert c.request("GET", "/")[0] == 302
    finally:
        page.stop()


def test_server_sent_event_arrives_well_under_200_ms(unit: Unit) -> None:
    c = Client(unit)
    assert c.login("officer1") == 303
    conn = http.client.HTTPConnection("127.0.0.1", unit.page.port, timeout=10)
    conn.request("GET", "/events", headers={"Cookie": f"alpr_session={c.cookies['alpr_session']}"})
    r = conn.getresponse()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    fresh = make_alert()
    got: dict[str, float] = {}

    def reader() -> None:
        while True:
            line = r.fp.readline()
            if not line:
                return
            if line.startswith(b"data: ") and fresh.uuid.encode() in line:
                got["t"] = time.perf_counter()
                got["doc"] = json.loads(line[6:])  # type: ignore[assignment]
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)  # the replay of the recent alerts has been read
    sent = time.perf_counter()
    unit.hub.publish(fresh)
    published = time.perf_counter() - sent
    t.join(5)
    conn.close()
    assert "t" in got, "the alert never arrived"
    assert published < 0.01  # publish only queues
    assert got["t"] - sent < 0.1, got["t"] - sent  # recorded in the access record first, and still this fast
    assert fresh.uuid in [e.detail["hit_uuids"][0] for e in unit.records("hits.view") if e.user == "officer1"]
    doc: Any = got["doc"]
    assert doc["wanted_plate"] == "7ABC123" and doc["list_stale"] is True and "crop_jpeg" not in doc


def test_hub_keeps_the_last_alerts_and_never_blocks_on_a_stuck_listener() -> None:
    hub = AlertHub(keep=3, queue_size=5)
    stuck = hub.subscribe()  # never read
    alerts = [make_alert(f"AB{i:03d}") for i in range(8)]
    t = time.perf_counter()
    for a in alerts:
        hub.publish(a)
    assert time.perf_counter() - t < 0.05
    assert [a.uuid for a in hub.recent()] == [a.uuid for a in alerts[-3:]]
    assert hub.get(alerts[0].uuid) is None and hub.get(alerts[-1].uuid) is alerts[-1]
    assert stuck.closed  # cut off; it resubscribes and gets the recent alerts
    late = hub.subscribe()
    assert [late.get(0.1) for _ in range(3)] == alerts[-3:]
    assert late.get(0.01) is None
    hub.close()
    assert late.closed


# --- a real browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 5.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def by(sel: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, sel)


def browser_login(driver: Any, unit: Unit, name: str, password: str = PW) -> None:
    driver.delete_all_cookies()
    driver.get(unit.base + "/login")
    driver.find_element(*by("#name")).send_keys(name)
    driver.find_element(*by("#password")).send_keys(password)
    driver.find_element(*by("#login")).click()


def test_browser_login_required_and_bad_login_refused(browser: Any, unit: Unit) -> None:
    browser.delete_all_cookies()
    browser.get(unit.base + "/")
    assert browser.current_url == unit.base + "/login"
    browser_login(browser, unit, "officer1", "not the password")
    err = wait(browser, lambda d: d.find_element(*by("#login-error")))
    assert "login refused" in err.text
    assert browser.current_url == unit.base + "/login"
    assert browser.get_cookie("alpr_session") is None


def test_browser_technician_is_refused(browser: Any, unit: Unit) -> None:
    browser_login(browser, unit, "tech")
    err = wait(browser, lambda d: d.find_element(*by("#login-error")))
    assert "technician may not see alerts" in err.text
    browser.get(unit.base + "/")
    assert browser.current_url == unit.base + "/login"


def test_browser_live_alert_with_images_beside_the_wanted_plate(browser: Any, unit: Unit) -> None:
    browser_login(browser, unit, "officer1")
    wait(browser, lambda d: d.find_element(*by("#conn")).text == "live")
    cookie = browser.get_cookie("alpr_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    old = len(browser.find_elements(*by("article.alert")))

    a = make_alert()
    sent = time.perf_counter()
    publish(unit, a)
    art = wait(browser, lambda d: d.find_element(*by(f"#alert-{a.uuid}")))
    arrived = time.perf_counter() - sent
    assert arrived < 1.0, arrived  # the page's own delivery is measured over HTTP above; this adds the polling
    assert len(browser.find_elements(*by("article.alert"))) == old + 1  # live: no reload

    crop, scene = art.find_element(*by(".crop img")), art.find_element(*by(".scene img"))
    wait(browser, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                                for i in (crop, scene)))  # fmt: skip
    assert browser.execute_script("return arguments[0].naturalWidth", crop) == 240
    assert browser.execute_script("return arguments[0].naturalWidth", scene) == 640
    wanted = art.find_element(*by(".wanted-plate"))
    assert wanted.text == "7ABC123"
    # beside: on one row, the captured plate left of the wanted plate, the scene right of it
    rc, rw, rs = crop.rect, wanted.rect, scene.rect
    assert rc["x"] + rc["width"] <= rw["x"] and rw["x"] + rw["width"] <= rs["x"]
    assert rc["y"] < rw["y"] + rw["height"] and rw["y"] < rc["y"] + rc["height"]

    text = art.text
    assert art.find_element(*by(".stale-banner")).text == "HOT LIST STALE"
    assert art.find_element(*by(".instructions")).text == "INSTRUCTIONS: Stop only with probable cause"
    assert "Stolen vehicle (STOLEN_VEHICLE)" in text
    assert a.hit.explain() in text
    assert "ncic-or version 42, 30.0 h old (STALE)" in text
    assert "front-left" in text and "45.52312, -122.67648" in text and "PPB-24-1187" in text
    assert "Read 7A8C123 (88%)" in text
    assert "Synopsis" not in text and "Requested by" not in text  # a signed list's entry has no P6 details
    assert int(browser.find_element(*by("body")).get_attribute("data-beeps") or 0) >= 1

    fresh = publish(unit, make_alert(stale=False, instructions="", synopsis="Taken from a driveway on NE 42nd."))
    art2 = wait(browser, lambda d: d.find_element(*by(f"#alert-{fresh.uuid}")))
    p6 = ("Synopsis\nTaken from a driveway on NE 42nd.", "Requested by\nDet. Ruiz #4411", "Entered by\nsgt.ames")
    for line in p6:
        assert line in art2.text, art2.text
    assert art2.find_elements(*by(".stale-banner")) == []
    assert "2.0 h old" in art2.text and "(STALE)" not in art2.text
    assert "No instructions" in art2.find_element(*by(".instructions")).text
    # newest first
    assert browser.find_elements(*by("article.alert"))[0].get_attribute("id") == f"alert-{fresh.uuid}"


def test_browser_outcome_is_recorded_with_the_officer_name(browser: Any, unit: Unit) -> None:
    browser_login(browser, unit, "officer1")
    a = publish(unit, make_alert())
    art = wait(browser, lambda d: d.find_element(*by(f"#alert-{a.uuid}")))
    labels = [b.text for b in art.find_elements(*by(".outcome-button"))]
    assert len(labels) == len(OUTCOMES) and "Not the vehicle" in labels
    art.find_element(*by(".note")).send_keys("driver detained, VIN matches")
    art.find_element(*by('button[data-outcome="confirmed"]')).click()
    status = art.find_element(*by(".outcome-status"))
    wait(browser, lambda d: status.text.startswith("Recorded:"))
    assert "Confirmed by officer1" in status.text
    assert unit.calls[-1] == (a.uuid, "confirmed", "officer1", "driver detained, VIN matches")
    (stored,) = unit.hits.outcomes(a.uuid)
    assert (stored.outcome, stored.officer, stored.note) == ("confirmed", "officer1", "driver detained, VIN matches")
    # a second outcome for the same hit (P8: confirmed, then arrest)
    art.find_element(*by('button[data-outcome="arrest"]')).click()
    wait(browser, lambda d: "Arrest by officer1" in status.text)
    assert [o.outcome for o in unit.hits.outcomes(a.uuid)] == ["confirmed", "arrest"]
    # a reload shows what was recorded
    browser.refresh()
    again = wait(browser, lambda d: d.find_element(*by(f"#alert-{a.uuid} .outcome-status")))
    assert "Arrest by officer1" in again.text


def test_browser_shows_hostile_text_escaped(browser: Any, unit: Unit) -> None:
    browser_login(browser, unit, "officer1")
    wait(browser, lambda d: d.find_element(*by("#conn")).text == "live")
    evil = make_alert(
        "<script>window.pwned=1</script>",
        reason='<img src=x onerror="window.pwned=2">',
        instructions="</div><b>bold</b>",
        synopsis="<b>seen</b> near <img src=x onerror=\"window.pwned=3\">",
    )
    evil = replace(evil, hit=replace(evil.hit, entry=replace(evil.hit.entry, plate="<i>7ABC</i>")))
    publish(unit, evil, store=False)
    art = wait(browser, lambda d: d.find_element(*by(f"#alert-{evil.uuid}")))
    assert "Read <script>window.pwned=1</script> (88%)" in art.text
    assert art.find_element(*by(".wanted-plate")).text == "<i>7ABC</i>"
    assert '<img src=x onerror="window.pwned=2"> (STOLEN_VEHICLE)' in art.text
    assert art.find_element(*by(".instructions")).text == "INSTRUCTIONS: </div><b>bold</b>"
    assert '<b>seen</b> near <img src=x onerror="window.pwned=3">' in art.text
    time.sleep(0.2)
    assert browser.execute_script("return window.pwned") is None
    assert art.find_elements(*by("script, b, i, img[src='x']")) == []


def test_browser_logout(browser: Any, unit: Unit) -> None:
    browser_login(browser, unit, "officer1")
    wait(browser, lambda d: d.find_element(*by("#conn")).text == "live")
    browser.find_element(*by("#logout")).click()
    wait(browser, lambda d: d.current_url == unit.base + "/login")
    browser.get(unit.base + "/")
    assert browser.current_url == unit.base + "/login"
