"""asyncio plumbing for a Session's commands: ``AsyncProcess`` and the coroutines behind
``AsyncSession`` (``ringfence.aio``) and ``Session.arun``/``Session.aspawn``.

The command is started and ended by the same runner as the blocking API; only the waiting is
different: replies from the session's reader thread complete asyncio futures through
``call_soon_threadsafe``, and pipes are asyncio streams, so no thread blocks per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ringfence import aio_capture, popen_args
from ringfence.completed import (
    PIPE,
    CompletedProcess,
    TimeoutExpired,
    completed,
    decode,
    run_stdio,
)
from ringfence.stdio import EOF_GRACE, LAST_READS, end_of_input
from ringfence.unwatched import finish_later

if TYPE_CHECKING:
    from ringfence.session import Process, Session


class AsyncProcess:
    """Like ``asyncio.subprocess.Process``: ``stdin`` is a StreamWriter, ``stdout``/``stderr``
    StreamReaders, ``await wait()``, ``await communicate()``; ``kill()`` ends the whole tree."""

    def __init__(self, proc: Process, text: tuple[bool, str | None, str | None]) -> None:
        self._proc = proc
        self._text = text
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._pipes: list[asyncio.BaseTransport] = []  # ours, to let go of (_drain)
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = loop.create_future()
        pending = proc._pending

        def wake() -> None:  # the session's reader thread: must not raise there
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(_set_done, self._done)

        pending.callbacks.append(wake)
        if pending.done.is_set():
            wake()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        proc = self._proc
        if proc.pty_fd is not None:  # EOF at the command's exit, as a pipe's (not EIO)
            self.stdout = asyncio.StreamReader(limit=1 << 20, loop=loop)
            # a descriptor of its own: stdin's close is stdin's
            self._pipes.append(_PtyTransport(loop, os.dup(proc.pty_fd), self.stdout))
        elif proc.stdout is not None:
            self.stdout = await self._reader(loop, proc.stdout)
        if proc.stderr is not None:
            self.stderr = await self._reader(loop, proc.stderr)
        if proc.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), proc.stdin
            )
            self._pipes.append(transport)
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)

    async def _reader(self, loop: asyncio.AbstractEventLoop, f: Any) -> asyncio.StreamReader:
        reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), f
        )
        self._pipes.append(transport)
        return reader

    def _let_go(self) -> None:
        """Stop waiting on pipes someone outside the command still holds: what the readers
        have is kept and they end there (their transports' close is their end)."""
        for t in self._pipes:
            if t.is_closing():
                continue
            if isinstance(t, asyncio.WriteTransport):
                t.abort()
            else:
                t.close()

    async def wait(self) -> int:
        await asyncio.shield(self._done)
        return self._proc.wait()

    def send_signal(self, sig: int) -> None:
        self._proc.send_signal(sig)

    def terminate(self) -> None:
        self._proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._proc.kill()

    async def communicate(self, input: bytes | str | None = None) -> tuple[Any, Any]:
        """Feed ``input``, read both streams to the end, wait; ``str`` when spawned with
        ``text``/``encoding``/``errors``."""
        text, encoding, errors = self._text
        if isinstance(input, str):
            input = input.encode(encoding or "utf-8")
        out, err, _, _ = await _drain(self, input, None)
        return decode(out, text, encoding, errors), decode(err, text, encoding, errors)


class _PtyTransport(asyncio.ReadTransport):
    """Reads the master side of a command's terminal (``fd``, its own: closed at the end)
    into a StreamReader. asyncio's pipe transport takes the EIO Linux gives there once the
    command has let go of the terminal for an error; here it is the end of the stream. Pauses
    when the reader is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, reader: asyncio.StreamReader):
        super().__init__()
        self._loop, self._fd, self._reader = loop, fd, reader
        self._reading = False
        self._done = False
        os.set_blocking(fd, False)
        reader.set_transport(self)
        self.resume_reading()

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno != errno.EIO:
                self._end()
                self._reader.set_exception(e)
                return
            data = b""
        if data:
            self._reader.feed_data(data)
        else:
            self._end()
            self._reader.feed_eof()

    def _end(self) -> None:
        self.pause_reading()
        if not self._done:
            self._done = True
            os.close(self._fd)

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._done:
            self._loop.add_reader(self._fd, self._ready)
            self._reading = True

    def close(self) -> None:
        """Let go (the command has ended; something outside it may hold the terminal): what
        is in it is read, then the stream ends."""
        if self._done:
            return
        for _ in range(LAST_READS):
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError:
                break
            if not data:
                break
            self._reader.feed_data(data)
        self._end()
        self._reader.feed_eof()

    def is_closing(self) -> bool:
        return self._done


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def spawn(
    session: Session,
    args: str | Sequence[str],
    *,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    shell: bool = False,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    pty: bool | tuple[int, int] = False,
    executable: str | os.PathLike[str] | None = None,
    pass_fds: Collection[int] = (),
    umask: int = -1,
    bufsize: int = 0,
    universal_newlines: bool | None = None,
    start_new_session: bool = True,
    close_fds: bool = True,
) -> AsyncProcess:
    if bufsize != 0:
        raise ValueError(
            "bufsize: asyncio streams buffer for themselves (as with asyncio.subprocess, only "
            "bufsize=0 is meaningful here)"
        )
    extra = popen_args.check(
        executable=executable, pass_fds=pass_fds, umask=umask, text=text,
        universal_newlines=universal_newlines, start_new_session=start_new_session,
        close_fds=close_fds,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    if session._sends_at_once():
        proc = await _start_here(
            session, args, stdio=(stdin, stdout, stderr), cwd=cwd, env=env, shell=shell,
            pty=pty, extra=extra,
        )  # fmt: skip
    else:  # the runner to start, or an approver that may ask a person: off the loop
        starting = loop.run_in_executor(
            None,
            lambda: session.spawn(
                args,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                shell=shell,
                pty=pty,
                executable=extra.executable,
                pass_fds=extra.pass_fds,
                umask=extra.umask,
            ),
        )
        try:
            proc = await asyncio.shield(starting)
        except asyncio.CancelledError:  # the thread goes on: kill what it starts
            starting.add_done_callback(_abandon)
            raise
    aproc = AsyncProcess(proc, (extra.text or bool(encoding or errors), encoding, errors))
    await aproc._connect()
    return aproc


def _abandon(starting: asyncio.Future[Process]) -> None:
    """A command whose start nobody awaits any more: its tree killed, our ends closed."""
    if starting.cancelled() or starting.exception() is not None:
        return
    proc = starting.result()
    proc.kill()
    for f in {proc.stdin, proc.stdout, proc.stderr} - {None}:
        with contextlib.suppress(OSError):
            f.close()  # type: ignore[union-attr]
    finish_later(proc)


async def _start_here(
    session: Session,
    args: str | Sequence[str],
    *,
    stdio: tuple[Any, Any, Any],
    cwd: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    shell: bool,
    pty: bool | tuple[int, int],
    extra: popen_args.PopenArgs,
) -> Process:
    """Send the command from the loop and await the runner's "started": no worker thread,
    whose two wake-ups are a good part of a short command's cost."""
    loop = asyncio.get_running_loop()
    binary = popen_args.PopenArgs(extra.executable, extra.umask, extra.pass_fds)
    sent = session._submit(
        args, stdio=stdio, cwd=cwd, env=env, shell=shell, pty=pty, extra=binary
    )  # fmt: skip
    started: asyncio.Future[None] = loop.create_future()
    pending = sent.pending

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(_set_done, started)

    pending.on_started.append(wake)
    if pending.started.is_set():
        _set_done(started)
    try:
        await started
    except BaseException:  # cancelled while starting: nothing may run unwatched
        kill = functools.partial(sent.conn.control, pending.id, "kill")
        pending.on_started.append(kill)
        if pending.started.is_set():
            kill()
        for f in sent.ours:
            if f is not None:
                f.close()
        session._finish_unwatched(sent)
        raise
    return session._spawned(sent, binary, (None, None))


async def _drain(
    aproc: AsyncProcess, input: bytes | None, limit: int | None
) -> tuple[bytes | None, bytes | None, bool, bool]:
    tty = aproc._proc.pty_fd

    async def feed() -> None:
        if aproc.stdin is None:
            return
        data = input or b""
        if tty is not None:  # the terminal's way to end input; closing it would hang up
            data += end_of_input(tty, data)
        if data:
            aproc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await aproc.stdin.drain()
        if tty is None:
            aproc.stdin.close()

    async def collect(reader: asyncio.StreamReader | None) -> tuple[bytes | None, bool]:
        if reader is None:
            return None, False
        buf = bytearray()
        truncated = False
        while chunk := await reader.read(1 << 16):
            room = len(chunk) if limit is None else limit - len(buf)
            if room >= len(chunk):
                buf += chunk
            else:
                buf += chunk[: max(room, 0)]
                truncated = True
        return bytes(buf), truncated

    work: asyncio.Future[Any] = asyncio.gather(feed(), collect(aproc.stdout), collect(aproc.stderr))
    work.add_done_callback(_retrieved)
    ended: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(aproc._done))
    try:
        await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # it has ended: its pipes may be held by someone outside it
            await asyncio.wait({work}, timeout=EOF_GRACE)
            if not work.done():
                aproc._let_go()
        _, (out, tout), (err, terr) = await work
    finally:
        ended.cancel()
        if not work.done():  # we were cancelled
            work.cancel()
    await aproc.wait()
    if tty is not None and aproc.stdin is not None:
        aproc.stdin.close()  # the command has let go of its terminal: ours may close
    return out, err, tout, terr


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """A cancelled ``communicate`` leaves its gathered work with a CancelledError as its
    exception; taking it keeps asyncio from logging it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


async def run(
    session: Session,
    args: str | Sequence[str],
    *,
    input: bytes | str | None = None,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    capture_output: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = False,
    shell: bool = False,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    output_limit: int | None = None,
    executable: str | os.PathLike[str] | None = None,
    pass_fds: Collection[int] = (),
    umask: int = -1,
    bufsize: int = 0,
    universal_newlines: bool | None = None,
    start_new_session: bool = True,
    close_fds: bool = True,
) -> CompletedProcess:
    extra = popen_args.check(
        executable=executable, pass_fds=pass_fds, umask=umask, bufsize=bufsize, text=text,
        universal_newlines=universal_newlines, start_new_session=start_new_session,
        close_fds=close_fds,
    )  # fmt: skip
    text = extra.text
    stdin, stdout, stderr = run_stdio(input, stdin, stdout, stderr, capture_output)
    if isinstance(input, str):
        input = input.encode(encoding or "utf-8")
    limit = session.output_limit if output_limit is None else output_limit
    if input is None and stdin is not PIPE and session._sends_at_once():
        proc, (out, err, tout, terr) = await aio_capture.run(
            session, args, stdio=(stdin, stdout, stderr), cwd=cwd, env=env, shell=shell,
            extra=extra, limit=limit, timeout=timeout,
        )  # fmt: skip
        if proc.timed_out:
            raise TimeoutExpired(
                proc.args,
                timeout or 0.0,
                decode(out, text, encoding, errors),
                decode(err, text, encoding, errors),
            )
        return completed(proc, (out, err), (tout, terr), (text, encoding, errors), check)
    aproc = await spawn(
        session, args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env,
        shell=shell, executable=extra.executable, pass_fds=extra.pass_fds, umask=extra.umask,
    )  # fmt: skip
    task = asyncio.ensure_future(_drain(aproc, input, limit))
    try:
        out, err, tout, terr = await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:  # as Session.run: the whole tree killed, what it wrote kept
        aproc._proc.timed_out = True
        aproc.kill()
        out = err = None
        try:
            out, err, _, _ = await task
        except Exception:
            pass
        except BaseException:  # cancelled meanwhile: its end still counts
            finish_later(aproc._proc)
            raise
        raise TimeoutExpired(
            aproc._proc.args,
            timeout or 0.0,
            decode(out, text, encoding, errors),
            decode(err, text, encoding, errors),
        ) from None
    except BaseException:
        aproc.kill()
        finish_later(aproc._proc)
        raise
    aproc._proc.wait()
    return completed(aproc._proc, (out, err), (tout, terr), (text, encoding, errors), check)


__all__ = ["AsyncProcess", "run", "spawn"]
