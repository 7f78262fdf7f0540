"""What ``ringfence run -t`` lets a command say to your terminal (terminal_filter.py): what is
safe to show passes unchanged; what the terminal emulator would act on with your rights (the
clipboard, files, passthrough to an outer terminal, answers typed back in) is dropped whole,
however the output is split between reads."""

from __future__ import annotations

import os

import pytest

from ringfence.terminal_filter import HOLD_MAX, STRING_MAX, TerminalFilter
from ringfence.terminal_modes import locale_names_utf8

ESC = b"\x1b"
ST = ESC + b"\\"

PASSED = [
    b"plain text, caf\xc3\xa9, \xe2\x9c\x93 and \xf0\x9f\x90\x8d\r\n",
    b"tab\tbell\x07back\x08vt\x0bff\x0c del\x7f",
    ESC + b"[31mred" + ESC + b"[0m " + ESC + b"[1;38;5;208mbold",  # colours
    ESC + b"[2J" + ESC + b"[H" + ESC + b"[10;20H" + ESC + b"[K" + ESC + b"[3A",  # cursor
    ESC + b"[?1049h" + ESC + b"[?25l" + ESC + b"[?2004h" + ESC + b"[?1049l",  # modes
    ESC + b"[6n" + ESC + b"[c" + ESC + b"[>c" + ESC + b"[5 q",  # reports (numbers only)
    ESC + b"[22;0t" + ESC + b"[23;0t" + ESC + b"[22t",  # the title stack
    ESC + b"7" + ESC + b"8" + ESC + b"(B" + ESC + b"=" + ESC + b">" + ESC + b"M",  # short forms
    ESC + b"(0" + ESC + b")B" + ESC + b"#8" + ESC + b"%G" + ESC + b"c",
    ESC + b"[ q" + ESC + b"[!p" + ESC + b"[?2026$p" + ESC + b"[#{" + ESC + b"[#}",  # with bytes
    ESC + b"]0;my title\x07" + ESC + b"]2;other" + ST,  # titles
    ESC + b"]8;;https://example.org/\x07link" + ESC + b"]8;;\x07",  # a hyperlink
    ESC + b"]11;?\x07" + ESC + b"]4;1;rgb:ff/00/00" + ST + ESC + b"]104\x07",  # colours
    ESC + b"]133;A\x07",  # a prompt mark
]

DROPPED = {
    "clipboard set (OSC 52)": ESC + b"]52;c;ZWNobyBwd25lZA==\x07",
    "clipboard set, ended by ST": ESC + b"]52;c;ZWNobyBwd25lZA==" + ST,
    "clipboard read (OSC 52 ?)": ESC + b"]52;c;?\x07",
    "iTerm2 file download (OSC 1337)": ESC + b"]1337;File=name=eA==;inline=0:AAAA\x07",
    "kitty file transfer (OSC 5113)": ESC + b"]5113;ac=send;id=1\x07",
    "notification (OSC 9, 777)": ESC + b"]9;hi\x07" + ESC + b"]777;notify;a;b\x07",
    "font (OSC 50)": ESC + b"]50;?\x07",
    "cwd report (OSC 7)": ESC + b"]7;file:///etc\x07",
    "a title with a control inside": ESC + b"]0;a\nb\x07",
    "a title with a C1 control inside": ESC + b"]0;a\xc2\x9bb\x07",
    "tmux passthrough (DCS)": ESC + b"Ptmux;" + ESC + ESC + b"]52;c;QQ==\x07" + ST,
    "DECRQSS and XTGETTCAP (DCS)": ESC + b"P$qm" + ST + ESC + b"P+q544e" + ST,
    "sixel (DCS)": ESC + b"Pq#0;2;0;0;0#0!10~" + ST,
    "kitty graphics from a file (APC)": ESC + b"_Ga=T,t=f;L2V0Yy9wYXNzd2Q=" + ST,
    "PM and SOS strings": ESC + b"^private" + ST + ESC + b"Xstring" + ST,
    "title report (CSI 21 t)": ESC + b"[21t",
    "icon label report (CSI 20 t)": ESC + b"[20t",
    "window moves and sizes (CSI t)": ESC + b"[3;0;0t" + ESC + b"[8;1;1t" + ESC + b"[14t",
    "screen checksum (CSI * y, reads the screen)": ESC + b"[1;1;1;1;9;9*y" + ESC + b"[*y",
    "media copy (CSI i, printer passthrough)": ESC + b"[5i" + ESC + b"[?5i",
    "leaving UTF-8 (ESC % @) and 8-bit switches": ESC + b"%@" + ESC + b" G" + ESC + b" F",
    "ENQ (answerback) and other C0": b"\x05\x00\x01\x0e\x0f\x18\x1a",
    "C1 controls in UTF-8": b"\xc2\x9b" + b"\xc2\x9d" + b"\xc2\x90" + b"\xc2\x9c",
    "bare 8-bit C1 bytes": b"\x9b\x9d\x90\x9c\x85",
}


def shown(data: bytes, pieces: int = 1) -> bytes:
    f = TerminalFilter()
    step = max(1, len(data) // pieces)
    out = b"".join(f.feed(data[i : i + step]) for i in range(0, len(data), step))
    return out + f.end()


@pytest.mark.parametrize("data", PASSED)
def test_what_is_safe_to_show_passes_unchanged(data: bytes) -> None:
    assert shown(data) == data


@pytest.mark.parametrize("name", DROPPED)
def test_what_the_terminal_would_act_on_is_dropped_whole(name: str) -> None:
    data = b"before " + DROPPED[name] + b" after"
    got = shown(data)
    assert got.startswith(b"before ") and got.endswith(b" after"), got
    # nothing of a dropped string reaches the terminal as a sequence, nor as text
    assert b"\x1b]" not in got and b"\x1bP" not in got and b"\x1b_" not in got, got
    assert all(b not in got for b in (b"52;", b"1337", b"5113", b"\x05", b"\x9b", b"\x9d"))
    assert b"[21t" not in got and b"[20t" not in got and b"[14t" not in got, got
    assert b"*y" not in got and b"5i" not in got and b"%@" not in got and b" G" not in got


def test_every_split_gives_the_same_answer() -> None:
    data = b"".join(PASSED) + b"".join(DROPPED.values()) + b"end \xc3\xa9"
    whole = shown(data)
    for k in range(1, len(data)):
        f = TerminalFilter()
        assert f.feed(data[:k]) + f.feed(data[k:]) + f.end() == whole, k
    assert shown(data, pieces=len(data)) == whole  # one byte at a time


def test_a_string_is_aborted_as_the_terminal_aborts_it() -> None:
    # ESC other than ST ends a string and starts a new sequence; CAN and SUB abort it
    assert shown(ESC + b"]0;t" + ESC + b"[31mred") == ESC + b"[31mred"
    assert shown(ESC + b"]0;t\x18x" + ESC + b"Pq\x1ay") == b"xy"
    # a broken CSI loses its ESC (the rest is plain text): the terminal never sees it
    assert shown(ESC + b"[2\x081t") == b"[2\x081t"


def test_unfinished_and_overlong_sequences_are_never_shown_nor_held() -> None:
    f = TerminalFilter()
    assert f.feed(b"x" + ESC + b"]0;never ended") == b"x"
    assert f.end() == b""
    long_title = ESC + b"]0;" + b"t" * STRING_MAX + b"\x07after"
    assert shown(long_title, pieces=7) == b"after"
    f = TerminalFilter()  # a dropped string of any length is skipped, not kept
    out = f.feed(ESC + b"Pq")
    for _ in range(200):
        out += f.feed(b"#0;2;0;0;0" * 10_000)
        assert len(f._held) <= 1 and f._osc is None
    assert out + f.feed(ST + b"done") + f.end() == b"done"
    f = TerminalFilter()
    assert f.feed(ESC + b"[" + b"1;" * HOLD_MAX) == b""  # too long for a CSI: dropped
    assert len(f._held) == 0
    assert f.feed(b"m ok") + f.end() == b"m ok"


def test_hyperlinks_pass_to_the_web_only() -> None:
    web = ESC + b"]8;;https://example.org/\x07x" + ESC + b"]8;;\x07"
    assert shown(web) == web
    for uri in (b"file:///etc/passwd", b"vscode://open?x", b"ssh://host", b"javascript:x"):
        got = shown(ESC + b"]8;id=1;" + uri + b"\x07x" + ESC + b"]8;;\x07")
        assert got == b"x" + ESC + b"]8;;\x07", got


@pytest.mark.parametrize(
    ("env", "utf8"),
    [
        ({}, False),
        ({"LANG": "C"}, False),
        ({"LANG": "C", "LC_CTYPE": "C.UTF-8"}, False),  # Python's own coercion (PEP 538)
        ({"LANG": "en_US.ISO-8859-1"}, False),
        ({"LANG": "en_US.UTF-8"}, True),
        ({"LANG": "de_DE.utf8"}, True),
        ({"LANG": "C", "LC_ALL": "C.UTF-8"}, True),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "C"}, False),
        ({"LANG": "sr_RS.UTF-8@latin"}, True),
    ],
)
def test_the_locale_names_say_utf8_or_not(env: dict[str, str], utf8: bool) -> None:
    assert locale_names_utf8(env) is utf8


def test_an_8bit_terminal_gets_no_byte_it_would_take_for_a_c1_control() -> None:
    """A terminal that reads Latin-1 (GNU screen under LANG=C) takes 0x9D at the end of
    U+045D for an OSC: every 0x80-0x9F byte is dropped there, inside a character or not."""
    attack = "\u045d52;c;QQ==\x07 \u045b21t \u0450$qm".encode() + ESC + b"\\"
    f = TerminalFilter(utf8=False)
    got = f.feed(attack) + f.end()
    assert not any(0x80 <= b <= 0x9F for b in got), got
    assert TerminalFilter(utf8=False).feed(b"caf\xe9 \xa9") == b"caf\xe9 \xa9"  # Latin-1 text
    assert shown(attack) == attack  # a UTF-8 terminal reads those as characters


def test_lasting_changes_are_put_back_and_only_those() -> None:
    f = TerminalFilter()
    f.feed(b"plain text\r\n")
    assert f.restore() == b""  # nothing lasting changed: nothing is sent
    f.feed(ESC + b"[8mhidden" + ESC + b"[5;1H")
    assert f.restore() == ESC + b"[0m"  # attributes (conceal) are reset
    f = TerminalFilter()
    f.feed(ESC + b"[?1000;1006h" + ESC + b"[?1049h" + ESC + b"[>1u" + ESC + b"[>4;2m")
    f.feed(ESC + b"=" + ESC + b"[4h" + ESC + b"[?25l" + ESC + b"[1;5r" + ESC + b"[3 q")
    f.feed(ESC + b"(0" + ESC + b"]11;#ff0000\x07" + ESC + b"[=1;1u")
    back = f.restore()
    for reset in (
        b"[?1049l", b"[?1000l", b"[?1006l", b"[?25h", b"[4l", b"[<1u", b"[=0;1u",
        b"[>4m", b">", b"7\x1b[r\x1b8", b"[0 q", b"(B", b"]111\x07",
    ):  # fmt: skip
        assert ESC + reset in back, reset
    assert b"[?2004l" not in back  # only what was changed
    assert back.startswith(ESC + b"[?1049l")  # the main screen first
    f = TerminalFilter()  # review 40: chained colours, a charset back with the cursor, a link
    f.feed(ESC + b"]10;#f00;#0f0;#00f\x07" + ESC + b"(0" + ESC + b"7" + ESC + b"(B" + ESC + b"8")
    f.feed(ESC + b"]8;;https://example.org/\x07")
    back = f.restore()
    for reset in (b"]110\x07", b"]111\x07", b"]112\x07", b"(B", b"]8;;" + ESC + b"\\"):
        assert ESC + reset in back, reset
    f = TerminalFilter()
    f.feed(ESC + b"[?1049;47h")  # both alternate screens: both are left
    assert ESC + b"[?1049l" in f.restore() and ESC + b"[?47l" in f.restore()


@pytest.mark.parametrize(
    ("data", "got"),
    [
        (ESC + b"[?1000;2;2048;1001h", ESC + b"[?1000h"),  # VT52, resize and hilite reports
        (ESC + b"[?2l", b""),  # VT52: the restore would not be understood
        (ESC + b"[12l" + ESC + b"[2h", b""),  # SRM (echoes a password) and KAM (locks keys)
        (ESC + b"[?1;1003;2004s" + ESC + b"[?1;1003;2004r", b""),  # XTSAVE and XTRESTORE
        (ESC + b"[?r" + ESC + b"[?s", b""),
        (ESC + b"[>5;1m" + ESC + b"[>4;1f" + ESC + b"[>1s", b""),  # other key resources
        (ESC + b'[61;1"p', b""),  # the conformance level
        (ESC + b"n" + ESC + b"o" + ESC + b"}" + ESC + b"*0" + ESC + b"k", b""),  # shifts, screen
        (ESC + b"[?" + b"1" * 4000 + b"h", b""),  # a number no terminal reads (not a crash)
        (ESC + b"[1;2" + b";" * 10 + b"?5h", b""),  # a private marker inside
    ],
)
def test_sequences_with_lasting_or_unreadable_effects_are_dropped(data: bytes, got: bytes) -> None:
    f = TerminalFilter()
    assert f.feed(data) + f.end() == got
    assert f.restore() == (ESC + b"[?1000l" + ESC + b"[0m" if got else b"")


def test_a_restore_is_bounded_however_many_resources_are_named() -> None:
    f = TerminalFilter()
    for n in range(100_000):
        f.feed(ESC + b"[>%dm" % n)
    assert len(f.restore()) < 64


LOCALE_PROBE = "from ringfence.terminal_modes import reads_utf8; print(reads_utf8())"


@pytest.mark.parametrize(
    ("env", "utf8"),
    [
        ({"LANG": "C.UTF-8"}, True),
        ({"LC_ALL": "C.UTF-8"}, True),
        ({"LANG": "C"}, False),
        ({}, False),
        ({"LC_CTYPE": "C", "LANG": "C.UTF-8"}, False),  # Python coerces LC_CTYPE (PEP 538)
        ({"LANG": "xx_YY.UTF-8"}, False),  # not installed: the C library falls back to C
        ({"LANG": "xx_YY.UTF-8", "PYTHONUTF8": "1"}, False),  # and Python coerces LC_CTYPE
        ({"LANG": "C.UTF-8", "PYTHONUTF8": "1"}, True),
    ],
)
def test_the_terminal_is_taken_to_read_utf8_only_when_the_c_library_does(
    env: dict[str, str], utf8: bool
) -> None:
    """An outside review: the names alone said UTF-8 for an explicit C LC_CTYPE and for a
    locale that is not installed (ssh forwards LANG), while xterm and screen read 8 bits."""
    import subprocess
    import sys

    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME")}
    r = subprocess.run(
        [sys.executable, "-c", LOCALE_PROBE],
        env={**keep, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.strip() == str(utf8), r.stderr


def test_queries_and_the_callers_keyboard_entries_are_left_alone() -> None:
    """Review 41: a colour query (vim sends one at start) made the restore reset the user's
    colours, and the restore popped keyboard-protocol entries the caller had pushed."""
    f = TerminalFilter()
    f.feed(ESC + b"]11;?\x07" + ESC + b"]10;?;?\x07" + ESC + b"]4;1;?\x07")
    assert f.restore() == b""
    f.feed(ESC + b"]4;1;?;2;#123456\x07")  # a chained set after a query
    assert ESC + b"]104\x07" in f.restore()
    f = TerminalFilter()
    f.feed(ESC + b"[>1u" + ESC + b"[>3u" + ESC + b"[<u" + ESC + b"[<5u" + ESC + b"[>1u")
    assert ESC + b"[<1u" in f.restore()  # 2 pushed, all popped (5 > 1), 1 pushed again
