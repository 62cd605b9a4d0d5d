"""Health: the one place that turns the parts' states into faults (code, severity, short text) and the status
snapshot that the console and headquarters read.

Faults are recomputed from the parts' current state at every status interval, so each clears by itself when its
cause goes away; the only memory kept is *since when* a condition holds (a tunnel is not "GPS lost", a broker
restart is not "broker unreachable"). No fault text and no snapshot field carries a plate or a position.

Frozen cameras are found by ``FrameProbe`` on each camera's capture thread: once per ``health.sample_s`` it takes
a 64 x 48 grid of single pixels (not block averages, which would smooth a live sensor's noise away) and compares
it with the last sample; a mean absolute difference below ``frozen_max_diff`` grey levels counts as "unchanged". A
live camera differs by its sensor noise alone; a hung driver or a stalled RTSP decoder repeats the same bytes.
Every few samples it also measures exposure (mean grey, clipped fraction) and focus (variance of the Laplacian on
a 320-pixel-wide grey copy): about a millisecond, off the recognition path. The frames it sees are already masked
to the capture zones, so exposure is over the whole frame with the blanked area included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .alerts_mqtt import MqttStatus
from .capture.stream import CameraStatus
from .config import Config, HealthConfig
from .gps import GpsStatus
from .hotlist.service import HotListState
from .store.reads import StoreStatus
from .sync.protocol import STATUS_SCHEMA
from .sync.uplink import UplinkStatus
from .thermal import ThermalStatus

log = logging.getLogger(__name__)

SEVERITIES = ("warning", "critical")
GRID = (48, 64)  # rows, columns of the sampled pixel grid
MEASURE_EVERY = 5  # exposure/focus on every 5th sample
FOCUS_WIDTH = 320
CLIP_LOW, CLIP_HIGH = 3, 252
MB = 1_000_000


@dataclass(frozen=True)
class Fault:
    """One fault. ``code`` is stable (for HQ dashboards and tests), ``text`` is for people."""

    code: str  # camera.lost, camera.frozen, gps.lost, broker.unreachable, disk.low, disk.full, clock.jump, ...
    severity: str  # "warning" or "critical"
    text: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Fault.severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "text": self.text}


def level(faults: Sequence[Fault]) -> str:
    """ "ok", "warning" or "critical": the worst fault."""
    if any(f.severity == "critical" for f in faults):
        return "critical"
    return "warning" if faults else "ok"


# -- frames ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMeasures:
    """Exposure and focus of one live frame (never the frame itself)."""

    mean: float  # grey level 0..255
    clipped: float  # fraction of pixels at the ends (<= 3 or >= 252)
    focus: float  # variance of the Laplacian: higher is sharper; compare a camera with itself over time
    at: float  # UTC epoch seconds


def grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] >= 3:
        return np.asarray(cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY))
    return image if image.ndim == 2 else image[:, :, 0]


def sample_grid(image: np.ndarray) -> np.ndarray:
    """A GRID of single pixels (first channel), as int16 so that differences do not wrap."""
    h, w = image.shape[:2]
    ys = np.linspace(0, h - 1, GRID[0]).astype(np.intp)
    xs = np.linspace(0, w - 1, GRID[1]).astype(np.intp)
    pix = image[np.ix_(ys, xs)]
    if pix.ndim == 3:
        pix = pix[:, :, 0]
    return pix.astype(np.int16)


def measure(image: np.ndarray, at: float) -> FrameMeasures:
    g = grey(image)
    h, w = g.shape[:2]
    if w > FOCUS_WIDTH:
        g = cv2.resize(g, (FOCUS_WIDTH, max(1, round(h * FOCUS_WIDTH / w))), interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(g, cv2.CV_64F)
    clipped = float(np.count_nonzero((g <= CLIP_LOW) | (g >= CLIP_HIGH))) / g.size
    return FrameMeasures(mean=float(g.mean()), clipped=clipped, focus=float(lap.var()), at=at)


@dataclass
class _CameraProbe:
    last_sample: float = -1e18
    grid: np.ndarray | None = None
    changed_at: float | None = None  # monotonic time of the last sample that differed from the one before
    samples: int = 0
    measures: FrameMeasures | None = None


class FrameProbe:
    """Watches every camera's frames cheaply (see the module docstring). ``observe`` runs on the capture threads;
    ``still_for`` and ``measures`` on the status thread."""

    def __init__(
        self,
        sample_s: float,
        max_diff: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sample_s = sample_s
        self.max_diff = max_diff
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._cams: dict[str, _CameraProbe] = {}

    def observe(self, camera_id: str, image: np.ndarray) -> None:
        now = self._clock()
        with self._lock:
            p = self._cams.setdefault(camera_id, _CameraProbe())
            if now - p.last_sample < self.sample_s:
                return
            p.last_sample = now
            p.samples += 1
            previous, n = p.grid, p.samples
        try:
            grid = sample_grid(image)
            diff = None if previous is None or previous.shape != grid.shape else float(np.abs(grid - previous).mean())
            m = measure(image, self._wall()) if n % MEASURE_EVERY == 1 or MEASURE_EVERY == 1 else None
        except Exception as e:  # an odd frame must never stop capture
            log.debug("frame probe failed on camera %s: %s", camera_id, type(e).__name__)
            return
        with self._lock:
            p.grid = grid
            if diff is None or diff > self.max_diff or p.changed_at is None:
                p.changed_at = now
            if m is not None:
                p.measures = m

    def still_for(self, camera_id: str) -> float:
        """Seconds the sampled frames of this camera have not changed (0 when changing or never seen)."""
        with self._lock:
            p = self._cams.get(camera_id)
            if p is None or p.changed_at is None:
                return 0.0
            return max(0.0, self._clock() - p.changed_at)

    def measures(self, camera_id: str) -> FrameMeasures | None:
        with self._lock:
            p = self._cams.get(camera_id)
            return None if p is None else p.measures

    def forget(self, camera_id: str) -> None:
        """A camera that lost its stream starts over (frames after a reconnect are compared afresh)."""
        with self._lock:
            self._cams.pop(camera_id, None)


# -- the parts' states -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """What the parts report at one moment; None where a part is not used on this unit."""

    cameras: tuple[CameraStatus, ...] = ()
    recorded: frozenset[str] = frozenset()  # cameras reading files or folders: they may end
    gps: GpsStatus | None = None  # gpsd mode only
    store: StoreStatus | None = None
    store_error: str | None = None  # the store could not be asked
    hotlist: HotListState | None = None
    hotlist_configured: bool = False  # signed lists are expected (sources or keys configured)
    uplink: UplinkStatus | None = None
    alerts: MqttStatus | None = None
    thermal: ThermalStatus | None = None  # None where the board reports no temperature


class Health:
    """Turns ``Parts`` into faults. Keeps only "since when" per condition; call ``faults`` at each interval."""

    def __init__(
        self,
        cfg: HealthConfig,
        min_free_bytes: int,
        probe: FrameProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.min_free_bytes = min_free_bytes
        self.probe = probe or FrameProbe(cfg.sample_s, cfg.frozen_max_diff, clock)
        self._clock = clock
        self._started = clock()
        self._since: dict[str, float] = {}

    def _held(self, key: str, active: bool, now: float) -> float:
        """How long ``key`` has been active (0 when not)."""
        if not active:
            self._since.pop(key, None)
            return 0.0
        return now - self._since.setdefault(key, now)

    def faults(self, parts: Parts) -> tuple[Fault, ...]:
        now = self._clock()
        out: list[Fault] = []
        out += self._cameras(parts, now)
        out += self._gps(parts.gps, now)
        out += self._store(parts)
        out += self._hotlist(parts)
        out += self._links(parts, now)
        out += self._thermal(parts.thermal)
        return tuple(out)

    def _cameras(self, parts: Parts, now: float) -> list[Fault]:
        out = []
        c = self.cfg
        for st in parts.cameras:
            cid = st.camera_id
            if st.finished:
                continue
            age = st.last_frame_age_s
            silent = age is not None and age > c.camera_lost_s
            never = age is None and now - self._started > c.camera_lost_s
            if st.fault or silent or never:
                self.probe.forget(cid)
                why = st.fault or ("no frame since start" if age is None else f"no frame for {age:.0f} s")
                out.append(Fault("camera.lost", "critical", f"camera {cid}: lost: {why}"))
                continue
            still = self.probe.still_for(cid)
            if still >= c.frozen_s and cid not in parts.recorded:
                out.append(
                    Fault("camera.frozen", "critical", f"camera {cid}: frozen: image unchanged for {still:.0f} s")
                )
        return out

    def _gps(self, g: GpsStatus | None, now: float) -> list[Fault]:
        if g is None:
            return []
        out = []
        c = self.cfg
        if g.state == "disconnected":
            out.append(Fault("gps.lost", "critical", f"gps: disconnected ({g.fault or 'no data from gpsd'})"))
        else:
            no_fix = self._held("gps.nofix", g.state != "fix", now)
            age = g.last_fix_age_s
            lost_for = age if age is not None else now - self._started
            if g.state != "fix" and no_fix > 0 and lost_for >= c.gps_lost_s:
                out.append(Fault("gps.lost", "warning", f"gps: no fix for {lost_for:.0f} s"))
        off = g.clock_offset_s
        if off is not None and abs(off) > c.clock_jump_s:
            way = "ahead of" if off > 0 else "behind"
            out.append(Fault("clock.jump", "critical", f"clock: system time {abs(off):.0f} s {way} GPS time"))
        return out

    def _store(self, parts: Parts) -> list[Fault]:
        if parts.store_error:
            return [Fault("store.error", "critical", f"store: {parts.store_error}")]
        s = parts.store
        if s is None:
            return []
        free = s.free_bytes
        warn_below = self.min_free_bytes + self.cfg.disk_warn_mb * MB
        if free is not None and free < self.min_free_bytes:
            return [Fault("disk.full", "critical", f"disk full: {free / MB:.0f} MB free, reads refused")]
        out = []
        if free is not None and free < warn_below:
            out.append(
                Fault(
                    "disk.low",
                    "warning",
                    f"disk nearly full: {free / MB:.0f} MB free (reads stop below {self.min_free_bytes / MB:.0f} MB)",
                )
            )
        if s.fault and not s.fault.startswith(("disk full", "disk nearly full")):
            out.append(Fault("store.error", "critical", f"store: {s.fault}"))
        elif not s.scene_images_on:
            out.append(Fault("disk.low", "warning", "store: disk low, scene images not stored"))
        return out

    def _hotlist(self, parts: Parts) -> list[Fault]:
        hs = parts.hotlist
        if hs is None:
            return []
        out = []
        if hs.oldest_age_s is None and parts.hotlist_configured:
            out.append(Fault("hotlist.stale", "warning", "hot list stale: no signed list in force"))
        elif hs.stale and hs.oldest_age_s is not None:
            out.append(Fault("hotlist.stale", "warning", f"hot list stale: {hs.oldest_age_s / 3600:.0f} h old"))
        if hs.fault:
            out.append(Fault("hotlist.error", "warning", hs.fault))
        return out

    def _links(self, parts: Parts, now: float) -> list[Fault]:
        out = []
        limit = self.cfg.broker_lost_s
        u = parts.uplink
        if u is not None:
            down = self._held("sync.down", not u.connected, now)
            if not u.connected and down >= limit:
                why = u.fault or "not connected"
                out.append(Fault("broker.unreachable", "warning", f"sync: broker unreachable for {down:.0f} s: {why}"))
            if u.level != "ok":
                days = u.days_since_sync or 0.0
                out.append(
                    Fault(
                        "sync.overdue",
                        "critical" if u.level == "critical" else "warning",
                        f"sync {u.level}: last complete sync {days:.1f} days ago",
                    )
                )
        a = parts.alerts
        if a is not None:
            down = self._held("alerts.down", a.fault is not None, now)
            if a.fault is not None and down >= limit:
                out.append(Fault("broker.unreachable", "critical", f"alerts mqtt: {a.fault} ({a.queued} queued)"))
        return out

    def _thermal(self, t: ThermalStatus | None) -> list[Fault]:
        if t is None:
            return []
        out = []
        c = self.cfg
        if t.temp_c is not None and t.temp_c >= c.temp_warn_c:
            severity = "critical" if t.temp_c >= c.temp_critical_c else "warning"
            out.append(Fault("board.hot", severity, f"board temperature {t.temp_c:.0f} °C ({t.zone})"))
        now = t.now()
        if "under-voltage" in now:
            out.append(Fault("power.low", "critical", "power supply under-voltage now"))
        capped = [x for x in now if x != "under-voltage"]
        if capped:
            out.append(Fault("board.throttled", "warning", f"CPU throttled now: {', '.join(capped)}"))
        return out


# -- the snapshot ----------------------------------------------------------------------------------------------


def status_file(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    """Where the daemon writes its snapshot: health.status_file, else $RUNTIME_DIRECTORY (systemd's
    RuntimeDirectory=, a tmpfs: no flash wear), else unit.data_dir/run."""
    if cfg.health.status_file is not None:
        return cfg.health.status_file
    env = os.environ if env is None else env
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / "status.json"
    return cfg.unit.data_dir / "run" / "status.json"


def write_snapshot(path: Path, snapshot: Mapping[str, Any]) -> None:
    """Atomically (temp file + rename): a reader sees the old snapshot or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    data = json.dumps(snapshot, sort_keys=True, separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


MAX_SNAPSHOT_BYTES = 1 << 20


def read_snapshot(path: Path) -> dict[str, Any]:
    """The snapshot as written; OSError or ValueError (not JSON, too large, not an object)."""
    with path.open("rb") as f:
        data = f.read(MAX_SNAPSHOT_BYTES + 1)
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"{path}: larger than {MAX_SNAPSHOT_BYTES} bytes")
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("schema") != STATUS_SCHEMA:
        raise ValueError(f"{path}: not a status snapshot ({STATUS_SCHEMA})")
    return doc


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def fix_text(g: GpsStatus) -> str:
    """Like "fix: 3D, age 0.4 s" and nothing more: no position."""
    kind = {2: "2D", 3: "3D"}.get(g.mode, "none") if g.state in ("fix", "fixed") else "none"
    age = "" if g.last_fix_age_s is None else f", age {g.last_fix_age_s:.1f} s"
    return f"fix: {kind}{age}"


@dataclass(frozen=True)
class Counters:
    uptime_s: float
    fps: float
    frames: int
    dropped: int
    reads: int
    pending: int
    hits: int
    frame_queue: int
    extra: Mapping[str, Any] = field(default_factory=dict)


def snapshot(
    unit_id: str,
    counters: Counters,
    parts: Parts,
    faults: Sequence[Fault],
    probe: FrameProbe,
    gps_mode: str,
    min_free_bytes: int,
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON document for the console and the MQTT status topic (schema alpr-edge/status/1)."""
    cams = []
    for st in parts.cameras:
        m = probe.measures(st.camera_id)
        cams.append(
            {
                "id": st.camera_id,
                "name": st.name,
                "connected": st.connected,
                "frames": st.frames,
                "reconnects": st.reconnects,
                "last_frame_age_s": _r(st.last_frame_age_s),
                "fault": st.fault,
                "still_s": round(probe.still_for(st.camera_id), 1),
                "exposure": None if m is None else {"mean": round(m.mean, 1), "clipped": round(m.clipped, 4)},
                "focus": None if m is None else round(m.focus, 1),
                "measured_at": None if m is None else round(m.at, 1),
            }
        )
    gps: dict[str, Any] = {"mode": gps_mode}
    if parts.gps is not None:
        g = parts.gps
        gps.update(
            state=g.state,
            fix=fix_text(g),
            satellites=g.satellites,
            reconnects=g.reconnects,
            clock_offset_s=_r(g.clock_offset_s),
            fault=g.fault,
        )
    storage: dict[str, Any] | None = None
    if parts.store is not None:
        s = parts.store
        storage = {
            "reads": s.reads,
            "db_bytes": s.db_bytes,
            "free_bytes": s.free_bytes,
            "min_free_bytes": min_free_bytes,
            "scene_images_on": s.scene_images_on,
            "fault": s.fault,
        }
    sync: dict[str, Any] = {"enabled": parts.uplink is not None}
    if parts.uplink is not None:
        u = parts.uplink
        sync.update(
            connected=u.connected,
            level=u.level,
            days_since_sync=_r(u.days_since_sync, 2),
            pending=dict(u.pending),
            last_ack_at=_r(u.last_ack_at),
            fault=u.fault,
        )
    hotlist: dict[str, Any] | None = None
    if parts.hotlist is not None:
        h = parts.hotlist
        hotlist = {
            "lists": len(h.lists),
            "entries": h.entries,
            "oldest_age_s": _r(h.oldest_age_s, 0),
            "stale": h.stale,
            "fault": h.fault,
        }
    alerts = None if parts.alerts is None else {"broker": parts.alerts.broker, "fault": parts.alerts.fault}
    thermal: dict[str, Any] | None = None
    if parts.thermal is not None:
        t = parts.thermal
        thermal = {
            "temp_c": _r(t.temp_c),
            "zone": t.zone,
            "throttled_now": list(t.now()),
            "throttled_since_boot": list(t.since_boot()),
            "fault": t.fault,
        }
    c = counters
    return {
        "schema": STATUS_SCHEMA,
        "device": unit_id,
        "at": round(time.time() if now is None else now, 1),
        "pid": os.getpid(),
        "level": level(faults),
        "faults": [f.to_json() for f in faults],
        "uptime_s": round(c.uptime_s, 1),
        "fps": round(c.fps, 2),
        "frames": c.frames,
        "dropped": c.dropped,
        "reads": c.reads,
        "hits": c.hits,
        "queues": {"frames": c.frame_queue, "reads": c.pending},
        "cameras": cams,
        "gps": gps,
        "storage": storage,
        "sync": sync,
        "hotlist": hotlist,
        "alerts_mqtt": alerts,
        "thermal": thermal,
        **dict(c.extra),
    }
