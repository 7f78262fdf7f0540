"""``ringfence mcp``: a sandboxed shell for an AI agent, over MCP on stdin/stdout."""

from __future__ import annotations

import argparse
import importlib.metadata
import re

from ringfence.cli.flags import gate_of, resolve_flags
from ringfence.engine import backends
from ringfence.errors import PolicyError, RingfenceError

# The oldest release of each line of the MCP SDK ringfence runs on (1.x: FastMCP, 2.x:
# MCPServer; see mcp_compat.py). The tests run the server on one release of each line.
SUPPORTED: dict[int, tuple[int, int]] = {1: (1, 23), 2: (2, 3)}
HINT = "pip install -U 'ringfence[mcp]'"


def sdk_problem() -> str | None:
    """Why the installed MCP SDK cannot serve (missing, or too old for its line), or None.
    Reads package metadata only: importing an old SDK fails with a message about its own
    modules, which would not say that the version is the problem."""
    lines = " or ".join(f"{major}.{minor} or later" for major, minor in SUPPORTED.values())
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        return (
            f"ringfence mcp needs the MCP SDK (the mcp package, {lines}), which is not "
            f"installed: {HINT}"
        )
    got = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    floor = SUPPORTED.get(got[0] if got else 0)
    if floor is None or got < floor:
        return f"ringfence mcp needs the MCP SDK {lines}; mcp {version} is too old: {HINT}"
    return None


def cmd_mcp(ns: argparse.Namespace) -> int:
    """``ringfence mcp``: one warm session behind an MCP server on stdin/stdout."""
    problem = sdk_problem()
    if problem is not None:  # an optional extra, not a kernel limit
        raise RingfenceError(problem)
    try:
        from ringfence import mcp_server
    except ImportError as e:  # installed, but broken or of an unexpected shape
        raise RingfenceError(f"ringfence mcp cannot load the MCP SDK ({e}): {HINT}") from None
    if not 1 <= ns.max_processes <= 256:
        raise PolicyError("--max-processes must be between 1 and 256")
    resolved = resolve_flags(ns)
    policy, cwd = resolved.policy, resolved.cwd
    plan = backends.linux_plan(policy, cwd)
    if not plan.sandboxed:
        raise PolicyError("ringfence mcp serves a sandbox; full-access mode has none")
    tools = mcp_server.SandboxTools(
        policy,
        plan,
        gate=gate_of(resolved),
        approval=resolved.approval,
        max_processes=ns.max_processes,
        audit=not ns.no_audit,
    )
    mcp_server.serve(tools)
    return 0
