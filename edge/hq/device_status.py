"""The units' status at headquarters: each unit's retained health snapshot (``alpr/<device>/status``, schema
alpr-edge/status/1, made by edge.health.snapshot) checked, then kept as the latest row per device in
``device_status``; and ``alpr-edge hq devices status``.

Every message is hostile until checked: the topic, the size, the schema, the device named against the topic's, a
finite ``at``, the level, and a bounded list of faults whose level is the worst fault. A refused message gives one
log line naming the device and the reason (never the payload) and stores nothing.

The age of a status is taken from the unit's ``at``, not from when headquarters received it: a retained status is
delivered again at every reconnect of headquarters, so a dead unit's last words would otherwise look fresh. For
the same reason an older (or the same) status never replaces a newer one, and one dated more than ``MAX_AHEAD_S``
ahead of headquarters' clock is refused (it would shut out every later status until that time). The document holds
no plate and no position (edge.health), so showing it needs no login, like the device registry.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..store.commands import iso_utc
from ..sync import protocol

MAX_STATUS_BYTES = 64 * 1024
MAX_FAULTS = 64
MAX_CODE = 64
MAX_FAULT_TEXT = 400
MAX_DEPTH = 16
MAX_AHEAD_S = 3600.0  # a unit's clock this far ahead of headquarters' is a fault of its own
LEVELS = ("ok", "warning", "critical")
SEVERITIES = ("warning", "critical")  # edge.health.SEVERITIES (not imported: it pulls in OpenCV)
COUNTERS = ("uptime_s", "fps", "frames", "dropped", "reads")  # kept as columns too, for queries
WHOLE = ("frames", "dropped", "reads")
STALE_HOURS = 1.0


class StatusError(ValueError):
    """A status document refused; ``reason`` names what is wrong, never a value from the payload."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"status from device {device} refused: {reason}")
        self.device, self.reason = device, reason


@dataclass(frozen=True)
class Fault:
    code: str
    severity: str
    text: str


@dataclass(frozen=True)
class DeviceStatus:
    """One checked status document."""

    device: str
    at: float  # the unit's clock, when it took the snapshot
    level: str
    faults: tuple[Fault, ...]
    counters: dict[str, float | int | None]  # COUNTERS; None when absent
    doc: dict[str, Any]  # the whole document, checked for what jsonb can hold


# -- checks -------------------------------------------------------------------------------------------------------


def _topic_device(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "alpr" or parts[2] != "status" or not protocol.DEVICE_RE.match(parts[1]):
        raise StatusError("? (not an alpr/<device>/status topic)", "bad topic")
    return parts[1]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _check_jsonb(v: Any, depth: int = 0) -> None:
    """What PostgreSQL's jsonb holds: finite numbers (1e400 parses as inf), strings without NUL, bounded nesting."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(v, str) and "\x00" in v:
        raise ValueError("a string holds NUL")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("a number is not finite")
    children = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in children:
        _check_jsonb(k, depth + 1)
        _check_jsonb(x, depth + 1)


def _parse(payload: bytes, device: str) -> dict[str, Any]:
    if len(payload) > MAX_STATUS_BYTES:
        raise StatusError(device, f"payload of {len(payload)} bytes, over {MAX_STATUS_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StatusError(device, "not UTF-8") from e
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
        _check_jsonb(doc)
    except RecursionError as e:
        raise StatusError(device, "not JSON we can store (nested too deeply)") from e
    except ValueError as e:  # the messages name a position or a rule, never the content
        raise StatusError(device, f"not JSON we can store ({e.args[0]})") from e
    if not isinstance(doc, dict):
        raise StatusError(device, "not a JSON object")
    return doc


def _fault(device: str, i: int, f: Any) -> Fault:
    if not isinstance(f, dict):
        raise StatusError(device, f"faults[{i}]: not an object")
    for key, limit in (("code", MAX_CODE), ("severity", MAX_CODE), ("text", MAX_FAULT_TEXT)):
        v = f.get(key)
        if not isinstance(v, str) or len(v) > limit:
            raise StatusError(device, f"faults[{i}].{key}: expected a string of at most {limit} characters")
    if f["severity"] not in SEVERITIES:
        raise StatusError(device, f"faults[{i}].severity: not one of {', '.join(SEVERITIES)}")
    return Fault(f["code"], f["severity"], f["text"])


def _faults(device: str, v: Any) -> tuple[Fault, ...]:
    if not isinstance(v, list) or len(v) > MAX_FAULTS:
        raise StatusError(device, f"faults: expected a list of at most {MAX_FAULTS}")
    return tuple(_fault(device, i, f) for i, f in enumerate(v))


def _worst(faults: tuple[Fault, ...]) -> str:
    if any(f.severity == "critical" for f in faults):
        return "critical"
    return "warning" if faults else "ok"


def _counter(device: str, doc: dict[str, Any], key: str) -> float | int | None:
    v = doc.get(key)
    if v is None:
        return None
    whole = key in WHOLE
    if isinstance(v, bool) or not isinstance(v, int if whole else int | float) or not 0 <= v < 2**53:
        raise StatusError(device, f"{key}: expected a {'whole' if whole else 'finite'} number of at least 0")
    return v if whole else float(v)


def decode_status(payload: bytes, topic: str, now: float) -> DeviceStatus:
    """The checked status, or StatusError naming the device (from the topic) and the first fault found."""
    device = _topic_device(topic)
    doc = _parse(payload, device)
    if doc.get("schema") != protocol.STATUS_SCHEMA:
        raise StatusError(device, f"schema: not {protocol.STATUS_SCHEMA}")
    if doc.get("device") != device:
        raise StatusError(device, "device: not the device of the topic")
    at = doc.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 < at <= now + MAX_AHEAD_S:
        raise StatusError(device, f"at: expected a time (epoch seconds) at most {MAX_AHEAD_S:g} s ahead of ours")
    if doc.get("level") not in LEVELS:
        raise StatusError(device, f"level: not one of {', '.join(LEVELS)}")
    faults = _faults(device, doc.get("faults"))
    if doc["level"] != _worst(faults):
        raise StatusError(device, "level: not the worst of its faults")
    counters = {k: _counter(device, doc, k) for k in COUNTERS}
    return DeviceStatus(device, float(at), doc["level"], faults, counters, doc)


# -- storage ------------------------------------------------------------------------------------------------------

_UPSERT = """
INSERT INTO device_status AS s (device_id, status_at, received_at, level, faults, uptime_s, fps, frames, dropped,
                                reads, snapshot)
VALUES (%(device)s, %(at)s, %(now)s, %(level)s, %(faults)s, %(uptime_s)s, %(fps)s, %(frames)s, %(dropped)s,
        %(reads)s, %(doc)s)
ON CONFLICT (device_id) DO UPDATE SET
    status_at = EXCLUDED.status_at, received_at = EXCLUDED.received_at, level = EXCLUDED.level,
    faults = EXCLUDED.faults, uptime_s = EXCLUDED.uptime_s, fps = EXCLUDED.fps, frames = EXCLUDED.frames,
    dropped = EXCLUDED.dropped, reads = EXCLUDED.reads, snapshot = EXCLUDED.snapshot
WHERE s.status_at < EXCLUDED.status_at
"""
# As ingest's registry upsert; "seen" is the unit's time of the status, never later than ours (a retained status
# redelivered today was said when the unit said it).
_REGISTRY = """
INSERT INTO devices AS d (device_id, first_seen, last_seen) VALUES (%(device)s, %(seen)s, %(seen)s)
ON CONFLICT (device_id) DO UPDATE SET last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen)
"""


def store_status(conn: psycopg.Connection, st: DeviceStatus, now: float) -> bool:
    """Keep ``st`` as its device's latest status, with the registry, in one transaction; False (nothing changed)
    when a status as new or newer is already there. ``conn`` in autocommit mode (schema.connect)."""
    faults = [{"code": f.code, "severity": f.severity, "text": f.text} for f in st.faults]
    params = {"device": st.device, "at": st.at, "now": now, "level": st.level, "faults": Jsonb(faults),
              "doc": Jsonb(st.doc), **st.counters}  # fmt: skip
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_UPSERT, params)
        newer = cur.rowcount == 1
        if newer:
            cur.execute(_REGISTRY, {"device": st.device, "seen": min(st.at, now)})
    return newer


def retired_at(conn: psycopg.Connection, device: str) -> float | None:
    """When ``device`` was taken out of service (hq devices retire); None when in service or not registered."""
    row = conn.execute("SELECT retired_at FROM devices WHERE device_id = %s", (device,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


@dataclass(frozen=True)
class StatusRow:
    """A device of the registry with its latest status (None when it never sent one)."""

    device: str
    status_at: float | None
    received_at: float | None
    level: str | None
    faults: tuple[Fault, ...]
    retired_at: float | None = None  # taken out of service (hq devices retire): never NOT REPORTING

    def age_s(self, now: float) -> float | None:
        return None if self.status_at is None else max(0.0, now - self.status_at)

    def not_reporting(self, now: float, stale_hours: float) -> bool:
        age = self.age_s(now)
        return self.retired_at is None and (age is None or age > stale_hours * 3600)


def status_rows(conn: psycopg.Connection, device: str | None = None, *, retired: bool = True) -> list[StatusRow]:
    """Every registered device (or one) with its latest status, by device id; without retired units when
    ``retired`` is False (a unit asked for by name is always shown: hiding it would read as "not registered")."""
    cur = conn.execute(
        "SELECT d.device_id, s.status_at, s.received_at, s.level, s.faults, d.retired_at FROM devices d"
        " LEFT JOIN device_status s USING (device_id)"
        " WHERE (%(dev)s::text IS NULL OR d.device_id = %(dev)s)"
        " AND (%(retired)s OR %(dev)s::text IS NOT NULL OR d.retired_at IS NULL) ORDER BY d.device_id",
        {"dev": device, "retired": retired},
    )
    return [
        StatusRow(d, at, rx, lvl, tuple(Fault(f["code"], f["severity"], f["text"]) for f in faults or ()), ret)
        for d, at, rx, lvl, faults, ret in cur.fetchall()
    ]


# -- alpr-edge hq devices status ----------------------------------------------------------------------------------


def age_text(age_s: float | None) -> str:
    """Like "45s", "12m", "3.2h", "4.0d"; "never" without a status."""
    if age_s is None:
        return "never"
    if age_s < 60:
        return f"{age_s:.0f}s"
    if age_s < 3600:
        return f"{age_s / 60:.0f}m"
    return f"{age_s / 3600:.1f}h" if age_s < 86400 else f"{age_s / 86400:.1f}d"


def _row_json(r: StatusRow, now: float, stale_hours: float) -> dict[str, Any]:
    return {
        "device_id": r.device,
        "level": r.level,
        "status_at": r.status_at,
        "received_at": r.received_at,
        "age_s": None if (age := r.age_s(now)) is None else round(age, 1),
        "not_reporting": r.not_reporting(now, stale_hours),
        "retired": r.retired_at is not None,
        "retired_at": r.retired_at,
        "faults": [{"code": f.code, "severity": f.severity, "text": f.text} for f in r.faults],
    }


def _print_row(r: StatusRow, now: float, stale_hours: float) -> None:
    when = f"status {age_text(r.age_s(now))} ago ({iso_utc(r.status_at)})" if r.status_at else "no status received"
    flag = f"  NOT REPORTING (no status for over {stale_hours:g} h)" if r.not_reporting(now, stale_hours) else ""
    if r.retired_at is not None:
        flag = f"  RETIRED since {iso_utc(r.retired_at)}"
    print(f"{r.device}: {r.level or '-'}, {len(r.faults)} fault(s), {when}{flag}")
    for f in r.faults:
        print(f"  {f.severity:<8} {f.code}: {f.text}")


def cmd_status(args: argparse.Namespace) -> int:
    from .commands import HqError, _connect_db

    now = time.time()
    try:
        with _connect_db(args) as conn:
            rows = status_rows(conn, args.device, retired=getattr(args, "all", False))
    except (HqError, psycopg.Error) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    if args.device is not None and not rows:
        print(f"alpr-edge: no device {args.device!r} in the registry", file=sys.stderr)
        return 2
    for r in rows:
        if getattr(args, "json", False):
            print(json.dumps(_row_json(r, now, args.stale_hours)))
        else:
            _print_row(r, now, args.stale_hours)
    return 0


def _stale_hours(v: str) -> float:
    try:
        h = float(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from e
    if not math.isfinite(h) or h <= 0:
        raise argparse.ArgumentTypeError("must be a number of hours above 0")
    return h


def add_status(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status`` under ``hq devices``."""
    from .commands import add_db_url_arg

    p = dsub.add_parser(
        "status",
        help="each unit's last status: level, faults, age; units not reporting",
        description="The last status each unit published (alpr/<device>/status, taken in by 'hq serve'): its level, "
        "each fault's severity and text, and how long ago the unit took it (by the unit's clock). Units without a "
        "status for longer than --stale-hours, or never, are flagged NOT REPORTING. Retired units ('hq devices "
        "retire') are left out unless --all is given or the unit is named, and are shown as RETIRED, never NOT "
        "REPORTING. The status holds no plate or position, so like the registry it needs no login.",
    )
    p.add_argument("device", nargs="?", default=None, metavar="DEVICE", help="only this unit (default: every unit)")
    p.add_argument(
        "--stale-hours",
        type=_stale_hours,
        default=STALE_HOURS,
        help=f"flag units whose last status is older than this (default {STALE_HOURS:g})",
    )
    # SUPPRESS: given before the action's name (options of 'hq devices'), they are not overwritten by these defaults
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per unit")
    p.add_argument("--all", action="store_true", default=argparse.SUPPRESS, help="retired units too (shown as RETIRED)")
    add_db_url_arg(p, under_devices=True)
    p.set_defaults(func=cmd_status)
