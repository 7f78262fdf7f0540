"""The macOS enforcement step: facts from the Mac, ``sandbox-exec -p PROFILE``, and the end of
the whole process tree.

Pure logic and OS calls are kept apart: :func:`gather_facts` is the only place that looks at
the file system, :func:`process_table` the only place that reads the process table, and
:func:`tree_members` (which processes belong to the command) is pure. The rest uses only POSIX
calls that Linux and macOS share, so the tests run all of it for real on Linux, with a stand-in
for ``sandbox-exec`` (a script that drops ``-p PROFILE`` and execs the rest) and for ``log``.

How the tree ends: the command starts in its own session and process group (``setsid``). While
it runs, the process table is sampled and every descendant is remembered with its start time.
When it ends or times out, everything in its process group, every remembered descendant still
alive with the same start time, and every descendant of any of them is stopped (``SIGSTOP``, so
nothing can fork while we look), the table is read again until no new member appears, then all
are killed (``SIGKILL``); this repeats until none is left.

What cannot be caught on macOS (no pid namespace, no subreaper, no cgroup to walk): a process
that leaves the process group (``setsid``/``setpgid``) *and* is reparented to launchd (its
parent exited: a double fork) between two samples of the process table. It is no longer in
the group and no longer a descendant, and nothing else ties it to the command. Seatbelt still
confines it (the profile is inherited and cannot be dropped), but it may outlive the command.
A pid reused by an unrelated process is not killed: remembered pids are only signalled while
their start time matches.

Not run on a Mac yet: ``sandbox-exec`` itself, ``/bin/ps`` on macOS (its ``lstart`` column is
assumed to be stable for a process's life) and ``log stream`` have not run here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.macos import monitor as mac_monitor
from ringfence.platforms.macos.plan import (
    EXPLAIN_TAG,
    SANDBOX_EXEC,
    MacFacts,
    SeatbeltPlan,
    compile_macos,
    new_tag,
)
from ringfence.policy import defaults_macos
from ringfence.policy.model import Policy

PS = "/bin/ps"  # by absolute path, where /proc does not exist (macOS)
POLL = 0.1  # seconds between samples of the process table while the command runs
KILL_ROUNDS = 50  # stop-then-kill rounds before giving up on a tree that keeps coming back

Stdio = int | IO[Any] | None


# ----------------------------------------------------------------------------- facts


def gather_facts(
    policy: Policy,
    *,
    home: str | None = None,
    tmp_parent: str | None = None,
    tag: str | None = None,
) -> MacFacts:
    """What ``compile_macos`` needs, read from this machine: the home directory, a fresh
    private temporary directory for this command (``mkdtemp``: mode 0700, a name no one else
    has), the real path (symlinks resolved) of every path the policy names, and a fresh
    session tag. The caller removes ``facts.tmpdir`` when the command is over."""
    home = home or os.path.expanduser("~")
    tmpdir = tempfile.mkdtemp(prefix="ringfence-", dir=tmp_parent)
    os.chmod(tmpdir, 0o700)  # mkdtemp does, whatever the umask; say it where it matters
    named = (
        home,
        tmpdir,
        *policy.writable_paths(),
        *policy.protected,
        *policy.deny_read_paths(home, "macos"),
        *defaults_macos.persistence_paths(home),
        *policy.allow_sockets,
    )
    realpaths = {p: os.path.realpath(p) for p in dict.fromkeys(named) if os.path.isabs(p)}
    return MacFacts(home=home, tmpdir=tmpdir, realpaths=realpaths, tag=tag or new_tag())


# ----------------------------------------------------------------------------- process table


@dataclass(frozen=True)
class ProcInfo:
    """One process as the table showed it. ``start`` tells a process from a later one that
    reuses its pid."""

    pid: int
    ppid: int
    pgid: int
    start: str
    zombie: bool = False


def parse_proc_stat(pid: int, text: str) -> ProcInfo | None:
    """A ProcInfo from Linux ``/proc/PID/stat`` (the name in parentheses may hold anything)."""
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        return None
    return ProcInfo(pid, int(fields[1]), int(fields[2]), fields[19], zombie=fields[0] in "ZX")


def parse_ps(text: str) -> list[ProcInfo]:
    """ProcInfo from ``ps -axo pid=,ppid=,pgid=,stat=,lstart=`` (the format both macOS and
    procps accept; ``lstart`` is the start time, to the second)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and all(p.isdigit() for p in parts[:3]):
            pid, ppid, pgid = (int(p) for p in parts[:3])
            out.append(ProcInfo(pid, ppid, pgid, parts[4].strip(), zombie="Z" in parts[3]))
    return out


def process_table() -> list[ProcInfo]:
    """Every process now: ``/proc`` where there is one (Linux), else ``/bin/ps`` (macOS)."""
    if os.path.isdir("/proc/self"):
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        info = parse_proc_stat(int(name), f.read())
                except OSError:
                    continue  # it ended while we looked
                if info is not None:
                    out.append(info)
        return out
    r = subprocess.run(
        [PS, "-axo", "pid=,ppid=,pgid=,stat=,lstart="],
        capture_output=True, text=True, check=False, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return parse_ps(r.stdout)


def tree_members(
    table: Iterable[ProcInfo],
    pgid: int,
    known: Mapping[int, str] = {},
    exclude: Iterable[int] = (),
) -> dict[int, str]:
    """The command's processes in ``table`` (pid -> start): everything in its process group
    ``pgid`` (the command leads it, and a pid is not reused while its group has members), the
    ``known`` pids still alive with the same start time, and every descendant of these. Zombies
    are left out (already dead), and so are ``exclude`` (ourselves), pid 1 and pid 0, whatever
    the table says."""
    procs = {p.pid: p for p in table}
    never = {0, 1, *exclude}
    seeds = {p.pid for p in procs.values() if p.pgid == pgid}
    seeds |= {pid for pid, start in known.items() if pid in procs and procs[pid].start == start}
    members = {pid for pid in seeds if pid in procs}
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {pid: procs[pid].start for pid in members - never if not procs[pid].zombie}


def _self_and_ancestors() -> set[int]:
    return {os.getpid(), os.getppid()}


def kill_tree(
    pgid: int,
    known: Mapping[int, str] = {},
    table: Callable[[], list[ProcInfo]] = process_table,
    reap: Callable[[], None] = lambda: None,
) -> list[int]:
    """Stop, then kill, every process of the command; repeat until none is left. Returns the
    pids still there after ``KILL_ROUNDS`` rounds (empty when the tree is gone)."""
    mine = _self_and_ancestors()
    targets: dict[int, str] = {}
    for _ in range(KILL_ROUNDS):
        targets = tree_members(table(), pgid, known, mine)
        if not targets:
            return []
        stopped: dict[int, str] = {}
        while set(targets) - set(stopped):  # stop them all: a stopped process cannot fork
            for pid in set(targets) - set(stopped):
                _signal(pid, signal.SIGSTOP)
            _signal_group(pgid, signal.SIGSTOP)
            stopped.update(targets)
            targets = tree_members(table(), pgid, {**known, **stopped}, mine)
        for pid in stopped:
            _signal(pid, signal.SIGKILL)
        _signal_group(pgid, signal.SIGKILL)
        reap()
        time.sleep(0.01)
    return sorted(targets)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    if pgid > 1 and pgid != os.getpgrp():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


# ----------------------------------------------------------------------------- running


@dataclass(frozen=True)
class MacResult:
    """How the command ended.

    ``returncode`` as ``subprocess`` has it (negative: the signal that ended it); ``exit_code``
    and ``signal`` split out. ``violations`` are the Linux-shaped records from the monitor.
    ``survivors`` lists pids of the tree still alive after the kill (empty unless something
    escaped, see the module docstring)."""

    argv: tuple[str, ...]
    returncode: int
    exit_code: int | None
    signal: int | None
    timed_out: bool
    duration: float
    stdout: bytes | None = None
    stderr: bytes | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    survivors: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


def check_sandbox_exec(path: str = SANDBOX_EXEC) -> str:
    """``path`` if it is an absolute path to an executable file, else :class:`UnsupportedError`:
    without sandbox-exec ringfence refuses to run rather than run the command unconfined."""
    if not os.path.isabs(path) or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise UnsupportedError(
            f"macOS: {path} is missing or not executable, so the Seatbelt profile cannot be "
            "applied; ringfence will not run the command without it (full access is the only "
            "way to run without a boundary)"
        )
    return path


def run_plan(
    plan: SeatbeltPlan,
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: Stdio = None,
    stdout: Stdio = None,
    stderr: Stdio = None,
    input: bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    sandbox_exec: str = SANDBOX_EXEC,
    log: str = mac_monitor.LOG,
    monitor: bool = True,
    poll: float = POLL,
) -> MacResult:
    """Run ``argv`` under ``plan``: ``sandbox-exec -p PROFILE argv...`` in its own session and
    process group, with the violation monitor around it; then end the whole tree.

    ``sandbox_exec`` and ``log`` are absolute paths, ``/usr/bin/...`` unless a test passes a
    stand-in. A plan without a profile (full access) runs ``argv`` directly, unmonitored."""
    if not argv:
        raise PolicyError("no command to run")
    notes: list[str] = []
    if plan.sandboxed:
        if plan.tag in ("", EXPLAIN_TAG):
            raise PolicyError("a macOS plan to run needs a fresh session tag (plan.new_tag)")
        full = (check_sandbox_exec(sandbox_exec), "-p", plan.profile, *argv)
    else:
        full = tuple(argv)
        monitor = False
    if capture_output:
        stdout = stderr = subprocess.PIPE
    if input is not None:
        stdin = subprocess.PIPE
    watch = mac_monitor.Monitor(plan.tag, log=log) if monitor else None
    if watch is not None:
        try:
            if not watch.start():
                notes.append("the violation monitor gave no sign of life before the command")
        except OSError as e:
            watch = None
            notes.append(f"no violation report: {log} could not be started ({e.strerror})")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            full, cwd=cwd, env=None if env is None else dict(env), stdin=stdin, stdout=stdout,
            stderr=stderr, start_new_session=True, close_fds=True,
        )  # fmt: skip
    except OSError as e:
        if watch is not None:
            watch.stop()
        raise SandboxError(f"cannot start {full[0]}: {e.strerror}") from e
    known: dict[int, str] = {}
    out = err = None
    timed_out = False
    mine = _self_and_ancestors()
    deadline = None if timeout is None else started + timeout
    try:
        while True:
            step = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            try:
                if proc.stdin or proc.stdout or proc.stderr:
                    out, err = proc.communicate(input, timeout=step)
                else:
                    proc.wait(timeout=step)
                break
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(OSError):
                known.update(tree_members(process_table(), proc.pid, known, mine))
            if proc.poll() is not None:
                # The command ended but something it started still holds its pipes: end it.
                kill_tree(proc.pid, known)
            elif deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                kill_tree(proc.pid, known, reap=lambda: _reap(proc))
    finally:
        survivors = kill_tree(proc.pid, known, reap=lambda: _reap(proc))
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        violations = watch.stop(plan) if watch is not None else []
    rc = proc.returncode
    assert rc is not None
    if survivors:
        notes.append(f"still running after the kill: {survivors}")
    return MacResult(
        argv=tuple(argv), returncode=rc, exit_code=rc if rc >= 0 else None,
        signal=-rc if rc < 0 else None, timed_out=timed_out,
        duration=time.monotonic() - started, stdout=out, stderr=err, violations=violations,
        survivors=tuple(survivors), notes=tuple(notes),
    )  # fmt: skip


def _reap(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(0.05)


def run(
    policy: Policy,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    home: str | None = None,
    tmp_parent: str | None = None,
    proxy_port: int | None = None,
    **kwargs: Any,
) -> MacResult:
    """Facts, profile, run, clean up: one command under ``policy`` on this Mac. The command's
    ``TMPDIR`` is its private temporary directory, removed afterwards. ``kwargs`` go to
    :func:`run_plan`."""
    facts = gather_facts(policy, home=home, tmp_parent=tmp_parent)
    if proxy_port is not None:
        facts = dataclasses.replace(facts, proxy_port=proxy_port)
    try:
        plan = compile_macos(policy, facts)
        env = {**(os.environ if env is None else env), "TMPDIR": facts.tmpdir}
        return run_plan(plan, argv, env=env, **kwargs)
    finally:
        shutil.rmtree(facts.tmpdir, ignore_errors=True)
