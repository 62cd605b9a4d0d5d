"""``alpr-edge hq audit monthly ...`` (P15), ``hq report yearly`` (P16), ``hq requests ...`` (P11) and
``hq maintenance list`` (P17): each logs in at headquarters and is recorded in headquarters' access record.

edge.hq.commands imports this module to build its parser, so this module imports edge.hq.commands only inside
functions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from ..store.commands import _parse_time, iso_utc
from . import audits, render, report
from . import requests as outside
from .access import HqSession, add_hq_login_args

Body = Callable[[argparse.Namespace, psycopg.Connection, HqSession], int]


def _run(what: str, body: Body) -> Callable[[argparse.Namespace], int]:
    """Connect, check the schema, log in for ``what``, run ``body``; every refusal is one line on stderr, status 2
    (nothing is shown or changed when the step cannot be recorded)."""

    def wrapped(args: argparse.Namespace) -> int:
        from ..access.audit import AuditError
        from ..access.session import AccessDenied
        from ..access.users import AuthError
        from ..store.errors import StoreError
        from . import schema
        from .access import SignerError, hq_cli_login
        from .commands import HqError, _connect_db

        try:
            with _connect_db(args) as conn:
                if schema.current_version(conn) < len(schema.MIGRATIONS):
                    raise HqError("the database schema is not up to date: run 'alpr-edge hq migrate' first")
                return body(args, conn, hq_cli_login(args, conn, what))
        except (AuthError, AccessDenied, SignerError, AuditError, StoreError, HqError, ValueError, OSError) as e:
            # ValueError: ReviewError, RequestError, ReportError, PurposeError
            print(f"alpr-edge: {e}", file=sys.stderr)
            return 2
        except psycopg.Error as e:
            print(f"alpr-edge: database: {e}", file=sys.stderr)
            return 2

    return wrapped


# -- monthly audit -------------------------------------------------------------------------------------------------


def _draw(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    now = time.time()
    start, end = audits.parse_month(args.month, now) if args.month else audits.previous_month(now)
    r = audits.draw(conn, session, start, end, seed=args.seed, size=args.size)
    print(f"review {r.id}: {audits.month_name(start)}, {len(r.items)} of {r.searches_in_period} search(es) drawn")
    if r.searches_in_period < audits.MIN_SAMPLE:
        print(
            f"note: only {r.searches_in_period} search(es) in the period, fewer than {audits.MIN_SAMPLE}: "
            "all of them are to be reviewed"
        )
    print(f"seed {r.seed}; next: 'alpr-edge hq audit monthly show {r.id[:8]}'")
    return 0


def _item_json(i: audits.ReviewItem) -> dict[str, Any]:
    s = i.search
    return {
        "audit_uuid": s.audit_uuid, "source": s.source, "at": iso_utc(s.at), "user": s.user, "role": s.role,
        "reason_kind": s.reason_kind(), "reason": s.reason, "purpose": dict(s.purpose), "criteria": dict(s.criteria),
        "results": s.results, "read_uuids": list(s.read_uuids), "finding": i.finding, "note": i.note,
        "reviewed_by": i.reviewed_by, "reviewed_at": iso_utc(i.reviewed_at),
    }  # fmt: skip


def _show(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    if not args.review:
        return _list_reviews(conn, session)
    r = audits.load_review(conn, audits.resolve_review_id(conn, args.review))
    reproduces = audits.verify_draw(conn, r)
    session.record("audit.view", detail={"review_id": r.id, "audit_uuids": [i.search.audit_uuid for i in r.items]})
    if args.json:
        print(json.dumps({
            "id": r.id, "period_start": iso_utc(r.period_start), "period_end": iso_utc(r.period_end),
            "drawn_at": iso_utc(r.drawn_at), "drawn_by": r.drawn_by, "seed": r.seed,
            "searches_in_period": r.searches_in_period, "draw_reproduces": reproduces, "signed_by": r.signed_by,
            "signed_at": iso_utc(r.signed_at), "conclusion": r.conclusion, "memo_sha256": r.memo_sha256,
            "items": [_item_json(i) for i in r.items],
        }))  # fmt: skip
        return 0
    print(
        f"review {r.id}: {audits.month_name(r.period_start)} "
        f"({render.utc(r.period_start)} to {render.utc(r.period_end)})"
    )
    print(
        f"drawn {render.utc(r.drawn_at)} by {r.drawn_by}, seed {r.seed}: {len(r.items)} of {r.searches_in_period} "
        f"search(es); the draw {'reproduces' if reproduces else 'DOES NOT reproduce'} from the seed"
    )
    if r.signed:
        print(f"signed off by {r.signed_by} at {render.utc(r.signed_at)}: {r.conclusion}")
    else:
        print(f"open: {r.missing_findings()} of {len(r.items)} search(es) without a finding")
    for n, i in enumerate(r.items, 1):
        s = i.search
        returned = f"{s.results if s.results is not None else '?'} read(s)"
        if s.read_uuids:
            more = f" (+{len(s.read_uuids) - 5} more)" if len(s.read_uuids) > 5 else ""
            returned += ": " + ", ".join(s.read_uuids[:5]) + more
        print(f"\n{n:2}. {s.audit_uuid}  {render.utc(s.at)}  {s.user} ({s.role}) at {s.source}")
        print(f"    purpose:  {s.reason}  [{s.reason_kind()}]")
        print(f"    criteria: {s.criteria_text()}")
        print(f"    returned: {returned}")
        if i.finding:
            print(
                f"    finding:  {i.finding} by {i.reviewed_by} {render.utc(i.reviewed_at)}"
                + (f": {i.note}" if i.note else "")
            )
        else:
            print("    finding:  none yet")
    return 0


def _list_reviews(conn: psycopg.Connection, session: HqSession) -> int:
    rows = conn.execute(
        "SELECT r.id::text, r.period_start, r.searches_in_period, r.signed_by, r.signed_at, count(i.audit_uuid), "
        "count(i.finding) FROM audit_reviews r LEFT JOIN audit_review_items i ON i.review_id = r.id "
        "GROUP BY r.id ORDER BY r.period_start DESC"
    ).fetchall()
    session.record("audit.list", detail={"reviews": len(rows)})
    print(f"{'REVIEW':<36}  {'MONTH':<15} {'DRAWN':>9} {'FOUND':>6}  STATE")
    for rid, start, total, signed_by, signed_at, drawn, found in rows:
        state = f"signed by {signed_by} {render.utc(signed_at)}" if signed_at is not None else "open"
        print(f"{rid:<36}  {audits.month_name(start):<15} {f'{drawn}/{total}':>9} {found:>6}  {state}")
    return 0


def _finding(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    rid = audits.resolve_review_id(conn, args.review)
    item = audits.record_finding(conn, session, rid, args.search, args.finding, args.note or "")
    left = audits.load_review(conn, rid).missing_findings()
    print(f"{item.search.audit_uuid}: {item.finding}; {left} search(es) of the review still without a finding")
    return 0


def _signoff(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    rid = audits.resolve_review_id(conn, args.review)
    r, html_path, pdf_path = audits.sign_off(conn, session, rid, args.conclusion, args.out)
    print(f"review {r.id} signed off by {r.signed_by}; memorandum {html_path} and {pdf_path} (sha256 {r.memo_sha256})")
    return 0


def _memo(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    r = audits.load_review(conn, audits.resolve_review_id(conn, args.review))
    doc = audits.memorandum(r, audits.stale_devices(conn, r.period_end))
    pdf = render.to_pdf(doc)
    digest = hashlib.sha256(pdf).hexdigest()
    session.record("audit.memo", detail={"review_id": r.id, "pdf_sha256": digest, "out": str(args.out)})
    html_path, pdf_path, _ = render.write_documents(doc, args.out, audits.memo_stem(r), pdf=pdf)
    print(f"wrote {html_path} and {pdf_path}" + ("" if r.signed else " (draft: not signed off)"))
    if r.signed:
        same = digest == r.memo_sha256
        print(f"the PDF {'matches' if same else 'DOES NOT match'} the signed memorandum's sha256 {r.memo_sha256}")
    return 0


def register_monthly(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``monthly`` to the ``hq audit`` group."""
    m = asub.add_parser(
        "monthly",
        help="the monthly audit of searches (P15): draw, review, sign off, memorandum",
        description="At least ten searches drawn at random from the preceding calendar month (all of them when "
        "fewer), from headquarters' and the units' access records, with a recorded seed so the draw can be "
        "repeated; a finding per search; the auditor's sign-off; the memorandum in HTML and PDF.",
    )
    msub = m.add_subparsers(dest="monthly_command", required=True, metavar="STEP", help="what to do")

    d = msub.add_parser(
        "draw",
        help="draw the sample for a month (default: the preceding month)",
        description="Draw the searches to review and store the review (one per month).",
    )
    d.add_argument("--month", default=None, metavar="YYYY-MM", help="a month that has ended (default: the last one)")
    d.add_argument("--seed", default=None, help="the draw's seed (default: a random one, recorded)")
    d.add_argument(
        "--size", type=int, default=audits.MIN_SAMPLE, help=f"searches to draw (at least {audits.MIN_SAMPLE})"
    )
    add_hq_login_args(d)
    d.set_defaults(func=_run("audit.view", _draw))

    s = msub.add_parser(
        "show",
        help="show a review's searches with their purpose, criteria, results, findings",
        description="Each search drawn: who, when, where, its case number or reason, its criteria "
        "and what it returned, with the finding so far; checks that the draw reproduces from its "
        "seed. Without REVIEW: the list of reviews.",
    )
    s.add_argument("review", nargs="?", default=None, metavar="REVIEW", help="review id (or its first 6+ characters)")
    s.add_argument("--json", action="store_true", help="one JSON object instead of text")
    add_hq_login_args(s)
    s.set_defaults(func=_run("audit.view", _show))

    f = msub.add_parser(
        "finding",
        help="record the finding on one search of a review",
        description="Record (or change, until the sign-off) the finding on one search; a "
        "non-compliant or follow-up finding needs a note. Nobody reviews their own search.",
    )
    f.add_argument("review", metavar="REVIEW", help="review id (or its first 6+ characters)")
    f.add_argument("search", metavar="AUDIT_UUID", help="the search's entry id (or its first 6+ characters)")
    f.add_argument("finding", choices=audits.FINDINGS, help="the finding")
    f.add_argument("--note", default="", help=f"why (at least {audits.MIN_NOTE} characters unless compliant)")
    add_hq_login_args(f)
    f.set_defaults(func=_run("audit.view", _finding))

    so = msub.add_parser(
        "signoff",
        help="sign the review off (auditors) and write the memorandum",
        description="Close the review with your conclusion (auditor role; every search must "
        "have a finding) and write the signed memorandum, HTML and PDF, to --out.",
    )
    so.add_argument("review", metavar="REVIEW", help="review id (or its first 6+ characters)")
    so.add_argument(
        "--conclusion", required=True, help=f"the audit's result (at least {audits.MIN_CONCLUSION} characters)"
    )
    so.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the memorandum")
    add_hq_login_args(so)
    so.set_defaults(func=_run("audit.signoff", _signoff))

    me = msub.add_parser(
        "memo",
        help="write a review's memorandum (a draft until signed off)",
        description="Write the memorandum (HTML and PDF) to --out; for a signed review, says "
        "whether it matches the SHA-256 stored at the sign-off.",
    )
    me.add_argument("review", metavar="REVIEW", help="review id (or its first 6+ characters)")
    me.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the memorandum")
    add_hq_login_args(me)
    me.set_defaults(func=_run("audit.view", _memo))


# -- yearly report -------------------------------------------------------------------------------------------------


def _yearly(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    now = time.time()
    doc = report.make(conn, args.year, now)
    pdf = render.to_pdf(doc)
    digest = hashlib.sha256(pdf).hexdigest()
    session.record("report.yearly", detail={"year": args.year, "pdf_sha256": digest, "out": str(args.out)})
    html_path, pdf_path, _ = render.write_documents(doc, args.out, report.report_stem(args.year), pdf=pdf)
    print(f"wrote {html_path} and {pdf_path}")
    return 0


# -- outside-agency requests ---------------------------------------------------------------------------------------


def _req_line(r: outside.OutsideRequest) -> str:
    decided = f" by {r.decided_by} {render.utc(r.decided_at)}" if r.decided_by else ""
    return (
        f"{r.id}  {render.utc(r.at)}  {r.status}{decided}\n    {r.agency} ({r.person}), case {r.case_number}: "
        f"{r.purpose}; entered by {r.entered_by}" + (f"\n    note: {r.decision_note}" if r.decision_note else "")
    )


def _req_add(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    r = outside.add_request(conn, session, args.agency, args.person, args.purpose, args.case)
    print(f"request {r.id} filed (pending): an administrator other than you approves or denies it")
    return 0


def _req_decide(approve: bool) -> Body:
    def body(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
        r = outside.decide(conn, session, outside.resolve_request_id(conn, args.request), approve, args.note or "")
        print(f"request {r.id} {r.status}")
        return 0

    return body


def _req_list(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    rows = outside.list_requests(conn, args.status)
    session.record("requests.list", detail={"status": args.status, "count": len(rows)})
    for r in rows:
        print(json.dumps(r.to_json()) if args.json else _req_line(r))
    if not args.json:
        print(f"{len(rows)} request(s)")
    return 0


# -- maintenance at headquarters -----------------------------------------------------------------------------------


def _maint_list(args: argparse.Namespace, conn: psycopg.Connection, session: HqSession) -> int:
    at = "CASE WHEN jsonb_typeof(data->'at') = 'number' THEN (data->>'at')::float8 END"
    sql = (
        f"SELECT device_id, {at} AS t, data FROM audit WHERE data->>'action' IN ('maintenance', 'calibration') "
        f"AND (%(d)s::text IS NULL OR device_id = %(d)s) AND (%(s)s::float8 IS NULL OR {at} >= %(s)s) "
        "ORDER BY device_id, t"
    )
    rows = conn.execute(sql, {"d": args.device, "s": args.since}).fetchall()
    session.record("maintenance.list", detail={"device": args.device, "count": len(rows)})
    for device, t, data in rows:
        d = data.get("detail") if isinstance(data.get("detail"), dict) else {}
        rec = {
            "device": device, "at": iso_utc(t), "user": data.get("user"), "kind": d.get("kind") or data.get("action"),
            "camera": d.get("camera") or "", "summary": d.get("summary") or "", "values": d.get("values") or {},
        }  # fmt: skip
        if args.json:
            print(json.dumps(rec))
        else:
            values = " ".join(f"{k}={v}" for k, v in rec["values"].items()) if isinstance(rec["values"], dict) else ""
            print(f"{device:<20} {rec['at']:<25} {rec['kind']!s:<12} {rec['camera'] or '-':<10} {rec['user']!s:<16} "
                  f"{rec['summary']}" + (f"  [{values}]" if values else ""))  # fmt: skip
    if not args.json:
        print(f"{len(rows)} record(s)")
    return 0


def _year(text: str) -> int:
    try:
        return int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a year: {text!r}") from e


def register(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report``, ``requests`` and ``maintenance`` to the ``hq`` group."""
    rep = hsub.add_parser(
        "report", help="reports: the yearly report (P16)", description="Reports on the system's use and effectiveness."
    )
    rsub = rep.add_subparsers(dest="report_command", required=True, metavar="REPORT", help="which report")
    y = rsub.add_parser(
        "yearly",
        help="the yearly report, HTML and PDF, with charts",
        description="Reads, hits, confirmed hits and outcomes, searches by purpose, data shared with "
        "other agencies, purges, the units' sync gaps (P9) and maintenance records (P17), per "
        "month. Auditors and administrators.",
    )
    y.add_argument("--year", type=_year, required=True, help="the calendar year (UTC); the current one: to date")
    y.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the report")
    add_hq_login_args(y)
    y.set_defaults(func=_run("report", _yearly))

    req = hsub.add_parser(
        "requests",
        help="outside agencies' requests for data (P11)",
        description="Requests from other agencies, in writing: entered by an investigator or "
        "administrator, approved or denied by another administrator, kept on file. A search for "
        "an outside agency needs an approved request for that agency and case.",
    )
    qsub = req.add_subparsers(dest="requests_command", required=True, metavar="ACTION", help="what to do")
    a = qsub.add_parser("add", help="file a request", description="File an outside agency's request (pending).")
    a.add_argument("--agency", required=True, help="the requesting agency")
    a.add_argument("--person", required=True, help="the person who asked")
    a.add_argument("--purpose", required=True, help="what the data is for")
    a.add_argument("--case", required=True, metavar="NUMBER", help="their case number")
    add_hq_login_args(a)
    a.set_defaults(func=_run("requests.enter", _req_add))
    for name, approve in (("approve", True), ("deny", False)):
        p = qsub.add_parser(
            name,
            help=f"{name} a pending request (administrators; not the one who entered it)",
            description=f"{name.capitalize()} a pending request; a decision is final.",
        )
        p.add_argument("request", metavar="ID", help="request id (or its first 6+ characters)")
        p.add_argument("--note", default="", required=not approve, help="the decision's note (a denial says why)")
        add_hq_login_args(p)
        p.set_defaults(func=_run("requests.decide", _req_decide(approve)))
    ls = qsub.add_parser("list", help="list requests, newest first", description="Requests on file, newest first.")
    ls.add_argument("--status", choices=outside.STATUSES, default=None, help="only requests with this status")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    add_hq_login_args(ls)
    ls.set_defaults(func=_run("requests.enter", _req_list))

    mt = hsub.add_parser(
        "maintenance",
        help="the units' maintenance and calibration records (P17)",
        description="Maintenance and calibration records as synced from the units.",
    )
    msub = mt.add_subparsers(dest="maintenance_command", required=True, metavar="ACTION", help="what to do")
    ml = msub.add_parser(
        "list", help="list the records, per unit", description="The records of every unit (or one), oldest first."
    )
    ml.add_argument("--device", default=None, help="only this unit")
    ml.add_argument("--since", type=_parse_time, default=None, metavar="TIME", help="only records from this time")
    ml.add_argument("--json", action="store_true", help="one JSON object per line")
    add_hq_login_args(ml)
    ml.set_defaults(func=_run("maintenance", _maint_list))
