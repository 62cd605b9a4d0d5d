"""The monthly audit of searches (P15): a random draw of at least ten searches from the preceding calendar month, a
finding per search, the auditor's sign-off and the memorandum.

Why it is built this way:
- The population is every search recorded in the period: headquarters' own (``hq_audit``, action ``search``) and
  the units' as synced (``audit``, ``data->>'action' = 'search'``), limited to what headquarters had received when
  the sample was drawn. Both tables are append-only, so that population never changes and the draw can be repeated:
  the searches are ordered by (time, source, uuid) and ``random.Random(seed).sample`` picks from them; the seed is
  stored with the review and printed in the memorandum (``verify_draw`` repeats it).
- Every step (draw, finding, sign-off) is recorded in headquarters' access record inside the same transaction as
  the change it records: both happen or neither.
- Findings can be changed until the sign-off; after it the review is closed. A reviewer cannot judge a search made
  under their own name; only an auditor signs off, and only when every search has a finding.
- The signed memorandum's PDF is rendered with the sign-off time as its date, so its SHA-256 (stored) can be checked
  by rendering it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from ..access.session import require
from ..access.users import User
from . import render

MIN_SAMPLE = 10  # P15: at least ten searches a month
FINDINGS = ("compliant", "non-compliant", "follow-up")
MIN_NOTE = 10  # characters of a note explaining a non-compliant or follow-up finding
MIN_CONCLUSION = 20
MAX_TEXT = 4000
P9_DAYS = 30.0
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PREFIX = re.compile(r"[0-9a-f-]{6,36}")


class ReviewError(ValueError):
    """The audit step is refused; the message says why."""


class Actor(Protocol):
    """Who acts (an edge.hq.access.HqSession): their account, and the access record their acts go to."""

    @property
    def user(self) -> User: ...

    def record(self, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None) -> object: ...


@dataclass(frozen=True)
class Search:
    """One search as recorded: who, when, why, what was asked and what came back."""

    audit_uuid: str
    source: str  # 'hq' or the unit's device id
    at: float
    user: str
    role: str
    reason: str  # the access record's reason line (case number and reason, outside agency)
    criteria: Mapping[str, Any]
    results: int | None
    read_uuids: tuple[str, ...]
    purpose: Mapping[str, Any]
    request_id: str = ""  # an outside-agency search at headquarters names its approved request (P11)

    def criteria_text(self, limit: int = 400) -> str:
        parts = []
        for k, v in sorted(self.criteria.items()):
            if v is None or v == "" or v == []:
                continue
            parts.append(f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}")
        text = "; ".join(parts) or "(none)"
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def reason_kind(self) -> str:
        return reason_kind(self.purpose, self.reason)


def reason_kind(purpose: Mapping[str, Any], reason: str) -> str:
    """'outside agency', 'case number' or 'reason' (P14, P11), for the report and the memorandum."""
    if purpose.get("outside_agency"):
        return "outside agency"
    if purpose.get("case_number") or (not purpose and reason.startswith("case ")):
        return "case number"
    return "reason"


@dataclass(frozen=True)
class ReviewItem:
    search: Search
    finding: str | None
    note: str
    reviewed_by: str | None
    reviewed_at: float | None


@dataclass(frozen=True)
class Review:
    id: str
    period_start: float
    period_end: float
    drawn_at: float
    drawn_by: str
    seed: str
    searches_in_period: int
    signed_by: str | None
    signed_at: float | None
    conclusion: str | None
    memo_sha256: str | None
    items: tuple[ReviewItem, ...]

    @property
    def signed(self) -> bool:
        return self.signed_at is not None

    def missing_findings(self) -> int:
        return sum(1 for i in self.items if i.finding is None)


# -- periods -------------------------------------------------------------------------------------------------------


def month_bounds(year: int, month: int) -> tuple[float, float]:
    """[start, end) of a calendar month in UTC epoch seconds."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def previous_month(now: float) -> tuple[float, float]:
    """The calendar month (UTC) before the one ``now`` is in."""
    d = datetime.fromtimestamp(now, tz=UTC)
    return month_bounds(d.year - (d.month == 1), (d.month - 2) % 12 + 1)


def parse_month(text: str, now: float) -> tuple[float, float]:
    """'YYYY-MM' of a month that has ended; ReviewError otherwise."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 2000:
        raise ReviewError(f"month: expected YYYY-MM, got {text!r}")
    start, end = month_bounds(int(m.group(1)), int(m.group(2)))
    if end > now:
        raise ReviewError(f"month {text}: has not ended yet; a monthly audit reviews a past month")
    return start, end


def month_name(start: float) -> str:
    return datetime.fromtimestamp(start, tz=UTC).strftime("%B %Y")


# -- reading searches ----------------------------------------------------------------------------------------------

_NUM_AT = "CASE WHEN jsonb_typeof(data->'at') = 'number' THEN (data->>'at')::float8 END"
_SEARCH_SQL = f"""
SELECT uuid::text, 'hq', at, user_name, role, reason, detail FROM hq_audit
 WHERE action = 'search' AND at >= %(start)s AND at < %(end)s AND at <= %(cutoff)s
UNION ALL
SELECT uuid::text, device_id, {_NUM_AT}, data->>'user', data->>'role', data->>'reason', data->'detail' FROM audit
 WHERE data->>'action' = 'search' AND {_NUM_AT} >= %(start)s AND {_NUM_AT} < %(end)s AND received_at <= %(cutoff)s
"""


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _search(row: Sequence[Any]) -> Search:
    """A search from a stored row; a unit's entry is untrusted JSON, so every field is checked for its type."""
    uid, source, at, user, role, reason, detail = row
    d = detail if isinstance(detail, dict) else {}
    criteria = d.get("criteria")
    results = d.get("results")
    reads = d.get("read_uuids")
    purpose = d.get("purpose")
    request = d.get("request")
    request_id = request.get("id") if isinstance(request, dict) else None
    return Search(
        audit_uuid=str(uid),
        source=str(source),
        at=float(at),
        user=_text(user),
        role=_text(role),
        reason=_text(reason),
        criteria=criteria if isinstance(criteria, dict) else {},
        results=results if isinstance(results, int) and not isinstance(results, bool) else None,
        read_uuids=tuple(x for x in reads if isinstance(x, str)) if isinstance(reads, list) else (),
        purpose=purpose if isinstance(purpose, dict) else {},
        request_id=request_id if isinstance(request_id, str) else "",
    )


def searches_in_period(conn: psycopg.Connection, start: float, end: float, cutoff: float) -> list[Search]:
    """Every search in [start, end) received by ``cutoff``, ordered by (time, source, uuid): the draw's population.
    A uuid seen twice (a unit's entry copying headquarters') counts once."""
    rows = conn.execute(_SEARCH_SQL, {"start": start, "end": end, "cutoff": cutoff}).fetchall()
    found: dict[str, Search] = {}
    for s in sorted((_search(r) for r in rows), key=lambda s: (s.at, s.source, s.audit_uuid)):
        found.setdefault(s.audit_uuid, s)
    return list(found.values())


def draw_sample(population: Sequence[Search], seed: str, size: int = MIN_SAMPLE) -> list[Search]:
    """``size`` searches (all if fewer) chosen by ``random.Random(seed)``, returned in time order."""
    picked = random.Random(seed).sample(list(population), min(size, len(population)))
    return sorted(picked, key=lambda s: (s.at, s.source, s.audit_uuid))


def _lookup(conn: psycopg.Connection, audit_uuid: str, source: str) -> Search | None:
    if source == "hq":
        sql = "SELECT uuid::text, 'hq', at, user_name, role, reason, detail FROM hq_audit WHERE uuid = %s"
        row = conn.execute(sql, (audit_uuid,)).fetchone()
    else:
        sql = (
            f"SELECT uuid::text, device_id, {_NUM_AT}, data->>'user', data->>'role', data->>'reason', "
            "data->'detail' FROM audit WHERE uuid = %s AND device_id = %s"
        )
        row = conn.execute(sql, (audit_uuid, source)).fetchone()
    return _search(row) if row and row[2] is not None else None


def stale_devices(conn: psycopg.Connection, period_end: float) -> list[str]:
    """Units whose last complete sync is before the period's end: some of their searches may not be here yet."""
    sql = "SELECT device_id FROM devices WHERE last_sync IS NULL OR last_sync < %s ORDER BY device_id"
    return [str(r[0]) for r in conn.execute(sql, (period_end,)).fetchall()]


# -- the review ----------------------------------------------------------------------------------------------------


def _check_text(value: str, field: str, min_len: int) -> str:
    text = (value or "").strip()
    if _CONTROL.search(text):
        raise ReviewError(f"{field}: must not contain control characters")
    if len(text) < min_len:
        raise ReviewError(f"{field}: at least {min_len} characters")
    if len(text) > MAX_TEXT:
        raise ReviewError(f"{field}: at most {MAX_TEXT} characters")
    return text


def resolve_review_id(conn: psycopg.Connection, text: str) -> str:
    """A review's id from the full id or a unique prefix of at least 6 characters."""
    key = text.strip().lower()
    if not _PREFIX.fullmatch(key):
        raise ReviewError(f"review: not a review id: {text!r}")
    rows = conn.execute("SELECT id::text FROM audit_reviews WHERE id::text LIKE %s", (key + "%",)).fetchall()
    if not rows:
        raise ReviewError(f"review {text}: no such review")
    if len(rows) > 1:
        raise ReviewError(f"review {text}: ambiguous, give more of the id")
    return str(rows[0][0])


def load_review(conn: psycopg.Connection, review_id: str) -> Review:
    row = conn.execute(
        "SELECT id::text, period_start, period_end, drawn_at, drawn_by, seed, searches_in_period, signed_by, "
        "signed_at, conclusion, memo_sha256 FROM audit_reviews WHERE id = %s",
        (review_id,),
    ).fetchone()
    if row is None:
        raise ReviewError(f"review {review_id}: no such review")
    items = []
    sql = (
        "SELECT audit_uuid::text, source, finding, note, reviewed_by, reviewed_at FROM audit_review_items "
        "WHERE review_id = %s"
    )
    for uid, source, finding, note, by, at in conn.execute(sql, (review_id,)).fetchall():
        s = _lookup(conn, uid, source) or Search(uid, source, 0.0, "?", "?", "(entry not found)", {}, None, (), {})
        items.append(ReviewItem(s, finding, note or "", by, at))
    items.sort(key=lambda i: (i.search.at, i.search.source, i.search.audit_uuid))
    rid, start, end, drawn_at, drawn_by, seed, n, signed_by, signed_at, conclusion, digest = row
    return Review(rid, start, end, drawn_at, drawn_by, seed, n, signed_by, signed_at, conclusion, digest, tuple(items))


def draw(
    conn: psycopg.Connection,
    actor: Actor,
    start: float,
    end: float,
    *,
    seed: str | None = None,
    size: int = MIN_SAMPLE,
    clock: Callable[[], float] = time.time,
) -> Review:
    """Draw the sample for [start, end) and store the review; ReviewError when the period already has one."""
    if size < MIN_SAMPLE:
        raise ReviewError(f"sample size: at least {MIN_SAMPLE} (P15)")
    seed = seed if seed is not None else secrets.token_hex(16)
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", seed):
        raise ReviewError("seed: 1 to 64 letters, digits, '_' or '-'")
    review_id = str(uuid.uuid4())
    with conn.transaction():
        conn.execute("LOCK TABLE audit_reviews IN SHARE ROW EXCLUSIVE MODE")  # one draw per period, even if raced
        other = conn.execute(
            "SELECT id::text FROM audit_reviews WHERE period_start = %s AND period_end = %s", (start, end)
        ).fetchone()
        if other:
            raise ReviewError(f"the period {month_name(start)} already has review {other[0]}")
        now = clock()
        population = searches_in_period(conn, start, end, now)
        sample = draw_sample(population, seed, size)
        conn.execute(
            "INSERT INTO audit_reviews (id, period_start, period_end, drawn_at, drawn_by, seed, searches_in_period) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (review_id, start, end, now, actor.user.name, seed, len(population)),
        )
        for s in sample:
            conn.execute(
                "INSERT INTO audit_review_items (review_id, audit_uuid, source) VALUES (%s, %s, %s)",
                (review_id, s.audit_uuid, s.source),
            )
        actor.record(
            "audit.draw",
            reason=f"monthly audit {month_name(start)}",
            detail={
                "review_id": review_id,
                "period_start": start,
                "period_end": end,
                "seed": seed,
                "searches_in_period": len(population),
                "sample": [s.audit_uuid for s in sample],
            },
        )
    return load_review(conn, review_id)


def verify_draw(conn: psycopg.Connection, review: Review) -> bool:
    """True when drawing again from the stored seed, over what had been received then, gives the same searches."""
    population = searches_in_period(conn, review.period_start, review.period_end, review.drawn_at)
    if len(population) != review.searches_in_period:
        return False
    again = {(s.audit_uuid, s.source) for s in draw_sample(population, review.seed, len(review.items))}
    return again == {(i.search.audit_uuid, i.search.source) for i in review.items}


def _locked_open_review(conn: psycopg.Connection, review_id: str) -> None:
    row = conn.execute("SELECT signed_at FROM audit_reviews WHERE id = %s FOR UPDATE", (review_id,)).fetchone()
    if row is None:
        raise ReviewError(f"review {review_id}: no such review")
    if row[0] is not None:
        raise ReviewError(f"review {review_id}: signed off; its findings can no longer change")


def resolve_item(review: Review, text: str) -> ReviewItem:
    """The review's search from its full uuid or a unique prefix."""
    key = text.strip().lower()
    hits = [i for i in review.items if i.search.audit_uuid.startswith(key)] if _PREFIX.fullmatch(key) else []
    if len(hits) != 1:
        why = "ambiguous, give more of it" if hits else "not among the searches drawn"
        raise ReviewError(f"search {text}: {why}")
    return hits[0]


def record_finding(
    conn: psycopg.Connection,
    actor: Actor,
    review_id: str,
    audit_uuid: str,
    finding: str,
    note: str,
    *,
    clock: Callable[[], float] = time.time,
) -> ReviewItem:
    """Store (or change, before the sign-off) the finding on one search of the review."""
    if finding not in FINDINGS:
        raise ReviewError(f"finding: must be one of {', '.join(FINDINGS)}")
    note = _check_text(note, "note", MIN_NOTE if finding != "compliant" else 0)
    with conn.transaction():
        _locked_open_review(conn, review_id)
        item = resolve_item(load_review(conn, review_id), audit_uuid)
        if item.search.user.lower() == actor.user.name.lower():
            raise ReviewError(
                f"search {item.search.audit_uuid} was made by {actor.user.name}: nobody reviews their own"
            )
        now = clock()
        conn.execute(
            "UPDATE audit_review_items SET finding = %s, note = %s, reviewed_by = %s, reviewed_at = %s "
            "WHERE review_id = %s AND audit_uuid = %s",
            (finding, note, actor.user.name, now, review_id, item.search.audit_uuid),
        )
        actor.record(
            "audit.finding",
            reason=f"monthly audit review {review_id}",
            detail={
                "review_id": review_id,
                "audit_uuid": item.search.audit_uuid,
                "source": item.search.source,
                "finding": finding,
                "previous": item.finding,
            },
        )
    return ReviewItem(item.search, finding, note, actor.user.name, now)


def sign_off(
    conn: psycopg.Connection,
    actor: Actor,
    review_id: str,
    conclusion: str,
    out_dir: Path,
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[Review, Path, Path]:
    """Close the review with the auditor's conclusion and write the signed memorandum (HTML and PDF) to
    ``out_dir``; its PDF's SHA-256 is stored. AccessDenied for anyone but an auditor; ReviewError while a search has
    no finding. OSError when the memorandum cannot be written (then nothing is signed)."""
    require(actor.user, "audit.signoff")
    conclusion = _check_text(conclusion, "conclusion", MIN_CONCLUSION)
    with conn.transaction():
        _locked_open_review(conn, review_id)
        review = load_review(conn, review_id)
        missing = review.missing_findings()
        if missing:
            raise ReviewError(f"review {review_id}: {missing} of {len(review.items)} search(es) have no finding yet")
        now = clock()
        signed = dataclasses.replace(review, signed_by=actor.user.name, signed_at=now, conclusion=conclusion)
        doc = memorandum(signed, stale_devices(conn, review.period_end))
        pdf = render.to_pdf(doc)
        digest = hashlib.sha256(pdf).hexdigest()
        conn.execute(
            "UPDATE audit_reviews SET signed_by = %s, signed_at = %s, conclusion = %s, memo_sha256 = %s WHERE id = %s",
            (actor.user.name, now, conclusion, digest, review_id),
        )
        actor.record(
            "audit.signoff",
            reason=f"monthly audit {month_name(review.period_start)}",
            detail={"review_id": review_id, "memo_sha256": digest, "findings": finding_counts(review)},
        )
        # written last: if the files cannot be written, the sign-off and its record roll back
        html_path, pdf_path, _ = render.write_documents(doc, out_dir, memo_stem(signed), pdf=pdf)
    return load_review(conn, review_id), html_path, pdf_path


def finding_counts(review: Review) -> dict[str, int]:
    counts = {f: 0 for f in FINDINGS}
    for i in review.items:
        if i.finding:
            counts[i.finding] += 1
    return counts


def memo_stem(review: Review) -> str:
    return f"audit-{datetime.fromtimestamp(review.period_start, tz=UTC):%Y-%m}-{review.id[:8]}"


# -- the memorandum ------------------------------------------------------------------------------------------------


def memorandum(review: Review, stale: Sequence[str] = (), *, now: float | None = None) -> render.Document:
    """The memorandum as a document: period, how the sample was drawn, each search and its finding, conclusion and
    sign-off. Unsigned: marked as a draft and dated ``now``."""
    n, k = review.searches_in_period, len(review.items)
    period = f"{render.utc(review.period_start)} to {render.utc(review.period_end)} (end exclusive)"
    if n == 0:
        how = "No search was recorded in the period: there was nothing to draw."
    elif n <= MIN_SAMPLE:
        how = (
            f"Only {n} search(es) were recorded in the period, fewer than the {MIN_SAMPLE} that P15 asks for: "
            f"all of them are reviewed."
        )
    else:
        how = f"{k} of the {n} searches recorded in the period were drawn at random."
    method = (
        "The population is every search recorded in the period at headquarters and on the units, as received at "
        "headquarters when the sample was drawn, ordered by time, source and entry id; the searches were picked by "
        "Python's random.Random seeded with the seed above (random.sample, without replacement). Anyone with access "
        "to the database can repeat the draw: 'alpr-edge hq audit monthly show' does and says whether it matches."
    )
    draw_facts = render.Facts(
        (
            ("Period", period),
            ("Searches in period", str(n)),
            ("Searches reviewed", str(k)),
            ("Drawn", f"{render.utc(review.drawn_at)} by {review.drawn_by}"),
            ("Seed", review.seed),
            ("Review id", review.id),
        )
    )
    blocks: list[render.Block] = [draw_facts, render.Paragraph(how), render.Paragraph(method)]
    if stale:
        blocks.append(
            render.Paragraph(
                f"Units not fully synced since the end of the period (their searches may be missing from the draw): "
                f"{', '.join(stale)}.",
                emphasis=True,
            )
        )
    rows = []
    for no, it in enumerate(review.items, 1):
        s = it.search
        returned = f"{s.results if s.results is not None else '?'} read(s)"
        if s.read_uuids:
            returned += "; first: " + ", ".join(u[:8] for u in s.read_uuids[:3])
        rows.append(
            (
                str(no),
                f"{render.utc(s.at)}\n{s.user} ({s.role})\n{s.source}, entry {s.audit_uuid[:8]}",
                s.reason,
                s.criteria_text(),
                returned,
                (it.finding or "NO FINDING YET") + (f": {it.note}" if it.note else ""),
            )
        )
    searches = render.Table(
        ("#", "When, who, where", "Purpose", "Criteria", "Returned", "Finding"), tuple(rows), (1, 5, 7, 6, 4, 6)
    )
    counts = finding_counts(review)
    summary = render.Facts(
        (*((f.capitalize(), str(c)) for f, c in counts.items()), ("No finding yet", str(review.missing_findings())))
    )
    if review.signed:
        signoff: tuple[render.Block, ...] = (
            render.Paragraph(review.conclusion or "", emphasis=True),
            render.Facts((("Signed off by", review.signed_by or ""), ("Signed at", render.utc(review.signed_at)))),
        )
    else:
        signoff = (render.Paragraph("Not signed off yet: this is a draft.", emphasis=True),)
    return render.Document(
        title=f"Monthly audit of searches: {month_name(review.period_start)}",
        subtitle=f"Policy P15 · review {review.id}",
        created_at=review.signed_at if review.signed_at is not None else (now if now is not None else time.time()),
        sections=(
            render.Section("Period and sample", tuple(blocks)),
            render.Section("Searches reviewed", (searches,) if rows else (render.Paragraph("None."),)),
            render.Section("Findings", (summary,)),
            render.Section("Conclusion and sign-off", signoff),
        ),
        banner="" if review.signed else "DRAFT: not signed off",
    )
