"""The host side of one command: start the runner, forward signals, time out, map the status.

The exit status follows the shell's conventions so that wrapping a command in ``ringfence run``
changes nothing a script relies on: the command's own status; 128+N when a signal N ended it;
124 on timeout; 126/127 when it is not executable / not found; 125 when ringfence itself failed.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ringfence.platforms.linux.plan import LinuxPlan

if TYPE_CHECKING:
    from ringfence.platforms.linux.cgroups import RunCgroup

EXIT_TIMEOUT = 124
EXIT_INTERNAL = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


@dataclass(frozen=True)
class Outcome:
    """How a command ended. ``message`` is ringfence's own explanation, if any."""

    returncode: int
    timed_out: bool = False
    signal: int | None = None
    message: str | None = None
    error_kind: str | None = None


def _exec_failure(argv0: str, err: int) -> Outcome:
    if err == errno.ENOENT:
        return Outcome(EXIT_NOT_FOUND, message=f"{argv0}: command not found")
    return Outcome(EXIT_NOT_EXECUTABLE, message=f"{argv0}: cannot execute: {os.strerror(err)}")


def run_sandboxed(plan: LinuxPlan, argv: Sequence[str], timeout: float | None) -> Outcome:
    """Run ``argv`` under ``plan``; blocks until the whole sandbox is gone."""

    cgroup = None
    if plan.cgroup_limits:
        from ringfence.platforms.linux.cgroups import RunCgroup

        try:
            cgroup = RunCgroup.create(plan.cgroup_sites, dict(plan.cgroup_limits))
        except OSError as e:
            return Outcome(EXIT_INTERNAL, message=str(e), error_kind="SandboxError")
    try:
        outcome = _run_in(plan, argv, timeout, cgroup)
    finally:
        oom_kills = cgroup.oom_kills() if cgroup is not None else 0
        if cgroup is not None:
            cgroup.remove()
    if oom_kills:
        limit = dict(plan.cgroup_limits)["memory"]
        note = (
            f"the memory limit ({limit // (1 << 20)} MiB) was reached: the kernel killed "
            f"{oom_kills} process{'es' if oom_kills > 1 else ''} of the command"
        )
        message = f"{outcome.message}; {note}" if outcome.message else note
        outcome = replace(outcome, message=message)
    return outcome


def _run_in(
    plan: LinuxPlan, argv: Sequence[str], timeout: float | None, cgroup: RunCgroup | None
) -> Outcome:
    from ringfence.platforms.linux import runner

    tmpdir = None
    if plan.isolation == "reduced":
        tmpdir = tempfile.mkdtemp(prefix="ringfence-tmp-")
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    host_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        if cgroup is not None:  # first, so everything the runner starts is counted
            try:
                cgroup.join(os.getpid())
            except OSError as e:
                runner.fail_early(report_w, f"cannot join the sandbox's cgroup: {e}")
        if tmpdir is not None:
            from ringfence.platforms.linux import runner_reduced

            runner_reduced.reduced_main(plan, argv, report_w, host_pid, tmpdir)
        runner.outer_main(plan, argv, report_w, host_pid)
    os.close(report_w)
    previous = {}
    for sig in runner.FORWARDED:
        previous[sig] = signal.signal(sig, lambda s, _f: _killpg(pid, s))
    try:
        data, timed_out = _read_report(report_r, timeout)
        if timed_out and tmpdir is not None:
            # reduced isolation: the runner kills the tree it leads, then exits
            os.kill(pid, signal.SIGALRM)
            _, _ = _read_report(report_r, 10.0)
            _killpg(pid, signal.SIGKILL)
        elif timed_out:
            _killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(report_r)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if timed_out:
        return Outcome(EXIT_TIMEOUT, timed_out=True, message=f"timed out after {timeout:g} s")
    return _outcome(data, status, argv)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _read_report(fd: int, timeout: float | None) -> tuple[bytes, bool]:
    deadline = None if timeout is None else time.monotonic() + timeout
    data = b""
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return data, True
        chunk = os.read(fd, 65536)
        if not chunk:
            return data, False
        data += chunk


def _outcome(data: bytes, status: int, argv: Sequence[str]) -> Outcome:
    lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        code = os.waitstatus_to_exitcode(status)
        return Outcome(
            EXIT_INTERNAL,
            message=f"the sandbox runner ended without a report (status {code})",
            error_kind="SandboxError",
        )
    report = json.loads(lines[-1])
    if "exit" in report:
        return Outcome(int(report["exit"]))
    if "signal" in report:
        sig = int(report["signal"])
        return Outcome(128 + sig, signal=sig)
    if "exec_error" in report:
        return _exec_failure(argv[0], int(report["exec_error"]))
    return Outcome(
        EXIT_INTERNAL,
        message=str(report.get("error", "unknown failure")),
        error_kind=str(report.get("kind", "SandboxError")),
    )


def run_unconfined(
    argv: Sequence[str], env: dict[str, str], cwd: str, timeout: float | None
) -> Outcome:
    """full-access mode: no boundary at all, as the user explicitly asked."""
    try:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd)
    except FileNotFoundError:
        return _exec_failure(argv[0], errno.ENOENT)
    except PermissionError as e:
        return _exec_failure(argv[0], e.errno or errno.EACCES)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return Outcome(EXIT_TIMEOUT, timed_out=True, message=f"timed out after {timeout:g} s")
    except KeyboardInterrupt:
        rc = proc.wait()
    if rc < 0:
        return Outcome(128 - rc, signal=-rc)
    return Outcome(rc)
