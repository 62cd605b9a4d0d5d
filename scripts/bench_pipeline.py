"""End-to-end benchmark of the daemon on the bundled sample footage (or any footage with a plates.json).

Two measurements:
1. The real daemon (`alpr-edge run`, a subprocess) replays the footage in real time (25 fps) into a fresh
   encrypted store: frames, dropped frames, fps, CPU %, peak RSS, reads committed, and the reads against the
   footage's known plates (recall: plates read exactly; duplicates; reads that match no plate).
2. Capacity: the same recogniser and tracker in this process over the decoded frames as fast as they go
   (frames per second the pipeline could sustain on this machine), and the store's commit rate.

Prints a table and one JSON line.
  .venv/bin/python scripts/bench_pipeline.py [--footage firmware_config/sample] [--threads 2] [--fps 25]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.access.audit import create_signing_key  # noqa: E402
from edge.capture.frame import Frame  # noqa: E402
from edge.config import ModelsConfig  # noqa: E402
from edge.gps import FixedPosition  # noqa: E402
from edge.store.keys import create_key_file, load_key  # noqa: E402
from edge.store.reads import ReadStore  # noqa: E402
from edge.vision.recognizer import Recognizer  # noqa: E402
from edge.vision.tracker import Tracker, TrackerSettings  # noqa: E402

SUMMARY = re.compile(r"(\d+) read\(s\) stored .*?; (\d+) frames in ([0-9.]+) s \(([0-9.]+) fps\), (\d+) dropped")


def config_text(data: Path, video: Path, fps: float, threads: int, views: int) -> str:
    return f"""
[unit]
id = "bench-unit"
data_dir = "{data}"
regions = ["us", "eu", "br"]
[models]
threads = {threads}
ocr_views = {views}
[gps]
mode = "fixed"
lat = 45.5231
lon = -122.6765
[store]
key_file = "{data / "db.key"}"
audit_key_file = "{data / "audit.key"}"
min_free_mb = 1
scene_min_free_mb = 1
[[camera]]
id = "sample"
kind = "file"
uri = "{video}"
fps = {fps}
"""


def score(texts: list[str], plates: list[str]) -> dict[str, object]:
    """Recall: plates read exactly at least once; duplicates: extra reads of a plate; other: reads of no plate."""
    read_once = [p for p in plates if p in texts]
    dup = sum(max(0, texts.count(p) - 1) for p in set(plates))
    other = [t for t in texts if t not in plates]
    return {
        "plates": len(plates),
        "read_exactly": len(read_once),
        "recall": len(read_once) / len(plates) if plates else 0.0,
        "duplicates": dup,
        "other_reads": len(other),
        "missed": sorted(set(plates) - set(read_once)),
    }


def run_daemon(video: Path, plates: list[str], fps: float, threads: int, views: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        create_key_file(data / "db.key")
        create_signing_key(data / "audit.key")
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(config_text(data, video, fps, threads, views))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--log-level", "warning"],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise SystemExit(f"daemon failed ({p.returncode}): {p.stderr[-2000:]}")
        m = SUMMARY.search(p.stdout)
        if not m:
            raise SystemExit(f"no summary in the daemon's output: {p.stdout!r}")
        reads, frames, seconds, run_fps, dropped = m.groups()
        with ReadStore.open(data / "reads.db", load_key(data / "db.key")) as store:
            texts = [r.text for r in store.list_reads(limit=100_000)]
            integrity = store.integrity_check()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "frames": int(frames),
        "seconds": float(seconds),
        "fps": float(run_fps),
        "dropped": int(dropped),
        "reads": int(reads),
        "reads_per_s": int(reads) / float(seconds),
        "cpu_percent": 100 * cpu / wall,  # of one core
        "peak_rss_mb": after.ru_maxrss / 1024,  # the largest child so far: the daemon
        "wall_s": wall,
        "integrity": integrity,
        **score(texts, plates),
    }


def capacity(video: Path, plates: list[str], fps: float, threads: int, views: int) -> dict[str, object]:
    """Recogniser + tracker over decoded frames, unpaced; frame times spaced as the camera would give them."""
    cap = cv2.VideoCapture(str(video))
    images = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
    cap.release()
    rec = Recognizer.from_files(
        REPO / "models" / "plate_detector.tflite", REPO / "models" / "plate_ocr.tflite", ("us", "eu", "br"), threads,
        views=views,
    )
    tracker = Tracker(TrackerSettings())
    reads = []
    t0 = time.perf_counter()
    for i, img in enumerate(images):
        f = Frame("sample", img, 1.7e9 + i / fps, i / fps, i)
        reads += tracker.update(f, rec.recognize(img))
    reads += tracker.flush()
    seconds = time.perf_counter() - t0
    # the store's commit rate with these reads (each commit is a durable transaction)
    with tempfile.TemporaryDirectory() as tmp:
        create_key_file(Path(tmp) / "k")
        fix = FixedPosition(45.5, -122.6).fix_at(time.time())
        with ReadStore.open(
            Path(tmp) / "r.db", load_key(Path(tmp) / "k"), min_free_bytes=1, scene_min_free_bytes=1
        ) as st:
            n = max(1, 200 // max(1, len(reads)))
            t1 = time.perf_counter()
            count = 0
            for _ in range(n):
                for r in reads:
                    st.add(dataclasses.replace(r, uuid=str(uuid.uuid4())), fix)
                    count += 1
            commit_s = time.perf_counter() - t1
    return {
        "frames": len(images),
        "fps": len(images) / seconds,
        "ms_per_frame": 1000 * seconds / max(1, len(images)),
        "store_commits_per_s": count / commit_s if commit_s > 0 else 0.0,
        **score([r.text for r in reads], plates),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--footage", type=Path, default=REPO / "firmware_config" / "sample", help="folder with plates.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ocr-views", type=int, default=ModelsConfig().ocr_views, help="models.ocr_views (daemon default)")
    ap.add_argument("--fps", type=float, default=None, help="replay rate (default: the footage's own)")
    a = ap.parse_args()
    gt = json.loads((a.footage / "plates.json").read_text())
    video = a.footage / gt["video"]
    plates = [v["plate"] for v in gt["vehicles"]]
    fps = a.fps or float(gt["fps"])
    live = run_daemon(video, plates, fps, a.threads, a.ocr_views)
    cap = capacity(video, plates, fps, a.threads, a.ocr_views)
    print(
        f"footage {video.name}: {gt['width']}x{gt['height']}, {gt['frames']} frames at {gt['fps']} fps, "
        f"{len(plates)} plates; threads {a.threads}"
    )
    print(
        f"{'run':<28} {'fps':>6} {'dropped':>8} {'reads':>6} {'read exactly':>13} {'dupl.':>6} {'other':>6} "
        f"{'CPU %':>6} {'RSS MB':>7}"
    )
    print(
        f"{'daemon, real time':<28} {live['fps']:6.1f} {live['dropped']:8d} {live['reads']:6d} "
        f"{live['read_exactly']:>6}/{live['plates']:<6} {live['duplicates']:6d} {live['other_reads']:6d} "
        f"{live['cpu_percent']:6.0f} {live['peak_rss_mb']:7.0f}"
    )
    print(
        f"{'capacity, unpaced':<28} {cap['fps']:6.1f} {'-':>8} {'-':>6} "
        f"{cap['read_exactly']:>6}/{cap['plates']:<6} {cap['duplicates']:6d} {cap['other_reads']:6d} {'-':>6} {'-':>7}"
    )
    print(
        f"store: {cap['store_commits_per_s']:.0f} reads committed per second (one durable transaction each); "
        f"integrity {live['integrity']}; missed in the daemon run: {', '.join(live['missed']) or 'none'}"
    )
    print(
        json.dumps(
            {
                "bench": "pipeline",
                "footage": str(video),
                "threads": a.threads,
                "ocr_views": a.ocr_views,
                "replay_fps": fps,
                "daemon": live,
                "capacity": cap,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
