"""``ringfence mcp``: a stdio MCP server that gives a model a sandboxed shell.

(No ``from __future__ import annotations`` here: the SDK reads the tools' annotations at
runtime, and those name objects local to :func:`build_app`.)

Built on the official ``mcp`` SDK (2.x, the ``[mcp]`` extra). One warm :class:`Session` per
server; every tool call runs inside it, so the boundary is the one ``ringfence explain``
shows for the same flags. The tools:

- ``run_command``: a command line (``/bin/sh -c``) or an argv list, to completion, with exit
  code, capped stdout/stderr, duration and what the boundary refused;
- ``start_command`` / ``read_output`` / ``write_stdin`` / ``kill``: long-running and
  interactive processes (a terminal when asked), at most ``--max-processes`` at once;
- ``describe_sandbox``: the policy in plain words, so the model knows what it can do.

Approvals: with ``--approval`` (or ``--rules``), a command the policy would ask about is put
to the person through MCP elicitation when the client supports it; otherwise it is refused
with the reason (and nothing runs).
"""

import asyncio
import contextlib
import dataclasses
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel, Field

from ringfence.approval.decide import ASK, Decision
from ringfence.display import printable
from ringfence.engine.approval import ApprovalGate
from ringfence.errors import ApprovalRefused, RingfenceError
from ringfence.platforms.linux.plan import LinuxPlan
from ringfence.policy.model import Policy
from ringfence.policy.semantics import is_under
from ringfence.session import DEVNULL, PIPE, Process, Session, TimeoutExpired

MODEL_OUTPUT_CAP = 32 * 1024  # characters of each stream a model gets back from one call
BUFFER_CAP = 1 << 20  # bytes kept per stream of a started process between reads
DEFAULT_TIMEOUT = 120.0


class Confirm(BaseModel):
    """What the person is asked: run this command (in the sandbox)?"""

    run: bool = Field(description="Run it (inside the sandbox)?")


def cap(text: str, limit: int = MODEL_OUTPUT_CAP) -> str:
    """Head and tail of ``text`` with a marker of what was cut (models read both ends)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut by ringfence ...]\n{text[-half:]}"


def _argv(command: str | list[str]) -> list[str]:
    if isinstance(command, str):
        if not command.strip():
            raise ToolError("command is empty")
        return ["/bin/sh", "-c", command]
    if not command or not all(isinstance(a, str) for a in command) or not command[0]:
        raise ToolError("command must be a non-empty string or a non-empty list of strings")
    return list(command)


@dataclass
class _Live:
    """A started process and what it has printed since the last read."""

    proc: Process
    argv: list[str]
    pty: bool
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Event = field(default_factory=threading.Event)
    readers: list[threading.Thread] = field(default_factory=list)

    def start_readers(self) -> None:
        streams = [(self.proc.stdout, self.out)]
        if not self.pty:
            streams.append((self.proc.stderr, self.err))
        for stream, buf in streams:
            t = threading.Thread(target=self._pump, args=(stream, buf), daemon=True)
            t.start()
            self.readers.append(t)

    def _pump(self, stream: Any, buf: bytearray) -> None:
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""  # a pty's master reads EIO once the command is gone
            with self.lock:
                if chunk:
                    buf += chunk
                    if len(buf) > BUFFER_CAP:
                        self.dropped += len(buf) - BUFFER_CAP
                        del buf[: len(buf) - BUFFER_CAP]
                self.changed.set()
            if not chunk:
                return

    def take(self) -> tuple[str, str, int]:
        with self.lock:
            out, err, dropped = bytes(self.out), bytes(self.err), self.dropped
            self.out.clear()
            self.err.clear()
            self.dropped = 0
            self.changed.clear()
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), dropped


class SandboxTools:
    """The state behind the tools: the session, the policy, the live processes."""

    def __init__(
        self,
        policy: Policy,
        plan: LinuxPlan,
        *,
        gate: ApprovalGate | None = None,
        max_processes: int = 8,
        audit: bool = True,
    ) -> None:
        self.policy = policy
        self.plan = plan
        # The person is asked through the client (elicitation) before the session's gate
        # runs; the gate then reads the answer this thread got.
        self.gate = dataclasses.replace(gate, approver=self._approver) if gate else None
        self.max_processes = max_processes
        self._answer: dict[int, bool | None] = {}
        self.session = Session(_plan=plan, _gate=self.gate, audit=audit).start()
        self.live: dict[str, _Live] = {}
        self._ids = itertools.count(1)

    def _approver(self, decision: Decision) -> bool | None:
        """The answer the tool already got from the person (elicitation), per thread."""
        return self._answer.get(threading.get_ident())

    def close(self) -> None:
        for live in self.live.values():
            with contextlib.suppress(RingfenceError):
                live.proc.kill()
        self.session.close()

    def workspace_cwd(self, cwd: str | None) -> str:
        base = self.policy.workspace or self.plan.cwd
        if cwd is None:
            return self.plan.cwd
        path = os.path.realpath(os.path.join(base, cwd))
        if not is_under(path, base):
            raise ToolError(f"cwd must be inside the workspace {base}")
        if not os.path.isdir(path):
            raise ToolError(f"cwd {path} is not a directory")
        return path

    def decision(self, argv: list[str]) -> Decision | None:
        return self.gate.decide(argv) if self.gate is not None else None

    def describe(self) -> str:
        """The boundary as the model should know it, rendered from the compiled plan (what
        the kernel is told), not written by hand."""
        return describe_plan(self.plan, self.policy.workspace, self.gate)


def describe_plan(plan: LinuxPlan, workspace: str, gate: ApprovalGate | None) -> str:
    others = [r for r in plan.guard_roots if r != workspace]
    hidden = sorted({entry for _, entry in plan.hidden})
    lines = [
        f"Commands run inside a ringfence sandbox ({plan.mode}).",
        f"Workspace (writable): {workspace}",
        "Other writable directories: " + (", ".join(others) if others else "none")
        + "; /tmp is private to this workspace's sandboxes.",
        "Everything else is read-only."
        + (f" Hidden (unreadable): {', '.join(hidden)}." if hidden else ""),
    ]  # fmt: skip
    protected = [*plan.guard_paths, *(n for n in plan.guard_names if n not in plan.guard_paths)]
    if protected:
        lines.append(
            "Protected even inside writable directories (writes refused): "
            + ", ".join(protected)
            + "."
        )
    if plan.guard_git != "off":
        lines.append(
            "In git directories only git's own data is writable (config only with harmless "
            "keys; hooks never)."
        )
    if plan.network == "off":
        lines.append("Network: off (no connections at all, loopback inside only).")
    elif plan.network == "allowlist":
        allowed = ", ".join(plan.allow_domains) or "nothing"
        lines.append(f"Network: only through a proxy, to: {allowed}.")
    else:
        lines.append("Network: on.")
    if gate is not None:
        lines.append(
            f"Approval policy: {gate.policy} (commands that need a person are asked about or "
            "refused)."
        )
    lines.append(
        "A refused write or connection is reported with the smallest widening that would "
        "allow it; ask the user before relying on it."
    )
    return "\n".join(lines)


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
        "to_allow": [w["flag"] for w in proc.widenings],
    }


def _violation(v: dict[str, Any]) -> str:
    if v.get("kind") == "filesystem":
        return f"{v['op']} {v['path']} ({v['rule']})"
    if v.get("kind") == "network" and v.get("op") == "resolve":  # a name: no port
        return f"resolve {v['host']} ({v['rule']})"
    if v.get("kind") == "network":
        return f"{v.get('op', 'connect')} {v['host']}:{v['port']} ({v['rule']})"
    return "more refusals not listed"


def build_app(tools: SandboxTools) -> MCPServer:
    app = MCPServer("ringfence", instructions=tools.describe())

    async def approval(command: str | list[str], ctx: Context) -> Any:
        """Ask the person, through the client, when the approval policy says so."""
        # A value returned here (not an Elicit) reaches the tool as accepted data.
        argv = _argv(command)
        d = tools.decision(argv)
        if d is None or d.action != ASK:
            return Confirm(run=True)
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            return Confirm(run=False)  # the tool sees there was nobody to ask
        shown = printable(" && ".join(" ".join(c) for c in d.commands))
        return Elicit(f"{printable(d.reason)}\nRun `{shown}` in the sandbox?", Confirm)

    Approval = Annotated[ElicitationResult[Confirm], Resolve(approval)]

    def answer(asked: Any, ctx: Context) -> bool | None:
        """The person's answer for this call, None when nobody can be asked. Only read when
        the session's approval step asks (the resolver above decided whether to)."""
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            return None
        if isinstance(asked, AcceptedElicitation):
            return bool(getattr(asked.data, "run", False))
        return False  # declined or cancelled

    def refused(e: ApprovalRefused, ans: bool | None) -> dict[str, Any]:
        reason = getattr(e.decision, "reason", str(e))
        if ans is None and getattr(e.decision, "action", None) == ASK:
            reason += " (this MCP client does not support elicitation)"
        return {"exit_code": None, "ran": False, "refused": [printable(f"approval: {reason}")]}

    def run_with(argv: list[str], ans: bool | None, fn: Any, *args: Any, **kw: Any) -> Any:
        tools._answer[threading.get_ident()] = ans
        try:
            return fn(*args, **kw)
        finally:
            tools._answer.pop(threading.get_ident(), None)

    @app.tool()
    async def run_command(
        command: str | list[str],
        asked: Approval,
        ctx: Context,
        cwd: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """Run a command in the sandbox and wait for it. `command` is a shell line (run by
        /bin/sh -c) or an argv list; `cwd` is relative to (and must stay inside) the
        workspace. Returns exit_code, stdout, stderr (each capped), duration_s, timed_out,
        and what the sandbox refused (`refused`) with the flags that would allow it
        (`to_allow`)."""
        argv = _argv(command)
        if not 0 < timeout_s <= 24 * 3600:
            raise ToolError("timeout_s must be between 0 and 86400 seconds")
        where = tools.workspace_cwd(cwd)
        ans = answer(asked, ctx)

        def go() -> dict[str, Any]:
            try:
                r = tools.session.run(  # stdin: never the server's own (the protocol)
                    argv, cwd=where, stdin=DEVNULL, capture_output=True, timeout=timeout_s
                )
            except TimeoutExpired as e:
                out = (e.stdout or b"").decode("utf-8", "replace")
                err = (e.stderr or b"").decode("utf-8", "replace")
                return {
                    "exit_code": None,
                    "stdout": cap(out),
                    "stderr": cap(err),
                    "timed_out": True,
                    "duration_s": timeout_s,
                    "note": f"killed (with everything it started) after {timeout_s:g} s",
                }
            except ApprovalRefused as e:
                return refused(e, ans)
            except (FileNotFoundError, PermissionError) as e:
                return {"exit_code": 127 if isinstance(e, FileNotFoundError) else 126,
                        "stdout": "", "stderr": f"{argv[0]}: {e.strerror}"}  # fmt: skip
            out = r.stdout.decode("utf-8", "replace")
            err = r.stderr.decode("utf-8", "replace")
            return _result(r, out, err)

        return await asyncio.to_thread(run_with, argv, ans, go)

    @app.tool()
    async def start_command(
        command: str | list[str],
        asked: Approval,
        ctx: Context,
        cwd: str | None = None,
        pty: bool = False,
    ) -> dict[str, Any]:
        """Start a long-running or interactive command in the sandbox and return its id at
        once. Then use read_output, write_stdin and kill. `pty`: give it a terminal."""
        argv = _argv(command)
        where = tools.workspace_cwd(cwd)
        running = [k for k, v in tools.live.items() if v.proc.poll() is None]
        if len(running) >= tools.max_processes:
            raise ToolError(
                f"{len(running)} processes are running (the limit is {tools.max_processes}): "
                "kill one first"
            )
        ans = answer(asked, ctx)

        def go() -> dict[str, Any]:
            try:
                if pty:
                    proc = tools.session.spawn(argv, cwd=where, pty=True)
                else:
                    proc = tools.session.spawn(
                        argv, cwd=where, stdin=PIPE, stdout=PIPE, stderr=PIPE
                    )
            except ApprovalRefused as e:
                return refused(e, ans)
            except (FileNotFoundError, PermissionError) as e:
                raise ToolError(f"{argv[0]}: {e.strerror}") from None
            pid = str(next(tools._ids))
            live = _Live(proc, argv, pty)
            live.start_readers()
            tools.live[pid] = live
            return {"id": pid, "running": True}

        return await asyncio.to_thread(run_with, argv, ans, go)

    def _live(pid: str) -> _Live:
        live = tools.live.get(pid)
        if live is None:
            raise ToolError(f"no process with id {pid!r} (start_command gives ids)")
        return live

    @app.tool()
    async def read_output(id: str, wait_ms: int = 0) -> dict[str, Any]:
        """New output of a started process since the last read. Waits up to wait_ms for
        some (or for the end). Says whether it is still running and its exit code."""
        live = _live(id)
        if not 0 <= wait_ms <= 600_000:
            raise ToolError("wait_ms must be between 0 and 600000")

        def wait() -> None:
            deadline = time.monotonic() + wait_ms / 1000
            while time.monotonic() < deadline:
                with live.lock:
                    if live.out or live.err:
                        return
                if live.proc.poll() is not None and not any(t.is_alive() for t in live.readers):
                    return
                live.changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))

        await asyncio.to_thread(wait)
        code = live.proc.poll()
        if code is not None:
            for t in live.readers:
                await asyncio.to_thread(t.join, 1.0)
        out, err, dropped = live.take()
        result: dict[str, Any] = {"stdout": cap(out), "stderr": cap(err), "running": code is None}
        if code is not None:
            result.update(_result(live.proc, "", "") | {"stdout": cap(out), "stderr": cap(err)})
        if dropped:
            result["note"] = f"{dropped} bytes of older output were dropped (read more often)"
        return result

    @app.tool()
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

    @app.tool()
    async def kill(id: str) -> dict[str, Any]:
        """End a started process and everything it started; returns its last output."""
        live = _live(id)
        live.proc.kill()
        await asyncio.to_thread(live.proc.wait, 10)
        for t in live.readers:
            await asyncio.to_thread(t.join, 1.0)
        out, err, _ = live.take()
        tools.live.pop(id, None)
        return _result(live.proc, out, err)

    @app.tool()
    async def describe_sandbox() -> str:
        """What commands can and cannot do here, in plain words."""
        return tools.describe()

    return app


def serve(tools: SandboxTools) -> None:
    app = build_app(tools)
    try:
        app.run("stdio")
    finally:
        tools.close()
