"""Region format rules rank candidates; they never invent or change characters."""

from __future__ import annotations

import pytest

from edge.vision.formats import REGIONS, UnknownRegionError, format_penalty, match_format, rules_for


@pytest.mark.parametrize(
    ("text", "region", "fmt"),
    [
        ("ABC1234", "br", "br-old"),
        ("ABC1D23", "br", "br-mercosur"),
        ("RK099AN", "eu", "eu-lettered"),
        ("7ABC123", "us", "us"),
        ("GWAGEN", "eu", "eu-other"),
    ],
)
def test_formats_match(text: str, region: str, fmt: str) -> None:
    f = match_format(text, rules_for((region,)))
    assert f is not None and f.name == fmt and f.region == region


@pytest.mark.parametrize("text", ["ABC12345", "AB1234", "0BC1234", "ABCD123", "ABC1DD3"])
def test_brazil_is_strict(text: str) -> None:
    rules = rules_for(("br",))
    assert match_format(text, rules) is None
    assert format_penalty(text, rules) == REGIONS["br"].mismatch_penalty


def test_us_is_loose_and_only_length_penalised() -> None:
    rules = rules_for(("us",))
    assert format_penalty("A1", rules) == 0.0
    assert format_penalty("ABCDEFGHI", rules) > 0
    assert REGIONS["us"].mismatch_penalty < REGIONS["br"].mismatch_penalty


def test_no_region_means_no_penalty() -> None:
    assert format_penalty("ANYTHING99", ()) == 0.0


def test_unknown_region() -> None:
    with pytest.raises(UnknownRegionError, match="unknown region 'xx'"):
        rules_for(("xx",))
