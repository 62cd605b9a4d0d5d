"""The encrypted read store on real SQLCipher files: keys, migrations, round trips, confidentiality of the bytes
on disk, a nearly full disk, validation, SIGKILL durability and the `keys init` / `reads list` commands."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import random
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.access.audit import AuditLog, create_signing_key, load_public_pem, load_signing_key
from edge.access.users import UserStore
from edge.gps import NO_FIX, Fix
from edge.store import KeyFileError, ReadStore, StoreError, StoreFullError, create_key_file, load_key
from edge.store import commands as store_commands
from edge.store.db import open_db
from edge.store.migrations import MIGRATIONS, Migration, migrate
from edge.vision.ocr import Candidate
from edge.vision.tracker import Read

REPO = Path(__file__).resolve().parents[1]
PLATE = "QZ7XK94"  # distinctive: must never be found in the database's bytes
LAT, LON = 48.1371539, 11.5761249
GPS_FIX = Fix("gpsd", 3, LAT, LON, 519.5, 1_700_000_000.0, 0.4, 2.5, 13.9, 271.0)
FIXED = Fix("fixed", 3, -33.8688, 151.2093, 58.0, 1_700_000_100.0, 0.0, 5.0)


def jpeg(w: int, h: int, seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, enc = cv2.imencode(".jpg", img)
    assert ok
    return bytes(enc.tobytes())


CROP = jpeg(96, 24, 1)
SCENE = jpeg(320, 180, 2)


def make_read(text: str = PLATE, t: float = 1_700_000_000.0, camera: str = "front", **over: Any) -> Read:
    r = Read(
        uuid=str(uuid.uuid4()),
        camera_id=camera,
        text=text,
        confidence=0.93,
        char_confidences=tuple(0.9 + i / 100 for i in range(len(text))),
        candidates=(Candidate(text, 0.93), Candidate("QZ7XK9", 0.04), Candidate("0Z7XK94", 0.02)),
        region="us",
        plate_format="us",
        box=(560, 420, 160, 40),
        crop_jpeg=CROP,
        scene_jpeg=SCENE,
        first_seen=t - 1.0,
        last_seen=t + 0.5,
        best_seen=t,
        frames_seen=7,
    )
    return dataclasses.replace(r, **over)


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "keys" / "db.key"
    create_key_file(p)
    return p


@pytest.fixture()
def key(key_file: Path) -> bytes:
    return load_key(key_file, environ={})


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "reads.db"


# --- keys ---------------------------------------------------------------------------------------------------


def test_key_file_is_private_random_hex_and_never_overwritten(tmp_path: Path) -> None:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    create_key_file(a)
    create_key_file(b)
    assert a.stat().st_mode & 0o777 == 0o600
    text = a.read_text()
    assert len(text.strip()) == 64 and int(text, 16) >= 0
    assert load_key(a, environ={}) == bytes.fromhex(text.strip())
    assert len(load_key(a, environ={})) == 32
    assert a.read_bytes() != b.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(a)
    assert a.read_text() == text


def test_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    p = tmp_path / "nope.key"
    with pytest.raises(KeyFileError) as ei:
        load_key(p, environ={})
    assert str(p) in str(ei.value) and "alpr-edge keys init" in str(ei.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(key_file: Path, mode: int) -> None:
    os.chmod(key_file, mode)
    with pytest.raises(KeyFileError) as ei:
        load_key(key_file, environ={})
    assert f"{mode:04o}" in str(ei.value) and "refusing" in str(ei.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_key_file_owned_by_another_user_is_refused(key_file: Path) -> None:
    os.chown(key_file, 65534, 65534)
    with pytest.raises(KeyFileError, match="owned by uid 65534"):
        load_key(key_file, environ={})


@pytest.mark.parametrize(
    "content",
    [b"", b"abcd\n", b"zz" * 32 + b"\n", b"ab" * 33, b"ab " * 21 + b"a", "é".encode() * 32, b"ab" * 4000],
)
def test_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.key"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError, match="malformed") as ei:
        load_key(p, environ={})
    if content.strip():
        assert content.strip()[:16].decode(errors="replace") not in str(ei.value)


def test_systemd_credential_is_preferred(tmp_path: Path, key_file: Path) -> None:
    cred_dir = tmp_path / "creds"
    cred_dir.mkdir()
    cred = cred_dir / "alpr-edge-db-key"
    create_key_file(cred)
    os.chmod(cred, 0o440)  # systemd's own mode for credentials: exempt from the key-file mode check
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir)}
    assert load_key(key_file, environ=env) == bytes.fromhex(cred.read_text())
    assert load_key(key_file, environ=env) != load_key(key_file, environ={})
    cred.unlink()  # a credentials directory without our credential: the key file is used
    assert load_key(key_file, environ=env) == load_key(key_file, environ={})


# --- database -----------------------------------------------------------------------------------------------


def test_round_trip_with_images_and_fixes(db: Path, key: bytes) -> None:
    reads = [
        (make_read(t=1_700_000_000.0), GPS_FIX),
        (make_read("AB12CDE", t=1_700_000_010.0, camera="rear", region=None, plate_format=None), NO_FIX),
        (make_read("7ABC123", t=1_700_000_005.0, candidates=(), char_confidences=()), FIXED),
    ]
    with ReadStore.open(db, key) as store:
        for r, f in reads:
            res = store.add(r, f)
            assert res.uuid == r.uuid and res.scene_stored
        assert store.count() == 3
        for r, f in reads:
            got = store.get(r.uuid)
            assert got is not None
            for field in ("uuid", "camera_id", "text", "confidence", "char_confidences", "candidates", "region"):
                assert getattr(got, field) == getattr(r, field), field
            for field in ("plate_format", "box", "first_seen", "last_seen", "best_seen", "frames_seen"):
                assert getattr(got, field) == getattr(r, field), field
            assert got.fix == f
            assert got.has_scene
            assert abs(got.stored_at - time.time()) < 60
            assert store.image(r.uuid, "crop") == CROP
            assert store.image(r.uuid, "scene") == SCENE
        assert [r.text for r in store.list_reads()] == ["AB12CDE", "7ABC123", PLATE]  # newest first
        assert [r.text for r in store.list_reads(limit=1)] == ["AB12CDE"]
        assert [r.text for r in store.list_reads(since=1_700_000_005.0)] == ["AB12CDE", "7ABC123"]
        assert [r.text for r in store.list_reads(until=1_700_000_005.0)] == ["7ABC123", PLATE]
        assert [r.text for r in store.list_reads(camera_id="rear")] == ["AB12CDE"]
        assert store.get(str(uuid.uuid4())) is None
        assert store.image(str(uuid.uuid4()), "crop") is None
        assert store.integrity_check() == "ok"
        st = store.status()
        assert st.reads == 3 and st.db_bytes > len(SCENE) * 3 and st.scene_images_on and st.fault is None


def test_reopen_persists(db: Path, key: bytes) -> None:
    r = make_read()
    with ReadStore.open(db, key) as store:
        store.add(r, GPS_FIX)
    assert db.stat().st_mode & 0o777 == 0o600
    with ReadStore.open(db, key, create=False) as store:
        got = store.get(r.uuid)
        assert got is not None and got.text == PLATE and got.fix == GPS_FIX
        assert store.image(r.uuid, "scene") == SCENE
        assert store.integrity_check() == "ok"


def test_missing_db_is_not_created_when_create_is_false(db: Path, key: bytes) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ReadStore.open(db, key, create=False)
    assert not db.exists()


def test_migrations_are_recorded_and_idempotent(db: Path, key: bytes) -> None:
    conn = open_db(db, key)
    try:
        assert migrate(conn) == [m.number for m in MIGRATIONS]
        assert migrate(conn) == []
        rows = conn.execute("SELECT number, name FROM schema_migrations").fetchall()
        assert [r[0] for r in rows] == [m.number for m in MIGRATIONS]
    finally:
        conn.close()
    with ReadStore.open(db, key) as store:  # opening again applies nothing new
        assert store.count() == 0
    conn = open_db(db, key)
    try:
        assert migrate(conn) == []
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


def test_failed_migration_leaves_nothing_behind(db: Path, key: bytes) -> None:
    broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", ("CREATE TABLE half (x)", "NOT SQL AT ALL")))
    conn = open_db(db, key)
    try:
        with pytest.raises(StoreError, match="migration failed"):
            migrate(conn, broken)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        assert "reads" in tables and "half" not in tables
        numbers = [r[0] for r in conn.execute("SELECT number FROM schema_migrations").fetchall()]
        assert numbers == [m.number for m in MIGRATIONS]
        conn.execute(
            "INSERT INTO schema_migrations (number, name, applied_at) VALUES (?, 'future', 0)", (len(MIGRATIONS) + 5,)
        )
        with pytest.raises(StoreError, match="newer than this alpr-edge knows"):
            migrate(conn)
    finally:
        conn.close()


def test_wrong_key_is_a_clear_error(db: Path, key: bytes, capfd: pytest.CaptureFixture[str]) -> None:
    with ReadStore.open(db, key) as store:
        store.add(make_read(), GPS_FIX)
    capfd.readouterr()
    with pytest.raises(StoreError) as ei:
        ReadStore.open(db, bytes(32))
    assert str(db) in str(ei.value) and "key does not match" in str(ei.value)
    assert "hmac" not in capfd.readouterr().err  # SQLCipher's own log is silenced
    with pytest.raises(sqlite3.DatabaseError):  # and plain SQLite cannot read it at all
        sqlite3.connect(db).execute("SELECT * FROM sqlite_master").fetchall()
    junk = db.with_name("junk.db")
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="key does not match"):
        ReadStore.open(junk, key)


def _secrets_in(data: bytes) -> list[str]:
    needles = {
        "plate": PLATE.encode(),
        "plate utf-16": PLATE.encode("utf-16-le"),
        "lat text": str(LAT).encode(),
        "lon text": str(LON).encode(),
        "lat double BE": struct.pack(">d", LAT),
        "lat double LE": struct.pack("<d", LAT),
        "lon double BE": struct.pack(">d", LON),
        "lon double LE": struct.pack("<d", LON),
        "crop jpeg": CROP[200:264],
    }
    return [name for name, needle in needles.items() if needle in data]


def test_search_finds_secrets_in_a_plain_sqlite_file(tmp_path: Path) -> None:
    """The byte search below can fail: on an unencrypted file it finds every secret."""
    plain = tmp_path / "plain.db"
    c = sqlite3.connect(plain)
    c.execute("CREATE TABLE t (text TEXT, text16 TEXT, lat REAL, lon REAL, slat TEXT, slon TEXT, img BLOB)")
    c.execute(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)",
        (PLATE, PLATE.encode("utf-16-le"), LAT, LON, str(LAT), str(LON), CROP),
    )
    c.commit()
    c.close()
    assert set(_secrets_in(plain.read_bytes())) >= {"plate", "lat text", "lat double BE", "lon double BE", "crop jpeg"}


def test_plate_and_position_never_in_file_bytes(db: Path, key: bytes) -> None:
    store = ReadStore.open(db, key)
    for i in range(20):
        store.add(make_read(t=1_700_000_000.0 + i), GPS_FIX)
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    assert all(p.exists() for p in files)  # the WAL holds the reads while the store is open
    assert files[1].stat().st_size > 20 * len(SCENE)
    for p in files:
        assert _secrets_in(p.read_bytes()) == [], p
    store.close()
    for p in files:
        if p.exists():
            assert _secrets_in(p.read_bytes()) == [], p


def test_low_disk_drops_scene_first_then_refuses_then_recovers(db: Path, key: bytes) -> None:
    free = [10_000_000_000]
    store = ReadStore.open(db, key, min_free_bytes=50_000_000, scene_min_free_bytes=500_000_000,
                           free_bytes=lambda: free[0])  # fmt: skip
    try:
        r1 = make_read()
        assert store.add(r1, GPS_FIX).scene_stored
        free[0] = 200_000_000  # below the scene threshold
        st = store.status()
        assert not st.scene_images_on and st.fault is not None and "scene" in st.fault
        r2 = make_read()
        assert not store.add(r2, GPS_FIX).scene_stored
        got = store.get(r2.uuid)
        assert got is not None and not got.has_scene
        assert store.image(r2.uuid, "scene") is None and store.image(r2.uuid, "crop") == CROP
        free[0] = 10_000_000  # below the minimum: refused, nothing written
        r3 = make_read()
        with pytest.raises(StoreFullError):
            store.add(r3, GPS_FIX)
        assert store.get(r3.uuid) is None and store.image(r3.uuid, "crop") is None and store.count() == 2
        st = store.status()
        assert st.fault is not None and "disk full" in st.fault and not st.scene_images_on
        free[0] = 10_000_000_000  # space returns: back to normal without reopening
        r4 = make_read()
        assert store.add(r4, GPS_FIX).scene_stored
        st = store.status()
        assert st.scene_images_on and st.fault is None and st.reads == 3 and st.free_bytes == free[0]
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_sqlite_full_is_rolled_back_and_recovers(db: Path, key: bytes) -> None:
    store = ReadStore.open(db, key)
    try:
        store.add(make_read(), GPS_FIX)
        conn = store._conn  # a real SQLITE_FULL: cap the database's size
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        big = make_read()  # its scene image needs many more pages than allowed
        with pytest.raises(StoreFullError):
            store.add(big, GPS_FIX)
        assert not conn.in_transaction
        assert store.count() == 1 and store.get(big.uuid) is None and store.image(big.uuid, "crop") is None
        assert store.status().fault is not None
        conn.execute("PRAGMA max_page_count = 1073741823")
        assert store.add(big, GPS_FIX).scene_stored
        assert store.count() == 2 and store.status().fault is None and store.integrity_check() == "ok"
    finally:
        store.close()


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"uuid": "not-a-uuid"}, "uuid"),
    ({"uuid": str(uuid.uuid4()).upper()}, "uuid"),
    ({"camera_id": "front cam"}, "camera_id"),
    ({"camera_id": ""}, "camera_id"),
    ({"text": "7abc123"}, "text"),
    ({"text": ""}, "text"),
    ({"text": "A" * 17}, "text"),
    ({"text": "7ABC 12"}, "text"),
    ({"confidence": 1.5}, "confidence"),
    ({"confidence": math.nan}, "confidence"),
    ({"char_confidences": (0.5, 0.5, -0.1)}, "char_confidences[2]"),
    ({"candidates": (Candidate("A;DROP", 0.5),)}, "candidates[0].text"),
    ({"candidates": (Candidate("AB", 2.0),)}, "candidates[0].confidence"),
    ({"region": "us west"}, "region"),
    ({"box": (1, 2, -3, 4)}, "box.w"),
    ({"box": (1, 2, 3)}, "box"),
    ({"best_seen": 1_800_000_000.0}, "best_seen"),
    ({"first_seen": math.inf}, "first_seen"),
    ({"frames_seen": 0}, "frames_seen"),
    ({"crop_jpeg": b"\x89PNG\r\n\x1a\n"}, "crop_jpeg"),
    ({"crop_jpeg": b"\xff\xd8" + bytes(2 << 20)}, "crop_jpeg"),
    ({"scene_jpeg": b""}, "scene_jpeg"),
]


@pytest.mark.parametrize(("over", "field"), BAD_FIELDS)
def test_validation_names_the_field(db: Path, key: bytes, over: dict[str, Any], field: str) -> None:
    with ReadStore.open(db, key) as store:
        with pytest.raises(ValueError) as ei:
            store.add(make_read(**over), GPS_FIX)
        assert str(ei.value).startswith(f"{field}:"), str(ei.value)
        assert store.count() == 0


@pytest.mark.parametrize(
    ("fix", "field"),
    [
        (dataclasses.replace(GPS_FIX, lat=91.0), "fix.lat"),
        (dataclasses.replace(GPS_FIX, lon=math.nan), "fix.lon"),
        (dataclasses.replace(GPS_FIX, lat=None), "fix.lat"),
        (dataclasses.replace(GPS_FIX, source="guess"), "fix.source"),
        (dataclasses.replace(GPS_FIX, mode=7), "fix.mode"),
        (dataclasses.replace(NO_FIX, lat=1.0), "fix.source"),
        (dataclasses.replace(GPS_FIX, age_s=math.inf), "fix.age_s"),
    ],
)
def test_fix_validation_names_the_field(db: Path, key: bytes, fix: Fix, field: str) -> None:
    with ReadStore.open(db, key) as store:
        with pytest.raises(ValueError) as ei:
            store.add(make_read(), fix)
        assert str(ei.value).startswith(f"{field}:"), str(ei.value)
        assert store.count() == 0


def test_duplicate_uuid_is_refused_and_the_first_kept(db: Path, key: bytes) -> None:
    with ReadStore.open(db, key) as store:
        r = make_read()
        store.add(r, GPS_FIX)
        with pytest.raises(ValueError, match=r"^uuid:"):
            store.add(dataclasses.replace(r, text="OTHER1"), NO_FIX)
        got = store.get(r.uuid)
        assert got is not None and got.text == PLATE and got.fix == GPS_FIX and store.count() == 1


# --- durability: SIGKILL while reads flow -------------------------------------------------------------------

CHILD = """
import dataclasses, sys, uuid
from pathlib import Path
from edge.gps import Fix
from edge.store import ReadStore, load_key
from edge.vision.ocr import Candidate
from edge.vision.tracker import Read
db, key_file, crop, scene = sys.argv[1:5]
crop_b, scene_b = Path(crop).read_bytes(), Path(scene).read_bytes()
fix = Fix("gpsd", 3, 48.1371539, 11.5761249, 519.5, 1.7e9, 0.4, 2.5, 13.9, 271.0)
store = ReadStore.open(Path(db), load_key(Path(key_file), environ={}))
print("open", flush=True)
i = 0
while True:
    i += 1
    r = Read(str(uuid.uuid4()), "front", "QZ7XK94", 0.9, (0.9,) * 7, (Candidate("QZ7XK94", 0.9),), "us", "us",
             (1, 2, 3, 4), crop_b, scene_b, 1.7e9 + i, 1.7e9 + i, 1.7e9 + i, 3)
    store.add(r, fix)
    print(r.uuid, flush=True)
"""


def test_every_reported_read_survives_sigkill(tmp_path: Path, key_file: Path) -> None:
    db = tmp_path / "kill.db"
    (tmp_path / "crop.jpg").write_bytes(CROP)
    (tmp_path / "scene.jpg").write_bytes(SCENE)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    reported: list[str] = []
    killed_after: list[int] = []
    for i in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(key_file), str(tmp_path / "crop.jpg"),
             str(tmp_path / "scene.jpg")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        assert proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda out=proc.stdout, acc=lines: acc.extend(ln.decode() for ln in out))
        reader.start()
        if i < 3:  # a few kills land while opening (first creation and migration included)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            deadline = time.monotonic() + 20
            while not lines and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        reader.join(10)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == -9, f"child ended by itself (seed {seed}): {err}"
        ids = [ln.strip() for ln in lines if ln.endswith("\n") and ln.strip() != "open"]
        reported += ids
        killed_after.append(len(ids))
    assert sum(1 for n in killed_after if n > 0) >= 10, killed_after  # most kills land while reads flow
    with ReadStore.open(db, load_key(key_file, environ={})) as store:
        missing = [u for u in reported if store.get(u) is None]
        assert missing == [], f"{len(missing)} reported reads lost (seed {seed})"
        assert store.count() >= len(reported)
        assert store.integrity_check() == "ok"
        for u in reported[-3:]:
            assert store.image(u, "scene") == SCENE


# --- commands -----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr-edge")
    sub = p.add_subparsers(dest="command", required=True)
    store_commands.register(sub)
    return p


def run_cmd(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        rc = args.func(args)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return rc, out, err


READER_PW = "plates-are-private-9"


def reader_login(db: Path, key_file: Path, role: str = "operator") -> tuple[str, ...]:
    """An audit key beside the database key and a user "reader" with ``role``; the login options for a command."""
    if not (key_file.parent / "audit.key").exists():
        create_signing_key(key_file.parent / "audit.key")
    conn = open_db(db, load_key(key_file, environ={}))
    try:
        migrate(conn)
        if UserStore(conn).get("reader") is None:
            UserStore(conn).add("reader", role, READER_PW, date(2020, 1, 1))
    finally:
        conn.close()
    return ("--user", "reader", "--password-stdin")


def test_every_command_has_help() -> None:
    p = parser()
    seen = 0
    stack = [p]
    while stack:
        cur = stack.pop()
        for action in cur._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, choice.dest
                    seen += 1
                stack.extend(action.choices.values())
            elif action.dest != "help":
                assert action.help, action.dest
    assert seen == 5  # keys, keys init, keys audit-public, reads, reads list
    from edge.store.commands import _resolve

    reads_list = p.parse_args(["reads", "list", "--user", "x"])
    assert _resolve(reads_list) == (Path("/var/lib/alpr-edge/reads.db"), Path("/etc/alpr-edge/db.key"))


def test_keys_init_writes_the_key_but_never_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "etc" / "db.key"
    audit = tmp_path / "etc" / "audit.key"  # beside the database key unless told otherwise
    rc, out, err = run_cmd(capsys, "keys", "init", "--key-file", str(path))
    assert rc == 0 and str(path) in out and str(audit) in out and err == ""
    key_hex, audit_pem = path.read_text().strip(), audit.read_text()
    assert key_hex not in out and path.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in audit_pem and "PRIVATE" not in out and audit.stat().st_mode & 0o777 == 0o600
    rc, out, err = run_cmd(capsys, "keys", "init", "--key-file", str(path))
    assert rc == 2 and out == "" and "already exists" in err and len(err.strip().splitlines()) == 1
    assert path.read_text().strip() == key_hex and audit.read_text() == audit_pem
    # a unit from before the access record: only the signing key is made, and it says so
    audit.unlink()
    rc, out, err = run_cmd(capsys, "keys", "init", "--key-file", str(path))
    assert rc == 0 and "kept the existing database key" in out and f"new access record signing key to {audit}" in out
    assert path.read_text().strip() == key_hex and audit.read_text() != audit_pem
    rc, out, err = run_cmd(capsys, "keys", "audit-public", "--key-file", str(path))
    assert rc == 0 and out.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in out
    assert load_public_pem(out).public_bytes_raw() == load_signing_key(audit).public_key().public_bytes_raw()
    other = tmp_path / "elsewhere" / "signing.pem"
    rc, out, err = run_cmd(capsys, "keys", "init", "--key-file", str(path), "--audit-key-file", str(other))
    assert rc == 0 and other.exists()
    rc, out, err = run_cmd(capsys, "keys", "audit-public", "--audit-key-file", str(tmp_path / "none.pem"))
    assert rc == 2 and "keys init" in err and len(err.strip().splitlines()) == 1


def test_reads_list_table_and_json(db: Path, key_file: Path, key: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    with ReadStore.open(db, key) as store:
        store.add(make_read(t=1_700_000_000.0), GPS_FIX)
        store.add(make_read("AB12CDE", t=1_700_000_060.0, camera="rear"), NO_FIX)
    common = ("--db", str(db), "--key-file", str(key_file), *reader_login(db, key_file))
    rc, out, err = run_cmd(capsys, "reads", "list", *common, stdin=READER_PW)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert "TIME (UTC)" in lines[0] and "PLATE" in lines[0] and "FIX" in lines[0]
    assert lines[1].startswith("2023-11-14T22:14:20.000Z") and "rear" in lines[1] and "AB12CDE" in lines[1]
    assert lines[1].rstrip().endswith("none")
    assert lines[2].startswith("2023-11-14T22:13:20.000Z") and PLATE in lines[2] and "gpsd 0.4s" in lines[2]
    assert "0.93" in lines[2] and " 7 " in lines[2]
    rc, out, _ = run_cmd(capsys, "reads", "list", "--json", "--limit", "1", *common, stdin=READER_PW)
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert rc == 0 and len(rows) == 1 and rows[0]["text"] == "AB12CDE" and rows[0]["fix"]["source"] == "none"
    rc, out, _ = run_cmd(capsys, "reads", "list", "--json", "--camera", "front", *common, stdin=READER_PW)
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert [r["text"] for r in rows] == [PLATE]
    assert rows[0]["fix"]["lat"] == LAT and rows[0]["best_seen"] == "2023-11-14T22:13:20.000Z"
    assert rows[0]["has_scene"] is True and "crop_jpeg" not in rows[0]
    rc, out, _ = run_cmd(capsys, "reads", "list", "--since", "2023-11-14T22:14:00Z", *common, stdin=READER_PW)
    assert rc == 0 and "AB12CDE" in out and PLATE not in out
    # every listing is in the access record, with the UUIDs shown (P13)
    conn = open_db(db, key)
    try:
        views = AuditLog(conn, load_signing_key(key_file.parent / "audit.key")).entries(actions=["reads.view"])
    finally:
        conn.close()
    assert [(e.user, e.detail["count"]) for e in views] == [("reader", 2), ("reader", 1), ("reader", 1), ("reader", 1)]
    assert views[3].detail["read_uuids"] != views[2].detail["read_uuids"]


def test_reads_list_errors_are_one_line(
    tmp_path: Path, db: Path, key_file: Path, key: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_db = tmp_path / "none.db"
    create_signing_key(key_file.parent / "audit.key")
    rc, out, err = run_cmd(capsys, "reads", "list", "--db", str(missing_db), "--key-file", str(key_file),
                           "--user", "x")  # fmt: skip
    assert rc == 2 and out == "" and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not missing_db.exists()
    ReadStore.open(db, key).close()
    no_key = tmp_path / "missing.key"
    rc, out, err = run_cmd(capsys, "reads", "list", "--db", str(db), "--key-file", str(no_key),
                           "--audit-key-file", str(key_file.parent / "audit.key"), "--user", "x")  # fmt: skip
    assert rc == 2 and "alpr-edge keys init" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other.key"
    create_key_file(other)
    rc, out, err = run_cmd(capsys, "reads", "list", "--db", str(db), "--key-file", str(other),
                           "--audit-key-file", str(key_file.parent / "audit.key"), "--user", "x")  # fmt: skip
    assert rc == 2 and "key does not match" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    os.chmod(key_file, 0o644)
    rc, out, err = run_cmd(capsys, "reads", "list", "--db", str(db), "--key-file", str(key_file), "--user", "x")
    assert rc == 2 and "0644" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        parser().parse_args(["reads", "list", "--limit", "0", "--user", "x"])
