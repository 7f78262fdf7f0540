"""Drive `ringfence mcp` from the official MCP client, as an agent would.

    python examples/mcp_client.py [WORKSPACE]

Starts `ringfence mcp --workspace WORKSPACE` over stdio, lists the tools, runs a command,
shows a refused write, and drives a long-running process (start, write, read, kill).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def _data(result: object) -> object:
    content = getattr(result, "structured_content", None)
    if content:
        return content.get("result", content)
    text = result.content[0].text  # type: ignore[attr-defined]
    try:
        return json.loads(text)
    except ValueError:
        return text


async def main(workspace: str) -> None:
    # The SDK hands the server only a short list of variables; pass ringfence's own on.
    xdg = {k: v for k, v in os.environ.items() if k.startswith("XDG_")}
    server = StdioServerParameters(
        command=sys.executable,
        args=["-P", "-m", "ringfence", "mcp", "--workspace", workspace],
        env=xdg,
    )
    async with Client(server) as client:
        tools = await client.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools))
        print(_data(await client.call_tool("describe_sandbox", {})))
        r = await client.call_tool("run_command", {"command": "echo hello from the sandbox; id -u"})
        print("run_command:", _data(r))
        r = await client.call_tool("run_command", {"command": "touch /etc/ringfence-example"})
        print("refused write:", _data(r))
        started = _data(await client.call_tool("start_command", {"command": "cat"}))
        pid = started["id"]  # type: ignore[index]
        await client.call_tool("write_stdin", {"id": pid, "data": "typed into cat\n"})
        print(
            "read_output:",
            _data(await client.call_tool("read_output", {"id": pid, "wait_ms": 2000})),
        )
        print("kill:", _data(await client.call_tool("kill", {"id": pid})))


if __name__ == "__main__":
    ws = (
        sys.argv[1]
        if len(sys.argv) > 1
        else tempfile.mkdtemp(prefix="ringfence-example-", dir="/var/tmp")
    )
    os.chdir(ws)
    asyncio.run(main(ws))
