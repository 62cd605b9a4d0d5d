"""The yearly report of system use and effectiveness (P16), with the sharing (P11), retention (P10), transfer (P9)
and maintenance (P17) figures an agency is asked for.

Why it is built this way:
- Reads and hits are purged after the retention period (P10), so a report made in January would find little of
  last year in ``reads`` and ``hits``. A month's count is what is still stored (by the time it was seen) plus what
  headquarters' purges deleted, each purge's counts attributed to the month of its cut-off (with a daily purge the
  error is under a day). Outcomes and searches are counted from what is kept (outcomes as stored; searches from
  the access records, which are never purged).
- A hit counts as confirmed when an officer recorded "confirmed", "arrest" or "vehicle_recovered" for it, in the
  month of the first such outcome.
- A device's sync gaps are the times between its transfers (batches with at least one item stored), the gap that
  runs into the year and the one still open at the end of it included; over 30 days is flagged (P9).
- Everything is read in one repeatable-read transaction, so the figures agree with each other.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import render
from .audits import Search, searches_in_period

CONFIRMED = ("confirmed", "arrest", "vehicle_recovered")
REASON_KINDS = ("case number", "reason", "outside agency")
P9_DAYS = 30.0
DAY = 86400.0
MONTHS = tuple(range(1, 13))


class ReportError(ValueError):
    """The report cannot be made as asked."""


@dataclass(frozen=True)
class SyncGap:
    device_id: str
    transfers: int  # in the year
    longest_days: float
    longest_from: float
    longest_to: float
    over_limit: int  # gaps longer than P9_DAYS
    open_gap: bool  # the longest gap is still open at the end of the period


@dataclass(frozen=True)
class Maintenance:
    device_id: str
    at: float
    action: str
    kind: str
    camera: str
    summary: str
    user: str


@dataclass(frozen=True)
class UnitPurge:
    device_id: str
    month: int
    reads: int
    images: int
    hits: int
    forced: bool


@dataclass(frozen=True)
class YearlyReport:
    year: int
    start: float
    end: float  # the end of the year, or "now" for the current year
    devices: int
    reads: Mapping[int, int]  # month -> count (stored + purged)
    reads_purged: Mapping[int, int]
    hits: Mapping[int, int]
    confirmed: Mapping[int, int]
    outcomes: Mapping[str, int]  # outcome -> count in the year
    searches: tuple[Search, ...]
    requests: tuple[tuple[str, str], ...]  # (agency, status) of requests entered in the year
    approved: frozenset[tuple[str, str, str]]  # (id, agency folded, case number) of requests approved by the year's end
    purges: Mapping[int, tuple[int, int, int, int, int]]  # month -> (purges, reads, images, hits, held kept)
    unit_purges: tuple[UnitPurge, ...]
    gaps: tuple[SyncGap, ...]
    maintenance: tuple[Maintenance, ...]


def _month(t: float) -> int:
    return datetime.fromtimestamp(t, tz=UTC).month


def year_bounds(year: int, now: float) -> tuple[float, float]:
    """[1 January, 1 January next) of ``year`` (UTC), the end cut at ``now``; ReportError for a future year."""
    if not 2000 <= year <= 9998:
        raise ReportError(f"year: {year} is out of range")
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    if start > now:
        raise ReportError(f"year {year} has not begun")
    return start, min(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp(), now)


def _by_month(conn: psycopg.Connection, sql: str, params: Mapping[str, Any]) -> Counter[int]:
    """Run ``sql`` (selecting one epoch time column named t) and count its rows by month (UTC)."""
    q = f"SELECT EXTRACT(MONTH FROM to_timestamp(t) AT TIME ZONE 'UTC')::int AS m, count(*) FROM ({sql}) x GROUP BY m"
    return Counter({int(m): int(n) for m, n in conn.execute(q, params).fetchall()})


def _num(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def sync_gaps(
    transfers: Sequence[float], before: float | None, first_seen: float, start: float, end: float, device_id: str
) -> SyncGap:
    """The longest gap between consecutive transfers (``before``: the last transfer before the year, if any), the
    one still open at ``end`` included."""
    points = [before if before is not None else max(first_seen, start), *sorted(transfers), end]
    best, frm, to, over = 0.0, points[0], points[0], 0
    for a, b in itertools.pairwise(points):
        gap = (b - a) / DAY
        over += gap > P9_DAYS
        if gap > best:
            best, frm, to = gap, a, b
    return SyncGap(device_id, len(transfers), round(best, 1), frm, to, over, to == end and frm != end)


def gather(conn: psycopg.Connection, year: int, now: float) -> YearlyReport:
    """Every figure of the report for ``year``, read in one consistent snapshot."""
    start, end = year_bounds(year, now)
    p = {"s": start, "e": end}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reads = _by_month(conn, "SELECT best_seen AS t FROM reads WHERE best_seen >= %(s)s AND best_seen < %(e)s", p)
        hits = _by_month(conn, "SELECT seen_at AS t FROM hits WHERE seen_at >= %(s)s AND seen_at < %(e)s", p)
        confirmed = _by_month(
            conn,
            "SELECT min(at) AS t FROM hit_outcomes WHERE outcome = ANY(%(c)s) GROUP BY hit_uuid "
            "HAVING min(at) >= %(s)s AND min(at) < %(e)s",
            {**p, "c": list(CONFIRMED)},
        )
        outcomes = {
            str(o): int(n)
            for o, n in conn.execute(
                "SELECT outcome, count(*) FROM hit_outcomes WHERE at >= %(s)s AND at < %(e)s GROUP BY outcome", p
            ).fetchall()
        }
        purges: dict[int, tuple[int, int, int, int, int]] = {}
        for m, n, r, i, h, k in conn.execute(
            "SELECT EXTRACT(MONTH FROM to_timestamp(older_than) AT TIME ZONE 'UTC')::int, count(*), sum(reads), "
            "sum(images), sum(hits), sum(held_kept) FROM purges WHERE older_than >= %(s)s AND older_than < %(e)s "
            "GROUP BY 1",
            p,
        ).fetchall():
            purges[int(m)] = (int(n), int(r), int(i), int(h), int(k))
        for m, (_, r, _, h, _) in purges.items():
            reads[m] += r
            hits[m] += h
        searches = tuple(searches_in_period(conn, start, end, math.inf))
        requests = tuple(
            (str(a), str(s))
            for a, s in conn.execute(
                "SELECT agency, status FROM outside_requests WHERE at >= %(s)s AND at < %(e)s ORDER BY at", p
            ).fetchall()
        )
        approved = frozenset(
            (str(i), _fold(a), str(c))
            for i, a, c in conn.execute(
                "SELECT id::text, agency, case_number FROM outside_requests WHERE status = 'approved' "
                "AND decided_at < %(e)s",
                p,
            ).fetchall()
        )
        unit_purges = tuple(_unit_purges(conn, p))
        gaps = tuple(_gaps(conn, start, end))
        maintenance = tuple(_maintenance(conn, p))
        n_devices = conn.execute("SELECT count(*) FROM devices WHERE first_seen < %(e)s", p).fetchone()
    return YearlyReport(
        year, start, end, int(n_devices[0]) if n_devices else 0, dict(reads),
        {m: v[1] for m, v in purges.items()}, dict(hits), confirmed, outcomes, searches, requests, approved, purges,
        unit_purges, gaps, maintenance,
    )  # fmt: skip


_UNIT_AT = "CASE WHEN jsonb_typeof(data->'at') = 'number' THEN (data->>'at')::float8 END"


def _unit_entries(conn: psycopg.Connection, actions: Sequence[str], p: Mapping[str, float]) -> Iterable[Any]:
    sql = (
        f"SELECT device_id, {_UNIT_AT} AS t, data FROM audit WHERE data->>'action' = ANY(%(a)s) "
        f"AND {_UNIT_AT} >= %(s)s AND {_UNIT_AT} < %(e)s ORDER BY t, device_id"
    )
    return conn.execute(sql, {**p, "a": list(actions)}).fetchall()


def _unit_purges(conn: psycopg.Connection, p: Mapping[str, float]) -> Iterable[UnitPurge]:
    for device, t, data in _unit_entries(conn, ("purge",), p):
        d = data.get("detail") if isinstance(data, dict) else None
        d = d if isinstance(d, dict) else {}
        yield UnitPurge(
            str(device), _month(t), _num(d.get("reads")), _num(d.get("images")), _num(d.get("hits")),
            d.get("forced") is True,
        )  # fmt: skip


def _maintenance(conn: psycopg.Connection, p: Mapping[str, float]) -> Iterable[Maintenance]:
    for device, t, data in _unit_entries(conn, ("maintenance", "calibration"), p):
        d = data.get("detail") if isinstance(data, dict) else None
        d = d if isinstance(d, dict) else {}

        def s(v: Any) -> str:
            return v if isinstance(v, str) else ""

        yield Maintenance(
            str(device), float(t), s(data.get("action")), s(d.get("kind")), s(d.get("camera")),
            s(d.get("summary")), s(data.get("user")),
        )  # fmt: skip


def _gaps(conn: psycopg.Connection, start: float, end: float) -> Iterable[SyncGap]:
    devices = conn.execute("SELECT device_id, first_seen FROM devices WHERE first_seen < %s ORDER BY device_id", (end,))
    for device_id, first_seen in devices.fetchall():
        before = conn.execute(
            "SELECT max(received_at) FROM batches WHERE device_id = %s AND stored > 0 AND received_at < %s",
            (device_id, start),
        ).fetchone()
        transfers = [
            float(r[0])
            for r in conn.execute(
                "SELECT received_at FROM batches WHERE device_id = %s AND stored > 0 AND received_at >= %s "
                "AND received_at < %s ORDER BY received_at",
                (device_id, start, end),
            ).fetchall()
        ]
        yield sync_gaps(transfers, before[0] if before else None, float(first_seen), start, end, str(device_id))


# -- the document --------------------------------------------------------------------------------------------------


def _fold(agency: object) -> str:
    return " ".join(str(agency).split()).casefold()


def _covered(s: Search, approved: frozenset[tuple[str, str, str]]) -> bool:
    """An outside-agency search is covered by an approved request of that agency: the one it names (headquarters'
    searches), or one for the same case number (the units cannot check, so theirs are matched here)."""
    agency, case = _fold(s.purpose.get("outside_agency", "")), str(s.purpose.get("case_number", ""))
    return any(a == agency and (i == s.request_id or c == case) for i, a, c in approved)


def _series(name: str, by_month: Mapping[int, int]) -> render.Series:
    return render.Series(name, tuple(float(by_month.get(m, 0)) for m in MONTHS))


def _n(v: float) -> str:
    return f"{v:,.0f}"


def document(r: YearlyReport, now: float) -> render.Document:
    labels = render.month_labels(MONTHS)
    kinds: dict[str, Counter[int]] = {k: Counter() for k in REASON_KINDS}
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    for s in r.searches:
        kinds[s.reason_kind()][_month(s.at)] += 1
        by_source["headquarters" if s.source == "hq" else f"unit {s.source}"][s.reason_kind()] += 1
    outside = [s for s in r.searches if s.reason_kind() == "outside agency"]
    unmatched = [s for s in outside if not _covered(s, r.approved)]
    total_hits, total_conf = sum(r.hits.values()), sum(r.confirmed.values())
    flagged = [g for g in r.gaps if g.longest_days > P9_DAYS]
    complete = r.end >= datetime(r.year + 1, 1, 1, tzinfo=UTC).timestamp()
    conf_share = f" ({100 * total_conf / total_hits:.1f}% of hits)" if total_hits else ""
    by_kind = ", ".join(f"{k}: {sum(kinds[k].values())}" for k in REASON_KINDS)
    by_status = ", ".join(
        f"{st}: {sum(1 for _, x in r.requests if x == st)}" for st in ("approved", "denied", "pending")
    )
    period = f"{render.utc(r.start)} to {render.utc(r.end)}" + ("" if complete else " (year to date)")
    summary = render.Facts(
        (
            ("Period", period),
            ("Units", _n(r.devices)),
            ("Reads", _n(sum(r.reads.values()))),
            ("Hits", _n(total_hits)),
            ("Confirmed hits", _n(total_conf) + conf_share),
            ("Searches", f"{_n(len(r.searches))} ({by_kind})"),
            ("Outside-agency requests", f"{len(r.requests)} ({by_status})"),
            ("Purges at headquarters", _n(sum(v[0] for v in r.purges.values()))),
            ("Purges on the units", _n(len(r.unit_purges))),
            ("Units with a sync gap over 30 days", _n(len(flagged))),
            ("Maintenance and calibration records", _n(len(r.maintenance))),
        )
    )
    method = render.Paragraph(
        "Reads and hits of each month are those still stored plus those purged at headquarters (each purge's counts "
        "in the month of its cut-off). A hit is confirmed when an officer recorded confirmed, arrest or vehicle "
        "recovered. Searches are counted from the access records of headquarters and of the units as received."
    )
    sections = [render.Section("Summary", (summary, method))]
    outcome_rows = tuple((o, _n(n)) for o, n in sorted(r.outcomes.items(), key=lambda x: (-x[1], x[0])))
    sections.append(
        render.Section(
            "Reads, hits and outcomes",
            (
                render.BarChart("Reads per month", labels, (_series("reads", r.reads),)),
                render.BarChart("Hits per month", labels, (_series("hits", r.hits), _series("confirmed", r.confirmed))),
                render.Table(("Outcome recorded", "Count"), outcome_rows or (("(none)", "0"),), (3, 1), (False, True)),
            ),
        )
    )
    src_rows = tuple(
        (src, *(_n(c[k]) for k in REASON_KINDS), _n(sum(c.values()))) for src, c in sorted(by_source.items())
    )
    sections.append(
        render.Section(
            "Searches by purpose (P14)",
            (
                render.BarChart("Searches per month", labels, tuple(_series(k, kinds[k]) for k in REASON_KINDS)),
                render.Table(("Where", *REASON_KINDS, "total"), src_rows or (("(none)", "0", "0", "0", "0"),), (3, 1, 1, 1, 1), (False, True, True, True, True)),  # noqa: E501
            ),
        )
    )  # fmt: skip
    sections.append(render.Section("Data shared with other agencies (P11)", _sharing(r, outside, unmatched)))
    sections.append(render.Section("Retention and purges (P10)", _purges(r, labels)))
    sections.append(render.Section("Transfers from the units (P9)", _sync(r, flagged)))
    sections.append(render.Section("Maintenance and calibration (P17)", _maint(r)))
    return render.Document(
        title=f"ALPR yearly report {r.year}",
        subtitle="Policy P16: system use and effectiveness",
        created_at=now,
        sections=tuple(sections),
    )


def _sharing(r: YearlyReport, outside: Sequence[Search], unmatched: Sequence[Search]) -> tuple[render.Block, ...]:
    agencies: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    names: dict[str, str] = {}  # folded -> the spelling first seen
    statuses = ("approved", "denied", "pending")
    for agency, status in r.requests:
        row = agencies[names.setdefault(_fold(agency), agency)]
        row[0] += 1
        row[1 + statuses.index(status)] += 1
    for s in outside:
        agency = str(s.purpose.get("outside_agency", ""))
        row = agencies[names.setdefault(_fold(agency), agency)]
        row[4] += 1
        row[5] += s.results or 0
    rows = tuple((a, *(_n(v) for v in vals)) for a, vals in sorted(agencies.items()))
    blocks: list[render.Block] = [
        render.Table(
            ("Agency", "Requests", "Approved", "Denied", "Pending", "Searches", "Reads returned"),
            rows or (("(none)", "0", "0", "0", "0", "0", "0"),),
            (4, 1, 1, 1, 1, 1, 1),
            (False, True, True, True, True, True, True),
        )
    ]
    if unmatched:
        blocks.append(render.Paragraph(f"{len(unmatched)} search(es) for an outside agency have no approved request "
                                       "of that agency on file (named by the search, or for its case number):",
                                       emphasis=True))  # fmt: skip
        blocks.append(
            render.Table(
                ("When", "Who", "Where", "Agency", "Case"),
                tuple(
                    (
                        render.utc(s.at),
                        s.user,
                        s.source,
                        str(s.purpose.get("outside_agency", "")),
                        str(s.purpose.get("case_number", "")),
                    )
                    for s in unmatched
                ),
            )
        )
    return tuple(blocks)


def _purges(r: YearlyReport, labels: tuple[str, ...]) -> tuple[render.Block, ...]:
    unit_reads: Counter[int] = Counter()
    per_unit: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for u in r.unit_purges:
        unit_reads[u.month] += u.reads
        row = per_unit[u.device_id]
        row[0] += 1
        row[1] += u.reads
        row[2] += u.images
        row[3] += u.hits
        row[4] += u.forced
    hq_rows = tuple((labels[m - 1], *(_n(v) for v in r.purges[m])) for m in MONTHS if m in r.purges)
    return (
        render.BarChart("Reads purged per month", labels,
                        (_series("at headquarters", r.reads_purged), _series("on the units", unit_reads))),
        render.Table(("Headquarters, month", "Purges", "Reads", "Images", "Hits", "Held, kept"),
                     hq_rows or (("(none)", "0", "0", "0", "0", "0"),), (2, 1, 1, 1, 1, 1),
                     (False, True, True, True, True, True)),
        render.Table(("Unit", "Purges", "Reads", "Images", "Hits", "Forced"),
                     tuple((d, *(_n(v) for v in vals)) for d, vals in sorted(per_unit.items()))
                     or (("(none)", "0", "0", "0", "0", "0"),), (2, 1, 1, 1, 1, 1),
                     (False, True, True, True, True, True)),
    )  # fmt: skip


def _sync(r: YearlyReport, flagged: Sequence[SyncGap]) -> tuple[render.Block, ...]:
    rows = tuple(
        (g.device_id, _n(g.transfers), f"{g.longest_days:.1f}",
         f"{render.utc(g.longest_from)} to {render.utc(g.longest_to)}" + (" (still open)" if g.open_gap else ""),
         _n(g.over_limit), "OVER 30 DAYS" if g.longest_days > P9_DAYS else "ok")
        for g in r.gaps
    )  # fmt: skip
    blocks: list[render.Block] = [
        render.Paragraph(
            "P9: data stored on a unit must reach headquarters at least every 30 days. A transfer is a batch "
            "received with at least one item stored."
        ),
        render.Table(
            ("Unit", "Transfers", "Longest gap (days)", "Longest gap", "Gaps > 30 d", "P9"),
            rows or (("(none)", "0", "0", "-", "0", "-"),),
            (2, 1, 1, 4, 1, 1),
            (False, True, True, False, True, False),
        ),
    ]
    if flagged:
        blocks.append(render.Paragraph(f"{len(flagged)} unit(s) went more than 30 days without a transfer: "
                                       f"{', '.join(g.device_id for g in flagged)}.", emphasis=True))  # fmt: skip
    return tuple(blocks)


def _maint(r: YearlyReport) -> tuple[render.Block, ...]:
    per_unit: dict[str, Counter[str]] = defaultdict(Counter)
    last_cal: dict[str, float] = {}
    for e in r.maintenance:
        per_unit[e.device_id][e.kind or e.action] += 1
        if e.action == "calibration":
            last_cal[e.device_id] = max(last_cal.get(e.device_id, 0.0), e.at)
    kinds = ("maintenance", "calibration", "inspection", "repair")
    rows = tuple(
        (d, *(_n(c[k]) for k in kinds), _n(sum(n for k, n in c.items() if k not in kinds)), render.utc(last_cal.get(d)))
        for d, c in sorted(per_unit.items())
    )
    entries = tuple(
        (render.utc(e.at), e.device_id, e.kind or e.action, e.camera or "-", e.summary, e.user) for e in r.maintenance
    )
    return (
        render.Table(("Unit", *kinds, "other", "Last calibration"), rows or (("(none)", "0", "0", "0", "0", "0", "-"),),
                     (3, 3, 3, 3, 2, 2, 4), (False, True, True, True, True, True, False)),
        render.Table(("When", "Unit", "Kind", "Camera", "Summary", "By"), entries or (("(none)", "", "", "", "", ""),),
                     (3, 2, 2, 2, 6, 2)),
    )  # fmt: skip


def report_stem(year: int) -> str:
    return f"yearly-report-{year}"


def make(conn: psycopg.Connection, year: int, now: float | None = None) -> render.Document:
    now = time.time() if now is None else now
    return document(gather(conn, year, now), now)
