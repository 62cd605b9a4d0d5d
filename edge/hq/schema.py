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
    Migration(
        2,
        "accountability: users, headquarters' own access record, holds, purges, audits, outside-agency requests",
        (
            # The unit's Ed25519 public key for its access record (PEM), registered at provisioning.
            "ALTER TABLE devices ADD COLUMN audit_key TEXT",
            "CREATE INDEX audit_by_device ON audit (device_id, ((data->>'seq')::bigint))",
            """CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION '%: append-only', TG_TABLE_NAME; END $$""",
            # The units' access records as received: never changed or deleted (kept permanently, P13).
            """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
               FOR EACH ROW EXECUTE FUNCTION refuse_change()""",
            # Headquarters' accounts (P12): the same rules and columns as the unit's users table.
            """CREATE TABLE users (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('operator', 'investigator', 'administrator', 'auditor',
                                                  'technician')),
                password_hash TEXT NOT NULL,
                training_completed DATE,
                disabled BOOLEAN NOT NULL DEFAULT false,
                failed_logins INTEGER NOT NULL DEFAULT 0,
                locked_until DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL,
                password_changed_at DOUBLE PRECISION NOT NULL
            )""",
            # Headquarters' own access record: the same chain as a unit's (edge.access.audit), signed with
            # headquarters' key; append-only.
            """CREATE TABLE hq_audit (
                seq BIGINT PRIMARY KEY,
                uuid UUID NOT NULL UNIQUE,
                at DOUBLE PRECISION NOT NULL,
                user_name TEXT NOT NULL,
                role TEXT NOT NULL,
                action TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                detail JSONB NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                sig TEXT NOT NULL
            )""",
            "CREATE INDEX hq_audit_by_action ON hq_audit (action, at)",
            """CREATE TRIGGER hq_audit_append_only BEFORE UPDATE OR DELETE ON hq_audit
               FOR EACH ROW EXECUTE FUNCTION refuse_change()""",
            # P10: evidence holds at headquarters (a held read is never purged).
            """CREATE TABLE holds (
                id UUID PRIMARY KEY,
                read_uuid UUID NOT NULL,
                case_number TEXT NOT NULL,
                reason TEXT NOT NULL,
                held_by TEXT NOT NULL,
                held_at DOUBLE PRECISION NOT NULL,
                released_by TEXT,
                released_at DOUBLE PRECISION,
                release_reason TEXT
            )""",
            "CREATE INDEX holds_by_read ON holds (read_uuid)",
            "CREATE INDEX holds_by_case ON holds (case_number)",
            # P10, P16: each purge with its counts (what was purged is gone; that it was purged is kept).
            """CREATE TABLE purges (
                id UUID PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                by_user TEXT NOT NULL,                    -- 'system' for the scheduled purge
                older_than DOUBLE PRECISION NOT NULL,     -- reads seen before this were purged
                reads BIGINT NOT NULL,
                images BIGINT NOT NULL,
                hits BIGINT NOT NULL,
                outcomes BIGINT NOT NULL DEFAULT 0,
                held_kept BIGINT NOT NULL                 -- reads past the period kept because held
            )""",
            # P15: the monthly audit: a random draw of searches, a finding per search, a sign-off.
            """CREATE TABLE audit_reviews (
                id UUID PRIMARY KEY,
                period_start DOUBLE PRECISION NOT NULL,
                period_end DOUBLE PRECISION NOT NULL,
                drawn_at DOUBLE PRECISION NOT NULL,
                drawn_by TEXT NOT NULL,
                seed TEXT NOT NULL,                       -- the draw is reproducible from it
                searches_in_period BIGINT NOT NULL,
                signed_by TEXT,
                signed_at DOUBLE PRECISION,
                conclusion TEXT,
                memo_sha256 TEXT
            )""",
            """CREATE TABLE audit_review_items (
                review_id UUID NOT NULL REFERENCES audit_reviews (id),
                audit_uuid UUID NOT NULL,                 -- the search's entry (hq_audit or a unit's audit)
                source TEXT NOT NULL,                     -- 'hq' or the unit's device id
                finding TEXT CHECK (finding IN ('compliant', 'non-compliant', 'follow-up')),
                note TEXT NOT NULL DEFAULT '',
                reviewed_by TEXT,
                reviewed_at DOUBLE PRECISION,
                PRIMARY KEY (review_id, audit_uuid)
            )""",
            # P11: outside-agency requests, in writing, approved (or denied) and kept on file.
            """CREATE TABLE outside_requests (
                id UUID PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                agency TEXT NOT NULL,
                person TEXT NOT NULL,
                purpose TEXT NOT NULL,
                case_number TEXT NOT NULL,
                entered_by TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied')),
                decided_by TEXT,
                decided_at DOUBLE PRECISION,
                decision_note TEXT NOT NULL DEFAULT ''
            )""",
        ),
    ),
    Migration(
        3,
        "device_status: each unit's latest status (alpr/<device>/status)",
        (
            # One row per unit, replaced only by a newer status (edge/hq/device_status.py); no plate, no position.
            """CREATE TABLE device_status (
                device_id TEXT PRIMARY KEY,
                status_at DOUBLE PRECISION NOT NULL,      -- the unit's "at": when it took the snapshot (its clock)
                received_at DOUBLE PRECISION NOT NULL,    -- when headquarters stored it
                level TEXT NOT NULL CHECK (level IN ('ok', 'warning', 'critical')),
                faults JSONB NOT NULL,                    -- [{code, severity, text}] as the unit sent them
                uptime_s DOUBLE PRECISION,
                fps DOUBLE PRECISION,
                frames BIGINT,                            -- the unit's counters since it started
                dropped BIGINT,
                reads BIGINT,
                snapshot JSONB NOT NULL                   -- the whole document (at most 64 KiB)
            )""",
            "CREATE INDEX device_status_by_level ON device_status (level, status_at)",
        ),
    ),
    Migration(
        4,
        "unit_hold_events: the units' evidence holds and releases (kind hold), so that a read held on a unit stays",
        (
            # Each hold placed and each hold released on a unit (edge.evidence, the unit's hold_events), as received;
            # kept on file like the access record (append-only). A unit's hold is active at headquarters while its
            # hold event is here and no release event for the same (device_id, hold_uuid): whichever arrives first,
            # the result is the same (edge.hq.retention, edge.hq.evidence).
            """CREATE TABLE unit_hold_events (
                uuid UUID PRIMARY KEY,                    -- the event's own uuid (the synced item's)
                device_id TEXT NOT NULL,                  -- the unit that held (or released)
                hold_uuid UUID NOT NULL,                  -- the unit's holds.uuid
                event TEXT NOT NULL CHECK (event IN ('hold', 'release')),
                read_uuid UUID NOT NULL,
                case_number TEXT NOT NULL,
                reason TEXT NOT NULL,                     -- the hold's reason, or the release's
                user_name TEXT NOT NULL,                  -- the unit's user who held, or released
                at DOUBLE PRECISION NOT NULL,             -- the unit's clock
                received_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX unit_hold_events_by_read ON unit_hold_events (read_uuid) WHERE event = 'hold'",
            "CREATE INDEX unit_hold_events_by_hold ON unit_hold_events (device_id, hold_uuid, event)",
            "CREATE INDEX unit_hold_events_by_case ON unit_hold_events (case_number)",
            """CREATE TRIGGER unit_hold_events_append_only BEFORE UPDATE OR DELETE ON unit_hold_events
               FOR EACH ROW EXECUTE FUNCTION refuse_change()""",
            """CREATE VIEW active_unit_holds AS
               SELECT h.* FROM unit_hold_events h
               WHERE h.event = 'hold' AND NOT EXISTS (
                   SELECT 1 FROM unit_hold_events r
                   WHERE r.device_id = h.device_id AND r.hold_uuid = h.hold_uuid AND r.event = 'release')""",
        ),
    ),
    Migration(
        5,
        "hits on a unit's manual entries: who entered the entry, the requesting officer, the synopsis (P6)",
        (
            # NULL for a hit on a signed list, from a unit that does not send them, and for hits received before.
            "ALTER TABLE hits ADD COLUMN entered_by TEXT",
            "ALTER TABLE hits ADD COLUMN requesting_officer TEXT",
            "ALTER TABLE hits ADD COLUMN synopsis TEXT",
        ),
    ),
    Migration(
        6,
        "devices: retired units (taken out of service; their rows and data are kept)",
        (
            # Set by 'hq devices retire', cleared by 'hq devices reinstate'; each change is in hq_audit too. A retired
            # unit is not flagged NOT REPORTING or OVERDUE; what it still sends is stored (edge.hq.ingest warns).
            "ALTER TABLE devices ADD COLUMN retired_at DOUBLE PRECISION",
            "ALTER TABLE devices ADD COLUMN retired_by TEXT",  # the operating-system account that ran the command
            "ALTER TABLE devices ADD COLUMN retired_reason TEXT",
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
