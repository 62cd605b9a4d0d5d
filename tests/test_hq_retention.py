"""Retention and evidence at headquarters (P10) on a real PostgreSQL (tests/sync_env.py): the purge takes what is past
the period with its images, hits and outcomes (and rows whose read never came), never a held read, records itself in
``purges`` and hq_audit and vacuums; holds and releases need the roles; an export is signed by headquarters and
carries the unit's own access-record entries, checkable with the unit's registered key."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.types.json import Jsonb

from edge.access.audit import make_entry, public_pem
from edge.cli import build_parser
from edge.hotlist.bundle import private_key_pem
from edge.hq.access import HqAuditLog, HqUserStore
from edge.hq.retention import purge
from edge.store.retention import DAY

from .sync_env import Postgres, hq_conn_fixture, hq_url_fixture, needs_postgres, postgres_fixture  # noqa: F401

pytestmark = needs_postgres

NOW = time.time()
OLD, RECENT = NOW - 40 * DAY, NOW - 2 * DAY
PW = "correct horse battery"
TODAY = datetime.fromtimestamp(NOW).date()
UNIT = "unit-9"


@pytest.fixture
def hq_key(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "hq-signing.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    return key, path


def add_read(conn: psycopg.Connection, t: float, *, text: str = "HQR100", hits: int = 0) -> str:
    r = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO reads (uuid, device_id, camera_id, text, confidence, char_confidences, candidates, box_x, box_y,"
        " box_w, box_h, first_seen, last_seen, best_seen, frames_seen, fix_source, fix_mode, lat, lon, stored_at,"
        " received_at) VALUES (%s, %s, 'front', %s, 0.9, '[0.9]', %s, 1, 2, 3, 4, %s, %s, %s, 3, 'gpsd', 3, 45.5,"
        " -73.6, %s, %s)",
        (r, UNIT, text, Jsonb([[text, 0.9]]), t, t, t, t, t),
    )
    for kind in ("crop", "scene"):
        conn.execute(
            "INSERT INTO read_images (read_uuid, kind, uuid, device_id, jpeg, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (r, kind, uuid.uuid4(), UNIT, b"\xff\xd8" + os.urandom(2000), t),
        )
    for _ in range(hits):
        add_hit(conn, r, t)
    return r


def add_hit(conn: psycopg.Connection, read_uuid: str, t: float) -> str:
    h = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO hits (uuid, device_id, read_uuid, camera_id, read_text, read_confidence, seen_at, list_id,"
        " list_version, entry_id, wanted_plate, list_code, reason, instructions, case_number, matched_text,"
        " match_kind, match_detail, list_age_s, list_stale, created_at, received_at) VALUES (%s, %s, %s, 'front',"
        " 'HQR100', 0.9, %s, 'ncic', 1, 'e', 'HQR*', 's', 'stolen', 'none', 'C-1', 'HQR100', 'exact', '{}', 1, false,"
        " %s, %s)",
        (h, UNIT, read_uuid, t, t, t),
    )
    conn.execute(
        "INSERT INTO hit_outcomes (uuid, device_id, hit_uuid, outcome, officer, at, received_at)"
        " VALUES (%s, %s, %s, 'confirmed', 'o1', %s, %s)",
        (uuid.uuid4(), UNIT, h, t, t),
    )
    return h


def hold(conn: psycopg.Connection, read_uuid: str) -> None:
    conn.execute(
        "INSERT INTO holds (id, read_uuid, case_number, reason, held_by, held_at) VALUES (%s, %s, 'C-9', 'r', 'i', %s)",
        (uuid.uuid4(), read_uuid, NOW),
    )


def reads(conn: psycopg.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT uuid FROM reads").fetchall()}


def n(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_purge_takes_what_is_due_keeps_what_is_held_records_and_vacuums(
    conn: psycopg.Connection, hq_key: tuple[Ed25519PrivateKey, Path]
) -> None:
    audit = HqAuditLog(conn, hq_key[0])
    gone = add_read(conn, OLD, hits=2)
    held = add_read(conn, OLD, hits=1)
    hold(conn, held)
    recent = add_read(conn, RECENT, hits=1)
    lone = str(uuid.uuid4())  # an image and a hit whose read never reached headquarters
    conn.execute(
        "INSERT INTO read_images (read_uuid, kind, uuid, device_id, jpeg, received_at) VALUES (%s, 'crop', %s, %s,"
        " %s, %s)",
        (lone, uuid.uuid4(), UNIT, b"\xff\xd8x", OLD),
    )
    add_hit(conn, lone, OLD)

    dry = purge(conn, audit, retention_days=30, dry_run=True)
    assert (dry.reads, dry.images, dry.hits, dry.outcomes, dry.held_kept) == (1, 3, 3, 3, 1)
    assert len(reads(conn)) == 3 and n(conn, "purges") == 0 and audit.entries(actions=["purge"]) == []

    t_purge = time.time()
    r = purge(conn, audit, retention_days=30)
    assert (r.reads, r.images, r.hits, r.outcomes, r.held_kept, r.unsynced_kept) == (1, 3, 3, 3, 1, 0)
    assert reads(conn) == {held, recent} and gone not in reads(conn)
    assert n(conn, "read_images") == 4 and n(conn, "hits") == 2 and n(conn, "hit_outcomes") == 2
    row = conn.execute("SELECT by_user, reads, images, hits, outcomes, held_kept, older_than FROM purges").fetchone()
    assert row is not None and row[:6] == ("system", 1, 3, 3, 3, 1) and abs(row[6] - (t_purge - 30 * DAY)) < 60
    (entry,) = audit.entries(actions=["purge"])
    assert (entry.user, entry.detail["reads"], entry.detail["held_kept"]) == ("system", 1, 1)
    assert audit.verify(hq_key[0].public_key()).ok
    deadline = time.monotonic() + 10
    vacuumed: set[str] = set()
    while time.monotonic() < deadline and len(vacuumed) < 4:
        vacuumed = {
            str(t[0])
            for t in conn.execute(
                "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL"
                " AND relname IN ('reads', 'read_images', 'hits', 'hit_outcomes')"
            ).fetchall()
        }
        time.sleep(0.1)
    assert vacuumed == {"reads", "read_images", "hits", "hit_outcomes"}

    # Nothing due: the scheduled check stays quiet.
    assert purge(conn, audit, retention_days=30, record_empty=False).reads == 0
    assert n(conn, "purges") == 1 and len(audit.entries(actions=["purge"])) == 1


def hq_cli(
    url: str, tmp: Path, key: Path, mp: pytest.MonkeyPatch, cap: pytest.CaptureFixture[str], *argv: str, user: str
) -> tuple[int, str, str]:
    url_file = tmp / "db-url"
    url_file.write_text(url)
    mp.setattr("sys.stdin", io.StringIO(PW + "\n"))
    args = build_parser().parse_args(
        ["hq", *argv, "--user", user, "--password-stdin", "--signing-key", str(key), "--db-url-file", str(url_file)]
    )
    rc = args.func(args)
    out, err = cap.readouterr()
    return rc, out, err


@pytest.fixture
def people(conn: psycopg.Connection) -> None:
    users = HqUserStore(conn, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
    for name, role in (
        ("ada", "administrator"),
        ("ivan", "investigator"),
        ("tess", "technician"),
        ("olga", "operator"),
    ):
        users.add(name, role, PW, TODAY)


def test_hq_commands_roles_and_a_signed_export_with_the_units_entries(
    url: str,
    conn: psycopg.Connection,
    people: None,
    hq_key: tuple[Ed25519PrivateKey, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, key_file = hq_key

    def run(*argv: str, user: str) -> tuple[int, str, str]:
        return hq_cli(url, tmp_path, key_file, monkeypatch, capsys, *argv, user=user)

    keep = add_read(conn, OLD, text="HQK700", hits=1)
    other = add_read(conn, OLD)
    # The unit's own entry about the read, as ingested, with the unit's key registered at headquarters.
    unit_key = Ed25519PrivateKey.generate()
    e = make_entry(unit_key, 1, "0" * 64, NOW, "olga", "operator", "reads.view", "", {"read_uuids": [keep], "count": 1})
    conn.execute(
        "INSERT INTO audit (uuid, device_id, data, received_at) VALUES (%s, %s, %s, %s)",
        (e.uuid, UNIT, Jsonb(e.to_json()), NOW),
    )
    conn.execute(
        "INSERT INTO devices (device_id, first_seen, last_seen, audit_key) VALUES (%s, %s, %s, %s)",
        (UNIT, NOW, NOW, public_pem(unit_key.public_key())),
    )

    rc, out, err = run("evidence", "hold", keep, "--case", "2026-HQ-5", "--reason", "robbery suspect", user="olga")
    assert rc == 2 and "evidence.hold" in err
    rc, out, err = run("evidence", "hold", keep, "--case", "2026-HQ-5", "--reason", "robbery suspect", user="ivan")
    assert rc == 0 and "1 read(s) held" in out
    hold_id = out.split()[0]
    rc, out, err = run("purge", user="olga")
    assert rc == 2 and "maintenance" in err
    rc, out, err = run("purge", user="tess")
    assert rc == 0 and out.startswith("purged 1 read(s)") and "kept 1 because held" in out
    assert reads(conn) == {keep} and other not in reads(conn)

    out_dir = tmp_path / "export.tar.gz"
    rc, out, err = run("evidence", "export", "--case", "2026-HQ-5", str(out_dir), user="ivan")
    assert rc == 0 and "signed by headquarters" in out, err
    pub = tmp_path / "hq.pem"
    pub.write_text(public_pem(key.public_key()))
    args = build_parser().parse_args(["evidence", "verify", str(out_dir), "--public-key", str(pub)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "from headquarters" in text and "2 access-record entries checked" in text  # HQ's hold + the unit's view
    wrong = tmp_path / "unit.pem"
    wrong.write_text(public_pem(unit_key.public_key()))
    args = build_parser().parse_args(["evidence", "verify", str(out_dir), "--public-key", str(wrong)])
    assert args.func(args) == 1 and "untrusted-signer" in capsys.readouterr().out

    rc, out, err = run("evidence", "release", hold_id, "--reason", "case closed", user="ivan")
    assert rc == 2 and "evidence.release" in err
    rc, out, err = run("evidence", "release", hold_id, "--reason", "case closed", user="ada")
    assert rc == 0 and "1 hold(s) released" in out
    rc, out, err = run("evidence", "list", "--all", "--json", user="ivan")
    (h,) = [json.loads(line) for line in out.splitlines()]
    assert h["released_by"] == "ada" and h["read_uuid"] == keep
    audit = HqAuditLog(conn, key)
    actions = [e.action for e in audit.entries()]
    for a in ("evidence.hold", "evidence.export", "evidence.release", "purge", "access.denied"):
        assert a in actions
    assert audit.verify(key.public_key()).ok
    rc, out, err = run("purge", user="tess")
    assert rc == 0 and reads(conn) == set()  # released: purged at the next run


def test_hq_serve_purges_on_schedule_and_needs_the_signing_key(
    url: str, conn: psycopg.Connection, hq_key: tuple[Ed25519PrivateKey, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.hq.commands import HqError
    from edge.hq.retention import start_scheduled

    monkeypatch.delenv("ALPR_HQ_SIGNING_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    stop = threading.Event()
    no_key = build_parser().parse_args(["hq", "serve", "--broker", "localhost"])
    assert no_key.retention_days == 30 and no_key.purge_interval == 3600  # on by default
    with pytest.raises(HqError, match="--purge-interval 0"):
        start_scheduled(no_key, url, stop)
    off = build_parser().parse_args(["hq", "serve", "--broker", "localhost", "--purge-interval", "0"])
    assert start_scheduled(off, url, stop) is None

    gone = add_read(conn, OLD)
    args = build_parser().parse_args(
        ["hq", "serve", "--broker", "localhost", "--signing-key", str(hq_key[1]), "--purge-interval", "0.2"]
    )
    worker = start_scheduled(args, url, stop, first_delay_s=0)  # a minute after start in production
    assert worker is not None
    deadline = time.monotonic() + 20
    while gone in reads(conn) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    worker.join(10)
    assert gone not in reads(conn) and worker.fault is None and not worker.is_alive()
    (entry,) = HqAuditLog(conn, hq_key[0]).entries(actions=["purge"])
    assert entry.user == "system" and entry.detail["reads"] == 1
