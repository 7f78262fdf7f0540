"""The wire protocol between the run and the broker (``broker.py``): frames, the request, the
reply, their limits and refusals; and ``ProcessHandles``, what a ``started`` reply hands over.

Pure and tested on Linux. Both sides import this module and nothing of each other.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows.cmdline import command_line, environment_block
from ringfence.platforms.windows.sids import check_sid

PROTOCOL_VERSION = 1
MAX_REQUEST = 1 << 20  # 1 MiB: argv + environment; CreateProcess caps the command line at 32767
MAX_REPLY = 1 << 16
MAX_ERROR_MESSAGE = 4000
MAX_HANDLE = 1 << 32  # handle values are small; anything larger is not one
MAX_ARGS = 8192
MAX_SIDS = 64
HEADER = struct.Struct(">I")

BROKER_MODULE = "ringfence.platforms.windows.broker"  # what the run starts: python -m <this>


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


@dataclass(frozen=True)
class ProcessHandles:
    """A created process as its holder keeps it: process and thread handles (valid in the
    holder's handle table), and its pid."""

    process: int
    thread: int
    pid: int
