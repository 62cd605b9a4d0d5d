"""Board temperature and throttling, read from sysfs.

A Pi in a closed patrol car or a pole box in the sun throttles its CPU long before anything fails outright: frames
then drop and reads are missed with no other fault to show why. The hottest Linux thermal zone gives the
temperature (Pi and Jetson alike); on a Raspberry Pi the firmware's ``get_throttled`` flags also say whether the
supply is under-voltage or the clock is capped now, or has been since boot. Everything read is checked: a zone that
cannot be read or parsed is skipped, and the status says so rather than raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The Raspberry Pi firmware's flags (vcgencmd get_throttled): bit -> what it means now; bit + 16 -> since boot
THROTTLE_NOW = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}
PI_THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"
MAX_ZONES = 32


@dataclass(frozen=True)
class ThermalStatus:
    temp_c: float | None  # the hottest readable zone, None when none could be read
    zone: str | None  # that zone's type (cpu-thermal, CPU-therm, ...)
    throttled: int | None  # Raspberry Pi firmware flags; None where there is no such file
    fault: str | None = None  # what could not be read, for the technician

    def now(self) -> tuple[str, ...]:
        """The throttling conditions in force now (Raspberry Pi only)."""
        if self.throttled is None:
            return ()
        return tuple(text for bit, text in THROTTLE_NOW.items() if self.throttled >> bit & 1)

    def since_boot(self) -> tuple[str, ...]:
        """The throttling conditions that have occurred since boot (Raspberry Pi only)."""
        if self.throttled is None:
            return ()
        return tuple(text for bit, text in THROTTLE_NOW.items() if self.throttled >> (bit + 16) & 1)


def _read_small(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(64).decode("ascii", "replace").strip()


def read_thermal(sys_root: Path = Path("/sys")) -> ThermalStatus | None:
    """The temperature and throttling state, or None on a machine with neither (a container, a VM)."""
    best: tuple[float, str] | None = None
    bad: list[str] = []
    zones = sorted((sys_root / "class" / "thermal").glob("thermal_zone*"))[:MAX_ZONES]
    for zone in zones:
        try:
            raw = _read_small(zone / "temp")
            temp = int(raw) / 1000.0  # millidegrees Celsius
        except (OSError, ValueError):
            bad.append(zone.name)
            continue
        if not -60.0 <= temp <= 200.0:  # disabled zones read 0 or nonsense; a real board is never outside this
            bad.append(zone.name)
            continue
        try:
            kind = _read_small(zone / "type")[:32] or zone.name
        except OSError:
            kind = zone.name
        if best is None or temp > best[0]:
            best = (temp, "".join(ch for ch in kind if ch.isprintable()))
    throttled = None
    flags = sys_root / PI_THROTTLED
    if flags.exists():
        try:
            throttled = int(_read_small(flags), 16)
        except (OSError, ValueError):
            bad.append("get_throttled")
    if best is None and throttled is None and not bad:
        return None
    fault = f"unreadable: {', '.join(bad)}" if bad else None
    return ThermalStatus(best[0] if best else None, best[1] if best else None, throttled, fault)
