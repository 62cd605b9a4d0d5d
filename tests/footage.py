"""Synthetic footage for daemon tests: a folder of 1280x720 frames where each plate passes for a few frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.access.audit import create_signing_key

from .conftest import scene_with_plate


def write_passes(folder: Path, texts: list[str], frames_per_plate: int = 4, gap_frames: int = 3) -> None:
    """Each plate moves across ``frames_per_plate`` frames, then ``gap_frames`` empty road frames follow."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    empty = np.clip(rng.normal(110, 18, (720, 1280, 3)), 0, 255).astype(np.uint8)
    n = 0
    for text in texts:
        for i in range(frames_per_plate):
            img, _ = scene_with_plate(text, at=(400 + 40 * i, 420 - 5 * i))
            cv2.imwrite(str(folder / f"{n:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            n += 1
        for _ in range(gap_frames):
            cv2.imwrite(str(folder / f"{n:05d}.jpg"), empty, [cv2.IMWRITE_JPEG_QUALITY, 90])
            n += 1


def daemon_config(
    tmp: Path,
    frames: Path,
    *,
    loop: bool = False,
    fps: float = 25,
    extra: str = "",
    gps: str = "",
    cameras: str = "",
    alerts: str = "[alerts]\npage = false\n",
) -> Path:
    """A config for a test unit under ``tmp`` (data and key in tmp/data)."""
    gps = gps or '[gps]\nmode = "fixed"\nlat = 45.5231\nlon = -122.6765\n'
    text = f"""
[unit]
id = "test-unit"
data_dir = "{tmp / "data"}"
[store]
key_file = "{tmp / "data" / "db.key"}"
audit_key_file = "{tmp / "data" / "audit.key"}"
min_free_mb = 1
scene_min_free_mb = 1
{gps}
[pipeline]
track_gap_s = 0.1
status_interval_s = 1
{extra}
{alerts}
[[camera]]
id = "front"
kind = "folder"
uri = "{frames}"
fps = {fps}
loop = {"true" if loop else "false"}
{cameras}
"""
    p = tmp / "edge.toml"
    p.write_text(text)
    if not (tmp / "data" / "audit.key").exists():  # the access record's signing key, as `keys init` makes it
        create_signing_key(tmp / "data" / "audit.key")
    return p
