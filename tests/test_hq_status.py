"""The units' status at headquarters: the checks on a status document (each bad one refused with its reason), the
latest-status table (an older status never replaces a newer one), and end to end a real unit's uplink publishing
its health snapshot through Mosquitto with the production TLS configuration and ACL, an ingest worker storing it
in a real PostgreSQL, and ``alpr-edge hq devices`` / ``hq devices status`` showing it."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edge.health import Counters, Fault, FrameProbe, Parts, level, snapshot
from edge.hq import commands, schema
from edge.hq.device_status import (
    MAX_FAULTS,
    MAX_STATUS_BYTES,
    StatusError,
    decode_status,
    status_rows,
    store_status,
)
from edge.hq.ingest import IngestWorker
from edge.sync.protocol import STATUS_SCHEMA, status_topic
from edge.sync.uplink import Uplink

from .sync_env import (  # noqa: F401  (fixtures)
    Pki,
    Postgres,
    TlsBroker,
    mqtt_client,
    needs_mosquitto,
    needs_postgres,
    pki_fixture,
    postgres_fixture,
    tls_broker_fixture,
    wait_until,
)
from .test_hq_ingest import hq_cli
from .test_sync_uplink import DEVICE, Unit, sync_cfg

NOW = 1_790_000_000.0
TOPIC = status_topic(DEVICE)
PLATE = "7ABC123"  # must never reach a log line, even when a hostile payload carries it
FAULTS = (Fault("gps.lost", "warning", "gps: no fix for 40 s"),)


def doc(**over: Any) -> dict[str, Any]:
    """A status as the unit makes it (edge.health.snapshot), with fields replaced."""
    d = snapshot(DEVICE, Counters(3700, 9.8, 1234, 5, 17, 0, 1, 2), Parts(), FAULTS, FrameProbe(1, 0.5), "fixed", 0,
                 now=NOW)  # fmt: skip
    return d | over


def enc(d: Any) -> bytes:
    return json.dumps(d).encode()


# -- the checks -------------------------------------------------------------------------------------------------


def test_a_unit_snapshot_is_accepted() -> None:
    st = decode_status(enc(doc()), TOPIC, NOW + 5)
    assert (st.device, st.at, st.level) == (DEVICE, NOW, "warning")
    assert [(f.code, f.severity, f.text) for f in st.faults] == [("gps.lost", "warning", "gps: no fix for 40 s")]
    assert st.counters == {"uptime_s": 3700.0, "fps": 9.8, "frames": 1234, "dropped": 5, "reads": 17}
    assert st.doc["schema"] == STATUS_SCHEMA


BAD: list[tuple[str, bytes, str, str]] = [  # (case, payload, topic, words of the reason)
    ("wrong schema", enc(doc(schema="alpr-edge/status/2")), TOPIC, "schema: not alpr-edge/status/1"),
    ("device mismatch", enc(doc(device="unit-8")), TOPIC, "device: not the device of the topic"),
    ("oversized", enc(doc(pad=PLATE * (MAX_STATUS_BYTES // 7))), TOPIC, f"over {MAX_STATUS_BYTES}"),
    ("NaN at", enc(doc()).replace(f'"at": {NOW}'.encode(), b'"at": NaN'), TOPIC, "NaN is not a number"),
    ("infinite at", enc(doc()).replace(f'"at": {NOW}'.encode(), b'"at": 1e400'), TOPIC, "not finite"),
    ("text at", enc(doc(at=str(NOW))), TOPIC, "at: expected a time"),
    ("future at", enc(doc(at=NOW + 2 * 3600)), TOPIC, "ahead of ours"),
    ("bad level", enc(doc(level="fine")), TOPIC, "level: not one of ok, warning, critical"),
    ("level not the worst fault", enc(doc(level="ok")), TOPIC, "level: not the worst of its faults"),
    ("too many faults", enc(doc(faults=[{"code": "x", "severity": "warning", "text": "y"}] * (MAX_FAULTS + 1))),
     TOPIC, f"faults: expected a list of at most {MAX_FAULTS}"),
    ("fault not an object", enc(doc(faults=[PLATE])), TOPIC, "faults[0]: not an object"),
    ("fault text too long", enc(doc(faults=[{"code": "x", "severity": "warning", "text": PLATE * 100}])), TOPIC,
     "faults[0].text: expected a string of at most 400"),
    ("fault code not text", enc(doc(faults=[{"code": 7, "severity": "warning", "text": "y"}])), TOPIC,
     "faults[0].code"),
    ("bad severity", enc(doc(faults=[{"code": "x", "severity": "fatal", "text": "y"}])), TOPIC,
     "faults[0].severity: not one of warning, critical"),
    ("bad counter", enc(doc(dropped=-1)), TOPIC, "dropped: expected a whole number"),
    ("NUL in a string", enc(doc(gps={"mode": "fixed\x00"})), TOPIC, "a string holds NUL"),
    ("not JSON", PLATE.encode() + b"{", TOPIC, "not JSON we can store"),
    ("not UTF-8", b"\xff\xfe", TOPIC, "not UTF-8"),
    ("not an object", enc([doc()]), TOPIC, "not a JSON object"),
    ("deep", b"[" * 40 + b"]" * 40, TOPIC, "nested deeper than 16"),
    ("topic", enc(doc()), f"alpr/{DEVICE}/status/x", "bad topic"),
]


@pytest.mark.parametrize(("case", "payload", "topic", "why"), BAD, ids=[b[0] for b in BAD])
def test_bad_documents_are_refused_with_a_reason(case: str, payload: bytes, topic: str, why: str) -> None:
    with pytest.raises(StatusError) as e:
        decode_status(payload, topic, NOW + 5)
    assert why in e.value.reason, (case, e.value.reason)
    assert PLATE not in str(e.value)
    assert e.value.device == (DEVICE if case != "topic" else "? (not an alpr/<device>/status topic)")


# -- the table --------------------------------------------------------------------------------------------------


@pytest.fixture
def db(postgres: Postgres) -> Iterator[psycopg.Connection]:
    url = postgres.new_database("status")
    with schema.connect(url) as conn:
        schema.migrate(conn)
        yield conn


def stored(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT device_id, status_at, level, faults, frames FROM device_status").fetchall()


@needs_postgres
def test_an_older_status_never_replaces_a_newer_one(db: psycopg.Connection) -> None:
    new = decode_status(enc(doc(at=NOW, frames=2000)), TOPIC, NOW)
    old = decode_status(enc(doc(at=NOW - 60, level="critical", faults=[
        {"code": "camera.lost", "severity": "critical", "text": "camera front: lost"}])), TOPIC, NOW)  # fmt: skip
    assert store_status(db, new, NOW + 1)
    assert not store_status(db, old, NOW + 2)  # late, e.g. a redelivery from a worker's queue
    assert not store_status(db, new, NOW + 3)  # the same status again (retained, at every reconnect)
    faults = [{"code": "gps.lost", "severity": "warning", "text": "gps: no fix for 40 s"}]
    assert stored(db) == [(DEVICE, NOW, "warning", faults, 2000)]
    assert db.execute("SELECT received_at FROM device_status").fetchone() == (NOW + 1,)
    # the registry: seen at the status' time, not when a retained copy arrived
    assert db.execute("SELECT first_seen, last_seen FROM devices").fetchall() == [(NOW, NOW)]
    newer = decode_status(enc(doc(at=NOW + 60, level="ok", faults=[])), TOPIC, NOW + 60)
    assert store_status(db, newer, NOW + 61)
    assert stored(db) == [(DEVICE, NOW + 60, "ok", [], 1234)]
    (row,) = status_rows(db)
    assert (row.device, row.level, row.faults) == (DEVICE, "ok", ())
    assert row.not_reporting(NOW + 60 + 3601, 1.0) and not row.not_reporting(NOW + 60 + 3599, 1.0)


# -- end to end -------------------------------------------------------------------------------------------------


def worker(pki: Pki, port: int, url: str, stop: threading.Event) -> IngestWorker:
    hq = pki.hq("ingest")
    return IngestWorker("127.0.0.1", port, url, ca_file=hq.ca, cert_file=hq.cert, key_file=hq.key, name="st-1",
                        stop=stop, statuses=True)  # fmt: skip


@needs_mosquitto
@needs_postgres
def test_a_units_status_reaches_the_table_and_the_cli(
    pki: Pki, tls_broker: TlsBroker, postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url = postgres.new_database("status")
    with schema.connect(url) as conn:
        schema.migrate(conn)
    stop = threading.Event()
    hq = worker(pki, tls_broker.port, url, stop)
    hq.start()
    unit = Unit(tmp_path / "unit.db")
    dev = pki.device(DEVICE)
    cfg = replace(sync_cfg(tls_broker.port), ca_file=dev.ca, cert_file=dev.cert, key_file=dev.key)
    now = time.time()
    payload = json.dumps(snapshot(DEVICE, Counters(3700, 9.8, 1234, 5, 17, 0, 1, 2), Parts(), FAULTS,
                                  FrameProbe(1, 0.5), "fixed", 0, now=now)).encode()  # fmt: skip
    up = Uplink(unit.path, unit.key, cfg, DEVICE, stop, status_payload=lambda: payload, status_interval_s=0.5)
    caplog.set_level(logging.WARNING, logger="edge.hq.ingest")
    try:
        wait_until(lambda: hq.status().subscribed, 10, "worker subscribed")
        # hostile first: the unit's own topic (the ACL refuses any other), bad documents
        bad = [enc(doc(at=now, schema="x", note=PLATE)), enc(doc(at=now, device="unit-8")), b"{" + PLATE.encode(),
               enc(doc(at=now, level="bad")), b"x" * (MAX_STATUS_BYTES + 1)]  # fmt: skip
        with mqtt_client(pki, DEVICE, tls_broker.port) as c:
            assert c.publish(status_topic("unit-8"), enc(doc(device="unit-8", at=now))).is_failure  # not its own
            for p in bad:
                assert not c.publish(TOPIC, p).is_failure
        wait_until(lambda: hq.status().statuses_refused == len(bad), 10, "bad statuses refused")
        lines = [r.getMessage() for r in caplog.records if "status from device" in r.getMessage()]
        assert len(lines) == len(bad) and all(f"status from device {DEVICE} refused" in x for x in lines)
        assert ["schema:" in lines[0], "device:" in lines[1], "not JSON" in lines[2], "level:" in lines[3],
                "over 65536" in lines[4]] == [True] * 5  # fmt: skip
        assert PLATE not in caplog.text
        with psycopg.connect(url) as c2:
            assert c2.execute("SELECT count(*) FROM device_status").fetchone() == (0,)
        up.start()  # the real unit: its snapshot on alpr/unit-7/status, retained, QoS 1
        wait_until(lambda: hq.status().statuses >= 1, 15, "status stored")
    finally:
        stop.set()
        up.join(5)
        hq.join(5)
        unit.close()
    with psycopg.connect(url) as c2:
        row = c2.execute("SELECT level, faults, frames, snapshot->>'schema' FROM device_status").fetchone()
        c2.execute("INSERT INTO devices (device_id, first_seen, last_seen) VALUES ('unit-9', %s, %s)", (now, now))
        c2.execute("INSERT INTO device_status (device_id, status_at, received_at, level, faults, snapshot)"
                   " VALUES ('unit-9', %s, %s, 'ok', '[]', '{}')", (now - 7200, now))  # fmt: skip
    assert row == ("warning", [f.to_json() for f in FAULTS], 1234, STATUS_SCHEMA) and level(FAULTS) == "warning"
    monkeypatch.setenv(commands.DB_URL_ENV, url)
    capsys.readouterr()
    assert hq_cli("devices") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-4:] == ["STATUS", "FAULTS", "AGE", "FLAG"]
    line = next(x for x in table if x.startswith(DEVICE)).split()
    assert line[-3:-1] == ["warning", "1"] and line[-1].endswith("s")  # seconds old
    assert hq_cli("devices", "status") == 0
    out = capsys.readouterr().out
    assert f"{DEVICE}: warning, 1 fault(s), status " in out and "  warning  gps.lost: gps: no fix for 40 s" in out
    assert "unit-9: ok, 0 fault(s), status 2.0h ago" in out and "NOT REPORTING (no status for over 1 h)" in out
    assert out.count("NOT REPORTING") == 1
    assert hq_cli("devices", "status", "unit-9", "--stale-hours", "3") == 0
    assert "NOT REPORTING" not in capsys.readouterr().out
    assert hq_cli("devices", "--json", "status", DEVICE) == 0
    (d,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert (d["device_id"], d["level"], d["not_reporting"], d["faults"]) == (DEVICE, "warning", False,
                                                                            [FAULTS[0].to_json()])  # fmt: skip
    assert hq_cli("devices", "status", "nope") == 2
    assert "no device 'nope'" in capsys.readouterr().err


def test_the_status_command_has_help() -> None:
    p = argparse.ArgumentParser(prog="alpr-edge")
    sub = p.add_subparsers(dest="command")
    commands.register(sub)
    hq = sub.choices["hq"]
    top = next(a for a in hq._actions if isinstance(a, argparse._SubParsersAction)).choices
    devices = next(a for a in top["devices"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    parser = devices["status"]
    assert parser.description
    for a in parser._actions:
        if not isinstance(a, argparse._HelpAction):
            assert a.help, a.dest
