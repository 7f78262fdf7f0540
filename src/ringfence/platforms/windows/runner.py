"""The Windows command runner: one command as a sandbox user, with a write-restricted token,
inside a job object that ends its whole tree.

NOT RUN ON WINDOWS. The orchestration (:func:`run`), the command-line quoting and the
environment block are pure and tested on Linux against a simulated ``RunnerApi`` that fails at
every step; ``Win32RunnerApi`` (ctypes) was written against the documented signatures,
type-checked with ``mypy --platform win32``, and has never executed.

The steps, in this order, and why:

1. the sandbox user's password from the DPAPI store (``secrets.py``);
2. ``LogonUserW(LOGON32_LOGON_INTERACTIVE)``: on client Windows the built-in Users group holds
   "Allow log on locally" but not "Log on as a batch job", so an interactive logon works for
   a plain user without the setup granting an LSA right (BATCH would need one more reversible
   setup action). The logon is not shown anywhere: no profile is loaded, no desktop session;
3. ``CreateRestrictedToken(DISABLE_MAX_PRIVILEGE | WRITE_RESTRICTED)`` with the capability
   SID(s) and the logon SID as restricting SIDs: a write must pass the ACL check for the
   user *and* for a restricting SID, and only the writable roots carry the capability SID.
   The logon SID keeps the command's own objects (pipes, its process and threads, which the
   token's default DACL grants to the logon SID) writable; the default DACL is set to it;
4. a job object with KILL_ON_JOB_CLOSE and DIE_ON_UNHANDLED_EXCEPTION and no breakaway,
   created before the process, so there is never a moment with a running, unjobbed process;
5. ``CreateProcessAsUserW`` with CREATE_SUSPENDED, stdio over inheritable handles named in
   PROC_THREAD_ATTRIBUTE_HANDLE_LIST (nothing else the runner holds is inherited);
6. AssignProcessToJobObject, and only then ResumeThread;
7. wait (with the timeout), then TerminateJobObject either way so nothing the command started
   outlives it; every handle is closed.

Any failure once the process exists terminates it (it is still suspended, or in the job) and
closes every handle: there is never an unconfined or orphaned process.

Known gap: ``CreateProcessAsUserW`` with a
token of *another* user needs SeAssignPrimaryTokenPrivilege, and the fallback
``CreateProcessWithTokenW`` needs SeImpersonatePrivilege; an unelevated user holds neither.
Where both are refused the runner fails closed with that error; the way out is a broker that
already runs as the sandbox user (started with ``CreateProcessWithLogonW``) and restricts its
*own* token, which ``CreateProcessAsUserW`` accepts without privileges.

ConPTY (``pty_size``) is not implemented: a spec asking for it is refused.
"""

from __future__ import annotations

import ctypes
import ntpath
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from ctypes import wintypes
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows import win32

StdioMode = Literal["inherit", "null", "capture"]
TIMEOUT_EXIT_CODE = 124  # what the job's processes are given when the timeout ends them
ENDED_EXIT_CODE = 1  # what leftovers of a command that ended are given
KILL_WAIT_SECONDS = 10.0

# --- pure: the command line and the environment block --------------------------------------


def command_line(argv: Sequence[str]) -> str:
    """The one string CreateProcess takes, quoted so that CommandLineToArgvW and the MS C
    runtime give back exactly ``argv`` (``subprocess.list2cmdline`` follows those rules).

    Refused: an empty argv, NUL anywhere (it would end the string), and an ``argv[0]`` with a
    ``"`` or a trailing backslash (the program name is parsed by a simpler rule that has no
    escapes; no Windows file name contains ``"``)."""
    if not argv:
        raise PolicyError("windows: empty command")
    for arg in argv:
        if "\0" in arg:
            raise PolicyError(f"windows: NUL in a command argument: {arg!r}")
    if '"' in argv[0] or argv[0].endswith("\\") or not argv[0]:
        raise PolicyError(f"windows: bad program name {argv[0]!r}")
    return subprocess.list2cmdline(list(argv))


def environment_block(env: Mapping[str, str]) -> bytes:
    """``name=value\\0...\\0\\0`` in UTF-16LE, sorted case-insensitively by name as
    CreateProcess documents (uppercase, ordinal: not the locale's order).

    Refused: an empty name, ``=`` or NUL in a name, NUL in a value, and two names that differ
    only in case (Windows would keep one of them, and which one is not ours to guess)."""
    seen: dict[str, str] = {}
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise PolicyError(f"windows: bad environment variable name {name!r}")
        if "\0" in value:
            raise PolicyError(f"windows: NUL in the value of {name}")
        key = name.upper()
        if key in seen:
            raise PolicyError(
                f"windows: environment variables {seen[key]!r} and {name!r} differ only in case"
            )
        seen[key] = name
    entries = [f"{name}={env[name]}" for name in sorted(env, key=str.upper)]
    text = "".join(entry + "\0" for entry in entries) + "\0"
    if not entries:
        text = "\0\0"
    return text.encode("utf-16-le", "surrogatepass")


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
class ProcessHandles:
    process: int
    thread: int
    pid: int


class RunnerApi(Protocol):
    """Every Windows call the runner makes. Each ``int`` is a handle the caller owns and
    closes with ``close``; a method that fails has opened nothing."""

    def load_secret(self, user: str) -> str: ...
    def logon_user(self, user: str, password: str) -> int: ...
    def logon_sid(self, token: int) -> str: ...
    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int: ...
    def create_job(self) -> int: ...
    def limit_job(self, job: int) -> None: ...
    def inherit_std(self, which: int) -> int: ...  # 0, 1, 2: an inheritable duplicate
    def open_null(self) -> int: ...  # NUL, inheritable
    def create_pipe(self) -> tuple[int, int]: ...  # (read end, inheritable write end)
    def create_process(
        self,
        token: int,
        *,
        application: str,
        command_line: str,
        cwd: str,
        environment: bytes,
        stdio: tuple[int, int, int],
    ) -> ProcessHandles: ...  # suspended
    def assign_to_job(self, job: int, process: int) -> None: ...
    def resume_thread(self, thread: int) -> None: ...
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
        win32.check_sid(sid)
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
    return cmd, environment_block(spec.env)


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
    cmd, env_block = check_spec(spec)
    owned: list[int] = []  # every handle we hold, closed newest first at the end
    child_ends: list[int] = []  # stdio handles for the child, closed once it has them
    proc: ProcessHandles | None = None
    settled = False  # the process has ended, or the job was terminated
    readers: list[_Reader] = []

    def keep(handle: int) -> int:
        owned.append(handle)
        return handle

    def child(handle: int) -> int:
        child_ends.append(handle)
        return handle

    try:
        password = api.load_secret(spec.user)
        logon = keep(api.logon_user(spec.user, password))
        del password
        sids = [*spec.restricting_sids, api.logon_sid(logon)]
        token = keep(api.restrict_token(logon, sids))
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

        proc = api.create_process(
            token,
            application=spec.argv[0],
            command_line=cmd,
            cwd=spec.cwd,
            environment=env_block,
            stdio=stdio,
        )
        keep(proc.process)
        keep(proc.thread)
        api.assign_to_job(job, proc.process)
        while child_ends:  # ours closed: EOF on the pipes comes when the job's copies go
            api.close(child_ends.pop())
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
        if proc is not None and not settled:
            _kill(api, proc)
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


def _kill(api: RunnerApi, proc: ProcessHandles) -> None:
    """The process exists and something failed: end it. TerminateProcess reaches it whether or
    not it is in the job yet (it is suspended until it is); the job, if it holds it, is
    terminated too, and closing the job (kill-on-close) is the last line."""
    try:
        api.terminate_process(proc.process, TIMEOUT_EXIT_CODE)
    except Exception:
        pass
    try:
        api.wait(proc.process, KILL_WAIT_SECONDS)
    except Exception:
        pass


# --- Win32RunnerApi ---------------------------------------------------------------------------

LOGON32_LOGON_INTERACTIVE = 2
LOGON32_PROVIDER_DEFAULT = 0
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
EXTENDED_STARTUPINFO_PRESENT = 0x80000
STARTF_USESTDHANDLES = 0x100
PROC_THREAD_ATTRIBUTE_HANDLE_LIST = 0x20002
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
INFINITE = 0xFFFFFFFF
ERROR_BROKEN_PIPE = 109
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_PRIVILEGE_NOT_HELD = 1314
STD_HANDLES = (-10, -11, -12)  # STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE
INVALID_HANDLE_VALUE = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1


def flags_for_process() -> int:
    """CreateProcess flags: suspended until jobbed, a UTF-16 environment, its own process
    group (Ctrl+C to the runner's console does not reach it; the runner ends it via the job),
    and the extended startup info that carries the handle list."""
    return (
        CREATE_SUSPENDED
        | CREATE_UNICODE_ENVIRONMENT
        | CREATE_NEW_PROCESS_GROUP
        | EXTENDED_STARTUPINFO_PRESENT
    )


def job_limit_flags() -> int:
    """Kill everything when the job handle closes (even if the runner dies), no error dialog
    that would keep a crashed process alive, and no breakaway flag at all."""
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
        k32, adv = win32.load_dll("kernel32"), win32.load_dll("advapi32")
        b = win32.bind
        self.CloseHandle = b(k32, "CloseHandle", W.BOOL, W.HANDLE)
        self.LocalFree = b(k32, "LocalFree", W.HLOCAL, W.HLOCAL)
        self.LogonUserW = b(
            adv,
            "LogonUserW",
            W.BOOL,
            W.LPCWSTR,
            W.LPCWSTR,
            W.LPCWSTR,
            W.DWORD,
            W.DWORD,
            P(W.HANDLE),
        )
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
            adv, "SetEntriesInAclW", W.DWORD, W.ULONG, P(win32.EXPLICIT_ACCESS_W), V, P(V)
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
        self.CreateProcessWithTokenW = b(
            adv,
            "CreateProcessWithTokenW",
            W.BOOL,
            W.HANDLE,
            W.DWORD,
            W.LPCWSTR,
            W.LPWSTR,
            W.DWORD,
            V,
            W.LPCWSTR,
            P(STARTUPINFOW),
            P(PROCESS_INFORMATION),
        )
        self.ResumeThread = b(k32, "ResumeThread", W.DWORD, W.HANDLE)
        self.WaitForSingleObject = b(k32, "WaitForSingleObject", W.DWORD, W.HANDLE, W.DWORD)
        self.GetExitCodeProcess = b(k32, "GetExitCodeProcess", W.BOOL, W.HANDLE, P(W.DWORD))
        self.ReadFile = b(k32, "ReadFile", W.BOOL, W.HANDLE, V, W.DWORD, P(W.DWORD), V)


def _check(api: str, ok: int, detail: str = "") -> None:
    if not ok:
        raise win32.win_error(api, detail=detail)


def _last_error() -> int:
    if sys.platform == "win32":
        return ctypes.get_last_error()
    return 0


class Win32RunnerApi:
    """``RunnerApi`` with ctypes (unelevated; see the module docstring for the privilege gap)."""

    def __init__(self, local_app_data: str | None = None) -> None:
        win32.require_windows("the Windows runner (Win32RunnerApi)")
        self._k: _Kernel = _Kernel()
        self._secrets: secret_store.SecretStore = win32.secret_store_for(local_app_data)

    def load_secret(self, user: str) -> str:
        return self._secrets.load(user)

    def logon_user(self, user: str, password: str) -> int:
        token = wintypes.HANDLE()
        ok = self._k.LogonUserW(
            user,
            ".",
            password,
            LOGON32_LOGON_INTERACTIVE,
            LOGON32_PROVIDER_DEFAULT,
            ctypes.byref(token),
        )
        _check("LogonUserW", ok, user)
        return int(token.value or 0)

    def logon_sid(self, token: int) -> str:
        size = wintypes.DWORD()
        self._k.GetTokenInformation(token, TOKEN_GROUPS_CLASS, None, 0, ctypes.byref(size))
        if not size.value:
            raise win32.win_error("GetTokenInformation(TokenGroups)")
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
                    return win32.check_sid(text.value or "")
                finally:
                    self._k.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        raise SandboxError("windows: the logon token has no logon SID")

    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int:
        psids: list[ctypes.c_void_p] = []
        try:
            for sid in restricting_sids:
                psid = ctypes.c_void_p()
                _check(
                    "ConvertStringSidToSidW",
                    self._k.ConvertStringSidToSidW(win32.check_sid(sid), ctypes.byref(psid)),
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
        entries = (win32.EXPLICIT_ACCESS_W * len(psids))()
        for entry, psid in zip(entries, psids, strict=True):
            entry.grfAccessPermissions = GENERIC_ALL
            entry.grfAccessMode = win32.GRANT_ACCESS
            entry.grfInheritance = win32.NO_INHERITANCE
            entry.Trustee = win32.TRUSTEE_W(
                None,
                win32.NO_MULTIPLE_TRUSTEE,
                win32.TRUSTEE_IS_SID,
                win32.TRUSTEE_IS_UNKNOWN,
                psid,
            )
        acl = ctypes.c_void_p()
        status = self._k.SetEntriesInAclW(len(psids), entries, None, ctypes.byref(acl))
        if status:
            raise win32.win_error("SetEntriesInAclW", status)
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
                me, source, me, ctypes.byref(dup), 0, True, DUPLICATE_SAME_ACCESS
            ),
        )
        return int(dup.value or 0)

    def open_null(self) -> int:
        sa = SECURITY_ATTRIBUTES(ctypes.sizeof(SECURITY_ATTRIBUTES), None, True)
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
            raise win32.win_error("CreateFileW", detail="NUL")
        return int(handle)

    def create_pipe(self) -> tuple[int, int]:
        read, write = wintypes.HANDLE(), wintypes.HANDLE()
        _check("CreatePipe", self._k.CreatePipe(ctypes.byref(read), ctypes.byref(write), None, 0))
        r, w = int(read.value or 0), int(write.value or 0)
        if not self._k.SetHandleInformation(w, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT):
            error = win32.win_error("SetHandleInformation")
            self._k.CloseHandle(r)
            self._k.CloseHandle(w)
            raise error
        return r, w

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
        inherit = list(dict.fromkeys(stdio))  # the handle list, without duplicates
        handles = (wintypes.HANDLE * len(inherit))(*inherit)
        size = ctypes.c_size_t()
        self._k.InitializeProcThreadAttributeList(None, 1, 0, ctypes.byref(size))
        if not size.value:
            raise win32.win_error("InitializeProcThreadAttributeList")
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
            if not ok and _last_error() == ERROR_PRIVILEGE_NOT_HELD:
                # Without SeAssignPrimaryTokenPrivilege: the seclogon path, which wants
                # SeImpersonatePrivilege instead and takes only the std handles.
                plain = si.StartupInfo
                plain.cb = ctypes.sizeof(STARTUPINFOW)
                flags = flags_for_process() & ~EXTENDED_STARTUPINFO_PRESENT
                ok = self._k.CreateProcessWithTokenW(
                    token,
                    0,
                    application,
                    cmd,
                    flags,
                    env,
                    cwd,
                    ctypes.byref(plain),
                    ctypes.byref(pi),
                )
            _check("CreateProcessAsUserW/CreateProcessWithTokenW", ok, application)
            return ProcessHandles(int(pi.hProcess or 0), int(pi.hThread or 0), pi.dwProcessId)
        finally:
            self._k.DeleteProcThreadAttributeList(attributes)

    def assign_to_job(self, job: int, process: int) -> None:
        _check("AssignProcessToJobObject", self._k.AssignProcessToJobObject(job, process))

    def resume_thread(self, thread: int) -> None:
        if self._k.ResumeThread(thread) == 0xFFFFFFFF:
            raise win32.win_error("ResumeThread")

    def wait(self, process: int, timeout: float | None) -> bool:
        result = self._k.WaitForSingleObject(process, timeout_ms(timeout))
        if result == WAIT_OBJECT_0:
            return True
        if result == WAIT_TIMEOUT:
            return False
        raise win32.win_error("WaitForSingleObject")

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
        buf = ctypes.create_string_buffer(65536)
        n = wintypes.DWORD()
        while True:
            if not self._k.ReadFile(handle, buf, len(buf), ctypes.byref(n), None):
                if _last_error() == ERROR_BROKEN_PIPE:
                    return b"".join(chunks)  # every write end is closed
                raise win32.win_error("ReadFile")
            if n.value == 0:
                return b"".join(chunks)
            chunks.append(buf.raw[: n.value])

    def close(self, handle: int) -> None:
        _check("CloseHandle", self._k.CloseHandle(handle))


def _conforms(api: Win32RunnerApi) -> RunnerApi:
    """mypy proves here that Win32RunnerApi implements RunnerApi."""
    return api
