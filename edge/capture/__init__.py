"""Capture: camera sources behind one protocol, capture zones, and one reconnecting thread per camera."""

from .frame import Frame
from .picamera import PiCameraSource
from .sources import FrameSource, ImageFolderSource, OpenCVSource, SourceError, open_source, redact_uri
from .spec import CAMERA_KINDS, CameraSpec
from .stream import CameraStatus, CameraStream
from .zones import ZoneMask, validate_zones

__all__ = [
    "CAMERA_KINDS",
    "CameraSpec",
    "CameraStatus",
    "CameraStream",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "OpenCVSource",
    "PiCameraSource",
    "SourceError",
    "ZoneMask",
    "open_source",
    "redact_uri",
    "validate_zones",
]
