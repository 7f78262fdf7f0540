"""``ringfence mcp`` driven by the MCP SDK's own client over stdio, against the real sandbox.

Every test runs twice: with the server on the SDK's 2.x line (the test virtualenv's) and on
its 1.x line (a virtualenv made once per checkout with ``mcp==MCP1``, ringfence's source put
on its path). The client is always the test virtualenv's 2.x ``Client``; the 2.x server speaks
the newest protocol with it, the 1.x one an older protocol (elicitation mid-call).

Runs as the current user only: the server needs the ``[mcp]`` extra, which lives in the test
virtualenvs (the sandbox behaviour underneath is tested for both users elsewhere).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Confinement
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters

pytestmark = pytest.mark.sandbox
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# The 1.x release the server is tested on (the newest of the line when this was written).
MCP1 = os.environ.get("RINGFENCE_TEST_MCP1", "1.30.0")


def _sdk1_python() -> str:
    """A Python with mcp==MCP1 and ringfence's own dependencies, ringfence's source on its
    path (a .pth file): made once per checkout and version, under a lock."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = hashlib.sha256(f"{ROOT}:{MCP1}:{py}".encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"ringfence-test-mcp{MCP1}-{key}"
    python = venv / "bin" / "python"
    done = venv / ".complete"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", f"mcp=={MCP1}",
                 "tree-sitter>=0.23", "tree-sitter-bash>=0.23"],
                check=True, timeout=600,
            )  # fmt: skip
            site = subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            Path(site, "ringfence-src.pth").write_text(str(ROOT / "src") + "\n")
            done.touch()
    return str(python)


@pytest.fixture(scope="session", params=["mcp2", "mcp1"])
def server_python(request: pytest.FixtureRequest) -> str:
    """The Python the server runs on: the test virtualenv's (SDK 2.x) or the 1.x one."""
    assert sysconfig.get_path("purelib")  # the test virtualenv has the 2.x SDK
    return sys.executable if request.param == "mcp2" else _sdk1_python()


@pytest.fixture
def outside() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ringfence-mcp-out-", dir="/var/tmp"))
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


class Server:
    """How to start ``ringfence mcp`` for one test."""

    def __init__(self, python: str, ws: Path) -> None:
        self.python = python
        self.ws = ws

    def __call__(
        self,
        body: Callable[[Client], Awaitable[None]],
        *flags: str,
        elicit: Callable[..., Any] | None = None,
    ) -> None:
        server = StdioServerParameters(
            command=self.python,
            args=["-P", "-m", "ringfence", "mcp", "--workspace", str(self.ws), *flags],
            cwd=str(self.ws),
            env=_xdg(),  # the SDK passes only a short list of variables on; these must go too
        )

        async def main() -> None:
            async with Client(server, elicitation_callback=elicit) as client:
                await body(client)

        asyncio.run(asyncio.wait_for(main(), 120))


@pytest.fixture
def serve(server_python: str, ws: Path) -> Server:
    return Server(server_python, ws)


TOOLS = {"run_command", "start_command", "read_output", "write_stdin", "kill"}


def test_tools_are_listed_and_commands_run_with_their_results(
    serve: Server, ws: Path, confinement: Confinement
) -> None:
    async def body(c: Client) -> None:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == TOOLS | {"request_widening", "describe_sandbox"}
        # 2.x speaks the newest protocol (questions ride the call's result); 1.x an older one
        # (questions are requests mid-call).
        newest = c.protocol_version >= "2026-07-28"
        assert newest is (serve.python == sys.executable), c.protocol_version
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

    serve(body)


def test_a_write_outside_the_workspace_is_refused_with_what_would_allow_it(
    serve: Server, outside: Path
) -> None:
    async def body(c: Client) -> None:
        r = _data(await c.call_tool("run_command", {"command": f"touch {outside}/x"}))
        assert r["exit_code"] == 1
        assert r["refused"] == [f"openat {outside}/x (outside writable roots)"]
        assert r["to_allow"] == [
            {"kind": "writable_path", "value": str(outside), "flag": f"--writable {outside}",
             "because": f"openat {outside}/x"}
        ]  # fmt: skip

    serve(body)
    assert not (outside / "x").exists()


def test_a_timeout_kills_the_command_and_says_so(serve: Server, confinement: Confinement) -> None:
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

    serve(body)


def test_a_long_running_process_is_driven_through_start_read_write_kill(serve: Server) -> None:
    async def body(c: Client) -> None:
        started = _data(await c.call_tool("start_command", {"command": ["cat"]}))
        pid = started["id"]
        await c.call_tool("write_stdin", {"id": pid, "data": "one\n"})
        got = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 5000}))
        assert got["stdout"] == "one\n" and got["running"] is True
        await c.call_tool("write_stdin", {"id": pid, "data": "two\n", "close": True})
        got = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 10000}))
        assert (got["stdout"], got["running"], got["exit_code"]) == ("two\n", False, 0)
        tty = _data(await c.call_tool("start_command", {"command": "tty; sleep 30", "pty": True}))
        seen = _data(await c.call_tool("read_output", {"id": tty["id"], "wait_ms": 5000}))
        assert seen["stdout"].startswith("/dev/pts/")
        killed = _data(await c.call_tool("kill", {"id": tty["id"]}))
        assert killed["exit_code"] == -9
        gone = _data(await c.call_tool("read_output", {"id": tty["id"]}))
        assert "no process with id" in gone["error"]

    serve(body)


def test_read_output_waits_for_a_terminal_answer_to_settle_and_strips_escapes(
    serve: Server, confinement: Confinement
) -> None:
    """With a pty, the first bytes back are the terminal's echo of the input: read_output
    waits for the command's answer too, and returns it as plain text."""

    async def body(c: Client) -> None:
        cmd = confinement.argv(["bash", "--norc", "--noprofile", "-i"])
        sh = _data(await c.call_tool("start_command", {"command": cmd, "pty": True}))
        pid = sh["id"]
        first = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 5000}))
        assert confinement.line in first["stdout"]
        line = "sleep 0.2; printf '\\033[31m%s\\033[0m\\n' $((6*7))\n"
        await c.call_tool("write_stdin", {"id": pid, "data": line})
        got = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 10000}))
        lines = got["stdout"].split("\n")
        assert "42" in lines, got  # the answer, after the echo, without its colour
        assert not any(ch in got["stdout"] for ch in "\x1b\r"), got
        await c.call_tool("write_stdin", {"id": pid, "data": "printf '\\033[1mbold\\n'\n"})
        raw = _data(await c.call_tool("read_output", {"id": pid, "wait_ms": 10000, "raw": True}))
        assert "\x1b[1mbold\r\n" in raw["stdout"]
        await c.call_tool("kill", {"id": pid})
        colour = "printf '\\033[32mgreen\\033[0m \\033]0;title\\007done\\n'"
        plain = _data(await c.call_tool("run_command", {"command": colour}))
        assert plain["stdout"] == "green done\n"
        kept = _data(await c.call_tool("run_command", {"command": colour, "raw": True}))
        assert kept["stdout"] == "\x1b[32mgreen\x1b[0m \x1b]0;title\x07done\n"

    serve(body)


def test_bad_arguments_are_one_readable_sentence_and_the_server_keeps_serving(
    serve: Server, ws: Path, confinement: Confinement
) -> None:
    async def body(c: Client) -> None:
        async def error(tool: str, args: dict[str, Any]) -> str:
            r = await c.call_tool(tool, args)
            assert r.is_error, args
            return str(r.content[0].text)

        for args in (
            {"command": ""},
            {"command": []},
            {"command": "true", "cwd": "../.."},
            {"command": "true", "timeout_s": -1},
        ):
            await error("run_command", args)
        typed = await error("run_command", {"command": "true", "timeout_s": "soon"})
        assert typed == 'run_command: timeout_s must be a number, not "soon".'
        both = await error("run_command", {"command": 5, "cwd": ["x"]})
        assert both == (
            "run_command: command must be a string or a list of strings, not 5; "
            'cwd must be a string, not ["x"].'
        )
        assert await error("run_command", {"cwd": "."}) == (
            "run_command: command is required (a string or a list of strings)."
        )
        unknown = await error("run_command", {"command": "true", "timeout": 5})
        assert unknown.startswith("run_command has no argument 'timeout' (its arguments: ")
        assert await error("read_output", {"id": "1", "wait_ms": "x"}) == (
            'read_output: wait_ms must be a whole number, not "x".'
        )
        assert await error("write_stdin", {"id": "42", "data": "x"}) == (
            "write_stdin: no process with id '42' (start_command gives ids)"
        )
        assert await error("read_output", {"id": "1", "wait_ms": -5}) == (
            "read_output: wait_ms must be between 0 and 600000"
        )
        cmd = confinement.argv(["pwd"])
        ok = _data(await c.call_tool("run_command", {"command": cmd, "cwd": "."}))
        assert confinement.strip(ok["stdout"], ok["stderr"]) == f"{ws}\n"

    serve(body)


def test_the_live_process_cap_holds(serve: Server) -> None:
    async def body(c: Client) -> None:
        for _ in range(2):
            assert "id" in _data(await c.call_tool("start_command", {"command": "sleep 30"}))
        third = await c.call_tool("start_command", {"command": "sleep 30"})
        assert third.is_error and "the limit is 2" in third.content[0].text

    serve(body, "--max-processes", "2")


def test_run_command_calls_run_a_bounded_number_at_once(serve: Server, ws: Path) -> None:
    """Review 27: without a worker thread per call, run_command had no bound; a client could
    start any number of sandboxes at once. Now at most RUN_AT_ONCE run, the rest wait their
    turn and run too (each records when it ran, from inside its sandbox)."""
    from ringfence.mcp_tools import RUN_AT_ONCE

    count = RUN_AT_ONCE + 4

    async def body(c: Client) -> None:
        got = await asyncio.gather(
            *(
                c.call_tool(
                    "run_command",
                    {"command": f"date +%s.%N > start-{i}; sleep 1; date +%s.%N > end-{i}"},
                )
                for i in range(count)
            )
        )
        assert [_data(r)["exit_code"] for r in got] == [0] * count

    serve(body)
    spans = [
        (float((ws / f"start-{i}").read_text()), float((ws / f"end-{i}").read_text()))
        for i in range(count)
    ]
    at_once = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 1 < at_once <= RUN_AT_ONCE, (at_once, RUN_AT_ONCE)


def _answer(run: bool | None) -> Callable[..., Any]:
    async def elicit(_context: Any, params: Any) -> types.ElicitResult:
        assert "touch made is not known to be safe" in params.message
        if run is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"run": run})

    return elicit


@pytest.mark.parametrize(("answer", "made"), [(True, True), (False, False), (None, False)])
def test_approvals_ask_the_person_through_elicitation(
    serve: Server, ws: Path, answer: bool | None, made: bool
) -> None:
    async def body(c: Client) -> None:
        safe = _data(await c.call_tool("run_command", {"command": "ls"}))
        assert safe["exit_code"] == 0  # known-safe: nobody is asked
        r = _data(await c.call_tool("run_command", {"command": "touch made"}))
        if made:
            assert r["exit_code"] == 0
        else:
            assert r["ran"] is False and "declined when asked" in r["refused"][0]

    serve(body, "--approval", "untrusted", elicit=_answer(answer))
    assert (ws / "made").exists() is made


def test_without_elicitation_what_needs_a_person_is_refused_with_the_reason(
    serve: Server, ws: Path
) -> None:
    async def body(c: Client) -> None:
        r = _data(await c.call_tool("run_command", {"command": "touch made"}))
        assert r["ran"] is False
        assert "not known to be safe" in r["refused"][0]
        assert "does not support elicitation" in r["refused"][0]

    serve(body, "--approval", "untrusted")
    assert not (ws / "made").exists()


class Person:
    """The elicitation callback: records every question, answers ``allow``."""

    def __init__(self, allow: bool | None) -> None:
        self.allow = allow
        self.asked: list[str] = []

    async def __call__(self, _context: Any, params: Any) -> types.ElicitResult:
        self.asked.append(params.message)
        if self.allow is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"allow": self.allow})


def _audit() -> list[dict[str, Any]]:
    path = Path(os.environ["XDG_STATE_HOME"], "ringfence", "audit.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_granted_widening_holds_for_later_commands_and_is_audited(
    serve: Server, outside: Path, confinement: Confinement
) -> None:
    person = Person(allow=True)
    reason = "write the build output \x1b[2J\x1b]0;pwned\x07 there"

    async def body(c: Client) -> None:
        cat = _data(await c.call_tool("start_command", {"command": ["cat"]}))
        r = _data(await c.call_tool("run_command", {"command": f"touch {outside}/x"}))
        assert r["exit_code"] == 1
        wanted = r["to_allow"][0]
        got = _data(
            await c.call_tool(
                "request_widening",
                {"kind": wanted["kind"], "value": wanted["value"], "reason": reason},
            )
        )
        assert got == {
            "granted": True,
            "now": f"make the directory {outside} writable",
            "flags": f"--writable {outside}",
        }
        cmd = confinement.shell(f"touch {outside}/x && echo made")
        again = _data(await c.call_tool("run_command", {"command": cmd}))
        assert confinement.strip(again["stdout"], again["stderr"]) == "made\n"
        assert not [v for v in again["refused"] if str(outside) in v]
        text = _data(await c.call_tool("describe_sandbox", {}))
        assert f"Other writable directories: {outside}" in text
        # The process started before the grant runs on, in the session it started in.
        await c.call_tool("write_stdin", {"id": cat["id"], "data": "still here\n"})
        out = _data(await c.call_tool("read_output", {"id": cat["id"], "wait_ms": 5000}))
        assert out["stdout"] == "still here\n"
        await c.call_tool("kill", {"id": cat["id"]})

    serve(body, elicit=person)
    assert (outside / "x").exists()
    (question,) = person.asked
    assert str(outside) in question
    assert "\x1b" not in question and "\x07" not in question  # shown escaped, never raw
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in question
    (record,) = [r for r in _audit() if r["type"] == "widening" and r["value"] == str(outside)]
    assert (record["kind"], record["decision"]) == ("writable_path", "granted")
    assert record["detail"] == f"--writable {outside}"


def test_a_declined_widening_changes_nothing(serve: Server, outside: Path) -> None:
    person = Person(allow=None)

    async def body(c: Client) -> None:
        args = {"kind": "writable_path", "value": str(outside), "reason": "to build"}
        got = _data(await c.call_tool("request_widening", args))
        assert got == {"granted": False, "refused": "the person declined"}
        r = _data(await c.call_tool("run_command", {"command": f"touch {outside}/x"}))
        assert r["exit_code"] == 1 and r["refused"]
        person.allow = False  # accepted the form, but said no
        got = _data(await c.call_tool("request_widening", args))
        assert got == {"granted": False, "refused": "the person declined"}
        net = _data(
            await c.call_tool(
                "request_widening", {"kind": "network", "value": "on", "reason": "pip"}
            )
        )
        assert net["granted"] is False
        text = _data(await c.call_tool("describe_sandbox", {}))
        assert "Network: off" in text and str(outside) not in text

    serve(body, elicit=person)
    assert len(person.asked) == 3
    assert "turn the network ON" in person.asked[2]
    assert not (outside / "x").exists()
    decisions = [r["decision"] for r in _audit() if r["type"] == "widening"]
    assert decisions[-3:] == ["declined"] * 3


def test_widenings_the_rules_refuse_are_refused_without_asking(serve: Server, ws: Path) -> None:
    person = Person(allow=True)
    home = os.path.expanduser("~")

    async def body(c: Client) -> None:
        async def ask(kind: str, value: str) -> Any:
            return _data(
                await c.call_tool("request_widening", {"kind": kind, "value": value, "reason": "x"})
            )

        for kind, value, why in (
            ("writable_path", "/", "the root or a top-level directory"),
            ("writable_path", "/etc/ssl", "a system directory"),
            ("writable_path", home, "cannot be made writable"),
            ("writable_path", str(ws.parent), "shared by every user"),
            ("writable_path", str(ws / ".git" / "hooks"), "does not exist"),
            ("writable_path", "relative/dir", "is relative"),
            ("domain", "*.example.com", "not a wildcard"),
            ("domain", "https://example.com/x", "not a URL"),
            ("network", "allowlist", "'on'"),
            ("sockets", "/run/x.sock", "not a widening that can be asked for"),
        ):
            got = await ask(kind, value)
            assert got["granted"] is False and why in got["refused"], (kind, value, got)
        assert await ask("writable_path", str(ws)) == {
            "granted": True,
            "note": "already allowed: nothing changed",
        }

    serve(body, elicit=person)
    assert person.asked == []


def test_without_elicitation_a_widening_is_refused(serve: Server, outside: Path) -> None:
    async def body(c: Client) -> None:
        args = {"kind": "writable_path", "value": str(outside), "reason": "to build"}
        got = _data(await c.call_tool("request_widening", args))
        assert got["granted"] is False and "cannot ask the person" in got["refused"]

    serve(body)


def test_a_domain_asked_for_with_the_network_off_becomes_an_allowlist(serve: Server) -> None:
    person = Person(allow=True)

    async def body(c: Client) -> None:
        args = {"kind": "domain", "value": "pypi.org", "reason": "install deps"}
        got = _data(await c.call_tool("request_widening", args))
        assert got["granted"] is True
        assert got["flags"] == "--network allowlist --allow-domain pypi.org"
        text = _data(await c.call_tool("describe_sandbox", {}))
        assert "Network: only through a proxy, to: pypi.org." in text

    serve(body, elicit=person)
    assert "pypi.org (ports 80 and 443)" in person.asked[0]


def test_the_mcp_agent_loop_example_widens_and_succeeds(
    server_python: str, ws: Path, outside: Path
) -> None:
    """examples/mcp_agent_loop.py, on the SDK line's own client and server."""
    r = subprocess.run(
        [server_python, str(EXAMPLES / "mcp_agent_loop.py"), str(ws), str(outside)],
        capture_output=True, text=True, timeout=120, check=False, env=os.environ | _xdg(),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"refused: ['openat {outside}/artifact (outside writable roots)']" in r.stdout
    assert f"to allow it: writable_path {outside}" in r.stdout
    assert f"make the directory {outside} writable" in r.stdout  # what the person saw
    assert "-> exit 0: built" in r.stdout and "the retried command succeeded" in r.stdout
    assert (outside / "artifact").read_text() == "built\n"


def test_the_examples_run(server_python: str, ws: Path) -> None:
    if server_python != sys.executable:
        pytest.skip("these examples use the 2.x client")
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
