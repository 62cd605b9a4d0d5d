"""``alpr-edge sync status``: what waits to go to headquarters, the last complete sync and its P9 level."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..config import SyncConfig
from ..store.commands import DEFAULT_DB, iso_utc
from ..store.db import open_db
from ..store.errors import StoreError
from ..store.keys import DEFAULT_KEY_FILE, load_key
from ..store.migrations import migrate
from .outbox import Outbox
from .protocol import KINDS
from .uplink import sync_level


def cmd_sync_status(args: argparse.Namespace) -> int:
    db, key_file, cfg, device = args.db, args.key_file, SyncConfig(), "alpr-unit"
    try:
        if args.config is not None:
            from ..config import load

            conf = load(args.config)
            db, key_file, cfg, device = db or conf.db_path, key_file or conf.store.key_file, conf.sync, conf.unit.id
        key = load_key(key_file or DEFAULT_KEY_FILE)
        conn = open_db(db or DEFAULT_DB, key, create=False)
        try:
            migrate(conn)
            outbox = Outbox(conn, device)
            pending, oldest = outbox.pending(), outbox.oldest_pending()
            complete, last_ack = outbox.last_complete_sync(), outbox.last_ack()
            rejected = len(outbox.rejections())
        finally:
            conn.close()
    except (StoreError, ValueError) as e:  # KeyFileError is a StoreError, ConfigError a ValueError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    days, level = sync_level(
        time.time(), complete, oldest, sum(pending.values()), cfg.warn_after_days, cfg.critical_after_days
    )
    doc = {
        "pending": pending,
        "refused": rejected,
        "last_complete_sync": iso_utc(complete),
        "last_ack": iso_utc(last_ack),
        "days_since_sync": None if days is None else round(days, 2),
        "level": level,
    }
    if args.json:
        print(json.dumps(doc))
        return 0
    print("pending: " + ", ".join(f"{k} {pending[k]}" for k in KINDS))
    print(f"refused by headquarters: {rejected}")
    print(f"last complete sync: {doc['last_complete_sync'] or 'never'}")
    print(f"last acknowledgement: {doc['last_ack'] or 'never'}")
    print(f"days since sync: {'-' if days is None else f'{days:.1f}'}")
    print(f"level: {level}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sync`` command to the ``alpr-edge`` parser."""
    sync = sub.add_parser(
        "sync",
        help="sync to headquarters",
        description="The unit's outbox: reads, hits, outcomes, evidence holds and releases and images wait in the "
        "encrypted store until headquarters acknowledges them (P9: never more than 30 days apart).",
    )
    sync_sub = sync.add_subparsers(dest="sync_command", required=True, metavar="ACTION", help="what to do")
    status = sync_sub.add_parser(
        "status",
        help="items waiting per kind, last complete sync and its level (ok, warn, critical)",
        description="Counts the unacknowledged items per kind and tells when headquarters last had everything.",
    )
    status.add_argument("--config", type=Path, default=None, help="settings file: database, key file and [sync]")
    status.add_argument("--db", type=Path, default=None, help=f"encrypted read database (default {DEFAULT_DB})")
    status.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help=f"database key file (default {DEFAULT_KEY_FILE}; $CREDENTIALS_DIRECTORY/alpr-edge-db-key wins when set)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    status.set_defaults(func=cmd_sync_status)
