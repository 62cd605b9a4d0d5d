"""Untrusted image bytes: every bad input is refused with a clear error before pixels are decoded."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.vision.image import ImageError, decode_image, image_size, read_image


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    ok, enc = cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return enc.tobytes()


def test_good_jpeg_and_png_decode() -> None:
    img = decode_image(_jpeg(64, 48))
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    _ok, png = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))
    assert decode_image(png.tobytes()).shape == (20, 30, 3)
    assert image_size(_jpeg(100, 50)) == (100, 50)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(p)


def test_truncated_jpeg() -> None:
    data = _jpeg(640, 480)
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(data[: len(data) // 2])


def test_one_pixel_image() -> None:
    _ok, png = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="too small: 1x1"):
        decode_image(png.tobytes())


def test_huge_header_refused_without_decoding() -> None:
    # 20000 x 20000 declared in the header: refused from the header alone (decoding would need 1.2 GB)
    with pytest.raises(ImageError, match="too large: 20000x20000"):
        decode_image(_png_header(20000, 20000) + b"\x00" * 64)


def test_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("plate list, not a picture\n")
    with pytest.raises(ImageError, match="not a JPEG, PNG or BMP"):
        read_image(p)


def test_corrupt_png_body() -> None:
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(_png_header(64, 64) + b"\x00" * 100)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read file"):
        read_image(tmp_path / "nope.jpg")
