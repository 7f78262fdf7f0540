"""The session wire format: one JSON object per SOCK_SEQPACKET message, fds alongside.

SEQPACKET keeps message boundaries and makes each send atomic, so the host's threads and the
runner's per-command processes can all write to one socket without framing or locks. File
descriptors ride as SCM_RIGHTS; a message says how many it carries, so a truncated control
message is detected instead of silently losing an fd.

Host -> runner:
  ``{"op": "run", "id", "argv", "env", "cwd", "pty": [rows, cols] | null}`` (and, when
  asked for, ``"executable"``, ``"umask"``, ``"pass_fds": [numbers]``) + stdin, stdout,
  stderr (none with a pty), then one descriptor per number of ``pass_fds``;
  ``{"op": "signal", "id", "sig"}`` (to the command's process group);
  ``{"op": "kill", "id"}`` (the command's whole tree, at once).
Runner -> host:
  ``{"id", "started": pid}`` (+ the pty master), ``{"id", "exit": code}``,
  ``{"id", "signal": n}``, ``{"id", "exec_error": errno}``, ``{"id", "error": text}``.
"""

from __future__ import annotations

import array
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 1 << 20  # argv + env of one command
MAX_FDS = 64  # stdio, or the proxy's and exposed ports' listening sockets


_FDS_SIZE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_PEEK = bytearray(1)


class ProtocolError(Exception):
    """The peer sent something that is not a message of this protocol."""


def send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps({**msg, "nfds": len(fds)}, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MESSAGE} limit")
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sock.sendmsg([data], anc)
    else:
        # send(2), not sendmsg: a command's init is under the name guard's filter, which lets
        # a send without an address through but hands every sendmsg to the guard (and fails it
        # once the guard is gone); the init must still be able to report how the command ended.
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next message and its fds (owned by the caller), or None at end of stream."""
    # Its size first (a peek leaves message and fds queued): recvmsg(MAX_MESSAGE) would
    # allocate (mmap), shrink (mremap) and free (munmap) a MiB for every message.
    size = sock.recv_into(_PEEK, 1, socket.MSG_PEEK | socket.MSG_TRUNC)
    data, anc, flags, _ = sock.recvmsg(
        min(max(size, 1), MAX_MESSAGE), _FDS_SIZE, socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    if not data and not fds:
        return None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("a message or its file descriptors were truncated")
        msg = json.loads(data)
        if not isinstance(msg, dict) or msg.get("nfds") != len(fds):
            raise ProtocolError("malformed message")
    except (ValueError, ProtocolError):
        for fd in fds:
            os.close(fd)
        raise
    return msg, fds
