"""Reduced isolation's tree killer: without a pid namespace, find and end what a command left.

For hosts that refuse unprivileged user namespaces. Each command's init is a child subreaper:
orphans of the command's tree reparent to it, so when the command ends it can find and kill
everything left behind; the session runner (also a subreaper, outside every command's Landlock
domain) does the same for anything that outlives an init when the session closes.
"""

from __future__ import annotations

import os
import signal

PR_SET_CHILD_SUBREAPER = 36
KILL_ROUNDS = 50


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


def in_pid_namespace_of(pid: int) -> list[int]:
    """Every process this process can see in ``pid``'s pid namespace, ``pid`` aside. (A
    command cannot make a pid namespace of its own: no capability, and seccomp refuses it.)"""
    try:
        target = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


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
