"""Maintenance and calibration records of a unit (P17).

Why it is built this way:
- A record is an access-record entry (action ``calibration`` for a calibration, ``maintenance`` for maintenance,
  inspection and repair; detail {kind, camera, summary, values}), so it is signed, chained and reaches
  headquarters with the rest of the access record: nothing new to sync, and nobody can quietly edit it later.
- ``log_maintenance`` is the one place the rules are checked: the serial console and ``alpr-edge maintenance log``
  both call it. Only technicians and administrators may write one (``require(user, "maintenance")``).
- Values are kept as typed (text): a reading such as ``focus=1.25`` or ``firmware=4.2.0-rc1`` is recorded as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .access.audit import AuditEntry, AuditLog
from .access.session import Session, require
from .access.users import User
from .config import ID_PATTERN

KINDS = ("maintenance", "calibration", "inspection", "repair")
ACTIONS = ("maintenance", "calibration")
MAX_SUMMARY = 500
MIN_SUMMARY = 3
MAX_VALUES = 20
MAX_VALUE = 200
_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MaintenanceError(ValueError):
    """A record that cannot be written as given; the message names the field."""


def action_for(kind: str) -> str:
    """The access-record action of a kind of record."""
    return "calibration" if kind == "calibration" else "maintenance"


def check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise MaintenanceError(f"kind: must be one of {', '.join(KINDS)}")
    assert isinstance(kind, str)
    return kind


def check_summary(summary: object) -> str:
    if not isinstance(summary, str):
        raise MaintenanceError("summary: must be text")
    if _CONTROL.search(summary.replace("\n", " ").replace("\t", " ")):
        raise MaintenanceError("summary: must not contain control characters")
    text = " ".join(summary.split())
    if not MIN_SUMMARY <= len(text) <= MAX_SUMMARY:
        raise MaintenanceError(f"summary: {MIN_SUMMARY} to {MAX_SUMMARY} characters saying what was done")
    return text


def check_camera(camera: object) -> str:
    """'' (the whole unit) or a camera id as in the settings file."""
    if camera is None or camera == "":
        return ""
    if not isinstance(camera, str) or not ID_PATTERN.match(camera):
        raise MaintenanceError("camera: a camera id (lowercase letters, digits, - and _, at most 32)")
    return camera


def check_values(values: Mapping[str, object] | None) -> dict[str, str]:
    """KEY -> VALUE readings: keys lowercase identifiers, values short text."""
    out: dict[str, str] = {}
    for k, v in (values or {}).items():
        if not isinstance(k, str) or not _KEY.fullmatch(k):
            raise MaintenanceError(f"value {str(k)[:40]!r}: keys are 1-40 of a-z, 0-9, '_', '.', '-' (letter first)")
        text = str(v).strip() if isinstance(v, str | int | float) and not isinstance(v, bool) else None
        if text is None or _CONTROL.search(text) or len(text) > MAX_VALUE:
            raise MaintenanceError(f"value {k}: text of at most {MAX_VALUE} characters, no control characters")
        out[k] = text
    if len(out) > MAX_VALUES:
        raise MaintenanceError(f"values: at most {MAX_VALUES}")
    return out


def parse_values(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as given on the command line; MaintenanceError for one without '='."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise MaintenanceError(f"value {item[:40]!r}: expected KEY=VALUE")
        if key.strip() in values:
            raise MaintenanceError(f"value {key.strip()}: given twice")
        values[key.strip()] = value
    return check_values(values)


def log_maintenance(
    session_or_audit: Session | AuditLog,
    user: User | None,
    kind: str,
    summary: str,
    camera: str | None = None,
    values: Mapping[str, object] | None = None,
) -> AuditEntry:
    """Record one maintenance or calibration record for ``user`` (a Session's own user when None); signed and
    committed before it returns. AccessDenied unless technician or administrator; MaintenanceError for bad input;
    AuditError when it cannot be recorded."""
    if isinstance(session_or_audit, Session):
        if user is not None and user.name != session_or_audit.user.name:
            raise MaintenanceError(f"user: {user.name} is not the session's user {session_or_audit.user.name}")
        user = session_or_audit.user
    elif user is None:
        raise MaintenanceError("user: who did the work must be given")
    require(user, "maintenance")
    kind = check_kind(kind)
    detail: dict[str, Any] = {
        "kind": kind,
        "camera": check_camera(camera),
        "summary": check_summary(summary),
        "values": check_values(values),
    }
    if isinstance(session_or_audit, Session):
        return session_or_audit.record(action_for(kind), reason=detail["summary"], detail=detail)
    return session_or_audit.record(user.name, user.role, action_for(kind), reason=detail["summary"], detail=detail)


def list_maintenance(audit: AuditLog, *, since: float | None = None, limit: int | None = None) -> list[AuditEntry]:
    """The unit's maintenance and calibration records, oldest first."""
    return audit.entries(actions=ACTIONS, start=since, limit=limit)


def describe(entry: AuditEntry) -> dict[str, Any]:
    """One record as shown and printed as JSON: when, who, kind, camera, summary and values."""
    d = entry.detail
    values = d.get("values")
    return {
        "seq": entry.seq,
        "uuid": entry.uuid,
        "at": entry.at,
        "user": entry.user,
        "role": entry.role,
        "kind": d.get("kind") if isinstance(d.get("kind"), str) else entry.action,
        "camera": d.get("camera") if isinstance(d.get("camera"), str) else "",
        "summary": d.get("summary") if isinstance(d.get("summary"), str) else entry.reason,
        "values": dict(values) if isinstance(values, Mapping) else {},
    }
