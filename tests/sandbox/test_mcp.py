"""``ringfence mcp`` driven by the MCP SDK's own client over stdio, against the real sandbox.

Runs as the current user only: the server needs the ``[mcp]`` extra, which lives in the test
virtualenv (the sandbox behaviour underneath is tested for both users elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Confinement
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters

pytestmark = pytest.mark.sandbox
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def ws() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ringfence-mcp-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _xdg() -> dict[str, str]:
    """The tests' private config, cache and state directories (never the real home's)."""
    names = ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
    return {k: os.environ[k] for k in names if k in os.environ}


def _data(result: Any) -> Any:
    if result.is_error:
        return {"error": result.content[0].text}
    content = result.structured_content
    if content:
        return content.get("result", content)
    text = result.content[0].text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _session(
    ws: Path,
    body: Callable[[Client], Awaitable[None]],
    *flags: str,
    elicit: Callable[..., Any] | None = None,
) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ringfence", "mcp", "--workspace", str(ws), *flags],
        cwd=str(ws),
        env=_xdg(),  # the SDK passes only a short list of variables on; these must go too
    )

    async def main() -> None:
        async with Client(server, elicitation_callback=elicit) as client:
            await body(client)

    asyncio.run(asyncio.wait_for(main(), 120))


def test_tools_are_listed_and_commands_run_with_their_results(
    ws: Path, confinement: Confinement
) -> None:
    async def body(c: Client) -> None:
        names = {t.name for t in (await c.list_tools()).tools}
        expected = {"run_command", "start_command", "read_output", "write_stdin", "kill"}
        assert names == expected | {"describe_sandbox"}
        cmd = confinement.shell("echo hi; echo err >&2")
        ok = _data(await c.call_tool("run_command", {"command": cmd}))
        out = confinement.strip(ok["stdout"], ok["stderr"])
        assert (ok["exit_code"], out, ok["stderr"]) == (0, "hi\n", "err\n")
        bad = _data(await c.call_tool("run_command", {"command": ["sh", "-c", "exit 3"]}))
        assert bad["exit_code"] == 3
        missing = _data(await c.call_tool("run_command", {"command": ["no-such-tool"]}))
        assert missing["exit_code"] == 127
        text = _data(await c.call_tool("describe_sandbox", {}))
        assert f"Workspace (writable): {ws}" in text and "Network: off" in text

    _session(ws, body)


def test_a_write_outside_the_workspace_is_refused_and_reported(ws: Path) -> None:
    outside = Path(tempfile.mkdtemp(prefix="ringfence-mcp-out-", dir="/var/tmp"))
    try:

        async def body(c: Client) -> None:
            r = _data(await c.call_tool("run_command", {"command": f"touch {outside}/x"}))
            assert r["exit_code"] == 1
            assert r["refused"] == [f"openat {outside}/x (outside writable roots)"]
            assert r["to_allow"] == [f"--writable {outside}"]

        _session(ws, body)
        assert not (outside / "x").exists()
    finally:
        shutil.rmtree(outside)


def test_a_timeout_kills_the_command_and_says_so(ws: Path, confinement: Confinement) -> None:
    async def body(c: Client) -> None:
        r = _data(
            await c.call_tool(
                "run_command", {"command": "echo started; sleep 30 & wait", "timeout_s": 1}
            )
        )
        assert r["timed_out"] is True and r["stdout"] == "started\n"
        cmd = confinement.shell("echo still serving")
        again = _data(await c.call_tool("run_command", {"command": cmd}))
        assert confinement.strip(again["stdout"], again["stderr"]) == "still serving\n"

    _session(ws, body)


def test_a_long_running_process_is_driven_through_start_read_write_kill(ws: Path) -> None:
    async def body(c: Client) -> None:
        started = _data(await c.call_tool("start_command", {"command": ["cat"]}))
        pid = started["id"]
        await c.call_tool("write_stdin", {"id": pid, "data": "one\n"})
        got = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 5000}))
        assert got["stdout"] == "one\n" and got["running"] is True
        await c.call_tool("write_stdin", {"id": pid, "data": "two\n", "close": True})
        deadline = asyncio.get_running_loop().time() + 10
        out = ""
        while True:
            got = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 1000}))
            out += got["stdout"]
            if not got["running"] or asyncio.get_running_loop().time() > deadline:
                break
        assert out == "two\n" and got["exit_code"] == 0
        tty = _data(await c.call_tool("start_command", {"command": "tty; sleep 30", "pty": True}))
        seen = _data(await c.call_tool("read_output", {"id": tty["id"], "wait_ms": 5000}))
        assert seen["stdout"].startswith("/dev/pts/")
        killed = _data(await c.call_tool("kill", {"id": tty["id"]}))
        assert killed["exit_code"] == -9
        gone = _data(await c.call_tool("read_output", {"id": tty["id"]}))
        assert "no process with id" in gone["error"]

    _session(ws, body)


def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(
    ws: Path, confinement: Confinement
) -> None:
    async def body(c: Client) -> None:
        for args in (
            {"command": ""},
            {"command": []},
            {"command": "true", "cwd": "../.."},
            {"command": "true", "timeout_s": -1},
            {"nope": 1},
        ):
            r = await c.call_tool("run_command", args)
            assert r.is_error, args
        assert (await c.call_tool("write_stdin", {"id": "42", "data": "x"})).is_error
        assert (await c.call_tool("read_output", {"id": "1", "wait_ms": -5})).is_error
        cmd = confinement.argv(["pwd"])
        ok = _data(await c.call_tool("run_command", {"command": cmd, "cwd": "."}))
        assert confinement.strip(ok["stdout"], ok["stderr"]) == f"{ws}\n"

    _session(ws, body)


def test_the_live_process_cap_holds(ws: Path) -> None:
    async def body(c: Client) -> None:
        for _ in range(2):
            assert "id" in _data(await c.call_tool("start_command", {"command": "sleep 30"}))
        third = await c.call_tool("start_command", {"command": "sleep 30"})
        assert third.is_error and "the limit is 2" in third.content[0].text

    _session(ws, body, "--max-processes", "2")


def _answer(run: bool | None) -> Callable[..., Any]:
    async def elicit(_context: Any, params: Any) -> types.ElicitResult:
        assert "touch made is not known to be safe" in params.message
        if run is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"run": run})

    return elicit


@pytest.mark.parametrize(("answer", "made"), [(True, True), (False, False), (None, False)])
def test_approvals_ask_the_person_through_elicitation(
    ws: Path, answer: bool | None, made: bool
) -> None:
    async def body(c: Client) -> None:
        safe = _data(await c.call_tool("run_command", {"command": "ls"}))
        assert safe["exit_code"] == 0  # known-safe: nobody is asked
        r = _data(await c.call_tool("run_command", {"command": "touch made"}))
        if made:
            assert r["exit_code"] == 0
        else:
            assert r["ran"] is False and "declined when asked" in r["refused"][0]

    _session(ws, body, "--approval", "untrusted", elicit=_answer(answer))
    assert (ws / "made").exists() is made


def test_without_elicitation_what_needs_a_person_is_refused_with_the_reason(ws: Path) -> None:
    async def body(c: Client) -> None:
        r = _data(await c.call_tool("run_command", {"command": "touch made"}))
        assert r["ran"] is False
        assert "not known to be safe" in r["refused"][0]
        assert "does not support elicitation" in r["refused"][0]

    _session(ws, body, "--approval", "untrusted")
    assert not (ws / "made").exists()


def test_the_examples_run(ws: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "mcp_client.py"), str(ws)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hello from the sandbox" in r.stdout and "outside writable roots" in r.stdout
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "agent_loop.py"), str(ws)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "all scripted tool calls done" in r.stdout
