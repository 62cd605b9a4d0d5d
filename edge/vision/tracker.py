"""Groups the plate reads of one vehicle pass across frames and emits one Read per pass."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..capture.frame import Frame
from .ocr import Candidate
from .recognizer import PlateRead, crop_box


@dataclass(frozen=True)
class Read:
    """One vehicle pass in front of one camera: the voted text and the evidence for it."""

    uuid: str  # uuid4 hex string (36 characters, with dashes)
    camera_id: str
    text: str
    confidence: float  # 0..1
    char_confidences: tuple[float, ...]
    candidates: tuple[Candidate, ...]  # best first; at least 5 when the OCR produced them
    region: str | None
    plate_format: str | None
    box: tuple[int, int, int, int]  # x, y, w, h of the plate in the scene image
    crop_jpeg: bytes  # best plate crop
    scene_jpeg: bytes  # the frame the crop came from (outside the capture zones blanked)
    first_seen: float  # UTC epoch seconds
    last_seen: float
    best_seen: float  # capture time of the scene image; the GPS fix is joined at this time
    frames_seen: int


@dataclass(frozen=True)
class TrackerSettings:
    gap_s: float = 1.0  # a pass ends when its plate is not seen for this long (capture time)
    min_frames: int = 2  # a pass seen fewer times is dropped unless its best read is confident
    single_frame_confidence: float = 0.9
    scene_max_width: int = 1280
    jpeg_quality: int = 85
    max_texts: int = 8  # distinct readings whose best frame is kept per pass (bounds memory)


@dataclass(frozen=True)
class _Sighting:
    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    candidates: tuple[Candidate, ...]
    box: tuple[int, int, int, int]
    wall_time: float


@dataclass
class _Track:
    """One vehicle pass being followed; owned by the tracker's thread only."""

    camera_id: str
    sightings: list[_Sighting]
    first_wall: float
    last_wall: float
    last_mono: float
    box: tuple[int, int, int, int]
    velocity: tuple[float, float]  # plate centre, pixels per second
    best: dict[str, tuple[float, Frame, PlateRead]]  # text -> (score, frame, read) of its best sighting


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def text_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / longer length: 1.0 identical, 0.0 nothing in common."""
    if not a or not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def vote(sightings: list[_Sighting]) -> tuple[str, tuple[float, ...]]:
    """Per-character vote over a pass.

    The length is chosen by total confidence; then, at each position, the character with the most OCR probability
    summed over the sightings of that length wins. A character's confidence is the mean probability the
    sightings gave it (0 for a sighting that read another character), so disagreement lowers it.
    """
    by_len: dict[int, float] = {}
    for s in sightings:
        by_len[len(s.text)] = by_len.get(len(s.text), 0.0) + s.confidence
    n = max(by_len, key=lambda k: (by_len[k], k))
    same = [s for s in sightings if len(s.text) == n]
    chars, confs = [], []
    for i in range(n):
        weight: dict[str, float] = {}
        for s in same:
            weight[s.text[i]] = weight.get(s.text[i], 0.0) + s.char_confidences[i]
        c = max(weight, key=lambda k: (weight[k], k))
        chars.append(c)
        confs.append(weight[c] / len(same))
    return "".join(chars), tuple(confs)


class Tracker:
    """Follows plates across frames per camera (box motion and text similarity) and emits one Read per pass.

    Time comes from the frames (capture monotonic time), so a recording replayed faster than real time is tracked
    the same way as live video. Not thread-safe: one recognition worker owns it.
    """

    def __init__(self, settings: TrackerSettings, new_uuid: Callable[[], str] | None = None) -> None:
        self.s = settings
        self.tracks: list[_Track] = []
        self.new_uuid = new_uuid or (lambda: str(uuid.uuid4()))

    def update(self, frame: Frame, plates: list[PlateRead]) -> list[Read]:
        """Add one frame's plates; returns the passes that ended before this frame."""
        done = self.expire(frame.camera_id, frame.mono_time)
        free = [t for t in self.tracks if t.camera_id == frame.camera_id]
        pairs = []
        for pi, p in enumerate(plates):
            for ti, t in enumerate(free):
                cost = self._cost(t, p, frame.mono_time)
                if cost is not None:
                    pairs.append((cost, pi, ti))
        used_p: set[int] = set()
        used_t: set[int] = set()
        for _cost, pi, ti in sorted(pairs):
            if pi in used_p or ti in used_t:
                continue
            used_p.add(pi)
            used_t.add(ti)
            self._extend(free[ti], frame, plates[pi])
        for pi, p in enumerate(plates):
            if pi not in used_p:
                self.tracks.append(self._start(frame, p))
        return done

    def expire(self, camera_id: str | None, now_mono: float) -> list[Read]:
        """End the passes (of one camera, or all) not seen for ``gap_s`` before ``now_mono``."""
        ended = [
            t
            for t in self.tracks
            if (camera_id is None or t.camera_id == camera_id) and now_mono - t.last_mono > self.s.gap_s
        ]
        return self._finish(ended)

    def flush(self) -> list[Read]:
        """End every pass (shutdown or end of footage)."""
        return self._finish(list(self.tracks))

    @property
    def active(self) -> int:
        return len(self.tracks)

    def _finish(self, ended: list[_Track]) -> list[Read]:
        reads = []
        for t in ended:
            self.tracks.remove(t)
            r = self._to_read(t)
            if r is not None:
                reads.append(r)
        return reads

    def _cost(self, t: _Track, p: PlateRead, now: float) -> float | None:
        """Association cost, or None when the plate cannot belong to this pass."""
        dt = max(0.0, now - t.last_mono)
        cx, cy = _centre(t.box)
        px, py = cx + t.velocity[0] * dt, cy + t.velocity[1] * dt
        ox, oy = _centre(p.box)
        dist = math.hypot(ox - px, oy - py)
        gate = max(t.box[2], p.box[2], 20) * (1.0 + 6.0 * dt)
        if dist > gate:
            return None
        sim = max(text_similarity(p.text, s.text) for s in t.sightings[-5:])
        if sim < 0.5 and dist > max(t.box[2], p.box[2]):
            # A different text is a different plate unless it is right where this one was expected (a bad read of
            # the same plate). Without this, the next car in the lane, entering while the previous one's pass is
            # still open, would be swallowed by it.
            return None
        return dist / gate + (1.0 - sim)

    def _start(self, frame: Frame, p: PlateRead) -> _Track:
        t = _Track(frame.camera_id, [], frame.wall_time, frame.wall_time, frame.mono_time, p.box, (0.0, 0.0), {})
        self._extend(t, frame, p)
        return t

    def _extend(self, t: _Track, frame: Frame, p: PlateRead) -> None:
        dt = frame.mono_time - t.last_mono
        if t.sightings and dt > 1e-3:
            (ax, ay), (bx, by) = _centre(t.box), _centre(p.box)
            vx, vy = (bx - ax) / dt, (by - ay) / dt
            t.velocity = (0.5 * t.velocity[0] + 0.5 * vx, 0.5 * t.velocity[1] + 0.5 * vy)
        t.sightings.append(_Sighting(p.text, p.confidence, p.char_confidences, p.candidates, p.box, frame.wall_time))
        t.box, t.last_mono, t.last_wall = p.box, frame.mono_time, frame.wall_time
        score = p.confidence * (0.5 + 0.5 * p.detection_score)
        if p.text not in t.best or score > t.best[p.text][0]:
            t.best[p.text] = (score, frame, p)
            if len(t.best) > self.s.max_texts:
                del t.best[min(t.best, key=lambda k: t.best[k][0])]

    def _to_read(self, t: _Track) -> Read | None:
        best_conf = max(s.confidence for s in t.sightings)
        if len(t.sightings) < self.s.min_frames and best_conf < self.s.single_frame_confidence:
            return None
        text, char_conf = vote(t.sightings)
        confidence = float(np.prod(char_conf)) if char_conf else 0.0
        # the evidence: the best frame that read the voted text, else the best frame of the pass
        key = text if text in t.best else max(t.best, key=lambda k: t.best[k][0])
        _, frame, p = t.best[key]
        scores: dict[str, float] = {}
        for s in t.sightings:
            for c in s.candidates:
                scores[c.text] = scores.get(c.text, 0.0) + c.confidence / len(t.sightings)
        scores[text] = max(scores.get(text, 0.0), confidence)
        ranked = sorted(scores.items(), key=lambda kv: (kv[0] != text, -kv[1]))
        candidates = tuple(Candidate(k, min(1.0, v)) for k, v in ranked[:10])
        scene, box = self._scene(frame.image, p.box)
        fmt_region, fmt_name = (p.region, p.plate_format) if p.text == text else (None, None)
        return Read(
            uuid=self.new_uuid(),
            camera_id=t.camera_id,
            text=text,
            confidence=confidence,
            char_confidences=char_conf,
            candidates=candidates,
            region=fmt_region,
            plate_format=fmt_name,
            box=box,
            crop_jpeg=self._jpeg(crop_box(frame.image, p.box)),
            scene_jpeg=self._jpeg(scene),
            first_seen=t.first_wall,
            last_seen=t.last_wall,
            best_seen=frame.wall_time,
            frames_seen=len(t.sightings),
        )

    def _scene(self, image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        h, w = image.shape[:2]
        if w <= self.s.scene_max_width:
            return image, box
        f = self.s.scene_max_width / w
        small = cv2.resize(image, (self.s.scene_max_width, max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return small, (round(box[0] * f), round(box[1] * f), max(1, round(box[2] * f)), max(1, round(box[3] * f)))

    def _jpeg(self, image: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.s.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return buf.tobytes()
