"""``ringfence run [FLAGS] -- CMD`` from the plan cache.

A harness that runs one sandbox per command pays for resolving the policy, looking at the host
and compiling the plan on every call, although for the same flags in the same directory the
plan comes out the same. The first run of a request compiles as usual and keeps the plan
(``plancache``); later runs find it by the request's key, ask the file system every question
the compile asked, and run the plan only if every answer is the same. Otherwise (a config file
edited, a ``.git`` appeared, another kernel) they compile again, exactly as without a cache.

This module is imported before argparse and the policy model, and imports neither: a hit
imports only what runs a plan.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `typing`: this module is the first thing a one-shot run imports
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ringfence.engine.contract import RunOptions

OFF_VARIABLE = "RINGFENCE_PLAN_CACHE"  # "off": neither read nor write the cache


def forget() -> None:
    """This request takes the usual path and is not kept (a report, a trace)."""
    _pending.clear()


class Pending:
    """The request the fast path looked up and missed: where and how the usual path keeps
    its plan (keeper.py), and the command as the fast path would read it next time."""

    def __init__(self, directory: str, key: str, secret: bytes, command: list[str]) -> None:
        self.directory = directory
        self.key = key
        self.secret = secret
        self.command = command


_pending: dict[str, Pending] = {}


def pending() -> Pending | None:
    """The missed request, once (see keeper.py)."""
    return _pending.pop("request", None)


def _split(args: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """``run FLAGS -- CMD``: the flags and the command; None for any other form. (Whether the
    usual path reads the same command from these arguments is checked when it keeps a plan:
    a positional argument before ``--`` starts the command there, not after it.)"""
    if not args or args[0] != "run" or "--" not in args:
        return None
    i = list(args).index("--")
    if i + 1 >= len(args):
        return None
    return list(args[:i]), list(args[i + 1 :])


def _where(args: Sequence[str]) -> Pending | None:
    """Where this request's plan would be kept, or None when there is no cache here."""
    if os.environ.get(OFF_VARIABLE) == "off":
        return None
    split = _split(args)
    if split is None:
        return None
    from ringfence.plancache import key, seal

    try:
        cwd = os.getcwd()
    except OSError:
        return None
    directory = key.directory(os.environ)
    secret = seal.secret()
    if directory is None or secret is None:
        return None
    return Pending(directory, key.request_key(split[0], cwd, os.environ), secret, split[1])


def run_cached(args: Sequence[str]) -> int | None:
    """The exit status of ``args`` run from the cache, or None to take the usual path."""
    where = _where(args)
    if where is None:
        return None
    _pending["request"] = where
    try:
        hit = _hit(where)
    except Exception:  # whatever is wrong with an entry: compile instead
        return None
    if hit is None:
        return None
    _pending.clear()
    return _run(*hit, where.command)


def _hit(where: Pending) -> tuple[Any, RunOptions] | None:
    """The kept plan if every answer is the same now (and its effects were redone)."""
    from ringfence.plancache import facts, store
    from ringfence.platforms.linux.plan_model import LinuxPlan

    entry = store.load(where.directory, where.key, where.secret)
    if entry is None or type(entry.plan) is not LinuxPlan:
        return None
    # Likely a hit: fork the runner now, with what both sides need imported once (the plan's
    # types), so that its own imports overlap the checks and the host's session imports.
    from ringfence.platforms.linux import prefork

    prefork.start()
    if facts.unchanged(entry.answers) is not None or not _redo(entry.effects):
        return None
    store.touch(where.directory, where.key)
    return entry.plan, _options(entry.options)


def _redo(effects: Sequence[tuple[str, tuple[Any, ...], Any]]) -> bool:
    for name, args, was in effects:
        fn = _effect(name)
        if fn is None:
            return False
        try:
            if fn(*args) != was:
                return False
        except (OSError, TypeError, ValueError):
            return False
    return True


def _effect(name: str) -> Callable[..., Any] | None:
    if name == "statedirs.prepare_workspace":
        from ringfence.policy.statedirs import prepare_workspace

        return prepare_workspace
    if name == "caches.ensure":
        from ringfence.policy.caches import ensure

        return ensure
    return None


def _options(stored: dict[str, Any]) -> RunOptions:
    from ringfence.engine.contract import RunOptions

    timeout = stored.get("timeout")
    if timeout is not None and not isinstance(timeout, (int, float)):
        raise ValueError("timeout")
    return RunOptions(
        timeout=timeout,
        tty=stored.get("tty") is True,
        ask=stored.get("ask") is True,
        audit=stored.get("audit") is not False,
        plan_cached=True,
    )


def _run(plan: Any, options: RunOptions, argv: list[str]) -> int:
    """As ``cli.run``'s own path after the compile: the engine's last step on the Linux
    backend, the same report, the same exit statuses."""
    from ringfence.display import report
    from ringfence.engine.backends import run_plan
    from ringfence.errors import RingfenceError, cli_outcome
    from ringfence.platforms.linux.backend import LinuxBackend

    try:
        result = run_plan(plan, argv, options, LinuxBackend())
    except RingfenceError as e:
        line, status = cli_outcome(e)
        print(line, file=sys.stderr)
        return status
    report(result)
    return result.returncode
