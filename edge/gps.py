"""Position for each read: gpsd over its JSON protocol, or a configured fixed position for a pole.

The gpsd client (GpsdClient, stdlib only) is our own rather than a library:

- gpsd-py3 is unmaintained since 2017, keeps one global blocking connection with no timeout (a hung gpsd hangs
  the caller) and reads the deprecated ``alt`` field.
- gpsdclient (tfeldmann) has a socket timeout but no reconnect, no silence detection and no bound on line length
  (``makefile().readline``); its generator raises out on the first bad JSON line and its time parser returns naive
  local-time datetimes. Wrapping it would leave all of that to us anyway, so it is not worth a dependency.

gpsd's reports are untrusted input: every line is bounded, parsed strictly and range-checked; a bad line is
counted and dropped, never raised out of the reader thread. Only TPV reports with mode >= 2, a time and lat/lon
become fixes. Positions are never logged above DEBUG.

A read gets the fix nearest its wall time within ``max_fix_age_s``, unless gpsd reported "no fix" (mode < 2)
between that fix and the read. Fix times are the receiver's UTC; reads use the host clock, so a host clock that is
off shows up as NO_FIX (and a fault when it is off by more than the history horizon), never as a wrong fix.
Measured with gpsd 3.22: a receiver that keeps sending its last position with RMC status V / GGA quality 0 is still
reported as mode 3; receivers that blank the position fields when they lose the fix are reported as mode 1.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fix:
    """The position joined to a read. ``source`` is "gpsd", "fixed" or "none" (no fix: every other field None
    except ``mode`` 0); a gpsd fix older than the configured limit at the read's time is "none", never passed off
    as current."""

    source: str
    mode: int  # 0 no fix, 2 = 2D, 3 = 3D (gpsd's TPV mode); a fixed position reports 3
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    time: float | None = None  # UTC epoch seconds of the fix (gpsd's TPV time; for "fixed", the read's time)
    age_s: float | None = None  # read time minus fix time
    eph_m: float | None = None  # horizontal error estimate, metres (gpsd "eph"); configured for "fixed"
    speed_mps: float | None = None
    track_deg: float | None = None


NO_FIX = Fix(source="none", mode=0)

MAX_LINE_BYTES = 64 * 1024  # gpsd's longest reports (SKY with many satellites) are a few KB
GPS_EPOCH = 315964800.0  # 1980-01-06: no GPS receiver reports a time before it
STATES = ("fix", "no_fix", "disconnected", "fixed")


@dataclass(frozen=True)
class GpsStatus:
    """What the daemon shows about its position source (sd_notify STATUS, health). No position in it."""

    state: str  # "fix", "no_fix", "disconnected" (gpsd unreachable or silent) or "fixed" (configured position)
    mode: int  # last TPV mode from gpsd (0 when disconnected); 3 for a fixed position
    satellites: int | None  # satellites used, from gpsd's SKY report, when known
    last_fix_age_s: float | None  # now minus the newest fix's time; None before the first fix
    reconnects: int  # connections made after the first one
    garbage_lines: int  # lines from gpsd that failed parsing or validation
    fault: str | None  # why there is no data, for operators (no position in it)
    clock_offset_s: float | None = None  # system clock minus GPS time at the last fix's arrival (health: clock jump)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"GpsStatus.state must be one of {STATES}, got {self.state!r}")


@runtime_checkable
class PositionSource(Protocol):
    """A GPS or a fixed position: the daemon starts it once, asks it for each read's fix, stops it at exit."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def fix_at(self, wall_time: float) -> Fix: ...

    def status(self) -> GpsStatus: ...


class GarbageError(ValueError):
    """A line from gpsd that is not a well-formed, plausible report (the message names what was wrong)."""


@dataclass(frozen=True)
class Tpv:
    """A validated gpsd TPV report. ``alt_m`` is altHAE, else altMSL, else the deprecated ``alt``."""

    mode: int
    time: float | None = None
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    eph_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None

    def to_fix(self) -> Fix | None:
        """The fix this report carries, or None (no fix, or a fix without time or position)."""
        if self.mode < 2 or self.time is None or self.lat is None or self.lon is None:
            return None
        return Fix(
            source="gpsd",
            mode=self.mode,
            lat=self.lat,
            lon=self.lon,
            alt_m=self.alt_m,
            time=self.time,
            eph_m=self.eph_m,
            speed_mps=self.speed_mps,
            track_deg=self.track_deg,
        )


def _reject_constant(name: str) -> float:
    raise GarbageError(f"non-finite number {name} in JSON")


def parse_report(line: bytes) -> dict[str, object]:
    """One line from gpsd as a JSON object with a string "class"; GarbageError otherwise."""
    if len(line) > MAX_LINE_BYTES:
        raise GarbageError(f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except GarbageError:
        raise
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise GarbageError(f"not JSON: {type(e).__name__}") from e
    if not isinstance(obj, dict):
        raise GarbageError("not a JSON object")
    if not isinstance(obj.get("class"), str):
        raise GarbageError('no string "class"')
    return obj


def _number(report: Mapping[str, object], key: str, lo: float, hi: float) -> float | None:
    value = report.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GarbageError(f"{key} is not a number")
    x = float(value)
    if not math.isfinite(x) or not lo <= x <= hi:
        raise GarbageError(f"{key} out of range")  # the value itself may be a position: not in the message
    return x


def parse_time(value: object) -> float:
    """gpsd's ISO 8601 UTC time ("2024-05-01T12:00:00.000Z") as epoch seconds; GarbageError if not one."""
    if not isinstance(value, str) or len(value) > 40 or "T" not in value:
        raise GarbageError("time is not an ISO 8601 date-time")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as e:
        raise GarbageError("time is not an ISO 8601 date-time") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # gpsd always means UTC
    try:
        t = dt.timestamp()
    except (OverflowError, ValueError) as e:
        raise GarbageError("time out of range") from e
    if t < GPS_EPOCH:
        raise GarbageError("time before the GPS epoch")
    return t


def parse_tpv(report: Mapping[str, object]) -> Tpv:
    """A TPV report checked field by field: wrong types, non-finite or out-of-range values raise GarbageError."""
    mode = report.get("mode")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 3:
        raise GarbageError("mode missing or not 0..3")
    t = parse_time(report["time"]) if report.get("time") is not None else None
    lat = _number(report, "lat", -90.0, 90.0)
    lon = _number(report, "lon", -180.0, 180.0)
    if (lat is None) != (lon is None):
        raise GarbageError("lat without lon or lon without lat")
    alt = None
    for key in ("altHAE", "altMSL", "alt"):  # "alt" is deprecated (its datum changed between gpsd releases)
        alt = _number(report, key, -20_000.0, 1_000_000.0)
        if alt is not None:
            break
    eph = _number(report, "eph", 0.0, 1e7)
    if eph is None:
        epx = _number(report, "epx", 0.0, 1e7)
        epy = _number(report, "epy", 0.0, 1e7)
        if epx is not None and epy is not None:
            eph = math.hypot(epx, epy)
    return Tpv(
        mode=mode,
        time=t,
        lat=lat,
        lon=lon,
        alt_m=alt,
        eph_m=eph,
        speed_mps=_number(report, "speed", 0.0, 1e5),
        track_deg=_number(report, "track", 0.0, 360.0),
    )


def parse_sky_used(report: Mapping[str, object]) -> int | None:
    """Satellites used from a SKY report: "uSat", else the count of satellites marked used; None if unknown."""
    u = report.get("uSat")
    if isinstance(u, int) and not isinstance(u, bool) and 0 <= u <= 1000:
        return u
    sats = report.get("satellites")
    if isinstance(sats, list):
        return sum(1 for s in sats if isinstance(s, dict) and s.get("used") is True)
    return None


@dataclass(frozen=True)
class _Event:
    time: float
    fix: Fix | None  # None: gpsd reported no fix (mode < 2) at this time


class FixHistory:
    """Fixes and losses of fix, sorted by time, bounded in count and age; answers "which fix for this read?".

    Not thread-safe (GpsdClient holds a lock around it). ``clock`` is the host's wall clock: events more than
    ``horizon_s`` away from it are dropped (pruned when old, refused when in the future), so a receiver with a
    wild clock cannot flush the history."""

    def __init__(
        self,
        max_fix_age_s: float,
        horizon_s: float = 600.0,
        max_events: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_fix_age_s = max_fix_age_s
        self.horizon_s = horizon_s
        self.max_events = max_events
        self._clock = clock
        self._events: list[_Event] = []
        self._times: list[float] = []

    def add_fix(self, fix: Fix) -> bool:
        """Record a fix; one per time (a later report of the same epoch replaces the earlier). False if refused."""
        assert fix.time is not None
        return self._add(_Event(fix.time, fix))

    def add_loss(self, t: float) -> bool:
        """Record that gpsd reported no fix at time ``t``."""
        return self._add(_Event(t, None))

    def _add(self, event: _Event) -> bool:
        now = self._clock()
        if abs(event.time - now) > self.horizon_s:
            return False
        i = bisect.bisect_left(self._times, event.time)
        if i < len(self._times) and self._times[i] == event.time:
            self._events[i] = event
        else:
            self._times.insert(i, event.time)
            self._events.insert(i, event)
        cut = max(bisect.bisect_left(self._times, now - self.horizon_s), len(self._times) - self.max_events)
        if cut > 0:
            del self._times[:cut]
            del self._events[:cut]
        return True

    def __len__(self) -> int:
        return len(self._events)

    def fixes(self) -> list[Fix]:
        return [e.fix for e in self._events if e.fix is not None]

    def latest_is_fix(self) -> bool:
        """Whether the newest report is a fix (not a loss of fix)."""
        return bool(self._events) and self._events[-1].fix is not None

    def last_fix_time(self) -> float | None:
        for e in reversed(self._events):
            if e.fix is not None:
                return e.time
        return None

    def fix_at(self, t: float) -> Fix:
        """The fix nearest to ``t`` within max_fix_age_s, or NO_FIX; NO_FIX too if the last report at or before
        ``t`` was a loss of fix (the receiver had no fix when the read was taken)."""
        i = bisect.bisect_right(self._times, t)
        before = self._events[i - 1] if i > 0 else None
        after = self._events[i] if i < len(self._events) else None
        if before is not None and before.fix is None:
            return NO_FIX
        best: _Event | None = None
        if before is not None and t - before.time <= self.max_fix_age_s:
            best = before
        after_ok = after is not None and after.fix is not None and after.time - t <= self.max_fix_age_s
        if after is not None and after_ok and (best is None or after.time - t < t - best.time):
            best = after
        if best is None or best.fix is None:
            return NO_FIX
        return replace(best.fix, age_s=t - best.time)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


class GpsdClient:
    """Reads gpsd's TPV/SKY reports in one thread and answers fix_at() from a bounded fix history.

    Reconnects with capped, jittered exponential backoff when gpsd is down, closes the connection, or sends
    nothing valid for ``silence_timeout_s``."""

    POLL_S = 0.2  # how often the reader wakes to check the stop event and the silence timer

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2947,
        max_fix_age_s: float = 5.0,
        connect_timeout_s: float = 3.0,
        silence_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"gpsd port must be 1..65535, got {port!r}")
        _check_positive(
            max_fix_age_s=max_fix_age_s,
            connect_timeout_s=connect_timeout_s,
            silence_timeout_s=silence_timeout_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )
        if backoff_max_s < backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        self.host = host
        self.port = port
        self.max_fix_age_s = max_fix_age_s
        self.connect_timeout_s = connect_timeout_s
        self.silence_timeout_s = silence_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._history = FixHistory(max_fix_age_s)
        self._connected = False
        self._connections = 0
        self._mode = 0
        self._satellites: int | None = None
        self._garbage = 0
        self._fault: str | None = "not started"
        self._clock_offset: float | None = None

    # -- public interface -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("GpsdClient already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpsd-client", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def fix_at(self, wall_time: float) -> Fix:
        with self._lock:
            return self._history.fix_at(wall_time)

    def status(self) -> GpsStatus:
        now = time.time()
        with self._lock:
            newest = self._history.last_fix_time()
            age = None if newest is None else now - newest
            if not self._connected:
                state = "disconnected"
            elif self._history.latest_is_fix() and age is not None and age <= self.max_fix_age_s:
                state = "fix"
            else:
                state = "no_fix"
            return GpsStatus(
                state=state,
                mode=self._mode if self._connected else 0,
                satellites=self._satellites if self._connected else None,
                last_fix_age_s=age,
                reconnects=max(0, self._connections - 1),
                garbage_lines=self._garbage,
                fault=self._fault,
                clock_offset_s=self._clock_offset if self._connected else None,
            )

    def recent_fixes(self) -> list[Fix]:
        """Every fix in the history, oldest first (for diagnostics and tests)."""
        with self._lock:
            return self._history.fixes()

    # -- reader thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                got_reports = self._session()
            except Exception as e:  # the reader must survive anything; the fault says what happened
                log.warning("gpsd client error: %s", type(e).__name__)
                log.debug("gpsd client error detail", exc_info=True)
                self._disconnected(f"client error: {type(e).__name__}")
                got_reports = False
            if self._stop.is_set():
                break
            failures = 0 if got_reports else failures + 1
            base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(max(failures - 1, 0), 30))
            self._stop.wait(base * self._rng.uniform(0.5, 1.0))
        with self._lock:
            self._connected = False
            self._fault = "stopped"

    def _disconnected(self, reason: str) -> None:
        with self._lock:
            was, before = self._connected, self._fault
            self._connected = False
            self._satellites = None
            self._fault = reason
        if was or reason != before:  # once per change, not on every retry
            log.warning("gpsd at %s:%s: %s", self.host, self.port, reason)
        else:
            log.debug("gpsd at %s:%s: %s", self.host, self.port, reason)

    def _session(self) -> bool:
        """One connection: connect, WATCH, read until error, close, silence or stop. True if gpsd answered."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as e:
            self._disconnected(f"cannot connect to gpsd at {self.host}:{self.port}: {e.strerror or e}")
            return False
        got_reports = False
        try:
            sock.settimeout(self.POLL_S)
            buf = bytearray()
            skipping = False  # inside an over-long line: drop bytes up to its newline
            last_report = time.monotonic()
            try:
                sock.sendall(b'?WATCH={"enable":true,"json":true}\n')
            except OSError as e:
                self._disconnected(f"gpsd connection error: {e.strerror or e}")
                return False
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = None
                except OSError as e:
                    self._disconnected(f"gpsd connection error: {e.strerror or e}")
                    return got_reports
                if data == b"":
                    self._disconnected("gpsd closed the connection")
                    return got_reports
                if data:
                    buf += data
                    while (nl := buf.find(b"\n")) >= 0:
                        line = bytes(buf[:nl])
                        del buf[: nl + 1]
                        if skipping:
                            skipping = False
                        elif self._handle_line(line):
                            last_report = time.monotonic()
                            if not got_reports:
                                got_reports = True
                                self._connected_now()
                    if len(buf) > MAX_LINE_BYTES:
                        buf.clear()
                        if not skipping:
                            skipping = True
                            self._count_garbage("line longer than the limit")
                if time.monotonic() - last_report > self.silence_timeout_s:
                    self._disconnected(f"gpsd silent for {self.silence_timeout_s:g} s")
                    return got_reports
            return got_reports
        finally:
            sock.close()

    def _connected_now(self) -> None:
        with self._lock:
            self._connected = True
            self._connections += 1
            self._fault = None
            n = self._connections
        if n > 1:
            log.info("gpsd at %s:%s reconnected", self.host, self.port)
        else:
            log.info("gpsd at %s:%s connected", self.host, self.port)

    def _count_garbage(self, why: str) -> None:
        with self._lock:
            self._garbage += 1
        log.debug("gpsd line dropped: %s", why)

    def _handle_line(self, line: bytes) -> bool:
        """Apply one line; True if it was a valid gpsd report. Never raises."""
        line = line.strip()
        if not line:
            return False
        try:
            report = parse_report(line)
            cls = report["class"]
            if cls == "TPV":
                self._apply_tpv(parse_tpv(report))
            elif cls == "SKY":
                used = parse_sky_used(report)
                if used is not None:
                    with self._lock:
                        self._satellites = used
            elif cls == "DEVICES":
                devices = report.get("devices")
                if isinstance(devices, list) and not devices:
                    with self._lock:
                        self._fault = "gpsd has no GPS device"
            elif cls == "ERROR":
                message = report.get("message")
                text = "".join(c for c in str(message)[:200] if c.isprintable())
                with self._lock:
                    self._fault = f"gpsd error: {text}"
        except GarbageError as e:
            self._count_garbage(str(e))
            return False
        except Exception as e:  # a parser bug must not kill the reader either
            self._count_garbage(f"unexpected {type(e).__name__}")
            return False
        return True

    def _apply_tpv(self, tpv: Tpv) -> None:
        fix = tpv.to_fix()
        with self._lock:
            self._mode = tpv.mode
            if fix is not None and fix.time is not None:
                self._clock_offset = time.time() - fix.time
            if fix is not None:
                accepted = self._history.add_fix(fix)
                self._fault = None if accepted else "GPS time and system clock differ by more than the history horizon"
            elif tpv.mode < 2:
                # a no-fix report without time still ends the fix: place it on the host clock (the reads' clock)
                self._history.add_loss(tpv.time if tpv.time is not None else time.time())
        if fix is not None:
            log.debug("fix mode %s at %s: %.6f %.6f", fix.mode, fix.time, fix.lat, fix.lon)


class FixedPosition:
    """A pole's surveyed position: every read gets it, mode 3, age 0."""

    def __init__(self, lat: float, lon: float, alt_m: float | None = None, eph_m: float = 5.0) -> None:
        for name, value, lo, hi in (("lat", lat, -90.0, 90.0), ("lon", lon, -180.0, 180.0)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"fixed position {name} must be a finite number, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"fixed position {name} must be within {lo:g}..{hi:g}, got {value!r}")
        if alt_m is not None and (
            isinstance(alt_m, bool) or not isinstance(alt_m, int | float) or not math.isfinite(alt_m)
        ):
            raise ValueError(f"fixed position alt_m must be a finite number or None, got {alt_m!r}")
        if isinstance(eph_m, bool) or not isinstance(eph_m, int | float) or not math.isfinite(eph_m) or eph_m < 0:
            raise ValueError(f"fixed position eph_m must be a finite number >= 0, got {eph_m!r}")
        self.lat = float(lat)
        self.lon = float(lon)
        self.alt_m = None if alt_m is None else float(alt_m)
        self.eph_m = float(eph_m)

    def start(self) -> None:
        """Nothing to start (the PositionSource interface)."""

    def stop(self) -> None:
        """Nothing to stop."""

    def fix_at(self, wall_time: float) -> Fix:
        return Fix(
            source="fixed",
            mode=3,
            lat=self.lat,
            lon=self.lon,
            alt_m=self.alt_m,
            time=wall_time,
            age_s=0.0,
            eph_m=self.eph_m,
        )

    def status(self) -> GpsStatus:
        return GpsStatus(
            state="fixed", mode=3, satellites=None, last_fix_age_s=0.0, reconnects=0, garbage_lines=0, fault=None
        )
