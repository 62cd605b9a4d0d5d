"""Outside-agency requests for data (P11): written (agency, person, purpose, case number), approved or denied by an
administrator other than the person who entered them, and kept on file (``outside_requests``).

Why it is built this way:
- The request's fields are checked by the same rules as a search for an outside agency (edge.access.reasons), so a
  request that is approved can be searched for as written.
- A decision is final: a request is approved or denied once. Who entered it cannot decide it (two people, P11).
- Each step is recorded in headquarters' access record inside the same transaction as the change.
- ``find_approved`` is what ``hq search`` asks before a search for an outside agency.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ..access.reasons import check_purpose
from ..access.session import require
from .audits import Actor

STATUSES = ("pending", "approved", "denied")
MIN_NOTE = 10  # a denial says why
MAX_NOTE = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_COLUMNS = (
    "id::text, at, agency, person, purpose, case_number, entered_by, status, decided_by, decided_at, decision_note"
)


class RequestError(ValueError):
    """The request or decision is refused; the message says why."""


@dataclass(frozen=True)
class OutsideRequest:
    id: str
    at: float
    agency: str
    person: str
    purpose: str
    case_number: str
    entered_by: str
    status: str
    decided_by: str | None
    decided_at: float | None
    decision_note: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _row(r: Sequence[Any]) -> OutsideRequest:
    return OutsideRequest(*r)


def add_request(
    conn: psycopg.Connection,
    actor: Actor,
    agency: str,
    person: str,
    purpose: str,
    case_number: str,
    *,
    clock: Callable[[], float] = time.time,
) -> OutsideRequest:
    """File a request (status pending). PurposeError (a ValueError) naming the field that is missing or wrong."""
    require(actor.user, "requests.enter")
    if not (case_number or "").strip():
        raise RequestError("case number: a request names the requesting agency's case number (P11)")
    p = check_purpose(case_number, None, agency, person, purpose)
    req = OutsideRequest(
        str(uuid.uuid4()), clock(), p.outside_agency, p.outside_person, p.outside_purpose, p.case_number,
        actor.user.name, "pending", None, None, "",
    )  # fmt: skip
    with conn.transaction():
        conn.execute(
            "INSERT INTO outside_requests (id, at, agency, person, purpose, case_number, entered_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (req.id, req.at, req.agency, req.person, req.purpose, req.case_number, req.entered_by),
        )
        actor.record(
            "requests.enter",
            reason=f"case {req.case_number}; for {req.agency} ({req.person}): {req.purpose}",
            detail={"request_id": req.id, "agency": req.agency, "case_number": req.case_number},
        )
    return req


def resolve_request_id(conn: psycopg.Connection, text: str) -> str:
    """A request's id from the full id or a unique prefix of at least 6 characters."""
    key = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f-]{6,36}", key):
        raise RequestError(f"request: not a request id: {text!r}")
    rows = conn.execute("SELECT id::text FROM outside_requests WHERE id::text LIKE %s", (key + "%",)).fetchall()
    if len(rows) != 1:
        raise RequestError(f"request {text}: " + ("no such request" if not rows else "ambiguous, give more of the id"))
    return str(rows[0][0])


def get_request(conn: psycopg.Connection, request_id: str) -> OutsideRequest:
    r = conn.execute(f"SELECT {_COLUMNS} FROM outside_requests WHERE id = %s", (request_id,)).fetchone()
    if r is None:
        raise RequestError(f"request {request_id}: no such request")
    return _row(r)


def decide(
    conn: psycopg.Connection,
    actor: Actor,
    request_id: str,
    approve: bool,
    note: str,
    *,
    clock: Callable[[], float] = time.time,
) -> OutsideRequest:
    """Approve or deny a pending request. AccessDenied unless an administrator; RequestError when it was already
    decided, when the decider entered it, or a denial gives no reason."""
    require(actor.user, "requests.decide")
    note = (note or "").strip()
    if _CONTROL.search(note) or len(note) > MAX_NOTE:
        raise RequestError(f"note: at most {MAX_NOTE} characters, no control characters")
    if not approve and len(note) < MIN_NOTE:
        raise RequestError(f"note: a denial says why in at least {MIN_NOTE} characters")
    status = "approved" if approve else "denied"
    with conn.transaction():
        r = conn.execute(f"SELECT {_COLUMNS} FROM outside_requests WHERE id = %s FOR UPDATE", (request_id,)).fetchone()
        if r is None:
            raise RequestError(f"request {request_id}: no such request")
        req = _row(r)
        if req.status != "pending":
            raise RequestError(f"request {request_id}: already {req.status} by {req.decided_by}")
        if req.entered_by.lower() == actor.user.name.lower():
            raise RequestError(f"request {request_id}: entered by {req.entered_by}, who cannot also decide it (P11)")
        now = clock()
        conn.execute(
            "UPDATE outside_requests SET status = %s, decided_by = %s, decided_at = %s, decision_note = %s "
            "WHERE id = %s",
            (status, actor.user.name, now, note, request_id),
        )
        actor.record(
            f"requests.{'approve' if approve else 'deny'}",
            reason=note,
            detail={"request_id": request_id, "agency": req.agency, "case_number": req.case_number},
        )
    return dataclasses.replace(req, status=status, decided_by=actor.user.name, decided_at=now, decision_note=note)


def list_requests(conn: psycopg.Connection, status: str | None = None) -> list[OutsideRequest]:
    """Requests, newest first (all, or those of one status)."""
    if status is not None and status not in STATUSES:
        raise RequestError(f"status: must be one of {', '.join(STATUSES)}")
    sql = f"SELECT {_COLUMNS} FROM outside_requests"
    params: tuple[object, ...] = ()
    if status:
        sql += " WHERE status = %s"
        params = (status,)
    return [_row(r) for r in conn.execute(sql + " ORDER BY at DESC, id", params).fetchall()]


def find_approved(conn: psycopg.Connection, agency: str, case_number: str) -> OutsideRequest | None:
    """The newest approved request of ``agency`` (case- and space-insensitive) for ``case_number``, if any: a search
    for an outside agency needs one (P11)."""
    sql = (
        f"SELECT {_COLUMNS} FROM outside_requests WHERE status = 'approved' AND case_number = %s "
        "AND lower(regexp_replace(agency, '\\s+', ' ', 'g')) = %s ORDER BY decided_at DESC LIMIT 1"
    )
    r = conn.execute(sql, (case_number.strip(), " ".join(agency.split()).lower())).fetchone()
    return _row(r) if r else None
