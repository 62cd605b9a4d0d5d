"""Characters the OCR confuses, as equivalence classes, and the fold that maps each to its class.

Why these classes: on real plates our OCR's confusions are mostly O/0, I/1, O/Q/D (Brazilian IR crops), B/8,
Z/2, S/5 and G/6 (models/MODEL_CARD.md, "Known weaknesses"); the issue adds L to 1/I. Each class widens every
match, and a hit sends an officer to a car, so a pair is in only when it is a confusion we see, not one that a
font could in theory produce. The classes must be disjoint (a fold is an equivalence), which rules out chains:
with 1/T and T/7 as well, 1 and 7 would become look-alikes, which plate fonts keep well apart. Left out on
purpose: T (1/T, 7/T), 4/A, U/V, M/N, C/G (would chain C to 6), E/F, K/X: rare for this OCR on plate fonts and
each would add false hits on common letters. A unit whose OCR confuses others can pass its own classes.

Folding is what makes look-alike matching O(1): two plates of the same length are look-alikes of each other
exactly when their folds are equal, so the index is keyed on the fold and the differing positions are counted
only for the few entries that share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Each string is one class; its first character is the representative that ``fold`` maps the class to.
DEFAULT_CLASSES: tuple[str, ...] = ("0OQD", "1IL", "8B", "5S", "2Z", "6G")

PLATE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


class LookalikeTableError(ValueError):
    """A look-alike class list that is not a set of disjoint classes of plate characters."""


@dataclass(frozen=True)
class LookalikeTable:
    """Disjoint classes of characters that may stand for each other in a match."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    _table: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        table: dict[int, int] = {}
        for cls in self.classes:
            if len(cls) < 2:
                raise LookalikeTableError(f"look-alike class {cls!r}: needs at least two characters")
            for ch in cls:
                if ch not in PLATE_CHARS:
                    raise LookalikeTableError(f"look-alike class {cls!r}: {ch!r} is not a plate character (A-Z, 0-9)")
                if ch in seen:
                    raise LookalikeTableError(
                        f"look-alike class {cls!r}: {ch!r} is already in class {seen[ch]!r} (classes must be disjoint)"
                    )
                seen[ch] = cls
                table[ord(ch)] = ord(cls[0])
        object.__setattr__(self, "_table", table)

    def fold(self, text: str) -> str:
        """``text`` with every character replaced by its class representative (others, * and ? unchanged)."""
        return text.translate(self._table)

    def representative(self, ch: str) -> str:
        """The class representative of one character (the character itself when it is in no class)."""
        return chr(self._table.get(ord(ch), ord(ch)))

    def lookalike(self, a: str, b: str) -> bool:
        """True when ``a`` and ``b`` are different characters of one class."""
        return a != b and self._table.get(ord(a), -1) == self._table.get(ord(b), -2)


DEFAULT_TABLE = LookalikeTable()
