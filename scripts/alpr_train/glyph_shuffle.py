"""New real-looking training plates from the real crops: the characters of a plate, cut at the network's own CTC
alignment, put back in another order (letters among letter positions, digits among digit positions).

Why: a few hundred real US plates are memorised text and all; shuffling their glyphs keeps the real fonts, paint,
dirt and backgrounds but breaks the memorised strings, so the network must read each glyph. Keeping letters and
digits in their positions keeps each plate's layout (a Brazilian AAA9999 stays AAA9999).
"""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np

STEP_PX = 4  # input pixels per CTC time step (128 px wide input, 32 steps)


def align(probs: np.ndarray, charset: str) -> tuple[str, list[int]] | None:
    """Greedy CTC decoding with the time step at which each character peaks; None when nothing is read."""
    best = probs.argmax(1)
    text, peaks = [], []
    prev = 0
    for t, c in enumerate(best):
        if c != 0 and c != prev:
            text.append(charset[c - 1])
            peaks.append(t)
        elif c != 0 and c == prev and probs[t, c] > probs[peaks[-1], c]:
            peaks[-1] = t
        prev = c
    return ("".join(text), peaks) if text else None


def ink(img: np.ndarray) -> np.ndarray:
    """Per column, how far the middle rows are from the plate's background (dark-on-light or light-on-dark)."""
    h = img.shape[0]
    band = img[h // 4 : h - h // 4].astype(np.float32)
    return np.asarray(np.abs(band - np.median(img)).mean(0))


def cut_points(img: np.ndarray, peaks: list[int], window: int = 6) -> list[int] | None:
    """Pixel columns that split the image into: left margin, one segment per character, right margin.

    Each cut starts halfway between two characters' CTC peaks and moves to the emptiest column near it (the
    peaks are only roughly centred on the glyphs); None when a cut would still go through a stroke."""
    width = img.shape[1]
    col = ink(img)
    centres = [p * STEP_PX + STEP_PX // 2 for p in peaks]
    mids = [(a + b) // 2 for a, b in pairwise(centres)]
    pitch = (centres[-1] - centres[0]) / max(1, len(centres) - 1) if len(centres) > 1 else 12
    guesses = [int(centres[0] - pitch / 2), *mids, int(centres[-1] + pitch / 2)]
    cuts = []
    for g in guesses:
        lo, hi = max(0, g - window), min(width, g + window + 1)
        if hi - lo < 2:
            return None
        cuts.append(lo + int(np.argmin(col[lo:hi])))
    strokes = np.percentile(col, 80)
    if any(col[c] > 0.5 * strokes for c in cuts[1:-1] if c < width):
        return None
    return cuts


def shuffled(img: np.ndarray, text: str, peaks: list[int], rng: np.random.Generator) -> tuple[np.ndarray, str] | None:
    """One shuffled copy of a prepared (H x W uint8) crop whose aligned reading is ``text``; None when the
    characters cannot be cut cleanly (too narrow segments) or there is nothing to swap."""
    cuts = cut_points(img, peaks)
    if cuts is None or any(b - a < 3 for a, b in pairwise(cuts)):
        return None
    segs = [img[:, a:b] for a, b in pairwise(cuts)]
    order = list(range(len(text)))
    for is_digit in (True, False):
        pos = [i for i, ch in enumerate(text) if ch.isdigit() == is_digit]
        perm = list(rng.permutation(pos))
        for p, q in zip(pos, perm):
            order[p] = q
    if order == list(range(len(text))):
        return None
    out = np.hstack([img[:, : cuts[0]], *[segs[i] for i in order], img[:, cuts[-1] :]])
    return out, "".join(text[i] for i in order)


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small shift, scale and blur in the prepared image's own space, so the seams move and soften."""
    h, w = img.shape
    s = rng.uniform(0.92, 1.06)
    m = np.array([[s * rng.uniform(0.95, 1.05), 0, rng.uniform(-3, 3)], [0, s, rng.uniform(-1.5, 1.5)]], np.float32)
    m[0, 2] += (1 - m[0, 0]) * w / 2
    m[1, 2] += (1 - m[1, 1]) * h / 2
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.4:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
    if rng.random() < 0.3:
        out = np.clip(out.astype(np.int16) + rng.normal(0, 6, out.shape).astype(np.int16), 0, 255).astype(np.uint8)
    return out


def make(images: np.ndarray, texts: list[str], probs: np.ndarray, charset: str, copies: int,
         rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``copies`` shuffled images per image whose greedy reading under ``probs`` (N x T x C) equals its label."""
    xs: list[np.ndarray] = []
    ys: list[str] = []
    for img, label, p in zip(images, texts, probs):
        a = align(p, charset)
        if a is None or a[0] != label or len(label) < 3:
            continue
        for _ in range(copies):
            s = shuffled(img, label, a[1], rng)
            if s is not None:
                xs.append(jitter(s[0], rng))
                ys.append(s[1])
    if not xs:
        return np.zeros((0, *images.shape[1:]), np.uint8), []
    return np.stack(xs), ys
