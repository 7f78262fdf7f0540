"""Reduced isolation: the command under Landlock, seccomp and process rules, no namespaces.

For hosts that refuse unprivileged user namespaces (container runtimes' seccomp profiles,
Ubuntu's AppArmor restriction). Only ever used when the policy asks for it. The runner is a
child subreaper: orphans of the command's tree reparent to it, so when the command ends it can
find and kill everything the command left behind. It stays outside the command's Landlock
domain; with ABI 6 the command cannot signal it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Sequence
from typing import NoReturn

from ringfence.platforms.linux import landlock, runner
from ringfence.platforms.linux.libc import syscall
from ringfence.platforms.linux.plan import LinuxPlan

PR_SET_CHILD_SUBREAPER = 36
KILL_ROUNDS = 50


def reduced_main(
    plan: LinuxPlan, argv: Sequence[str], report_fd: int, host_pid: int, tmpdir: str
) -> NoReturn:
    """Runs in the host's forked child; never returns."""
    try:
        runner.die_with_host(host_pid)
        syscall("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        syscall("prctl", runner.PR_SET_DUMPABLE, 0, 0, 0, 0)
        assert plan.landlock is not None
        rules = dataclasses.replace(
            plan.landlock,
            rules=(*plan.landlock.rules, landlock.PathRule(tmpdir, plan.landlock.handled_fs)),
        )
        plan = dataclasses.replace(plan, landlock=rules, env={**plan.env, "TMPDIR": tmpdir})
        # The host's timeout: end the whole tree (there is no pid namespace to do it for us).
        signal.signal(signal.SIGALRM, lambda _s, _f: kill_descendants(reap=False))
        failure, status = runner.run_command(plan, argv)
        kill_descendants()
        runner.report_status(report_fd, failure, status)
        os._exit(0)
    except BaseException as e:
        runner._report_error(report_fd, e)
        kill_descendants()
        os._exit(125)


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses; split after the last ')'
        ppid = int(data.rsplit(b")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids = _children_map()
    out: list[int] = []
    todo = list(kids.get(pid, ()))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def kill_descendants(*, reap: bool = True) -> None:
    """SIGKILL everything below us (orphans reparented here as the subreaper) and reap it.

    ``reap=False`` (from a signal handler, while the main flow waits for the command) only
    kills: the main flow must still collect the command's own status.
    """
    me = os.getpid()
    for _ in range(KILL_ROUNDS):
        found = descendants(me)
        if not found:
            return
        for p in found:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not reap:
            return
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
