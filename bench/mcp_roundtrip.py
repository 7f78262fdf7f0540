"""The MCP ``run_command`` round trip against ``Session.run``, in the same process and run.

An agent behind ``ringfence mcp`` pays, per command, the JSON-RPC round trip over the
server's stdin/stdout, the SDK's argument validation, the tool's own work (the approval
question step, the session call with captured output, escape stripping, the result's
fields, the audit record) and the client's parsing of the answer. The baseline is what the
same command costs through the Python API on a session of the same policy (and, for
reference, through ``Session.arun``, which the tool awaits on the server's loop when there is
no approval policy). (This file is not called ``mcp.py``: the bench directory is on
``sys.path`` and would shadow the SDK.)

The client is the SDK's own (2.x ``Client``, or 1.x ``ClientSession``), over stdio, against
``python -P -m ringfence mcp``; ``true`` goes as an argv list (``["true"]``), as the API runs
it, not as a shell line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchlib import Scale, Section, check_rc, median, ms, ratio, scratch, verdict

MCP_TARGET = 2.0  # x Session.run(["true"])
Timed = Callable[[], Awaitable[None] | None]


@contextlib.asynccontextmanager
async def _client(ws: str, state: str) -> AsyncIterator[Any]:
    """A client session with ``ringfence mcp --workspace ws`` on either line of the SDK."""
    from mcp.client.stdio import StdioServerParameters

    # The SDK hands the server only a short list of variables: pass on what decides which
    # ringfence runs (PYTHONPATH with --commit), its bytecode cache and its audit log's place.
    keep = ("PYTHONPATH", "PYTHONPYCACHEPREFIX", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["XDG_STATE_HOME"] = state
    server = StdioServerParameters(
        command=sys.executable,
        args=["-P", "-m", "ringfence", "mcp", "--workspace", ws],
        cwd=ws,
        env=env,
    )
    try:
        from mcp import Client  # 2.x
    except ImportError:  # 1.x
        from mcp import ClientSession
        from mcp.client.stdio import stdio_client

        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    async with Client(server) as client:
        yield client


def _exit_code(result: Any) -> Any:
    """The tool result's exit_code (structured content on 2.x, JSON text on 1.x)."""
    if getattr(result, "is_error", None) or getattr(result, "isError", False):
        raise SystemExit(f"bench: run_command failed: {result.content[0].text}")
    content = getattr(result, "structured_content", None) or getattr(
        result, "structuredContent", None
    )
    if content:
        return content.get("result", content).get("exit_code")
    import json

    return json.loads(result.content[0].text).get("exit_code")


async def _blocked(
    fns: dict[str, Timed], n: int, gap: float, blocks: int
) -> dict[str, list[float]]:
    """benchlib.blocked for a mix of plain and async functions: consecutive blocks, the order
    rotated from block to block (a session prepares its next init after each command)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    per = max(1, n // blocks)
    done = rnd = 0
    while done < n:
        k = min(per, n - done)
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            fn = fns[name]
            for _ in range(k):
                if gap:
                    await asyncio.sleep(gap)
                t0 = time.perf_counter()
                got = fn()
                if got is not None:
                    await got
                out[name].append(time.perf_counter() - t0)
        done += k
        rnd += 1
    return out


async def _measure(scale: Scale, ws: str, state: str) -> dict[str, dict[str, list[float]]]:
    from ringfence import DEVNULL, Policy, Session

    # The same policy the server builds from `--workspace ws`, audited the same way (the
    # server audits every call; so does a Session by default), into the same scratch log.
    os.environ["XDG_STATE_HOME"] = state
    async with _client(ws, state) as client:
        with Session(Policy(workspace=ws), cwd=ws) as s:

            def api() -> None:
                r = s.run(["true"], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
                check_rc(r.returncode, "s.run")

            def api_capture() -> None:
                check_rc(s.run(["true"], stdin=DEVNULL, capture_output=True).returncode, "s.run")

            async def api_async() -> None:
                r = await s.arun(["true"], stdin=DEVNULL, capture_output=True)
                check_rc(r.returncode, "s.arun")

            async def tool() -> None:
                got = await client.call_tool("run_command", {"command": ["true"]})
                check_rc(_exit_code(got), "run_command")

            fns: dict[str, Timed] = {
                "api": api,
                "capture": api_capture,
                "arun": api_async,
                "mcp": tool,
            }
            for fn in fns.values():  # warm both ends (bytecode, the server's first call)
                for _ in range(10):
                    got = fn()
                    if got is not None:
                        await got
            n = max(20, scale.warm_gap)
            return {
                "b2b": await _blocked(fns, n, 0.0, blocks=5),
                "gap": await _blocked(fns, n, scale.gap, blocks=5),
            }


def mcp_roundtrip(scale: Scale) -> Section:
    n = max(20, scale.warm_gap)
    sec = Section(f"MCP `run_command` round trip: `true`, median of {n} per variant")
    try:
        import mcp  # noqa: F401
    except ImportError:
        sec.notes.append("the MCP SDK is not installed (the [mcp] extra): nothing measured")
        return sec
    with scratch() as ws, scratch("ringfence-bench-state-") as state:
        old = os.environ.get("XDG_STATE_HOME")
        try:
            times = asyncio.run(_measure(scale, ws, state))
        finally:
            if old is None:
                os.environ.pop("XDG_STATE_HOME", None)
            else:
                os.environ["XDG_STATE_HOME"] = old
    for mode, label in (("b2b", "back-to-back"), ("gap", f"{scale.gap * 1000:.0f} ms gap")):
        got = times[mode]
        base = median(got["api"])
        sec.add(f'`Session.run(["true"])`, {label}', ms(base))
        cap = median(got["capture"])
        sec.add(
            "  same, `capture_output=True` (what the tool does)", ms(cap), ratio(cap, base, "API")
        )
        a = median(got["arun"])
        sec.add(
            "  same, `await Session.arun(...)` (what the tool runs, no approval policy)",
            ms(a),
            ratio(a, base, "API"),
        )
        t = median(got["mcp"])
        sec.add(
            f'MCP `run_command` `["true"]` (SDK client, stdio), {label}',
            ms(t),
            f"{ratio(t, base, 'API')}, {ratio(t, cap, 'API capture')}",
            verdict(t <= MCP_TARGET * base, f"<= {MCP_TARGET:g}x API"),
        )
    sec.notes.append(
        "the server is `python -P -m ringfence mcp --workspace WS`, audited (as the API session "
        "is) into a scratch XDG_STATE_HOME"
    )
    return sec
