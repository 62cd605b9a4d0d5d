"""Hot list matching: look-alike and wildcard tables, limits, state, expiry, candidates, ranking, the compact index,
and a 50,000-entry check against a brute-force matcher written independently of the index."""

from __future__ import annotations

import itertools
import math
import random
import re
import string
from collections.abc import Iterable

import numpy as np
import pytest

from edge.hotlist import index as index_mod
from edge.hotlist.entry import Hit, HotEntry, ListInfo, Substitution
from edge.hotlist.index import ListIndex, SkippedEntry
from edge.hotlist.lookalike import DEFAULT_TABLE, LookalikeTable, LookalikeTableError
from edge.hotlist.matcher import MAX_ALTERNATIVES, Matcher, score

NOW = 1_800_000_000.0


def entry(
    plate: str,
    entry_id: str | None = None,
    *,
    state: str | None = "OR",
    expires: float | None = None,
    list_id: str = "ncic-or",
    **kw: str,
) -> HotEntry:
    return HotEntry(
        entry_id=entry_id or f"id-{plate}",
        list_id=list_id,
        plate=plate,
        state=state,
        list_code=kw.get("list_code", "STOLEN_VEHICLE"),
        reason=kw.get("reason", "Stolen vehicle"),
        case_number=kw.get("case_number", "NIC/V123456789"),
        entered=NOW - 86400,
        expires=expires,
        instructions=kw.get("instructions", "stop only with probable cause"),
        vehicle_description=kw.get("vehicle_description", ""),
    )


def build(entries: Iterable[HotEntry], list_id: str = "ncic-or", version: int = 7, **kw: object) -> ListIndex:
    es = list(entries)
    return ListIndex.build(ListInfo(list_id, version, NOW - 3600, len(es)), es, **kw)  # type: ignore[arg-type]


def confs(text: str, c: float = 0.9) -> list[float]:
    return [c] * len(text)


def only_hit(m: Matcher, text: str, **kw: object) -> Hit | None:
    hits = m.match(text, confs(text), now=NOW, **kw)  # type: ignore[arg-type]
    assert len(hits) <= 1
    return hits[0] if hits else None


# ---- the look-alike table


@pytest.mark.parametrize(
    "a,b",
    [
        ("0", "O"),
        ("O", "Q"),
        ("Q", "D"),
        ("0", "D"),
        ("1", "I"),
        ("I", "L"),
        ("1", "L"),
        ("8", "B"),
        ("5", "S"),
        ("2", "Z"),
        ("6", "G"),
    ],
)
def test_lookalike_pairs(a: str, b: str) -> None:
    assert DEFAULT_TABLE.lookalike(a, b) and DEFAULT_TABLE.lookalike(b, a)
    assert DEFAULT_TABLE.fold(a) == DEFAULT_TABLE.fold(b)


@pytest.mark.parametrize(
    "a,b",
    [
        ("7", "T"),
        ("1", "T"),
        ("1", "7"),
        ("4", "A"),
        ("U", "V"),
        ("M", "N"),
        ("C", "G"),
        ("E", "F"),
        ("K", "X"),
        ("B", "D"),
        ("S", "Z"),
        ("0", "8"),
        ("A", "A"),
        ("0", "0"),
    ],
)
def test_not_lookalikes(a: str, b: str) -> None:
    assert not DEFAULT_TABLE.lookalike(a, b)


def test_fold_maps_each_class_to_one_character_and_leaves_the_rest() -> None:
    assert DEFAULT_TABLE.fold("0OQD") == "0000"
    assert DEFAULT_TABLE.fold("B8S5Z2G6IL1") == "88552266111"
    assert DEFAULT_TABLE.fold("ACEHKMNPRTUVWXY3479*?") == "ACEHKMNPRTUVWXY3479*?"


@pytest.mark.parametrize(
    "classes,message",
    [(("0O", "OQ"), "disjoint"), (("0o",), "not a plate character"), (("0",), "at least two"), (("A*",), "plate")],
)
def test_bad_table_refused(classes: tuple[str, ...], message: str) -> None:
    with pytest.raises(LookalikeTableError, match=message):
        LookalikeTable(classes)


# ---- what matches and what must not (fixed and partial plates), through the index and through match_one

MATCH_TABLE = [
    # wanted, read, kind or None, substitutions
    ("7ABC123", "7ABC123", "exact", 0),
    ("7ABC123", "7A8C123", "lookalike", 1),
    ("7ABC123", "7A8C1Z3", "lookalike", 2),
    ("B0S1234", "8OS1234", "lookalike", 2),
    ("B0S1234", "8O51234", None, 3),  # three look-alikes, limit 2
    ("7ABC123", "7ABC12", None, 0),  # shorter
    ("7ABC123", "7ABC1234", None, 0),  # longer
    ("7ABC123", "7ABC124", None, 0),  # 3/4 are not look-alikes
    ("7TBC123", "71BC123", None, 0),  # T/1 left out on purpose
    ("4ABC123", "AABC123", None, 0),
    ("UVW123", "VVW123", None, 0),
    ("ODOQ", "0000", "lookalike", 4),  # 4 look-alikes of one class: over the limit
    ("7AB*", "7AB", "wildcard", 0),  # * may be empty
    ("7AB*", "7ABC123", "wildcard", 0),
    ("7AB*", "7A8C123", "wildcard", 1),
    ("7AB*", "7A8", "wildcard", 1),
    ("7AB*", "X7ABC12", None, 0),  # anchored at the start
    ("7AB*", "7A", None, 0),
    ("AB?123", "ABX123", "wildcard", 0),
    ("AB?123", "A8X1Z3", "wildcard", 2),
    ("AB?123", "ABXX123", None, 0),  # ? is exactly one character
    ("AB?123", "AB123", None, 0),
    ("*123", "ZZZ123", "wildcard", 0),
    ("*123", "ZZZ12", None, 0),
    ("AB*CD", "ABCD", "wildcard", 0),
    ("AB*CD", "AB1234CD", "wildcard", 0),
    ("AB*CD", "A8XC0", "wildcard", 2),
    ("AB*CD", "ABX6D", None, 0),  # 6 is G's look-alike, not C's
    ("B0S1*", "8O51X", None, 3),  # three look-alikes in a partial plate
    ("?0S*", "XOS", "wildcard", 1),
    ("7A?C*3", "7ABCDD3", "wildcard", 0),
]


def _expect(kind: str | None, subs: int, limit: int = 2) -> tuple[str | None, int | None]:
    if kind is None or subs > limit:
        return None, None
    return kind, subs


@pytest.mark.parametrize("wanted,read,kind,subs", MATCH_TABLE)
def test_match_table(wanted: str, read: str, kind: str | None, subs: int) -> None:
    e = entry(wanted)
    m = Matcher([build([e])], lookalike_limit=2)
    hit = only_hit(m, read)
    want_kind, want_subs = _expect(kind, subs)
    got = (hit.kind, len(hit.substitutions)) if hit else (None, None)
    assert got == (want_kind, want_subs)
    one = m.match_one(e, read, confs(read), now=NOW)
    assert ((one.kind, len(one.substitutions)) if one else (None, None)) == got
    if hit is not None:
        assert hit.entry == e and hit.matched_text == read and hit.candidate_rank == 0 and hit.list_version == 7
        for s in hit.substitutions:
            assert read[s.position] == s.read_char and DEFAULT_TABLE.lookalike(s.read_char, s.wanted_char)


@pytest.mark.parametrize(
    "wanted,read,limit,found",
    [
        ("B0S1234", "8O51234", 2, False),
        ("B0S1234", "8O51234", 3, True),
        ("B0S1*", "8O51X", 2, False),
        ("B0S1*", "8O51X", 3, True),
        ("7ABC123", "7A8C123", 0, False),
        ("7ABC123", "7ABC123", 0, True),
        ("ODOQ", "0000", 3, False),
        ("ODOQ", "0000", 4, True),
    ],
)
def test_lookalike_limit(wanted: str, read: str, limit: int, found: bool) -> None:
    e = entry(wanted)
    m = Matcher([build([e])], lookalike_limit=limit)
    assert (only_hit(m, read) is not None) is found
    assert (m.match_one(e, read, confs(read), now=NOW) is not None) is found


@pytest.mark.parametrize("limit", [-1, 5])
def test_limit_out_of_range_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="lookalike_limit"):
        Matcher([], lookalike_limit=limit)


def test_substitutions_carry_positions_and_the_read_characters_confidence() -> None:
    m = Matcher([build([entry("7ABC123"), entry("AB*CD", "p1")])])
    c = [0.99, 0.98, 0.31, 0.97, 0.96, 0.42, 0.95]
    (hit,) = m.match("7A8C1Z3", c, now=NOW)
    assert hit.kind == "lookalike"
    assert hit.substitutions == (Substitution(2, "8", "B", 0.31), Substitution(5, "Z", "2", 0.42))
    assert hit.explain() == (
        "lookalike: read 7A8C1Z3 vs wanted 7ABC123; look-alikes 8->B at 3 (OCR 31%), Z->2 at 6 (OCR 42%)"
    )
    (w,) = m.match("A8XYC0", [0.9, 0.2, 0.9, 0.9, 0.9, 0.6], now=NOW)
    assert w.kind == "wildcard"
    assert w.substitutions == (Substitution(1, "8", "B", 0.2), Substitution(5, "0", "D", 0.6))
    assert "wanted AB*CD" in w.explain()
    (x,) = m.match("7ABC123", confs("7ABC123"), now=NOW)
    assert x.explain() == "exact: read 7ABC123 = wanted 7ABC123" and x.score == 1.0


def test_wildcard_alignment_prefers_fewer_then_less_confident_substitutions() -> None:
    # "*BX*" against "8XBX": the BX can sit on "8X" (8->B) or on "BX" (none): the fewest wins
    m = Matcher([build([entry("*BX*", "p")])])
    (hit,) = m.match("8XBX", confs("8XBX"), now=NOW)
    assert hit.substitutions == ()
    # "?BX*" against "88X8": only the second 8 can be the B
    (hit,) = Matcher([build([entry("?BX*", "q")])]).match("88X8", [0.1, 0.5, 0.2, 0.3], now=NOW)
    assert hit.substitutions == (Substitution(1, "8", "B", 0.5),)
    # "*BB*" against "8B8": the pattern's BB can sit on "8B" or "B8": one substitution either way; the 8 the
    # OCR was less sure of is the more likely misread, so that alignment is kept
    m = Matcher([build([entry("*BB*", "r")])])
    (hit,) = m.match("8B8", [0.9, 0.9, 0.3], now=NOW)
    assert hit.substitutions == (Substitution(2, "8", "B", 0.3),)
    (hit,) = m.match("8B8", [0.3, 0.9, 0.9], now=NOW)
    assert hit.substitutions == (Substitution(0, "8", "B", 0.3),)


# ---- state and expiry


@pytest.mark.parametrize(
    "entry_state,read_state,found",
    [
        ("OR", "OR", True),
        ("OR", "or", True),
        ("OR", "CA", False),
        ("OR", None, True),
        (None, "CA", True),
        ("", "CA", True),
        ("OR", "", True),
        ("BR", "D", False),
    ],
)
def test_state_aware(entry_state: str | None, read_state: str | None, found: bool) -> None:
    fixed, partial = entry("7ABC123", state=entry_state), entry("9XY*", "p", state=entry_state)
    m = Matcher([build([fixed, partial])])
    for e, read in ((fixed, "7A8C123"), (partial, "9XY12")):
        hits = m.match(read, confs(read), state=read_state, now=NOW)
        assert (len(hits) == 1) is found
        assert (m.match_one(e, read, confs(read), state=read_state, now=NOW) is not None) is found


@pytest.mark.parametrize("expires,found", [(None, True), (NOW + 1, True), (NOW, True), (NOW - 0.001, False)])
def test_expired_entries_never_hit(expires: float | None, found: bool) -> None:
    fixed, partial = entry("7ABC123", expires=expires), entry("9XY*", "p", expires=expires)
    m = Matcher([build([fixed, partial])])
    for e, read in ((fixed, "7ABC123"), (fixed, "7A8C123"), (partial, "9XY12")):
        assert (len(m.match(read, confs(read), now=NOW)) == 1) is found
        assert (m.match_one(e, read, confs(read), now=NOW) is not None) is found


def test_now_defaults_to_the_clock() -> None:
    m = Matcher([build([entry("7ABC123", "old", expires=1.0), entry("7ABC123", "new", expires=None)])])
    assert [h.entry.entry_id for h in m.match("7ABC123", confs("7ABC123"))] == ["new"]


# ---- alternative candidates


def test_candidates_hit_with_their_rank_and_confidence() -> None:
    m = Matcher([build([entry("7ABC123"), entry("5XYZ789", "b")])])
    cands = [("7ABC128", 0.9), ("7ABC12B", 0.05), ("5XY2789", 0.04), ("7A8C123", 0.03)]
    hits = m.match("7ABC128", confs("7ABC128"), cands, now=NOW)
    by_id = {h.entry.entry_id: h for h in hits}
    assert set(by_id) == {"id-7ABC123", "b"}
    a = by_id["id-7ABC123"]  # 7A8C123 is the 3rd alternative (the first candidate is the read's own text)
    assert (a.kind, a.candidate_rank, a.matched_text) == ("lookalike", 3, "7A8C123")
    assert a.substitutions == (Substitution(2, "8", "B", 0.03),)  # a candidate's characters: its confidence
    assert "alternative reading #3" in a.explain()
    b = by_id["b"]
    assert (b.kind, b.candidate_rank, b.substitutions) == ("lookalike", 2, (Substitution(3, "2", "Z", 0.04),))


def test_only_the_top_alternatives_are_checked() -> None:
    m = Matcher([build([entry("7ABC123")])])
    alts = [(f"XX{i}", 0.1) for i in range(MAX_ALTERNATIVES)]
    assert m.match("QQQ", confs("QQQ"), [*alts, ("7ABC123", 0.05)], now=NOW) == []
    hits = m.match("QQQ", confs("QQQ"), [*alts[:-1], ("7ABC123", 0.05)], now=NOW)
    assert [(h.kind, h.candidate_rank) for h in hits] == [("exact", MAX_ALTERNATIVES)]


def test_malformed_texts_are_skipped_not_matched() -> None:
    m = Matcher([build([entry("7AB*", "p"), entry("7ABC123")])])
    assert m.match("7AB-123", confs("7AB-123"), [("7AB?", 0.5), ("", 0.4)], now=NOW) == []
    # lower case is read as upper case
    assert [h.entry.entry_id for h in m.match("7abc123", confs("7abc123"), now=NOW)] == ["id-7ABC123", "p"]
    with pytest.raises(ValueError, match="char_confidences has 2 values for a text of 7"):
        m.match("7ABC123", [0.9, 0.9], now=NOW)


# ---- de-duplication and ranking


def test_one_hit_per_entry_the_best_one() -> None:
    e = entry("7ABC123")
    m = Matcher([build([e])])
    hits = m.match("7A8C123", confs("7A8C123"), [("7A8C123", 0.9), ("7ABC123", 0.8), ("7A8C12Z", 0.7)], now=NOW)
    assert len(hits) == 1
    assert (hits[0].kind, hits[0].candidate_rank) == ("lookalike", 0)  # the read's own text beats an alternative
    # the same plate on two lists is two entries: two hits
    m2 = Matcher([build([e]), build([entry("7ABC123", list_id="bolo-portland")], list_id="bolo-portland", version=2)])
    hits = m2.match("7ABC123", confs("7ABC123"), now=NOW)
    assert sorted((h.entry.list_id, h.list_version) for h in hits) == [("bolo-portland", 2), ("ncic-or", 7)]


def test_ranking_exact_lookalike_wildcard_candidate() -> None:
    es = [
        entry("801234", "exact"),
        entry("B01234", "sub-unsure"),  # 8->B where the OCR was unsure
        entry("8O1234", "sub-sure"),  # 0->O where it was sure
        entry("BO1234", "two-subs"),
        entry("80*", "wildcard"),
        entry("QQQ999", "candidate"),
    ]
    m = Matcher([build(es)])
    hits = m.match("801234", [0.3, 0.95, 0.9, 0.9, 0.9, 0.9], [("801234", 0.9), ("QQQ999", 0.8)], now=NOW)
    assert [h.entry.entry_id for h in hits] == ["exact", "sub-unsure", "sub-sure", "two-subs", "wildcard", "candidate"]
    assert all(a.score > b.score for a, b in itertools.pairwise(hits))
    assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_score_bands_hold_at_their_edges() -> None:
    sure = [Substitution(i, "8", "B", 1.0) for i in range(4)]
    unsure = [Substitution(i, "8", "B", 0.0) for i in range(4)]
    assert score("exact", ()) == 1.0
    assert score("lookalike", sure) > score("wildcard", (), specificity=1.0)
    assert score("lookalike", unsure[:1]) > score("lookalike", sure[:1]) > score("lookalike", unsure[:2])
    assert score("wildcard", sure, specificity=0.0) > score("exact", (), candidate_rank=1, candidate_confidence=1.0)
    assert score("lookalike", (), candidate_rank=1, candidate_confidence=math.nan) >= 0.0
    with pytest.raises(ValueError):
        score("fuzzy", ())


# ---- the index


def test_hash_collisions_never_hit() -> None:
    """Every fixed plate gets the same hash: the matcher must tell them apart by the stored plate."""
    es = [entry("7ABC123"), entry("7ABC124", "b"), entry("XYZ999", "c"), entry("7A8C123", "d", state="CA")]
    ix = build(es, hash_fn=lambda folded: 42)
    assert sorted(ix.fixed_candidates("ANYTHING")) == [0, 1, 2, 3]  # the collisions are real
    m = Matcher([ix])
    hits = m.match("7ABC123", confs("7ABC123"), state="OR", now=NOW)
    assert [(h.entry.entry_id, h.kind) for h in hits] == [("id-7ABC123", "exact")]
    assert m.match("NOPE99", confs("NOPE99"), now=NOW) == []
    assert m.match("7ABC12", confs("7ABC12"), now=NOW) == []
    # and a hash over 64 bits or negative is folded into 64 bits, not an error
    big = Matcher([build(es, hash_fn=lambda f: -(hash(f) % 1000) - 2**70)])
    assert [h.entry.entry_id for h in big.match("XYZ999", confs("XYZ999"), now=NOW)] == ["c"]


def test_round_trip_of_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "MAX_SHARED_STRINGS", 3)  # past it, repeated fields are stored inline
    es = [
        HotEntry(
            "NIC/V000000001",
            "ncic-or",
            "7ABC123",
            "OR",
            "STOLEN_VEHICLE",
            "Stolen vehicle",
            "CASE-1",
            1_700_000_000.25,
            None,
            "stop only with probable cause",
            "2015 HONDA CIVIC BLK",
        ),
        HotEntry(
            "m-1", "manual", "7ab-c12", None, "BOLO", "Entführung: Kind (AMBER) ✓", "", 0.0, 2_000_000_000.5, "", ""
        ),
        HotEntry("m-2", "manual", "AB?1*", "", "OWN_CODE", "r" * 32767, "c" * 200, 1e9, 1e9 + 1, "i\n2", "d"),
        HotEntry("x", "l", "Z9", "D", "GANG", "Gang member", "42", -5.0, 0.0, "inst-4", "desc"),
        HotEntry("y", "l", "Z9", "D", "GANG", "Gang member", "42", 5.0, None, "inst-5", "desc"),
    ]
    ix = build(es)
    assert len(ix) == 5 and ix.wildcard_count == 1 and ix.skipped_count == 0
    assert [ix.entry(i) for i in range(len(ix))] == es
    assert list(ix.entries()) == es
    assert [ix.plate(i) for i in range(5)] == [e.plate for e in es]
    assert ix.info == ListInfo("ncic-or", 7, NOW - 3600, 5)
    with pytest.raises(IndexError):
        ix.entry(5)
    with pytest.raises(IndexError):
        ix.entry(-1)
    assert [ix.state(i) for i in range(5)] == [e.state for e in es]  # shared and inline states alike
    assert [ix.match_plate(i) for i in range(5)] == ["7ABC123", "7ABC12", "AB?1*", "Z9", "Z9"]
    m = Matcher([ix])
    # the entry stored with dashes and lower case matches its normalized read
    assert [h.entry.entry_id for h in m.match("7ABC12", confs("7ABC12"), now=NOW)] == ["m-1"]
    # state held inline (the table was full): still checked; "x" has expired
    assert [h.entry for h in m.match("Z9", confs("Z9"), state="D", now=NOW)] == [es[4]]
    assert m.match("Z9", confs("Z9"), state="F", now=NOW) == []


def test_bad_entries_are_skipped_and_reported_the_rest_kept() -> None:
    good = entry("GOOD1")
    bad = [
        entry("", "empty"),
        entry("A*", "one-known"),
        entry("**?", "no-known"),
        entry("AB#12", "bad-char"),
        entry("A" * 17, "too-long"),
        entry("OK123", "huge-field", vehicle_description="x" * 40000),
        HotEntry("nan-time", "l", "OK124", None, "BOLO", "", "", math.nan, None, ""),
        HotEntry("inf-exp", "l", "OK125", None, "BOLO", "", "", 0.0, math.inf, ""),
    ]
    ix = build([bad[0], good, *bad[1:]])
    assert len(ix) == 1 and ix.entry(0) == good and ix.skipped_count == len(bad)
    assert [s.entry_id for s in ix.skipped] == [e.entry_id for e in bad]
    for s, e in zip(ix.skipped, bad):
        assert isinstance(s, SkippedEntry) and s.problem
        assert not e.plate or e.plate not in s.problem  # plates stay out of reports (logs)
    with pytest.raises(TypeError, match="expected HotEntry"):
        ListIndex.build(ListInfo("l", 1, 0.0, 1), [("7ABC123",)])  # type: ignore[list-item]


def test_matcher_refuses_mixed_tables() -> None:
    a = build([entry("7ABC123")])
    b = build([entry("7ABC123")], table=LookalikeTable(("0O",)))
    with pytest.raises(ValueError, match="same look-alike table"):
        Matcher([a, b])
    # a table of its own is used for folding and lookup alike
    m = Matcher([b])
    assert m.match("7A8C123", confs("7A8C123"), now=NOW) == []
    assert [
        h.kind
        for h in Matcher([build([entry("AO1")], table=LookalikeTable(("0O",)))]).match("A01", confs("A01"), now=NOW)
    ] == ["lookalike"]


def test_match_one_for_an_entry_not_yet_in_any_list() -> None:
    m = Matcher([build([entry("7ABC123")])])
    new = entry("9ZZ*", "new", list_id="manual")
    hit = m.match_one(new, "9Z2123", confs("9Z2123", 0.4), [("9Z2123", 0.9), ("9ZZ12", 0.5)], now=NOW)
    assert hit is not None and (hit.kind, hit.candidate_rank, hit.list_version) == ("wildcard", 0, 0)
    assert hit.substitutions == (Substitution(2, "2", "Z", 0.4),)
    assert m.match_one(entry("7ABC123"), "7ABC123", confs("7ABC123"), now=NOW).list_version == 7  # type: ignore[union-attr]
    assert m.match_one(new, "9ZZ1", confs("9ZZ1"), now=NOW, list_version=12).list_version == 12  # type: ignore[union-attr]
    assert m.match_one(new, "8ZZ1", confs("8ZZ1"), now=NOW) is None
    with pytest.raises(ValueError, match="fewer than 2 known"):
        m.match_one(entry("9*", "bad"), "91", confs("91"), now=NOW)


# ---- 50,000 entries against a brute-force matcher

_ALNUM = string.ascii_uppercase + string.digits
_LOOK = "0OQD1IL8B5S2Z6G"


def _random_plate(rng: random.Random) -> str:
    # look-alike characters are over-represented so that many reads have look-alike neighbours in the list
    return "".join(rng.choice(_LOOK if rng.random() < 0.5 else _ALNUM) for _ in range(rng.randint(4, 7)))


def _mutate(rng: random.Random, plate: str, k: int) -> str:
    chars = list(plate)
    spots = [i for i, c in enumerate(chars) if c in _LOOK]
    for i in rng.sample(spots, min(k, len(spots))):
        cls = next(c for c in DEFAULT_TABLE.classes if chars[i] in c)
        chars[i] = rng.choice([c for c in cls if c != chars[i]])
    return "".join(chars)


def _fill(rng: random.Random, pattern: str) -> str:
    return "".join(
        rng.choice(_ALNUM) if c == "?" else "".join(rng.choices(_ALNUM, k=rng.randint(0, 2))) if c == "*" else c
        for c in pattern
    )


def _wild_subs(p: str, t: str, confs: list[float]) -> list[tuple[int, float]]:
    """All (substitutions, confidence sum) of every way ``t`` matches pattern ``p`` (plain recursion)."""
    if not p:
        return [(0, 0.0)] if not t else []
    if "*" not in p and len(p) != len(t):
        return []
    c = p[0]
    if c == "*":
        return [r for k in range(len(t) + 1) for r in _wild_subs(p[1:], t[k:], confs[k:])]
    if not t:
        return []
    rest = _wild_subs(p[1:], t[1:], confs[1:])
    if c == "?" or c == t[0]:
        return rest
    if DEFAULT_TABLE.lookalike(c, t[0]):
        return [(n + 1, s + confs[0]) for n, s in rest]
    return []


class BruteForce:
    """Every entry checked against every text, vectorised over the fixed plates with numpy."""

    def __init__(self, entries: list[HotEntry], limit: int) -> None:
        self.limit = limit
        self.entries = entries
        self.fixed = [i for i, e in enumerate(entries) if not re.search(r"[*?]", e.plate)]
        self.wild = [i for i, e in enumerate(entries) if re.search(r"[*?]", e.plate)]
        width = 16
        plates = np.zeros((len(self.fixed), width), np.uint8)
        folded = np.zeros((len(self.fixed), width), np.uint8)
        for row, i in enumerate(self.fixed):
            p = entries[i].plate
            plates[row, : len(p)] = np.frombuffer(p.encode(), np.uint8)
            folded[row, : len(p)] = np.frombuffer(DEFAULT_TABLE.fold(p).encode(), np.uint8)
        self.plates, self.folded = plates, folded
        self.lens = np.array([len(entries[i].plate) for i in self.fixed])

    def best(self, texts: list[tuple[str, list[float], int, float]], state: str | None) -> dict[str, float]:
        """entry_id -> best score over every text and every way it matches."""
        out: dict[str, float] = {}

        def keep(e: HotEntry, s: float) -> None:
            if e.expires is not None and e.expires < NOW:
                return
            if state and e.state and e.state != state:
                return
            out[e.entry_id] = max(out.get(e.entry_id, -1.0), s)

        for text, confs, rank, cconf in texts:
            n = len(text)
            t = np.frombuffer(text.encode(), np.uint8)
            tf = np.frombuffer(DEFAULT_TABLE.fold(text).encode(), np.uint8)
            same_len = self.lens == n
            fold_ok = (self.folded[:, :n] == tf).all(axis=1)
            diffs = (self.plates[:, :n] != t).sum(axis=1)
            for row in np.flatnonzero(same_len & fold_ok & (diffs <= self.limit)):
                e = self.entries[self.fixed[row]]
                subs = [Substitution(j, text[j], e.plate[j], confs[j]) for j in range(n) if text[j] != e.plate[j]]
                keep(e, score("exact" if not subs else "lookalike", subs, rank, cconf))
            for i in self.wild:
                e = self.entries[i]
                ways = [w for w in _wild_subs(e.plate, text, confs) if w[0] <= self.limit]
                if ways:
                    k, csum = min(ways)
                    fake = [Substitution(0, "", "", csum / k)] * k if k else []
                    literals = sum(c not in "*?" for c in e.plate)
                    keep(e, score("wildcard", fake, rank, cconf, literals / n))
        return out


def test_50k_entries_agree_with_brute_force() -> None:
    rng = random.Random(20261123)
    states = ("OR", "WA", "CA", None)
    entries: list[HotEntry] = []
    for i in range(50_000):
        r = rng.random()
        expires = None if r < 0.8 else NOW + 100 if r < 0.9 else NOW - 100
        entries.append(entry(_random_plate(rng), f"e{i}", state=rng.choice(states), expires=expires))
    for i in range(150):
        base = _random_plate(rng) + _random_plate(rng)[:2]
        shape = rng.random()
        pat = (
            base[: rng.randint(2, 4)] + "*"
            if shape < 0.35
            else "".join("?" if rng.random() < 0.25 else c for c in base)
            if shape < 0.7
            else base[:2] + "*" + base[-2:]
            if shape < 0.85
            else "*" + base[-3:]
        )
        if sum(c not in "*?" for c in pat) < 2:
            pat = base
        expired = rng.random() < 0.2
        entries.append(entry(pat, f"w{i}", state=rng.choice(states), expires=NOW - 1 if expired else None))
    rng.shuffle(entries)
    limit = 2
    ix = build(entries)
    n_wild = sum(bool(re.search(r"[*?]", e.plate)) for e in entries)
    assert len(ix) == len(entries) and ix.wildcard_count == n_wild > 100 and ix.skipped_count == 0
    matcher = Matcher([ix], lookalike_limit=limit)
    brute = BruteForce(entries, limit)
    plates = [e.plate for e in entries]
    fixed = [p for p in plates if not re.search(r"[*?]", p)]
    patterns = [p for p in plates if re.search(r"[*?]", p)]
    totals = {"exact": 0, "lookalike": 0, "wildcard": 0, "candidate": 0}
    for n in range(300):
        kind = n % 7
        if kind == 0:
            text = _random_plate(rng)
        elif kind >= 5:
            text = _fill(rng, rng.choice(patterns))
        else:
            text = _mutate(rng, rng.choice(fixed), kind - 1)  # 0 to 3 look-alikes
        conf = [round(rng.uniform(0.2, 1.0), 2) for _ in text]
        alts = [_mutate(rng, rng.choice(fixed), rng.randint(0, 2)) for _ in range(3)]
        alts += [_random_plate(rng) for _ in range(2)]
        alts = [a for a in dict.fromkeys(alts) if a != text]
        cands = [(text, 0.9)] + [(a, round(0.4 / (k + 1), 3)) for k, a in enumerate(alts)]
        state = rng.choice(states)
        hits = matcher.match(text, conf, cands, state=state, now=NOW)
        texts = [(text, conf, 0, 1.0)] + [(a, [c] * len(a), k + 1, c) for k, (a, c) in enumerate(cands[1:])]
        want = brute.best(texts, state)
        got = {h.entry.entry_id: h.score for h in hits}
        assert got.keys() == want.keys(), (text, cands, state)
        for eid, s in got.items():
            assert s == pytest.approx(want[eid], abs=1e-9), (eid, text)
        assert len(hits) == len(got)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:
            totals["candidate" if h.candidate_rank else h.kind] += 1
            one = matcher.match_one(h.entry, text, conf, cands, state=state, now=NOW)
            assert one == h
    # the comparison is only worth something if every kind of hit happened many times
    assert min(totals.values()) >= 15, totals
