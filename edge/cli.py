"""The ``alpr-edge`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__, alerts_commands, config, doctor, evidence_commands, maintenance_commands, search_commands
from .access import audit_commands
from .access import commands as users_commands
from .console import cli as console_cli
from .hotlist import commands as hotlist_commands
from .hotlist.manual_commands import register_manual
from .store import commands as store_commands
from .sync import commands as sync_commands
from .vision.image import ImageError, read_image
from .vision.recognizer import PlateRead, Recognizer
from .vision.runtime import ModelError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models"


def models_dir(arg: Path | None) -> Path:
    """--models, else $ALPR_EDGE_MODELS, else the models/ folder beside the package."""
    if arg is not None:
        return arg
    env = os.environ.get("ALPR_EDGE_MODELS")
    return Path(env) if env else DEFAULT_MODELS


def iter_inputs(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; folders recursively (image suffixes only), sorted for a stable order."""
    for p in paths:
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield p


def read_to_json(r: PlateRead) -> dict[str, object]:
    return {
        "text": r.text,
        "confidence": round(r.confidence, 4),
        "char_confidences": [round(c, 4) for c in r.char_confidences],
        "box": list(r.box),
        "region": r.region,
        "format": r.plate_format,
        "detection_score": round(r.detection_score, 4),
        "candidates": [{"text": c.text, "confidence": round(c.confidence, 4)} for c in r.candidates],
    }


def cmd_recognize(args: argparse.Namespace) -> int:
    models = models_dir(args.models)
    regions = tuple(r for r in args.region.split(",") if r) if args.region else ()
    try:
        rec = Recognizer.from_files(
            models / "plate_detector.tflite", models / "plate_ocr.tflite", regions, threads=args.threads
        )
    except (ModelError, ValueError) as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    failures = 0
    for path in iter_inputs(args.paths):
        t0 = time.perf_counter()
        try:
            frame = read_image(path)
        except ImageError as e:
            failures += 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(e)}), flush=True)
            else:
                print(f"{path}: error: {e}", flush=True)
            continue
        if args.crops:
            one = rec.read_crop(frame)
            reads = [one] if one else []
        else:
            reads = rec.recognize(frame)
        ms = (time.perf_counter() - t0) * 1000
        if args.json:
            print(
                json.dumps({"image": str(path), "plates": [read_to_json(r) for r in reads], "ms": round(ms, 2)}),
                flush=True,
            )
        else:
            if not reads:
                print(f"{path}: no plate ({ms:.0f} ms)", flush=True)
            for r in reads:
                alts = " ".join(f"{c.text}:{c.confidence:.2f}" for c in r.candidates[1:5])
                print(
                    f"{path}: {r.text:<10} {r.confidence:5.2f} box={list(r.box)} {r.plate_format or '-'} "
                    f"({ms:.0f} ms) alternatives: {alts}",
                    flush=True,
                )
    if failures:
        print(f"alpr-edge: {failures} file(s) could not be read", file=sys.stderr)
        return 1
    return 0


DEFAULT_CONFIG = Path("/etc/alpr-edge/edge.toml")


def cmd_config_validate(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.file)
    except config.ConfigError as e:
        print(f"alpr-edge: {e}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(cfg.cameras)} camera(s), gps {cfg.gps.mode}, database {cfg.db_path})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RESTART, run

    while True:  # headquarters' settings take effect by running again with them (the config is read once)
        code = run(args.config, args.forever)
        if code != RESTART:
            return code


def _register_hq(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Headquarters' commands need the hq extra (psycopg); a unit installed without it keeps every other command."""
    try:
        from .hq import commands as hq_commands
    except ImportError as e:
        missing = f"alpr-edge hq: not installed here ({e}); install with the hq extra: pip install 'alpr-edge[hq]'"

        def cmd_hq_missing(_args: argparse.Namespace) -> int:
            print(missing, file=sys.stderr)
            return 2

        hq = sub.add_parser("hq", help="headquarters commands (needs the hq extra)", description=missing)
        hq.add_argument("rest", nargs=argparse.REMAINDER, help="the hq command and its arguments")
        hq.set_defaults(func=cmd_hq_missing)
        return
    hq_commands.register(sub)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alpr-edge", description="Automated license plate reader for edge devices.")
    p.add_argument("--version", action="version", version=f"alpr-edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (may show plate text)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "recognize",
        help="read plates in image files or folders",
        description="Detect and read plates in images (files, or folders searched recursively).",
    )
    r.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    r.add_argument("--json", action="store_true", help="one JSON line per image instead of a table")
    r.add_argument("--crops", action="store_true", help="each image is an already cropped plate (OCR only)")
    r.add_argument("--region", default="", help="expected plate formats, comma-separated: us, eu, br")
    r.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    r.add_argument("--models", type=Path, default=None, help="folder with plate_detector.tflite and plate_ocr.tflite")
    r.set_defaults(func=cmd_recognize)

    run = sub.add_parser(
        "run",
        help="run the reader: capture, recognise, track, GPS-tag and store every read",
        description="Run the unit until SIGTERM (or, for recorded footage, until every source has ended).",
    )
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"TOML settings (default {DEFAULT_CONFIG})")
    run.add_argument(
        "--forever",
        action="store_true",
        help="keep running when recorded footage (files, folders) has ended; without it the run ends with them",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="logging level on stderr (debug may show plate text)",
    )
    run.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="check a settings file", description="Configuration commands.")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION", help="what to do")
    v = csub.add_parser(
        "validate",
        help="validate a TOML settings file; errors name the key",
        description="Validate a settings file and say what is wrong, naming the key.",
    )
    v.add_argument("file", type=Path, help="the TOML file")
    v.set_defaults(func=cmd_config_validate)
    store_commands.register(sub)
    register_manual(hotlist_commands.register(sub))
    alerts_commands.register(sub)
    users_commands.register(sub)
    evidence_commands.register(sub)
    maintenance_commands.register(sub)
    audit_commands.register(sub)
    search_commands.register(sub)
    _register_hq(sub)
    sync_commands.register(sub)
    doctor.register(sub)
    console_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    if getattr(args, "log_level", None):
        level = getattr(logging, args.log_level.upper())
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    rc: int = args.func(args)
    return rc
