"""Retention on the unit (P10) on real SQLCipher files: only reads headquarters acknowledged (with their images, hits
and outcomes) are purged, never a held one; an administrator's forced purge is recorded, refused to others; and a
purged plate is really gone: the test decrypts every page of the database file and its WAL itself (SQLCipher 4
defaults with a raw key) and finds no byte of it, in live or free pages, while a kept plate is still found."""

from __future__ import annotations

import argparse
import dataclasses
import io
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from edge.access.audit import AuditLog, create_signing_key, load_signing_key
from edge.access.users import UserStore
from edge.cli import build_parser
from edge.gps import NO_FIX
from edge.store.db import Connection, open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate
from edge.store.reads import ReadStore
from edge.store.retention import DAY, RetentionWorker, purge

from .test_store import make_read

NOW = time.time()
OLD = NOW - 40 * DAY
RECENT = NOW - 1 * DAY
PW = "correct horse battery"
TODAY = datetime.fromtimestamp(NOW).date()
PAGE, RESERVE = 4096, 80  # SQLCipher 4: 16-byte IV + 64-byte HMAC-SHA512 at the end of every page


@dataclasses.dataclass
class Unit:
    db: Path
    key: bytes
    key_file: Path
    audit_key: Path
    conn: Connection
    audit: AuditLog
    store: ReadStore


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    key_file = tmp_path / "db.key"
    create_key_file(key_file)
    key = load_key(key_file)
    audit_key = tmp_path / "audit.key"
    create_signing_key(audit_key)
    db = tmp_path / "reads.db"
    store = ReadStore.open(db, key)
    conn = open_db(db, key)
    migrate(conn)
    u = Unit(db, key, key_file, audit_key, conn, AuditLog(conn, load_signing_key(audit_key)), store)
    yield u
    store.close()
    conn.close()


def add(u: Unit, t: float, *, text: str = "ABC123", synced: bool = True, hits: int = 0, outcomes: int = 0) -> str:
    """A stored read (crop and scene) at capture time ``t``, optionally with hits and outcomes; all acknowledged by
    headquarters when ``synced``."""
    r = make_read(text, t, candidates=())
    u.store.add(r, NO_FIX)
    for _ in range(hits):
        hit = str(uuid.uuid4())
        u.conn.execute(
            "INSERT INTO hits (uuid, read_uuid, camera_id, read_text, read_confidence, seen_at, list_id, list_version,"
            " entry_id, wanted_plate, list_code, reason, instructions, case_number, matched_text, match_kind,"
            " match_detail, list_age_s, list_stale, created_at) VALUES (?, ?, 'front', ?, 0.9, ?, 'ncic', 1, 'e1',"
            " 'Z*', 'stolen', 'stolen', 'none', 'C-1', ?, 'exact', '{}', 1.0, 0, ?)",
            (hit, r.uuid, text, t, text, t),
        )
        for _ in range(outcomes):
            u.conn.execute(
                "INSERT INTO hit_outcomes (uuid, hit_uuid, outcome, officer, at) VALUES (?, ?, 'confirmed', 'o1', ?)",
                (str(uuid.uuid4()), hit, t),
            )
    if synced:
        for table, col in (("reads", "uuid"), ("read_images", "read_uuid"), ("hits", "read_uuid")):
            u.conn.execute(f"UPDATE {table} SET synced_at = ? WHERE {col} = ?", (NOW, r.uuid))
        u.conn.execute(
            "UPDATE hit_outcomes SET synced_at = ? WHERE hit_uuid IN (SELECT uuid FROM hits WHERE read_uuid = ?)",
            (NOW, r.uuid),
        )
    return r.uuid


def hold(u: Unit, read_uuid: str, released: bool = False) -> None:
    u.conn.execute(
        "INSERT INTO holds (uuid, read_uuid, case_number, reason, held_by, held_at, released_by, released_at)"
        " VALUES (?, ?, 'C-2026-1', 'evidence', 'ivan', ?, ?, ?)",
        (str(uuid.uuid4()), read_uuid, NOW, "ada" if released else None, NOW if released else None),
    )


def stored(u: Unit) -> set[str]:
    return {r[0] for r in u.conn.execute("SELECT uuid FROM reads").fetchall()}


def count(u: Unit, table: str) -> int:
    return int(u.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --- what is purged ----------------------------------------------------------------------------------------------


def test_only_acknowledged_unheld_reads_past_the_period_are_purged(unit: Unit) -> None:
    acked = add(unit, OLD)
    with_hit = add(unit, OLD, hits=1, outcomes=2)
    unsent = add(unit, OLD, synced=False)
    image_unsent = add(unit, OLD)
    unit.conn.execute("UPDATE read_images SET synced_at = NULL WHERE read_uuid = ? AND kind = 'scene'", (image_unsent,))
    outcome_unsent = add(unit, OLD, hits=1, outcomes=1)
    unit.conn.execute(
        "UPDATE hit_outcomes SET synced_at = NULL WHERE hit_uuid IN (SELECT uuid FROM hits WHERE read_uuid = ?)",
        (outcome_unsent,),
    )
    held = add(unit, OLD, hits=1)
    hold(unit, held)
    released = add(unit, OLD)
    hold(unit, released, released=True)  # a released hold keeps nothing
    recent = add(unit, RECENT, synced=False)
    recent_acked = add(unit, RECENT)

    dry = purge(unit.conn, unit.audit, retention_days=30, dry_run=True)
    assert (dry.reads, dry.images, dry.hits, dry.outcomes) == (3, 6, 1, 2)
    assert len(stored(unit)) == 9 and unit.audit.entries(actions=["purge"]) == []  # a dry run changes nothing

    t_purge = time.time()
    r = purge(unit.conn, unit.audit, retention_days=30)
    assert (r.reads, r.images, r.hits, r.outcomes, r.held_kept, r.unsynced_kept) == (3, 6, 1, 2, 1, 3)
    assert not r.forced and r.wal_cleared
    assert stored(unit) == {unsent, image_unsent, outcome_unsent, held, recent, recent_acked}
    assert acked not in stored(unit) and with_hit not in stored(unit) and released not in stored(unit)
    assert count(unit, "hits") == 2 and count(unit, "hit_outcomes") == 1  # the held read's hit, the unsent outcome
    assert count(unit, "read_images") == 12
    (entry,) = unit.audit.entries(actions=["purge"])
    assert (entry.user, entry.role) == ("system", "system")
    d = entry.detail
    assert (d["reads"], d["images"], d["hits"], d["outcomes"], d["held_kept"], d["unsynced_kept"]) == (3, 6, 1, 2, 1, 3)
    assert d["forced"] is False and abs(d["older_than"] - (t_purge - 30 * DAY)) < 60
    assert unit.audit.verify(unit.audit.public_key).ok

    # Forced (an administrator): what headquarters has not acknowledged goes too; held reads never do.
    f = purge(unit.conn, unit.audit, retention_days=30, user="ada", role="administrator", force=True)
    assert (f.reads, f.held_kept, f.unsynced_kept, f.forced) == (3, 1, 0, True)
    assert stored(unit) == {held, recent, recent_acked}
    last = unit.audit.entries(actions=["purge"])[-1]
    assert (last.user, last.role, last.detail["forced"]) == ("ada", "administrator", True)


def test_a_hold_keeps_a_read_until_released_and_the_quiet_hourly_check(unit: Unit) -> None:
    held = add(unit, OLD)
    hold(unit, held)
    assert purge(unit.conn, unit.audit, retention_days=30, record_empty=False).reads == 0
    assert unit.audit.entries(actions=["purge"]) == []  # nothing due: the hourly check records nothing
    unit.conn.execute("UPDATE holds SET released_at = ?, released_by = 'ada' WHERE read_uuid = ?", (NOW, held))
    assert purge(unit.conn, unit.audit, retention_days=30, record_empty=False).reads == 1
    assert len(unit.audit.entries(actions=["purge"])) == 1
    with pytest.raises(ValueError, match="retention_days"):
        purge(unit.conn, unit.audit, retention_days=0)


def test_batches_are_short_transactions(unit: Unit) -> None:
    uuids = {add(unit, OLD - i) for i in range(7)}
    seen: list[int] = []

    class Spy:
        def __init__(self, c: Connection) -> None:
            self.c = c

        def execute(self, sql: str, params: Any = ()) -> Any:
            if sql.startswith("BEGIN"):
                seen.append(len(stored(unit)))
            return self.c.execute(sql, params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.c, name)

    r = purge(Spy(unit.conn), None, retention_days=30, batch=3)  # type: ignore[arg-type]
    assert r.reads == 7 and not stored(unit) & uuids
    assert seen == [7, 4, 1, 0]  # three reads per transaction, then the empty check


def test_the_daemons_worker_purges_on_its_own_connection(unit: Unit) -> None:
    gone = add(unit, OLD)
    stop = threading.Event()
    signer = load_signing_key(unit.audit_key)
    w = RetentionWorker(unit.db, unit.key, lambda c: AuditLog(c, signer), 30, stop, interval_s=0.2, first_delay_s=0)
    w.start()
    deadline = time.monotonic() + 10
    while gone in stored(unit) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone not in stored(unit)
    late = add(unit, OLD)  # the next check takes it too
    while late in stored(unit) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    w.join(5)
    assert not w.is_alive() and w.fault is None and late not in stored(unit)
    entries = unit.audit.entries(actions=["purge"])
    assert [e.detail["reads"] for e in entries] == [1, 1]  # empty checks in between recorded nothing
    assert unit.audit.verify(unit.audit.public_key).ok


# --- the command -------------------------------------------------------------------------------------------------


def cli(
    u: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, user: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    args = build_parser().parse_args(
        [
            *argv,
            "--user",
            user,
            "--password-stdin",
            "--db",
            str(u.db),
            "--key-file",
            str(u.key_file),
            "--audit-key-file",
            str(u.audit_key),
        ]
    )
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_purge_command_force_is_for_administrators_only(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    users = UserStore(unit.conn)
    for name, role in (("ada", "administrator"), ("ivan", "investigator"), ("tess", "technician")):
        users.add(name, role, PW, TODAY)
    add(unit, OLD)
    unsent = add(unit, OLD, synced=False)
    hold(unit, add(unit, OLD))

    rc, out, err = cli(unit, monkeypatch, capsys, "purge", "--force", user="ivan")
    assert rc == 2 and "purge.force" in err and "administrator" in err and unsent in stored(unit)
    assert unit.audit.entries(actions=["access.denied"])[-1].user == "ivan"
    rc, out, err = cli(unit, monkeypatch, capsys, "purge", user="ivan")  # plain purge: technician or administrator
    assert rc == 2 and "maintenance" in err

    rc, out, err = cli(unit, monkeypatch, capsys, "purge", "--dry-run", user="tess")
    assert rc == 0 and out.startswith("would purge 1 read(s)") and "kept 1 because held, 1 because not yet" in out
    rc, out, err = cli(unit, monkeypatch, capsys, "purge", user="tess")
    assert rc == 0 and out.startswith("purged 1 read(s) older than 30 days") and unsent in stored(unit)
    rc, out, err = cli(unit, monkeypatch, capsys, "purge", "--force", user="ada")
    assert rc == 0 and "purged 1 read(s)" in out and "forced" in out and unsent not in stored(unit)
    entries = unit.audit.entries(actions=["purge"])
    assert [(e.user, e.detail["forced"], e.detail["reads"]) for e in entries] == [("tess", False, 1), ("ada", True, 1)]
    assert "ABC123" not in out + err  # counts only, never plates
    helptext = io.StringIO()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["purge"].print_help(helptext)
    assert "must be held as evidence" in " ".join(helptext.getvalue().split())


# --- really gone: decrypting the pages ourselves -----------------------------------------------------------------


def decrypt_page(raw: bytes, pgno: int, key: bytes) -> bytes:
    """One SQLCipher 4 page (raw key: the key is the AES-256 key itself): AES-256-CBC over the page less its reserved
    tail, with the IV stored in the first 16 reserved bytes; page 1 starts with the 16-byte salt, not encrypted."""
    assert len(raw) == PAGE
    iv = raw[PAGE - RESERVE : PAGE - RESERVE + 16]
    start = 16 if pgno == 1 else 0
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    body = d.update(raw[start : PAGE - RESERVE]) + d.finalize()
    return (b"SQLite format 3\x00" if pgno == 1 else b"") + body


def main_pages(path: Path, key: bytes) -> list[bytes]:
    data = path.read_bytes()
    assert len(data) % PAGE == 0
    return [decrypt_page(data[i : i + PAGE], i // PAGE + 1, key) for i in range(0, len(data), PAGE)]


def wal_pages(path: Path, key: bytes) -> list[bytes]:
    """Every frame of the WAL (32-byte header, then 24-byte frame headers each followed by one page)."""
    data = path.read_bytes() if path.exists() else b""
    out = []
    for off in range(32, len(data) - PAGE + 1, 24 + PAGE):
        (pgno,) = struct.unpack(">I", data[off : off + 4])
        out.append(decrypt_page(data[off + 24 : off + 24 + PAGE], pgno, key))
    return out


def freelist(pages: list[bytes]) -> tuple[set[int], set[int]]:
    """Trunk and leaf page numbers of the freelist, walked from the decrypted header of page 1."""
    (trunk,) = struct.unpack(">I", pages[0][32:36])
    trunks: set[int] = set()
    leaves: set[int] = set()
    while trunk:
        trunks.add(trunk)
        p = pages[trunk - 1]
        nxt, n = struct.unpack(">II", p[:8])
        leaves.update(struct.unpack(f">{n}I", p[8 : 8 + 4 * n]))
        trunk = nxt
    return trunks, leaves


def found(pages: list[bytes], needle: bytes) -> int:
    return sum(needle in p for p in pages)


PURGED, KEPT = b"PURGE7X1", b"KEEP5Y2"


@pytest.mark.parametrize("secure", [True, False], ids=["secure_delete", "control-without-secure_delete"])
def test_a_purged_plate_leaves_no_byte_in_the_file_the_wal_or_free_pages(unit: Unit, secure: bool) -> None:
    if not secure:  # the control shows the test can fail: without secure_delete the plate stays in free pages
        unit.conn.execute("PRAGMA secure_delete = OFF")
    reader = open_db(unit.db, unit.key)  # another connection stays open throughout, as the daemon's do
    for _ in range(20):
        add(unit, OLD, text=PURGED.decode(), hits=1, outcomes=1)
    kept = add(unit, OLD, text=KEPT.decode())
    hold(unit, kept)
    add(unit, RECENT, text="FILLER9")
    db, wal = unit.db, unit.db.with_name("reads.db-wal")

    # The decryptor first proves itself: the page header decrypts to SQLite's, and both plates are found, in the WAL
    # (the inserts) and, after a checkpoint that leaves the WAL in place, in the database file too.
    assert found(wal_pages(wal, unit.key), PURGED) > 0 and found(wal_pages(wal, unit.key), KEPT) > 0
    unit.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    pages = main_pages(db, unit.key)
    assert struct.unpack(">HBBB", pages[0][16:21]) == (
        PAGE,
        2,
        2,
        RESERVE,
    )  # page size, WAL read/write versions, reserved
    assert found(pages, PURGED) > 0 and found(pages, KEPT) > 0
    assert PURGED not in db.read_bytes() and PURGED not in wal.read_bytes()  # encrypted: grepping proves nothing

    r = purge(unit.conn, unit.audit, retention_days=30)
    assert r.reads == 20 and r.hits == 20 and r.held_kept == 1
    pages = main_pages(db, unit.key)
    trunks, leaves = freelist(pages)
    free = trunks | leaves
    assert len(free) >= 10  # the images' overflow pages were freed and stay in the file
    assert int(unit.conn.execute("PRAGMA freelist_count").fetchone()[0]) == len(free)
    assert found(pages, KEPT) > 0  # the held plate is still there and readable by this decryptor
    if secure:
        assert found(pages, PURGED) == 0
        assert found([pages[n - 1] for n in free], PURGED) == 0
        assert all(pages[n - 1].count(0) == len(pages[n - 1]) for n in leaves)  # zeroed before encryption
        # The WAL was truncated after the purge; what it holds now is only the purge's own access-record entry.
        assert r.wal_cleared and wal.stat().st_size <= 32 + 8 * (24 + PAGE)
        assert found(wal_pages(wal, unit.key), PURGED) == 0
    else:
        assert found(pages, PURGED) > 0
    reader.close()
