"""Decoding untrusted image bytes into BGR frames, with the size checked before any pixel is decoded."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS = 50_000_000  # 8K video is 33 MP; anything larger is refused rather than decoded
MAX_FILE_BYTES = 64 * 1024 * 1024
MIN_SIDE = 8


class ImageError(ValueError):
    """An input image is unreadable, of an unsupported kind, or outside the accepted sizes."""


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError("corrupt JPEG: marker expected")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise ImageError("corrupt JPEG: bad segment length")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    raise ImageError("truncated JPEG: no frame header")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of a JPEG, PNG or BMP, without decoding pixels."""
    if data[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" not in data[-4096:]:
            raise ImageError("truncated JPEG: no end-of-image marker")
        return _jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("truncated PNG: no IHDR header")
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:2] == b"BM":
        if len(data) < 26:
            raise ImageError("truncated BMP header")
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    raise ImageError("not a JPEG, PNG or BMP image")


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to a BGR uint8 array, refusing empty, huge, tiny or corrupt images."""
    if not data:
        raise ImageError("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"file too large ({len(data)} bytes > {MAX_FILE_BYTES})")
    w, h = image_size(data)
    if w * h > max_pixels:
        raise ImageError(f"image too large: {w}x{h} pixels (limit {max_pixels})")
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageError(f"image too small: {w}x{h} pixels (minimum {MIN_SIDE}x{MIN_SIDE})")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError("corrupt or truncated image data")
    if img.shape[1] != w or img.shape[0] != h:
        raise ImageError(f"decoded size {img.shape[1]}x{img.shape[0]} differs from header {w}x{h}")
    return np.ascontiguousarray(img)


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file (see :func:`decode_image`)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"file too large ({size} bytes > {MAX_FILE_BYTES})")
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read file: {e.strerror or e}") from e
    return decode_image(data, max_pixels=max_pixels)
