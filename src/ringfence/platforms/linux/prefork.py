"""The one-shot runner, forked before the plan is known.

``ringfence run`` forks the process that becomes the sandbox's runner (``sandbox_side``). That
process spends most of its start importing the runner's modules, which it can do while the host
is still importing its own and reading the plan: on a machine with two cores the two overlap.
So a one-shot run forks first, as soon as it knows it will run a command (``oneshot.py``),
and the child imports and then waits for its plan and session socket on a private socket pair.
When the host never hands one over (a full-access run, an error), closing its end lets the
child exit.

Only ringfence's own CLI process does this: it is single-threaded at that point, and the child
is a copy of nothing more than the interpreter and the few modules loaded by then.
"""

from __future__ import annotations

import array
import os
import socket

_MAX_PLAN = 1 << 23


class Prefork:
    """The parent's handle on a waiting runner."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns (covered by sandbox tests)
            ours.close()
            _child(theirs)
        theirs.close()
        self.pid = pid
        self.sock: socket.socket | None = ours

    def hand_over(self, plan: object, session_sock: socket.socket, tmpdir: str | None) -> int:
        """Give the waiting child its plan and session socket; it runs ``session_main``."""
        from ringfence.plancache import codec

        assert self.sock is not None
        data = codec.encode((plan, tmpdir))
        fds = array.array("i", [session_sock.fileno()])
        try:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
        finally:
            self.close()
        return self.pid

    def reap(self) -> None:
        """Wait for a child that was not handed anything (it exits on end-of-file)."""
        self.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def close(self) -> None:
        """The child exits on its own (it reads end-of-file); the caller reaps it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _child(sock: socket.socket) -> None:  # pragma: no cover - runs in the forked child
    status = 1
    try:
        from ringfence.plancache import codec
        from ringfence.platforms.linux import sandbox_side

        data, anc, _flags, _addr = sock.recvmsg(_MAX_PLAN, socket.CMSG_SPACE(4))
        fds = array.array("i")
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        sock.close()
        if not data or len(fds) != 1:
            status = 0  # the host went on without us
        else:
            plan, tmpdir = codec.decode(data)
            session = socket.socket(fileno=fds[0])
            sandbox_side.session_main(plan, session, tmpdir)  # never returns
    except BaseException:
        status = 1
    os._exit(status)


_waiting: list[Prefork] = []


def start() -> None:
    """Fork the runner-to-be now (at most one)."""
    if not _waiting:
        _waiting.append(Prefork())


def take() -> Prefork | None:
    """The waiting runner, for the session that starts now (None: fork as usual)."""
    return _waiting.pop() if _waiting else None


def discard() -> None:
    """No sandbox will start (a full-access run): let the child go; reap it."""
    while _waiting:
        _waiting.pop().reap()
