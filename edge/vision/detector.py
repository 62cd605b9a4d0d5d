"""Plate detector: a small fully-convolutional network giving a stride-8 "plate centre" heatmap and a box
per cell (CenterNet-style), decoded here to boxes in frame pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .runtime import Model, ModelError

STRIDE = 8


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    score: float


@dataclass(frozen=True)
class Letterbox:
    scale: float
    pad_x: int
    pad_y: int


def letterbox(frame_bgr: np.ndarray, height: int, width: int, shrink: float = 1.0) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio into a height x width RGB float32 canvas (0..1), padded with grey;
    ``shrink`` > 1 makes the frame that many times smaller than the canvas, centred.

    Shared with the training script so that training and inference see identical pixels.
    """
    h, w = frame_bgr.shape[:2]
    scale = min(width / w, height / h) / shrink
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame_bgr, (nw, nh), interpolation=interp)
    canvas = np.full((height, width, 3), 114, np.uint8)
    px, py = (width - nw) // 2, (height - nh) // 2
    canvas[py : py + nh, px : px + nw] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return rgb, Letterbox(scale, px, py)


def decode(
    heat: np.ndarray, boxes: np.ndarray, threshold: float, max_detections: int = 20
) -> list[tuple[float, float, float, float, float]]:
    """Heatmap (H x W) and box maps (H x W x 4: dx, dy, log w, log h in stride units) to
    (score, cx, cy, w, h) in model-input pixels, local maxima only, best first."""
    pooled = cv2.dilate(heat, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero((heat >= threshold) & (heat >= pooled))
    order = np.argsort(-heat[ys, xs])[:max_detections]
    out = []
    for i in order:
        y, x = int(ys[i]), int(xs[i])
        dx, dy, lw, lh = (float(v) for v in boxes[y, x])
        cx = (x + 0.5 + dx) * STRIDE
        cy = (y + 0.5 + dy) * STRIDE
        bw = float(np.exp(np.clip(lw, -3, 6))) * STRIDE
        bh = float(np.exp(np.clip(lh, -3, 6))) * STRIDE
        out.append((float(heat[y, x]), cx, cy, bw, bh))
    return out


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class PlateDetector:
    """Finds plates in a BGR frame."""

    def __init__(self, model: Model, threshold: float = 0.3, nms_iou: float = 0.3, zoom_out: float = 2.5) -> None:
        """``zoom_out``: when a frame yields nothing, look again with the frame that many times smaller, for
        plates too close to the camera for the network's receptive field (0 or 1 turns it off)."""
        shape = model.inputs[0].shape
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ModelError(f"detector input must be [1, H, W, 3], got {list(shape)}")
        self.height, self.width = shape[1], shape[2]
        grid = (self.height // STRIDE, self.width // STRIDE)
        self._heat_index = self._box_index = -1
        for i, o in enumerate(model.outputs):
            if tuple(o.shape[1:3]) == grid and o.shape[3] == 1:
                self._heat_index = i
            elif tuple(o.shape[1:3]) == grid and o.shape[3] == 4:
                self._box_index = i
        if self._heat_index < 0 or self._box_index < 0:
            raise ModelError(f"detector outputs must be [1, {grid[0]}, {grid[1]}, 1] and [..., 4]")
        self._model = model
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.zoom_out = zoom_out

    def detect(self, frame_bgr: np.ndarray) -> list[Detection]:
        found = self.detect_at(frame_bgr, 1.0)
        if not found and self.zoom_out > 1:
            found = self.detect_at(frame_bgr, self.zoom_out)
        return found

    def detect_at(self, frame_bgr: np.ndarray, shrink: float) -> list[Detection]:
        """Detections with the frame ``shrink`` times smaller than the network's input (1: fills it)."""
        x, lb = letterbox(frame_bgr, self.height, self.width, shrink)
        outs = self._model.run(x[None])
        heat = outs[self._heat_index][0, :, :, 0]
        boxes = outs[self._box_index][0]
        fh, fw = frame_bgr.shape[:2]
        kept: list[Detection] = []
        for score, cx, cy, bw, bh in decode(heat, boxes, self.threshold):
            x0 = (cx - bw / 2 - lb.pad_x) / lb.scale
            y0 = (cy - bh / 2 - lb.pad_y) / lb.scale
            x1 = (cx + bw / 2 - lb.pad_x) / lb.scale
            y1 = (cy + bh / 2 - lb.pad_y) / lb.scale
            x0, y0 = max(0.0, x0), max(0.0, y0)
            x1, y1 = min(float(fw), x1), min(float(fh), y1)
            if x1 - x0 < 4 or y1 - y0 < 2:
                continue
            box = (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
            if all(iou(box, k.box) <= self.nms_iou for k in kept):
                kept.append(Detection(box, score))
        return kept
