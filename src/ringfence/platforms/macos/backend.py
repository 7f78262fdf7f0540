"""The macOS backend: Seatbelt via ``sandbox-exec``, the violation monitor, the tree ended
afterwards, the filtering proxy on the host's loopback.

Not run on a Mac yet: tests drive it on Linux with stand-ins for ``sandbox-exec`` and ``log``
(constructor arguments only, never from the environment, so nothing outside a test can swap
the enforcer). What the macOS side cannot do yet is refused, never run with less.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from ringfence.display import printable
from ringfence.engine.approval import gate_or_refusal
from ringfence.engine.contract import RunOptions
from ringfence.engine.result import RunResult, Violation
from ringfence.escalation import quiet
from ringfence.platforms import hostrun
from ringfence.platforms.macos import execute, monitor
from ringfence.platforms.macos.plan import SANDBOX_EXEC, MacFacts, SeatbeltPlan, compile_macos
from ringfence.policy.model import Network, Policy


class MacBackend:
    name = "macos"

    def __init__(self, *, sandbox_exec: str | None = None, log: str | None = None) -> None:
        self.sandbox_exec = sandbox_exec or SANDBOX_EXEC
        self.log = log or monitor.LOG
        self.proxy: hostrun.HostProxy | None = None
        self.tmpdir: str | None = None
        self.policy: Policy | None = None
        self.cwd = ""

    def facts(self, policy: Policy, cwd: str, options: RunOptions) -> MacFacts:
        hostrun.refuse_run_options(policy, options.tty, options.ask, "macOS")
        self.policy, self.cwd = policy, cwd
        facts = execute.gather_facts(policy)
        self.tmpdir = facts.tmpdir
        if policy.sandboxed and policy.effective_network is Network.ALLOWLIST:
            # on a port the kernel picks; the profile names it
            self.proxy = hostrun.start_proxy(policy, options.ask)
            facts = dataclasses.replace(facts, proxy_port=self.proxy.port)
        return facts

    def compile(self, policy: Policy, facts: MacFacts, cwd: str) -> SeatbeltPlan:
        return compile_macos(policy, facts)

    def run(self, plan: SeatbeltPlan, argv: list[str], options: RunOptions) -> RunResult:
        assert self.policy is not None and self.tmpdir is not None, "facts() comes first"
        policy = self.policy
        record, refused = gate_or_refusal(options.gate, argv)
        if refused is not None:
            return refused
        env = hostrun.host_env(policy)
        if self.proxy is not None:
            env = hostrun.with_proxy_env(env, self.proxy.port)
        env["TMPDIR"] = self.tmpdir
        result = execute.run_plan(
            plan,
            argv,
            cwd=self.cwd,
            env=env,
            timeout=options.timeout,
            sandbox_exec=self.sandbox_exec,
            log=self.log,
        )
        homes = [h for h in (env.get("HOME"), os.environ.get("HOME")) if h and os.path.isabs(h)]
        reported = quiet(result.violations, env, homes)
        files = [v for v in reported if v.get("kind") == "filesystem"]
        lines: list[str] = []
        if options.audit:
            failed = hostrun.audit_run(
                "macos",
                policy,
                argv,
                self.cwd,
                returncode=result.returncode,
                duration=result.duration,
                timed_out=result.timed_out,
                approval=record,
                filesystem=files,
                network=self.proxy.service.events if self.proxy else (),
            )
            if failed:
                lines.append(failed)
        if files:
            shown = ", ".join(f"{v['op']} {v['path']} ({v['rule']})" for v in files[:5])
            lines.append(f"refused {shown}" + (" and more" if len(files) > 5 else ""))
        blocked = [v for v in reported if v.get("kind") == "network"]
        if blocked:
            lines.append(f"Seatbelt blocked {len(blocked)} connection(s)")
        lines += hostrun.report_lines(self.proxy, result.timed_out, options.timeout)
        return RunResult(
            hostrun.status_of(result.exit_code, result.signal, result.timed_out),
            timed_out=result.timed_out,
            signal=result.signal,
            message="\n".join(printable(line) for line in lines) or None,
            duration=result.duration,
            violations=tuple(Violation.from_record(v) for v in reported),
            network=self.proxy.decisions() if self.proxy else (),
            approval=record,
        )

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
