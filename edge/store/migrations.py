"""Numbered schema migrations, each applied in its own transaction and recorded in ``schema_migrations``.

Append new migrations at the end with the next number; never edit one that has shipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .db import Connection, DBError
from .errors import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    statements: tuple[str, ...]


# A random (version 4) UUID in SQL, lower-case, for rows a migration creates.
_SQL_UUID4 = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'"
    " || substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "reads and their images",
        (
            """CREATE TABLE reads (
                uuid TEXT PRIMARY KEY,
                camera_id TEXT NOT NULL,
                text TEXT NOT NULL,
                confidence REAL NOT NULL,
                char_confidences TEXT NOT NULL,  -- JSON array of floats
                candidates TEXT NOT NULL,        -- JSON array of [text, confidence], best first
                region TEXT,
                plate_format TEXT,
                box_x INTEGER NOT NULL,
                box_y INTEGER NOT NULL,
                box_w INTEGER NOT NULL,
                box_h INTEGER NOT NULL,
                first_seen REAL NOT NULL,        -- UTC epoch seconds
                last_seen REAL NOT NULL,
                best_seen REAL NOT NULL,
                frames_seen INTEGER NOT NULL,
                fix_source TEXT NOT NULL,
                fix_mode INTEGER NOT NULL,
                lat REAL,
                lon REAL,
                alt_m REAL,
                fix_time REAL,
                fix_age_s REAL,
                eph_m REAL,
                speed_mps REAL,
                track_deg REAL,
                stored_at REAL NOT NULL
            )""",
            "CREATE INDEX reads_by_time ON reads (best_seen)",
            "CREATE INDEX reads_by_camera_time ON reads (camera_id, best_seen)",
            # Images apart from the rows, so that listing reads does not page through JPEGs.
            """CREATE TABLE read_images (
                read_uuid TEXT NOT NULL REFERENCES reads (uuid) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('crop', 'scene')),
                jpeg BLOB NOT NULL,
                PRIMARY KEY (read_uuid, kind)
            )""",
        ),
    ),
    Migration(
        2,
        "hot lists: signed bundles in force, manual entries with approval, change record",
        (
            # One row per list in force; replacing a row (one transaction) is the atomic swap to a new version.
            """CREATE TABLE hotlist_bundles (
                list_id TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                created REAL NOT NULL,           -- UTC epoch seconds, from the signed header
                received_at REAL NOT NULL,
                entry_count INTEGER NOT NULL,
                sha256 TEXT NOT NULL,            -- of the whole signed bundle
                source TEXT NOT NULL,            -- where it came from (folder, URL, "import by NAME"), for status
                bundle BLOB NOT NULL             -- the signed bundle as received (verified again at load)
            )""",
            """CREATE TABLE hotlist_manual_entries (
                entry_id TEXT PRIMARY KEY,       -- uuid4
                plate_pattern TEXT NOT NULL,     -- A-Z0-9 with * and ? wildcards
                state TEXT,
                list_code TEXT NOT NULL,
                reason TEXT NOT NULL,
                instructions TEXT NOT NULL,
                vehicle_description TEXT,
                case_number TEXT NOT NULL,
                synopsis TEXT NOT NULL,
                entered_by TEXT NOT NULL,
                requesting_officer TEXT NOT NULL,
                entered_at REAL NOT NULL,
                expires_at REAL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'rejected', 'removed', 'expired')),
                approved_by TEXT,
                approved_at REAL,
                -- four eyes (P6): never approved by the member who entered it
                CHECK (approved_by IS NULL OR lower(approved_by) <> lower(entered_by))
            )""",
            """CREATE TABLE hotlist_changes (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at REAL NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,            -- e.g. bundle-accepted, bundle-refused, entry-added, entry-approved
                entry_id TEXT,
                details TEXT NOT NULL            -- JSON
            )""",
        ),
    ),
    Migration(
        3,
        "user accounts",
        (
            """CREATE TABLE users (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('operator', 'investigator', 'administrator', 'auditor',
                                                  'technician')),
                password_hash TEXT NOT NULL,     -- argon2id
                training_completed TEXT,         -- ISO date; no access before it (P12)
                disabled INTEGER NOT NULL DEFAULT 0,
                failed_logins INTEGER NOT NULL DEFAULT 0,
                locked_until REAL,
                created_at REAL NOT NULL,
                password_changed_at REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "hits, alerts and their outcomes",
        (
            # Self-contained: the hit is kept for the outcome record (P8) after its read's retention ends.
            """CREATE TABLE hits (
                uuid TEXT PRIMARY KEY,
                read_uuid TEXT NOT NULL,         -- not a foreign key: a hit outlives the read's retention
                camera_id TEXT NOT NULL,
                read_text TEXT NOT NULL,
                read_confidence REAL NOT NULL,
                seen_at REAL NOT NULL,           -- UTC epoch seconds: the read's best_seen
                list_id TEXT NOT NULL,
                list_version INTEGER NOT NULL,
                entry_id TEXT NOT NULL,
                wanted_plate TEXT NOT NULL,      -- as on the list: A-Z0-9 with * and ? for partial plates
                wanted_state TEXT,
                list_code TEXT NOT NULL,
                reason TEXT NOT NULL,
                instructions TEXT NOT NULL,
                case_number TEXT NOT NULL,
                matched_text TEXT NOT NULL,
                match_kind TEXT NOT NULL,
                match_detail TEXT NOT NULL,      -- JSON: explanation, candidate rank, score, substitutions
                list_age_s REAL NOT NULL,
                list_stale INTEGER NOT NULL,
                created_at REAL NOT NULL,        -- when the alert was raised
                published_at REAL                -- when the broker acknowledged it (MQTT PUBACK); NULL until then
            )""",
            "CREATE INDEX hits_by_time ON hits (created_at)",
            "CREATE INDEX hits_by_read ON hits (read_uuid)",
            """CREATE TABLE hit_outcomes (
                uuid TEXT PRIMARY KEY,
                hit_uuid TEXT NOT NULL REFERENCES hits (uuid),
                outcome TEXT NOT NULL,
                officer TEXT NOT NULL,
                at REAL NOT NULL,
                note TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX hit_outcomes_by_hit ON hit_outcomes (hit_uuid, at)",
        ),
    ),
    Migration(
        5,
        "sync outbox: what headquarters has acknowledged, what it refused, sync state",
        (
            # synced_at: when headquarters acknowledged the row (set only by its ack, never on PUBACK); NULL = to
            # send. sync_rejected: headquarters refused it for good (details in sync_rejections); never resent.
            # Audit entries (issue 7) get the same two columns in their own migration (kind "audit").
            *(
                sql
                for table in ("hits", "hit_outcomes", "reads", "read_images")
                for sql in (
                    f"ALTER TABLE {table} ADD COLUMN synced_at REAL",
                    f"ALTER TABLE {table} ADD COLUMN sync_rejected INTEGER NOT NULL DEFAULT 0",
                    # Partial: only the unsent rows, so the outbox finds (and counts) them without a table scan
                    # however much has been sent; (synced_at) is NULL throughout, so entries follow rowid order.
                    f"CREATE INDEX {table}_unsent ON {table} (synced_at) WHERE synced_at IS NULL AND sync_rejected = 0",
                )
            ),
            """CREATE TABLE sync_rejections (
                uuid TEXT PRIMARY KEY,           -- the item's uuid (for an image: protocol.image_uuid)
                kind TEXT NOT NULL,              -- protocol.KINDS: hit, outcome, audit, read, image
                reason TEXT NOT NULL,            -- as headquarters (or the unit, for an unsendable item) said
                at REAL NOT NULL
            )""",
            "CREATE TABLE sync_state (key TEXT PRIMARY KEY, value REAL NOT NULL)",  # last_complete_sync, last_ack
        ),
    ),
    Migration(
        6,
        "accountability: the access record (append-only, hash-chained, signed) and evidence holds",
        (
            # P13: every access to stored data, kept permanently. Entry n's hash covers its fields and entry n-1's
            # hash (edge.access.audit); sig is the unit's Ed25519 signature of hash. Only the sync columns may
            # change; the triggers refuse everything else, so a bug cannot rewrite history (a person with the key
            # and a SQL shell can, and `alpr-edge audit verify` / headquarters' copy then shows it).
            """CREATE TABLE audit (
                seq INTEGER PRIMARY KEY,         -- 1, 2, 3, ... without gaps
                uuid TEXT NOT NULL UNIQUE,
                at REAL NOT NULL,                -- UTC epoch seconds
                user_name TEXT NOT NULL,         -- the logged-in user, or 'system' for the daemon's own acts
                role TEXT NOT NULL,              -- the user's role then ('system' for the daemon)
                action TEXT NOT NULL,            -- dotted verb: search, reads.view, evidence.hold, purge, ...
                reason TEXT NOT NULL DEFAULT '', -- case / call-for-service number or reason as given (P14)
                detail TEXT NOT NULL DEFAULT '{}', -- JSON object: criteria, counts, UUIDs returned, ...
                prev_hash TEXT NOT NULL,         -- hex SHA-256 of entry seq-1 (64 zeros for seq 1)
                hash TEXT NOT NULL,              -- hex SHA-256 of this entry (edge.access.audit.entry_hash)
                sig TEXT NOT NULL,               -- base64 Ed25519 signature of the hash bytes
                synced_at REAL,
                sync_rejected INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX audit_by_time ON audit (at)",
            "CREATE INDEX audit_by_action ON audit (action, at)",
            "CREATE INDEX audit_unsent ON audit (synced_at) WHERE synced_at IS NULL AND sync_rejected = 0",
            """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
               BEGIN SELECT RAISE(ABORT, 'the access record is append-only'); END""",
            """CREATE TRIGGER audit_no_update
               BEFORE UPDATE OF seq, uuid, at, user_name, role, action, reason, detail, prev_hash, hash, sig ON audit
               BEGIN SELECT RAISE(ABORT, 'the access record is append-only'); END""",
            # P10: a held read (and its images, hits and outcomes) is never purged while any hold on it is active.
            """CREATE TABLE holds (
                uuid TEXT PRIMARY KEY,
                read_uuid TEXT NOT NULL,
                case_number TEXT NOT NULL,
                reason TEXT NOT NULL,
                held_by TEXT NOT NULL,
                held_at REAL NOT NULL,
                released_by TEXT,
                released_at REAL,
                release_reason TEXT
            )""",
            "CREATE INDEX holds_by_read ON holds (read_uuid)",
            "CREATE INDEX holds_by_case ON holds (case_number)",
        ),
    ),
    Migration(
        7,
        "hold events: each hold and release, synced to headquarters (kind hold) so that it keeps the read too",
        (
            # One row per hold placed and per hold released (edge.evidence writes it in the same transaction as
            # the holds row); append-only like the access record: only the sync columns change. Headquarters keeps
            # a read while a unit's hold on it has arrived and its release has not (edge.hq.retention).
            """CREATE TABLE hold_events (
                uuid TEXT PRIMARY KEY,           -- the event's own uuid (the synced item's)
                hold_uuid TEXT NOT NULL,         -- holds.uuid
                event TEXT NOT NULL CHECK (event IN ('hold', 'release')),
                read_uuid TEXT NOT NULL,
                case_number TEXT NOT NULL,
                reason TEXT NOT NULL,            -- the hold's reason, or the release's
                user_name TEXT NOT NULL,         -- who held, or who released
                at REAL NOT NULL,                -- held_at, or released_at
                synced_at REAL,
                sync_rejected INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX hold_events_unsent ON hold_events (synced_at) WHERE synced_at IS NULL AND sync_rejected = 0",
            """CREATE TRIGGER hold_events_no_delete BEFORE DELETE ON hold_events
               BEGIN SELECT RAISE(ABORT, 'hold events are append-only'); END""",
            """CREATE TRIGGER hold_events_no_update
               BEFORE UPDATE OF uuid, hold_uuid, event, read_uuid, case_number, reason, user_name, at ON hold_events
               BEGIN SELECT RAISE(ABORT, 'hold events are append-only'); END""",
            # Holds made before this migration are queued too, so headquarters learns of every one (random v4 uuids).
            *(
                f"""INSERT INTO hold_events (uuid, hold_uuid, event, read_uuid, case_number, reason, user_name, at)
                    SELECT {_SQL_UUID4}, uuid, '{event}', read_uuid, case_number, {reason}, {user}, {at}
                    FROM holds {where} ORDER BY {at}, uuid"""
                for event, reason, user, at, where in (
                    ("hold", "reason", "held_by", "held_at", ""),
                    (
                        "release",
                        "coalesce(release_reason, '')",
                        "coalesce(released_by, '')",
                        "released_at",
                        "WHERE released_at IS NOT NULL",
                    ),
                )
            ),
        ),
    ),
    Migration(
        8,
        "hits on manual entries carry the entry's P6 details: who entered it, the requesting officer, the synopsis",
        (
            # NULL for a hit on a signed list, and for hits stored before this migration; synced with the hit.
            "ALTER TABLE hits ADD COLUMN entered_by TEXT",
            "ALTER TABLE hits ADD COLUMN requesting_officer TEXT",
            "ALTER TABLE hits ADD COLUMN synopsis TEXT",
        ),
    ),
)


def _check_numbering(migrations: tuple[Migration, ...]) -> None:
    for i, m in enumerate(migrations, start=1):
        if m.number != i:
            raise ValueError(f"migration {m.name!r} is numbered {m.number}, expected {i}")


def applied_migrations(conn: Connection) -> set[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    return {int(r[0]) for r in conn.execute("SELECT number FROM schema_migrations").fetchall()}


def migrate(conn: Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations not yet recorded, in order; returns the numbers applied (empty when up to date).

    Each migration and its record commit together, so a crash leaves it either fully applied or not at all.
    """
    _check_numbering(migrations)
    try:
        done = applied_migrations(conn)
        newest = max(done, default=0)
        if newest > len(migrations):
            raise StoreError(
                f"the database has schema version {newest}, newer than this alpr-edge knows ({len(migrations)})"
            )
        applied: list[int] = []
        for m in migrations:
            if m.number in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Checked again inside the write lock, in case another process migrated meanwhile.
                if conn.execute("SELECT 1 FROM schema_migrations WHERE number = ?", (m.number,)).fetchone():
                    conn.execute("ROLLBACK")
                    continue
                for sql in m.statements:
                    conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (number, name, applied_at) VALUES (?, ?, ?)",
                    (m.number, m.name, time.time()),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            log.info("applied database migration %d (%s)", m.number, m.name)
            applied.append(m.number)
        return applied
    except DBError as e:
        raise StoreError(f"database migration failed: {e}") from e
