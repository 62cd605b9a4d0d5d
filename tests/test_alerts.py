"""Alerts against a real Mosquitto (started here on a free loopback port, passwords required) and real SQLCipher
files: stored, published with the complete schema, queued while the broker is down or refuses us, outcomes."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.access.audit import AuditLog, create_signing_key, load_signing_key
from edge.access.users import UserStore
from edge.alerts import OUTCOMES, Alert, AlertService, UnknownHitError
from edge.alerts_commands import BadMessageError, parse_alert, register
from edge.alerts_mqtt import SCHEMA, MqttAlertPublisher, alert_topic
from edge.gps import NO_FIX, Fix
from edge.hotlist.entry import Hit, HotEntry, ListInfo, Substitution
from edge.store.db import Connection, open_db
from edge.store.errors import StoreError
from edge.store.migrations import migrate
from edge.store.reads import ReadStore
from edge.vision.ocr import Candidate
from edge.vision.tracker import Read

from .conftest import REPO

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
UNIT_USER, UNIT_PW = "unit-7", "unit-secret"
DISPATCH_USER, DISPATCH_PW = "dispatch", "dispatch-secret"
NOW = 1_790_000_000.0
HOUR = 3600.0

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto + mosquitto_passwd")


# --- a real broker --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """Mosquitto in the foreground on loopback, passwords required, sessions persisted in its folder."""

    def __init__(self, folder: Path, users: dict[str, str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.passwd = folder / "passwd"
        self.proc: subprocess.Popen[bytes] | None = None
        for name, pw in users.items():
            self.set_user(name, pw)
        (folder / "data").mkdir()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {self.passwd}",
            "persistence true",
            f"persistence_location {folder / 'data'}/",
            f"log_dest file {folder / 'mosquitto.log'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would drop to "mosquitto", which cannot read our files
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def set_user(self, name: str, password: str) -> None:
        args = ["mosquitto_passwd", "-b", str(self.passwd), name, password]
        if not self.passwd.exists():
            args.insert(1, "-c")
        subprocess.run(args, check=True, capture_output=True)

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)  # mosquitto 2 re-reads its password file
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM saves the persistent sessions
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder, {UNIT_USER: UNIT_PW, DISPATCH_USER: DISPATCH_PW})
    b.start()
    yield b
    b.stop()


class Subscriber:
    """The communications center: a paho client subscribed (QoS 1) to the alert topic, collecting payloads."""

    def __init__(self, port: int, topic: str, *, session: str | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=session or f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(DISPATCH_USER, DISPATCH_PW)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        props = None
        if session is not None:  # a persistent session: the broker keeps QoS 1 messages while we are away
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=session is None, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(5), "subscription not acknowledged"

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(json.loads(msg.payload))

    def wait_for(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.messages)} of {n} alerts arrived")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


# --- reads, hits and the store --------------------------------------------------------------------------------


def jpeg(w: int, h: int, value: int) -> bytes:
    img = np.full((h, w, 3), value, np.uint8)
    cv2.rectangle(img, (2, 2), (w - 3, h - 3), (0, 0, 0), 2)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


CROP = jpeg(160, 40, 220)
SCENE = jpeg(640, 360, 120)
FIX = Fix(source="gpsd", mode=3, lat=45.5231, lon=-122.6765, alt_m=50.0, time=NOW - 0.4, age_s=0.4, eph_m=4.5)


def make_read(text: str = "7ABC123", seen: float = NOW - 1.0) -> Read:
    return Read(
        uuid=str(uuid.uuid4()),
        camera_id="front",
        text=text,
        confidence=0.91,
        char_confidences=tuple(0.9 for _ in text),
        candidates=(Candidate(text, 0.91), Candidate("7A8C123", 0.05)),
        region="us",
        plate_format="us",
        box=(10, 20, 160, 40),
        crop_jpeg=CROP,
        scene_jpeg=SCENE,
        first_seen=seen - 0.5,
        last_seen=seen + 0.2,
        best_seen=seen,
        frames_seen=6,
    )


def make_hit(list_id: str = "ncic-or", plate: str = "7A8C123", version: int = 12, **p6: str) -> Hit:
    entry = HotEntry(
        entry_id=f"V{version}-{plate}",
        list_id=list_id,
        plate=plate,
        state="OR",
        list_code="STOLEN_VEHICLE",
        reason="Stolen vehicle",
        case_number="OR2024-1187",
        entered=NOW - 30 * 86400,
        expires=None,
        instructions="stop only with probable cause",
        vehicle_description="blue sedan",
        **p6,  # a manual entry's entered_by, requesting_officer, synopsis
    )
    subs = (Substitution(position=2, read_char="B", wanted_char="8", confidence=0.55),) if plate != "7ABC123" else ()
    return Hit(
        entry=entry,
        list_version=version,
        matched_text="7ABC123",
        candidate_rank=0,
        kind="lookalike" if subs else "exact",
        substitutions=subs,
        score=0.8,
    )


LISTS = {
    "ncic-or": ListInfo("ncic-or", 12, created=NOW - 2 * HOUR, entry_count=1000),
    "bolo-pdx": ListInfo("bolo-pdx", 3, created=NOW - 30 * HOUR, entry_count=12),
}


class Db:
    """One encrypted unit database: the recorder's ReadStore and the alert service's own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = os.urandom(32)
        self.reads = ReadStore.open(path, self.key)
        self.conn: Connection = open_db(path, self.key)
        migrate(self.conn)

    def add(self, read: Read, fix: Fix = FIX) -> bool:
        return self.reads.add(read, fix).scene_stored

    def published_at(self, hit_uuid: str) -> float | None:
        row = self.conn.execute("SELECT published_at FROM hits WHERE uuid = ?", (hit_uuid,)).fetchone()
        assert row is not None
        return None if row[0] is None else float(row[0])

    def close(self) -> None:
        self.reads.close()
        self.conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    d = Db(tmp_path / "unit.db")
    yield d
    d.close()


def publisher(port: int, password: str = UNIT_PW, **kw: Any) -> MqttAlertPublisher:
    kw.setdefault("backoff_initial_s", 0.05)
    kw.setdefault("backoff_max_s", 0.3)
    return MqttAlertPublisher("127.0.0.1", port, "unit-7", username=UNIT_USER, password=password, **kw)


# --- tests ----------------------------------------------------------------------------------------------------


def test_alerts_are_stored_published_and_carry_the_whole_schema(broker: Broker, db: Db) -> None:
    sub = Subscriber(broker.port, alert_topic("+"))
    seen: list[Alert] = []
    service_ref: list[AlertService] = []
    pub = publisher(broker.port, on_published=lambda u, t: service_ref[0].mark_published(u, t))
    service = AlertService(db.conn, "unit-7", [pub, seen.append], clock=lambda: NOW)
    service_ref.append(service)
    read = make_read()
    scene_stored = db.add(read)
    with pub:
        manual = make_hit("bolo-pdx", "7ABC123", 3, entered_by="sgt.ames", requesting_officer="Det. Ruiz #4411",
                          synopsis="Taken from a driveway on NE 42nd overnight.")
        alerts = service.raise_alerts(read, FIX, [make_hit(), manual], LISTS,
                                      stale_after_s=24 * HOUR, scene_stored=scene_stored)  # fmt: skip
        msgs = sub.wait_for(2)
        wait_until(lambda: all(db.published_at(a.uuid) is not None for a in alerts))
        status = pub.status()
    sub.close()
    assert seen == alerts and len({a.uuid for a in alerts}) == 2
    assert status.connected and status.published == 2 and status.queued == 0 and status.fault is None
    assert [m["uuid"] for m in msgs] == [a.uuid for a in alerts]  # in order
    m = msgs[0]
    assert m["schema"] == SCHEMA
    assert m["read_uuid"] == read.uuid and m["unit"] == "unit-7" and m["camera"] == "front"
    assert m["time"] == "2026-09-21T14:13:19.000Z" and m["raised_at"] == "2026-09-21T14:13:20.000Z"
    assert m["read"] == {"text": "7ABC123", "confidence": 0.91}
    assert m["wanted"]["plate"] == "7A8C123" and m["wanted"]["state"] == "OR"
    assert m["wanted"]["case_number"] == "OR2024-1187" and m["wanted"]["vehicle_description"] == "blue sedan"
    assert m["list"] == {"id": "ncic-or", "version": 12, "created": "2026-09-21T12:13:20.000Z", "age_s": 7200.0,
                         "stale": False, "code": "STOLEN_VEHICLE"}  # fmt: skip
    assert m["reason"] == "Stolen vehicle" and m["instructions"] == "stop only with probable cause"
    assert m["match"]["kind"] == "lookalike" and "B->8 at 3 (OCR 55%)" in m["match"]["explanation"]
    assert m["match"]["substitutions"] == [{"position": 2, "read_char": "B", "wanted_char": "8", "confidence": 0.55}]
    assert m["position"] == {"lat": 45.5231, "lon": -122.6765, "source": "gpsd", "fix_age_s": 0.4, "eph_m": 4.5}
    crop = cv2.imdecode(np.frombuffer(base64.b64decode(m["crop_jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    scene = cv2.imdecode(np.frombuffer(base64.b64decode(m["scene_jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (40, 160, 3) and scene.shape == (360, 640, 3)
    assert msgs[1]["list"]["stale"] is True and msgs[1]["list"]["age_s"] == 30 * HOUR  # past 24 h: stale
    assert msgs[1]["match"]["kind"] == "exact" and msgs[1]["match"]["substitutions"] == []
    p6 = ("entered_by", "requesting_officer", "synopsis")
    assert [m["wanted"][k] for k in p6] == ["", "", ""]  # a signed list's entry has no P6 details
    assert [msgs[1]["wanted"][k] for k in p6] == ["sgt.ames", "Det. Ruiz #4411",
                                                  "Taken from a driveway on NE 42nd overnight."]
    # stored: newest first, with the evidence a later review needs
    hits = service.list_hits(limit=10)
    assert {h.uuid for h in hits} == {a.uuid for a in alerts}
    h = next(h for h in hits if h.uuid == alerts[0].uuid)
    assert (h.read_uuid, h.read_text, h.wanted_plate, h.list_id, h.list_version) == (
        read.uuid, "7ABC123", "7A8C123", "ncic-or", 12)  # fmt: skip
    assert (h.entered_by, h.requesting_officer, h.synopsis) == (None, None, None)
    h2 = next(h for h in hits if h.uuid == alerts[1].uuid)
    assert (h2.entered_by, h2.requesting_officer, h2.synopsis) == (
        "sgt.ames", "Det. Ruiz #4411", "Taken from a driveway on NE 42nd overnight.")  # fmt: skip
    assert h.list_code == "STOLEN_VEHICLE" and h.instructions == "stop only with probable cause"
    assert h.substitutions == make_hit().substitutions and not h.list_stale and h.published_at is not None
    assert h.last_outcome is None


def test_no_fix_and_no_scene_are_null_in_the_payload(broker: Broker, db: Db) -> None:
    sub = Subscriber(broker.port, alert_topic("unit-7"))
    pub = publisher(broker.port)
    service = AlertService(db.conn, "unit-7", [pub], clock=lambda: NOW)
    read = make_read()
    db.add(read, NO_FIX)
    with pub:
        service.raise_alerts(read, NO_FIX, [make_hit()], LISTS, 24 * HOUR, scene_stored=False)
        (m,) = sub.wait_for(1)
    sub.close()
    assert m["position"] is None and m["scene_jpeg"] is None and m["crop_jpeg"]


def test_broker_down_then_up_delivers_the_queued_alerts_once(broker: Broker, db: Db) -> None:
    # the communications center holds a persistent session, so it gets what the broker accepted while it was away
    Subscriber(broker.port, alert_topic("unit-7"), session="dispatch-desk").close()
    broker.stop()
    published: list[str] = []
    pub = publisher(broker.port, on_published=lambda u, t: published.append(u))
    service = AlertService(db.conn, "unit-7", [pub], clock=lambda: NOW)
    with pub:
        alerts = []
        for text in ("7ABC123", "7ABC124", "7ABC125"):
            read = make_read(text)
            db.add(read)
            alerts += service.raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, scene_stored=True)
        wait_until(lambda: pub.status().fault is not None)
        st = pub.status()
        assert not st.connected and st.queued == 3 and st.published == 0 and "cannot reach broker" in st.fault
        assert all(db.published_at(a.uuid) is None for a in alerts)
        broker.start()
        wait_until(lambda: pub.status().published == 3)
        sub = Subscriber(broker.port, alert_topic("unit-7"), session="dispatch-desk")
        msgs = sub.wait_for(3)
        time.sleep(0.5)  # anything sent twice would arrive by now
        sub.close()
        st = pub.status()
    assert [m["uuid"] for m in sub.messages] == [a.uuid for a in alerts]  # each once, in order
    assert len(msgs) == 3 and published == [a.uuid for a in alerts]
    assert st.connected and st.queued == 0 and st.fault is None and st.connects == 1


def test_wrong_password_shows_the_fault_and_loses_nothing(broker: Broker, db: Db) -> None:
    sub = Subscriber(broker.port, alert_topic("unit-7"))
    pub = publisher(broker.port, password="not-the-password")
    service = AlertService(db.conn, "unit-7", [pub], clock=lambda: NOW)
    with pub:
        alerts = []
        for text in ("7ABC123", "7ABC124"):
            read = make_read(text)
            db.add(read)
            alerts += service.raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, scene_stored=True)
        wait_until(lambda: pub.status().fault is not None)
        time.sleep(0.3)  # several refused attempts
        st = pub.status()
        assert not st.connected and st.queued == 2 and st.published == 0 and st.connects == 0
        assert "refused the connection: Not authorized" in st.fault  # what Mosquitto 2.0 answers a bad password
        assert sub.messages == []
        # the broker is told the unit's new password: the same publisher gets through with what it kept
        broker.set_user(UNIT_USER, "not-the-password")
        broker.reload()
        msgs = sub.wait_for(2)
        wait_until(lambda: pub.status().queued == 0)
    sub.close()
    assert [m["uuid"] for m in msgs] == [a.uuid for a in alerts]
    assert pub.status().fault is None


def test_a_full_queue_drops_the_oldest_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    pub = publisher(free_port(), max_queue=2)  # never started: everything stays queued
    service_alerts = [make_alert_stub(i) for i in range(3)]
    with caplog.at_level(logging.ERROR, logger="edge.alerts_mqtt"):
        for a in service_alerts:
            pub(a)
    st = pub.status()
    assert st.queued == 2 and st.dropped == 1
    assert any(service_alerts[0].uuid in r.getMessage() and "dropped the oldest" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert all("7ABC" not in r.getMessage() for r in caplog.records)  # no plate in the log


def make_alert_stub(i: int) -> Alert:
    read = make_read(f"7ABC12{i}")
    return Alert(str(uuid.uuid4()), read.uuid, "unit-7", "front", read.text, 0.9, NOW, FIX, make_hit(),
                 LISTS["ncic-or"], 7200.0, False, CROP, SCENE, NOW)  # fmt: skip


def test_a_sink_that_raises_does_not_stop_the_others(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    got: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError(f"page down while showing {alert.read_text}")

    def slow(alert: Alert) -> None:
        time.sleep(0.08)  # a sink that works instead of queueing: named in the log

    service = AlertService(db.conn, "unit-7", [broken, got.append, broken, slow], clock=lambda: NOW)
    read = make_read()
    db.add(read)
    with caplog.at_level(logging.DEBUG, logger="edge.alerts"):
        alerts = service.raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, scene_stored=True)
    assert got == alerts and service.status().sink_failures == 2
    assert any("slow" in r.getMessage() and "must queue" in r.getMessage() for r in caplog.records)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("RuntimeError" in r.getMessage() for r in errors)
    assert all("7ABC123" not in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert len(service.list_hits()) == 1


def test_a_store_failure_still_alerts_then_raises(tmp_path: Path) -> None:
    d = Db(tmp_path / "unit.db")
    got: list[Alert] = []
    service = AlertService(d.conn, "unit-7", [got.append], clock=lambda: NOW)
    read = make_read()
    d.add(read)
    d.conn.close()  # the service's connection is gone
    with pytest.raises(StoreError, match="cannot store hits"):
        service.raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, scene_stored=True)
    assert len(got) == 1 and got[0].read_uuid == read.uuid
    assert service.status().store_failures == 1 and service.status().fault is not None
    d.reads.close()


def test_bad_input_is_refused_before_anything_is_stored_or_sent(db: Db) -> None:
    got: list[Alert] = []
    service = AlertService(db.conn, "unit-7", [got.append], clock=lambda: NOW)
    read = make_read()
    db.add(read)
    with pytest.raises(ValueError, match="no ListInfo for list 'bolo-pdx'"):
        service.raise_alerts(read, FIX, [make_hit(), make_hit("bolo-pdx")], {"ncic-or": LISTS["ncic-or"]},
                             24 * HOUR, True)  # fmt: skip
    with pytest.raises(ValueError, match="stale_after_s"):
        service.raise_alerts(read, FIX, [make_hit()], LISTS, 0, True)
    with pytest.raises(ValueError, match=r"fix\.lat"):
        service.raise_alerts(read, Fix("gpsd", 3, lat=95.0, lon=0.0), [make_hit()], LISTS, 24 * HOUR, True)
    bad_list = {"ncic-or": ListInfo("ncic-or", 12, created=float("nan"), entry_count=1)}
    with pytest.raises(ValueError, match="created"):
        service.raise_alerts(read, FIX, [make_hit()], bad_list, 24 * HOUR, True)
    assert got == [] and service.list_hits() == []
    assert service.raise_alerts(read, FIX, [], LISTS, 24 * HOUR, True) == []
    # a list created "in the future" (our clock behind HQ's) has age 0, not a negative one
    future = {"ncic-or": ListInfo("ncic-or", 12, created=NOW + 60, entry_count=1)}
    (a,) = service.raise_alerts(read, FIX, [make_hit()], future, 24 * HOUR, True)
    assert a.list_age_s == 0.0 and not a.list_stale


def test_outcomes_are_validated_and_stored(db: Db) -> None:
    clock = [NOW]
    service = AlertService(db.conn, "unit-7", [], clock=lambda: clock[0])
    read = make_read()
    db.add(read)
    (alert,) = service.raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, True)
    with pytest.raises(ValueError, match="outcome: must be one of"):
        service.record_outcome(alert.uuid, "looked_fine", "Ofc. Ruiz")
    with pytest.raises(ValueError, match="officer: must not be empty"):
        service.record_outcome(alert.uuid, "confirmed", "  ")
    with pytest.raises(ValueError, match="officer: must not contain control"):
        service.record_outcome(alert.uuid, "confirmed", "Ruiz\x1b[2J")
    with pytest.raises(ValueError, match="officer: at most"):
        service.record_outcome(alert.uuid, "confirmed", "x" * 65)
    with pytest.raises(ValueError, match="note: at most"):
        service.record_outcome(alert.uuid, "confirmed", "Ruiz", "n" * 2001)
    with pytest.raises(ValueError, match="hit_uuid: not a lowercase UUID"):
        service.record_outcome("'; DROP TABLE hits; --", "confirmed", "Ruiz")
    with pytest.raises(UnknownHitError):
        service.record_outcome(str(uuid.uuid4()), "confirmed", "Ruiz")
    assert service.outcomes(alert.uuid) == []
    first = service.record_outcome(alert.uuid, "confirmed", " Ofc. Ruiz ", "plate checked visually")
    clock[0] = NOW + 300
    service.record_outcome(alert.uuid, "arrest", "Ofc. Ruiz", "driver had a warrant\ncase OR2024-1187")
    got = service.outcomes(alert.uuid)
    assert [(o.outcome, o.officer, o.at) for o in got] == [("confirmed", "Ofc. Ruiz", NOW), ("arrest", "Ofc. Ruiz",
                                                                                          NOW + 300)]  # fmt: skip
    assert got[0] == first and got[1].note.endswith("OR2024-1187")
    assert service.list_hits()[0].last_outcome == "arrest"
    assert set(OUTCOMES) >= {"confirmed", "misread", "no_longer_wanted", "arrest"}


def test_list_hits_orders_and_filters(db: Db) -> None:
    clock = [NOW]
    service = AlertService(db.conn, "unit-7", [], clock=lambda: clock[0])
    uuids = []
    for i in range(3):
        clock[0] = NOW + i * 60
        read = make_read(f"7ABC12{i}")
        db.add(read)
        uuids += [a.uuid for a in service.raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, True)]
    assert [h.uuid for h in service.list_hits()] == uuids[::-1]
    assert [h.uuid for h in service.list_hits(limit=1)] == [uuids[2]]
    assert [h.uuid for h in service.list_hits(since=NOW + 60)] == [uuids[2], uuids[1]]
    with pytest.raises(ValueError, match="limit"):
        service.list_hits(limit=0)


# --- the command line -----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr-edge")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_every_alerts_command_and_option_has_help() -> None:
    p = parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    alerts = sub.choices["alerts"]
    assert "access record" in (alerts.description or "")
    inner = next(a for a in alerts._actions if isinstance(a, argparse._SubParsersAction))
    assert set(inner.choices) == {"list", "watch"}
    for cmd in inner.choices.values():
        assert cmd.description and "access record" in cmd.description
        for action in cmd._actions:
            assert action.help, f"{cmd.prog} {action.option_strings} has no help"


def test_cli_alerts_list(
    db: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = AlertService(db.conn, "unit-7", [], clock=lambda: NOW)
    read = make_read()
    db.add(read)
    manual = make_hit("bolo-pdx", "7ABC123", 3, entered_by="sgt.ames", requesting_officer="Det. Ruiz #4411",
                      synopsis="Taken from a driveway overnight.")
    (a, b) = service.raise_alerts(read, FIX, [make_hit(), manual], LISTS, 24 * HOUR, True)
    service.record_outcome(a.uuid, "misread", "Ofc. Ruiz")
    key_file = tmp_path / "db.key"
    key_file.write_text(db.key.hex())
    key_file.chmod(0o600)
    create_signing_key(tmp_path / "audit.key")  # beside the database key
    UserStore(db.conn).add("officer1", "operator", "correct horse battery", date(2020, 1, 1))
    UserStore(db.conn).add("tech", "technician", "correct horse battery", date(2020, 1, 1))
    p = parser()

    def run(*argv: str, user: str = "officer1") -> int:
        args = p.parse_args(["alerts", "list", *argv, "--db", str(db.path), "--key-file", str(key_file),
                             "--user", user, "--password-stdin"])  # fmt: skip
        monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
        return int(args.func(args))

    assert run() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("RAISED (UTC)") and len(out) == 3
    assert "7A8C123" in "".join(out) and "ncic-or v12" in "".join(out) and "bolo-pdx v3 STALE" in "".join(out)
    assert any("misread" in line for line in out)
    assert run("--json", "--limit", "1") == 0
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert doc["uuid"] == b.uuid and doc["list"]["code"] == "STOLEN_VEHICLE" and "crop_jpeg" not in doc
    assert (doc["wanted"]["entered_by"], doc["wanted"]["requesting_officer"], doc["wanted"]["synopsis"]) == (
        "sgt.ames", "Det. Ruiz #4411", "Taken from a driveway overnight.")  # fmt: skip
    # a technician sees no hits; every look (and the refusal) is in the access record
    assert run(user="tech") == 2
    out, err = capsys.readouterr()
    assert out == "" and "hits.view: needs role operator, investigator or administrator; tech is technician" in err
    audit = AuditLog(db.conn, load_signing_key(tmp_path / "audit.key"))
    views = audit.entries(actions=["hits.view"])
    assert [(e.user, sorted(e.detail["hit_uuids"]), e.detail["count"]) for e in views] == [
        ("officer1", sorted([a.uuid, b.uuid]), 2),
        ("officer1", [doc["uuid"]], 1),
    ]
    assert [(e.user, e.detail["what"]) for e in audit.entries(actions=["access.denied"])] == [("tech", "hits.view")]
    # a wrong key: a clear error, exit 2, the database untouched
    key_file.write_text(os.urandom(32).hex())
    assert run() == 2
    assert "key does not match" in capsys.readouterr().err
    assert len(service.list_hits()) == 2


WATCH = (
    "import argparse, sys\n"
    "from edge.alerts_commands import register\n"
    "p = argparse.ArgumentParser(prog='alpr-edge')\n"
    "register(p.add_subparsers(dest='command', required=True))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.func(a))\n"
)


def start_watch(port: int, pw_file: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", WATCH, "alerts", "watch", "--host", "127.0.0.1", "--port", str(port),
           "--username", DISPATCH_USER, "--password-file", str(pw_file), "--timeout", "20", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # printed once the broker acknowledged the subscription
    assert line.startswith("watching alpr/"), line + proc.stderr.read()
    return proc


def test_cli_alerts_watch(broker: Broker, db: Db, tmp_path: Path) -> None:
    pw_file = tmp_path / "dispatch.pw"
    pw_file.write_text(DISPATCH_PW + "\n")
    lines = start_watch(broker.port, pw_file, "--count", "1")
    as_json = start_watch(broker.port, pw_file, "--unit", "unit-7", "--json", "--count", "1")
    # a hostile message on the topic is reported and skipped
    junk = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    junk.username_pw_set(UNIT_USER, UNIT_PW)
    junk.connect("127.0.0.1", broker.port)
    junk.loop_start()
    bad = b'{"schema": "alpr-edge/alert/1", "uuid": "\\u001b[2J"}'  # an escape sequence, and little else
    junk.publish(alert_topic("unit-7"), bad, qos=1).wait_for_publish(5)
    junk.disconnect()
    junk.loop_stop()
    pub = publisher(broker.port)
    service = AlertService(db.conn, "unit-7", [pub], clock=lambda: NOW)
    read = make_read()
    db.add(read)
    with pub:
        hit = make_hit(entered_by="sgt.ames", synopsis="Seen leaving\x1b[2J the Lloyd Center lot.")
        (alert,) = service.raise_alerts(read, FIX, [hit], LISTS, 24 * HOUR, True)
        out, err = lines.communicate(timeout=20)
        jout, jerr = as_json.communicate(timeout=20)
    assert lines.returncode == 0 and as_json.returncode == 0, err + jerr
    (line,) = out.splitlines()
    assert "read 7ABC123 (0.91)" in line and "wanted 7A8C123" in line and "STOLEN_VEHICLE" in line
    assert "ncic-or v12 2.0h" in line and alert.uuid in line and "stop only with probable cause" in line
    assert "45.52" not in line  # no position on the summary line
    assert "synopsis: Seen leaving?[2J the Lloyd Center lot." in line and "\x1b" not in line  # escapes defused
    assert "ignored a message on alpr/unit-7/alerts" in err and "\x1b" not in err
    doc = json.loads(jout)
    assert doc["uuid"] == alert.uuid and doc["crop_bytes"] == len(CROP) and doc["scene_bytes"] == len(SCENE)
    assert "crop_jpeg" not in doc and doc["position"]["lat"] == 45.5231


def test_cli_alerts_watch_with_a_wrong_password_fails_clearly(broker: Broker, tmp_path: Path) -> None:
    pw_file = tmp_path / "dispatch.pw"
    pw_file.write_text("wrong\n")
    cmd = [sys.executable, "-c", WATCH, "alerts", "watch", "--host", "127.0.0.1", "--port", str(broker.port),
           "--username", DISPATCH_USER, "--password-file", str(pw_file), "--timeout", "10"]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "refused the connection" in res.stderr and res.stdout == ""


def test_parse_alert_refuses_what_is_not_an_alert() -> None:
    good = json.loads(_payload_of(make_alert_stub(0)))
    assert parse_alert(json.dumps(good).encode())["crop_bytes"] == len(CROP)
    for bad, why in [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**good, "schema": "other/1"}).encode(), "schema"),
        (json.dumps({**good, "read": {"text": 7, "confidence": 0.5}}).encode(), "read.text"),
        (json.dumps({**good, "list": {**good["list"], "stale": "no"}}).encode(), "list.stale"),
        (json.dumps({**good, "crop_jpeg": "!!!"}).encode(), "crop_jpeg: not base64"),
        (json.dumps({**good, "crop_jpeg": base64.b64encode(b"GIF89a").decode()}).encode(), "crop_jpeg: not a JPEG"),
    ]:
        with pytest.raises(BadMessageError, match=why):
            parse_alert(bad)


def _payload_of(alert: Alert) -> bytes:
    from edge.alerts_mqtt import encode_alert

    return encode_alert(alert)


def test_bench_alerts_runs_and_reports(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_alerts.py"), "--count", "20"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["bench"] == "alerts" and out["alerts"] == 20
    assert out["published_ms"]["max"] >= out["published_ms"]["p50"] > 0
    assert out["delivered_ms"]["p50"] > 0


# --- TLS ------------------------------------------------------------------------------------------------------


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)  # fmt: skip
    return key, crt


def make_server_cert(folder: Path, ca_key: Path, ca_crt: Path) -> tuple[Path, Path]:
    key, csr, crt, ext = (folder / f"server.{x}" for x in ("key", "csr", "crt", "ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext)],
                   check=True, capture_output=True)  # fmt: skip
    return key, crt


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_broker_trusted_and_untrusted(tmp_path: Path, db: Db) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    ca_key, ca_crt = make_ca(folder, "hq-ca")
    _, other_ca = make_ca(folder, "someone-else")
    srv_key, srv_crt = make_server_cert(folder, ca_key, ca_crt)
    b = Broker(folder, {UNIT_USER: UNIT_PW, DISPATCH_USER: DISPATCH_PW})
    b.conf.write_text(b.conf.read_text() + f"cafile {ca_crt}\ncertfile {srv_crt}\nkeyfile {srv_key}\n")
    b.start()
    try:
        read = make_read()
        db.add(read)
        # a broker whose certificate is not signed by the CA we trust: refused, and the alert stays queued
        untrusted = publisher(b.port, ca_file=other_ca)
        AlertService(db.conn, "unit-7", [untrusted]).raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, True)
        with untrusted:
            wait_until(lambda: untrusted.status().fault is not None)
            st = untrusted.status()
        assert "certificate verify failed" in st.fault.lower() and st.queued == 1 and st.connects == 0
        trusted = publisher(b.port, ca_file=ca_crt)
        with trusted:
            AlertService(db.conn, "unit-7", [trusted]).raise_alerts(read, FIX, [make_hit()], LISTS, 24 * HOUR, True)
            wait_until(lambda: trusted.status().published == 1)
        assert trusted.status().fault is None
    finally:
        b.stop()
    with pytest.raises(ValueError, match="mqtt CA file"):
        publisher(b.port, ca_file=folder / "missing.crt")
