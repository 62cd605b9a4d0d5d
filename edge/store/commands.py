"""``alpr-edge keys init`` and ``alpr-edge reads list``: the store's command-line side."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from .errors import KeyFileError, StoreError
from .keys import DEFAULT_KEY_FILE, create_key_file, load_key
from .reads import ReadStore, StoredRead

DEFAULT_DB = Path("/var/lib/alpr-edge/reads.db")
MAX_LIST = 100_000

_ACCESS_NOTE = (
    "Plate text is shown to whoever can read the key file; operator login and the recording of who looked at "
    "which reads come in issue 7."
)


def iso_utc(t: float | None) -> str | None:
    """ISO-8601 UTC with milliseconds and a Z, or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> float:
    """An ISO-8601 time for --since/--until; one without a zone is taken as UTC."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from e
    if not 1 <= n <= MAX_LIST:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_LIST}")
    return n


def read_to_json(r: StoredRead) -> dict[str, object]:
    f = r.fix
    return {
        "uuid": r.uuid,
        "camera_id": r.camera_id,
        "text": r.text,
        "confidence": round(r.confidence, 4),
        "char_confidences": [round(c, 4) for c in r.char_confidences],
        "candidates": [{"text": c.text, "confidence": round(c.confidence, 4)} for c in r.candidates],
        "region": r.region,
        "format": r.plate_format,
        "box": list(r.box),
        "first_seen": iso_utc(r.first_seen),
        "last_seen": iso_utc(r.last_seen),
        "best_seen": iso_utc(r.best_seen),
        "frames_seen": r.frames_seen,
        "fix": {
            "source": f.source,
            "mode": f.mode,
            "lat": f.lat,
            "lon": f.lon,
            "alt_m": f.alt_m,
            "time": iso_utc(f.time),
            "age_s": f.age_s,
            "eph_m": f.eph_m,
            "speed_mps": f.speed_mps,
            "track_deg": f.track_deg,
        },
        "stored_at": iso_utc(r.stored_at),
        "has_scene": r.has_scene,
    }


def _fix_cell(r: StoredRead) -> str:
    if r.fix.source == "none":
        return "none"
    if r.fix.age_s is None:
        return r.fix.source
    return f"{r.fix.source} {r.fix.age_s:.1f}s"


def format_table(reads: list[StoredRead]) -> str:
    header = f"{'TIME (UTC)':<24}  {'CAMERA':<12}  {'PLATE':<16}  {'CONF':>5}  {'FRAMES':>6}  FIX"
    lines = [header]
    for r in reads:
        lines.append(
            f"{iso_utc(r.best_seen):<24}  {r.camera_id:<12}  {r.text:<16}  {r.confidence:5.2f}  {r.frames_seen:>6}  "
            f"{_fix_cell(r)}"
        )
    return "\n".join(lines)


def _resolve(args: argparse.Namespace) -> tuple[Path, Path]:
    """Database and key file: an explicit option wins, then the settings file (--config), then the defaults."""
    db, key_file = getattr(args, "db", None), args.key_file
    if args.config is not None:
        from ..config import load

        cfg = load(args.config)
        db = db or cfg.db_path
        key_file = key_file or cfg.store.key_file
    return db or DEFAULT_DB, key_file or DEFAULT_KEY_FILE


def cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        _, path = _resolve(args)
        create_key_file(path)
    except (KeyFileError, ValueError) as e:  # ConfigError is a ValueError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    print(f"wrote a new database key to {path} (mode 0600)")
    return 0


def cmd_reads_list(args: argparse.Namespace) -> int:
    try:
        db, key_file = _resolve(args)
        key = load_key(key_file)
        with ReadStore.open(db, key, create=False) as store:
            reads = store.list_reads(limit=args.limit, since=args.since, until=args.until, camera_id=args.camera)
    except (StoreError, ValueError) as e:  # KeyFileError is a StoreError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    if args.json:
        for r in reads:
            print(json.dumps(read_to_json(r)))
    else:
        print(format_table(reads))
        if not reads:
            print("(no reads)")
    return 0


def _store_args(p: argparse.ArgumentParser, *, db: bool) -> None:
    if db:
        p.add_argument("--db", type=Path, default=None, help=f"encrypted read database (default {DEFAULT_DB})")
    p.add_argument("--config", type=Path, default=None, help="take the database and key file from this settings file")
    p.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help=f"database key file (default {DEFAULT_KEY_FILE}; $CREDENTIALS_DIRECTORY/alpr-edge-db-key wins when set)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` and ``reads`` commands to the ``alpr-edge`` parser."""
    keys = sub.add_parser(
        "keys",
        help="manage the database key",
        description="The key that encrypts the read database lives in a root-only file, never in the configuration.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION", help="what to do")
    init = keys_sub.add_parser(
        "init",
        help="create a new random database key file (mode 0600); never overwrites one",
        description="Write 32 random bytes, hex, to a new key file readable by its owner only. An existing file is "
        "left alone: a new key cannot open a database made with the old one. The key is never printed.",
    )
    _store_args(init, db=False)
    init.set_defaults(func=cmd_keys_init)

    reads = sub.add_parser(
        "reads",
        help="query the stored reads",
        description=f"Query the encrypted read database. {_ACCESS_NOTE}",
    )
    reads_sub = reads.add_subparsers(dest="reads_command", required=True, metavar="ACTION", help="what to do")
    lst = reads_sub.add_parser(
        "list",
        help="list stored reads, newest first",
        description=f"List stored reads, newest first: time (UTC), camera, plate, confidence, frames, fix source "
        f"and age; or JSON lines with every field but the images. {_ACCESS_NOTE}",
    )
    lst.add_argument("--limit", type=_limit, default=50, help="at most this many reads (default 50)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    lst.add_argument("--since", type=_parse_time, default=None, help="only reads at or after this ISO-8601 time")
    lst.add_argument("--until", type=_parse_time, default=None, help="only reads at or before this ISO-8601 time")
    lst.add_argument("--camera", default=None, help="only reads of this camera id")
    _store_args(lst, db=True)
    lst.set_defaults(func=cmd_reads_list)
