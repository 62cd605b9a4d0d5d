"""The Raspberry Pi camera through picamera2, imported only when this source is opened.

picamera2 needs libcamera, which exists only on a Pi (as the OS package ``python3-picamera2``); importing it at
package import would break the daemon everywhere else.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np

from .sources import DEFAULT_READ_TIMEOUT_S, SourceError, as_bgr
from .spec import CameraSpec

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "picamera2 is only available on a Raspberry Pi: install the OS package python3-picamera2 "
    "(apt install python3-picamera2) and create the virtual environment with --system-site-packages"
)


class PiCameraSource:
    """A Pi camera module (libcamera). ``spec.uri``, if a digit string, is the camera number (default 0)."""

    def __init__(self, spec: CameraSpec, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> None:
        self._spec = spec
        self._read_timeout_s = read_timeout_s
        self._cam: Any = None

    @property
    def camera_num(self) -> int:
        return int(self._spec.uri) if self._spec.uri.isdigit() else 0

    def describe(self) -> str:
        return f"picamera2 camera {self.camera_num}"

    def native_fps(self) -> None:
        return None

    def open(self) -> None:
        self.close()
        try:
            picamera2 = importlib.import_module("picamera2")
        except Exception as e:  # ImportError off a Pi; libcamera can also fail with OSError/RuntimeError
            why = f"{type(e).__name__}: {e}"
            raise SourceError(f"{self.describe()}: cannot import picamera2 ({why}); {INSTALL_HINT}") from e
        try:
            cam = picamera2.Picamera2(self.camera_num)
        except Exception as e:  # no camera connected, or held by another process
            raise SourceError(f"{self.describe()}: cannot open the camera ({type(e).__name__}: {e})") from e
        try:
            main: dict[str, Any] = {"format": "RGB888"}  # libcamera's RGB888 is B, G, R in memory: OpenCV's order
            if self._spec.width and self._spec.height:
                main["size"] = (self._spec.width, self._spec.height)
            controls: dict[str, Any] = {}
            if self._spec.fps:
                controls["FrameRate"] = float(self._spec.fps)
            cam.configure(cam.create_video_configuration(main=main, controls=controls))
            cam.start()
        except Exception as e:
            cam.close()
            raise SourceError(f"{self.describe()}: cannot configure or start ({type(e).__name__}: {e})") from e
        self._cam = cam
        log.info("opened %s", self.describe())

    def read(self) -> np.ndarray:
        if self._cam is None:
            raise SourceError(f"{self.describe()}: read before open")
        try:
            # The request holds a camera buffer: copy the pixels out and let the context manager release it at
            # once, or the camera runs out of buffers. make_array copies the buffer into a new array.
            with self._cam.captured_request(wait=self._read_timeout_s) as request:
                image = np.ascontiguousarray(request.make_array("main"))
        except TimeoutError as e:
            flush = getattr(self._cam, "cancel_all_and_flush", None)  # picamera2's clean-up after a timeout
            if flush is not None:
                flush()
            raise SourceError(f"{self.describe()}: no frame within {self._read_timeout_s:g} s") from e
        except Exception as e:
            raise SourceError(f"{self.describe()}: capture failed ({type(e).__name__}: {e})") from e
        return as_bgr(image, self.describe())

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        except Exception as e:
            log.warning("%s: stop failed: %s", self.describe(), e)
        try:
            cam.close()
        except Exception as e:
            log.warning("%s: close failed: %s", self.describe(), e)
