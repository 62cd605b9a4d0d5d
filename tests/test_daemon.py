"""The daemon as a real process: footage in, encrypted reads out; systemd notifications; SIGTERM drains;
SIGKILL at random moments loses no committed read; failing parts degrade instead of stopping the unit."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from edge.access.users import UserStore
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.reads import ReadStore

from .footage import daemon_config, write_passes

PLATES = ["7ABC123", "KM4521", "BRT5X09", "4FCW533", "AB123CD", "HPM9362"]
STORED = re.compile(r"stored read ([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("footage") / "frames"
    write_passes(folder, PLATES)
    return folder


def unit(tmp_path: Path, frames: Path, **kw: object) -> Path:
    cfg = daemon_config(tmp_path, frames, **kw)  # type: ignore[arg-type]
    (tmp_path / "data").mkdir(exist_ok=True)
    if not (tmp_path / "data" / "db.key").exists():
        create_key_file(tmp_path / "data" / "db.key")
    return cfg


def start(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def stored(tmp_path: Path) -> list:
    store = ReadStore.open(tmp_path / "data" / "reads.db", load_key(tmp_path / "data" / "db.key"))
    try:
        return store.list_reads(limit=10_000)
    finally:
        store.close()


def test_footage_to_encrypted_reads(tmp_path: Path, frames: Path) -> None:
    cfg = unit(tmp_path, frames, fps=20)
    p = start(cfg)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    reads = stored(tmp_path)
    assert sorted(r.text for r in reads) == sorted(PLATES)  # every pass once, no duplicates
    assert all(r.frames_seen >= 3 and r.camera_id == "front" for r in reads)
    r = reads[0]
    assert r.fix.source == "fixed" and abs((r.fix.lat or 0) - 45.5231) < 1e-9 and r.has_scene
    # the summary, and nothing confidential on stdout or in the log at the default level
    assert f"{len(PLATES)} read(s) stored" in out and "0 dropped" in out
    for text in PLATES:
        assert text not in out and text not in err
    assert "45.52" not in out + err
    assert len(STORED.findall(err)) == len(PLATES)
    db = (tmp_path / "data" / "reads.db").read_bytes()
    assert not any(t.encode() in db for t in PLATES)
    conn = open_db(tmp_path / "data" / "reads.db", load_key(tmp_path / "data" / "db.key"))
    try:
        UserStore(conn).add("officer1", "operator", "correct horse battery", date(2020, 1, 1))
    finally:
        conn.close()
    listing = subprocess.run(
        [sys.executable, "-m", "edge", "reads", "list", "--config", str(cfg), "--user", "officer1", "--password-stdin"],
        capture_output=True, text=True, check=False, input="correct horse battery\n",
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert all(t in listing.stdout for t in PLATES)


def test_missing_or_wrong_key_stops_with_a_clear_message(tmp_path: Path, frames: Path) -> None:
    cfg = daemon_config(tmp_path, frames)
    p = start(cfg)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "keys init" in err and "Traceback" not in err
    cfg = unit(tmp_path, frames)
    subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(cfg)], capture_output=True, check=True)
    (tmp_path / "data" / "db.key").unlink()
    create_key_file(tmp_path / "data" / "db.key")  # another key for the same database
    p = start(cfg)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "key" in err.lower() and "Traceback" not in err


def notify_socket(tmp_path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify.sock"))
    s.settimeout(0.5)
    return s


def drain(sock: socket.socket) -> list[str]:
    msgs = []
    while True:
        try:
            msgs.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return msgs


def test_systemd_notify_watchdog_and_sigterm_drain(tmp_path: Path, frames: Path) -> None:
    cfg = unit(tmp_path, frames, loop=True)
    sock = notify_socket(tmp_path)
    p = start(cfg, "--forever", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "3000000"})
    try:
        msgs: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum("STATUS=fps" in m for m in msgs) < 3:
            msgs += drain(sock)
        assert any(m.startswith("READY=1") for m in msgs)
        assert any(m == "WATCHDOG=1" for m in msgs)
        status = [m for m in msgs if "STATUS=fps" in m][-1]
        expected = (
            r"fps [0-9.]+, frames \d+, dropped \d+, reads \d+, pending \d+, hits 0, hotlist [^,]+, gps fixed, "
            r"faults: none"
        )
        assert re.search(expected, status)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
        sock.close()
    assert p.returncode == 0, err
    n = int(re.search(r"(\d+) read\(s\) stored", out).group(1))  # type: ignore[union-attr]
    assert n >= 3 and len(stored(tmp_path)) == n == len(STORED.findall(err))


def test_degrades_when_a_camera_and_gps_are_gone_and_the_disk_is_low(tmp_path: Path, frames: Path) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: gpsd and the second camera are "unplugged"
    cfg = unit(
        tmp_path,
        frames,
        fps=20,  # about 2 s of footage: status reports at 1 s intervals
        gps=f'[gps]\nmode = "gpsd"\nport = {port}\n',
        cameras=f'[[camera]]\nid = "rear"\nkind = "url"\nuri = "http://user:secret@127.0.0.1:{port}/video"\n'
        "backoff_initial_s = 0.1\nbackoff_max_s = 0.5\n",
    )
    # scene images need more free space than any disk here has: they are dropped, crops and reads are kept
    cfg.write_text(cfg.read_text().replace("scene_min_free_mb = 1", "scene_min_free_mb = 900000"))
    sock = notify_socket(tmp_path)
    p = start(cfg, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        msgs: list[str] = []
        deadline = time.monotonic() + 90
        while p.poll() is None and time.monotonic() < deadline:
            msgs += drain(sock)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        sock.close()
    assert p.returncode == 0, err
    reads = stored(tmp_path)
    assert sorted(r.text for r in reads) == sorted(PLATES)
    assert all(r.fix.source == "none" and r.fix.lat is None for r in reads)
    assert not any(r.has_scene for r in reads)
    faults = " ".join(m for m in msgs if "STATUS=" in m)
    assert "camera rear:" in faults and "gps: disconnected" in faults and "scene images not stored" in faults
    assert "secret" not in faults + out + err


def test_sigkill_at_random_moments_loses_no_committed_read(tmp_path: Path, frames: Path) -> None:
    """50 power cuts while reads flow: every read the daemon reported stored is there, and the file is sound."""
    cfg = unit(tmp_path, frames, loop=True, fps=100)
    rng = random.Random(4)
    reported: set[str] = set()
    for _ in range(50):
        p = start(cfg, "--forever")
        time.sleep(rng.uniform(1.0, 3.0))
        p.kill()
        _, err = p.communicate(timeout=30)
        reported |= set(STORED.findall(err))
    store = ReadStore.open(tmp_path / "data" / "reads.db", load_key(tmp_path / "data" / "db.key"))
    try:
        present = {r.uuid for r in store.list_reads(limit=100_000)}
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    assert len(reported) >= 50, "reads did not flow between the kills"
    assert reported <= present
