"""The appliance: cameras -> recogniser -> tracker -> recorder (GPS fix + encrypted store), one direction.

Threads: one per camera (``CameraStream``), one recognition worker that owns the tracker, one recorder that owns
the store's writer. Between capture and recognition a small bounded queue drops the OLDEST frame when recognition
falls behind (and counts it); between the tracker and the recorder the queue is unbounded, because a Read is never
dropped: when the disk is full the recorder keeps it and retries. The main thread reports status to systemd and
pings the watchdog only while the workers are alive and making progress.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .alerts import AlertService
from .capture.frame import Frame
from .capture.spec import CameraSpec
from .capture.stream import CameraStream
from .capture.zones import ZoneMask
from .config import Config
from .gps import NO_FIX, Fix, FixedPosition, GpsdClient
from .health import Counters, Fault, Health, Parts, snapshot, status_file, write_snapshot
from .hotlist.manual import recheck_recent_reads
from .hotlist.service import HotListService
from .sdnotify import Notifier
from .store.errors import StoreError, StoreFullError
from .store.reads import ReadStore
from .thermal import ThermalStatus, read_thermal
from .vision.recognizer import PlateRead, Recognizer
from .vision.tracker import Read, Tracker, TrackerSettings

log = logging.getLogger(__name__)
STALL_S = 30.0  # a worker that has not looped for this long stops the watchdog pings


class FrameQueue:
    """Bounded, drop-oldest: live video must stay live, so a late frame is worth less than the next one."""

    def __init__(self, size: int) -> None:
        self._q: deque[Frame] = deque()
        self._size = size
        self._cv = threading.Condition()
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cv:
            if len(self._q) >= self._size:
                self._q.popleft()
                self.dropped += 1
            self._q.append(frame)
            self._cv.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._cv:
            if not self._q:
                self._cv.wait(timeout)
            return self._q.popleft() if self._q else None

    def __len__(self) -> int:
        with self._cv:
            return len(self._q)


class NoPosition:
    """gps.mode = "none": every read says so explicitly."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def fix_at(self, wall_time: float) -> Fix:
        return NO_FIX

    def state(self) -> str:
        return "off"


@dataclass(frozen=True)
class Status:
    """What the unit reports: sd_notify STATUS, the periodic log line, the run summary."""

    uptime_s: float
    frames: int
    fps: float  # over the last status interval
    dropped: int
    reads: int  # stored
    pending: int  # reads waiting for the store
    gps: str
    faults: tuple[str, ...]
    hits: int = 0
    hotlist: str = "off"
    health: tuple[Fault, ...] = ()  # the same faults with code and severity (edge.health)

    def line(self) -> str:
        faults = "; ".join(self.faults) if self.faults else "none"
        return (
            f"fps {self.fps:.1f}, frames {self.frames}, dropped {self.dropped}, reads {self.reads}, "
            f"pending {self.pending}, hits {self.hits}, hotlist {self.hotlist}, gps {self.gps}, faults: {faults}"
        )


@dataclass
class _Counters:
    frames: int = 0
    one_view_frames: int = 0  # frames read with one crop per plate because others were waiting
    reads: int = 0
    hits: int = 0
    errors: int = 0
    recognize_beat: float = field(default_factory=time.monotonic)
    record_beat: float = field(default_factory=time.monotonic)
    store_fault: str | None = None
    recognize_fault: str | None = None
    first_frame_at: float | None = None  # monotonic time the first frame was recognised
    last_frame_at: float | None = None


class Daemon:
    """Wires the stages for one unit. ``run`` blocks until ``stop`` is set or every source has ended."""

    def __init__(
        self,
        cfg: Config,
        recognizer: Recognizer,
        store: ReadStore,
        position: GpsdClient | FixedPosition | NoPosition,
        notifier: Notifier | None = None,
        on_stored: Callable[[Read], None] | None = None,
        hotlists: HotListService | None = None,
        alerts: AlertService | None = None,
        extra_faults: Callable[[], list[str]] | None = None,
        links: Callable[[], Parts] | None = None,
        thermal: Callable[[], ThermalStatus | None] = read_thermal,
    ) -> None:
        self.cfg = cfg
        self.recognizer = recognizer
        self.store = store
        self.position = position
        self.notifier = notifier or Notifier()
        self.on_stored = on_stored
        self.hotlists = hotlists
        self.alerts = alerts
        self.extra_faults = extra_faults
        self.links = links  # the uplink's and the alerts publisher's states, for health
        self.thermal = thermal  # the board's temperature and throttling, from sysfs
        self.health = Health(cfg.health, int(cfg.store.min_free_mb * 1e6))
        self.status_path = status_file(cfg)
        self.last_snapshot: bytes | None = None  # JSON, for the MQTT status topic
        self._snapshot_failed = False
        p = cfg.pipeline
        self.tracker = Tracker(
            TrackerSettings(
                gap_s=p.track_gap_s,
                min_frames=p.min_frames,
                single_frame_confidence=p.single_frame_confidence,
                scene_max_width=p.scene_max_width,
                jpeg_quality=p.jpeg_quality,
            )
        )
        self.frames = FrameQueue(p.frame_queue)
        self.reads: queue.Queue[Read | None] = queue.Queue()
        self.capture_stop = threading.Event()
        self.counters = _Counters()
        self.started = time.monotonic()
        self.streams = [CameraStream(spec, self._on_frame, self.capture_stop) for spec in cfg.cameras]
        self._masks: dict[tuple[str, int, int], ZoneMask] = {}
        self._specs: dict[str, CameraSpec] = {c.id: c for c in cfg.cameras}
        self._fps_mark = (self.started, 0)

    # -- workers -------------------------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        """On the capture thread: health looks at one frame a second (cheap), then the frame is queued."""
        self.health.probe.observe(frame.camera_id, frame.image)
        self.frames.put(frame)

    def _in_zone(self, frame: Frame, plates: list[PlateRead]) -> list[PlateRead]:
        spec = self._specs[frame.camera_id]
        if not spec.zones:
            return plates
        h, w = frame.image.shape[:2]
        key = (frame.camera_id, w, h)
        if key not in self._masks:
            self._masks[key] = ZoneMask.for_frame(spec.zones, w, h)
        mask = self._masks[key]
        return [p for p in plates if mask.contains_box(p.box)]

    def _recognize_loop(self, capture_done: threading.Event) -> None:
        c = self.counters
        while True:
            c.recognize_beat = time.monotonic()
            frame = self.frames.get(timeout=0.2)
            if frame is None:
                for r in self.tracker.expire(None, time.monotonic()):
                    self.reads.put(r)
                if capture_done.is_set() and len(self.frames) == 0:
                    break
                continue
            # frames waiting: read each plate from one crop until the queue is empty again, rather than drop frames
            behind = len(self.frames) > 0
            c.one_view_frames += behind and len(self.recognizer.views) > 1
            try:
                plates = self._in_zone(frame, self.recognizer.recognize(frame.image, 1 if behind else None))
                ended = self.tracker.update(frame, plates)
                c.recognize_fault = None
            except Exception as e:  # a bad frame or an interpreter error must not stop the unit
                c.errors += 1
                c.recognize_fault = f"recognition error: {type(e).__name__}"
                log.exception("recognition failed on a frame from camera %s", frame.camera_id)
                continue
            c.frames += 1
            c.last_frame_at = time.monotonic()
            if c.first_frame_at is None:
                c.first_frame_at = c.last_frame_at
            for r in ended:
                self.reads.put(r)
        for r in self.tracker.flush():
            self.reads.put(r)
        self.reads.put(None)

    def _record_loop(self) -> None:
        c = self.counters
        delay = 0.5
        while True:
            c.record_beat = time.monotonic()
            try:
                read = self.reads.get(timeout=1.0)
            except queue.Empty:
                self._recheck_new_entries()
                continue
            if read is None:
                break
            fix = self.position.fix_at(read.best_seen)
            while True:  # never drop a Read: keep it and retry until the store takes it
                c.record_beat = time.monotonic()
                try:
                    result = self.store.add(read, fix)
                except StoreFullError as e:
                    c.store_fault = f"disk full: {e}"
                except StoreError as e:
                    c.store_fault = f"store error: {e}"
                else:
                    c.store_fault = None
                    delay = 0.5
                    c.reads += 1
                    log.info(
                        "stored read %s (camera %s, %d frames%s)",
                        result.uuid,
                        read.camera_id,
                        read.frames_seen,
                        "" if result.scene_stored else ", scene image not stored: disk low",
                    )
                    if self.on_stored:
                        self.on_stored(read)
                    self._check_hotlists(read, fix, result.scene_stored)
                    break
                log.error("cannot store read %s, retrying in %.1f s: %s", read.uuid, delay, c.store_fault)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _check_hotlists(self, read: Read, fix: Fix, scene_stored: bool) -> None:
        """Right after the commit: a hit becomes an alert at once (P7). A failure here never loses the read."""
        if self.hotlists is None or self.alerts is None:
            return
        try:
            hits, lists = self.hotlists.check(read.text, read.char_confidences, read.candidates)
            if hits:
                self.alerts.raise_alerts(
                    read, fix, hits, lists, self.hotlists.stale_after_s, scene_stored, lists_stale=self._lists_stale()
                )
                self.counters.hits += len(hits)
                log.warning("hot list hit: read %s, %d entr%s", read.uuid, len(hits), "y" if len(hits) == 1 else "ies")
        except Exception:
            log.exception("hot list check failed for read %s", read.uuid)

    def _lists_stale(self) -> bool:
        """The general lists are past their freshness limit (or missing where lists are configured)."""
        if self.hotlists is None:
            return False
        hs = self.hotlists.state()
        configured = bool(self.cfg.hotlist.sources or self.cfg.hotlist.public_keys)
        return hs.stale and (hs.oldest_age_s is not None or configured)

    def _recheck_new_entries(self) -> None:
        """A manual entry that just took effect is checked against the recent reads too (P5)."""
        if self.hotlists is None or self.alerts is None:
            return
        for entry in self.hotlists.take_new_entries():
            try:
                found = recheck_recent_reads(
                    self.store, entry, self.hotlists.matcher.match_one, self.cfg.hotlist.recheck_hours, time.time()
                )
                for stored, hit in found:
                    crop = self.store.image(stored.uuid, "crop") or b""
                    scene = self.store.image(stored.uuid, "scene")
                    read = Read(
                        uuid=stored.uuid,
                        camera_id=stored.camera_id,
                        text=stored.text,
                        confidence=stored.confidence,
                        char_confidences=stored.char_confidences,
                        candidates=stored.candidates,
                        region=stored.region,
                        plate_format=stored.plate_format,
                        box=stored.box,
                        crop_jpeg=crop,
                        scene_jpeg=scene or b"",
                        first_seen=stored.first_seen,
                        last_seen=stored.last_seen,
                        best_seen=stored.best_seen,
                        frames_seen=stored.frames_seen,
                    )
                    lists = {i.list_id: i for i in self.hotlists.state().lists}
                    self.alerts.raise_alerts(
                        read,
                        stored.fix,
                        [hit],
                        lists,
                        self.hotlists.stale_after_s,
                        scene is not None,
                        lists_stale=self._lists_stale(),
                    )
                    self.counters.hits += 1
                if found:
                    log.warning("new hot list entry %s matched %d recent read(s)", entry.entry_id, len(found))
            except Exception:
                log.exception("checking recent reads against entry %s failed", entry.entry_id)

    # -- status --------------------------------------------------------------------------------------------

    def _parts(self) -> tuple[Parts, list[Fault]]:
        """The parts' states for health, and the faults that only the daemon knows about."""
        own: list[Fault] = []
        parts = self.links() if self.links is not None else Parts()
        store = store_error = None
        try:
            store = self.store.status()
        except StoreError as e:
            store_error = str(e)
        hotlists = self.hotlists.state() if self.hotlists is not None else None
        configured = bool(self.cfg.hotlist.sources or self.cfg.hotlist.public_keys)
        gps = self.position.status() if isinstance(self.position, GpsdClient) else None
        parts = dataclasses.replace(
            parts,
            cameras=tuple(s.status() for s in self.streams),
            recorded=frozenset(s.spec.id for s in self.streams if s.spec.recorded),
            gps=gps,
            store=store,
            store_error=store_error,
            hotlist=hotlists,
            hotlist_configured=configured,
            thermal=self.thermal(),
        )
        c = self.counters
        if c.store_fault:
            own.append(Fault("store.error", "critical", c.store_fault))
        if c.recognize_fault:
            own.append(Fault("recognition.error", "warning", c.recognize_fault))
        if self.extra_faults is not None:
            own += [Fault("other", "warning", f) for f in self.extra_faults()]
        return parts, own

    def status(self) -> Status:
        return self._status()[0]

    def _status(self) -> tuple[Status, Parts]:
        now = time.monotonic()
        c = self.counters
        t0, f0 = self._fps_mark
        fps = (c.frames - f0) / (now - t0) if now > t0 else 0.0
        parts, own = self._parts()
        found = list(self.health.faults(parts)) + own
        unique = list({f.text: f for f in found}.values())
        gps_state = self.position.state() if isinstance(self.position, NoPosition) else self.position.status().state
        hotlist = "off" if parts.hotlist is None else f"{parts.hotlist.entries} entries"
        st = Status(
            uptime_s=now - self.started,
            frames=c.frames,
            fps=fps,
            dropped=self.frames.dropped,
            reads=c.reads,
            pending=self.reads.qsize(),
            gps=gps_state,
            faults=tuple(f.text for f in unique),
            hits=c.hits,
            hotlist=hotlist,
            health=tuple(unique),
        )
        return st, parts

    def report(self) -> Status:
        """The periodic report: the status, and the snapshot for the console and headquarters."""
        st, parts = self._status()
        ocr = {"views": len(self.recognizer.views), "one_view_frames": self.counters.one_view_frames}
        counters = Counters(
            st.uptime_s, st.fps, st.frames, st.dropped, st.reads, st.pending, st.hits, len(self.frames), {"ocr": ocr}
        )
        snap = snapshot(
            self.cfg.unit.id, counters, parts, st.health, self.health.probe, self.cfg.gps.mode,
            self.health.min_free_bytes,
        )  # fmt: skip
        self.last_snapshot = json.dumps(snap, sort_keys=True, separators=(",", ":")).encode()
        try:
            write_snapshot(self.status_path, snap)
            self._snapshot_failed = False
        except OSError as e:
            if not self._snapshot_failed:  # once, not every interval
                log.error("cannot write the status snapshot %s: %s", self.status_path, e.strerror or e)
            self._snapshot_failed = True
        return st

    def healthy(self) -> bool:
        now = time.monotonic()
        return now - self.counters.recognize_beat < STALL_S and now - self.counters.record_beat < STALL_S

    # -- lifecycle -----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, exit_when_sources_end: bool = True) -> Status:
        """Run until ``stop`` (SIGTERM) or, when there is recorded footage, until every file and folder has ended
        (live cameras are then stopped too); then drain:
        frames already captured are recognised, open passes become reads, and every read is stored."""
        self.position.start()
        capture_done = threading.Event()
        recognizer = threading.Thread(target=self._recognize_loop, args=(capture_done,), name="recognize")
        recorder = threading.Thread(target=self._record_loop, name="record")
        recognizer.start()
        recorder.start()
        for s in self.streams:
            s.start()
        self.started = time.monotonic()
        self._fps_mark = (self.started, 0)
        self.notifier.ready(self.report().line())
        log.info("running: %d camera(s), unit %s", len(self.streams), self.cfg.unit.id)
        recorded = [s for s in self.streams if s.spec.recorded]  # live cameras never end
        interval = self.cfg.pipeline.status_interval_s
        ping_every = min(1.0, self.notifier.watchdog_s / 3) if self.notifier.watchdog_s else 1.0
        next_status = time.monotonic() + interval
        while not stop.wait(ping_every):
            if exit_when_sources_end and recorded and all(s.finished for s in recorded):
                break
            if self.healthy():
                self.notifier.watchdog()
            else:
                log.error("a worker has stalled; withholding the watchdog ping so that systemd restarts the unit")
            if time.monotonic() >= next_status:
                st = self.report()
                self.notifier.status(st.line())
                log.info("status: %s", st.line())
                self._fps_mark = (time.monotonic(), self.counters.frames)
                next_status = time.monotonic() + interval
        final = self.status()  # fps over the run so far, before draining
        self.notifier.stopping("draining")
        log.info("stopping: draining %d frame(s) and %d read(s)", len(self.frames), self.reads.qsize())
        self.capture_stop.set()
        for s in self.streams:
            s.join(timeout=10)
        capture_done.set()
        recognizer.join()
        recorder.join()
        self.position.stop()
        end = self.status()
        elapsed = time.monotonic() - self.started
        c = self.counters
        span = (c.last_frame_at or 0.0) - (c.first_frame_at or 0.0)
        return Status(
            uptime_s=elapsed,
            frames=end.frames,
            fps=(end.frames - 1) / span if span > 0 else 0.0,  # frames recognised per second, first to last
            dropped=end.dropped,
            reads=end.reads,
            pending=end.pending,
            gps=final.gps,
            faults=end.faults,
            hits=end.hits,
            hotlist=end.hotlist,
            health=end.health,
        )
