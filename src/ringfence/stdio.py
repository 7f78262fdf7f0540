"""The caller's side of a command's stdio: which descriptors go to the runner, text
wrappers, and draining captured output (bounded) without a thread per stream."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import selectors
import subprocess
import sys
import termios
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ringfence.session import Process
from ringfence import stdfds
from ringfence.completed import DEVNULL, PIPE, STDOUT, StdSpec


def terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1)
        return size.lines, size.columns
    except (OSError, ValueError):
        return 24, 80


def stdio_fds(
    stdin: StdSpec, stdout: StdSpec, stderr: StdSpec, bufsize: int = 0
) -> tuple[list[int], list[IO[bytes] | None], list[int]]:
    """The three fds to hand over, the caller's ends of new pipes (buffered as ``bufsize``
    says, with ``subprocess``'s meaning: 0 none, 1 or less than 0 the default, else that
    many bytes; line buffering is the text wrapper's), and fds to close after."""
    buffering = -1 if bufsize == 1 else bufsize
    fds: list[int] = []
    ours: list[IO[bytes] | None] = [None, None, None]
    to_close: list[int] = []
    devnull = -1
    try:
        for i, spec in enumerate((stdin, stdout, stderr)):
            if spec is None and (mine := stdfds.hand_over(i)) >= 0:
                fds.append(mine)  # yours; a closed or close-on-exec one is /dev/null (stdfds.py)
                to_close.append(mine)
            elif spec == PIPE:
                r, w = os.pipe2(os.O_CLOEXEC)
                if i == 0:
                    fds.append(r)
                    to_close.append(r)
                    ours[0] = open(w, "wb", buffering=buffering)  # noqa: SIM115
                else:
                    fds.append(w)
                    to_close.append(w)
                    ours[i] = open(r, "rb", buffering=buffering)  # noqa: SIM115
            elif spec is None or spec == DEVNULL:
                if devnull < 0:
                    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                    to_close.append(devnull)
                fds.append(devnull)
            elif spec == STDOUT:
                if i != 2:
                    raise ValueError("STDOUT is only for stderr")
                fds.append(fds[1])
            elif isinstance(spec, int):
                fds.append(spec)
            else:
                fds.append(spec.fileno())
    except BaseException:
        for fd in to_close:
            os.close(fd)
        for f in ours:
            if f is not None:
                f.close()
        raise
    return fds, ours, to_close


def wrap_text(proc: Process, encoding: str, errors: str, line_buffering: bool = False) -> None:
    if proc.pty_fd is not None:
        return
    proc._text = (encoding, errors)
    if proc.stdin is not None:
        proc.stdin = io.TextIOWrapper(
            proc.stdin,
            encoding=encoding,
            errors=errors,
            write_through=True,
            line_buffering=line_buffering,
        )
    if proc.stdout is not None:
        proc.stdout = io.TextIOWrapper(proc.stdout, encoding=encoding, errors=errors)
    if proc.stderr is not None:
        proc.stderr = io.TextIOWrapper(proc.stderr, encoding=encoding, errors=errors)


class PtyFile(io.FileIO):
    """The master side of a command's terminal as a file (``Process.stdin``/``stdout`` with
    ``pty=True``). When the command's last process lets go of the terminal Linux fails reads
    on the master with EIO; this file reads that as the end of the stream (``b""``), as a
    pipe's reader would, after whatever output was still buffered."""

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return self.readall()
        try:
            return super().read(size)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(self.fileno(), 1 << 16)
            except BlockingIOError:
                if chunks:
                    break
                raise
            except OSError as e:
                if e.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: Any, /) -> int:
        try:
            return super().readinto(buffer)
        except OSError as e:
            if e.errno == errno.EIO:
                return 0
            raise


def end_of_input(fd: int, sent: bytes) -> bytes:
    """What ends a command's input on its terminal (``fd``, the master side), as a person
    would type it: the terminal's EOF character (``VEOF``, ^D by default) at the start of a
    line; after a partial line one more first, since the first only hands that line over.
    Nothing when the terminal does not read lines (raw mode): there no character means the
    end, and closing the master instead would hang the command up."""
    try:
        attrs = termios.tcgetattr(fd)  # the master reports its slave's settings
    except termios.error:
        return b""
    eof = attrs[6][termios.VEOF]
    if not attrs[3] & termios.ICANON or not isinstance(eof, bytes) or eof in (b"", b"\0"):
        return b""
    whole = not sent or sent.endswith(b"\n") or (sent.endswith(b"\r") and attrs[0] & termios.ICRNL)
    return eof if whole else eof * 2


# Once a command's end report is in, its whole tree is gone and its pipes are at their end,
# unless it passed them to a process outside it (another command's, over a unix socket):
# the output is read for this long more, then the rest is not waited for.
EOF_GRACE = 1.0
POLL = 0.5  # how often a wait for output looks whether the command has ended
LAST_READS = 16  # what is left in a pipe then (a pipe holds at most 1 MiB by default) is read


class Drain:
    """Feed stdin, drain stdout/stderr (keeping ``limit`` bytes each), then wait.

    One selector in the caller's thread, like ``subprocess``: past the limit the bytes are read
    and dropped, so a command flooding its output never blocks on a full pipe. The state
    survives a timeout, so the output read before it is kept.
    """

    def __init__(self, proc: Process, input: bytes | str | None, limit: int | None) -> None:
        self.proc = proc
        self.limit = limit
        self.sel = selectors.DefaultSelector()
        self.bufs: dict[int, bytearray] = {}
        self.trunc: dict[int, bool] = {}
        self.fd_of: dict[int, int] = {}  # id(stream) -> fd
        data = input.encode() if isinstance(input, str) else input or b""
        # With a terminal, stdin and stdout are its master side: one descriptor, read and
        # written, never closed before the end (that would hang the command up).
        self.tty: int | None = None
        tty = proc.stdout if proc.pty_fd is not None and proc.stdout is proc.stdin else None
        if tty is not None and not tty.closed:
            self.tty = tty.fileno()
            data += end_of_input(self.tty, data)
        for f in (proc.stdout, proc.stderr):
            if f is not None and not f.closed and (f is tty or f is not proc.stdin):
                fd = f.fileno()
                os.set_blocking(fd, False)
                self.sel.register(fd, selectors.EVENT_READ)
                self.bufs[fd] = bytearray()
                self.trunc[fd] = False
                self.fd_of[id(f)] = fd
        self.pending_in = memoryview(data)
        if self.tty is not None:
            if self.pending_in:
                self.sel.modify(self.tty, selectors.EVENT_READ | selectors.EVENT_WRITE)
        elif proc.stdin is not None and not proc.stdin.closed:
            if self.pending_in:
                fd = proc.stdin.fileno()
                os.set_blocking(fd, False)
                self.sel.register(fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()

    def run(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        ended_by: float | None = None  # when to stop reading a command that has ended
        while self.sel.get_map():
            now = time.monotonic()
            wait = None if deadline is None else deadline - now
            if wait is not None and wait <= 0:
                raise subprocess.TimeoutExpired(self.proc.args, timeout or 0.0)
            if ended_by is None and self.proc._pending.done.is_set():
                ended_by = now + EOF_GRACE
            if ended_by is not None and now >= ended_by:
                self._let_go()
                break
            limit = POLL if ended_by is None else ended_by - now
            for key, mask in self.sel.select(limit if wait is None else min(wait, limit)):
                if mask & selectors.EVENT_WRITE:
                    self._write(int(key.fd))
                if mask & selectors.EVENT_READ and key.fd in self.sel.get_map():
                    self._read(int(key.fd))
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.proc.wait(wait)

    def _let_go(self) -> None:
        """Stop reading pipes that someone outside the command still holds open, once what
        is in them has been read."""
        for key in list(self.sel.get_map().values()):
            if key.events & selectors.EVENT_READ:
                for _ in range(LAST_READS):
                    if not self._read(key.fd):
                        break
            with contextlib.suppress(KeyError):
                self.sel.unregister(key.fd)
        self.abandon_input()

    def _write(self, fd: int) -> None:
        try:
            n = os.write(fd, self.pending_in[:65536])
            self.pending_in = self.pending_in[n:]
        except BlockingIOError:
            return
        except OSError as e:  # the reader is gone (a pipe: EPIPE; a terminal: EIO)
            if not isinstance(e, BrokenPipeError) and e.errno != errno.EIO:
                raise
            self.pending_in = self.pending_in[:0]
        if not self.pending_in:
            self._input_done()

    def _input_done(self) -> None:
        if self.tty is not None:  # the terminal stays open: its output is still read
            if self.tty in self.sel.get_map():
                self.sel.modify(self.tty, selectors.EVENT_READ)
            return
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(stdin.fileno())
            stdin.close()

    def _read(self, fd: int) -> bool:
        """One read; whether it brought anything."""
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError as e:
            if fd != self.tty or e.errno != errno.EIO:
                raise
            chunk = b""  # every slave side is closed: the terminal's end of file
        if not chunk:
            self.sel.unregister(fd)
            return False
        buf = self.bufs[fd]
        room = len(chunk) if self.limit is None else self.limit - len(buf)
        if room >= len(chunk):
            buf += chunk
        else:
            if room > 0:
                buf += chunk[:room]
            self.trunc[fd] = True
        return True

    def abandon_input(self) -> None:
        """After a kill: stop feeding stdin, keep draining what is left."""
        self.pending_in = self.pending_in[:0]
        self._input_done()

    def result(self) -> tuple[bytes | None, bytes | None, bool, bool]:
        self.sel.close()
        out: list[bytes | None] = []
        trunc: list[bool] = []
        for f in (self.proc.stdout, self.proc.stderr):
            fd = self.fd_of.get(id(f)) if f is not None else None
            if fd is None:
                out.append(None)
                trunc.append(False)
                continue
            out.append(bytes(self.bufs[fd]))
            trunc.append(self.trunc[fd])
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
        return out[0], out[1], trunc[0], trunc[1]


def communicate(
    proc: Process, input: bytes | str | None, timeout: float | None, limit: int | None
) -> tuple[bytes | None, bytes | None, bool, bool]:
    drain = Drain(proc, input, limit)
    try:
        drain.run(timeout)
    except subprocess.TimeoutExpired:
        drain.sel.close()
        raise
    return drain.result()
