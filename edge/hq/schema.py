"""Headquarters' PostgreSQL schema: numbered migrations, each applied in its own transaction and recorded in
``schema_migrations``. Append new migrations at the end with the next number; never edit one that has shipped.

Times are UTC epoch seconds (``double precision``), as on the unit, so that a value crosses the link unchanged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

log = logging.getLogger(__name__)

# Any 64-bit number of our own: several `hq serve` processes starting at once migrate one after the other.
_LOCK_ID = 0x616C_7072_6871  # "alprhq"


class SchemaError(RuntimeError):
    """The database cannot be brought to this version's schema (newer than we know, or a migration failed)."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "devices, reads, images, hits, outcomes, audit, batches",
        (
            """CREATE TABLE devices (
                device_id TEXT PRIMARY KEY,
                first_seen DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL,      -- last message decoded from it
                last_batch_at DOUBLE PRECISION,           -- last batch received (some items may be rejected)
                last_sync DOUBLE PRECISION,               -- last batch whose every item was stored (P9)
                batches BIGINT NOT NULL DEFAULT 0,
                reads BIGINT NOT NULL DEFAULT 0,          -- newly stored items of each kind
                images BIGINT NOT NULL DEFAULT 0,
                hits BIGINT NOT NULL DEFAULT 0,
                outcomes BIGINT NOT NULL DEFAULT 0,
                audit BIGINT NOT NULL DEFAULT 0,
                rejected BIGINT NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE reads (
                uuid UUID PRIMARY KEY,
                device_id TEXT NOT NULL,
                camera_id TEXT NOT NULL,
                text TEXT NOT NULL,
                confidence DOUBLE PRECISION NOT NULL,
                char_confidences JSONB NOT NULL,          -- array of numbers
                candidates JSONB NOT NULL,                -- array of [text, confidence], best first
                region TEXT,
                plate_format TEXT,
                box_x INTEGER NOT NULL,
                box_y INTEGER NOT NULL,
                box_w INTEGER NOT NULL,
                box_h INTEGER NOT NULL,
                first_seen DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL,
                best_seen DOUBLE PRECISION NOT NULL,
                frames_seen INTEGER NOT NULL,
                fix_source TEXT NOT NULL,
                fix_mode INTEGER NOT NULL,
                lat DOUBLE PRECISION,
                lon DOUBLE PRECISION,
                alt_m DOUBLE PRECISION,
                fix_time DOUBLE PRECISION,
                fix_age_s DOUBLE PRECISION,
                eph_m DOUBLE PRECISION,
                speed_mps DOUBLE PRECISION,
                track_deg DOUBLE PRECISION,
                stored_at DOUBLE PRECISION,               -- when the unit stored it
                received_at DOUBLE PRECISION NOT NULL     -- when headquarters stored it
            )""",
            "CREATE INDEX reads_by_text ON reads (text)",
            "CREATE INDEX reads_by_time ON reads (best_seen)",
            "CREATE INDEX reads_by_device_time ON reads (device_id, best_seen)",
            # No foreign key to reads: an image may arrive before its read, or alone (its read purged or rejected).
            """CREATE TABLE read_images (
                read_uuid UUID NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('crop', 'scene')),
                uuid UUID NOT NULL UNIQUE,                -- protocol.image_uuid(read_uuid, kind)
                device_id TEXT NOT NULL,
                jpeg BYTEA NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (read_uuid, kind)
            )""",
            """CREATE TABLE hits (
                uuid UUID PRIMARY KEY,
                device_id TEXT NOT NULL,
                read_uuid UUID NOT NULL,
                camera_id TEXT NOT NULL,
                read_text TEXT NOT NULL,
                read_confidence DOUBLE PRECISION NOT NULL,
                seen_at DOUBLE PRECISION NOT NULL,
                list_id TEXT NOT NULL,
                list_version BIGINT NOT NULL,
                entry_id TEXT NOT NULL,
                wanted_plate TEXT NOT NULL,
                wanted_state TEXT,
                list_code TEXT NOT NULL,
                reason TEXT NOT NULL,
                instructions TEXT NOT NULL,
                case_number TEXT NOT NULL,
                matched_text TEXT NOT NULL,
                match_kind TEXT NOT NULL,
                match_detail JSONB NOT NULL,
                list_age_s DOUBLE PRECISION NOT NULL,
                list_stale BOOLEAN NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                published_at DOUBLE PRECISION,
                received_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX hits_by_time ON hits (created_at)",
            "CREATE INDEX hits_by_read ON hits (read_uuid)",
            # No foreign key to hits either: an outcome may arrive in an earlier batch than its hit.
            """CREATE TABLE hit_outcomes (
                uuid UUID PRIMARY KEY,
                device_id TEXT NOT NULL,
                hit_uuid UUID NOT NULL,
                outcome TEXT NOT NULL,
                officer TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                note TEXT NOT NULL DEFAULT '',
                received_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX hit_outcomes_by_hit ON hit_outcomes (hit_uuid, at)",
            """CREATE TABLE audit (
                uuid UUID PRIMARY KEY,
                device_id TEXT NOT NULL,
                data JSONB NOT NULL,                      -- the unit's access record entry (issue 7)
                received_at DOUBLE PRECISION NOT NULL
            )""",
            # Every batch received (redeliveries included), for diagnosis.
            """CREATE TABLE batches (
                id BIGSERIAL PRIMARY KEY,
                batch_id UUID NOT NULL,
                device_id TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                items INTEGER NOT NULL,
                stored INTEGER NOT NULL,                  -- stored now or already there
                new INTEGER NOT NULL,                     -- newly inserted by this delivery
                rejected INTEGER NOT NULL
            )""",
            "CREATE INDEX batches_by_device ON batches (device_id, received_at)",
        ),
    ),
)


def _check_numbering(migrations: tuple[Migration, ...]) -> None:
    for i, m in enumerate(migrations, start=1):
        if m.number != i:
            raise ValueError(f"migration {m.name!r} is numbered {m.number}, expected {i}")


def applied_migrations(conn: psycopg.Connection) -> set[int]:
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        return {int(r[0]) for r in conn.execute("SELECT number FROM schema_migrations").fetchall()}


def migrate(conn: psycopg.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations not yet recorded, in order; the numbers applied (empty when up to date).

    Each migration and its record commit together (PostgreSQL DDL is transactional), so a crash leaves it fully
    applied or not at all; an advisory lock lets several processes start at once. ``conn`` must not be in a
    transaction; SchemaError when the database is newer than this version or a statement fails.
    """
    _check_numbering(migrations)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            done = applied_migrations(conn)
        newest = max(done, default=0)
        if newest > len(migrations):
            raise SchemaError(
                f"the database has schema version {newest}, newer than this alpr-edge knows ({len(migrations)})"
            )
        applied: list[int] = []
        for m in migrations:
            if m.number in done:
                continue
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                # Checked again under the lock, in case another process migrated meanwhile.
                if conn.execute("SELECT 1 FROM schema_migrations WHERE number = %s", (m.number,)).fetchone():
                    continue
                for sql in m.statements:
                    conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (number, name, applied_at) VALUES (%s, %s, %s)",
                    (m.number, m.name, time.time()),
                )
            log.info("applied headquarters migration %d (%s)", m.number, m.name)
            applied.append(m.number)
        return applied
    except psycopg.Error as e:
        raise SchemaError(f"headquarters database migration failed: {e}") from e


def connect(db_url: str, connect_timeout_s: float = 5.0) -> psycopg.Connection:
    """A connection (autocommit; transactions are explicit) with a bounded connect time."""
    return psycopg.connect(db_url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s)))


def current_version(conn: psycopg.Connection) -> int:
    """The newest migration applied (0 for an empty database)."""
    with conn.transaction():
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return 0
        got = conn.execute("SELECT max(number) FROM schema_migrations").fetchone()
    return int(got[0]) if got and got[0] is not None else 0
