"""Health: every fault appears from the real part's state and clears by itself when the cause goes away. Cameras are
real CameraStreams on a scripted source, GPS is a real gpsd reading a pty, the brokers are real Mosquitto, the
store and hot lists are real SQLCipher files; thresholds are test-sized so that each case takes seconds."""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.capture.sources import SourceError
from edge.capture.spec import CameraSpec
from edge.capture.stream import CameraStream
from edge.config import HealthConfig, HotlistConfig
from edge.gps import GpsdClient
from edge.health import (
    Counters,
    Fault,
    FrameProbe,
    Health,
    Parts,
    level,
    measure,
    read_snapshot,
    snapshot,
    status_file,
    write_snapshot,
)
from edge.hotlist.bundle import generate_keypair, sign_bundle
from edge.hotlist.csvformat import write_csv
from edge.hotlist.repository import HotListRepository
from edge.hotlist.service import HotListService
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate
from edge.store.reads import ReadStore
from edge.sync.uplink import Uplink

from .test_alerts import NOW
from .test_gps import EPOCH_S, GpsdRig, nmea_epoch
from .test_hotlist_service import entry
from .test_sync_uplink import DEVICE, Broker, FakeHQ, Unit, sync_cfg

FAST = HealthConfig(camera_lost_s=0.6, frozen_s=0.8, sample_s=0.05, gps_lost_s=1.0, broker_lost_s=0.3,
                    disk_warn_mb=100, clock_jump_s=120)  # fmt: skip
MB = 1_000_000


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def codes(faults: tuple[Fault, ...]) -> set[str]:
    return {f.code for f in faults}


# -- cameras ---------------------------------------------------------------------------------------------------


class ScriptedCamera:
    """A live camera the test steers: "live" (noisy frames of a static scene), "frozen" (the same bytes again),
    "hung" (read blocks: no frames, no error) or "gone" (open and read fail)."""

    def __init__(self) -> None:
        self.mode = "live"
        rng = np.random.default_rng(1)
        self.scene = rng.integers(40, 200, (120, 160, 3), dtype=np.uint8)
        self.rng = rng
        self.frozen: np.ndarray | None = None

    def factory(self, spec: CameraSpec) -> ScriptedCamera:
        return self

    def open(self) -> None:
        if self.mode == "gone":
            raise SourceError("scripted camera: no such device")

    def read(self) -> np.ndarray | None:
        time.sleep(0.02)
        if self.mode == "gone":
            raise SourceError("scripted camera: stream lost")
        if self.mode == "hung":
            while self.mode == "hung":
                time.sleep(0.02)
            return self.read()
        if self.mode == "frozen":
            if self.frozen is None:
                self.frozen = self.scene.copy()
            return self.frozen.copy()
        self.frozen = None
        noise = self.rng.integers(-3, 4, self.scene.shape)  # sensor noise on a static scene
        return np.clip(self.scene.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "scripted camera"

    def native_fps(self) -> float | None:
        return None


@pytest.fixture
def camera() -> Iterator[tuple[ScriptedCamera, CameraStream, Health]]:
    cam = ScriptedCamera()
    health = Health(FAST, 64 * MB)
    stop = threading.Event()
    spec = CameraSpec(
        id="front", name="Front", kind="url", uri="rtsp://127.0.0.1/x", backoff_initial_s=0.05, backoff_max_s=0.1
    )
    stream = CameraStream(spec, lambda f: health.probe.observe(f.camera_id, f.image), stop, source_factory=cam.factory)
    stream.start()
    try:
        yield cam, stream, health
    finally:
        cam.mode = "live"
        stop.set()
        stream.join(5)


def camera_faults(stream: CameraStream, health: Health) -> set[str]:
    return codes(health.faults(Parts(cameras=(stream.status(),))))


def test_camera_lost_when_the_stream_fails_or_hangs_and_back_when_it_returns(
    camera: tuple[ScriptedCamera, CameraStream, Health],
) -> None:
    cam, stream, health = camera
    wait_for("frames", lambda: stream.status().frames > 5)
    assert camera_faults(stream, health) == set()
    cam.mode = "gone"
    wait_for("camera.lost (stream error)", lambda: "camera.lost" in camera_faults(stream, health), 5)
    (f,) = health.faults(Parts(cameras=(stream.status(),)))
    assert f.severity == "critical" and f.text.startswith("camera front: lost: scripted camera:")
    cam.mode = "live"
    wait_for("recovery", lambda: camera_faults(stream, health) == set(), 5)
    cam.mode = "hung"  # no error, just no frames
    wait_for("camera.lost (silent)", lambda: "camera.lost" in camera_faults(stream, health), 5)
    assert "no frame for" in health.faults(Parts(cameras=(stream.status(),)))[0].text
    cam.mode = "live"
    wait_for("recovery", lambda: camera_faults(stream, health) == set(), 5)


def test_camera_frozen_when_frames_repeat_and_back_when_they_change(
    camera: tuple[ScriptedCamera, CameraStream, Health],
) -> None:
    cam, stream, health = camera
    wait_for("frames", lambda: stream.status().frames > 5)
    time.sleep(FAST.frozen_s + 0.5)
    assert camera_faults(stream, health) == set()  # a static scene with sensor noise is not frozen
    cam.mode = "frozen"
    wait_for("camera.frozen", lambda: "camera.frozen" in camera_faults(stream, health), 5)
    cam.mode = "live"
    wait_for("recovery", lambda: camera_faults(stream, health) == set(), 5)
    m = health.probe.measures("front")
    assert m is not None and 40 < m.mean < 200 and m.clipped < 0.01 and m.focus > 0


def test_measures_tell_exposure_and_focus_apart() -> None:
    rng = np.random.default_rng(2)
    sharp = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    import cv2

    blurred = cv2.GaussianBlur(sharp, (15, 15), 5)
    assert measure(sharp, 0).focus > 10 * measure(blurred, 0).focus
    dark = np.zeros((480, 640, 3), np.uint8)
    assert measure(dark, 0).mean == 0 and measure(dark, 0).clipped == 1.0


def test_a_recorded_footage_loop_is_never_frozen() -> None:
    probe = FrameProbe(0.0, 0.5)
    health = Health(replace(FAST, frozen_s=0.1), 0, probe)
    still = np.full((48, 64, 3), 100, np.uint8)
    probe.observe("rec", still)
    time.sleep(0.2)
    probe.observe("rec", still)
    spec = CameraSpec(id="rec", name="rec", kind="folder", uri="/nonexistent")
    st = CameraStream(spec, lambda f: None, threading.Event())
    status = replace(st.status(), last_frame_age_s=0.0)
    assert health.faults(Parts(cameras=(status,), recorded=frozenset({"rec"}))) == ()
    assert "camera.frozen" in codes(health.faults(Parts(cameras=(replace(status, camera_id="rec"),))))


# -- GPS and the clock -----------------------------------------------------------------------------------------


class OffsetFeed:
    """A receiver whose clock runs ``offset`` seconds from the host's; ``valid`` False sends epochs without fix."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0.0
        self.valid = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(EPOCH_S):
            t = math.floor((time.time() + self.offset) / EPOCH_S) * EPOCH_S
            with contextlib.suppress(BlockingIOError):
                os.write(self.fd, nmea_epoch(t, 48.1173, 11.516667, self.valid))


@pytest.fixture
def gps(tmp_path: Path) -> Iterator[tuple[OffsetFeed, GpsdClient]]:
    rig = GpsdRig(tmp_path)
    feed = OffsetFeed(rig.master)
    rig.feed = feed  # type: ignore[assignment]
    client = GpsdClient(port=rig.port, max_fix_age_s=1.0, connect_timeout_s=0.5, silence_timeout_s=3.0,
                        backoff_initial_s=0.05, backoff_max_s=0.3)  # fmt: skip
    try:
        feed.start()
        rig.start_gpsd()
        client.start()
        yield feed, client
    finally:
        client.stop()
        rig.close()


def test_gps_lost_after_the_limit_and_back_with_the_fix(gps: tuple[OffsetFeed, GpsdClient]) -> None:
    feed, client = gps
    health = Health(FAST, 0)

    def gps_faults() -> set[str]:
        return codes(health.faults(Parts(gps=client.status())))

    wait_for("a fix", lambda: client.status().state == "fix")
    assert gps_faults() == set()
    feed.valid = False
    wait_for("no_fix", lambda: client.status().state == "no_fix")
    assert gps_faults() == set()  # a moment without fix (a bridge) is not a fault yet
    wait_for("gps.lost", lambda: "gps.lost" in gps_faults(), 5)
    text = health.faults(Parts(gps=client.status()))[0].text
    assert text.startswith("gps: no fix for") and "48.1" not in text and "11.5" not in text
    feed.valid = True
    wait_for("recovery", lambda: gps_faults() == set(), 5)


def test_clock_jump_against_gps_time_is_reported_and_clears(gps: tuple[OffsetFeed, GpsdClient]) -> None:
    feed, client = gps
    health = Health(FAST, 0)
    wait_for("a fix", lambda: client.status().state == "fix")
    assert client.status().clock_offset_s is not None and abs(client.status().clock_offset_s or 0) < 2
    feed.offset = 300.0  # the receiver says it is 5 minutes later than the system clock does

    def clock_faults() -> list[Fault]:
        return [f for f in health.faults(Parts(gps=client.status())) if f.code == "clock.jump"]

    (f,) = wait_for("clock.jump", clock_faults, 10)
    assert f.severity == "critical" and "behind GPS time" in f.text and "300 s" in f.text
    feed.offset = 0.0
    wait_for("recovery", lambda: not clock_faults(), 10)


# -- disk ------------------------------------------------------------------------------------------------------


def test_disk_nearly_full_then_full_then_fine(tmp_path: Path) -> None:
    create_key_file(tmp_path / "k")
    free = [10_000 * MB]
    store = ReadStore.open(tmp_path / "reads.db", load_key(tmp_path / "k"), min_free_bytes=64 * MB,
                           scene_min_free_bytes=64 * MB, free_bytes=lambda: free[0])  # fmt: skip
    health = Health(FAST, 64 * MB)
    try:

        def disk() -> tuple[Fault, ...]:
            return health.faults(Parts(store=store.status()))

        assert disk() == ()
        free[0] = 120 * MB  # within disk_warn_mb (100 MB) of min_free_mb (64 MB)
        (f,) = disk()
        assert (f.code, f.severity) == ("disk.low", "warning") and "120 MB free" in f.text
        free[0] = 10 * MB
        assert [(f.code, f.severity) for f in disk()] == [("disk.full", "critical")]
        free[0] = 10_000 * MB
        assert disk() == ()
    finally:
        store.close()


# -- hot lists -------------------------------------------------------------------------------------------------


def test_hot_list_stale_until_a_fresh_list_arrives(tmp_path: Path) -> None:
    create_key_file(tmp_path / "k")
    key = load_key(tmp_path / "k")
    db = tmp_path / "reads.db"
    conn = open_db(db, key)
    migrate(conn)
    priv, pub = generate_keypair()
    csv = write_csv([entry("7ABC123", 1)])
    old = sign_bundle(priv, "ncic-or", 1, csv, created=time.time() - 30 * 3600)
    HotListRepository(conn, [pub]).offer(old, source="test")
    conn.close()
    folder = tmp_path / "lists"
    folder.mkdir()
    cfg = HotlistConfig(stale_after_h=24, sources=(str(folder),))
    svc = HotListService(db, key, cfg, [pub])
    health = Health(FAST, 0)
    stop = threading.Event()
    svc.start(stop)
    try:

        def stale() -> list[Fault]:
            parts = Parts(hotlist=svc.state(), hotlist_configured=True)
            return [f for f in health.faults(parts) if f.code == "hotlist.stale"]

        (f,) = stale()
        assert f.text == "hot list stale: 30 h old"
        (folder / "ncic-or-2.hlb").write_bytes(sign_bundle(priv, "ncic-or", 2, csv, created=time.time()))
        svc.poke()
        wait_for("a fresh list in force", lambda: not stale(), 15)
    finally:
        stop.set()
        svc.join(5)


# -- brokers and sync ------------------------------------------------------------------------------------------


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = Unit(tmp_path / "unit.db")
    yield u
    u.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder)
    b.start()
    yield b
    b.stop()


def test_broker_unreachable_while_mosquitto_is_down_and_status_published(unit: Unit, broker: Broker) -> None:
    stop = threading.Event()
    health = Health(FAST, 0)
    payload = json.dumps({"schema": "alpr-edge/status/1", "level": "ok"}).encode()
    up = Uplink(unit.path, unit.key, sync_cfg(broker.port), DEVICE, stop, status_payload=lambda: payload,
                status_interval_s=0.5)  # fmt: skip
    got: list[bytes] = []
    hq = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hq-status", protocol=5)
    hq.on_connect = lambda c, u, f, rc, p: c.subscribe(f"alpr/{DEVICE}/status", qos=1)
    hq.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    hq.connect("127.0.0.1", broker.port)
    hq.loop_start()
    up.start()
    try:

        def link() -> list[Fault]:
            return [f for f in health.faults(Parts(uplink=up.status())) if f.code == "broker.unreachable"]

        wait_for("connected", lambda: up.status().connected)
        assert link() == []
        wait_for("the status on alpr/<device>/status", lambda: payload in got)
        hq.loop_stop()
        broker.stop()
        (f,) = wait_for("broker.unreachable", link, 10)
        assert f.text.startswith("sync: broker unreachable for")
        broker.start()
        wait_for("reconnected", lambda: not link(), 30)
    finally:
        stop.set()
        up.join(5)
        hq.disconnect()


def test_sync_overdue_until_headquarters_has_everything(unit: Unit, broker: Broker) -> None:
    unit.add_reads(3)
    stop = threading.Event()
    health = Health(FAST, 0)
    offset = [0.2 * 86400]  # the reads have waited 0.2 days: past warn_after_days
    cfg = sync_cfg(broker.port, warn_after_days=0.1, critical_after_days=0.5)
    up = Uplink(unit.path, unit.key, cfg, DEVICE, stop, clock=lambda: NOW + offset[0])
    up.start()
    hq: FakeHQ | None = None
    try:

        def overdue() -> list[Fault]:
            return [f for f in health.faults(Parts(uplink=up.status())) if f.code == "sync.overdue"]

        (f,) = wait_for("sync.overdue", overdue, 10)
        assert f.severity == "warning" and f.text.startswith("sync warn:")
        offset[0] = 0.6 * 86400
        (f,) = wait_for("critical", lambda: [f for f in overdue() if f.severity == "critical"], 10)
        hq = FakeHQ(broker.port)  # headquarters comes back and acknowledges everything
        wait_for("recovery", lambda: not overdue(), 20)
    finally:
        stop.set()
        up.join(5)
        if hq is not None:
            hq.close()


# -- the snapshot ----------------------------------------------------------------------------------------------


def test_snapshot_is_written_atomically_and_names_no_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faults = (Fault("gps.lost", "warning", "gps: no fix for 40 s"),)
    from edge.gps import GpsStatus

    g = GpsStatus("fix", 3, 8, 0.4, 0, 0, None, clock_offset_s=0.3)
    snap = snapshot("unit-1", Counters(10, 9.5, 95, 1, 3, 0, 0, 2), Parts(gps=g), faults, FrameProbe(1, 0.5), "gpsd",
                    64 * MB)  # fmt: skip
    path = tmp_path / "run" / "status.json"
    write_snapshot(path, snap)
    back = read_snapshot(path)
    assert back["gps"]["fix"] == "fix: 3D, age 0.4 s" and back["level"] == "warning" == level(faults)
    assert back["faults"] == [{"code": "gps.lost", "severity": "warning", "text": "gps: no fix for 40 s"}]
    assert "lat" not in json.dumps(back) and oct(path.stat().st_mode & 0o777) == "0o640"
    assert not [p for p in path.parent.iterdir() if p.name != "status.json"]  # no temp file left
    from edge.config import Config

    cfg = Config.__new__(Config)
    object.__setattr__(cfg, "health", HealthConfig())
    from edge.config import UnitConfig

    object.__setattr__(cfg, "unit", UnitConfig(data_dir=tmp_path))
    assert status_file(cfg, {"RUNTIME_DIRECTORY": "/run/alpr-edge"}) == Path("/run/alpr-edge/status.json")
    assert status_file(cfg, {}) == tmp_path / "run" / "status.json"
