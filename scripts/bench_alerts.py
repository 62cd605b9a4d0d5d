"""Alert latency: from a read being stored to its alert being acknowledged by a real broker (target <= 200 ms).

Starts its own Mosquitto on a free loopback port (password required), a fresh encrypted store in a temp folder, the
AlertService with an MqttAlertPublisher, and an in-process subscriber (the communications center). For each read:
``ReadStore.add`` returns (t0) -> hits stored and handed to the publisher -> PUBACK received (published) ->
message received by the subscriber (delivered). The read's stored time and the raising include the database's
fsyncs (synchronous=FULL), as in the daemon.

Prints a table and one JSON line.
  .venv/bin/python scripts/bench_alerts.py [--count 200] [--interval-ms 20] [--scene-kb 150]
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
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.alerts import AlertService  # noqa: E402
from edge.alerts_mqtt import MqttAlertPublisher, alert_topic  # noqa: E402
from edge.gps import Fix  # noqa: E402
from edge.hotlist.entry import Hit, HotEntry, ListInfo, Substitution  # noqa: E402
from edge.store.db import open_db  # noqa: E402
from edge.store.migrations import migrate  # noqa: E402
from edge.store.reads import ReadStore  # noqa: E402
from edge.vision.ocr import Candidate  # noqa: E402
from edge.vision.tracker import Read  # noqa: E402

TARGET_MS = 200.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(folder: Path, users: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    passwd = folder / "passwd"
    for i, (name, pw) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), name, pw],
                       check=True, capture_output=True)  # fmt: skip
    conf = folder / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}", "persistence false"]
    if os.geteuid() == 0:
        lines.append("user root")  # as root mosquitto drops to user "mosquitto", who cannot read our temp files
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mosquitto exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def jpeg_of_size(kb: int, seed: int) -> bytes:
    """A JPEG of roughly ``kb`` kilobytes (noise compresses badly, so size follows the pixel count)."""
    rng = np.random.default_rng(seed)
    side = 64
    while True:
        img = rng.integers(0, 255, (side, side * 16 // 9, 3), np.uint8)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        if len(buf) >= kb * 1024 or side > 2000:
            return buf.tobytes()
        side = int(side * 1.3)


def make_read(i: int, crop: bytes, scene: bytes) -> Read:
    now = time.time()
    return Read(str(uuid.uuid4()), "front", "7ABC123", 0.91, (0.9,) * 7, (Candidate("7ABC123", 0.91),), "us", "us",
                (10, 20, 160, 40), crop, scene, now - 0.5, now, now - 0.1, 6)  # fmt: skip


def make_hit() -> Hit:
    entry = HotEntry("NCIC-1", "ncic-or", "7A8C123", "OR", "STOLEN_VEHICLE", "Stolen vehicle", "OR2024-1187",
                     time.time() - 86400, None, "stop only with probable cause")  # fmt: skip
    return Hit(entry, 12, "7ABC123", 0, "lookalike", (Substitution(2, "B", "8", 0.55),), 0.8)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="alerts to raise (default 200)")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="pause between reads (default 20 ms)")
    ap.add_argument("--scene-kb", type=int, default=150, help="size of the scene JPEG (default 150 KB)")
    args = ap.parse_args()
    if args.count < 1:
        ap.error("--count must be at least 1")

    crop, scene = jpeg_of_size(6, 1), jpeg_of_size(args.scene_kb, 2)
    stored_at: dict[str, float] = {}  # read uuid -> t0
    read_of: dict[str, str] = {}  # alert uuid -> read uuid
    published: dict[str, float] = {}  # alert uuid -> PUBACK time
    delivered: dict[str, float] = {}  # alert uuid -> subscriber time
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        folder = Path(tmp)
        proc, port = start_mosquitto(folder, {"unit": "unit-pw", "dispatch": "dispatch-pw"})
        try:
            subscribed = threading.Event()
            sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-dispatch", protocol=mqtt.MQTTv5)
            sub.username_pw_set("dispatch", "dispatch-pw")
            sub.on_connect = lambda c, u, f, rc, p: c.subscribe(alert_topic("+"), qos=1)
            sub.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()

            def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
                t = time.perf_counter()
                doc = json.loads(msg.payload)
                with lock:
                    delivered.setdefault(doc["uuid"], t)

            sub.on_message = on_message
            sub.connect("127.0.0.1", port)
            sub.loop_start()
            if not subscribed.wait(5):
                raise RuntimeError("the subscriber was not acknowledged")

            def on_published(alert_uuid: str, _t: float) -> None:
                t = time.perf_counter()
                with lock:
                    published[alert_uuid] = t
                service.mark_published(alert_uuid, _t)

            key = os.urandom(32)
            db = folder / "unit.db"
            store = ReadStore.open(db, key)
            conn = open_db(db, key)
            migrate(conn)
            pub = MqttAlertPublisher("127.0.0.1", port, "bench-unit", "unit", "unit-pw", on_published=on_published)
            service = AlertService(conn, "bench-unit", [pub])
            lists = {"ncic-or": ListInfo("ncic-or", 12, time.time() - 3600, 1_000_000)}
            fix = Fix("gpsd", 3, 45.5231, -122.6765, 50.0, time.time(), 0.3, 4.5)
            pub.start()
            if not _wait(lambda: pub.status().connected, 10):
                raise RuntimeError(f"publisher did not connect: {pub.status().fault}")
            raise_ms: list[float] = []
            for i in range(args.count):
                read = make_read(i, crop, scene)
                res = store.add(read, fix)
                t0 = time.perf_counter()
                stored_at[read.uuid] = t0
                (alert,) = service.raise_alerts(read, fix, [make_hit()], lists, 24 * 3600.0, res.scene_stored)
                raise_ms.append((time.perf_counter() - t0) * 1e3)
                read_of[alert.uuid] = read.uuid
                time.sleep(args.interval_ms / 1e3)
            ok = _wait(lambda: len(published) == args.count and len(delivered) == args.count, 30)
            status = pub.status()
            pub.stop()
            sub.disconnect()
            sub.loop_stop()
            unpublished = conn.execute("SELECT count(*) FROM hits WHERE published_at IS NULL").fetchone()[0]
            store.close()
            conn.close()
        finally:
            proc.terminate()
            proc.wait(10)
    if not ok:
        print(f"only {len(published)} published / {len(delivered)} delivered of {args.count}: {status}",
              file=sys.stderr)  # fmt: skip
        return 1
    pub_ms = [(published[a] - stored_at[r]) * 1e3 for a, r in read_of.items()]
    del_ms = [(delivered[a] - stored_at[r]) * 1e3 for a, r in read_of.items()]
    rows = [("raised (stored, handed to sinks)", raise_ms), ("published (PUBACK)", pub_ms),
            ("delivered (subscriber)", del_ms)]  # fmt: skip
    print(f"{args.count} alerts, scene {len(scene) // 1024} KB, crop {len(crop) // 1024} KB, "
          f"one every {args.interval_ms:g} ms; from ReadStore.add returned to:")  # fmt: skip
    print(f"{'stage':<34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, v in rows:
        print(f"{name:<34} {pct(v, 50):8.2f} {pct(v, 99):8.2f} {max(v):8.2f}")
    worst = max(pct(pub_ms, 99), pct(del_ms, 99))
    verdict = "PASS" if worst <= TARGET_MS else "FAIL"
    print(f"target: p99 <= {TARGET_MS:g} ms -> {verdict}; unpublished rows left in the store: {unpublished}")

    def summary(v: list[float]) -> dict[str, float]:
        return {"p50": round(pct(v, 50), 3), "p99": round(pct(v, 99), 3), "max": round(max(v), 3)}

    print(json.dumps({"bench": "alerts", "alerts": args.count, "interval_ms": args.interval_ms,
                      "scene_bytes": len(scene), "raised_ms": summary(raise_ms), "published_ms": summary(pub_ms),
                      "delivered_ms": summary(del_ms), "target_ms": TARGET_MS, "pass": worst <= TARGET_MS,
                      "unpublished_rows": int(unpublished), "dropped": status.dropped}))  # fmt: skip
    return 0


def _wait(cond: object, timeout: float) -> bool:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


if __name__ == "__main__":
    sys.exit(main())
