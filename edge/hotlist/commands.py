"""``alpr-edge hotlist keygen|sign|verify|import|status``: headquarters' and the unit's command-line side.

Nothing here prints plate text: parse errors name the file, line and field, never the value (P3).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from ..store.commands import _resolve, _store_args, iso_utc
from ..store.errors import StoreError
from ..store.keys import load_key
from .bundle import (
    BundleError,
    key_id,
    load_private_key,
    load_public_keys,
    sign_bundle,
    verify_bundle,
    write_keypair,
)
from .csvformat import DEFAULT_MAX_BYTES, CsvError, ParseResult, parse_csv
from .repository import Accepted, HotListRepository

_ACCESS_NOTE = "Operator login and the recording of who did what arrive with issue 7; until then the actor recorded "
_ACCESS_NOTE += "is the system user running the command."
_MAX_SHOWN_ERRORS = 50


def _err(msg: str) -> None:
    print(f"alpr-edge: {msg}", file=sys.stderr)


def _created(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from e
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from e
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _print_errors(parsed: ParseResult) -> None:
    for e in parsed.errors[:_MAX_SHOWN_ERRORS]:
        print(str(e), file=sys.stderr)
    if parsed.error_count > _MAX_SHOWN_ERRORS:
        print(f"... and {parsed.error_count - _MAX_SHOWN_ERRORS} more bad lines", file=sys.stderr)


def _write_new(path: Path, data: bytes) -> None:
    """Write next to the target and rename, so a reader never sees half a bundle."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"cannot write {path}: {e.strerror}") from e


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        kid = write_keypair(args.private, args.public)
    except BundleError as e:
        _err(str(e))
        return 2
    print(f"wrote signing key {args.private} (mode 0600, keep it at headquarters) and public key {args.public}")
    print(f"key id {kid}: install the public key on each unit ([hotlist] public_keys)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        key = load_private_key(args.key)
        size = args.csv.stat().st_size
        if size > DEFAULT_MAX_BYTES:
            raise CsvError(f"{args.csv} is {size} bytes, over the {DEFAULT_MAX_BYTES}-byte limit")
        data = args.csv.read_bytes()
        parsed = parse_csv(data, args.list_id, str(args.csv))
        good = parsed.consume()
    except OSError as e:
        _err(f"cannot read {args.csv}: {e.strerror}")
        return 2
    except (BundleError, CsvError) as e:
        _err(str(e))
        return 2
    _print_errors(parsed)
    if good == 0:
        _err(f"{args.csv} has no good entries: nothing signed")
        return 1
    try:
        bundle = sign_bundle(key, args.list_id, args.version, data, args.created, entry_count=good)
        _write_new(args.output, bundle)
    except BundleError as e:
        _err(str(e))
        return 2
    print(
        f"signed list {args.list_id} version {args.version}: {good} entries, {parsed.error_count} bad lines, "
        f"key id {key_id(key.public_key())} -> {args.output}"
    )
    return 0


def _public_keys(args: argparse.Namespace) -> list[Path]:
    if args.public_key:
        return list(args.public_key)
    if getattr(args, "config", None) is not None:
        from ..config import load

        return list(load(args.config).hotlist.public_keys)
    raise BundleError("no public key: give --public-key PUB (or --config with [hotlist] public_keys)")


def _read_bundle(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror}") from e


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        keys = load_public_keys(_public_keys(args))
        vb = verify_bundle(_read_bundle(args.bundle), keys)
        parsed = parse_csv(vb.body, vb.info.list_id, f"{args.bundle}")
        good = parsed.consume()
    except (BundleError, CsvError) as e:
        _err(f"refused: {e}")
        return 1
    except ValueError as e:  # ConfigError
        _err(str(e))
        return 2
    i = vb.info
    print(f"list {i.list_id}  version {i.version}  created {iso_utc(i.created)}  entries {i.entry_count}  "
          f"key id {vb.header.key_id}")  # fmt: skip
    if good != i.entry_count or parsed.error_count:
        print(f"parsed here: {good} good entries, {parsed.error_count} bad lines")
    return 0


def _actor() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_import(args: argparse.Namespace) -> int:
    try:
        keys = load_public_keys(_public_keys(args))
        data = _read_bundle(args.bundle)
        db, key_file = _resolve(args)
        with HotListRepository.open(db, load_key(key_file), keys, create=False) as repo:
            result = repo.offer(data, source=f"import {args.bundle.name}", actor=_actor())
    except BundleError as e:
        _err(str(e))
        return 1
    except (StoreError, ValueError) as e:
        _err(str(e))
        return 2
    if isinstance(result, Accepted):
        i = result.info
        was = "new list" if result.previous_version is None else f"was version {result.previous_version}"
        print(f"accepted list {i.list_id} version {i.version} ({was}): {i.entry_count} entries, "
              f"{result.bad_lines} bad lines skipped")  # fmt: skip
        return 0
    _err(f"refused: {result.reason}; the list in force is unchanged")
    for bad in result.errors[:_MAX_SHOWN_ERRORS]:
        print(str(bad), file=sys.stderr)
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    stale_after_h = args.stale_after_h
    try:
        if stale_after_h is None and args.config is not None:
            from ..config import load

            stale_after_h = load(args.config).hotlist.stale_after_h
        db, key_file = _resolve(args)
        with HotListRepository.open(db, load_key(key_file), create=False) as repo:
            rows = repo.status(stale_after_s=(stale_after_h or 24.0) * 3600)
    except (StoreError, ValueError) as e:
        _err(str(e))
        return 2
    print(f"{'LIST':<24}  {'VERSION':>8}  {'CREATED (UTC)':<24}  {'ENTRIES':>8}  {'AGE':>8}  STATE   SOURCE")
    for info, age_s, stale in rows:
        print(f"{info.list_id:<24}  {info.version:>8}  {iso_utc(info.created):<24}  {info.entry_count:>8}  "
              f"{age_s / 3600:7.1f}h  {'STALE ' if stale else 'fresh '}  {info.source}")  # fmt: skip
    if not rows:
        print("(no hot list in force)")
    return 1 if not rows or any(r.stale for r in rows) else 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add the ``hotlist`` command to the ``alpr-edge`` parser; returns its subcommands for the manual entries."""
    hl = sub.add_parser(
        "hotlist",
        help="hot list bundles: make keys, sign, verify, import, show status",
        description="Headquarters signs each hot list (a CSV) as a bundle with its Ed25519 key; units verify the "
        f"signature, version and age before a list comes into force. {_ACCESS_NOTE}",
    )
    hsub = hl.add_subparsers(dest="hotlist_command", required=True, metavar="ACTION", help="what to do")

    kg = hsub.add_parser(
        "keygen",
        help="create headquarters' Ed25519 signing key pair (PEM)",
        description="Write a new private signing key (mode 0600, never overwritten; keep it at headquarters) and "
        "its public key (install it on every unit).",
    )
    kg.add_argument("--private", type=Path, required=True, help="where to write the private key (PEM, mode 0600)")
    kg.add_argument("--public", type=Path, required=True, help="where to write the public key (PEM)")
    kg.set_defaults(func=cmd_keygen)

    sg = hsub.add_parser(
        "sign",
        help="sign a hot list CSV as a bundle",
        description="Parse the CSV (bad lines are listed as file:line:field and left out), then sign it as list "
        "ID, version N. Refused when no line is good. Columns: plate, state, list_code, case_number, entered; "
        "optional expires, instructions, reason, vehicle_description, entry_id.",
    )
    sg.add_argument("--key", type=Path, required=True, help="headquarters' private signing key (PEM, mode 0600)")
    sg.add_argument("--list-id", required=True, help="the list's id, e.g. ncic-or or bolo-portland (a-z, 0-9, . _ -)")
    sg.add_argument("--version", type=_positive_int, required=True, help="the list's version: higher than the last")
    sg.add_argument("--created", type=_created, default=None, help="creation time, ISO-8601 (default: now, UTC)")
    sg.add_argument("csv", type=Path, metavar="CSV", help="the hot list CSV (UTF-8, with a header row)")
    sg.add_argument("-o", "--output", type=Path, required=True, help="the bundle file to write (*.hlb)")
    sg.set_defaults(func=cmd_sign)

    key_help = "trusted public key (PEM); repeat for several (default: [hotlist] public_keys of --config)"
    vf = hsub.add_parser(
        "verify",
        help="check a bundle's signature, hash and age without importing it",
        description="Print the list, version, creation time and entry count of a good bundle; exit 1 with the "
        "reason when it would be refused.",
    )
    vf.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle file")
    vf.add_argument("--public-key", type=Path, action="append", default=[], help=key_help)
    vf.add_argument("--config", type=Path, default=None, help="take the public keys from this settings file")
    vf.set_defaults(func=cmd_verify)

    im = hsub.add_parser(
        "import",
        help="offer a bundle to this unit's store",
        description="Verify the bundle and, when it is newer than the list in force, swap it in atomically. A "
        f"refused bundle leaves the list in force as it was; either way the outcome is recorded. {_ACCESS_NOTE}",
    )
    im.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle file")
    im.add_argument("--public-key", type=Path, action="append", default=[], help=key_help)
    _store_args(im, db=True)
    im.set_defaults(func=cmd_import)

    st = hsub.add_parser(
        "status",
        help="the lists in force: version, age, stale or fresh",
        description="List the hot lists in force with version, creation time, entries, age and state. Exit 1 when "
        "there is none or one is stale.",
    )
    st.add_argument(
        "--stale-after-h",
        type=float,
        default=None,
        help="a list older than this many hours is stale (default: [hotlist] stale_after_h, or 24)",
    )
    _store_args(st, db=True)
    st.set_defaults(func=cmd_status)
    return hsub
