"""Retention at headquarters (P10): reads older than the period are purged with their images, hits and outcomes,
unless held: at headquarters (table ``holds``) or on the unit that sent the read (``unit_hold_events``, synced as
kind ``hold``: held from the hold's arrival until its release's, whichever comes first); each purge is recorded in
``purges`` and in headquarters' access record.

Headquarters holds the last copy, so there is nothing to wait for (unlike the unit). Batches of ``batch`` reads,
each in its own short transaction: a batch locks its reads (``FOR UPDATE SKIP LOCKED``) and a hold locks the read it
holds (``FOR SHARE``, edge.hq.evidence; a unit's hold as ingest stores it), so a hold and a purge of the same read
never both succeed. Rows whose read is gone or never came (an image or hit that arrived alone) are purged by their
own time when not held.
Afterwards ``VACUUM (ANALYZE)`` of the four tables (and their TOAST tables, where the JPEGs are) so that dead rows
do not linger until autovacuum gets round to them; PostgreSQL has no secure delete, so the space is marked free
and reused rather than overwritten, and backups and WAL archives keep their own copies for their own period.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import psycopg

from ..access.audit import AuditError
from ..access.session import AccessDenied
from ..access.users import AuthError
from ..store.retention import DAY, PurgeResult, Recorder
from .access import HqAuditLog, SignerError, add_hq_login_args, hq_cli_login, load_hq_signer

log = logging.getLogger(__name__)

BATCH = 1000
DEFAULT_DAYS = 30.0
INTERVAL_S = 3600.0
TABLES = ("reads", "read_images", "hits", "hit_outcomes")
# Held: an active hold at headquarters, or an active hold on the unit that sent the read (its hold event here and
# no release event for it: schema migration 4's view active_unit_holds).
_HELD = (
    "(EXISTS (SELECT 1 FROM holds h WHERE h.read_uuid = {col} AND h.released_at IS NULL)"
    " OR EXISTS (SELECT 1 FROM active_unit_holds u WHERE u.read_uuid = {col} AND u.device_id = {dev}))"
)
_READ_HELD = _HELD.format(col="r.uuid", dev="r.device_id")


def purge(
    conn: psycopg.Connection,
    audit: Recorder | None,
    *,
    retention_days: float,
    user: str = "system",
    role: str = "system",
    dry_run: bool = False,
    batch: int = BATCH,
    clock: Callable[[], float] = time.time,
    record_empty: bool = True,
    vacuum: bool = True,
) -> PurgeResult:
    """Purge what is due on ``conn`` (autocommit); the counts. Recorded in ``purges`` and ``audit`` (not for a dry
    run, nor with ``record_empty=False`` when nothing was due). psycopg.Error when the database fails (what was
    committed stays purged)."""
    if not retention_days > 0:
        raise ValueError("retention_days: must be more than 0")
    now = float(clock())
    cutoff = now - retention_days * DAY
    totals = _count_due(conn, cutoff) if dry_run else _delete_due(conn, cutoff, max(1, batch))
    with conn.transaction():
        row = conn.execute(
            f"SELECT count(*) FROM reads r WHERE r.best_seen < %s AND {_READ_HELD}", (cutoff,)
        ).fetchone()
    held = int(row[0]) if row else 0
    result = PurgeResult(cutoff, *totals, held_kept=held, unsynced_kept=0, forced=False, dry_run=dry_run)
    if dry_run or (not record_empty and not any(totals)):
        return result
    with conn.transaction():
        conn.execute(
            "INSERT INTO purges (id, at, by_user, older_than, reads, images, hits, outcomes, held_kept)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (uuidlib.uuid4(), now, user, cutoff, result.reads, result.images, result.hits, result.outcomes, held),
        )
    if audit is not None:
        audit.record(user, role, "purge", reason="retention", detail=result.detail())
    if vacuum and any(totals):
        for t in TABLES:
            conn.execute(f"VACUUM (ANALYZE) {t}")  # autocommit: VACUUM cannot run inside a transaction
    log.info(
        "hq purge: %d read(s), %d image(s), %d hit(s), %d outcome(s); kept %d held",
        result.reads,
        result.images,
        result.hits,
        result.outcomes,
        held,
    )
    return result


def _due_reads(limit: str) -> str:
    return f"SELECT r.uuid FROM reads r WHERE r.best_seen < %s AND NOT {_READ_HELD} ORDER BY r.best_seen {limit}"


def _one(conn: psycopg.Connection, sql: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


# Rows whose read is not (or no longer) at headquarters: purged by their own time.
_LONE_IMAGES = (
    "FROM read_images i WHERE i.received_at < %s AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.uuid = i.read_uuid)"
    f" AND NOT {_HELD.format(col='i.read_uuid', dev='i.device_id')}"
)
_LONE_HITS = (
    "FROM hits x WHERE x.seen_at < %s AND NOT EXISTS (SELECT 1 FROM reads r WHERE r.uuid = x.read_uuid)"
    f" AND NOT {_HELD.format(col='x.read_uuid', dev='x.device_id')}"
)
_LONE_OUTCOMES = "FROM hit_outcomes o WHERE o.at < %s AND NOT EXISTS (SELECT 1 FROM hits x WHERE x.uuid = o.hit_uuid)"


def _count_due(conn: psycopg.Connection, cutoff: float) -> tuple[int, int, int, int]:
    due = _due_reads("")
    with conn.transaction():
        reads = _one(conn, f"SELECT count(*) FROM ({due}) d", (cutoff,))
        images = _one(conn, f"SELECT count(*) FROM read_images WHERE read_uuid IN ({due})", (cutoff,))
        images += _one(conn, f"SELECT count(*) {_LONE_IMAGES}", (cutoff,))
        hits = _one(conn, f"SELECT count(*) FROM hits WHERE read_uuid IN ({due})", (cutoff,))
        hits += _one(conn, f"SELECT count(*) {_LONE_HITS}", (cutoff,))
        outcomes = _one(
            conn,
            f"SELECT count(*) FROM hit_outcomes WHERE hit_uuid IN (SELECT uuid FROM hits WHERE read_uuid IN ({due}))",
            (cutoff,),
        )
        outcomes += _one(
            conn, f"SELECT count(*) FROM hit_outcomes WHERE hit_uuid IN (SELECT x.uuid {_LONE_HITS})", (cutoff,)
        )
        outcomes += _one(conn, f"SELECT count(*) {_LONE_OUTCOMES}", (cutoff,))
    return reads, images, hits, outcomes


def _delete_due(conn: psycopg.Connection, cutoff: float, batch: int) -> tuple[int, int, int, int]:
    t = [0, 0, 0, 0]
    while True:
        with conn.transaction():
            uuids = [
                r[0]
                for r in conn.execute(_due_reads("LIMIT %s FOR UPDATE OF r SKIP LOCKED"), (cutoff, batch)).fetchall()
            ]
            if not uuids:
                break
            hits = [r[0] for r in conn.execute("SELECT uuid FROM hits WHERE read_uuid = ANY(%s)", (uuids,)).fetchall()]
            t[3] += conn.execute("DELETE FROM hit_outcomes WHERE hit_uuid = ANY(%s)", (hits,)).rowcount
            t[2] += conn.execute("DELETE FROM hits WHERE uuid = ANY(%s)", (hits,)).rowcount
            t[1] += conn.execute("DELETE FROM read_images WHERE read_uuid = ANY(%s)", (uuids,)).rowcount
            t[0] += conn.execute("DELETE FROM reads WHERE uuid = ANY(%s)", (uuids,)).rowcount
    with conn.transaction():
        t[3] += conn.execute(
            f"DELETE FROM hit_outcomes WHERE hit_uuid IN (SELECT x.uuid {_LONE_HITS})", (cutoff,)
        ).rowcount
        t[2] += conn.execute(f"DELETE {_LONE_HITS}", (cutoff,)).rowcount
        t[1] += conn.execute(f"DELETE {_LONE_IMAGES}", (cutoff,)).rowcount
        t[3] += conn.execute(f"DELETE {_LONE_OUTCOMES}", (cutoff,)).rowcount
    return t[0], t[1], t[2], t[3]


class HqRetentionWorker(threading.Thread):
    """``hq serve``'s scheduled purge: its own connection, every ``interval_s`` until ``stop``."""

    def __init__(
        self,
        url: str,
        make_audit: Callable[[psycopg.Connection], Recorder],
        retention_days: float,
        stop: threading.Event,
        *,
        interval_s: float = INTERVAL_S,
        first_delay_s: float = 60.0,
    ) -> None:
        super().__init__(name="hq-retention", daemon=True)
        self._url, self._make_audit = url, make_audit
        self.retention_days = retention_days
        self._stop_event = stop
        self.interval_s, self.first_delay_s = interval_s, first_delay_s
        self.last: PurgeResult | None = None
        self.fault: str | None = None

    def run(self) -> None:
        from .schema import connect

        wait = self.first_delay_s
        while not self._stop_event.wait(wait):
            wait = self.interval_s
            try:
                with connect(self._url) as conn:
                    self.last = purge(
                        conn, self._make_audit(conn), retention_days=self.retention_days, record_empty=False
                    )
                self.fault = None
            except Exception as e:  # the next interval tries again
                self.fault = f"purge failed: {e}"
                log.error("hq retention: purge failed: %s", e)


# -- the command ----------------------------------------------------------------------------------------------------


def cmd_purge(args: argparse.Namespace) -> int:
    from .commands import _connect_db

    try:
        with _connect_db(args) as conn:
            session = hq_cli_login(args, conn, "maintenance")
            r = purge(
                conn,
                session.audit,
                retention_days=args.retention_days,
                user=session.user.name,
                role=session.user.role,
                dry_run=args.dry_run,
            )
    except (AuthError, AccessDenied, AuditError, SignerError, ValueError, psycopg.Error) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    verb = "would purge" if r.dry_run else "purged"
    print(
        f"{verb} {r.reads} read(s) older than {args.retention_days:g} days ({r.images} image(s), {r.hits} hit(s), "
        f"{r.outcomes} outcome(s)); kept {r.held_kept} because held"
    )
    return 0


def days_arg(v: str) -> float:
    try:
        d = float(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number of days: {v!r}") from e
    if not 1 <= d <= 3650:
        raise argparse.ArgumentTypeError("must be 1..3650 days")
    return d


def register(hsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = hsub.add_parser(
        "purge",
        help="purge reads past the retention period now (hq serve also does it hourly)",
        description="Purge reads older than --retention-days with their images, hits and outcomes, unless held "
        "(P10) at headquarters or on the unit that sent it; a hit that matters must be held as evidence, or it goes "
        "with its read. Recorded in purges and headquarters' access record; the tables are vacuumed afterwards. "
        "Technician or administrator.",
    )
    p.add_argument("--retention-days", type=days_arg, default=DEFAULT_DAYS, help="the period (default 30)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    add_hq_login_args(p)
    p.set_defaults(func=cmd_purge)


def scheduled_audit(args: argparse.Namespace) -> Callable[[psycopg.Connection], Recorder]:
    """For ``hq serve``: the access record the scheduled purge writes to, signed with headquarters' key (loaded
    now, so a missing key stops serve at once)."""
    signer = load_hq_signer(args)
    return lambda conn: HqAuditLog(conn, signer)


def add_serve_args(serve: argparse.ArgumentParser) -> None:
    """``hq serve``'s scheduled purge: on by default, so the period is kept without anyone remembering to."""
    from .access import add_signing_key_arg

    serve.add_argument(
        "--retention-days",
        type=days_arg,
        default=DEFAULT_DAYS,
        help="purge reads older than this, unless held (default 30; P10)",
    )
    serve.add_argument(
        "--purge-interval",
        type=float,
        default=INTERVAL_S,
        help="seconds between scheduled purges (default 3600; 0: leave it to `alpr-edge hq purge`)",
    )
    add_signing_key_arg(serve)


def start_scheduled(
    args: argparse.Namespace, url: str, stop: threading.Event, *, first_delay_s: float = 60.0
) -> HqRetentionWorker | None:
    """Start the scheduled purge for ``hq serve`` (None when --purge-interval is 0). The signing key is loaded now:
    a purge that could not be recorded must not run, and a missing key stops serve at once (HqError)."""
    from .commands import HqError

    if args.purge_interval <= 0:
        return None
    try:
        make_audit = scheduled_audit(args)
    except SignerError as e:
        raise HqError(f"{e} (the scheduled purge records itself; --purge-interval 0 turns it off)") from e
    worker = HqRetentionWorker(
        url, make_audit, args.retention_days, stop, interval_s=args.purge_interval, first_delay_s=first_delay_s
    )
    worker.start()
    return worker
