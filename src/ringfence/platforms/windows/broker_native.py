"""``Win32BrokerApi``: the broker's ``BrokerApi`` with ctypes, run in the broker as the sandbox
user: its own token opened and restricted (write-restricted, every privilege but
SeChangeNotify dropped, a default DACL for the restricting SIDs), and the command created
with it, suspended, inheriting only its three stdio handles.

NOT RUN ON WINDOWS: written against the documented signatures, type-checked with ``mypy
--platform win32``, never executed. What the broker does, and why: ``broker.py``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from ctypes import wintypes

from ringfence.errors import SandboxError
from ringfence.platforms.windows import dacl
from ringfence.platforms.windows.broker_wire import ProcessHandles
from ringfence.platforms.windows.dll import check_bool, require_windows, win_error
from ringfence.platforms.windows.kernel import (
    DISABLE_MAX_PRIVILEGE,
    GENERIC_ALL,
    PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
    PROCESS_INFORMATION,
    SE_GROUP_LOGON_ID,
    SID_AND_ATTRIBUTES,
    STARTF_USESTDHANDLES,
    STARTUPINFOEXW,
    STD_HANDLES,
    TOKEN_ASSIGN_PRIMARY,
    TOKEN_DEFAULT_DACL,
    TOKEN_DEFAULT_DACL_CLASS,
    TOKEN_DUPLICATE,
    TOKEN_GROUPS_CLASS,
    TOKEN_QUERY,
    WRITE_RESTRICTED,
    Kernel,
    flags_for_process,
    read_pipe,
    write_pipe,
)
from ringfence.platforms.windows.sids import check_sid


class Win32BrokerApi:
    """``broker.BrokerApi`` with ctypes: runs in the broker, as the sandbox user."""

    def __init__(self) -> None:
        require_windows("the Windows broker (Win32BrokerApi)")
        self._k: Kernel = Kernel()
        self._stdin = int(self._k.GetStdHandle(STD_HANDLES[0]) or 0)
        self._stdout = int(self._k.GetStdHandle(STD_HANDLES[1]) or 0)
        if not self._stdin or not self._stdout:
            raise SandboxError("windows broker: started without stdin/stdout pipes")

    def own_pid(self) -> int:
        return int(self._k.GetCurrentProcessId())

    def read_stdin(self, n: int) -> bytes:
        return read_pipe(self._k, self._stdin, n)

    def write_stdout(self, data: bytes) -> None:
        write_pipe(self._k, self._stdout, data)

    def open_own_token(self) -> int:
        token = wintypes.HANDLE()
        check_bool(
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
            raise win_error("GetTokenInformation(TokenGroups)")
        buf = ctypes.create_string_buffer(size.value)
        check_bool(
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
                check_bool(
                    "ConvertSidToStringSidW",
                    self._k.ConvertSidToStringSidW(group.Sid, ctypes.byref(text)),
                )
                try:
                    return check_sid(text.value or "")
                finally:
                    self._k.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        raise SandboxError("windows: the broker's token has no logon SID")

    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int:
        psids: list[ctypes.c_void_p] = []
        try:
            for sid in restricting_sids:
                psid = ctypes.c_void_p()
                check_bool(
                    "ConvertStringSidToSidW",
                    self._k.ConvertStringSidToSidW(check_sid(sid), ctypes.byref(psid)),
                    sid,
                )
                psids.append(psid)
            entries = (SID_AND_ATTRIBUTES * len(psids))(*[SID_AND_ATTRIBUTES(p, 0) for p in psids])
            new = wintypes.HANDLE()
            check_bool(
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
            raise win_error("SetEntriesInAclW", status)
        try:
            info = TOKEN_DEFAULT_DACL(acl)
            check_bool(
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
            raise win_error("InitializeProcThreadAttributeList")
        attributes = ctypes.create_string_buffer(size.value)
        check_bool(
            "InitializeProcThreadAttributeList",
            self._k.InitializeProcThreadAttributeList(attributes, 1, 0, ctypes.byref(size)),
        )
        try:
            check_bool(
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
            check_bool("CreateProcessAsUserW", ok, application)
            return ProcessHandles(int(pi.hProcess or 0), int(pi.hThread or 0), pi.dwProcessId)
        finally:
            self._k.DeleteProcThreadAttributeList(attributes)

    def terminate_process(self, process: int, exit_code: int) -> None:
        check_bool("TerminateProcess", self._k.TerminateProcess(process, exit_code))

    def close(self, handle: int) -> None:
        check_bool("CloseHandle", self._k.CloseHandle(handle))
