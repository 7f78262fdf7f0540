"""The Windows backend's run: one command as a sandbox user, with a write-restricted token,
inside a job object that ends its whole tree, started through a broker. ``command.py`` calls
:func:`run` once the plan compiled and the grants are in place.

NOT RUN ON WINDOWS. The orchestration (:func:`run`, here, over the ``RunnerApi`` interface),
the broker's logic (``broker.py``) and protocol (``broker_wire.py``), the command-line quoting
and the environment block (``cmdline.py``) and the broker's launch (``broker_launch.py``) are
pure and tested on Linux against a simulated machine that fails at every step;
``run_native.Win32RunnerApi`` and ``broker_native.Win32BrokerApi`` (ctypes, over
``kernel.py``) were written against the documented signatures, type-checked with ``mypy
--platform win32``, and have never executed.

Why a broker: ``CreateProcessAsUserW`` with another user's token needs
SeAssignPrimaryTokenPrivilege and ``CreateProcessWithTokenW`` needs SeImpersonatePrivilege;
the unelevated runner holds neither. ``CreateProcessWithLogonW`` needs no privilege: it starts
the broker (``python -m ringfence.platforms.windows.broker``) as the sandbox user, and the
broker creates the command with a restricted copy of its *own* token, which needs none either.

The steps, in this order, and why:

1. the sandbox user's password from the DPAPI store (``secrets.py``);
2. a job object with KILL_ON_JOB_CLOSE and DIE_ON_UNHANDLED_EXCEPTION, no breakaway and no UI
   limits (a job with UI limits cannot be nested, and step 5 nests it), created before any
   process, so there is never a running, unjobbed process;
3. the command's stdio in the runner: its own std handles, NUL, or two pipes it reads;
4. ``CreateProcessWithLogonW(LOGON_WITH_PROFILE, CREATE_SUSPENDED)`` of the broker, its
   stdin/stdout two pipes to the runner, stderr NUL, no desktop named (``lpDesktop`` NULL:
   the documented behaviour is that the function then adds the account to the inherited
   window station and desktop itself). LOGON_WITH_PROFILE because without a loaded profile
   the user's registry hive is not loaded (HKCU falls back to ``.DEFAULT``) and per-user
   folders are missing, which breaks ordinary tools; the cost is a profile directory for
   each sandbox user (created at the first run, to be removed by uninstall) and the profile
   load on each run;
5. ``AssignProcessToJobObject(job, broker)`` while it is suspended. A process started by
   CreateProcessWithLogonW can already be in a job of the secondary logon service (and of the
   runner's own job, inherited through the parent-process attribute): on Windows 8 and later
   an empty job is then nested under it. Where that is refused (older Windows, a job that
   forbids it) the runner fails closed: the broker never ran;
6. the command's three stdio handles are duplicated into the broker (inheritable there), the
   runner's copies closed, the broker resumed, and the request sent (``broker_wire.py``);
7. the broker replies ``started`` (the command exists, suspended, in the job it inherited);
   the runner duplicates the command's process and thread handles out of the broker, closes
   the broker's stdin, waits for the broker to exit (exit code 0), checks ``IsProcessInJob``
   for the command, and only then resumes it. No unrestricted process of the sandbox user is
   alive while the command runs;
8. wait (with the timeout), then TerminateJobObject either way so nothing the command started
   outlives it; every handle is closed.

Any failure once a process exists terminates the job and each process the runner holds (the
broker is still suspended, or in the job) and closes every handle: there is never an
unconfined or orphaned process.

Needed on the machine, not checked here: the sandbox users must be able to read and execute
the Python installation and the ringfence package the runner runs from (a per-user Python
under another account's profile is unreadable to them); the broker runs the base interpreter
(``sys._base_executable``, not a venv's launcher) with ``PYTHONPATH`` set to the package.

ConPTY (``pty_size``) is not implemented: a spec asking for it is refused.
"""

from __future__ import annotations

import ntpath
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.broker_wire import (
    MAX_REPLY,
    BrokerRequest,
    ProcessHandles,
    decode_reply,
    encode_request,
    read_frame,
)
from ringfence.platforms.windows.cmdline import command_line, environment_block
from ringfence.platforms.windows.sids import check_sid

__all__ = [
    "BrokerProcess",
    "RunResult",
    "RunSpec",
    "RunnerApi",
    "StdioMode",
    "run",
]

StdioMode = Literal["inherit", "null", "capture"]
TIMEOUT_EXIT_CODE = 124  # what the job's processes are given when the timeout ends them
ENDED_EXIT_CODE = 1  # what leftovers of a command that ended are given
KILL_WAIT_SECONDS = 10.0
BROKER_EXIT_SECONDS = 30.0  # the broker exits as soon as its stdin closes


# --- the spec, the result, the interface ------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One command to run as ``user``.

    ``argv[0]`` must be an absolute path (resolve it beforehand): CreateProcess's own search
    would look in the runner's directory first. ``cwd`` must be absolute. ``env`` is the whole
    environment (already filtered by the policy). ``timeout`` is in seconds (None: none)."""

    user: str
    restricting_sids: tuple[str, ...]
    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    stdio: StdioMode = "inherit"
    pty_size: tuple[int, int] | None = None  # (columns, rows); ConPTY: not implemented


@dataclass(frozen=True)
class RunResult:
    exit_code: int  # the process's DWORD exit code; TIMEOUT_EXIT_CODE when timed out
    timed_out: bool
    stdout: bytes = b""  # with stdio="capture"
    stderr: bytes = b""


@dataclass(frozen=True)
class BrokerProcess:
    """The broker, as ``start_broker`` returns it: suspended; ``stdin`` is the runner's write
    end of the broker's stdin, ``stdout`` its read end of the broker's stdout."""

    process: int
    thread: int
    pid: int
    stdin: int
    stdout: int


class RunnerApi(Protocol):
    """Every Windows call the runner makes. Each ``int`` is a handle the caller owns and
    closes with ``close``; a method that fails has opened nothing."""

    def load_secret(self, user: str) -> str: ...
    def create_job(self) -> int: ...
    def limit_job(self, job: int) -> None: ...
    def inherit_std(self, which: int) -> int: ...  # 0, 1, 2: a duplicate (NUL if none)
    def open_null(self) -> int: ...
    def create_pipe(self) -> tuple[int, int]: ...  # (read end, write end)
    def start_broker(self, user: str, password: str) -> BrokerProcess: ...  # suspended
    def assign_to_job(self, job: int, process: int) -> None: ...
    def send_handle(self, process: int, handle: int) -> int: ...  # its value in ``process``
    def resume_thread(self, thread: int) -> None: ...
    def write(self, handle: int, data: bytes) -> None: ...
    def read(self, handle: int, n: int) -> bytes: ...  # at most n bytes; b"" at EOF
    def take_handle(self, process: int, remote: int) -> int: ...  # from ``process``, ours
    def process_in_job(self, job: int, process: int) -> bool: ...
    def wait(self, process: int, timeout: float | None) -> bool: ...  # True: it ended
    def exit_code(self, process: int) -> int: ...
    def terminate_job(self, job: int, exit_code: int) -> None: ...
    def terminate_process(self, process: int, exit_code: int) -> None: ...
    def read_all(self, handle: int) -> bytes: ...  # until the write ends are all closed
    def close(self, handle: int) -> None: ...


def check_spec(spec: RunSpec) -> tuple[str, bytes]:
    """Everything that can be refused before Windows is touched: (command line, env block)."""
    secret_store.check_user_name(spec.user)
    if not spec.restricting_sids:
        raise PolicyError("windows: a write-restricted token needs at least one restricting SID")
    for sid in spec.restricting_sids:
        check_sid(sid)
    if spec.pty_size is not None:
        raise UnsupportedError("windows: a terminal (ConPTY) is not implemented yet")
    if spec.stdio not in ("inherit", "null", "capture"):
        raise PolicyError(f"windows: bad stdio mode {spec.stdio!r}")
    if spec.timeout is not None and not spec.timeout > 0:
        raise PolicyError(f"windows: the timeout must be positive, not {spec.timeout}")
    cmd = command_line(spec.argv)
    if not ntpath.isabs(spec.argv[0]):
        raise PolicyError(f"windows: the program must be an absolute path: {spec.argv[0]!r}")
    if not ntpath.isabs(spec.cwd) or "\0" in spec.cwd:
        raise PolicyError(f"windows: the working directory must be absolute: {spec.cwd!r}")
    block = environment_block(spec.env)
    _request(spec, (1, 1, 1))  # the request's own checks and size limit, before anything runs
    return cmd, block


def _request(spec: RunSpec, stdio: tuple[int, int, int]) -> bytes:
    return encode_request(
        BrokerRequest(
            argv=tuple(spec.argv),
            cwd=spec.cwd,
            env=tuple(spec.env.items()),
            restricting_sids=tuple(spec.restricting_sids),
            stdio=stdio,
        )
    )


class _Reader(threading.Thread):
    """Drains one pipe while the command runs (a full pipe would block the command)."""

    def __init__(self, api: RunnerApi, handle: int) -> None:
        super().__init__(daemon=True)
        self.api, self.handle = api, handle
        self.data = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.data = self.api.read_all(self.handle)
        except BaseException as e:  # re-raised by the runner after join
            self.error = e


def run(spec: RunSpec, api: RunnerApi) -> RunResult:
    """Run ``spec`` through ``api`` (the steps and their order: see the module docstring)."""
    check_spec(spec)
    owned: list[int] = []  # every handle we hold, closed newest first at the end
    child_ends: list[int] = []  # stdio handles for the command, closed once the broker has them
    job: int | None = None
    broker: BrokerProcess | None = None
    command: list[int] = []  # the command's process handle, once the runner holds it
    proc: ProcessHandles | None = None
    settled = False  # the command has ended, or the job was terminated
    readers: list[_Reader] = []

    def keep(handle: int) -> int:
        owned.append(handle)
        return handle

    def child(handle: int) -> int:
        child_ends.append(handle)
        return handle

    def release(handle: int) -> None:
        owned.remove(handle)
        api.close(handle)

    try:
        password = api.load_secret(spec.user)
        job = keep(api.create_job())
        api.limit_job(job)

        read_ends: list[int] = []
        if spec.stdio == "inherit":
            stdio = (
                child(api.inherit_std(0)),
                child(api.inherit_std(1)),
                child(api.inherit_std(2)),
            )
        else:
            null = child(api.open_null())
            stdio = (null, null, null)
            if spec.stdio == "capture":
                for _ in range(2):
                    read_end, write_end = api.create_pipe()
                    read_ends.append(keep(read_end))
                    child(write_end)
                stdio = (null, child_ends[1], child_ends[2])

        started = api.start_broker(spec.user, password)
        del password
        for handle in (started.process, started.thread, started.stdin, started.stdout):
            keep(handle)
        broker = started
        api.assign_to_job(job, broker.process)
        remote = {
            handle: api.send_handle(broker.process, handle) for handle in dict.fromkeys(stdio)
        }
        while child_ends:  # ours closed: EOF on the pipes comes when the job's copies go
            api.close(child_ends.pop())
        api.resume_thread(broker.thread)

        api.write(
            broker.stdin, _request(spec, (remote[stdio[0]], remote[stdio[1]], remote[stdio[2]]))
        )
        stdout = broker.stdout
        reply = decode_reply(read_frame(lambda n: api.read(stdout, n), MAX_REPLY))
        if reply.status != "started":
            raise SandboxError(f"windows: the broker did not start the command: {reply.message}")
        if reply.broker_pid != broker.pid:
            raise SandboxError(
                f"windows: the reply came from process {reply.broker_pid}, not the broker "
                f"{broker.pid} (a launcher in between?)"
            )
        command.append(keep(api.take_handle(broker.process, reply.process)))
        proc = ProcessHandles(
            command[0], keep(api.take_handle(broker.process, reply.thread)), reply.pid
        )
        release(broker.stdin)  # EOF: the broker exits
        if not api.wait(broker.process, BROKER_EXIT_SECONDS):
            raise SandboxError("windows: the broker did not exit after handing the command over")
        broker_code = api.exit_code(broker.process)
        if broker_code != 0:
            raise SandboxError(f"windows: the broker exited with {broker_code}")
        if not api.process_in_job(job, proc.process):
            raise SandboxError("windows: the command is not in the runner's job: not started")

        readers = [_Reader(api, handle) for handle in read_ends]
        for reader in readers:
            reader.start()
        api.resume_thread(proc.thread)

        ended = api.wait(proc.process, spec.timeout)
        api.terminate_job(job, ENDED_EXIT_CODE if ended else TIMEOUT_EXIT_CODE)
        settled = True
        if ended:
            code = api.exit_code(proc.process)
        else:
            api.wait(proc.process, KILL_WAIT_SECONDS)
            code = TIMEOUT_EXIT_CODE
        for reader in readers:
            reader.join()
            if reader.error is not None:
                raise reader.error
        out = readers[0].data if readers else b""
        err = readers[1].data if readers else b""
        return RunResult(exit_code=code, timed_out=not ended, stdout=out, stderr=err)
    except BaseException:
        if not settled:
            _kill(api, job, [*command, *([broker.process] if broker else [])])
        raise
    finally:
        errors: list[BaseException] = []
        for handle in [*reversed(child_ends), *reversed(owned)]:
            try:
                api.close(handle)
            except Exception as e:  # close them all, then report the first failure
                errors.append(e)
        for reader in readers:
            reader.join(KILL_WAIT_SECONDS)
        if errors and sys.exc_info()[0] is None:
            raise SandboxError(f"windows: closing a handle failed: {errors[0]}") from errors[0]


def _kill(api: RunnerApi, job: int | None, processes: list[int]) -> None:
    """Something failed: end everything. The job reaches the broker once assigned and the
    command (which inherits it); TerminateProcess reaches each process the runner holds,
    in the job or not (the broker is suspended until it is in the job); closing the job
    (kill-on-close) is the last line."""
    if job is not None:
        _quietly(api.terminate_job, job, TIMEOUT_EXIT_CODE)
    for process in processes:
        _quietly(api.terminate_process, process, TIMEOUT_EXIT_CODE)
    for process in processes:
        _quietly(api.wait, process, KILL_WAIT_SECONDS)


def _quietly(step: Callable[..., object], *args: object) -> None:
    try:
        step(*args)
    except Exception:
        pass
