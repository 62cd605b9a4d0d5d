#!/usr/bin/env python3
"""Speed benchmark: detector, OCR per plate and whole-frame recognition of a 1280x720 frame with one plate,
with 1 and 2 threads; medians of repeated runs and peak RSS (each thread count in a fresh process).
Prints a table and a JSON line.

OCR per plate is timed three ways: one crop; as the recogniser reads it (a third crop only when the first two
disagree or are unsure; the number read on this frame is in the header, and bench_accuracy.py gives the mean
over the validation scenes; the mean time per plate over those scenes is printed too); and with every crop read.

  python scripts/bench_speed.py [--repeat 50] [--image FRAME.jpg]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_IMAGE = (REPO / ".." / "shared" / "data" / "plates-dev" / "scenes" / "us"
                 / "0b86cecf-67d1-4fc0-87c9-b36b0ee228bb.jpg")


def median_ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def mean_plate_ms(rec, repeat: int) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """Mean OCR time per plate (median of ``repeat // 10`` runs each) and mean crops read, over the detections of the
    plates-dev validation scenes: plates differ in how many crops they need (bench_accuracy.py, crops/plate)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from alpr_train import data
    from edge.vision.image import read_image

    times, crops = [], []
    for scene in data.plates_dev_split()[1]:
        frame = read_image(scene.path)
        for det in rec.detector.detect(frame):
            reads = rec.read_detections(frame, [det])
            if reads:
                times.append(median_ms(lambda: rec.read_detections(frame, [det]), max(3, repeat // 10)))  # noqa: B023
                crops.append(reads[0].views_read)
    return statistics.fmean(times), statistics.fmean(crops), len(times)


def one(threads: int, repeat: int, image: Path, models: Path) -> dict[str, float]:
    import cv2

    from edge.vision.image import read_image
    from edge.vision.recognizer import Recognizer, crop_box

    frame = read_image(image)
    if frame.shape[:2] != (720, 1280):
        frame = cv2.resize(frame, (1280, 720))
    rec = Recognizer.from_files(models / "plate_detector.tflite", models / "plate_ocr.tflite", ("us",),
                                threads=threads)
    dets = rec.detector.detect(frame)
    if not dets:
        raise SystemExit(f"no plate detected in {image}: choose a frame with one plate")
    crop = crop_box(frame, dets[0].box)
    x = rec.reader.probabilities(crop)  # noqa: F841 - warm
    views = rec.views
    rec.views = views[:1]
    one_view_ms = median_ms(lambda: rec.read_detections(frame, dets[:1]), repeat * 4)
    rec.views = views
    agree = rec.agree_confidence
    rec.agree_confidence = 2.0  # never sure enough to skip: every crop is read
    all_views_ms = median_ms(lambda: rec.read_detections(frame, dets[:1]), repeat * 4)
    rec.agree_confidence = agree
    read = rec.read_detections(frame, dets[:1])
    row = {
        "threads": threads,
        "detector_ms": median_ms(lambda: rec.detector.detect(frame), repeat),
        "ocr_model_ms": median_ms(lambda: rec.reader.probabilities(crop), repeat * 4),
        # as the pipeline reads a detection: crops, OCR, beam search, format ranking (one layout or two), with
        # the default views (crops per plate) and with one
        "ocr_plate_ms": median_ms(lambda: rec.read_detections(frame, dets[:1]), repeat * 4),
        "ocr_views": len(views),
        "ocr_plate_views_read": read[0].views_read if read else 0,
        "ocr_plate_all_views_ms": all_views_ms,
        "ocr_plate_1view_ms": one_view_ms,
        "frame_ms": median_ms(lambda: rec.recognize(frame), repeat),
        "plates": len(dets),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    # after the peak RSS: this loads the validation scenes
    row["ocr_plate_mean_ms"], row["ocr_plate_mean_crops"], row["ocr_plate_mean_over"] = mean_plate_ms(rec, repeat)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.repeat, args.image, args.models)))
        return 0
    rows = []
    for threads in (1, 2):
        out = subprocess.run([sys.executable, __file__, "--one", str(threads), "--repeat", str(args.repeat),
                              "--image", str(args.image), "--models", str(args.models)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['threads']} thread(s): OCR {r['ocr_plate_mean_ms']:.2f} ms per plate on average, "
              f"{r['ocr_plate_mean_crops']:.2f} crops read, over {r['ocr_plate_mean_over']} plates of the plates-dev "
              "validation scenes")
    n = rows[0]["ocr_views"]
    read = f"plate, as read ({rows[0]['ocr_plate_views_read']}) ms"
    print(f"{'threads':>7}{'detector ms':>13}{'OCR model ms':>14}{'plate, 1 crop ms':>18}"
          f"{read:>25}{'plate, ' + str(n) + ' crops ms':>19}{'frame ms':>10}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['threads']:>7}{r['detector_ms']:>13.2f}{r['ocr_model_ms']:>14.2f}{r['ocr_plate_1view_ms']:>18.2f}"
              f"{r['ocr_plate_ms']:>25.2f}{r['ocr_plate_all_views_ms']:>19.2f}{r['frame_ms']:>10.2f}"
              f"{r['peak_rss_mb']:>13.0f}")
    print(json.dumps({"bench": "speed", "image": str(args.image), "frame": "1280x720", "repeat": args.repeat,
                      "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
