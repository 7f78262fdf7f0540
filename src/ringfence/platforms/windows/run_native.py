"""``Win32RunnerApi``: the run's ``RunnerApi`` with ctypes, for the unelevated run (the real
user): the job, the stdio handles, the broker started with CreateProcessWithLogonW, handles
passed into and taken out of it, waits and ends.

NOT RUN ON WINDOWS: written against the documented signatures, type-checked with ``mypy
--platform win32``, never executed. The steps and their order are in ``run.py``.
"""

from __future__ import annotations

import ctypes
from ctypes import wintypes

from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.broker_launch import BrokerLaunch, this_broker_launch
from ringfence.platforms.windows.cmdline import environment_block
from ringfence.platforms.windows.dll import check_bool, require_windows, win_error
from ringfence.platforms.windows.dpapi import secret_store_for
from ringfence.platforms.windows.kernel import (
    DUPLICATE_SAME_ACCESS,
    FILE_SHARE_READ_WRITE,
    GENERIC_READ,
    GENERIC_WRITE,
    HANDLE_FLAG_INHERIT,
    INVALID_HANDLE_VALUE,
    JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    LOGON_WITH_PROFILE,
    OPEN_EXISTING,
    PROCESS_INFORMATION,
    SECURITY_ATTRIBUTES,
    STARTF_USESHOWWINDOW,
    STARTF_USESTDHANDLES,
    STARTUPINFOW,
    STD_HANDLES,
    SW_HIDE,
    WAIT_OBJECT_0,
    WAIT_TIMEOUT,
    Kernel,
    close_quietly,
    flags_for_broker,
    job_limit_flags,
    read_pipe,
    timeout_ms,
    write_pipe,
)
from ringfence.platforms.windows.run import BrokerProcess, RunnerApi


class Win32RunnerApi:
    """``RunnerApi`` with ctypes, for the unelevated runner (the real user)."""

    def __init__(
        self, local_app_data: str | None = None, launch: BrokerLaunch | None = None
    ) -> None:
        require_windows("the Windows runner (Win32RunnerApi)")
        self._k: Kernel = Kernel()
        self._secrets: secret_store.SecretStore = secret_store_for(local_app_data)
        self._launch = launch or this_broker_launch()

    def load_secret(self, user: str) -> str:
        return self._secrets.load(user)

    def create_job(self) -> int:
        job = self._k.CreateJobObjectW(None, None)
        check_bool("CreateJobObjectW", job)
        return int(job)

    def limit_job(self, job: int) -> None:
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = job_limit_flags()
        check_bool(
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
        check_bool(
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
            raise win_error("CreateFileW", detail="NUL")
        return int(handle)

    def open_null(self) -> int:
        return self._null(False)

    def create_pipe(self) -> tuple[int, int]:
        read, write = wintypes.HANDLE(), wintypes.HANDLE()
        check_bool(
            "CreatePipe", self._k.CreatePipe(ctypes.byref(read), ctypes.byref(write), None, 0)
        )
        return int(read.value or 0), int(write.value or 0)

    def _inheritable(self, handle: int) -> None:
        check_bool(
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
            check_bool("CreateProcessWithLogonW", ok, f"{user}: {launch.application}")
            return BrokerProcess(
                int(pi.hProcess or 0), int(pi.hThread or 0), pi.dwProcessId, in_write, out_read
            )
        except BaseException:
            close_quietly(self._k, *mine)
            raise
        finally:
            close_quietly(self._k, *theirs)

    def assign_to_job(self, job: int, process: int) -> None:
        check_bool("AssignProcessToJobObject", self._k.AssignProcessToJobObject(job, process))

    def send_handle(self, process: int, handle: int) -> int:
        me, remote = self._k.GetCurrentProcess(), wintypes.HANDLE()
        check_bool(
            "DuplicateHandle(into the broker)",
            self._k.DuplicateHandle(
                me, handle, process, ctypes.byref(remote), 0, True, DUPLICATE_SAME_ACCESS
            ),
        )
        return int(remote.value or 0)

    def take_handle(self, process: int, remote: int) -> int:
        me, local = self._k.GetCurrentProcess(), wintypes.HANDLE()
        check_bool(
            "DuplicateHandle(out of the broker)",
            self._k.DuplicateHandle(
                process, remote, me, ctypes.byref(local), 0, False, DUPLICATE_SAME_ACCESS
            ),
        )
        return int(local.value or 0)

    def process_in_job(self, job: int, process: int) -> bool:
        result = wintypes.BOOL()
        check_bool("IsProcessInJob", self._k.IsProcessInJob(process, job, ctypes.byref(result)))
        return bool(result.value)

    def resume_thread(self, thread: int) -> None:
        if self._k.ResumeThread(thread) == 0xFFFFFFFF:
            raise win_error("ResumeThread")

    def write(self, handle: int, data: bytes) -> None:
        write_pipe(self._k, handle, data)

    def read(self, handle: int, n: int) -> bytes:
        return read_pipe(self._k, handle, n)

    def wait(self, process: int, timeout: float | None) -> bool:
        result = self._k.WaitForSingleObject(process, timeout_ms(timeout))
        if result == WAIT_OBJECT_0:
            return True
        if result == WAIT_TIMEOUT:
            return False
        raise win_error("WaitForSingleObject")

    def exit_code(self, process: int) -> int:
        code = wintypes.DWORD()
        check_bool("GetExitCodeProcess", self._k.GetExitCodeProcess(process, ctypes.byref(code)))
        return int(code.value)

    def terminate_job(self, job: int, exit_code: int) -> None:
        check_bool("TerminateJobObject", self._k.TerminateJobObject(job, exit_code))

    def terminate_process(self, process: int, exit_code: int) -> None:
        check_bool("TerminateProcess", self._k.TerminateProcess(process, exit_code))

    def read_all(self, handle: int) -> bytes:
        chunks: list[bytes] = []
        while chunk := read_pipe(self._k, handle, 65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self, handle: int) -> None:
        check_bool("CloseHandle", self._k.CloseHandle(handle))


def _conforms(api: Win32RunnerApi) -> RunnerApi:
    """mypy proves here that the ctypes class implements the interface."""
    return api
