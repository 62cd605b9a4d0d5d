"""``alpr-edge doctor``: check an installation and say what to fix, one line per check.

A technician runs it after ``scripts/install.sh``, after editing the settings, or when a unit misbehaves. It reads
the same settings, keys, database and models the reader uses and tries the same connections (cameras, gpsd, the
broker over TLS) with short timeouts. It shows no plate data and no positions, and never prints a secret: key files
are checked and opened but their contents never leave this module; camera URLs are shown with credentials redacted.
Exit status: 0 all ok, 1 warnings only, 2 at least one failure.
"""

from __future__ import annotations

import argparse
import glob
import grp
import importlib.util
import json
import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import config as config_mod
from .capture.sources import redact_uri
from .thermal import read_thermal

if TYPE_CHECKING:
    from .hotlist.repository import HotListRepository

OK, WARN, FAIL = "ok", "warn", "FAIL"
SERVICE_USER = "alpr-edge"
UNITS = ("alpr-edge.service",)
CHECKS = ("keys", "database", "hotlist", "models", "cameras", "gps", "time", "broker", "disk", "thermal", "units")
URL_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
CLOCK_FLOOR = 1_735_689_600  # 2025-01-01: a clock before this was never set (no RTC, no GPS or network time yet)
GPSD_LINE_MAX = 64 * 1024


@dataclass(frozen=True)
class Check:
    """One result: ``level`` ok, warn or FAIL; ``fix`` says what to do about it (empty when ok)."""

    name: str
    level: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level:<4}  {self.name:<12} {self.message}"
        return f"{text}  -> {self.fix}" if self.fix else text

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "level": self.level, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Options:
    """Where to look and how long to wait; the defaults check this machine."""

    root: Path = Path("/")  # where the systemd units are looked for (a staged root from install.sh --root)
    timeout_s: float = 3.0
    skip: frozenset[str] = frozenset()
    service_user: str = SERVICE_USER  # the user the reader runs as (its group may read the TLS client key)


def exit_code(checks: Iterable[Check]) -> int:
    levels = {c.level for c in checks}
    return 2 if FAIL in levels else 1 if WARN in levels else 0


# -- files -----------------------------------------------------------------------------------------------------------


def _gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def secret_file(name: str, path: Path, *, service_group: str | None = None) -> Check:
    """A key or password file: a regular file owned by root (or the caller), unreadable by others. Files the reader
    itself opens (TLS client key, broker password) may be readable by group alpr-edge; the database and access
    record keys reach the reader by LoadCredential and must be 0600."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(name, FAIL, f"{path} does not exist", "create it (scripts/install.sh, alpr-edge keys init)")
    except OSError as e:
        return Check(name, FAIL, f"{path}: {e.strerror}", "run as root: sudo alpr-edge doctor")
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return Check(name, FAIL, f"{path} is not a regular file", "replace it with the key file itself")
    if st.st_uid not in (0, os.geteuid()):
        return Check(name, FAIL, f"{path} is owned by uid {st.st_uid}", f"chown root {path}")
    allowed = 0o640 if service_group is not None and st.st_gid == _gid(service_group) else 0o600
    if mode & ~allowed & 0o777:
        who = "others" if mode & 0o007 else "its group"
        want = f"chmod {allowed:o} {path}" + ("" if allowed == 0o640 else f"; chown root:root {path}")
        return Check(name, FAIL, f"{path} has mode {mode:04o}: {who} can read or change it", want)
    return Check(name, OK, f"{path} mode {mode:04o}, owner uid {st.st_uid}")


def settings_file(path: Path) -> Check:
    """The settings hold no secrets, but camera URLs may carry passwords: not for everyone, and writable by root
    only (whoever can change them can point the reader elsewhere)."""
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 or st.st_uid not in (0, os.geteuid()):
        return Check("config", FAIL, f"{path} (mode {mode:04o}, uid {st.st_uid}) can be changed by others",
                     f"chown root {path}; chmod 640 {path}")  # fmt: skip
    if mode & 0o004:
        return Check("config", WARN, f"{path} is readable by everyone (camera URLs may hold passwords)",
                     f"chmod 640 {path}; chgrp {SERVICE_USER} {path}")  # fmt: skip
    return Check("config", OK, f"{path} mode {mode:04o}")


def data_dir(cfg: config_mod.Config, user: str) -> Check:
    d = cfg.unit.data_dir
    try:
        st = d.stat()
    except FileNotFoundError:
        return Check("data dir", FAIL, f"{d} does not exist", "run scripts/install.sh (or mkdir -m 700 it)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check("data dir", FAIL, f"{d} has mode {mode:04o}: others can look into it", f"chmod 700 {d}")
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        pwd.getpwnam(user)
    except KeyError:
        return Check("data dir", WARN, f"{d} mode {mode:04o}, owner {owner}; there is no user {user}",
                     "run scripts/install.sh (the service runs as that user)")  # fmt: skip
    if owner != user:
        return Check("data dir", FAIL, f"{d} is owned by {owner}, the reader runs as {user}",
                     f"chown -R {user}:{user} {d}")  # fmt: skip
    return Check("data dir", OK, f"{d} mode {mode:04o}, owner {owner}")


# -- keys, database, hot lists ---------------------------------------------------------------------------------------


def keys(cfg: config_mod.Config, user: str) -> list[Check]:
    from .access.audit import load_signing_key
    from .store.errors import KeyFileError
    from .store.keys import load_key

    out = []
    for name, path, loader in (
        ("db key", cfg.store.key_file, lambda p: load_key(p, {})),
        ("audit key", cfg.store.audit_key_file, lambda p: load_signing_key(p, {})),
    ):
        c = secret_file(name, path)
        if c.level == OK:
            try:
                loader(path)
            except KeyFileError as e:
                c = Check(name, FAIL, str(e), "restore the key from its backup; a new key cannot open old data")
        out.append(c)
    files = [("sync key", cfg.sync.key_file if cfg.sync.enabled else None)]
    files += [("mqtt key", cfg.alerts.mqtt_key_file), ("mqtt pass", cfg.alerts.mqtt_password_file)]
    for name, p in files:
        if p is not None:
            out.append(secret_file(name, p, service_group=user))
    return out


def _owned_like(path: Path, like: Path) -> None:
    """SQLite gives the -wal/-shm files it creates as root to the database's owner; make sure of it, so that a
    doctor run as root never leaves files the reader cannot open."""
    try:
        st = like.stat()
        for suffix in ("-wal", "-shm"):
            p = Path(f"{path}{suffix}")
            if p.exists() and (p.stat().st_uid, p.stat().st_gid) != (st.st_uid, st.st_gid):
                os.chown(p, st.st_uid, st.st_gid)
    except OSError:
        pass


def database(cfg: config_mod.Config, stale_after_h: float, skip: frozenset[str]) -> list[Check]:
    """Open with the key, check page integrity (every page is decrypted and its HMAC checked), the schema version
    and the age of the hot lists in force."""
    from .hotlist.repository import HotListRepository
    from .store.db import DBError, open_db
    from .store.errors import StoreError
    from .store.keys import load_key
    from .store.migrations import MIGRATIONS

    path = cfg.db_path
    if not path.exists():
        return [Check("database", WARN, f"{path} does not exist yet", "the reader creates it when it first starts")]
    try:
        key = load_key(cfg.store.key_file, {})
    except StoreError as e:
        return [Check("database", FAIL, f"not checked: {e}", "fix the db key first")]
    out: list[Check] = []
    try:
        conn = open_db(path, key, create=False)
    except StoreError as e:
        return [Check("database", FAIL, str(e), "is this the database of this key? restore the key from its backup")]
    try:
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            has_migrations = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            version = conn.execute("SELECT max(number) FROM schema_migrations").fetchone()[0] if has_migrations else 0
        except DBError as e:
            return [Check("database", FAIL, f"{path}: {e}", "restore the database from a backup")]
        if problems != ["ok"]:
            first = "; ".join(str(p) for p in problems[:3])
            return [Check("database", FAIL, f"{path} is damaged: {first}", "restore the database from a backup")]
        size_mb = path.stat().st_size / 1e6
        if (version or 0) > len(MIGRATIONS):
            out.append(Check("database", FAIL, f"{path} has schema version {version}, newer than this software "
                             f"({len(MIGRATIONS)})", "install the newer alpr-edge again"))  # fmt: skip
        elif (version or 0) < len(MIGRATIONS):
            out.append(Check("database", WARN, f"{path} opens, integrity ok, schema {version} of {len(MIGRATIONS)}",
                             "the reader migrates it when it starts"))  # fmt: skip
        else:
            out.append(Check("database", OK, f"{path} opens with the key, integrity ok ({size_mb:.1f} MB)"))
        if "hotlist" not in skip:
            out.append(_hotlists(HotListRepository(conn), stale_after_h))
    finally:
        conn.close()
        _owned_like(path, path)
    return out


def _hotlists(repo: HotListRepository, stale_after_h: float) -> Check:
    from .store.db import DBError
    from .store.errors import StoreError

    try:
        lists = repo.status(stale_after_s=stale_after_h * 3600)
    except (DBError, StoreError) as e:  # a database without the hot list tables yet (schema behind)
        return Check("hotlist", WARN, f"cannot read the hot lists: {e}", "start the reader once (it migrates)")
    if not lists:
        return Check("hotlist", WARN, "no hot list in force: reads are stored but nothing can alert",
                     "put a signed bundle in a hotlist source folder, or enable sync")  # fmt: skip
    stale = [s for s in lists if s.stale]
    if stale:
        names = ", ".join(f"{s.info.list_id} ({s.age_s / 3600:.0f} h)" for s in stale)
        return Check("hotlist", WARN, f"stale (older than {stale_after_h:g} h): {names}",
                     "check the hot list sources and sync; alpr-edge hotlist status")  # fmt: skip
    newest = min(s.age_s for s in lists) / 3600
    return Check("hotlist", OK, f"{len(lists)} list(s) in force, newest {newest:.1f} h old")


# -- models, cameras, gps --------------------------------------------------------------------------------------------


def models(cfg: config_mod.Config) -> Check:
    from .vision.recognizer import Recognizer
    from .vision.runtime import ModelError

    m = cfg.models
    for f in ("plate_detector.tflite", "plate_ocr.tflite"):
        if not (m.dir / f).is_file():
            return Check("models", FAIL, f"{m.dir / f} is missing",
                         "run scripts/install.sh again, or set models.dir to the folder with both models")  # fmt: skip
    try:
        Recognizer.from_files(m.dir / "plate_detector.tflite", m.dir / "plate_ocr.tflite", cfg.unit.regions, 1)
    except (ModelError, ValueError, OSError) as e:
        return Check("models", FAIL, f"{m.dir}: {e}", "run scripts/install.sh again (the model files are damaged)")
    return Check("models", OK, f"{m.dir}: detector and OCR load")


def _char_device(name: str, dev: Path) -> Check:
    try:
        st = dev.stat()
    except OSError:
        return Check(name, FAIL, f"{dev} does not exist", "is the camera plugged in? ls /dev/v4l/by-id")
    if not stat.S_ISCHR(st.st_mode):
        return Check(name, FAIL, f"{dev} is not a device", "point the camera's uri at a /dev/video* node")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    if group != "video" or st.st_mode & 0o060 != 0o060:
        return Check(name, WARN, f"{dev} is group {group}, mode {stat.S_IMODE(st.st_mode):04o}: the reader "
                     "(group video) may not open it", "udevadm control --reload && udevadm trigger")  # fmt: skip
    return Check(name, OK, f"{dev} present")


def _reachable(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return str(e.strerror or e) if not isinstance(e, TimeoutError) else f"no answer in {timeout:g} s"


def cameras(cfg: config_mod.Config, timeout: float) -> list[Check]:
    out = []
    for cam in cfg.cameras:
        name = f"camera {cam.id}"
        if cam.kind == "picamera2":
            if importlib.util.find_spec("picamera2") is None:
                out.append(Check(name, FAIL, "picamera2 is not importable here",
                                 "apt install python3-picamera2; on a Pi install.sh makes the venv with "
                                 "--system-site-packages"))  # fmt: skip
            elif not glob.glob("/dev/media*"):
                out.append(Check(name, FAIL, "no camera (no /dev/media*)",
                                 "check the ribbon cable; rpicam-hello --list-cameras"))  # fmt: skip
            else:
                out.append(Check(name, OK, "picamera2 importable, camera device present"))
        elif cam.kind == "device":
            dev = Path(f"/dev/video{cam.uri}") if cam.uri.isdigit() else Path(cam.uri)
            out.append(_char_device(name, dev))
        elif cam.kind == "url":
            parts = urlsplit(cam.uri)
            try:
                port = parts.port or URL_PORTS.get(parts.scheme, 80)
            except ValueError:
                out.append(Check(name, FAIL, f"{redact_uri(cam.uri)}: bad port", "fix the camera's uri"))
                continue
            why = _reachable(parts.hostname or "", port, timeout)
            shown = redact_uri(cam.uri)
            if why:
                out.append(Check(name, FAIL, f"cannot reach {shown}: {why}", "check the camera's power, network, uri"))
            else:
                out.append(Check(name, OK, f"{shown} reachable"))
        else:
            p = Path(cam.uri)
            ok = p.is_dir() if cam.kind == "folder" else p.is_file()
            out.append(Check(name, OK, f"{p} present") if ok else Check(name, FAIL, f"{p} not found", "fix its uri"))
    return out


def gps(cfg: config_mod.Config, timeout: float) -> Check:
    g = cfg.gps
    if g.mode == "none":
        return Check("gps", WARN, "gps.mode = none: reads carry no position", "set gps.mode to gpsd or fixed")
    if g.mode == "fixed":
        return Check("gps", OK, "fixed position configured")
    try:
        with socket.create_connection((g.host, g.port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"?DEVICES;\n")
            devices = _gpsd_devices(s, time.monotonic() + timeout)
    except OSError as e:
        why = f"no answer in {timeout:g} s" if isinstance(e, TimeoutError) else str(e.strerror or e)
        return Check("gps", FAIL, f"gpsd at {g.host}:{g.port}: {why}",
                     "systemctl enable --now gpsd.socket; DEVICES in /etc/default/gpsd")  # fmt: skip
    if devices is None:
        return Check("gps", FAIL, f"{g.host}:{g.port} does not speak gpsd's protocol", "check gps.host and gps.port")
    if not devices:
        return Check("gps", WARN, "gpsd answers but has no receiver",
                     'plug the receiver in; DEVICES="/dev/alpr-gps" in /etc/default/gpsd')  # fmt: skip
    return Check("gps", OK, f"gpsd answers; receiver(s): {', '.join(devices)}")


def _gpsd_devices(s: socket.socket, deadline: float) -> list[str] | None:
    """The device paths of gpsd's DEVICES reply (no positions are asked for); None if it never comes."""
    buf = b""
    while time.monotonic() < deadline and len(buf) < GPSD_LINE_MAX:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("class") == "DEVICES":
                devs = msg.get("devices")
                return [str(d.get("path", "?")) for d in devs if isinstance(d, dict)] if isinstance(devs, list) else []
    return None


# -- time, broker, disk, units ---------------------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str] | None"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def time_sync(run: Runner = _run, now: float | None = None) -> Check:
    """systemd-timesyncd or chrony (through timedatectl), chrony directly, or timesyncd's marker file."""
    t = time.time() if now is None else now
    if t < CLOCK_FLOOR:
        return Check("time", FAIL, "the clock is not set (before 2025)",
                     "give the unit network time (NTP) or a GPS fix; read times would be wrong")  # fmt: skip
    r = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if r is not None and r.returncode == 0 and r.stdout.strip() in ("yes", "no"):
        if r.stdout.strip() == "yes":
            return Check("time", OK, "clock synchronized (timedatectl)")
        return Check("time", WARN, "clock not synchronized (timedatectl)",
                     "check network time: timedatectl timesync-status, or chronyc sources")  # fmt: skip
    r = run(["chronyc", "-n", "tracking"])
    if r is not None and r.returncode == 0:
        leap = next((ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("Leap status")), "")
        if leap == "Normal":
            return Check("time", OK, "clock synchronized (chrony)")
        return Check("time", WARN, f"chrony: leap status {leap or 'unknown'}", "chronyc sources")
    if Path("/run/systemd/timesync/synchronized").exists():
        return Check("time", OK, "clock synchronized (systemd-timesyncd)")
    return Check("time", WARN, "time synchronization: unknown (no timedatectl answer, no chrony)",
                 "install and enable systemd-timesyncd or chrony")  # fmt: skip


def broker(
    name: str, host: str, port: int, ca: Path | None, cert: Path | None, key: Path | None, timeout: float
) -> Check:
    """A TCP connection and a TLS handshake with the configured CA and client certificate; then a short wait, since
    with TLS 1.3 a broker that refuses the client certificate says so only after the handshake."""
    from .alerts_mqtt import MqttConfigError, tls_context

    where = f"{host}:{port}"
    try:
        ctx = tls_context(ca, cert, key)
    except MqttConfigError as e:
        return Check(name, FAIL, str(e), "check the ca/cert/key files (scripts/provision_device.sh)")
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if ctx is None:
                return Check(name, WARN, f"{where} reachable, without TLS", "give the broker's CA (TLS)")
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(min(timeout, 1.0))
                try:
                    if tls.recv(1) == b"":
                        return Check(name, FAIL, f"{where} closed the connection after the TLS handshake",
                                     "is this unit's certificate revoked or from another CA?")  # fmt: skip
                except TimeoutError:
                    pass  # the broker waits for MQTT CONNECT: the certificate was accepted
                version = tls.version()
    except ssl.SSLError as e:
        return Check(name, FAIL, f"TLS with {where}: {e.reason or e}",
                     "check the CA file, this unit's certificate and the broker's host name")  # fmt: skip
    except OSError as e:
        why = f"no answer in {timeout:g} s" if isinstance(e, TimeoutError) else str(e.strerror or e)
        return Check(name, FAIL, f"cannot reach {where}: {why}", "check the network, sync.host and sync.port")
    return Check(name, OK, f"{where} reachable, {version} handshake with the client certificate")


def disk(cfg: config_mod.Config) -> Check:
    d = cfg.unit.data_dir
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("/"))
    free_mb = shutil.disk_usage(probe).free / 1e6
    s = cfg.store
    if free_mb < s.min_free_mb:
        return Check("disk", FAIL, f"{free_mb:.0f} MB free at {probe}, below store.min_free_mb {s.min_free_mb:g}: "
                     "no read is stored", "free space (sync to headquarters, then purge) or a larger card")  # fmt: skip
    if free_mb < s.scene_min_free_mb:
        return Check("disk", WARN, f"{free_mb:.0f} MB free at {probe}, below store.scene_min_free_mb "
                     f"{s.scene_min_free_mb:g}: scene images are not stored", "free space")  # fmt: skip
    return Check("disk", OK, f"{free_mb:.0f} MB free at {probe}")


def thermal(cfg: config_mod.Config | None, root: Path) -> Check:
    t = read_thermal(root / "sys")
    if t is None:
        return Check("thermal", OK, "no temperature sensor on this machine")
    warn_c = cfg.health.temp_warn_c if cfg is not None else config_mod.HealthConfig().temp_warn_c
    temp = f"{t.temp_c:.0f} °C ({t.zone})" if t.temp_c is not None else "temperature unknown"
    if "under-voltage" in t.now():
        return Check("thermal", FAIL, f"{temp}; power supply under-voltage now",
                     "use the board's rated supply (Pi 4: 5.1 V 3 A) and a short, thick cable")  # fmt: skip
    if t.now() or (t.temp_c is not None and t.temp_c >= warn_c):
        why = ", ".join(t.now()) or f"at or above health.temp_warn_c {warn_c:g}"
        return Check("thermal", WARN, f"{temp}: {why}", "add a heatsink or fan, shade the enclosure")
    extra = f"; since boot: {', '.join(t.since_boot())}" if t.since_boot() else ""
    return Check("thermal", WARN if t.fault else OK, f"{temp}{extra}" + (f"; {t.fault}" if t.fault else ""))


def units(root: Path, run: Runner = _run) -> list[Check]:
    out = []
    systemd_running = root == Path("/") and Path("/run/systemd/system").is_dir()
    for u in UNITS:
        installed = [root / d / u for d in ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")]
        if not any(p.exists() for p in installed):
            out.append(Check("units", FAIL, f"{u} is not installed", "run scripts/install.sh"))
            continue
        where = [f"--root={root}"] if root != Path("/") else []
        r = run(["systemctl", *where, "is-enabled", u])
        state = r.stdout.strip() if r is not None else "unknown (no systemctl)"
        if state != "enabled":
            out.append(Check("units", WARN, f"{u} is {state or 'not enabled'}", f"systemctl enable {u}"))
            continue
        if not systemd_running:
            out.append(Check("units", OK, f"{u} enabled (systemd is not running here: not started)"))
            continue
        r = run(["systemctl", "is-active", u])
        active = r.stdout.strip() if r is not None else "unknown"
        if active == "active":
            out.append(Check("units", OK, f"{u} enabled and running"))
        elif active == "failed":
            out.append(Check("units", FAIL, f"{u} failed", f"journalctl -b -u {u}"))
        else:
            out.append(Check("units", WARN, f"{u} enabled, {active}", f"systemctl start {u}"))
    return out


# -- all of it -------------------------------------------------------------------------------------------------------


def run_checks(config_path: Path, opts: Options = Options()) -> list[Check]:
    """Every check, in the order a technician fixes things: settings, keys, database, models, devices, network."""
    skip = opts.skip
    out: list[Check] = []
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        out.append(Check("config", FAIL, str(e), f"edit it; check with alpr-edge config validate {config_path}"))
        cfg = None
    if cfg is not None:
        out.append(Check("config", OK, f"{config_path} valid: {len(cfg.cameras)} camera(s), gps {cfg.gps.mode}"))
        out.append(settings_file(config_path))
        out.append(data_dir(cfg, opts.service_user))
        if "keys" not in skip:
            out += keys(cfg, opts.service_user)
        if "database" not in skip:
            out += database(cfg, cfg.hotlist.stale_after_h, skip)
        if "models" not in skip:
            out.append(models(cfg))
        if "cameras" not in skip:
            out += cameras(cfg, opts.timeout_s)
        if "gps" not in skip:
            out.append(gps(cfg, opts.timeout_s))
    if "time" not in skip:
        out.append(time_sync())
    if cfg is not None and "broker" not in skip:
        s, a = cfg.sync, cfg.alerts
        if s.enabled:
            out.append(broker("sync", s.host, s.port, s.ca_file, s.cert_file, s.key_file, opts.timeout_s))
        else:
            out.append(Check("sync", WARN, "sync is disabled: reads must reach headquarters at least every 30 days "
                             "(P9)", "set sync.enabled = true, or transfer by hand"))  # fmt: skip
        if a.mqtt_host:
            out.append(broker("alerts", a.mqtt_host, a.mqtt_port, a.mqtt_ca_file, a.mqtt_cert_file, a.mqtt_key_file,
                              opts.timeout_s))  # fmt: skip
    if cfg is not None and "disk" not in skip:
        out.append(disk(cfg))
    if "thermal" not in skip:
        out.append(thermal(cfg, opts.root))
    if "units" not in skip:
        out += units(opts.root)
    return out


def cmd_doctor(args: argparse.Namespace) -> int:
    opts = Options(root=args.root, timeout_s=args.timeout, skip=frozenset(args.skip or ()))
    checks = run_checks(args.config, opts)
    rc = exit_code(checks)
    if args.json:
        print(json.dumps({"checks": [c.to_json() for c in checks], "exit": rc}))
    else:
        for c in checks:
            print(c.line())
        summary = {0: "all checks passed", 1: "warnings only", 2: "failures: fix the FAIL lines"}[rc]
        print(f"doctor: {summary}", file=sys.stderr)
    return rc


def _timeout(text: str) -> float:
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not 0.1 <= v <= 60:
        raise argparse.ArgumentTypeError("must be 0.1..60 seconds")
    return v


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``alpr-edge doctor`` to the ``alpr-edge`` parser."""
    p = sub.add_parser(
        "doctor",
        help="check this installation and say what to fix (no plate data shown)",
        description="Check the settings, key file permissions, the database (key, integrity, schema), hot list age, "
        "models, cameras, gpsd, time synchronization, the broker (TCP + TLS with the client certificate), free disk "
        "and the systemd units. One line per check: ok, warn or FAIL with what to do. Exit 0 all ok, 1 warnings "
        "only, 2 failures. Run as root: the key files are root-only.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/alpr-edge/edge.toml"),
        help="settings file (default /etc/alpr-edge/edge.toml)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument(
        "--skip", action="append", choices=CHECKS, metavar="CHECK", help=f"leave a check out: {', '.join(CHECKS)}"
    )
    p.add_argument("--timeout", type=_timeout, default=3.0, help="seconds to wait for each connection (default 3)")
    p.add_argument(
        "--root", type=Path, default=Path("/"), help="look for the systemd units in this root (install.sh --root)"
    )
    p.set_defaults(func=cmd_doctor)
