"""Frame sources behind one protocol: OpenCV (device, RTSP/HTTP URL, video file) and image folders.

Every source hands out BGR uint8 HxWx3 arrays whatever the camera or file delivered (grey, alpha, 16-bit),
and refuses absurd sizes, so that the stages after capture never see a malformed frame. Failures are
:class:`SourceError` with a message that is safe to log: URLs in it are redacted.
"""

from __future__ import annotations

import logging
import re
import struct
import sys
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from .spec import CameraSpec

log = logging.getLogger(__name__)

MIN_SIDE = 16  # smaller than this cannot hold a readable plate: a broken frame, not a picture
MAX_SIDE = 16384
MAX_PIXELS = 40_000_000  # above 8K; a bigger frame would exhaust a Pi's memory downstream
MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
URL_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 5.0

_SECRET_QUERY_KEY = re.compile(r"pass|pwd|token|key|auth|secret|sig|cred", re.IGNORECASE)


class SourceError(RuntimeError):
    """A source cannot be opened or stopped delivering frames. The message is safe to log."""


class FrameSource(Protocol):
    """One camera or recording. Not thread-safe: one capture thread owns it."""

    def open(self) -> None:
        """Connect or open; raises :class:`SourceError` saying what is wrong."""
        ...

    def read(self) -> np.ndarray | None:
        """The next frame (BGR uint8 HxWx3); None at the end of a file or folder; SourceError on failure."""
        ...

    def close(self) -> None:
        """Release the device or stream; safe to call twice or after a failed open."""
        ...

    def describe(self) -> str:
        """What this source is, safe to log (credentials redacted)."""
        ...

    def native_fps(self) -> float | None:
        """The recording's own frame rate (video files), used for pacing when none is configured; else None."""
        ...


def redact_uri(uri: str) -> str:
    """``uri`` with any user name, password and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not parts.netloc:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_QUERY_KEY.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def as_bgr(image: np.ndarray, what: str) -> np.ndarray:
    """``image`` as BGR uint8 HxWx3: grey and 4-channel converted, 16-bit scaled down; otherwise SourceError.

    A frame already in that form is returned as is (no copy).
    """
    if not isinstance(image, np.ndarray):
        raise SourceError(f"{what}: not an image array")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise SourceError(f"{what}: unsupported pixel type {image.dtype} (expected 8 or 16-bit)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise SourceError(f"{what}: unsupported image shape {image.shape}")
    check_size(image.shape[1], image.shape[0], what)
    return image


def check_size(width: int, height: int, what: str) -> None:
    """Refuse frame sizes that are broken (tiny) or would exhaust memory (huge)."""
    if min(width, height) < MIN_SIDE:
        raise SourceError(f"{what}: frame size {width}x{height} is below {MIN_SIDE} pixels a side")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        limit = f"{MAX_SIDE} a side, {MAX_PIXELS} pixels"
        raise SourceError(f"{what}: frame size {width}x{height} is too large (limit {limit})")


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, BMP or JPEG header without decoding, or None when not recognised.

    Checked before decoding so that a small file claiming a huge image cannot exhaust memory.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            seg_len = int.from_bytes(data[i + 2 : i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            if seg_len < 2:
                return None
            i += 2 + seg_len
    return None


def _natural_key(name: str) -> list[int | str]:
    """Sort key that puts frame2 before frame10 (zero-padded names sort the same either way)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class OpenCVSource:
    """A V4L2 device, an RTSP or HTTP (MJPEG) stream, or a video file, through ``cv2.VideoCapture``."""

    def __init__(
        self,
        spec: CameraSpec,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        if spec.kind not in ("device", "url", "file"):
            raise ValueError(f"OpenCVSource cannot read kind {spec.kind!r}")
        self._spec = spec
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._read_timeout_ms = int(read_timeout_s * 1000)
        self._cap: cv2.VideoCapture | None = None
        self._native_fps: float | None = None
        self._frames = 0

    def describe(self) -> str:
        kind, uri = self._spec.kind, self._spec.uri
        if kind == "device":
            return f"device {uri}"
        if kind == "url":
            return redact_uri(uri)
        return f"video file {uri}"

    def native_fps(self) -> float | None:
        return self._native_fps

    def open(self) -> None:
        self.close()
        kind, uri = self._spec.kind, self._spec.uri
        if kind == "device":
            cap = self._open_device(uri)
        elif kind == "url":
            cap = self._open_url(uri)
        else:
            cap = self._open_file(uri)
        self._cap = cap
        self._frames = 0
        if kind == "file":
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._native_fps = fps if 0.0 < fps <= 1000.0 else None
        log.info("opened %s", self.describe())

    def _open_device(self, uri: str) -> cv2.VideoCapture:
        target: int | str
        if uri.isdigit():
            target = int(uri)
        elif uri.startswith("/dev/"):  # a stable udev name such as /dev/v4l/by-id/...
            target = uri
        else:
            raise SourceError(f"device {uri!r}: expected a device index (0, 1, ...) or a /dev path")
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        params: list[int] = []
        if self._spec.width and self._spec.height:
            params += [cv2.CAP_PROP_FRAME_WIDTH, self._spec.width, cv2.CAP_PROP_FRAME_HEIGHT, self._spec.height]
        cap = cv2.VideoCapture(target, api, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: cannot open the camera (not connected, or in use)")
        if self._spec.fps:
            cap.set(cv2.CAP_PROP_FPS, float(self._spec.fps))
        return cap

    def _open_url(self, uri: str) -> cv2.VideoCapture:
        scheme = urlsplit(uri).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise SourceError(f"{self.describe()}: URL scheme must be one of {', '.join(sorted(URL_SCHEMES))}")
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self._open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self._read_timeout_ms,
        ]
        cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: cannot connect to the stream (unreachable, refused or not video)")
        return cap

    def _open_file(self, uri: str) -> cv2.VideoCapture:
        path = Path(uri)
        if not path.is_file():
            raise SourceError(f"{self.describe()}: no such file")
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: not a video that FFmpeg can decode")
        return cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.describe()}: read before open")
        try:
            ok, image = self._cap.read()
        except cv2.error as e:
            raise SourceError(f"{self.describe()}: decoding failed ({type(e).__name__})") from e
        if not ok or image is None:
            if self._spec.kind == "file":
                if self._frames == 0:
                    raise SourceError(f"{self.describe()}: no decodable frame")
                return None
            if self._spec.kind == "url":
                raise SourceError(f"{self.describe()}: stream lost (closed, or no frame within the read timeout)")
            raise SourceError(f"{self.describe()}: the camera stopped delivering frames")
        self._frames += 1
        return as_bgr(image, self.describe())

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource:
    """The images of a folder in natural sort order (JPEG, PNG, BMP); unreadable ones are skipped with a warning."""

    def __init__(self, spec: CameraSpec) -> None:
        self._spec = spec
        self._files: list[Path] = []
        self._next = 0
        self._delivered = 0

    def describe(self) -> str:
        return f"image folder {self._spec.uri}"

    def native_fps(self) -> None:
        return None

    def open(self) -> None:
        folder = Path(self._spec.uri)
        if not folder.is_dir():
            raise SourceError(f"{self.describe()}: no such folder")
        try:
            files = [
                p
                for p in folder.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
            ]
        except OSError as e:
            raise SourceError(f"{self.describe()}: cannot list ({e.strerror})") from e
        if not files:
            raise SourceError(f"{self.describe()}: no JPEG, PNG or BMP images")
        self._files = sorted(files, key=lambda p: _natural_key(p.name))
        self._next = 0
        self._delivered = 0
        log.info("opened %s (%d images)", self.describe(), len(self._files))

    def read(self) -> np.ndarray | None:
        while self._next < len(self._files):
            path = self._files[self._next]
            self._next += 1
            try:
                return self._load(path)
            except SourceError as e:
                log.warning("skipping image: %s", e)
        if self._delivered == 0 and self._files:
            raise SourceError(f"{self.describe()}: none of its {len(self._files)} images is readable")
        return None

    def _load(self, path: Path) -> np.ndarray:
        what = f"{path.name} in {self.describe()}"
        try:
            size = path.stat().st_size
            if size > MAX_IMAGE_FILE_BYTES:
                raise SourceError(f"{what}: file of {size} bytes exceeds {MAX_IMAGE_FILE_BYTES}")
            data = path.read_bytes()
        except OSError as e:
            raise SourceError(f"{what}: cannot read ({e.strerror})") from e
        dims = image_header_size(data)
        if dims is not None:
            check_size(dims[0], dims[1], what)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(f"{what}: not a decodable image")
        image = as_bgr(image, what)
        self._delivered += 1
        return image

    def close(self) -> None:
        self._files = []
        self._next = 0


def open_source(spec: CameraSpec) -> FrameSource:
    """The source for ``spec`` (not yet opened). picamera2 is imported only when that source is opened."""
    if spec.kind in ("device", "url", "file"):
        return OpenCVSource(spec)
    if spec.kind == "folder":
        return ImageFolderSource(spec)
    if spec.kind == "picamera2":
        from .picamera import PiCameraSource

        return PiCameraSource(spec)
    raise ValueError(f"camera {spec.id}: unknown kind {spec.kind!r}")
