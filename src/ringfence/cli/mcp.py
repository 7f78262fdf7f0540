"""``ringfence mcp``: a sandboxed shell for an AI agent, over MCP on stdin/stdout."""

from __future__ import annotations

import argparse

from ringfence.cli.flags import gate_of, resolve_flags
from ringfence.engine import backends
from ringfence.errors import PolicyError, RingfenceError


def cmd_mcp(ns: argparse.Namespace) -> int:
    """``ringfence mcp``: one warm session behind an MCP server on stdin/stdout."""
    try:
        from ringfence import mcp_server
    except ImportError as e:  # an optional extra, not a kernel limit
        raise RingfenceError(
            f"ringfence mcp needs the MCP SDK ({e.name or e}): pip install 'ringfence[mcp]'"
        ) from None
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
        max_processes=ns.max_processes,
        audit=not ns.no_audit,
    )
    mcp_server.serve(tools)
    return 0
