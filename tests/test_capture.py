"""Capture on real sources: video files written by OpenCV, image folders, a live HTTP MJPEG server that goes away
and comes back, a camera index that does not exist, and picamera2 where there is no Pi."""

from __future__ import annotations

import http.server
import importlib.util
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.capture import (
    CAMERA_KINDS,
    CameraSpec,
    CameraStream,
    Frame,
    ImageFolderSource,
    OpenCVSource,
    SourceError,
    ZoneMask,
    redact_uri,
    validate_zones,
)
from edge.capture.picamera import PiCameraSource
from edge.capture.sources import as_bgr, image_header_size
from edge.capture.stream import Backoff

FAST = {"backoff_initial_s": 0.02, "backoff_max_s": 0.1}


class Collector:
    """on_frame that keeps every frame and lets the test wait for a count."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._cond = threading.Condition()

    def __call__(self, frame: Frame) -> None:
        with self._cond:
            self.frames.append(frame)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Frame]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.frames) >= n, timeout):
                pytest.fail(f"got {len(self.frames)} frames, expected {n} within {timeout} s")
            return list(self.frames)


@pytest.fixture
def run() -> Iterator[Any]:
    """Start CameraStreams; every one is stopped and joined at the end of the test."""
    started: list[tuple[CameraStream, threading.Event]] = []

    def start(spec: CameraSpec, on_frame: Any = None) -> tuple[CameraStream, Collector, threading.Event]:
        stop = threading.Event()
        col = Collector()
        stream = CameraStream(spec, on_frame or col, stop, rng=random.Random(1))
        stream.start()
        started.append((stream, stop))
        return stream, col, stop

    yield start
    for _, stop in started:
        stop.set()
    for stream, _ in started:
        assert stream.join(5.0), f"capture thread {stream.spec.id} did not stop"


def wait_until(cond: Any, timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def level(frame: Frame | np.ndarray) -> float:
    img = frame.image if isinstance(frame, Frame) else frame
    return float(img.mean())


def write_video(path: Path, n: int, fps: float, size: tuple[int, int] = (160, 120)) -> Path:
    """An mp4v file whose frame i is a flat grey of level 20 * i (survives lossy coding within a few levels)."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(np.full((h, w, 3), 20 * i, np.uint8))
    vw.release()
    return path


def write_folder(folder: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((size[1], size[0], 3), 10 * i, np.uint8))
    return folder


# -- video files --------------------------------------------------------------------------------------------------


def test_video_file_every_frame_in_order_then_finished(tmp_path: Path, run: Any) -> None:
    video = write_video(tmp_path / "clip.mp4", 12, fps=100)
    stream, col, _ = run(CameraSpec(id="front", name="Front", kind="file", uri=str(video), **FAST))
    assert stream.join(5.0) and stream.finished
    frames = col.frames
    assert [f.seq for f in frames] == list(range(12))
    assert [round(level(f) / 20) for f in frames] == list(range(12))
    assert all(f.camera_id == "front" and f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    monos = [f.mono_time for f in frames]
    assert monos == sorted(monos) and abs(frames[0].wall_time - time.time()) < 5
    st = stream.status()
    assert (st.frames, st.fault, st.failures, st.finished, st.connected) == (12, None, 0, True, False)
    assert st.last_frame_age_s is not None and st.last_frame_age_s >= 0


def test_video_file_paced_at_its_own_frame_rate(tmp_path: Path, run: Any) -> None:
    video = write_video(tmp_path / "clip.mp4", 10, fps=25)
    stream, col, _ = run(CameraSpec(id="c", name="c", kind="file", uri=str(video)))
    assert stream.join(5.0) and stream.finished
    span = col.frames[-1].mono_time - col.frames[0].mono_time
    # unpaced would take a few ms; a first frame delivered late on a loaded machine shortens the span a little
    assert 8 / 25 <= span < 9 / 25 + 0.25


def test_video_file_loops_and_seq_keeps_counting(tmp_path: Path, run: Any) -> None:
    video = write_video(tmp_path / "clip.mp4", 12, fps=25)
    stream, col, stop = run(CameraSpec(id="c", name="c", kind="file", uri=str(video), fps=1000, loop=True))
    frames = col.wait_for(30)
    stop.set()
    assert stream.join(5.0) and not stream.finished
    assert [f.seq for f in frames[:30]] == list(range(30))
    assert [round(level(f) / 20) for f in frames[:30]] == [i % 12 for i in range(30)]
    assert stream.status().failures == 0


def test_missing_or_undecodable_file_is_a_fault_not_a_crash(tmp_path: Path, run: Any) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    s1, _, _ = run(CameraSpec(id="a", name="a", kind="file", uri=str(tmp_path / "gone.mp4"), **FAST))
    s2, _, _ = run(CameraSpec(id="b", name="b", kind="file", uri=str(junk), **FAST))
    wait_until(lambda: s1.status().failures >= 2 and s2.status().failures >= 2, what="retries")
    assert "no such file" in (s1.status().fault or "")
    assert "decode" in (s2.status().fault or "")
    assert s1.is_alive() and s2.is_alive()


# -- image folders ------------------------------------------------------------------------------------------------


def test_image_folder_natural_order_bad_images_skipped_and_converted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "shots"
    d.mkdir()
    cv2.imwrite(str(d / "frame1.bmp"), np.full((48, 64, 3), 10, np.uint8))
    cv2.imwrite(str(d / "frame2.png"), np.full((48, 64), 200, np.uint8))  # greyscale
    bgra = np.zeros((48, 64, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 128  # blue, half transparent
    cv2.imwrite(str(d / "frame3.png"), bgra)
    (d / "frame4.jpg").write_bytes(b"\xff\xd8 this is no JPEG" * 50)  # corrupt
    _, png = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    huge = bytearray(png.tobytes())
    huge[16:24] = (60000).to_bytes(4, "big") * 2  # header claims 60000x60000: refused before decoding
    (d / "frame5.png").write_bytes(bytes(huge))
    cv2.imwrite(str(d / "frame6.png"), np.zeros((4, 4, 3), np.uint8))  # absurdly small
    cv2.imwrite(str(d / "frame10.jpg"), np.full((48, 64, 3), 100, np.uint8))
    (d / "notes.txt").write_text("not an image")
    cv2.imwrite(str(d / ".hidden.png"), np.zeros((48, 64, 3), np.uint8))

    src = ImageFolderSource(CameraSpec(id="f", name="f", kind="folder", uri=str(d)))
    src.open()
    with caplog.at_level(logging.WARNING):
        images = []
        while (img := src.read()) is not None:
            images.append(img)
    src.close()
    assert len(images) == 4
    assert all(i.dtype == np.uint8 and i.shape == (48, 64, 3) for i in images)
    assert round(level(images[0])) == 10  # frame1
    assert np.all(images[1] == 200)  # frame2: grey became three equal channels
    assert images[2][0, 0].tolist() == [255, 0, 0]  # frame3: alpha dropped, still blue
    assert abs(level(images[3]) - 100) < 3  # frame10 after frame3 (natural order)
    warned = caplog.text
    assert "frame4.jpg" in warned and "frame5.png" in warned and "too large" in warned and "frame6.png" in warned


def test_folder_with_no_readable_image_is_a_fault(tmp_path: Path, run: Any) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"garbage")
    stream, _, _ = run(CameraSpec(id="f", name="f", kind="folder", uri=str(d), loop=True, **FAST))
    wait_until(lambda: stream.status().failures >= 2, what="retries")
    assert "none of its 1 images is readable" in (stream.status().fault or "")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no JPEG, PNG or BMP"):
        ImageFolderSource(CameraSpec(id="e", name="e", kind="folder", uri=str(empty))).open()


def test_folder_paced_at_20_fps_without_drift(tmp_path: Path, run: Any) -> None:
    folder = write_folder(tmp_path / "f", 10)
    col = Collector()

    def slow_consumer(frame: Frame) -> None:  # 20 ms of work per frame must not stretch the 50 ms schedule
        col(frame)
        time.sleep(0.02)

    t0 = time.monotonic()
    stream, _, _ = run(CameraSpec(id="f", name="f", kind="folder", uri=str(folder), fps=20), on_frame=slow_consumer)
    assert stream.join(5.0) and stream.finished
    took = time.monotonic() - t0
    frames = col.frames
    assert [round(level(f) / 10) for f in frames] == list(range(10))
    assert 0.44 <= took < 0.9, took
    first = frames[0].mono_time
    for k, f in enumerate(frames):  # scheduled against the start: frame k at k/20 s, never earlier
        assert f.mono_time - first >= k * 0.05 - 0.005, (k, f.mono_time - first)
    assert frames[-1].mono_time - first < 0.45 + 0.1  # sleeping a period after each frame would take 0.63 s


def test_folder_loop_and_callback_errors_do_not_stop_capture(tmp_path: Path, run: Any) -> None:
    folder = write_folder(tmp_path / "f", 3)
    seen: list[int] = []

    def flaky(frame: Frame) -> None:
        seen.append(frame.seq)
        if frame.seq == 1:
            raise RuntimeError("downstream bug")

    stream, _, stop = run(CameraSpec(id="f", name="f", kind="folder", uri=str(folder), loop=True), on_frame=flaky)
    wait_until(lambda: len(seen) >= 7, what="7 frames")
    stop.set()
    assert stream.join(5.0)
    assert seen[:7] == list(range(7))
    assert stream.status().failures == 0 and stream.status().reconnects == 0


# -- a live HTTP MJPEG stream that goes away and comes back -------------------------------------------------------


class MjpegServer:
    """multipart/x-mixed-replace JPEG stream on loopback, as IP cameras serve it; frame i has grey level 5 * i."""

    def __init__(self, port: int = 0) -> None:
        self.stopping = threading.Event()
        stopping = self.stopping

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                while not stopping.is_set():
                    _, jpg = cv2.imencode(".jpg", np.full((96, 128, 3), (5 * i) % 250, np.uint8))
                    part = jpg.tobytes()
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(part)
                    try:
                        self.wfile.write(head + part + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    i += 1
                    time.sleep(0.02)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()  # waits for the handlers, which close their connections
        self._thread.join(5)


def test_mjpeg_stream_lost_reconnects_and_seq_keeps_counting(run: Any) -> None:
    server = MjpegServer()
    port = server.port
    url = f"http://127.0.0.1:{port}/video"
    try:
        stream, col, _ = run(CameraSpec(id="pole", name="Pole", kind="url", uri=url, **FAST))
        before = col.wait_for(10)
        assert stream.status().connected and stream.status().fault is None
        server.stop()
        wait_until(lambda: stream.status().fault is not None, what="the fault")
        st = stream.status()
        assert not st.connected and ("stream lost" in (st.fault or "") or "cannot connect" in (st.fault or ""))
        wait_until(lambda: stream.status().failures >= 3, what="retries while the server is down")
        n_down = len(col.frames)
        server = MjpegServer(port)  # same port, fresh stream (its frame counter starts again at 0)
        frames = col.wait_for(n_down + 10)
        st = stream.status()
        assert st.connected and st.fault is None and st.reconnects >= 1 and st.frames >= n_down + 10
        assert [f.seq for f in frames] == list(range(len(frames)))
        assert len(before) >= 10 and all(f.image.shape == (96, 128, 3) for f in frames)
        resumed = [round(level(f) / 5) for f in frames[n_down : n_down + 5]]
        assert resumed[0] < 5 and resumed == sorted(resumed)  # frames of the restarted server
    finally:
        server.stop()


# -- devices, picamera2, credentials ------------------------------------------------------------------------------


def test_missing_device_index_is_a_fault_and_retried(run: Any) -> None:
    stream, col, stop = run(CameraSpec(id="rear", name="Rear", kind="device", uri="97", **FAST))
    wait_until(lambda: stream.status().failures >= 3, what="three failed opens")
    st = stream.status()
    assert not st.connected and st.frames == 0 and "device 97" in (st.fault or "") and st.last_frame_age_s is None
    assert stream.is_alive() and not stream.finished
    stop.set()
    assert stream.join(2.0)
    assert col.frames == []


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed: a Pi")
def test_picamera2_off_a_pi_names_the_os_package(run: Any) -> None:
    assert "picamera2" not in sys.modules  # importing edge.capture did not import it
    spec = CameraSpec(id="pi", name="Pi", kind="picamera2", **FAST)
    with pytest.raises(SourceError) as e:
        PiCameraSource(spec).open()
    assert "python3-picamera2" in str(e.value) and "--system-site-packages" in str(e.value)
    stream, _, _ = run(spec)
    wait_until(lambda: stream.status().failures >= 2, what="retries")
    assert "python3-picamera2" in (stream.status().fault or "")


def test_url_credentials_are_redacted(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    red = redact_uri("rtsp://admin:s3cret@10.0.0.5:554/live?token=abc123&channel=1")
    assert "s3cret" not in red and "admin" not in red and "abc123" not in red
    assert red.startswith("rtsp://***@10.0.0.5:554/live?") and "channel=1" in red
    assert redact_uri("/srv/footage/a.mp4") == "/srv/footage/a.mp4"
    with socket.socket() as sock:  # a loopback port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://admin:s3cret@127.0.0.1:{port}/video"
        assert "s3cret" not in OpenCVSource(CameraSpec(id="x", name="x", kind="url", uri=url)).describe()
        with caplog.at_level(logging.DEBUG):
            stream, _, stop = run(CameraSpec(id="x", name="x", kind="url", uri=url, **FAST))
            wait_until(lambda: stream.status().failures >= 2, what="failed connects")
            stop.set()
            assert stream.join(5.0)
    st = stream.status()
    assert "cannot connect" in (st.fault or "")
    for text in (st.source, st.fault or "", caplog.text):
        assert "s3cret" not in text and "admin" not in text
    assert "127.0.0.1" in st.source


# -- zones ---------------------------------------------------------------------------------------------------------


def test_zone_mask_blanks_outside_and_contains_box() -> None:
    right_half = ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))
    mask = ZoneMask.for_frame([right_half], 100, 50)
    img = np.full((50, 100, 3), 255, np.uint8)
    out = mask.apply(img)
    assert out is not img and np.all(img == 255)  # the source's array is left alone
    assert np.all(out[:, :49] == 0) and np.all(out[:, 51:] == 255)
    assert mask.contains_box((70, 10, 20, 10)) and not mask.contains_box((5, 10, 20, 10))
    assert not mask.contains_box((120, 10, 20, 10))  # centre off the frame
    whole = ZoneMask.for_frame((), 100, 50)
    assert whole.apply(img) is img and whole.contains_box((5, 10, 20, 10)) and whole.whole_frame
    with pytest.raises(ValueError, match="image is 60x50"):
        mask.apply(np.zeros((50, 60, 3), np.uint8))


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([[(0.0, 0.0), (1.0, 1.0)]], "zone 1: a polygon needs at least 3 points, got 2"),
        ([[(0, 0), (1, 0), (1, 1)], [(0, 0), (1.5, 0), (1, 1)]], r"zone 2, point 2: \(1.5, 0\) is outside the frame"),
        ([[(0, 0), (0.5, 0.5), (1, 1)]], "zone 1: the polygon encloses no area"),
        ([[(0, 0), ("a", 0), (1, 1)]], "zone 1, point 2: coordinates must be numbers"),
        ([[(0, 0), (1, 0, 0), (1, 1)]], r"zone 1, point 2: expected \[x, y\]"),
        ([[(0, 0), (float("nan"), 0), (1, 1)]], "zone 1, point 2: .* outside the frame"),
    ],
)
def test_zone_validation_names_the_problem(zones: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_zones(zones)


def test_stream_masks_every_frame_size_with_the_zones(tmp_path: Path, run: Any) -> None:
    d = tmp_path / "sizes"
    d.mkdir()
    cv2.imwrite(str(d / "1.png"), np.full((40, 80, 3), 255, np.uint8))
    cv2.imwrite(str(d / "2.png"), np.full((100, 60, 3), 255, np.uint8))
    top = ((0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5))
    stream, col, _ = run(CameraSpec(id="z", name="z", kind="folder", uri=str(d), zones=(top,)))
    assert stream.join(5.0)
    a, b = (f.image for f in col.frames)
    assert np.all(a[:19] == 255) and np.all(a[21:] == 0)
    assert np.all(b[:49] == 255) and np.all(b[51:] == 0)
    with pytest.raises(ValueError, match="zone 1"):
        CameraStream(
            CameraSpec(id="z", name="z", kind="folder", uri=str(d), zones=(((0, 0), (1, 1)),)),
            Collector(),
            threading.Event(),
        )


# -- small decision objects ----------------------------------------------------------------------------------------


def test_frames_are_normalised_and_absurd_ones_refused() -> None:
    assert as_bgr(np.full((20, 20), 0x1234, np.uint16), "x")[0, 0].tolist() == [0x12] * 3
    with pytest.raises(SourceError, match="unsupported pixel type float32"):
        as_bgr(np.zeros((20, 20, 3), np.float32), "x")
    with pytest.raises(SourceError, match="unsupported image shape"):
        as_bgr(np.zeros((20, 20, 2), np.uint8), "x")
    with pytest.raises(SourceError, match="too large"):
        as_bgr(np.zeros((16, 20000, 3), np.uint8), "x")
    _, jpg = cv2.imencode(".jpg", np.zeros((33, 77, 3), np.uint8))
    _, bmp = cv2.imencode(".bmp", np.zeros((33, 77, 3), np.uint8))
    assert image_header_size(jpg.tobytes()) == (77, 33) and image_header_size(bmp.tobytes()) == (77, 33)
    assert image_header_size(b"GIF89a....") is None


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0, random.Random(3))
    delays = [b.next_delay() for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not in step
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5
    assert set(CAMERA_KINDS) == {"picamera2", "device", "url", "file", "folder"}
