"""The Linux backend: host facts, the pure compiler, and the runner that builds the sandbox
(namespaces, mounts, Landlock, seccomp, the name guard) in a forked child."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringfence.engine.approval import gate_or_refusal
from ringfence.engine.contract import RunOptions
from ringfence.engine.result import RunResult
from ringfence.errors import PolicyError
from ringfence.platforms.linux.plan_model import LinuxPlan

if TYPE_CHECKING:  # the compiler is imported when a plan is compiled, not to run a cached one
    from ringfence.platforms.linux.hostfacts import HostFacts
    from ringfence.policy.model import Policy


class LinuxBackend:
    name = "linux"

    def facts(self, policy: Policy, cwd: str, options: RunOptions) -> HostFacts:
        from ringfence.platforms.linux import prepare

        return prepare.facts(policy)

    def compile(self, policy: Policy, facts: HostFacts, cwd: str) -> LinuxPlan:
        from ringfence.platforms.linux.plan import compile_linux

        return compile_linux(policy, facts, cwd=cwd)

    def run(self, plan: LinuxPlan, argv: list[str], options: RunOptions) -> RunResult:
        from ringfence import process

        if options.ask and plan.proxy_port is None:  # a flag never dropped, full access too
            raise PolicyError("--ask needs --network allowlist")
        if not plan.sandboxed:
            from ringfence.platforms.linux import prefork

            prefork.discard()  # no runner: a one-shot run may have forked one early
            _, refused = gate_or_refusal(options.gate, argv)
            if refused is not None:
                return refused
            return process.run_unconfined(argv, dict(plan.env), plan.cwd, options.timeout)
        ask = None
        if options.ask:
            if options.tty:
                raise PolicyError("--ask cannot share the terminal with -t")
            from ringfence.terminal import tty_asker

            ask = tty_asker()
        return process.run_sandboxed(
            plan, argv, options.timeout, tty=options.tty, ask=ask, audit=options.audit,
            gate=options.gate, plan_source="cached" if options.plan_cached else "compiled",
        )  # fmt: skip

    def close(self) -> None:
        pass
