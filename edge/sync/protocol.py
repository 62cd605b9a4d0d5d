"""The unit <-> headquarters protocol over MQTT v5, shared by both ends: topics, message schemas, validation.

Every message is a JSON document with a ``schema`` naming its type and version. A receiver validates the whole
document (types, sizes, UUIDs, the device id against the topic) before it touches any store, and rejects what it
does not understand with a clear reason, so that a malformed, oversized or wrong-schema payload changes nothing.

Topics (``<device>`` is the unit's id, which is also the CN of its client certificate; the broker's ACL lets a
device publish only under its own id):

    alpr/<device>/up            unit -> HQ   Batch: reads, hits, outcomes, holds and releases, audit entries or
                                             images (QoS 1)
    alpr/<device>/ack           HQ -> unit   Ack of one batch: which items were stored (QoS 1)
    alpr/<device>/status        unit -> HQ   Status (retained)
    alpr/<device>/alerts        unit -> HQ   alerts (edge/alerts_mqtt.py, schema alpr-edge/alert/1)
    alpr/fleet/<agency>/hotlist/<list_id>    HQ -> units   a signed hot list bundle (retained, binary)
    alpr/<device>/hotlist/<list_id>          HQ -> one unit  a signed hot list bundle (retained, binary)

Headquarters ingests with a shared subscription (``$share/<group>/alpr/+/up``) so that any number of workers split
the load; nothing here assumes a single worker. Every item carries a UUID, so a redelivered batch is harmless:
HQ inserts idempotently and acknowledges again, and the unit marks items sent only on HQ's acknowledgement (never
on PUBACK alone).
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from typing import Any

BATCH_SCHEMA = "alpr-edge/batch/1"
ACK_SCHEMA = "alpr-edge/ack/1"
STATUS_SCHEMA = "alpr-edge/status/1"

# In upload priority order: hits and outcomes first, then evidence holds and releases (small, and they keep reads
# from headquarters' purge), the access record, reads, images.
KINDS = ("hit", "outcome", "hold", "audit", "read", "image")
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # broker and receivers refuse larger payloads
MAX_ITEMS = 5000
MAX_IMAGE_BYTES = 4 * 1024 * 1024
DEVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # the same rule as unit.id in the config
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHARED_GROUP = "ingest"


class ProtocolError(ValueError):
    """A message that must be rejected; the text says what was wrong (never its plate text)."""


# -- topics -----------------------------------------------------------------------------------------------------


def up_topic(device: str) -> str:
    return f"alpr/{check_device(device)}/up"


def ack_topic(device: str) -> str:
    return f"alpr/{check_device(device)}/ack"


def status_topic(device: str) -> str:
    return f"alpr/{check_device(device)}/status"


def fleet_hotlist_topic(agency: str, list_id: str) -> str:
    return f"alpr/fleet/{check_device(agency)}/hotlist/{list_id}"


def device_hotlist_topic(device: str, list_id: str) -> str:
    return f"alpr/{check_device(device)}/hotlist/{list_id}"


def ingest_subscription(group: str = SHARED_GROUP) -> str:
    return f"$share/{group}/alpr/+/up"


def device_of(topic: str) -> str:
    """The device id in ``alpr/<device>/...``; ProtocolError when the topic is not ours."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != "alpr":
        raise ProtocolError(f"topic {topic!r} is not an alpr/<device>/... topic")
    return check_device(parts[1])


def check_device(device: str) -> str:
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise ProtocolError("device id: lower-case letters, digits, - and _, at most 32")
    return device


# -- messages ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One record to upload. ``data`` is the record as a JSON object; for kind "image" it holds read_uuid, kind
    ("crop" or "scene") and the JPEG as ``jpeg`` bytes (base64 on the wire)."""

    kind: str
    uuid: str  # the record's own UUID (for an image: a UUID derived from the read's UUID and the image kind)
    data: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    device: str
    batch_id: str  # UUID
    created: float  # UTC epoch seconds
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Rejected:
    uuid: str
    reason: str


@dataclass(frozen=True)
class Ack:
    device: str
    batch_id: str
    stored: tuple[str, ...]  # UUIDs now safely at HQ (newly inserted or already there)
    rejected: tuple[Rejected, ...]  # items HQ will never accept (the unit stops resending them and reports them)
    at: float


def check_uuid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not UUID_RE.match(value):
        raise ProtocolError(f"{what}: not a lower-case UUID")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{what}: not a finite number")
    return float(value)


def _load(payload: bytes, schema: str) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError("payload: not bytes")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"payload: {len(payload)} bytes, over the {MAX_MESSAGE_BYTES} limit")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError(f"payload: not JSON ({type(e).__name__})") from e
    if not isinstance(doc, dict):
        raise ProtocolError("payload: not a JSON object")
    if doc.get("schema") != schema:
        got = doc.get("schema")
        raise ProtocolError(f"schema: expected {schema!r}, got {got if isinstance(got, str) else type(got).__name__!r}")
    return doc


def encode_batch(batch: Batch) -> bytes:
    items = []
    for it in batch.items:
        data = dict(it.data)
        if it.kind == "image":
            data["jpeg"] = base64.b64encode(data["jpeg"]).decode("ascii")
        items.append({"kind": it.kind, "uuid": it.uuid, "data": data})
    doc = {
        "schema": BATCH_SCHEMA,
        "device": batch.device,
        "batch_id": batch.batch_id,
        "created": batch.created,
        "items": items,
    }
    out = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(out) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"batch {batch.batch_id}: {len(out)} bytes, over the {MAX_MESSAGE_BYTES} limit")
    return out


def decode_batch(payload: bytes, topic: str) -> Batch:
    """Validate a batch as HQ receives it; the device in the document must be the one in the topic."""
    doc = _load(payload, BATCH_SCHEMA)
    device = device_of(topic)
    if doc.get("device") != device:
        raise ProtocolError("device: the batch names another device than its topic")
    batch_id = check_uuid(doc.get("batch_id"), "batch_id")
    created = _number(doc.get("created"), "created")
    raw = doc.get("items")
    if not isinstance(raw, list) or not raw:
        raise ProtocolError("items: expected a non-empty list")
    if len(raw) > MAX_ITEMS:
        raise ProtocolError(f"items: {len(raw)}, over the {MAX_ITEMS} limit")
    items = []
    for i, it in enumerate(raw):
        if not isinstance(it, dict) or set(it) != {"kind", "uuid", "data"}:
            raise ProtocolError(f"items[{i}]: expected kind, uuid and data")
        kind = it["kind"]
        if kind not in KINDS:
            raise ProtocolError(f"items[{i}].kind: {kind!r} is not one of {', '.join(KINDS)}")
        uid = check_uuid(it["uuid"], f"items[{i}].uuid")
        data = it["data"]
        if not isinstance(data, dict):
            raise ProtocolError(f"items[{i}].data: expected an object")
        if kind == "image":
            data = dict(data)
            try:
                jpeg = base64.b64decode(data.get("jpeg", ""), validate=True)
            except (ValueError, TypeError) as e:
                raise ProtocolError(f"items[{i}].data.jpeg: not base64") from e
            if not jpeg.startswith(b"\xff\xd8") or len(jpeg) > MAX_IMAGE_BYTES:
                raise ProtocolError(f"items[{i}].data.jpeg: not a JPEG of at most {MAX_IMAGE_BYTES} bytes")
            check_uuid(data.get("read_uuid"), f"items[{i}].data.read_uuid")
            if data.get("kind") not in ("crop", "scene"):
                raise ProtocolError(f"items[{i}].data.kind: expected crop or scene")
            data["jpeg"] = jpeg
        items.append(Item(kind, uid, data))
    return Batch(device, batch_id, created, tuple(items))


def encode_ack(ack: Ack) -> bytes:
    doc = {
        "schema": ACK_SCHEMA,
        "device": ack.device,
        "batch_id": ack.batch_id,
        "stored": list(ack.stored),
        "rejected": [{"uuid": r.uuid, "reason": r.reason} for r in ack.rejected],
        "at": ack.at,
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_ack(payload: bytes, topic: str) -> Ack:
    """Validate an acknowledgement as the unit receives it (on its own ack topic)."""
    doc = _load(payload, ACK_SCHEMA)
    device = device_of(topic)
    if doc.get("device") != device:
        raise ProtocolError("device: the ack names another device than its topic")
    stored = doc.get("stored")
    rejected = doc.get("rejected")
    if not isinstance(stored, list) or not isinstance(rejected, list):
        raise ProtocolError("stored/rejected: expected lists")
    rej = []
    for i, r in enumerate(rejected):
        if not isinstance(r, dict) or not isinstance(r.get("reason"), str):
            raise ProtocolError(f"rejected[{i}]: expected uuid and reason")
        rej.append(Rejected(check_uuid(r.get("uuid"), f"rejected[{i}].uuid"), r["reason"][:500]))
    return Ack(
        device=device,
        batch_id=check_uuid(doc.get("batch_id"), "batch_id"),
        stored=tuple(check_uuid(u, f"stored[{i}]") for i, u in enumerate(stored)),
        rejected=tuple(rej),
        at=_number(doc.get("at"), "at"),
    )


def image_uuid(read_uuid: str, kind: str) -> str:
    """A stable UUID for a read's crop or scene image, so that its redelivery is recognised too."""
    import uuid

    return str(uuid.uuid5(uuid.UUID(check_uuid(read_uuid, "read_uuid")), f"image/{kind}"))
