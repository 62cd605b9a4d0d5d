"""``alpr-edge keys init|audit-public`` and ``alpr-edge reads list``: the store's command-line side."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..access.session import add_login_args
from .errors import KeyFileError, StoreError
from .keys import DEFAULT_KEY_FILE, create_key_file, load_key
from .reads import ReadStore, StoredRead

DEFAULT_DB = Path("/var/lib/alpr-edge/reads.db")
AUDIT_KEY_NAME = "audit.key"
DEFAULT_AUDIT_KEY_FILE = DEFAULT_KEY_FILE.parent / AUDIT_KEY_NAME
MAX_LIST = 100_000

_ACCESS_NOTE = (
    "You log in with your own account (operator, investigator or administrator); the UUIDs of the reads shown are "
    "recorded in the access record under your name."
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


def resolve_audit_key(args: argparse.Namespace) -> Path:
    """The access record's signing key: --audit-key-file, then the settings file (--config), then audit.key beside
    an explicit --key-file, then the default (which is beside the default database key)."""
    explicit = getattr(args, "audit_key_file", None)
    if explicit is not None:
        return Path(explicit)
    if getattr(args, "config", None) is not None:
        from ..config import load

        return load(args.config).store.audit_key_file
    key_file = getattr(args, "key_file", None)
    return Path(key_file).parent / AUDIT_KEY_NAME if key_file is not None else DEFAULT_AUDIT_KEY_FILE


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Create whichever of the two keys is missing; refuse (exit 2) only when both exist."""
    from ..access.audit import create_signing_key

    try:
        _, path = _resolve(args)
        audit_path = resolve_audit_key(args)
        db_exists, audit_exists = path.exists(), audit_path.exists()
        if db_exists and audit_exists:
            create_key_file(path)  # raises: refusing to overwrite
        if not db_exists:
            create_key_file(path)
            print(f"wrote a new database key to {path} (mode 0600)")
        else:
            print(f"kept the existing database key {path}")
        if not audit_exists:
            create_signing_key(audit_path)
            print(f"wrote a new access record signing key to {audit_path} (mode 0600); register its public key at "
                  f"headquarters (alpr-edge keys audit-public)")  # fmt: skip
        else:
            print(f"kept the existing access record signing key {audit_path}")
    except (KeyFileError, ValueError) as e:  # ConfigError is a ValueError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_keys_audit_public(args: argparse.Namespace) -> int:
    from ..access.audit import load_signing_key, public_pem

    try:
        pem = public_pem(load_signing_key(resolve_audit_key(args)))
    except (KeyFileError, ValueError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    print(pem, end="")
    return 0


def cmd_reads_list(args: argparse.Namespace) -> int:
    from ..access.audit import AuditError
    from ..access.session import cli_login, open_unit, record_viewed

    conn = None
    try:
        conn, audit = open_unit(args)
        session = cli_login(args, conn, audit, "reads.view")
        db, key_file = _resolve(args)
        with ReadStore.open(db, load_key(key_file), create=False) as store:
            reads = store.list_reads(limit=args.limit, since=args.since, until=args.until, camera_id=args.camera)
        record_viewed(session, "reads.view", "read_uuids", [r.uuid for r in reads])  # before anything is shown
    except (PermissionError, AuditError, StoreError, ValueError) as e:  # AuthError, AccessDenied; KeyFileError
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    finally:
        if conn is not None:
            conn.close()
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
    p.add_argument(
        "--audit-key-file",
        type=Path,
        default=None,
        help=f"the unit's Ed25519 key that signs the access record (default: the settings file's, else "
        f"{AUDIT_KEY_NAME} beside the database key, {DEFAULT_AUDIT_KEY_FILE})",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` and ``reads`` commands to the ``alpr-edge`` parser."""
    keys = sub.add_parser(
        "keys",
        help="manage the database key and the access record's signing key",
        description="The key that encrypts the read database and the Ed25519 key that signs the access record live "
        "in root-only files, never in the configuration.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION", help="what to do")
    init = keys_sub.add_parser(
        "init",
        help="create the database key and the access record's signing key (mode 0600); never overwrites one",
        description="Write 32 random bytes, hex, to a new database key file, and a new Ed25519 private key (PEM) to "
        "the audit key file, each readable by its owner only. A key that exists is kept and only the missing one is "
        "made (a new key cannot open a database made with the old one, and headquarters verifies the access record "
        "with the registered public key); with both present nothing is written (exit 2). Keys are never printed.",
    )
    _store_args(init, db=False)
    init.set_defaults(func=cmd_keys_init)
    pub = keys_sub.add_parser(
        "audit-public",
        help="print the public half of the access record's signing key (PEM), to register at headquarters",
        description="Print the unit's access record public key (PEM). Register it at headquarters with "
        "`alpr-edge hq devices register DEVICE --audit-key FILE`, so that headquarters can verify the unit's record.",
    )
    _store_args(pub, db=False)
    pub.set_defaults(func=cmd_keys_audit_public)

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
    add_login_args(lst)
    _store_args(lst, db=True)
    lst.set_defaults(func=cmd_reads_list)
