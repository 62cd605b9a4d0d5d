"""End to end: the daemon reads footage, its uplink sends reads and images over MQTT, a headquarters ingest worker
stores them in PostgreSQL once and acknowledges, and the unit marks them sent; then the broker restarts mid-way."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.access.audit import AuditEntry, AuditLog, load_signing_key, verify_chain
from edge.hotlist.manual import ManualEntries
from edge.hq import schema
from edge.hq.ingest import IngestWorker
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate

from .footage import daemon_config, write_passes
from .sync_env import Pki, TlsBroker, pki_fixture, tls_broker_fixture  # noqa: F401  (fixtures)
from .test_hq_ingest import Postgres
from .test_sync_uplink import Broker

PLATES = ["7ABC123", "KM4521", "BRT5X09", "4FCW533"]
SYNOPSIS = "Partial plate from a witness, grey sedan"


@pytest.fixture
def pg() -> Iterator[Postgres]:
    p = Postgres()
    p.start()
    yield p
    p.remove()


def pg_count(url: str, sql: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute(sql).fetchone()
        return int(row[0]) if row else 0


def test_reads_reach_postgres_once_and_the_unit_marks_them_sent(tmp_path: Path, pg: Postgres) -> None:
    frames = tmp_path / "frames"
    write_passes(frames, PLATES)
    create_key_file(tmp_path / "data" / "db.key")
    key = load_key(tmp_path / "data" / "db.key")
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")
    broker.start()
    url = pg.new_database()
    with schema.connect(url) as conn:
        schema.migrate(conn)
    stop = threading.Event()
    hq = IngestWorker("127.0.0.1", broker.port, url, name="hq-ingest-e2e", stop=stop)
    hq.start()
    cfg = daemon_config(
        tmp_path,
        frames,
        fps=20,
        extra=f'[sync]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\nack_timeout_s = 3\n',
    )
    # the unit's access record goes up with the rest (kind "audit", AuditEntry.to_json() form)
    signer = load_signing_key(tmp_path / "data" / "audit.key")
    rec_conn = open_db(tmp_path / "data" / "reads.db", key)
    migrate(rec_conn)
    audit = AuditLog(rec_conn, signer)
    # a manual hot list entry (P6) for one of the plates: its hit reaches headquarters with the entry's details
    manual = ManualEntries(rec_conn)
    entry_id = manual.add("KM4521", "STOLEN_VEHICLE", "Robbery getaway car", "Felony stop", "CASE-77", SYNOPSIS,
                          "member1", "Det. Rivera")  # fmt: skip
    manual.approve(entry_id, "admin1", role="administrator")
    audit.record("officer1", "operator", "login", detail={"what": "reads.view", "via": "cli"})
    audit.record("officer1", "operator", "reads.view", detail={"read_uuids": [], "count": 0, "ratio": 0.1})
    audit.record("détective", "investigator", "search", reason="case 2026-001234: vol à l'étalage",
                 detail={"criteria": {"plate": "7AB*", "radius_m": 250.5}, "results": 0})  # fmt: skip
    p = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg), "--forever"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        audit.record("officer1", "operator", "hits.view", detail={"hit_uuids": [], "count": 0})  # while it runs
        rec_conn.close()
        deadline = time.monotonic() + 60
        half = False
        while time.monotonic() < deadline:
            n = pg_count(url, "SELECT COUNT(*) FROM reads")
            if n >= 1 and not half:  # the broker goes away mid-way and comes back: nothing lost or doubled
                broker.stop()
                time.sleep(1.5)
                broker.start()
                half = True
            if (n >= len(PLATES) and pg_count(url, "SELECT COUNT(*) FROM read_images") >= 2 * len(PLATES)
                    and pg_count(url, "SELECT COUNT(*) FROM audit") >= 4
                    and pg_count(url, "SELECT COUNT(*) FROM hits") >= 1):  # fmt: skip
                break
            time.sleep(0.3)
        unit = open_db(tmp_path / "data" / "reads.db", key)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the unit marks rows sent only on headquarters' acknowledgement
            if unit.execute("SELECT COUNT(*) FROM reads WHERE synced_at IS NULL").fetchone()[0] == 0:
                break
            time.sleep(0.3)
        unsent = unit.execute("SELECT COUNT(*) FROM reads WHERE synced_at IS NULL").fetchone()[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if unit.execute("SELECT COUNT(*) FROM audit WHERE synced_at IS NULL").fetchone()[0] == 0:
                break
            time.sleep(0.3)
        audit_unsent = unit.execute("SELECT COUNT(*) FROM audit WHERE synced_at IS NULL").fetchone()[0]
        local = AuditLog(unit, signer).entries()
        unit.close()
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        stop.set()
        hq.join(10)
        broker.stop()
    assert p.returncode == 0, err
    assert half, "the broker restart did not happen"
    assert pg_count(url, "SELECT COUNT(*) FROM reads") == len(PLATES)
    assert pg_count(url, "SELECT COUNT(DISTINCT text) FROM reads") == len(PLATES)
    assert pg_count(url, "SELECT COUNT(*) FROM read_images") == 2 * len(PLATES)
    assert pg_count(url, "SELECT COUNT(*) FROM devices WHERE device_id = 'test-unit'") == 1
    assert unsent == 0
    # every entry arrived once, as the unit holds it, and the chain verifies at headquarters with the unit's key
    assert audit_unsent == 0
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT data FROM audit WHERE device_id = 'test-unit' ORDER BY (data->>'seq')::bigint"
        ).fetchall()  # fmt: skip
    received = [AuditEntry.from_json(r[0]) for r in rows]
    assert received == local and len(received) == 4
    assert verify_chain(received, signer.public_key()).ok
    with psycopg.connect(url) as c:
        hits = c.execute(
            "SELECT wanted_plate, list_id, case_number, entered_by, requesting_officer, synopsis FROM hits"
        ).fetchall()  # fmt: skip
    assert hits == [("KM4521", "manual", "CASE-77", "member1", "Det. Rivera", SYNOPSIS)]
    for plate in PLATES:
        assert plate not in out and plate not in err
    assert SYNOPSIS not in out and SYNOPSIS not in err


def test_over_tls_with_client_certificates_and_the_production_acl(
    tmp_path: Path, pki: Pki, tls_broker: TlsBroker, pg: Postgres
) -> None:
    """The same path through the production broker configuration: device and headquarters certificates, ACL."""
    frames = tmp_path / "frames"
    write_passes(frames, PLATES[:2])
    create_key_file(tmp_path / "data" / "db.key")
    url = pg.new_database()
    with schema.connect(url) as conn:
        schema.migrate(conn)
    dev, hqc = pki.device("test-unit"), pki.hq("ingest")
    stop = threading.Event()
    hq = IngestWorker("127.0.0.1", tls_broker.port, url, ca_file=hqc.ca, cert_file=hqc.cert, key_file=hqc.key,
                      name="hq-ingest-tls", stop=stop)  # fmt: skip
    hq.start()
    cfg = daemon_config(
        tmp_path,
        frames,
        fps=20,
        extra=f'[sync]\nenabled = true\nhost = "127.0.0.1"\nport = {tls_broker.port}\nca_file = "{dev.ca}"\n'
        f'cert_file = "{dev.cert}"\nkey_file = "{dev.key}"\n',
    )
    p = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg), "--forever"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and pg_count(url, "SELECT COUNT(*) FROM read_images") < 4:
            time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        stop.set()
        hq.join(10)
    assert p.returncode == 0, err
    assert pg_count(url, "SELECT COUNT(*) FROM reads") == 2
    assert pg_count(url, "SELECT COUNT(*) FROM read_images") == 4
