"""``alpr-edge hq ...``: headquarters' ingest service, schema migrations, device registry, hot list publishing,
accounts (users) and the access records (audit).

The database URL (it holds the password) never goes on the command line, where ``ps`` and shell history show
it: it comes from ``--db-url-file`` (a root-only file), systemd ``LoadCredential=alpr-hq-db-url`` or
``$ALPR_HQ_DB_URL``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .. import config as config_mod
from ..alerts_mqtt import MqttConfigError, backoff_delay, tls_context
from ..hotlist import bundle as hlb
from ..store.commands import iso_utc
from ..sync import protocol
from . import audit_commands, audit_verify, device_keys, device_retire, device_status, schema, users_commands
from .access import HqSession, add_hq_login_args
from .device_status import age_text
from .ingest import IngestWorker

log = logging.getLogger(__name__)

DB_URL_ENV = "ALPR_HQ_DB_URL"
DB_URL_CREDENTIAL = "alpr-hq-db-url"
P9_DAYS = 30.0
DAY = 86400.0


class HqError(RuntimeError):
    """A command that cannot go on; the message says why."""


def db_url(url_file: Path | None) -> str:
    """--db-url-file, else systemd's credential, else $ALPR_HQ_DB_URL."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if url_file is None and cred_dir and (Path(cred_dir) / DB_URL_CREDENTIAL).is_file():
        url_file = Path(cred_dir) / DB_URL_CREDENTIAL
    if url_file is not None:
        try:
            url = url_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise HqError(f"database URL file {url_file}: {e}") from e
        if not url:
            raise HqError(f"database URL file {url_file} is empty")
        return url
    url = os.environ.get(DB_URL_ENV, "").strip()
    if not url:
        raise HqError(f"no database URL: give --db-url-file or set ${DB_URL_ENV}")
    return url


def _connect_db(args: argparse.Namespace) -> psycopg.Connection:
    try:
        return schema.connect(db_url(args.db_url_file))
    except psycopg.Error as e:
        raise HqError(f"cannot connect to the database: {e}") from e


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise HqError(f"password file {path}: {e}") from e


# -- serve --------------------------------------------------------------------------------------------------------


def _migrate_when_up(url: str, stop: threading.Event) -> bool:
    """Migrate, waiting (with backoff) while the database is unreachable; False when stopped first."""
    import random

    rng, attempt = random.Random(), 0
    while not stop.is_set():
        try:
            with schema.connect(url) as conn:
                for n in schema.migrate(conn):
                    log.info("database migrated to version %d", n)
                return True
        except psycopg.OperationalError as e:
            log.error("database unreachable, retrying: %s", e)
        stop.wait(backoff_delay(attempt, 1.0, 30.0, rng))
        attempt += 1
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    url = db_url(args.db_url_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from . import retention  # here: it imports this module's helpers

    if not _migrate_when_up(url, stop):
        return 0
    purger = retention.start_scheduled(args, url, stop)  # P10: hourly, recorded in purges and hq_audit
    common: dict[str, Any] = {
        "ca_file": args.ca,
        "cert_file": args.cert,
        "key_file": args.key,
        "username": args.username,
        "password": _password(args.password_file),
        "group": args.group,
        "stop": stop,
    }
    workers = [  # the first one also takes in the units' statuses (one is enough: they are small and retained)
        IngestWorker(args.broker, args.port, url, name=f"{args.name}-{i}", statuses=i == 1, **common)
        for i in range(1, args.workers + 1)
    ]
    for w in workers:
        w.start()
    log.info("hq serve: %d ingest worker(s) on %s:%s", len(workers), args.broker, args.port)
    while not stop.wait(args.status_interval):
        for w in workers:
            s = w.status()
            log.info(
                "worker %s: subscribed=%s database=%s batches=%d stored=%d new=%d rejected=%d malformed=%d "
                "statuses=%d refused=%d fault=%s",
                s.name, s.subscribed, s.database, s.batches, s.items_stored, s.items_new, s.items_rejected,
                s.malformed, s.statuses, s.statuses_refused, s.fault,
            )  # fmt: skip
    for w in workers:
        w.join(15)
    if purger is not None:
        purger.join(15)
    return 0


# -- migrate, devices ---------------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    with _connect_db(args) as conn:
        applied = schema.migrate(conn)
        version = schema.current_version(conn)
    if applied:
        print(f"applied migration(s) {', '.join(map(str, applied))}; schema version {version}")
    else:
        print(f"up to date: schema version {version}")
    return 0


def device_rows(
    conn: psycopg.Connection, now: float, overdue_days: float = P9_DAYS, *, retired: bool = True
) -> list[dict[str, Any]]:
    """The registry, most overdue first: each device with its days since the last complete batch and the flag, and
    its last status (level, number of faults, age by the unit's clock; None when it never sent one). A retired unit
    (left out when ``retired`` is False) is never overdue: nothing more is expected from it."""
    cur = conn.execute(
        "SELECT d.device_id, d.first_seen, d.last_seen, d.last_batch_at, d.last_sync, d.batches, d.reads, d.images,"
        " d.hits, d.outcomes, d.audit, d.rejected, s.level AS status_level,"
        " jsonb_array_length(s.faults) AS status_faults, s.status_at, d.retired_at, d.retired_by, d.retired_reason"
        " FROM devices d LEFT JOIN device_status s USING (device_id) WHERE %s OR d.retired_at IS NULL"
        " ORDER BY d.last_sync NULLS FIRST, d.device_id",
        (retired,),
    )
    names = [d.name for d in cur.description or ()]
    out = []
    for row in cur.fetchall():
        r = dict(zip(names, row, strict=True))
        since = r["last_sync"] if r["last_sync"] is not None else r["first_seen"]
        r["days_since_sync"] = round((now - since) / DAY, 2)
        r["retired"] = r["retired_at"] is not None
        r["overdue"] = not r["retired"] and r["days_since_sync"] > overdue_days  # never synced: from its first batch
        r["status_age_s"] = None if r["status_at"] is None else round(max(0.0, now - r["status_at"]), 1)
        out.append(r)
    return out


def cmd_devices(args: argparse.Namespace) -> int:
    with _connect_db(args) as conn:
        rows = device_rows(conn, time.time(), args.overdue_days, retired=args.all)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(
        f"{'DEVICE':<20} {'LAST SEEN':<20} {'LAST SYNC':<20} {'DAYS':>7} {'READS':>9} {'HITS':>6}  "
        f"{'STATUS':<8} {'FAULTS':>6} {'AGE':>6}  FLAG"
    )
    for r in rows:
        flag = f"OVERDUE (P9: over {args.overdue_days:g} days)" if r["overdue"] else ""
        if r["retired"]:
            flag = f"RETIRED since {iso_utc(r['retired_at'])}"
        faults = "-" if r["status_faults"] is None else r["status_faults"]
        print(
            f"{r['device_id']:<20} {iso_utc(r['last_seen']):<20} {iso_utc(r['last_sync']) or 'never':<20} "
            f"{r['days_since_sync']:>7.1f} {r['reads']:>9} {r['hits']:>6}  {r['status_level'] or '-':<8} "
            f"{faults:>6} {age_text(r['status_age_s']):>6}  {flag}"
        )
    return 0


# -- publish-hotlist ----------------------------------------------------------------------------------------------


def publish_retained(
    host: str,
    port: int,
    topic: str,
    payload: bytes,
    *,
    tls: ssl.SSLContext | None,
    username: str | None,
    password: str | None,
    timeout_s: float,
) -> None:
    """Publish ``payload`` retained with QoS 1 and wait for the broker's PUBACK; HqError when it did not take it."""
    state: dict[str, ReasonCode] = {}

    def on_connect(c: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, p: Properties | None) -> None:
        state["connack"] = rc

    def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, p: Properties) -> None:
        state["puback"] = rc

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"alpr-hq-publish-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.connect_timeout = timeout_s
    if username:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)
    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(host, port, clean_start=True)
    except (OSError, ssl.SSLError, ValueError) as e:
        raise HqError(f"cannot reach broker {host}:{port}: {e}") from e
    deadline = time.monotonic() + timeout_s
    try:
        published = False
        while "puback" not in state and time.monotonic() < deadline:
            if client.loop(0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise HqError(f"broker {host}:{port} closed the connection")
            connack = state.get("connack")
            if connack is not None and connack.is_failure:
                raise HqError(f"broker {host}:{port} refused the connection: {connack}")
            if connack is not None and not published:
                client.publish(topic, payload, qos=1, retain=True)
                published = True
        if "puback" not in state:
            raise HqError(f"no answer from broker {host}:{port} within {timeout_s:g}s")
        if state["puback"].is_failure:
            raise HqError(f"broker refused the bundle on {topic}: {state['puback']}")
    finally:
        try:
            client.disconnect()
        except Exception:
            log.debug("disconnect", exc_info=True)


def hq_login(args: argparse.Namespace, conn: psycopg.Connection, what: str) -> HqSession:
    """hq_cli_login, with every refusal (and a record that cannot be written) as an HqError."""
    from ..access.audit import AuditError
    from ..access.session import AccessDenied
    from ..access.users import AuthError
    from ..store.errors import StoreError
    from .access import SignerError, hq_cli_login

    try:
        return hq_cli_login(args, conn, what)
    except (AuthError, AccessDenied, SignerError, AuditError, StoreError) as e:
        raise HqError(str(e)) from e


def cmd_publish_hotlist(args: argparse.Namespace) -> int:
    with _connect_db(args) as conn:
        session = hq_login(args, conn, "hotlist.manage")
        return _publish_hotlist(args, session)


def _publish_hotlist(args: argparse.Namespace, session: HqSession) -> int:
    """Check the bundle, record the publication (refused if it cannot be recorded), publish."""
    import hashlib

    from ..access.audit import AuditError

    try:
        size = args.bundle.stat().st_size
        if size > hlb.DEFAULT_MAX_BUNDLE_BYTES:
            raise HqError(f"{args.bundle}: {size} bytes, over the {hlb.DEFAULT_MAX_BUNDLE_BYTES}-byte limit")
        data = args.bundle.read_bytes()
    except OSError as e:
        raise HqError(f"{args.bundle}: {e}") from e
    try:
        if args.public_key:
            header = hlb.verify_bundle(data, hlb.load_public_keys(args.public_key)).header
        else:
            header = hlb.peek_header(data)
        hlb.check_list_id(header.list_id)
        topic = (
            protocol.fleet_hotlist_topic(args.agency, header.list_id)
            if args.agency
            else protocol.device_hotlist_topic(args.device, header.list_id)
        )
    except (hlb.BundleError, protocol.ProtocolError) as e:
        raise HqError(f"{args.bundle}: not published: {e}") from e
    try:
        tls = tls_context(args.ca, args.cert, args.key)
    except MqttConfigError as e:
        raise HqError(str(e)) from e
    detail = {
        "list_id": header.list_id,
        "version": header.version,
        "entries": header.entry_count,
        "topic": topic,
        "bundle_sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        session.record("hotlist.publish", detail=detail)
    except AuditError as e:
        raise HqError(str(e)) from e
    try:
        publish_retained(
            args.broker,
            args.port,
            topic,
            data,
            tls=tls,
            username=args.username,
            password=_password(args.password_file),
            timeout_s=args.timeout,
        )
    except HqError as e:
        try:
            session.record("hotlist.publish.failed", reason=str(e)[:400], detail=detail)
        except AuditError:
            log.error("the failed publication of %s could not be recorded", header.list_id, exc_info=True)
        raise
    print(f"published {header.list_id} version {header.version} ({header.entry_count} entries) retained on {topic}")
    return 0


# -- publish-config -----------------------------------------------------------------------------------------------


def cmd_publish_config(args: argparse.Namespace) -> int:
    """Sign a settings file (TOML, only remote_config.REMOTE_KEYS) and publish it retained for a unit or a fleet."""
    from ..sync import remote_config as rc

    scope, target = ("agency", args.agency) if args.agency else ("device", args.device)
    try:
        raw = rc.read_raw(args.settings)
        settings = rc.check_settings(raw)
        topic = rc.config_topic(scope, target)
        key = hlb.load_private_key(args.signing_key)
    except (rc.RemoteConfigError, config_mod.ConfigError, protocol.ProtocolError, hlb.BundleError) as e:
        raise HqError(f"{args.settings}: not published: {e}") from e
    version = args.version if args.version is not None else rc.new_version()
    doc = rc.ConfigDoc(scope, target, version, time.time(), settings)
    data = rc.sign_doc(doc, key)
    try:
        tls = tls_context(args.ca, args.cert, args.key)
    except MqttConfigError as e:
        raise HqError(str(e)) from e
    publish_retained(
        args.broker,
        args.port,
        topic,
        data,
        tls=tls,
        username=args.username,
        password=_password(args.password_file),
        timeout_s=args.timeout,
    )
    keys = ", ".join(f"{s}.{k}" for s, v in sorted(settings.items()) for k in sorted(v))
    print(f"published settings version {version} for {scope} {target} retained on {topic}: {keys}")
    return 0


# -- the parser ---------------------------------------------------------------------------------------------------


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            rc: int = func(args)
            return rc
        except (HqError, schema.SchemaError) as e:
            print(f"alpr-edge: {e}", file=sys.stderr)
            return 2

    return wrapped


def _port(v: str) -> int:
    try:
        n = int(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a port: {v!r}") from e
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {n}")
    return n


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a whole number: {v!r}") from e
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_db_url_arg(p: argparse.ArgumentParser, *, under_devices: bool = False) -> None:
    """``--db-url-file``. Under 'hq devices' it is also an option of the group itself, so the action's parser must
    not overwrite a value given before the action's name: its default is then SUPPRESS."""
    p.add_argument(
        "--db-url-file",
        type=Path,
        default=argparse.SUPPRESS if under_devices else None,
        help=f"root-only file holding the PostgreSQL URL (default: systemd credential {DB_URL_CREDENTIAL}, "
        f"else ${DB_URL_ENV}); never put the URL on the command line",
    )


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="the MQTT broker's host name or address")
    p.add_argument("--port", type=_port, default=8883, help="the broker's port (default 8883, TLS)")
    p.add_argument("--ca", type=Path, default=None, help="CA certificate to verify the broker (enables TLS)")
    p.add_argument("--cert", type=Path, default=None, help="headquarters' client certificate (TLS)")
    p.add_argument("--key", type=Path, default=None, help="headquarters' client key (TLS)")
    p.add_argument("--username", default=None, help="broker user name, for brokers with passwords")
    p.add_argument(
        "--password-file", type=Path, default=None, help="file holding the broker password (never on the command line)"
    )


# each adds its action to ``hq audit`` (a function taking the group's subparsers)
AUDIT_ACTIONS = (audit_verify.register, audit_commands.register_monthly)


def _audit_group(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = hsub.add_parser(
        "audit",
        help="the access records: verify every unit's and headquarters' own",
        description="The access records (issue 7, P13, P15): every unit's as received and headquarters' own.",
    )
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION", help="what to do")
    for add in AUDIT_ACTIONS:
        add(asub)


def _serve_retention_args(serve: argparse.ArgumentParser) -> None:
    from .retention import add_serve_args

    add_serve_args(serve)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``hq`` command group to the ``alpr-edge`` parser."""
    hq = sub.add_parser(
        "hq",
        help="headquarters: ingest from the units, device registry, hot list publishing",
        description="Headquarters' side of sync: ingest workers that store the units' batches in PostgreSQL and "
        "acknowledge them, schema migrations, the device registry (P9) with the units' last status, and publishing "
        "signed hot lists. The "
        f"database URL comes from --db-url-file, the systemd credential {DB_URL_CREDENTIAL} or ${DB_URL_ENV}.",
    )
    hsub = hq.add_subparsers(dest="hq_command", required=True, metavar="ACTION", help="what to do")

    serve = hsub.add_parser(
        "serve",
        help="run ingest workers until SIGTERM",
        description="Migrate the database, then run ingest workers on the shared subscription "
        f"{protocol.ingest_subscription()}: each batch is stored in one transaction, idempotently, then "
        "acknowledged. The first worker also keeps each unit's latest status (alpr/+/status, retained; see 'hq devices "
        "status'). Run more workers (here or on other machines, each with its own --name) to share the load.",
    )
    _broker_args(serve)
    serve.add_argument("--workers", type=_positive, default=2, help="ingest workers (threads) to run (default 2)")
    serve.add_argument(
        "--name",
        default=socket.gethostname().split(".")[0].lower() or "hq",
        help="stable base name of this process' workers (their persistent MQTT sessions); default the host name",
    )
    serve.add_argument(
        "--group", default=protocol.SHARED_GROUP, help=f"shared subscription group (default {protocol.SHARED_GROUP})"
    )
    serve.add_argument(
        "--status-interval", type=float, default=60.0, help="seconds between status log lines (default 60)"
    )
    serve.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="logging level on stderr"
    )
    _serve_retention_args(serve)
    add_db_url_arg(serve)
    serve.set_defaults(func=_run(cmd_serve))

    mig = hsub.add_parser(
        "migrate",
        help="apply the database schema migrations",
        description="Apply the numbered PostgreSQL migrations not yet applied, each in one transaction.",
    )
    add_db_url_arg(mig)
    mig.set_defaults(func=_run(cmd_migrate))

    dev = hsub.add_parser(
        "devices",
        help="the device registry: last seen, last sync, overdue units (P9), last status",
        description="Every unit that sent a batch or a status: first and last seen, last complete sync (a batch "
        "stored with nothing rejected), days since, items stored, and its last status (level, number of faults, "
        "age by the unit's clock; 'hq devices status' shows the faults); units past --overdue-days are flagged (P9: "
        "data must reach headquarters at least every 30 days). Retired units ('hq devices retire') are left out "
        "unless --all is given, and are then flagged RETIRED, never OVERDUE.",
    )
    dev.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    dev.add_argument("--all", action="store_true", help="retired units too (flagged RETIRED)")
    dev.add_argument(
        "--overdue-days", type=float, default=P9_DAYS, help=f"flag units not synced for longer (default {P9_DAYS:g})"
    )
    add_db_url_arg(dev)
    dev.set_defaults(func=_run(cmd_devices))
    dev_sub = dev.add_subparsers(
        dest="devices_command",
        metavar="ACTION",
        help="without one: list the registry; 'register': a unit's audit key; 'status': the units' faults; "
        "'retire' / 'reinstate': a unit taken out of service, or back",
    )
    device_keys.add_register(dev_sub)
    device_status.add_status(dev_sub)
    device_retire.add_retire(dev_sub)

    pub = hsub.add_parser(
        "publish-hotlist",
        help="publish a signed hot list bundle to an agency's fleet or one unit (retained)",
        description="Publish a bundle made by 'alpr-edge hotlist sign' as a retained QoS 1 message on "
        "alpr/fleet/<agency>/hotlist/<list_id> or alpr/<device>/hotlist/<list_id>. The bundle is checked first: "
        "its header must parse, and with --public-key its signature must verify. Needs a login (operator, "
        "investigator or administrator); the publication is recorded in headquarters' access record (issue 7).",
    )
    pub.add_argument("--bundle", type=Path, required=True, help="the signed bundle (.hlb)")
    target = pub.add_mutually_exclusive_group(required=True)
    target.add_argument("--agency", default=None, help="publish to every unit of this agency")
    target.add_argument("--device", default=None, help="publish to this one unit")
    pub.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=None,
        help="verify the signature with this public key before publishing (repeatable)",
    )
    pub.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    _broker_args(pub)
    add_hq_login_args(pub)
    pub.set_defaults(func=_run(cmd_publish_hotlist))

    users_commands.register(hsub)
    _audit_group(hsub)
    audit_commands.register(hsub)  # report, requests, maintenance

    pc = hsub.add_parser(
        "publish-config",
        help="publish signed settings to an agency's fleet or one unit (retained; applied at the unit's restart)",
        description="Sign a TOML file of settings with headquarters' hot list signing key and publish it as a "
        "retained QoS 1 message on alpr/<device>/config or alpr/fleet/<agency>/config. Only tuning settings may be "
        "set from headquarters (retention, batch sizes, bandwidth, hot list refresh, reading thresholds), never "
        "hosts, paths, keys, cameras or capture zones. A unit accepts a version only if it is newer than the one in "
        "force, and restarts to apply it; a unit's own settings override its fleet's.",
    )
    pc.add_argument("settings", type=Path, help="TOML file, e.g. [store] retention_days = 21")
    pc_target = pc.add_mutually_exclusive_group(required=True)
    pc_target.add_argument("--agency", default=None, help="publish to every unit of this agency")
    pc_target.add_argument("--device", default=None, help="publish to this one unit")
    pc.add_argument("--signing-key", type=Path, required=True, help="headquarters' Ed25519 signing key (PEM, 0600)")
    pc.add_argument("--version", type=_positive, default=None, help="default: milliseconds since the epoch")
    pc.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    _broker_args(pc)
    pc.set_defaults(func=_run(cmd_publish_config))

    from .search import register as register_search  # here: edge.hq.search imports this module's helpers

    register_search(hsub)
    from . import evidence, retention  # here: they import this module's helpers

    retention.register(hsub)
    evidence.register(hsub)
