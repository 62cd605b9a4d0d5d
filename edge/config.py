"""Typed settings, read once from TOML and validated; every error names the key and what is wrong.

Each section is a frozen dataclass whose fields carry their bounds and a description in ``metadata``. Unknown keys
are refused (a typo must not silently fall back to a default). Secrets never live here: the database key comes from
a root-only key file or systemd's LoadCredential (``edge.store.keys``); the config only says where that file is.
Relative paths are resolved against the config file's folder, so a config and its footage can travel together.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .capture.spec import CameraSpec

PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "models"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
REGIONS = ("us", "eu", "br")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


def _f(
    default: Any,
    doc: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    in_data_dir: bool = False,
) -> Any:
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "in_data_dir": in_data_dir}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class UnitConfig:
    id: str = _f("alpr-unit", "device id: lower-case letters, digits, - and _, at most 32 (MQTT topics use it)")
    data_dir: Path = _f(Path("/var/lib/alpr-edge"), "where the encrypted database lives")
    regions: tuple[str, ...] = _f((), "plate formats expected here (us, eu, br): rank candidates, never rewrite")


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path = _f(PACKAGE_MODELS, "folder with plate_detector.tflite and plate_ocr.tflite")
    threads: int = _f(2, "inference threads", 1, 16)
    detector_threshold: float = _f(0.3, "plate heatmap threshold", 0.05, 0.95)
    min_read_confidence: float = _f(0.1, "a single-frame read below this is ignored", 0.0, 1.0)
    # 1 in the daemon: its tracker already votes over frames, and three crops made it drop frames at 25 fps
    # on the sample footage (2-core x86); single images (alpr-edge recognize) use 3
    ocr_views: int = _f(
        3, "crops of each detected plate read and combined (1 to 3); one while frames are waiting", 1, 3
    )


@dataclass(frozen=True)
class GpsConfig:
    mode: str = _f("gpsd", "gpsd (moving unit), fixed (pole) or none", choices=("gpsd", "fixed", "none"))
    host: str = _f("127.0.0.1", "gpsd host")
    port: int = _f(2947, "gpsd port", 1, 65535)
    max_fix_age_s: float = _f(5.0, "a fix older than this at capture time is 'no fix'", 0.1, 600)
    lat: float | None = _f(None, "fixed mode: latitude, degrees", -90, 90)
    lon: float | None = _f(None, "fixed mode: longitude, degrees", -180, 180)
    alt_m: float | None = _f(None, "fixed mode: altitude, metres", -500, 9000)
    eph_m: float = _f(5.0, "fixed mode: horizontal error estimate, metres", 0, 10000)


@dataclass(frozen=True)
class StoreConfig:
    path: Path = _f(Path("reads.db"), "SQLCipher database, relative to unit.data_dir", in_data_dir=True)
    key_file: Path = _f(Path("/etc/alpr-edge/db.key"), "root-only key file (alpr-edge keys init)")
    audit_key_file: Path = _f(
        Path("/etc/alpr-edge/audit.key"), "root-only Ed25519 key that signs the access record (alpr-edge keys init)"
    )
    retention_days: float = _f(30.0, "reads older than this are purged once headquarters has them (P10)", 1, 3650)
    min_free_mb: float = _f(64.0, "below this free disk space no read is stored (reported as a fault)", 1, 1e6)
    scene_min_free_mb: float = _f(512.0, "below this free disk space scene images are no longer stored", 1, 1e6)


@dataclass(frozen=True)
class PipelineConfig:
    frame_queue: int = _f(4, "frames waiting for recognition; beyond this the oldest is dropped", 1, 256)
    track_gap_s: float = _f(1.0, "a vehicle pass ends when its plate is not seen for this long", 0.1, 30)
    min_frames: int = _f(2, "frames a pass needs before it becomes a read (unless confident alone)", 1, 100)
    single_frame_confidence: float = _f(0.9, "a pass seen in one frame is kept at this confidence", 0, 1)
    scene_max_width: int = _f(1280, "scene images are scaled down to this width before storing", 320, 4096)
    jpeg_quality: int = _f(85, "JPEG quality of stored crops and scenes", 30, 100)
    status_interval_s: float = _f(10.0, "how often the status line is logged and sent to systemd", 1, 3600)


@dataclass(frozen=True)
class HotlistConfig:
    public_keys: tuple[Path, ...] = _f((), "headquarters' Ed25519 public keys (PEM) that may sign list bundles")
    sources: tuple[str, ...] = _f((), "where updates are offered: folders of *.hlb bundles or https:// URLs")
    ca_file: Path | None = _f(None, "CA bundle for https sources (default: the system's)")
    refresh_interval_min: float = _f(60.0, "how often sources are checked (at most 24 h, P4)", 1, 1440)
    stale_after_h: float = _f(24.0, "a list older than this is shown as 'hot list stale'", 1, 168)
    lookalike_limit: int = _f(2, "at most this many look-alike characters (0/O, 8/B, ...) in a match", 0, 4)
    recheck_hours: float = _f(6.0, "a new manual entry is also checked against reads of this many hours", 0, 720)


@dataclass(frozen=True)
class AlertsConfig:
    page: bool = _f(True, "serve the in-car alert page")
    page_bind: str = _f("127.0.0.1", "address of the alert page: the in-car network only")
    page_port: int = _f(8080, "port of the alert page", 1, 65535)
    mqtt_host: str = _f("", "broker for the communications center; empty: alerts are not published on MQTT")
    mqtt_port: int = _f(8883, "broker port", 1, 65535)
    mqtt_username: str = _f("", "broker user name (empty: client certificate only)")
    mqtt_password_file: Path | None = _f(None, "file holding the broker password (never the password itself)")
    mqtt_ca_file: Path | None = _f(None, "CA certificate of the broker (TLS)")
    mqtt_cert_file: Path | None = _f(None, "this unit's client certificate (TLS)")
    mqtt_key_file: Path | None = _f(None, "this unit's client key (TLS)")


@dataclass(frozen=True)
class SyncConfig:
    enabled: bool = _f(False, "send reads, hits, outcomes and images to headquarters over MQTT")
    host: str = _f("", "headquarters' MQTT broker")
    port: int = _f(8883, "broker port (TLS)", 1, 65535)
    ca_file: Path | None = _f(None, "CA certificate of the broker")
    cert_file: Path | None = _f(None, "this unit's client certificate (its CN is unit.id)")
    key_file: Path | None = _f(None, "this unit's client key")
    agency: str = _f("", "agency id: the unit also takes the fleet hot lists published for it")
    batch_max_items: int = _f(500, "items per batch at most", 1, 5000)
    batch_max_kb: int = _f(1024, "batch size at most, KB", 16, 8192)
    bandwidth_kbps: float = _f(0.0, "upload cap for cellular links, kbit/s (0: none)", 0, 1e6)
    ack_timeout_s: float = _f(30.0, "a batch not acknowledged by headquarters in this time is sent again", 1, 3600)
    warn_after_days: float = _f(7.0, "status warns when the last complete sync is older than this", 0.1, 29)
    critical_after_days: float = _f(25.0, "status is critical past this (P9: never more than 30 days)", 0.1, 30)


@dataclass(frozen=True)
class HealthConfig:
    camera_lost_s: float = _f(10.0, "a live camera without a frame for this long is 'camera lost'", 0.5, 3600)
    frozen_s: float = _f(30.0, "a camera whose frames do not change for this long is 'camera frozen'", 1, 86400)
    frozen_max_diff: float = _f(0.5, "frames closer than this (mean grey levels) are unchanged", 0, 50)
    sample_s: float = _f(1.0, "each camera's frames are examined this often (freeze, exposure, focus)", 0.1, 60)
    gps_lost_s: float = _f(30.0, "gpsd mode: no fix for this long is 'GPS lost'", 1, 3600)
    broker_lost_s: float = _f(30.0, "a broker (sync, alerts) unreachable for this long is a fault", 1, 3600)
    disk_warn_mb: float = _f(256.0, "warn when free disk space is within this of store.min_free_mb", 0, 1e6)
    clock_jump_s: float = _f(120.0, "system clock and GPS time differ by more than this: 'clock jump'", 1, 86400)
    temp_warn_c: float = _f(
        80.0, "board temperature (hottest thermal zone) at which to warn: a Pi 4 throttles at 80", 30, 150
    )
    temp_critical_c: float = _f(85.0, "board temperature that is a critical fault", 30, 150)
    status_file: Path | None = _f(None, "status snapshot (default: $RUNTIME_DIRECTORY/status.json, else data_dir/run)")


@dataclass(frozen=True)
class ConsoleConfig:
    port: str = _f("/dev/ttyS0", "serial port of the diagnostics console (/dev/ttyS0, /dev/ttyAMA0, /dev/ttyGS0)")
    baud: int = _f(115200, "line speed (8N1)", 1200, 4000000)
    login_timeout_s: float = _f(60.0, "a login not completed in this time starts over", 5, 3600)
    idle_timeout_s: float = _f(600.0, "a session without input for this long is logged out", 10, 86400)
    max_line: int = _f(256, "longest command line; longer input is discarded with a message", 16, 4096)
    log_file: Path | None = _f(None, "the daemon's log file for 'logs' where journald is not available")


@dataclass(frozen=True)
class Config:
    unit: UnitConfig
    models: ModelsConfig
    gps: GpsConfig
    store: StoreConfig
    pipeline: PipelineConfig
    cameras: tuple[CameraSpec, ...]
    hotlist: HotlistConfig = HotlistConfig()
    alerts: AlertsConfig = AlertsConfig()
    sync: SyncConfig = SyncConfig()
    health: HealthConfig = HealthConfig()
    console: ConsoleConfig = ConsoleConfig()
    source: Path | None = None  # the file it came from

    @property
    def db_path(self) -> Path:
        return self.unit.data_dir / self.store.path


CAMERA_FIELDS: dict[str, tuple[Any, str]] = {
    "id": (str, "camera id (letters, digits, - and _)"),
    "name": (str, "a name for people"),
    "kind": (str, "picamera2, device, url, file or folder"),
    "uri": (str, "device index, URL, file or folder"),
    "fps": (float | None, "frame rate: pacing for files and folders, requested rate for cameras"),
    "loop": (bool, "start a file or folder again at its end"),
    "width": (int | None, "requested capture width"),
    "height": (int | None, "requested capture height"),
    "zones": (list, "capture zones: polygons of [x, y] points in 0..1 frame coordinates"),
    "backoff_initial_s": (float, "first reconnect delay"),
    "backoff_max_s": (float, "longest reconnect delay"),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _coerce(key: str, value: Any, tp: Any, base: Path) -> Any:
    """Check one value against its annotated type; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a, base)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: unsupported type")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(base / p))
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(f"{key}[{i}]", v, item, base) for i, v in enumerate(value))
    if tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _section(cls: type[Any], name: str, raw: Any, base: Path) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(fields)})")
    values = {}
    for fname, f in fields.items():
        key = f"{name}.{fname}"
        if fname not in raw:
            values[fname] = f.default
            continue
        if f.metadata.get("in_data_dir"):
            if not isinstance(raw[fname], str) or not raw[fname]:
                raise ConfigError(f"{key}: expected a path string, got {raw[fname]!r}")
            values[fname] = Path(raw[fname])
            continue
        v = _coerce(key, raw[fname], hints[fname], base)
        lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
        numeric = isinstance(v, int | float) and not isinstance(v, bool)
        if numeric and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ConfigError(f"{key}: {v} is outside {lo}..{hi} ({f.metadata['doc']})")
        if choices and v not in choices:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(choices)}")
        values[fname] = v
    return cls(**values)


def _zones(key: str, raw: Any) -> tuple[tuple[tuple[float, float], ...], ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{key}: expected a list of polygons")
    polys = []
    for i, poly in enumerate(raw):
        if not isinstance(poly, list) or len(poly) < 3:
            raise ConfigError(f"{key}[{i}]: a polygon needs at least 3 [x, y] points")
        pts = []
        for j, pt in enumerate(poly):
            ok = (
                isinstance(pt, list)
                and len(pt) == 2
                and all(isinstance(c, int | float) and not isinstance(c, bool) and 0.0 <= c <= 1.0 for c in pt)
            )
            if not ok:
                raise ConfigError(f"{key}[{i}][{j}]: expected [x, y] with 0 <= x, y <= 1, got {pt!r}")
            pts.append((float(pt[0]), float(pt[1])))
        polys.append(tuple(pts))
    return tuple(polys)


def _camera(i: int, raw: Any, base: Path) -> CameraSpec:
    name = f"camera[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table ([[camera]])")
    unknown = sorted(set(raw) - set(CAMERA_FIELDS))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(CAMERA_FIELDS)})")
    for req in ("id", "kind"):
        if req not in raw:
            raise ConfigError(f"{name}.{req}: required")
    vals: dict[str, Any] = {}
    for k, v in raw.items():
        tp, _doc = CAMERA_FIELDS[k]
        vals[k] = _zones(f"{name}.zones", v) if k == "zones" else _coerce(f"{name}.{k}", v, tp, base)
    if not ID_PATTERN.match(vals["id"]):
        raise ConfigError(f"{name}.id: {vals['id']!r} must be lower-case letters, digits, - or _ (at most 32)")
    kinds = ("picamera2", "device", "url", "file", "folder")
    if vals["kind"] not in kinds:
        raise ConfigError(f"{name}.kind: {vals['kind']!r} is not one of {', '.join(kinds)}")
    uri = vals.get("uri", "")
    if vals["kind"] != "picamera2" and not uri:
        raise ConfigError(f"{name}.uri: required for kind {vals['kind']!r}")
    if vals["kind"] in ("file", "folder"):
        p = Path(uri).expanduser()
        vals["uri"] = str(p if p.is_absolute() else Path(os.path.normpath(base / p)))
    if vals["kind"] == "device" and not (uri.isdigit() or uri.startswith("/dev/")):
        raise ConfigError(f"{name}.uri: a device is its index (0, 1, ...) or a /dev/ path, got {uri!r}")
    if vals["kind"] == "url" and not re.match(r"^(rtsp|rtsps|http|https)://", uri):
        raise ConfigError(f"{name}.uri: expected an rtsp:// or http(s):// URL")
    for k, lo, hi in (
        ("fps", 0.1, 240),
        ("width", 16, 8192),
        ("height", 16, 8192),
        ("backoff_initial_s", 0.01, 60),
        ("backoff_max_s", 0.01, 3600),
    ):
        v = vals.get(k)
        if v is not None and not lo <= v <= hi:
            raise ConfigError(f"{name}.{k}: {v} is outside {lo}..{hi}")
    vals.setdefault("name", vals["id"])
    return CameraSpec(**vals)


def parse(raw: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Build a Config from parsed TOML; ``base`` resolves relative paths."""
    known = {"unit", "models", "gps", "store", "pipeline", "camera", "hotlist", "alerts", "sync", "health", "console"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(sorted(known))})")
    unit = _section(UnitConfig, "unit", raw.get("unit", {}), base)
    if not ID_PATTERN.match(unit.id):
        raise ConfigError(f"unit.id: {unit.id!r} must be lower-case letters, digits, - or _ (at most 32)")
    for r in unit.regions:
        if r not in REGIONS:
            raise ConfigError(f"unit.regions: {r!r} is not one of {', '.join(REGIONS)}")
    gps = _section(GpsConfig, "gps", raw.get("gps", {}), base)
    if gps.mode == "fixed" and (gps.lat is None or gps.lon is None):
        raise ConfigError("gps.lat: fixed mode needs gps.lat and gps.lon")
    store = _section(StoreConfig, "store", raw.get("store", {}), base)
    if store.scene_min_free_mb < store.min_free_mb:
        raise ConfigError("store.scene_min_free_mb: must not be below store.min_free_mb (scenes go first)")
    hotlist = _section(HotlistConfig, "hotlist", raw.get("hotlist", {}), base)
    srcs = []
    for i, src in enumerate(hotlist.sources):
        if "://" in src:
            if not src.startswith("https://"):
                raise ConfigError(f"hotlist.sources[{i}]: only https:// URLs or folders, got {src!r}")
            srcs.append(src)
        else:
            srcs.append(str(Path(src) if Path(src).is_absolute() else Path(os.path.normpath(base / src))))
    hotlist = dataclasses.replace(hotlist, sources=tuple(srcs))
    sync = _section(SyncConfig, "sync", raw.get("sync", {}), base)
    if sync.enabled and not sync.host:
        raise ConfigError("sync.host: required when sync.enabled is true")
    if sync.critical_after_days <= sync.warn_after_days:
        raise ConfigError("sync.critical_after_days: must be above sync.warn_after_days")
    health = _section(HealthConfig, "health", raw.get("health", {}), base)
    if health.temp_critical_c < health.temp_warn_c:
        raise ConfigError("health.temp_critical_c: must not be below health.temp_warn_c")
    cams_raw = raw.get("camera", [])
    if not isinstance(cams_raw, list) or not cams_raw:
        raise ConfigError("camera: at least one [[camera]] table is required")
    cameras = tuple(_camera(i, c, base) for i, c in enumerate(cams_raw))
    ids = [c.id for c in cameras]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise ConfigError(f"camera.id: {dup!r} is used by more than one camera")
    return Config(
        unit=unit,
        models=_section(ModelsConfig, "models", raw.get("models", {}), base),
        gps=gps,
        store=store,
        pipeline=_section(PipelineConfig, "pipeline", raw.get("pipeline", {}), base),
        cameras=cameras,
        hotlist=hotlist,
        alerts=_section(AlertsConfig, "alerts", raw.get("alerts", {}), base),
        sync=sync,
        health=health,
        console=_section(ConsoleConfig, "console", raw.get("console", {}), base),
        source=source,
    )


MAX_CONFIG_BYTES = 1 << 20


def load(path: Path) -> Config:
    """Read and validate a TOML config file; ConfigError names the file and the key."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    try:
        return parse(raw, path.resolve().parent, path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
