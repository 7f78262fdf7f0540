"""The Windows backend: a dedicated sandbox user, restricting SIDs, ACL grants, a job object,
and the filtering proxy on the install's loopback port.

On Windows the plan must be compiled from facts gathered just before the grants are checked
(links resolved, existing protected names found), so ``facts`` takes what lasts for the run
(the install, the proxy's port) and ``run`` hands the rest to :func:`command.run_command`,
which gathers, compiles (refusing what cannot be enforced), grants and launches in that order.
``compile`` refuses early what no host facts can change.

Never run on Windows yet (docs/platforms.md); each piece is tested on Linux over simulated
Windows calls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringfence.display import printable
from ringfence.engine.approval import gate_or_refusal
from ringfence.engine.contract import RunOptions
from ringfence.engine.result import RunResult
from ringfence.errors import RingfenceError, UnsupportedError
from ringfence.platforms import hostrun
from ringfence.platforms.windows import command, install
from ringfence.platforms.windows.plan import WindowsInstall, refuse_unenforceable
from ringfence.policy.model import Network, Policy


@dataclass(frozen=True)
class WindowsRun:
    """What ``run`` needs: the policy (compiled again from fresh facts by run_command), the
    command's working directory and environment, the install's places and state."""

    policy: Policy
    cwd: str
    env: dict[str, str]
    places: install.Places
    state: WindowsInstall


class WindowsBackend:
    name = "windows"

    def __init__(self, *, api: Any = None, launch: Callable[[Any], Any] | None = None) -> None:
        self.api = api
        self.launch = launch
        self.proxy: hostrun.HostProxy | None = None

    def facts(self, policy: Policy, cwd: str, options: RunOptions) -> WindowsRun:
        hostrun.refuse_run_options(policy, options.tty, options.ask, "Windows")
        if not policy.sandboxed:
            raise UnsupportedError("full-access on Windows: run the command without ringfence")
        places = install.Places.default()
        state = install.load_install(places)
        if state is None:
            raise RingfenceError(
                "ringfence is not set up here: run `ringfence setup` once, elevated"
            )
        env = hostrun.host_env(policy)
        if policy.effective_network is not Network.ON:
            # The firewall leaves the install's port open: ringfence's proxy holds it for the
            # command's life (with the network off it refuses everything).
            self.proxy = hostrun.start_proxy(policy, options.ask, port=state.proxy_port)
            if policy.effective_network is Network.ALLOWLIST:
                env = hostrun.with_proxy_env(env, state.proxy_port)
        return WindowsRun(policy, cwd, env, places, state)

    def compile(self, policy: Policy, facts: WindowsRun, cwd: str) -> WindowsRun:
        refuse_unenforceable(policy)
        return facts

    def run(self, plan: WindowsRun, argv: list[str], options: RunOptions) -> RunResult:
        record, refused = gate_or_refusal(options.gate, argv)
        if refused is not None:
            return refused
        if self.api is None or self.launch is None:
            from ringfence.platforms.windows import run, run_native
            from ringfence.platforms.windows.win32 import Win32Api

            api = self.api or Win32Api()
            launch = self.launch or (lambda spec: run.run(spec, run_native.Win32RunnerApi()))
        else:
            api, launch = self.api, self.launch
        started = time.monotonic()
        ran = command.run_command(
            plan.policy,
            argv,
            cwd=plan.cwd,
            env=plan.env,
            timeout=options.timeout,
            home=os.path.expanduser("~"),
            places=plan.places,
            api=api,
            launch=launch,
        )
        duration = time.monotonic() - started
        lines = list(ran.notes)
        if options.audit:
            failed = hostrun.audit_run(
                "windows",
                plan.policy,
                argv,
                plan.cwd,
                returncode=ran.result.exit_code,
                duration=duration,
                timed_out=ran.result.timed_out,
                approval=record,
                network=self.proxy.service.events if self.proxy else (),
            )
            if failed:
                lines.append(failed)
        lines += hostrun.report_lines(self.proxy, ran.result.timed_out, options.timeout)
        return RunResult(
            hostrun.status_of(ran.result.exit_code, None, ran.result.timed_out),
            timed_out=ran.result.timed_out,
            message="\n".join(printable(line) for line in lines) or None,
            duration=duration,
            network=self.proxy.decisions() if self.proxy else (),
            approval=record,
        )

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
