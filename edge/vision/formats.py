"""Plate formats per region, used to rank the OCR's candidate strings.

A rule only reorders what the OCR already proposed: it never adds, removes or changes a character.
Strict regions (Brazil, EU) know their syntax well, so a candidate that breaks it drops far down the list;
US states issue so many layouts (vanity plates included) that the US rule is only a loose length check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PlateFormat:
    region: str
    name: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class RegionRules:
    region: str
    formats: tuple[PlateFormat, ...]
    strict: bool
    #: log-score penalty for a candidate that matches none of the formats
    mismatch_penalty: float


def _f(region: str, name: str, pattern: str) -> PlateFormat:
    return PlateFormat(region, name, re.compile(pattern))


REGIONS: dict[str, RegionRules] = {
    "br": RegionRules(
        "br",
        (
            _f("br", "br-old", r"^[A-Z]{3}[0-9]{4}$"),
            _f("br", "br-mercosur", r"^[A-Z]{3}[0-9][A-Z][0-9]{2}$"),
        ),
        strict=True,
        mismatch_penalty=6.0,
    ),
    "eu": RegionRules(
        "eu",
        (
            # Letters then digits then letters, as in most EU member states (DE, SK, CZ, IT, FR, ES, PL, NL, ...)
            _f("eu", "eu-lettered", r"^[A-Z]{1,3}[0-9]{1,4}[A-Z]{0,3}$"),
            _f("eu", "eu-digits-first", r"^[0-9]{1,4}[A-Z]{1,3}[0-9]{0,3}$"),
            _f("eu", "eu-mixed", r"^[A-Z]{2}[0-9]{2}[A-Z]{3}$"),
            # Personalised and older plates: any 4 to 8 characters with at least one letter
            _f("eu", "eu-other", r"^(?=.*[A-Z])[A-Z0-9]{4,8}$"),
        ),
        strict=True,
        mismatch_penalty=4.0,
    ),
    "us": RegionRules(
        "us",
        (_f("us", "us", r"^[A-Z0-9]{2,8}$"),),
        strict=False,
        mismatch_penalty=2.0,
    ),
}


class UnknownRegionError(ValueError):
    pass


def rules_for(regions: tuple[str, ...]) -> tuple[RegionRules, ...]:
    out = []
    for r in regions:
        if r not in REGIONS:
            raise UnknownRegionError(f"unknown region {r!r} (known: {', '.join(sorted(REGIONS))})")
        out.append(REGIONS[r])
    return tuple(out)


def match_format(text: str, rules: tuple[RegionRules, ...]) -> PlateFormat | None:
    """The first format (in the order of ``rules``) that ``text`` matches, or None."""
    for rr in rules:
        for f in rr.formats:
            if f.pattern.match(text):
                return f
    return None


def format_penalty(text: str, rules: tuple[RegionRules, ...]) -> float:
    """0 when ``text`` fits a format of one of the regions, else the smallest mismatch penalty among them."""
    if not rules or match_format(text, rules) is not None:
        return 0.0
    return min(rr.mismatch_penalty for rr in rules)
