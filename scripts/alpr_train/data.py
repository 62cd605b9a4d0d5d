"""Readers for the labelled images in ../shared/data, the label corrections, and the fixed validation split.

Split rule (fixed, documented in models/MODEL_CARD.md): items are grouped by a key that keeps near-duplicates
together (the scene name for plates-dev, the plate text for crops, video + minute for dash-cam frames); the
groups are ordered by the SHA-1 of their key and the first ceil(20 %) of each folder's groups are validation.
Pure Python and OpenCV only, so the benchmarks can use it without the training extra.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
CORRECTIONS = REPO / "scripts" / "label_corrections.csv"
VAL_FRACTION = 0.20


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    text: str


@dataclass(frozen=True)
class Scene:
    path: Path
    region: str
    boxes: tuple[Box, ...]
    key: str


@dataclass(frozen=True)
class Crop:
    path: Path
    region: str  # us | eu | br (country code for EU two-line crops is kept in ``country``)
    text: str
    key: str
    two_line: bool = False
    country: str = ""


def load_corrections(path: Path = CORRECTIONS) -> dict[tuple[str, str], tuple[str, str]]:
    """(folder suffix, name) -> (old label, new label)."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        folder, name, old, new, _note = next(csv.reader([line]))
        out[(folder, name)] = (old, new)
    return out


def normalise(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def corrected(folder: Path, name: str, label: str, corrections: dict[tuple[str, str], tuple[str, str]]) -> str:
    folder_s = folder.as_posix()
    for (suffix, cname), (old, new) in corrections.items():
        if cname == name and folder_s.endswith(suffix) and normalise(label) == old:
            return new
    return label


def read_scene_folder(folder: Path, region: str, key_prefix: str = "") -> list[Scene]:
    """A folder of NAME.jpg + NAME.txt (tab-separated: file, x, y, w, h, plate) in the plates-dev layout."""
    corrections = load_corrections()
    scenes = []
    for txt in sorted(folder.glob("*.txt")):
        boxes = []
        image = None
        for line in txt.read_text().splitlines():
            if not line.strip():
                continue
            parts = line.split("\t")
            image = folder / parts[0]
            label = normalise(parts[5]) if len(parts) > 5 else ""
            label = corrected(folder, txt.stem, label, corrections)
            boxes.append(Box(int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]), label))
        if image is None or not image.exists():
            continue
        scenes.append(Scene(image, region, tuple(boxes), key_prefix + txt.stem))
    return scenes


def plates_dev_scenes(root: Path = SHARED_DATA) -> list[Scene]:
    out = []
    for region in ("us", "eu", "br"):
        out += read_scene_folder(root / "plates-dev" / "scenes" / region, region, f"plates-dev/{region}/")
    return out


def dashcam_scenes(root: Path = SHARED_DATA) -> list[Scene]:
    scenes = read_scene_folder(root / "scenes-ro-dashcam" / "scenes", "eu")
    out = []
    for s in scenes:
        m = re.match(r"(.*)_t(\d+)", s.key)
        video, t = (m.group(1), int(m.group(2))) if m else (s.key, 0)
        out.append(Scene(s.path, s.region, s.boxes, f"ro/{video}/{t // 60}"))
    return out


def groundtruth_rows(path: Path) -> list[tuple[str, str, str]]:
    """(file, region, plate) rows of a crops ``groundtruth.csv``, header and short rows skipped."""
    with open(path) as f:
        return [(r[0], r[1], r[2]) for r in csv.reader(f) if len(r) >= 3 and r[0] != "file"]


def plates_dev_crops(root: Path = SHARED_DATA) -> list[Crop]:
    folder = root / "plates-dev" / "crops" / "us"
    corrections = load_corrections()
    out = []
    for name, state, plate in groundtruth_rows(folder / "groundtruth.csv"):
        text = normalise(plate)
        fixed = corrected(folder, Path(name).stem, text, corrections)
        # the split key stays the original label, so a correction never moves a crop between the splits
        out.append(Crop(folder / name, "us", fixed, f"us-crop/{text}", country=state))
    return out


def br_eu_crops(root: Path = SHARED_DATA) -> list[Crop]:
    folder = root / "crops-br-eu"
    out = []
    for name, region, plate in groundtruth_rows(folder / "groundtruth.csv"):
        text = normalise(plate)
        if region == "br":
            out.append(Crop(folder / name, "br", text, f"br-crop/{text}"))
        else:
            out.append(Crop(folder / name, "eu", text, f"eu2-crop/{text}", True, region))
    return out


T = TypeVar("T", Scene, Crop)


def _rank(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def validation_keys(keys: Iterable[str], fraction: float = VAL_FRACTION) -> set[str]:
    uniq = sorted(set(keys), key=_rank)
    return set(uniq[: math.ceil(len(uniq) * fraction)])


def split(items: Sequence[T], fraction: float = VAL_FRACTION) -> tuple[list[T], list[T]]:
    """(train, validation) by the fixed rule in the module docstring; apply per folder."""
    val = validation_keys((i.key for i in items), fraction)
    return [i for i in items if i.key not in val], [i for i in items if i.key in val]


def plates_dev_split() -> tuple[list[Scene], list[Scene]]:
    """Per region, so each region keeps its 20 %."""
    train: list[Scene] = []
    val: list[Scene] = []
    for region in ("us", "eu", "br"):
        t, v = split([s for s in plates_dev_scenes() if s.region == region])
        train += t
        val += v
    return train, val
