"""``ringfence run -t``: the relay between our stdin and the command's terminal.

A command that stops reading its terminal (raw mode, then sleep) while more input is piped in
than the terminal holds kept the relay blocked in a write for ever: its output was no longer
relayed and ``--timeout`` never ended it (an outside review). A timeout during the relay also
ended in a traceback instead of the timeout's exit status.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def test_a_command_that_stops_reading_still_times_out(rf: Runner) -> None:
    ws = rf.mkdir()
    script = "echo ready-$((6*7))-$0; stty raw -echo; sleep 1000"
    started = time.monotonic()
    r = subprocess.run(
        rf.argv(["run", "-t", "--timeout", "3", "--", "sh", "-c", script, rf.nonce]),
        cwd=ws,
        env=rf.env(),
        input=b"\0" * 300_000,  # more than a terminal's input queue holds
        capture_output=True,
        timeout=60,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert time.monotonic() - started < 30
    assert r.returncode == 124, r.stderr
    assert f"ready-42-{rf.nonce}" in r.stdout.decode(errors="replace")  # it ran, in there
    assert b"timed out after 3 s" in r.stderr and b"Traceback" not in r.stderr


def test_what_the_command_prints_reaches_the_terminal_filtered(rf: Runner) -> None:
    """The command's output passes an allowlist on its way to our terminal: a colour does, a
    clipboard write (OSC 52), a tmux passthrough and a title report request do not (see
    tests/unit/test_terminal_filter.py for the whole list)."""
    ws = rf.mkdir()
    script = (
        r"printf 'A\033]52;c;ZWNobyBwd25lZA==\007B\033Ptmux;\033\033]52;c;QQ==\007\033\\'; "
        r"printf 'C\033[21tD\033[1mproof-%s\033[0m\n' $((6*7))-$0"
    )
    r = subprocess.run(
        rf.argv(["run", "-t", "--", "sh", "-c", script, rf.nonce]),
        cwd=ws,
        env=rf.env(),
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.replace(b"\r\n", b"\n")
    assert f"CD\x1b[1mproof-42-{rf.nonce}\x1b[0m\n".encode() in out, out  # it ran, in there
    assert out.startswith(b"AB"), out
    assert b"]52" not in out and b"\x1bP" not in out and b"[21t" not in out, out


@pytest.mark.parametrize(
    "locale", [{"LANG": "C"}, {"LC_CTYPE": "C", "LANG": "C.UTF-8"}, {"LANG": "xx_YY.UTF-8"}]
)
def test_under_the_c_locale_no_byte_a_terminal_takes_for_a_c1_control_gets_through(
    rf: Runner, locale: dict[str, str]
) -> None:
    """GNU screen or xterm started under the C locale read 8-bit controls: 0x9D at the end
    of U+045D is an OSC there (outside reviews set the clipboard and typed into the host
    shell so, also with an explicit C LC_CTYPE and with a UTF-8 locale not installed). The
    relay follows the locale the C library takes."""
    ws = rf.mkdir()
    script = r"printf '\321\23552;c;QQ==\007 \321\23321t proof-%s\n' $((6*7))-$0"
    r = subprocess.run(
        rf.argv(["run", "-t", "--", "sh", "-c", script, rf.nonce]),
        cwd=ws,
        env={**rf.env(), **locale},
        input=b"",
        capture_output=True,
        timeout=60,
        check=False,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    )
    assert r.returncode == 0, r.stderr
    assert f"proof-42-{rf.nonce}".encode() in r.stdout, r.stdout  # it ran, in there
    assert not any(0x80 <= b <= 0x9F for b in r.stdout), r.stdout
