"""The bundled sample footage (firmware_config/sample): the committed video decodes with OpenCV and matches its
ground truth, the ground truth is well formed and reproducible, and the real recogniser reads every plate."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.vision.detector import iou
from edge.vision.recognizer import Recognizer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "firmware_config" / "sample"
SCRIPT = REPO / "scripts" / "make_sample_video.py"
STEP = 5  # recognise every 5th frame


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLE / "plates.json").read_text())
    return data


@pytest.fixture(scope="module")
def sampled(truth: dict[str, Any]) -> tuple[int, dict[int, np.ndarray], tuple[float, int, int, float]]:
    """Decode the whole video (counting frames) and keep every STEP-th frame."""
    cap = cv2.VideoCapture(str(SAMPLE / truth["video"]), cv2.CAP_FFMPEG)
    assert cap.isOpened(), "OpenCV's FFMPEG backend cannot open the sample footage"
    props = (
        cap.get(cv2.CAP_PROP_FPS),
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        cap.get(cv2.CAP_PROP_FRAME_COUNT),
    )
    kept: dict[int, np.ndarray] = {}
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if n % STEP == 0:
            kept[n] = img
        n += 1
    cap.release()
    return n, kept, props


def test_video_matches_its_ground_truth(truth: dict[str, Any], sampled: Any) -> None:
    decoded, kept, (fps, width, height, count) = sampled
    assert (width, height) == (truth["width"], truth["height"]) == (1280, 720)
    assert fps == pytest.approx(truth["fps"]) and truth["fps"] == 25
    assert decoded == truth["frames"] == int(count)
    assert 20 * 25 <= decoded <= 30 * 25  # 20 to 30 seconds
    assert all(img.shape == (720, 1280, 3) for img in kept.values())
    assert (SAMPLE / truth["video"]).stat().st_size < 5_000_000  # committed to git: a few MB at most


def test_ground_truth_is_well_formed(truth: dict[str, Any]) -> None:
    vehicles = truth["vehicles"]
    ids = [v["id"] for v in vehicles]
    assert len(ids) == len(set(ids)) and 10 <= len(ids) <= 14
    assert len({v["plate"] for v in vehicles}) == len(vehicles)
    assert {v["region"] for v in vehicles} == {"us", "eu", "br"}
    w, h, frames = truth["width"], truth["height"], truth["frames"]
    for v in vehicles:
        assert v["plate"].isalnum() and v["plate"] == v["plate"].upper()
        boxes = v["boxes"]
        assert not {b[0] for b in boxes} & {b[0] for b in v["partly_visible"]}, v["id"]
        assert len(boxes) == v["frames_visible"] >= 20, v["id"]
        assert [b[0] for b in boxes] == sorted({b[0] for b in boxes}), v["id"]  # one box per frame, in order
        assert (boxes[0][0], boxes[-1][0]) == (v["first_frame"], v["last_frame"])
        for f, x, y, bw, bh in boxes:
            assert 0 <= f < frames
            assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w and y + bh <= h, (v["id"], f)
        assert v["plate_width_px"] == [min(b[3] for b in boxes), max(b[3] for b in boxes)]
    widths = [b[3] for v in vehicles for b in v["boxes"]]
    assert min(widths) <= 95 and max(widths) >= 210


def test_scene_has_the_hard_cases(truth: dict[str, Any]) -> None:
    vehicles = truth["vehicles"]
    frames = [{b[0] for b in v["boxes"]} for v in vehicles]
    assert any(a & b for a, b in itertools.combinations(frames, 2))  # two plates in view at the same time

    def one_apart(a: str, b: str) -> bool:
        return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1

    pairs = [
        (a, b)
        for a, b in itertools.combinations(vehicles, 2)
        if one_apart(a["plate"], b["plate"]) and a["direction"] == b["direction"]
    ]
    assert pairs, "no two vehicles with plates one character apart in the same lane"


def test_recogniser_reads_every_plate(truth: dict[str, Any], sampled: Any) -> None:
    """The real models on every 5th frame: each plate is read exactly at least once, and nothing else is read
    with high confidence."""
    _, kept, _ = sampled
    rec = Recognizer.from_files(
        REPO / "models" / "plate_detector.tflite", REPO / "models" / "plate_ocr.tflite", ("us", "eu", "br"), threads=1
    )
    boxes = {(v["id"], b[0]): (v["plate"], b[1:]) for v in truth["vehicles"] for b in v["boxes"]}
    in_view: dict[int, list[list[int]]] = {}
    for v in truth["vehicles"]:
        for f, *b in v["boxes"] + v["partly_visible"]:
            in_view.setdefault(f, []).append(b)
    exact = {v["id"]: 0 for v in truth["vehicles"]}
    sampled_visible = {v["id"]: 0 for v in truth["vehicles"]}
    strays = []
    for f, img in kept.items():
        reads = rec.recognize(img)
        for vid in exact:
            if (vid, f) in boxes:
                text, box = boxes[(vid, f)]
                sampled_visible[vid] += 1
                exact[vid] += any(r.text == text and iou(r.box, box) > 0.4 for r in reads)
        # a confident read that is not mostly on a plate (even one entering or leaving the frame, or half
        # hidden) is text that the scene should not contain
        strays += [
            (f, r.text, r.confidence)
            for r in reads
            if r.confidence >= 0.5 and all(_covered(r.box, b) < 0.5 for b in in_view.get(f, []))
        ]
    assert all(n > 0 for n in sampled_visible.values())
    assert all(exact[vid] >= 1 for vid in exact), exact
    # the tracker votes over frames, but most single frames should already read right
    assert sum(exact.values()) >= 0.3 * sum(sampled_visible.values())
    assert strays == []


def _covered(a: tuple[int, int, int, int], b: list[int]) -> float:
    """The fraction of box ``a`` (x, y, w, h) inside box ``b``."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / max(1, a[2] * a[3])


def _generate(out: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args], check=True, capture_output=True, timeout=300
    )


def test_same_seed_gives_the_committed_ground_truth(tmp_path: Path) -> None:
    _generate(tmp_path, "--json-only", "--seed", "1")
    assert (tmp_path / "plates.json").read_text() == (SAMPLE / "plates.json").read_text()
    assert not (tmp_path / "footage.mp4").exists()
    _generate(tmp_path / "other", "--json-only", "--seed", "2")
    assert (tmp_path / "other" / "plates.json").read_text() != (SAMPLE / "plates.json").read_text()


@pytest.mark.slow
def test_regenerating_the_footage_gives_the_same_video(tmp_path: Path) -> None:
    """About 40 s: renders all frames again."""
    _generate(tmp_path, "--seed", "1")
    assert (tmp_path / "plates.json").read_text() == (SAMPLE / "plates.json").read_text()
    assert (tmp_path / "footage.mp4").read_bytes() == (SAMPLE / "footage.mp4").read_bytes()
