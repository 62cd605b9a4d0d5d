"""The frame that every capture source produces: pixels plus where and when they were taken."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image. ``wall_time`` is UTC (epoch seconds) for records; ``mono_time`` is for intervals."""

    camera_id: str
    image: np.ndarray  # BGR uint8, HxWx3; pixels outside the camera's capture zones are already blanked
    wall_time: float  # time.time() at capture
    mono_time: float  # time.monotonic() at capture
    seq: int  # per-camera counter from 0, restarted never (a reconnect keeps counting)
