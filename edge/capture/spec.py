"""What one camera is: the settings the daemon's configuration builds for each capture source (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CameraKind = Literal["picamera2", "device", "url", "file", "folder"]

#: The allowed values of :attr:`CameraSpec.kind` (the configuration loader checks against this).
CAMERA_KINDS: tuple[str, ...] = ("picamera2", "device", "url", "file", "folder")

#: Kinds replayed from storage: paced at ``fps`` and able to end (live kinds are paced by the camera).
RECORDED_KINDS: tuple[str, ...] = ("file", "folder")

Point = tuple[float, float]
Polygon = tuple[Point, ...]


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the unit. Validated by the configuration loader, not here.

    ``uri`` is a device index (as a string), an RTSP/HTTP URL, a video file or an image folder; unused for
    picamera2 (where a digit string, if given, picks the camera number). ``zones`` are polygons in normalised
    0..1 frame coordinates; empty means the whole frame is read.
    """

    id: str
    name: str
    kind: CameraKind
    uri: str = ""
    fps: float | None = None  # pacing for file/folder (None: a file's own rate, a folder unpaced); asked of devices
    loop: bool = False  # file/folder: start again at the end instead of finishing
    width: int | None = None  # requested capture size (devices and picamera2)
    height: int | None = None
    zones: tuple[Polygon, ...] = ()
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def recorded(self) -> bool:
        """True for file and folder sources, which are paced by us and may end."""
        return self.kind in RECORDED_KINDS
