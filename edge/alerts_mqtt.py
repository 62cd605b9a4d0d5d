"""Alerts for the communications center on MQTT (P7): QoS 1 to ``alpr/<unit>/alerts``, one JSON document per alert.

MqttAlertPublisher is an alert sink: calling it only queues the alert (it never blocks the caller). One thread of
its own owns the paho client: it connects (MQTT v5, optional TLS and password), publishes the oldest queued alert,
waits for the broker's PUBACK, and only then takes it off the queue and reports it through ``on_published`` (the
daemon records ``published_at`` in the store). While the broker is unreachable or refuses us, alerts wait in memory
and go out in order after the reconnect, which uses capped, jittered exponential backoff. The queue is bounded:
when it is full the oldest alert is dropped from memory, counted and logged (it is still stored, unpublished).
Durable delivery across restarts, through the store's outbox, is issue 6's job.

Delivery is at least once: if the connection drops after the broker got an alert but before its PUBACK arrived,
the alert is sent again; subscribers deduplicate by its ``uuid``.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import math
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .alerts import Alert
from .store.commands import iso_utc

log = logging.getLogger(__name__)

SCHEMA = "alpr-edge/alert/1"
TOPIC_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # no MQTT wildcards or separators in a topic level
IDLE_POLL_S = 0.25  # idle: how often the network is serviced (keepalive pings, a closed socket)
ACK_POLL_S = 0.05
STABLE_S = 10.0  # a connection that lasted this long resets the backoff even if it published nothing


def alert_topic(unit_id: str) -> str:
    return f"alpr/{unit_id}/alerts"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _round(x: float | None, n: int) -> float | None:
    return None if x is None else round(x, n)


def alert_payload(alert: Alert) -> dict[str, object]:
    """The versioned document published for ``alert`` (schema "alpr-edge/alert/1"); images as base64 JPEG."""
    hit, entry, fix = alert.hit, alert.hit.entry, alert.fix
    position = None
    if fix.source != "none" and fix.lat is not None and fix.lon is not None:
        position = {
            "lat": fix.lat,
            "lon": fix.lon,
            "source": fix.source,
            "fix_age_s": _round(fix.age_s, 3),
            "eph_m": _round(fix.eph_m, 2),
        }
    return {
        "schema": SCHEMA,
        "uuid": alert.uuid,
        "read_uuid": alert.read_uuid,
        "unit": alert.unit_id,
        "camera": alert.camera_id,
        "time": iso_utc(alert.seen_at),
        "raised_at": iso_utc(alert.raised_at),
        "read": {"text": alert.read_text, "confidence": round(alert.read_confidence, 4)},
        "wanted": {
            "plate": entry.plate,
            "state": entry.state,
            "entry_id": entry.entry_id,
            "case_number": entry.case_number,
            "vehicle_description": entry.vehicle_description,
            "expires": iso_utc(entry.expires),
            # a manual entry's P6 details, so dispatch sees why it was entered and by whom ("" for a signed list)
            "entered_by": entry.entered_by,
            "requesting_officer": entry.requesting_officer,
            "synopsis": entry.synopsis,
        },
        "list": {
            "id": alert.list_info.list_id,
            "version": hit.list_version,
            "created": iso_utc(alert.list_info.created),
            "age_s": round(alert.list_age_s, 1),
            "stale": alert.list_stale,
            "code": entry.list_code,
        },
        "reason": entry.reason,
        "instructions": entry.instructions,
        "match": {
            "kind": hit.kind,
            "explanation": hit.explain(),
            "matched_text": hit.matched_text,
            "candidate_rank": hit.candidate_rank,
            "score": round(hit.score, 4),
            "substitutions": [
                {
                    "position": s.position,
                    "read_char": s.read_char,
                    "wanted_char": s.wanted_char,
                    "confidence": round(s.confidence, 4),
                }
                for s in hit.substitutions
            ],
        },
        "position": position,
        "crop_jpeg": _b64(alert.crop_jpeg),
        "scene_jpeg": _b64(alert.scene_jpeg),
    }


def encode_alert(alert: Alert) -> bytes:
    """The payload as compact UTF-8 JSON; ValueError if a number is not finite (never sent as NaN)."""
    return json.dumps(alert_payload(alert), separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class MqttStatus:
    """The publisher's state for the daemon's status line. No plate or position in it."""

    broker: str  # host:port
    topic: str
    connected: bool
    queued: int  # alerts waiting in memory, the one in flight included
    published: int  # acknowledged by the broker
    dropped: int  # oldest alerts dropped from a full queue (stored, never published by this process)
    failed: int  # alerts that could not be encoded (never sent)
    connects: int  # successful connections so far
    last_published_at: float | None  # UTC epoch seconds of the last PUBACK
    fault: str | None  # why alerts are not going out (unreachable, refused, no PUBACK), None when healthy


class MqttConfigError(ValueError):
    """A publisher setting is wrong (port, unit id, TLS files); the message names it."""


def tls_context(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A client TLS context (None when no file is given): the broker is verified against ``ca_file`` (or the
    system's CAs), and ``cert_file``/``key_file`` identify this unit."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if key_file is not None and cert_file is None:
        raise MqttConfigError("mqtt key file given without a certificate file")
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise MqttConfigError(f"mqtt CA file {ca_file}: {e}") from e
    if cert_file is not None:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as e:
            raise MqttConfigError(f"mqtt certificate {cert_file} / key {key_file}: {e}") from e
    return ctx


def new_client(
    client_id: str,
    username: str | None,
    password: str | None,
    tls: ssl.SSLContext | None,
    connect_timeout_s: float,
) -> mqtt.Client:
    """A fresh MQTT v5 paho client (callback API 2). A fresh one per connection: no state carried over."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect_timeout = connect_timeout_s
    if username:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)
    return client


def _close(client: mqtt.Client) -> None:
    try:
        client.disconnect()
    except Exception:  # the socket may already be gone
        log.debug("disconnect of a dead MQTT connection", exc_info=True)


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff capped at ``max_s``, with "equal jitter": uniform in [d/2, d]."""
    d = min(max_s, initial_s * 2 ** min(attempt, 30))
    return rng.uniform(d / 2, d)


class MqttAlertPublisher:
    """An alert sink that publishes on MQTT (QoS 1) from a thread of its own; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        unit_id: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        client_id: str | None = None,
        *,
        on_published: Callable[[str, float], None] | None = None,
        max_queue: int = 1000,
        keepalive_s: int = 30,
        connect_timeout_s: float = 5.0,
        ack_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise MqttConfigError("mqtt host: must not be empty")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise MqttConfigError(f"mqtt port: must be 1..65535, got {port!r}")
        if not isinstance(unit_id, str) or not TOPIC_ID.fullmatch(unit_id):
            raise MqttConfigError("unit id: must be 1..64 characters of A-Z a-z 0-9 _ . : - (it names the topic)")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise MqttConfigError("max_queue: must be a positive integer")
        for name, v in (("connect_timeout_s", connect_timeout_s), ("ack_timeout_s", ack_timeout_s),
                        ("backoff_initial_s", backoff_initial_s), ("backoff_max_s", backoff_max_s)):  # fmt: skip
            if not math.isfinite(v) or v <= 0:
                raise MqttConfigError(f"{name}: must be a positive number of seconds")
        if backoff_max_s < backoff_initial_s:
            raise MqttConfigError("backoff_max_s: must be >= backoff_initial_s")
        if not 5 <= keepalive_s <= 3600:
            raise MqttConfigError("keepalive_s: must be 5..3600")
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.topic = alert_topic(unit_id)
        self.client_id = client_id or f"alpr-edge-{unit_id}-alerts"
        self._username = username
        self._password = password
        self._tls = tls_context(ca_file, cert_file, key_file)
        self._on_published = on_published
        self._max_queue = max_queue
        self._keepalive = keepalive_s
        self._connect_timeout = connect_timeout_s
        self._ack_timeout = ack_timeout_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._clock = clock
        self._rng = random.Random()
        self._cond = threading.Condition()
        self._queue: collections.deque[Alert] = collections.deque()
        self._stop = threading.Event()
        self._drain_until = 0.0
        self._thread: threading.Thread | None = None
        # counters and state, guarded by _cond
        self._connected = False
        self._published = 0
        self._dropped = 0
        self._failed = 0
        self._connects = 0
        self._last_published_at: float | None = None
        self._fault: str | None = None

    # --- the sink side: any thread ---

    def __call__(self, alert: Alert) -> None:
        """Queue ``alert`` for publishing; returns at once."""
        with self._cond:
            if len(self._queue) >= self._max_queue:
                old = self._queue.popleft()
                self._dropped += 1
                log.error(
                    "MQTT alert queue full (%d): dropped the oldest alert %s from memory (stored, not published); "
                    "%d dropped so far",
                    self._max_queue,
                    old.uuid,
                    self._dropped,
                )
            self._queue.append(alert)
            self._cond.notify()

    def status(self) -> MqttStatus:
        with self._cond:
            return MqttStatus(
                broker=f"{self.host}:{self.port}",
                topic=self.topic,
                connected=self._connected,
                queued=len(self._queue),
                published=self._published,
                dropped=self._dropped,
                failed=self._failed,
                connects=self._connects,
                last_published_at=self._last_published_at,
                fault=self._fault,
            )

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MqttAlertPublisher already started")
        self._thread = threading.Thread(target=self._run, name=f"mqtt-alerts-{self.unit_id}", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Stop the thread: while connected, queued alerts get up to ``drain_s`` to go out first."""
        with self._cond:
            self._drain_until = time.monotonic() + max(0.0, drain_s)
            self._stop.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=drain_s + self._connect_timeout + 5.0)
        left = self.status().queued
        if left:
            log.warning("%d alert(s) not published on MQTT at stop (they remain stored)", left)

    def __enter__(self) -> MqttAlertPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the publisher thread ---

    def _fault_is(self, fault: str | None) -> None:
        with self._cond:
            changed = fault != self._fault
            self._fault = fault
        if fault is not None and changed:
            log.warning("MQTT alerts to %s:%s: %s", self.host, self.port, fault)

    def _connected_is(self, connected: bool) -> None:
        with self._cond:
            self._connected = connected
            if connected:
                self._connects += 1
                self._fault = None

    def _run(self) -> None:
        attempt = 0  # connections in a row that failed or went nowhere: drives the backoff
        while not self._stop.is_set():
            try:
                productive = self._attempt()
            except Exception as e:  # a bug or a paho surprise must not end publishing for good
                log.exception("MQTT alert publisher: unexpected error")
                self._fault_is(f"unexpected error: {type(e).__name__}")
                productive = False
            attempt = 0 if productive else attempt + 1
            if self._stop.is_set():
                break
            self._stop.wait(backoff_delay(max(0, attempt - 1), *self._backoff, self._rng))

    def _attempt(self) -> bool:
        """One connection: connect, publish until it ends. Whether it was productive (resets the backoff)."""
        client = self._connect()
        if client is None:
            return False
        try:
            return self._serve(client)
        finally:
            self._connected_is(False)
            _close(client)

    def _connect(self) -> mqtt.Client | None:
        """A connected client, or None with the fault recorded."""
        result: list[ReasonCode] = []

        def on_connect(c: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
            result.append(rc)

        client = new_client(self.client_id, self._username, self._password, self._tls, self._connect_timeout)
        client.on_connect = on_connect
        try:
            client.connect(self.host, self.port, keepalive=self._keepalive, clean_start=True)
        except (OSError, ssl.SSLError, ValueError) as e:  # refused, unreachable, TLS handshake, bad host
            self._fault_is(f"cannot reach broker {self.host}:{self.port}: {e}")
            return None
        deadline = time.monotonic() + self._connect_timeout
        while not result and time.monotonic() < deadline:
            rc = client.loop(0.1)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not result:
                self._fault_is(f"broker {self.host}:{self.port} closed the connection before accepting it")
                _close(client)
                return None
        if not result or result[0].is_failure:
            if result:
                self._fault_is(f"broker {self.host}:{self.port} refused the connection: {result[0]}")
            else:
                self._fault_is(f"broker {self.host}:{self.port} did not answer within {self._connect_timeout}s")
            _close(client)
            return None
        self._connected_is(True)
        log.info("MQTT alerts: connected to %s:%s, topic %s", self.host, self.port, self.topic)
        return client

    def _next(self) -> Alert | None:
        """The oldest queued alert, waiting a little when there is none."""
        with self._cond:
            if not self._queue and not self._stop.is_set():
                self._cond.wait(IDLE_POLL_S)
            return self._queue[0] if self._queue else None

    def _serve(self, client: mqtt.Client) -> bool:
        """Publish queued alerts one at a time until the connection ends or the publisher stops.

        Returns whether the connection was productive (it got a PUBACK, or lasted a while without trouble), which
        resets the backoff."""
        acks: dict[int, ReasonCode] = {}

        def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, p: Properties) -> None:
            acks[mid] = rc

        client.on_publish = on_publish
        started = time.monotonic()
        productive = False
        inflight: tuple[Alert, int, float] | None = None
        while True:
            if self._stop.is_set():
                with self._cond:
                    idle = inflight is None and not self._queue
                if idle or time.monotonic() > self._drain_until:
                    return productive
            if inflight is None:
                alert = self._next()
                if alert is not None:
                    try:
                        payload = encode_alert(alert)
                    except (ValueError, TypeError) as e:
                        self._give_up(alert, e)
                        continue
                    info = client.publish(self.topic, payload, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        self._fault_is(f"connection to {self.host}:{self.port} lost ({mqtt.error_string(info.rc)})")
                        return productive
                    inflight = (alert, info.mid, time.monotonic())
            rc = client.loop(ACK_POLL_S if inflight is not None else 0.0)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._fault_is(f"connection to {self.host}:{self.port} lost ({mqtt.error_string(rc)})")
                return productive or time.monotonic() - started > STABLE_S
            if inflight is None:
                continue
            alert, mid, sent = inflight
            if mid in acks:
                reason = acks.pop(mid)
                inflight = None
                if reason.is_failure:  # e.g. "Not authorized" for the topic: kept, retried after backoff
                    self._fault_is(f"broker refused alert {alert.uuid}: {reason}")
                    return False
                self._acknowledged(alert)
                productive = True
            elif time.monotonic() - sent > self._ack_timeout:
                self._fault_is(f"no PUBACK from {self.host}:{self.port} within {self._ack_timeout}s")
                return False

    def _acknowledged(self, alert: Alert) -> None:
        t = self._clock()
        with self._cond:
            if self._queue and self._queue[0] is alert:  # unless a full queue dropped it meanwhile
                self._queue.popleft()
            self._published += 1
            self._last_published_at = t
            self._fault = None
        log.debug("alert %s acknowledged by %s:%s", alert.uuid, self.host, self.port)
        if self._on_published is not None:
            try:
                self._on_published(alert.uuid, t)
            except Exception:
                log.exception("on_published failed for alert %s", alert.uuid)

    def _give_up(self, alert: Alert, e: Exception) -> None:
        with self._cond:
            if self._queue and self._queue[0] is alert:
                self._queue.popleft()
            self._failed += 1
        log.error("alert %s cannot be encoded for MQTT and is not published: %s", alert.uuid, type(e).__name__)
