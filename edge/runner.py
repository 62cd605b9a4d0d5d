"""`alpr-edge run`: load and check everything that can fail, start the unit's parts in order, run, stop in reverse.

Everything that can be refused (settings, key, database, models, hot list keys) is loaded before any thread starts,
so that a bad installation stops at once with one clear line (systemd shows it) instead of half-starting.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import config
from .access.audit import AuditLog, load_signing_key
from .access.users import UserStore
from .alerts import AlertService, AlertSink
from .alerts_mqtt import MqttAlertPublisher
from .daemon import Daemon, NoPosition
from .gps import FixedPosition, GpsdClient
from .health import Parts
from .hotlist.bundle import BundleError, load_public_keys
from .hotlist.service import HotListService
from .sdnotify import Notifier
from .store.db import Connection, open_db
from .store.errors import KeyFileError, StoreError
from .store.keys import load_key
from .store.reads import ReadStore
from .store.retention import RetentionWorker
from .sync import remote_config
from .sync.hotlist_source import MqttBundleSource
from .sync.uplink import Uplink
from .vision.recognizer import Recognizer
from .vision.runtime import ModelError
from .web.alert_page import AlertPage
from .web.hub import AlertHub

log = logging.getLogger(__name__)
OutcomeRecorder = Callable[[str, str, str, str], object]  # hit uuid, outcome, officer, note
RESTART = 75  # run() asks to be run again: headquarters' settings arrived (the command line restarts it)


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text(encoding="utf-8").strip()


def run(config_path: Path, forever: bool) -> int:
    try:
        cfg, remote_docs, remote_problem = remote_config.load(config_path)
        key = load_key(cfg.store.key_file)
        signer = load_signing_key(cfg.store.audit_key_file)  # signs the access record (P13)
        cfg.unit.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = ReadStore.open(
            cfg.db_path,
            key,
            min_free_bytes=int(cfg.store.min_free_mb * 1e6),
            scene_min_free_bytes=int(cfg.store.scene_min_free_mb * 1e6),
        )
        m = cfg.models
        rec = Recognizer.from_files(
            m.dir / "plate_detector.tflite",
            m.dir / "plate_ocr.tflite",
            cfg.unit.regions,
            m.threads,
            m.detector_threshold,
            m.ocr_views,
        )
        rec.min_confidence = m.min_read_confidence
        trusted = load_public_keys(cfg.hotlist.public_keys)
        a = cfg.alerts
        mqtt_password = _password(a.mqtt_password_file)
    except (config.ConfigError, KeyFileError, StoreError, ModelError, BundleError, OSError, ValueError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    g = cfg.gps
    position: GpsdClient | FixedPosition | NoPosition
    if g.mode == "gpsd":
        position = GpsdClient(host=g.host, port=g.port, max_fix_age_s=g.max_fix_age_s)
    elif g.mode == "fixed" and g.lat is not None and g.lon is not None:
        position = FixedPosition(g.lat, g.lon, alt_m=g.alt_m, eph_m=g.eph_m)
    else:
        position = NoPosition()

    stop = threading.Event()  # SIGTERM: drain and exit
    services_stop = threading.Event()  # the parts around the pipeline, stopped after it has drained
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    if remote_problem:
        log.warning("%s", remote_problem)
    for d in remote_docs:
        log.info("headquarters settings in force: %s version %d", d.scope, d.version)
    restart = threading.Event()

    def settings_accepted(doc: remote_config.ConfigDoc) -> None:
        log.warning("headquarters settings version %d received: restarting to apply them", doc.version)
        restart.set()
        stop.set()

    remote = remote_config.RemoteConfig(config_path, cfg, trusted, settings_accepted) if cfg.sync.enabled else None
    mqtt_lists = MqttBundleSource() if cfg.sync.enabled else None
    hotlists = HotListService(cfg.db_path, key, cfg.hotlist, trusted, extra_sources=[mqtt_lists] if mqtt_lists else [])
    uplink: Uplink | None = None
    daemon: Daemon | None = None
    if cfg.sync.enabled:
        try:
            uplink = Uplink(
                cfg.db_path, key, cfg.sync, cfg.unit.id, services_stop,
                on_hotlist_bundle=mqtt_lists.offer if mqtt_lists else None,
                on_config=remote.offer if remote else None,
                config_topics=remote.topics() if remote else (),
                status_payload=lambda: daemon.last_snapshot if daemon is not None else None,
            )  # fmt: skip
        except ValueError as e:
            print(f"alpr-edge: [sync] {e}", file=sys.stderr)
            return 2
    sinks: list[AlertSink] = []
    alerts_conn = open_db(cfg.db_path, key)
    alert_service: AlertService | None = None
    publisher: MqttAlertPublisher | None = None
    if a.mqtt_host:
        publisher = MqttAlertPublisher(
            a.mqtt_host,
            a.mqtt_port,
            cfg.unit.id,
            username=a.mqtt_username or None,
            password=mqtt_password,
            ca_file=a.mqtt_ca_file,
            cert_file=a.mqtt_cert_file,
            key_file=a.mqtt_key_file,
            on_published=lambda uuid, at: alert_service.mark_published(uuid, at) if alert_service else None,
        )
        sinks.append(publisher)
    hub = AlertHub()
    sinks.append(hub.publish)
    alert_service = AlertService(alerts_conn, cfg.unit.id, sinks)
    page = _start_page(cfg, key, signer, hub, alert_service.record_outcome)

    # P10: the hourly purge, on its own connection; each purge is recorded as user "system".
    days = cfg.store.retention_days
    retention = RetentionWorker(cfg.db_path, key, lambda c: AuditLog(c, signer), days, services_stop)

    def faults() -> list[str]:
        out = [f"alert page: {page.fault}"] if page is not None and page.fault else []
        return out + ([f"retention: {retention.fault}"] if retention.fault else [])

    def links() -> Parts:  # the brokers' states: edge.health turns them into faults
        return Parts(
            uplink=uplink.status() if uplink is not None else None,
            alerts=publisher.status() if publisher is not None else None,
        )

    try:
        hotlists.start(services_stop)
        if mqtt_lists is not None:
            mqtt_lists.poke = hotlists.poke
        if publisher is not None:
            publisher.start()
        if uplink is not None:
            uplink.start()
        retention.start()
        daemon = Daemon(
            cfg, rec, store, position, Notifier(), hotlists=hotlists, alerts=alert_service, extra_faults=faults,
            links=links,
        )  # fmt: skip
        st = daemon.run(stop, exit_when_sources_end=not forever)
    finally:
        services_stop.set()
        if publisher is not None:
            publisher.stop()
        if page is not None:
            page.stop()
        hub.close()
        hotlists.join(timeout=5)
        if uplink is not None:
            uplink.join(timeout=5)
        if retention.is_alive():
            retention.join(timeout=5)
        store.close()
        alerts_conn.close()
    print(
        f"alpr-edge: {st.reads} read(s) stored from {len(cfg.cameras)} camera(s); {st.frames} frames in "
        f"{st.uptime_s:.1f} s ({st.fps:.1f} fps), {st.dropped} dropped; {st.hits} hot list hit(s); "
        f"gps {st.gps}; database {cfg.db_path}",
        flush=True,
    )
    if st.faults:
        print(f"alpr-edge: faults at exit: {'; '.join(st.faults)}", flush=True)
    if restart.is_set():
        print("alpr-edge: restarting with headquarters' new settings", flush=True)
        return RESTART
    return 0


class _PageHandle:
    """The alert page if it could start; a fault in the status otherwise (the unit keeps reading plates)."""

    def __init__(self, page: AlertPage | None, fault: str | None, conns: tuple[Connection, ...]) -> None:
        self.page = page
        self.fault = fault
        self.conns = conns

    def stop(self) -> None:
        if self.page is not None:
            self.page.stop()
        for c in self.conns:
            c.close()


def _start_page(
    cfg: config.Config, key: bytes, signer: Ed25519PrivateKey, hub: AlertHub, record: OutcomeRecorder
) -> _PageHandle | None:
    """The in-car alert page (login required, every access recorded), on the in-car network only."""
    a = cfg.alerts
    if not a.page:
        return None
    conn = open_db(cfg.db_path, key)  # its own connection: the user store locks only its own use of one
    audit_conn = open_db(cfg.db_path, key)  # and the access record its own (each has its own lock)
    page = AlertPage(
        hub, UserStore(conn), record, bind=a.page_bind, port=a.page_port, audit=AuditLog(audit_conn, signer)
    )
    try:
        page.start()
    except OSError as e:
        log.error("alert page cannot listen on %s:%d: %s", a.page_bind, a.page_port, e)
        return _PageHandle(None, f"cannot listen on {a.page_bind}:{a.page_port}: {e.strerror}", (conn, audit_conn))
    log.info("alert page on http://%s:%d/", a.page_bind, page.port)
    return _PageHandle(page, None, (conn, audit_conn))
