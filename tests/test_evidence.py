"""Evidence on the unit (P10) on a real SQLCipher store, through the ``alpr-edge evidence`` commands: holds need a
case number, a reason and the right role; release is the administrator's; an export (folder, .tar.gz, .zip) verifies
on its own with only the public key, and every way of altering it afterwards is caught and named."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.access.audit import AuditLog, create_signing_key, load_signing_key, public_pem
from edge.access.users import UserStore
from edge.cli import build_parser
from edge.evidence import Evidence, HoldError
from edge.evidence_format import verify_export
from edge.gps import Fix
from edge.store.db import Connection, open_db
from edge.store.keys import create_key_file, load_key
from edge.store.migrations import migrate
from edge.store.reads import ReadStore
from edge.store.retention import DAY, purge

from .test_store import make_read

PW = "correct horse battery"
NOW = datetime.now().timestamp()
TODAY = datetime.fromtimestamp(NOW).date()
CASE = "2026-001234"
FIX = Fix("gpsd", 3, 45.5, -73.6, 30.0, NOW, 0.2, 4.0, 12.0, 90.0)


@dataclasses.dataclass
class Unit:
    tmp: Path
    db: Path
    key_file: Path
    audit_key: Path
    conn: Connection
    audit: AuditLog
    reads: list[str]


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    """One unit for the module (Argon2 logins cost time): five reads, users of every role that matters here."""
    tmp = tmp_path_factory.mktemp("unit")
    key_file, audit_key, db = tmp / "db.key", tmp / "audit.key", tmp / "reads.db"
    create_key_file(key_file)
    create_signing_key(audit_key)
    key = load_key(key_file)
    with ReadStore.open(db, key) as store:
        reads = [store.add(make_read(f"EVD{i}00", NOW - 40 * DAY + i), FIX).uuid for i in range(5)]
    conn = open_db(db, key)
    migrate(conn)
    users = UserStore(conn)
    for name, role in (("ada", "administrator"), ("ivan", "investigator"), ("olga", "operator")):
        users.add(name, role, PW, TODAY)
    yield Unit(tmp, db, key_file, audit_key, conn, AuditLog(conn, load_signing_key(audit_key)), reads)
    conn.close()


def cli(
    u: Unit, mp: pytest.MonkeyPatch, cap: pytest.CaptureFixture[str], *argv: str, user: str | None = None
) -> tuple[int, str, str]:
    mp.setattr("sys.stdin", io.StringIO(PW + "\n"))
    login = (
        [
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
        if user
        else []
    )
    args = build_parser().parse_args([*argv, *login])
    rc = args.func(args)
    out, err = cap.readouterr()
    return rc, out, err


def active_holds(u: Unit) -> list[str]:
    return [r[0] for r in u.conn.execute("SELECT read_uuid FROM holds WHERE released_at IS NULL").fetchall()]


def test_holds_need_a_case_a_reason_and_the_role(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    r0, r1 = unit.reads[:2]
    rc, out, err = cli(
        unit, monkeypatch, capsys, "evidence", "hold", r0, "--case", CASE, "--reason", "suspect car", user="olga"
    )
    assert rc == 2 and "evidence.hold" in err and "investigator or administrator" in err
    rc, out, err = cli(unit, monkeypatch, capsys, "evidence", "hold", r0, "--case", "x", "--reason", "r", user="ivan")
    assert rc == 2 and "case" in err
    rc, out, err = cli(unit, monkeypatch, capsys, "evidence", "hold", r0, "--case", CASE, "--reason", " ", user="ivan")
    assert rc == 2 and "--reason" in err
    missing = "00000000-0000-4000-8000-000000000000"
    rc, out, err = cli(
        unit,
        monkeypatch,
        capsys,
        "evidence",
        "hold",
        r0,
        missing,
        "--case",
        CASE,
        "--reason",
        "suspect car",
        user="ivan",
    )
    assert rc == 2 and missing in err and active_holds(unit) == []  # all or nothing
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evidence", "hold", r0, "--reason", "no case", "--user", "ivan"])

    rc, out, err = cli(
        unit,
        monkeypatch,
        capsys,
        "evidence",
        "hold",
        r0,
        r1,
        "--case",
        CASE,
        "--reason",
        "vehicle seen near the scene",
        user="ivan",
    )
    assert rc == 0 and "2 read(s) held for case 2026-001234" in out
    assert sorted(active_holds(unit)) == sorted([r0, r1])
    entry = unit.audit.entries(actions=["evidence.hold"])[-1]
    assert (
        entry.user == "ivan"
        and entry.detail["case_number"] == CASE
        and sorted(entry.detail["read_uuids"]) == sorted([r0, r1])
    )
    # Held reads survive a forced purge.
    r = purge(unit.conn, unit.audit, retention_days=30, user="ada", role="administrator", force=True, dry_run=True)
    assert r.held_kept == 2 and r.reads == 3

    rc, out, err = cli(unit, monkeypatch, capsys, "evidence", "list", "--case", CASE, user="ivan")
    assert rc == 0 and r0 in out and "EVD000" not in out  # holds, never plates


def test_release_is_for_administrators_and_is_kept_on_file(
    unit: Unit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    r4 = unit.reads[4]
    ev = Evidence(unit.conn, unit.db)
    (h,) = ev.hold([r4], "C-RELEASE-1", "to be released", "ivan")
    rc, out, err = cli(unit, monkeypatch, capsys, "evidence", "release", h.uuid, "--reason", "case closed", user="ivan")
    assert rc == 2 and "evidence.release" in err and "administrator" in err and r4 in active_holds(unit)
    assert unit.audit.entries(actions=["access.denied"])[-1].user == "ivan"
    rc, out, err = cli(
        unit,
        monkeypatch,
        capsys,
        "evidence",
        "release",
        "--case",
        "C-RELEASE-1",
        "--reason",
        "case closed, court order 12",
        user="ada",
    )
    assert rc == 0 and "1 hold(s) released" in out and r4 not in active_holds(unit)
    (kept,) = ev.holds("C-RELEASE-1")
    assert (kept.released_by, kept.release_reason, kept.active) == ("ada", "case closed, court order 12", False)
    with pytest.raises(HoldError, match="already released"):
        ev.release(hold_uuids=[h.uuid], reason="again", user="ada")
    assert unit.audit.entries(actions=["evidence.release"])[-1].detail["hold_uuids"] == [h.uuid]


@pytest.fixture(scope="module")
def exported(unit: Unit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The case exported as a folder, a .tar.gz and a .zip by the investigator through the command."""
    ev = Evidence(unit.conn, unit.db)
    ev.hold(
        unit.reads[2:4],
        "2026-EXPORT-7",
        "stolen vehicle pursuit",
        "ivan",
        record=lambda hs: unit.audit.record(
            "ivan",
            "investigator",
            "evidence.hold",
            detail={"case_number": hs[0].case_number, "read_uuids": [h.read_uuid for h in hs]},
        ),
    )
    out = tmp_path_factory.mktemp("exports")
    paths = {"folder": out / "case7", "tar.gz": out / "case7.tar.gz", "zip": out / "case7.zip"}
    mp = pytest.MonkeyPatch()
    try:
        for p in paths.values():
            mp.setattr("sys.stdin", io.StringIO(PW + "\n"))
            args = build_parser().parse_args(
                [
                    "evidence",
                    "export",
                    "--case",
                    "2026-EXPORT-7",
                    str(p),
                    "--user",
                    "ivan",
                    "--password-stdin",
                    "--db",
                    str(unit.db),
                    "--key-file",
                    str(unit.key_file),
                    "--audit-key-file",
                    str(unit.audit_key),
                ]
            )
            assert args.func(args) == 0
    finally:
        mp.undo()
    return paths


def public_key_file(unit: Unit) -> Path:
    p = unit.tmp / "unit-audit.pem"
    p.write_text(public_pem(load_signing_key(unit.audit_key)))
    return p


def verify(
    unit: Unit, mp: pytest.MonkeyPatch, cap: pytest.CaptureFixture[str], path: Path, key: Path | None = None
) -> tuple[int, str]:
    argv = ["evidence", "verify", str(path)] + (["--public-key", str(key)] if key else [])
    rc, out, err = cli(unit, mp, cap, *argv)
    return rc, out + err


def test_an_export_holds_what_the_case_needs(unit: Unit, exported: dict[str, Path]) -> None:
    folder = exported["folder"]
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    r2, r3 = unit.reads[2:4]
    assert names == sorted(
        ["access_record.json", "manifest.json", "manifest.sig", "reads.json", "signer.pem"]
        + [f"images/{u}-{k}.jpg" for u in (r2, r3) for k in ("crop", "scene")]
    )
    reads = json.loads((folder / "reads.json").read_text())["reads"]
    assert [r["uuid"] for r in reads] == [r2, r3] and reads[0]["text"] == "EVD200"
    assert reads[0]["fix"]["lat"] == 45.5 and reads[0]["device"] and reads[0]["best_seen"].endswith("Z")
    assert (folder / f"images/{r2}-crop.jpg").read_bytes().startswith(b"\xff\xd8")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["case_number"] == "2026-EXPORT-7" and manifest["exported_by"] == "ivan"
    assert manifest["tool"].startswith("alpr-edge ") and len(manifest["files"]) == 6
    chain = json.loads((folder / "access_record.json").read_text())["chains"][0]
    actions = [e["action"] for e in chain["entries"]]
    assert "evidence.hold" in actions  # the hold that kept these reads
    assert all(e["hash"] and e["sig"] for e in chain["entries"])
    export_entry = unit.audit.entries(actions=["evidence.export"])[-1]
    assert export_entry.detail["manifest_sha256"] and sorted(export_entry.detail["read_uuids"]) == sorted([r2, r3])
    assert unit.audit.verify(unit.audit.public_key).ok
    assert not list(folder.parent.glob(".*partial*"))  # no staging left behind


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip"])
def test_an_untouched_export_verifies_with_only_the_public_key(
    unit: Unit,
    exported: dict[str, Path],
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    copy = tmp_path / exported[kind].name  # elsewhere: nothing of the unit is needed
    if exported[kind].is_dir():
        shutil.copytree(exported[kind], copy)
    else:
        shutil.copy(exported[kind], copy)
    rc, text = verify(unit, monkeypatch, capsys, copy, public_key_file(unit))
    assert rc == 0 and text.startswith("OK: unaltered") and "6 file(s)" in text and "public key given" in text, text
    rc, text = verify(unit, monkeypatch, capsys, copy)
    assert rc == 0 and "integrity only" in text
    other = tmp_path / "other.pem"
    other.write_text(public_pem(Ed25519PrivateKey.generate()))
    rc, text = verify(unit, monkeypatch, capsys, copy, other)
    assert rc == 1 and "untrusted-signer: signer.pem" in text


def alter_folder(src: Path, dst: Path, how: str) -> str:
    """Copy the export and alter it one way; what verify must name."""
    shutil.copytree(src, dst)
    image = sorted((dst / "images").iterdir())[0]
    rel = f"images/{image.name}"
    if how == "image byte":
        data = bytearray(image.read_bytes())
        data[len(data) // 2] ^= 0x01
        image.write_bytes(bytes(data))
        return f"altered: {rel}"
    if how == "deleted file":
        image.unlink()
        return f"missing: {rel}"
    if how == "added file":
        (dst / "images" / "extra.jpg").write_bytes(b"\xff\xd8planted")
        return "extra: images/extra.jpg"
    if how == "edited manifest":
        m = json.loads((dst / "manifest.json").read_text())
        m["case_number"] = "2026-OTHER-1"
        (dst / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
        return "bad-signature: manifest.json"
    if how == "re-signed by another key":  # a forger re-signs everything with a key of their own
        forger = Ed25519PrivateKey.generate()
        (dst / "manifest.sig").write_bytes(base64.b64encode(forger.sign((dst / "manifest.json").read_bytes())))
        (dst / "signer.pem").write_text(public_pem(forger))
        return "untrusted-signer: signer.pem"
    if how == "access record entry":
        doc = json.loads((dst / "access_record.json").read_text())
        doc["chains"][0]["entries"][0]["user"] = "someone-else"
        (dst / "access_record.json").write_text(json.dumps(doc))
        return "access-record: access_record.json"
    raise AssertionError(how)


HOWS = [
    "image byte",
    "deleted file",
    "added file",
    "edited manifest",
    "re-signed by another key",
    "access record entry",
]


@pytest.mark.parametrize("how", HOWS)
def test_every_alteration_is_caught_and_named(
    unit: Unit,
    exported: dict[str, Path],
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = alter_folder(exported["folder"], tmp_path / "x", how)
    rc, text = verify(unit, monkeypatch, capsys, tmp_path / "x", public_key_file(unit))
    assert rc == 1 and text.startswith("FAILED") and expected in text, text
    if how == "access record entry":
        assert "altered: access_record.json" in text and "altered (its fields no longer give its hash)" in text


def test_an_altered_archive_is_caught(
    unit: Unit,
    exported: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(exported["tar.gz"]) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            f = src.extractfile(m)
            data = f.read() if f else b""
            if m.name.endswith("reads.json"):
                data = data.replace(b"EVD200", b"EVD999")
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    rc, text = verify(unit, monkeypatch, capsys, bad, public_key_file(unit))
    assert rc == 1 and "altered: reads.json" in text
    badzip = tmp_path / "bad.zip"
    with zipfile.ZipFile(exported["zip"]) as src, zipfile.ZipFile(badzip, "w") as dst:
        for i in src.infolist():
            if not i.filename.endswith("manifest.sig"):
                dst.writestr(i, src.read(i))
    with pytest.raises(Exception, match=r"no manifest\.sig"):
        verify_export(badzip)
    rc, text = verify(unit, monkeypatch, capsys, badzip)
    assert rc == 2 and "not an alpr-edge evidence export" in text


def test_export_refuses_what_it_should(
    unit: Unit, exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = cli(
        unit, monkeypatch, capsys, "evidence", "export", "--case", "2026-NONE-1", str(unit.tmp / "none"), user="ivan"
    )
    assert rc == 2 and "no read is held" in err and not (unit.tmp / "none").exists()
    rc, _, err = cli(
        unit, monkeypatch, capsys, "evidence", "export", "--case", "2026-EXPORT-7", str(exported["folder"]), user="ivan"
    )
    assert rc == 2 and "already exists" in err
    rc, _out, err = cli(
        unit, monkeypatch, capsys, "evidence", "export", "--case", "2026-EXPORT-7", str(unit.tmp / "op"), user="olga"
    )
    assert rc == 2 and "evidence.export" in err and not (unit.tmp / "op").exists()


def test_every_evidence_command_has_help() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    ev = sub.choices["evidence"]
    esub = next(a for a in ev._actions if isinstance(a, argparse._SubParsersAction))
    assert set(esub.choices) == {"hold", "release", "list", "export", "verify"}
    for p in esub.choices.values():
        assert p.description and all(a.help for a in p._actions)
    assert "must be held as evidence" in " ".join(str(ev.description).split())
