"""Headquarters ingest against a real PostgreSQL (initdb in a temporary folder) and a real Mosquitto (passwords):
batches stored once and acknowledged, redelivery, refused payloads and items, two workers, database outage,
device registry, hot list publishing."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.access.audit import GENESIS, make_entry
from edge.hotlist.bundle import generate_keypair, private_key_pem, public_key_pem, sign_bundle
from edge.hq import commands, schema
from edge.hq.access import HqUserStore
from edge.hq.ingest import IngestWorker
from edge.sync import protocol
from edge.sync.protocol import Batch, Item

from .test_alerts import CROP, SCENE, Broker, free_port, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEVICE, DEVICE_PW = "unit-7", "unit-secret"
HQ, HQ_PW = "hq", "hq-secret"
NOW = 1_790_000_000.0
AUDIT_KEY = Ed25519PrivateKey.generate()  # the unit's access record key

pytestmark = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists() or shutil.which("mosquitto_passwd") is None,
    reason="needs PostgreSQL 15 and mosquitto",
)


class Postgres:
    """A throw-away PostgreSQL cluster on loopback (as root it runs as user postgres, which it insists on)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="hq-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._pg("initdb", "-N", "-A", "trust", "-U", "postgres", "-D", str(self.data))

    def _pg(self, *args: str) -> None:
        subprocess.run([*self.as_pg, str(PG_BIN / args[0]), *args[1:]], check=True, capture_output=True)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-w", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", opts, "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        name = f"hq_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    p = Postgres()
    p.start()
    yield p
    p.remove()


@pytest.fixture
def db(pg: Postgres) -> str:
    url = pg.new_database()
    with schema.connect(url) as conn:
        assert schema.migrate(conn) == [m.number for m in schema.MIGRATIONS]
        assert schema.migrate(conn) == []
    return url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder, {DEVICE: DEVICE_PW, HQ: HQ_PW, "other": "other-pw"})
    b.start()
    yield b
    b.stop()


class Unit:
    """The unit's side of the link: publishes payloads on its up topic, collects the Acks."""

    def __init__(self, port: int, device: str = DEVICE, password: str = DEVICE_PW) -> None:
        self.device = device
        self.acks: list[protocol.Ack] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=5)
        self.client.username_pw_set(device, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(protocol.ack_topic(device), qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        ack = protocol.decode_ack(msg.payload, msg.topic)
        with self.lock:
            self.acks.append(ack)

    def send(self, payload: bytes, topic: str | None = None) -> None:
        info = self.client.publish(topic or protocol.up_topic(self.device), payload, qos=1)
        info.wait_for_publish(5)

    def acks_for(self, batch_id: str) -> list[protocol.Ack]:
        with self.lock:
            return [a for a in self.acks if a.batch_id == batch_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_data(text: str = "7ABC123", seen: float = NOW) -> dict[str, Any]:
    """A read as the unit's reads row."""
    return {
        "camera_id": "front",
        "text": text,
        "confidence": 0.91,
        "char_confidences": json.dumps([0.9] * len(text)),  # text in the unit's SQLite row
        "candidates": [[text, 0.91], ["7A8C123", 0.05]],
        "region": "us",
        "plate_format": None,
        "box_x": 10,
        "box_y": 20,
        "box_w": 120,
        "box_h": 30,
        "first_seen": seen - 1,
        "last_seen": seen + 1,
        "best_seen": seen,
        "frames_seen": 7,
        "fix_source": "gpsd",
        "fix_mode": 3,
        "lat": 45.52,
        "lon": -122.67,
        "alt_m": 50.0,
        "fix_time": seen - 0.4,
        "fix_age_s": 0.4,
        "eph_m": 4.5,
        "speed_mps": None,
        "track_deg": None,
        "stored_at": seen + 2,
    }


def hit_data(read_uuid: str) -> dict[str, Any]:
    return {
        "read_uuid": read_uuid, "camera_id": "front", "read_text": "7ABC123", "read_confidence": 0.91,
        "seen_at": NOW, "list_id": "ncic-or", "list_version": 42, "entry_id": "E1", "wanted_plate": "7ABC123",
        "wanted_state": "OR", "list_code": "STOLEN_VEHICLE", "reason": "stolen", "instructions": "call it in",
        "case_number": "C-1", "matched_text": "7ABC123", "match_kind": "exact",
        "match_detail": json.dumps({"explanation": "exact", "substitutions": []}), "list_age_s": 60.0,
        "list_stale": 0, "created_at": NOW + 1, "published_at": None,
    }  # fmt: skip


def full_batch(n_reads: int = 3) -> tuple[Batch, list[str]]:
    reads = [str(uuid.uuid4()) for _ in range(n_reads)]
    hit, outcome, audit = (str(uuid.uuid4()) for _ in range(3))
    items = [Item("hit", hit, hit_data(reads[0]))]
    items.append(Item("outcome", outcome, {"hit_uuid": hit, "outcome": "stopped", "officer": "kim", "at": NOW + 9}))
    entry = make_entry(AUDIT_KEY, 1, GENESIS, NOW, "kim", "operator", "login", detail={"via": "cli"}, uuid=audit)
    items.append(Item("audit", audit, entry.to_json()))
    items += [Item("read", u, read_data(seen=NOW + i)) for i, u in enumerate(reads)]
    items.append(Item("image", protocol.image_uuid(reads[0], "crop"), {"read_uuid": reads[0], "kind": "crop",
                                                                       "jpeg": CROP}))  # fmt: skip
    items.append(Item("image", protocol.image_uuid(reads[0], "scene"), {"read_uuid": reads[0], "kind": "scene",
                                                                        "jpeg": SCENE}))  # fmt: skip
    return Batch(DEVICE, str(uuid.uuid4()), NOW, tuple(items)), reads


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def worker(broker: Broker, db: str, name: str = "w1", **kw: Any) -> IngestWorker:
    w = IngestWorker(
        "127.0.0.1", broker.port, db, username=HQ, password=HQ_PW, name=name, clock=lambda: NOW + 100,
        backoff_initial_s=0.1, backoff_max_s=0.5, **kw,
    )  # fmt: skip
    w.start()
    wait_until(lambda: w.status().subscribed, 5)
    return w


@pytest.fixture
def unit(broker: Broker) -> Iterator[Unit]:
    u = Unit(broker.port)
    yield u
    u.close()


def test_batch_stored_once_and_acknowledged_on_every_delivery(broker: Broker, db: str, unit: Unit) -> None:
    w = worker(broker, db)
    try:
        batch, reads = full_batch()
        payload = protocol.encode_batch(batch)
        unit.send(payload)
        wait_until(lambda: len(unit.acks_for(batch.batch_id)) == 1, 5)
        ack = unit.acks_for(batch.batch_id)[0]
        assert set(ack.stored) == {it.uuid for it in batch.items} and not ack.rejected
        unit.send(payload)  # a redelivery (the unit did not get the first Ack): stored once, acknowledged again
        wait_until(lambda: len(unit.acks_for(batch.batch_id)) == 2, 5)
        assert set(unit.acks_for(batch.batch_id)[1].stored) == set(ack.stored)
    finally:
        w.stop()
        w.join(5)
    for table, n in (("reads", 3), ("read_images", 2), ("hits", 1), ("hit_outcomes", 1), ("audit", 1)):
        assert count(db, table) == n, table
    with psycopg.connect(db) as c:
        row = c.execute(
            "SELECT device_id, text, char_confidences, candidates, lat, fix_mode, received_at FROM reads"
            " WHERE uuid = %s", (reads[0],),
        ).fetchone()  # fmt: skip
        assert row == (DEVICE, "7ABC123", [0.9] * 7, [["7ABC123", 0.91], ["7A8C123", 0.05]], 45.52, 3, NOW + 100)
        img = c.execute("SELECT jpeg FROM read_images WHERE read_uuid = %s AND kind = 'scene'", (reads[0],)).fetchone()
        assert img is not None and bytes(img[0]) == SCENE
        hit = c.execute("SELECT match_detail, list_stale FROM hits").fetchone()
        assert hit == ({"explanation": "exact", "substitutions": []}, False)
        dev = c.execute("SELECT last_seen, last_sync, batches, reads, images, hits, outcomes, audit FROM devices"
                        " WHERE device_id = %s", (DEVICE,)).fetchone()  # fmt: skip
        assert dev == (NOW + 100, NOW + 100, 2, 3, 2, 1, 1, 1)  # the redelivery added nothing
        assert c.execute("SELECT new FROM batches ORDER BY id").fetchall() == [(8,), (0,)]
    assert w.status().batches == 2 and w.status().items_new == 8


def test_bad_items_rejected_with_reasons_the_others_stored(broker: Broker, db: str, unit: Unit) -> None:
    good = str(uuid.uuid4())
    bad = {str(uuid.uuid4()): d for d in (
        {k: v for k, v in read_data().items() if k != "text"},  # required field missing
        read_data() | {"camera_id": "fr\x00nt"},  # NUL: PostgreSQL cannot hold it
        read_data() | {"confidence": "high"},
        read_data() | {"lat": 123.0},
        read_data() | {"char_confidences": [0.9] * 500},  # oversized
    )}  # fmt: skip
    items = [Item("read", good, read_data())] + [Item("read", u, d) for u, d in bad.items()]
    items.append(Item("image", str(uuid.uuid4()), {"read_uuid": good, "kind": "crop", "jpeg": CROP}))  # wrong uuid
    forged = make_entry(AUDIT_KEY, 2, GENESIS, NOW, "kim", "operator", "login").to_json() | {"hash": "not-hex"}
    items.append(Item("audit", forged["uuid"], forged))  # a malformed access record entry
    items.append(Item("audit", str(uuid.uuid4()), {"x": float("nan")}))
    batch = Batch(DEVICE, str(uuid.uuid4()), NOW, tuple(items))
    doc = json.loads(protocol.encode_batch(Batch(DEVICE, batch.batch_id, NOW, tuple(items[:-1]))))
    doc["items"].append({"kind": "audit", "uuid": items[-1].uuid, "data": {"x": float("nan")}})
    w = worker(broker, db)
    try:
        unit.send(json.dumps(doc).encode())  # NaN on the wire: JSON as Python writes it, not as the unit does
        wait_until(lambda: len(unit.acks_for(batch.batch_id)) == 1, 5)
    finally:
        w.stop()
        w.join(5)
    ack = unit.acks_for(batch.batch_id)[0]
    assert ack.stored == (good,)
    reasons = {r.uuid: r.reason for r in ack.rejected}
    assert set(reasons) == {it.uuid for it in items[1:]}
    texts = list(reasons.values())
    assert texts[:5] == [
        "read: text: missing",
        "read: camera_id: expected a string of at most 64 characters",
        "read: confidence: expected a finite number in [0.0, 1.0]",
        "read: lat: expected a finite number in [-90, 90]",
        "read: char_confidences: expected a list of at most 64 numbers",
    ]
    assert "uuid" in texts[5]
    assert texts[6] == "audit: audit entry: hash: expected 64 lower-case hex digits"
    assert texts[7].startswith("audit: audit entry: ")
    assert count(db, "reads") == 1 and count(db, "read_images") == 0 and count(db, "audit") == 0
    with psycopg.connect(db) as c:
        assert c.execute("SELECT last_sync, rejected FROM devices").fetchone() == (None, 8)  # not a complete sync


def test_hit_carries_a_manual_entrys_p6_details_optional_and_bounded(broker: Broker, db: str, unit: Unit) -> None:
    """A hit on a manual entry brings who entered it, the requesting officer and the synopsis (unit migration 8);
    a hit without them (a signed list's, an older unit's) is stored with NULLs; a bad one is refused by name."""
    p6 = {"entered_by": "member1", "requesting_officer": "Det. Rivera",
          "synopsis": "Partial plate from a witness, grey sedan\nseen leaving the bank"}  # fmt: skip
    with_p6, without, null_p6 = (str(uuid.uuid4()) for _ in range(3))
    read = str(uuid.uuid4())
    bad = {str(uuid.uuid4()): d for d in (
        hit_data(read) | p6 | {"synopsis": "x" * 4001},
        hit_data(read) | p6 | {"requesting_officer": "Det.\x00Rivera"},
        hit_data(read) | p6 | {"entered_by": ["member1"]},
    )}  # fmt: skip
    items = [Item("hit", with_p6, hit_data(read) | p6), Item("hit", without, hit_data(read)),
             Item("hit", null_p6, hit_data(read) | dict.fromkeys(p6))]  # fmt: skip
    items += [Item("hit", u, d) for u, d in bad.items()]
    batch = Batch(DEVICE, str(uuid.uuid4()), NOW, tuple(items))
    w = worker(broker, db)
    try:
        unit.send(protocol.encode_batch(batch))
        wait_until(lambda: len(unit.acks_for(batch.batch_id)) == 1, 5)
    finally:
        w.stop()
        w.join(5)
    ack = unit.acks_for(batch.batch_id)[0]
    assert set(ack.stored) == {with_p6, without, null_p6}
    assert [r.reason for r in ack.rejected] == [
        "hit: synopsis: expected a string of at most 4000 characters",
        "hit: requesting_officer: expected a string of at most 128 characters",
        "hit: entered_by: expected a string of at most 128 characters",
    ]
    with psycopg.connect(db) as c:
        rows = dict(
            (str(r[0]), tuple(r[1:]))
            for r in c.execute("SELECT uuid, entered_by, requesting_officer, synopsis FROM hits").fetchall()
        )
    assert rows == {with_p6: (p6["entered_by"], p6["requesting_officer"], p6["synopsis"]),
                    without: (None, None, None), null_p6: (None, None, None)}  # fmt: skip


def test_refused_payloads_log_a_line_and_store_nothing(
    broker: Broker, db: str, unit: Unit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.hq.ingest")
    batch, _ = full_batch()
    good = protocol.encode_batch(batch)
    wrong_schema = json.loads(good) | {"schema": "alpr-edge/batch/9"}
    other_device = json.loads(good) | {"device": "unit-8"}
    oversized = b'{"schema":"alpr-edge/batch/1","pad":"' + b"x" * protocol.MAX_MESSAGE_BYTES + b'"}'
    w = worker(broker, db)
    try:
        for payload in (b"{not json", json.dumps(wrong_schema).encode(), oversized,
                        json.dumps(other_device).encode()):  # fmt: skip
            unit.send(payload)
        wait_until(lambda: w.status().malformed == 4, 60)  # one is 8 MiB: generous, as in test_sync_env
        unit.send(good)  # the worker goes on
        wait_until(lambda: len(unit.acks_for(batch.batch_id)) == 1, 5)
    finally:
        w.stop()
        w.join(5)
    assert [a.batch_id for a in unit.acks] == [batch.batch_id]  # no Ack for a refused message
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 4 and all(f"from device {DEVICE} refused, nothing stored" in x for x in lines)
    for why in ("not JSON", "schema: expected", "over the", "names another device"):
        assert any(why in x for x in lines), why
    assert all("7ABC123" not in r.getMessage() for r in caplog.records)
    assert count(db, "reads") == 3 and count(db, "batches") == 1


def test_two_workers_share_the_load(broker: Broker, db: str, unit: Unit) -> None:
    w1, w2 = worker(broker, db, "w1"), worker(broker, db, "w2")
    try:
        batches = [full_batch(2)[0] for _ in range(16)]
        for b in batches:
            unit.send(protocol.encode_batch(b))
        wait_until(lambda: all(unit.acks_for(b.batch_id) for b in batches), 10)
    finally:
        for w in (w1, w2):
            w.stop()
            w.join(5)
    assert w1.status().batches > 0 and w2.status().batches > 0
    assert w1.status().batches + w2.status().batches == 16
    assert count(db, "reads") == 32 and count(db, "hits") == 16


def test_database_down_no_ack_then_stored_on_redelivery_and_on_retry(
    pg: Postgres, broker: Broker, db: str, unit: Unit
) -> None:
    a, _ = full_batch(2)
    w = worker(broker, db, "w1")
    try:
        pg.stop()
        unit.send(protocol.encode_batch(a))
        wait_until(lambda: w.status().fault is not None and "database unavailable" in w.status().fault, 5)
        time.sleep(0.5)
        assert not unit.acks
    finally:
        w.stop()  # dies holding the batch, never PUBACKed
        w.join(5)
    pg.start()
    w = worker(broker, db, "w1")  # the same persistent session: the broker redelivers the batch
    try:
        wait_until(lambda: len(unit.acks_for(a.batch_id)) == 1, 10)
        b, _ = full_batch(1)
        pg.stop()
        unit.send(protocol.encode_batch(b))
        time.sleep(1.0)
        assert not unit.acks_for(b.batch_id)
        pg.start()  # the worker kept the batch and retries with backoff
        wait_until(lambda: len(unit.acks_for(b.batch_id)) == 1, 10)
    finally:
        w.stop()
        w.join(5)
    assert count(db, "reads") == 3 and count(db, "batches") == 2


def hq_cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    args = p.parse_args(["hq", *argv])
    rc: int = args.func(args)
    return rc


def test_migrate_and_devices_commands(
    pg: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg.new_database()
    url_file = tmp_path / "db-url"
    url_file.write_text(url + "\n")
    assert hq_cli("migrate", "--db-url-file", str(url_file)) == 0
    numbers = ", ".join(str(m.number) for m in schema.MIGRATIONS)
    assert f"applied migration(s) {numbers}" in capsys.readouterr().out
    monkeypatch.setenv(commands.DB_URL_ENV, url)
    assert hq_cli("migrate") == 0
    assert f"up to date: schema version {len(schema.MIGRATIONS)}" in capsys.readouterr().out
    now = time.time()
    with psycopg.connect(url) as c:
        for dev, sync in (("fresh", now - 3600), ("late", now - 40 * 86400)):
            c.execute("INSERT INTO devices (device_id, first_seen, last_seen, last_sync) VALUES (%s, %s, %s, %s)",
                      (dev, now - 50 * 86400, now - 60, sync))  # fmt: skip
    assert hq_cli("devices", "--json") == 0
    rows = {r["device_id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["late"]["overdue"] and not rows["fresh"]["overdue"]
    assert 39.9 < rows["late"]["days_since_sync"] < 40.1
    assert hq_cli("devices") == 0
    table = capsys.readouterr().out.splitlines()
    assert "OVERDUE" in next(x for x in table if x.startswith("late")) and "OVERDUE" not in table[-1]
    monkeypatch.delenv(commands.DB_URL_ENV)
    assert hq_cli("devices") == 2
    assert "no database URL" in capsys.readouterr().err


def test_publish_hotlist_retained_for_later_subscribers(
    broker: Broker, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    priv, pub = generate_keypair()
    (tmp_path / "hq.pub").write_bytes(public_key_pem(pub))
    (tmp_path / "hq.key").write_bytes(private_key_pem(priv))  # publishing needs a login, recorded (issue 7)
    (tmp_path / "hq.key").chmod(0o600)
    with schema.connect(db) as c:
        HqUserStore(c, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)).add(
            "op", "operator", "correct horse battery", datetime.date.today()
        )
    monkeypatch.setenv(commands.DB_URL_ENV, db)
    monkeypatch.setenv("ALPR_HQ_SIGNING_KEY", str(tmp_path / "hq.key"))
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\ncorrect horse battery\n"))
    bundle = sign_bundle(
        priv, "ncic-or", 42, b"plate,state,list_code,case_number,entered\n7ABC123,OR,STOLEN_VEHICLE,C-1,2026-01-02\n"
    )
    (tmp_path / "l.hlb").write_bytes(bundle)
    (tmp_path / "bad.hlb").write_bytes(bundle[:-10])
    (tmp_path / "pw").write_text(HQ_PW)
    common = ["--broker", "127.0.0.1", "--port", str(broker.port), "--username", HQ,
              "--password-file", str(tmp_path / "pw"), "--user", "op", "--password-stdin"]  # fmt: skip
    assert hq_cli("publish-hotlist", "--bundle", str(tmp_path / "l.hlb"), "--agency", "or-sp", *common) == 0
    assert "retained on alpr/fleet/or-sp/hotlist/ncic-or" in capsys.readouterr().out
    assert hq_cli("publish-hotlist", "--bundle", str(tmp_path / "bad.hlb"), "--device", DEVICE,
                  "--public-key", str(tmp_path / "hq.pub"), *common) == 2  # fmt: skip
    assert "not published" in capsys.readouterr().err
    got: list[tuple[str, bytes, bool]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=5)
    sub.username_pw_set(DEVICE, DEVICE_PW)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("alpr/#", qos=1)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.retain))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        wait_until(lambda: bool(got), 5)
        time.sleep(0.2)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert got == [("alpr/fleet/or-sp/hotlist/ncic-or", bundle, True)]  # the truncated bundle never went out
    with schema.connect(db) as c:
        acts = [r[0] for r in c.execute("SELECT action FROM hq_audit ORDER BY seq").fetchall()]
    assert acts == ["login", "hotlist.publish", "login"]  # the bad bundle was refused before anything was recorded
