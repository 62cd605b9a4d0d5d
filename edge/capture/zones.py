"""Capture zones: only the public road inside a camera's polygons is recognised or stored.

Pixels outside every zone are blanked at capture, so no later stage (recogniser, scene image, store) can see
them; :meth:`ZoneMask.contains_box` lets a stage check a detection against the same zones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .spec import Polygon


def validate_zones(zones: Sequence[Sequence[Sequence[float]]]) -> tuple[Polygon, ...]:
    """The zones as tuples of (x, y) floats; ValueError naming the zone and point when one is malformed.

    A zone needs at least 3 points, each a pair of finite numbers within 0..1, enclosing a non-zero area.
    """
    out: list[Polygon] = []
    for zi, zone in enumerate(zones, start=1):
        if isinstance(zone, str | bytes) or not isinstance(zone, Sequence):
            raise ValueError(f"zone {zi}: expected a list of [x, y] points")
        if len(zone) < 3:
            raise ValueError(f"zone {zi}: a polygon needs at least 3 points, got {len(zone)}")
        points: list[tuple[float, float]] = []
        for pi, pt in enumerate(zone, start=1):
            if isinstance(pt, str | bytes) or not isinstance(pt, Sequence) or len(pt) != 2:
                raise ValueError(f"zone {zi}, point {pi}: expected [x, y], got {pt!r}")
            x, y = pt
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y)):
                raise ValueError(f"zone {zi}, point {pi}: coordinates must be numbers, got {pt!r}")
            if not (math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"zone {zi}, point {pi}: ({x}, {y}) is outside the frame (coordinates are 0..1)")
            points.append((float(x), float(y)))
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True))
        if abs(area2) < 1e-9:
            raise ValueError(f"zone {zi}: the polygon encloses no area (points on one line)")
        out.append(tuple(points))
    return tuple(out)


class ZoneMask:
    """The zones of one camera rasterised for one frame size. Build once per size; immutable afterwards."""

    def __init__(self, width: int, height: int, mask: np.ndarray | None) -> None:
        self.width = width
        self.height = height
        self._mask = mask  # uint8 HxW, 255 inside a zone; None = the whole frame

    @classmethod
    def for_frame(cls, zones: Sequence[Sequence[Sequence[float]]], width: int, height: int) -> ZoneMask:
        """The mask of ``zones`` (normalised 0..1) on a ``width`` x ``height`` frame; empty zones = whole frame."""
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        polygons = validate_zones(zones)
        if not polygons:
            return cls(width, height, None)
        mask = np.zeros((height, width), np.uint8)
        pts = [np.array([(round(x * width), round(y * height)) for x, y in poly], np.int32) for poly in polygons]
        cv2.fillPoly(mask, pts, 255)
        mask.setflags(write=False)
        return cls(width, height, mask)

    @property
    def whole_frame(self) -> bool:
        return self._mask is None

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``image`` with every pixel outside all zones set to 0 (a new array); ``image`` itself when no zones."""
        if self._mask is None:
            return image
        if image.shape[:2] != (self.height, self.width):
            got = f"{image.shape[1]}x{image.shape[0]}"
            raise ValueError(f"image is {got}, the mask was built for {self.width}x{self.height}")
        out: np.ndarray = cv2.bitwise_and(image, image, mask=self._mask)
        return out

    def contains_box(self, box: tuple[float, float, float, float]) -> bool:
        """Whether the centre of ``box`` (x, y, w, h in pixels) lies inside a zone (and inside the frame)."""
        x, y, w, h = box
        cx, cy = math.floor(x + w / 2), math.floor(y + h / 2)
        if not (0 <= cx < self.width and 0 <= cy < self.height):
            return False
        return self._mask is None or bool(self._mask[cy, cx])
