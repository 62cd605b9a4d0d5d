"""Line editing for a dumb serial terminal: echo, backspace/DEL, Ctrl-U, Ctrl-C, CR/LF/CRLF, a bounded length.

Bytes are hostile: invalid UTF-8 is dropped, control bytes other than the editing keys are ignored, and escape
sequences (arrow keys, function keys) are swallowed whole instead of leaking "[A" into the line. ``step`` stops at
each completed line, so that a prompt that turns echo off (password) takes effect for keystrokes typed ahead.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

BS, DEL, CTRL_C, CTRL_U, ESC = "\x08", "\x7f", "\x03", "\x15", "\x1b"


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class Cancelled:
    """Ctrl-C: the line typed so far is dropped."""


@dataclass(frozen=True)
class Overlong:
    """The line went past the limit; everything up to its end was discarded."""

    limit: int


Event = Line | Cancelled | Overlong


class LineEditor:
    """Feed bytes with ``push``, then call ``step`` until it returns no event."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.echo = True
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._pending = ""
        self._buf: list[str] = []
        self._overlong = False
        self._after_cr = False
        self._esc = ""  # "" outside an escape sequence; else what has been swallowed so far

    def push(self, data: bytes) -> None:
        self._pending += self._decoder.decode(data)

    def pending(self) -> bool:
        return bool(self._pending)

    def reset(self) -> None:
        """Drop the line being typed and anything typed ahead (a new login starts clean)."""
        self._pending, self._buf, self._overlong, self._esc = "", [], False, ""

    def _end_line(self) -> Event:
        text, over = "".join(self._buf), self._overlong
        self._buf, self._overlong = [], False
        return Overlong(self.max_line) if over else Line(text)

    def step(self) -> tuple[bytes, Event | None]:
        """Process pending input up to the next event: (bytes to echo, the event or None when input ran out)."""
        out: list[str] = []
        event: Event | None = None
        i = 0
        s = self._pending
        while i < len(s) and event is None:
            ch = s[i]
            i += 1
            after_cr, self._after_cr = self._after_cr, False
            if self._esc and ch < " ":
                self._esc = ""  # a control character ends a sequence and still acts (as on a VT100)
            if self._esc:
                self._esc += ch
                if (
                    (len(self._esc) == 2 and ch not in "[O")
                    or (len(self._esc) > 2 and "@" <= ch <= "~")
                    or len(self._esc) > 16
                ):
                    self._esc = ""
                continue
            if ch == ESC:
                self._esc = ch
            elif ch in "\r\n":
                if ch == "\n" and after_cr:
                    continue  # CRLF is one line end
                self._after_cr = ch == "\r"
                out.append("\r\n")
                event = self._end_line()
            elif ch in (BS, DEL):
                if self._buf and not self._overlong:
                    self._buf.pop()
                    if self.echo:
                        out.append("\b \b")
            elif ch == CTRL_U:
                if self.echo and not self._overlong:
                    out.append("\b \b" * len(self._buf))
                self._buf, self._overlong = [], False
            elif ch == CTRL_C:
                self._buf, self._overlong = [], False
                out.append("^C\r\n")
                event = Cancelled()
            elif not ch.isprintable():
                continue  # other control characters, and unprintable code points
            elif self._overlong:
                continue
            elif len(self._buf) >= self.max_line:
                self._overlong = True
            else:
                self._buf.append(ch)
                if self.echo:
                    out.append(ch)
        self._pending = s[i:]
        return "".join(out).encode("utf-8"), event
