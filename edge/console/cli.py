"""``alpr-edge console``: the serial diagnostics console (alpr-edge-console.service runs it)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .. import config
from ..access.audit import AuditLog, load_signing_key
from ..access.users import UserStore
from ..health import status_file
from ..store.db import open_db
from ..store.errors import KeyFileError, StoreError
from ..store.keys import load_key
from ..store.migrations import migrate
from .server import Console

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path("/etc/alpr-edge/edge.toml")


def cmd_console(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
        key = load_key(cfg.store.key_file)
        signer = load_signing_key(cfg.store.audit_key_file)
        conn = open_db(cfg.db_path, key)
        migrate(conn)
    except (config.ConfigError, KeyFileError, StoreError, OSError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console = Console(cfg, args.config, UserStore(conn), AuditLog(conn, signer), status_file(cfg), stop,
                      port=args.port, baud=args.baud)  # fmt: skip
    try:
        console.run()
    finally:
        conn.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="serve the serial diagnostics console (login: technician or administrator)",
        description="Serve the diagnostics console on a serial port (8N1) until SIGTERM. Every command is recorded "
        "in the access record.",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"TOML settings (default {DEFAULT_CONFIG})")
    p.add_argument("--port", default=None, help="serial port (default: console.port, e.g. /dev/ttyS0)")
    p.add_argument("--baud", type=int, default=None, help="line speed (default: console.baud, e.g. 115200)")
    p.set_defaults(func=cmd_console)
