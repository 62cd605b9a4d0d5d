"""A hot list held compactly in memory, keyed for look-alike lookup.

A state extract has about a million entries; a dict of a million HotEntry objects would take over a gigabyte
on a unit with 2-8 GB. So the entries are streamed once into:

- one ``bytearray`` of records, one per entry (a ``<9H`` header, then the fields' UTF-8 bytes), with an offsets
  array; the few fields that repeat (list, state, code, reason, instructions) are stored once in a string table
  and referenced from the header; a HotEntry is decoded only for a hit;
- numpy arrays: the 64-bit hash of each fixed plate's look-alike fold, sorted, with the entry it belongs to
  (``searchsorted`` finds every entry whose fold hashes like the read's), and the expiry of each entry;
- partial plates (``*`` for any run, ``?`` for one character), which are few (manual entries, major crimes), in a
  small table keyed by one literal 1-3 character piece of each pattern (see ``WildPattern``).

A hash only narrows the search: the matcher always compares the read with the stored plate, so a hash collision
can cost a few microseconds but never make a hit.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from hashlib import blake2b

import numpy as np
import numpy.typing as npt

from .entry import HotEntry, ListInfo
from .lookalike import DEFAULT_TABLE, PLATE_CHARS, LookalikeTable

log = logging.getLogger(__name__)

MAX_PLATE_LEN = 16
#: A partial plate needs this many known characters: "*" or "A*" would alert on a large share of all traffic.
MIN_PATTERN_LITERALS = 2
#: Longest text field, in UTF-8 bytes (the record header holds lengths below 0x8000).
MAX_FIELD_BYTES = 0x7FFF
#: Distinct strings the shared string table holds; past it, repeated fields are stored inline (still correct).
MAX_SHARED_STRINGS = 0x7FFE
#: Skipped entries remembered for the report (the count is exact).
MAX_SKIPPED_REPORTED = 100

_WILD = frozenset("*?")
_FIXED_PLATE = re.compile(f"[A-Z0-9]{{1,{MAX_PLATE_LEN}}}").fullmatch
_STRIP = str.maketrans("", "", " -.")
_STARS = re.compile(r"\*{2,}")
# Record header: one uint16 per field: < 0x8000 an inline length, 0x8000 | i string table entry i, 0xFFFF None.
_HDR = struct.Struct("<9H")
_REF = 0x8000
_NONE = 0xFFFF
# Field order in a record; plate first so that the matcher can read it without decoding the rest.
_FIELDS = (
    "plate",
    "entry_id",
    "list_id",
    "state",
    "list_code",
    "reason",
    "case_number",
    "instructions",
    "vehicle_description",
)
_STATE_FIELD = _FIELDS.index("state")
_SHARED = frozenset({"list_id", "state", "list_code", "reason", "instructions"})
_SHARED_FLAGS = tuple(name in _SHARED for name in _FIELDS)

HashFn = Callable[[str], int]
U64 = npt.NDArray[np.uint64]


def plate_hash(folded: str) -> int:
    """64-bit hash of a folded plate: blake2b, so it is the same on every platform and in every process."""
    return int.from_bytes(blake2b(folded.encode("ascii"), digest_size=8).digest(), "little")


def normalize_plate(plate: str) -> str:
    """Upper case without spaces, dashes or dots; runs of ``*`` collapsed to one."""
    text = plate.upper().translate(_STRIP)
    return _STARS.sub("*", text) if "**" in text else text


def is_pattern(plate: str) -> bool:
    """True for a partial plate (it holds ``*`` or ``?``)."""
    return "*" in plate or "?" in plate


def plate_problem(norm: str) -> str | None:
    """Why a normalized plate (or partial plate) cannot be matched, or None when it can."""
    if not norm:
        return "plate is empty"
    if len(norm) > MAX_PLATE_LEN:
        return f"plate is longer than {MAX_PLATE_LEN} characters"
    bad = sorted({c for c in norm if c not in PLATE_CHARS and c not in _WILD})
    if bad:
        return f"plate has characters other than A-Z, 0-9, * and ?: {''.join(bad)!r}"
    if is_pattern(norm):
        literals = sum(c not in _WILD for c in norm)
        if literals < MIN_PATTERN_LITERALS:
            return f"partial plate has fewer than {MIN_PATTERN_LITERALS} known characters"
    return None


@dataclass(frozen=True, slots=True)
class WildPattern:
    """A partial plate, ready to test against reads.

    ``regex`` matches the *folded* read, so it accepts every read that is a look-alike of the pattern however
    many characters differ; the matcher then counts the substitutions against its limit.
    """

    index: int  # the entry's position in its ListIndex
    plate: str  # normalized pattern
    regex: re.Pattern[str]
    min_len: int
    max_len: int  # == min_len without "*", else MAX_PLATE_LEN
    literals: int  # known characters
    key: str  # the folded 1-3 character piece every matching folded read contains

    @classmethod
    def make(cls, index: int, norm: str, table: LookalikeTable) -> WildPattern:
        folded = table.fold(norm)
        regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else c for c in folded), re.ASCII)
        fixed = sum(c != "*" for c in norm)
        runs = [r for r in re.split(r"[*?]+", folded) if r]
        longest = max(runs, key=len)  # plate_problem guarantees at least one literal
        return cls(
            index=index,
            plate=norm,
            regex=regex,
            min_len=fixed,
            max_len=MAX_PLATE_LEN if "*" in norm else fixed,
            literals=sum(c not in _WILD for c in norm),
            key=longest[:3],
        )


@dataclass(frozen=True)
class SkippedEntry:
    """An entry the index could not hold, and why (the plate itself is not repeated here)."""

    entry_id: str
    problem: str


class _SkipEntryError(ValueError):
    pass


class ListIndex:
    """One hot list in force, compact and read-only after ``build``."""

    __slots__ = (
        "_blob",
        "_entered",
        "_expires",
        "_hash_fn",
        "_info",
        "_key_entry",
        "_keys",
        "_n",
        "_offsets",
        "_skipped",
        "_skipped_count",
        "_strings",
        "_table",
        "_wild",
        "_wild_by_key",
        "_wild_key_lengths",
    )

    def __init__(
        self,
        info: ListInfo,
        table: LookalikeTable,
        hash_fn: HashFn,
        blob: bytearray,
        offsets: U64,
        entered: npt.NDArray[np.float64],
        expires: npt.NDArray[np.float64],
        keys: U64,
        key_entry: npt.NDArray[np.uint32],
        strings: tuple[str, ...],
        wild: tuple[WildPattern, ...],
        skipped: tuple[SkippedEntry, ...],
        skipped_count: int,
    ) -> None:
        """Use ``ListIndex.build``; this only stores what it made."""
        self._info = info
        self._table = table
        self._hash_fn = hash_fn
        self._blob = blob
        self._offsets = offsets
        self._entered = entered
        self._expires = expires
        self._keys = keys
        self._key_entry = key_entry
        self._strings = strings
        self._wild = wild
        by_key: dict[str, list[WildPattern]] = {}
        for wp in wild:
            by_key.setdefault(wp.key, []).append(wp)
        self._wild_by_key = {k: tuple(v) for k, v in by_key.items()}
        self._wild_key_lengths = tuple(sorted({len(k) for k in by_key}))
        self._skipped = skipped
        self._skipped_count = skipped_count
        self._n = len(offsets) - 1

    @classmethod
    def build(
        cls,
        info: ListInfo,
        entries: Iterable[HotEntry],
        *,
        table: LookalikeTable = DEFAULT_TABLE,
        hash_fn: HashFn = plate_hash,
    ) -> ListIndex:
        """Stream ``entries`` once into an index. An entry that cannot be matched (empty or malformed plate,
        a partial plate with too few known characters, a field over 32 KiB, a non-finite time) is skipped and
        reported in ``skipped``; the others are kept."""
        blob = bytearray()
        offsets = array("Q", [0])
        entered = array("d")
        expires = array("d")
        keys = array("Q")
        key_entry = array("I")
        shared: dict[str, int] = {}
        wild: list[WildPattern] = []
        skipped: list[SkippedEntry] = []
        skipped_count = 0
        n = 0
        for e in entries:
            if not isinstance(e, HotEntry):
                raise TypeError(f"hot list {info.list_id}: expected HotEntry, got {type(e).__name__}")
            try:
                if not isinstance(e.plate, str):
                    raise _SkipEntryError("plate is not text")
                norm = e.plate
                if _FIXED_PLATE(norm) is None:  # not already a clean fixed plate (the usual case)
                    norm = normalize_plate(norm)
                    problem = plate_problem(norm)
                    if problem is not None:
                        raise _SkipEntryError(problem)
                if not _finite(e.entered):
                    raise _SkipEntryError("entry time is not a finite number")
                if e.expires is not None and not _finite(e.expires):
                    raise _SkipEntryError("expiry is not a finite number")
                record = _encode_fast(e, shared) or _encode(e, shared)
            except _SkipEntryError as why:
                skipped_count += 1
                if len(skipped) < MAX_SKIPPED_REPORTED:
                    skipped.append(SkippedEntry(str(e.entry_id)[:64], str(why)))
                continue
            blob += record
            offsets.append(len(blob))
            entered.append(e.entered)
            expires.append(math.nan if e.expires is None else e.expires)
            if is_pattern(norm):
                wild.append(WildPattern.make(n, norm, table))
            else:
                keys.append(hash_fn(table.fold(norm)) & 0xFFFF_FFFF_FFFF_FFFF)
                key_entry.append(n)
            n += 1
        if n >= 2**32:
            raise ValueError(f"hot list {info.list_id}: more than 2**32 entries")
        if skipped_count:
            log.warning("hot list %s: %d entries skipped (first: %s)", info.list_id, skipped_count, skipped[0].problem)
        if info.entry_count != n + skipped_count:
            log.warning("hot list %s: header says %d entries, stream had %d", info.list_id, info.entry_count, n)
        key_arr = np.frombuffer(keys, dtype=np.uint64) if keys else np.zeros(0, np.uint64)
        order = np.argsort(key_arr, kind="stable")
        sorted_keys = np.ascontiguousarray(key_arr[order])
        entry_arr = np.frombuffer(key_entry, dtype=np.uint32) if key_entry else np.zeros(0, np.uint32)
        sorted_entries = np.ascontiguousarray(entry_arr[order])
        del order, key_arr, entry_arr, keys, key_entry
        strings = tuple(shared)  # dicts keep insertion order: position == id
        return cls(
            info=info,
            table=table,
            hash_fn=hash_fn,
            blob=blob,
            offsets=np.frombuffer(offsets, dtype=np.uint64),
            entered=np.frombuffer(entered, dtype=np.float64) if entered else np.zeros(0),
            expires=np.frombuffer(expires, dtype=np.float64) if expires else np.zeros(0),
            keys=sorted_keys,
            key_entry=sorted_entries,
            strings=strings,
            wild=tuple(wild),
            skipped=tuple(skipped),
            skipped_count=skipped_count,
        )

    # ---- what the list is

    @property
    def info(self) -> ListInfo:
        return self._info

    @property
    def table(self) -> LookalikeTable:
        return self._table

    def __len__(self) -> int:
        return self._n

    @property
    def wildcard_count(self) -> int:
        return len(self._wild)

    @property
    def wildcards(self) -> tuple[WildPattern, ...]:
        """The partial plates, in stream order."""
        return self._wild

    @property
    def skipped(self) -> tuple[SkippedEntry, ...]:
        """The first skipped entries (at most MAX_SKIPPED_REPORTED) and why."""
        return self._skipped

    @property
    def skipped_count(self) -> int:
        return self._skipped_count

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays and records (not counting the partial plates' small objects)."""
        arrays = (self._offsets, self._entered, self._expires, self._keys, self._key_entry)
        return len(self._blob) + sum(a.nbytes for a in arrays) + sum(len(s) for s in self._strings)

    # ---- entries

    def entry(self, i: int) -> HotEntry:
        """Entry ``i`` (0 <= i < len), in the order the stream gave them, decoded from its record."""
        if not 0 <= i < self._n:
            raise IndexError(f"hot list {self._info.list_id}: no entry {i} (it has {self._n})")
        start = int(self._offsets[i])
        rec = bytes(self._blob[start : int(self._offsets[i + 1])])
        values: list[str | None] = []
        pos = _HDR.size
        for h in _HDR.unpack_from(rec, 0):
            if h == _NONE:
                values.append(None)
            elif h & _REF:
                values.append(self._strings[h & ~_REF])
            else:
                values.append(rec[pos : pos + h].decode("utf-8"))
                pos += h
        plate, entry_id, list_id, state, list_code, reason, case_number, instructions, description = values
        exp = float(self._expires[i])
        return HotEntry(
            entry_id=_s(entry_id),
            list_id=_s(list_id),
            plate=_s(plate),
            state=state,
            list_code=_s(list_code),
            reason=_s(reason),
            case_number=_s(case_number),
            entered=float(self._entered[i]),
            expires=None if math.isnan(exp) else exp,
            instructions=_s(instructions),
            vehicle_description=_s(description),
        )

    def entries(self) -> Iterator[HotEntry]:
        """Every entry, decoded one at a time."""
        return (self.entry(i) for i in range(self._n))

    def plate(self, i: int) -> str:
        """Entry ``i``'s plate as stored (0 <= i < len), without decoding the rest of it."""
        start = int(self._offsets[i])
        length = int.from_bytes(self._blob[start : start + 2], "little")
        return self._blob[start + _HDR.size : start + _HDR.size + length].decode("utf-8")

    def match_plate(self, i: int) -> str:
        """Entry ``i``'s plate normalized for matching (as stored, in the usual case that it is clean)."""
        plate = self.plate(i)
        return plate if _FIXED_PLATE(plate) is not None else normalize_plate(plate)

    def state(self, i: int) -> str | None:
        """Entry ``i``'s state, without decoding the rest of it (the matcher's state check)."""
        start = int(self._offsets[i])
        header: tuple[int, ...] = _HDR.unpack_from(self._blob, start)
        h: int = header[_STATE_FIELD]
        if h == _NONE:
            return None
        if h & _REF:
            return self._strings[h & ~_REF]
        pos = start + _HDR.size + sum(x for x in header[:_STATE_FIELD] if x < _REF)
        return self._blob[pos : pos + h].decode("utf-8")

    def expires(self, i: int) -> float | None:
        exp = float(self._expires[i])
        return None if math.isnan(exp) else exp

    # ---- lookup (the matcher verifies every candidate against the stored plate)

    def fixed_candidates(self, folded: str) -> list[int]:
        """Entries with a fixed plate whose fold hashes like ``folded`` (a superset of the look-alikes)."""
        h = np.uint64(self._hash_fn(folded) & 0xFFFF_FFFF_FFFF_FFFF)
        keys = self._keys
        lo = int(keys.searchsorted(h, "left"))
        if lo == len(keys) or keys[lo] != h:
            return []
        hi = int(keys.searchsorted(h, "right"))
        return [int(x) for x in self._key_entry[lo:hi]]

    def wildcard_candidates(self, folded: str) -> list[WildPattern]:
        """Partial plates whose key piece occurs in ``folded`` (a superset of those that can match it).

        Cost per read: the read's 1- to 3-character pieces (at most 45 for 16 characters, 21 for 8) looked up,
        then one regex test for each pattern filed under a piece it has. With P patterns keyed by 3 characters
        (~22,000 folded trigrams) a read meets about P/1000 of them: ~10 for 10,000 patterns; patterns whose
        longest known run is 1 or 2 characters ("A?B*") are filed under that and meet more (P/28, P/780).
        """
        by_key = self._wild_by_key
        if not by_key:
            return []
        n = len(folded)
        pieces = {folded[i : i + k] for k in self._wild_key_lengths for i in range(n - k + 1)}
        return [wp for piece in pieces if piece in by_key for wp in by_key[piece]]


def _s(v: str | None) -> str:
    return "" if v is None else v


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _encode_fast(e: HotEntry, shared: dict[str, int]) -> bytes | None:
    """``_encode`` for the usual entry (ASCII text, every repeated field already in the table), about three times
    faster; None for anything else, which ``_encode`` then handles."""
    get = shared.get
    r_list, r_code, r_reason, r_instr = get(e.list_id), get(e.list_code), get(e.reason), get(e.instructions)
    if r_list is None or r_code is None or r_reason is None or r_instr is None:
        return None
    if e.state is None:
        h_state = _NONE
    else:
        r_state = get(e.state)
        if r_state is None:
            return None
        h_state = _REF | r_state
    try:
        inline = e.plate + e.entry_id + e.case_number + e.vehicle_description
    except TypeError:
        return None
    if len(inline) > MAX_FIELD_BYTES or not inline.isascii():
        return None
    header = _HDR.pack(
        len(e.plate),
        len(e.entry_id),
        _REF | r_list,
        h_state,
        _REF | r_code,
        _REF | r_reason,
        len(e.case_number),
        _REF | r_instr,
        len(e.vehicle_description),
    )
    return header + inline.encode("ascii")


def _encode(e: HotEntry, shared: dict[str, int]) -> bytes:
    """One record: the header, then the inline fields' bytes."""
    header: list[int] = []
    inline: list[bytes] = []
    values = (
        e.plate,
        e.entry_id,
        e.list_id,
        e.state,
        e.list_code,
        e.reason,
        e.case_number,
        e.instructions,
        e.vehicle_description,
    )
    for name, is_shared, v in zip(_FIELDS, _SHARED_FLAGS, values, strict=True):
        if v is None:
            if name != "state":
                raise _SkipEntryError(f"{name} is missing")
            header.append(_NONE)
            continue
        if not isinstance(v, str):
            raise _SkipEntryError(f"{name} is not text")
        if is_shared:
            ref = shared.get(v)
            if ref is None and len(shared) < MAX_SHARED_STRINGS:
                ref = shared[v] = len(shared)
            if ref is not None:
                header.append(_REF | ref)
                continue
        try:
            b = v.encode("utf-8")
        except UnicodeEncodeError as err:
            raise _SkipEntryError(f"{name} is not valid text") from err
        if len(b) > MAX_FIELD_BYTES:
            raise _SkipEntryError(f"{name} is longer than {MAX_FIELD_BYTES} bytes")
        header.append(len(b))
        inline.append(b)
    return _HDR.pack(*header) + b"".join(inline)
