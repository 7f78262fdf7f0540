"""Output of a command that has ended, when someone outside it still holds its pipes open
(stdio.Drain for run, aio_capture.Capture for arun): what is in the pipe is read, and the
rest is not waited for past EOF_GRACE."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ringfence import aio_capture
from ringfence.stdio import EOF_GRACE, Drain

DATA = os.urandom(200_000)  # more than a default pipe holds: read while it is written


@dataclass
class _Ended:
    """A command's host-side record once its end report is in."""

    done: threading.Event = field(default_factory=threading.Event)
    report: dict[str, Any] = field(default_factory=lambda: {"started": 1, "exit": 0})
    pid: int | None = 1
    callbacks: list[Any] = field(default_factory=list)


class _Proc:
    def __init__(self, stdout: Any) -> None:
        self.args = ["cmd"]
        self.stdin = None
        self.stdout = stdout
        self.stderr = None
        self.pty_fd = None
        self._pending = _Ended()

    def wait(self, timeout: float | None = None) -> int:
        return 0


def _held_pipe() -> tuple[Any, int, threading.Thread]:
    """A pipe with DATA written into it by a writer that then keeps its end open."""
    r, w = os.pipe()
    writer = threading.Thread(target=os.write, args=(w, DATA))
    writer.start()
    return os.fdopen(r, "rb", buffering=0), w, writer


def test_run_reads_what_is_left_and_stops_waiting() -> None:
    out, w, writer = _held_pipe()
    proc = _Proc(out)
    drain = Drain(proc, None, None)  # type: ignore[arg-type]

    def end_soon() -> None:
        writer.join()
        proc._pending.done.set()

    threading.Thread(target=end_soon).start()
    t0 = time.monotonic()
    drain.run(None)
    took = time.monotonic() - t0
    got, _, _, _ = drain.result()
    os.close(w)
    assert got == DATA
    assert took < EOF_GRACE + 5  # it returned (before the fix it waited for ever)


def test_arun_reads_what_is_left_and_stops_waiting() -> None:
    out, w, writer = _held_pipe()

    async def main() -> tuple[Any, ...]:
        pending = _Ended()
        capture = aio_capture.Capture(pending, [None, out, None], None)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, writer.join)
        pending.done.set()
        capture._wake()
        await asyncio.wait_for(capture.ended, EOF_GRACE + 5)
        capture.stop()
        return capture.output([None, out, None])

    got, _, truncated, _ = asyncio.run(main())
    os.close(w)
    out.close()
    assert (got, truncated) == (DATA, False)


def _unread_pipe() -> tuple[Any, int]:
    """A pipe with 60,000 bytes in it that nobody has read yet; its write end kept open."""
    r, w = os.pipe()
    os.write(w, DATA[:60_000])
    return os.fdopen(r, "rb", buffering=0), w


def test_giving_up_reads_what_is_already_in_the_pipe() -> None:
    """Review 29: if the reader stalled past the grace, giving up dropped what was already
    in the pipe; it is read first (both paths)."""
    out, w = _unread_pipe()
    drain = Drain(_Proc(out), None, None)  # type: ignore[arg-type]
    drain._let_go()
    assert drain.result()[0] == DATA[:60_000]
    os.close(w)

    out, w = _unread_pipe()

    async def main() -> Any:
        pending = _Ended()
        pending.done.set()
        capture = aio_capture.Capture(pending, [None, out, None], None)  # type: ignore[arg-type]
        capture._give_up()  # (before the loop has run its reader)
        assert capture.ended.done()
        capture.stop()
        return capture.output([None, out, None])[0]

    assert asyncio.run(main()) == DATA[:60_000]
    os.close(w)
    out.close()
