"""``ringfence mcp``: a stdio MCP server that gives a model a sandboxed shell.

(No ``from __future__ import annotations`` here: the SDK reads the tools' annotations at
runtime.)

Built on the official ``mcp`` SDK, 1.x or 2.x (the ``[mcp]`` extra; mcp_compat.py bridges
the two). One warm :class:`Session` per server; every tool call runs inside it, so the
boundary is the one ``ringfence explain`` shows for the same flags. The tools:

- ``run_command``: a command line (``/bin/sh -c``) or an argv list, to completion, with exit
  code, capped stdout/stderr, duration, what the boundary refused and what would allow it;
- ``start_command`` / ``read_output`` / ``write_stdin`` / ``kill``: long-running and
  interactive processes (a terminal when asked), at most ``--max-processes`` at once;
- ``request_widening``: the agent asks for one widening (a writable directory, a domain,
  the network); the person is asked through MCP elicitation, and a grant holds for the
  server's later commands (a new session under the widened policy; audited);
- ``describe_sandbox``: the policy in plain words, so the model knows what it can do.

Output reaches the model without terminal escape sequences unless a call asks for ``raw``.

Approvals: with ``--approval`` (or ``--rules``), a command the policy would ask about is put
to the person through MCP elicitation when the client supports it; otherwise it is refused
with the reason (and nothing runs).
"""

import asyncio
import threading
from typing import Any

from pydantic import BaseModel, Field

from ringfence.approval.decide import ASK
from ringfence.display import printable
from ringfence.errors import ApprovalRefused, RingfenceError
from ringfence.mcp_compat import Ask, Context, Outcome, Server, ToolError, add_tool
from ringfence.mcp_tools import (
    ArgumentError,
    Live,
    SandboxTools,
    argv_of,
    cap,
    describe_plan,
    shown,
    to_allow,
)
from ringfence.session import DEVNULL, PIPE, TimeoutExpired

__all__ = ["SandboxTools", "build_app", "describe_plan", "serve"]

DEFAULT_TIMEOUT = 120.0
SETTLE_MS = 500  # read_output: quiet this long after some output, and the output has settled


class Confirm(BaseModel):
    """What the person is asked: run this command (in the sandbox)?"""

    run: bool = Field(description="Run it (inside the sandbox)?")


class Grant(BaseModel):
    """What the person is asked: widen the sandbox like this? No default: only an explicit
    yes grants."""

    allow: bool = Field(description="Allow this widening for the agent's later commands?")


def _result(proc: Any, stdout: str, stderr: str, *, timed_out: bool = False) -> dict[str, Any]:
    from ringfence.policy.gitdir import describe_finding

    return {
        "exit_code": proc.returncode,
        "stdout": cap(stdout),
        "stderr": cap(stderr),
        "duration_s": round(proc.duration or 0.0, 3),
        "timed_out": timed_out,
        "refused": [printable(_violation(v)) for v in proc.violations],
        "created": [printable(describe_finding(c)) for c in proc.created],
        "to_allow": to_allow(proc.widenings),
    }


def _violation(v: dict[str, Any]) -> str:
    if v.get("kind") == "filesystem":
        return f"{v['op']} {v['path']} ({v['rule']})"
    if v.get("kind") == "network" and v.get("op") == "resolve":  # a name: no port
        return f"resolve {v['host']} ({v['rule']})"
    if v.get("kind") == "network":
        return f"{v.get('op', 'connect')} {v['host']}:{v['port']} ({v['rule']})"
    return "more refusals not listed"


def _checked(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ArgumentError as e:
        raise ToolError(str(e)) from None


def _approval(tools: SandboxTools) -> Any:
    """The commands' question step: the person is asked, through the client, when the
    approval policy says so."""

    def approval(command: str | list[str]) -> Any:
        d = tools.decision(_checked(argv_of, command))
        if d is None or d.action != ASK:
            return None
        shown_cmd = printable(" && ".join(" ".join(c) for c in d.commands))
        return Ask(f"{printable(d.reason)}\nRun `{shown_cmd}` in the sandbox?", Confirm)

    # Without an approval step there is nothing to decide (only the command's shape is
    # checked): answer on the event loop, not in a worker thread.
    approval.inline = tools.gate is None  # type: ignore[attr-defined]
    return approval


def _answer(outcome: Outcome) -> bool | None:
    """The person's answer for this call, None when nobody can be asked. Only read when the
    session's approval step asks (the question step decided whether to)."""
    if outcome.unreachable:
        return None
    if not outcome.asked:
        return True
    return bool(getattr(outcome.answer, "run", False))


def _not_run(e: Exception, argv: list[str], ans: bool | None, raw: bool) -> dict[str, Any]:
    """run_command's answer for a command that timed out or never started."""
    if isinstance(e, TimeoutExpired):
        return {
            "exit_code": None,
            "stdout": cap(shown(e.stdout or b"", raw)),
            "stderr": cap(shown(e.stderr or b"", raw)),
            "timed_out": True,
            "duration_s": e.timeout,
            "note": f"killed (with everything it started) after {e.timeout:g} s",
        }
    if isinstance(e, ApprovalRefused):
        return _refused(e, ans)
    assert isinstance(e, OSError)
    code = 127 if isinstance(e, FileNotFoundError) else 126
    return {"exit_code": code, "stdout": "", "stderr": f"{argv[0]}: {e.strerror}"}


def _refused(e: ApprovalRefused, ans: bool | None) -> dict[str, Any]:
    reason = getattr(e.decision, "reason", str(e))
    if ans is None and getattr(e.decision, "action", None) == ASK:
        reason += " (this MCP client does not support elicitation)"
    return {"exit_code": None, "ran": False, "refused": [printable(f"approval: {reason}")]}


def _run_with(tools: SandboxTools, ans: bool | None, fn: Any) -> Any:
    """``fn()`` with the person's answer where the session's approver reads it."""
    tools.answers[threading.get_ident()] = ans
    try:
        return fn()
    finally:
        tools.answers.pop(threading.get_ident(), None)


def build_app(tools: SandboxTools) -> Any:
    app = Server("ringfence", instructions=tools.describe())
    _add_command_tools(app, tools)
    _add_process_tools(app, tools)
    _add_widening_tool(app, tools)

    async def describe_sandbox() -> str:
        """What commands can and cannot do here, in plain words."""
        return tools.describe()

    add_tool(app, describe_sandbox)
    return app


def _add_command_tools(app: Any, tools: SandboxTools) -> None:
    """run_command and start_command, asked about first under an approval policy."""

    async def run_command(
        command: str | list[str],
        ctx: Context,
        cwd: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT,
        raw: bool = False,
        *,
        outcome: Outcome,
    ) -> dict[str, Any]:
        """Run a command in the sandbox and wait for it. `command` is a shell line (run by
        /bin/sh -c) or an argv list; `cwd` is relative to (and must stay inside) the
        workspace. Returns exit_code, stdout, stderr (each capped; terminal escape sequences
        removed unless `raw`), duration_s, timed_out, what the sandbox refused (`refused`)
        and what would allow it (`to_allow`: pass an entry's kind and value to
        request_widening)."""
        argv = _checked(argv_of, command)
        if not 0 < timeout_s <= 24 * 3600:
            raise ToolError("timeout_s must be between 0 and 86400 seconds")
        where = _checked(tools.workspace_cwd, cwd)
        ans = _answer(outcome)
        # stdin: never the server's own (the protocol)
        how: dict[str, Any] = {"stdin": DEVNULL, "capture_output": True}
        how.update(cwd=where, timeout=timeout_s)

        def go() -> dict[str, Any]:
            try:
                with tools.using() as session:
                    r = session.run(argv, **how)
            except (TimeoutExpired, ApprovalRefused, FileNotFoundError, PermissionError) as e:
                return _not_run(e, argv, ans, raw)
            return _result(r, shown(r.stdout, raw), shown(r.stderr, raw))

        if tools.gate is not None:  # the approval step reads this thread's answer
            return await asyncio.to_thread(_run_with, tools, ans, go)
        # No approval step: sent and awaited from the loop (aio_process), no worker thread.
        try:
            async with tools.run_slots, tools.using_here() as session:
                r = await session.arun(argv, **how)
        except (TimeoutExpired, ApprovalRefused, FileNotFoundError, PermissionError) as e:
            return _not_run(e, argv, ans, raw)
        return _result(r, shown(r.stdout, raw), shown(r.stderr, raw))

    async def start_command(
        command: str | list[str],
        ctx: Context,
        cwd: str | None = None,
        pty: bool = False,
        *,
        outcome: Outcome,
    ) -> dict[str, Any]:
        """Start a long-running or interactive command in the sandbox and return its id at
        once. Then use read_output, write_stdin and kill. `pty`: give it a terminal."""
        argv = _checked(argv_of, command)
        where = _checked(tools.workspace_cwd, cwd)
        running = [k for k, v in tools.live.items() if v.proc.poll() is None]
        if len(running) >= tools.max_processes:
            raise ToolError(
                f"{len(running)} processes are running (the limit is {tools.max_processes}): "
                "kill one first"
            )
        ans = _answer(outcome)

        def go() -> dict[str, Any]:
            try:
                with tools.using() as session:
                    if pty:
                        proc = session.spawn(argv, cwd=where, pty=True)
                    else:
                        proc = session.spawn(argv, cwd=where, stdin=PIPE, stdout=PIPE, stderr=PIPE)
                    pid = tools.next_id()
                    live = Live(proc, argv, pty, session)
                    live.start_readers()
                    tools.live[pid] = live
            except ApprovalRefused as e:
                return _refused(e, ans)
            except (FileNotFoundError, PermissionError) as e:
                raise ToolError(f"{argv[0]}: {e.strerror}") from None
            return {"id": pid, "running": True}

        return await asyncio.to_thread(_run_with, tools, ans, go)

    add_tool(app, run_command, question=_approval(tools), schema=Confirm)
    add_tool(app, start_command, question=_approval(tools), schema=Confirm)


async def _joined(readers: list[threading.Thread], timeout: float = 1.0) -> None:
    """Wait (up to ``timeout`` each) for a process's output readers to take its last output;
    one that has finished already costs no trip to a worker thread."""
    for t in readers:
        if t.is_alive():
            await asyncio.to_thread(t.join, timeout)


def _add_process_tools(app: Any, tools: SandboxTools) -> None:
    """read_output, write_stdin and kill: the started processes."""

    def _live(pid: str) -> Live:
        live = tools.live.get(pid)
        if live is None:
            raise ToolError(f"no process with id {pid!r} (start_command gives ids)")
        return live

    async def read_output(
        id: str, wait_ms: int = 0, settle_ms: int = SETTLE_MS, raw: bool = False
    ) -> dict[str, Any]:
        """All output of a started process since the last read. Waits up to wait_ms for it
        to settle: the process ends, or it printed something and then nothing for
        settle_ms (so a terminal's echo of the input is not the whole answer). Says whether
        it is still running and, once it ended, its exit code and what was refused. Terminal
        escape sequences are removed unless `raw`."""
        if not 0 <= wait_ms <= 600_000:
            raise ToolError("wait_ms must be between 0 and 600000")
        if not 0 <= settle_ms <= 60_000:
            raise ToolError("settle_ms must be between 0 and 60000")
        live = _live(id)
        await asyncio.to_thread(live.settle, wait_ms / 1000, settle_ms / 1000)
        code = live.proc.poll()
        if code is not None:
            await _joined(live.readers)
        out, err, dropped = live.take(raw=raw)
        result: dict[str, Any] = {"stdout": cap(out), "stderr": cap(err), "running": code is None}
        if code is not None:
            result.update(_result(live.proc, out, err))
            tools.reap()
        if dropped:
            result["note"] = f"{dropped} bytes of older output were dropped (read more often)"
        return result

    async def write_stdin(id: str, data: str, close: bool = False) -> dict[str, Any]:
        """Write text to a started process's stdin (or its terminal); `close` ends stdin."""
        live = _live(id)
        if live.proc.poll() is not None:
            raise ToolError(f"process {id} has exited")
        stream = live.proc.stdin
        if stream is None:
            raise ToolError(f"process {id} has no stdin")

        def write() -> None:
            stream.write(data.encode())
            stream.flush()
            if close and not live.pty:
                stream.close()

        try:
            await asyncio.to_thread(write)
        except (BrokenPipeError, ValueError, OSError) as e:
            raise ToolError(f"cannot write to process {id}: {e}") from None
        return {"written": len(data), "closed": close and not live.pty}

    async def kill(id: str, raw: bool = False) -> dict[str, Any]:
        """End a started process and everything it started; returns its last output."""
        live = _live(id)
        live.proc.kill()
        await asyncio.to_thread(live.proc.wait, 10)
        await _joined(live.readers)
        out, err, _ = live.take(raw=raw)
        tools.live.pop(id, None)
        tools.reap()
        return _result(live.proc, out, err)

    for fn in (read_output, write_stdin, kill):
        add_tool(app, fn)


def _add_widening_tool(app: Any, tools: SandboxTools) -> None:
    """request_widening: the agent asks, the person decides, the rules bound both."""

    def widening(kind: str, value: str, reason: str) -> Any:
        """Check the widening and, when it may be granted, the question for the person."""
        try:
            proposal = tools.propose(kind, value)
        except RingfenceError as e:
            return {"granted": False, "refused": printable(str(e))}
        if proposal is None:
            return {"granted": True, "note": "already allowed: nothing changed"}
        question = proposal.question(reason)
        tools.asked[(kind, value, reason)] = question
        return Ask(question, Grant)

    async def request_widening(
        kind: str, value: str, reason: str, ctx: Context, *, outcome: Outcome
    ) -> dict[str, Any]:
        """Ask the person to widen the sandbox for this server's later commands: `kind`
        "writable_path" (`value`: an absolute directory), "domain" (`value`: one host name,
        optionally with :port) or "network" (`value`: "on"); `reason`: why, in a sentence the
        person reads. Entries of a refusal's `to_allow` carry kind and value. Returns
        granted (and what changed) or why not: only the person grants, and never beyond the
        rules (no home, system or protected directory) or the administrator's limits."""
        asked = tools.asked.pop((kind, value, reason), None)
        if outcome.value is not None:  # refused by the rules, or nothing to widen
            result: dict[str, Any] = outcome.value
            decision = "refused" if result.get("refused") else "unchanged"
            tools.record(kind, value, reason, decision, str(result.get("refused", "")))
            return result
        if outcome.unreachable:
            tools.record(kind, value, reason, "unasked", "the client cannot elicit")
            return {
                "granted": False,
                "refused": "this MCP client cannot ask the person (no elicitation); the user "
                "can restart the server with the flag instead",
            }
        if not (outcome.asked and getattr(outcome.answer, "allow", False) is True):
            tools.record(kind, value, reason, "declined")
            return {"granted": False, "refused": "the person declined"}

        def grant() -> dict[str, Any]:
            with tools.granting:  # two grants at once: the second widens the first's policy
                return granted()

        def granted() -> dict[str, Any]:
            try:  # again: the sandbox may have changed while the person was asked
                proposal = tools.propose(kind, value)
            except RingfenceError as e:
                tools.record(kind, value, reason, "refused", str(e))
                return {"granted": False, "refused": printable(str(e))}
            if proposal is None:
                return {"granted": True, "note": "already allowed: nothing changed"}
            if proposal.question(reason) != asked:
                tools.record(kind, value, reason, "refused", "changed while asked")
                return {"granted": False, "refused": "it changed while the person was asked"}
            tools.grant(proposal)
            flags = " ".join(w["flag"] for w in proposal.widenings)
            tools.record(kind, value, reason, "granted", flags)
            return {"granted": True, "now": printable(proposal.words()), "flags": flags}

        return await asyncio.to_thread(grant)

    add_tool(app, request_widening, question=widening, schema=Grant)


def serve(tools: SandboxTools) -> None:
    app = build_app(tools)
    try:
        app.run("stdio")
    finally:
        tools.close()
