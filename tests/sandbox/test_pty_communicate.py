"""``communicate()`` on a command started with a terminal (``pty=True``).

The terminal's master side is the command's stdin and stdout at once. ``communicate`` reads
its output to the end and ends the input the way a person would, with the terminal's EOF
character; closing the master instead hangs the command up (it got SIGHUP and its output was
lost: ``(None, None)``, returncode -1, before this was fixed).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence import Policy, Session, UsageError

pytestmark = pytest.mark.sandbox


@pytest.fixture
def session() -> Iterator[Session]:
    with (
        tempfile.TemporaryDirectory(dir="/var/tmp") as ws,
        Session(Policy(workspace=ws), cwd=ws, config=False) as s,
    ):
        yield s


def _nonce() -> str:
    return uuid.uuid4().hex[:12]


def test_output_of_a_command_that_reads_nothing(session: Session) -> None:
    nonce = _nonce()
    p = session.spawn(["sh", "-c", f"echo out-{nonce}-$((6*7)); tty"], pty=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0
    assert err is None
    lines = out.decode().splitlines()
    assert lines[0] == f"out-{nonce}-42"  # computed inside: the sandbox ran it
    assert lines[1].startswith("/dev/pts/")


def test_a_whole_line_of_input(session: Session) -> None:
    nonce = _nonce()
    p = session.spawn(["sh", "-c", "read x; echo got-$x-$((6*7))"], pty=True)
    out, _ = p.communicate(f"{nonce}\n".encode(), timeout=30)
    assert p.returncode == 0
    assert f"got-{nonce}-42" in out.decode()


def test_input_without_a_newline_still_ends(session: Session) -> None:
    """A partial line needs two EOF characters: the first hands the line over, the second
    is the end (``cat`` ends only on the second)."""
    nonce = _nonce()
    p = session.spawn(["sh", "-c", "cat; echo; echo done-$((6*7))"], pty=True)
    out, _ = p.communicate(nonce.encode(), timeout=30)
    assert p.returncode == 0
    text = out.decode()
    assert text.count(nonce) == 2  # the terminal's echo, then cat's copy
    assert "done-42" in text


def test_the_terminal_is_closed_after_communicate(session: Session) -> None:
    p = session.spawn(["true"], pty=True)
    p.communicate(timeout=30)
    with pytest.raises(UsageError, match="terminal is closed"):
        p.set_winsize(30, 100)


def test_async_input_ends_and_the_command_too(session: Session) -> None:
    nonce = _nonce()

    async def main() -> tuple[Any, Any, int | None]:
        p = await session.aspawn(["sh", "-c", "cat; echo done-$((6*7))"], pty=True)
        out, err = await asyncio.wait_for(p.communicate(f"{nonce}\n".encode()), 30)
        return out, err, p.returncode

    out, err, rc = asyncio.run(main())
    assert rc == 0 and err is None
    assert out.decode().count(nonce) == 2 and "done-42" in out.decode()


def test_a_cancelled_async_communicate_leaves_nothing_unretrieved(session: Session) -> None:
    seen: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: seen.append(str(ctx)))
        p = await session.aspawn(["sleep", "30"], stdout=-1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(p.communicate(), 0.5)
        p.kill()
        await p.wait()
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    assert not [s for s in seen if "never retrieved" in s], seen


def test_nothing_written_outside(session: Session) -> None:
    """The input reaches the command inside the sandbox: a line writing outside is refused."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as outside:
        target = Path(outside, "escaped")
        p = session.spawn(["sh"], pty=True)
        out, _ = p.communicate(f"echo x > {target} || echo refused-$((6*7))\n".encode(), timeout=30)
        assert p.returncode == 0
        assert "refused-42" in out.decode()
        assert not target.exists()
