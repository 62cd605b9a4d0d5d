"""Hot list CSV (state/NCIC extracts and local BOLO lists): a streaming parser and a writer.

The parser is built for a 1,000,000-row state extract on a Raspberry Pi: it yields one ``HotEntry`` at a time and
keeps only a compact array of entry-id hashes (8 bytes a row) to refuse duplicate ids, so memory does not grow with
a million objects. A bad line is skipped and reported by file, line and field; only a file that is not a hot list
CSV at all (wrong header, not UTF-8, binary, too large) is refused whole. Messages never contain plate text (P3).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np

from .entry import HotEntry

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_ERRORS = 100  # ParseErrors kept; the count goes on
REQUIRED = ("plate", "state", "list_code", "case_number", "entered")
OPTIONAL = ("expires", "instructions", "reason", "vehicle_description", "entry_id")
COLUMNS = REQUIRED + OPTIONAL
_FIELD_MAX = {"instructions": 500, "reason": 200, "vehicle_description": 200, "case_number": 64, "entry_id": 64}

PLATE_RE = re.compile(r"[A-Z0-9*?]{2,10}")
_STATE_RE = re.compile(r"[A-Z]{1,3}")
_CODE_RE = re.compile(r"[A-Z0-9_]{1,32}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLATE_STRIP = str.maketrans("", "", " -")
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(2200, 1, 1, tzinfo=UTC).timestamp()
_SNIFF_BYTES = 64 * 1024

REASONS = {
    "STOLEN_VEHICLE": "Stolen vehicle",
    "STOLEN_PLATE": "Stolen plate",
    "WANTED_PERSON": "Wanted person",
    "MISSING_PERSON": "Missing person",
    "AMBER_ALERT": "AMBER alert",
    "SILVER_ALERT": "Silver alert",
    "PROTECTION_ORDER": "Protection order",
    "SEX_OFFENDER": "Sex offender",
    "GANG": "Gang member",
    "TERRORIST_WATCH": "Terrorist watch list",
    "BOLO": "Be on the lookout",
    "OTHER": "Other",
}


class CsvError(ValueError):
    """The file as a whole is not a hot list CSV; nothing from it may be used."""


@dataclass(frozen=True)
class ParseError:
    """One skipped line: where, which column, what was wrong (never the value itself)."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.field}: {self.message}"


class _LineError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def default_reason(list_code: str) -> str:
    return REASONS.get(list_code, list_code.replace("_", " ").capitalize())


def normalize_plate(text: str) -> str:
    """Upper-case, spaces and dashes removed; raises ValueError (without the plate) when it is not a plate."""
    p = text.upper().translate(_PLATE_STRIP)
    if not PLATE_RE.fullmatch(p):
        if not 2 <= len(p) <= 10:
            raise ValueError(f"has {len(p)} characters after normalising, 2..10 allowed")
        raise ValueError("has a character other than A-Z, 0-9, * and ?")
    if p.strip("*?") == "":
        raise ValueError("is only wildcards")
    return p


def parse_time(text: str) -> float:
    """ISO-8601 date or date-time to UTC epoch seconds; one without a zone is UTC."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError("is not an ISO-8601 date or date-time") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    t = dt.timestamp()
    if not _EARLIEST <= t < _LATEST:
        raise ValueError("is outside 1970..2199")
    return t


class _SeenIds:
    """Duplicate entry ids among millions of rows in 8 bytes an id.

    Ids are hashed to 64 bits (a false duplicate among a million ids has odds of about 1 in 30 million). Rows wait
    in a small batch; a full batch is checked against sorted numpy runs of the earlier hashes with one vectorised
    search per run, then becomes a run itself (runs merge like an LSM tree), so time stays n log n.
    """

    BATCH = 4096

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def check(self, hashes: list[int]) -> np.ndarray:
        """Which of a batch of (already batch-unique) hashes were seen in earlier batches; then remember them."""
        batch = np.array(hashes, dtype=np.int64)
        dup = np.zeros(len(batch), dtype=bool)
        for run in self._runs:
            i = np.searchsorted(run, batch)
            i[i >= len(run)] = len(run) - 1
            dup |= run[i] == batch
        run = np.sort(batch)
        while self._runs and len(self._runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate((self._runs.pop(), run)), kind="mergesort")
        self._runs.append(run)
        return dup


class ParseResult:
    """A parse in progress: iterate for the good entries; ``errors`` and the counts fill in as it goes.

    Iterating may raise ``CsvError`` when the file turns out to be binary or not UTF-8 past the part checked up
    front; callers that must be all-or-nothing (a bundle being accepted) consume it fully before using it.
    """

    def __init__(self, source_name: str, max_errors: int) -> None:
        self.source_name = source_name
        self.errors: list[ParseError] = []
        self.error_count = 0
        self.good_count = 0
        self.max_errors = max_errors
        self._rows: Iterator[HotEntry] = iter(())
        self._closer: io.IOBase | None = None
        self._used = False

    def _bind(self, rows: Iterator[HotEntry], closer: io.IOBase) -> None:
        self._rows, self._closer = rows, closer

    def _error(self, line: int, field: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(ParseError(self.source_name, line, field, message))

    def __iter__(self) -> Iterator[HotEntry]:
        if self._used:
            raise RuntimeError("a ParseResult can be iterated once")
        self._used = True
        try:
            yield from self._rows
        finally:
            if self._closer is not None:
                self._closer.close()

    def consume(self) -> int:
        """Parse to the end without keeping entries (counting only); returns the good count."""
        for _ in self:
            pass
        return self.good_count


def _open(data: bytes | str | os.PathLike[str], max_bytes: int) -> tuple[IO[bytes], str | None]:
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) > max_bytes:
            raise CsvError(f"the list is {len(data)} bytes, over the {max_bytes}-byte limit")
        return io.BytesIO(data), None
    path = Path(data)
    try:
        f = path.open("rb")
        size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise CsvError(f"cannot read {path}: {e.strerror}") from e
    if size > max_bytes:
        f.close()
        raise CsvError(f"{path} is {size} bytes, over the {max_bytes}-byte limit")
    return f, str(path)


class _CappedReader(io.RawIOBase):
    """Reads at most ``limit`` bytes of a stream, then fails: a file growing while read stays bounded."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self._f = f
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b)
        n = self._f.readinto(view[: min(len(view), self._left + 1)])  # type: ignore[attr-defined]
        if n is None:
            return 0
        self._left -= n
        if self._left < 0:
            raise CsvError("the list grew over the size limit while being read")
        return int(n)

    def close(self) -> None:
        self._f.close()
        super().close()


def _check_start(head: bytes, name: str) -> None:
    if b"\x00" in head:
        raise CsvError(f"{name} is binary, not a CSV text file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # a multi-byte character cut by the sample's end is fine
            raise CsvError(f"{name} is not UTF-8 text (byte {e.start})") from e


def _header(row: list[str] | None, name: str) -> dict[str, int]:
    if row is None:
        raise CsvError(f"{name} is empty: a header row is required ({', '.join(REQUIRED)})")
    cols = [c.strip().lower().lstrip("\ufeff") for c in row]
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise CsvError(
            f"{name}: unknown column {unknown[0]!r} in the header (allowed: {', '.join(COLUMNS)})"
            if unknown[0]
            else f"{name}: the header has an empty column name"
        )
    dup = next((c for c in cols if cols.count(c) > 1), None)
    if dup:
        raise CsvError(f"{name}: column {dup!r} appears twice in the header")
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise CsvError(f"{name}: the header lacks the required column(s) {', '.join(missing)}")
    return {c: i for i, c in enumerate(cols)}


def parse_csv(
    data: bytes | str | os.PathLike[str],
    list_id: str,
    source_name: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> ParseResult:
    """Start parsing a hot list CSV (bytes or a file path) for list ``list_id``.

    The size, the first 64 KiB (binary? UTF-8?) and the header are checked here and raise ``CsvError``; rows are
    parsed as the result is iterated.
    """
    raw, path_name = _open(data, max_bytes)
    name = source_name or path_name or "<bundle>"
    try:
        buffered = io.BufferedReader(_CappedReader(raw, max_bytes), buffer_size=_SNIFF_BYTES)
        _check_start(buffered.peek(_SNIFF_BYTES)[:_SNIFF_BYTES], name)
        text = io.TextIOWrapper(buffered, encoding="utf-8", errors="strict", newline="")
        reader = csv.reader(text, strict=True)
        try:
            header = _header(_next_row(reader, name), name)
        except csv.Error as e:
            raise CsvError(f"{name}: the header row is not readable CSV ({e})") from e
    except BaseException:
        raw.close()
        raise
    result = ParseResult(name, max_errors)
    result._bind(_rows(reader, header, list_id, name, result), text)
    return result


def _next_row(reader: Iterator[list[str]], name: str) -> list[str] | None:
    """The next record, None at the end; csv.Error (a broken quote, a huge field) is left to the caller: the reader
    carries on with the next line after it."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except UnicodeDecodeError as e:
        raise CsvError(f"{name} is not UTF-8 text: {e.reason}") from e


def _rows(
    reader: Iterator[list[str]], header: dict[str, int], list_id: str, name: str, result: ParseResult
) -> Iterator[HotEntry]:
    seen = _SeenIds()
    ncols = len(header)
    make = _row_parser(header, list_id)
    batch: list[HotEntry] = []
    first_line: dict[int, int] = {}  # entry id hash -> line, for the batch (in the batch's order)
    batch_size = _SeenIds.BATCH
    at_end = False
    while not at_end:
        line_num = reader.line_num + 1  # type: ignore[attr-defined]  # the record's first physical line
        try:
            row = next(reader)
        except StopIteration:
            at_end = True
        except UnicodeDecodeError as e:
            raise CsvError(f"{name} is not UTF-8 text (near line {line_num}): {e.reason}") from e
        except csv.Error as e:  # a broken quote, a huge field: the reader carries on with the next line
            result._error(line_num, "*", f"is not valid CSV ({e})")
            continue
        if not at_end:
            if len(row) != ncols:
                if row and (len(row) > 1 or row[0].strip()):  # not a blank line
                    result._error(line_num, "*", f"has {len(row)} fields, the header has {ncols}")
                continue
            row.append("")  # where the optional columns the file lacks point
            try:
                entry = make(row)
            except _LineError as e:
                result._error(line_num, e.field, e.message)
                continue
            h = hash(entry.entry_id)
            if h in first_line:
                result._error(line_num, "entry_id", f"duplicate of line {first_line[h]}; the first is kept")
                continue
            first_line[h] = line_num
            batch.append(entry)
            if len(batch) < batch_size:
                continue
        if batch:
            dups = seen.check(list(first_line))
            if not dups.any():
                result.good_count += len(batch)
                yield from batch
            else:
                for entry, ln, dup in zip(batch, first_line.values(), dups.tolist()):
                    if dup:
                        result._error(ln, "entry_id", "duplicate of an earlier line; the first is kept")
                    else:
                        result.good_count += 1
                        yield entry
            batch.clear()
            first_line.clear()
    log.debug("parsed %s: %d entries, %d bad lines", name, result.good_count, result.error_count)


def _row_parser(header: dict[str, int], list_id: str) -> Callable[[list[str]], HotEntry]:
    """A function turning one row into a HotEntry or raising _LineError, with the column positions bound and the
    few distinct dates, states and codes of an extract validated once each (this loop runs a million times).

    The row it is given has one extra empty field at the end, where the optional columns a file lacks point.
    """
    absent = len(header)
    i_plate, i_state, i_code, i_case, i_entered = (header[c] for c in REQUIRED)
    i_expires, i_instr, i_reason, i_desc, i_id = (header.get(c, absent) for c in OPTIONAL)
    times: dict[str, float | None] = {"": None}
    states: dict[str, str | None] = {"": None}
    codes: dict[str, tuple[str, str]] = {}
    limits = tuple((c, header.get(c, absent), n) for c, n in _FIELD_MAX.items())
    max_instr, max_reason, max_desc, max_case, max_id = (_FIELD_MAX[c] for c in _FIELD_MAX)
    control, plate_re = _CONTROL_RE.search, PLATE_RE.fullmatch

    def when(v: str, field: str) -> float | None:
        try:
            t = parse_time(v)
        except ValueError as e:
            raise _LineError(field, str(e)) from e
        if len(times) > 100_000:
            times.clear()
            times[""] = None
        times[v] = t
        return t

    def too_long(row: list[str]) -> _LineError:
        field, length, n = next((c, len(row[i].strip()), n) for c, i, n in limits if len(row[i].strip()) > n)
        return _LineError(field, f"is {length} characters long, at most {n} allowed")

    def parse(row: list[str]) -> HotEntry:
        if control("".join(row)):  # one search for the common clean row; the field is named when dirty
            field = next(c for c, i in header.items() if control(row[i]))
            raise _LineError(field, "contains a control character")
        p = row[i_plate].upper().replace(" ", "").replace("-", "")
        if not plate_re(p) or p.strip("*?") == "":
            try:
                normalize_plate(p)
            except ValueError as e:
                raise _LineError("plate", str(e)) from e
        raw = row[i_state]
        if raw in states:
            state = states[raw]
        else:
            state = raw.strip().upper()
            if state and not _STATE_RE.fullmatch(state):
                raise _LineError("state", "must be 1..3 letters (a state or country code) or empty")
            states[raw] = state = state or None
        raw = row[i_code]
        if raw in codes:
            code, default = codes[raw]
        else:
            code = raw.strip().upper()
            if not _CODE_RE.fullmatch(code):
                raise _LineError("list_code", "must be 1..32 of A-Z, 0-9 and _")
            codes[raw] = code, default = code, default_reason(code)
        case_number = row[i_case].strip()
        if not case_number:
            raise _LineError("case_number", "is required")
        raw = row[i_entered].strip()
        entered = times[raw] if raw in times else when(raw, "entered")
        if entered is None:
            raise _LineError("entered", "is required")
        raw = row[i_expires].strip()
        expires = times[raw] if raw in times else when(raw, "expires")
        if expires is not None and expires < entered:
            raise _LineError("expires", "is before the entry date")
        instructions = row[i_instr].strip()
        reason = row[i_reason].strip()
        desc = row[i_desc].strip()
        entry_id = row[i_id].strip()
        if (
            len(instructions) > max_instr
            or len(reason) > max_reason
            or len(desc) > max_desc
            or len(case_number) > max_case
            or len(entry_id) > max_id
        ):
            raise too_long(row)
        return HotEntry(
            entry_id or case_number,
            list_id,
            p,
            state,
            code,
            reason or default,
            case_number,
            entered,
            expires,
            instructions,
            desc,
        )

    return parse


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_csv(entries: Iterable[HotEntry], out: IO[str] | None = None) -> bytes:
    """The entries as a hot list CSV with every column (UTF-8 bytes); also written to ``out`` when given."""
    buf = io.StringIO() if out is None else out
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for e in entries:
        w.writerow(
            (
                e.plate,
                e.state or "",
                e.list_code,
                e.case_number,
                _iso(e.entered),
                _iso(e.expires),
                e.instructions,
                e.reason,
                e.vehicle_description,
                e.entry_id,
            )
        )
    return buf.getvalue().encode("utf-8") if isinstance(buf, io.StringIO) else b""
