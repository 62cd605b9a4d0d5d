"""Board temperature and throttling: read from a sysfs tree laid out as on a Raspberry Pi, turned into faults."""

from __future__ import annotations

from pathlib import Path

from edge.config import HealthConfig
from edge.console.commands import _thermal_line
from edge.health import Counters, FrameProbe, Health, Parts, snapshot
from edge.thermal import PI_THROTTLED, ThermalStatus, read_thermal


def zone(root: Path, n: int, kind: str, temp: str) -> None:
    d = root / "class" / "thermal" / f"thermal_zone{n}"
    d.mkdir(parents=True)
    (d / "type").write_text(kind + "\n")
    (d / "temp").write_text(temp + "\n")


def test_hottest_zone_and_pi_flags(tmp_path: Path) -> None:
    zone(tmp_path, 0, "cpu-thermal", "61850")
    zone(tmp_path, 1, "gpu-thermal", "72300")
    zone(tmp_path, 2, "broken", "not a number")
    zone(tmp_path, 3, "disabled", "-273000")
    flags = tmp_path / PI_THROTTLED
    flags.parent.mkdir(parents=True)
    flags.write_text("50005\n")  # as the Pi firmware writes it (hex): under-voltage and throttled now and since boot
    t = read_thermal(tmp_path)
    assert t is not None
    assert t.temp_c == 72.3 and t.zone == "gpu-thermal"
    assert t.now() == ("under-voltage", "throttled")
    assert t.since_boot() == ("under-voltage", "throttled")
    assert t.fault == "unreadable: thermal_zone2, thermal_zone3"


def test_no_sensor_is_none_and_garbage_flags_are_a_fault(tmp_path: Path) -> None:
    assert read_thermal(tmp_path) is None
    flags = tmp_path / PI_THROTTLED
    flags.parent.mkdir(parents=True)
    flags.write_bytes(b"\xff\xfe garbage")
    t = read_thermal(tmp_path)
    assert t is not None and t.temp_c is None and t.throttled is None
    assert t.fault == "unreadable: get_throttled"


def test_faults_by_temperature_and_flags() -> None:
    health = Health(HealthConfig(), 0)

    def codes(t: ThermalStatus) -> list[tuple[str, str]]:
        return [(f.code, f.severity) for f in health.faults(Parts(thermal=t))]

    assert codes(ThermalStatus(79.9, "cpu-thermal", 0)) == []
    assert codes(ThermalStatus(80.0, "cpu-thermal", 0)) == [("board.hot", "warning")]
    assert codes(ThermalStatus(86.0, "cpu-thermal", None)) == [("board.hot", "critical")]
    assert codes(ThermalStatus(50.0, "cpu-thermal", 0x1)) == [("power.low", "critical")]
    assert codes(ThermalStatus(50.0, "cpu-thermal", 0xA)) == [("board.throttled", "warning")]
    assert codes(ThermalStatus(50.0, "cpu-thermal", 0xF0000)) == []  # only since boot: in the status, no fault
    assert health.faults(Parts()) == ()


def test_snapshot_and_console_line() -> None:
    t = ThermalStatus(81.26, "cpu-thermal", 0x20002)
    faults = Health(HealthConfig(), 0).faults(Parts(thermal=t))
    snap = snapshot("u1", Counters(1, 0, 0, 0, 0, 0, 0, 0), Parts(thermal=t), faults, FrameProbe(1, 0.5), "fixed", 0)
    assert snap["thermal"] == {
        "temp_c": 81.3,
        "zone": "cpu-thermal",
        "throttled_now": ["ARM frequency capped"],
        "throttled_since_boot": ["ARM frequency capped"],
        "fault": None,
    }
    assert snap["level"] == "warning"
    line = _thermal_line(snap["thermal"])
    assert line == "board 81 °C (cpu-thermal); throttled now: ARM frequency capped; since boot: ARM frequency capped"
    assert _thermal_line(None) == "board: no temperature sensor"


def test_doctor_check(tmp_path: Path) -> None:
    from edge.doctor import FAIL, OK, WARN, thermal

    assert thermal(None, tmp_path).level == OK  # no sensor
    zone(tmp_path / "sys", 0, "cpu-thermal", "83000")
    c = thermal(None, tmp_path)
    assert (c.level, c.message) == (WARN, "83 °C (cpu-thermal): at or above health.temp_warn_c 80")
    flags = tmp_path / "sys" / PI_THROTTLED
    flags.parent.mkdir(parents=True)
    flags.write_text("1\n")
    assert thermal(None, tmp_path).level == FAIL


def test_config_refuses_critical_below_warning(tmp_path: Path) -> None:
    import pytest

    from edge.config import ConfigError, parse

    raw = {
        "unit": {"id": "u1"},
        "gps": {"mode": "fixed", "lat": 1.0, "lon": 2.0},
        "camera": [{"id": "c", "kind": "file", "uri": "x.mp4"}],
    }
    parse(raw, tmp_path)
    with pytest.raises(ConfigError, match=r"health\.temp_critical_c: must not be below health\.temp_warn_c"):
        parse({**raw, "health": {"temp_warn_c": 90, "temp_critical_c": 85}}, tmp_path)
