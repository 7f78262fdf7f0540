"""The MCP server's ``describe_sandbox`` text is rendered from the compiled plan."""

from __future__ import annotations

from test_linux_golden import CASES, WS  # type: ignore[import-not-found]

from ringfence.engine.approval import ApprovalGate
from ringfence.mcp_server import describe_plan
from ringfence.platforms.linux.plan import compile_linux


def test_the_description_follows_the_plan() -> None:
    policy, facts = CASES["linux_allowlist"]
    plan = compile_linux(policy.validate(), facts, cwd=WS)
    gate = ApprovalGate.build("untrusted", None)
    text = describe_plan(plan, WS, gate)
    assert f"Workspace (writable): {WS}" in text
    assert "/srv/cache" in text and "/tmp/build" in text  # the other writable roots
    assert "Network: only through a proxy, to: pypi.org, *.npmjs.org." in text
    assert "Hidden (unreadable): /home/dev/.aws, /home/dev/.ssh" in text  # from the plan
    assert f"{WS}/.envrc" in text and ".bashrc" in text  # protected, from the guard's lists
    assert "Approval policy: untrusted" in text
    policy, facts = CASES["linux_read_only_online"]
    ro = describe_plan(compile_linux(policy.validate(), facts, cwd=WS), WS, None)
    assert "Network: on." in ro and "Approval" not in ro
