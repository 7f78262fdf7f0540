"""``ringfence run -t`` and ``ringfence shell``: our terminal, relayed to the command's own.

The command gets a pseudo-terminal from the sandbox's private devpts, never the caller's
terminal: whatever it does to its terminal (TIOCSTI, a changed mode) stays on that pty. Here we
put the caller's terminal in raw mode, copy bytes both ways, follow window-size changes, and
restore the terminal however the command ends. What the command prints reaches the caller's
terminal through an allowlist of what is safe to show (terminal_filter.py): the terminal
emulator acts on control sequences with the caller's rights (the clipboard, files, answers
typed into the input).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from collections.abc import Callable
from typing import TYPE_CHECKING

from ringfence.terminal_filter import TerminalFilter
from ringfence.terminal_modes import reads_utf8

if TYPE_CHECKING:
    from ringfence.session import Process

EOT = b"\x04"
ANSWERS = {"o": "once", "once": "once", "s": "session", "session": "session"}


def tty_asker() -> Callable[[str, int], str]:
    """``ringfence run --ask``: the question on the user's terminal, one at a time."""
    from ringfence.errors import PolicyError

    try:
        with open("/dev/tty", "r+b", buffering=0):
            pass
    except OSError as e:
        raise PolicyError(f"--ask needs a terminal to ask on ({e.strerror})") from None
    lock = threading.Lock()

    def ask(host: str, port: int) -> str:
        # Only printable characters of the name reach the terminal (no escape sequences).
        shown = "".join(c if c.isprintable() else "?" for c in host)
        question = (
            f"\nringfence: the command wants {shown}:{port}, which the allowlist does not "
            "cover. Allow [o]nce, for this [s]ession, or [N]o? "
        )
        with lock:
            answer = ask_on_tty(question)
        return ANSWERS.get(answer or "", "deny")

    return ask


def ask_on_tty(question: str) -> str | None:
    """Put ``question`` on the user's terminal (``/dev/tty``) and return the answer line,
    lower-cased; None when there is no terminal to ask on. The caller escapes what it shows."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        _write_all(fd, question.encode())
        line = b""
        while not line.endswith(b"\n") and len(line) < 256:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            line += chunk
    finally:
        os.close(fd)
    return line.decode(errors="replace").strip().lower()


def relay(proc: Process, timeout: float | None) -> None:
    """Copy stdin to the command's terminal and its output to stdout until it closes."""
    master = proc.pty_fd
    assert master is not None
    interactive = os.isatty(0)
    saved = termios.tcgetattr(0) if interactive else None

    def resize(*_: object) -> None:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            proc.set_winsize(size.lines, size.columns)

    old_winch = signal.signal(signal.SIGWINCH, resize) if interactive else None
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = TerminalFilter(utf8=reads_utf8())
    try:
        if interactive:
            resize()
            tty.setraw(0)
        _pump(proc, master, shown, deadline, timeout)
    finally:
        # what the command left changed, put back (also through a pipe: `| tee` shows it)
        with contextlib.suppress(OSError):
            _write_all(1, shown.restore())
        if saved is not None:
            termios.tcsetattr(0, termios.TCSAFLUSH, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)


# Input read ahead of a command that does not read its terminal: at most this much is kept
# (then our stdin is not read until it takes some), so nothing here grows without bound.
PENDING_MAX = 1 << 20


def _pump(
    proc: Process,
    master: int,
    shown: TerminalFilter,
    deadline: float | None,
    timeout: float | None,
) -> None:
    """Copy both ways until the command lets go of its terminal. Writes to the terminal never
    block: a command that stops reading (in raw mode, say) while input is piped in must not
    keep its output from being relayed, nor the timeout from ending it. The output reaches
    yours through the terminal filter (terminal_filter.py): only what is safe to show."""
    os.set_blocking(master, False)
    pending = bytearray()
    reading = True  # our stdin
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        inputs = [master, 0] if reading and len(pending) < PENDING_MAX else [master]
        try:
            ready, writable, _ = select.select(inputs, [master] if pending else [], [], wait)
        except InterruptedError:
            continue
        if master in ready and not _relay_output(master, shown):
            _write_all(1, shown.end())
            return
        if writable:
            try:
                del pending[: os.write(master, pending[: 1 << 16])]
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the command is gone; its output ends next
                    raise
                pending.clear()
        if 0 in ready:
            data = os.read(0, 1 << 16)
            if not data:  # our input ended: end the command's input the terminal's way
                reading = False
                pending += EOT
            else:
                pending += data


def _relay_output(master: int, shown: TerminalFilter) -> bool:
    """The command's output so far to ours (what of it may be shown); False once it has let
    go of its terminal."""
    try:
        data = os.read(master, 1 << 16)
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno != errno.EIO:  # EIO: every slave is closed, the command is gone
            raise
        return False
    if data:
        _write_all(1, shown.feed(data))
    return bool(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]
