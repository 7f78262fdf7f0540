"""``ringfence.aio``: the session API awaited, mirroring ``Session`` method for method."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

import ringfence
from ringfence import AsyncSession, Policy, arun

pytestmark = pytest.mark.sandbox


def test_async_with_runs_confined_and_closes(tmp_path: Path) -> None:
    """The command proves it ran inside (RINGFENCE_SANDBOX and a nonce only it could write
    into the workspace), a write outside the workspace fails, text mode decodes, and the
    session is closed on leaving the block."""
    nonce = secrets.token_hex(8)
    escape = Path(f"/etc/ringfence-aio-escape-{nonce}")  # read-only in every sandbox
    ws = tmp_path / "ws"
    ws.mkdir()

    async def main() -> AsyncSession:
        async with AsyncSession(Policy(workspace=str(ws)), audit=False) as s:
            r = await s.run(
                ["sh", "-c", f'echo "$RINGFENCE_SANDBOX:{nonce}" > mark; cat mark; '
                 f"echo x > {escape}"],
                cwd=str(ws), capture_output=True, text=True,
            )  # fmt: skip
            assert r.stdout == f"1:{nonce}\n"
            assert r.returncode != 0 and "Read-only file system" in r.stderr
            p = await s.spawn(["cat"], stdin=ringfence.PIPE, stdout=ringfence.PIPE, text=True)
            out, _ = await p.communicate("é\n")
            assert out == "é\n" and await p.wait() == 0
        return s

    try:
        s = asyncio.run(main())
    finally:
        failed_open = escape.exists()
        escape.unlink(missing_ok=True)
    assert not failed_open
    assert (ws / "mark").read_text() == f"1:{nonce}\n"
    with pytest.raises(ringfence.SandboxError, match="closed"):
        s.session.run(["true"])


def test_arun_is_run_for_asyncio(tmp_path: Path) -> None:
    nonce = secrets.token_hex(8)
    r = asyncio.run(
        arun(
            ["sh", "-c", f'echo "$RINGFENCE_SANDBOX:{nonce}"'],
            policy=Policy(workspace=str(tmp_path)),
            capture_output=True,
            text=True,
        )
    )
    assert r.stdout == f"1:{nonce}\n"
