#!/usr/bin/env python3
"""Make the bundled sample footage: synthetic cars with known plates driving over a hill crest towards a pole
camera and away from it, as a 1280x720 25 fps MPEG-4 video, with its ground truth (plates.json).

Everything is drawn here, nothing is copied from third-party images: the plates use the training renderer's
layout helpers (scripts/alpr_train/synth.py) with free Debian fonts (fonts-opendin, fonts-liberation,
fonts-dejavu-core), so the footage can ship with the appliance. Seeded: the same seed gives the same plates.json
(and, with the same OpenCV build, the same video).

  python scripts/make_sample_video.py [--out firmware_config/sample] [--seed 1] [--json-only] [--verify]

``--verify`` decodes the written video and runs the real recogniser (and the tracker) on every frame: per
plate, the frames in which it is fully visible, detected (IoU > 0.4) and read exactly, then what the tracker
makes of the whole footage.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the edge package, when not installed
sys.path.insert(0, str(REPO / "scripts"))  # alpr_train

from alpr_train.synth import FONT_FILES, SMALL_FONT, _draw_text_fit  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25
VIDEO_NAME = "footage.mp4"
FOURCC = "mp4v"
KEY_INTERVAL = 12  # OpenCV's FFMPEG writer makes every 12th frame a key frame (not configurable)

# A pole camera looking down a two-lane road that comes over a crest. Depth is carried by the scale s (pixels
# per metre at the vehicle): the road at scale s is at screen y = VP_Y + GROUND * s, a point X metres beside
# the camera's axis at x = VP_X + X * s. The road beyond the crest (s < S_CREST) is hidden behind it.
VP_X, VP_Y = 700.0, 108.0
GROUND = 1.48
S_CREST = 165.0
CREST_Y = VP_Y + GROUND * S_CREST
S_GONE = 1300.0  # a vehicle this close has left the frame
S_REF = 360.0  # a vehicle's speed is given as frames from the crest to this scale
LANE_X = {"approaching": -1.6, "receding": 1.5}
CENTRE_LINE_X, LEFT_EDGE_X, RIGHT_EDGE_X = -0.15, -3.1, 2.8
FOCAL = 3000.0  # pixels; only spaces the dashes of the centre line (distance = FOCAL / s)
FINE_NOISE = 1.0  # grey levels of fixed per-pixel noise in the background (noise that changed in every
# frame would cost the encoder about 0.6 MB per grey level)
JPEG_QUALITY = 85  # each frame goes through JPEG once, as from an IP camera
# Clouds passing over the sun: (first frame, last frame, depth) of a smooth dip in the light
CLOUDS = [(100, 210, 0.16), (320, 390, 0.1)]
LENS_BLUR = 1.2  # Gaussian sigma (pixels) of the whole image: a real lens is not perfectly sharp
FAR_BLUR = 1.6  # Gaussian sigma (pixels) of the out-of-focus background beyond the crest
EXPOSURE = 0.5  # fraction of a frame interval the shutter is open: motion blur length
RISE_SPEEDUP = 3.0  # a car coming over the crest rises into view this many times faster than it then approaches

# Plate widths in metres, larger than real ones (0.30 to 0.52 m) so that the cartoon cars keep plates of
# 90 to 220 pixels while fitting in the frame. The height follows the rendered plate's aspect.
PLATE_WIDTH_M = {"us": 0.5, "eu": 0.62, "br": 0.55}


@dataclass(frozen=True)
class Body:
    """A car's front or rear outline, in metres."""

    width: float
    clearance: float  # ground to the bottom of the body
    belt: float  # top of the body (bonnet or boot line)
    roof: float
    roof_width: float
    plate_h: float  # height of the plate's centre


BODIES = {
    "sedan": Body(1.80, 0.16, 0.92, 1.42, 1.22, 0.45),
    "hatch": Body(1.72, 0.15, 0.96, 1.50, 1.20, 0.47),
    "suv": Body(1.92, 0.24, 1.06, 1.72, 1.42, 0.56),
}


@dataclass(frozen=True)
class PlateSpec:
    text: str  # what the plate says, as the recogniser should read it
    shown: str  # as printed (with spaces or dashes)
    region: str  # us, eu, br
    layout: str  # us, eu, br-old, br-mercosur
    detail: str  # state (us), country code (eu), city (br-old)


@dataclass(frozen=True)
class Vehicle:
    vid: str
    plate: PlateSpec
    direction: str  # approaching (front plate, coming over the crest) or receding (rear plate, going over it)
    start: int  # first frame in which it is in the scene
    drive: int  # frames from the crest to scale S_REF: its speed
    body: str
    colour: tuple[int, int, int]  # BGR
    font: str


@dataclass(frozen=True)
class Pose:
    """Where a vehicle is in one frame."""

    s: float  # pixels per metre
    gx: float  # centre of the vehicle on the road, screen pixels
    gy: float
    clip_y: float | None  # rows from here down are hidden (behind the crest)


# The scene: (id, plate, direction, start frame, frames from crest to S_REF, body). Seeded jitter is added
# to the start and speed; texts use no I, O or Q outside Brazil (as the states and countries do).
SCENARIO: list[tuple[str, PlateSpec, str, int, int, str]] = [
    ("v01", PlateSpec("7KRW482", "7KRW482", "us", "us", "CALIFORNIA"), "approaching", 0, 54, "sedan"),
    ("v02", PlateSpec("BMK4271", "B MK 4271", "eu", "eu", "D"), "receding", 4, 56, "hatch"),
    ("v03", PlateSpec("FKA3617", "FKA-3617", "br", "br-old", "PR-CURITIBA"), "approaching", 76, 50, "suv"),
    ("v04", PlateSpec("HJN2847", "HJN 2847", "us", "us", "TEXAS"), "receding", 68, 52, "suv"),
    ("v05", PlateSpec("MZ482KT", "MZ-482-KT", "eu", "eu", "F"), "approaching", 150, 54, "hatch"),
    ("v06", PlateSpec("MZ487KT", "MZ-487-KT", "eu", "eu", "F"), "approaching", 224, 50, "sedan"),
    ("v07", PlateSpec("RTZ4E28", "RTZ4E28", "br", "br-mercosur", ""), "receding", 130, 50, "sedan"),
    ("v08", PlateSpec("5YTC209", "5YTC209", "us", "us", "OREGON"), "approaching", 298, 52, "sedan"),
    ("v09", PlateSpec("WX58213", "WX 58213", "eu", "eu", "PL"), "receding", 192, 54, "suv"),
    ("v10", PlateSpec("QHB5J73", "QHB5J73", "br", "br-mercosur", ""), "approaching", 372, 52, "hatch"),
    ("v11", PlateSpec("8DFM315", "8DFM315", "us", "us", "NEVADA"), "receding", 256, 50, "hatch"),
    ("v12", PlateSpec("GTP9042", "GTP-9042", "br", "br-old", "SP-SAO PAULO"), "receding", 318, 52, "sedan"),
]

BODY_COLOURS = [  # BGR
    (235, 236, 238),
    (190, 192, 196),
    (70, 70, 74),
    (30, 30, 34),
    (40, 40, 170),
    (150, 80, 30),
    (60, 90, 40),
    (150, 180, 200),
    (30, 150, 210),
    (110, 60, 110),
]
US_SLOGANS = {"CALIFORNIA": "dmv.ca.gov", "TEXAS": "THE LONE STAR STATE", "OREGON": "", "NEVADA": "SILVER STATE"}
READABLE_FONTS = FONT_FILES[:5]  # the proportional fonts; the two monospaced ones are left out


# ---------------------------------------------------------------- plan (no pixels): vehicles, poses, boxes


def make_vehicles(seed: int) -> list[Vehicle]:
    rng = np.random.default_rng(seed)
    out = []
    for vid, plate, direction, start, drive, body in SCENARIO:
        out.append(
            Vehicle(
                vid=vid,
                plate=plate,
                direction=direction,
                start=max(0, start + int(rng.integers(-3, 4))),
                drive=int(round(drive * rng.uniform(0.95, 1.05))),
                body=body,
                colour=BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))],
                font=str(READABLE_FONTS[int(rng.integers(len(READABLE_FONTS)))]),
            )
        )
    return out


def _dz(v: Vehicle) -> float:
    """Change of 1/s per frame (constant speed towards or away from the camera)."""
    return (1 / S_CREST - 1 / S_REF) / v.drive


def _rise_frames(v: Vehicle) -> int:
    hide = BODIES[v.body].roof * S_CREST + 2
    speed = GROUND * S_CREST**2 * _dz(v) * RISE_SPEEDUP
    return int(math.ceil(hide / speed))


def _drive_frames(v: Vehicle) -> int:
    return int(math.ceil((1 / S_CREST - 1 / S_GONE) / _dz(v)))


def lifetime(v: Vehicle) -> int:
    return _rise_frames(v) + _drive_frames(v)


def pose(v: Vehicle, frame: int) -> Pose | None:
    """The vehicle's pose in a frame, or None when it is not in the scene."""
    n = lifetime(v)
    k = frame - v.start
    if not 0 <= k < n:
        return None
    if v.direction == "receding":
        k = n - 1 - k  # the same path, driven backwards
    rise = _rise_frames(v)
    lane = LANE_X[v.direction]
    if k < rise:
        hide = BODIES[v.body].roof * S_CREST + 2
        gy = CREST_Y + hide * (1 - k / rise)
        return Pose(S_CREST, VP_X + lane * S_CREST, gy, CREST_Y)
    s = 1 / (1 / S_CREST - (k - rise) * _dz(v))
    return Pose(s, VP_X + lane * s, VP_Y + GROUND * s, None)


def plate_aspect(layout: str) -> float:
    return {"us": 2.0, "eu": 520 / 112, "br-old": 400 / 130, "br-mercosur": 400 / 130}[layout]


def plate_box(v: Vehicle, p: Pose) -> tuple[int, int, int, int]:
    """The plate's outer edge in the frame (x, y, w, h), unclipped."""
    w = PLATE_WIDTH_M[v.plate.region] * p.s
    h = w / plate_aspect(v.plate.layout)
    cx, cy = p.gx, p.gy - BODIES[v.body].plate_h * p.s
    return round(cx - w / 2), round(cy - h / 2), round(w), round(h)


def body_box(v: Vehicle, p: Pose) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of the car's visible outline (mirrors included), clipped at the crest."""
    b = BODIES[v.body]
    half = (b.width / 2 + 0.12) * p.s
    y1 = p.gy if p.clip_y is None else min(p.gy, p.clip_y)
    return p.gx - half, p.gy - b.roof * p.s, p.gx + half, y1


def silhouette(v: Vehicle, p: Pose) -> list[np.ndarray]:
    """Polygons (frame pixels) that cover the car as drawn, a little generously: body and tyres, mirrors, cabin."""
    b = BODIES[v.body]
    half, rw, m = b.width / 2 + 0.03, b.roof_width / 2 + 0.03, 0.04

    def pts(*xy: tuple[float, float]) -> np.ndarray:
        return np.float32([(p.gx + x * p.s, p.gy - y * p.s) for x, y in xy])

    return [
        pts((-half, -m), (half, -m), (half, b.belt + m), (-half, b.belt + m)),
        pts((-half - 0.14, b.belt), (half + 0.14, b.belt), (half + 0.14, b.belt + 0.24), (-half - 0.14, b.belt + 0.24)),
        pts((-half + 0.09, b.belt), (half - 0.09, b.belt), (rw, b.roof + m), (-rw, b.roof + m)),
    ]


def hides(v: Vehicle, p: Pose, box: tuple[int, int, int, int]) -> bool:
    """Whether the car covers any pixel of ``box`` (x, y, w, h)."""
    x, y, w, h = box
    mask = np.zeros((h, w), np.uint8)
    for poly in silhouette(v, p):
        q = poly - np.float32([x, y])
        if p.clip_y is not None:  # behind the crest only what is above it shows
            q[:, 1] = np.minimum(q[:, 1], p.clip_y - y)
        cv2.fillPoly(mask, [np.round(q * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    return bool(mask.any())


def plan(vehicles: list[Vehicle]) -> tuple[int, dict[str, list[list[int]]], dict[str, list[list[int]]]]:
    """Frame count and, per vehicle, [frame, x, y, w, h] for each frame in which its plate is fully visible
    (inside the frame, above the crest and not behind a nearer car), and the same for the frames in which it is
    only partly visible (the box then is the whole plate's, reaching outside the frame or behind what hides it)."""
    frames = max(v.start + lifetime(v) for v in vehicles) + FPS // 2
    full: dict[str, list[list[int]]] = {v.vid: [] for v in vehicles}
    partial: dict[str, list[list[int]]] = {v.vid: [] for v in vehicles}
    for f in range(frames):
        here = [(v, p) for v in vehicles if (p := pose(v, f)) is not None]
        for v, p in here:
            x, y, w, h = plate_box(v, p)
            bottom = HEIGHT if p.clip_y is None else p.clip_y - 1
            if x + w <= 0 or x >= WIDTH or y >= bottom:
                continue  # no part in view
            inside = x >= 0 and y >= 0 and x + w <= WIDTH and y + h <= bottom
            if inside and not any(o.s > p.s and hides(u, o, (x, y, w, h)) for u, o in here if u is not v):
                full[v.vid].append([f, x, y, w, h])
            else:
                partial[v.vid].append([f, x, y, w, h])
    return frames, full, partial


def ground_truth(vehicles: list[Vehicle], seed: int) -> dict[str, object]:
    frames, boxes, partial = plan(vehicles)
    out = []
    for v in vehicles:
        b = boxes[v.vid]
        out.append(
            {
                "id": v.vid,
                "plate": v.plate.text,
                "shown": v.plate.shown,
                "region": v.plate.region,
                "layout": v.plate.layout,
                "direction": v.direction,
                "first_frame": b[0][0] if b else None,
                "last_frame": b[-1][0] if b else None,
                "frames_visible": len(b),
                "plate_width_px": [min(r[3] for r in b), max(r[3] for r in b)] if b else None,
                "boxes": b,
                "partly_visible": partial[v.vid],
            }
        )
    return {
        "video": VIDEO_NAME,
        "codec": FOURCC,
        "fps": FPS,
        "frames": frames,
        "width": WIDTH,
        "height": HEIGHT,
        "seed": seed,
        "generator": "scripts/make_sample_video.py",
        "boxes": "[frame, x, y, w, h] per frame in which the plate is fully visible (outer edge of the plate)",
        "partly_visible": "[frame, x, y, w, h] of the whole plate in frames where only part of it is in view",
        "vehicles": out,
    }


# ---------------------------------------------------------------- plates with a given text


def render_plate(p: PlateSpec, font: str, rng: np.random.Generator) -> np.ndarray:
    """The plate as a BGR image, in the layouts of synth.render_us / render_eu / render_br but with a given
    text and the legible choices (dark on light, no stickers over the text)."""
    if p.layout == "us":
        w, h = 360, 180
        img = Image.new("RGB", (w, h), (244, 242, 234))
        arr = np.array(img).astype(np.float32)
        arr += np.linspace(6, -18, h)[:, None, None]  # a faint gradient, as on many state designs
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        fg = (20, 30, 105) if p.detail != "TEXAS" else (20, 20, 20)
        state_colour = (170, 30, 30) if p.detail == "CALIFORNIA" else fg
        _draw_text_fit(d, (60, 8, w - 60, 40), p.detail, FONT_FILES[2], state_colour, rng)
        slogan = US_SLOGANS.get(p.detail, "")
        if slogan:
            _draw_text_fit(d, (70, h - 30, w - 70, h - 10), slogan, SMALL_FONT, state_colour, rng)
        _draw_text_fit(d, (22, 50, w - 22, h - 36), p.shown, font, fg, rng)
        d.rectangle((2, 2, w - 3, h - 3), outline=fg, width=4)
        for bx in (70, w - 80):
            d.ellipse((bx, 16, bx + 10, 26), fill=(150, 150, 150))
    elif p.layout == "eu":
        w, h = 520, 112
        img = Image.new("RGB", (w, h), (246, 246, 242))
        d = ImageDraw.Draw(img)
        strip = 46
        d.rectangle((0, 0, strip, h), fill=(0, 51, 170))
        for a in range(12):
            ang = a / 12 * 2 * np.pi
            cx, cy = strip / 2 + 12 * np.cos(ang), 32 + 12 * np.sin(ang)
            d.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(255, 204, 0))
        _draw_text_fit(d, (6, 64, strip - 6, 98), p.detail, SMALL_FONT, (255, 255, 255), rng)
        _draw_text_fit(d, (strip + 12, 12, w - 12, h - 12), p.shown, font, (15, 15, 15), rng)
        d.rectangle((1, 1, w - 2, h - 2), outline=(15, 15, 15), width=3)
    elif p.layout == "br-mercosur":
        w, h = 400, 130
        img = Image.new("RGB", (w, h), (245, 245, 245))
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, w, 26), fill=(0, 40, 160))
        _draw_text_fit(d, (150, 3, 250, 23), "BRASIL", SMALL_FONT, (255, 255, 255), rng)
        _draw_text_fit(d, (14, 34, w - 14, h - 10), p.shown, font, (0, 0, 0), rng)
        d.rectangle((1, 1, w - 2, h - 2), outline=(0, 0, 0), width=3)
    elif p.layout == "br-old":
        w, h = 400, 130
        img = Image.new("RGB", (w, h), (205, 205, 200))
        d = ImageDraw.Draw(img)
        fg = (20, 20, 20)
        _draw_text_fit(d, (90, 6, w - 90, 28), p.detail, SMALL_FONT, fg, rng)
        _draw_text_fit(d, (14, 34, w - 14, h - 10), p.shown, font, fg, rng)
        d.rectangle((2, 2, w - 3, h - 3), outline=fg, width=4)
    else:
        raise ValueError(f"unknown plate layout {p.layout!r}")
    return np.array(img)[:, :, ::-1].copy()


# ---------------------------------------------------------------- drawing


def _aa(dist_px: np.ndarray) -> np.ndarray:
    """Coverage of a pixel whose centre is ``dist_px`` outside an edge (negative: inside)."""
    return np.clip(0.5 - dist_px, 0.0, 1.0)


def make_background(rng: np.random.Generator) -> np.ndarray:
    """Sky, buildings and trees behind the crest; the road, its markings and pavements in front (float BGR)."""
    H, W = HEIGHT, WIDTH
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    img = np.zeros((H, W, 3), np.float32)
    # sky and a few soft clouds
    t = np.clip(ys / CREST_Y, 0, 1)[:, :, None]
    img[:] = (1 - t) * np.float32([225, 175, 120]) + t * np.float32([235, 222, 205])
    clouds = np.zeros((H, W), np.float32)
    for _ in range(7):
        c = (int(rng.integers(0, W)), int(rng.integers(10, 140)))
        cv2.ellipse(clouds, c, (int(rng.integers(60, 180)), int(rng.integers(14, 34))), 0, 0, 360, 1.0, -1)
    clouds = cv2.GaussianBlur(clouds, (0, 0), 18)
    img += clouds[:, :, None] * np.float32([30, 40, 50])
    # buildings along the far side of the crest
    x = -int(rng.integers(0, 60))
    while x < W:
        bw = int(rng.integers(90, 230))
        top = int(rng.integers(40, int(CREST_Y) - 90))
        base = np.float32(rng.integers(130, 200)) + np.float32(rng.integers(-12, 13, 3))
        base[2] += 12  # warm, muted facades
        x0, x1 = max(0, x), min(W, x + bw)
        shade = np.linspace(1.05, 0.85, max(1, x1 - x0), dtype=np.float32)[None, :, None]
        img[top : int(CREST_Y) + 1, x0:x1] = base * shade
        img[top : top + 6, x0:x1] *= 0.8  # cornice
        # windows reflect the sky: low contrast, so that the facades do not look like rows of characters
        win = 0.55 * base + 0.45 * np.float32([165, 150, 130])
        wy = int(rng.integers(18, 28))
        ribbon = rng.random() < 0.5
        wx = x1 - x0 - 20 if ribbon else int(rng.integers(26, 40))
        for yy in range(top + 16, int(CREST_Y) - 18, wy + 14):
            for xx in range(x0 + 10, x1 - wx - 6 + 1, wx + 16):
                img[yy : yy + wy, xx : xx + wx] = win * np.float32(rng.uniform(0.92, 1.08))
        x += bw + int(rng.integers(0, 20))
    # trees and hedges in front of the buildings
    trees = np.zeros((H, W), np.float32)
    for _ in range(16):
        c = (int(rng.integers(0, W)), int(CREST_Y - rng.integers(10, 70)))
        cv2.circle(trees, c, int(rng.integers(25, 60)), 1.0, -1)
    trees = cv2.GaussianBlur(trees, (0, 0), 3)
    tree_tex = cv2.resize(rng.normal(0, 1, (H // 6, W // 6)).astype(np.float32), (W, H))
    tree_col = np.float32([45, 95, 60])[None, None, :] * (1 + 0.15 * tree_tex[:, :, None])
    m = np.clip(trees, 0, 1)[:, :, None]
    img = img * (1 - m) + tree_col * m
    img = cv2.GaussianBlur(img, (0, 0), FAR_BLUR)  # beyond the crest: out of the camera's focus
    # the road in front of the crest
    s = np.maximum((ys - VP_Y) / GROUND, 1.0)
    X = (xs - VP_X) / s
    dist = FOCAL / s
    road = np.float32([92, 93, 96])
    grain = (
        cv2.resize(rng.normal(0, 1, (H // 6, W // 6)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC) * 3.5
    )
    patches = cv2.GaussianBlur(rng.normal(0, 1, (H // 16, W // 16)).astype(np.float32), (0, 0), 1.0)
    patches = cv2.resize(patches, (W, H)) * 7
    ground = np.empty((H, W, 3), np.float32)
    ground[:] = road
    ground += (grain + patches)[:, :, None]
    for lane in LANE_X.values():  # darker tyre tracks
        for off in (-0.75, 0.75):
            ground *= (1 - 0.08 * np.exp(-(((X - lane - off) / 0.35) ** 2)))[:, :, None]
    pavement = np.float32([160, 165, 168]) + grain[:, :, None] * 1.5
    outside = np.clip(np.maximum(LEFT_EDGE_X - 0.35 - X, X - RIGHT_EDGE_X - 0.35) * s + 0.5, 0, 1)[:, :, None]
    ground = ground * (1 - outside) + pavement * outside
    curb = _aa((np.abs(X - (LEFT_EDGE_X - 0.38)) - 0.05) * s) + _aa((np.abs(X - (RIGHT_EDGE_X + 0.38)) - 0.05) * s)
    ground = ground * (1 - 0.35 * curb[:, :, None])
    paint = np.float32([225, 228, 230])
    lines = _aa((np.abs(X - LEFT_EDGE_X) - 0.07) * s) + _aa((np.abs(X - RIGHT_EDGE_X) - 0.07) * s)
    dashes = _aa((np.abs(X - CENTRE_LINE_X) - 0.06) * s) * ((dist % 9.0) < 3.0)
    lines = np.clip(lines + dashes, 0, 1)[:, :, None] * 0.85
    ground = ground * (1 - lines) + paint * lines
    below = _aa(CREST_Y - ys)[:, :, None]  # 1 below the crest line
    img = img * (1 - below) + ground * below
    return img + rng.normal(0, FINE_NOISE, img.shape).astype(np.float32)  # fixed sensor pattern


def make_shade() -> np.ndarray:
    """A building's shadow across the near road and a slight vignette: multiplies everything, cars included."""
    H, W = HEIGHT, WIDTH
    m = np.zeros((H, W), np.float32)
    cv2.fillPoly(m, [np.int32([[0, 470], [360, 430], [760, 720], [0, 720]])], 1.0)
    m = cv2.GaussianBlur(m, (0, 0), 22)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    vig = 1 - 0.10 * (((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2) / 2
    return (1 - 0.32 * m) * vig


class Layer:
    """A vehicle drawn on its own premultiplied colour + alpha canvas, so it can be motion-blurred and clipped."""

    def __init__(self, x0: int, y0: int, w: int, h: int) -> None:
        self.x0, self.y0 = x0, y0
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros((h, w), np.float32)

    def _mask(self, draw: object) -> tuple[np.ndarray, tuple[slice, slice]] | None:
        m = np.zeros(self.alpha.shape, np.uint8)
        draw(m)  # type: ignore[operator]
        nz = cv2.findNonZero(m)
        if nz is None:
            return None
        x, y, w, h = cv2.boundingRect(nz)
        sl = (slice(y, y + h), slice(x, x + w))
        return m[sl].astype(np.float32) / 255, sl

    def poly(self, pts: list[tuple[float, float]], colour: object, opacity: float = 1.0) -> None:
        """Fill a polygon given in frame pixels; ``colour`` is BGR or (top BGR, bottom BGR, y_top, y_bottom)."""
        p = np.int32([[(x - self.x0) * 16, (y - self.y0) * 16] for x, y in pts])
        self._fill(lambda m: cv2.fillPoly(m, [p], 255, cv2.LINE_AA, shift=4), colour, opacity)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, colour: object, opacity: float = 1.0) -> None:
        c = (int(round((cx - self.x0) * 16)), int(round((cy - self.y0) * 16)))
        a = (max(1, int(round(ax * 16))), max(1, int(round(ay * 16))))
        self._fill(lambda m: cv2.ellipse(m, c, a, 0, 0, 360, 255, -1, cv2.LINE_AA, shift=4), colour, opacity)

    def _fill(self, draw: object, colour: object, opacity: float) -> None:
        got = self._mask(draw)
        if got is None:
            return
        m, sl = got
        m = m * opacity
        if isinstance(colour, tuple) and len(colour) == 4:
            top, bottom, ya, yb = colour
            rows = np.arange(sl[0].start, sl[0].stop, dtype=np.float32) + self.y0
            t = np.clip((rows - ya) / max(1.0, yb - ya), 0, 1)[:, None, None]
            col = (1 - t) * np.float32(top) + t * np.float32(bottom)
        else:
            col = np.float32(colour)[None, None, :]
        self.rgb[sl] = self.rgb[sl] * (1 - m[:, :, None]) + col * m[:, :, None]
        self.alpha[sl] = self.alpha[sl] * (1 - m) + m

    def paste(self, img: np.ndarray, x: int, y: int) -> None:
        """Copy an image in at frame position (x, y), clipped to the canvas."""
        H, W = self.alpha.shape
        h, w = img.shape[:2]
        ax, ay = x - self.x0, y - self.y0
        cx0, cy0, cx1, cy1 = max(0, ax), max(0, ay), min(W, ax + w), min(H, ay + h)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        self.rgb[cy0:cy1, cx0:cx1] = img[cy0 - ay : cy1 - ay, cx0 - ax : cx1 - ax]
        self.alpha[cy0:cy1, cx0:cx1] = 1.0


def _shade(c: tuple[int, int, int], f: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, v * f)) for v in c)  # type: ignore[return-value]


def draw_vehicle(layer: Layer, v: Vehicle, p: Pose, plate_img: np.ndarray, box: tuple[int, int, int, int]) -> None:
    b = BODIES[v.body]
    s, gx, gy = p.s, p.gx, p.gy
    c = v.colour
    front = v.direction == "approaching"

    def fx(m: float) -> float:
        return gx + m * s

    def fy(m: float) -> float:
        return gy - m * s

    half = b.width / 2
    # tyres
    for side in (-1, 1):
        layer.poly(
            [
                (fx(side * 0.58), fy(0.34)),
                (fx(side * 0.84), fy(0.34)),
                (fx(side * 0.84), fy(0.0)),
                (fx(side * 0.58), fy(0.0)),
            ],
            (22, 22, 24),
        )
    # body: lower, darker at the bottom, with the light from the sky on top
    layer.poly(
        [
            (fx(-half), fy(b.clearance)),
            (fx(half), fy(b.clearance)),
            (fx(half - 0.02), fy(b.belt - 0.06)),
            (fx(half - 0.1), fy(b.belt)),
            (fx(-half + 0.1), fy(b.belt)),
            (fx(-half + 0.02), fy(b.belt - 0.06)),
        ],
        (_shade(c, 1.12), _shade(c, 0.62), fy(b.belt), fy(b.clearance)),
    )
    # mirrors
    for side in (-1, 1):
        layer.poly(
            [
                (fx(side * (half - 0.08)), fy(b.belt + 0.04)),
                (fx(side * (half + 0.12)), fy(b.belt + 0.08)),
                (fx(side * (half + 0.12)), fy(b.belt + 0.2)),
                (fx(side * (half - 0.08)), fy(b.belt + 0.2)),
            ],
            _shade(c, 0.8),
        )
    # cabin (pillars in body colour) and the glass
    rw = b.roof_width / 2
    layer.poly(
        [(fx(-half + 0.12), fy(b.belt)), (fx(half - 0.12), fy(b.belt)), (fx(rw), fy(b.roof)), (fx(-rw), fy(b.roof))],
        (_shade(c, 1.05), _shade(c, 0.9), fy(b.roof), fy(b.belt)),
    )
    layer.poly(
        [
            (fx(-half + 0.22), fy(b.belt + 0.04)),
            (fx(half - 0.22), fy(b.belt + 0.04)),
            (fx(rw - 0.07), fy(b.roof - 0.06)),
            (fx(-rw + 0.07), fy(b.roof - 0.06)),
        ],
        ((95, 85, 75), (40, 36, 34), fy(b.roof), fy(b.belt)),
    )
    layer.poly(
        [
            (fx(-0.2), fy(b.belt + 0.04)),
            (fx(0.15), fy(b.belt + 0.04)),
            (fx(0.45), fy(b.roof - 0.06)),
            (fx(0.15), fy(b.roof - 0.06)),
        ],
        (200, 200, 205),
        0.18,
    )  # a reflection across the glass
    # bumper, lights, grille or boot line
    layer.poly(
        [
            (fx(-half + 0.02), fy(b.clearance + 0.16)),
            (fx(half - 0.02), fy(b.clearance + 0.16)),
            (fx(half), fy(b.clearance)),
            (fx(-half), fy(b.clearance)),
        ],
        (38, 38, 40),
    )
    ly = b.belt - 0.2
    for side in (-1, 1):
        x_in, x_out = side * 0.48, side * (half - 0.06)
        lamp = (215, 225, 230) if front else (30, 30, 185)
        layer.poly(
            [
                (fx(x_in), fy(ly + 0.1)),
                (fx(x_out), fy(ly + 0.13)),
                (fx(x_out), fy(ly - 0.05)),
                (fx(x_in), fy(ly - 0.07)),
            ],
            lamp,
        )
        layer.ellipse(fx(side * 0.68), fy(ly + 0.03), 0.07 * s, 0.05 * s, (250, 252, 255) if front else (70, 70, 240))
        layer.poly(
            [
                (fx(x_out - side * 0.1), fy(ly - 0.05)),
                (fx(x_out), fy(ly - 0.05)),
                (fx(x_out), fy(ly - 0.11)),
                (fx(x_out - side * 0.1), fy(ly - 0.11)),
            ],
            (0, 140, 240),
        )  # indicator
    if front:
        layer.poly(
            [(fx(-0.4), fy(ly + 0.08)), (fx(0.4), fy(ly + 0.08)), (fx(0.36), fy(ly - 0.1)), (fx(-0.36), fy(ly - 0.1))],
            ((60, 60, 62), (20, 20, 22), fy(ly + 0.08), fy(ly - 0.1)),
        )
    else:
        layer.poly(
            [
                (fx(-half + 0.1), fy(b.belt - 0.015)),
                (fx(half - 0.1), fy(b.belt - 0.015)),
                (fx(half - 0.1), fy(b.belt - 0.035)),
                (fx(-half + 0.1), fy(b.belt - 0.035)),
            ],
            _shade(c, 0.5),
        )
    # the plate in a dark recess
    x, y, w, h = box
    m = max(2.0, 0.025 * s)
    layer.poly([(x - m, y - m), (x + w + m, y - m), (x + w + m, y + h + m), (x - m, y + h + m)], (30, 30, 32))
    layer.paste(cv2.resize(plate_img, (w, h), interpolation=cv2.INTER_AREA), x, y)


def _motion_kernel(dx: float, dy: float) -> np.ndarray | None:
    length = math.hypot(dx, dy) * EXPOSURE
    if length < 1.5:
        return None
    k = int(math.ceil(length)) | 1
    kern = np.zeros((k, k), np.float32)
    c = k // 2
    ux, uy = dx / math.hypot(dx, dy), dy / math.hypot(dx, dy)
    for t in np.linspace(-length / 2, length / 2, 4 * k):
        kern[int(round(c + t * uy)), int(round(c + t * ux))] = 1
    return kern / kern.sum()


def render_frame(
    f: int,
    bg: np.ndarray,
    shade: np.ndarray,
    vehicles: list[Vehicle],
    plates: dict[str, np.ndarray],
) -> np.ndarray:
    frame = bg.copy()
    here = sorted(((v, p) for v in vehicles if (p := pose(v, f)) is not None), key=lambda vp: vp[1].s)
    for v, p in here:
        box = plate_box(v, p)
        x0, y0, x1, _ = body_box(v, p)
        pad = 24
        # the layer: the car's outline and shadow within the frame, plus a margin for the blur
        bx0, by0 = max(-pad, int(x0) - pad), max(-pad, int(y0) - pad)
        bx1, by1 = min(WIDTH + pad, int(x1) + pad), min(HEIGHT + pad, int(p.gy + 0.1 * p.s) + pad)
        lx0, ly0, lx1, ly1 = max(0, bx0), max(0, by0), min(WIDTH, bx1), min(HEIGHT, by1)
        if lx1 <= lx0 or ly1 <= ly0:
            continue
        layer = Layer(bx0, by0, bx1 - bx0, by1 - by0)
        draw_vehicle(layer, v, p, plates[v.vid], box)
        nxt = pose(v, f + 1) or p
        lift = BODIES[v.body].plate_h
        kern = _motion_kernel(nxt.gx - p.gx, (nxt.gy - lift * nxt.s) - (p.gy - lift * p.s))
        if kern is not None:
            layer.rgb = cv2.filter2D(layer.rgb, -1, kern)
            layer.alpha = cv2.filter2D(layer.alpha, -1, kern)
        sy, sx = slice(ly0 - by0, ly1 - by0), slice(lx0 - bx0, lx1 - bx0)
        rgb, alpha = layer.rgb[sy, sx], layer.alpha[sy, sx]
        # the car's shadow on the road
        sh = np.zeros((ly1 - ly0, lx1 - lx0), np.float32)
        axes = (int(BODIES[v.body].width * 0.6 * p.s), int(0.1 * p.s) + 1)
        cv2.ellipse(sh, (int(p.gx - lx0), int(p.gy - ly0)), axes, 0, 0, 360, 1.0, -1)
        sh = cv2.GaussianBlur(sh, (0, 0), max(1.0, 0.04 * p.s))
        if p.clip_y is not None:  # behind the crest: only what is above it shows
            cut = max(0, int(math.ceil(p.clip_y)) - ly0)
            rgb, alpha = rgb.copy(), alpha.copy()
            rgb[cut:], alpha[cut:], sh[cut:] = 0, 0, 0
        region = frame[ly0:ly1, lx0:lx1]
        region *= (1 - 0.55 * sh)[:, :, None]
        region[:] = region * (1 - alpha[:, :, None]) + rgb
    frame = cv2.GaussianBlur(frame, (0, 0), LENS_BLUR) * (shade * light(f))[:, :, None]
    out = np.clip(frame, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(
        ".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )  # JPEG-like artefacts, as from an IP camera
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)


def light(f: int) -> float:
    """Overall brightness in frame ``f``: 1, less while a cloud passes (raised-cosine dips).

    It changes in steps every KEY_INTERVAL frames, as a camera's auto-exposure does, on the frames that the
    encoder stores whole anyway: a change in every frame would double the file size.
    """
    f -= f % KEY_INTERVAL
    g = 1.0
    for a, b, depth in CLOUDS:
        if a <= f <= b:
            g -= depth * 0.5 * (1 - math.cos(2 * math.pi * (f - a) / (b - a)))
    return g


def write_video(path: Path, vehicles: list[Vehicle], frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 1000)
    bg = make_background(rng)
    shade = make_shade()
    plates = {v.vid: render_plate(v.plate, v.font, np.random.default_rng([seed, i])) for i, v in enumerate(vehicles)}
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {FOURCC} video to {tmp} (no FFMPEG backend?)")
    try:
        for f in range(frames):
            writer.write(render_frame(f, bg, shade, vehicles, plates))
    finally:
        writer.release()
    tmp.replace(path)


# ---------------------------------------------------------------- summary and verification


def dump_json(gt: dict[str, object]) -> str:
    """Indented JSON with each box (a list of numbers) on one line."""

    def one_line(m: re.Match[str]) -> str:
        return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"

    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", one_line, json.dumps(gt, indent=1)) + "\n"


def print_summary(gt: dict[str, object]) -> None:
    vs = gt["vehicles"]
    assert isinstance(vs, list)
    print(f"{gt['video']}: {gt['width']}x{gt['height']}, {gt['fps']} fps, {gt['frames']} frames")
    print(f"{'id':4} {'plate':8} {'region':6} {'direction':11} {'first':>5} {'last':>5} {'visible':>7} {'width px':>9}")
    for v in vs:
        w = v["plate_width_px"] or [0, 0]
        print(
            f"{v['id']:4} {v['plate']:8} {v['region']:6} {v['direction']:11} {v['first_frame']!s:>5} "
            f"{v['last_frame']!s:>5} {v['frames_visible']:>7} {w[0]:>4}-{w[1]:<4}"
        )


def covered(a: tuple[int, int, int, int] | list[int], b: tuple[int, int, int, int] | list[int]) -> float:
    """The fraction of box ``a`` (x, y, w, h) that lies inside box ``b``."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / max(1, a[2] * a[3])


def verify(out: Path, gt: dict[str, object], regions: tuple[str, ...], threads: int) -> bool:
    """Run the real recogniser and tracker over the decoded video; True when every plate passes."""
    from edge.capture.frame import Frame
    from edge.vision.detector import iou
    from edge.vision.recognizer import Recognizer
    from edge.vision.tracker import Tracker, TrackerSettings

    rec = Recognizer.from_files(
        REPO / "models" / "plate_detector.tflite", REPO / "models" / "plate_ocr.tflite", regions, threads=threads
    )
    gts = {v["id"]: v for v in gt["vehicles"]}  # type: ignore[attr-defined]
    by_frame: dict[int, list[tuple[str, str, list[int]]]] = {}  # fully visible plates
    in_view: dict[int, list[list[int]]] = {}  # and partly visible ones
    for v in gts.values():
        for f, *b in v["boxes"]:
            by_frame.setdefault(f, []).append((v["id"], v["plate"], b))
        for f, *b in v["boxes"] + v["partly_visible"]:
            in_view.setdefault(f, []).append(b)
    stats = {vid: {"visible": 0, "detected": 0, "exact": 0} for vid in gts}
    others: list[tuple[int, str, float]] = []
    tracker = Tracker(TrackerSettings())
    passes = []
    cap = cv2.VideoCapture(str(out / str(gt["video"])), cv2.CAP_FFMPEG)
    t0, n = time.perf_counter(), 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        dets = rec.detector.detect(img)
        reads = rec.read_detections(img, dets)
        for vid, text, b in by_frame.get(n, []):
            st = stats[vid]
            st["visible"] += 1
            st["detected"] += any(iou(d.box, b) > 0.4 for d in dets)
            st["exact"] += any(iou(r.box, b) > 0.4 and r.text == text for r in reads)
        # a read that is not mostly on a plate in the frame (partly hidden plates included) is "other text"
        for r in reads:
            if all(covered(r.box, b) < 0.5 for b in in_view.get(n, [])):
                others.append((n, r.text, r.confidence))
        passes += tracker.update(Frame("sample", img, 1.7e9 + n / FPS, n / FPS, n), reads)
        n += 1
    passes += tracker.flush()
    cap.release()
    ms = (time.perf_counter() - t0) * 1000 / max(1, n)
    print(f"\nverify: {n} frames decoded ({ms:.1f} ms per frame with {threads} thread(s)), regions {regions or 'none'}")
    print(f"{'id':4} {'plate':8} {'visible':>7} {'detected':>8} {'exact':>5} {'exact %':>7}  tracker reads")
    good = n == gt["frames"]
    for vid, st in stats.items():
        text = gts[vid]["plate"]
        mine = [r.text for r in passes if r.text == text]
        pct = 100 * st["exact"] / max(1, st["visible"])
        ok = pct >= 30 and len(mine) == 1
        good &= ok
        print(
            f"{vid:4} {text:8} {st['visible']:>7} {st['detected']:>8} {st['exact']:>5} {pct:>6.1f}%  "
            f"{len(mine)}{'' if ok else '  <-- FAIL'}"
        )
    texts = {v["plate"] for v in gts.values()}
    extra = [r for r in passes if r.text not in texts]
    hi = [o for o in others if o[2] >= 0.5]
    print(
        f"other reads (not on a plate): {len(others)}, of which confidence >= 0.5: {len(hi)} "
        f"{[(f, t, round(c, 2)) for f, t, c in hi[:10]]}"
    )
    print(
        f"tracker: {len(passes)} reads, {len(extra)} not matching a plate: "
        f"{[(r.text, round(r.confidence, 2), r.frames_seen) for r in extra]}"
    )
    return bool(good and not hi)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=REPO / "firmware_config" / "sample", help="output folder")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1: the committed footage)")
    ap.add_argument("--json-only", action="store_true", help="write plates.json only, not the video")
    ap.add_argument("--verify", action="store_true", help="run the real recogniser on the written video")
    ap.add_argument(
        "--no-render",
        action="store_true",
        help="with --verify: check the video and plates.json already in --out, write nothing",
    )
    ap.add_argument("--regions", default="us,eu,br", help="plate formats for --verify (as in firmware_config)")
    ap.add_argument("--threads", type=int, default=1, help="recogniser threads for --verify")
    a = ap.parse_args(argv)
    vehicles = make_vehicles(a.seed)
    if a.no_render:
        gt = json.loads((a.out / "plates.json").read_text())
    else:
        gt = ground_truth(vehicles, a.seed)
        a.out.mkdir(parents=True, exist_ok=True)
        if not a.json_only:
            t = time.perf_counter()
            write_video(a.out / VIDEO_NAME, vehicles, int(gt["frames"]), a.seed)  # type: ignore[call-overload]
            size = (a.out / VIDEO_NAME).stat().st_size
            print(f"wrote {a.out / VIDEO_NAME}: {size / 1e6:.2f} MB in {time.perf_counter() - t:.0f} s")
        (a.out / "plates.json").write_text(dump_json(gt))
    print_summary(gt)
    if a.verify:
        regions = tuple(r for r in a.regions.split(",") if r)
        return 0 if verify(a.out, gt, regions, a.threads) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
