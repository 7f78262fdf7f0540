"""``ringfence run`` and ``ringfence shell``: one command through the engine, on whichever
platform this is; ``run --session`` through a session server."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import TYPE_CHECKING, Any

from ringfence.cli.flags import command_of, gate_of, resolve_flags
from ringfence.cli.parser import build_parser
from ringfence.display import printable
from ringfence.engine import backends
from ringfence.engine.result import RunResult
from ringfence.errors import PolicyError

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
    argv = ns.argv if ns.command == "shell" else command_of(ns, required=True)
    if ns.timeout is not None and not ns.timeout > 0:
        raise PolicyError("--timeout must be a positive number of seconds")
    if getattr(ns, "session", None) is not None:
        return _run_in_session(ns, argv)
    resolved = resolve_flags(ns)
    options = backends.RunOptions(
        timeout=ns.timeout,
        tty=ns.tty,
        ask=ns.ask,
        audit=not ns.no_audit,
        gate=gate_of(resolved, tty_approver),
    )
    backend = backends.select(**backend_kwargs)
    result = backends.run(resolved.policy, resolved.cwd, argv, options, backend)
    report(result)
    return result.returncode


def report(result: RunResult) -> None:
    """ringfence's own lines, on stderr, each escaped on its own."""
    if not result.message:
        return
    prefix = "ringfence: "
    if result.error_kind == "UnsupportedError":
        prefix = "ringfence: cannot enforce the policy: "
    for line in result.message.split("\n"):
        print(prefix + printable(line), file=sys.stderr)


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
    ignored = {"argv", "session", "timeout", "command"}
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
