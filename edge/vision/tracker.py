"""Groups the plate reads of one vehicle pass across frames and emits one Read per pass."""

from __future__ import annotations

from dataclasses import dataclass

from .ocr import Candidate


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
