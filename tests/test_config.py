"""Settings: the shipped files validate; every kind of bad value is refused with the key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge import config
from edge.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = """
[[camera]]
id = "front"
kind = "folder"
uri = "frames"
"""


def load_text(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return config.load(p)


def test_shipped_configs_validate() -> None:
    for name in ("edge.toml", "demo.toml"):
        cfg = config.load(REPO / "firmware_config" / name)
        assert cfg.cameras


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg.cameras[0].uri == str(tmp_path / "frames")
    assert cfg.cameras[0].name == "front"
    assert cfg.gps.mode == "gpsd" and cfg.models.threads == 2
    assert cfg.db_path == Path("/var/lib/alpr-edge/reads.db")
    cfg = load_text(tmp_path, '[unit]\ndata_dir = "data"\n' + MINIMAL)
    assert cfg.db_path == tmp_path / "data" / "reads.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[unit]\nidd = 'x'\n" + MINIMAL, "unit.idd: unknown key"),
        ("[models]\nthreads = 'two'\n" + MINIMAL, "models.threads: expected an integer"),
        ("[models]\nthreads = 64\n" + MINIMAL, "models.threads: 64 is outside 1..16"),
        ("[models]\ndetector_threshold = nan\n" + MINIMAL, "models.detector_threshold: expected a number"),
        ("[gps]\nmode = 'glonass'\n" + MINIMAL, "gps.mode: 'glonass' is not one of"),
        ("[gps]\nmode = 'fixed'\nlat = 45.0\n" + MINIMAL, "gps.lat: fixed mode needs"),
        ("[gps]\nmode = 'fixed'\nlat = 95.0\nlon = 1.0\n" + MINIMAL, "gps.lat: 95.0 is outside"),
        ("[unit]\nregions = ['us', 'mars']\n" + MINIMAL, "unit.regions: 'mars'"),
        ("[unit]\nid = 'Unit 7'\n" + MINIMAL, "unit.id: 'Unit 7' must be"),
        ("[store]\nmin_free_mb = 600\n" + MINIMAL, "store.scene_min_free_mb: must not be below"),
        ("[unit]\nid = 'a'\n", "camera: at least one"),
        ("[pipelines]\n" + MINIMAL, "pipelines: unknown section"),
        (MINIMAL + "fps = 0\n", "camera[0].fps: 0.0 is outside"),
        (MINIMAL.replace('"folder"', '"webcam"'), "camera[0].kind: 'webcam' is not one of"),
        (MINIMAL + "zones = [[[0, 0], [1, 0]]]\n", "camera[0].zones[0]: a polygon needs at least 3"),
        (MINIMAL + "zones = [[[0, 0], [1.5, 0], [1, 1]]]\n", "camera[0].zones[0][1]: expected [x, y]"),
        (MINIMAL + "colour = true\n", "camera[0].colour: unknown key"),
        (MINIMAL + MINIMAL, "camera.id: 'front' is used by more than one camera"),
        ('[[camera]]\nid = "a"\nkind = "device"\nuri = "video0"\n', "camera[0].uri: a device is its index"),
        ('[[camera]]\nid = "a"\nkind = "url"\nuri = "ftp://x"\n', "camera[0].uri: expected an rtsp://"),
        ('[[camera]]\nid = "a"\nkind = "file"\n', "camera[0].uri: required"),
        ("[unit\nid = 1", "edge.toml: "),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, text)
    assert message in str(e.value)
    assert str(tmp_path / "edge.toml") in str(e.value)


def test_not_a_config_file(tmp_path: Path) -> None:
    p = tmp_path / "edge.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(p)
    p.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        config.load(p)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")


def test_validate_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "edge", "config", "validate", str(REPO / "firmware_config" / "edge.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0 and ": ok (" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[models]\nthreads = 0\n" + MINIMAL)
    r = subprocess.run(
        [sys.executable, "-m", "edge", "config", "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 2
    assert "models.threads: 0 is outside 1..16" in r.stderr and "Traceback" not in r.stderr
