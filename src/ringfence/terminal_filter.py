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
tab, form feed and bell; the CSI sequences of a known list (cursor, erase, colours, modes,
status and device reports, which answer with numbers only: not window operations, of which
only the title stack passes, nor media copy or the screen checksum); the short ESC forms of
a known list (charsets, keypad, save and restore cursor: not leaving UTF-8); and OSC for
window titles (0, 1, 2), colours (4, 10-12, 104, 110-112), web hyperlinks (8) and prompt
marks (133), when printable and at most ``STRING_MAX`` bytes. Every DCS, APC, PM and SOS string,
every other OSC, every other C0 control and the C1 controls (8-bit forms in UTF-8) are
dropped.

The output is read as UTF-8, as the terminal is assumed to read it (a byte that is no part of
a character passes as it is, unless it is 0x80-0x9F, which a terminal not in UTF-8 mode takes
for a C1 control: dropped; a terminal set to an 8-bit character set would also take such a
byte inside a character, U+201D say, for one). The state is kept across reads: a character
or sequence split between two reads is held (at most ``STRING_MAX`` bytes) and a dropped
string is skipped to its end without being held.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping

STRING_MAX = 4096  # an allowed OSC longer than this is dropped (and never held longer)
HOLD_MAX = 256  # an unfinished CSI or short ESC form longer than this is dropped

# The CSI sequences that pass, by intermediate bytes and final byte (parameters, with the
# private markers ``? > < =``, are free). Without intermediates: cursor moves, erase, insert
# and delete, scrolling, tab stops, colours (SGR), modes, device and status reports (their
# answers are numbers), the scroll region, cursor save and restore, keyboard protocol; with
# them: cursor style, soft reset, conformance level, character protection, mode reports,
# the rectangle edits and the SGR and colour stacks. Not passed, among others: window
# operations (``t``, title and size reports; only the title stack passes, _TITLE_STACK),
# media copy (``i``, printer passthrough), the screen checksum (``* y``, which reads the
# screen back cell by cell) and anything a terminal may add tomorrow.
_CSI_FINALS: dict[str, str] = {
    "": "@ABCDEFGHIJKLMPSTWXZ`abcdefghjklmnqrsux",
    " ": "@Aq",
    "!": "p",
    '"': "pq",
    "$": "prtvxz{",
    "#": "PQpq{}",
    "'": "}~",
}
# The short ESC forms that pass, the same way. Not passed: ``ESC % @`` (leave UTF-8: the
# terminal would then take the byte 0x9D inside a character such as U+201D for an OSC),
# the 8-bit controls' switches (``ESC SP``), and anything else.
_ESC_FINALS: dict[str, str] = {
    "": "6789=>DEHMNOZ\\cno|}~",
    "#": "34568",
    "%": "G",
    **dict.fromkeys("()*+-./", "".join(map(chr, range(0x30, 0x7F)))),
}
# A run of what passes as it is: text but ESC, the C0 controls other than bell, backspace,
# tab, the line feeds and carriage return, the C1 controls (U+0080-U+009F) and the bytes
# 0x80-0x9F that are no part of a character (decoded to U+DC80-U+DC9F); and the commonest
# CSI sequences (no intermediates). DEL passes (a terminal ignores it).
_TEXT = "[^\\x00-\\x06\\x0e-\\x1f\\x80-\\x9f\\udc80-\\udc9f]+"
# CSI sequences that change how the terminal reads keys or the mouse, or what it shows, for
# longer than the command runs (modes, the kitty keyboard protocol, modifyOtherKeys, keypad)
# are followed (_Modes), not taken in a run.
_RUN_FINALS = re.escape(_CSI_FINALS[""].replace("h", "").replace("l", "").replace("u", ""))
_RUN = re.compile(f"(?:{_TEXT}|\\x1b\\[[0-9;:]*[{_RUN_FINALS}])*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udc9f]")  # what an OSC may not hold
_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")
_CSI_PREFIX = re.compile(r"\x1b\[[0-?]*[ -/]*\Z")
_SHORT = re.compile(r"\x1b([ -/]*)([0-~])")  # nF, Fp, Fe and Fs forms (the long ones aside)
_SHORT_PREFIX = re.compile(r"\x1b[ -/]*\Z")
_STRING_INTRO = frozenset("]PX^_")  # OSC, DCS, SOS, PM, APC
_OSC_PASSED = frozenset({0, 1, 2, 4, 8, 10, 11, 12, 104, 110, 111, 112, 133})
_OSC_NUMBER = re.compile(r"([0-9]{1,4})(?:;|\Z)")
# A string ends at ST (ESC \) or BEL; CAN and SUB abort it, and so does ESC with anything
# else (the terminal starts a new sequence there: so do we).
_STRING_END = re.compile("[\x07\x18\x1a\x1b]")
_TITLE_STACK = re.compile(r"2[23](?:;[0-9]*)*")


class TerminalFilter:
    """One output stream's filter: ``feed`` each read, ``end`` when the stream ends."""

    def __init__(self, utf8: bool = True) -> None:
        """``utf8``: the terminal reads UTF-8 (see :func:`reads_utf8`). Else every byte is a
        character of its own, and 0x80-0x9F are dropped wherever they are: a terminal that
        reads an 8-bit character set takes them for C1 controls, also inside what would be
        a UTF-8 character (U+045D ends in 0x9D, an OSC there)."""
        self._codec = "utf-8" if utf8 else "latin-1"
        self._decoder = codecs.getincrementaldecoder(self._codec)("surrogateescape")
        self._held = ""  # an unfinished sequence from the last read
        self._skipping = False  # inside a dropped string: skip to its end
        self._osc: list[str] | None = None  # inside an allowed-so-far OSC: its payload
        self._osc_len = 0
        self._modes = _Modes()

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
        """What puts back the terminal modes the command changed and left changed (mouse
        reports, focus reports, bracketed paste, cursor keys, keyboard lock, the kitty
        keyboard protocol, modifyOtherKeys, the keypad, the alternate screen, a hidden
        cursor), which would otherwise go on shaping what your shell gets from the
        terminal after the command. Empty when it changed none."""
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
            if _csi_passed(m.group(1), m.group(2), m.group(3)):
                out.append(m.group(0))
                self._modes.csi(m.group(1), m.group(2), m.group(3))
            return m.end()
        m = _SHORT.match(text, i)
        if m is None:
            return self._unfinished(text, i, _SHORT_PREFIX)
        if m.group(2) in _ESC_FINALS.get(m.group(1), ""):
            out.append(m.group(0))
            self._modes.esc(m.group(1), m.group(2))
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
            if _osc_passed(payload):
                out.append("\x1b]" + payload + text[end:after])
        self._osc, self._skipping = None, False
        return after


# Private modes put back (with their defaults) when a command changed modes: cursor keys,
# reverse video, autowrap, mouse reports (X10, normal, button, any, UTF-8, SGR,
# urxvt, pixels), blinking and shown cursor, focus reports, alternate scroll and screens,
# bracketed paste, synchronized output, colour-scheme reports, Windows Terminal's
# win32-input-mode. ANSI modes: keyboard lock (KAM), insert (IRM), new line (LNM).
_PRIVATE_DEFAULTS = {
    1: "l", 5: "l", 7: "h", 9: "l", 25: "h", 66: "l",
    1000: "l", 1002: "l", 1003: "l", 1004: "l", 1005: "l", 1006: "l", 1007: "l",
    1015: "l", 1016: "l", 2004: "l", 2026: "l", 2031: "l", 9001: "l",
}  # fmt: skip
_ANSI_DEFAULTS = {2: "l", 4: "l", 20: "l"}
_ALT_SCREENS = (47, 1047, 1049)


class _Modes:
    """Which lasting terminal modes a command's passed sequences changed."""

    def __init__(self) -> None:
        self.touched = False  # set or reset any mode
        self.alt: int | None = None  # the alternate screen it is on at the end, if any
        self.kitty = False  # the kitty keyboard protocol's flags
        self.modkeys: set[str] = set()  # modifyOtherKeys and its kin (XTMODKEYS)
        self.keypad = False  # application keypad (DECKPAM)

    def csi(self, params: str, intermediates: str, final: str) -> None:
        if intermediates:
            return
        if final in "hl":
            self.touched = True
            if params.startswith("?"):
                for mode in _numbers(params[1:]):
                    if mode in _ALT_SCREENS:
                        self.alt = mode if final == "h" else None
        elif final == "u" and params[:1] in (">", "="):
            self.kitty = True
        elif final in "mn" and params.startswith(">"):
            which = _numbers(params[1:])
            self.modkeys.add(str(which[0]) if which else "0")

    def esc(self, intermediates: str, final: str) -> None:
        if not intermediates and final in "=>":
            self.keypad = final == "="

    def restore(self) -> str:
        out = []
        if self.alt is not None:
            out.append(f"\x1b[?{self.alt}l")
        if self.touched:
            out += [f"\x1b[?{m}{v}" for m, v in _PRIVATE_DEFAULTS.items()]
            out += [f"\x1b[{m}{v}" for m, v in _ANSI_DEFAULTS.items()]
        if self.kitty:
            out.append("\x1b[<99u")
        out += [f"\x1b[>{k}m" for k in sorted(self.modkeys)]
        if self.keypad:
            out.append("\x1b>")
        return "".join(out)


def _numbers(params: str) -> list[int]:
    return [int(p) for p in params.split(";") if p.isdigit()]


def _csi_passed(params: str, intermediates: str, final: str) -> bool:
    """Whether a CSI sequence is one that passes (_CSI_FINALS, and the title stack)."""
    if final == "t":
        return not intermediates and _TITLE_STACK.fullmatch(params) is not None
    return final in _CSI_FINALS.get(intermediates, "")


def _osc_passed(payload: str) -> bool:
    m = _OSC_NUMBER.match(payload)
    if m is None or int(m.group(1)) not in _OSC_PASSED:
        return False
    if _CONTROL.search(payload) is not None:  # printable only
        return False
    if m.group(1) == "8":  # a hyperlink: to the web only (a click opens it with your rights;
        # file:// could open what the command wrote, a custom scheme any handler)
        uri = payload.split(";", 2)[2] if payload.count(";") >= 2 else ""
        return uri == "" or uri.lower().startswith(("http://", "https://"))
    return True


def reads_utf8(env: Mapping[str, str]) -> bool:
    """Whether the user's terminal is taken to read UTF-8: their locale says so (``LC_ALL``,
    else ``LC_CTYPE``, else ``LANG``). Python itself may have set ``LC_CTYPE=C.UTF-8`` for
    the C locale (PEP 538): that one is not taken as the user's word. No locale, or the C
    locale, is not UTF-8 (GNU screen started there reads 8-bit controls)."""
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(name, "")
        if not value or (name == "LC_CTYPE" and value in _COERCED):
            continue
        return value.lower().replace("-", "").split("@")[0].endswith("utf8")
    return False


_COERCED = ("C.UTF-8", "C.utf8", "UTF-8")
