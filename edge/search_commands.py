"""``alpr-edge search``: a logged-in investigator searches the unit's reads, with a purpose (P14, P11).

The order is the point: log in; check the purpose and the criteria (a refusal is recorded as ``search.refused``
with the rule broken); run the query; record ONE ``search`` entry with the criteria, the purpose, the count and
the UUIDs returned; only then print. If the entry cannot be recorded, nothing is shown. The criteria options,
the flow and the output are shared with ``alpr-edge hq search`` (edge/hq/search.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .access.reasons import MAX_REASON, Purpose, PurposeError, add_purpose_args, purpose_from_args
from .search import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_RADIUS_M,
    MODES,
    RECORDED_UUIDS,
    CriteriaError,
    Place,
    SearchCriteria,
    SearchResult,
    search_sqlite,
)
from .store.commands import _parse_time, _store_args, iso_utc

RULE_CRITERIA = "search criteria"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Recorder(Protocol):
    """``Session.record`` / ``HqSession.record``: append one access-record entry or raise (nothing shown then)."""

    def __call__(self, action: str, *, reason: str = "", detail: Mapping[str, Any] | None = None) -> Any: ...


# --- options ------------------------------------------------------------------------------------------------------


def _near(text: str) -> tuple[float, float]:
    try:
        lat_s, lon_s = text.split(",")
        return float(lat_s), float(lon_s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not LAT,LON in degrees (e.g. 45.5017,-73.5673): {text!r}") from e


def _radius(text: str) -> float:
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number of metres: {text!r}") from e


def _limit(text: str) -> int:
    try:
        return int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from e


def add_criteria_args(p: argparse.ArgumentParser, *, devices: bool) -> None:
    """--plate, --mode, --since, --until, --camera (and --device), --near, --radius-m, --limit, --json."""
    g = p.add_argument_group("what to look for (at least one; a plate alone needs 2 letters or digits)")
    g.add_argument("--plate", default="", metavar="PATTERN", help="plate text or pattern (spaces and '-' ignored)")
    g.add_argument(
        "--mode",
        choices=MODES,
        default="exact",
        help="exact; partial (the text anywhere in the plate); wildcard ('*' any run, '?' one character); "
        "lookalike (the OCR's confusions: 0/O/Q/D, 1/I/L, 8/B, 5/S, 2/Z, 6/G). Default exact",
    )
    g.add_argument("--since", type=_parse_time, default=None, metavar="TIME", help="seen at or after (ISO-8601; UTC)")
    g.add_argument("--until", type=_parse_time, default=None, metavar="TIME", help="seen at or before (ISO-8601; UTC)")
    g.add_argument("--camera", action="append", default=[], metavar="ID", help="only this camera (repeatable)")
    if devices:
        g.add_argument("--device", action="append", default=[], metavar="ID", help="only this unit (repeatable)")
    g.add_argument("--near", type=_near, default=None, metavar="LAT,LON", help="only reads within --radius-m of here")
    g.add_argument(
        "--radius-m",
        type=_radius,
        default=None,
        metavar="M",
        help=f"radius around --near (metres, <= {MAX_RADIUS_M:g})",
    )
    g.add_argument(
        "--limit", type=_limit, default=DEFAULT_LIMIT, help=f"most reads shown, newest first (default {DEFAULT_LIMIT}, "
        f"at most {MAX_LIMIT})"
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per read instead of a table")


def criteria_from_args(args: argparse.Namespace) -> SearchCriteria:
    if (args.near is None) != (args.radius_m is None):
        raise CriteriaError("place: give --near LAT,LON and --radius-m together")
    place = None if args.near is None else Place(args.near[0], args.near[1], args.radius_m)
    return SearchCriteria(
        plate=args.plate,
        mode=args.mode,
        since=args.since,
        until=args.until,
        cameras=tuple(args.camera),
        devices=tuple(getattr(args, "device", ()) or ()),
        place=place,
        limit=args.limit,
    )


# --- the flow -----------------------------------------------------------------------------------------------------


def _given(args: argparse.Namespace) -> dict[str, str]:
    """The purpose as typed, safe to record with a refusal (so an audit sees what was offered)."""
    out = {}
    for key in ("case", "reason", "for_agency", "for_person", "for_purpose"):
        v = getattr(args, key, None)
        out[key] = _CONTROL.sub("?", v)[:MAX_REASON] if isinstance(v, str) else ""
    return out


def run_search(
    args: argparse.Namespace,
    record: Recorder,
    query: Callable[[SearchCriteria], SearchResult],
    *,
    check: Callable[[Purpose], Mapping[str, Any]] | None = None,
    show_device: bool = False,
) -> int:
    """Check, query, record, then print. ``check`` adds a rule (PurposeError) and detail for the entry."""
    criteria: SearchCriteria | None = None
    bad_criteria: CriteriaError | None = None
    try:
        criteria = criteria_from_args(args)
    except CriteriaError as e:
        bad_criteria = e
    try:
        purpose = purpose_from_args(args)
        extra = dict(check(purpose)) if check is not None else {}
        if bad_criteria is not None:
            raise bad_criteria
    except (PurposeError, CriteriaError) as e:
        rule = e.rule if isinstance(e, PurposeError) else RULE_CRITERIA
        detail: dict[str, Any] = {"rule": rule, "message": str(e), "given": _given(args)}
        if criteria is not None:
            detail["criteria"] = criteria.to_json()
        record("search.refused", reason=rule, detail=detail)
        print(f"alpr-edge: search refused: {e}", file=sys.stderr)
        return 2
    assert criteria is not None
    result = query(criteria)
    entry = record(
        "search",
        reason=purpose.audit_reason(),
        detail={
            "criteria": criteria.to_json(),
            "results": len(result.reads),
            "truncated": result.truncated,
            "read_uuids": [r.uuid for r in result.reads[:RECORDED_UUIDS]],
            "purpose": purpose.to_json(),
            **extra,
        },
    )
    print_results(result, criteria, as_json=args.json, show_device=show_device)
    seq = getattr(entry, "seq", None)
    note = f"{len(result.reads)} read(s); recorded in the access record" + (f" (entry {seq})" if seq else "")
    if result.truncated:
        note += f"; more matched than --limit {criteria.limit}: narrow the search"
    print(note, file=sys.stderr if args.json else sys.stdout)
    return 0


def format_table(result: SearchResult, criteria: SearchCriteria, *, show_device: bool) -> str:
    dev = f"{'DEVICE':<16}  " if show_device else ""
    dist = "  DIST (M)" if criteria.place is not None else ""
    lines = [f"{'TIME (UTC)':<24}  {dev}{'CAMERA':<12}  {'PLATE':<16}  {'CONF':>5}  {'POSITION':<22}{dist}"]
    for r in result.reads:
        pos = "-" if r.lat is None or r.lon is None else f"{r.lat:.6f},{r.lon:.6f}"
        d = f"  {r.distance_m:8.1f}" if r.distance_m is not None else ""
        dev = f"{r.device_id:<16}  " if show_device else ""
        lines.append(
            f"{iso_utc(r.best_seen):<24}  {dev}{r.camera_id:<12}  {r.text:<16}  {r.confidence:5.2f}  {pos:<22}{d}"
        )
    return "\n".join(lines)


def print_results(result: SearchResult, criteria: SearchCriteria, *, as_json: bool, show_device: bool) -> None:
    if as_json:
        for r in result.reads:
            print(json.dumps(r.to_json()))
    else:
        print(format_table(result, criteria, show_device=show_device))


# --- the unit's command -------------------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> int:
    from .access.audit import AuditError
    from .access.session import AccessDenied, cli_login, open_unit
    from .access.users import AuthError
    from .store.errors import StoreError

    conn = None
    try:
        conn, audit = open_unit(args)
        session = cli_login(args, conn, audit, "search")
        unit_conn = conn
        return run_search(args, session.record, lambda c: search_sqlite(unit_conn, c))
    except (AuthError, AccessDenied, AuditError, StoreError, ValueError) as e:
        # ValueError: a bad settings file (ConfigError); AuditError: not recorded, so nothing was shown
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``search`` command to the ``alpr-edge`` parser."""
    from .access.session import add_login_args

    p = sub.add_parser(
        "search",
        help="search the stored reads (investigators; a case number or detailed reason is required)",
        description="Search this unit's stored reads by plate (exact, partial, wildcard, look-alike), time, camera "
        "and place. You log in (investigator or administrator); the search is refused without a case or "
        "call-for-service number or a detailed reason (P14), and a search for another agency names the agency, "
        "the person who asked and their purpose, with a case number (P11). Every search, with what it returned, "
        "is recorded in the access record before the results are shown; refusals are recorded too.",
    )
    add_login_args(p)
    add_purpose_args(p)
    add_criteria_args(p, devices=False)
    _store_args(p, db=True)
    p.set_defaults(func=cmd_search)
