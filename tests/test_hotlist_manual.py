"""Manual hot list entries on real SQLCipher files: required fields, the approval gate (administrators only, four
eyes), reject/remove/expiry, the change record, the check of recent reads with the real matcher, and the commands
with logins against the real user accounts (edge.access.users, Argon2id)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.access.audit import AuditLog, create_signing_key, load_signing_key
from edge.access.users import UserStore
from edge.gps import NO_FIX
from edge.hotlist import manual
from edge.hotlist import manual_commands as mc
from edge.hotlist.entry import Hit, HotEntry
from edge.hotlist.manual import (
    ADDED,
    APPROVED,
    EXPIRED,
    REJECTED,
    REMOVED,
    EntryNotFoundError,
    EntryStateError,
    ManualEntries,
    recheck_recent_reads,
)
from edge.hotlist.matcher import Matcher
from edge.store import ReadStore, create_key_file, load_key
from edge.store.db import Connection, IntegrityError, open_db
from edge.store.migrations import migrate
from edge.vision.ocr import Candidate
from edge.vision.tracker import Read

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "keys" / "db.key"
    create_key_file(p)
    create_signing_key(p.parent / "audit.key")  # the access record's key, beside it as `keys init` makes it
    return p


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "reads.db"


@pytest.fixture()
def conn(db: Path, key_file: Path) -> Iterator[Connection]:
    c = open_db(db, load_key(key_file))
    migrate(c)
    yield c
    c.close()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def entries(conn: Connection, clock: Clock) -> ManualEntries:
    return ManualEntries(conn, clock=clock)


GOOD: dict[str, Any] = {
    "plate_pattern": "7ABC123",
    "list_code": "STOLEN_VEHICLE",
    "reason": "Stolen vehicle",
    "instructions": "stop only with probable cause",
    "case_number": "PPB-2024-0117",
    "synopsis": "Grey sedan taken from a driveway on NE 42nd overnight.",
    "entered_by": "alice",
    "requesting_officer": "Sgt. Dana Ruiz",
}


def add(entries: ManualEntries, **over: Any) -> str:
    return entries.add(**{**GOOD, **over})


# --- fields -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"plate_pattern": ""}, "plate"),
        ({"plate_pattern": "  "}, "plate"),
        ({"plate_pattern": "AB"}, "plate"),  # too few known characters
        ({"plate_pattern": "A*B?"}, "plate"),
        ({"plate_pattern": "7AB$123"}, "plate"),
        ({"plate_pattern": "7ABC1234567890ABC"}, "plate"),
        ({"plate_pattern": "", "vehicle_description": "red pickup, ladder rack"}, "plate"),
        ({"entered_by": ""}, "entered_by"),
        ({"entered_by": None}, "entered_by"),
        ({"requesting_officer": " "}, "requesting_officer"),
        ({"case_number": ""}, "case_number"),
        ({"synopsis": ""}, "synopsis"),
        ({"synopsis": "too short"}, "synopsis"),
        ({"reason": ""}, "reason"),
        ({"list_code": ""}, "list_code"),
        ({"list_code": "PARKING"}, "list_code"),
        ({"expires_at": T0 - 1}, "expires_at"),
        ({"expires_at": T0}, "expires_at"),
        ({"expires_at": float("nan")}, "expires_at"),
        ({"state": "OREGON"}, "state"),
        ({"reason": "Stolen\x1b[2J"}, "reason"),
    ],
)
def test_bad_or_missing_field_is_refused_by_name(
    entries: ManualEntries, conn: Connection, over: dict[str, Any], field: str
) -> None:
    keep = add(entries)
    with pytest.raises(ValueError, match=rf"^{field}:"):
        add(entries, **over)
    assert [e.entry_id for e in entries.list()] == [keep]  # nothing stored, nothing lost
    assert [c.action for c in entries.changes()] == [ADDED]
    assert not conn.in_transaction


def test_plates_are_normalised_and_partial_plates_allowed(entries: ManualEntries) -> None:
    a = add(entries, plate_pattern=" 7ab-c 12.3 ", state=" or ", list_code="stolen_vehicle")
    b = add(entries, plate_pattern="7ab**", vehicle_description="  red pickup, ladder rack ")
    c = add(entries, plate_pattern="?x?9*z")
    ea, eb, ec = entries.get(a), entries.get(b), entries.get(c)
    assert ea is not None and eb is not None and ec is not None
    assert (ea.plate_pattern, ea.state, ea.list_code, ea.status) == ("7ABC123", "OR", "STOLEN_VEHICLE", "pending")
    assert (eb.plate_pattern, eb.vehicle_description) == ("7AB*", "red pickup, ladder rack")
    assert ec.plate_pattern == "?X?9*Z"
    assert (ea.entered_by, ea.requesting_officer, ea.entered_at) == ("alice", "Sgt. Dana Ruiz", T0)
    assert entries.get(str(uuid.uuid4())) is None


# --- the approval gate ------------------------------------------------------------------------------------------


def test_pending_entries_never_match_and_approval_is_gated(entries: ManualEntries, clock: Clock) -> None:
    eid = add(entries)
    assert entries.active(T0) == []
    assert entries.active(T0 + 86400 * 365) == []
    with pytest.raises(PermissionError, match="four eyes"):
        entries.approve(eid, "ALICE ", role="administrator")  # the entering member, however spelled
    with pytest.raises(PermissionError, match="only an ALPR administrator"):
        entries.approve(eid, "carol", role="operator")
    with pytest.raises(PermissionError, match="only an ALPR administrator"):
        entries.approve(eid, "carol", role="Administrator")
    with pytest.raises(EntryNotFoundError):
        entries.approve(str(uuid.uuid4()), "bob", role="administrator")
    with pytest.raises(ValueError, match=r"^entry_id:"):
        entries.approve(eid.upper(), "bob", role="administrator")
    e = entries.get(eid)
    assert e is not None and (e.status, e.approved_by) == ("pending", None)
    assert entries.active(T0) == []
    assert [c.action for c in entries.changes()] == [ADDED]

    clock.t = T0 + 60
    hot = entries.approve(eid, "bob", role="administrator")
    assert entries.active(T0 + 61) == [hot]
    assert hot == HotEntry(
        entry_id=eid,
        list_id="manual",
        plate="7ABC123",
        state=None,
        list_code="STOLEN_VEHICLE",
        reason="Stolen vehicle",
        case_number="PPB-2024-0117",
        entered=T0,
        expires=None,
        instructions="stop only with probable cause",
        vehicle_description="",
        entered_by="alice",  # P6: a hit on it carries these to headquarters
        requesting_officer="Sgt. Dana Ruiz",
        synopsis=GOOD["synopsis"],
    )
    e = entries.get(eid)
    assert e is not None and (e.status, e.approved_by, e.approved_at) == ("active", "bob", T0 + 60)
    with pytest.raises(EntryStateError, match="is active"):
        entries.approve(eid, "dave", role="administrator")


def test_the_database_itself_refuses_self_approval(entries: ManualEntries, conn: Connection) -> None:
    eid = add(entries)
    with pytest.raises(IntegrityError):
        conn.execute(
            "UPDATE hotlist_manual_entries SET status = 'active', approved_by = 'Alice' WHERE entry_id = ?", (eid,)
        )
    e = entries.get(eid)
    assert e is not None and e.status == "pending"


def test_reject_and_remove_take_entries_out(entries: ManualEntries, clock: Clock) -> None:
    rejected, removed, withdrawn = add(entries), add(entries, plate_pattern="8XYZ*"), add(entries)
    with pytest.raises(PermissionError):
        entries.reject(rejected, "carol", "not enough detail", role="investigator")
    with pytest.raises(ValueError, match=r"^why:"):
        entries.reject(rejected, "bob", " ", role="administrator")
    entries.reject(rejected, "bob", "synopsis does not support an entry", role="administrator")
    with pytest.raises(EntryStateError, match="is rejected"):
        entries.approve(rejected, "bob", role="administrator")

    entries.approve(removed, "bob", role="administrator")
    assert [h.entry_id for h in entries.active(T0)] == [removed]
    with pytest.raises(PermissionError, match="only an administrator or the entering member"):
        entries.remove(removed, "carol", "stale", role="operator")
    assert [h.entry_id for h in entries.active(T0)] == [removed]
    entries.remove(removed, "dave", "vehicle recovered", role="administrator")
    assert entries.active(T0) == []
    with pytest.raises(EntryStateError, match="is removed"):
        entries.remove(removed, "dave", "again", role="administrator")

    entries.remove(withdrawn, "alice", "entered by mistake", role="operator")  # the entering member, own entry
    assert {e.entry_id: e.status for e in entries.list()} == {
        rejected: "rejected",
        removed: "removed",
        withdrawn: "removed",
    }
    assert [e.entry_id for e in entries.list("removed")] == [removed, withdrawn]
    assert entries.list("pending") == []
    with pytest.raises(ValueError, match=r"^status:"):
        entries.list("approved")


def test_expiry_takes_entries_out_and_is_recorded(entries: ManualEntries, clock: Clock) -> None:
    eid = add(entries, expires_at=T0 + 3600)
    late = add(entries, expires_at=T0 + 600)
    lasting = add(entries)
    entries.approve(eid, "bob", role="administrator")
    entries.approve(lasting, "bob", role="administrator")
    assert {h.entry_id for h in entries.active(T0 + 3599)} == {eid, lasting}
    assert [h.entry_id for h in entries.active(T0 + 3600)] == [lasting]  # out at expiry, before anyone marks it
    got = entries.get(eid)
    assert got is not None and got.status == "active"

    clock.t = T0 + 601
    with pytest.raises(EntryStateError, match="expired before it was approved"):
        entries.approve(late, "bob", role="administrator")
    got = entries.get(late)
    assert got is not None and (got.status, got.approved_by) == ("expired", None)

    assert entries.expire_due(T0 + 3600) == [eid]
    assert entries.expire_due(T0 + 7200) == []
    assert [e.entry_id for e in entries.list("expired")] == [eid, late]
    expired = [c for c in entries.changes() if c.action == EXPIRED]
    assert [(c.entry_id, c.actor, c.at) for c in expired] == [(late, "system", T0 + 601), (eid, "system", T0 + 3600)]
    assert expired[1].details == {"expires_at": T0 + 3600, "previous_status": "active"}


def test_every_change_is_recorded_in_order(entries: ManualEntries, conn: Connection, clock: Clock) -> None:
    a = add(entries, expires_at=T0 + 1000, state="OR")
    clock.t = T0 + 10
    b = add(entries, entered_by="erin", plate_pattern="4QX*")
    clock.t = T0 + 20
    entries.approve(a, "bob", role="administrator")
    clock.t = T0 + 30
    entries.reject(b, "bob", "partial plate too vague", role="administrator")
    # another helper's change rows share the table; they are not manual entry changes
    conn.execute(
        "INSERT INTO hotlist_changes (at, actor, action, entry_id, details) VALUES (?, 'hq', 'bundle-accepted', "
        "NULL, '{}')",
        (T0 + 35,),
    )
    clock.t = T0 + 40
    entries.remove(a, "dave", "vehicle recovered", role="administrator")
    c = add(entries, expires_at=T0 + 100)
    entries.approve(c, "bob", role="administrator")
    entries.expire_due(T0 + 200)

    log = entries.changes()
    assert [(ch.action, ch.entry_id, ch.actor, ch.at) for ch in log] == [
        (ADDED, a, "alice", T0),
        (ADDED, b, "erin", T0 + 10),
        (APPROVED, a, "bob", T0 + 20),
        (REJECTED, b, "bob", T0 + 30),
        (REMOVED, a, "dave", T0 + 40),
        (ADDED, c, "alice", T0 + 40),
        (APPROVED, c, "bob", T0 + 40),
        (EXPIRED, c, "system", T0 + 200),
    ]
    assert [s.seq for s in log] == sorted(s.seq for s in log)
    added = log[0].details
    assert added["plate_pattern"] == "7ABC123" and added["state"] == "OR"
    assert added["requesting_officer"] == "Sgt. Dana Ruiz" and added["case_number"] == "PPB-2024-0117"
    assert added["synopsis"] == GOOD["synopsis"] and added["expires_at"] == T0 + 1000
    assert log[2].details == {"role": "administrator"}
    assert log[3].details == {"why": "partial plate too vague", "role": "administrator", "previous_status": "pending"}
    assert log[4].details == {"why": "vehicle recovered", "role": "administrator", "previous_status": "active"}
    assert [ch.action for ch in entries.changes(b)] == [ADDED, REJECTED]
    raw = conn.execute("SELECT action FROM hotlist_changes ORDER BY seq").fetchall()
    assert [r[0] for r in raw].count("bundle-accepted") == 1 and len(raw) == len(log) + 1


def test_refused_changes_record_nothing(entries: ManualEntries) -> None:
    eid = add(entries)
    for attempt in (
        lambda: entries.approve(eid, "alice", role="administrator"),
        lambda: entries.approve(eid, "carol", role="operator"),
        lambda: entries.reject(eid, "carol", "no", role="auditor"),
        lambda: entries.remove(eid, "carol", "no", role="operator"),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert [c.action for c in entries.changes()] == [ADDED]


def test_entries_survive_reopening(db: Path, key_file: Path, clock: Clock) -> None:
    c1 = open_db(db, load_key(key_file))
    migrate(c1)
    eid = add(ManualEntries(c1, clock=clock))
    ManualEntries(c1, clock=clock).approve(eid, "bob", role="administrator")
    c1.close()
    c2 = open_db(db, load_key(key_file), create=False)
    try:
        again = ManualEntries(c2, clock=clock)
        assert [h.entry_id for h in again.active(T0)] == [eid]
        assert [c.action for c in again.changes(eid)] == [ADDED, APPROVED]
    finally:
        c2.close()
    assert b"7ABC123" not in db.read_bytes() and b"PPB-2024" not in db.read_bytes()  # encrypted at rest


# --- the check of recent reads ----------------------------------------------------------------------------------


def _jpeg() -> bytes:
    ok, enc = cv2.imencode(".jpg", np.full((24, 96, 3), 200, np.uint8))
    assert ok
    return bytes(enc.tobytes())


CROP = _jpeg()


def make_read(text: str, t: float, candidates: tuple[Candidate, ...] = ()) -> Read:
    return Read(
        uuid=str(uuid.uuid4()),
        camera_id="front",
        text=text,
        confidence=0.9,
        char_confidences=tuple(0.9 for _ in text),
        candidates=candidates or (Candidate(text, 0.9),),
        region="us",
        plate_format="us",
        box=(10, 10, 96, 24),
        crop_jpeg=CROP,
        scene_jpeg=CROP,
        first_seen=t - 0.5,
        last_seen=t + 0.5,
        best_seen=t,
        frames_seen=5,
    )


@pytest.fixture()
def store(db: Path, key_file: Path) -> Iterator[ReadStore]:
    with ReadStore.open(db, load_key(key_file), free_bytes=lambda: 1 << 40) as s:
        yield s


def _entry(plate: str, **over: Any) -> HotEntry:
    e = HotEntry("e-1", "manual", plate, None, "STOLEN_VEHICLE", "Stolen vehicle", "C-1", T0, None, "")
    return dataclasses.replace(e, **over)


MATCH_ONE = Matcher([]).match_one  # the real matcher (edge/hotlist/matcher.py)


def test_recheck_finds_recent_reads_only(store: ReadStore) -> None:
    now = T0
    two_h = make_read("7ABC123", now - 2 * 3600)
    store.add(two_h, NO_FIX)
    store.add(make_read("7ABC123", now - 10 * 3600), NO_FIX)  # too old for hours=6
    store.add(make_read("9ZZZ999", now - 1 * 3600), NO_FIX)  # recent, another plate
    lookalike = make_read("7A8C123", now - 3 * 3600)  # B read as 8
    store.add(lookalike, NO_FIX)
    alt = make_read("7ABG123", now - 4 * 3600, (Candidate("7ABG123", 0.5), Candidate("7ABC123", 0.4)))
    store.add(alt, NO_FIX)

    found = recheck_recent_reads(store, _entry("7ABC123"), MATCH_ONE, 6, now)
    assert [(r.uuid, h.kind, h.candidate_rank) for r, h in found] == [
        (two_h.uuid, "exact", 0),
        (lookalike.uuid, "lookalike", 0),
        (alt.uuid, "exact", 1),
    ]
    assert all(h.entry.entry_id == "e-1" for _, h in found)
    assert [r.uuid for r, _ in recheck_recent_reads(store, _entry("7AB*"), MATCH_ONE, 6, now)] == [
        two_h.uuid,
        lookalike.uuid,
        alt.uuid,
    ]
    assert len(recheck_recent_reads(store, _entry("7ABC123"), MATCH_ONE, 12, now)) == 4
    assert recheck_recent_reads(store, _entry("7ABC123"), MATCH_ONE, 0, now) == []
    assert recheck_recent_reads(store, _entry("7ABC123", state="OR"), MATCH_ONE, 6, now)  # read state unknown
    for bad in (-1, 721, float("nan")):
        with pytest.raises(ValueError, match=r"^hours:"):
            recheck_recent_reads(store, _entry("7ABC123"), MATCH_ONE, bad, now)


def test_recheck_pages_through_reads_with_equal_times(store: ReadStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manual, "RECHECK_PAGE", 3)
    now = T0
    times = [now - 60] * 7 + [now - 120, now - 180] * 2 + [now - 240]
    reads = [make_read("7ABC123", t) for t in times]
    for r in reads:
        store.add(r, NO_FIX)
    calls: list[str] = []

    def counting(entry: HotEntry, text: str, *rest: Any) -> Hit | None:
        calls.append(text)
        return MATCH_ONE(entry, text, *rest)

    found = recheck_recent_reads(store, _entry("7ABC123"), counting, 1, now)
    assert sorted(r.uuid for r, _ in found) == sorted(r.uuid for r in reads)
    assert len(calls) == len(reads)  # each read checked exactly once


# --- the commands -----------------------------------------------------------------------------------------------


USERS = {
    "alice": ("Tr4ffic-Stop#1", "administrator"),
    "bob": ("Ledger.9-Pines", "administrator"),
    "carol": ("Quiet_Harbor_77", "operator"),
    "terry": ("Soldering-Iron-42", "technician"),
}


def _make_users(conn: Connection) -> None:
    users = UserStore(conn)
    for name, (password, role) in USERS.items():
        users.add(name, role, password, date(2020, 1, 1))


@pytest.fixture()
def cli(
    db: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    c = open_db(db, load_key(key_file))  # the unit's database, with its accounts
    try:
        migrate(c)
        _make_users(c)
    finally:
        c.close()
    parser = argparse.ArgumentParser(prog="alpr-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    mc.register(sub)  # the default login check: the unit's user accounts

    def run(*argv: str, user: str = "alice", password: str | None = None) -> tuple[int, str, str]:
        pw = USERS[user][0] if password is None and user in USERS else password or "x"
        monkeypatch.setattr("sys.stdin", io.StringIO(pw + "\n"))
        args = parser.parse_args(
            [*argv, "--user", user, "--password-stdin", "--db", str(db), "--key-file", str(key_file)]
        )
        rc = args.func(args)
        out, err = capsys.readouterr()
        return rc, out, err

    return run


ADD = (
    "hotlist", "add", "--plate", "7abc 123", "--list-code", "stolen_vehicle", "--reason", "Stolen vehicle",
    "--case-number", "PPB-2024-0117", "--synopsis", "Grey sedan taken from a driveway overnight.",
    "--requesting-officer", "Sgt. Dana Ruiz", "--instructions", "stop only with probable cause",
)  # fmt: skip


def test_commands_add_approve_and_list(cli: Callable[..., tuple[int, str, str]], db: Path, key_file: Path) -> None:
    rc, out, err = cli(*ADD)
    assert rc == 0, err
    eid = out.split(":")[0]
    assert str(uuid.UUID(eid)) == eid and "pending" in out and "7ABC123" not in out

    rc, out, _ = cli("hotlist", "pending", user="carol")
    assert rc == 0 and eid in out and "7ABC123" in out and "Sgt. Dana Ruiz" in out and "driveway" in out

    rc, _, err = cli("hotlist", "approve", eid)  # alice entered it
    assert rc == 1 and "four eyes" in err
    rc, _, err = cli("hotlist", "approve", eid, user="carol")
    assert rc == 1 and "only an ALPR administrator" in err
    rc, _, err = cli("hotlist", "approve", eid, user="bob", password="wrong")
    assert rc == 1 and "login failed" in err

    with ReadStore.open(db, load_key(key_file)) as store:  # a read 2 hours ago, stamped with real time
        import time

        seen = make_read("7ABC123", time.time() - 2 * 3600)
        store.add(seen, NO_FIX)
        store.add(make_read("7ABC123", time.time() - 10 * 3600), NO_FIX)
    rc, out, err = cli("hotlist", "approve", eid, user="bob")
    assert rc == 0, err
    assert "approved by bob" in out and "1 stored read(s) of the last 6 h match it" in out and seen.uuid in out
    assert "7ABC123" not in out

    rc, out, _ = cli("hotlist", "entries", "--status", "active", "--json", user="carol")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["entry_id"], r["plate"], r["entered_by"], r["approved_by"]) for r in rows] == [
        (eid, "7ABC123", "alice", "bob")
    ]
    rc, out, _ = cli("hotlist", "entries", "--status", "pending", user="carol")
    assert rc == 0 and "(no entries)" in out

    rc, _, err = cli("hotlist", "remove", eid, "--why", "recovered", user="carol")
    assert rc == 1 and "may not remove" in err
    rc, out, err = cli("hotlist", "remove", eid, "--why", "vehicle recovered", user="bob")
    assert rc == 0, err
    rc, out, _ = cli("hotlist", "entries", user="carol")
    assert "removed" in out and eid in out


def test_commands_refusals(cli: Callable[..., tuple[int, str, str]]) -> None:
    short = [*ADD]
    short[short.index("--synopsis") + 1] = "short"
    rc, out, err = cli(*short, user="carol")
    assert rc == 2 and "--synopsis" in err and out == ""
    bad_plate = [*ADD]
    bad_plate[bad_plate.index("--plate") + 1] = "7*"
    rc, _, err = cli(*bad_plate, user="carol")
    assert rc == 2 and "--plate" in err
    rc, _, err = cli(*ADD, user="mallory", password="guess")
    assert rc == 1 and "login failed" in err
    rc, out, _ = cli("hotlist", "entries", user="carol")
    assert "(no entries)" in out  # nothing was stored by the refused commands

    rc, out, _ = cli(*ADD, user="carol")
    eid = out.split(":")[0]
    rc, _, err = cli("hotlist", "reject", eid, "--why", "too vague", user="carol")
    assert rc == 1 and "only an ALPR administrator" in err
    rc, out, err = cli("hotlist", "reject", eid, "--why", "synopsis too vague", user="alice")
    assert rc == 0 and "rejected" in out
    rc, _, err = cli("hotlist", "approve", eid, user="bob")
    assert rc == 1 and "is rejected" in err
    rc, _, err = cli("hotlist", "approve", str(uuid.uuid4()), user="bob")
    assert rc == 1 and "no manual hot list entry" in err
    rc, _, err = cli("hotlist", "approve", "../1; DROP", user="bob")
    assert rc == 2 and "entry_id" in err


def test_commands_are_recorded_and_a_technician_is_refused(
    cli: Callable[..., tuple[int, str, str]], db: Path, key_file: Path
) -> None:
    rc, out, err = cli(*ADD, user="carol")
    assert rc == 0, err
    eid = out.split(":")[0]
    rc, out, err = cli("hotlist", "pending", user="terry")
    assert rc == 1 and out == "" and "hotlist.manage: needs role operator, investigator or administrator" in err
    rc, _, err = cli("hotlist", "approve", eid, user="alice", password="wrong password")
    assert rc == 1
    assert cli("hotlist", "pending", user="alice")[0] == 0
    assert cli("hotlist", "approve", eid, "--recheck-hours", "0", user="alice")[0] == 0
    rc, out, _ = cli(*ADD, user="carol")
    eid2 = out.split(":")[0]
    assert cli("hotlist", "reject", eid2, "--why", "synopsis too vague", user="bob")[0] == 0
    conn = open_db(db, load_key(key_file))
    try:
        audit = AuditLog(conn, load_signing_key(key_file.parent / "audit.key"))
        rows = audit.entries()
        assert audit.verify(audit.public_key).ok
    finally:
        conn.close()
    acts = [(e.user, e.action) for e in rows if e.action != "login"]
    assert acts == [
        ("carol", "hotlist.add"), ("terry", "access.denied"), ("alice", "login.refused"),
        ("alice", "hotlist.view"), ("alice", "hotlist.approve"), ("carol", "hotlist.add"), ("bob", "hotlist.reject"),
    ]  # fmt: skip
    by = {e.action: e for e in rows}
    assert by["hotlist.approve"].detail == {"entry_id": eid, "case_number": "PPB-2024-0117"}
    assert by["hotlist.reject"].detail == {"entry_id": eid2, "case_number": "PPB-2024-0117"}
    assert by["hotlist.reject"].reason == "synopsis too vague"
    assert by["hotlist.view"].detail == {"entry_ids": [eid], "count": 1}
    assert by["access.denied"].detail["what"] == "hotlist.manage" and by["login.refused"].detail["why"] == "password"
    assert [e.user for e in rows if e.action == "login"] == ["carol", "alice", "alice", "carol", "bob"]


def test_register_manual_joins_an_existing_hotlist_group() -> None:
    parser = argparse.ArgumentParser(prog="alpr-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    hotlist = sub.add_parser("hotlist", help="hot lists")
    hs = hotlist.add_subparsers(dest="hotlist_command", required=True)
    hs.add_parser("status", help="the lists in force (the feed's command)")
    mc.register_manual(hs)
    assert set(hs.choices) == {"status", "add", "pending", "approve", "reject", "remove", "entries"}
    args = parser.parse_args(["hotlist", "reject", "abc", "--why", "x", "--user", "bob"])
    assert (args.entry_id, args.why, args.user, args.password_stdin) == ("abc", "x", "bob", False)


def test_every_command_and_option_has_help() -> None:
    parser = argparse.ArgumentParser(prog="alpr-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    hs = mc.register(sub)
    assert sub._choices_actions[0].help  # the hotlist group
    for action in hs._choices_actions:
        assert action.help, action.dest
        p = hs.choices[action.dest]
        for opt in p._actions:
            assert opt.help, f"{action.dest} {opt.dest}"
