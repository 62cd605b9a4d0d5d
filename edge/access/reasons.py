"""Why a search is made (P14) and for whom (P11): checked before any stored read is looked at.

A search needs a case or call-for-service number, or a detailed reason. "Detailed" is checked, not trusted:
at least ``MIN_REASON`` characters and ``MIN_WORDS`` different real words, so "aaaaaaaaaaaaaaaaaaaaaa",
"test test test test test" or "asdf asdf asdf asdf" are refused while "hit and run on Main St, silver sedan" is
not. A search for another agency also names the agency, the requesting person and their purpose, and a case
number (P11). Each refusal names the rule it breaks (``PurposeError.rule``) so that it can be recorded.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

MIN_REASON = 20  # characters of a detailed reason when no case number is given
MIN_WORDS = 4  # different real words in such a reason
MAX_REASON = 1000
MAX_FIELD = 200  # agency, person, purpose
CASE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9/.-]{2,39}"
_CASE = re.compile(CASE_PATTERN)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab, newline and carriage return are folded to spaces
_WORD = re.compile(r"[^\W_]+")
# Words that say nothing about why: typed to get past a required field.
_FILLER_WORDS = (
    "test tests testing tst asdf asdfgh qwerty qwertz xxx xyz abc abcd foo bar baz blah lorem ipsum dummy none "
    "nothing na nil null reason search searching check checking lookup look plate plates tbd todo whatever misc "
    "etc stuff thing things"
)
FILLER = frozenset(_FILLER_WORDS.split())

# The rules, as recorded with a refusal (``search.refused`` detail "rule").
RULE_NO_PURPOSE = "P14: case number or detailed reason required"
RULE_CASE_FORMAT = "case number format"
RULE_REASON_SHORT = f"P14: reason of at least {MIN_REASON} characters"
RULE_REASON_FILLER = f"P14: reason of at least {MIN_WORDS} different real words"
RULE_TEXT = "text fields: length and characters"
RULE_OUTSIDE_FIELDS = "P11: outside agency needs agency, person and purpose"
RULE_OUTSIDE_CASE = "P11: outside agency needs a case number"


class PurposeError(ValueError):
    """The purpose given does not allow a search; ``rule`` names the rule broken, the message says how to fix it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class Purpose:
    """A checked purpose: make one with ``check_purpose``."""

    case_number: str  # case or call-for-service number ('' if none)
    reason: str  # free text ('' allowed only with a case number)
    outside_agency: str = ""  # when the search is for another agency: agency, person, purpose all required
    outside_person: str = ""
    outside_purpose: str = ""

    @property
    def outside(self) -> bool:
        return bool(self.outside_agency)

    def audit_reason(self) -> str:
        """One line for the access record, e.g. ``case 2026-001234: stolen car; for agency X (person): purpose``."""
        parts = []
        if self.case_number:
            parts.append(f"case {self.case_number}" + (f": {self.reason}" if self.reason else ""))
        else:
            parts.append(f"reason: {self.reason}")
        if self.outside:
            parts.append(f"for {self.outside_agency} ({self.outside_person}): {self.outside_purpose}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, str]:
        return {
            "case_number": self.case_number,
            "reason": self.reason,
            "outside_agency": self.outside_agency,
            "outside_person": self.outside_person,
            "outside_purpose": self.outside_purpose,
        }


def _clean(value: object, field: str, max_len: int) -> str:
    """``value`` stripped, with runs of whitespace (newlines included) folded to one space; '' for None."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PurposeError(RULE_TEXT, f"{field}: must be text")
    if _CONTROL.search(value):
        raise PurposeError(RULE_TEXT, f"{field}: must not contain control characters")
    text = " ".join(value.split())
    if len(text) > max_len:
        raise PurposeError(RULE_TEXT, f"{field}: at most {max_len} characters")
    return text


def real_words(text: str) -> set[str]:
    """The different words of ``text`` that could carry meaning: two or more characters, at least one a letter,
    not one character repeated ("xxxx"), not filler ("test", "asdf", ...). Case-insensitive."""
    words = set()
    for w in _WORD.findall(text.casefold()):
        if len(w) >= 2 and any(c.isalpha() for c in w) and len(set(w)) > 1 and w not in FILLER:
            words.add(w)
    return words


def check_reason(reason: str) -> None:
    """PurposeError unless ``reason`` (already cleaned) is detailed enough to stand without a case number."""
    if len(reason) < MIN_REASON:
        raise PurposeError(
            RULE_REASON_SHORT,
            f"reason: at least {MIN_REASON} characters when no case number is given (P14); "
            f"say what happened and why this search helps",
        )
    if len(real_words(reason)) < MIN_WORDS:
        raise PurposeError(
            RULE_REASON_FILLER,
            f"reason: must say why in at least {MIN_WORDS} different real words (P14); "
            f"repeated characters or words like 'test' do not count",
        )


def check_purpose(
    case_number: str | None,
    reason: str | None,
    outside_agency: str | None = None,
    outside_person: str | None = None,
    outside_purpose: str | None = None,
) -> Purpose:
    """The Purpose if it allows a search; else PurposeError naming the rule broken."""
    case = _clean(case_number, "case number", MAX_FIELD)
    text = _clean(reason, "reason", MAX_REASON)
    agency = _clean(outside_agency, "outside agency", MAX_FIELD)
    person = _clean(outside_person, "outside person", MAX_FIELD)
    purpose = _clean(outside_purpose, "outside purpose", MAX_FIELD)
    if case and not _CASE.fullmatch(case):
        raise PurposeError(
            RULE_CASE_FORMAT,
            "case number: 3 to 40 letters, digits, '-', '/' or '.', starting with a letter or digit",
        )
    if not case and not text:
        raise PurposeError(
            RULE_NO_PURPOSE,
            f"a search needs a case or call-for-service number (--case) or a detailed reason of at least "
            f"{MIN_REASON} characters (--reason) (P14)",
        )
    if not case:
        check_reason(text)
    if agency or person or purpose:
        missing = [n for n, v in (("agency", agency), ("person", person), ("purpose", purpose)) if not v]
        if missing:
            raise PurposeError(
                RULE_OUTSIDE_FIELDS,
                f"a search for an outside agency must name the agency, the requesting person and the purpose "
                f"(P11); missing: {', '.join(missing)}",
            )
        if not case:
            raise PurposeError(
                RULE_OUTSIDE_CASE, "a search for an outside agency needs their case number (--case) (P11)"
            )
        for name, v in (("outside agency", agency), ("outside person", person), ("outside purpose", purpose)):
            if not real_words(v) and not any(c.isdigit() for c in v):
                raise PurposeError(RULE_OUTSIDE_FIELDS, f"{name}: must be a real name or text, not filler (P11)")
    return Purpose(case, text, agency, person, purpose)


def add_purpose_args(p: argparse.ArgumentParser) -> None:
    """--case, --reason, --for-agency, --for-person, --for-purpose."""
    g = p.add_argument_group("purpose (P14; P11 for outside agencies)")
    g.add_argument("--case", default=None, metavar="NUMBER", help="case or call-for-service number")
    g.add_argument(
        "--reason",
        default=None,
        metavar="TEXT",
        help=f"why the search is made; required without --case: at least {MIN_REASON} characters and "
        f"{MIN_WORDS} different real words",
    )
    g.add_argument("--for-agency", default=None, metavar="NAME", help="the outside agency the search is made for")
    g.add_argument("--for-person", default=None, metavar="NAME", help="the person of that agency who asked for it")
    g.add_argument("--for-purpose", default=None, metavar="TEXT", help="that agency's purpose")


def purpose_from_args(args: argparse.Namespace) -> Purpose:
    """check_purpose on the options of ``add_purpose_args``."""
    return check_purpose(args.case, args.reason, args.for_agency, args.for_person, args.for_purpose)
