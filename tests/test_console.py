"""The serial console on real pseudo-terminals (pyserial opens the slave side, the test types on the master), with a
real SQLCipher store for accounts and the access record: logins, every command and its record, line editing,
hostile input (overlong lines, garbage, a 1 MB flood), the port vanishing mid-line and coming back (socat)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from argon2 import PasswordHasher

from edge import config
from edge.access.audit import AuditEntry, AuditLog, create_signing_key, load_signing_key
from edge.access.users import UserStore
from edge.capture.stream import CameraStatus
from edge.console import server
from edge.console.commands import clean_log_line
from edge.console.server import Console
from edge.health import Counters, Fault, FrameProbe, Parts, snapshot, write_snapshot
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate

PASSWORD = "Correct-Horse-9"
PLATE = "7ABC123"


def write_unit(tmp: Path) -> Path:
    (tmp / "data").mkdir()
    create_key_file(tmp / "db.key")
    create_signing_key(tmp / "audit.key")
    (tmp / "daemon.log").write_text(
        "2026-01-01 10:00:00 INFO edge.daemon: running: 1 camera(s)\n"
        "2026-01-01 10:00:01 DEBUG edge.daemon: read 7ABC123 at 45.523100 -122.676500\n"
        f"2026-01-01 10:00:02 WARNING edge.daemon: hot list hit: plate {PLATE} near 45.523100,-122.676500\n"
        "2026-01-01 10:00:03 INFO edge.daemon: stored read 0b4c2f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b (camera front)\n"
    )
    cfg = tmp / "edge.toml"
    cfg.write_text(f"""
[unit]
id = "unit-1"
data_dir = "{tmp / "data"}"
[store]
key_file = "{tmp / "db.key"}"
audit_key_file = "{tmp / "audit.key"}"
[gps]
mode = "fixed"
lat = 45.5231
lon = -122.6765
[alerts]
mqtt_password_file = "{tmp / "mqtt.password"}"
[health]
status_file = "{tmp / "status.json"}"
[console]
max_line = 64
log_file = "{tmp / "daemon.log"}"
[[camera]]
id = "front"
kind = "url"
uri = "rtsp://admin:hunter2secret@10.0.0.9/stream1"
""")
    return cfg


def write_status(cfg: config.Config, faults: tuple[Fault, ...] = ()) -> None:
    probe = FrameProbe(0.0, 0.5)
    rng = np.random.default_rng(3)
    probe.observe("front", rng.integers(30, 220, (240, 320, 3), dtype=np.uint8))
    cam = CameraStatus("front", "front", "url rtsp://***@10.0.0.9/stream1", True, 1234, 1, 2, None, 0.1, False)
    snap = snapshot("unit-1", Counters(3700, 9.8, 1234, 5, 17, 0, 1, 2), Parts(cameras=(cam,)), faults, probe,
                    "fixed", 64_000_000)  # fmt: skip
    assert cfg.health.status_file is not None
    write_snapshot(cfg.health.status_file, snap)


class Term:
    """The technician's end of the line: the pty master."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.out = b""
        self.seen = 0

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                self.pump(0.01)
                continue
            view = view[n:]

    def pump(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            with contextlib.suppress(OSError):  # EIO once the other side is gone
                self.out += os.read(self.fd, 65536)

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Output up to and including ``text`` (after what earlier calls consumed)."""
        deadline = time.monotonic() + timeout
        want = text.encode()
        while True:
            i = self.out.find(want, self.seen)
            if i >= 0:
                chunk = self.out[self.seen : i + len(want)]
                self.seen = i + len(want)
                return chunk.decode("utf-8", "replace")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s; got {self.out[self.seen :][-600:]!r}")
            self.pump(0.05)

    def command(self, line: str, prompt: str = "alpr> ") -> str:
        self.send(line.encode() + b"\r")
        return self.expect(prompt)


@dataclass
class Rig:
    cfg_path: Path
    cfg: config.Config
    console: Console
    term: Term
    stop: threading.Event
    thread: threading.Thread

    def entries(self) -> list[AuditEntry]:
        conn = open_db(self.cfg.db_path, load_key(self.cfg.store.key_file))
        try:
            return AuditLog(conn, load_signing_key(self.cfg.store.audit_key_file)).entries()
        finally:
            conn.close()

    def login(self, name: str = "tech1", password: str = PASSWORD) -> str:
        self.term.expect("login: ")
        self.term.send(name.encode() + b"\r")
        self.term.expect("password: ")
        self.term.send(password.encode() + b"\r")
        return self.term.expect("\n", 10) + self.term.expect("\n", 10)


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(server, "FAIL_PAUSE_S", 0.05)
    cfg_path = write_unit(tmp_path)
    cfg = config.load(cfg_path)
    write_status(cfg, (Fault("gps.lost", "warning", "gps: no fix for 40 s"),))
    conn = open_db(cfg.db_path, load_key(cfg.store.key_file))
    migrate(conn)
    users = UserStore(conn, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1), max_failures=3,
                      lockout_s=60)  # fmt: skip
    users.add("tech1", "technician", PASSWORD, date(2020, 1, 1))
    users.add("oper1", "operator", PASSWORD, date(2020, 1, 1))
    audit = AuditLog(conn, load_signing_key(cfg.store.audit_key_file))
    master, slave = os.openpty()
    os.set_blocking(master, False)
    stop = threading.Event()
    status = cfg.health.status_file or Path("/nonexistent")
    console = Console(cfg, cfg_path, users, audit, status, stop, port=os.ttyname(slave),
                      make_context=lambda c: replace(c, journal=(), restart=("true",)))  # fmt: skip
    thread = threading.Thread(target=console.run, daemon=True)
    thread.start()
    r = Rig(cfg_path, cfg, console, Term(master), stop, thread)
    try:
        yield r
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        os.close(master)
        os.close(slave)
        conn.close()


def commands_recorded(rig: Rig) -> list[str]:
    return [e.detail["command"] for e in rig.entries() if e.action == "console.command"]


def test_login_every_command_and_its_record(rig: Rig) -> None:
    rig.console.bucket = server._Bucket(100.0, 100.0, 100.0)  # a script types faster than a technician
    assert "logged in as tech1 (technician)" in rig.login()
    t = rig.term
    t.expect("alpr> ")
    out = t.command("status")
    assert "unit unit-1" in out and "fps 9.8" in out and "dropped 5" in out and "reads 17" in out
    assert "queues: frames 2" in out and "gps: fixed" in out and "[warning] gps: no fix for 40 s" in out
    out = t.command("camera")
    assert "camera front" in out and "1234 frames" in out and "exposure mean" in out and "focus" in out
    assert "hunter2" not in out
    assert "error: camera: no camera 'rear'" in t.command("camera rear")
    assert "gps: fixed" in t.command("gps") and "45.52" not in t.command("gps")
    assert "storage:" in t.command("storage")
    assert "sync: off" in t.command("sync")
    assert "hot list: off" in t.command("hotlist")
    out = t.command("logs 10")
    assert "running: 1 camera(s)" in out and "0b4c2f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b" in out  # UUIDs are kept
    assert PLATE not in out and "45.5231" not in out and "DEBUG" not in out and "[redacted]" in out
    assert "whole number" in t.command("logs many")
    out = t.command("config show")
    assert "[console]" in out and "hunter2" not in out and "45.5231" not in out and "[position hidden]" in out
    assert "ok (1 camera(s)" in t.command("config validate")
    assert "say which" in t.command("config")
    assert "calibrate [CAMERA]" in t.command("help")
    t.send(b"maintenance log\r")
    t.expect("kind (")
    t.send(b"repair\r")
    t.expect("camera (")
    t.send(b"front\r")
    t.expect("what was done")
    t.send(b"lens cleaned, housing resealed\r")
    assert "maintenance recorded" in t.expect("alpr> ")
    out = t.command("calibrate")
    assert "calibration recorded" in out
    t.send(b"restart\r")
    t.expect("type yes: ")
    t.send(b"yes\r")
    out = t.expect("alpr> ")
    assert "restart: alpr-edge restarted" in out or "systemd is not running here" in out
    assert "unknown command 'frobnicate'" in t.command("frobnicate " + PLATE)
    assert "too many arguments" in t.command("status now")
    t.send(b"logout\r")
    t.expect("logged out")
    t.expect("login: ")
    entries = rig.entries()
    assert commands_recorded(rig) == [
        "status", "camera", "camera", "gps", "gps", "storage", "sync", "hotlist", "logs", "logs", "config show",
        "config validate", "(malformed)", "help", "maintenance log", "calibrate", "restart", "(unknown)",
        "(malformed)",
    ]  # fmt: skip
    actions = [e.action for e in entries]
    assert actions[0] == "console.login" and actions[-1] == "console.logout"
    maint = [e for e in entries if e.action == "maintenance"]
    assert maint[0].detail == {"kind": "repair", "camera": "front", "summary": "lens cleaned, housing resealed",
                               "values": {}}  # fmt: skip
    assert maint[1].detail["kind"] == "maintenance" and "restart" in maint[1].detail["summary"]
    (cal,) = [e for e in entries if e.action == "calibration"]
    assert cal.detail["camera"] == "front" and float(cal.detail["values"]["focus"]) > 0
    assert all(e.user == "tech1" and e.role == "technician" for e in entries)
    assert PLATE not in repr([e.to_json() for e in entries])  # arguments are never recorded
    conn = open_db(rig.cfg.db_path, load_key(rig.cfg.store.key_file))
    try:
        log = AuditLog(conn, load_signing_key(rig.cfg.store.audit_key_file))
        assert log.verify(log.public_key).ok
    finally:
        conn.close()


def test_login_refused_wrong_role_and_lockout(rig: Rig) -> None:
    rig.console.bucket = server._Bucket(100.0, 100.0, 100.0)
    assert "login refused" in rig.login("tech1", "wrong-password-1")
    assert "maintenance: needs role" in rig.login("oper1", PASSWORD)
    assert "login refused" in rig.login("nobody", PASSWORD)
    for _ in range(2):
        assert "login refused" in rig.login("tech1", "wrong-password-1")
    assert "login refused" in rig.login("tech1", PASSWORD)  # locked after 3 wrong passwords in a row
    actions = [(e.action, e.user) for e in rig.entries()]
    assert actions.count(("login.refused", "tech1")) == 4 and ("access.denied", "oper1") in actions
    assert ("login.refused", "nobody") in actions
    assert not any(a == "console.login" for a, _ in actions)
    assert [e.detail["why"] for e in rig.entries() if e.user == "tech1"][-1] == "locked"


def test_login_timeout_and_idle_logout(rig: Rig) -> None:
    rig.term.expect("login: ")  # this prompt's deadline was set with the default timeout
    rig.console.login_timeout_s = 0.5
    rig.term.send(b"\r")  # an empty name: a fresh prompt, timed with the short timeout
    rig.term.expect("login: ")
    rig.term.send(b"tech1")  # and nothing more
    rig.term.expect("login timed out", 5)
    rig.console.login_timeout_s = 30
    rig.console.idle_timeout_s = 0.5
    assert "logged in" in rig.login()
    rig.term.expect("idle: logged out", 5)
    assert [e.detail for e in rig.entries() if e.action == "console.logout"] == [{"why": "idle"}]


def test_line_editing_and_hostile_input(rig: Rig) -> None:
    rig.login()
    t = rig.term
    t.expect("alpr> ")
    assert "fps 9.8" in t.command("statuz\x7fs")  # DEL
    assert "fps 9.8" in t.command("gps\x15status")  # Ctrl-U erased "gps"
    assert "fps 9.8" in t.command("\x1b[A\x1b[Dstat\x08\x08atus")  # arrow keys swallowed, backspaces
    t.send(b"config sh\x03")  # Ctrl-C cancels the line
    t.expect("^C")
    t.expect("alpr> ")
    t.send(b"sta\xff\xfe\x00\x07tus\r\n")  # invalid UTF-8 and control bytes are ignored; CRLF is one line end
    assert "fps 9.8" in t.expect("alpr> ")
    assert "line longer than 64 characters" in t.command("status " + "x" * 200)
    rng = np.random.default_rng(5)
    t.send(bytes(rng.integers(0, 256, 4000, dtype=np.uint8)) + b"\x1b[1")
    time.sleep(2.5)  # the rate limit refills
    t.pump(0.5)
    t.seen = len(t.out)
    t.send(b"\x03")  # ends the half escape sequence, and cancels the line
    t.expect("^C")
    t.expect("alpr> ")
    assert "fps 9.8" in t.command("status")
    assert rig.thread.is_alive()


def test_a_flood_of_input_is_survived_and_rate_limited(rig: Rig) -> None:
    rig.login()
    t = rig.term
    t.expect("alpr> ")
    rng = np.random.default_rng(7)
    chunk = bytes(rng.integers(0, 256, 64 * 1024, dtype=np.uint8)) + b"\rhelp\r" * 2000
    t0 = time.monotonic()
    sent = 0
    while sent < 1 << 20:
        t.send(chunk)
        sent += len(chunk)
        t.pump(0)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the console has read everything (the pty is drained)
        before = len(t.out)
        t.pump(0.5)
        if len(t.out) == before:
            break
    time.sleep(2.5)
    t.seen = len(t.out)
    t.send(b"\x03")
    t.expect("alpr> ")
    assert "fps 9.8" in t.command("status")
    assert rig.thread.is_alive()
    n = commands_recorded(rig).count("help")
    assert 0 < n <= server.LINE_BURST + server.LINES_PER_S * (time.monotonic() - t0 + 1)
    assert rig.console.dropped_lines > 1000
    print(f"flood: {sent} bytes in {elapsed:.1f} s, {n} commands acted on, {rig.console.dropped_lines} dropped")


@pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat")
def test_the_port_vanishing_mid_line_and_coming_back(tmp_path: Path, rig: Rig) -> None:
    link = tmp_path / "ttyCONSOLE"
    peer = tmp_path / "ttyPEER"

    def socat() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["socat", f"PTY,link={link},raw,echo=0", f"PTY,link={peer},raw,echo=0"],
                             stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 5
        while not (link.exists() and peer.exists()):
            assert time.monotonic() < deadline, "socat made no ptys"
            time.sleep(0.02)
        return p

    proc = socat()
    stop = threading.Event()
    c = Console(rig.cfg, rig.cfg_path, rig.console.users, rig.console.audit, rig.console.status_path, stop,
                port=str(link))  # fmt: skip
    thread = threading.Thread(target=c.run, daemon=True)
    thread.start()
    fd = os.open(peer, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        t = Term(fd)
        t.expect("login: ")
        t.send(b"tech1\r")
        t.expect("password: ")
        t.send(PASSWORD.encode() + b"\r")
        t.expect("alpr> ")
        t.send(b"stat")  # mid-line
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # the cable is pulled
        proc.wait(5)
        os.close(fd)
        fd = -1
        time.sleep(1.0)
        assert thread.is_alive()
        proc = socat()  # plugged in again: the same device path comes back
        fd = os.open(peer, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        t = Term(fd)
        t.expect("login: ", 20)  # reopened with backoff: a fresh login, the half line forgotten
        assert c.opens >= 2
        logouts = [e.detail for e in rig.entries() if e.action == "console.logout"]
        assert {"why": "port lost"} in logouts
    finally:
        stop.set()
        thread.join(10)
        if fd >= 0:
            os.close(fd)
        proc.terminate()
        proc.wait(5)
    assert not thread.is_alive()


def test_cli_console_runs_until_sigterm(tmp_path: Path) -> None:
    cfg_path = write_unit(tmp_path)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    p = subprocess.Popen([sys.executable, "-m", "edge", "console", "--config", str(cfg_path), "--port",
                          os.ttyname(slave)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        Term(master).expect("login: ", 30)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=15)
        assert p.returncode == 0, err
    finally:
        p.kill()
        os.close(master)
        os.close(slave)
    bad = subprocess.run([sys.executable, "-m", "edge", "console", "--config", str(tmp_path / "missing.toml")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "missing.toml" in bad.stderr and "Traceback" not in bad.stderr


def test_log_lines_are_cleaned() -> None:
    assert clean_log_line("2026 DEBUG edge.x: anything") is None
    assert clean_log_line("hit on ABC1234 at -22.906847,-43.172897") == "hit on [redacted] at [position],[position]"
    uid = "0b4c2f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    assert clean_log_line(f"stored read {uid} (camera front)") == f"stored read {uid} (camera front)"
    assert clean_log_line("plate 12345678 \x1b[31mred") == "plate [redacted] [31mred"
