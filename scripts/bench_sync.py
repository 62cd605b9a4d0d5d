"""Sync throughput: reads per second from units' encrypted stores into PostgreSQL at headquarters.

Real components on loopback: Mosquitto, PostgreSQL 15 (fsync on, as in production), the unit's Uplink (SQLCipher
outbox, MQTT v5 QoS 1, HQ acknowledgements) and 1 or 2 IngestWorkers sharing the subscription. With two workers
there are two units (each unit has one batch in flight; headquarters scales across units). A backlog is made by
copying one real stored read (and its images) under new UUIDs, then the Uplink drains it; the clock stops when
every row is marked sent (acknowledged by HQ). Then PostgreSQL is counted: 0 lost, 0 duplicated.

  .venv/bin/python scripts/bench_sync.py [--reads 20000] [--backlog 200000] [--image-reads 1000]
Prints a table and one JSON line. Targets: >= 2,000 reads/s without images with one worker, more with two; a
200,000-read backlog drained in <= 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import SyncConfig  # noqa: E402
from edge.gps import FixedPosition  # noqa: E402
from edge.hq import schema  # noqa: E402
from edge.hq.ingest import IngestWorker  # noqa: E402
from edge.store.db import open_db  # noqa: E402
from edge.store.keys import create_key_file, load_key  # noqa: E402
from edge.store.reads import ReadStore  # noqa: E402
from edge.sync.uplink import Uplink  # noqa: E402
from edge.vision.ocr import Candidate  # noqa: E402
from edge.vision.tracker import Read  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEVICE = "bench-unit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("a server did not start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a server did not start in time")


class Servers:
    """Mosquitto and PostgreSQL in a temporary folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-sync-", dir="/tmp"))
        self.mqtt_port, self.pg_port = free_port(), free_port()
        conf = self.folder / "mosquitto.conf"
        lines = [f"listener {self.mqtt_port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.mqtt = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        wait_port(self.mqtt_port, self.mqtt)
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        data = self.folder / "pg"
        self._pg("initdb", "-N", "-A", "trust", "-U", "postgres", "-D", str(data))
        opts = f"-p {self.pg_port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._pg("pg_ctl", "-w", "-D", str(data), "-l", str(self.folder / "pg.log"), "-o", opts, "start")
        self.data = data

    def _pg(self, *args: str) -> None:
        subprocess.run([*self.as_pg, str(PG_BIN / args[0]), *args[1:]], check=True, capture_output=True)

    def new_db(self) -> str:
        name = f"hq_{uuid.uuid4().hex[:8]}"
        base = f"postgresql://postgres@127.0.0.1:{self.pg_port}"
        with psycopg.connect(base + "/postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        url = f"{base}/{name}"
        with schema.connect(url) as conn:
            schema.migrate(conn)
        return url

    def close(self) -> None:
        self.mqtt.terminate()
        self.mqtt.wait(10)
        try:
            self._pg("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def jpeg(w: int, h: int) -> bytes:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def make_unit(folder: Path, n: int, images: bool) -> tuple[Path, bytes]:
    """A unit store holding ``n`` reads (copies of one real stored read under new UUIDs), images or not."""
    create_key_file(folder / "db.key")
    key = load_key(folder / "db.key")
    db = folder / "reads.db"
    now = time.time()
    alts = [("7ABC123", 0.93), ("7A8C123", 0.03), ("ZABC123", 0.01), ("7ABC12", 0.01), ("7ABCI23", 0.005)]
    cands = tuple(Candidate(t, c) for t, c in alts)
    seed = Read(str(uuid.uuid4()), "front", "7ABC123", 0.93, (0.99,) * 7, cands, "us", "us", (500, 400, 160, 40),
                jpeg(160, 40), jpeg(1280, 720), now - 2, now - 1, now - 1.5, 12)  # fmt: skip
    with ReadStore.open(db, key, min_free_bytes=1, scene_min_free_bytes=1) as st:
        st.add(seed, FixedPosition(45.52, -122.67).fix_at(now))
    conn = open_db(db, key)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(reads)").fetchall()]
    other = [c for c in cols if c != "uuid"]
    icols = [r[1] for r in conn.execute("PRAGMA table_info(read_images)").fetchall()]
    iother = [c for c in icols if c != "read_uuid"]
    conn.execute("BEGIN IMMEDIATE")
    new = [(str(uuid.uuid4()), seed.uuid) for _ in range(n - 1)]
    conn.executemany(
        f"INSERT INTO reads (uuid, {', '.join(other)}) SELECT ?, {', '.join(other)} FROM reads WHERE uuid = ?", new
    )
    if images:
        conn.executemany(
            f"INSERT INTO read_images (read_uuid, {', '.join(iother)}) "
            f"SELECT ?, {', '.join(iother)} FROM read_images WHERE read_uuid = ?",
            new,
        )
    else:
        conn.execute("DELETE FROM read_images")
    conn.execute("COMMIT")
    conn.close()
    return db, key


def drain(servers: Servers, n: int, images: bool, workers: int) -> dict[str, object]:
    """``workers`` ingest workers and as many units (one batch in flight per unit: HQ scales across units)."""
    url = servers.new_db()
    units = workers
    with tempfile.TemporaryDirectory() as tmp:
        t_make = time.perf_counter()
        stores = []
        for u in range(units):
            (Path(tmp) / f"u{u}").mkdir()
            stores.append(make_unit(Path(tmp) / f"u{u}", n // units, images))
        made_s = time.perf_counter() - t_make
        stop = threading.Event()
        group = f"bench{uuid.uuid4().hex[:6]}"
        hq = [IngestWorker("127.0.0.1", servers.mqtt_port, url, group=group, name=f"hq-{group}-{i}", stop=stop)
              for i in range(workers)]  # fmt: skip
        for w in hq:
            w.start()
        deadline = time.monotonic() + 20
        while not all(w.status().subscribed for w in hq) and time.monotonic() < deadline:
            time.sleep(0.05)
        cfg = SyncConfig(enabled=True, host="127.0.0.1", port=servers.mqtt_port, batch_max_items=1000,
                         batch_max_kb=4096, ack_timeout_s=30)  # fmt: skip
        t0 = time.perf_counter()
        ups = [Uplink(db, key, cfg, f"{DEVICE}-{u}", stop) for u, (db, key) in enumerate(stores)]
        for up in ups:
            up.start()
        conns = [open_db(db, key) for db, key in stores]
        try:
            while True:
                left = 0
                for conn in conns:
                    left += conn.execute("SELECT COUNT(*) FROM reads WHERE synced_at IS NULL").fetchone()[0]
                    if images:
                        q = "SELECT COUNT(*) FROM read_images WHERE synced_at IS NULL"
                        left += conn.execute(q).fetchone()[0]
                if left == 0:
                    break
                if time.perf_counter() - t0 > 900:
                    raise SystemExit(f"not drained after 900 s: {left} left")
                time.sleep(0.1)
            seconds = time.perf_counter() - t0
        finally:
            for conn in conns:
                conn.close()
            stop.set()
            for up in ups:
                up.join(10)
            for w in hq:
                w.join(10)
        shares = [w.status().items_new for w in hq]
    total = units * (n // units)
    with psycopg.connect(url) as c:
        stored = c.execute("SELECT COUNT(*), COUNT(DISTINCT uuid) FROM reads").fetchone()
        imgs = c.execute("SELECT COUNT(*) FROM read_images").fetchone()
    assert stored is not None and imgs is not None
    return {
        "reads": total,
        "images": images,
        "workers": workers,
        "units": units,
        "seconds": seconds,
        "reads_per_s": total / seconds,
        "stored": int(stored[0]),
        "lost": total - int(stored[0]),
        "duplicated": int(stored[0]) - int(stored[1]),
        "images_stored": int(imgs[0]),
        "items_new_per_worker": shares,
        "backlog_build_s": made_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reads", type=int, default=20_000, help="reads per throughput run (default 20000)")
    ap.add_argument("--image-reads", type=int, default=1_000, help="reads with crop + scene (default 1000)")
    ap.add_argument("--backlog", type=int, default=200_000, help="the backlog to drain (default 200000; 0: skip)")
    a = ap.parse_args()
    servers = Servers()
    try:
        runs = [
            drain(servers, a.reads, False, 1),
            drain(servers, a.reads, False, 2),
            drain(servers, a.image_reads, True, 1),
            drain(servers, a.image_reads, True, 2),
        ]
        if a.backlog:
            runs.append(drain(servers, a.backlog, False, 2))
    finally:
        servers.close()
    print(f"{'run':<34} {'reads':>8} {'s':>8} {'reads/s':>9} {'lost':>5} {'dupl':>5}  per worker (new items)")
    for r in runs:
        label = f"{'backlog, ' if r is runs[-1] and a.backlog else ''}{r['workers']} worker(s)/unit(s), " + (
            "crop + scene" if r["images"] else "no images"
        )
        print(f"{label:<34} {r['reads']:>8} {r['seconds']:>8.1f} {r['reads_per_s']:>9.0f} {r['lost']:>5} "
              f"{r['duplicated']:>5}  {r['items_new_per_worker']}")  # fmt: skip
    print("targets: >= 2000 reads/s without images with one worker, more with two; 200,000 reads in <= 180 s")
    print(json.dumps({"bench": "sync", "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
