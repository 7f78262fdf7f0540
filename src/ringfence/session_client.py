"""``ringfence run --session NAME -- CMD``: run a command in a session server that is already up.

This is the CLI's fast path. It imports only ``os``, ``sys``, ``_socket`` and ``_signal`` (no
argparse, no policy, no config): the boundary was built when the server started, so a call
costs an interpreter start plus about one warm command. The client hands its own stdin,
stdout and stderr to the server (SCM_RIGHTS), forwards the signals it gets, and exits with
the command's status under the same conventions as ``ringfence run``.

No ``from __future__ import annotations`` here or in the modules imported with this one: the
``__future__`` module is one more import on every call, and the annotations work without it.
"""

import _signal  # type: ignore[import-not-found]  # `signal` would import enum (~3 ms)
import _socket
import os
import sys

from ringfence import session_wire as wire
from ringfence.forwarded import FORWARDED
from ringfence.importplaces import import_places

EXIT_INTERNAL = 125
EXIT_USAGE = 2


def fast_args(argv: list[str]) -> tuple[str, float | None, list[str]] | None:
    """(session, timeout, command) when ``argv`` is a plain ``run --session`` call, else None.

    Anything else, including a malformed call, goes to the full CLI, which explains errors.
    """
    if len(argv) < 3 or argv[0] != "run":
        return None
    name: str | None = None
    timeout: float | None = None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            command = argv[i + 1 :]
            if name is None or wire.check_name(name) or not command or not command[0]:
                return None
            return name, timeout, command
        key, sep, value = arg.partition("=")
        if key not in ("--session", "--timeout"):
            return None
        if not sep:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 1
        if key == "--session":
            name = value
        else:
            try:
                timeout = float(value)
            except ValueError:
                return None
            if not 0 < timeout < float("inf"):  # also refuses NaN
                return None
        i += 1
    return None


def exit_now(status: int) -> None:
    """End the process with ``status`` at once, skipping the interpreter's teardown.

    Tearing down an interpreter (freeing every module, a garbage collection) costs a call
    ~1.5 ms here, a tenth of it. Nothing is lost by skipping it: the fast path keeps no
    buffered output but ``sys.stdout``/``sys.stderr`` (flushed here), registers no ``atexit``
    handler, starts no thread and leaves no file behind; its socket is closed already.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # our own message could not be written; the command's status still stands
    os._exit(status)


def _fail(message: str, status: int = EXIT_INTERNAL) -> int:
    sys.stderr.write(f"ringfence: {message}\n")
    return status


def _std_fds() -> tuple[int, int, int]:
    """Our fds 0-2; a closed one is handed over as /dev/null, as a shell would see it."""
    out = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            out.append(fd)
        except OSError:
            out.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    return out[0], out[1], out[2]


def _after_warnings(reader: wire.FrameReader) -> "tuple[bytes, bytes] | None":
    """The first frame that is not a warning; warnings (sent before the command starts) go
    to stderr as they come."""
    got = reader.read()
    while got is not None and got[0] == b"W":
        sys.stderr.write("ringfence: " + got[1].decode("utf-8", "replace") + "\n")
        sys.stderr.flush()
        got = reader.read()
    return got


def connect(name: str) -> _socket.socket:
    """A connection to session ``name``; FileNotFoundError/ConnectionRefusedError if none."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(wire.socket_path(name))
    except BaseException:
        sock.close()
        raise
    return sock


def run(name: str, timeout: float | None, argv: list[str]) -> int:
    """Run ``argv`` in session ``name``; returns the exit status ``ringfence run`` would.

    It connects before it builds the request: the server accepts and checks the caller
    while the request (the whole environment) is put together.
    """
    try:
        sock = connect(name)
    except (FileNotFoundError, ConnectionRefusedError):
        return _fail(
            f"no session named {name!r} is running (start one with `ringfence session "
            f"start --name {name} [policy flags]`)",
            EXIT_USAGE,  # as for `session stop` of that name: nothing ran
        )
    except OSError as e:
        return _fail(f"cannot reach session {name!r}: {e.strerror or e}")
    try:
        try:
            cwd = os.getcwdb()
        except OSError as e:
            return _fail(f"the current directory is gone: {e.strerror}")
        try:
            payload = wire.encode_request(
                cwd,
                timeout,
                [os.fsencode(a) for a in argv],
                dict(os.environb),
                [os.fsencode(p) for p in import_places()],  # the server warns if writable
            )
        except wire.WireError as e:
            return _fail(str(e))
        # The command may start (and be signalled by whoever waits for its output) before
        # the request's send returns: the forwarding is in place first, and a signal that
        # comes before the request has gone is sent right after it.
        early: list[int] = []
        sent: list[bool] = []

        def forward(sig: int, _frame: object) -> None:
            if not sent:
                early.append(sig)
                return
            try:
                wire.send_all(sock, wire.frame(b"S", str(sig).encode()))
            except OSError:
                pass  # the server is gone; the read below says so

        for sig in FORWARDED:
            _signal.signal(sig, forward)
        try:
            wire.send_all(sock, wire.frame(b"R", payload), _std_fds())
        except OSError as e:
            return _fail(f"session {name!r} did not take the command: {e.strerror or e}")
        sent.append(True)
        for sig in early:
            forward(sig, None)
        reader = wire.FrameReader(sock)
        try:
            got = _after_warnings(reader)
        except (OSError, wire.WireError) as e:
            return _fail(f"lost session {name!r}: {e}")
        if got is None or got[0] != b"X":
            return _fail(f"session {name!r} ended while the command ran")
        status, _, message = got[1].partition(b"\0")
        if message:
            sys.stderr.write("ringfence: " + message.decode("utf-8", "replace") + "\n")
        try:
            return int(status)
        except ValueError:
            return _fail(f"session {name!r} sent a bad exit status")
    finally:
        sock.close()
