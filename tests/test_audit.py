"""The access record (P13) on real SQLCipher files: recording, the hash chain and signatures, tampering in each way
as an attacker with the key and a SQL shell would do it (triggers dropped), `alpr-edge audit verify|list`, the
login and role checks with every refusal path, concurrency, and a SIGKILL in the middle of recording."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.access import audit_commands
from edge.access.audit import (
    GENESIS,
    AuditEntry,
    AuditError,
    AuditLog,
    canonical_json,
    create_signing_key,
    entry_hash,
    load_public_pem,
    load_signing_key,
    make_entry,
    public_pem,
    verify_chain,
)
from edge.access.session import ROLES_FOR, AccessDenied, add_login_args, cli_login, require
from edge.access.users import ROLES, AuthError, User, UserStore
from edge.store import commands as store_commands
from edge.store.db import Connection, DBError, open_db
from edge.store.errors import KeyFileError
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate

REPO = Path(__file__).resolve().parents[1]
PW = "correct horse battery"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keys beside each other as `keys init` makes them, a migrated database with one user per role."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    keys = tmp_path / "keys"
    create_key_file(keys / "db.key")
    create_signing_key(keys / "audit.key")
    conn = open_db(tmp_path / "unit.db", load_key(keys / "db.key"))
    try:
        migrate(conn)
        users = UserStore(conn, hasher=FAST)
        for role in ROLES:
            users.add(role[:4] + "1", role, PW, date(2020, 1, 1))  # oper1, inve1, admi1, audi1, tech1
        users.add("late1", "operator", PW, None)  # training not recorded: no access
    finally:
        conn.close()
    return tmp_path


def store_args(unit: Path) -> list[str]:
    return ["--db", str(unit / "unit.db"), "--key-file", str(unit / "keys" / "db.key")]


@pytest.fixture
def conn(unit: Path) -> Iterator[Connection]:
    c = open_db(unit / "unit.db", load_key(unit / "keys" / "db.key"))
    yield c
    c.close()


@pytest.fixture
def log(conn: Connection, unit: Path) -> AuditLog:
    return AuditLog(conn, load_signing_key(unit / "keys" / "audit.key"))


def fill(log: AuditLog, n: int = 8) -> list[AuditEntry]:
    return [
        log.record("oper1", "operator", "reads.view", detail={"read_uuids": [f"r{i}"], "count": 1}) for i in range(n)
    ]


# --- the entry and its hash -----------------------------------------------------------------------------------


def test_record_and_verify(log: AuditLog) -> None:
    entries = fill(log, 3)
    e = log.record("inve1", "investigator", "search", reason="case 2026-001234: vol à l'étalage",
                   detail={"criteria": {"plate": "7AB*", "radius_m": 250.5, "neg": -0.0}, "results": 2})  # fmt: skip
    assert [x.seq for x in [*entries, e]] == [1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS and e.prev_hash == entries[2].hash
    assert log.entries() == [*entries, e]  # what was recorded is what is read back
    assert log.verify(log.public_key).ok and log.verify(log.public_key).entries == 4
    # the hash is over canonical JSON: sorted keys, no spaces, UTF-8, floats as repr, -0.0 as 0.0
    doc: dict[str, Any] = {
        "seq": 4, "uuid": e.uuid, "at": e.at, "user": "inve1", "role": "investigator", "action": "search",
        "reason": e.reason, "detail": {"criteria": {"plate": "7AB*", "radius_m": 250.5, "neg": 0.0}, "results": 2},
        "prev_hash": e.prev_hash,
    }  # fmt: skip
    import hashlib

    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert e.hash == hashlib.sha256(text.encode()).hexdigest() == entry_hash(**doc)
    assert "é" in canonical_json(doc) and '"radius_m":250.5' in canonical_json(doc)
    # by filter
    assert [x.seq for x in log.entries(actions=["search"])] == [4]
    assert [x.seq for x in log.entries(user="oper1", limit=2)] == [1, 2]
    assert log.entries(start=e.at + 1) == [] and log.entries(actions=[]) == []


def test_wire_form_round_trip_and_validation() -> None:
    key = Ed25519PrivateKey.generate()
    e = make_entry(key, 1, GENESIS, 1_790_000_000.25, "kim", "operator", "login", detail={"via": "cli"})
    doc = e.to_json()
    assert set(doc) == {"seq", "uuid", "at", "user", "role", "action", "reason", "detail", "prev_hash", "hash", "sig"}
    assert AuditEntry.from_json(json.loads(json.dumps(doc))) == e
    bad = {
        "seq": 0, "at": float("inf"), "uuid": "not-a-uuid", "user": "", "action": "Login!", "detail": [],
        "prev_hash": "0" * 63, "hash": "Z" * 64, "sig": "!!", "role": 5, "reason": "x" * 5000,
    }  # fmt: skip
    for field, value in bad.items():
        with pytest.raises(ValueError, match=f"^{field}: "):
            AuditEntry.from_json(doc | {field: value})
    with pytest.raises(ValueError, match=r"^extra: not a field"):
        AuditEntry.from_json(doc | {"extra": 1})
    with pytest.raises(ValueError, match=r"^sig: missing"):
        AuditEntry.from_json({k: v for k, v in doc.items() if k != "sig"})
    for detail in ({"x": float("nan")}, {"x": 1e16}, {"x": "a\x00b"}, {1: "int key"}, {"x": object()}):
        with pytest.raises(ValueError, match="detail"):
            make_entry(key, 1, GENESIS, 1.0, "kim", "operator", "login", detail=detail)  # type: ignore[arg-type]


def test_a_detail_too_large_or_a_bad_action_is_refused_and_nothing_written(log: AuditLog) -> None:
    with pytest.raises(AuditError, match="detail"):
        log.record("oper1", "operator", "reads.view", detail={"read_uuids": ["x" * 36] * 2000})
    with pytest.raises(AuditError, match="action"):
        log.record("oper1", "operator", "DROP TABLE")
    assert log.entries() == []
    assert log.record("oper1", "operator", "login").seq == 1  # and the log still works


def test_signing_key_files(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "audit.key"
    pub = create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="already exists"):
        create_signing_key(path)
    key = load_signing_key(path, environ={})
    assert public_pem(key) == public_pem(pub) and load_public_pem(public_pem(key)) is not None
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="0640"):
        load_signing_key(path, environ={})
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="keys init"):
        load_signing_key(tmp_path / "none.key", environ={})
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_signing_key(junk, environ={})
    cred = tmp_path / "cred"
    cred.mkdir()
    (cred / "alpr-edge-audit-key").write_bytes(path.read_bytes())  # systemd's LoadCredential copy wins
    assert public_pem(load_signing_key(tmp_path / "none.key", environ={"CREDENTIALS_DIRECTORY": str(cred)})) == (
        public_pem(pub)
    )


# --- append-only and tampering on the real file ----------------------------------------------------------------


def test_the_triggers_refuse_update_and_delete_but_allow_the_sync_columns(log: AuditLog, conn: Connection) -> None:
    fill(log, 2)
    refused = (
        "UPDATE audit SET user_name = 'x' WHERE seq = 1",
        "UPDATE audit SET detail = '{}'",
        "UPDATE audit SET seq = 9 WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 2",
        "DELETE FROM audit",
    )
    for sql in refused:
        with pytest.raises(DBError, match="append-only"):
            conn.execute(sql)
    conn.execute("UPDATE audit SET synced_at = 5.0, sync_rejected = 0 WHERE seq = 1")
    assert log.verify(log.public_key).ok and conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 2


def attacker(conn: Connection) -> None:
    """What someone with the key and a SQL shell does first."""
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")


COLS = "uuid, at, user_name, role, action, reason, detail, prev_hash, hash, sig"


def swap_contents(conn: Connection, a: int, b: int) -> None:
    row_a = conn.execute(f"SELECT {COLS} FROM audit WHERE seq = ?", (a,)).fetchone()
    row_b = conn.execute(f"SELECT {COLS} FROM audit WHERE seq = ?", (b,)).fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in COLS.split(","))
    conn.execute("UPDATE audit SET uuid = 'tmp' WHERE seq = ?", (a,))  # uuid is UNIQUE
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*row_a, b))
    conn.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*row_b, a))


def forged_row(prev_hash: str, seq: int) -> tuple[object, ...]:
    e = make_entry(Ed25519PrivateKey.generate(), seq, prev_hash, time.time(), "admi1", "administrator", "purge")
    return (e.seq, e.uuid, e.at, e.user, e.role, e.action, e.reason, canonical_json(e.detail), e.prev_hash, e.hash,
            e.sig)  # fmt: skip


def insert_in_the_middle(conn: Connection, at: int) -> None:
    """Renumber seq >= at up by one (as an attacker must: seq has no gaps) and put a forged entry at ``at``."""
    prev = conn.execute("SELECT hash FROM audit WHERE seq = ?", (at - 1,)).fetchone()[0]
    conn.execute("UPDATE audit SET seq = -seq WHERE seq >= ?", (at,))
    conn.execute("UPDATE audit SET seq = 1 - seq WHERE seq < 0")
    conn.execute(f"INSERT INTO audit (seq, {COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", forged_row(prev, at))


def resign_altered(conn: Connection, seq: int) -> None:
    """Alter a field and recompute the hash (but without the unit's key the signature cannot follow)."""
    r = conn.execute(f"SELECT seq, {COLS} FROM audit WHERE seq = ?", (seq,)).fetchone()
    e = AuditEntry(int(r[0]), r[1], r[2], "someone-else", r[4], r[5], r[6], json.loads(r[7]), r[8], r[9], r[10])
    conn.execute("UPDATE audit SET user_name = ?, hash = ? WHERE seq = ?", (e.user, e.computed_hash(), seq))


TAMPERING: dict[str, tuple[Callable[[Connection], object], list[tuple[int, str]]]] = {
    "alter a field": (lambda c: c.execute("UPDATE audit SET user_name = 'admi1' WHERE seq = 4"), [(4, "altered")]),
    "alter the detail": (
        lambda c: c.execute("""UPDATE audit SET detail = '{"count":0}' WHERE seq = 2"""),
        [(2, "altered")],
    ),
    "alter and re-hash": (lambda c: resign_altered(c, 5), [(5, "altered")]),
    "delete a row": (lambda c: c.execute("DELETE FROM audit WHERE seq = 5"), [(5, "deleted")]),
    "delete the first rows": (lambda c: c.execute("DELETE FROM audit WHERE seq <= 2"), [(1, "deleted")]),
    "swap two rows' contents": (lambda c: swap_contents(c, 3, 6), [(3, "reordered"), (6, "reordered")]),
    "swap neighbours": (lambda c: swap_contents(c, 6, 7), [(6, "reordered"), (7, "reordered")]),
    "insert a forged row": (lambda c: insert_in_the_middle(c, 4), [(4, "inserted"), (5, "reordered")]),
    "append a forged row": (
        lambda c: c.execute(
            f"INSERT INTO audit (seq, {COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            forged_row(c.execute("SELECT hash FROM audit WHERE seq = 8").fetchone()[0], 9),
        ),
        [(9, "bad-signature")],
    ),
    "change a signature": (
        lambda c: c.execute("UPDATE audit SET sig = (SELECT sig FROM audit WHERE seq = 1) WHERE seq = 3"),
        [(3, "bad-signature")],
    ),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampering_is_found_and_named(
    how: str, unit: Path, log: AuditLog, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(log, 8)
    attacker(conn)
    change, expected = TAMPERING[how]
    change(conn)
    result = log.verify(log.public_key)
    assert [(p.seq, p.kind) for p in result.problems] == expected, result.problems
    # the command names them too, one line each, exit 1
    args = parser().parse_args(["audit", "verify", *store_args(unit)])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert [ln.split(":")[:2] for ln in lines] == [[f"seq {s}", f" {k}"] for s, k in expected]
    assert "NOT intact" in err


def test_verify_with_the_registered_key_catches_a_record_re_signed_with_a_new_key(
    unit: Path, log: AuditLog, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(log, 3)
    registered = unit / "registered.pub"
    registered.write_text(public_pem(log.public_key))
    p = parser()
    args = p.parse_args(["audit", "verify", "--public-key", str(registered), *store_args(unit)])
    assert args.func(args) == 0 and "intact: 3 entries" in capsys.readouterr().out
    # root replaces the key file and rewrites the whole chain with it: the unit's own key now agrees...
    attacker(conn)
    conn.execute("DELETE FROM audit")
    (unit / "keys" / "audit.key").unlink()
    create_signing_key(unit / "keys" / "audit.key")
    forged = AuditLog(conn, load_signing_key(unit / "keys" / "audit.key"))
    fill(forged, 2)
    args = p.parse_args(["audit", "verify", *store_args(unit)])
    assert args.func(args) == 0
    capsys.readouterr()
    # ...but not the key headquarters registered
    args = p.parse_args(["audit", "verify", "--public-key", str(registered), *store_args(unit)])
    assert args.func(args) == 1
    assert "bad-signature" in capsys.readouterr().out


# --- concurrency and power cuts -----------------------------------------------------------------------------------


def test_threads_and_processes_recording_at_once_get_contiguous_seqs(unit: Path, log: AuditLog) -> None:
    other = open_db(unit / "unit.db", load_key(unit / "keys" / "db.key"))  # a second connection: another process
    log2 = AuditLog(other, load_signing_key(unit / "keys" / "audit.key"))
    errors: list[BaseException] = []

    def work(lg: AuditLog, who: str) -> None:
        try:
            for i in range(25):
                lg.record(who, "operator", "reads.view", detail={"i": i})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(lg, f"user{n}")) for n, lg in enumerate([log, log, log2, log2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors
    rows = log.entries()
    assert [e.seq for e in rows] == list(range(1, 101))
    assert log.verify(log.public_key).ok


KILL_LOOP = """
import sys
from pathlib import Path
from typing import Any
from edge.access.audit import AuditLog, load_signing_key
from edge.store.db import open_db
from edge.store.keys import load_key
d = Path(sys.argv[1])
log = AuditLog(open_db(d / "unit.db", load_key(d / "keys" / "db.key")), load_signing_key(d / "keys" / "audit.key"))
i = 0
while True:
    e = log.record("system", "system", "purge", detail={"i": i})
    print(e.seq, flush=True)
    i += 1
"""


def test_sigkill_mid_recording_leaves_a_valid_chain(unit: Path, log: AuditLog) -> None:
    reported = 0
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(unit)], stdout=subprocess.PIPE, text=True,
                             cwd=REPO)  # fmt: skip
        assert p.stdout is not None
        for _ in range(20):  # let it get going, then kill it wherever it is
            reported = int(p.stdout.readline())
        p.send_signal(signal.SIGKILL)
        p.wait()
    rows = log.entries()
    assert len(rows) >= reported and [e.seq for e in rows] == list(range(1, len(rows) + 1))
    assert log.verify(log.public_key).ok


# --- who may do what, and the login ---------------------------------------------------------------------------


def test_roles_table() -> None:
    tech = User("tech1", "technician", date(2020, 1, 1), False)
    for what in ("reads.view", "hits.view", "search", "evidence.export", "audit.view", "hotlist.manage"):
        with pytest.raises(AccessDenied, match=f"^{what}: needs role .*; tech1 is technician$"):
            require(tech, what)
    require(tech, "maintenance")
    require(tech, "health")
    with pytest.raises(AccessDenied, match=r"^evidence\.release: needs role administrator; "):
        require(User("inve1", "investigator", None, False), "evidence.release")
    with pytest.raises(ValueError, match="unknown kind of access"):
        require(tech, "everything")
    assert all(set(roles) <= set(ROLES) for roles in ROLES_FOR.values())


def login_args(name: str, password: str) -> tuple[argparse.Namespace, io.StringIO]:
    p = argparse.ArgumentParser()
    add_login_args(p)
    return p.parse_args(["--user", name, "--password-stdin"]), io.StringIO(password + "\n")


@pytest.mark.parametrize(
    ("name", "password", "what", "refusal", "action", "why"),
    [
        ("oper1", "wrong password!!", "reads.view", AuthError, "login.refused", "password"),
        ("nobody", PW, "reads.view", AuthError, "login.refused", "unknown"),
        ("late1", PW, "reads.view", AuthError, "login.refused", "training"),
        ("tech1", PW, "reads.view", AccessDenied, "access.denied", None),  # a technician asking for reads
        ("oper1", PW, "audit.view", AccessDenied, "access.denied", None),
        ("audi1", PW, "search", AccessDenied, "access.denied", None),
    ],
)
def test_every_refusal_is_refused_and_recorded(
    log: AuditLog, conn: Connection, monkeypatch: pytest.MonkeyPatch, name: str, password: str, what: str,
    refusal: type[Exception], action: str, why: str | None,
) -> None:  # fmt: skip
    args, stdin = login_args(name, password)
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(refusal):
        cli_login(args, conn, log, what)
    [e] = log.entries()
    assert (e.user, e.action) == (name, action)
    assert e.detail.get("why") == why if why else e.detail["what"] == what


def test_a_locked_account_is_refused_even_with_the_right_password(
    log: AuditLog, conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        args, stdin = login_args("oper1", "wrong password!!")
        monkeypatch.setattr("sys.stdin", stdin)
        with pytest.raises(AuthError):
            cli_login(args, conn, log, "reads.view")
    args, stdin = login_args("oper1", PW)
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(AuthError):
        cli_login(args, conn, log, "reads.view")
    assert [e.detail["why"] for e in log.entries()] == ["password"] * 5 + ["locked"]


def test_a_login_that_cannot_be_recorded_is_refused(unit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = open_db(unit / "unit.db", load_key(unit / "keys" / "db.key"))
    c.execute("DROP TABLE audit")  # the record cannot be written
    args, stdin = login_args("oper1", PW)
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(AuditError):
        cli_login(args, c, AuditLog(c, load_signing_key(unit / "keys" / "audit.key")), "reads.view")
    c.close()


def test_a_session_records_under_the_user(log: AuditLog, conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    args, stdin = login_args("INVE1", PW)
    monkeypatch.setattr("sys.stdin", stdin)
    s = cli_login(args, conn, log, "search")
    e = s.record("search", reason="case 2026-1", detail={"results": 0})
    assert [(x.user, x.role, x.action) for x in log.entries()] == [
        ("inve1", "investigator", "login"), ("inve1", "investigator", "search")
    ]  # fmt: skip
    assert e.reason == "case 2026-1"


# --- the commands -----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr-edge")
    sub = p.add_subparsers(dest="command", required=True)
    audit_commands.register(sub)
    store_commands.register(sub)
    return p


def run(argv: list[str], password: str = PW) -> int:
    args = parser().parse_args(argv)
    old = sys.stdin
    sys.stdin = io.StringIO(password + "\n")
    try:
        return int(args.func(args))
    finally:
        sys.stdin = old


def test_audit_list_needs_an_auditor_and_records_the_viewing(
    unit: Path, log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(log, 3)
    log.record("inve1", "investigator", "search", reason="case 2026-001234", detail={"results": 1})
    for user in ("oper1", "tech1", "inve1"):
        assert run(["audit", "list", "--user", user, "--password-stdin", *store_args(unit)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "audit.view: needs role auditor or administrator" in err
    assert run(["audit", "list", "--user", "audi1", "--password-stdin", *store_args(unit)], "nope nope nope") == 2
    assert "login refused" in capsys.readouterr().err
    assert run(["audit", "list", "--user", "audi1", "--password-stdin", "--action", "search", *store_args(unit)]) == 0
    out = capsys.readouterr().out
    assert "case 2026-001234" in out and "inve1" in out and "reads.view" not in out
    assert run(["audit", "list", "--user", "admi1", "--password-stdin", "--json", "--of-user", "oper1",
                "--action", "reads.view", "--limit", "2", *store_args(unit)]) == 0  # fmt: skip
    docs = [AuditEntry.from_json(json.loads(line)) for line in capsys.readouterr().out.splitlines()]
    assert [d.seq for d in docs] == [1, 2]
    views = log.entries(actions=["audit.view"])
    assert [(v.user, v.detail["count"]) for v in views] == [("audi1", 1), ("admi1", 2)]
    assert views[1].detail["criteria"]["user"] == "oper1"
    denied = log.entries(actions=["access.denied"])
    assert [(d.user, d.role) for d in denied] == [("oper1", "operator"), ("tech1", "technician"),
                                                  ("inve1", "investigator")]  # fmt: skip
    assert run(["audit", "verify", *store_args(unit)]) == 0
    assert "intact" in capsys.readouterr().out
    assert log.entries(actions=["audit.verify"])[0].user == "root"


def test_audit_verify_errors_are_one_line(unit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "verify", "--db", str(unit / "none.db"), "--key-file", str(unit / "keys" / "db.key")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (unit / "keys" / "audit.key").unlink()
    assert run(["audit", "verify", *store_args(unit)]) == 2
    err = capsys.readouterr().err
    assert "keys init" in err and len(err.strip().splitlines()) == 1
    bad = unit / "bad.pem"
    bad.write_text("nope")
    create_signing_key(unit / "keys" / "audit.key")
    assert run(["audit", "verify", "--public-key", str(bad), *store_args(unit)]) == 2
    assert "--public-key" in capsys.readouterr().err


def test_reads_list_refusals(unit: Path, log: AuditLog, capsys: pytest.CaptureFixture[str]) -> None:
    for user, pw, expect in (("tech1", PW, "reads.view: needs role"), ("oper1", "bad password!", "login refused"),
                             ("late1", PW, "login refused")):  # fmt: skip
        assert run(["reads", "list", "--user", user, "--password-stdin", *store_args(unit)], pw) == 2
        out, err = capsys.readouterr()
        assert out == "" and expect in err
    assert run(["reads", "list", "--user", "oper1", "--password-stdin", *store_args(unit)]) == 0
    assert "(no reads)" in capsys.readouterr().out
    assert [(e.user, e.action) for e in log.entries()] == [
        ("tech1", "access.denied"), ("oper1", "login.refused"), ("late1", "login.refused"), ("oper1", "login"),
        ("oper1", "reads.view"),
    ]  # fmt: skip


def test_every_audit_command_and_option_has_help() -> None:
    p = parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    audit = sub.choices["audit"]
    inner = next(a for a in audit._actions if isinstance(a, argparse._SubParsersAction))
    assert set(inner.choices) == {"verify", "list"}
    for cmd in inner.choices.values():
        assert cmd.description
        for action in cmd._actions:
            assert action.help, f"{cmd.prog} {action.option_strings}"


def test_verify_chain_takes_a_list_in_storage_order() -> None:
    key = Ed25519PrivateKey.generate()
    chain: list[AuditEntry] = []
    prev = GENESIS
    for i in range(1, 6):
        chain.append(make_entry(key, i, prev, 1.0 + i, "u1", "operator", "login"))
        prev = chain[-1].hash
    assert verify_chain(chain, key.public_key()).ok
    moved = [chain[0], chain[1], chain[3], chain[2], chain[4]]  # stored out of order, each entry intact
    assert [(p.seq, p.kind) for p in verify_chain(moved, key.public_key()).problems] == [(3, "reordered")]
    dup = [*chain[:3], replace(chain[2], uuid="00000000-0000-4000-8000-000000000000"), *chain[3:]]
    assert (3, "inserted") in [(p.seq, p.kind) for p in verify_chain(dup, key.public_key()).problems]
    other = Ed25519PrivateKey.generate().public_key()
    assert {p.kind for p in verify_chain(chain, other).problems} == {"bad-signature"}
