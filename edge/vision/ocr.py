"""Plate OCR: a conv-only CTC model over a grayscale plate crop, decoded to ranked candidate strings.

Two-line plates (EU square plates, motorcycles) are read by "unfolding" the crop: the top and bottom
halves are placed side by side so the single-line CTC model reads them left to right, top line first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .runtime import Model, ModelError

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BLANK = 0  # CTC blank is class 0; character i of CHARSET is class i + 1
NUM_CLASSES = len(CHARSET) + 1
TWO_LINE_MAX_ASPECT = 1.75  # a crop narrower than this (w/h) may hold a two-line plate


@dataclass(frozen=True)
class Candidate:
    text: str
    confidence: float


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    candidates: tuple[Candidate, ...]
    two_line: bool = False


def unfold_two_line(gray: np.ndarray) -> np.ndarray:
    """Place the top and bottom halves of a two-line plate side by side (with a small overlap each)."""
    h = gray.shape[0]
    top = gray[: int(round(h * 0.56))]
    bottom = gray[int(round(h * 0.44)) :]
    hh = min(top.shape[0], bottom.shape[0])
    return np.ascontiguousarray(np.hstack([top[:hh], bottom[-hh:]]))


def _percentiles(img: np.ndarray, *qs: float) -> list[float]:
    """``np.percentile(img, qs)`` (linear interpolation); from a histogram when ``img`` is uint8, which is
    exact and ten times faster than sorting on a plate-sized image."""
    if img.dtype != np.uint8:
        return [float(v) for v in np.percentile(img, qs)]
    cum = np.cumsum(np.bincount(img.ravel(), minlength=256))
    out = []
    for q in qs:
        pos = q / 100.0 * (img.size - 1)
        k = int(pos)
        a, b = (int(np.searchsorted(cum, i, side="right")) for i in (k, min(k + 1, img.size - 1)))
        out.append(a + (pos - k) * (b - a))
    return out


def prepare_crop(crop_bgr: np.ndarray, height: int, width: int, two_line: bool = False) -> np.ndarray:
    """A plate crop (BGR or gray) to the model's float32 input image (height x width, 0..1, contrast-stretched).

    Shared with the training script so that training and inference see identical pixels.
    """
    gray = crop_bgr if crop_bgr.ndim == 2 else cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    if two_line:
        gray = unfold_two_line(gray)
    interp = cv2.INTER_AREA if gray.shape[1] > width else cv2.INTER_LINEAR
    small = cv2.resize(gray, (width, height), interpolation=interp)
    lo, hi = _percentiles(small, 2.0, 98.0)
    img = small.astype(np.float32)
    if hi - lo < 8:
        hi = lo + 8
    out: np.ndarray = np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return out


def _mass(kv: tuple[str, list[float]]) -> float:
    return kv[1][0] + kv[1][1]


def ctc_beam_search(
    probs: np.ndarray, beam: int = 10, top_k: int = 8, prune: float = 1e-3, sure_blank: float = 0.999
) -> list[tuple[str, float]]:
    """CTC prefix beam search over per-step class probabilities (T x C); returns (text, log p) best first.

    Works with plain probabilities (rescaled before they could underflow, the scale kept as a log): the same
    search as in log space without a logsumexp per addition, several times faster in Python.
    Steps whose blank probability is at least ``sure_blank`` are taken as pure gaps (the mass they leave to
    other classes, under 0.1 %, is dropped): plates are mostly gaps, so this makes decoding faster still.
    """
    p_all = np.clip(probs, 1e-12, 1.0).astype(np.float64)
    steps = p_all.shape[0]
    blank = p_all[:, BLANK].tolist()
    # the classes each step may branch into, found for all steps at once (numpy calls per step cost more than the
    # search itself): those above ``prune`` and always the two likeliest, so that alternatives exist even when the
    # model is sure; none on gap steps
    keep = p_all >= prune
    keep[np.arange(steps)[:, None], np.argpartition(p_all, -2, axis=1)[:, -2:]] = True
    keep[p_all[:, BLANK] >= sure_blank] = False
    branches: list[list[tuple[int, float, str]]] = [[] for _ in range(steps)]
    ts, cs = np.nonzero(keep)
    for t, c, p in zip(ts.tolist(), cs.tolist(), p_all[ts, cs].tolist(), strict=True):
        branches[t].append((c, p, CHARSET[c - 1] if c != BLANK else ""))
    log_scale = 0.0
    # prefix -> (p ending in blank, p ending in non-blank), both divided by exp(log_scale)
    beams: dict[str, tuple[float, float]] = {"": (1.0, 0.0)}
    collapsed = beams  # the beams as they are after a gap step: all mass ending in blank
    for t in range(steps):
        cands = branches[t]
        if not cands:  # a near-certain gap between characters branches nothing
            if collapsed is not beams:
                beams = {prefix: (pb + pnb, 0.0) for prefix, (pb, pnb) in beams.items()}
                collapsed = beams
            log_scale += math.log(blank[t])  # the same factor for every beam
            continue
        nxt: dict[str, list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = pb + pnb
            last = prefix[-1] if prefix else ""
            # (written out with get(): this loop is most of the decoding time, and a setdefault allocates a list
            # on every call)
            for c, p, ch in cands:
                if c == BLANK:
                    e = nxt.get(prefix)
                    if e is None:
                        nxt[prefix] = [total * p, 0.0]
                    else:
                        e[0] += total * p
                    continue
                if ch == last:
                    if pb > 0.0:  # a repeat needs a blank between
                        key = prefix + ch
                        e = nxt.get(key)
                        if e is None:
                            nxt[key] = [0.0, pb * p]
                        else:
                            e[1] += pb * p
                    key, add = prefix, pnb * p  # the same character continued
                else:
                    key, add = prefix + ch, total * p
                e = nxt.get(key)
                if e is None:
                    nxt[key] = [0.0, add]
                else:
                    e[1] += add
        if len(nxt) > beam:  # what heapq.nlargest gives (ties in insertion order), faster at these sizes
            best = sorted(nxt.items(), key=_mass, reverse=True)[:beam]
            top = _mass(best[0])
        else:
            best = list(nxt.items())
            top = max(map(_mass, best))
        if top <= 0.0:
            break
        if top < 1e-150:  # rescale before the probabilities underflow
            beams = {k: (v[0] / top, v[1] / top) for k, v in best if v[0] + v[1] > 0.0}
            log_scale += math.log(top)
        else:
            beams = {k: (v[0], v[1]) for k, v in best}
    ranked = sorted(
        ((p, math.log(pb + pnb) + log_scale) for p, (pb, pnb) in beams.items() if p and pb + pnb > 0.0),
        key=lambda x: -x[1],
    )
    return ranked[:top_k]


def greedy_char_confidences(probs: np.ndarray) -> tuple[str, tuple[float, ...]]:
    """Best-path text and, per character, the highest probability over the steps that emitted it."""
    best = probs.argmax(axis=1)
    text: list[str] = []
    confs: list[float] = []
    prev = BLANK
    for t, c in enumerate(best):
        c = int(c)
        if c != BLANK and c != prev:
            text.append(CHARSET[c - 1])
            confs.append(float(probs[t, c]))
        elif c != BLANK and c == prev and confs:
            confs[-1] = max(confs[-1], float(probs[t, c]))
        prev = c
    return "".join(text), tuple(confs)


def char_confidences_for(text: str, probs: np.ndarray) -> tuple[float, ...]:
    """Per-character confidences of ``text``: for each character, its peak probability over the steps,
    in order (a forced left-to-right alignment on the peaks). Used when the top candidate is not the best path."""
    confs: list[float] = []
    t0 = 0
    T = probs.shape[0]
    for i, ch in enumerate(text):
        c = CHARSET.index(ch) + 1
        remaining = len(text) - i - 1
        t1 = max(t0 + 1, T - remaining)
        seg = probs[t0:t1, c]
        k = int(seg.argmax())
        confs.append(float(seg[k]))
        t0 = t0 + k + 1
        if t0 >= T:
            t0 = T - 1
    return tuple(confs)


class PlateReader:
    """Reads plate crops with the OCR model."""

    def __init__(self, model: Model, beam: int = 12, top_k: int = 8) -> None:
        shape = model.inputs[0].shape
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 1:
            raise ModelError(f"OCR model input must be [1, H, W, 1], got {list(shape)}")
        out = model.outputs[0].shape
        if len(out) != 3 or out[2] != NUM_CLASSES:
            raise ModelError(f"OCR model output must be [1, T, {NUM_CLASSES}], got {list(out)}")
        self._model = model
        self.height, self.width = shape[1], shape[2]
        self._beam = beam
        self._top_k = top_k

    def probabilities(self, crop_bgr: np.ndarray, two_line: bool = False) -> np.ndarray:
        x = prepare_crop(crop_bgr, self.height, self.width, two_line)
        probs: np.ndarray = self._model.run(x[None, :, :, None])[0][0]
        # an int8 softmax dequantises to rows that sum to slightly more or less than 1: renormalise, so
        # that string probabilities stay probabilities
        normalised: np.ndarray = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-6)
        return normalised

    def read(self, crop_bgr: np.ndarray, two_line: bool = False) -> list[tuple[str, float]]:
        """Candidate strings with log probabilities, best first (no format rules applied)."""
        return ctc_beam_search(self.probabilities(crop_bgr, two_line), self._beam, self._top_k)
