"""``alpr-edge hq search``: the unit's search (edge/search.py, edge/search_commands.py) over every unit's reads
in headquarters' PostgreSQL, by device as well as camera; recorded in ``hq_audit`` through the HQ session.

An outside-agency search at headquarters must also name the request that was approved for it (P11: requests
are in writing, approved and kept on file): ``--request ID`` of a row of ``outside_requests`` with status
'approved' whose agency is the one named with ``--for-agency``. Otherwise it is refused (and the refusal recorded).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

import psycopg

from ..access.audit import AuditError
from ..access.reasons import Purpose, PurposeError, add_purpose_args
from ..access.session import AccessDenied
from ..access.users import AuthError
from ..search import SearchCriteria, SearchResult, build_query, collect
from ..search_commands import add_criteria_args, run_search
from ..store.errors import StoreError
from .access import SignerError, add_hq_login_args, hq_cli_login

RULE_REQUEST = "P11: outside agency needs an approved request"


def search_postgres(conn: psycopg.Connection, c: SearchCriteria) -> SearchResult:
    """Run the search on headquarters' reads. A server-side cursor streams the rows, so a place search (whose
    limit applies after the exact distance test) stops reading once it has enough."""
    q = build_query(c, "postgres")
    with conn.transaction(), conn.cursor(name=f"search_{uuid.uuid4().hex}") as cur:
        cur.itersize = 500
        cur.execute(q.sql, q.params)
        return collect(cur, c)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def check_request(conn: psycopg.Connection, request_id: str | None, purpose: Purpose) -> dict[str, Any]:
    """The request's detail for the access record, or PurposeError (rule RULE_REQUEST) saying what is wrong."""
    if not purpose.outside:
        if request_id:
            raise PurposeError(RULE_REQUEST, "--request: only for a search for an outside agency (--for-agency)")
        return {}
    if not request_id:
        raise PurposeError(
            RULE_REQUEST,
            "a search for an outside agency must name its approved written request (--request ID) (P11)",
        )
    try:
        rid = str(uuid.UUID(request_id))
    except ValueError as e:
        raise PurposeError(RULE_REQUEST, "--request: not a request id (a UUID)") from e
    with conn.transaction():
        row = conn.execute(
            "SELECT agency, person, case_number, status FROM outside_requests WHERE id = %s", (rid,)
        ).fetchone()
    if row is None:
        raise PurposeError(RULE_REQUEST, f"--request: no outside-agency request {rid}")
    agency, person, case_number, status = row
    if status != "approved":
        raise PurposeError(RULE_REQUEST, f"--request: request {rid} is {status}, not approved (P11)")
    if not _same(agency, purpose.outside_agency):
        raise PurposeError(RULE_REQUEST, f"--request: request {rid} was made by another agency")
    return {"request": {"id": rid, "agency": agency, "person": person, "case_number": case_number}}


def cmd_hq_search(args: argparse.Namespace) -> int:
    from .commands import HqError, _connect_db

    try:
        with _connect_db(args) as conn:
            session = hq_cli_login(args, conn, "search")
            return run_search(
                args,
                session.record,
                lambda c: search_postgres(conn, c),
                check=lambda p: check_request(conn, args.request, p),
                show_device=True,
            )
    except (HqError, SignerError, AuthError, AccessDenied, AuditError, StoreError, psycopg.Error) as e:
        # AuditError: the search could not be recorded, so nothing was shown
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2


def register(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hq search`` to the ``alpr-edge hq`` parser."""
    p = hsub.add_parser(
        "search",
        help="search every unit's reads (investigators; a case number or detailed reason is required)",
        description="Search the reads of every unit by plate (exact, partial, wildcard, look-alike), time, device, "
        "camera and place. You log in with your headquarters account (investigator or administrator). Refused "
        "without a case or call-for-service number or a detailed reason (P14); a search for another agency names "
        "the agency, the person and their purpose, a case number, and the approved request (--request, P11). Each "
        "search and what it returned is recorded in headquarters' access record before anything is shown.",
    )
    add_hq_login_args(p)
    add_purpose_args(p)
    p.add_argument(
        "--request", default=None, metavar="ID", help="the approved outside-agency request this search answers (P11)"
    )
    add_criteria_args(p, devices=True)
    p.set_defaults(func=cmd_hq_search)
