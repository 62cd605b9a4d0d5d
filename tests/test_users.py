"""User accounts (P12) on real SQLCipher files: Argon2id hashes, generic refusals, lockout, disabled accounts,
the training date, password changes, the password policy, and the ``users`` commands."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from edge.access.audit import AuditLog, create_signing_key, load_signing_key
from edge.access.commands import register
from edge.access.users import (
    AuthError,
    DuplicateUserError,
    UnknownUserError,
    User,
    UserError,
    UserStore,
)
from edge.store.db import Connection, open_db
from edge.store.errors import StoreError
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate

PW = "correct horse battery"
PW2 = "staple gun 42 lamp post"
NOW = time.time()
TODAY = datetime.fromtimestamp(NOW).date()


class CountingHasher(PasswordHasher):
    """Cheap Argon2id parameters for speed (the defaults are tested separately) that count verifications."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__(time_cost=time_cost, memory_cost=1024, parallelism=1)
        self.verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verifies += 1
        return super().verify(hash, password)


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, bytes]:
    return tmp_path / "unit.db", os.urandom(32)


@pytest.fixture
def conn(db: tuple[Path, bytes]) -> Iterator[Connection]:
    c = open_db(*db)
    migrate(c)
    yield c
    c.close()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def users(conn: Connection, hasher: CountingHasher) -> UserStore:
    return UserStore(conn, hasher=hasher, max_failures=3, lockout_s=60)


def stored_hash(conn: Connection, name: str) -> str:
    return str(conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()[0])


def refused(users: UserStore, name: str, password: str, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as e:
        users.authenticate(name, password, now)
    return e.value


# --- hashing ------------------------------------------------------------------------------------------------


def test_default_hash_is_argon2id_and_survives_reopening(db: tuple[Path, bytes], conn: Connection) -> None:
    users = UserStore(conn)  # the production parameters
    user = users.add("JSmith", "operator", PW, TODAY)
    assert user == User("jsmith", "operator", TODAY, False, None)
    h = stored_hash(conn, "jsmith")
    assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PW not in h
    conn.close()
    again = open_db(*db)
    try:
        assert UserStore(again).authenticate("jsmith", PW, NOW).name == "jsmith"
    finally:
        again.close()
    with pytest.raises(StoreError):
        open_db(db[0], os.urandom(32))  # the accounts are as encrypted as the reads
    assert b"jsmith" not in db[0].read_bytes()


def test_hash_is_renewed_when_parameters_change(conn: Connection) -> None:
    UserStore(conn, hasher=CountingHasher(time_cost=1)).add("ann", "investigator", PW, TODAY)
    old = stored_hash(conn, "ann")
    assert ",t=1," in old
    stronger = UserStore(conn, hasher=CountingHasher(time_cost=2))
    stronger.authenticate("ann", PW, NOW)
    new = stored_hash(conn, "ann")
    assert ",t=2," in new and new != old
    assert stronger.authenticate("ann", PW, NOW).name == "ann"
    refused(stronger, "ann", PW2)
    unchanged = stored_hash(conn, "ann")
    stronger.authenticate("ann", PW, NOW)
    assert stored_hash(conn, "ann") == unchanged  # no rehash when the parameters already match


def test_a_non_argon2id_hasher_is_refused(conn: Connection) -> None:
    from argon2 import Type

    with pytest.raises(ValueError, match="Argon2id"):
        UserStore(conn, hasher=PasswordHasher(type=Type.I))


# --- refusals -----------------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_look_the_same(users: UserStore, hasher: CountingHasher) -> None:
    users.add("ann", "operator", PW, TODAY)
    assert users.authenticate("ANN ", PW, NOW).name == "ann"  # names are case-insensitive
    before = hasher.verifies
    wrong = refused(users, "ann", PW2)
    unknown = refused(users, "bob", PW)
    invalid = refused(users, "<not a name>", PW)
    assert str(wrong) == str(unknown) == str(invalid) == AuthError.MESSAGE
    assert "ann" not in str(wrong) and "bob" not in str(unknown)
    assert (wrong.reason, unknown.reason, invalid.reason) == ("password", "unknown", "unknown")
    # an unknown name costs an Argon2 verification too (against a dummy hash), like a known one
    assert hasher.verifies - before == 3
    assert isinstance(wrong, PermissionError)  # what the hotlist commands catch


def test_unknown_user_takes_about_as_long_as_a_known_one(conn: Connection) -> None:
    users = UserStore(conn, hasher=PasswordHasher(time_cost=2, memory_cost=32768, parallelism=1))
    users.add("ann", "operator", PW, TODAY)
    refused(users, "nobody", PW)  # the first call makes the dummy hash

    def timed(name: str) -> float:
        t = time.perf_counter()
        refused(users, name, PW2)
        return time.perf_counter() - t

    known = min(timed("ann") for _ in range(3))
    unknown = min(timed("nobody") for _ in range(3))
    # both are dominated by one Argon2 verification; without the dummy the unknown name would take ~0
    assert unknown > 0.5 * known, (known, unknown)


def test_lockout_and_its_expiry(users: UserStore) -> None:
    users.add("ann", "operator", PW, TODAY)
    for _ in range(2):
        assert refused(users, "ann", PW2).reason == "password"
    assert users.authenticate("ann", PW, NOW).name == "ann"  # a success resets the count
    for i in range(3):
        assert refused(users, "ann", PW2, NOW + i).reason == "password"
    locked = users.get("ann")
    assert locked is not None and locked.locked_until == pytest.approx(NOW + 2 + 60)
    # locked: even the right password is refused, with the same message
    e = refused(users, "ann", PW, NOW + 10)
    assert e.reason == "locked" and str(e) == AuthError.MESSAGE
    refused(users, "ann", PW2, NOW + 20)  # not counted while locked, does not extend the lock
    assert users.get("ann") == locked
    assert users.authenticate("ann", PW, NOW + 63).name == "ann"
    user = users.get("ann")
    assert user is not None and user.locked_until is None
    # the count starts again from zero after the lock
    for i in range(2):
        refused(users, "ann", PW2, NOW + 70 + i)
    assert users.authenticate("ann", PW, NOW + 80).name == "ann"


def test_disabled_user_is_refused_until_enabled(users: UserStore) -> None:
    users.add("ann", "operator", PW, TODAY)
    users.disable("Ann")
    e = refused(users, "ann", PW)
    assert e.reason == "disabled" and str(e) == AuthError.MESSAGE
    assert users.get("ann") == User("ann", "operator", TODAY, True, None)
    users.enable("ann")
    assert users.authenticate("ann", PW, NOW).name == "ann"
    with pytest.raises(UnknownUserError):
        users.disable("nobody")
    with pytest.raises(UnknownUserError):
        users.enable("nobody")


def test_no_access_before_the_training_day(users: UserStore) -> None:
    users.add("untrained", "operator", PW, None)
    users.add("future", "operator", PW, TODAY + timedelta(days=2))
    users.add("past", "operator", PW, TODAY - timedelta(days=400))
    assert refused(users, "untrained", PW).reason == "training"
    assert refused(users, "future", PW).reason == "training"
    assert users.authenticate("past", PW, NOW).name == "past"
    # on the training day itself (and after) the login works
    later = datetime.combine(TODAY + timedelta(days=2), datetime.min.time()).timestamp() + 3600
    assert users.authenticate("future", PW, later).training_completed == TODAY + timedelta(days=2)


def test_change_password(users: UserStore) -> None:
    users.add("ann", "operator", PW, TODAY)
    for _ in range(3):
        refused(users, "ann", PW2)  # locked now
    users.change_password("ann", PW2)
    assert refused(users, "ann", PW).reason == "password"
    assert users.authenticate("ann", PW2, NOW).name == "ann"  # the change also ended the lock
    with pytest.raises(UserError, match="password: at least 12"):
        users.change_password("ann", "short")
    with pytest.raises(UnknownUserError):
        users.change_password("nobody", PW)


# --- input checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("elevenchars", "at least 12 characters"),
        ("abababababababab", "at least 5 different"),
        ("my name is ann-marie!", "must not contain the user name"),
        ("tab\tinside password", "control characters"),
        ("x" * 1000 + "abcdefghij" * 3, "at most 1024"),
    ],
)
def test_password_policy(users: UserStore, password: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        users.add("ann-marie", "operator", password, TODAY)
    assert password not in str(e.value)
    assert users.list() == []


def test_bad_fields_and_duplicates(users: UserStore, conn: Connection) -> None:
    with pytest.raises(UserError, match="name:"):
        users.add("a", "operator", PW, TODAY)
    with pytest.raises(UserError, match="name:"):
        users.add("ann smith", "operator", PW, TODAY)
    with pytest.raises(UserError, match="role: must be one of"):
        users.add("ann", "chief", PW, TODAY)
    with pytest.raises(UserError, match="training_completed"):
        users.add("ann", "operator", PW, datetime.now())  # type: ignore[arg-type]
    users.add("ann", "operator", PW, TODAY)
    with pytest.raises(DuplicateUserError, match="already exists"):
        users.add("ANN", "administrator", PW2, TODAY)
    assert [u.role for u in users.list()] == ["operator"]  # the first account is untouched
    assert users.authenticate("ann", PW, NOW).role == "operator"


def test_list_and_get(users: UserStore) -> None:
    users.add("zed", "technician", PW, TODAY)
    users.add("amy", "auditor", PW, None)
    listed = users.list()
    assert [u.name for u in listed] == ["amy", "zed"]
    assert all(isinstance(u, User) for u in listed)
    assert not any("argon2" in repr(u) for u in listed)
    assert users.get("ZED") == User("zed", "technician", TODAY, False, None)
    assert users.get("nobody") is None
    assert users.get("../etc") is None


def test_hash_check_is_real_argon2(users: UserStore, conn: Connection) -> None:
    users.add("ann", "operator", PW, TODAY)
    h = stored_hash(conn, "ann")
    ph = PasswordHasher()
    assert ph.verify(h, PW)
    with pytest.raises(VerifyMismatchError):
        ph.verify(h, PW2)


# --- the commands -------------------------------------------------------------------------------------------


Cli = tuple[argparse.ArgumentParser, list[str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    parser = argparse.ArgumentParser(prog="alpr-edge")
    register(parser.add_subparsers(dest="command", required=True))
    key = tmp_path / "db.key"
    create_key_file(key)
    create_signing_key(tmp_path / "audit.key")  # beside the database key, as `keys init` makes it
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    yield parser, ["--db", str(tmp_path / "unit.db"), "--key-file", str(key)]


def run(parser: argparse.ArgumentParser, argv: list[str], stdin: str = "") -> int:
    args = parser.parse_args(argv)
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return int(args.func(args))
    finally:
        sys.stdin = old


def test_commands(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, store = cli
    add = ["users", "add", "Officer1", "--role", "operator", "--training-completed", TODAY.isoformat(),
           "--password-stdin", *store]  # fmt: skip
    assert run(parser, add, PW + "\n") == 0
    assert "added user officer1 (role operator" in capsys.readouterr().out
    assert run(parser, ["users", "add", "tech", "--role", "technician", "--password-stdin", *store], PW2 + "\n") == 0
    capsys.readouterr()

    # refused: duplicate, short password, bad role, bad date
    assert run(parser, add, PW + "\n") == 2
    assert "already exists" in capsys.readouterr().err
    assert run(parser, ["users", "add", "ann", "--role", "operator", "--password-stdin", *store], "short\n") == 2
    err = capsys.readouterr().err
    assert "password: at least 12" in err and "short" not in err
    with pytest.raises(SystemExit):
        parser.parse_args(["users", "add", "ann", "--role", "chief", *store])
    with pytest.raises(SystemExit):
        parser.parse_args(["users", "add", "ann", "--role", "operator", "--training-completed", "01/02/2025"])
    capsys.readouterr()

    assert run(parser, ["users", "list", *store]) == 0
    out = capsys.readouterr().out
    assert "officer1" in out and "tech" in out and "not recorded" not in out
    assert "argon2" not in out and "$" not in out
    assert run(parser, ["users", "list", "--json", *store]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert docs == [
        {"name": "officer1", "role": "operator", "training_completed": TODAY.isoformat(), "disabled": False,
         "locked_until": None},
        {"name": "tech", "role": "technician", "training_completed": None, "disabled": False, "locked_until": None},
    ]  # fmt: skip

    # what the commands wrote is what the library reads
    conn = open_db(tmp_path / "unit.db", load_key(tmp_path / "db.key"))
    try:
        users = UserStore(conn)
        assert users.authenticate("officer1", PW, NOW).role == "operator"
        assert run(parser, ["users", "passwd", "officer1", "--password-stdin", *store], PW2 + "\n") == 0
        assert "password of officer1 changed" in capsys.readouterr().out
        with pytest.raises(AuthError):
            users.authenticate("officer1", PW, NOW)
        assert users.authenticate("officer1", PW2, NOW).name == "officer1"
        assert run(parser, ["users", "disable", "officer1", *store]) == 0
        assert "disabled" in capsys.readouterr().out
        assert refused(users, "officer1", PW2).reason == "disabled"
        assert run(parser, ["users", "enable", "officer1", *store]) == 0
        assert users.authenticate("officer1", PW2, NOW).name == "officer1"
    finally:
        conn.close()
    assert run(parser, ["users", "disable", "nobody", *store]) == 2
    assert "no user named 'nobody'" in capsys.readouterr().err
    assert run(parser, ["users", "passwd", "nobody", "--password-stdin", *store], PW + "\n") == 2
    # each change that was made is in the access record, as root (the bootstrap shell), never a password
    conn = open_db(tmp_path / "unit.db", load_key(tmp_path / "db.key"))
    try:
        audit = AuditLog(conn, load_signing_key(tmp_path / "audit.key"))
        rows = audit.entries()
        assert audit.verify(audit.public_key).ok
    finally:
        conn.close()
    assert {(e.user, e.role) for e in rows} == {("root", "system")}
    assert [(e.action, e.detail.get("name")) for e in rows] == [
        ("users.add", "officer1"), ("users.add", "tech"), ("users.list", None), ("users.list", None),
        ("users.passwd", "officer1"), ("users.disable", "officer1"), ("users.enable", "officer1"),
    ]  # fmt: skip
    assert rows[0].detail == {"name": "officer1", "role": "operator", "training_completed": TODAY.isoformat()}
    assert not any(PW in json.dumps(e.to_json()) or PW2 in json.dumps(e.to_json()) for e in rows)


def test_commands_refuse_a_missing_database(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, store = cli
    assert run(parser, ["users", "list", *store]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "unit.db").exists()


def test_add_asks_twice_at_the_terminal(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser, store = cli
    typed = iter([PW, PW + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    assert run(parser, ["users", "add", "ann", "--role", "operator", *store]) == 2
    assert "the two entries differ" in capsys.readouterr().err
    typed = iter([PW, PW])
    assert run(parser, ["users", "add", "ann", "--role", "operator", *store]) == 0


def test_every_users_command_and_option_has_help() -> None:
    parser = argparse.ArgumentParser(prog="alpr-edge")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    users = sub.choices["users"]
    assert users.description
    actions = [a for a in users._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions
    names = set()
    for choice in actions[0]._choices_actions:
        assert choice.help, choice.dest
        names.add(choice.dest)
    assert names == {"add", "passwd", "disable", "enable", "list"}
    for name, p in actions[0].choices.items():
        assert p.description and "access record" in p.description, name
        for a in p._actions:
            if not isinstance(a, argparse._HelpAction):
                assert a.help, (name, a.dest)
