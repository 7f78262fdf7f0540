"""A scripted agent that meets the boundary and asks for a wider one, over MCP.

    python examples/mcp_agent_loop.py [WORKSPACE [OUTSIDE]]

Starts `ringfence mcp --workspace WORKSPACE` over stdio with the official MCP client (the
SDK's 2.x `Client`, or 1.x `ClientSession` when that is what is installed), then plays an
agent: it writes into OUTSIDE (a directory beside the workspace) and is refused; it reads the
refusal's `to_allow`, calls `request_widening` with that entry and a reason; the server puts
the question to the person through MCP elicitation, here `person()` standing in for them and
saying yes; the agent runs the command again, and it succeeds. A real agent would ask a model
for each next step; the steps here are fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from mcp import types
from mcp.client.stdio import StdioServerParameters


async def person(_context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """The elicitation callback: a host shows the question to the person and returns their
    answer. This one prints it and says yes."""
    print(f"[person is asked]\n{params.message}\n[person says yes]")
    return types.ElicitResult(action="accept", content={"allow": True})


@contextlib.asynccontextmanager
async def connect(server: StdioServerParameters) -> AsyncIterator[Any]:
    """A client session on either line of the SDK."""
    try:
        from mcp import Client  # 2.x
    except ImportError:  # 1.x
        from mcp import ClientSession
        from mcp.client.stdio import stdio_client

        async with (
            stdio_client(server) as (read, write),
            ClientSession(read, write, elicitation_callback=person) as session,
        ):
            await session.initialize()
            yield session
        return
    async with Client(server, elicitation_callback=person) as client:
        yield client


def data(result: Any) -> Any:
    """A tool result's JSON (structured content where the server sent it)."""
    if getattr(result, "is_error", None) or getattr(result, "isError", False):
        raise RuntimeError(result.content[0].text)
    content = getattr(result, "structured_content", None) or getattr(
        result, "structuredContent", None
    )
    if content:
        return content.get("result", content)
    return json.loads(result.content[0].text)


async def agent(workspace: str, outside: str) -> None:
    # The SDK hands the server only a short list of variables; pass ringfence's own on.
    xdg = {k: v for k, v in os.environ.items() if k.startswith("XDG_")}
    server = StdioServerParameters(
        command=sys.executable,
        args=["-P", "-m", "ringfence", "mcp", "--workspace", workspace],
        env=xdg,
    )
    command = f"echo built > {outside}/artifact && cat {outside}/artifact"
    async with connect(server) as client:
        print(f"$ {command}")
        first = data(await client.call_tool("run_command", {"command": command}))
        print(f"  -> exit {first['exit_code']}; refused: {first['refused']}")
        wanted = next(w for w in first["to_allow"] if "kind" in w)
        print(f"  to allow it: {wanted['kind']} {wanted['value']}")
        asked = {
            "kind": wanted["kind"],
            "value": wanted["value"],
            "reason": "the build writes its artifact there",
        }
        granted = data(await client.call_tool("request_widening", asked))
        print(f"request_widening -> {granted}")
        if not granted["granted"]:
            raise SystemExit("the widening was not granted")
        again = data(await client.call_tool("run_command", {"command": command}))
        print(f"$ {command}\n  -> exit {again['exit_code']}: {again['stdout'].strip()}")
        if again["exit_code"] != 0:
            raise SystemExit("the command failed after the widening")
    print("the retried command succeeded")


if __name__ == "__main__":
    ws = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="rf-ws-", dir="/var/tmp")
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="rf-out-", dir="/var/tmp")
    os.chdir(ws)
    asyncio.run(agent(os.path.realpath(ws), os.path.realpath(out)))
