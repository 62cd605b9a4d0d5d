"""One camera's capture thread: open, read, pace, stamp, mask, hand over; reconnect when the source fails.

The thread never dies of a camera problem: every failure is recorded in :meth:`CameraStream.status`, the source
is closed and reopened after a capped, jittered exponential backoff that the stop event interrupts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .frame import Frame
from .sources import FrameSource, SourceError, open_source, redact_uri
from .spec import CameraSpec
from .zones import ZoneMask, validate_zones

log = logging.getLogger(__name__)

LATE_RESYNC_S = 1.0  # when pacing falls this far behind, start a new schedule instead of bursting to catch up


@dataclass(frozen=True)
class CameraStatus:
    """A snapshot of one camera for the daemon's status line and health checks."""

    camera_id: str
    name: str
    source: str  # describe() of the source: credentials redacted
    connected: bool
    frames: int  # frames handed to on_frame since start
    reconnects: int  # successful reopens after a fault
    failures: int  # faults recorded (failed opens, lost streams, errors) since start
    fault: str | None  # the last fault, cleared by the next good frame
    last_frame_age_s: float | None  # seconds since the last frame (monotonic), None before the first
    finished: bool  # a non-looping file or folder reached its end


class Backoff:
    """Capped exponential delays with "equal jitter" (half fixed, half random) so cameras do not retry in step."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._initial = max(initial_s, 0.0)
        self._max = max(max_s, self._initial)
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        cap = min(self._max, self._initial * (2.0**self._attempt))
        self._attempt = min(self._attempt + 1, 62)
        return cap / 2 + self._rng.uniform(0.0, cap / 2)

    def reset(self) -> None:
        self._attempt = 0


class CameraStream:
    """Runs one camera in its own thread until ``stop`` is set or a non-looping recording ends."""

    def __init__(
        self,
        spec: CameraSpec,
        on_frame: Callable[[Frame], None],
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        source_factory: Callable[[CameraSpec], FrameSource] = open_source,
        rng: random.Random | None = None,
    ) -> None:
        validate_zones(spec.zones)  # fail at start-up, not in the thread
        self.spec = spec
        self._on_frame = on_frame
        self._stop = stop
        self._clock = clock
        self._wall_clock = wall_clock
        self._factory = source_factory
        self._backoff = Backoff(spec.backoff_initial_s, spec.backoff_max_s, rng or random.Random())
        self._mask: ZoneMask | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"capture-{spec.id}", daemon=True)
        self._describe = f"{spec.kind} {redact_uri(spec.uri)}".strip()
        # status, guarded by _lock
        self._connected = False
        self._frames = 0
        self._reconnects = 0
        self._failures = 0
        self._fault: str | None = None
        self._last_frame_mono: float | None = None
        self._finished = False

    # -- control ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def finished(self) -> bool:
        """True once a non-looping file or folder has been read to its end (the thread then exits)."""
        with self._lock:
            return self._finished

    def status(self) -> CameraStatus:
        with self._lock:
            age = None if self._last_frame_mono is None else max(0.0, self._clock() - self._last_frame_mono)
            return CameraStatus(
                camera_id=self.spec.id,
                name=self.spec.name,
                source=self._describe,
                connected=self._connected,
                frames=self._frames,
                reconnects=self._reconnects,
                failures=self._failures,
                fault=self._fault,
                last_frame_age_s=age,
                finished=self._finished,
            )

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        had_fault = False
        while not self._stop.is_set():
            source: FrameSource | None = None
            try:
                source = self._factory(self.spec)
                with self._lock:
                    self._describe = source.describe()
                source.open()
                with self._lock:
                    self._connected = True
                    if had_fault:
                        self._reconnects += 1
                log.info("camera %s: reading %s", self.spec.id, self._describe)
                if self._read_until_end(source):
                    with self._lock:
                        self._finished = True
                    log.info("camera %s: %s ended", self.spec.id, self._describe)
                return
            except SourceError as e:
                self._record_fault(str(e))
            except Exception as e:  # a bug or an unexpected library error: never let it end the thread silently
                self._record_fault(f"unexpected {type(e).__name__}: {e}")
                log.debug("camera %s: traceback", self.spec.id, exc_info=True)
            finally:
                with self._lock:
                    self._connected = False
                if source is not None:
                    self._close(source)
            had_fault = True
            delay = self._backoff.next_delay()
            log.info("camera %s: retrying in %.2f s", self.spec.id, delay)
            self._stop.wait(delay)

    def _read_until_end(self, source: FrameSource) -> bool:
        """Deliver frames until stop (False) or the end of a non-looping recording (True); raises on faults."""
        paced = self.spec.recorded
        fps = self.spec.fps if self.spec.fps is not None else source.native_fps()
        period = 1.0 / fps if paced and fps and fps > 0 else 0.0
        t0 = self._clock()
        n = 0  # frames scheduled since t0: frame n is due at t0 + n * period, so pacing never drifts
        pass_frames = 0
        while not self._stop.is_set():
            image = source.read()
            if image is None:
                if not self.spec.loop:
                    return True
                if pass_frames == 0:
                    raise SourceError(f"{source.describe()}: ended without a frame")
                source.close()
                source.open()  # start the recording again; the schedule carries on
                pass_frames = 0
                continue
            if period:
                due = t0 + n * period
                now = self._clock()
                if now - due > LATE_RESYNC_S:
                    t0, n, due = now, 0, now
                if due > now and self._stop.wait(due - now):
                    return False
                n += 1
            pass_frames += 1
            self._deliver(image)
        return False

    def _deliver(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._mask is None or (self._mask.width, self._mask.height) != (w, h):
            self._mask = ZoneMask.for_frame(self.spec.zones, w, h)
        mono = self._clock()
        with self._lock:
            seq = self._frames
        frame = Frame(
            camera_id=self.spec.id,
            image=self._mask.apply(image),
            wall_time=self._wall_clock(),
            mono_time=mono,
            seq=seq,
        )
        try:
            self._on_frame(frame)
        except Exception as e:  # a downstream bug must not stop capture; the frame counts as handed over
            log.error("camera %s: on_frame failed: %s", self.spec.id, type(e).__name__)
            log.debug("camera %s: on_frame traceback", self.spec.id, exc_info=True)
        with self._lock:
            self._frames = seq + 1
            self._last_frame_mono = mono
            self._fault = None
        self._backoff.reset()

    def _record_fault(self, message: str) -> None:
        if self.spec.uri and self.spec.uri in message:  # belt and braces: no credentials in logs or status
            message = message.replace(self.spec.uri, redact_uri(self.spec.uri))
        with self._lock:
            self._failures += 1
            self._fault = message
        log.warning("camera %s: %s", self.spec.id, message)

    def _close(self, source: FrameSource) -> None:
        try:
            source.close()
        except Exception as e:
            log.warning("camera %s: closing %s failed: %s", self.spec.id, self._describe, type(e).__name__)
