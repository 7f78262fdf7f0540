"""asyncio plumbing for a Session's commands: ``AsyncProcess`` and the coroutines behind
``AsyncSession`` (``ringfence.aio``) and ``Session.arun``/``Session.aspawn``.

The command is started and ended by the same runner as the blocking API; only the waiting is
different: replies from the session's reader thread complete asyncio futures through
``call_soon_threadsafe``, and pipes are asyncio streams, so no thread blocks per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ringfence.completed import CompletedProcess, TimeoutExpired, completed, decode, run_stdio

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
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = loop.create_future()
        pending = proc._pending

        def wake() -> None:
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
        if proc.stdout is not None:
            self.stdout = await _reader(loop, proc.stdout)
        if proc.stderr is not None:
            self.stderr = await _reader(loop, proc.stderr)
        if proc.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), proc.stdin
            )
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)

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


async def _reader(loop: asyncio.AbstractEventLoop, f: Any) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 20, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), f)
    return reader


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
) -> AsyncProcess:
    loop = asyncio.get_running_loop()
    # Starting waits for the runner's "started" (a fork and an exec away): off the loop.
    proc = await loop.run_in_executor(
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
        ),
    )
    aproc = AsyncProcess(proc, (text or bool(encoding or errors), encoding, errors))
    await aproc._connect()
    return aproc


async def _drain(
    aproc: AsyncProcess, input: bytes | None, limit: int | None
) -> tuple[bytes | None, bytes | None, bool, bool]:
    async def feed() -> None:
        if aproc.stdin is None:
            return
        if input:
            aproc.stdin.write(input)
            with contextlib.suppress(ConnectionError):
                await aproc.stdin.drain()
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

    _, (out, tout), (err, terr) = await asyncio.gather(
        feed(), collect(aproc.stdout), collect(aproc.stderr)
    )
    await aproc.wait()
    return out, err, tout, terr


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
) -> CompletedProcess:
    stdin, stdout, stderr = run_stdio(input, stdin, stdout, stderr, capture_output)
    if isinstance(input, str):
        input = input.encode(encoding or "utf-8")
    aproc = await spawn(
        session, args, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, shell=shell
    )
    limit = session.output_limit if output_limit is None else output_limit
    task = asyncio.ensure_future(_drain(aproc, input, limit))
    try:
        out, err, tout, terr = await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        aproc.kill()
        with contextlib.suppress(Exception):
            await task
        raise TimeoutExpired(aproc._proc.args, timeout or 0.0) from None
    except BaseException:
        aproc.kill()
        raise
    aproc._proc.wait()
    return completed(aproc._proc, (out, err), (tout, terr), (text, encoding, errors), check)


__all__ = ["AsyncProcess", "run", "spawn"]
