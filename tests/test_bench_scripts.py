"""The benchmark scripts score any folder in the plates-dev layout: a small one built here keeps them honest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2

from .conftest import REPO, render_plate, scene_with_plate


def test_bench_accuracy_on_a_folder_in_the_plates_dev_layout(tmp_path: Path) -> None:
    scenes = tmp_path / "set" / "scenes" / "us"
    scenes.mkdir(parents=True)
    plates = ["7ABC123", "KM4521"]
    for i, text in enumerate(plates):
        frame, (x, y, w, h) = scene_with_plate(text)
        cv2.imwrite(str(scenes / f"s{i}.jpg"), frame)
        (scenes / f"s{i}.txt").write_text(f"s{i}.jpg\t{x}\t{y}\t{w}\t{h}\t{text}\n")
    crops = tmp_path / "set" / "crops" / "us"
    crops.mkdir(parents=True)
    cv2.imwrite(str(crops / "c0.png"), render_plate("BRT5X09", (200, 56)))
    cv2.imwrite(str(crops / "c1.png"), render_plate("4ZZ9876", (200, 56)))
    # a deliberately wrong label: the benchmark must count it as a miss, not read the label
    (crops / "groundtruth.csv").write_text("file,state,plate\nc0.png,ca,BRT5X09\nc1.png,ca,WRONG12\n")
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_accuracy.py"), str(tmp_path / "set")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["bench"] == "accuracy"
    scenes_us = out["results"]["set:scenes-us"]
    assert scenes_us["images"] == 2 and scenes_us["detection_recall"] == 1.0 and scenes_us["exact"] == 1.0
    crops_us = out["results"]["set:crops-us"]
    assert crops_us["images"] == 2 and crops_us["exact"] == 0.5
    assert "set:scenes-us" in res.stdout and "set:crops-us" in res.stdout


def run_json(*args: str) -> dict[str, object]:
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def test_bench_hotlist_small() -> None:
    script = str(REPO / "scripts" / "bench_hotlist.py")
    out = run_json(script, "--entries", "5000", "--partials", "50", "--reads", "500")
    assert out["bench"] == "hotlist"
    kinds = out["by_kind"]
    assert isinstance(kinds, dict) and kinds["exact"]["with_hits"] == kinds["exact"]["reads"]


def test_bench_alerts_small() -> None:
    out = run_json(str(REPO / "scripts" / "bench_alerts.py"), "--count", "10", "--interval-ms", "0")
    assert out["bench"] == "alerts"
