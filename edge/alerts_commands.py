"""``alpr-edge alerts list`` (stored hits) and ``alpr-edge alerts watch`` (live alerts from the MQTT broker)."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .access.session import add_login_args
from .alerts import HitRecord, HitStore
from .alerts_mqtt import SCHEMA, TOPIC_ID, alert_topic, new_client, tls_context
from .store.commands import _limit, _parse_time, _store_args, iso_utc
from .store.errors import StoreError

MAX_PAYLOAD = 64 << 20  # an alert with a large scene is a few MB; anything much bigger is not ours
MAX_PASSWORD_FILE = 4096

_ACCESS_NOTE = (
    "Stored alerts are shown only after a login (operator, investigator or administrator), and the hits shown are "
    "recorded in the unit's access record under the user's name; live alerts only to a broker account its ACL allows."
)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _clean(value: object, limit: int = 80) -> str:
    """Text from a message, safe for a terminal: no control or escape characters, bounded length."""
    text = _UNPRINTABLE.sub("?", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "~"


# --- alerts list --------------------------------------------------------------------------------------------


def hit_to_json(h: HitRecord) -> dict[str, object]:
    return {
        "uuid": h.uuid,
        "read_uuid": h.read_uuid,
        "camera": h.camera_id,
        "time": iso_utc(h.seen_at),
        "raised_at": iso_utc(h.created_at),
        "published_at": iso_utc(h.published_at),
        "read": {"text": h.read_text, "confidence": round(h.read_confidence, 4)},
        "wanted": {"plate": h.wanted_plate, "state": h.wanted_state, "entry_id": h.entry_id,
                   "case_number": h.case_number, "entered_by": h.entered_by,
                   "requesting_officer": h.requesting_officer, "synopsis": h.synopsis},
        "list": {"id": h.list_id, "version": h.list_version, "age_s": round(h.list_age_s, 1), "stale": h.list_stale,
                 "code": h.list_code},
        "reason": h.reason,
        "instructions": h.instructions,
        "match": {"kind": h.match_kind, "explanation": h.explanation, "matched_text": h.matched_text,
                  "candidate_rank": h.candidate_rank, "score": round(h.score, 4),
                  "substitutions": [{"position": s.position, "read_char": s.read_char, "wanted_char": s.wanted_char,
                                     "confidence": round(s.confidence, 4)} for s in h.substitutions]},
        "last_outcome": h.last_outcome,
    }  # fmt: skip


def format_hits(hits: list[HitRecord]) -> str:
    header = (
        f"{'RAISED (UTC)':<24}  {'CAMERA':<12}  {'READ':<10}  {'WANTED':<10}  {'LIST':<18}  {'CODE':<16}  "
        f"{'MATCH':<10}  {'PUBLISHED':<9}  OUTCOME"
    )
    lines = [header]
    for h in hits:
        lst = f"{h.list_id} v{h.list_version}" + (" STALE" if h.list_stale else "")
        lines.append(
            f"{iso_utc(h.created_at):<24}  {_clean(h.camera_id, 12):<12}  {h.read_text:<10}  "
            f"{_clean(h.wanted_plate, 10):<10}  {_clean(lst, 18):<18}  {_clean(h.list_code, 16):<16}  "
            f"{_clean(h.match_kind, 10):<10}  {'yes' if h.published_at is not None else 'no':<9}  "
            f"{h.last_outcome or '-'}"
        )
    return "\n".join(lines)


def cmd_alerts_list(args: argparse.Namespace) -> int:
    from .access.audit import AuditError
    from .access.session import cli_login, open_unit, record_viewed

    conn = None
    try:
        conn, audit = open_unit(args)
        session = cli_login(args, conn, audit, "hits.view")
        hits = HitStore(conn).list_hits(limit=args.limit, since=args.since)
        record_viewed(session, "hits.view", "hit_uuids", [h.uuid for h in hits])  # before anything is shown
    except (PermissionError, AuditError, StoreError, ValueError) as e:  # AuthError, AccessDenied; KeyFileError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()
    if args.json:
        for h in hits:
            print(json.dumps(hit_to_json(h)))
    else:
        print(format_hits(hits))
        if not hits:
            print("(no alerts)")
    return 0


# --- alerts watch -------------------------------------------------------------------------------------------


class BadMessageError(ValueError):
    """A message on an alert topic that is not an alert of our schema (the message says why)."""


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadMessageError(f"{where}{key}: missing or of the wrong type")
    return value


def parse_alert(payload: bytes) -> dict[str, Any]:
    """An alert document from the broker, checked: its schema, the fields the watch line shows, decodable images.

    The images are replaced by their sizes in bytes (``crop_bytes``, ``scene_bytes``). Raises BadMessageError."""
    if len(payload) > MAX_PAYLOAD:
        raise BadMessageError(f"{len(payload)} bytes, more than {MAX_PAYLOAD}")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadMessageError(f"not JSON ({type(e).__name__})") from e
    if not isinstance(doc, dict):
        raise BadMessageError("not a JSON object")
    if doc.get("schema") != SCHEMA:
        raise BadMessageError(f"schema is not {SCHEMA}")
    for key in ("uuid", "read_uuid", "unit", "camera", "time", "reason", "instructions"):
        _field(doc, key, str)
    read = _field(doc, "read", dict)
    _field(read, "text", str, "read.")
    _field(read, "confidence", (int, float), "read.")
    _field(_field(doc, "wanted", dict), "plate", str, "wanted.")
    lst = _field(doc, "list", dict)
    for key in ("id", "code"):
        _field(lst, key, str, "list.")
    _field(lst, "version", int, "list.")
    _field(lst, "age_s", (int, float), "list.")
    _field(lst, "stale", bool, "list.")
    match = _field(doc, "match", dict)
    _field(match, "kind", str, "match.")
    _field(match, "explanation", str, "match.")
    if doc.get("position") is not None:
        _field(doc, "position", dict)
    out = dict(doc)
    for key in ("crop_jpeg", "scene_jpeg"):
        b64 = out.pop(key, None)
        if b64 is None and key == "scene_jpeg":
            out["scene_bytes"] = None
            continue
        if not isinstance(b64, str):
            raise BadMessageError(f"{key}: missing or not base64 text")
        try:
            jpeg = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadMessageError(f"{key}: not base64") from e
        if not jpeg.startswith(b"\xff\xd8"):
            raise BadMessageError(f"{key}: not a JPEG")
        out[key.replace("_jpeg", "_bytes")] = len(jpeg)
    return out


def format_alert(doc: dict[str, Any]) -> str:
    """One line for a watching dispatcher (no images, no position: those are in --json and on the alert page)."""
    read, lst, match = doc["read"], doc["list"], doc["match"]
    age_h = lst["age_s"] / 3600
    parts = [
        _clean(doc["time"], 30),
        _clean(doc["unit"], 32),
        _clean(doc["camera"], 32),
        f"read {_clean(read['text'], 16)} ({read['confidence']:.2f})",
        f"wanted {_clean(doc['wanted']['plate'], 16)}",
        _clean(lst["code"], 24),
        f"{_clean(lst['id'], 32)} v{lst['version']} {age_h:.1f}h" + (" HOT LIST STALE" if lst["stale"] else ""),
        _clean(match["kind"], 16),
        f"reason: {_clean(doc['reason'])}",
    ]
    if doc["instructions"]:
        parts.append(f"instructions: {_clean(doc['instructions'])}")
    synopsis = doc["wanted"].get("synopsis")  # a manual entry's (P6); absent from older units' alerts
    if isinstance(synopsis, str) and synopsis:
        parts.append(f"synopsis: {_clean(synopsis, 160)}")
    parts.append(_clean(doc["uuid"], 36))
    return "  ".join(parts)


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PASSWORD_FILE + 1)
    except OSError as e:
        raise ValueError(f"password file {path}: {e.strerror}") from e
    if len(raw) > MAX_PASSWORD_FILE:
        raise ValueError(f"password file {path}: longer than {MAX_PASSWORD_FILE} bytes")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"password file {path}: not UTF-8 text") from e


class _Watch:
    """The state of one ``alerts watch``: callbacks from the paho client, run in the command's own loop."""

    def __init__(self, topic: str, as_json: bool, count: int | None) -> None:
        self.topic = topic
        self.as_json = as_json
        self.count = count
        self.seen = 0
        self.done = False
        self.error: str | None = None
        self.subscribed = False

    def on_connect(self, c: mqtt.Client, u: Any, f: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
        if rc.is_failure:
            self.error = f"the broker refused the connection: {rc}"
            self.done = True
            return
        c.subscribe(self.topic, qos=1)

    def on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode], p: Properties | None) -> None:
        if not rcs or rcs[0].is_failure:
            self.error = f"the broker refused the subscription to {self.topic}: {rcs[0] if rcs else '?'}"
            self.done = True
            return
        if not self.subscribed:
            print(f"watching {self.topic}", file=sys.stderr, flush=True)
        self.subscribed = True

    def on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = parse_alert(bytes(msg.payload))
        except BadMessageError as e:
            print(f"alpr-edge: ignored a message on {_clean(msg.topic)}: {e}", file=sys.stderr, flush=True)
            return
        if self.as_json:
            print(json.dumps(doc), flush=True)
        else:
            print(format_alert(doc), flush=True)
        self.seen += 1
        if self.count is not None and self.seen >= self.count:
            self.done = True


def cmd_alerts_watch(args: argparse.Namespace) -> int:
    try:
        password = _read_password(args.password_file)
        tls = tls_context(args.ca_file, args.cert_file, args.key_file)
    except ValueError as e:  # MqttConfigError is a ValueError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    topic = alert_topic(args.unit)
    w = _Watch(topic, args.json, args.count)
    client = new_client(f"alpr-edge-watch-{uuid.uuid4().hex[:12]}", args.username, password, tls, 5.0)
    client.on_connect = w.on_connect
    client.on_subscribe = w.on_subscribe
    client.on_message = w.on_message
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    delay = 1.0
    try:
        try:
            client.connect(args.host, args.port, keepalive=30)
        except (OSError, ValueError) as e:
            print(f"alpr-edge: cannot reach broker {args.host}:{args.port}: {e}", file=sys.stderr)
            return 2
        while not w.done and (deadline is None or time.monotonic() < deadline):
            if client.loop(0.5) == MQTTErrorCode.MQTT_ERR_SUCCESS:
                continue
            if w.done:
                break
            print(f"alpr-edge: connection to {args.host}:{args.port} lost; retrying", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(30.0, delay * 2)
            try:
                if client.reconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    delay = 1.0
            except (OSError, ValueError) as e:
                print(f"alpr-edge: reconnect failed: {e}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
    if w.error is not None:
        print(f"alpr-edge: {w.error}", file=sys.stderr)
        return 2
    return 0


def _unit(text: str) -> str:
    if text != "+" and not TOPIC_ID.fullmatch(text):
        raise argparse.ArgumentTypeError("a unit id (A-Z a-z 0-9 _ . : -) or + for every unit")
    return text


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not 0 < x < 1e7:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return x


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from e
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError("must be 1..65535")
    return n


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``alerts`` command to the ``alpr-edge`` parser."""
    alerts = sub.add_parser(
        "alerts",
        help="stored hot list alerts, and live alerts from the MQTT broker",
        description=f"Hot list alerts: the hits stored on this unit, or live alerts as the communications center "
        f"receives them. {_ACCESS_NOTE}",
    )
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION", help="what to do")
    lst = alerts_sub.add_parser(
        "list",
        help="list stored alerts (hits), newest first",
        description=f"List the hits stored in the encrypted database, newest first: when raised, camera, read, "
        f"wanted plate, list and version (STALE when older than the freshness limit), list code, how it matched, "
        f"whether the broker acknowledged it, and the last outcome an officer recorded. {_ACCESS_NOTE}",
    )
    lst.add_argument("--limit", type=_limit, default=50, help="at most this many alerts (default 50)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    lst.add_argument("--since", type=_parse_time, default=None, help="only alerts raised at or after this ISO time")
    add_login_args(lst)
    _store_args(lst, db=True)
    lst.set_defaults(func=cmd_alerts_list)

    watch = alerts_sub.add_parser(
        "watch",
        help="print live alerts from the MQTT broker, one line each",
        description=f"Subscribe to alpr/<unit>/alerts (QoS 1) and print one line per alert, without images; "
        f"--json prints the whole alert document with the images replaced by their sizes. Malformed messages "
        f"are reported on stderr and skipped. {_ACCESS_NOTE}",
    )
    watch.add_argument("--host", required=True, help="the MQTT broker's host name or address")
    watch.add_argument("--port", type=_port, default=8883, help="the broker's port (default 8883)")
    watch.add_argument("--username", default=None, help="broker user name")
    watch.add_argument(
        "--password-file", type=Path, default=None, help="file holding the broker password (never on the command line)"
    )
    watch.add_argument("--ca-file", type=Path, default=None, help="CA certificate to verify the broker (enables TLS)")
    watch.add_argument("--cert-file", type=Path, default=None, help="client certificate (TLS)")
    watch.add_argument("--key-file", type=Path, default=None, help="client key (TLS)")
    watch.add_argument("--unit", type=_unit, default="+", help="the unit id to watch, or + for all units (default)")
    watch.add_argument("--json", action="store_true", help="one JSON object per line instead of a summary line")
    watch.add_argument("--count", type=_limit, default=None, help="exit after this many alerts")
    watch.add_argument("--timeout", type=_positive, default=None, help="exit after this many seconds")
    watch.set_defaults(func=cmd_alerts_watch)
