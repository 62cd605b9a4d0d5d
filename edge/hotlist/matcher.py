"""Every read against every list in force: exact, look-alike, partial plates, and the read's alternatives.

How a read is checked (per text: the read's best text, then up to MAX_ALTERNATIVES alternative candidates):

- fixed plates: the text is folded (``lookalike.py``) and hashed; ``searchsorted`` gives the entries with the
  same folded hash; each is compared character by character with the stored plate: equal is ``exact``, equal
  up to at most ``lookalike_limit`` look-alike characters is ``lookalike``, anything else (a hash collision) is
  no hit;
- partial plates: those whose key piece occurs in the folded text, then a regex on the fold, then an alignment
  that finds the fewest (and, among equals, least confident) look-alike substitutions;
- then expiry (``expires < now`` never hits) and state (both known and different: no hit).

One hit per entry is kept, the best by score; hits are returned best first. Entries are decoded only for the
hits that are returned. Cost (scripts/bench_hotlist.py, 1,000,000 entries): ~0.1 ms a read with 6 texts, plus
~10 us a hit; a read that matches hundreds of entries (a two-character read against a list full of
two-character plates) takes milliseconds. The score bands keep the documented
order: exact (1.0) > look-alike (0.71-0.95: fewer, and less confident, substituted characters score higher) >
partial plate (0.43-0.65) > anything matched only through an alternative candidate (< 0.41).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .entry import Hit, HotEntry, Substitution
from .index import MAX_PLATE_LEN, ListIndex, is_pattern, normalize_plate, plate_problem
from .lookalike import LookalikeTable

#: Alternative candidates of a read that are checked too (the OCR's top 5 after its best text).
MAX_ALTERNATIVES = 5
MAX_LOOKALIKE_LIMIT = 4

EXACT = "exact"
LOOKALIKE = "lookalike"
WILDCARD = "wildcard"

# (substitution count, sum of their confidences, substitutions), or None where no alignment exists
_Cell = tuple[int, float, tuple[Substitution, ...]] | None


@dataclass(frozen=True, slots=True)
class _Text:
    """One text of a read to check: its characters' confidences and which reading it is."""

    text: str
    folded: str
    confidences: tuple[float, ...]
    rank: int  # 0: the read's best text; k: its k-th alternative
    confidence: float  # the candidate's confidence (1.0 for the best text: not used there)


def score(
    kind: str,
    substitutions: Sequence[Substitution],
    candidate_rank: int = 0,
    candidate_confidence: float = 1.0,
    specificity: float = 1.0,
) -> float:
    """The ranking score (0..1) of a match; see the module docstring for the bands.

    A look-alike character the OCR was unsure of is more likely a misread, so it costs less than a confident one.
    ``specificity`` (partial plates) is the share of the read's characters that the pattern names.
    """
    if kind == EXACT:
        base = 1.0
    elif kind == LOOKALIKE:
        base = 0.95 - sum(0.04 + 0.02 * _unit(s.confidence) for s in substitutions)
    elif kind == WILDCARD:
        base = 0.55 + 0.1 * _unit(specificity) - sum(0.02 + 0.01 * _unit(s.confidence) for s in substitutions)
    else:
        raise ValueError(f"unknown match kind {kind!r}")
    if candidate_rank == 0:
        return base
    return max(0.0, 0.4 * base * (0.5 + 0.5 * _unit(candidate_confidence)) - 0.001 * candidate_rank)


def _unit(x: float) -> float:
    """Clamp to 0..1; NaN counts as 1 (an unknown confidence is not evidence of a misread)."""
    return 1.0 if math.isnan(x) else min(1.0, max(0.0, x))


class Matcher:
    """Checks reads against the lists in force. Immutable: when a list changes, build a new one and swap it."""

    __slots__ = ("_by_list", "_indexes", "_limit", "_table")

    def __init__(self, indexes: Sequence[ListIndex], lookalike_limit: int = 2) -> None:
        if not 0 <= lookalike_limit <= MAX_LOOKALIKE_LIMIT:
            raise ValueError(f"lookalike_limit must be 0..{MAX_LOOKALIKE_LIMIT}, got {lookalike_limit}")
        tables = {ix.table for ix in indexes}
        if len(tables) > 1:
            raise ValueError("all hot list indexes of a matcher must use the same look-alike table")
        self._indexes = tuple(indexes)
        self._limit = lookalike_limit
        self._table = next(iter(tables)) if tables else LookalikeTable()
        self._by_list = {ix.info.list_id: ix for ix in self._indexes}

    @property
    def indexes(self) -> tuple[ListIndex, ...]:
        return self._indexes

    @property
    def lookalike_limit(self) -> int:
        return self._limit

    def match(
        self,
        text: str,
        char_confidences: Sequence[float],
        candidates: Sequence[tuple[str, float]] = (),
        state: str | None = None,
        now: float | None = None,
    ) -> list[Hit]:
        """Every entry the read matches, one hit each, best first."""
        now = time.time() if now is None else now
        read_state = _state(state)
        # best match per (index, entry) first; entries are decoded only for the winners, once each
        found: dict[tuple[int, int], _Found] = {}
        for t in self._texts(text, char_confidences, candidates):
            for k, ix in enumerate(self._indexes):
                for i in ix.fixed_candidates(t.folded):
                    exp = ix.expires(i)
                    if exp is not None and exp < now:
                        continue
                    subs = self._positional(ix.match_plate(i), t)
                    if subs is None:
                        continue  # a hash collision, or more look-alikes than the limit
                    if read_state is not None and _state_conflict(read_state, ix.state(i)):
                        continue
                    kind = EXACT if not subs else LOOKALIKE
                    _better(found, (k, i), _Found(score(kind, subs, t.rank, t.confidence), kind, t, subs))
                for wp in ix.wildcard_candidates(t.folded):
                    if not wp.min_len <= len(t.text) <= wp.max_len or wp.regex.fullmatch(t.folded) is None:
                        continue
                    exp = ix.expires(wp.index)
                    if exp is not None and exp < now:
                        continue
                    subs = self._align(wp.plate, t)
                    if subs is None:
                        continue
                    if read_state is not None and _state_conflict(read_state, ix.state(wp.index)):
                        continue
                    s = score(WILDCARD, subs, t.rank, t.confidence, wp.literals / len(t.text))
                    _better(found, (k, wp.index), _Found(s, WILDCARD, t, subs))
        best: dict[tuple[str, str], Hit] = {}
        for (k, i), f in found.items():
            ix = self._indexes[k]
            hit = Hit(ix.entry(i), ix.info.version, f.text.text, f.text.rank, f.kind, f.substitutions, f.score)
            _keep(best, hit)  # the same entry id twice in a list, or one list in two indexes
        return sorted(best.values(), key=lambda h: (-h.score, h.entry.list_id, h.entry.entry_id))

    def match_one(
        self,
        entry: HotEntry,
        text: str,
        char_confidences: Sequence[float],
        candidates: Sequence[tuple[str, float]] = (),
        state: str | None = None,
        now: float | None = None,
        *,
        list_version: int | None = None,
    ) -> Hit | None:
        """The best hit of one (new) entry on one (recent) read, or None: the same rules as ``match``.

        ``list_version`` defaults to the version of this matcher's index for the entry's list (0 if none).
        """
        norm = normalize_plate(entry.plate)
        problem = plate_problem(norm)
        if problem is not None:
            raise ValueError(f"hot list entry {entry.entry_id}: {problem}")
        now = time.time() if now is None else now
        if entry.expires is not None and entry.expires < now:
            return None
        if _state_conflict(_state(state), entry.state):
            return None
        if list_version is None:
            ix = self._by_list.get(entry.list_id)
            list_version = ix.info.version if ix is not None else 0
        wild = is_pattern(norm)
        best: dict[tuple[str, str], Hit] = {}
        for t in self._texts(text, char_confidences, candidates):
            if wild:
                subs = self._align(norm, t)
                if subs is not None:
                    literals = sum(c not in "*?" for c in norm)
                    s = score(WILDCARD, subs, t.rank, t.confidence, literals / len(t.text))
                    _keep(best, Hit(entry, list_version, t.text, t.rank, WILDCARD, subs, s))
            else:
                subs = self._positional(norm, t)
                if subs is not None:
                    kind = EXACT if not subs else LOOKALIKE
                    hit = Hit(entry, list_version, t.text, t.rank, kind, subs, score(kind, subs, t.rank, t.confidence))
                    _keep(best, hit)
        return next(iter(best.values()), None)

    # ---- internals

    def _texts(
        self, text: str, char_confidences: Sequence[float], candidates: Sequence[tuple[str, float]]
    ) -> list[_Text]:
        """The read's text and its first MAX_ALTERNATIVES distinct, well-formed alternatives."""
        out: list[_Text] = []
        seen: set[str] = set()
        main = text.upper()
        if len(char_confidences) != len(text):
            raise ValueError(
                f"char_confidences has {len(char_confidences)} values for a text of {len(text)} characters"
            )
        if _plate_text(main):
            out.append(_Text(main, self._table.fold(main), tuple(map(float, char_confidences)), 0, 1.0))
        seen.add(main)
        rank = 0
        for cand_text, cand_conf in candidates:
            if rank == MAX_ALTERNATIVES:
                break
            cand = cand_text.upper()
            if cand in seen:
                continue
            seen.add(cand)
            rank += 1
            if _plate_text(cand):
                conf = float(cand_conf)
                out.append(_Text(cand, self._table.fold(cand), (conf,) * len(cand), rank, conf))
        return out

    def _positional(self, plate: str, t: _Text) -> tuple[Substitution, ...] | None:
        """The look-alike substitutions that turn the read into a fixed plate, or None if it is not one."""
        text = t.text
        if len(plate) != len(text):
            return None
        if plate == text:
            return ()
        subs: list[Substitution] = []
        lookalike = self._table.lookalike
        for pos, (r, w) in enumerate(zip(text, plate)):
            if r == w:
                continue
            if not lookalike(r, w) or len(subs) == self._limit:
                return None
            subs.append(Substitution(pos, r, w, t.confidences[pos]))
        return tuple(subs)

    def _align(self, pattern: str, t: _Text) -> tuple[Substitution, ...] | None:
        """The fewest (then least confident) look-alike substitutions that make the read match a partial plate,
        within the limit, or None. A small dynamic programme over pattern x read (both at most 16 long)."""
        text, confs, limit = t.text, t.confidences, self._limit
        lookalike = self._table.lookalike
        n = len(text)
        # nxt[j]: the best cell matching the rest of the pattern to text[j:]
        nxt: list[_Cell] = [None] * (n + 1)
        nxt[n] = (0, 0.0, ())
        for c in reversed(pattern):
            cur: list[_Cell] = [None] * (n + 1)
            for j in range(n, -1, -1):
                if c == "*":
                    a, b = nxt[j], (cur[j + 1] if j < n else None)
                    cur[j] = a if b is None or (a is not None and a[:2] <= b[:2]) else b
                elif j < n:
                    r = nxt[j + 1]
                    if r is None:
                        continue
                    ch = text[j]
                    if c == "?" or c == ch:
                        cur[j] = r
                    elif r[0] < limit and lookalike(ch, c):
                        cur[j] = (r[0] + 1, r[1] + confs[j], (Substitution(j, ch, c, confs[j]), *r[2]))
            nxt = cur
        res = nxt[0]
        return None if res is None else res[2]


_PLATE_TEXT = re.compile(f"[A-Z0-9]{{1,{MAX_PLATE_LEN}}}").fullmatch


def _plate_text(text: str) -> bool:
    return _PLATE_TEXT(text) is not None


def _state(state: str | None) -> str | None:
    s = (state or "").strip().upper()
    return s or None


def _state_conflict(read_state: str | None, entry_state: str | None) -> bool:
    """True when both states are known and differ (a plate is unique only within its issuing state)."""
    if read_state is None:
        return False
    es = _state(entry_state)
    return es is not None and es != read_state


@dataclass(frozen=True, slots=True)
class _Found:
    """A match not yet turned into a Hit (its entry not yet decoded)."""

    score: float
    kind: str
    text: _Text
    substitutions: tuple[Substitution, ...]


def _better(found: dict[tuple[int, int], _Found], key: tuple[int, int], f: _Found) -> None:
    old = found.get(key)
    if old is None or f.score > old.score:
        found[key] = f


def _keep(best: dict[tuple[str, str], Hit], hit: Hit) -> None:
    """Keep the better hit per entry (list, entry id)."""
    key = (hit.entry.list_id, hit.entry.entry_id)
    old = best.get(key)
    if old is None or hit.score > old.score:
        best[key] = hit
