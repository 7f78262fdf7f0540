"""Steps shared by the backends that run a command on the host itself (macOS, Windows), where
there is no network namespace: the command's environment, the filtering proxy on the host's
loopback, the audit record, and the lines that explain the run."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ringfence import audit
from ringfence.engine.result import EXIT_TIMEOUT, NetDecision
from ringfence.errors import UnenforceableError, UnsupportedError
from ringfence.network.proxy_env import proxy_environment
from ringfence.network.service import ProxyService
from ringfence.policy.environment import build_environment, sandbox_variables
from ringfence.policy.model import Network, Policy
from ringfence.policy.netrules import NetRules


def refuse_run_options(policy: Policy, tty: bool, ask: bool, platform: str) -> None:
    """Run options a host-run backend cannot honour yet: refused, never run with less."""
    if tty:
        raise UnenforceableError("-t (a terminal)", platform)
    # As on Linux: asking is about names for the proxy, never a way to turn the network on.
    if ask and policy.effective_network is not Network.ALLOWLIST:
        raise UnenforceableError("--ask without an allowlist", platform)


def host_env(policy: Policy) -> dict[str, str]:
    return build_environment(os.environ, policy.env, sandbox_variables(policy))


@dataclass
class HostProxy:
    service: Any
    port: int

    def decisions(self) -> tuple[NetDecision, ...]:
        return tuple(NetDecision.from_event(e) for e in self.service.events)

    def close(self) -> None:
        self.service.close()


def start_proxy(policy: Policy, ask: bool = False, port: int = 0) -> HostProxy:
    """The filtering proxy for a Mac or Windows command: on the host's loopback (neither has
    a network namespace), on a port the kernel picks (macOS: the profile then names it) or
    the install's fixed one (Windows: the firewall leaves only that one open; if another
    program holds it, the command does not run). Other local processes could reach it too;
    they are not sandboxed anyway, and it only ever leads to the allowed names."""
    asker = None
    if ask:  # before the socket: no terminal is a refusal, with nothing to clean up
        from ringfence.terminal import tty_asker

        asker = tty_asker()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as e:
        listener.close()
        raise UnsupportedError(
            f"the proxy port 127.0.0.1:{port} is taken by another program ({e.strerror}); "
            "the sandbox's only way out must be ringfence's proxy"
        ) from None
    listener.listen(64)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    # With the network off (Windows only gets here so), the proxy refuses every request.
    rules = NetRules.parse(policy.allow_domains, policy.deny_domains)
    service = ProxyService(listener, rules, allow_local=policy.allow_local_targets, ask=asker)
    return HostProxy(service, port)


def with_proxy_env(env: dict[str, str], port: int) -> dict[str, str]:
    return {**env, **proxy_environment(port)}


def report_lines(proxy: HostProxy | None, timed_out: bool, timeout: float | None) -> list[str]:
    """What the proxy refused, and the timeout."""
    lines = []
    if proxy is not None:
        hosts = {f"{d.host}:{d.port} ({d.rule})": None for d in proxy.decisions() if not d.allowed}
        if hosts:
            lines.append(f"blocked {', '.join(hosts)}")
    if timed_out:
        lines.append(f"timed out after {timeout:g} s" if timeout else "timed out")
    return lines


def status_of(returncode: int | None, signal: int | None, timed_out: bool) -> int:
    """The shell's exit status for a host run."""
    if timed_out:
        return EXIT_TIMEOUT
    if signal is not None:
        return 128 + signal
    return returncode if returncode is not None else 1


def audit_run(
    platform: str,
    policy: Policy,
    argv: list[str],
    cwd: str,
    *,
    returncode: int | None,
    duration: float | None,
    timed_out: bool,
    approval: dict[str, Any] | None,
    filesystem: Sequence[dict[str, Any]] = (),
    network: Sequence[Any] = (),
) -> str | None:
    """The same command record as on Linux, for a Mac or Windows run; the policy digest is of
    the policy (its environment values left out), as those plans carry per-run values.
    Returns why the log could not be written, if it could not."""
    data = dataclasses.asdict(policy)
    data["env"]["set"] = sorted(data["env"]["set"])
    record = audit.command_record(
        session=f"{platform}-" + secrets.token_hex(6),
        argv=argv,
        cwd=cwd,
        policy_digest=audit.digest(data),
        returncode=returncode,
        duration=duration,
        timed_out=timed_out,
        approval=approval,
        filesystem=filesystem,
        network=network,
    )
    try:
        audit.AuditLog().write(record)
    except OSError as e:
        return f"cannot write the audit log: {e}"
    return None
