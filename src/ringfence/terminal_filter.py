"""What a command run with ``-t`` (or ``ringfence shell``) may say to your terminal.

The relay copies the command's terminal output to yours, and your terminal emulator acts on
what it reads there with your rights, outside every boundary: a control sequence can set
your clipboard (OSC 52, for you to paste into a shell later) or read it back to the
command, have the terminal save a file (iTerm2's OSC 1337) or read one and show it (kitty's
graphics), pass a sequence through tmux to the terminal around it (a DCS string), report a
window title the command set as if you had typed it (``CSI 21 t``), or answer ENQ with its
answerback text. Those answers are typed into the command's input while it runs, and into
your shell once it has ended.

So the relay passes only what is known to be safe, an allowlist, and drops every other
sequence whole (its introducer and its payload, so nothing of it reaches the terminal as a
sequence or as text): printable text; tab, newline, carriage return, backspace, vertical
tab, form feed and bell; and the CSI sequences, short ESC forms and OSC sequences (titles,
colours, web hyperlinks, prompt marks; printable, at most ``STRING_MAX`` bytes) of the lists
in terminal_modes.py, which also follows what they change for longer than the command runs
(:meth:`TerminalFilter.restore` puts it back). Every DCS, APC, PM and SOS string, every
other sequence, every other C0 control and the C1 controls are dropped.

The output is read as UTF-8 when the terminal is taken to read it (``reads_utf8``): a byte
that is no part of a character passes as it is, unless it is 0x80-0x9F, which a terminal
not in UTF-8 mode takes for a C1 control. Otherwise every byte is a character, and every
0x80-0x9F byte is dropped (one inside what would be a UTF-8 character too: U+045D ends in
0x9D, an OSC there). The state is kept across reads: a character or sequence split between
two reads is held (at most ``STRING_MAX`` bytes) and a dropped string is skipped to its end
without being held.
"""

from __future__ import annotations

import codecs
import re

from ringfence.terminal_modes import CSI_ALLOWED, OSC_ALLOWED, Modes

STRING_MAX = 4096  # an allowed OSC longer than this is dropped (and never held longer)
HOLD_MAX = 256  # an unfinished CSI or short ESC form longer than this is dropped

# A run of what passes as it is: text but ESC, the C0 controls other than bell, backspace,
# tab, the line feeds and carriage return, the C1 controls (U+0080-U+009F) and the bytes
# 0x80-0x9F that are no part of a character (decoded to U+DC80-U+DC9F); and the commonest
# CSI sequences (no intermediates). DEL passes (a terminal ignores it).
_TEXT = "[^\\x00-\\x06\\x0e-\\x1f\\x80-\\x9f\\udc80-\\udc9f]+"
# CSI sequences that change how the terminal reads keys or the mouse, or what it shows, for
# longer than the command runs (modes, the scroll region, the kitty keyboard protocol,
# modifyOtherKeys) are decided and followed one by one (terminal_modes.Modes), not in a run.
_RUN_FINALS = re.escape(CSI_ALLOWED[("", "")].translate(str.maketrans("", "", "hlrtu")))
_RUN = re.compile(f"(?:{_TEXT}|\\x1b\\[[0-9;:]*[{_RUN_FINALS}])*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udc9f]")  # what an OSC may not hold
_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")
_CSI_PREFIX = re.compile(r"\x1b\[[0-?]*[ -/]*\Z")
_SHORT = re.compile(r"\x1b([ -/]*)([0-~])")  # nF, Fp, Fe and Fs forms (the long ones aside)
_SHORT_PREFIX = re.compile(r"\x1b[ -/]*\Z")
_STRING_INTRO = frozenset("]PX^_")  # OSC, DCS, SOS, PM, APC
_OSC_NUMBER = re.compile(r"([0-9]{1,4})(?:;|\Z)")
# A string ends at ST (ESC \) or BEL; CAN and SUB abort it, and so does ESC with anything
# else (the terminal starts a new sequence there: so do we).
_STRING_END = re.compile("[\x07\x18\x1a\x1b]")


class TerminalFilter:
    """One output stream's filter: ``feed`` each read, ``end`` when the stream ends."""

    def __init__(self, utf8: bool = True) -> None:
        """``utf8``: the terminal reads UTF-8 (``terminal_modes.reads_utf8``). Else every byte is a
        character of its own, and 0x80-0x9F are dropped wherever they are: a terminal that
        reads an 8-bit character set takes them for C1 controls, also inside what would be
        a UTF-8 character (U+045D ends in 0x9D, an OSC there)."""
        self._codec = "utf-8" if utf8 else "latin-1"
        self._decoder = codecs.getincrementaldecoder(self._codec)("surrogateescape")
        self._held = ""  # an unfinished sequence from the last read
        self._skipping = False  # inside a dropped string: skip to its end
        self._osc: list[str] | None = None  # inside an allowed-so-far OSC: its payload
        self._osc_len = 0
        self._modes = Modes()

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` (after what the last read left unfinished) may be shown."""
        return self._filter(self._decoder.decode(data))

    def end(self) -> bytes:
        """The stream ended: what is left of a character passes as bytes (dropped if it
        could be a C1 control); an unfinished sequence is dropped, never shown."""
        rest = self._decoder.decode(b"", final=True)
        self._held = ""
        out = b"" if self._skipping or self._osc is not None else self._filter(rest)
        self._skipping, self._osc, self._held = False, None, ""
        return out

    def restore(self) -> bytes:
        """What puts back what the command changed for longer than it runs (modes, mouse
        and keyboard protocols, the alternate screen, the scroll region, the charset,
        colours: terminal_modes.Modes), which would otherwise go on shaping what your shell
        gets from the terminal and shows. Empty when it changed none."""
        return self._modes.restore().encode("ascii")

    def _filter(self, text: str) -> bytes:
        text, self._held = self._held + text, ""
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if self._skipping or self._osc is not None:
                i = self._in_string(text, i, out)
                continue
            m = _RUN.match(text, i)  # text and the commonest sequences, in one go
            assert m is not None  # it matches the empty string
            if not self._modes.sgr and "\x1b" in m.group(0):
                self._modes.sgr = True  # colours or attributes (conceal) may last
            out.append(m.group(0))
            i = m.end()
            if i == n:
                break
            char = text[i]
            if char == "\x1b":
                i = self._escape(text, i, out)
            else:  # any other control (a C1 one, a lone 0x80-0x9F byte) is dropped
                i += 1
        return "".join(out).encode(self._codec, "surrogateescape")

    def _escape(self, text: str, i: int, out: list[str]) -> int:
        """Handle the sequence starting with the ESC at ``i``; the index after it (the end
        of the text when it is unfinished: then it is held)."""
        if i + 1 == len(text):
            self._held = text[i:]
            return len(text)
        intro = text[i + 1]
        if intro in _STRING_INTRO:
            if intro == "]":
                self._osc, self._osc_len = [], 0
            else:
                self._skipping = True
            return i + 2
        if intro == "[":
            m = _CSI.match(text, i)
            if m is None:
                return self._unfinished(text, i, _CSI_PREFIX)
            passed = self._modes.csi(m.group(1), m.group(2), m.group(3))
            if passed is not None:
                out.append(passed)
            return m.end()
        m = _SHORT.match(text, i)
        if m is None:
            return self._unfinished(text, i, _SHORT_PREFIX)
        if self._modes.esc(m.group(1), m.group(2)):
            out.append(m.group(0))
        return m.end()

    def _unfinished(self, text: str, i: int, prefix: re.Pattern[str]) -> int:
        """A sequence that has not ended: held if the text ran out inside it (and it is not
        too long: then it is dropped), else it was broken by a character that cannot be in
        it: its ESC is dropped and what follows is read again as text or a new sequence."""
        if prefix.match(text, i) is None:
            return i + 1
        if len(text) - i <= HOLD_MAX:
            self._held = text[i:]
        return len(text)

    def _in_string(self, text: str, i: int, out: list[str]) -> int:
        """Inside an OSC or a dropped string: up to its end (or the text's)."""
        m = _STRING_END.search(text, i)
        end = len(text) if m is None else m.start()
        if self._osc is not None:
            self._osc.append(text[i:end])
            self._osc_len += end - i
            if self._osc_len > STRING_MAX:
                self._osc, self._skipping = None, True  # too long: dropped, not held
        if m is None:
            return len(text)
        stop = text[end]
        if stop == "\x1b":
            if end + 1 == len(text):  # ST or a new sequence: the next read says
                self._held = text[end:]
                return len(text)
            if text[end + 1] != "\\":  # aborted: the ESC starts a new sequence
                self._osc, self._skipping = None, False
                return end
            after = end + 2
        else:
            after = end + 1
        if self._osc is not None and stop in "\x07\x1b":
            payload = "".join(self._osc)
            number = _osc_passed(payload)
            if number is not None:
                out.append("\x1b]" + payload + text[end:after])
                self._modes.osc(number, payload)
        self._osc, self._skipping = None, False
        return after


def _osc_passed(payload: str) -> int | None:
    """The OSC's number if it passes (terminal_modes.OSC_ALLOWED, printable), else None."""
    m = _OSC_NUMBER.match(payload)
    if m is None or int(m.group(1)) not in OSC_ALLOWED:
        return None
    if _CONTROL.search(payload) is not None:  # printable only
        return None
    if m.group(1) == "8":  # a hyperlink: to the web only (a click opens it with your rights;
        # file:// could open what the command wrote, a custom scheme any handler)
        uri = payload.split(";", 2)[2] if payload.count(";") >= 2 else ""
        if not (uri == "" or uri.lower().startswith(("http://", "https://"))):
            return None
    return int(m.group(1))
