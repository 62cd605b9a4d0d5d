#!/usr/bin/env python3
"""Accuracy benchmark: score folders in the plates-dev layout, per region; prints a table and a JSON line.

Scenes (NAME.jpg + NAME.txt): detection recall (a detector box with IoU > 0.4 against the annotated box) and
exact read rate (the read, after the recogniser's confidence filter, whose box overlaps the annotation best,
at IoU > 0.4, equals the label); also reads per image that overlap no annotation ("other reads": unlabelled
plates, badges, signs), and crops read per plate (the recogniser reads a third crop only when the first two
disagree or are unsure: recognizer.AGREE_CONFIDENCE).
Crops (groundtruth.csv rows file,region,plate): exact read rate of each crop read as a plate (OCR only).
Both strict and with O/0 and I/1 merged. Labels are normalised (upper case, no spaces or dashes) and the
corrections in scripts/label_corrections.csv are applied.

  python scripts/bench_accuracy.py ../shared/data/plates-dev --split val
  python scripts/bench_accuracy.py ANY_FOLDER_IN_THE_SAME_LAYOUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from alpr_train import data
from edge.vision.detector import iou
from edge.vision.image import ImageError, read_image
from edge.vision.recognizer import Recognizer

REPO = Path(__file__).resolve().parents[1]
REGIONS = ("us", "eu", "br")


def merged(s: str) -> str:
    return s.replace("O", "0").replace("I", "1")


def region_of(folder: Path, default: str = "") -> str:
    for part in reversed(folder.parts):
        if part in REGIONS:
            return part
    return default


def validation_paths() -> set[Path]:
    """Resolved paths of the validation split of every shared folder (data.py's fixed rule)."""
    val: set[Path] = set()
    val |= {s.path.resolve() for s in data.plates_dev_split()[1]}
    val |= {s.path.resolve() for s in data.split(data.dashcam_scenes())[1]}
    val |= {c.path.resolve() for c in data.split(data.plates_dev_crops())[1]}
    crops = data.br_eu_crops()
    for r in ("br", "eu"):
        val |= {c.path.resolve() for c in data.split([c for c in crops if c.region == r])[1]}
    return val


def _is_scene_label(txt: Path) -> bool:
    return any(txt.with_suffix(sfx).exists() for sfx in (".jpg", ".jpeg", ".png"))


def find_units(root: Path) -> tuple[list[Path], list[Path]]:
    """(scene folders: NAME.txt beside NAME.jpg, crop ground-truth files) under root."""
    scenes = sorted({p.parent for p in [*root.glob("*.txt"), *root.rglob("*.txt")] if _is_scene_label(p)})
    crops = sorted(root.rglob("groundtruth.csv"))
    return scenes, crops


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--split", choices=["val", "train", "all"], default="all",
                    help="for the shared data folders: score only this part of the fixed split (default all)")
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-formats", action="store_true", help="do not rank candidates by the region's formats")
    ap.add_argument("--errors", action="store_true", help="list every miss (shows plate text: dev data only)")
    args = ap.parse_args()

    recs: dict[str, Recognizer] = {}

    def recognizer(region: str) -> Recognizer:
        key = "" if args.no_formats else region
        if key not in recs:
            recs[key] = Recognizer.from_files(args.models / "plate_detector.tflite", args.models / "plate_ocr.tflite",
                                              (key,) if key else (), threads=args.threads)
        return recs[key]

    val = validation_paths() if args.split != "all" else set()

    def selected(p: Path) -> bool:
        if args.split == "all":
            return True
        return (p.resolve() in val) == (args.split == "val")

    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    misses: list[str] = []
    corrections = data.load_corrections()
    t0 = time.time()
    for root in args.folders:
        scene_dirs, crop_files = find_units(root)
        for folder in scene_dirs:
            region = region_of(folder, "eu" if "dashcam" in folder.as_posix() else "")
            for scene in data.read_scene_folder(folder, region):
                if not selected(scene.path):
                    continue
                try:
                    frame = read_image(scene.path)
                except ImageError as e:
                    print(f"{scene.path}: {e}", file=sys.stderr)
                    continue
                rec = recognizer(region)
                detections, reads = rec.detect_and_read(frame)
                st = stats[f"{root.name}:scenes-{region or 'any'}"]
                st["images"] += 1
                for b in scene.boxes:
                    gt = (b.x, b.y, b.w, b.h)
                    st["plates"] += 1
                    st["detected"] += any(iou(d.box, gt) > 0.4 for d in detections)
                    overlaps = [(iou(r.box, gt), r) for r in reads]
                    best = max(overlaps, key=lambda t: t[0], default=(0.0, None))
                    if not b.text:
                        continue
                    st["labelled"] += 1
                    text = best[1].text if best[0] > 0.4 and best[1] is not None else ""
                    st["exact"] += text == b.text
                    st["merged"] += merged(text) == merged(b.text)
                    if text != b.text:
                        misses.append(f"{scene.path.name}\t{b.text}\t{text or '-'}\tiou={best[0]:.2f}")
                st["reads"] += len(reads)
                st["views_read"] += sum(r.views_read for r in reads)
                gts = [(b.x, b.y, b.w, b.h) for b in scene.boxes]
                st["other_reads"] += sum(all(iou(r.box, g) <= 0.4 for g in gts) for r in reads)
        for gt_file in crop_files:
            folder = gt_file.parent
            for name, reg, plate in data.groundtruth_rows(gt_file):
                path = folder / name
                if not path.exists():
                    path = folder / "crops" / name
                if not selected(path):
                    continue
                region = reg if reg in REGIONS else region_of(folder) or "eu"
                label = data.corrected(folder, Path(name).stem, data.normalise(plate), corrections)
                try:
                    crop = read_image(path)
                except ImageError as e:
                    print(f"{path}: {e}", file=sys.stderr)
                    continue
                r = recognizer(region).read_crop(crop)
                text = r.text if r else ""
                st = stats[f"{root.name}:crops-{region}"]
                st["images"] += 1
                st["labelled"] += 1
                st["exact"] += text == label
                st["merged"] += merged(text) == merged(label)
                if text != label:
                    misses.append(f"{name}\t{label}\t{text or '-'}")
    result: dict[str, dict[str, float | int]] = {}
    print(f"{'set':<28}{'images':>7}{'det.recall':>11}{'exact':>8}{'O/0 I/1':>9}{'other/img':>10}{'crops/plate':>12}")
    for name in sorted(stats):
        st = stats[name]
        row: dict[str, float | int] = {"images": st["images"]}
        if ":scenes" in name:
            row["detection_recall"] = st["detected"] / max(st["plates"], 1)
            row["other_reads_per_image"] = st["other_reads"] / max(st["images"], 1)
            row["crops_read_per_plate"] = st["views_read"] / max(st["reads"], 1)
        if st["labelled"]:
            row["exact"] = st["exact"] / st["labelled"]
            row["exact_merged"] = st["merged"] / st["labelled"]
        result[name] = row
        det = f"{row['detection_recall'] * 100:10.1f}%" if "detection_recall" in row else f"{'-':>11}"
        ex = f"{row['exact'] * 100:7.1f}%" if "exact" in row else f"{'-':>8}"
        mg = f"{row['exact_merged'] * 100:8.1f}%" if "exact_merged" in row else f"{'-':>9}"
        other = f"{row['other_reads_per_image']:10.2f}" if "other_reads_per_image" in row else f"{'-':>10}"
        views = f"{row['crops_read_per_plate']:12.2f}" if "crops_read_per_plate" in row else f"{'-':>12}"
        print(f"{name:<28}{st['images']:>7}{det}{ex}{mg}{other}{views}")
    if args.errors:
        print("\n".join(misses))
    print(json.dumps({"bench": "accuracy", "split": args.split, "formats": not args.no_formats,
                      "seconds": round(time.time() - t0, 1), "results": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
