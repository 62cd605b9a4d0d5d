"""Shared fixtures: the committed models, real images from ../shared/data read in place, and synthetic plates."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from edge.vision.recognizer import Recognizer

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SHARED = (REPO / ".." / "shared" / "data").resolve()
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


@pytest.fixture(scope="session")
def models() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    return Recognizer.from_files(MODELS / "plate_detector.tflite", MODELS / "plate_ocr.tflite", threads=2)


def render_plate(text: str, size: tuple[int, int] = (240, 60), shown: str | None = None) -> np.ndarray:
    """A clean single-line plate: dark characters on a light plate with a border (BGR)."""
    w, h = size
    img = Image.new("RGB", (w, h), (235, 235, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((1, 1, w - 2, h - 2), outline=(20, 20, 20), width=3)
    label = shown or text
    fsize = int(h * 0.75)
    font = ImageFont.truetype(FONT, fsize)
    while d.textlength(label, font=font) > w - 24 and fsize > 8:
        fsize -= 2
        font = ImageFont.truetype(FONT, fsize)
    tw = d.textlength(label, font=font)
    bbox = font.getbbox("A")
    d.text(((w - tw) / 2, (h - (bbox[3] - bbox[1])) / 2 - bbox[1]), label, font=font, fill=(15, 15, 15))
    return cv2.cvtColor(np.array(img), cv2.COLOR_RGB2BGR)


def scene_with_plate(text: str, frame: tuple[int, int] = (1280, 720), at: tuple[int, int] = (560, 420),
                     plate_size: tuple[int, int] = (160, 40)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 1280x720 synthetic frame: a grey car-like block with the plate pasted on it; returns frame and box."""
    fw, fh = frame
    rng = np.random.default_rng(7)
    img = np.clip(rng.normal(110, 18, (fh, fw, 3)), 0, 255).astype(np.uint8)
    x, y = at
    pw, ph = plate_size
    cv2.rectangle(img, (x - 200, y - 160), (x + pw + 200, y + ph + 60), (60, 40, 30), -1)  # car body
    img[y : y + ph, x : x + pw] = cv2.resize(render_plate(text), (pw, ph), interpolation=cv2.INTER_AREA)
    return img, (x, y, pw, ph)
