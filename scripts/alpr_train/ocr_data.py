"""OCR training and validation samples: real crops (jittered, degraded) and synthetic plates, prepared
exactly as the runtime prepares a crop (edge.vision.ocr.prepare_crop)."""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

import cv2
import numpy as np

from edge.vision.ocr import CHARSET, prepare_crop
from edge.vision.recognizer import crop_box

from . import data, synth

H, W = 32, 128


@dataclass(frozen=True)
class Sample:
    """A real labelled crop: either a file that is the crop, or a box in a scene."""

    path: str
    text: str
    region: str
    two_line: bool
    box: tuple[int, int, int, int] | None = None


def real_samples(split_name: str) -> list[Sample]:
    """The real OCR samples of the ``train`` or ``val`` split."""
    idx = 0 if split_name == "train" else 1
    out: list[Sample] = []
    scenes = data.plates_dev_split()[idx]
    for s in scenes:
        for b in s.boxes:
            if b.text:
                out.append(Sample(str(s.path), b.text, s.region, b.w / max(b.h, 1) < 1.6, (b.x, b.y, b.w, b.h)))
    for c in data.split(data.plates_dev_crops())[idx]:
        out.append(Sample(str(c.path), c.text, "us", False))
    crops = data.br_eu_crops()
    for region in ("br", "eu"):
        for c in data.split([c for c in crops if c.region == region])[idx]:
            out.append(Sample(str(c.path), c.text, region, c.two_line))
    return out


def encode(text: str) -> list[int]:
    return [CHARSET.index(ch) + 1 for ch in text]


def _load(s: Sample) -> np.ndarray:
    img = cv2.imread(s.path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(s.path)
    return img


def val_image(s: Sample) -> np.ndarray:
    """The crop the runtime would see for a perfectly placed detection (scenes) or the crop file as is."""
    img = _load(s)
    return crop_box(img, s.box) if s.box else img


def augment_real(img: np.ndarray, s: Sample, rng: np.random.Generator) -> np.ndarray:
    if s.box:
        x, y, w, h = s.box
        mx, my = rng.uniform(-0.02, 0.15), rng.uniform(-0.05, 0.3)
        x += int(w * rng.uniform(-0.05, 0.05))
        y += int(h * rng.uniform(-0.1, 0.1))
        crop = crop_box(img, (x, y, w, h), mx, my)
    else:
        h, w = img.shape[:2]
        l, r = (int(w * rng.uniform(0, 0.06)) for _ in range(2))
        t, b = (int(h * rng.uniform(0, 0.08)) for _ in range(2))
        crop = img[t : h - b, l : w - r]
        if rng.random() < 0.3:
            crop = cv2.copyMakeBorder(crop, *(int(v) for v in rng.integers(0, 6, 4)), cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        crop = synth.perspective(crop, rng, 0.03)
    return synth.degrade(crop, rng) if rng.random() < 0.5 else crop


def _real_chunk(args: tuple[list[Sample], int, int]) -> tuple[np.ndarray, list[str], list[bool]]:
    samples, copies, seed = args
    rng = np.random.default_rng(seed)
    xs, ys, tl = [], [], []
    for s in samples:
        img = _load(s)
        for _ in range(copies):
            crop = augment_real(img, s, rng)
            if crop.shape[0] < 4 or crop.shape[1] < 4:
                continue
            xs.append((prepare_crop(crop, H, W, s.two_line) * 255).astype(np.uint8))
            ys.append(s.text)
            tl.append(s.two_line)
    return np.stack(xs), ys, tl


def _synth_chunk(args: tuple[str, int, int]) -> tuple[np.ndarray, list[str], list[bool]]:
    kind, n, seed = args
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    two = kind == "eu2"
    for _ in range(n):
        img, text = synth.synth_ocr_sample(rng, kind)
        xs.append((prepare_crop(img, H, W, two) * 255).astype(np.uint8))
        ys.append(text)
    return np.stack(xs), ys, [two] * n


def build(seed: int, synth_counts: dict[str, int], real_copies: dict[str, int], workers: int = 2,
          chunk: int = 500) -> tuple[np.ndarray, list[str], np.ndarray]:
    """All training images (N x H x W uint8), texts and a 'source' code per image (0 synthetic, 1 real)."""
    jobs_r = []
    train = real_samples("train")
    k = 0
    for region, copies in real_copies.items():
        items = [s for s in train if s.region == region]
        for i in range(0, len(items), 50):
            jobs_r.append((items[i : i + 50], copies, seed * 100003 + k))
            k += 1
    jobs_s = []
    for kind, n in synth_counts.items():
        for i in range(0, n, chunk):
            jobs_s.append((kind, min(chunk, n - i), seed * 100003 + k))
            k += 1
    from tqdm import tqdm

    with mp.get_context("fork").Pool(workers) as pool:
        res_r = list(tqdm(pool.imap(_real_chunk, jobs_r), total=len(jobs_r), desc="real crops"))
        res_s = list(tqdm(pool.imap(_synth_chunk, jobs_s), total=len(jobs_s), desc="synthetic plates"))
    xs = [r[0] for r in res_r + res_s]
    texts = [t for r in res_r + res_s for t in r[1]]
    src = np.concatenate([np.ones(len(r[1]), np.uint8) for r in res_r] + [np.zeros(len(r[1]), np.uint8) for r in res_s])
    return np.concatenate(xs), texts, src
