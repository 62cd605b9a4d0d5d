"""Evidence holds placed on a unit reach headquarters (P10): the unit queues each hold and release (``hold_events``),
the uplink sends them as kind ``hold`` through a real Mosquitto to a real ingest worker and PostgreSQL, headquarters'
purge keeps a read the unit holds and takes it once the release has arrived, ``hq evidence list`` shows the unit's
hold, and ``hq evidence export`` exports a read held only on a unit (which unit, who, case, reason). Also: hostile
hold items refused by field, redelivery stores nothing twice, a release that comes before its hold, a hold from
another unit, and holds made before the unit's migration 7."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.access.audit import public_pem
from edge.cli import build_parser
from edge.evidence import Evidence
from edge.hq.access import HqAuditLog, HqUserStore
from edge.hq.evidence import HqEvidence
from edge.hq.ingest import IngestWorker, store_batch
from edge.hq.retention import purge
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import MIGRATIONS, migrate
from edge.store.retention import DAY
from edge.sync import protocol
from edge.sync.protocol import Batch, Item

from .sync_env import (  # noqa: F401  (fixtures)
    Postgres,
    hq_conn_fixture,
    hq_url_fixture,
    needs_mosquitto,
    needs_postgres,
    postgres_fixture,
)
from .test_alerts import NOW, wait_until
from .test_hq_ingest import read_data
from .test_hq_retention import PW, hq_cli, hq_key  # noqa: F401  (fixture)
from .test_sync_uplink import DEVICE, Broker, Unit, drained, start_uplink, sync_cfg

pytestmark = needs_postgres

CASE = "2026-001234"
LATER = NOW + 40 * DAY  # past the 30-day period for every read stored at NOW


def hq_reads(conn: psycopg.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT uuid FROM reads").fetchall()}


def hq_purge(conn: psycopg.Connection) -> int:
    """Headquarters' purge as ``hq serve`` runs it, 40 days on; the reads it kept because held."""
    return purge(conn, None, retention_days=30, clock=lambda: LATER, vacuum=False).held_kept


def count(conn: psycopg.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


@needs_mosquitto
def test_a_unit_hold_syncs_keeps_the_read_at_hq_and_its_release_lets_it_go(
    tmp_path: Path,
    url: str,
    conn: psycopg.Connection,
    hq_key: tuple[Ed25519PrivateKey, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")
    broker.start()
    (tmp_path / "unit").mkdir()
    unit = Unit(tmp_path / "unit" / "unit.db")
    stop = threading.Event()
    hq = IngestWorker("127.0.0.1", broker.port, url, name="hq-hold-e2e", stop=stop)
    hq.start()
    up = start_uplink(unit, sync_cfg(broker.port), stop)
    try:
        kept, other, third = unit.add_reads(3)
        ev = Evidence(unit.conn, unit.path, clock=lambda: NOW)
        (h,) = ev.hold([kept], CASE, "seen near the scene", "ivan")
        wait_until(lambda: drained(up) and count(conn, "SELECT count(*) FROM unit_hold_events") == 1, timeout=20)
        assert hq_reads(conn) == {kept, other, third}
        assert unit.conn.execute("SELECT count(*) FROM hold_events WHERE synced_at IS NULL").fetchone()[0] == 0

        assert hq_purge(conn) == 1  # past the period at HQ, but held on the unit
        assert hq_reads(conn) == {kept}
        (uh,) = HqEvidence(conn).unit_holds(active_only=True)
        assert (uh.uuid, uh.read_uuid, uh.case_number, uh.held_by) == (h.uuid, kept, CASE, "ivan")
        assert uh.placed_on == f"unit {DEVICE}" and uh.reason == "seen near the scene" and uh.active

        # An investigator at headquarters sees it, marked as the unit's, beside headquarters' own holds.
        users = HqUserStore(conn, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
        users.add("hqinv", "investigator", PW, datetime.fromtimestamp(NOW).date())
        rc, out, err = hq_cli(url, tmp_path, hq_key[1], monkeypatch, capsys, "evidence", "list", user="hqinv")
        assert rc == 0, err
        assert f"unit {DEVICE}" in out and h.uuid in out and "seen near the scene" in out and "ivan" in out
        rc, out, err = hq_cli(url, tmp_path, hq_key[1], monkeypatch, capsys, "evidence", "list", "--json", user="hqinv")
        (doc,) = [json.loads(line) for line in out.splitlines()]
        assert doc["placed_on"] == f"unit {DEVICE}" and doc["case_number"] == CASE and doc["held_by"] == "ivan"

        ev.release(hold_uuids=[h.uuid], reason="case closed", user="ada")
        wait_until(lambda: drained(up) and count(conn, "SELECT count(*) FROM unit_hold_events") == 2, timeout=20)
        assert HqEvidence(conn).unit_holds(active_only=True) == []
        (done,) = HqEvidence(conn).unit_holds()
        assert done.released_by == "ada" and done.release_reason == "case closed"
        assert hq_purge(conn) == 0 and hq_reads(conn) == set()
    finally:
        stop.set()
        up.join(5)
        hq.join(5)
        unit.close()
        broker.stop()


def hold_item(read_uuid: str, hold_uuid: str, event: str = "hold", /, **over: Any) -> Item:
    uid = str(uuid.uuid4())
    data: dict[str, Any] = {
        "uuid": uid,
        "hold_uuid": hold_uuid,
        "event": event,
        "read_uuid": read_uuid,
        "case_number": CASE,
        "reason": "seen near the scene" if event == "hold" else "case closed",
        "user_name": "ivan",
        "at": NOW,
    }
    data.update(over)
    return Item("hold", uid, {k: v for k, v in data.items() if v is not ...})


def batch(*items: Item, device: str = DEVICE) -> Batch:
    b = Batch(device, str(uuid.uuid4()), NOW, items)
    # Through the wire format, as headquarters receives it.
    return protocol.decode_batch(protocol.encode_batch(b), protocol.up_topic(device))


def read_item() -> Item:
    return Item("read", str(uuid.uuid4()), read_data(seen=NOW))


def test_bad_hold_items_are_refused_naming_the_field(conn: psycopg.Connection) -> None:
    r, h = str(uuid.uuid4()), str(uuid.uuid4())
    bad = {
        "hold_uuid": hold_item(r, h, hold_uuid=...),
        "event": hold_item(r, h, event="delete"),
        "read_uuid": hold_item(r, h, read_uuid="not-a-uuid"),
        "case_number": hold_item(r, h, case_number="x" * 129),
        "reason": hold_item(r, h, reason="  "),
        "user_name": hold_item(r, h, user_name=7),
        "at": hold_item(r, h, at="yesterday"),
    }
    mismatched = hold_item(r, h)
    bad["uuid"] = Item("hold", str(uuid.uuid4()), mismatched.data)
    good = hold_item(r, h)
    res = store_batch(conn, batch(good, *bad.values()), NOW)
    assert res.ack.stored == (good.uuid,) and res.new == 1
    reasons = {rej.uuid: rej.reason for rej in res.ack.rejected}
    for field, item in bad.items():
        assert reasons[item.uuid].startswith(f"hold: {field}"), (field, reasons[item.uuid])
    assert "x" * 20 not in " ".join(reasons.values())  # the reason names the field, never the value
    assert count(conn, "SELECT count(*) FROM unit_hold_events") == 1


def test_redelivery_is_idempotent_and_the_order_of_hold_and_release_does_not_matter(conn: psycopg.Connection) -> None:
    reads = [read_item() for _ in range(4)]
    released_first, held, redelivered, foreign = (i.uuid for i in reads)
    store_batch(conn, batch(*reads), NOW)
    h1, h2, h3, h4 = (str(uuid.uuid4()) for _ in range(4))
    # A release that overtakes its hold (two workers, out of order): stored, harmless, no crash.
    res = store_batch(conn, batch(hold_item(released_first, h1, "release")), NOW)
    assert res.new == 1 and not res.ack.rejected
    store_batch(conn, batch(hold_item(released_first, h1)), NOW)  # the hold comes after: already released
    store_batch(conn, batch(hold_item(held, h2)), NOW)
    # The same batch delivered twice: stored once, acknowledged both times.
    again = batch(hold_item(redelivered, h3))
    first, second = store_batch(conn, again, NOW), store_batch(conn, again, NOW)
    assert first.new == 1 and second.new == 0 and first.ack.stored == second.ack.stored == (again.items[0].uuid,)
    assert count(conn, "SELECT count(*) FROM unit_hold_events") == 4
    # Another unit cannot hold unit-7's reads.
    store_batch(conn, batch(hold_item(foreign, h4), device="unit-8"), NOW)

    assert {h.read_uuid for h in HqEvidence(conn).unit_holds(active_only=True)} == {held, redelivered, foreign}
    assert hq_purge(conn) == 2
    assert hq_reads(conn) == {held, redelivered}
    # Headquarters' own holds are untouched by all this and listed apart.
    assert HqEvidence(conn).holds() == []


def test_the_unit_queues_holds_and_releases_including_those_made_before_migration_7(tmp_path: Path) -> None:
    key_file = tmp_path / "db.key"
    create_key_file(key_file)
    db = tmp_path / "unit.db"
    conn = open_db(db, load_key(key_file))
    try:
        migrate(conn, MIGRATIONS[:6])
        r1, r2 = str(uuid.uuid4()), str(uuid.uuid4())
        conn.execute(
            "INSERT INTO holds (uuid, read_uuid, case_number, reason, held_by, held_at, released_by, released_at,"
            " release_reason) VALUES (?, ?, ?, 'r', 'ivan', ?, 'ada', ?, 'closed'), (?, ?, ?, 'r', 'ivan', ?,"
            " NULL, NULL, NULL)",
            (str(uuid.uuid4()), r1, CASE, NOW, NOW + 1, str(uuid.uuid4()), r2, CASE, NOW),
        )
        conn.commit()
        assert migrate(conn, MIGRATIONS[:7]) == [7]
        rows = conn.execute("SELECT uuid, event, read_uuid, user_name FROM hold_events ORDER BY rowid").fetchall()
        assert sorted((e, r, u) for _, e, r, u in rows) == sorted(
            [("hold", r1, "ivan"), ("hold", r2, "ivan"), ("release", r1, "ada")]
        )
        assert all(protocol.UUID_RE.match(u) for u, *_ in rows) and len({u for u, *_ in rows}) == 3
        with pytest.raises(Exception, match="append-only"):
            conn.execute("DELETE FROM hold_events")
    finally:
        conn.close()


def test_unit_hold_and_release_write_events_the_outbox_sends(tmp_path: Path) -> None:
    unit = Unit(tmp_path / "unit.db")
    try:
        (r,) = unit.add_reads(1)
        ev = Evidence(unit.conn, unit.path, clock=lambda: NOW)
        (h,) = ev.hold([r], CASE, "seen near the scene", "ivan")
        ev.hold([r], CASE, "seen near the scene", "ivan")  # already held for the case: no new event
        ev.release(case_number=CASE, reason="case closed", user="ada")
        box = unit.outbox()
        assert box.pending()["hold"] == 2
        b = box.next_batch(100, 10 << 20)
        assert b is not None
        items = [i for i in b.items if i.kind == "hold"]
        assert [i.data["event"] for i in items] == ["hold", "release"]
        assert all(i.data["hold_uuid"] == h.uuid and i.data["read_uuid"] == r for i in items)
        assert items[1].data["user_name"] == "ada" and items[1].data["reason"] == "case closed"
        assert [i.kind for i in b.items][:2] == ["hold", "hold"]  # before reads and images
    finally:
        unit.close()


def test_hq_export_carries_reads_held_only_on_a_unit_saying_which_unit_who_case_and_reason(
    tmp_path: Path,
    url: str,
    conn: psycopg.Connection,
    hq_key: tuple[Ed25519PrivateKey, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    users = HqUserStore(conn, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
    for name, role in (("hqinv", "investigator"), ("olga", "operator")):
        users.add(name, role, PW, datetime.fromtimestamp(NOW).date())

    def export(case: str, out: Path, user: str = "hqinv") -> tuple[int, str, str]:
        return hq_cli(url, tmp_path, hq_key[1], monkeypatch, capsys, "evidence", "export", "--case", case, str(out),
                      user=user)  # fmt: skip

    reads = [read_item() for _ in range(3)]
    unit_held, foreign, hq_held = (i.uuid for i in reads)
    not_here = str(uuid.uuid4())  # held on the unit; the read itself has not arrived (holds travel first)
    store_batch(conn, batch(*reads), NOW)
    h_unit, h_foreign, h_missing = (str(uuid.uuid4()) for _ in range(3))
    store_batch(conn, batch(hold_item(unit_held, h_unit), hold_item(not_here, h_missing)), NOW)
    store_batch(conn, batch(hold_item(foreign, h_foreign), device="unit-8"), NOW)  # not unit-8's read
    (hq_hold,) = HqEvidence(conn).hold([hq_held], CASE, "plate seen at the bank", "hqinv")

    rc, out, err = export(CASE, tmp_path / "denied", user="olga")
    assert rc == 2 and "evidence.export" in err and not (tmp_path / "denied").exists()

    rc, out, err = export(CASE, tmp_path / "case")
    assert rc == 0 and "signed by headquarters" in out, err
    assert f"left out 1 read(s) held on unit(s) {DEVICE}" in err and not_here in err
    doc = json.loads((tmp_path / "case" / "reads.json").read_text())
    by_uuid = {r["uuid"]: r for r in doc["reads"]}
    assert set(by_uuid) == {unit_held, hq_held}  # not the foreign one, not the one that has not arrived
    (held,) = by_uuid[unit_held]["holds"]
    assert (held["placed_on"], held["uuid"], held["held_by"], held["case_number"], held["reason"]) == (
        f"unit {DEVICE}", h_unit, "ivan", CASE, "seen near the scene"
    )
    assert by_uuid[unit_held]["device"] == DEVICE and by_uuid[unit_held]["text"] == read_data()["text"]
    assert [h["placed_on"] for h in by_uuid[hq_held]["holds"]] == ["headquarters"]
    (tmp_path / "hq.pem").write_text(public_pem(hq_key[0].public_key()))
    args = build_parser().parse_args(["evidence", "verify", str(tmp_path / "case"), "--public-key",
                                      str(tmp_path / "hq.pem")])  # fmt: skip
    assert args.func(args) == 0
    capsys.readouterr()
    (entry,) = HqAuditLog(conn, hq_key[0]).entries(actions=["evidence.export"])
    assert entry.user == "hqinv" and set(entry.detail["read_uuids"]) == {unit_held, hq_held}
    assert set(entry.detail["hold_uuids"]) == {h_unit, hq_hold.uuid} and entry.detail["held_on_units"] == [DEVICE]
    assert entry.detail["not_received_read_uuids"] == [not_here]

    # Once the unit's release arrives, that read is no longer part of the case's export.
    store_batch(conn, batch(hold_item(unit_held, h_unit, "release")), NOW)
    rc, out, err = export(CASE, tmp_path / "after")
    assert rc == 0, err
    assert [r["uuid"] for r in json.loads((tmp_path / "after" / "reads.json").read_text())["reads"]] == [hq_held]

    # Bad cases: nothing held at all, and held only on a unit whose read has not arrived.
    rc, out, err = export("2026-999999", tmp_path / "none")
    assert rc == 2 and "no read is held for it" in err and not (tmp_path / "none").exists()
    store_batch(conn, batch(hold_item(str(uuid.uuid4()), str(uuid.uuid4()), case_number="2026-000777")), NOW)
    rc, out, err = export("2026-000777", tmp_path / "pending")
    assert rc == 2 and f"held only on unit(s) {DEVICE}" in err and "not reached headquarters" in err
    assert not (tmp_path / "pending").exists()
    assert len(HqAuditLog(conn, hq_key[0]).entries(actions=["evidence.export"])) == 2
