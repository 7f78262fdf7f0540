"""The wire between ``ringfence run --session`` and a running session server.

This module is imported by the fast client path, so it imports nothing beyond ``os``,
``sys`` and ``_socket`` (``socket`` and ``json`` would cost more than the rest of the client).

A frame is one type byte, a 4-byte big-endian length and a payload. A request's payload is
NUL-separated bytes: argv, environment and cwd come from the kernel as NUL-free strings, so
no escaping is needed and non-UTF-8 names travel unchanged.

Client → server: ``R`` a command (the client's fds 0, 1 and 2 ride along as SCM_RIGHTS),
``S`` a signal number to forward, ``I`` describe the session, ``Q`` stop the server.
Server → client: ``W`` a warning, before the command starts (the client's imports lie where
the session's commands write), ``X`` the command ended (exit status, then ringfence's
message if any), ``i`` the description (JSON), ``q`` stopping.
"""

import _socket
import os
import sys

VERSION = b"2"  # 2: the client's sys.path rides along (the server warns when it is writable)
MAX_PATH_ENTRIES = 1024  # a client's sys.path: the server resolves each entry
MAX_FRAME = 64 << 20  # argv + environment may be large (ARG_MAX), but not this large
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class WireError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class Request:
    """One command to run (a plain class: ``dataclasses`` costs the client milliseconds)."""

    __slots__ = ("argv", "cwd", "env", "path", "timeout")

    def __init__(
        self,
        cwd: bytes,
        timeout: float | None,
        argv: list[bytes],
        env: dict[bytes, bytes],
        path: list[bytes],
    ) -> None:
        self.cwd = cwd
        self.timeout = timeout
        self.argv = argv
        self.env = env
        self.path = path  # the client's sys.path: where the client imports from


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a session, or None: it becomes a file name."""
    if not name or len(name) > 64:
        return "a session name has 1 to 64 characters"
    if not set(name) <= _NAME_CHARS or name[0] in ".-":
        return (
            f"session name {name!r}: use letters, digits, '.', '_' and '-' (not first: '.' or '-')"
        )
    return None


def session_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Where session sockets live: never inside a sandbox's view.

    ``$XDG_RUNTIME_DIR`` is masked in every sandbox, and so is the fallback in the host's
    ``/tmp`` (a socket there could not be connected to through a sandbox's /tmp overlay
    anyway). ``RINGFENCE_SESSION_DIR``
    overrides both (tests and unusual setups). The server checks its peers anyway.
    """
    override = env.get("RINGFENCE_SESSION_DIR")
    if override:
        return override
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return os.path.join(xdg, "ringfence", "sessions")
    return f"/tmp/ringfence-{os.getuid()}/sessions"


def socket_path(name: str, env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    return os.path.join(session_dir(env), name + ".sock")


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def encode_request(
    cwd: bytes,
    timeout: float | None,
    argv: list[bytes],
    env: dict[bytes, bytes],
    path: list[bytes],
) -> bytes:
    parts = [VERSION, cwd, b"" if timeout is None else repr(timeout).encode()]
    parts.append(str(len(path)).encode())
    parts.extend(path)
    parts.append(str(len(argv)).encode())
    parts.extend(argv)
    parts.extend(k + b"=" + v for k, v in env.items())
    payload = b"\0".join(parts)
    if payload.count(b"\0") != len(parts) - 1:  # one scan: a NUL inside a part is one more
        raise WireError("an argument or environment value contains a NUL byte")
    return payload


def decode_request(payload: bytes) -> Request:
    parts = payload.split(b"\0")
    if len(parts) < 6 or parts[0] != VERSION:
        raise WireError(
            "the client and the session are of different ringfence versions (stop the "
            "session and start it again with this ringfence)"
        )
    try:
        timeout = float(parts[2]) if parts[2] else None
        npath = int(parts[3])
        if not 0 <= npath <= min(len(parts) - 6, MAX_PATH_ENTRIES):
            raise WireError("bad path count")
        path = parts[4 : 4 + npath]
        at = 4 + npath
        argc = int(parts[at])
    except ValueError as e:
        raise WireError(f"bad request field: {e}") from None
    if timeout is not None and not 0 < timeout < float("inf"):  # NaN too
        raise WireError("the timeout must be a positive number of seconds")
    if not 1 <= argc <= len(parts) - at - 1:
        raise WireError("bad argument count")
    argv = parts[at + 1 : at + 1 + argc]
    env: dict[bytes, bytes] = {}
    for item in parts[at + 1 + argc :]:
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            raise WireError("bad environment entry")
        env[key] = value
    if not argv[0]:
        raise WireError("the command name is empty")
    return Request(cwd=parts[1], timeout=timeout, argv=argv, env=env, path=path)


class FrameReader:
    """Reads frames from a stream socket; the first ``recvmsg`` may carry file descriptors."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self, want: int, fds: list[int] | None) -> bool:
        while len(self.buf) < want:
            if fds is not None:
                space = _socket.CMSG_SPACE(3 * 4)
                data, anc, _flags, _addr = self.sock.recvmsg(65536, space)
                for level, kind, blob in anc:
                    if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                        usable = len(blob) - len(blob) % 4
                        fds.extend(
                            int.from_bytes(blob[i : i + 4], sys.byteorder, signed=True)
                            for i in range(0, usable, 4)
                        )
            else:
                data = self.sock.recv(65536)
            if not data:
                return False
            self.buf += data
        return True

    def read(
        self, fds: list[int] | None = None, limit: int = MAX_FRAME
    ) -> tuple[bytes, bytes] | None:
        """The next (kind, payload), or None at end of stream. ``fds`` collects passed fds;
        a frame larger than ``limit`` is an error (before any of its payload is read)."""
        if not self._fill(5, fds):
            if self.buf:
                raise WireError("the stream ended inside a frame")
            return None
        kind, size = self.buf[:1], int.from_bytes(self.buf[1:5], "big")
        if size > limit:
            raise WireError(f"a frame of {size} bytes is too large")
        if not self._fill(5 + size, fds):
            raise WireError("the stream ended inside a frame")
        payload, self.buf = self.buf[5 : 5 + size], self.buf[5 + size :]
        return kind, payload


def send_all(sock: _socket.socket, data: bytes, fds: tuple[int, ...] = ()) -> None:
    """Send ``data``; ``fds`` go with its first byte."""
    view = memoryview(data)
    if fds:
        blob = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        sent = sock.sendmsg([view], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, blob)])
        view = view[sent:]
    while view:
        view = view[sock.send(view) :]
