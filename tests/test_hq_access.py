"""Headquarters' accounts, its own access record and the verification of every unit's chain, on a real PostgreSQL
(tests/sync_env.py) with unit entries made by the real AuditLog on a real SQLCipher store and ingested by the real
ingest code; then tampered at headquarters the way an attacker with database access would (triggers disabled)."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.types.json import Jsonb

from edge.access.audit import AuditEntry, AuditLog, entry_hash, public_pem, sign_hash
from edge.access.session import AccessDenied
from edge.access.users import AuthError, DuplicateUserError, UnknownUserError, User, UserError
from edge.hotlist.bundle import private_key_pem, public_key_pem
from edge.hq import audit_verify, commands, schema
from edge.hq.access import HqAuditLog, HqSession, HqUserStore, SignerError, hq_cli_login, load_hq_signer
from edge.hq.device_keys import RegisterError, register_key
from edge.hq.ingest import store_batch
from edge.store.db import Connection, open_db
from edge.store.migrations import migrate
from edge.sync.protocol import Batch, Item

from .sync_env import Postgres, hq_conn_fixture, hq_url_fixture, postgres_fixture  # noqa: F401  (fixtures)

PW = "correct horse battery"
PW2 = "staple gun 42 lamp post"
NOW = time.time()
TODAY = datetime.fromtimestamp(NOW).date()
CHEAP = {"time_cost": 1, "memory_cost": 8192, "parallelism": 1}
UNIT = "unit-1"


@pytest.fixture
def users(conn: psycopg.Connection) -> HqUserStore:
    return HqUserStore(conn, hasher=PasswordHasher(**CHEAP), max_failures=3, lockout_s=60)


@pytest.fixture(scope="module")
def hq_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def refused(users: HqUserStore, name: str, password: str, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as e:
        users.authenticate(name, password, now)
    return e.value


# --- accounts -----------------------------------------------------------------------------------------------------


def test_accounts_follow_the_units_rules(users: HqUserStore, conn: psycopg.Connection) -> None:
    assert users.add("JSmith", "investigator", PW, TODAY) == User("jsmith", "investigator", TODAY, False, None)
    row = conn.execute("SELECT password_hash, training_completed, disabled FROM users WHERE name = 'jsmith'").fetchone()
    assert row is not None and row[0].startswith("$argon2id$") and PW not in row[0]
    assert row[1] == TODAY and row[2] is False  # real DATE and BOOLEAN columns
    assert users.authenticate(" JSMITH", PW, NOW).role == "investigator"
    with pytest.raises(DuplicateUserError):
        users.add("jsmith", "administrator", PW2, TODAY)
    with pytest.raises(UserError, match="password: at least 12"):
        users.add("ann", "operator", "short", TODAY)
    with pytest.raises(UserError, match="role: must be one of"):
        users.add("ann", "chief", PW, TODAY)
    assert [u.name for u in users.list()] == ["jsmith"]
    assert users.get("nobody") is None and users.get("../x") is None


def test_every_refusal_looks_the_same(users: HqUserStore) -> None:
    users.add("ann", "operator", PW, TODAY)
    users.add("untrained", "operator", PW, None)
    users.add("future", "operator", PW, TODAY + timedelta(days=2))
    users.add("gone", "operator", PW, TODAY)
    users.disable("gone")
    got = {
        "unknown": refused(users, "bob", PW),
        "bad name": refused(users, "<x>", PW),
        "password": refused(users, "ann", PW2),
        "training": refused(users, "untrained", PW),
        "future": refused(users, "future", PW),
        "disabled": refused(users, "gone", PW),
    }
    assert {str(e) for e in got.values()} == {AuthError.MESSAGE}
    assert [e.reason for e in got.values()] == ["unknown", "unknown", "password", "training", "training", "disabled"]
    users.enable("gone")
    assert users.authenticate("gone", PW, NOW).name == "gone"
    with pytest.raises(UnknownUserError):
        users.disable("nobody")


def test_lockout_and_password_change(users: HqUserStore) -> None:
    users.add("ann", "operator", PW, TODAY)
    for i in range(3):
        assert refused(users, "ann", PW2, NOW + i).reason == "password"
    locked = users.get("ann")
    assert locked is not None and locked.locked_until == pytest.approx(NOW + 2 + 60)
    assert refused(users, "ann", PW, NOW + 10).reason == "locked"  # even the right password
    refused(users, "ann", PW2, NOW + 20)
    assert users.get("ann") == locked  # not counted while locked
    assert users.authenticate("ann", PW, NOW + 63).locked_until is None
    for i in range(3):
        refused(users, "ann", PW2, NOW + 70 + i)
    users.change_password("ann", PW2)  # also ends the lock
    assert refused(users, "ann", PW, NOW + 80).reason == "password"
    assert users.authenticate("ann", PW2, NOW + 81).name == "ann"


def test_hash_renewed_with_stronger_parameters(conn: psycopg.Connection) -> None:
    HqUserStore(conn, hasher=PasswordHasher(**CHEAP)).add("ann", "auditor", PW, TODAY)
    stronger = HqUserStore(conn, hasher=PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1))
    stronger.authenticate("ann", PW, NOW)
    row = conn.execute("SELECT password_hash FROM users WHERE name = 'ann'").fetchone()
    assert row is not None and ",t=2," in row[0]


# --- logging in ---------------------------------------------------------------------------------------------------


def login_args(name: str, key_file: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(user=name, password_stdin=True, signing_key=key_file)


def login(
    conn: psycopg.Connection, users: HqUserStore, audit: HqAuditLog, name: str, password: str, what: str,
    monkeypatch: pytest.MonkeyPatch,
) -> HqSession:  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    return hq_cli_login(login_args(name), conn, what, users=users, audit=audit)


def test_cli_login_records_every_outcome(
    conn: psycopg.Connection, users: HqUserStore, hq_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = HqAuditLog(conn, hq_key)
    users.add("ann", "operator", PW, TODAY)
    users.add("aud", "auditor", PW, TODAY)
    users.add("late", "auditor", PW, None)
    s = login(conn, users, audit, "ANN", PW, "hotlist.manage", monkeypatch)
    assert s.user.name == "ann"
    s.record("hotlist.publish", detail={"list_id": "ncic"})
    with pytest.raises(AccessDenied, match=r"audit\.view: needs role auditor or administrator; ann is operator"):
        login(conn, users, audit, "ann", PW, "audit.view", monkeypatch)
    with pytest.raises(AuthError):
        login(conn, users, audit, "nobody\x00\n" + "x" * 200, PW, "audit.view", monkeypatch)
    with pytest.raises(AuthError):
        login(conn, users, audit, "aud", PW2, "audit.view", monkeypatch)
    with pytest.raises(AuthError):
        login(conn, users, audit, "late", PW, "audit.view", monkeypatch)
    got = [(e.user, e.role, e.action, dict(e.detail)) for e in audit.entries()]
    assert got[:3] == [
        ("ann", "operator", "login", {"what": "hotlist.manage", "via": "hq-cli"}),
        ("ann", "operator", "hotlist.publish", {"list_id": "ncic"}),
        ("ann", "operator", "access.denied", {"what": "audit.view", "via": "hq-cli"}),
    ]
    refusals = got[3:]
    assert [(r[1], r[2], r[3]["why"]) for r in refusals] == [
        ("none", "login.refused", "unknown"), ("none", "login.refused", "password"),
        ("none", "login.refused", "training"),
    ]  # fmt: skip
    typed = refusals[0][0]
    assert typed.startswith("nobody??") and len(typed) <= 64  # cleaned and cut short
    assert audit.verify(hq_key.public_key()).ok


def test_login_without_a_signing_key_is_refused(
    conn: psycopg.Connection, users: HqUserStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALPR_HQ_SIGNING_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    users.add("ann", "operator", PW, TODAY)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PW + "\n"))
    with pytest.raises(SignerError, match="no signing key"):
        hq_cli_login(login_args("ann"), conn, "hotlist.manage", users=users)
    loose = tmp_path / "loose.pem"
    loose.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
    loose.chmod(0o644)
    with pytest.raises(SignerError, match="readable by others"):
        load_hq_signer(login_args("ann", loose))
    monkeypatch.setenv("ALPR_HQ_SIGNING_KEY", str(loose))
    loose.chmod(0o600)
    assert isinstance(load_hq_signer(login_args("ann")), Ed25519PrivateKey)
    assert conn.execute("SELECT count(*) FROM hq_audit").fetchone() == (0,)


# --- headquarters' own record -------------------------------------------------------------------------------------


def test_hq_audit_is_append_only_and_verifies(conn: psycopg.Connection, hq_key: Ed25519PrivateKey) -> None:
    audit = HqAuditLog(conn, hq_key, clock=lambda: NOW)
    for i in range(5):
        audit.record("ann", "investigator", "search", reason=f"case 2026-{i:04d}", detail={"results": i, "x": 0.5})
    assert [e.seq for e in audit.entries()] == [1, 2, 3, 4, 5]
    assert [e.seq for e in audit.entries(actions=["search"], limit=2)] == [1, 2]
    assert audit.entries(user="bob") == [] and len(audit.entries(start=NOW, end=NOW)) == 5
    assert audit.verify(hq_key.public_key()).ok
    for sql in ("UPDATE hq_audit SET reason = 'none' WHERE seq = 2", "DELETE FROM hq_audit WHERE seq = 5"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(sql)
    with pytest.raises(Exception, match="must be finite"):
        audit.record("ann", "investigator", "search", detail={"bad": float("nan")})
    # an attacker who owns the database disables the trigger: the chain still shows what was done
    conn.execute("ALTER TABLE hq_audit DISABLE TRIGGER hq_audit_append_only")
    conn.execute("UPDATE hq_audit SET detail = jsonb_set(detail, '{results}', '7') WHERE seq = 2")
    conn.execute("DELETE FROM hq_audit WHERE seq = 4")
    problems = [(p.seq, p.kind) for p in audit.verify(hq_key.public_key()).problems]
    assert problems == [(2, "altered"), (4, "deleted")]
    assert not audit.verify(Ed25519PrivateKey.generate().public_key()).ok  # someone else's key


def test_concurrent_appends_keep_one_chain(url: str, hq_key: Ed25519PrivateKey) -> None:
    n = 40
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with schema.connect(url) as c:
                log = HqAuditLog(c, hq_key)
                for i in range(n):
                    log.record(name, "administrator", "report", detail={"i": i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(f"user{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with schema.connect(url) as c:
        log = HqAuditLog(c, hq_key)
        entries = log.entries()
        assert [e.seq for e in entries] == list(range(1, 3 * n + 1))
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
        assert log.verify(hq_key.public_key()).ok


# --- the units' chains --------------------------------------------------------------------------------------------


def unit_entries(tmp_path: Path, n: int, name: str = "unit") -> tuple[list[AuditEntry], Ed25519PrivateKey]:
    """``n`` entries from a real AuditLog on a real SQLCipher store."""
    db: Connection = open_db(tmp_path / f"{name}.db", os.urandom(32))
    try:
        migrate(db)
        key = Ed25519PrivateKey.generate()
        log = AuditLog(db, key)
        for i in range(n):
            log.record("jdoe", "investigator", "search", reason=f"case 2026-{i:04d}",
                       detail={"criteria": {"plate": "7ABC*"}, "results": i, "score": 0.25})  # fmt: skip
        entries = log.entries()
        assert log.verify(key.public_key()).ok
        return entries, key
    finally:
        db.close()


def ingest(conn: psycopg.Connection, device: str, entries: list[AuditEntry]) -> None:
    """Through the real ingest code, as the unit's outbox sends them (kind "audit", AuditEntry.to_json)."""
    items = tuple(Item("audit", e.uuid, e.to_json()) for e in entries)
    ack = store_batch(conn, Batch(device, str(uuid.uuid4()), NOW, items), NOW)
    assert not ack.ack.rejected


def register(conn: psycopg.Connection, device: str, key: Ed25519PrivateKey, hq_key: Ed25519PrivateKey) -> None:
    register_key(conn, HqAuditLog(conn, hq_key), device, public_pem(key), "kid", replace=False, now=NOW)


def problems_of(conn: psycopg.Connection, device: str = UNIT) -> list[tuple[int, str]]:
    (r,) = audit_verify.verify_all(conn, device=device)
    assert r.verifiable
    return [(p.seq, p.kind) for p in r.problems]


def tamper(conn: psycopg.Connection, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
    conn.execute(sql, params)
    conn.execute("ALTER TABLE audit ENABLE TRIGGER audit_append_only")


@pytest.fixture
def unit(tmp_path: Path, conn: psycopg.Connection, hq_key: Ed25519PrivateKey) -> list[AuditEntry]:
    entries, key = unit_entries(tmp_path, 10)
    ingest(conn, UNIT, entries)
    register(conn, UNIT, key, hq_key)
    assert problems_of(conn) == []
    return entries


def data_of(conn: psycopg.Connection, seq: int) -> dict[str, Any]:
    row = conn.execute("SELECT data FROM audit WHERE device_id = %s AND data->>'seq' = %s", (UNIT, str(seq)))
    got = row.fetchone()
    assert got is not None
    d: dict[str, Any] = got[0]
    return d


def set_data(conn: psycopg.Connection, seq: int, data: dict[str, Any]) -> None:
    tamper(conn, "UPDATE audit SET data = %s WHERE device_id = %s AND data->>'seq' = %s", (Jsonb(data), UNIT, str(seq)))


def test_unit_chain_verifies_and_a_short_chain_is_not_yet_received(
    tmp_path: Path, conn: psycopg.Connection, hq_key: Ed25519PrivateKey
) -> None:
    entries, key = unit_entries(tmp_path, 12)
    register(conn, UNIT, key, hq_key)  # before the unit ever connected
    ingest(conn, UNIT, entries[:8])  # the last 4 are still on the unit
    (r,) = audit_verify.verify_all(conn, device=UNIT)
    assert r.ok and (r.entries, r.first_seq, r.last_seq) == (8, 1, 8)
    ingest(conn, UNIT, entries[:8])  # redelivered: stored once
    ingest(conn, UNIT, entries[8:])
    (r,) = audit_verify.verify_all(conn, device=UNIT)
    assert r.ok and r.entries == 12


def test_altered_entry(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    d = data_of(conn, 4)
    d["detail"]["results"] = 0  # "nothing was returned"
    set_data(conn, 4, d)
    assert problems_of(conn) == [(4, "altered")]


def test_altered_reason_rehashed_without_the_key(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    d = data_of(conn, 6)
    d["reason"] = "case 2026-9999"
    d["hash"] = entry_hash(d["seq"], d["uuid"], d["at"], d["user"], d["role"], d["action"], d["reason"], d["detail"],
                           d["prev_hash"])  # fmt: skip
    set_data(conn, 6, d)
    assert problems_of(conn) == [(6, "altered")]


def test_bad_signature(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    d = data_of(conn, 3)
    d["sig"] = sign_hash(Ed25519PrivateKey.generate(), d["hash"])  # the same entry signed by someone else
    set_data(conn, 3, d)
    assert problems_of(conn) == [(3, "bad-signature")]


def test_entries_deleted_in_the_middle(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    tamper(conn, "DELETE FROM audit WHERE device_id = %s AND data->>'seq' IN ('5', '6')", (UNIT,))
    assert problems_of(conn) == [(5, "deleted")]
    tamper(conn, "DELETE FROM audit WHERE device_id = %s AND data->>'seq' = '1'", (UNIT,))
    assert problems_of(conn) == [(1, "deleted"), (5, "deleted")]


def test_duplicated_entry(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    d = data_of(conn, 7)
    d["uuid"] = str(uuid.uuid4())
    tamper(conn, "INSERT INTO audit (uuid, device_id, data, received_at) VALUES (%s, %s, %s, %s)",
           (d["uuid"], UNIT, Jsonb(d), NOW))  # fmt: skip
    assert problems_of(conn) == [(7, "inserted")]


def test_renumbered_entries(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    a, b = data_of(conn, 3), data_of(conn, 4)
    a["seq"], b["seq"] = 4, 3  # two entries swapped in the sequence
    tamper(conn, "DELETE FROM audit WHERE device_id = %s AND data->>'seq' IN ('3', '4')", (UNIT,))
    for d in (a, b):
        tamper(conn, "INSERT INTO audit (uuid, device_id, data, received_at) VALUES (%s, %s, %s, %s)",
               (d["uuid"], UNIT, Jsonb(d), NOW))  # fmt: skip
    kinds = problems_of(conn)
    assert kinds and {k for _, k in kinds} == {"reordered"} and kinds[0][0] == 3


def test_unreadable_entry(conn: psycopg.Connection, unit: list[AuditEntry]) -> None:
    d = data_of(conn, 8)
    d["detail"] = "not an object"
    set_data(conn, 8, d)
    (r,) = audit_verify.verify_all(conn, device=UNIT)
    assert [(p.seq, p.kind) for p in r.problems] == [(8, "altered")]
    assert "cannot be read" in r.problems[0].message
    d["seq"] = "eight"  # not even a number: the index on the sequence number refuses it
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        set_data(conn, 8, d)


def test_unregistered_and_wrongly_keyed_units(
    tmp_path: Path, conn: psycopg.Connection, unit: list[AuditEntry], hq_key: Ed25519PrivateKey
) -> None:
    other, other_key = unit_entries(tmp_path, 3, "other")
    ingest(conn, "unit-2", other)
    reports = {r.name: r for r in audit_verify.verify_all(conn, hq_public_key=hq_key.public_key())}
    assert reports[UNIT].ok
    assert not reports["unit-2"].ok and not reports["unit-2"].verifiable
    assert "no audit key registered" in reports["unit-2"].note
    hq = reports[audit_verify.HQ]
    assert hq.ok and hq.entries == 1  # the registration of unit-1's key
    hq = audit_verify.verify_all(conn)[-1]
    assert hq.name == audit_verify.HQ and not hq.verifiable and "no public key" in hq.note
    # registered with the wrong key: nothing verifies; the right key needs --replace
    register(conn, "unit-2", Ed25519PrivateKey.generate(), hq_key)
    assert {k for _, k in problems_of(conn, "unit-2")} == {"bad-signature"}
    with pytest.raises(RegisterError, match="--replace"):
        register(conn, "unit-2", other_key, hq_key)
    register_key(conn, HqAuditLog(conn, hq_key), "unit-2", public_pem(other_key), "k2", replace=True, now=NOW)
    assert problems_of(conn, "unit-2") == []
    actions = [e.action for e in HqAuditLog(conn, hq_key).entries()]
    assert actions == ["device.audit_key.register"] * 2 + ["device.audit_key.replace"]
    with pytest.raises(RegisterError, match="device id"):
        register(conn, "Bad Unit!", other_key, hq_key)


def test_registering_creates_the_device_row(conn: psycopg.Connection, hq_key: Ed25519PrivateKey) -> None:
    key = Ed25519PrivateKey.generate()
    register(conn, "unit-9", key, hq_key)
    register(conn, "unit-9", key, hq_key)  # the same key again: nothing changes, nothing recorded
    row = conn.execute("SELECT audit_key, batches FROM devices WHERE device_id = 'unit-9'").fetchone()
    assert row is not None and row[0] == public_pem(key) and row[1] == 0
    assert conn.execute("SELECT count(*) FROM hq_audit").fetchone() == (1,)


# --- the commands -------------------------------------------------------------------------------------------------


def hq_cli(*argv: str, stdin: str = "") -> int:
    p = argparse.ArgumentParser(prog="alpr-edge")
    commands.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["hq", *argv])
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        rc: int = args.func(args)
    finally:
        sys.stdin = old
    return rc


@pytest.fixture
def env(url: str, tmp_path: Path, hq_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$ALPR_HQ_DB_URL and $ALPR_HQ_SIGNING_KEY set; returns the public key file."""
    key = tmp_path / "hq.key"
    key.write_bytes(private_key_pem(hq_key))
    key.chmod(0o600)
    pub = tmp_path / "hq.pub"
    pub.write_bytes(public_key_pem(hq_key.public_key()))
    monkeypatch.setenv(commands.DB_URL_ENV, url)
    monkeypatch.setenv("ALPR_HQ_SIGNING_KEY", str(key))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return pub


def test_users_commands_are_recorded_as_root(
    env: Path, conn: psycopg.Connection, hq_key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    add = ["users", "add", "Ann", "--role", "auditor", "--training-completed", TODAY.isoformat(), "--password-stdin"]
    assert hq_cli(*add, stdin=PW + "\n") == 0
    assert "added user ann (role auditor" in capsys.readouterr().out
    assert hq_cli(*add, stdin=PW + "\n") == 2
    assert "already exists" in capsys.readouterr().err
    assert hq_cli("users", "add", "bob", "--role", "operator", "--password-stdin", stdin="short\n") == 2
    err = capsys.readouterr().err
    assert "password: at least 12" in err and "short" not in err
    assert hq_cli("users", "passwd", "ann", "--password-stdin", stdin=PW2 + "\n") == 0
    assert hq_cli("users", "disable", "ann") == 0
    assert hq_cli("users", "enable", "ann") == 0
    assert hq_cli("users", "disable", "nobody") == 2
    assert "no user named 'nobody'" in capsys.readouterr().err
    assert hq_cli("users", "list", "--json") == 0
    out = capsys.readouterr().out
    assert [json.loads(x)["name"] for x in out.splitlines() if x.startswith("{")] == ["ann"]
    assert "argon2" not in out
    got = [(e.user, e.role, e.action, e.detail["name"]) for e in HqAuditLog(conn, hq_key).entries()]
    assert got == [("root", "system", a, "ann") for a in ("user.add", "user.passwd", "user.disable", "user.enable")]
    assert HqUserStore(conn).authenticate("ann", PW2, NOW).role == "auditor"
    # no signing key: no change, since it could not be recorded
    os.environ.pop("ALPR_HQ_SIGNING_KEY")
    assert hq_cli("users", "disable", "ann") == 2
    assert "no signing key" in capsys.readouterr().err
    user = HqUserStore(conn).get("ann")
    assert user is not None and not user.disabled


def test_devices_register_and_audit_verify_commands(
    env: Path, tmp_path: Path, conn: psycopg.Connection, hq_key: Ed25519PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    entries, key = unit_entries(tmp_path, 6)
    ingest(conn, UNIT, entries)
    pem = tmp_path / "unit.pub"
    pem.write_text(public_pem(key))
    assert hq_cli("audit", "verify") == 1  # entries but no key
    out = capsys.readouterr().out
    assert f"device {UNIT}: 6 entries (seq 1..6): UNVERIFIABLE: no audit key registered" in out
    assert hq_cli("devices", "register", UNIT, "--audit-key", str(pem)) == 0
    assert "registered (recorded)" in capsys.readouterr().out
    assert hq_cli("devices", "register", UNIT, "--audit-key", str(env)) == 2  # another key, no --replace
    assert "--replace" in capsys.readouterr().err
    assert hq_cli("devices", "register", UNIT, "--audit-key", str(tmp_path / "missing.pem")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert hq_cli("audit", "verify") == 0
    out = capsys.readouterr().out
    assert f"device {UNIT}: 6 entries (seq 1..6): chain intact" in out
    assert "headquarters: 1 entries (seq 1..1): chain intact" in out
    assert hq_cli("devices") == 0  # the registry: no plate data, no login, nothing recorded
    assert UNIT in capsys.readouterr().out
    assert conn.execute("SELECT count(*) FROM hq_audit").fetchone() == (1,)

    d = entries[2].to_json()
    d["reason"] = "routine"
    tamper(conn, "UPDATE audit SET data = %s WHERE uuid = %s", (Jsonb(d), d["uuid"]))
    assert hq_cli("audit", "verify", "--json") == 1
    docs = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert docs[UNIT]["problems"] == [{"seq": 3, "kind": "altered", "message": docs[UNIT]["problems"][0]["message"]}]
    assert docs[audit_verify.HQ]["ok"]
    assert hq_cli("audit", "verify", "--device", "nope") == 2
    assert "no device 'nope'" in capsys.readouterr().err
    # headquarters' own chain: from --public-key alone (no signing key), and tampered
    os.environ.pop("ALPR_HQ_SIGNING_KEY")
    conn.execute("ALTER TABLE hq_audit DISABLE TRIGGER hq_audit_append_only")
    conn.execute("UPDATE hq_audit SET user_name = 'someone' WHERE seq = 1")
    assert hq_cli("audit", "verify", "--public-key", str(env), "--json") == 1
    docs = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert [p["kind"] for p in docs[audit_verify.HQ]["problems"]] == ["altered"]
    assert hq_cli("audit", "verify") == 1  # entries at headquarters but no key to check them
    assert "give --public-key or --signing-key" in capsys.readouterr().out


def test_publish_hotlist_needs_a_login_and_is_recorded(
    env: Path, tmp_path: Path, conn: psycopg.Connection, hq_key: Ed25519PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from edge.hotlist.bundle import sign_bundle

    users = HqUserStore(conn, hasher=PasswordHasher(**CHEAP))
    users.add("op", "operator", PW, TODAY)
    users.add("tech", "technician", PW, TODAY)
    bundle = tmp_path / "l.hlb"
    bundle.write_bytes(sign_bundle(hq_key, "ncic-or", 3, b"plate,state,list_code,case_number,entered\n"
                                   b"7ABC123,OR,STOLEN_VEHICLE,C-1,2026-01-02\n"))  # fmt: skip
    # a closed port: the login and the attempt are recorded, then the publish fails
    common = ["--bundle", str(bundle), "--agency", "or-sp", "--broker", "127.0.0.1", "--port", "1", "--timeout", "2"]
    assert hq_cli("publish-hotlist", *common, "--user", "tech", "--password-stdin", stdin=PW + "\n") == 2
    assert "hotlist.manage: needs role" in capsys.readouterr().err
    assert hq_cli("publish-hotlist", *common, "--user", "op", "--password-stdin", stdin=PW2 + "\n") == 2
    assert AuthError.MESSAGE in capsys.readouterr().err
    assert hq_cli("publish-hotlist", *common, "--user", "op", "--password-stdin", stdin=PW + "\n") == 2
    assert "cannot reach broker" in capsys.readouterr().err
    got = [(e.user, e.action) for e in HqAuditLog(conn, hq_key).entries()]
    assert got == [
        ("tech", "access.denied"), ("op", "login.refused"), ("op", "login"), ("op", "hotlist.publish"),
        ("op", "hotlist.publish.failed"),
    ]  # fmt: skip
    detail = HqAuditLog(conn, hq_key).entries(actions=["hotlist.publish"])[0].detail
    assert (detail["list_id"], detail["version"], detail["topic"]) == ("ncic-or", 3, "alpr/fleet/or-sp/hotlist/ncic-or")
    with pytest.raises(SystemExit):
        hq_cli("publish-hotlist", *common)  # --user is required


def test_every_new_command_has_help() -> None:
    p = argparse.ArgumentParser(prog="alpr-edge")
    sub = p.add_subparsers(dest="command")
    commands.register(sub)
    hq = sub.choices["hq"]

    def children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        acts = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(acts[0].choices) if acts else {}

    top = children(hq)
    targets = [top["publish-hotlist"], *children(top["users"]).values(), *children(top["audit"]).values(),
               children(top["devices"])["register"]]  # fmt: skip
    assert set(children(top["users"])) == {"add", "passwd", "disable", "enable", "list"}
    assert "verify" in children(top["audit"])
    for parser in targets:
        assert parser.description
        for a in parser._actions:
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
                assert a.help, (parser.prog, a.dest)
