"""The broker: a short-lived process running as the sandbox user that starts the command with
a write-restricted copy of its *own* token, and its side of the wire protocol
(``broker_wire.py``).

NOT RUN ON WINDOWS. The protocol (framing, limits, refusals) and the broker's logic
(:func:`respond`, :func:`serve`) are pure and tested on Linux, in-process, against a simulated
``BrokerApi``; the ctypes side (``broker_native.Win32BrokerApi``) has never executed.

Why a broker: ``CreateProcessAsUserW`` with *another* user's token needs
SeAssignPrimaryTokenPrivilege (and ``CreateProcessWithTokenW`` needs SeImpersonatePrivilege);
an unelevated user holds neither. ``CreateProcessWithLogonW`` needs no privilege, so the runner
starts this module with it, as the sandbox user; here, ``CreateProcessAsUserW`` is given a
restricted version of the caller's own primary token, which Windows accepts without
SeAssignPrimaryTokenPrivilege.

What the broker does (``python -m ringfence.platforms.windows.broker``):

1. read one request frame from stdin (the runner's pipe);
2. ``OpenProcessToken(self)`` → ``CreateRestrictedToken(DISABLE_MAX_PRIVILEGE |
   WRITE_RESTRICTED)`` with the request's restricting SIDs plus the logon SID of its own
   token, and the restricted token's default DACL set to those SIDs;
3. ``CreateProcessAsUserW`` with CREATE_SUSPENDED, the three stdio handles the runner
   duplicated into the broker as the only inherited handles (PROC_THREAD_ATTRIBUTE_HANDLE_LIST).
   The command inherits the broker's job, which is the runner's kill-on-close job;
4. reply ``started`` with the command's pid and the *broker's* handle values for its process
   and thread, then read stdin to EOF and exit. The broker never resumes the command.

The runner duplicates the process and thread handles out of the broker (it holds the broker's
process handle with full access), closes the broker's stdin, waits for the broker to exit,
checks that the command is in its job, and only then resumes the command itself. So no
unrestricted process of the sandbox user is alive while the command runs (a running command
with the same user SID could otherwise open the broker and use its unrestricted token: process
and token rights such as TOKEN_DUPLICATE are not "write" rights, which is all a
write-restricted token restricts). Another *concurrent* ringfence run for the same sandbox
user has its own broker alive for a moment; that window is not closed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol

from ringfence.errors import SandboxError
from ringfence.platforms.windows.broker_native import Win32BrokerApi
from ringfence.platforms.windows.broker_wire import (
    MAX_REQUEST,
    BrokerReply,
    BrokerRequest,
    ProcessHandles,
    decode_request,
    encode_reply,
    read_frame,
)


class BrokerApi(Protocol):
    """Every Windows call the broker makes (the real one: ``broker_native.Win32BrokerApi``). Each
    ``int`` is a handle in the broker, closed with ``close``; a failing method opened nothing."""

    def own_pid(self) -> int: ...
    def read_stdin(self, n: int) -> bytes: ...  # at most n bytes; b"" at EOF
    def write_stdout(self, data: bytes) -> None: ...
    def open_own_token(self) -> int: ...
    def logon_sid(self, token: int) -> str: ...
    def restrict_token(self, token: int, restricting_sids: Sequence[str]) -> int: ...
    def create_process(
        self,
        token: int,
        *,
        application: str,
        command_line: str,
        cwd: str,
        environment: bytes,
        stdio: tuple[int, int, int],
    ) -> ProcessHandles: ...  # suspended; only ``stdio`` inherited
    def terminate_process(self, process: int, exit_code: int) -> None: ...
    def close(self, handle: int) -> None: ...


FAILED_EXIT_CODE = 1  # given to a command the broker created and then gave up on


def start_command(request: BrokerRequest, api: BrokerApi) -> ProcessHandles:
    """Create the command, suspended, with a write-restricted copy of the broker's own token.
    On success the broker holds only the command's process and thread handles (its token
    handles and the stdio handles it was given are closed); on failure nothing it created is
    alive or open, and the error is raised."""
    cmd, env_block = request.check()
    owned: list[int] = list(dict.fromkeys(request.stdio))  # given to us; the command copies them
    proc: ProcessHandles | None = None
    try:
        token = api.open_own_token()
        owned.append(token)
        sids = [*request.restricting_sids, api.logon_sid(token)]
        restricted = api.restrict_token(token, sids)
        owned.append(restricted)
        proc = api.create_process(
            restricted,
            application=request.argv[0],
            command_line=cmd,
            cwd=request.cwd,
            environment=env_block,
            stdio=request.stdio,
        )
        _close_all(api, owned)
        return proc
    except BaseException:
        if proc is not None:
            try:
                api.terminate_process(proc.process, FAILED_EXIT_CODE)
            except Exception:
                pass  # it is suspended, in the runner's job, which the runner ends
            owned.extend([proc.thread, proc.process])
        try:
            _close_all(api, owned)
        except Exception:
            pass
        raise


def _close_all(api: BrokerApi, handles: list[int]) -> None:
    """Close every handle, newest first; then raise the first failure, if any."""
    errors: list[Exception] = []
    while handles:
        try:
            api.close(handles.pop())
        except Exception as e:
            errors.append(e)
    if errors:
        raise SandboxError(f"windows broker: closing a handle failed: {errors[0]}") from errors[0]


def respond(body: bytes, api: BrokerApi) -> tuple[bytes, ProcessHandles | None]:
    """One request in, one reply frame out (never raises for a bad request or a failed call:
    those become an ``error`` reply). Also returns the command's handles, to close after EOF."""
    try:
        request = decode_request(body)
        proc = start_command(request, api)
    except Exception as e:
        return encode_reply(BrokerReply("error", message=f"{type(e).__name__}: {e}")), None
    try:
        started = BrokerReply("started", api.own_pid(), proc.pid, proc.process, proc.thread)
        reply = encode_reply(started)
    except Exception as e:
        _abandon(api, proc)
        return encode_reply(BrokerReply("error", message=f"{type(e).__name__}: {e}")), None
    return reply, proc


def _abandon(api: BrokerApi, proc: ProcessHandles) -> None:
    """Give up on a created command: end it (it is suspended), close our handles to it."""
    try:
        api.terminate_process(proc.process, FAILED_EXIT_CODE)
    except Exception:
        pass  # it is suspended, in the runner's job, which the runner ends
    _abandon_handles_only(api, proc)


def serve(api: BrokerApi) -> int:
    """The broker's life: read the request, reply, wait for EOF, close, exit. Exit code 0 when
    a command was started and handed over, 1 otherwise."""
    try:
        body = read_frame(api.read_stdin, MAX_REQUEST)
    except Exception as e:
        reply, proc = encode_reply(BrokerReply("error", message=f"{type(e).__name__}: {e}")), None
    else:
        reply, proc = respond(body, api)
    try:
        api.write_stdout(reply)
        while api.read_stdin(4096):  # the runner takes the handles, then closes our stdin
            pass
    except Exception:
        if proc is not None:
            _abandon(api, proc)
        return 1
    if proc is None:
        return 1
    _abandon_handles_only(api, proc)
    return 0


def _abandon_handles_only(api: BrokerApi, proc: ProcessHandles) -> None:
    """The runner holds its own duplicates now; ours go (the process must live on)."""
    for handle in (proc.thread, proc.process):
        try:
            api.close(handle)
        except Exception:
            pass


def main() -> int:
    """``python -m ringfence.platforms.windows.broker``: only as started by the run."""
    if sys.platform != "win32":
        print("ringfence's Windows broker runs only on Windows", file=sys.stderr)
        return 2
    return serve(Win32BrokerApi())


def _conforms(api: Win32BrokerApi) -> BrokerApi:
    """mypy proves here that the ctypes class implements the interface."""
    return api


if __name__ == "__main__":
    raise SystemExit(main())
