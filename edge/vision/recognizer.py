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
# A detected box is read from up to three crops (the trained margin, a tight and a wide one) whose candidate scores
# are summed: a character cut by a tight box or confused by a bolt or frame in one crop is usually right in the others.
# On the training split this fixed 4 of 120 BR/US scene reads and broke none (MODEL_CARD.md).
CROP_VIEWS = ((CROP_MARGIN_X, CROP_MARGIN_Y), (0.02, 0.05), (0.12, 0.25))
ABSENT_PENALTY = 2.0  # a candidate missing from one crop's beam scores that crop's worst candidate minus this
# The crops after the second are read only when the first two disagree on the best text or agree on it with a
# geometric-mean probability under this. Two crops that agree with p >= 0.5 were never overturned by the third on the
# plates-dev scenes (0 of 164 agreeing reads on the training split, 0 of 24 on the validation split); the one read
# the third crop corrected agreed at p 0.22. On the validation scenes this reads 2.4 crops per plate instead of 3.
AGREE_CONFIDENCE = 0.5
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
    views_read: int = 1  # crops of the plate that were read (see AGREE_CONFIDENCE)


def crop_box(
    frame: np.ndarray, box: tuple[int, int, int, int], mx: float = CROP_MARGIN_X, my: float = CROP_MARGIN_Y
) -> np.ndarray:
    """The plate region plus a margin, clipped to the frame."""
    x, y, w, h = box
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, int(round(x - w * mx))), max(0, int(round(y - h * my)))
    x1, y1 = min(fw, int(round(x + w * (1 + mx)))), min(fh, int(round(y + h * (1 + my))))
    return frame[y0:y1, x0:x1]


def _agree(a: dict[str, tuple[float, float, bool]], b: dict[str, tuple[float, float, bool]], confidence: float) -> bool:
    """Whether two crops' candidates (text -> (rank score, log p, two_line)) have the same best text, with a
    geometric-mean probability of at least ``confidence``."""
    if not a or not b:
        return False
    best_a, best_b = (min(v, key=lambda t: (-v[t][0], t)) for v in (a, b))  # as read_views ranks
    return best_a == best_b and (a[best_a][1] + b[best_b][1]) / 2 >= math.log(confidence)


class Recognizer:
    """Detects and reads plates; ``regions`` are the formats expected where the unit is installed."""

    def __init__(
        self,
        detector: PlateDetector,
        reader: PlateReader,
        regions: tuple[str, ...] = (),
        min_confidence: float = 0.1,
        min_chars: int = 3,
        views: int = len(CROP_VIEWS),
        agree_confidence: float = AGREE_CONFIDENCE,
    ) -> None:
        if not 1 <= views <= len(CROP_VIEWS):
            raise ValueError(f"views must be 1 to {len(CROP_VIEWS)}, got {views}")
        self.detector = detector
        self.reader = reader
        self.rules = rules_for(regions)
        self.min_confidence = min_confidence
        self.min_chars = min_chars
        self.views = CROP_VIEWS[:views]
        self.agree_confidence = agree_confidence  # above 1: every crop is always read

    @classmethod
    def from_files(
        cls,
        detector_path: Path,
        ocr_path: Path,
        regions: tuple[str, ...] = (),
        threads: int = 2,
        threshold: float = 0.3,
        views: int = len(CROP_VIEWS),
    ) -> Recognizer:
        det = PlateDetector(load_model(detector_path, threads), threshold=threshold)
        return cls(det, PlateReader(load_model(ocr_path, threads)), regions, views=views)

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
        return self.read_views([crop], box, score, maybe_two_line)

    def _score_view(
        self, crop: np.ndarray, maybe_two_line: bool | None
    ) -> tuple[dict[str, tuple[float, float, bool]], dict[bool, np.ndarray]]:
        """One crop's candidates: text -> (rank score, log p, two_line), and the probabilities per layout."""
        h, w = crop.shape[:2]
        if maybe_two_line is None:
            maybe_two_line = w / max(h, 1) < TWO_LINE_MAX_ASPECT
        scored: dict[str, tuple[float, float, bool]] = {}
        probs_by_layout: dict[bool, np.ndarray] = {}
        for two_line in [False, True] if maybe_two_line else [False]:
            probs = self.reader.probabilities(crop, two_line)
            probs_by_layout[two_line] = probs
            for text, logp in ctc_beam_search(probs):
                rank = logp - format_penalty(text, self.rules)
                if text not in scored or rank > scored[text][0]:
                    scored[text] = (rank, logp, two_line)
        return scored, probs_by_layout

    def read_views(
        self,
        crops: list[np.ndarray],
        box: tuple[int, int, int, int] | None = None,
        score: float = 1.0,
        maybe_two_line: bool | None = None,
    ) -> PlateRead | None:
        """Read one plate from several crops of it. Each candidate's rank scores (log p less the format penalty)
        are summed over the crops; a crop whose beam lacks it counts its worst candidate less ``ABSENT_PENALTY``.
        The confidence of a text is the geometric mean of its probability over the crops (with the same floor),
        so a reading that only one crop supports, as a grille or a sign often gives, is not confident.
        Crops after the second are skipped when the first two agree confidently (``agree_confidence``)."""
        views: list[tuple[dict[str, tuple[float, float, bool]], dict[bool, np.ndarray]]] = []
        for i, crop in enumerate(crops):
            if i == 2 and _agree(views[0][0], views[1][0], self.agree_confidence):
                break
            views.append(self._score_view(crop, maybe_two_line))
        read = len(views)
        views = [v for v in views if v[0]]
        if not views:
            return None
        texts = {t for scored, _ in views for t in scored}
        rank_floor = [min(r for r, _, _ in scored.values()) - ABSENT_PENALTY for scored, _ in views]
        logp_floor = [min(lp for _, lp, _ in scored.values()) - ABSENT_PENALTY for scored, _ in views]

        def total(text: str) -> float:
            return sum(scored[text][0] if text in scored else f for (scored, _), f in zip(views, rank_floor))

        def geo_mean_p(text: str) -> float:
            logs = [scored[text][1] if text in scored else f for (scored, _), f in zip(views, logp_floor)]
            return math.exp(sum(logs) / len(logs))

        ranked = sorted(texts, key=lambda t: (-total(t), t))
        best = ranked[0]
        scored, probs_by_layout = max(views, key=lambda v: v[0][best][1] if best in v[0] else -math.inf)
        two_line = scored[best][2]
        fmt = match_format(best, self.rules) if self.rules else None
        h, w = crops[0].shape[:2]
        return PlateRead(
            text=best,
            confidence=min(1.0, geo_mean_p(best)),
            char_confidences=char_confidences_for(best, probs_by_layout[two_line]),
            box=box if box is not None else (0, 0, w, h),
            candidates=tuple(Candidate(t, min(1.0, geo_mean_p(t))) for t in ranked[: max(MIN_CANDIDATES, 8)]),
            region=fmt.region if fmt else None,
            plate_format=fmt.name if fmt else None,
            detection_score=score,
            two_line=two_line,
            views_read=read,
        )

    def recognize(self, frame: np.ndarray, views: int | None = None) -> list[PlateRead]:
        """All plates read in a BGR frame, in order of detection score; ``views`` crops per plate at most (default:
        the recogniser's own), so that a caller that is falling behind can trade accuracy for time per frame."""
        return self.detect_and_read(frame, views)[1]

    def detect_and_read(self, frame: np.ndarray, views: int | None = None) -> tuple[list[Detection], list[PlateRead]]:
        """The detections and the plates read from them. When nothing at full scale gives a read (no box, or only
        boxes that are not plates, such as a grille beside a plate too close to the camera for the network's
        receptive field), the frame is searched again zoomed out (``detector.zoom_out``)."""
        found = self.detector.detect_at(frame, 1.0)
        reads = self.read_detections(frame, found, views)
        if not reads and self.detector.zoom_out > 1:
            zoomed = self.detector.detect_at(frame, self.detector.zoom_out)
            zoomed_reads = self.read_detections(frame, zoomed, views)
            if zoomed_reads or not found:
                return zoomed, zoomed_reads
        return found, reads

    def read_detections(
        self, frame: np.ndarray, detections: list[Detection], views: int | None = None
    ) -> list[PlateRead]:
        """Read each detected box; keeps reads of at least ``min_chars`` characters and ``min_confidence``
        (badges, signs and tail lights that the detector takes for plates mostly fail one or the other)."""
        reads = []
        for det in detections:
            chosen = self.views if views is None else self.views[: max(1, views)]
            crops = [crop_box(frame, det.box, mx, my) for mx, my in chosen]
            crops = [c for c in crops if c.shape[0] >= 4 and c.shape[1] >= 8]
            if not crops:
                continue
            w, h = det.box[2], det.box[3]
            r = self.read_views(crops, det.box, det.score, maybe_two_line=w / max(h, 1) < TWO_LINE_MAX_BOX_ASPECT)
            if r is not None and len(r.text) >= self.min_chars and r.confidence >= self.min_confidence:
                reads.append(r)
        return reads
