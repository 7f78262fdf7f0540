"""The kernel32/advapi32 calls of the native run (``run_native.py``) and the native broker
(``broker_native.py``): constants, the flags each process is created with, structure layouts,
prototypes, and reading and writing a pipe.

NOT RUN ON WINDOWS. The flag choices are tested on Linux; the layouts and prototypes were
written against the documented signatures, type-checked with ``mypy --platform win32``, and
have never been handed to Windows. The module imports anywhere; the DLLs are loaded only when
a ``Kernel`` is built.
"""

from __future__ import annotations

import ctypes
from ctypes import wintypes

from ringfence.errors import SandboxError
from ringfence.platforms.windows.dacl import EXPLICIT_ACCESS_W
from ringfence.platforms.windows.dll import bind, check_bool, last_error, load_dll, win_error

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


class Kernel:
    """The kernel32/advapi32 functions of the native run and broker, with prototypes."""

    def __init__(self) -> None:
        W, P, V = wintypes, ctypes.POINTER, ctypes.c_void_p
        k32, adv = load_dll("kernel32"), load_dll("advapi32")
        b = bind
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
            adv, "SetEntriesInAclW", W.DWORD, W.ULONG, P(EXPLICIT_ACCESS_W), V, P(V)
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


def read_pipe(k: Kernel, handle: int, n: int) -> bytes:
    """At most ``n`` bytes; ``b""`` once every write end is closed."""
    buf = ctypes.create_string_buffer(max(1, min(n, 65536)))
    got = wintypes.DWORD()
    if not k.ReadFile(handle, buf, len(buf), ctypes.byref(got), None):
        if last_error() == ERROR_BROKEN_PIPE:
            return b""
        raise win_error("ReadFile")
    return buf.raw[: got.value]


def write_pipe(k: Kernel, handle: int, data: bytes) -> None:
    """All of ``data``, in chunks (a pipe may take less than it is given)."""
    view = memoryview(data)
    while view:
        chunk = bytes(view[:65536])
        done = wintypes.DWORD()
        check_bool("WriteFile", k.WriteFile(handle, chunk, len(chunk), ctypes.byref(done), None))
        if done.value == 0:
            raise SandboxError("windows: WriteFile wrote nothing")
        view = view[done.value :]


def close_quietly(k: Kernel, *handles: int) -> None:
    """Cleanup on a path that is already failing: a close that fails is not the error."""
    for handle in handles:
        if handle:
            k.CloseHandle(handle)
