"""The broker: a short-lived process running as the sandbox user that starts the command with
a write-restricted copy of its *own* token, and the wire protocol between it and the runner.

NOT RUN ON WINDOWS. The protocol (framing, limits, refusals) and the broker's logic
(:func:`respond`, :func:`serve`) are pure and tested on Linux, in-process, against a simulated
``BrokerApi``; the ctypes side (``runner.Win32BrokerApi``) has never executed.

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

The protocol (version 1): every message is one frame, a 4-byte big-endian length then that
many bytes of UTF-8 JSON holding one object. Unknown or missing fields, another version,
duplicate keys, a frame over the limit, NUL in any string and handle values out of range are
refused. Request (runner → broker, at most ``MAX_REQUEST`` bytes)::

    {"version": 1, "argv": [...], "cwd": "C:\\\\...", "env": [["NAME", "value"], ...],
     "restricting_sids": ["S-1-..."], "stdio": [h_in, h_out, h_err]}

``env`` is the command's whole environment as a list of pairs (a JSON object would merge
duplicate names silently); ``stdio`` are handle values valid *in the broker*, inheritable
there, put there by the runner with DuplicateHandle. The runner decides what they are (its own
std handles, NUL, or pipes it reads), so the broker never deals with stdio modes.

Reply (broker → runner, at most ``MAX_REPLY`` bytes), one of::

    {"version": 1, "status": "started", "broker_pid": N, "pid": N, "process": H, "thread": H}
    {"version": 1, "status": "error", "message": "..."}

``broker_pid`` is the broker's own pid: the runner checks it is the process it started (a
launcher such as a venv's ``python.exe`` would run the interpreter as a child, whose handle
values mean nothing in the process the runner holds). Then the runner closes the broker's
stdin; EOF is the only message left, and means "exit".
"""

from __future__ import annotations

import json
import ntpath
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows.sids import check_sid

PROTOCOL_VERSION = 1
MAX_REQUEST = 1 << 20  # 1 MiB: argv + environment; CreateProcess caps the command line at 32767
MAX_REPLY = 1 << 16
MAX_ERROR_MESSAGE = 4000
MAX_HANDLE = 1 << 32  # handle values are small; anything larger is not one
MAX_ARGS = 8192
MAX_SIDS = 64
HEADER = struct.Struct(">I")

BROKER_MODULE = "ringfence.platforms.windows.broker"

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


# --- pure: frames -----------------------------------------------------------------------------


def encode_frame(message: Mapping[str, object], limit: int) -> bytes:
    try:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: not text Windows could be given back
        bad = e.object[e.start : e.end]
        raise PolicyError(f"windows broker: {bad!r} is not valid Unicode") from None
    if len(body) > limit:
        raise PolicyError(f"windows broker: a message of {len(body)} bytes is over {limit}")
    return HEADER.pack(len(body)) + body


def read_exactly(read: Callable[[int], bytes], n: int) -> bytes:
    """``n`` bytes from ``read`` (which returns at most what was asked, ``b""`` at EOF)."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = read(n - got)
        if not chunk:
            raise SandboxError(f"windows broker: the pipe closed after {got} of {n} bytes")
        if len(chunk) > n - got:
            raise SandboxError("windows broker: a read returned more than was asked")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(read: Callable[[int], bytes], limit: int) -> bytes:
    """One frame's body; the length is checked against ``limit`` before anything is read."""
    (size,) = HEADER.unpack(read_exactly(read, HEADER.size))
    if size > limit:
        raise SandboxError(f"windows broker: a message of {size} bytes is over {limit}")
    return read_exactly(read, size)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SandboxError(f"windows broker: duplicate field {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise SandboxError(f"windows broker: {name} is not allowed")


def parse_object(body: bytes, fields: frozenset[str]) -> dict[str, Any]:
    """A JSON object with exactly ``fields`` (plus ``version``, which must be ours)."""
    try:
        value = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise SandboxError(f"windows broker: not a JSON message: {e}") from None
    if not isinstance(value, dict):
        raise SandboxError("windows broker: a message must be a JSON object")
    version = value.get("version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise SandboxError(
            f"windows broker: protocol version {version!r} (this side speaks {PROTOCOL_VERSION})"
        )
    keys = set(value) - {"version"}
    if keys != fields:
        unknown, missing = sorted(keys - fields), sorted(fields - keys)
        raise SandboxError(f"windows broker: unknown fields {unknown}, missing fields {missing}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or "\0" in value:
        raise SandboxError(f"windows broker: {what} must be a string without NUL")
    return value


def _texts(value: object, what: str, most: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > most:
        raise SandboxError(f"windows broker: {what} must be a list of at most {most}")
    return tuple(_text(item, what) for item in value)


def _handle(value: object, what: str) -> int:
    if type(value) is not int or not 0 < value < MAX_HANDLE:
        raise SandboxError(f"windows broker: {what} is not a handle value: {value!r}")
    return value


# --- pure: messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerRequest:
    """What the broker starts. ``stdio`` are handle values in the broker's handle table."""

    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...]
    restricting_sids: tuple[str, ...]
    stdio: tuple[int, int, int]

    def check(self) -> tuple[str, bytes]:
        """Everything refusable before Windows is touched: (command line, environment block).
        Both sides run it: the runner before sending, the broker after receiving."""
        cmd = command_line(self.argv)
        if not ntpath.isabs(self.argv[0]):
            raise PolicyError(f"windows: the program must be an absolute path: {self.argv[0]!r}")
        if not ntpath.isabs(self.cwd) or "\0" in self.cwd:
            raise PolicyError(f"windows: the working directory must be absolute: {self.cwd!r}")
        if not self.restricting_sids or len(self.restricting_sids) > MAX_SIDS:
            raise PolicyError(f"windows: 1 to {MAX_SIDS} restricting SIDs are needed")
        for sid in self.restricting_sids:
            check_sid(sid)
        if len(self.stdio) != 3:
            raise PolicyError("windows: stdio is three handles")
        for handle in self.stdio:
            _handle(handle, "a stdio handle")
        names = [name for name, _ in self.env]
        if len({name.upper() for name in names}) != len(names):
            raise PolicyError("windows: an environment variable is given twice")
        return cmd, environment_block(dict(self.env))


REQUEST_FIELDS = frozenset({"argv", "cwd", "env", "restricting_sids", "stdio"})


def encode_request(request: BrokerRequest) -> bytes:
    request.check()
    return encode_frame(
        {
            "version": PROTOCOL_VERSION,
            "argv": list(request.argv),
            "cwd": request.cwd,
            "env": [[name, value] for name, value in request.env],
            "restricting_sids": list(request.restricting_sids),
            "stdio": list(request.stdio),
        },
        MAX_REQUEST,
    )


def decode_request(body: bytes) -> BrokerRequest:
    if len(body) > MAX_REQUEST:
        raise SandboxError(f"windows broker: a request of {len(body)} bytes is over {MAX_REQUEST}")
    value = parse_object(body, REQUEST_FIELDS)
    env_value = value["env"]
    if not isinstance(env_value, list) or len(env_value) > MAX_ARGS:
        raise SandboxError(f"windows broker: env must be a list of at most {MAX_ARGS} pairs")
    env: list[tuple[str, str]] = []
    for pair in env_value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise SandboxError("windows broker: an env entry must be [name, value]")
        env.append((_text(pair[0], "an env name"), _text(pair[1], "an env value")))
    stdio = value["stdio"]
    if not isinstance(stdio, list) or len(stdio) != 3:
        raise SandboxError("windows broker: stdio must be three handle values")
    request = BrokerRequest(
        argv=_texts(value["argv"], "argv", MAX_ARGS),
        cwd=_text(value["cwd"], "cwd"),
        env=tuple(env),
        restricting_sids=_texts(value["restricting_sids"], "restricting_sids", MAX_SIDS),
        stdio=(
            _handle(stdio[0], "stdin"),
            _handle(stdio[1], "stdout"),
            _handle(stdio[2], "stderr"),
        ),
    )
    try:
        request.check()
    except PolicyError as e:
        raise SandboxError(f"windows broker: refused request: {e}") from None
    return request


@dataclass(frozen=True)
class BrokerReply:
    """``started``: the command exists, suspended, in the broker's job; ``process`` and
    ``thread`` are handle values in the broker. ``error``: nothing was started."""

    status: Literal["started", "error"]
    broker_pid: int = 0
    pid: int = 0
    process: int = 0
    thread: int = 0
    message: str = ""


STARTED_FIELDS = frozenset({"status", "broker_pid", "pid", "process", "thread"})
ERROR_FIELDS = frozenset({"status", "message"})


def encode_reply(reply: BrokerReply) -> bytes:
    if reply.status == "started":
        return encode_frame(
            {
                "version": PROTOCOL_VERSION,
                "status": "started",
                "broker_pid": _handle(reply.broker_pid, "broker_pid"),
                "pid": _handle(reply.pid, "pid"),
                "process": _handle(reply.process, "process"),
                "thread": _handle(reply.thread, "thread"),
            },
            MAX_REPLY,
        )
    message = reply.message.replace("\0", "?")[:MAX_ERROR_MESSAGE]
    return encode_frame(
        {"version": PROTOCOL_VERSION, "status": "error", "message": message}, MAX_REPLY
    )


def decode_reply(body: bytes) -> BrokerReply:
    if len(body) > MAX_REPLY:
        raise SandboxError(f"windows broker: a reply of {len(body)} bytes is over {MAX_REPLY}")
    try:
        status = json.loads(body.decode("utf-8")).get("status")
    except (UnicodeDecodeError, ValueError, AttributeError):
        status = None
    if status == "started":
        value = parse_object(body, STARTED_FIELDS)
        return BrokerReply(
            "started",
            broker_pid=_handle(value["broker_pid"], "broker_pid"),
            pid=_handle(value["pid"], "pid"),
            process=_handle(value["process"], "process"),
            thread=_handle(value["thread"], "thread"),
        )
    value = parse_object(body, ERROR_FIELDS)
    if value["status"] != "error":
        raise SandboxError(f"windows broker: unknown reply status {value['status']!r}")
    message = _text(value["message"], "message")
    if len(message) > MAX_ERROR_MESSAGE:
        raise SandboxError("windows broker: an error message over the limit")
    return BrokerReply("error", message=message)


# --- the broker's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessHandles:
    process: int
    thread: int
    pid: int


class BrokerApi(Protocol):
    """Every Windows call the broker makes (the real one: ``runner.Win32BrokerApi``). Each
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
    """``python -m ringfence.platforms.windows.broker``: only as started by the runner."""
    if sys.platform != "win32":
        print("ringfence's Windows broker runs only on Windows", file=sys.stderr)
        return 2
    from ringfence.platforms.windows.runner import Win32BrokerApi

    return serve(Win32BrokerApi())


if __name__ == "__main__":
    raise SystemExit(main())
