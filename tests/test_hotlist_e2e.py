"""End to end: footage with a wanted plate -> the daemon reads it -> a signed hot list hit -> an alert on the in-car
page (real headless Chromium, logged in) and on MQTT (real Mosquitto) -> the officer's outcome is stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from edge.access.users import UserStore
from edge.alerts import HitStore
from edge.hotlist.bundle import load_private_key, sign_bundle, write_keypair
from edge.hotlist.csvformat import write_csv
from edge.hotlist.entry import HotEntry
from edge.hotlist.manual import ManualEntries
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate

from .footage import daemon_config, write_passes
from .test_alert_page import CHROMEDRIVER, CHROMIUM, by, wait
from .test_alerts import UNIT_PW, UNIT_USER, Broker, Subscriber, free_port

PLATES = ["7ABC123", "KM4521", "BRT5X09", "4FCW533"]
OFFICER, PW = "officer1", "correct horse battery"


def wanted(plate: str, entry_id: str, reason: str) -> HotEntry:
    return HotEntry(entry_id, "ncic-test", plate, None, "STOLEN_VEHICLE", reason, f"CASE-{entry_id}",
                    time.time() - 86400, None, "Stop only with probable cause")  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder, {UNIT_USER: UNIT_PW, "dispatch": "dispatch-secret"})
    b.start()
    yield b
    b.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_wanted_plate_in_footage_alerts_on_the_page_and_on_mqtt(tmp_path: Path, broker: Broker, browser: Any) -> None:
    frames = tmp_path / "frames"
    write_passes(frames, PLATES)
    data = tmp_path / "data"
    create_key_file(data / "db.key")
    key = load_key(data / "db.key")
    conn = open_db(data / "reads.db", key)
    migrate(conn)
    UserStore(conn).add(OFFICER, "operator", PW, date(2020, 1, 1))
    conn.close()
    # headquarters signs a list holding one plate of the footage exactly and one as a look-alike (O for 0)
    write_keypair(tmp_path / "hq.pem", tmp_path / "hq.pub")
    csv = write_csv([wanted("KM4521", "e1", "Stolen vehicle"), wanted("BRT5XO9", "e2", "Stolen plate"),
                     wanted("ZZZ9999", "e3", "Not in the footage")])  # fmt: skip
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "ncic.hlb").write_bytes(
        sign_bundle(load_private_key(tmp_path / "hq.pem"), "ncic-test", 7, csv)
    )
    (tmp_path / "mqtt.pw").write_text(UNIT_PW)
    page_port = free_port()
    cfg = daemon_config(
        tmp_path,
        frames,
        fps=20,
        extra=f'[hotlist]\npublic_keys = ["{tmp_path / "hq.pub"}"]\nsources = ["{tmp_path / "incoming"}"]\n',
        alerts=f'[alerts]\npage = true\npage_port = {page_port}\nmqtt_host = "127.0.0.1"\nmqtt_port = {broker.port}\n'
        f'mqtt_username = "{UNIT_USER}"\nmqtt_password_file = "{tmp_path / "mqtt.pw"}"\n',
    )
    center = Subscriber(broker.port, "alpr/test-unit/alerts")
    p = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg), "--forever"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        msgs = center.wait_for(2, timeout=60)
        by_plate = {m["wanted"]["plate"]: m for m in msgs}
        assert set(by_plate) == {"KM4521", "BRT5XO9"}
        assert by_plate["KM4521"]["read"]["text"] == "KM4521" and by_plate["KM4521"]["list"]["version"] == 7
        look = by_plate["BRT5XO9"]
        assert look["read"]["text"] == "BRT5X09" and look["match"]["kind"] == "lookalike"
        assert [(s["read_char"], s["wanted_char"]) for s in look["match"]["substitutions"]] == [("0", "O")]
        assert look["position"]["lat"] == pytest.approx(45.5231)
        # the officer logs in to the in-car page and sees the evidence beside the wanted plate
        base = f"http://127.0.0.1:{page_port}"
        browser.get(base + "/login")
        browser.find_element(*by("#name")).send_keys(OFFICER)
        browser.find_element(*by("#password")).send_keys(PW)
        browser.find_element(*by("#login")).click()
        uuid = by_plate["KM4521"]["uuid"]
        art = wait(browser, lambda d: d.find_element(*by(f"#alert-{uuid}")), timeout=10)
        crop, scene = art.find_element(*by(".crop img")), art.find_element(*by(".scene img"))
        wait(browser, lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                                    for i in (crop, scene)))  # fmt: skip
        assert art.find_element(*by(".wanted-plate")).text == "KM4521"
        assert "Stop only with probable cause" in art.find_element(*by(".instructions")).text
        art.find_element(*by('button[data-outcome="confirmed"]')).click()
        wait(browser, lambda d: "Confirmed by officer1" in art.find_element(*by(".outcome-status")).text)
    finally:
        center.close()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "2 hot list hit(s)" in out
    for plate in PLATES:
        assert plate not in out
    conn = open_db(data / "reads.db", key)
    try:
        outcomes = HitStore(conn, time.time).outcomes(uuid)
    finally:
        conn.close()
    assert [(o.outcome, o.officer) for o in outcomes] == [("confirmed", OFFICER)]
    assert os.path.exists(data / "reads.db")


def test_an_approved_manual_entry_finds_a_car_that_already_passed_and_a_stale_list_shows(tmp_path: Path) -> None:
    """P5: a partial plate entered after the car passed still alerts; P4: a list over 24 h old is 'stale'."""
    frames = tmp_path / "frames"
    write_passes(frames, PLATES)
    data = tmp_path / "data"
    create_key_file(data / "db.key")
    key = load_key(data / "db.key")
    write_keypair(tmp_path / "hq.pem", tmp_path / "hq.pub")
    old = time.time() - 30 * 3600
    csv = write_csv([wanted("ZZZ9999", "e3", "Not in the footage")])
    (tmp_path / "incoming").mkdir()
    bundle = sign_bundle(load_private_key(tmp_path / "hq.pem"), "ncic-test", 3, csv, created=old)
    (tmp_path / "incoming" / "ncic.hlb").write_bytes(bundle)
    cfg = daemon_config(
        tmp_path,
        frames,
        fps=20,
        extra=f'[hotlist]\npublic_keys = ["{tmp_path / "hq.pub"}"]\nsources = ["{tmp_path / "incoming"}"]\n'
        "recheck_hours = 1\n",
    )
    p = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg), "--forever"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        conn = open_db(data / "reads.db", key)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until every car has passed and been stored
            time.sleep(0.5)
            try:
                if conn.execute("SELECT COUNT(*) FROM reads").fetchone()[0] >= len(PLATES):
                    break
            except Exception:  # the daemon may still be creating the tables
                continue
        assert conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0] == 0
        manual = ManualEntries(conn)
        entry_id = manual.add("4FCW5*", "STOLEN_VEHICLE", "Robbery getaway car", "Felony stop", "CASE-77",
                              "Partial plate from a witness, grey sedan", "member1", "Det. Rivera")  # fmt: skip
        time.sleep(3)
        assert conn.execute("SELECT COUNT(*) FROM hits").fetchone()[0] == 0  # pending: no effect yet
        manual.approve(entry_id, "admin1", role="administrator")
        deadline = time.monotonic() + 20
        rows: list[Any] = []
        while time.monotonic() < deadline and not rows:
            time.sleep(0.3)
            rows = conn.execute("SELECT wanted_plate, read_text, match_kind, list_stale FROM hits").fetchall()
        conn.close()
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert [tuple(r) for r in rows] == [("4FCW5*", "4FCW533", "wildcard", 1)]
    assert p.returncode == 0, err
    assert "hot list stale: 30 h old" in err  # in the status line (and sd_notify STATUS)
