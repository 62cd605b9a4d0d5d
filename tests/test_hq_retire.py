"""Retired units at headquarters (HQ migration 6): ``hq devices retire`` / ``reinstate`` mark the registry row and
record it in hq_audit without deleting anything; ``hq devices`` and ``hq devices status`` hide a retired unit unless
``--all`` (then RETIRED, never OVERDUE or NOT REPORTING); bad input is refused naming the field with nothing changed;
and end to end through a real Mosquitto, what a retired unit still sends is stored with a warning naming it."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.types.json import Jsonb

from edge.cli import build_parser
from edge.health import Counters, Fault, FrameProbe, Parts, snapshot
from edge.hq.access import HqAuditLog
from edge.hq.device_retire import retire
from edge.hq.ingest import IngestWorker
from edge.store.retention import DAY

from .sync_env import hq_conn_fixture, hq_url_fixture, needs_mosquitto, needs_postgres, postgres_fixture  # noqa: F401
from .test_alerts import wait_until
from .test_hq_retention import NOW, OLD, UNIT, add_read, hq_key, n  # noqa: F401  (fixture)
from .test_sync_uplink import DEVICE, Broker, Unit, drained, start_uplink, sync_cfg

pytestmark = needs_postgres

OTHER = "unit-5"


def cli(url: str, tmp: Path, key: Path | None, cap: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``alpr-edge hq ...`` with the database URL in a file and, when given, headquarters' signing key."""
    url_file = tmp / "db-url"
    url_file.write_text(url)
    extra = ["--db-url-file", str(url_file)] + (["--signing-key", str(key)] if key else [])
    cap.readouterr()
    args = build_parser().parse_args(["hq", *argv, *extra])
    rc = args.func(args)
    out, err = cap.readouterr()
    return rc, out, err


def registry(conn: psycopg.Connection) -> None:
    """UNIT: overdue (last sync 40 days ago) and never a status; OTHER: fresh, with a fresh status."""
    for dev, sync in ((UNIT, OLD), (OTHER, NOW - 60)):
        conn.execute(
            "INSERT INTO devices (device_id, first_seen, last_seen, last_sync) VALUES (%s, %s, %s, %s)",
            (dev, OLD - DAY, sync, sync),
        )
    conn.execute(
        "INSERT INTO device_status (device_id, status_at, received_at, level, faults, snapshot)"
        " VALUES (%s, %s, %s, 'ok', '[]', '{}')",
        (OTHER, time.time() - 60, time.time()),
    )


def line_of(out: str, device: str) -> str | None:
    return next((x for x in out.splitlines() if x.startswith(device)), None)


def test_retire_keeps_the_data_records_it_and_changes_the_listings_until_reinstated(
    url: str,
    conn: psycopg.Connection,
    hq_key: tuple[Ed25519PrivateKey, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, key_file = hq_key
    registry(conn)
    add_read(conn, OLD, hits=1)
    conn.execute("INSERT INTO audit (uuid, device_id, data, received_at) VALUES (gen_random_uuid(), %s, %s, %s)",
                 (UNIT, Jsonb({"seq": 1}), NOW))  # fmt: skip
    before = {t: n(conn, t) for t in ("reads", "read_images", "hits", "hit_outcomes", "audit", "devices")}
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices")
    assert rc == 0 and "OVERDUE" in (line_of(out, UNIT) or "")
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices", "status")
    assert "NOT REPORTING" in (line_of(out, UNIT) or "")

    rc, out, err = cli(url, tmp_path, key_file, capsys, "devices", "retire", UNIT, "--reason", "car 12 sold at auction")
    assert rc == 0 and f"{UNIT}: retired (recorded)" in out, err
    assert {t: n(conn, t) for t in before} == before  # nothing deleted
    row = conn.execute("SELECT retired_at, retired_by, retired_reason FROM devices WHERE device_id = %s", (UNIT,))
    at, by, why = row.fetchone() or (None, None, None)
    assert at is not None and abs(at - time.time()) < 60 and by == getpass.getuser() and why == "car 12 sold at auction"
    audit = HqAuditLog(conn, key)
    (e,) = audit.entries(actions=["device.retire"])
    assert (e.user, e.role, e.reason, e.detail["device"]) == ("root", "system", "car 12 sold at auction", UNIT)
    assert audit.verify(key.public_key()).ok

    # Hidden by default; with --all, RETIRED and never OVERDUE / NOT REPORTING.
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices")
    assert rc == 0 and line_of(out, UNIT) is None and line_of(out, OTHER) is not None
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices", "--all")
    line = line_of(out, UNIT) or ""
    assert "RETIRED since" in line and "OVERDUE" not in line
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices", "--json", "--all")
    docs = {d["device_id"]: d for d in map(json.loads, out.splitlines())}
    assert docs[UNIT]["retired"] is True and docs[UNIT]["overdue"] is False and docs[OTHER]["retired"] is False
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices", "status")
    assert rc == 0 and line_of(out, UNIT) is None and "NOT REPORTING" not in out
    for argv in (("devices", "status", "--all"), ("devices", "--all", "status"), ("devices", "status", UNIT)):
        rc, out, _ = cli(url, tmp_path, None, capsys, *argv)
        line = line_of(out, UNIT) or ""
        assert rc == 0 and "RETIRED since" in line and "NOT REPORTING" not in out, argv
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices", "--json", "status", "--all")
    docs = {d["device_id"]: d for d in map(json.loads, out.splitlines())}
    assert (docs[UNIT]["retired"], docs[UNIT]["not_reporting"], docs[UNIT]["retired_at"]) == (True, False, at)

    # Again: nothing changes, nothing is recorded.
    rc, out, _ = cli(url, tmp_path, key_file, capsys, "devices", "retire", UNIT, "--reason", "another reason")
    assert rc == 0 and "already retired" in out and "car 12 sold at auction" in out
    assert len(audit.entries(actions=["device.retire"])) == 1

    rc, out, err = cli(url, tmp_path, key_file, capsys, "devices", "reinstate", UNIT, "--reason", "bought back")
    assert rc == 0 and f"{UNIT}: back in service (recorded)" in out, err
    (e,) = audit.entries(actions=["device.reinstate"])
    assert e.reason == "bought back" and e.detail["retired_reason"] == "car 12 sold at auction"
    assert e.detail["retired_at"] == at and audit.verify(key.public_key()).ok
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices")
    assert "OVERDUE" in (line_of(out, UNIT) or "")
    rc, out, _ = cli(url, tmp_path, None, capsys, "devices", "status")
    assert "NOT REPORTING" in (line_of(out, UNIT) or "")
    rc, out, _ = cli(url, tmp_path, key_file, capsys, "devices", "reinstate", UNIT, "--reason", "bought back")
    assert rc == 0 and "not retired; nothing changed" in out and len(audit.entries(actions=["device.reinstate"])) == 1


BAD = [  # (case, action, device, reason, words of the error)
    ("device with a space", "retire", "Unit 9", "taken out of service", "DEVICE: device id"),
    ("device too long", "retire", "u" * 33, "taken out of service", "DEVICE: device id"),
    ("unknown device", "retire", "unit-404", "taken out of service", "DEVICE: no device 'unit-404' in the registry"),
    ("blank reason", "retire", UNIT, "   ", "--reason: 3 to 400 characters, got 0"),
    ("short reason", "retire", UNIT, "ok", "--reason: 3 to 400 characters, got 2"),
    ("long reason", "retire", UNIT, "x" * 401, "--reason: 3 to 400 characters, got 401"),
    ("newline", "retire", UNIT, "sold\nforged line", "--reason: no control characters (one at position 5)"),
    ("escape", "retire", UNIT, "sold \x1b[2J", "--reason: no control characters"),
    ("bidi override", "retire", UNIT, "sold \u202eevil", "--reason: no control characters"),
    ("NUL", "retire", UNIT, "sold\x00", "--reason: no control characters"),
    ("reinstate, bad reason", "reinstate", UNIT, "a\tb", "--reason: no control characters"),
    ("reinstate, bad device", "reinstate", "../x", "back in service", "DEVICE: device id"),
]


@pytest.mark.parametrize(("case", "action", "device", "reason", "why"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    case: str,
    action: str,
    device: str,
    reason: str,
    why: str,
    url: str,
    conn: psycopg.Connection,
    hq_key: tuple[Ed25519PrivateKey, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry(conn)
    if action == "reinstate":
        retire(conn, HqAuditLog(conn, hq_key[0]), UNIT, "taken out of service", now=NOW)
    state = conn.execute("SELECT device_id, retired_at FROM devices ORDER BY 1").fetchall()
    entries = n(conn, "hq_audit")
    rc, out, err = cli(url, tmp_path, hq_key[1], capsys, "devices", action, device, "--reason", reason)
    assert rc == 2 and why in err and out == "", (case, err)
    assert conn.execute("SELECT device_id, retired_at FROM devices ORDER BY 1").fetchall() == state
    assert n(conn, "hq_audit") == entries


def test_retire_without_the_signing_key_is_refused(
    url: str, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("ALPR_HQ_SIGNING_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    registry(conn)
    rc, _, err = cli(url, tmp_path, None, capsys, "devices", "retire", UNIT, "--reason", "taken out of service")
    assert rc == 2 and "signing key" in err
    assert conn.execute("SELECT count(*) FROM devices WHERE retired_at IS NOT NULL").fetchone() == (0,)


@needs_mosquitto
def test_what_a_retired_unit_still_sends_is_stored_with_a_warning_naming_it(
    url: str,
    conn: psycopg.Connection,
    hq_key: tuple[Ed25519PrivateKey, Path],  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn.execute("INSERT INTO devices (device_id, first_seen, last_seen) VALUES (%s, %s, %s)", (DEVICE, NOW, NOW))
    retire(conn, HqAuditLog(conn, hq_key[0]), DEVICE, "stolen with the car", now=NOW)
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")
    broker.start()
    (tmp_path / "unit").mkdir()
    unit = Unit(tmp_path / "unit" / "unit.db")
    stop = threading.Event()
    hq = IngestWorker("127.0.0.1", broker.port, url, name="hq-retired", stop=stop, statuses=True)
    status = snapshot(DEVICE, Counters(60, 9.8, 600, 0, 2, 0, 1, 2), Parts(), (Fault("gps.lost", "warning", "x"),),
                      FrameProbe(1, 0.5), "fixed", 0, now=time.time())  # fmt: skip
    caplog.set_level(logging.WARNING, logger="edge.hq.ingest")
    hq.start()
    up = None
    try:
        wait_until(lambda: hq.status().subscribed, timeout=10)
        reads = unit.add_reads(2)
        up = start_uplink(unit, sync_cfg(broker.port), stop, status_payload=lambda: json.dumps(status).encode(),
                          status_interval_s=0.5)  # fmt: skip
        wait_until(lambda: drained(up) and hq.status().statuses >= 1, timeout=20)
    finally:
        stop.set()
        if up is not None:
            up.join(5)
        hq.join(5)
        broker.stop()
    try:
        stored = {str(r[0]) for r in conn.execute("SELECT uuid FROM reads WHERE device_id = %s", (DEVICE,))}
        assert stored == set(reads)  # evidence is never dropped
        assert conn.execute("SELECT level FROM device_status WHERE device_id = %s", (DEVICE,)).fetchone() == (
            "warning",
        )
        warned = [r.getMessage() for r in caplog.records if "retired device" in r.getMessage()]
        assert any(f"from retired device {DEVICE}:" in m and "stored all the same" in m for m in warned)
        assert any(f"new status from retired device {DEVICE} stored" in m for m in warned)
        texts = {str(r[0]) for r in conn.execute("SELECT text FROM reads")} | {
            f"{r[0]:.4f}" for r in conn.execute("SELECT lat FROM reads WHERE lat IS NOT NULL")
        }
        assert texts and not any(t in caplog.text for t in texts)  # no plate text or position in the logs
        # Still retired: sending again does not put a unit back in service.
        assert conn.execute("SELECT retired_at FROM devices WHERE device_id = %s", (DEVICE,)).fetchone() == (NOW,)
    finally:
        unit.close()


def test_retire_and_reinstate_have_help() -> None:
    for action in ("retire", "reinstate"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["hq", "devices", action, UNIT])  # --reason is required
    parser = build_parser()
    hq = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["hq"]
    top = next(a for a in hq._actions if isinstance(a, argparse._SubParsersAction)).choices
    devices = next(a for a in top["devices"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    for action in ("retire", "reinstate"):
        assert devices[action].description and "access record" in devices[action].description
        for a in devices[action]._actions:
            assert a.help, (action, a.dest)
