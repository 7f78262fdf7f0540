"""Which control sequences the terminal filter passes, and what it puts back at the end.

terminal_filter.py parses the command's output; this module decides, by allowlist, which
complete CSI, short ESC and OSC sequences reach the user's terminal (possibly trimmed: a
mode sequence keeps only the modes it may set), and follows what they change for longer
than the command runs, so that :meth:`Modes.restore` can put it back. A terminal left with
mouse reports, a keyboard protocol, the alternate screen, a scroll region or another
charset goes on shaping what the user's shell gets and shows after the command.

Also :func:`reads_utf8`: whether the user's terminal is taken to read UTF-8.
"""

from __future__ import annotations

import locale
import os
import re
import sys
from collections.abc import Mapping

# The CSI sequences that pass, by (private marker, intermediate bytes) and final byte.
# Without either: cursor moves, erase, insert and delete, scrolling, tab stops, colours
# (SGR), modes (those of MODES only), device and status reports (answered with numbers),
# the scroll region, cursor save and restore. ``?``: modes, private status reports,
# selective erase, the kitty keyboard query. ``>``: DA2, modifyOtherKeys (resources 0-4),
# XTVERSION, the kitty keyboard stack; ``<`` and ``=`` the same stack (and DA3). With
# intermediates: cursor style, soft reset, character protection, mode reports, the
# rectangle edits, the SGR and colour stacks. Not passed, among others: window operations
# (``t``: title and size reports; only the title stack passes), media copy (``i``: printer
# passthrough), the screen checksum (``* y``: reads the screen back), XTSAVE/XTRESTORE
# (``? s``/``? r``: would bring modes back behind restore), the conformance level, locator
# reports, and anything a terminal may add tomorrow.
CSI_ALLOWED: dict[tuple[str, str], str] = {
    ("", ""): "@ABCDEFGHIJKLMPSTWXZ`abcdefghjklmnqrsux",
    ("?", ""): "hlnJKu",
    (">", ""): "cmnqu",
    ("<", ""): "u",
    ("=", ""): "cu",
    ("", " "): "@Aq",
    ("", "!"): "p",
    ("", '"'): "q",
    ("", "$"): "prtvxz{",
    ("?", "$"): "p",
    ("", "#"): "PQpq{}",
    ("", "'"): "}~",
}
# The modes a command may set or reset, with their defaults (what restore puts back).
# Private: cursor keys, reverse video, autowrap, the shown cursor, keypad mode, mouse reports
# (normal, button, any motion, UTF-8, SGR, urxvt, pixels), focus reports, bracketed paste,
# synchronized output. Blinking cursor and the cursor save (1048) pass without a default;
# the alternate screens are followed on their own. ANSI: insert (IRM), new line (LNM). Not
# passed, among others: VT52 (``? 2 l``: restore could not be read), 132 columns, origin,
# margins, keyboard lock (KAM), send/receive (SRM: echoes what you type, a password too).
PRIVATE_MODES = {
    1: "l", 5: "l", 7: "h", 25: "h", 66: "l",
    1000: "l", 1002: "l", 1003: "l", 1005: "l", 1006: "l", 1015: "l", 1016: "l",
    1004: "l", 2004: "l", 2026: "l",
}  # fmt: skip
PRIVATE_FREE = frozenset({12, 1048})
ALT_SCREENS = (1049, 1047, 47)  # in the order they are left
ANSI_MODES = {4: "l", 20: "l"}
MODKEYS = frozenset(range(5))  # XTMODKEYS resources
_PARAMS = re.compile(r"[0-9]{0,6}(?:[;:][0-9]{0,6})*")  # numbers of at most 6 digits
_TITLE_STACK = re.compile(r"2[23](?:;[0-9]{0,6})*")

# The short ESC forms that pass: save and restore cursor, keypad modes, index, next line,
# tab set, reverse index, single shifts, DECID, a lone ST, full reset, the DEC line forms,
# UTF-8 (``ESC % G``) and G0/G1 charsets (followed). Not passed: leaving UTF-8 (``ESC % @``:
# the terminal would then take 0x9D inside a character for an OSC), the 8-bit controls'
# switches (``ESC SP``), locking shifts (``ESC n``, ``o``, ``|``, ``}``, ``~``), other
# charsets, and GNU screen's strings (``ESC k``, ``ESC !``, ``ESC "``).
ESC_ALLOWED: dict[str, str] = {
    "": "6789=>DEHMNOZ\\c",
    "#": "34568",
    "%": "G",
    "(": "0AB",
    ")": "0AB",
}

OSC_ALLOWED = frozenset({0, 1, 2, 4, 8, 10, 11, 12, 104, 110, 111, 112, 133})
_OSC_RESETS = {4: 104, 10: 110, 11: 111, 12: 112}  # a colour set: what puts it back


class Modes:
    """What a command's passed sequences changed that lasts: put back by :meth:`restore`."""

    def __init__(self) -> None:
        self.private: set[int] = set()  # private modes set or reset
        self.ansi: set[int] = set()
        self.alt: set[int] = set()  # alternate screens entered
        self.kitty_stack = 0  # entries pushed onto the kitty keyboard stack, not popped
        self.kitty_flags = False  # set the kitty keyboard flags in place
        self.modkeys: set[int] = set()
        self.keypad = False  # application keypad (DECKPAM)
        self.region = False  # a scroll region
        self.cursor_style = False
        self.charset = False  # G0 is not ASCII
        self.colours: set[int] = set()  # OSC colour numbers set
        self.sgr = False  # colours or attributes (conceal too) may be set
        self.link = False  # a hyperlink is open

    def csi(self, params: str, intermediates: str, final: str) -> str | None:
        """The CSI sequence to pass for these parts (a mode sequence trimmed to the modes
        it may set), or None to drop it."""
        marker = params[:1] if params[:1] in ("?", ">", "<", "=") else ""
        numbers = params[len(marker) :]
        if _PARAMS.fullmatch(numbers) is None:
            return None  # a marker inside, or a number too long to be one
        if final == "t":
            ok = not marker and not intermediates and _TITLE_STACK.fullmatch(numbers)
            return f"\x1b[{params}t" if ok else None
        if final not in CSI_ALLOWED.get((marker, intermediates), ""):
            return None
        if final in "hl" and not intermediates:
            return self._modes(marker, numbers, final)
        if final in "mn" and marker == ">" and not set(_numbers(numbers)[:1]) <= MODKEYS:
            return None
        self._follow(marker, numbers, intermediates, final)
        if final == "u" and not marker:
            self.charset = True  # a restored cursor brings its charset back
        return f"\x1b[{params}{intermediates}{final}"

    def _modes(self, marker: str, numbers: str, final: str) -> str | None:
        kept = []
        for mode in _numbers(numbers):
            if marker == "?" and mode in ALT_SCREENS:
                if final == "h":
                    self.alt.add(mode)
            elif marker == "?" and mode in PRIVATE_MODES:
                self.private.add(mode)
            elif marker == "" and mode in ANSI_MODES:
                self.ansi.add(mode)
            elif not (marker == "?" and mode in PRIVATE_FREE):
                continue
            if marker == "?" and mode == 1048 and final == "l":
                self.charset = True  # a restored cursor brings its charset back
            kept.append(str(mode))
        return f"\x1b[{marker}{';'.join(kept)}{final}" if kept else None

    def _follow(self, marker: str, numbers: str, intermediates: str, final: str) -> None:
        if final == "u" and marker == ">":
            self.kitty_stack += 1
        elif final == "u" and marker == "<":
            which = _numbers(numbers)
            self.kitty_stack = max(0, self.kitty_stack - (which[0] if which else 1))
        elif final == "u" and marker == "=":
            self.kitty_flags = True
        elif final in "mn" and marker == ">":
            which = _numbers(numbers)
            self.modkeys.add(which[0] if which else 0)
        elif final == "r" and not marker and not intermediates:
            self.region = True
        elif final == "q" and intermediates == " ":
            self.cursor_style = True

    def esc(self, intermediates: str, final: str) -> bool:
        """Whether a short ESC form passes (followed when it lasts)."""
        if final not in ESC_ALLOWED.get(intermediates, ""):
            return False
        if not intermediates and final in "=>":
            self.keypad = final == "="
        elif intermediates in ("(", ")") or final == "8":  # a charset, or a restored one
            self.charset = True
        return True

    def osc(self, number: int, payload: str) -> None:
        specs = payload.split(";")[1:]
        if number == 4 and any(s != "?" for s in specs[1::2]):  # index;spec pairs
            self.colours.add(4)
        elif number in (10, 11, 12) and any(s != "?" for s in specs):  # a query sets nothing
            self.colours.update((10, 11, 12))  # (one sequence may go on to the next numbers)
        elif number == 8:
            self.link = payload.count(";") >= 2 and payload.split(";", 2)[2] != ""

    def restore(self) -> str:
        """What puts back every lasting change followed; empty when there was none."""
        out = [f"\x1b[?{m}l" for m in ALT_SCREENS if m in self.alt]
        out += [f"\x1b[?{m}{PRIVATE_MODES[m]}" for m in sorted(self.private)]
        out += [f"\x1b[{m}{ANSI_MODES[m]}" for m in sorted(self.ansi)]
        out += [f"\x1b[>{k}m" for k in sorted(self.modkeys)]
        out += [f"\x1b]{_OSC_RESETS[n]}\x07" for n in sorted(self.colours)]
        if self.kitty_stack:  # exactly what the command pushed: the caller's stay
            out.append(f"\x1b[<{self.kitty_stack}u")
        out += [reset for flag, reset in _FLAG_RESETS if getattr(self, flag)]
        if self.sgr or out:
            out.append("\x1b[0m")
        return "".join(out)


# What puts back each lasting change a flag of Modes stands for.
_FLAG_RESETS = (
    ("kitty_flags", "\x1b[=0;1u"),
    ("keypad", "\x1b>"),
    ("region", "\x1b7\x1b[r\x1b8"),  # the whole screen, the cursor where it was
    ("cursor_style", "\x1b[0 q"),
    ("charset", "\x1b(B\x1b)B"),
    ("link", "\x1b]8;;\x1b\\"),
)


def _numbers(params: str) -> list[int]:
    """The numbers of checked parameters (``_PARAMS``: at most 6 digits each)."""
    return [int(p) for p in re.split("[;:]", params) if p]


def reads_utf8(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the user's terminal is taken to read UTF-8. Only when three say so: the
    locale's names (``LC_ALL``, else ``LC_CTYPE``, else ``LANG``; an ``LC_CTYPE`` that
    Python's PEP 538 coercion may have set is not the user's word), Python did not turn on
    UTF-8 mode by itself (it does for the C locale, also one it fell back to: a locale name
    that is not installed; when ``PYTHONUTF8`` asks for it, a ``C.UTF-8`` ``LC_CTYPE`` may
    be Python's and is not trusted), and the C library's answer (``nl_langinfo``). A
    terminal and the programs around it (GNU screen) follow the C library, not the names."""
    if not locale_names_utf8(env):
        return False
    asked = "PYTHONUTF8" in env or "utf8" in getattr(sys, "_xoptions", {})
    if sys.flags.utf8_mode and not asked:
        return False
    if asked and not env.get("LC_ALL") and env.get("LC_CTYPE") in _COERCED:
        return False  # Python may have coerced it, and then nl_langinfo says UTF-8 too
    try:
        codeset = locale.nl_langinfo(locale.CODESET)
    except (AttributeError, ValueError):
        return False
    return codeset.lower().replace("-", "") == "utf8"


def locale_names_utf8(env: Mapping[str, str]) -> bool:
    """Whether the locale's names say UTF-8 (``LC_ALL``, else ``LC_CTYPE``, else ``LANG``)."""
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(name, "")
        if not value or (name == "LC_CTYPE" and value in _COERCED):
            continue
        return value.lower().replace("-", "").split("@")[0].endswith("utf8")
    return False


_COERCED = ("C.UTF-8", "C.utf8", "UTF-8")
