"""The `alpr-edge recognize` contract, run as a real subprocess on real models and images."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import build_parser

from .conftest import scene_with_plate

SHARED_US = "plates-dev/scenes/us/0b86cecf-67d1-4fc0-87c9-b36b0ee228bb.jpg"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=300)


def _huge_png_header() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 32


@pytest.fixture()
def mixed_folder(tmp_path: Path, shared: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    frame, _ = scene_with_plate("7ABC123")
    cv2.imwrite(str(d / "sub" / "synthetic.jpg"), frame)
    (d / "a_real.jpg").write_bytes((shared / SHARED_US).read_bytes())
    (d / "b_empty.jpg").write_bytes(b"")
    _ok, enc = cv2.imencode(".jpg", frame)
    (d / "c_truncated.jpg").write_bytes(enc.tobytes()[:5000])
    _ok, one = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    (d / "d_one_pixel.png").write_bytes(one.tobytes())
    (d / "e_huge.png").write_bytes(_huge_png_header())
    (d / "f_text.jpg").write_text("not an image")
    (d / "ignored.txt").write_text("not an image suffix: skipped by folder recursion")
    return d


def test_json_contract_and_bad_files(mixed_folder: Path) -> None:
    res = run_cli("recognize", "--json", str(mixed_folder))
    assert res.returncode == 1, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    by_name = {Path(r["image"]).name: r for r in lines}
    assert sorted(by_name) == ["a_real.jpg", "b_empty.jpg", "c_truncated.jpg", "d_one_pixel.png", "e_huge.png",
                               "f_text.jpg", "synthetic.jpg"]
    assert "empty" in by_name["b_empty.jpg"]["error"]
    assert "truncated" in by_name["c_truncated.jpg"]["error"]
    assert "too small" in by_name["d_one_pixel.png"]["error"]
    assert "too large" in by_name["e_huge.png"]["error"]
    assert "not a JPEG" in by_name["f_text.jpg"]["error"]
    for name in ("a_real.jpg", "synthetic.jpg"):
        r = by_name[name]
        assert "error" not in r and r["ms"] > 0
        assert len(r["plates"]) >= 1
        p = r["plates"][0]
        assert set(p) >= {"text", "confidence", "box", "candidates", "char_confidences"}
        assert len(p["box"]) == 4 and all(isinstance(v, int) for v in p["box"])
        assert len(p["candidates"]) >= 5
        assert p["candidates"][0]["text"] == p["text"]
        assert len(p["char_confidences"]) == len(p["text"])
        assert 0 < p["confidence"] <= 1
    assert "5 file(s) could not be read" in res.stderr


def test_table_output_and_exit_zero(tmp_path: Path) -> None:
    frame, _ = scene_with_plate("8XYZ123")
    img = tmp_path / "car.png"
    cv2.imwrite(str(img), frame)
    res = run_cli("recognize", str(img))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(str(img))
    assert "box=" in res.stdout


def test_crops_mode_reads_a_real_us_crop(shared: Path) -> None:
    crop = shared / "plates-dev" / "crops" / "us" / "ak399.png"
    res = run_cli("recognize", "--json", "--crops", "--region", "us", str(crop))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["plates"]) == 1
    assert out["plates"][0]["box"][:2] == [0, 0]


def test_missing_models_folder_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli("recognize", "--models", str(tmp_path), str(tmp_path))
    assert res.returncode == 2
    assert "model file not found" in res.stderr


def test_unknown_region_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli("recognize", "--region", "mars", str(tmp_path))
    assert res.returncode == 2
    assert "unknown region 'mars'" in res.stderr


def test_every_command_has_help() -> None:
    parser = build_parser()
    assert parser.description
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():  # type: ignore[attr-defined]
        assert p.description, f"command {name} has no description"
        for action in p._actions:
            assert action.help, f"{name}: option {action.dest} has no help"
