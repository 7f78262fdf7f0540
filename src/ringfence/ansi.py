"""Terminal output as plain text: what a model reads, without the escape sequences.

A command run with a terminal (or one that colours its output anyway) prints control
sequences: colours, cursor moves, window titles, hyperlinks, ``\\r`` progress bars. A model
reads them as noise at best; at worst an OSC sequence smuggles text the person never sees in
their terminal. :class:`Cleaner` removes them from a stream read in pieces (a sequence split
across two reads is held back until it is complete), keeps what a terminal would finally show
on each line for ``\\r`` and backspace, and drops every other control character but newline
and tab.
"""

from __future__ import annotations

import re

# Complete escape sequences (ECMA-48): CSI, OSC (ended by BEL or ST), DCS/SOS/PM/APC strings
# (ended by ST), the short ESC forms (charset selection, keypad modes, save/restore cursor;
# every final byte but the introducers of the longer forms), and the 8-bit CSI and OSC.
_SEQUENCE = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)
    | \x1b[PX^_][^\x1b]*\x1b\\
    | \x1b[ -/]*[0-OQ-WYZ\\`-~]
    | \x9b[0-?]*[ -/]*[@-~]
    | \x9d[^\x07\x9c]*(?:\x07|\x9c)
    """,
    re.VERBOSE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Text without any control character but newline and tab: every sequence starts with one
# (ESC, the 8-bit CSI/OSC), and so do CR and backspace, so :func:`clean` leaves it as it is.
_PLAIN = re.compile(r"[^\x00-\x08\x0b-\x1f\x7f-\x9f]*")
_INTRODUCERS = "\x1b\x9b\x9d"
HOLD_LIMIT = 4096  # an unfinished sequence longer than this is not one: it is dropped


class Cleaner:
    """Strips one stream's escape sequences, piece by piece."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str, *, final: bool = False) -> str:
        """The plain text of ``text`` (after whatever an earlier piece left unfinished). An
        unfinished sequence or line ending at the end is held for the next piece unless
        ``final``."""
        text, self._held = self._held + text, ""
        if not final:
            text, self._held = _split_unfinished(text)
        return clean(text)

    def take_held(self) -> str:
        """What is held back, unprocessed (a caller switching to raw output gets it)."""
        held, self._held = self._held, ""
        return held


def strip(text: str) -> str:
    """``text`` without escape sequences and control characters (see :class:`Cleaner`)."""
    return clean(text)


def clean(text: str) -> str:
    if _PLAIN.fullmatch(text):  # most output: nothing to strip, one scan instead of per line
        return text
    return _clean_lines(text)


def _clean_lines(text: str) -> str:
    text = _SEQUENCE.sub("", text).replace("\r\n", "\n")
    lines = []
    for each in text.split("\n"):
        line = each
        if "\r" in line:  # a progress bar rewrote the line: keep what was shown last
            line = next((part for part in reversed(line.split("\r")) if part), "")
        if "\b" in line:
            line = _backspaced(line)
        lines.append(_CONTROL.sub("", line))
    return "\n".join(lines)


def _backspaced(line: str) -> str:
    out: list[str] = []
    for c in line:
        if c == "\b":
            if out:
                out.pop()
        else:
            out.append(c)
    return "".join(out)


def _split_unfinished(text: str) -> tuple[str, str]:
    """``text`` cut before a sequence or ``\\r`` it ends in the middle of."""
    if text.endswith("\r"):
        return text[:-1], "\r"
    i = max(0, len(text) - HOLD_LIMIT)
    while True:
        found = [j for j in (text.find(c, i) for c in _INTRODUCERS) if j >= 0]
        if not found:
            return text, ""
        m = _SEQUENCE.match(text, min(found))
        if m is None:
            return text[: min(found)], text[min(found) :]
        i = m.end()
