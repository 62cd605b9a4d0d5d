"""What a hot list holds and what a match says: the contracts between feed, matcher, alerts and manual entries."""

from __future__ import annotations

from dataclasses import dataclass

# Reason codes (P7 names these reasons); lists may carry others, shown as given.
LIST_CODES = (
    "STOLEN_VEHICLE",
    "STOLEN_PLATE",
    "WANTED_PERSON",
    "MISSING_PERSON",
    "AMBER_ALERT",
    "SILVER_ALERT",
    "PROTECTION_ORDER",
    "SEX_OFFENDER",
    "GANG",
    "TERRORIST_WATCH",
    "BOLO",
    "OTHER",
)


@dataclass(frozen=True)
class HotEntry:
    """One wanted plate (or partial plate) on one list."""

    entry_id: str  # unique within its list: the NCIC/record number, or a uuid for a manual entry
    list_id: str  # the list it came from, e.g. "ncic-or", "bolo-portland", "manual"
    plate: str  # A-Z0-9; partial plates use * (any run) and ? (one character)
    state: str | None  # issuing state or country code when known ("OR", "CA", "D", "BR")
    list_code: str  # one of LIST_CODES or a list's own code
    reason: str  # for people: "Stolen vehicle", "AMBER alert: child abduction", ...
    case_number: str  # NCIC or case number
    entered: float  # UTC epoch seconds
    expires: float | None  # UTC epoch seconds; None: until removed
    instructions: str  # "stop only with probable cause", ... ("" when none)
    vehicle_description: str = ""
    # Manual entries only (P6; "" otherwise): who entered it, the requesting officer, the case synopsis. A hit
    # carries them to headquarters; they are not held in the compact list index (edge.hotlist.service adds them).
    entered_by: str = ""
    requesting_officer: str = ""
    synopsis: str = ""


@dataclass(frozen=True)
class ListInfo:
    """A list in force: which version, how old (from the signed header), how many entries."""

    list_id: str
    version: int
    created: float  # UTC epoch seconds, set by headquarters when it signed the bundle
    entry_count: int
    source: str = ""  # where it came from (directory, URL, MQTT, manual), for the status


@dataclass(frozen=True)
class Substitution:
    """A character the read had where the list has a look-alike (0 for O, 8 for B, ...)."""

    position: int
    read_char: str
    wanted_char: str
    confidence: float  # the OCR's confidence in the read character (low = more likely a misread)


@dataclass(frozen=True)
class Hit:
    """A read that matches a hot list entry, and how."""

    entry: HotEntry
    list_version: int
    matched_text: str  # the read's text, or the alternative candidate that matched
    candidate_rank: int  # 0: the read's best text; k: its k-th alternative
    kind: str  # "exact", "lookalike", "wildcard" (partial plate) or "candidate"-derived kinds as documented
    substitutions: tuple[Substitution, ...]
    score: float  # 0..1, higher = stronger match; hits are ranked by it

    def explain(self) -> str:
        """One line for the officer: how the read matched."""
        how = self.kind if self.candidate_rank == 0 else f"{self.kind} (alternative reading #{self.candidate_rank})"
        if not self.substitutions:
            return f"{how}: read {self.matched_text} = wanted {self.entry.plate}"
        subs = ", ".join(
            f"{s.read_char}->{s.wanted_char} at {s.position + 1} (OCR {s.confidence:.0%})" for s in self.substitutions
        )
        return f"{how}: read {self.matched_text} vs wanted {self.entry.plate}; look-alikes {subs}"
