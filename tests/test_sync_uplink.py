"""The unit's side of sync on real SQCipher stores and a real Mosquitto, with a small fake headquarters in the test
(a paho subscriber that decodes batches with the protocol module and publishes acks): priority order, batch
limits, items marked sent only on HQ's ack, lost acks, refusals, offline then online, the bandwidth cap, the P9
status levels and hot list bundles from headquarters."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.alerts import Alert, HitStore
from edge.config import SyncConfig
from edge.hotlist.bundle import MAGIC
from edge.store.db import Connection, open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate
from edge.store.reads import ReadStore
from edge.sync import protocol
from edge.sync.commands import register
from edge.sync.hotlist_source import MqttBundleSource
from edge.sync.outbox import Outbox
from edge.sync.protocol import Ack, Batch, Item, Rejected
from edge.sync.uplink import TokenBucket, Uplink, sync_level

from .test_alerts import FIX, LISTS, NOW, free_port, make_ca, make_hit, make_read, make_server_cert, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DEVICE = "unit-7"
DAY = 86400.0

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path(MOSQUITTO).exists(), reason="mosquitto")


# --- a plain local broker (sync_env's TLS broker replaces it once it exists) ----------------------------------


class Broker:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (folder / "data").mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {folder / 'data'}/",
            f"log_dest file {folder / 'mosquitto.log'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        import socket

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

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder)
    b.start()
    yield b
    b.stop()


AckPolicy = Callable[[Batch, int], Ack | None]  # (batch, how many batches came before) -> the ack, or None: drop it


def ack_all(batch: Batch, n: int) -> Ack | None:
    return Ack(batch.device, batch.batch_id, tuple(i.uuid for i in batch.items), (), time.time())


class FakeHQ:
    """Headquarters in miniature: decodes every batch with the protocol module, records its items, acks per policy."""

    def __init__(self, port: int, policy: AckPolicy = ack_all, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.policy = policy
        self.batches: list[Batch] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hq-{uuid.uuid4().hex[:8]}", protocol=5)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("alpr/+/up", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        batch = protocol.decode_batch(bytes(msg.payload), msg.topic)
        with self.lock:
            n = len(self.batches)
            self.batches.append(batch)
        ack = self.policy(batch, n)
        if ack is not None:
            c.publish(protocol.ack_topic(batch.device), protocol.encode_ack(ack), qos=1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def uuids(self) -> list[str]:
        with self.lock:
            return [i.uuid for b in self.batches for i in b.items]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the unit's store ----------------------------------------------------------------------------------------


class Unit:
    """One encrypted unit database, written as the daemon writes it (ReadStore, HitStore)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key_file = path.parent / "db.key"
        create_key_file(self.key_file)
        self.key = load_key(self.key_file)
        self.reads = ReadStore.open(path, self.key, clock=lambda: NOW)
        self.conn: Connection = open_db(path, self.key)
        migrate(self.conn)
        self.hits = HitStore(self.conn, clock=lambda: NOW)

    def add_reads(self, n: int) -> list[str]:
        out = []
        for i in range(n):
            r = make_read(seen=NOW - 100 + i)
            self.reads.add(r, FIX)
            out.append(r.uuid)
        return out

    def add_hit(self) -> tuple[str, str, str]:
        """A read, its hit and an outcome: (read uuid, hit uuid, outcome uuid)."""
        read = make_read()
        self.reads.add(read, FIX)
        alert = Alert(
            uuid=str(uuid.uuid4()),
            read_uuid=read.uuid,
            unit_id=DEVICE,
            camera_id=read.camera_id,
            read_text=read.text,
            read_confidence=read.confidence,
            seen_at=read.best_seen,
            fix=FIX,
            hit=make_hit(),
            list_info=LISTS["ncic-or"],
            list_age_s=3600.0,
            list_stale=False,
            crop_jpeg=read.crop_jpeg,
            scene_jpeg=read.scene_jpeg,
            raised_at=NOW,
        )
        self.hits.add([alert])
        outcome = self.hits.record_outcome(alert.uuid, "confirmed", "officer-1")
        return read.uuid, alert.uuid, outcome.uuid

    def outbox(self, clock: Callable[[], float] = lambda: NOW) -> Outbox:
        return Outbox(self.conn, DEVICE, clock)

    def close(self) -> None:
        self.reads.close()
        self.conn.close()


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = Unit(tmp_path / "unit.db")
    yield u
    u.close()


def sync_cfg(port: int, **kw: Any) -> SyncConfig:
    kw.setdefault("ack_timeout_s", 1.0)
    return replace(SyncConfig(), enabled=True, host="127.0.0.1", port=port, **kw)


def drained(up: Uplink) -> bool:
    s = up.status()
    return not any(s.pending.values()) and s.last_complete_sync is not None


# --- the outbox alone ----------------------------------------------------------------------------------------


def test_batches_go_in_priority_order_with_complete_records(unit: Unit) -> None:
    reads = unit.add_reads(2)
    read_uuid, hit_uuid, outcome_uuid = unit.add_hit()  # stored after the reads: priority, not age, decides
    box = unit.outbox()
    assert box.pending() == {"hit": 1, "outcome": 1, "hold": 0, "audit": 0, "read": 3, "image": 6}
    batch = box.next_batch(100, 10 << 20)
    assert batch is not None and batch.device == DEVICE
    kinds = [i.kind for i in batch.items]
    assert kinds == ["hit", "outcome", "read", "read", "read", "image", "image", "image", "image", "image", "image"]
    assert [i.uuid for i in batch.items[:3]] == [hit_uuid, outcome_uuid, reads[0]]
    read = batch.items[2].data
    assert read["lat"] == FIX.lat and read["fix_source"] == "gpsd" and read["eph_m"] == FIX.eph_m
    assert read["candidates"][0] == ["7ABC123", 0.91] and len(read["char_confidences"]) == 7
    assert "synced_at" not in read and "sync_rejected" not in read
    assert batch.items[0].data["match_detail"]["candidate_rank"] == 0 and batch.items[0].data["wanted_plate"]
    assert batch.items[1].data["outcome"] == "confirmed"
    img = batch.items[5]
    assert img.data["read_uuid"] == reads[0] and img.data["kind"] == "crop" and img.data["jpeg"][:2] == b"\xff\xd8"
    assert img.uuid == protocol.image_uuid(reads[0], "crop")
    # What HQ decodes is what the unit built (images' JPEG bytes included).
    again = protocol.decode_batch(protocol.encode_batch(batch), protocol.up_topic(DEVICE))
    assert again.items == batch.items
    assert read_uuid in [i.uuid for i in batch.items]


def test_batch_limits_by_count_and_size(unit: Unit) -> None:
    unit.add_reads(5)
    box = unit.outbox()
    b = box.next_batch(3, 10 << 20)
    assert b is not None and [i.kind for i in b.items] == ["read"] * 3
    # A size cap smaller than one read's record with images: the reads fit (small), images follow alone.
    one_read = len(protocol.encode_batch(Batch(DEVICE, b.batch_id, 0.0, b.items[:1])))
    b = box.next_batch(100, one_read * 2 + 300)
    assert b is not None and len(b.items) == 2
    assert len(protocol.encode_batch(b)) <= one_read * 2 + 300
    b = box.next_batch(5, 10 << 20)  # nothing acknowledged yet: the same reads again
    assert b is not None and [i.kind for i in b.items] == ["read"] * 5
    box.apply_ack(Ack(DEVICE, b.batch_id, tuple(i.uuid for i in b.items), (), NOW))
    b = box.next_batch(100, 1024)  # an image over the cap still goes, alone
    assert b is not None and [i.kind for i in b.items] == ["image"] and b.items[0].data["kind"] == "crop"
    assert len(b.items[0].data["jpeg"]) > 1024
    b = box.next_batch(100, len(make_read().scene_jpeg) * 3)
    assert b is not None and 1 < len(b.items) < 10
    assert len(protocol.encode_batch(b)) <= len(make_read().scene_jpeg) * 3


def test_only_acknowledged_items_are_marked_and_refusals_are_not_resent(unit: Unit) -> None:
    reads = unit.add_reads(3)
    t = [NOW + 5]
    box = Outbox(unit.conn, DEVICE, lambda: t[0])
    b = box.next_batch(3, 10 << 20)
    assert b is not None
    again = box.next_batch(3, 10 << 20)  # not acknowledged: the same items in a new batch
    assert again is not None and again.items == b.items and again.batch_id != b.batch_id
    ack = Ack(DEVICE, b.batch_id, (reads[0],), (Rejected(reads[1], "items[1].text: bad"),), NOW)
    assert box.apply_ack(ack) == (1, 1)
    assert box.apply_ack(ack) == (0, 0)  # a duplicate ack changes nothing
    assert box.pending()["read"] == 1
    assert box.rejections() == [(reads[1], "read", "items[1].text: bad", NOW + 5)]
    nxt = box.next_batch(100, 10 << 20)
    assert nxt is not None and nxt.items[0].uuid == reads[2]
    assert reads[0] not in [i.uuid for i in nxt.items] and reads[1] not in [i.uuid for i in nxt.items]
    assert box.last_complete_sync() is None and box.last_ack() == NOW + 5
    # An ack from before a restart (a fresh Outbox that never handed these out) still marks them by UUID.
    fresh = Outbox(unit.conn, DEVICE, lambda: NOW + 9)
    everything = tuple(i.uuid for i in nxt.items)
    assert fresh.apply_ack(Ack(DEVICE, str(uuid.uuid4()), everything, (), NOW)) == (1, 0)  # images: not by uuid
    assert fresh.pending()["read"] == 0 and fresh.pending()["image"] == 6
    b = fresh.next_batch(100, 10 << 20)
    assert b is not None and fresh.apply_ack(Ack(DEVICE, b.batch_id, tuple(i.uuid for i in b.items), (), NOW)) == (6, 0)
    assert fresh.next_batch(100, 10 << 20) is None
    assert fresh.last_complete_sync() == NOW + 9
    with pytest.raises(ValueError):
        fresh.apply_ack(Ack("unit-8", b.batch_id, (), (), NOW))


def test_an_item_that_can_never_be_sent_is_refused_locally_and_blocks_nothing(unit: Unit) -> None:
    reads = unit.add_reads(2)
    huge = b"\xff\xd8" + bytes(7 << 20)  # base64 makes it larger than any message
    unit.conn.execute("UPDATE read_images SET jpeg = ? WHERE read_uuid = ? AND kind = 'crop'", (huge, reads[0]))
    box = unit.outbox()
    b = box.next_batch(100, 10 << 20)
    assert b is not None and [i.kind for i in b.items] == ["read", "read", "image", "image", "image"]
    assert protocol.image_uuid(reads[0], "crop") not in [i.uuid for i in b.items]
    ((uid, kind, reason, _),) = box.rejections()
    assert uid == protocol.image_uuid(reads[0], "crop") and kind == "image" and reason.startswith("unit: ")
    # An item the encoder refuses (not finite) is refused alone; the others stay to send.
    bad = Item("read", reads[1], {**b.items[1].data, "confidence": float("nan")})
    assert box.refuse_unencodable(replace(b, items=(b.items[0], bad))) == 1
    assert box.pending()["read"] == 1 and len(box.rejections()) == 2


def test_sync_levels() -> None:
    assert sync_level(NOW, None, None, 0, 7, 25) == (None, "ok")
    assert sync_level(NOW, NOW - 30 * DAY, None, 0, 7, 25)[1] == "ok"  # nothing waits in the vehicle
    assert sync_level(NOW, NOW - 6 * DAY, None, 5, 7, 25) == (pytest.approx(6.0), "ok")
    assert sync_level(NOW, NOW - 8 * DAY, None, 5, 7, 25)[1] == "warn"
    assert sync_level(NOW, NOW - 26 * DAY, None, 5, 7, 25)[1] == "critical"
    assert sync_level(NOW, None, NOW - 8 * DAY, 5, 7, 25)[1] == "warn"  # never synced: from the oldest waiting


def test_token_bucket() -> None:
    t = [0.0]
    b = TokenBucket(1000.0, clock=lambda: t[0])
    assert b.wait_s(800) == 0
    b.take(800)
    assert b.wait_s(800) == pytest.approx(0.6)
    assert b.wait_s(5000) == pytest.approx(0.8)  # larger than the bucket: waits for a full one
    t[0] = 0.8
    b.take(5000)
    assert b.wait_s(1) == pytest.approx(4.001)


# --- the uplink against a broker -----------------------------------------------------------------------------


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


def start_uplink(unit: Unit, cfg: SyncConfig, stop: threading.Event, **kw: Any) -> Uplink:
    up = Uplink(unit.path, unit.key, cfg, DEVICE, stop, **kw)
    up.start()
    return up


def test_everything_drains_in_priority_order_and_is_marked_on_hq_acks(
    broker: Broker, unit: Unit, stop: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    reads = unit.add_reads(6)
    _, hit_uuid, outcome_uuid = unit.add_hit()
    hq = FakeHQ(broker.port)
    up = start_uplink(unit, sync_cfg(broker.port, batch_max_items=4), stop)
    try:
        wait_until(lambda: drained(up))
        got = hq.uuids()
        assert got[:2] == [hit_uuid, outcome_uuid]
        kinds = [i.kind for b in hq.batches for i in b.items]
        assert kinds == sorted(kinds, key=protocol.KINDS.index)
        assert len(got) == len(set(got)) == 2 + 7 + 14
        assert set(reads) <= set(got)
        assert all(len(b.items) <= 4 for b in hq.batches)
        st = up.status()
        assert st.connected and st.level == "ok" and st.fault is None and st.last_ack_at is not None
        row = unit.conn.execute("SELECT count(*) FROM reads WHERE synced_at IS NULL").fetchone()
        assert row[0] == 0
        hq.publish(protocol.ack_topic(DEVICE), b'{"schema":"nonsense"}')  # an invalid ack: logged and ignored
        forged = Ack(DEVICE, str(uuid.uuid4()), (), (), time.time())
        hq.publish(protocol.ack_topic("unit-8"), protocol.encode_ack(forged))  # another unit's topic: not ours
        unit.add_reads(1)  # new rows go out while connected
        wait_until(lambda: len(hq.uuids()) == len(got) + 3 and drained(up))
        assert "invalid acknowledgement" in caplog.text
    finally:
        stop.set()
        up.join(5)
        hq.close()


def test_puback_alone_marks_nothing_and_a_lost_ack_means_a_harmless_resend(
    broker: Broker, unit: Unit, stop: threading.Event
) -> None:
    unit.add_reads(2)
    silent = FakeHQ(broker.port, policy=lambda b, n: None)  # receives every batch, never acknowledges
    up = start_uplink(unit, sync_cfg(broker.port), stop)
    try:
        wait_until(lambda: len(silent.batches) >= 2, timeout=10)  # sent again after the 1 s ack timeout
        assert silent.batches[0].items == silent.batches[1].items
        assert silent.batches[0].batch_id != silent.batches[1].batch_id
        assert unit.outbox().pending()["read"] == 2 and unit.outbox().last_ack() is None
    finally:
        silent.close()
    # Now an HQ that loses its first ack: the items come again, are acked, and nothing is left or doubled.
    hq = FakeHQ(broker.port, policy=lambda b, n: None if n == 0 else ack_all(b, n))
    try:
        wait_until(lambda: drained(up), timeout=15)
        assert len(hq.batches) >= 2 and hq.batches[0].items == hq.batches[1].items
        assert unit.outbox().pending() == dict.fromkeys(protocol.KINDS, 0)
    finally:
        stop.set()
        up.join(5)
        hq.close()


def test_a_refused_item_is_recorded_and_not_resent(broker: Broker, unit: Unit, stop: threading.Event) -> None:
    reads = unit.add_reads(3)
    bad = reads[1]

    def refuse_one(batch: Batch, n: int) -> Ack:
        ok = tuple(i.uuid for i in batch.items if i.uuid != bad)
        rej = tuple(Rejected(i.uuid, "items[1].text: not plate text") for i in batch.items if i.uuid == bad)
        return Ack(batch.device, batch.batch_id, ok, rej, time.time())

    hq = FakeHQ(broker.port, policy=refuse_one)
    up = start_uplink(unit, sync_cfg(broker.port, batch_max_items=2), stop)
    try:
        wait_until(lambda: drained(up))
        time.sleep(0.3)
        assert hq.uuids().count(bad) == 1
        assert unit.outbox().rejections()[0][:3] == (bad, "read", "items[1].text: not plate text")
        assert up.status().pending["read"] == 0
    finally:
        stop.set()
        up.join(5)
        hq.close()


def test_offline_then_online_everything_drains(broker: Broker, unit: Unit, stop: threading.Event) -> None:
    unit.add_reads(2)
    broker.stop()
    up = start_uplink(unit, sync_cfg(broker.port), stop)
    try:
        wait_until(lambda: up.status().fault is not None and up.status().pending["read"] == 2)
        assert not up.status().connected
        more = unit.add_reads(3)  # the unit keeps reading while offline
        time.sleep(0.5)
        broker.start()
        hq = FakeHQ(broker.port)
        wait_until(lambda: drained(up), timeout=30)  # the reconnect backoff is at most a few seconds here
        assert set(more) <= set(hq.uuids())
        assert up.status().connected
        hq.close()
    finally:
        stop.set()
        up.join(5)


def test_bandwidth_cap_slows_a_large_upload(broker: Broker, unit: Unit, stop: threading.Event) -> None:
    unit.add_reads(8)
    hq = FakeHQ(broker.port)
    kbps = 400.0  # 50,000 bytes/s
    up = start_uplink(unit, sync_cfg(broker.port, bandwidth_kbps=kbps, batch_max_kb=16), stop)
    t0 = time.monotonic()
    try:
        wait_until(lambda: drained(up), timeout=30)
        elapsed = time.monotonic() - t0
        rate = kbps * 1000 / 8
        # The first second's worth goes at once and the last batch needs no wait after it.
        largest = max(len(protocol.encode_batch(b)) for b in hq.batches)
        floor = (up.bytes_sent - rate - largest) / rate
        assert up.bytes_sent > 2.5 * rate, up.bytes_sent  # large enough for the cap to matter
        assert elapsed >= 0.8 * floor, (elapsed, floor)
    finally:
        stop.set()
        up.join(5)
        hq.close()


def test_status_levels_with_an_injected_clock(unit: Unit, stop: threading.Event) -> None:
    unit.add_reads(1)
    now = [NOW + 8 * DAY]
    up = start_uplink(
        unit, sync_cfg(free_port(), warn_after_days=7, critical_after_days=25), stop, clock=lambda: now[0]
    )
    try:
        wait_until(lambda: up.status().pending["read"] == 1)
        st = up.status()
        assert st.level == "warn" and st.days_since_sync == pytest.approx(8.0) and st.last_complete_sync is None
        assert not st.connected and st.fault is not None and "cannot reach" in st.fault
        now[0] = NOW + 26 * DAY
        assert up.status().level == "critical"
        now[0] = NOW + 1 * DAY
        assert up.status().level == "ok"
    finally:
        stop.set()
        up.join(5)


def test_hotlist_bundles_from_headquarters_reach_the_source(broker: Broker, unit: Unit, stop: threading.Event) -> None:
    pokes: list[int] = []
    source = MqttBundleSource(poke=lambda: pokes.append(1))
    bundle = MAGIC + b"\x00" * 64
    hq = FakeHQ(broker.port)
    try:
        hq.publish(protocol.device_hotlist_topic(DEVICE, "ncic-or"), bundle, retain=True)
        hq.publish(protocol.device_hotlist_topic("unit-8", "ncic-or"), MAGIC + b"other", retain=True)
        hq.publish(protocol.fleet_hotlist_topic("pdx", "bolo"), MAGIC + b"fleet", retain=True)
        hq.publish(protocol.fleet_hotlist_topic("other", "bolo"), MAGIC + b"not ours", retain=True)
        up = start_uplink(unit, sync_cfg(broker.port, agency="pdx"), stop, on_hotlist_bundle=source.offer)
        wait_until(lambda: len(pokes) >= 2)
        got = source.fetch()
        assert sorted(got) == sorted([bundle, MAGIC + b"fleet"])
        assert source.fetch() == [] and source.problems == ()
        hq.publish(protocol.device_hotlist_topic(DEVICE, "ncic-or"), b"not a bundle", retain=True)
        wait_until(lambda: len(pokes) >= 3)
        assert source.fetch() == [] and source.problems == ("alpr/unit-7/hotlist/ncic-or: not a hot list bundle",)
        assert "hot list" in source.describe() or "MQTT" in source.describe()
    finally:
        stop.set()
        up.join(5)
        hq.close()


def test_the_same_retained_bundle_is_offered_once() -> None:
    source = MqttBundleSource()
    source.offer(MAGIC + b"1", "alpr/unit-7/hotlist/a")
    source.offer(MAGIC + b"1", "alpr/unit-7/hotlist/a")
    source.offer(b"", "alpr/unit-7/hotlist/a")  # a cleared retained topic
    assert source.fetch() == [MAGIC + b"1"]
    source.offer(MAGIC + b"2", "alpr/unit-7/hotlist/a")
    assert source.fetch() == [MAGIC + b"2"]


def test_cli_sync_status(unit: Unit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reads = unit.add_reads(2)
    unit.outbox().apply_ack(Ack(DEVICE, str(uuid.uuid4()), (reads[0],), (), NOW))
    key_file = unit.key_file
    other = tmp_path / "cli.db"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sync", "status", "--db", str(unit.path), "--key-file", str(key_file), "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pending"]["read"] == 1 and doc["pending"]["image"] == 4 and doc["last_complete_sync"] is None
    assert doc["level"] in ("ok", "warn", "critical") and doc["last_ack"] is not None
    args = parser.parse_args(["sync", "status", "--db", str(unit.path), "--key-file", str(key_file)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "pending: hit 0, outcome 0, hold 0, audit 0, read 1, image 4" in out and "last complete sync: never" in out
    args = parser.parse_args(["sync", "status", "--db", str(other), "--key-file", str(key_file)])
    assert args.func(args) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["sync", "status", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--config", "--db", "--key-file", "--json"):
        assert option in help_text


def make_client_cert(folder: Path, ca_key: Path, ca_crt: Path, cn: str) -> tuple[Path, Path]:
    key, csr, crt = (folder / f"{cn}.{x}" for x in ("key", "csr", "crt"))
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
            f"/CN={cn}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-out", str(crt), "-days", "2"], check=True, capture_output=True)  # fmt: skip
    return crt, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_with_a_client_certificate(tmp_path: Path, unit: Unit, stop: threading.Event) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    ca_key, ca_crt = make_ca(folder, "hq-ca")
    rogue_key, rogue_crt = make_ca(folder, "rogue-ca")
    srv_key, srv_crt = make_server_cert(folder, ca_key, ca_crt)
    unit_crt, unit_key = make_client_cert(folder, ca_key, ca_crt, DEVICE)
    fake_crt, fake_key = make_client_cert(folder, rogue_key, rogue_crt, "impostor")
    hq_crt, hq_key = make_client_cert(folder, ca_key, ca_crt, "hq")
    b = Broker(folder)
    b.conf.write_text(
        b.conf.read_text()
        + f"cafile {ca_crt}\ncertfile {srv_crt}\nkeyfile {srv_key}\n"
        + "require_certificate true\nuse_identity_as_username true\n"
    )
    b.start()
    hq_tls = ssl.create_default_context(cafile=str(ca_crt))
    hq_tls.load_cert_chain(str(hq_crt), str(hq_key))
    hq = FakeHQ(b.port, tls=hq_tls)
    reads = unit.add_reads(2)
    impostor_stop = threading.Event()
    try:
        # A client certificate from another CA: no connection, nothing sent, nothing marked.
        impostor = start_uplink(
            unit, sync_cfg(b.port, ca_file=ca_crt, cert_file=fake_crt, key_file=fake_key), impostor_stop
        )
        wait_until(lambda: impostor.status().fault is not None and impostor.status().pending["read"] == 2)
        time.sleep(0.5)
        impostor_stop.set()
        impostor.join(5)
        assert not impostor.status().connected and hq.batches == []
        assert "closed the connection before accepting it" in str(impostor.status().fault)
        up = start_uplink(unit, sync_cfg(b.port, ca_file=ca_crt, cert_file=unit_crt, key_file=unit_key), stop)
        wait_until(lambda: drained(up))
        assert set(reads) <= set(hq.uuids())
        stop.set()
        up.join(5)
    finally:
        impostor_stop.set()
        hq.close()
        b.stop()
