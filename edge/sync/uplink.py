"""The uplink: one thread that sends the outbox to headquarters over MQTT v5 and applies HQ's acknowledgements.

It owns a paho client (TLS with this unit's client certificate, a persistent session so that acks and hot list
bundles published while the unit is away wait at the broker) and loops: build the next batch from the outbox,
publish it (QoS 1), wait for HQ's ack of that batch (``ack_timeout_s``; then the unacknowledged items go again in
a new batch, which HQ stores idempotently), mark exactly the acknowledged items sent. A PUBACK only tells that the
broker has the batch, never that HQ stored it. While the broker is unreachable nothing is lost: the outbox is the
store itself. Reconnects use capped, jittered backoff; a bandwidth cap (token bucket, bytes/s) paces uploads on
cellular links. Retained hot list bundles for this unit (and its agency's fleet) go to ``on_hotlist_bundle``.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..alerts_mqtt import backoff_delay, new_client, tls_context
from ..config import SyncConfig
from ..store.db import Connection, open_db
from ..store.errors import StoreError
from ..store.migrations import migrate
from .outbox import Outbox
from .protocol import (
    KINDS,
    Ack,
    ProtocolError,
    ack_topic,
    check_device,
    decode_ack,
    encode_batch,
    status_topic,
    up_topic,
)

log = logging.getLogger(__name__)

DAY = 86400.0
SESSION_EXPIRY_S = 30 * 86400  # the broker keeps our subscriptions and queued acks for as long as P9 allows away
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 60
POLL_S = 0.05
IDLE_CHECK_S = 1.0  # how often an idle uplink looks for new rows
STATUS_REFRESH_S = 2.0
STATUS_PUBLISH_S = 60.0  # the unit's health snapshot (edge.health) on alpr/<device>/status, retained
ACK_REFRESH_S = 0.3
STABLE_S = 10.0
BACKOFF = (0.5, 60.0)
Level = Literal["ok", "warn", "critical"]


@dataclass(frozen=True)
class UplinkStatus:
    """The uplink's state for the daemon's status line and ``alpr-edge sync status``; no plate or position."""

    connected: bool
    pending: dict[str, int]  # unacknowledged items by kind (protocol.KINDS)
    last_ack_at: float | None  # UTC epoch seconds of HQ's last acknowledgement
    last_complete_sync: float | None  # the last ack after which nothing was left to send
    days_since_sync: float | None
    level: Level  # P9: "warn" after warn_after_days, "critical" after critical_after_days
    fault: str | None


def sync_level(
    now: float,
    last_complete_sync: float | None,
    oldest_pending: float | None,
    pending_total: int,
    warn_after_days: float,
    critical_after_days: float,
) -> tuple[float | None, Level]:
    """(days since the last complete sync, level). P9 is about data waiting in the vehicle: with nothing pending
    the level is "ok"; otherwise the age counts from the last complete sync, or, if there never was one, from the
    oldest item waiting."""
    since = last_complete_sync if last_complete_sync is not None else oldest_pending
    days = None if since is None else max(0.0, (now - since) / DAY)
    if pending_total == 0 or days is None:
        return days, "ok"
    if days >= critical_after_days:
        return days, "critical"
    if days >= warn_after_days:
        return days, "warn"
    return days, "ok"


class TokenBucket:
    """Bytes per second with a burst of one second's worth; a message larger than the bucket waits for a full
    bucket and then leaves it in debt, so the average rate holds for any message size."""

    def __init__(self, bytes_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = bytes_per_s
        self.capacity = max(bytes_per_s, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def _fill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_s(self, n: int) -> float:
        """Seconds until ``n`` bytes may go (0 when now)."""
        self._fill()
        need = min(float(n), self.capacity)
        return 0.0 if self._tokens >= need else (need - self._tokens) / self.rate

    def take(self, n: int) -> None:
        self._fill()
        self._tokens -= n


class Uplink:
    """The sync worker; see the module docstring. ``start()``, ``join()``, ``status()``; stops on ``stop``."""

    def __init__(
        self,
        db_path: Path,
        key: bytes,
        cfg: SyncConfig,
        device_id: str,
        stop: threading.Event,
        on_hotlist_bundle: Callable[[bytes, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        on_config: Callable[[bytes, str], object] | None = None,
        config_topics: Sequence[str] = (),
        status_payload: Callable[[], bytes | None] | None = None,
        status_interval_s: float = STATUS_PUBLISH_S,
    ) -> None:
        if not cfg.host:
            raise ValueError("sync.host: required")
        self.db_path = Path(db_path)
        self._key = key
        self.cfg = cfg
        self.device_id = check_device(device_id)
        self._stop = stop
        self._on_bundle = on_hotlist_bundle
        self._status_payload = status_payload
        self.status_interval_s = status_interval_s
        self.status_topic = status_topic(device_id)
        self._on_config = on_config
        self.config_topics = list(config_topics) if on_config is not None else []
        self._clock = clock
        self._tls = tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file)
        self.client_id = f"alpr-edge-{device_id}-sync"
        self.up_topic = up_topic(device_id)
        self.ack_topic = ack_topic(device_id)
        self.hotlist_topics = [f"alpr/{device_id}/hotlist/+"]
        if cfg.agency:
            self.hotlist_topics.append(f"alpr/fleet/{check_device(cfg.agency)}/hotlist/+")
        self._rng = random.Random()
        self._bucket = TokenBucket(cfg.bandwidth_kbps * 1000 / 8) if cfg.bandwidth_kbps > 0 else None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # guarded by _lock: what status() reports
        self._connected = False
        self._pending: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._oldest: float | None = None
        self._last_ack: float | None = None
        self._last_complete: float | None = None
        self._fault: str | None = "not started"
        self.batches_sent = 0  # for tests and benchmarks: publishes, resends included
        self.bytes_sent = 0

    # --- any thread ---

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Uplink already started")
        self._thread = threading.Thread(target=self._run, name=f"sync-uplink-{self.device_id}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> UplinkStatus:
        with self._lock:
            pending = dict(self._pending)
            days, level = sync_level(
                self._clock(),
                self._last_complete,
                self._oldest,
                sum(pending.values()),
                self.cfg.warn_after_days,
                self.cfg.critical_after_days,
            )
            return UplinkStatus(
                connected=self._connected,
                pending=pending,
                last_ack_at=self._last_ack,
                last_complete_sync=self._last_complete,
                days_since_sync=days,
                level=level,
                fault=self._fault,
            )

    # --- the uplink thread ---

    def _fault_is(self, fault: str | None) -> None:
        with self._lock:
            changed = fault != self._fault
            self._fault = fault
        if fault is not None and changed:
            log.warning("sync to %s:%s: %s", self.cfg.host, self.cfg.port, fault)

    def _refresh(self, outbox: Outbox) -> None:
        pending, oldest = outbox.pending(), outbox.oldest_pending()
        last_ack, complete = outbox.last_ack(), outbox.last_complete_sync()
        with self._lock:
            self._pending, self._oldest, self._last_ack, self._last_complete = pending, oldest, last_ack, complete

    def _run(self) -> None:
        conn: Connection | None = None
        while conn is None and not self._stop.is_set():
            try:
                conn = open_db(self.db_path, self._key, create=False)
                migrate(conn)
            except StoreError as e:
                if conn is not None:
                    conn.close()
                    conn = None
                self._fault_is(f"cannot open the outbox: {e}")
                self._stop.wait(5.0)
        if conn is None:
            return
        try:
            outbox = Outbox(conn, self.device_id, self._clock)
            self._loop(outbox)
        finally:
            conn.close()

    def _loop(self, outbox: Outbox) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._refresh(outbox)
                productive = self._attempt(outbox)
            except Exception as e:  # a bug, a paho surprise or a store error must not end syncing for good
                log.exception("sync uplink: unexpected error")
                self._fault_is(f"unexpected error: {type(e).__name__}: {e}")
                productive = False
            attempt = 0 if productive else attempt + 1
            if self._stop.is_set():
                break
            self._stop.wait(backoff_delay(max(0, attempt - 1), *BACKOFF, self._rng))

    def _attempt(self, outbox: Outbox) -> bool:
        acks: list[Ack] = []
        client = self._connect(acks)
        if client is None:
            return False
        try:
            return self._serve(client, outbox, acks)
        finally:
            with self._lock:
                self._connected = False
            try:
                client.disconnect()
            except Exception:
                log.debug("disconnect of a dead MQTT connection", exc_info=True)

    def _on_message(self, acks: list[Ack]) -> Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]:
        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            if msg.topic == self.ack_topic:
                try:
                    acks.append(decode_ack(bytes(msg.payload), msg.topic))
                except ProtocolError as e:
                    log.warning("invalid acknowledgement on %s ignored: %s", msg.topic, e)
                return
            if msg.topic in self.config_topics and self._on_config is not None:
                try:
                    self._on_config(bytes(msg.payload), msg.topic)
                except Exception:
                    log.exception("settings handler failed for %s", msg.topic)
                return
            if self._on_bundle is None:
                return
            try:
                self._on_bundle(bytes(msg.payload), msg.topic)
            except Exception:
                log.exception("hot list bundle handler failed for %s", msg.topic)

        return on_message

    def _connect(self, acks: list[Ack]) -> mqtt.Client | None:
        result: list[ReasonCode] = []
        subscribed: list[int] = []

        def on_connect(c: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
            result.append(rc)
            if not rc.is_failure:
                topics = [(self.ack_topic, 1), *((t, 1) for t in (*self.hotlist_topics, *self.config_topics))]
                c.subscribe(topics)

        def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode], p: Properties | None) -> None:
            subscribed.append(mid)

        client = new_client(self.client_id, None, None, self._tls, CONNECT_TIMEOUT_S)
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = self._on_message(acks)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        where = f"{self.cfg.host}:{self.cfg.port}"
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=KEEPALIVE_S, clean_start=False, properties=props)
        except (OSError, ssl.SSLError, ValueError) as e:
            self._fault_is(f"cannot reach broker {where}: {e}")
            return None
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        closed = False
        while not (result and (subscribed or result[0].is_failure)) and time.monotonic() < deadline:
            if self._stop.is_set():
                break
            if client.loop(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                closed = True
                break
        if not result or result[0].is_failure or not subscribed:
            if result and result[0].is_failure:
                why = f"refused the connection: {result[0]}"
            elif closed:  # e.g. TLS: the broker does not trust our client certificate
                why = "closed the connection before accepting it (is this unit's certificate trusted?)"
            else:
                why = f"did not accept the connection and subscriptions within {CONNECT_TIMEOUT_S:.0f}s"
            self._fault_is(f"broker {where} {why}")
            try:
                client.disconnect()
            except Exception:
                log.debug("disconnect after a failed connect", exc_info=True)
            return None
        with self._lock:
            self._connected = True
            self._fault = None
        log.info("sync: connected to %s, publishing on %s", where, self.up_topic)
        return client

    def _serve(self, client: mqtt.Client, outbox: Outbox, acks: list[Ack]) -> bool:
        """Send batches until the connection ends or the uplink stops; whether it was productive."""
        pubacks: dict[int, ReasonCode] = {}

        status_mids: set[int] = set()  # health snapshots: their PUBACKs are not batches'

        def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, p: Properties) -> None:
            if mid in status_mids:
                status_mids.discard(mid)
            else:
                pubacks[mid] = rc

        client.on_publish = on_publish
        next_status = 0.0
        started = time.monotonic()
        productive = False
        inflight: tuple[str, int, float] | None = None  # batch id, mid, when published
        next_look = 0.0
        next_refresh = time.monotonic() + STATUS_REFRESH_S
        max_bytes = self.cfg.batch_max_kb * 1024
        max_items = self.cfg.batch_max_items  # halved after a batch that could not be encoded, until the next ack
        while not self._stop.is_set():
            now = time.monotonic()
            if self._status_payload is not None and now >= next_status:
                next_status = now + self.status_interval_s
                status = self._status_payload()
                if status is not None:
                    info = client.publish(self.status_topic, status, qos=1, retain=True)
                    if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                        status_mids.add(info.mid)
            if inflight is None and now >= next_look:
                batch = outbox.next_batch(max_items, max_bytes)
                if batch is None:
                    next_look = now + IDLE_CHECK_S
                else:
                    try:
                        payload = encode_batch(batch)
                    except (ValueError, TypeError) as e:  # ProtocolError (too large) is a ValueError
                        bad = outbox.refuse_unencodable(batch)
                        log.error("sync: batch of %d items cannot be encoded (%s); %d refused, the rest again in "
                                  "smaller batches", len(batch.items), e, bad)  # fmt: skip
                        max_items = max(1, len(batch.items) // 2)
                        continue
                    if not self._pace(client, len(payload)):
                        return productive
                    info = client.publish(self.up_topic, payload, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        self._fault_is(f"connection lost ({mqtt.error_string(info.rc)})")
                        return productive
                    self.batches_sent += 1
                    self.bytes_sent += len(payload)
                    inflight = (batch.batch_id, info.mid, time.monotonic())
                    log.debug("sync: batch %s, %d items, %d bytes", batch.batch_id, len(batch.items), len(payload))
            rc = client.loop(POLL_S)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._fault_is(f"connection lost ({mqtt.error_string(rc)})")
                return productive or time.monotonic() - started > STABLE_S
            if inflight is not None and inflight[1] in pubacks:
                reason = pubacks.pop(inflight[1])
                if reason.is_failure:  # e.g. "Not authorized": the broker's ACL refuses our topic
                    self._fault_is(f"broker refused batch {inflight[0]}: {reason}")
                    return False
            while acks:
                ack = acks.pop(0)
                stored, rejected = outbox.apply_ack(ack)
                productive = True
                max_items = self.cfg.batch_max_items
                log.debug("sync: ack of batch %s: %d stored, %d refused", ack.batch_id, stored, rejected)
                if inflight is not None and ack.batch_id == inflight[0]:
                    inflight = None
                    next_look = 0.0
                # Counting the outbox costs a scan of its index: soon after an ack, not after every one.
                next_refresh = min(next_refresh, time.monotonic() + ACK_REFRESH_S)
            if inflight is not None and time.monotonic() - inflight[2] > self.cfg.ack_timeout_s:
                log.warning("sync: no acknowledgement of batch %s within %ss: sending again", inflight[0],
                            self.cfg.ack_timeout_s)  # fmt: skip
                inflight = None
                next_look = 0.0
            if time.monotonic() >= next_refresh:
                self._refresh(outbox)
                next_refresh = time.monotonic() + STATUS_REFRESH_S
        return productive

    def _pace(self, client: mqtt.Client, n: int) -> bool:
        """Wait (servicing the connection) until the bandwidth cap lets ``n`` bytes go; False if it dropped."""
        if self._bucket is None:
            return True
        while (wait := self._bucket.wait_s(n)) > 0:
            if self._stop.is_set():
                return False
            if client.loop(min(wait, 0.25)) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._fault_is("connection lost while pacing the upload")
                return False
        self._bucket.take(n)
        return True
