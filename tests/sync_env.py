"""Test environment for sync (issue 6): a real PKI made by scripts/provision_device.sh, a real Mosquitto running the
production configuration (firmware_config/mosquitto: TLS, client certificates, the production ACL) on a free
loopback port, a throw-away PostgreSQL cluster, and an MQTT v5 test client.

Use from a test module (the fixtures have ``name=`` so that importing them does not shadow the argument names):

    from .sync_env import Pki, TlsBroker, mqtt_client, pki_fixture, postgres_fixture, tls_broker_fixture  # noqa: F401

    def test_x(pki: Pki, tls_broker: TlsBroker) -> None:
        dev = pki.device("unit-1")                     # Cert(cn, key, cert, ca), made once per Pki
        with mqtt_client(pki, "unit-1", tls_broker.port) as c:
            assert c.publish("alpr/unit-1/up", b"{}").is_failure is False
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

REPO = Path(__file__).resolve().parents[1]
PROVISION = REPO / "scripts" / "provision_device.sh"
BROKER_CONF = REPO / "firmware_config" / "mosquitto" / "mosquitto.conf"
BROKER_ACL = REPO / "firmware_config" / "mosquitto" / "acl"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

needs_mosquitto = pytest.mark.skipif(
    not Path(MOSQUITTO).exists() or shutil.which("openssl") is None, reason="needs mosquitto and openssl"
)
needs_postgres = pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="needs PostgreSQL 15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what}: not reached within {timeout} s")


# --- PKI ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    """A client certificate: ``cn`` is the MQTT user name the broker sees; ``ca`` the CA that signed the broker."""

    cn: str
    key: Path
    cert: Path
    ca: Path

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


class Pki:
    """A CA, the broker's certificate for 127.0.0.1/localhost and client certificates on demand, all issued by
    scripts/provision_device.sh (so the tests exercise the script too)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_key, self.ca_crt = self._run("ca")
        self.crl = folder / "crl.pem"  # written by "ca", rewritten by revoke()
        self.server_key, self.server_crt = self._run("server", "127.0.0.1", "localhost")

    def _run(self, *args: str) -> tuple[Path, Path]:
        try:
            out = subprocess.run(["bash", str(PROVISION), args[0], str(self.folder), *args[1:]], check=True,
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"provision_device.sh {' '.join(args)}: {e.stderr.strip()}") from e
        assert len(out) == 2, out
        return Path(out[0]), Path(out[1])

    def device(self, device_id: str) -> Cert:
        """A unit's certificate, CN=device_id (issued once; later calls return the same files)."""
        key, crt = self._run("device", device_id)
        return Cert(device_id, key, crt, self.ca_crt)

    def hq(self, name: str) -> Cert:
        """A headquarters certificate, CN=hq-<name> (the broker ACL knows hq-ingest and hq-publisher)."""
        key, crt = self._run("hq", name)
        return Cert(f"hq-{name}", key, crt, self.ca_crt)

    def revoke(self, cn: str) -> None:
        """Revoke the certificate of ``cn`` (a running broker sees it after restart())."""
        r = subprocess.run(["bash", str(PROVISION), "revoke", str(self.folder), cn], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"provision_device.sh revoke {cn}: {r.stderr.strip()}")

    def cert(self, cn: str) -> Cert:
        """The certificate for a CN: hq-<name> from hq(), anything else from device()."""
        return self.hq(cn[3:]) if cn.startswith("hq-") else self.device(cn)


# --- Mosquitto with the production configuration ---------------------------------------------------------------


def render_broker_config(
    conf_text: str, *, port: int, acl: Path, data: Path, log: Path, ca: Path, cert: Path, key: Path, crl: Path
) -> str:
    """The production mosquitto.conf with test paths and a loopback port; every production path must be found, so
    that a change in the production file cannot silently leave a test broker on different settings."""
    subs = {
        "listener 8883\n": f"listener {port} 127.0.0.1\n",
        "acl_file /etc/mosquitto/acl\n": f"acl_file {acl}\n",
        "persistence_location /var/lib/mosquitto/\n": f"persistence_location {data}/\n",
        "cafile /etc/mosquitto/certs/ca.crt\n": f"cafile {ca}\n",
        "certfile /etc/mosquitto/certs/server.crt\n": f"certfile {cert}\n",
        "keyfile /etc/mosquitto/certs/server.key\n": f"keyfile {key}\n",
        "crlfile /etc/mosquitto/certs/crl.pem\n": f"crlfile {crl}\n",
        "log_dest syslog\n": f"log_dest file {log}\n",
    }
    out = conf_text
    for old, new in subs.items():
        if out.count(old) != 1:
            raise AssertionError(f"production mosquitto.conf: expected exactly one {old.strip()!r}")
        out = out.replace(old, new)
    for line in out.splitlines():
        if not line.lstrip().startswith("#") and ("/etc/" in line or "/var/" in line):
            raise AssertionError(f"production mosquitto.conf: a path the test cannot substitute: {line!r}")
    if os.geteuid() == 0:
        out += "user root\n"  # as root it would drop to user mosquitto, which cannot read our files
    return out


class TlsBroker:
    """Mosquitto in the foreground on a free loopback port, running firmware_config/mosquitto/mosquitto.conf and
    its acl unchanged but for paths; persistence in ``folder/data`` survives stop()/start()/restart()."""

    def __init__(self, folder: Path, pki: Pki, *, extra_acl: str = "") -> None:
        self.folder = folder
        self.pki = pki
        self.port = free_port()
        self.data = folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log = folder / "mosquitto.log"
        self.acl = folder / "acl"
        self.acl.write_text(BROKER_ACL.read_text() + extra_acl)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            render_broker_config(
                BROKER_CONF.read_text(),
                port=self.port,
                acl=self.acl,
                data=self.data,
                log=self.log,
                ca=pki.ca_crt,
                cert=pki.server_crt,
                key=pki.server_key,
                crl=pki.crl,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it completes a TLS handshake (its certificate verified against our CA)."""
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip
        ctx = self.pki.hq("ingest").tls_context()  # with a client certificate, or the broker logs an error
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited: {err.strip()} {self.log_text()[-2000:]}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
                    ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls,
                ):
                    tls.unwrap()  # close_notify: a clean goodbye, no error in the broker's log
                    return
            except (OSError, ssl.SSLError):
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not accept TLS within {timeout} s: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file (sessions, queued messages, retained) before exiting."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            if self.proc.stderr:
                self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash; only what autosave already wrote survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: re-reads the ACL file (after editing ``self.acl``)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)


# --- PostgreSQL -----------------------------------------------------------------------------------------------


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication, user postgres). PostgreSQL refuses to
    run as root, so as root it runs as user postgres in a folder under /tmp chowned to it (pytest's tmp_path is
    private to root)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="alpr-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.running = False
        self._pg("initdb", "-N", "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D", str(self.data))

    def _pg(self, *args: str) -> None:
        try:
            subprocess.run([*self.as_pg, str(PG_BIN / args[0]), *args[1:]], check=True, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        except subprocess.CalledProcessError as e:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {e.stderr.strip()} {tail}") from e

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-w", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", opts, "start")
        self.running = True

    def stop(self) -> None:
        if self.running:
            self._pg("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")
            self.running = False

    @property
    def url(self) -> str:
        """A psycopg conninfo for the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh empty database; returns its conninfo."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- an MQTT v5 client for tests --------------------------------------------------------------------------------


class MqttConnectError(RuntimeError):
    """The broker refused the client (CONNACK with a failure) or never answered (e.g. a TLS handshake refused)."""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTestClient:
    """A connected paho 2.x MQTT v5 client (``.client``) with blocking helpers: publish() returns the PUBACK reason
    code, subscribe() waits for the SUBACK, messages arrive in a queue."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.messages: queue.Queue[Received] = queue.Queue()
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, props: Properties | None) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode], props: Properties | None) -> None:
        with self._cond:
            self._subacks[mid] = list(rcs)
            self._cond.notify_all()

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float = 5.0
    ) -> ReasonCode:
        """Publish and wait for the PUBACK (QoS 1); its reason code, e.g. "Not authorized" (135) for an ACL refusal."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish to {topic}: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return ReasonCode(PacketTypes.PUBACK, "Success")
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._acks, timeout):
                raise TimeoutError(f"no PUBACK for {topic} within {timeout} s")
            return self._acks.pop(info.mid)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0) -> list[ReasonCode]:
        result, mid = self.client.subscribe(topic, qos=qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise RuntimeError(f"subscribe {topic}: {mqtt.error_string(result)}")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic} within {timeout} s")
            return self._subacks.pop(mid)

    def wait_message(self, timeout: float = 5.0) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def assert_no_message(self, wait: float = 0.5) -> None:
        try:
            msg = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mqtt_client(
    pki: Pki,
    cn: str | Cert | None,
    port: int,
    *,
    client_id: str | None = None,
    session_expiry: int | None = None,
    ca: Path | None = None,
    subscribe: Sequence[str] = (),
    timeout: float = 5.0,
) -> MqttTestClient:
    """A connected MQTT v5 client presenting the certificate for ``cn`` (issued on demand; or a given Cert; None:
    no client certificate), verifying
    the broker against ``ca`` (default: the pki's CA). ``session_expiry`` makes a persistent session
    (clean_start False). Subscriptions in ``subscribe`` are made in on_connect, before any queued message flows.
    Raises MqttConnectError when refused or when no CONNACK comes within ``timeout``."""
    name = cn.cn if isinstance(cn, Cert) else cn or "anon"
    cid = client_id or f"test-{name}-{uuid.uuid4().hex[:8]}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca_crt))
    if cn is not None:
        cert = pki.cert(cn) if isinstance(cn, str) else cn
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    client.tls_set_context(ctx)
    wrapped = MqttTestClient(client)
    done = threading.Event()
    outcome: list[ReasonCode] = []

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: ReasonCode, props: Properties | None) -> None:
        outcome.append(rc)
        if not rc.is_failure:
            for topic in subscribe:
                c.subscribe(topic, qos=1)
        done.set()

    client.on_connect = on_connect
    props = None
    if session_expiry is not None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
    try:
        client.connect("127.0.0.1", port, clean_start=session_expiry is None, properties=props)
    except (OSError, ssl.SSLError) as e:
        raise MqttConnectError(f"{cid}: connect failed: {e}") from e
    client.loop_start()
    if not done.wait(timeout):
        wrapped.close()
        raise MqttConnectError(f"{cid}: no CONNACK within {timeout} s (TLS refused: no or untrusted certificate?)")
    if outcome[0].is_failure:
        wrapped.close()
        raise MqttConnectError(f"{cid}: refused by the broker: {outcome[0]}")
    return wrapped


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="tls_broker")
def tls_broker_fixture(pki: Pki, tmp_path: Path) -> Iterator[TlsBroker]:
    b = TlsBroker(tmp_path / "broker", pki)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture() -> Iterator[Postgres]:
    p = Postgres()
    try:
        p.start()
        yield p
    finally:
        p.remove()


@pytest.fixture(name="url")
def hq_url_fixture(postgres: Postgres) -> str:
    """A fresh database with headquarters' schema; its conninfo."""
    from edge.hq import schema

    u = postgres.new_database("hq")
    with schema.connect(u) as c:
        schema.migrate(c)
    return u


@pytest.fixture(name="conn")
def hq_conn_fixture(url: str) -> Iterator[Any]:
    """A connection to ``url`` (a psycopg.Connection)."""
    from edge.hq import schema

    with schema.connect(url) as c:
        yield c
