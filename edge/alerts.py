"""Alerts: a stored read that hits a hot list becomes an Alert at once, for the officer in the car (the local alert
page) and the communications center (MQTT), with the evidence to verify it (P7) and a recorded outcome (P8)."""

from __future__ import annotations

from dataclasses import dataclass

from .gps import Fix
from .hotlist.entry import Hit, ListInfo

# What an officer can record after checking a hit (P8).
OUTCOMES = (
    "confirmed",
    "misread",
    "not_the_vehicle",
    "no_longer_wanted",
    "arrest",
    "vehicle_recovered",
    "unable_to_locate",
    "other",
)


@dataclass(frozen=True)
class Alert:
    """Everything the officer needs to verify a hit before acting on it."""

    uuid: str  # the hit's uuid
    read_uuid: str
    unit_id: str
    camera_id: str
    read_text: str
    read_confidence: float
    seen_at: float  # UTC epoch seconds: the read's best_seen
    fix: Fix
    hit: Hit  # the wanted entry, how it matched
    list_info: ListInfo
    list_age_s: float  # now - list_info.created when raised
    list_stale: bool  # older than the freshness limit (24 h): shown as "hot list stale"
    crop_jpeg: bytes
    scene_jpeg: bytes | None  # None when the disk was too full to keep scenes
    raised_at: float  # UTC epoch seconds
