"""The Windows command runner: one command as a sandbox user, with a write-restricted token,
inside a job object that ends its whole tree, started through a broker.

NOT RUN ON WINDOWS. The orchestration (:func:`run`), the broker's logic and protocol
(``broker.py``), the command-line quoting and the environment block are pure and tested on
Linux against a simulated machine that fails at every step; ``Win32RunnerApi`` and
``Win32BrokerApi`` (ctypes) were written against the documented signatures, type-checked with
``mypy --platform win32``, and have never executed.

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
   runner's copies closed, the broker resumed, and the request sent (``broker.py``);
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

import ctypes
import ntpath
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from ctypes import wintypes
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import broker as wire
from ringfence.platforms.windows import dacl, dll, dpapi, sids
from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.broker import (
    ProcessHandles,
    command_line,
    environment_block,
)

__all__ = [
    "BrokerProcess",
    "ProcessHandles",
    "RunResult",
    "RunSpec",
    "RunnerApi",
    "command_line",
    "environment_block",
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
        sids.check_sid(sid)
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
    return wire.encode_request(
        wire.BrokerRequest(
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
        reply = wire.decode_reply(wire.read_frame(lambda n: api.read(stdout, n), wire.MAX_REPLY))
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


# --- pure: how the broker is started ----------------------------------------------------------


@dataclass(frozen=True)
class BrokerLaunch:
    """What CreateProcessWithLogonW is given for the broker."""

    application: str
    command_line: str
    cwd: str
    environment: dict[str, str]


_BROKER_ENV_KEEP = ("SystemRoot", "windir", "SystemDrive")


def broker_launch(
    python: str,
    package_root: str,
    base_env: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.isfile,
) -> BrokerLaunch:
    """``pythonw.exe`` beside ``python`` when there is one (no console window for the broker),
    ``-B -s -m ringfence.platforms.windows.broker``, started in ``package_root`` (the directory
    holding the ``ringfence`` package: never a writable root, which could plant a module),
    with ``PYTHONPATH`` set to it, user site-packages off, and a minimal environment.

    ``python`` must be the real interpreter (``sys._base_executable``), not a venv launcher:
    a launcher runs the interpreter as a child, whose handles the runner cannot reach (the
    broker's reply names its pid, and a mismatch is refused)."""
    if not ntpath.isabs(python) or not ntpath.isabs(package_root):
        raise SandboxError(
            f"windows: the broker needs absolute paths, not {python!r} and {package_root!r}"
        )
    folder, name = ntpath.split(python)
    windowless = ntpath.join(folder, "pythonw.exe")
    if name.lower() == "python.exe" and exists(windowless):
        python = windowless
    lower = {k.lower(): v for k, v in base_env.items()}
    env = {k: lower[k.lower()] for k in _BROKER_ENV_KEEP if k.lower() in lower}
    env.update(
        PYTHONPATH=package_root,
        PYTHONNOUSERSITE="1",
        PYTHONSAFEPATH="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUTF8="1",
    )
    argv = [python, "-B", "-s", "-m", wire.BROKER_MODULE]
    return BrokerLaunch(python, command_line(argv), package_root, env)


def this_broker_launch() -> BrokerLaunch:
    """``broker_launch`` for the interpreter and ringfence package running this code."""
    import ringfence

    python = str(getattr(sys, "_base_executable", "") or sys.executable)
    package_root = ntpath.dirname(ntpath.dirname(ntpath.abspath(ringfence.__file__)))
    return broker_launch(python, package_root, os.environ)


# --- Win32RunnerApi / Win32BrokerApi ------------------------------------------------------------

LOGON_WITH_PROFILE = 0x1
TOKEN_ASSIGN_PRIMARY = 0x1
TOKEN_DUPLICATE = 0x2
TOKEN_QUERY = 0x8
DISABLE_MAX_PRIVILEGE = 0x1
WRITE_RESTRICTED = 0x8
TOKEN_GROUPS_CLASS = 2
TOKEN_DEFAULT_DACL_CLASS = 6
SE_GROUP_LOGON_ID = 0xC0000000
GENERIC_ALL = 0x10000000
GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
FILE_SHARE_READ_WRITE = 0x3
OPEN_EXISTING = 3
HANDLE_FLAG_INHERIT = 0x1
DUPLICATE_SAME_ACCESS = 0x2
JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION = 0x400
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
CREATE_SUSPENDED = 0x4
CREATE_NEW_PROCESS_GROUP = 0x200
CREATE_UNICODE_ENVIRONMENT = 0x400
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x1
SW_HIDE = 0
EXTENDED_STARTUPINFO_PRESENT = 0x80000
STARTF_USESTDHANDLES = 0x100
PROC_THREAD_ATTRIBUTE_HANDLE_LIST = 0x20002
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
INFINITE = 0xFFFFFFFF
ERROR_BROKEN_PIPE = 109
ERROR_INSUFFICIENT_BUFFER = 122
STD_HANDLES = (-10, -11, -12)  # STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE
INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1


def flags_for_process() -> int:
    """The command's CreateProcessAsUserW flags (in the broker): suspended until the runner has
    checked it is in the job, a UTF-16 environment, its own process group (Ctrl+C to a
    console does not reach it; the runner ends it via the job), the extended startup info
    that carries the handle list, and a console without a window (the broker has none to
    share, and a console program would otherwise open a visible one)."""
    return (
        CREATE_SUSPENDED
        | CREATE_UNICODE_ENVIRONMENT
        | CREATE_NEW_PROCESS_GROUP
        | EXTENDED_STARTUPINFO_PRESENT
        | CREATE_NO_WINDOW
    )


def flags_for_broker() -> int:
    """The broker's CreateProcessWithLogonW flags, all among those it documents: suspended
    until it is in the job, a UTF-16 environment, its own process group."""
    return CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | CREATE_NEW_PROCESS_GROUP


def job_limit_flags() -> int:
    """Kill everything when the job handle closes (even if the runner dies), no error dialog
    that would keep a crashed process alive, no breakaway flag at all, and no UI limits
    (a job with UI limits cannot be nested under the job the broker may already be in)."""
    return JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION


def timeout_ms(timeout: float | None) -> int:
    """WaitForSingleObject's milliseconds: INFINITE for None, never INFINITE by accident."""
    if timeout is None:
        return INFINITE
    return max(0, min(int(timeout * 1000), INFINITE - 1))


class SECURITY_ATTRIBUTES(ctypes.Structure):
    _fields_ = [
        ("nLength", wintypes.DWORD),
        ("lpSecurityDescriptor", wintypes.LPVOID),
        ("bInheritHandle", wintypes.BOOL),
    ]


class STARTUPINFOW(ctypes.Structure):
    _fields_ = [
        ("cb", wintypes.DWORD),
        ("lpReserved", wintypes.LPWSTR),
        ("lpDesktop", wintypes.LPWSTR),
        ("lpTitle", wintypes.LPWSTR),
        ("dwX", wintypes.DWORD),
        ("dwY", wintypes.DWORD),
        ("dwXSize", wintypes.DWORD),
        ("dwYSize", wintypes.DWORD),
        ("dwXCountChars", wintypes.DWORD),
        ("dwYCountChars", wintypes.DWORD),
        ("dwFillAttribute", wintypes.DWORD),
        ("dwFlags", wintypes.DWORD),
        ("wShowWindow", wintypes.WORD),
        ("cbReserved2", wintypes.WORD),
        ("lpReserved2", ctypes.c_void_p),
        ("hStdInput", wintypes.HANDLE),
        ("hStdOutput", wintypes.HANDLE),
        ("hStdError", wintypes.HANDLE),
    ]


class STARTUPINFOEXW(ctypes.Structure):
    _fields_ = [("StartupInfo", STARTUPINFOW), ("lpAttributeList", ctypes.c_void_p)]


class PROCESS_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("hProcess", wintypes.HANDLE),
        ("hThread", wintypes.HANDLE),
        ("dwProcessId", wintypes.DWORD),
        ("dwThreadId", wintypes.DWORD),
    ]


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", wintypes.LARGE_INTEGER),
        ("PerJobUserTimeLimit", wintypes.LARGE_INTEGER),
        ("LimitFlags", wintypes.DWORD),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", wintypes.DWORD),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", wintypes.DWORD),
        ("SchedulingClass", wintypes.DWORD),
    ]


class IO_COUNTERS(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in (
            "ReadOperationCount",
            "WriteOperationCount",
            "OtherOperationCount",
            "ReadTransferCount",
            "WriteTransferCount",
            "OtherTransferCount",
        )
    ]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
        ("IoInfo", IO_COUNTERS),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class SID_AND_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("Sid", ctypes.c_void_p), ("Attributes", wintypes.DWORD)]


class TOKEN_DEFAULT_DACL(ctypes.Structure):
    _fields_ = [("DefaultDacl", ctypes.c_void_p)]


class _Kernel:
    """kernel32/advapi32 functions for the runner, with prototypes."""

    def __init__(self) -> None:
        W, P, V = wintypes, ctypes.POINTER, ctypes.c_void_p
        k32, adv = dll.load_dll("kernel32"), dll.load_dll("advapi32")
        b = dll.bind
        self.CloseHandle = b(k32, "CloseHandle", W.BOOL, W.HANDLE)
        self.LocalFree = b(k32, "LocalFree", W.HLOCAL, W.HLOCAL)
        self.CreateProcessWithLogonW = b(
            adv,
            "CreateProcessWithLogonW",
            W.BOOL,
            W.LPCWSTR,
            W.LPCWSTR,
            W.LPCWSTR,
            W.DWORD,
            W.LPCWSTR,
            W.LPWSTR,
            W.DWORD,
            V,
            W.LPCWSTR,
            P(STARTUPINFOW),
            P(PROCESS_INFORMATION),
        )
        self.OpenProcessToken = b(adv, "OpenProcessToken", W.BOOL, W.HANDLE, W.DWORD, P(W.HANDLE))
        self.IsProcessInJob = b(k32, "IsProcessInJob", W.BOOL, W.HANDLE, W.HANDLE, P(W.BOOL))
        self.GetCurrentProcessId = b(k32, "GetCurrentProcessId", W.DWORD)
        self.WriteFile = b(k32, "WriteFile", W.BOOL, W.HANDLE, V, W.DWORD, P(W.DWORD), V)
        self.GetTokenInformation = b(
            adv, "GetTokenInformation", W.BOOL, W.HANDLE, ctypes.c_int, V, W.DWORD, P(W.DWORD)
        )
        self.SetTokenInformation = b(
            adv, "SetTokenInformation", W.BOOL, W.HANDLE, ctypes.c_int, V, W.DWORD
        )
        self.CreateRestrictedToken = b(
            adv,
            "CreateRestrictedToken",
            W.BOOL,
            W.HANDLE,
            W.DWORD,
            W.DWORD,
            V,
            W.DWORD,
            V,
            W.DWORD,
            P(SID_AND_ATTRIBUTES),
            P(W.HANDLE),
        )
        self.ConvertStringSidToSidW = b(adv, "ConvertStringSidToSidW", W.BOOL, W.LPCWSTR, P(V))
        self.ConvertSidToStringSidW = b(adv, "ConvertSidToStringSidW", W.BOOL, V, P(W.LPWSTR))
        self.SetEntriesInAclW = b(
            adv, "SetEntriesInAclW", W.DWORD, W.ULONG, P(dacl.EXPLICIT_ACCESS_W), V, P(V)
        )
        self.CreateJobObjectW = b(k32, "CreateJobObjectW", W.HANDLE, V, W.LPCWSTR)
        self.SetInformationJobObject = b(
            k32, "SetInformationJobObject", W.BOOL, W.HANDLE, ctypes.c_int, V, W.DWORD
        )
        self.AssignProcessToJobObject = b(
            k32, "AssignProcessToJobObject", W.BOOL, W.HANDLE, W.HANDLE
        )
        self.TerminateJobObject = b(k32, "TerminateJobObject", W.BOOL, W.HANDLE, W.UINT)
        self.TerminateProcess = b(k32, "TerminateProcess", W.BOOL, W.HANDLE, W.UINT)
        self.GetStdHandle = b(k32, "GetStdHandle", W.HANDLE, W.DWORD)
        self.GetCurrentProcess = b(k32, "GetCurrentProcess", W.HANDLE)
        self.DuplicateHandle = b(
            k32,
            "DuplicateHandle",
            W.BOOL,
            W.HANDLE,
            W.HANDLE,
            W.HANDLE,
            P(W.HANDLE),
            W.DWORD,
            W.BOOL,
            W.DWORD,
        )
        self.CreateFileW = b(
            k32,
            "CreateFileW",
            W.HANDLE,
            W.LPCWSTR,
            W.DWORD,
            W.DWORD,
            P(SECURITY_ATTRIBUTES),
            W.DWORD,
            W.DWORD,
            W.HANDLE,
        )
        self.CreatePipe = b(
            k32, "CreatePipe", W.BOOL, P(W.HANDLE), P(W.HANDLE), P(SECURITY_ATTRIBUTES), W.DWORD
        )
        self.SetHandleInformation = b(
            k32, "SetHandleInformation", W.BOOL, W.HANDLE, W.DWORD, W.DWORD
        )
        self.InitializeProcThreadAttributeList = b(
            k32,
            "InitializeProcThreadAttributeList",
            W.BOOL,
            V,
            W.DWORD,
            W.DWORD,
            P(ctypes.c_size_t),
        )
        self.UpdateProcThreadAttribute = b(
            k32,
            "UpdateProcThreadAttribute",
            W.BOOL,
            V,
            W.DWORD,
            ctypes.c_size_t,
            V,
            ctypes.c_size_t,
            V,
            V,
        )
        self.DeleteProcThreadAttributeList = b(k32, "DeleteProcThreadAttributeList", None, V)
        self.CreateProcessAsUserW = b(
            adv,
            "CreateProcessAsUserW",
            W.BOOL,
            W.HANDLE,
            W.LPCWSTR,
            W.LPWSTR,
            V,
            V,
            W.BOOL,
            W.DWORD,
            V,
            W.LPCWSTR,
            P(STARTUPINFOEXW),
            P(PROCESS_INFORMATION),
        )
        self.ResumeThread = b(k32, "ResumeThread", W.DWORD, W.HANDLE)
        self.WaitForSingleObject = b(k32, "WaitForSingleObject", W.DWORD, W.HANDLE, W.DWORD)
        self.GetExitCodeProcess = b(k32, "GetExitCodeProcess", W.BOOL, W.HANDLE, P(W.DWORD))
        self.ReadFile = b(k32, "ReadFile", W.BOOL, W.HANDLE, V, W.DWORD, P(W.DWORD), V)


def _check(api: str, ok: int, detail: str = "") -> None:
    if not ok:
        raise dll.win_error(api, detail=detail)


def _last_error() -> int:
    if sys.platform == "win32":
        return ctypes.get_last_error()
    return 0


def _read(k: _Kernel, handle: int, n: int) -> bytes:
    """At most ``n`` bytes; ``b""`` once every write end is closed."""
    buf = ctypes.create_string_buffer(max(1, min(n, 65536)))
    got = wintypes.DWORD()
    if not k.ReadFile(handle, buf, len(buf), ctypes.byref(got), None):
        if _last_error() == ERROR_BROKEN_PIPE:
            return b""
        raise dll.win_error("ReadFile")
    return buf.raw[: got.value]


def _write(k: _Kernel, handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        chunk = bytes(view[:65536])
        done = wintypes.DWORD()
        _check("WriteFile", k.WriteFile(handle, chunk, len(chunk), ctypes.byref(done), None))
        if done.value == 0:
            raise SandboxError("windows: WriteFile wrote nothing")
        view = view[done.value :]


def _close_quietly(k: _Kernel, *handles: int) -> None:
    for handle in handles:
        if handle:
            k.CloseHandle(handle)


class Win32RunnerApi:
    """``RunnerApi`` with ctypes, for the unelevated runner (the real user)."""

    def __init__(
        self, local_app_data: str | None = None, launch: BrokerLaunch | None = None
    ) -> None:
        dll.require_windows("the Windows runner (Win32RunnerApi)")
        self._k: _Kernel = _Kernel()
        self._secrets: secret_store.SecretStore = dpapi.secret_store_for(local_app_data)
        self._launch = launch or this_broker_launch()

    def load_secret(self, user: str) -> str:
        return self._secrets.load(user)

    def create_job(self) -> int:
        job = self._k.CreateJobObjectW(None, None)
        _check("CreateJobObjectW", job)
        return int(job)

    def limit_job(self, job: int) -> None:
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = job_limit_flags()
        _check(
            "SetInformationJobObject",
            self._k.SetInformationJobObject(
                job,
                JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                ctypes.byref(info),
                ctypes.sizeof(info),
            ),
        )

    def inherit_std(self, which: int) -> int:
        source = self._k.GetStdHandle(STD_HANDLES[which])
        if not source or source == INVALID_HANDLE_VALUE:
            return self.open_null()  # no such handle in the runner: the command gets NUL
        me, dup = self._k.GetCurrentProcess(), wintypes.HANDLE()
        _check(
            "DuplicateHandle",
            self._k.DuplicateHandle(
                me, source, me, ctypes.byref(dup), 0, False, DUPLICATE_SAME_ACCESS
            ),
        )
        return int(dup.value or 0)

    def _null(self, inheritable: bool) -> int:
        sa = SECURITY_ATTRIBUTES(ctypes.sizeof(SECURITY_ATTRIBUTES), None, inheritable)
        handle = self._k.CreateFileW(
            "NUL",
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ_WRITE,
            ctypes.byref(sa),
            OPEN_EXISTING,
            0,
            None,
        )
        if not handle or handle == INVALID_HANDLE_VALUE:
            raise dll.win_error("CreateFileW", detail="NUL")
        return int(handle)

    def open_null(self) -> int:
        return self._null(False)

    def create_pipe(self) -> tuple[int, int]:
        read, write = wintypes.HANDLE(), wintypes.HANDLE()
        _check("CreatePipe", self._k.CreatePipe(ctypes.byref(read), ctypes.byref(write), None, 0))
        return int(read.value or 0), int(write.value or 0)

    def _inheritable(self, handle: int) -> None:
        _check(
            "SetHandleInformation",
            self._k.SetHandleInformation(handle, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT),
        )

    def start_broker(self, user: str, password: str) -> BrokerProcess:
        """CreateProcessWithLogonW, suspended. The broker's ends of its two pipes (and NUL for
        its stderr) are inheritable only for this call and closed here afterwards; the
        secondary logon service hands the three std handles to the new process."""
        launch = self._launch
        mine: list[int] = []  # the runner's ends, returned
        theirs: list[int] = []  # the broker's ends, closed here either way
        try:
            in_read, in_write = self.create_pipe()
            theirs.append(in_read)
            mine.append(in_write)
            out_read, out_write = self.create_pipe()
            mine.append(out_read)
            theirs.append(out_write)
            theirs.append(self._null(True))
            self._inheritable(in_read)
            self._inheritable(out_write)
            si = STARTUPINFOW()
            si.cb = ctypes.sizeof(STARTUPINFOW)
            si.dwFlags = STARTF_USESTDHANDLES | STARTF_USESHOWWINDOW
            si.wShowWindow = SW_HIDE
            si.hStdInput, si.hStdOutput, si.hStdError = in_read, out_write, theirs[2]
            pi = PROCESS_INFORMATION()
            cmd = ctypes.create_unicode_buffer(launch.command_line)
            block = environment_block(launch.environment)
            env = ctypes.create_string_buffer(block, len(block))
            ok = self._k.CreateProcessWithLogonW(
                user,
                ".",
                password,
                LOGON_WITH_PROFILE,
                launch.application,
                cmd,
                flags_for_broker(),
                env,
                launch.cwd,
                ctypes.byref(si),
                ctypes.byref(pi),
            )
            _check("CreateProcessWithLogonW", ok, f"{user}: {launch.application}")
            return BrokerProcess(
                int(pi.hProcess or 0), int(pi.hThread or 0), pi.dwProcessId, in_write, out_read
            )
        except BaseException:
            _close_quietly(self._k, *mine)
            raise
        finally:
            _close_quietly(self._k, *theirs)

    def assign_to_job(self, job: int, process: int) -> None:
        _check("AssignProcessToJobObject", self._k.AssignProcessToJobObject(job, process))

    def send_handle(self, process: int, handle: int) -> int:
        me, remote = self._k.GetCurrentProcess(), wintypes.HANDLE()
        _check(
            "DuplicateHandle(into the broker)",
            self._k.DuplicateHandle(
                me, handle, process, ctypes.byref(remote), 0, True, DUPLICATE_SAME_ACCESS
            ),
        )
        return int(remote.value or 0)

    def take_handle(self, process: int, remote: int) -> int:
        me, local = self._k.GetCurrentProcess(), wintypes.HANDLE()
        _check(
            "DuplicateHandle(out of the broker)",
            self._k.DuplicateHandle(
                process, remote, me, ctypes.byref(local), 0, False, DUPLICATE_SAME_ACCESS
            ),
        )
        return int(local.value or 0)

    def process_in_job(self, job: int, process: int) -> bool:
        result = wintypes.BOOL()
        _check("IsProcessInJob", self._k.IsProcessInJob(process, job, ctypes.byref(result)))
        return bool(result.value)

    def resume_thread(self, thread: int) -> None:
        if self._k.ResumeThread(thread) == 0xFFFFFFFF:
            raise dll.win_error("ResumeThread")

    def write(self, handle: int, data: bytes) -> None:
        _write(self._k, handle, data)

    def read(self, handle: int, n: int) -> bytes:
        return _read(self._k, handle, n)

    def wait(self, process: int, timeout: float | None) -> bool:
        result = self._k.WaitForSingleObject(process, timeout_ms(timeout))
        if result == WAIT_OBJECT_0:
            return True
        if result == WAIT_TIMEOUT:
            return False
        raise dll.win_error("WaitForSingleObject")

    def exit_code(self, process: int) -> int:
        code = wintypes.DWORD()
        _check("GetExitCodeProcess", self._k.GetExitCodeProcess(process, ctypes.byref(code)))
        return int(code.value)

    def terminate_job(self, job: int, exit_code: int) -> None:
        _check("TerminateJobObject", self._k.TerminateJobObject(job, exit_code))

    def terminate_process(self, process: int, exit_code: int) -> None:
        _check("TerminateProcess", self._k.TerminateProcess(process, exit_code))

    def read_all(self, handle: int) -> bytes:
        chunks: list[bytes] = []
        while chunk := _read(self._k, handle, 65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self, handle: int) -> None:
        _check("CloseHandle", self._k.CloseHandle(handle))


class Win32BrokerApi:
    """``broker.BrokerApi`` with ctypes: runs in the broker, as the sandbox user."""

    def __init__(self) -> None:
        dll.require_windows("the Windows broker (Win32BrokerApi)")
        self._k: _Kernel = _Kernel()
        self._stdin = int(self._k.GetStdHandle(STD_HANDLES[0]) or 0)
        self._stdout = int(self._k.GetStdHandle(STD_HANDLES[1]) or 0)
        if not self._stdin or not self._stdout:
            raise SandboxError("windows broker: started without stdin/stdout pipes")

    def own_pid(self) -> int:
        return int(self._k.GetCurrentProcessId())

    def read_stdin(self, n: int) -> bytes:
        return _read(self._k, self._stdin, n)

    def write_stdout(self, data: bytes) -> None:
        _write(self._k, self._stdout, data)

    def open_own_token(self) -> int:
        token = wintypes.HANDLE()
        _check(
            "OpenProcessToken",
            self._k.OpenProcessToken(
                self._k.GetCurrentProcess(),
                TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY,
                ctypes.byref(token),
            ),
        )
        return int(token.value or 0)

    def logon_sid(self, token: int) -> str:
        size = wintypes.DWORD()
        self._k.GetTokenInformation(token, TOKEN_GROUPS_CLASS, None, 0, ctypes.byref(size))
        if not size.value:
            raise dll.win_error("GetTokenInformation(TokenGroups)")
        buf = ctypes.create_string_buffer(size.value)
        _check(
            "GetTokenInformation(TokenGroups)",
            self._k.GetTokenInformation(token, TOKEN_GROUPS_CLASS, buf, size, ctypes.byref(size)),
        )
        count = wintypes.DWORD.from_buffer(buf).value
        # TOKEN_GROUPS: a DWORD count, then SID_AND_ATTRIBUTES[count] at pointer alignment.
        offset = ctypes.sizeof(ctypes.c_void_p)
        groups = (SID_AND_ATTRIBUTES * count).from_buffer(buf, offset)
        for group in groups:
            if group.Attributes & SE_GROUP_LOGON_ID == SE_GROUP_LOGON_ID:
                text = wintypes.LPWSTR()
                _check(
                    "ConvertSidToStringSidW",
                    self._k.ConvertSidToStringSidW(group.Sid, ctypes.byref(text)),
                )
                try:
                    return sids.check_sid(text.value or "")
                finally:
                    self._k.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        raise SandboxError("windows: the broker's token has no logon SID")

    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int:
        psids: list[ctypes.c_void_p] = []
        try:
            for sid in restricting_sids:
                psid = ctypes.c_void_p()
                _check(
                    "ConvertStringSidToSidW",
                    self._k.ConvertStringSidToSidW(sids.check_sid(sid), ctypes.byref(psid)),
                    sid,
                )
                psids.append(psid)
            entries = (SID_AND_ATTRIBUTES * len(psids))(*[SID_AND_ATTRIBUTES(p, 0) for p in psids])
            new = wintypes.HANDLE()
            _check(
                "CreateRestrictedToken",
                self._k.CreateRestrictedToken(
                    token,
                    DISABLE_MAX_PRIVILEGE | WRITE_RESTRICTED,
                    0,
                    None,
                    0,
                    None,
                    len(psids),
                    entries,
                    ctypes.byref(new),
                ),
            )
            handle = int(new.value or 0)
            try:
                self._set_default_dacl(handle, psids)
            except BaseException:
                self._k.CloseHandle(handle)
                raise
            return handle
        finally:
            for psid in psids:
                self._k.LocalFree(psid)

    def _set_default_dacl(self, token: int, psids: list[ctypes.c_void_p]) -> None:
        """Objects the command creates without a security descriptor of their own get a DACL
        that its write-restricted token can write through: the restricting SIDs, all."""
        entries = (dacl.EXPLICIT_ACCESS_W * len(psids))()
        for entry, psid in zip(entries, psids, strict=True):
            entry.grfAccessPermissions = GENERIC_ALL
            entry.grfAccessMode = dacl.GRANT_ACCESS
            entry.grfInheritance = dacl.NO_INHERITANCE
            entry.Trustee = dacl.TRUSTEE_W(
                None,
                dacl.NO_MULTIPLE_TRUSTEE,
                dacl.TRUSTEE_IS_SID,
                dacl.TRUSTEE_IS_UNKNOWN,
                psid,
            )
        acl = ctypes.c_void_p()
        status = self._k.SetEntriesInAclW(len(psids), entries, None, ctypes.byref(acl))
        if status:
            raise dll.win_error("SetEntriesInAclW", status)
        try:
            info = TOKEN_DEFAULT_DACL(acl)
            _check(
                "SetTokenInformation(TokenDefaultDacl)",
                self._k.SetTokenInformation(
                    token, TOKEN_DEFAULT_DACL_CLASS, ctypes.byref(info), ctypes.sizeof(info)
                ),
            )
        finally:
            self._k.LocalFree(acl)

    def create_process(
        self,
        token: int,
        *,
        application: str,
        command_line: str,
        cwd: str,
        environment: bytes,
        stdio: tuple[int, int, int],
    ) -> ProcessHandles:
        """CreateProcessAsUserW with a restricted version of the broker's own primary token
        (no SeAssignPrimaryTokenPrivilege needed for that), suspended, inheriting exactly the
        three stdio handles (inheritable here: the runner duplicated them so)."""
        inherit = list(dict.fromkeys(stdio))  # the handle list, without duplicates
        handles = (wintypes.HANDLE * len(inherit))(*inherit)
        size = ctypes.c_size_t()
        self._k.InitializeProcThreadAttributeList(None, 1, 0, ctypes.byref(size))
        if not size.value:
            raise dll.win_error("InitializeProcThreadAttributeList")
        attributes = ctypes.create_string_buffer(size.value)
        _check(
            "InitializeProcThreadAttributeList",
            self._k.InitializeProcThreadAttributeList(attributes, 1, 0, ctypes.byref(size)),
        )
        try:
            _check(
                "UpdateProcThreadAttribute(HANDLE_LIST)",
                self._k.UpdateProcThreadAttribute(
                    attributes,
                    0,
                    PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
                    handles,
                    ctypes.sizeof(handles),
                    None,
                    None,
                ),
            )
            si = STARTUPINFOEXW()
            si.StartupInfo.cb = ctypes.sizeof(STARTUPINFOEXW)
            si.StartupInfo.dwFlags = STARTF_USESTDHANDLES
            si.StartupInfo.hStdInput, si.StartupInfo.hStdOutput, si.StartupInfo.hStdError = stdio
            si.lpAttributeList = ctypes.cast(attributes, ctypes.c_void_p)
            pi = PROCESS_INFORMATION()
            cmd = ctypes.create_unicode_buffer(command_line)  # CreateProcess may write to it
            env = ctypes.create_string_buffer(environment, len(environment))
            ok = self._k.CreateProcessAsUserW(
                token,
                application,
                cmd,
                None,
                None,
                True,
                flags_for_process(),
                env,
                cwd,
                ctypes.byref(si),
                ctypes.byref(pi),
            )
            _check("CreateProcessAsUserW", ok, application)
            return ProcessHandles(int(pi.hProcess or 0), int(pi.hThread or 0), pi.dwProcessId)
        finally:
            self._k.DeleteProcThreadAttributeList(attributes)

    def terminate_process(self, process: int, exit_code: int) -> None:
        _check("TerminateProcess", self._k.TerminateProcess(process, exit_code))

    def close(self, handle: int) -> None:
        _check("CloseHandle", self._k.CloseHandle(handle))


def _conforms(runner_api: Win32RunnerApi, broker_api: Win32BrokerApi) -> None:
    """mypy proves here that the ctypes classes implement the interfaces."""
    _r: RunnerApi = runner_api
    _b: wire.BrokerApi = broker_api
