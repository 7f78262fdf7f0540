"""``ringfence run`` and ``ringfence shell``: one command through the engine, on whichever
platform this is; ``run --session`` through a session server."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from ringfence.cli.flags import command_of, gate_of, resolve_flags
from ringfence.cli.parser import EXIT_USAGE, build_parser
from ringfence.display import printable, report
from ringfence.engine import backends
from ringfence.engine.result import EXIT_INTERNAL, RunResult
from ringfence.errors import PolicyError, RingfenceError

if TYPE_CHECKING:
    from ringfence.approval.decide import Decision


def cmd_shell(ns: argparse.Namespace) -> int:
    shell = ns.shell or os.environ.get("SHELL") or "/bin/sh"
    if not os.path.isabs(shell) or not os.access(shell, os.X_OK):
        shell = "/bin/sh"
    ns.argv = [shell]
    ns.timeout = None
    ns.tty = True
    ns.ask = False
    ns.no_audit = False
    return cmd_run(ns)


def cmd_run(ns: argparse.Namespace, **backend_kwargs: Any) -> int:
    """``backend_kwargs`` reach the platform backend (tests give the macOS backend stand-ins
    for ``sandbox-exec`` and ``log`` there)."""
    if getattr(ns, "verbose", False):
        from ringfence import trace

        trace.enable()
    argv = ns.argv if ns.command == "shell" else command_of(ns, required=True)
    if ns.timeout is not None and not ns.timeout > 0:
        raise PolicyError("--timeout must be a positive number of seconds")
    if getattr(ns, "session", None) is not None:
        return _run_in_session(ns, argv)
    sink = None
    if getattr(ns, "verbose", False) or ns.command != "run":
        from ringfence import oneshot

        oneshot.forget()  # traced and shell runs take the usual path every time
    if getattr(ns, "report", None) is not None or getattr(ns, "report_fd", None) is not None:
        from ringfence import oneshot

        oneshot.forget()  # the report is written by the usual path
        from ringfence.cli.report import ReportSink

        sink = ReportSink.of(ns.report, ns.report_fd)
    try:
        result = _run_here(ns, argv, backend_kwargs)
    except RingfenceError as e:  # the report says it too: every accepted --report gets one
        if sink is not None:
            why = sink.write(failure(argv, e).to_dict())
            if why:
                print(f"ringfence: {printable(why)}", file=sys.stderr)
        raise
    report(result)
    if sink is not None:
        why = sink.write(result.to_dict())
        if why:
            print(f"ringfence: {printable(why)}", file=sys.stderr)
        trace_step("wrote the report")
    return result.returncode


def _run_here(ns: argparse.Namespace, argv: list[str], backend_kwargs: Any) -> RunResult:
    from ringfence.plancache.keeper import Keeper

    # A one-shot request the plan cache missed: its compile is recorded and its plan kept.
    keeper = None if backend_kwargs or ns.command != "run" else Keeper.for_this_run()
    if keeper is None:
        resolved = resolve_flags(ns)
    else:
        with keeper.recording():
            resolved = resolve_flags(ns)
    policy = resolved.policy
    trace_step(
        f"resolved the policy: mode {policy.mode.value}, network "
        f"{policy.effective_network.value}, isolation {policy.isolation.value}, workspace "
        f"{policy.workspace or resolved.cwd}, approval {resolved.approval or 'none'}"
    )
    options = backends.RunOptions(
        timeout=ns.timeout,
        tty=ns.tty,
        ask=ns.ask,
        audit=not ns.no_audit,
        gate=gate_of(resolved, tty_approver),
    )
    backend = backends.select(**backend_kwargs)
    return backends.run(resolved.policy, resolved.cwd, argv, options, backend, keeper=keeper)


def failure(argv: list[str], e: RingfenceError) -> RunResult:
    """The record of a run ringfence refused or failed to start (exit 2 for a usage error,
    125 otherwise, as ``ringfence.cli.main`` exits)."""
    status = EXIT_USAGE if isinstance(e, PolicyError) else EXIT_INTERNAL
    return RunResult(status, message=str(e), error_kind=type(e).__name__, argv=tuple(argv))


def trace_step(what: str) -> None:
    from ringfence import trace

    trace.step(what)


def tty_approver(decision: Decision) -> bool | None:
    """Ask the person at the terminal (``/dev/tty``); None when there is no terminal."""
    from ringfence.terminal import ask_on_tty

    shown = printable(" && ".join(shlex.join(c) for c in decision.commands))
    answer = ask_on_tty(
        f"ringfence: {printable(decision.reason)}\nringfence: run `{shown}`? [y/N] "
    )
    if answer is None:
        return None
    return answer in ("y", "yes")


def _run_in_session(ns: argparse.Namespace, argv: list[str]) -> int:
    """``run --session``, reached when the fast path in ``entry`` did not take the call: say
    exactly what is wrong with it, or run it."""
    from ringfence import session_client, session_wire

    why = session_wire.check_name(ns.session)
    if why:
        raise PolicyError(why)
    defaults = vars(build_parser("run").parse_args(["run", "--", "true"]))
    ignored = {"argv", "session", "timeout", "command", "verbose"}
    given = sorted(
        "--" + key.replace("_", "-")
        for key, value in vars(ns).items()
        if key not in ignored and value != defaults.get(key)
    )
    if given:
        raise PolicyError(
            f"{', '.join(given)} cannot be used with --session: the session's policy was fixed "
            "by `ringfence session start` (start another session for another policy)"
        )
    return session_client.run(ns.session, ns.timeout, argv)
