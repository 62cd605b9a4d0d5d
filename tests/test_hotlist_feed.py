"""Hot list feed: CSV parsing, signed bundles, the store of lists in force, sources and the refresher.

Everything real: Ed25519 keys from ``cryptography``, SQLCipher files, a folder, and a local HTTPS server with a
self-signed certificate made in the fixture.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import http.server
import ipaddress
import json
import os
import re
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from edge.hotlist import commands
from edge.hotlist.bundle import (
    MAGIC,
    BundleError,
    generate_keypair,
    key_id,
    peek_header,
    sign_bundle,
    verify_bundle,
)
from edge.hotlist.csvformat import CsvError, parse_csv, write_csv
from edge.hotlist.entry import HotEntry
from edge.hotlist.refresh import DirectorySource, HttpsSource, Refresher, SourceError
from edge.hotlist.repository import Accepted, HotListRepository, Refused
from edge.store.db import open_db
from edge.store.keys import create_key_file, load_key

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
SECRET_PLATE = "QZX4821"  # must never reach stdout or the database file in clear


def entry(i: int, plate: str | None = None, **over: object) -> HotEntry:
    fields: dict[str, object] = {
        "entry_id": f"N{i:07d}",
        "list_id": "ncic-or",
        "plate": plate or f"AB{i:05d}",
        "state": "OR",
        "list_code": "STOLEN_VEHICLE",
        "reason": "Stolen vehicle",
        "case_number": f"N{i:07d}",
        "entered": T0 - 86400,
        "expires": None,
        "instructions": "stop only with probable cause",
        "vehicle_description": "blue sedan",
    }
    fields.update(over)
    return HotEntry(**fields)  # type: ignore[arg-type]


def entries(n: int, list_id: str = "ncic-or") -> list[HotEntry]:
    out = [entry(i, list_id=list_id) for i in range(n)]
    out[0] = entry(0, SECRET_PLATE, list_id=list_id)
    return out


@pytest.fixture(scope="module")
def hq() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    return generate_keypair()


@pytest.fixture(scope="module")
def rogue() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    return generate_keypair()


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Path, bytes]:
    key_file = tmp_path / "db.key"
    create_key_file(key_file)
    return tmp_path / "reads.db", load_key(key_file)


@pytest.fixture()
def repo(store: tuple[Path, bytes], hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> Iterator[HotListRepository]:
    with HotListRepository.open(store[0], store[1], [hq[1]]) as r:
        yield r


def bundle_of(priv: Ed25519PrivateKey, version: int, n: int = 20, list_id: str = "ncic-or", **kw: object) -> bytes:
    return sign_bundle(priv, list_id, version, write_csv(entries(n, list_id)), kw.pop("created", T0), **kw)  # type: ignore[arg-type]


def raw_bundle(priv: Ed25519PrivateKey, header: dict[str, object], body: bytes) -> bytes:
    """A bundle built by hand (the documented container), for headers headquarters' tool would never write."""
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    signed = MAGIC + struct.pack(">I", len(h)) + h
    sig = priv.sign(signed)
    return signed + struct.pack(">H", len(sig)) + sig + struct.pack(">Q", len(body)) + body


def header_for(priv: Ed25519PrivateKey, body: bytes, csv_len: int, **over: object) -> dict[str, object]:
    h: dict[str, object] = {
        "format": 1,
        "list_id": "ncic-or",
        "version": 9,
        "created": "2026-11-01T00:00:00Z",
        "entry_count": 1,
        "key_id": key_id(priv.public_key()),
        "compression": "gzip",
        "body_len": len(body),
        "csv_len": csv_len,
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    h.update(over)
    return h


def changes(repo: HotListRepository) -> list[tuple[str, str, dict[str, object]]]:
    rows = repo.conn.execute("SELECT actor, action, details FROM hotlist_changes ORDER BY seq").fetchall()
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


def in_force(repo: HotListRepository) -> tuple[object, ...]:
    row = repo.conn.execute("SELECT list_id, version, sha256, bundle FROM hotlist_bundles").fetchall()
    return tuple(tuple(r) for r in row)


# -- CSV ---------------------------------------------------------------------------------------------------------


def test_csv_round_trip_normalises_and_defaults(tmp_path: Path) -> None:
    data = (
        b"Plate,STATE,list_code,case_number,entered,expires\n"
        b"abc-12 3,or,stolen_plate,C1,2026-10-01,2027-01-01T12:00:00+02:00\n"
        b"7AB*,,amber_alert,C2,2026-10-02T08:00:00Z,\n"
    )
    p = tmp_path / "x.csv"
    p.write_bytes(data)
    got = list(parse_csv(p, "bolo"))
    assert [e.plate for e in got] == ["ABC123", "7AB*"]
    assert got[0].state == "OR" and got[1].state is None
    assert got[0].entry_id == "C1" and got[0].reason == "Stolen plate" and got[1].reason == "AMBER alert"
    assert got[0].entered == dt.datetime(2026, 10, 1, tzinfo=dt.UTC).timestamp()
    assert got[0].expires == dt.datetime(2027, 1, 1, 10, tzinfo=dt.UTC).timestamp()
    assert got[1].expires is None and got[1].instructions == "" and got[1].list_id == "bolo"
    again = list(parse_csv(write_csv(got), "bolo"))
    assert again == got


def test_bad_lines_are_named_and_good_lines_kept(tmp_path: Path) -> None:
    lines = [
        "plate,state,list_code,case_number,entered,entry_id,instructions",
        "GOOD1,OR,BOLO,C1,2026-10-01,E1,",  # 2
        "A,OR,BOLO,C2,2026-10-01,E2,",  # 3 plate too short
        "GOOD2,OR,BOLO,C3,yesterday,E3,",  # 4 entered
        "GOOD3,ORE1,BOLO,C4,2026-10-01,E4,",  # 5 state
        "GOOD4,OR,BOLO,,2026-10-01,E5,",  # 6 case_number
        "GOOD5,OR,BOLO,C6,2026-10-01,E1,",  # 7 duplicate entry_id
        "GOOD6,OR,BOLO,C7,2026-10-01",  # 8 field count
        'GOOD7,OR,BOLO,C8,2026-10-01,E8,"two',  # 9 a quoted field over two lines: no line breaks in a field
        'lines"',
        "GOOD8,OR,BO LO,C9,2026-10-01,E9,",  # 11 list_code
        "GO\tOD,OR,BOLO,C10,2026-10-01,E10,",  # 12 control character
        "",
        "GOOD9,OR,BOLO,C11,2026-10-01,E11," + "x" * 600,  # 14 instructions too long
        "GOOD10,OR,BOLO,C12,2026-10-01,E12,ok",  # 15
        "",
    ]
    p = tmp_path / "extract.csv"
    p.write_text("\n".join(lines))
    res = parse_csv(p, "ncic-or")
    good = list(res)
    assert [e.entry_id for e in good] == ["E1", "E12"]
    where = {(e.line, e.field) for e in res.errors}
    assert where == {
        (3, "plate"),
        (4, "entered"),
        (5, "state"),
        (6, "case_number"),
        (7, "entry_id"),
        (8, "*"),
        (9, "instructions"),
        (11, "list_code"),
        (12, "plate"),
        (14, "instructions"),
    }
    assert all(e.file == str(p) for e in res.errors)
    assert res.error_count == 10 and res.good_count == 2
    assert str(res.errors[0]).startswith(f"{p}:3:plate: ")
    assert not any("GOOD" in str(e) for e in res.errors)  # values (plates) never in messages


def test_control_character_in_a_quoted_field_names_the_field() -> None:
    data = b'plate,state,list_code,case_number,entered,instructions\nAB123,OR,BOLO,C1,2026-10-01,"a\x07b"\n'
    res = parse_csv(data, "x")
    assert list(res) == []
    assert [(e.line, e.field) for e in res.errors] == [(2, "instructions")]


def test_duplicate_ids_far_apart_are_found() -> None:
    es = [entry(i) for i in range(10_000)] + [entry(3, plate="ZZ999")]
    res = parse_csv(write_csv(es), "ncic-or")
    assert sum(1 for _ in res) == 10_000
    assert [(e.line, e.field) for e in res.errors] == [(10_002, "entry_id")]


def test_errors_are_capped_but_counted() -> None:
    rows = "\n".join(f"!,OR,BOLO,C{i},2026-10-01" for i in range(500))
    res = parse_csv(f"plate,state,list_code,case_number,entered\nOK12,OR,BOLO,C,2026-10-01\n{rows}\n".encode(), "x")
    assert res.consume() == 1
    assert res.error_count == 500 and len(res.errors) == res.max_errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"plate,state,list_code,case_number\nAB1,OR,X,C\n", "lacks the required column"),
        (b"plate,state,list_code,case_number,entered,colour\n", "unknown column 'colour'"),
        (b"plate,state,list_code,case_number,entered,plate\n", "appears twice"),
        (b"plate,state,list_code,case_number,entered\nAB\xff\xfe12,OR,X,C,2026-01-01\n", "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
    ],
)
def test_files_that_are_not_hot_lists_are_refused_whole(data: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        parse_csv(data, "x").consume()


def test_non_utf8_past_the_first_block_refuses_the_whole_file() -> None:
    good = write_csv(entries(2000))
    assert len(good) > 70_000
    with pytest.raises(CsvError, match="not UTF-8"):
        parse_csv(good + b"AB\xff1,OR,BOLO,C,2026-01-01\n", "x").consume()


def test_size_cap(tmp_path: Path) -> None:
    data = write_csv(entries(100))
    with pytest.raises(CsvError, match="over the 1000-byte limit"):
        parse_csv(data, "x", max_bytes=1000)
    p = tmp_path / "big.csv"
    p.write_bytes(data)
    with pytest.raises(CsvError, match="over the 1000-byte limit"):
        parse_csv(p, "x", max_bytes=1000)


# -- bundles -----------------------------------------------------------------------------------------------------


def test_bundle_round_trip_and_header(hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> None:
    csv_bytes = write_csv(entries(50))
    b = sign_bundle(hq[0], "ncic-or", 7, csv_bytes, T0)
    vb = verify_bundle(b, [generate_keypair()[1], hq[1]])
    assert vb.body == csv_bytes
    assert (vb.info.list_id, vb.info.version, vb.info.created, vb.info.entry_count) == ("ncic-or", 7, T0, 50)
    assert vb.header.key_id == key_id(hq[1]) and peek_header(b) == vb.header
    assert SECRET_PLATE.encode() not in b  # compressed body: no plate text at a glance either


def test_every_flipped_byte_is_refused(hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> None:
    b = bundle_of(hq[0], 1, n=3)
    for i in range(len(b)):
        bad = bytearray(b)
        bad[i] ^= 0x01
        with pytest.raises(BundleError):
            verify_bundle(bytes(bad), [hq[1]])


def test_every_truncation_and_extension_is_refused(hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> None:
    b = bundle_of(hq[0], 1, n=3)
    for n in range(len(b)):
        with pytest.raises(BundleError):
            verify_bundle(b[:n], [hq[1]])
    with pytest.raises(BundleError, match="follow the body"):
        verify_bundle(b + b"\n", [hq[1]])


def test_keys_as_pem_files(tmp_path: Path) -> None:
    from edge.hotlist.bundle import load_private_key, load_public_key, write_keypair

    kid = write_keypair(tmp_path / "hq.pem", tmp_path / "hq.pub")
    assert (tmp_path / "hq.pem").stat().st_mode & 0o777 == 0o600
    priv, pub = load_private_key(tmp_path / "hq.pem"), load_public_key(tmp_path / "hq.pub")
    assert key_id(pub) == kid == key_id(priv.public_key())
    with pytest.raises(BundleError, match="already exists"):
        write_keypair(tmp_path / "hq.pem", tmp_path / "other.pub")
    os.chmod(tmp_path / "hq.pem", 0o644)
    with pytest.raises(BundleError, match="readable by others"):
        load_private_key(tmp_path / "hq.pem")
    with pytest.raises(BundleError, match="not a PEM public key"):
        load_public_key(tmp_path / "hq.pem")


# -- the store of lists in force ----------------------------------------------------------------------------------


def test_signed_bundle_round_trip_through_sqlcipher(
    store: tuple[Path, bytes], hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]
) -> None:
    want = entries(200)
    b = sign_bundle(hq[0], "ncic-or", 3, write_csv(want), T0)
    with HotListRepository.open(store[0], store[1], [hq[1]]) as repo:
        res = repo.offer(b, source="/media/usb", now=T0 + 60)
        assert isinstance(res, Accepted) and res.previous_version is None and res.bad_lines == 0
        assert res.info.entry_count == 200 and res.info.source == "/media/usb"
        assert repo.offer(b, now=T0 + 61) == Refused(
            "version 3 of list ncic-or is already in force", "unchanged", "ncic-or", 3
        )
        assert [c[1] for c in changes(repo)] == ["bundle-accepted"]  # the same bundle again is not news
    with HotListRepository.open(store[0], store[1], [hq[1]], create=False) as repo:
        (info,) = repo.lists()
        assert (info.list_id, info.version, info.created, info.entry_count, info.source) == (
            "ncic-or",
            3,
            T0,
            200,
            "/media/usb",
        )
        assert list(repo.entries("ncic-or")) == want
        actor, action, details = changes(repo)[0]
        assert (actor, action, details["version"], details["entries"]) == ("hq", "bundle-accepted", 3, 200)
    raw = b"".join(p.read_bytes() for p in store[0].parent.glob("reads.db*"))
    assert SECRET_PLATE.encode() not in raw and b"ncic-or" not in raw  # encrypted at rest


def test_newer_version_swaps_in(repo: HotListRepository, hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> None:
    assert isinstance(repo.offer(bundle_of(hq[0], 1, n=5)), Accepted)
    res = repo.offer(bundle_of(hq[0], 4, n=8))
    assert isinstance(res, Accepted) and res.previous_version == 1
    assert repo.version("ncic-or") == 4 and sum(1 for _ in repo.entries("ncic-or")) == 8
    assert isinstance(repo.offer(bundle_of(hq[0], 1, n=3, list_id="bolo-pdx")), Accepted)
    assert [i.list_id for i in repo.lists()] == ["bolo-pdx", "ncic-or"]


def _bomb(priv: Ed25519PrivateKey) -> bytes:
    csv_bytes = write_csv(entries(1)) + b"\n" * 5_000_000
    body = gzip.compress(csv_bytes, mtime=0)
    return raw_bundle(priv, header_for(priv, body, csv_len=1000), body)


def _huge_declared(priv: Ed25519PrivateKey) -> bytes:
    body = gzip.compress(write_csv(entries(1)), mtime=0)
    return raw_bundle(priv, header_for(priv, body, csv_len=10**12), body)


def _count_lie(priv: Ed25519PrivateKey) -> bytes:
    return sign_bundle(priv, "ncic-or", 9, write_csv(entries(3)), T0, entry_count=4)


REFUSALS = {
    "unsigned csv": (lambda hq, rogue: write_csv(entries(3)), "invalid", "no ALPRHLB1 magic"),
    "empty signature": (
        lambda hq, rogue: (lambda b: b[: b.index(b"}") + 1] + b"\x00\x00" + b[b.index(b"}") + 67 :])(
            bundle_of(hq, 9, n=3)
        ),
        "invalid",
        "unsigned bundle",
    ),
    "flipped body byte": (
        lambda hq, rogue: bundle_of(hq, 9)[:-30] + b"X" + bundle_of(hq, 9)[-29:],
        "invalid",
        "does not match its signed SHA-256",
    ),
    "flipped header byte": (
        lambda hq, rogue: bundle_of(hq, 9).replace(b'"version":9', b'"version":8'),
        "invalid",
        "bad signature",
    ),
    "wrong key": (lambda hq, rogue: bundle_of(rogue, 9), "untrusted", "untrusted key"),
    "rogue key, trusted key id": (
        lambda hq, rogue: raw_bundle(rogue, header_for(hq, b"x", 1), b"x"),
        "invalid",
        "bad signature",
    ),
    "older version": (lambda hq, rogue: bundle_of(hq, 1), "replay", "version 1 is an older version than the 2"),
    "equal version": (lambda hq, rogue: bundle_of(hq, 2, n=7), "replay", "version 2 is the same version"),
    "truncated": (lambda hq, rogue: bundle_of(hq, 9)[:-100], "invalid", "truncated"),
    "wrong columns": (
        lambda hq, rogue: sign_bundle(hq, "ncic-or", 9, b"plate,state,colour\nAB123,OR,red\n", T0, entry_count=1),
        "bad-list",
        "unknown column 'colour'",
    ),
    "huge bundle": (lambda hq, rogue: bundle_of(hq, 9) + bytes(100_000), "invalid", "over the 100000-byte limit"),
    "huge list": (
        lambda hq, rogue: sign_bundle(hq, "ncic-or", 9, write_csv(entries(3000)) + b"\n" * 400_000, T0),
        "invalid",
        "over the 300000-byte limit",
    ),
    "decompression bomb": (lambda hq, rogue: _bomb(hq), "invalid", "more than its declared 1000 bytes"),
    "declared huge": (lambda hq, rogue: _huge_declared(hq), "invalid", "over the 300000-byte limit"),
    "future-dated": (lambda hq, rogue: bundle_of(hq, 9, created=time.time() + 3600), "future", "in the future"),
    "empty list": (
        lambda hq, rogue: sign_bundle(hq, "ncic-or", 9, write_csv([]), T0, entry_count=1),
        "bad-list",
        "no good entries",
    ),
    "count differs from the signed one": (lambda hq, rogue: _count_lie(hq), "bad-list", "signed header says 4"),
    "not JSON header": (
        lambda hq, rogue: raw_bundle(hq, {}, b"").replace(b"{}", b"[]"),
        "invalid",
        "bad signature|not a JSON object",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_bundle_leaves_the_list_in_force_unchanged(
    case: str,
    store: tuple[Path, bytes],
    hq: tuple[Ed25519PrivateKey, Ed25519PublicKey],
    rogue: tuple[Ed25519PrivateKey, Ed25519PublicKey],
) -> None:
    make, code, reason = REFUSALS[case]
    with HotListRepository.open(store[0], store[1], [hq[1]]) as repo:
        repo.max_bundle_bytes, repo.max_csv_bytes = 100_000, 300_000
        assert isinstance(repo.offer(bundle_of(hq[0], 2, n=20)), Accepted)
        before = in_force(repo)
        res = repo.offer(make(hq[0], rogue[0]), source="test", actor="tester")
        assert isinstance(res, Refused), res
        assert res.code == code
        assert re.search(reason, res.reason), res.reason
        assert in_force(repo) == before
        assert len(list(repo.entries("ncic-or"))) == 20
        actor, action, details = changes(repo)[-1]
        assert (actor, action, details["reason"], details["source"]) == ("tester", "bundle-refused", res.reason, "test")


def test_tampering_at_rest_is_caught_at_load(
    repo: HotListRepository, hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]
) -> None:
    old = bundle_of(hq[0], 1, n=5)
    assert isinstance(repo.offer(old), Accepted)
    good = bundle_of(hq[0], 2, n=6)
    assert isinstance(repo.offer(good), Accepted)
    bad = bytearray(good)
    bad[-10] ^= 0xFF
    repo.conn.execute("UPDATE hotlist_bundles SET bundle = ? WHERE list_id = 'ncic-or'", (bytes(bad),))
    with pytest.raises(BundleError, match="stored hot list ncic-or failed verification"):
        repo.entries("ncic-or")
    # A genuine but older bundle put back under the newer record is caught as well.
    repo.conn.execute("UPDATE hotlist_bundles SET bundle = ? WHERE list_id = 'ncic-or'", (old,))
    with pytest.raises(BundleError, match="does not match its record"):
        repo.entries("ncic-or")
    # A key no longer trusted (revoked) stops the list from loading.
    repo.conn.execute("UPDATE hotlist_bundles SET bundle = ? WHERE list_id = 'ncic-or'", (good,))
    assert len(list(repo.entries("ncic-or"))) == 6
    with pytest.raises(BundleError, match="untrusted key"):
        repo.entries("ncic-or", trusted_keys=[generate_keypair()[1]])


def test_staleness(repo: HotListRepository, hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> None:
    repo.offer(bundle_of(hq[0], 1, n=3, created=T0), now=T0)
    repo.offer(bundle_of(hq[0], 1, n=3, list_id="bolo", created=T0 + 20 * 3600), now=T0 + 20 * 3600)
    st = {s.info.list_id: s for s in repo.status(now=T0 + 25 * 3600)}
    assert st["ncic-or"].age_s == pytest.approx(25 * 3600) and st["ncic-or"].stale
    assert st["bolo"].age_s == pytest.approx(5 * 3600) and not st["bolo"].stale
    assert not any(s.stale for s in repo.status(now=T0 + 25 * 3600, stale_after_s=26 * 3600))


# -- sources and the refresher ------------------------------------------------------------------------------------


def _wait(cond: object, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_directory_source_feeds_the_refresher_and_poke(
    tmp_path: Path, store: tuple[Path, bytes], hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "v1.hlb").write_bytes(bundle_of(hq[0], 1, n=5))
    (folder / "v0.hlb").write_bytes(bundle_of(hq[0], 0 + 1, n=4, list_id="bolo"))
    (folder / "junk.hlb").write_bytes(b"not a bundle")
    (folder / "broken.hlb").symlink_to(tmp_path / "missing")
    (folder / "readme.txt").write_text("ignored")
    updates: list[float] = []
    stop = threading.Event()
    source = DirectorySource(folder)
    ref = Refresher(
        lambda: HotListRepository.open(store[0], store[1]),
        [source],
        [hq[1]],
        interval_s=3600,
        on_update=lambda: updates.append(time.time()),
        stop=stop,
    )
    ref.start()
    try:
        _wait(lambda: ref.checks >= 1)
        st = ref.status()
        assert {(s.info.list_id, s.info.version) for s in st.lists} == {("ncic-or", 1), ("bolo", 1)}
        assert len(updates) == 1 and st.accepted == 2 and st.refused == 1
        assert st.last_success == st.last_check  # the folder was read, one file in it was not
        assert source.problems == ("broken.hlb: unreadable (No such file or directory)",)
        assert st.last_error is not None and "refused: not a hot list bundle" in st.last_error
        # An update is offered: the older one lying beside it is skipped, not recorded as a replay.
        (folder / "v2.hlb").write_bytes(bundle_of(hq[0], 2, n=9))
        ref.poke()
        _wait(lambda: ref.checks >= 2)
        assert len(updates) == 2
        assert {(s.info.list_id, s.info.version) for s in ref.status().lists} == {("ncic-or", 2), ("bolo", 1)}
        ref.poke()
        _wait(lambda: ref.checks >= 3)
        assert len(updates) == 2  # nothing new
    finally:
        stop.set()
        ref.join(5)
    assert ref._thread is not None and not ref._thread.is_alive()
    with HotListRepository.open(store[0], store[1]) as repo:
        acts = [c[1] for c in changes(repo)]
        assert acts.count("bundle-accepted") == 3 and acts.count("bundle-refused") == 1  # junk, once


class _Exploding:
    problems: tuple[str, ...] = ()

    def fetch(self) -> list[bytes]:
        raise RuntimeError("source bug")

    def describe(self) -> str:
        return "exploding"


def test_refresher_survives_bad_sources_and_a_bad_store(
    tmp_path: Path, store: tuple[Path, bytes], hq: tuple[Ed25519PrivateKey, Ed25519PublicKey]
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.hlb").write_bytes(bundle_of(hq[0], 1, n=2))
    ref = Refresher(
        lambda: HotListRepository.open(store[0], store[1]),
        [_Exploding(), DirectorySource(tmp_path / "absent"), DirectorySource(good)],
        [hq[1]],
        interval_s=60,
        on_update=lambda: (_ for _ in ()).throw(RuntimeError("callback bug")),
        stop=threading.Event(),
        clock=lambda: T0 + 3600,
    )
    assert ref.check() == 1
    st = ref.status()
    assert st.last_success is None and st.last_check == T0 + 3600 and st.last_error is not None
    assert "absent" in st.last_error
    assert [(s.info.version, round(s.age_s)) for s in st.lists] == [(1, 3600)] and not st.stale
    broken = Refresher(
        lambda: HotListRepository.open(tmp_path / "none.db", store[1], create=False),
        [],
        [hq[1]],
        60,
        lambda: None,
        threading.Event(),
    )
    assert broken.check() == 0 and "does not exist" in (broken.status().last_error or "")
    assert broken.status().stale  # no list at all
    with pytest.raises(ValueError, match="24 hours"):
        Refresher(lambda: HotListRepository.open(store[0], store[1]), [], [], 86401, lambda: None, threading.Event())


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made here with ``cryptography``): cert file and key file."""
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hq-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture()
def https_root(tmp_path: Path, tls: tuple[Path, Path]) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls[0], tls[1])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_https_source_single_bundle_index_and_refresher(
    https_root: tuple[str, Path],
    tls: tuple[Path, Path],
    store: tuple[Path, bytes],
    hq: tuple[Ed25519PrivateKey, Ed25519PublicKey],
) -> None:
    base, root = https_root
    (root / "ncic.hlb").write_bytes(bundle_of(hq[0], 5, n=4))
    (root / "bolo.hlb").write_bytes(bundle_of(hq[0], 2, n=3, list_id="bolo"))
    (root / "index.txt").write_text("# lists\nncic.hlb\n\n/bolo.hlb\nmissing.hlb\nhttp://127.0.0.1:1/x.hlb\n")
    single = HttpsSource(f"{base}/ncic.hlb", ca_file=tls[0], timeout_s=5)
    assert single.fetch() == [(root / "ncic.hlb").read_bytes()]
    index = HttpsSource(f"{base}/index.txt", ca_file=tls[0], timeout_s=5)
    assert len(index.fetch()) == 2
    assert [p.split(":")[0] for p in index.problems] == ["index entry 3", "index line 4"]
    assert "404" in index.problems[0]
    stop = threading.Event()
    updates: list[int] = []
    ref = Refresher(
        lambda: HotListRepository.open(store[0], store[1]), [index], [hq[1]], 3600, lambda: updates.append(1), stop
    )
    ref.start()
    try:
        _wait(lambda: ref.checks >= 1)
        assert sorted((s.info.list_id, s.info.version, s.info.source) for s in ref.status().lists) == [
            ("bolo", 2, f"{base}/index.txt"),
            ("ncic-or", 5, f"{base}/index.txt"),
        ]
        (root / "ncic.hlb").write_bytes(bundle_of(hq[0], 6, n=4))
        ref.poke()
        _wait(lambda: ref.checks >= 2)
        assert ("ncic-or", 6) in {(s.info.list_id, s.info.version) for s in ref.status().lists}
        assert updates == [1, 1]
    finally:
        stop.set()
        ref.join(5)


def test_https_source_refuses_untrusted_certificates_and_plain_http(https_root: tuple[str, Path]) -> None:
    base, root = https_root
    (root / "a.hlb").write_bytes(b"x")
    with pytest.raises(SourceError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        HttpsSource(f"{base}/a.hlb", timeout_s=5).fetch()  # the system CAs do not know our test cert
    with pytest.raises(SourceError, match="cannot reach"):
        HttpsSource("https://127.0.0.1:1/a.hlb", timeout_s=2).fetch()
    with pytest.raises(ValueError, match="only https"):
        HttpsSource("http://127.0.0.1/a.hlb")


# -- command line -------------------------------------------------------------------------------------------------


def _cli() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr-edge")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    return p


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = _cli().parse_args(list(argv))
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_keygen_sign_verify_import_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub = tmp_path / "hq.pem", tmp_path / "hq.pub"
    rc, out, _ = _run(capsys, "hotlist", "keygen", "--private", str(priv), "--public", str(pub))
    assert rc == 0 and "key id" in out and priv.stat().st_mode & 0o777 == 0o600
    csv_path = tmp_path / "extract.csv"
    csv_path.write_bytes(write_csv(entries(30)) + b"!!,OR,BOLO,C,2026-01-01,,,,,E99\n")
    out_b = tmp_path / "ncic.hlb"
    rc, out, err = _run(
        capsys,
        "hotlist",
        "sign",
        "--key",
        str(priv),
        "--list-id",
        "ncic-or",
        "--version",
        "3",
        "--created",
        "2026-11-01T00:00:00Z",
        str(csv_path),
        "-o",
        str(out_b),
    )
    assert rc == 0, err
    assert f"{csv_path}:32:plate: " in err and "30 entries, 1 bad lines" in out
    rc, out, err = _run(capsys, "hotlist", "verify", str(out_b), "--public-key", str(pub))
    assert rc == 0 and "list ncic-or  version 3  created 2026-11-01T00:00:00.000Z  entries 30" in out
    rc, out, err = _run(capsys, "hotlist", "verify", str(out_b), "--public-key", str(tmp_path / "hq.pem"))
    assert rc == 1 and "not a PEM public key" in err

    key_file, db = tmp_path / "db.key", tmp_path / "reads.db"
    create_key_file(key_file)
    open_db(db, load_key(key_file)).close()
    common = ["--db", str(db), "--key-file", str(key_file)]
    rc, out, err = _run(capsys, "hotlist", "import", str(out_b), "--public-key", str(pub), *common)
    assert rc == 0 and "accepted list ncic-or version 3 (new list): 30 entries, 1 bad lines skipped" in out
    rc, out, err = _run(capsys, "hotlist", "import", str(out_b), "--public-key", str(pub), *common)
    assert rc == 1 and "already in force" in err
    rc, out, err = _run(capsys, "hotlist", "status", *common, "--stale-after-h", "100000")
    assert rc == 0 and "ncic-or" in out and "fresh" in out and "import ncic.hlb" in out
    rc, out, err = _run(capsys, "hotlist", "status", *common)
    assert rc == 1 and "STALE" in out

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"plate,state,list_code,case_number,entered\n!!,OR,X,C,2026-01-01\n")
    rc, out, err = _run(
        capsys,
        "hotlist",
        "sign",
        "--key",
        str(priv),
        "--list-id",
        "x",
        "--version",
        "1",
        str(empty),
        "-o",
        str(tmp_path / "e.hlb"),
    )
    assert rc == 1 and "no good entries" in err and not (tmp_path / "e.hlb").exists()
    bad = bytearray(out_b.read_bytes())
    bad[-5] ^= 1
    out_b.write_bytes(bytes(bad))
    rc, out, err = _run(capsys, "hotlist", "verify", str(out_b), "--public-key", str(pub))
    assert rc == 1 and "refused: tampered bundle" in err


def test_cli_never_prints_plate_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    priv, pub = tmp_path / "hq.pem", tmp_path / "hq.pub"
    _run(capsys, "hotlist", "keygen", "--private", str(priv), "--public", str(pub))
    csv_path = tmp_path / "x.csv"
    csv_path.write_bytes(write_csv(entries(3)) + f"{SECRET_PLATE}Z9Z9Z9,OR,BOLO,C,2026-01-01,,,,,E99\n".encode())
    rc, out, err = _run(
        capsys,
        "hotlist",
        "sign",
        "--key",
        str(priv),
        "--list-id",
        "x",
        "--version",
        "1",
        str(csv_path),
        "-o",
        str(tmp_path / "x.hlb"),
    )
    assert rc == 0 and ":5:plate:" in err
    assert SECRET_PLATE not in out + err


def test_every_hotlist_command_has_help() -> None:
    p = _cli()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    hl = sub.choices["hotlist"]
    hsub = next(a for a in hl._actions if isinstance(a, argparse._SubParsersAction))
    assert set(hsub.choices) == {"keygen", "sign", "verify", "import", "status"}
    for name, cmd in hsub.choices.items():
        assert cmd.description, name
        for action in cmd._actions:
            assert action.help, f"{name} {action.dest}"
