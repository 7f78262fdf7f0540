"""ringfence mcp's stdio transport (mcp_stdio.py): the SDK's messages, moved without worker
threads; every line arrives whole and in order, and the wire stays private while serving."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("mcp")

from ringfence import mcp_stdio


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose ends the test may close itself. At the end only an end that is still this
    pipe is closed: a number the test closed may be someone else's by then (the next event
    loop's self-pipe, say), and closing that made a later test's loop fail at its own close."""
    r, w = os.pipe()
    ours = {fd: os.fstat(fd).st_ino for fd in (r, w)}
    yield r, w
    for fd, ino in ours.items():
        try:
            if os.fstat(fd).st_ino == ino:
                os.close(fd)
        except OSError:
            pass


def test_lines_arrive_whole_however_the_bytes_are_split(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def main() -> list[str]:
        reader = mcp_stdio.LineReader(r)
        loop = asyncio.get_running_loop()
        pieces = [b'{"a":', b' 1}\n{"b"', b": 2}\n\n", b"caf\xc3", b"\xa9\n", b"\xff last"]
        for i, piece in enumerate(pieces):  # written while the reader waits
            loop.call_later(0.01 * (i + 1), os.write, w, piece)
        loop.call_later(0.01 * (len(pieces) + 1), os.close, w)
        return [line async for line in reader]

    assert asyncio.run(main()) == ['{"a": 1}\n', '{"b": 2}\n', "\n", "café\n", "\ufffd last"]


def test_writes_keep_their_order_small_and_large_and_a_gone_client_is_an_error(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    big = "x" * (mcp_stdio.INLINE_MAX * 40)  # more than the pipe holds: the thread writes it
    messages = ["first\n", big + "\n", "small after big\n", "é\n"]
    got = bytearray()

    async def main() -> None:
        writer = mcp_stdio.LineWriter(w)
        for m in messages:
            await writer.write(m)
            await writer.flush()
        while len(got) < sum(len(m.encode()) for m in messages):
            got.extend(await asyncio.to_thread(os.read, r, 1 << 16))
        os.close(r)
        writer.close()

    asyncio.run(main())
    assert got.decode() == "".join(messages)

    async def gone() -> None:
        writer = mcp_stdio.LineWriter(w)
        with pytest.raises(BrokenPipeError):
            for _ in range(3):  # the first failure may be the thread's, raised next time
                await writer.write(big)
                await asyncio.sleep(0.05)
        writer.close()

    asyncio.run(gone())


SERVE = r"""
import asyncio, os, sys
from ringfence import mcp_stdio

async def main():
    async with mcp_stdio.transport() as (read, write):
        print("stray output", flush=True)  # fd 1 is stderr now: not on the wire
        assert os.read(0, 10) == b""  # fd 0 is /dev/null now
        got = await read.receive()
        await write.send(got)  # the message back, as the SDK serialises it
        await write.aclose()  # as the SDK's server does when it ends
asyncio.run(main())
print("restored", flush=True)  # fds 0 and 1 are the wire again
"""


def test_the_wire_is_private_while_serving_and_given_back_after() -> None:
    ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    r = subprocess.run(
        [sys.executable, "-c", SERVE],
        input=json.dumps(ping) + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [json.loads(lines[0]), lines[1:]] == [ping, ["restored"]]
    assert "stray output" in r.stderr
