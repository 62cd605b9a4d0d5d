"""Frame in, plate reads out: detector, then OCR on each plate crop, then ranking by the region's formats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detector import Detection, PlateDetector
from .formats import format_penalty, match_format, rules_for
from .ocr import TWO_LINE_MAX_ASPECT, Candidate, PlateReader, char_confidences_for, ctc_beam_search
from .runtime import load_model

# Margin added around a detected box before OCR, as a fraction of its width and height; the OCR is
# trained on crops with margins jittered around these values.
CROP_MARGIN_X = 0.06
CROP_MARGIN_Y = 0.12
TWO_LINE_MAX_BOX_ASPECT = 1.6  # a detected box narrower than this (w/h) may hold a two-line plate
MIN_CANDIDATES = 5


@dataclass(frozen=True)
class PlateRead:
    """One plate found in one frame."""

    text: str
    confidence: float  # probability of ``text`` under the OCR model
    char_confidences: tuple[float, ...]
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    candidates: tuple[Candidate, ...]  # best first; the first is ``text``
    region: str | None  # region whose format ``text`` matches, if any
    plate_format: str | None
    detection_score: float
    two_line: bool


def crop_box(
    frame: np.ndarray, box: tuple[int, int, int, int], mx: float = CROP_MARGIN_X, my: float = CROP_MARGIN_Y
) -> np.ndarray:
    """The plate region plus a margin, clipped to the frame."""
    x, y, w, h = box
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, int(round(x - w * mx))), max(0, int(round(y - h * my)))
    x1, y1 = min(fw, int(round(x + w * (1 + mx)))), min(fh, int(round(y + h * (1 + my))))
    return frame[y0:y1, x0:x1]


class Recognizer:
    """Detects and reads plates; ``regions`` are the formats expected where the unit is installed."""

    def __init__(
        self,
        detector: PlateDetector,
        reader: PlateReader,
        regions: tuple[str, ...] = (),
        min_confidence: float = 0.1,
        min_chars: int = 3,
    ) -> None:
        self.detector = detector
        self.reader = reader
        self.rules = rules_for(regions)
        self.min_confidence = min_confidence
        self.min_chars = min_chars

    @classmethod
    def from_files(
        cls,
        detector_path: Path,
        ocr_path: Path,
        regions: tuple[str, ...] = (),
        threads: int = 2,
        threshold: float = 0.3,
    ) -> Recognizer:
        det = PlateDetector(load_model(detector_path, threads), threshold=threshold)
        return cls(det, PlateReader(load_model(ocr_path, threads)), regions)

    def read_crop(
        self,
        crop: np.ndarray,
        box: tuple[int, int, int, int] | None = None,
        score: float = 1.0,
        maybe_two_line: bool | None = None,
    ) -> PlateRead | None:
        """Read one plate crop; None when the OCR sees no characters.

        A crop that may hold a two-line plate (judged by its shape unless ``maybe_two_line`` says) is read
        both as one line and unfolded; the better-scoring reading wins.
        """
        h, w = crop.shape[:2]
        if maybe_two_line is None:
            maybe_two_line = w / max(h, 1) < TWO_LINE_MAX_ASPECT
        layouts = [False, True] if maybe_two_line else [False]
        scored: dict[str, tuple[float, float, bool]] = {}  # text -> (rank score, log p, two_line)
        probs_by_layout: dict[bool, np.ndarray] = {}
        for two_line in layouts:
            probs = self.reader.probabilities(crop, two_line)
            probs_by_layout[two_line] = probs
            for text, logp in ctc_beam_search(probs):
                rank = logp - format_penalty(text, self.rules)
                if text not in scored or rank > scored[text][0]:
                    scored[text] = (rank, logp, two_line)
        if not scored:
            return None
        ranked = sorted(scored.items(), key=lambda kv: -kv[1][0])
        best, (_, best_logp, two_line) = ranked[0]
        fmt = match_format(best, self.rules) if self.rules else None
        return PlateRead(
            text=best,
            confidence=min(1.0, math.exp(best_logp)),
            char_confidences=char_confidences_for(best, probs_by_layout[two_line]),
            box=box if box is not None else (0, 0, w, h),
            candidates=tuple(Candidate(t, math.exp(lp)) for t, (_, lp, _) in ranked[: max(MIN_CANDIDATES, 8)]),
            region=fmt.region if fmt else None,
            plate_format=fmt.name if fmt else None,
            detection_score=score,
            two_line=two_line,
        )

    def recognize(self, frame: np.ndarray) -> list[PlateRead]:
        """All plates read in a BGR frame, in order of detection score."""
        return self.detect_and_read(frame)[1]

    def detect_and_read(self, frame: np.ndarray) -> tuple[list[Detection], list[PlateRead]]:
        """The detections and the plates read from them. When nothing at full scale gives a read (no box, or only
        boxes that are not plates, such as a grille beside a plate too close to the camera for the network's
        receptive field), the frame is searched again zoomed out (``detector.zoom_out``)."""
        found = self.detector.detect_at(frame, 1.0)
        reads = self.read_detections(frame, found)
        if not reads and self.detector.zoom_out > 1:
            zoomed = self.detector.detect_at(frame, self.detector.zoom_out)
            zoomed_reads = self.read_detections(frame, zoomed)
            if zoomed_reads or not found:
                return zoomed, zoomed_reads
        return found, reads

    def read_detections(self, frame: np.ndarray, detections: list[Detection]) -> list[PlateRead]:
        """Read each detected box; keeps reads of at least ``min_chars`` characters and ``min_confidence``
        (badges, signs and tail lights that the detector takes for plates mostly fail one or the other)."""
        reads = []
        for det in detections:
            crop = crop_box(frame, det.box)
            if crop.shape[0] < 4 or crop.shape[1] < 8:
                continue
            w, h = det.box[2], det.box[3]
            r = self.read_crop(crop, det.box, det.score, maybe_two_line=w / max(h, 1) < TWO_LINE_MAX_BOX_ASPECT)
            if r is not None and len(r.text) >= self.min_chars and r.confidence >= self.min_confidence:
                reads.append(r)
        return reads
