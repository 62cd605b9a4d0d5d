"""Position for each read: gpsd over its JSON protocol, or a configured fixed position for a pole."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fix:
    """The position joined to a read. ``source`` is "gpsd", "fixed" or "none" (no fix: every other field None
    except ``mode`` 0); a gpsd fix older than the configured limit at the read's time is "none", never passed off
    as current."""

    source: str
    mode: int  # 0 no fix, 2 = 2D, 3 = 3D (gpsd's TPV mode); a fixed position reports 3
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    time: float | None = None  # UTC epoch seconds of the fix (gpsd's TPV time; for "fixed", the read's time)
    age_s: float | None = None  # read time minus fix time
    eph_m: float | None = None  # horizontal error estimate, metres (gpsd "eph"); configured for "fixed"
    speed_mps: float | None = None
    track_deg: float | None = None


NO_FIX = Fix(source="none", mode=0)
