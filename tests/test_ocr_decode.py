"""CTC decoding and candidate ranking, driven by hand-made probability matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.vision.detector import Detection
from edge.vision.ocr import (
    BLANK,
    CHARSET,
    NUM_CLASSES,
    PlateReader,
    char_confidences_for,
    ctc_beam_search,
    greedy_char_confidences,
    prepare_crop,
    unfold_two_line,
)
from edge.vision.recognizer import Recognizer
from edge.vision.runtime import TensorSpec

T = 32


def probs_for(steps: list[dict[str, float]]) -> np.ndarray:
    """T x C matrix: each listed step gets the given character probabilities, the rest go to blank."""
    p = np.zeros((T, NUM_CLASSES), np.float32)
    p[:, BLANK] = 1.0
    for t, dist in enumerate(steps):
        p[t, BLANK] = 1.0 - sum(dist.values())
        for ch, v in dist.items():
            p[t, CHARSET.index(ch) + 1] = v
    return p


def spell(text: str, conf: float = 0.95) -> list[dict[str, float]]:
    steps: list[dict[str, float]] = []
    for ch in text:
        steps += [{ch: conf}, {}]  # a blank between, so repeats survive
    return steps


def test_beam_search_reads_text_and_repeats() -> None:
    ranked = ctc_beam_search(probs_for(spell("ABB1100")))
    assert ranked[0][0] == "ABB1100"
    assert ranked[0][1] > math.log(0.5)


def ctc_forward(probs: np.ndarray, text: str) -> float:
    """Exact probability of ``text`` under the CTC model: the sum over all of its alignments (forward algorithm)."""
    ext = [BLANK]
    for ch in text:
        ext += [CHARSET.index(ch) + 1, BLANK]
    alpha = np.zeros(len(ext))
    alpha[0] = probs[0, ext[0]]
    alpha[1] = probs[0, ext[1]] if len(ext) > 1 else 0.0
    for t in range(1, probs.shape[0]):
        nxt = np.zeros_like(alpha)
        for s in range(len(ext)):
            a = alpha[s] + (alpha[s - 1] if s >= 1 else 0.0)
            if s >= 2 and ext[s] != BLANK and ext[s] != ext[s - 2]:
                a += alpha[s - 2]
            nxt[s] = a * probs[t, ext[s]]
        alpha = nxt
    return float(alpha[-1] + (alpha[-2] if len(ext) > 1 else 0.0))


def test_beam_search_scores_are_exact_ctc_probabilities() -> None:
    """With a beam wide enough to keep every prefix and no pruning, each candidate's score is its exact CTC
    probability (checked against the forward algorithm), including repeats that need a blank between them."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = np.full((7, NUM_CLASSES), 1e-9)
        p[:, :4] = rng.dirichlet(np.ones(4), size=7)  # blank, 0, 1, 2
        p /= p.sum(1, keepdims=True)
        ranked = ctc_beam_search(p, beam=10_000, top_k=50, prune=1e-6, sure_blank=1.1)
        assert ranked
        for text, logp in ranked[:20]:
            assert logp == pytest.approx(math.log(ctc_forward(p, text)), abs=1e-6)


def test_beam_search_gap_steps_keep_exact_scores() -> None:
    """The fast path for near-certain blanks keeps the scores of what it lets through exact."""
    p = probs_for(spell("AB", 0.9))
    p[4:, BLANK] = 0.9995
    p[4:, 1] = 0.0005
    ranked = ctc_beam_search(p, beam=50, top_k=5)
    p_clipped = np.clip(p.astype(np.float64), 1e-12, 1.0)
    q = p_clipped.copy()
    q[4:, 1:] = 0.0  # the mass that gap steps leave to characters is dropped
    assert ranked[0][0] == "AB"
    assert ranked[0][1] == pytest.approx(math.log(ctc_forward(q, "AB")), abs=1e-6)


def test_at_least_five_sorted_alternatives_even_when_sure() -> None:
    ranked = ctc_beam_search(probs_for(spell("7ABC123", 0.999)))
    assert len(ranked) >= 5
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert len({t for t, _ in ranked}) == len(ranked)


def test_greedy_char_confidences() -> None:
    p = probs_for([{"A": 0.9}, {"A": 0.97}, {}, {"7": 0.6}])
    text, confs = greedy_char_confidences(p)
    assert text == "A7"
    assert confs == (np.float32(0.97), np.float32(0.6))
    assert char_confidences_for("A7", p) == confs


class FakeOCR:
    """Returns a fixed probability matrix: isolates the ranking logic from the network."""

    def __init__(self, probs: np.ndarray) -> None:
        self._p = probs

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", (1, 32, 128, 1), "float32"),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("y", (1, T, NUM_CLASSES), "float32"),)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return [self._p[None]]


def _reader_for(steps: list[dict[str, float]], regions: tuple[str, ...]) -> Recognizer:
    return Recognizer(detector=None, reader=PlateReader(FakeOCR(probs_for(steps))), regions=regions)  # type: ignore[arg-type]


def test_brazil_format_reorders_but_never_invents() -> None:
    # the model prefers 'O' (a letter) in a digit position; the Brazilian format prefers the digit
    steps = [*spell("ABC"), {"O": 0.6, "0": 0.35}, {}, *spell("123")]
    crop = np.full((40, 160, 3), 200, np.uint8)
    plain = _reader_for(steps, ()).read_crop(crop)
    br = _reader_for(steps, ("br",)).read_crop(crop)
    assert plain is not None and br is not None
    assert plain.text == "ABCO123"
    assert br.text == "ABC0123" and br.plate_format == "br-old" and br.region == "br"
    # every candidate comes from the model's own beam: same set of strings with and without the rules
    assert {c.text for c in br.candidates} == {c.text for c in plain.candidates}
    assert len(br.candidates) >= 5


def test_no_format_match_keeps_model_order() -> None:
    steps = spell("XYZ")  # matches no Brazilian format: nothing is forced into one
    r = _reader_for(steps, ("br",)).read_crop(np.full((40, 160, 3), 200, np.uint8))
    assert r is not None and r.text == "XYZ" and r.plate_format is None


def test_prepare_crop_shape_range_and_unfold() -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    x = prepare_crop(crop, 32, 128)
    assert x.shape == (32, 128) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    unfolded = unfold_two_line(crop[:, :, 0])
    assert unfolded.shape[1] == 140 and unfolded.shape[0] == 28


class SequenceOCR(FakeOCR):
    """Returns the given matrices in turn, one per OCR pass: one per crop of a plate read from several crops."""

    def __init__(self, probs: list[np.ndarray]) -> None:
        super().__init__(probs[0])
        self._all = probs
        self.calls = 0

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        p = self._all[self.calls % len(self._all)]
        self.calls += 1
        return [p[None]]


def _views_reader(matrices: list[np.ndarray], views: int) -> tuple[Recognizer, SequenceOCR]:
    ocr = SequenceOCR(matrices)
    return Recognizer(detector=None, reader=PlateReader(ocr), views=views), ocr  # type: ignore[arg-type]


def test_a_plate_read_from_three_crops_follows_the_majority() -> None:
    # the first crop (the trained margin) slightly prefers a wrong 8; the tight and the wide crop read the 3 clearly
    first = probs_for([*spell("ABC12"), {"8": 0.55, "3": 0.4}, {}, *spell("4")])
    others = probs_for(spell("ABC1234"))
    frame = np.full((200, 300, 3), 180, np.uint8)
    det = Detection(box=(100, 80, 120, 30), score=0.9)
    one, _ = _views_reader([first], views=1)
    three, ocr = _views_reader([first, others, others], views=3)
    assert [r.text for r in one.read_detections(frame, [det])] == ["ABC1284"]
    reads = three.read_detections(frame, [det])
    assert ocr.calls == 3
    assert [r.text for r in reads] == ["ABC1234"]
    assert reads[0].candidates[0].text == "ABC1234" and len(reads[0].candidates) >= 5
    assert "ABC1284" in {c.text for c in reads[0].candidates}


def test_a_reading_only_one_crop_supports_is_not_confident() -> None:
    # a grille or a sign: one crop reads it confidently, the other two read something else entirely
    lone = probs_for(spell("JCCJCJ", 0.9))
    frame = np.full((200, 300, 3), 180, np.uint8)
    det = Detection(box=(100, 80, 120, 30), score=0.9)
    alone, _ = _views_reader([lone], views=1)
    single = alone.read_detections(frame, [det])
    assert single and single[0].confidence > 0.3  # one crop alone: it passes the filter
    three, _ = _views_reader([lone, probs_for(spell("7Q", 0.5)), probs_for(spell("KX4", 0.5))], views=3)
    r = three.read_views([frame[80:110, 100:220]] * 3, (100, 80, 120, 30))
    assert r is not None and r.text == "JCCJCJ"
    assert r.confidence < three.min_confidence < single[0].confidence
    assert three.read_detections(frame, [det]) == []


def test_a_third_crop_is_read_only_when_the_first_two_disagree_or_are_unsure() -> None:
    frame = np.full((200, 300, 3), 180, np.uint8)
    det = Detection(box=(100, 80, 120, 30), score=0.9)
    sure = probs_for(spell("ABC1234", 0.99))  # p about 0.93
    unsure = probs_for(spell("ABC1234", 0.85))  # p about 0.32: under AGREE_CONFIDENCE
    other = probs_for(spell("ABC1284", 0.99))
    for first, second, read in [(sure, sure, 2), (unsure, unsure, 3), (sure, other, 3)]:
        three, ocr = _views_reader([first, second, sure], views=3)
        reads = three.read_detections(frame, [det])
        assert ocr.calls == reads[0].views_read == read
        assert reads[0].text == "ABC1234"
    # the boundary: agreeing crops at (a hair over) the threshold are sure enough, just under it they are not
    three, ocr = _views_reader([sure, sure, sure], views=3)
    three.agree_confidence = math.exp(math.log(0.99) * 7) - 1e-9
    assert three.read_detections(frame, [det])[0].views_read == 2
    three, ocr = _views_reader([sure, sure, sure], views=3)
    three.agree_confidence = 0.95
    assert three.read_detections(frame, [det])[0].views_read == 3


def test_views_must_be_one_to_three() -> None:
    for bad in (0, 4):
        with pytest.raises(ValueError, match="views"):
            _views_reader([probs_for(spell("A1"))], views=bad)
