"""Maintenance and calibration records on the unit (P17): written through the access record of a real SQLCipher
store (signed, chained, synced with the rest), by technicians and administrators only, listed back; bad input is
refused with the field named and nothing recorded."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from edge.access.audit import AuditLog, create_signing_key, load_signing_key
from edge.access.session import AccessDenied, Session
from edge.access.users import User, UserStore
from edge.cli import main
from edge.maintenance import MaintenanceError, describe, list_maintenance, log_maintenance, parse_values
from edge.store.db import Connection, open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate

PW = "correct horse battery"
TRAINED = date(2020, 1, 1)


class Unit:
    """A unit's database, database key and access record key, with accounts for each role that matters here."""

    def __init__(self, folder: Path) -> None:
        self.db = folder / "reads.db"
        self.key_file = folder / "keys" / "db.key"
        create_key_file(self.key_file)
        create_signing_key(self.key_file.parent / "audit.key")  # where open_unit looks beside the database key
        self.signer = load_signing_key(self.key_file.parent / "audit.key")
        self.conn: Connection = open_db(self.db, load_key(self.key_file), create=True)
        migrate(self.conn)
        users = UserStore(self.conn, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        for name, role in (("tom", "technician"), ("ada", "administrator"), ("ines", "investigator")):
            users.add(name, role, PW, TRAINED)
        self.audit = AuditLog(self.conn, self.signer)

    def cli(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], user: str,
            *argv: str) -> tuple[int, str, str]:  # fmt: skip
        monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
        rc = main(["maintenance", *argv, "--user", user, "--password-stdin", "--db", str(self.db), "--key-file",
                   str(self.key_file)])  # fmt: skip
        out, err = capsys.readouterr()
        return rc, out, err

    def actions(self) -> list[tuple[str, str]]:
        return [(e.user, e.action) for e in self.audit.entries()]


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = Unit(tmp_path)
    yield u
    u.conn.close()


def test_log_and_list_round_trip_through_the_cli(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = unit.cli(monkeypatch, capsys, "tom", "log", "--kind", "calibration", "--camera", "front",
                            "--summary", "focus and exposure set after the lens swap", "--value", "focus=1.25",
                            "--value", "exposure_ms=4")  # fmt: skip
    assert rc == 0, err
    assert "recorded calibration" in out
    rc, out, err = unit.cli(monkeypatch, capsys, "ada", "log", "--kind", "repair", "--summary",
                            "replaced the GPS antenna cable")  # fmt: skip
    assert rc == 0, err
    rc, out, err = unit.cli(monkeypatch, capsys, "tom", "list", "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["camera"], r["user"]) for r in rows] == [
        ("calibration", "front", "tom"),
        ("repair", "", "ada"),
    ]
    assert rows[0]["values"] == {"focus": "1.25", "exposure_ms": "4"}
    rc, out, err = unit.cli(monkeypatch, capsys, "tom", "list")
    assert rc == 0 and "replaced the GPS antenna cable" in out and "[exposure_ms=4 focus=1.25]" in out
    # the records are signed entries of the access record (action calibration / maintenance), the chain intact
    entries = unit.audit.entries(actions=("maintenance", "calibration"))
    assert [e.action for e in entries] == ["calibration", "maintenance"]
    assert entries[0].detail == {"kind": "calibration", "camera": "front", "summary":
                                 "focus and exposure set after the lens swap", "values": {"focus": "1.25",
                                 "exposure_ms": "4"}}  # fmt: skip
    assert unit.audit.verify(unit.signer.public_key()).ok
    assert ("tom", "login") in unit.actions()
    # --since: only what came after
    rc, out, err = unit.cli(monkeypatch, capsys, "tom", "list", "--since", "2999-01-01T00:00:00")
    assert rc == 0 and "0 record(s)" in out


def test_refusals_record_nothing(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = unit.cli(monkeypatch, capsys, "ines", "log", "--kind", "maintenance", "--summary", "cleaned it")
    assert rc == 2 and "maintenance: needs role technician or administrator; ines is investigator" in err
    assert ("ines", "access.denied") in unit.actions()
    for argv, message in (
        (("--value", "focus"), "expected KEY=VALUE"),
        (("--value", "Focus=1"), "keys are 1-40"),
        (("--value", "a=1", "--value", "a=2"), "given twice"),
        (("--camera", "../etc"), "camera: a camera id"),
        (("--summary", "x"), "summary: 3 to 500"),
        (("--summary", "bell\x07 rang"), "control characters"),
    ):
        args = ["log", "--kind", "maintenance", "--summary", "cleaned the windows", *argv]
        rc, _, err = unit.cli(monkeypatch, capsys, "tom", *args)
        assert rc == 2 and message in err, (argv, err)
    assert unit.audit.entries(actions=("maintenance", "calibration")) == []


def test_log_maintenance_is_the_one_function_the_console_calls(unit: Unit) -> None:
    tom = User("tom", "technician", TRAINED, False)
    ines = User("ines", "investigator", TRAINED, False)
    e = log_maintenance(unit.audit, tom, "inspection", "  checked   the mounts\nand seals ", None, {"torque": 5})
    assert (e.user, e.role, e.action) == ("tom", "technician", "maintenance")
    assert e.detail == {"kind": "inspection", "camera": "", "summary": "checked the mounts and seals",
                        "values": {"torque": "5"}}  # fmt: skip
    session = Session(tom, unit.audit)
    assert log_maintenance(session, None, "calibration", "focus checked", "rear", {}).action == "calibration"
    with pytest.raises(MaintenanceError, match="is not the session's user"):
        log_maintenance(session, ines, "repair", "fixed", None, {})
    with pytest.raises(AccessDenied):
        log_maintenance(unit.audit, ines, "repair", "fixed the cable", None, {})
    with pytest.raises(MaintenanceError, match="kind: must be one of"):
        log_maintenance(unit.audit, tom, "upgrade", "new firmware", None, {})
    with pytest.raises(MaintenanceError, match="who did the work"):
        log_maintenance(unit.audit, None, "repair", "fixed the cable", None, {})
    bad: Any = {"k": True}
    with pytest.raises(MaintenanceError, match="value k"):
        log_maintenance(unit.audit, tom, "repair", "fixed the cable", None, bad)
    assert parse_values(["a.b=x=y"]) == {"a.b": "x=y"}
    # the console's own entries (camera None, numeric values, via) read back the same way
    console = {"kind": "restart", "camera": None, "summary": "restart requested", "via": "console"}
    unit.audit.record("tom", "technician", "maintenance", detail=console)
    rows = [describe(e) for e in list_maintenance(unit.audit)]
    assert [(r["kind"], r["camera"]) for r in rows] == [("inspection", ""), ("calibration", "rear"), ("restart", "")]
