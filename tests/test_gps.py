"""GPS: the TPV parser and fix history on hostile and edge-case input, FixedPosition, and GpsdClient against a
real gpsd 3.22 reading NMEA that the test writes into a pty (fix, nearest fix, loss of fix, gpsd restart,
garbage NMEA), plus a hostile peer on loopback for what gpsd itself never sends (bad JSON, over-long lines)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from edge.gps import (
    MAX_LINE_BYTES,
    NO_FIX,
    Fix,
    FixedPosition,
    FixHistory,
    GarbageError,
    GpsdClient,
    GpsStatus,
    PositionSource,
    Tpv,
    parse_report,
    parse_sky_used,
    parse_time,
    parse_tpv,
)

T = TypeVar("T")
EPOCH_S = 0.2  # the simulated receiver's rate: 5 Hz
KNOT = 1852.0 / 3600.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 5.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- NMEA that a receiver would send ---------------------------------------------------------------------------


def nmea(body: str) -> bytes:
    """A sentence with its checksum (XOR of the bytes between '$' and '*')."""
    cs = 0
    for b in body.encode("ascii"):
        cs ^= b
    return f"${body}*{cs:02X}\r\n".encode("ascii")


def _dm(value: float, deg_digits: int) -> str:
    a = abs(value)
    d = int(a)
    return f"{d:0{deg_digits}d}{(a - d) * 60:08.5f}"


def nmea_epoch(t: float, lat: float, lon: float, valid: bool = True) -> bytes:
    """GGA + RMC (+ GSA/GSV for a SKY report) for one epoch at UTC time ``t``. An invalid epoch is what receivers
    send without a fix: quality 0, status V and empty position fields."""
    secs, centis = divmod(round(t * 100), 100)
    dt = datetime.fromtimestamp(secs, UTC)
    hms = dt.strftime("%H%M%S") + f".{centis:02d}"
    date = dt.strftime("%d%m%y")
    if valid:
        la, ns = _dm(lat, 2), "N" if lat >= 0 else "S"
        lo, ew = _dm(lon, 3), "E" if lon >= 0 else "W"
        return (
            nmea(f"GPGGA,{hms},{la},{ns},{lo},{ew},1,08,0.9,545.4,M,46.9,M,,")
            + nmea(f"GPRMC,{hms},A,{la},{ns},{lo},{ew},022.4,084.4,{date},003.1,W")
            + nmea("GPGSA,A,3,04,05,09,12,24,,,,,,,,2.5,1.3,2.1")
            + nmea("GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45")
            + nmea("GPGSV,2,2,08,04,40,083,46,05,17,308,41,09,07,344,39,24,22,228,45")
        )
    return nmea(f"GPGGA,{hms},,,,,0,00,,,M,,M,,") + nmea(f"GPRMC,{hms},V,,,,,,,{date},,")


def test_nmea_checksum_matches_a_published_sentence() -> None:
    # the classic example from NMEA references
    assert nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == (
        b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
    )


class NmeaFeed:
    """A simulated receiver: writes one epoch every 0.2 s (on the 0.2 s grid of the host clock) into the pty,
    and remembers each valid epoch it sent. The test steers it through attributes under ``lock``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.lat = 48.1173
        self.lon = 11.516667
        self.lat_step = 0.0  # degrees per epoch, to make each epoch's position distinct
        self.valid = True
        self.paused = False
        self.garbage: list[bytes] = []  # written before the next epoch
        self.sent: list[tuple[float, float, float]] = []  # (time, lat, lon) of valid epochs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nmea-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _write(self, data: bytes) -> None:
        # nobody reads the pty while gpsd is dead: a real receiver keeps talking into the void too
        with contextlib.suppress(BlockingIOError):
            os.write(self.fd, data)

    def _run(self) -> None:
        t = math.ceil(time.time() / EPOCH_S) * EPOCH_S
        while not self._stop.is_set():
            delay = t - time.time()
            if delay > 0 and self._stop.wait(delay):
                return
            with self.lock:
                garbage, self.garbage = self.garbage, []
                for chunk in garbage:
                    self._write(chunk)
                if not self.paused:
                    self._write(nmea_epoch(t, self.lat, self.lon, self.valid))
                    if self.valid:
                        self.sent.append((round(t, 2), self.lat, self.lon))
                    self.lat += self.lat_step
            t = max(t + EPOCH_S, math.ceil(time.time() / EPOCH_S) * EPOCH_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class GpsdRig:
    """A real gpsd on a free loopback port reading a pty that NmeaFeed writes to."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo back into the master, no line editing
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.feed = NmeaFeed(self.master)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_gpsd(self) -> None:
        control = self.tmp / "gpsd.sock"
        control.unlink(missing_ok=True)
        termios.tcflush(self.slave, termios.TCIFLUSH)  # what was written while no gpsd read is old news
        self.starts += 1
        log = (self.tmp / f"gpsd-{self.starts}.log").open("wb")
        # -N foreground, -n open the device without waiting for a client, -b read-only (no probe strings)
        self.proc = subprocess.Popen(
            [
                shutil.which("gpsd") or "/usr/sbin/gpsd",
                "-N",
                "-n",
                "-b",
                "-S",
                str(self.port),
                "-F",
                str(control),
                self.device,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill_gpsd(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def close(self) -> None:
        self.feed.stop()
        self.kill_gpsd()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[GpsdRig]:
    if shutil.which("gpsd") is None and not Path("/usr/sbin/gpsd").exists():
        pytest.fail("gpsd is not installed (Debian package gpsd)")
    r = GpsdRig(tmp_path)
    try:
        r.feed.start()
        r.start_gpsd()
        yield r
    finally:
        r.close()


@pytest.fixture
def make_client() -> Iterator[Callable[..., GpsdClient]]:
    """GpsdClients with test-sized timeouts, always stopped at teardown."""
    clients: list[GpsdClient] = []

    def make(port: int, **kw: float) -> GpsdClient:
        args: dict[str, float] = {
            "max_fix_age_s": 1.0,
            "connect_timeout_s": 0.5,
            "silence_timeout_s": 3.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.3,
        }
        args.update(kw)
        c = GpsdClient(port=port, **args)  # type: ignore[arg-type]
        clients.append(c)
        c.start()
        return c

    yield make
    for c in clients:
        c.stop()


def wait_status(client: GpsdClient, what: str, pred: Callable[[GpsStatus], bool], timeout: float = 5.0) -> GpsStatus:
    return wait_for(what, lambda: s if pred(s := client.status()) else None, timeout)


def current_fix(client: GpsdClient) -> Fix | None:
    f = client.fix_at(time.time())
    return f if f.source == "gpsd" else None


# -- against a real gpsd ---------------------------------------------------------------------------------------


def test_fix_arrives_with_position_mode_and_details(
    rig: GpsdRig, make_client: Callable[..., GpsdClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.gps")
    with rig.feed.lock:
        rig.feed.lat, rig.feed.lon = -22.906847, -43.172897  # south and west: the signs must survive
    client = make_client(rig.port)
    fix = wait_for("a fix from gpsd", lambda: current_fix(client))
    assert fix.mode == 3
    assert fix.lat == pytest.approx(-22.906847, abs=1e-5)
    assert fix.lon == pytest.approx(-43.172897, abs=1e-5)
    assert fix.alt_m == pytest.approx(545.4 + 46.9, abs=0.01)  # altHAE = MSL + geoid separation, not "alt"
    assert fix.eph_m is not None and fix.eph_m > 0
    assert fix.speed_mps == pytest.approx(22.4 * KNOT, abs=0.01)
    assert fix.track_deg == pytest.approx(84.4, abs=0.01)
    assert fix.time is not None and fix.age_s is not None
    assert abs(fix.age_s) < 1.0
    assert round(fix.time, 2) in {s[0] for s in rig.feed.sent}  # the receiver's epoch time, not arrival time
    st = wait_status(client, "SKY satellites", lambda s: s.satellites is not None)
    assert st.state == "fix" and st.mode == 3 and st.satellites == 5
    assert st.fault is None and st.garbage_lines == 0 and st.reconnects == 0
    assert st.last_fix_age_s is not None and st.last_fix_age_s < 1.0
    # positions only at DEBUG (where they are, so this looks in the right place)
    assert any("-22.9068" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert any(r.levelno >= logging.INFO for r in caplog.records)  # "connected"
    for r in caplog.records:
        if r.levelno > logging.DEBUG:
            assert "22.90" not in r.getMessage() and "43.17" not in r.getMessage()


def test_fix_at_picks_the_nearest_fix(rig: GpsdRig, make_client: Callable[..., GpsdClient]) -> None:
    with rig.feed.lock:
        rig.feed.lat_step = 1e-4  # about 11 m per epoch: each epoch's fix is recognisable
    client = make_client(rig.port, max_fix_age_s=2.0)
    wait_for("8 fixes", lambda: len(client.recent_fixes()) >= 8)
    fixes = client.recent_fixes()
    with rig.feed.lock:
        sent = {t: (lat, lon) for t, lat, lon in rig.feed.sent}
    # each fix is the epoch that was sent at that time, once (several TPVs per epoch are merged)
    times = [round(f.time or 0, 2) for f in fixes]
    assert len(times) == len(set(times))
    for f in fixes:
        assert f.lat == pytest.approx(sent[round(f.time or 0, 2)][0], abs=1e-5)
    for k in range(1, len(fixes) - 1):
        prev, here, nxt = fixes[k - 1], fixes[k], fixes[k + 1]
        assert here.time is not None and prev.time is not None and nxt.time is not None
        for offset in (-0.06, 0.0, 0.07):
            got = client.fix_at(here.time + offset)
            assert (got.lat, got.time) == (here.lat, here.time)
            assert got.age_s == pytest.approx(offset, abs=1e-6)  # negative: the fix is newer than the read
        # just past the midpoint to each neighbour, the neighbour is nearer
        assert client.fix_at(here.time + (nxt.time - here.time) * 0.6).lat == nxt.lat
        assert client.fix_at(here.time - (here.time - prev.time) * 0.6).lat == prev.lat


def test_loss_of_fix_gives_no_fix_not_the_last_one(rig: GpsdRig, make_client: Callable[..., GpsdClient]) -> None:
    client = make_client(rig.port, max_fix_age_s=3.0)
    wait_for("a fix", lambda: current_fix(client))
    with rig.feed.lock:
        rig.feed.valid = False  # RMC status V, GGA quality 0, empty position
    st = wait_status(client, "no_fix state", lambda s: s.state == "no_fix")
    assert st.mode == 1
    last = client.recent_fixes()[-1]
    assert last.time is not None
    now = time.time()
    assert now - last.time < 3.0  # the last fix is still younger than max_fix_age_s...
    assert client.fix_at(now) == NO_FIX  # ...but the receiver lost the fix since: never passed off as current
    # gpsd skips the first epoch without fix and reports mode 1 from the next: a read 0.6 s after the last fix
    # follows a loss report, though the fix is younger than max_fix_age_s
    wait_for("0.8 s of lost fix", lambda: time.time() - (last.time or 0) > 0.8)
    assert client.fix_at(last.time + 0.6) == NO_FIX
    assert client.fix_at(last.time).lat == last.lat  # reads taken before the loss keep their fix
    with rig.feed.lock:
        rig.feed.valid = True
    fix = wait_for("the fix to come back", lambda: current_fix(client))
    assert fix.time is not None and fix.time > last.time
    assert client.status().state == "fix"


def test_feed_stops_fix_expires_after_max_age(rig: GpsdRig, make_client: Callable[..., GpsdClient]) -> None:
    client = make_client(rig.port, max_fix_age_s=1.0, silence_timeout_s=5.0)
    wait_for("a fix", lambda: current_fix(client))
    with rig.feed.lock:
        rig.feed.paused = True  # the receiver goes quiet: gpsd sends nothing more
    stopped = time.time()
    seen_fix_after_pause = False
    while time.time() - stopped < 1.8:
        f = client.fix_at(time.time())
        if f.source == "gpsd":
            seen_fix_after_pause = True
            assert f.age_s is not None and f.age_s <= 1.0  # never older than the limit
        else:
            assert f == NO_FIX
        time.sleep(0.05)
    assert seen_fix_after_pause  # the fix stayed valid for a while (the test would pass vacuously otherwise)
    assert client.fix_at(time.time()) == NO_FIX
    st = client.status()
    assert st.state == "no_fix"
    assert st.last_fix_age_s is not None and st.last_fix_age_s > 1.0


def test_gpsd_down_killed_and_restarted(rig: GpsdRig, make_client: Callable[..., GpsdClient]) -> None:
    rig.kill_gpsd()
    client = make_client(rig.port)
    st = wait_status(client, "cannot connect", lambda s: "cannot connect" in (s.fault or ""))
    assert st.state == "disconnected" and st.mode == 0 and str(rig.port) in (st.fault or "")
    assert client.fix_at(time.time()) == NO_FIX
    rig.start_gpsd()  # comes up after the client: it connects by itself
    wait_for("a fix after gpsd started", lambda: current_fix(client))
    assert client.status().reconnects == 0

    rig.kill_gpsd()
    killed = time.time()
    st = wait_status(client, "disconnected after kill", lambda s: s.state == "disconnected", 3.0)
    assert st.fault is not None
    wait_for("the old fix to expire", lambda: client.fix_at(time.time()) == NO_FIX, 3.0)
    rig.start_gpsd()
    fix = wait_for("fixes to resume", lambda: f if (f := current_fix(client)) and (f.time or 0) > killed else None, 8)
    assert fix.lat == pytest.approx(48.1173, abs=1e-5)
    st = client.status()
    assert st.state == "fix" and st.reconnects == 1 and st.fault is None


def test_garbage_nmea_no_crash_no_bogus_fix(rig: GpsdRig, make_client: Callable[..., GpsdClient]) -> None:
    client = make_client(rig.port)
    wait_for("a fix", lambda: current_fix(client))
    rng = random.Random(7)
    for i in range(10):
        t = time.time()
        hms = datetime.fromtimestamp(t, UTC).strftime("%H%M%S.00")
        date = datetime.fromtimestamp(t, UTC).strftime("%d%m%y")
        bad_cs = nmea(f"GPRMC,{hms},A,1000.000,N,01000.000,E,001.0,010.0,{date},,")  # plausible but corrupted
        bad_cs = bad_cs[:-4] + (b"00" if bad_cs[-4:-2] != b"00" else b"11") + b"\r\n"
        garbage = [
            bytes(rng.randrange(256) for _ in range(300)) + b"\r\n",
            bad_cs,
            nmea(f"GPGGA,{hms},9530.00000,N,18130.00000,E,1,08,0.9,545.4,M,46.9,M,,"),  # lat 95.5, lon 181.5
            nmea(f"GPRMC,{hms},A,9130.000,S,19000.000,W,001.0,010.0,{date},,"),
            nmea(f"GPGGA,{hms},4807.038,X,01131.000,Q,1,08,0.9,545.4,M,46.9,M,,"),  # bad hemispheres
            b"$GPGGA," + b"9" * 200 + b"*00\r\n",
            b"\x00" * 64 + b"hello gpsd\r\n",
        ]
        if i == 5:
            garbage.append(b"$" + b"A" * 5000 + b"\r\n")  # far longer than any NMEA sentence
        with rig.feed.lock:
            rig.feed.garbage.extend(garbage)
        time.sleep(0.15)
    wait_for("garbage written", lambda: not rig.feed.garbage)
    time.sleep(0.5)
    assert rig.proc is not None and rig.proc.poll() is None
    fixes = client.recent_fixes()
    assert len(fixes) >= 10
    for f in fixes:  # every fix is the real position: nothing from the garbage got through
        assert f.lat == pytest.approx(48.1173, abs=1e-5)
        assert f.lon == pytest.approx(11.516667, abs=1e-5)
    fix = current_fix(client)
    assert fix is not None and fix.lat == pytest.approx(48.1173, abs=1e-5)
    assert client.status().state == "fix"


# -- a hostile peer on loopback: what gpsd itself never sends ---------------------------------------------------


class HostilePeer:
    """Listens on loopback like gpsd; the first connection gets ``script``, later ones only a VERSION line.
    Then it stays silent with the connection open."""

    VERSION = b'{"class":"VERSION","release":"3.22","rev":"3.22","proto_major":3,"proto_minor":14}\n'

    def __init__(self, script: list[bytes]) -> None:
        self.script = script
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.1)
        self.port: int = self.srv.getsockname()[1]
        self.connections = 0
        self.watch_requests: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)
            self.connections += 1
            conn.settimeout(2.0)
            self.watch_requests.append(conn.recv(1000))
            conn.sendall(self.VERSION)
            if self.connections == 1:
                for chunk in self.script:
                    conn.sendall(chunk)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for c in self._conns:
            c.close()
        self.srv.close()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_hostile_json_lines_are_counted_and_dropped(make_client: Callable[..., GpsdClient]) -> None:
    now = time.time()
    ts = _iso(now - 0.1)
    hostile = [
        b"\xff\xfe\x00 not utf-8\n",
        b"{not json\n",
        b"[1, 2, 3]\n",
        b'{"class": 5}\n',
        b'{"class":"TPV","mode":3,"time":"%s","lat":NaN,"lon":1.0}\n' % ts.encode(),
        b'{"class":"TPV","mode":3,"time":"%s","lat":1e999,"lon":1.0}\n' % ts.encode(),
        b'{"class":"TPV","mode":3,"time":"%s","lat":95.0,"lon":1.0}\n' % ts.encode(),
        b'{"class":"TPV","mode":3,"time":"%s","lat":1.0,"lon":-180.5}\n' % ts.encode(),
        b'{"class":"TPV","mode":7,"time":"%s","lat":1.0,"lon":1.0}\n' % ts.encode(),
        b'{"class":"TPV","mode":3,"time":"yesterday","lat":1.0,"lon":1.0}\n',
        b'{"class":"TPV","mode":3,"time":"%s","lat":"1.0","lon":1.0}\n' % ts.encode(),
        b"[" * 40_000 + b"\n",  # deep nesting under the length limit
        b"x" * 30_000,
        b"x" * 30_000,
        b"x" * 40_000 + b"\n",  # one over-long line arriving in pieces: counted once
        b'{"class":"TPV","mode":3,"time":"%s","lat":1.0,"lon":1.0,"pad":"%s"}\n' % (ts.encode(), b"p" * 70_000),
    ]
    n_bad = len(hostile) - 2  # the over-long line is three chunks
    valid = b'{"class":"TPV","mode":2,"time":"%s","lat":12.5,"lon":-45.25,"eph":3.5}\n' % _iso(now).encode()
    benign = [b"\n", b'{"class":"DEVICE","path":"/dev/ttyS0"}\n', b'{"class":"UNKNOWN"}\n']
    peer = HostilePeer([*hostile, *benign, valid])
    try:
        client = make_client(peer.port, silence_timeout_s=0.6, max_fix_age_s=30.0)
        fix = wait_for("the valid TPV after the garbage", lambda: current_fix(client))
        assert (fix.mode, fix.lat, fix.lon, fix.eph_m) == (2, 12.5, -45.25, 3.5)
        assert fix.alt_m is None and fix.speed_mps is None
        assert client.recent_fixes() == [replace(fix, age_s=None)]
        st = client.status()
        assert st.garbage_lines == n_bad
        assert peer.watch_requests[0] == b'?WATCH={"enable":true,"json":true}\n'
        # the peer now says nothing: after silence_timeout_s the client drops it and reconnects
        wait_for("a reconnect after silence", lambda: client.status().reconnects >= 1, 3.0)
        assert peer.connections >= 2
        assert client.status().garbage_lines == n_bad
    finally:
        peer.close()


def test_stop_is_prompt_and_start_twice_is_refused(make_client: Callable[..., GpsdClient]) -> None:
    client = make_client(free_port(), backoff_initial_s=5.0, backoff_max_s=5.0)  # nothing listens there
    wait_for("disconnected", lambda: client.status().fault != "not started")
    with pytest.raises(RuntimeError):
        client.start()
    t0 = time.monotonic()
    client.stop()  # in the middle of a 2.5-5 s backoff
    assert time.monotonic() - t0 < 1.0
    st = client.status()
    assert st.state == "disconnected" and st.fault == "stopped"


@pytest.mark.parametrize(
    "kw",
    [
        {"port": 0},
        {"port": 70000},
        {"max_fix_age_s": 0},
        {"silence_timeout_s": -1},
        {"connect_timeout_s": math.nan},
        {"backoff_initial_s": 2.0, "backoff_max_s": 1.0},
    ],
)
def test_client_rejects_bad_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GpsdClient(**kw)  # type: ignore[arg-type]


# -- the parser, fed directly -----------------------------------------------------------------------------------

GPSD_TPV = (
    b'{"class":"TPV","device":"/dev/pts/0","mode":3,"time":"2026-11-23T11:24:53.000Z","ept":0.005,'
    b'"lat":48.117300000,"lon":11.516667000,"altHAE":592.3000,"altMSL":545.4000,"alt":545.4000,"epx":22.674,'
    b'"epy":21.388,"epv":48.300,"track":84.4000,"magtrack":81.3000,"magvar":-3.1,"speed":11.524,"climb":0.000,'
    b'"geoidSep":46.900,"eph":17.100}'
)


def test_parse_a_real_gpsd_tpv() -> None:
    tpv = parse_tpv(parse_report(GPSD_TPV))
    assert tpv == Tpv(
        mode=3,
        time=datetime(2026, 11, 23, 11, 24, 53, tzinfo=UTC).timestamp(),
        lat=48.1173,
        lon=11.516667,
        alt_m=592.3,
        eph_m=17.1,
        speed_mps=11.524,
        track_deg=84.4,
    )
    fix = tpv.to_fix()
    assert fix is not None and fix.source == "gpsd" and fix.age_s is None


def _tpv(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"class": "TPV", "mode": 3, "time": "2026-11-23T11:24:53.000Z", "lat": 1.0, "lon": 2.0}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def test_altitude_prefers_hae_then_msl_and_deprecated_alt_last() -> None:
    assert parse_tpv(_tpv(altHAE=10.0, altMSL=20.0, alt=30.0)).alt_m == 10.0
    assert parse_tpv(_tpv(altMSL=20.0, alt=30.0)).alt_m == 20.0
    assert parse_tpv(_tpv(alt=30.0)).alt_m == 30.0
    assert parse_tpv(_tpv()).alt_m is None


def test_eph_derived_from_epx_epy_when_missing() -> None:
    assert parse_tpv(_tpv(epx=3.0, epy=4.0)).eph_m == pytest.approx(5.0)
    assert parse_tpv(_tpv(eph=7.0, epx=3.0, epy=4.0)).eph_m == 7.0
    assert parse_tpv(_tpv(epx=3.0)).eph_m is None


def test_what_becomes_a_fix() -> None:
    assert parse_tpv(_tpv(mode=2)).to_fix() is not None
    assert parse_tpv(_tpv(mode=1)).to_fix() is None  # no fix, even with a stale position
    assert parse_tpv(_tpv(mode=0, lat=..., lon=...)).to_fix() is None
    assert parse_tpv(_tpv(time=...)).to_fix() is None  # gpsd's first TPV often has no time
    assert parse_tpv(_tpv(lat=..., lon=...)).to_fix() is None
    assert parse_tpv(_tpv(lat=90.0, lon=-180.0)).to_fix() is not None  # the bounds themselves are valid


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\xff\xfe{}",
        b"{",
        b"null",
        b"[]",
        b'"TPV"',
        b"{}",
        b'{"class": null}',
        b'{"class": ["TPV"]}',
        b'{"class":"TPV","lat":NaN}',
        b'{"class":"TPV","lat":Infinity}',
        b'{"class":"TPV","lat":-Infinity}',
        b"[" * 30_000,
        b"1" * 5000,
        b'{"class":"TPV","x":"' + b"a" * MAX_LINE_BYTES + b'"}',
    ],
)
def test_parse_report_rejects_non_reports(line: bytes) -> None:
    with pytest.raises(GarbageError):
        parse_report(line)


@pytest.mark.parametrize(
    "fields",
    [
        {"mode": ...},
        {"mode": 4},
        {"mode": -1},
        {"mode": "3"},
        {"mode": 3.0},
        {"mode": True},
        {"lat": 90.0001},
        {"lat": -91.0},
        {"lon": 180.5},
        {"lon": -181.0},
        {"lat": 1e999},
        {"lat": float("nan")},
        {"lat": "48.1"},
        {"lat": True},
        {"lat": [48.1]},
        {"lat": {"v": 1}},
        {"lon": ...},
        {"lat": ...},
        {"time": "yesterday"},
        {"time": "2026-13-45T11:24:53Z"},
        {"time": 1763897093.0},
        {"time": "1970-01-01T00:00:00Z"},
        {"time": "2026-11-23T11:24:53" + "0" * 60},
        {"time": ["2026-11-23T11:24:53Z"]},
        {"speed": -1.0},
        {"speed": "fast"},
        {"track": 361.0},
        {"eph": -1.0},
        {"altHAE": float("inf")},
        {"altMSL": "high"},
        {"epx": -3.0, "epy": 4.0},
    ],
)
def test_parse_tpv_rejects_hostile_fields(fields: dict[str, object]) -> None:
    with pytest.raises(GarbageError):
        parse_tpv(_tpv(**fields))


def test_parse_tpv_error_does_not_carry_the_position() -> None:
    with pytest.raises(GarbageError) as e:
        parse_tpv(_tpv(lat=95.123456))
    assert "95.12" not in str(e.value) and "lat" in str(e.value)


def test_parse_time() -> None:
    assert parse_time("2026-11-23T11:24:53.800Z") == pytest.approx(
        datetime(2026, 11, 23, 11, 24, 53, 800000, tzinfo=UTC).timestamp()
    )
    assert parse_time("2026-11-23T11:24:53") == parse_time("2026-11-23T11:24:53Z")  # no zone: UTC, as gpsd means


def test_parse_sky_used() -> None:
    assert parse_sky_used({"class": "SKY", "uSat": 7, "satellites": []}) == 7
    sats = [{"used": True}, {"used": False}, {"used": "yes"}, "junk", {"used": True}]
    assert parse_sky_used({"class": "SKY", "satellites": sats}) == 2
    assert parse_sky_used({"class": "SKY", "uSat": -3}) is None
    assert parse_sky_used({"class": "SKY"}) is None


def test_hostile_json_never_leaves_the_reader() -> None:
    """The client's per-line handler swallows every kind of bad line and counts it."""
    client = GpsdClient(port=free_port())
    lines = [
        b"{",
        b"[]",
        b'{"class":"TPV","mode":9}',
        b'{"class":"TPV","mode":3,"lat":95,"lon":0}',
        b"\xff",
        b'{"class":"SKY","satellites":"many"}',
        b'{"class":"ERROR","message":"bad \\u0000 thing"}',
    ]
    results = [client._handle_line(line) for line in lines]
    assert results == [False, False, False, False, False, True, True]
    st = client.status()
    assert st.garbage_lines == 5
    assert st.fault == "gpsd error: bad  thing"  # control characters stripped
    assert client.recent_fixes() == []


# -- the fix history, with a controlled clock --------------------------------------------------------------------

NOW = 1_800_000_000.0


def _fix(t: float, lat: float = 1.0) -> Fix:
    return Fix(source="gpsd", mode=3, lat=lat, lon=2.0, time=t)


def _history(max_age: float = 1.0, **kw: float) -> FixHistory:
    return FixHistory(max_age, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def test_history_nearest_and_age() -> None:
    h = _history()
    for i in range(5):
        h.add_fix(_fix(NOW - 1 + i * 0.2, lat=i))
    assert h.fix_at(NOW - 0.58).lat == 2  # NOW-0.6 is nearest
    got = h.fix_at(NOW - 0.58)
    assert got.age_s == pytest.approx(0.02)
    assert h.fix_at(NOW - 0.51).lat == 2 and h.fix_at(NOW - 0.49).lat == 3
    assert h.fix_at(NOW - 1.5).lat == 0  # before the first fix, within max age: the first fix, age negative
    assert h.fix_at(NOW - 1.5).age_s == pytest.approx(-0.5)
    assert h.fix_at(NOW - 2.01) == NO_FIX
    assert h.fix_at(NOW - 0.2 + 1.0).lat == 4  # exactly max age after the newest
    assert h.fix_at(NOW - 0.2 + 1.01) == NO_FIX  # stale: never passed off as current


def test_history_dedups_by_time_latest_report_wins() -> None:
    h = _history()
    h.add_fix(_fix(NOW, lat=1.0))
    h.add_fix(_fix(NOW, lat=1.5))
    assert len(h) == 1 and h.fix_at(NOW).lat == 1.5


def test_history_loss_of_fix() -> None:
    h = _history(max_age=5.0)
    h.add_fix(_fix(NOW - 3, lat=1))
    h.add_loss(NOW - 2)
    assert h.fix_at(NOW - 3.5).lat == 1  # before the fix
    assert h.fix_at(NOW - 2.5).lat == 1  # between fix and loss
    assert h.fix_at(NOW - 2) == NO_FIX  # at the loss
    assert h.fix_at(NOW) == NO_FIX  # after it, though the fix is younger than max age
    h.add_fix(_fix(NOW - 1, lat=2))
    assert h.fix_at(NOW - 1.2) == NO_FIX  # between loss and reacquired fix, nearer the fix: still no fix then
    assert h.fix_at(NOW).lat == 2
    assert h.latest_is_fix() and h.last_fix_time() == NOW - 1


def test_history_is_bounded_and_refuses_wild_times() -> None:
    h = _history(horizon_s=60.0, max_events=50)
    for i in range(200):
        h.add_fix(_fix(NOW - 100 + i * 0.5))
    assert len(h) == 50
    assert h.fixes()[0].time == NOW - 100 + 150 * 0.5
    assert not h.add_fix(_fix(NOW + 3600))  # a receiver an hour ahead of the host cannot flush the history
    assert len(h) == 50
    h2 = _history(horizon_s=60.0)
    for i in range(10):
        h2.add_fix(_fix(NOW - 100 + i * 10))  # the first four are older than the horizon
    assert [f.time for f in h2.fixes()] == [NOW - 100 + i * 10 for i in range(4, 10)]


def test_gps_status_rejects_unknown_state() -> None:
    with pytest.raises(ValueError):
        GpsStatus(state="ok", mode=3, satellites=None, last_fix_age_s=None, reconnects=0, garbage_lines=0, fault=None)


# -- fixed position ----------------------------------------------------------------------------------------------


def test_fixed_position() -> None:
    src = FixedPosition(-33.8688, 151.2093, alt_m=58.0, eph_m=2.5)
    assert isinstance(src, PositionSource)
    src.start()
    f = src.fix_at(NOW)
    assert f == Fix(source="fixed", mode=3, lat=-33.8688, lon=151.2093, alt_m=58.0, time=NOW, age_s=0.0, eph_m=2.5)
    assert src.status().state == "fixed" and src.status().mode == 3
    src.stop()
    assert FixedPosition(90, -180).fix_at(NOW).lat == 90.0


def test_gpsd_client_is_a_position_source() -> None:
    assert isinstance(GpsdClient(), PositionSource)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"lat": 90.5, "lon": 0.0}, "lat must be within -90..90"),
        ({"lat": -91.0, "lon": 0.0}, "lat must be within"),
        ({"lat": 0.0, "lon": 180.1}, "lon must be within -180..180"),
        ({"lat": math.nan, "lon": 0.0}, "lat must be a finite number"),
        ({"lat": 0.0, "lon": math.inf}, "lon must be a finite number"),
        ({"lat": "48.1", "lon": 0.0}, "lat must be a finite number"),
        ({"lat": True, "lon": 0.0}, "lat must be a finite number"),
        ({"lat": 0.0, "lon": 0.0, "alt_m": math.nan}, "alt_m"),
        ({"lat": 0.0, "lon": 0.0, "eph_m": -1.0}, "eph_m"),
    ],
)
def test_fixed_position_rejects_bad_values(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FixedPosition(**kw)  # type: ignore[arg-type]
