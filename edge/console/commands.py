"""The console's commands: what each prints, from the daemon's status snapshot (never the camera, never the store's
reads), and the acts that write the access record. Nothing here prints a plate or a position."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..access.audit import AuditLog
from ..access.users import User
from ..capture.sources import redact_uri
from ..health import read_snapshot
from ..maintenance import KINDS, MaintenanceError, log_maintenance

MAX_LOG_LINES = 500
DEFAULT_LOG_LINES = 20
MAINTENANCE_KINDS = tuple(k for k in KINDS if k != "calibration")  # calibration has its own command
MAX_SUMMARY = 500
SECRET_WORDS = ("password", "secret", "token")
POSITION_FIELDS = {("gps", "lat"), ("gps", "lon"), ("gps", "alt_m")}

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# Plate-like: 2..10 upper-case letters and digits with at least one digit and one letter (most plates), or a run
# of 5..8 digits; and decimal degrees (4 or more decimals).
_PLATE = re.compile(r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{2,10}\b|\b\d{5,8}\b")
_DEGREES = re.compile(r"-?\b\d{1,3}\.\d{4,}\b")


class CommandError(ValueError):
    """A bad command line: the message says what was wrong."""


@dataclass(frozen=True)
class Context:
    """What the commands need; built once per login."""

    cfg: config.Config
    config_path: Path
    status_path: Path
    user: User
    audit: AuditLog
    ask: Callable[[str], str | None]  # prompt for one more line (None: cancelled or timed out)
    journal: Sequence[str] = ("journalctl", "-u", "alpr-edge", "-o", "cat", "--no-pager", "-q")
    restart: Sequence[str] = ("systemctl", "restart", "alpr-edge")
    clock: Callable[[], float] = time.time


# -- the snapshot ----------------------------------------------------------------------------------------------


def load_status(ctx: Context) -> tuple[dict[str, Any] | None, str]:
    """(snapshot or None, a header line saying how fresh it is)."""
    try:
        snap = read_snapshot(ctx.status_path)
    except FileNotFoundError:
        return None, f"no status: the daemon has not written {ctx.status_path} (is alpr-edge running?)"
    except (OSError, ValueError) as e:
        return None, f"no status: {ctx.status_path} cannot be read ({type(e).__name__})"
    age = max(0.0, ctx.clock() - float(snap.get("at", 0)))
    limit = 3 * ctx.cfg.pipeline.status_interval_s + 5
    if age > limit:
        return snap, f"STALE: the daemon last reported {age:.0f} s ago (is alpr-edge running?)"
    return snap, f"unit {snap.get('device')}, status {age:.0f} s old"


def _mb(n: Any) -> str:
    return "?" if not isinstance(n, int | float) else f"{n / 1e6:.0f} MB"


def _age(s: Any) -> str:
    if not isinstance(s, int | float):
        return "never"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _gps_line(g: dict[str, Any]) -> str:
    if g.get("mode") != "gpsd":
        return f"gps: {g.get('mode')}"
    sats = g.get("satellites")
    line = f"gps: {g.get('state')}, {g.get('fix')}" + (f", {sats} satellites" if sats is not None else "")
    if g.get("clock_offset_s") is not None:
        line += f", clock {g['clock_offset_s']:+.1f} s against GPS"
    return line + (f" ({g['fault']})" if g.get("fault") else "")


def _storage_line(s: dict[str, Any] | None) -> str:
    if not s:
        return "storage: unknown"
    return (
        f"storage: {_mb(s.get('free_bytes'))} free (reads stop below {_mb(s.get('min_free_bytes'))}), "
        f"database {_mb(s.get('db_bytes'))}, {s.get('reads')} reads, scene images "
        f"{'on' if s.get('scene_images_on') else 'OFF'}"
    )


def _sync_line(s: dict[str, Any]) -> str:
    if not s.get("enabled"):
        return "sync: off"
    pending = s.get("pending") or {}
    waiting = ", ".join(f"{k} {v}" for k, v in pending.items() if v) or "nothing"
    days = s.get("days_since_sync")
    since = "never" if days is None else f"{days:.2f} days ago"
    conn = "connected" if s.get("connected") else "NOT connected"
    return f"sync: {conn}, level {s.get('level')}, last complete sync {since}, waiting: {waiting}"


def _hotlist_line(h: dict[str, Any] | None) -> str:
    if not h:
        return "hot list: off"
    stale = " STALE" if h.get("stale") else ""
    return (
        f"hot list: {h.get('lists')} list(s), {h.get('entries')} entries, oldest {_age(h.get('oldest_age_s'))}{stale}"
    )


def _thermal_line(t: dict[str, Any] | None) -> str:
    if not t:
        return "board: no temperature sensor"
    temp = t.get("temp_c")
    parts = [
        f"board {temp:.0f} °C ({t.get('zone')})" if isinstance(temp, int | float) else "board: temperature unknown"
    ]
    if t.get("throttled_now"):
        parts.append("throttled now: " + ", ".join(map(str, t["throttled_now"])))
    if t.get("throttled_since_boot"):
        parts.append("since boot: " + ", ".join(map(str, t["throttled_since_boot"])))
    if t.get("fault"):
        parts.append(str(t["fault"]))
    return "; ".join(parts)


def _faults(snap: dict[str, Any]) -> list[str]:
    faults = snap.get("faults") or []
    if not faults:
        return ["faults: none"]
    return ["faults:"] + [f"  [{f.get('severity')}] {f.get('text')}" for f in faults]


def _camera_lines(c: dict[str, Any]) -> list[str]:
    exp = c.get("exposure")
    measured = (
        f"exposure mean {exp['mean']:.0f}/255, clipped {exp['clipped'] * 100:.1f} %; focus {c.get('focus'):.0f}"
        if exp
        else "exposure/focus: not measured yet"
    )
    state = "connected" if c.get("connected") else "NOT connected"
    return [
        f"camera {c.get('id')} ({c.get('name')}): {state}, {c.get('frames')} frames, last frame "
        f"{_age(c.get('last_frame_age_s'))} ago, reconnects {c.get('reconnects')}" + (
            f", fault: {c['fault']}" if c.get("fault") else ""),
        f"  {measured}; unchanged for {c.get('still_s', 0):.0f} s",
    ]  # fmt: skip


def cmd_status(ctx: Context, args: list[str]) -> str:
    snap, head = load_status(ctx)
    if snap is None:
        return head
    q = snap.get("queues") or {}
    lines = [
        f"{head}; level {snap.get('level')}, up {_age(snap.get('uptime_s'))}",
        f"fps {snap.get('fps')}, frames {snap.get('frames')}, dropped {snap.get('dropped')}, "
        f"reads {snap.get('reads')}, hits {snap.get('hits')}",
        f"queues: frames {q.get('frames')}, reads waiting for the store {q.get('reads')}",
        _gps_line(snap.get("gps") or {}),
        _storage_line(snap.get("storage")),
        _sync_line(snap.get("sync") or {}),
        _hotlist_line(snap.get("hotlist")),
        _thermal_line(snap.get("thermal")),
        *_faults(snap),
    ]
    return "\n".join(lines)


def _one(ctx: Context, args: list[str], what: str, line: Callable[[dict[str, Any]], str]) -> str:
    snap, head = load_status(ctx)
    return head if snap is None else f"{head}\n{line(snap)}"


def cmd_gps(ctx: Context, args: list[str]) -> str:
    return _one(ctx, args, "gps", lambda s: _gps_line(s.get("gps") or {}))


def cmd_storage(ctx: Context, args: list[str]) -> str:
    return _one(ctx, args, "storage", lambda s: _storage_line(s.get("storage")))


def cmd_sync(ctx: Context, args: list[str]) -> str:
    return _one(ctx, args, "sync", lambda s: _sync_line(s.get("sync") or {}))


def cmd_hotlist(ctx: Context, args: list[str]) -> str:
    return _one(ctx, args, "hotlist", lambda s: _hotlist_line(s.get("hotlist")))


def _camera_id(ctx: Context, args: list[str], command: str) -> str | None:
    ids = [c.id for c in ctx.cfg.cameras]
    if not args:
        return None
    if args[0] not in ids:
        raise CommandError(f"{command}: no camera {args[0][:32]!r} (cameras: {', '.join(ids)})")
    return args[0]


def cmd_camera(ctx: Context, args: list[str]) -> str:
    wanted = _camera_id(ctx, args, "camera")
    snap, head = load_status(ctx)
    if snap is None:
        return head
    lines = [head]
    for c in snap.get("cameras") or []:
        if wanted is None or c.get("id") == wanted:
            lines += _camera_lines(c)
    return "\n".join(lines)


# -- logs ------------------------------------------------------------------------------------------------------


def clean_log_line(line: str) -> str | None:
    """A log line fit for the console: DEBUG lines dropped, anything plate- or position-like redacted."""
    if " DEBUG " in line or line.startswith("DEBUG"):
        return None
    line = "".join(ch for ch in line if ch.isprintable())[:400]
    uuids: list[str] = []

    def keep(m: re.Match[str]) -> str:
        uuids.append(m.group(0))
        return f"\x00{len(uuids) - 1}\x00"

    line = _UUID.sub(keep, line)
    line = _DEGREES.sub("[position]", line)
    line = _PLATE.sub("[redacted]", line)
    return re.sub("\x00(\\d+)\x00", lambda m: uuids[int(m.group(1))], line)


def _tail(path: Path, n: int) -> list[str]:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 256 * 1024))
        data = f.read()
    return list(deque(data.decode("utf-8", "replace").splitlines(), maxlen=n))


def cmd_logs(ctx: Context, args: list[str]) -> str:
    n = DEFAULT_LOG_LINES
    if len(args) > 1:
        raise CommandError("logs: at most one argument, the number of lines")
    if args:
        if not args[0].isdigit() or not 1 <= int(args[0]) <= MAX_LOG_LINES:
            raise CommandError(f"logs: the number of lines must be a whole number 1..{MAX_LOG_LINES}")
        n = int(args[0])
    raw: list[str] = []
    source = ""
    if ctx.journal and shutil.which(ctx.journal[0]):
        try:
            r = subprocess.run([*ctx.journal, "-n", str(n)], capture_output=True, timeout=15, check=False)
            if r.returncode == 0:
                raw = r.stdout.decode("utf-8", "replace").splitlines()[-n:]
                source = "journald"
        except (OSError, subprocess.SubprocessError):
            raw = []
    if not raw and ctx.cfg.console.log_file is not None:
        try:
            raw, source = _tail(ctx.cfg.console.log_file, n), str(ctx.cfg.console.log_file)
        except OSError as e:
            return f"no log: {ctx.cfg.console.log_file}: {e.strerror}"
    if not raw:
        return "no log: journald has no entries for alpr-edge and console.log_file is not set"
    lines = [c for c in (clean_log_line(x) for x in raw) if c is not None]
    return "\n".join([f"last {len(lines)} line(s) from {source} (plates and positions redacted):", *lines])


# -- config ----------------------------------------------------------------------------------------------------


def _show_value(section: str, name: str, value: Any) -> str:
    if (section, name) in POSITION_FIELDS and value is not None:
        return "[position hidden]"
    if any(w in name for w in SECRET_WORDS) and not name.endswith("_file"):
        return "[redacted]"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show_value(section, name, v) for v in value) + "]"
    if isinstance(value, str) and "://" in value:
        return repr(redact_uri(value))
    return repr(str(value)) if isinstance(value, Path | str) else repr(value)


def cmd_config_show(ctx: Context, args: list[str]) -> str:
    try:
        cfg = config.load(ctx.config_path)
    except config.ConfigError as e:
        return f"config: {e}"
    lines = [f"# {ctx.config_path} (secrets and positions hidden)"]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "cameras":
            for cam in value:
                lines.append("[[camera]]")
                for cf in dataclasses.fields(cam):
                    lines.append(f"{cf.name} = {_show_value('camera', cf.name, getattr(cam, cf.name))}")
        elif dataclasses.is_dataclass(value):
            lines.append(f"[{f.name}]")
            for sf in dataclasses.fields(value):
                lines.append(f"{sf.name} = {_show_value(f.name, sf.name, getattr(value, sf.name))}")
    return "\n".join(lines)


def cmd_config_validate(ctx: Context, args: list[str]) -> str:
    try:
        cfg = config.load(ctx.config_path)
    except config.ConfigError as e:
        return f"config: INVALID: {e}"
    return f"config: {ctx.config_path}: ok ({len(cfg.cameras)} camera(s), gps {cfg.gps.mode})"


# -- acts that are recorded ------------------------------------------------------------------------------------


def _printable(text: str, limit: int) -> str:
    return "".join(ch for ch in text if ch.isprintable()).strip()[:limit]


def cmd_maintenance_log(ctx: Context, args: list[str]) -> str:
    """P17: what was done to the unit, by whom, when: an entry in the (signed) access record."""
    kind = ctx.ask(f"kind ({', '.join(MAINTENANCE_KINDS)}): ")
    if kind is None:
        return "maintenance log: cancelled"
    kind = kind.strip().lower()
    if kind not in MAINTENANCE_KINDS:
        raise CommandError(f"maintenance log: kind must be one of {', '.join(MAINTENANCE_KINDS)}")
    ids = [c.id for c in ctx.cfg.cameras]
    cam = ctx.ask(f"camera ({', '.join(ids)}, or - for the whole unit): ")
    if cam is None:
        return "maintenance log: cancelled"
    cam = cam.strip() or "-"
    if cam != "-" and cam not in ids:
        raise CommandError(f"maintenance log: no camera {cam[:32]!r} (cameras: {', '.join(ids)}, or -)")
    summary = ctx.ask(f"what was done (1..{MAX_SUMMARY} characters): ")
    if summary is None:
        return "maintenance log: cancelled"
    summary = _printable(summary, MAX_SUMMARY + 1)
    if not summary or len(summary) > MAX_SUMMARY:
        raise CommandError(f"maintenance log: the summary must be 1..{MAX_SUMMARY} characters")
    try:
        e = log_maintenance(ctx.audit, ctx.user, kind, summary, None if cam == "-" else cam)
    except MaintenanceError as err:
        raise CommandError(f"maintenance log: {err}") from err
    return f"maintenance recorded (entry {e.seq})"


def cmd_calibrate(ctx: Context, args: list[str]) -> str:
    """Records the camera's exposure and focus as measured now (from the daemon's live frames)."""
    wanted = _camera_id(ctx, args, "calibrate")
    if wanted is None:
        if len(ctx.cfg.cameras) != 1:
            raise CommandError(f"calibrate: name the camera ({', '.join(c.id for c in ctx.cfg.cameras)})")
        wanted = ctx.cfg.cameras[0].id
    snap, head = load_status(ctx)
    if snap is None or head.startswith("STALE"):
        return f"calibrate: {head}; nothing recorded"
    cam = next((c for c in snap.get("cameras") or [] if c.get("id") == wanted), None)
    if cam is None or not cam.get("exposure"):
        return f"calibrate: camera {wanted} has no live measures yet (is it delivering frames?); nothing recorded"
    values = {
        "exposure_mean": cam["exposure"]["mean"],
        "exposure_clipped": cam["exposure"]["clipped"],
        "focus": cam.get("focus"),
        "measured_at": cam.get("measured_at"),
    }
    summary = "exposure and focus measured at the serial console"
    e = log_maintenance(ctx.audit, ctx.user, "calibration", summary, wanted, values)
    return "\n".join([*_camera_lines(cam), f"calibration recorded (entry {e.seq})"])


def cmd_restart(ctx: Context, args: list[str]) -> str:
    answer = ctx.ask("restart the reader now? type yes: ")
    if answer is None or answer.strip().lower() != "yes":
        return "restart: not confirmed; nothing done"
    log_maintenance(ctx.audit, ctx.user, "maintenance", "restart of the reader requested at the serial console")
    if not Path("/run/systemd/system").is_dir() or shutil.which(ctx.restart[0]) is None:
        return "restart: systemd is not running here; restart alpr-edge by hand (recorded as requested)"
    try:
        r = subprocess.run(list(ctx.restart), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"restart: failed: {type(e).__name__}"
    if r.returncode != 0:
        why = _printable(r.stderr.decode("utf-8", "replace"), 200)
        return f"restart: {' '.join(ctx.restart)} failed ({r.returncode}): {why}"
    return "restart: alpr-edge restarted"


Handler = Callable[[Context, list[str]], str]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    usage: str
    help: str
    max_args: int = 0


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("status", cmd_status, "status", "fps, frames, reads, queues, GPS, storage, sync, hot list, faults"),
        Command("camera", cmd_camera, "camera [ID]", "per-camera frames, exposure and focus", 1),
        Command("gps", cmd_gps, "gps", "GPS state and fix quality (no position)"),
        Command("storage", cmd_storage, "storage", "free space, database size, reads stored"),
        Command("sync", cmd_sync, "sync", "link to headquarters: level, last complete sync, waiting items"),
        Command("hotlist", cmd_hotlist, "hotlist", "hot lists in force and their age"),
        Command("logs", cmd_logs, "logs [N]", f"the last N log lines (default {DEFAULT_LOG_LINES}), redacted", 1),
        Command("config show", cmd_config_show, "config show", "the settings in force, secrets hidden"),
        Command("config validate", cmd_config_validate, "config validate", "check the settings file"),
        Command("maintenance log", cmd_maintenance_log, "maintenance log", "record maintenance done (asks)"),
        Command("calibrate", cmd_calibrate, "calibrate [CAMERA]", "record the camera's exposure and focus now", 1),
        Command("restart", cmd_restart, "restart", "restart the reader (asks; recorded)"),
    )
}
GROUPS = ("config", "maintenance")


def parse(line: str) -> tuple[Command | None, str, list[str]]:
    """(command, its canonical name, arguments); (None, name, []) for help/logout/unknown. CommandError on a
    malformed line."""
    words = line.split()
    if not words:
        return None, "", []
    name, args = words[0].lower(), words[1:]
    if name in GROUPS:
        if not args:
            subs = [c.name.split()[1] for c in COMMANDS.values() if c.name.startswith(name + " ")]
            raise CommandError(f"{name}: say which: {' | '.join(f'{name} {s}' for s in subs)}")
        name, args = f"{name} {args[0].lower()}", args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        return None, name, args
    if len(args) > cmd.max_args:
        raise CommandError(f"{cmd.name}: too many arguments (usage: {cmd.usage})")
    return cmd, name, args


def help_text() -> str:
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = [f"  {c.usage:<{width}}  {c.help}" for c in COMMANDS.values()]
    lines += [f"  {'help':<{width}}  this list", f"  {'logout':<{width}}  end the session"]
    return "commands:\n" + "\n".join(lines)
