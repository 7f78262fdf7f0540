"""A named session server: one warm sandbox that ``ringfence run --session NAME`` reaches.

An agent that shells out for every command pays an interpreter start and a whole sandbox
build each time with plain ``ringfence run``. ``ringfence session start`` builds the sandbox
once and listens on a unix socket; each ``run --session`` call hands the server its argv,
environment, cwd and stdio fds and gets the exit status back.

The policy is fixed when the server starts; a call cannot change it. The socket lives in a
private directory (mode 0700, checked) that no sandbox can see, and the server refuses any
peer that is another user or runs in another user namespace: a command inside a sandbox must
never reach a session, whose policy may be wider than its own.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import json
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ringfence import session_wire as wire
from ringfence.display import printable
from ringfence.engine.approval import ApprovalGate
from ringfence.engine.result import EXIT_INTERNAL, RunResult
from ringfence.errors import PolicyError, SandboxError, UsageError
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy.environment import build_environment
from ringfence.policy.model import EnvPolicy
from ringfence.process import spawn_or_outcome, wait_outcome
from ringfence.session import Session

REFUSED_FRAME = 1 << 20  # what a refused peer may send before it is told why
ACCEPT_POLL = 0.5  # how often the accept loop looks at the stop flag and the idle clock


@dataclass
class _Stats:
    started: float = field(default_factory=time.time)
    commands: int = 0
    running: int = 0  # commands running
    last_activity: float = field(default_factory=time.monotonic)


def private_dir(path: str) -> None:
    """Create ``path`` (mode 0700) and check that nobody else can use or replace it.

    The fallback directory lies in the shared ``/tmp``, where another user could have made
    it first, or put a symlink there: refuse rather than listen in a place others control.
    Its ancestors must belong to root or to us and, if others may write to them, be sticky.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    uid = os.getuid()
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise SandboxError(
            f"{path} must be a real directory that only you can use (yours, mode 0700): "
            "sessions cannot listen there (remove it, or set RINGFENCE_SESSION_DIR to a "
            "private directory)"
        )
    parent = os.path.dirname(path.rstrip("/"))
    while parent not in ("", "/"):
        st = os.stat(parent)
        shared = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, uid) or shared:
            raise SandboxError(
                f"{parent} (above the session directory {path}) can be changed by other "
                "users: set RINGFENCE_SESSION_DIR to a private directory"
            )
        parent = os.path.dirname(parent)


def peer_refusal(conn: socket.socket) -> str | None:
    """Why the peer on ``conn`` may not use this session, or None.

    The uid check keeps other users out (the directory's mode does too). The user-namespace
    check keeps out every sandboxed process, which runs as the same uid but in a user
    namespace of its own: a sandbox must not run commands through a session.
    """
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.getuid():
        return f"uid {uid} may not use a session of uid {os.getuid()}"
    pidfd = _peer_pidfd(conn)
    if pidfd is not None:  # the peer itself, not whoever has its pid number by now
        try:
            pid = _pidfd_pid(pidfd)
            if pid <= 0:
                return "the caller has exited; refused"
            why = _refusal_of(pid)
            try:
                signal.pidfd_send_signal(pidfd, 0)  # still the same, living process?
            except ProcessLookupError:
                return "the caller has exited; refused"
            return why
        finally:
            os.close(pidfd)
    return _refusal_of(pid)


SO_PEERPIDFD = 77  # Linux >= 6.5: a pidfd of the peer as it connected


def _peer_pidfd(conn: socket.socket) -> int | None:
    try:
        return conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None  # an older kernel: the pid from SO_PEERCRED, checked at once


def _pidfd_pid(pidfd: int) -> int:
    for line in _read_proc(f"/proc/self/fdinfo/{pidfd}").split(b"\n"):
        if line.startswith(b"Pid:"):
            return int(line.split()[1])
    return -1


def _read_proc(path: str) -> bytes:
    """A small /proc file's bytes, without a buffered file object (a call reads two)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _refusal_of(pid: int) -> str | None:
    try:
        theirs = os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return "cannot verify the caller (its /proc entry is not readable); refused"
    ours = _own_standing()
    if ours is None:
        return "cannot verify the caller (our own /proc entry is not readable); refused"
    if theirs != ours[0]:
        return "a command inside a sandbox may not use a session (another user namespace)"
    # A sandbox with reduced isolation shares our user namespace; it is more confined than we
    # are (no_new_privs, more seccomp filters), which a caller allowed to run the session's
    # commands never is.
    peer = _confinement(str(pid))
    if peer is None:
        return "cannot verify the caller (its /proc entry is not readable); refused"
    if any(p > m for p, m in zip(peer, ours[1], strict=True)):
        return "a command inside a sandbox may not use a session (it is more confined)"
    return None


_OWN: list[tuple[str, tuple[int, int]]] = []


def _own_standing() -> tuple[str, tuple[int, int]] | None:
    """The server's own user namespace and confinement, read once (a call pays only for the
    peer's): nothing in the server's process changes either while it runs (the sandbox is
    built in child processes)."""
    if not _OWN:
        try:
            ns = os.readlink("/proc/self/ns/user")
        except OSError:
            return None
        mine = _confinement("self")
        if mine is None:
            return None
        _OWN.append((ns, mine))
    return _OWN[0]


def _confinement(pid: str) -> tuple[int, int] | None:
    """(no_new_privs, seccomp filters) of ``pid`` from its status: what a sandbox adds."""
    try:
        status = _read_proc(f"/proc/{pid}/status")
    except OSError:
        return None
    fields: dict[bytes, bytes] = {}
    for line in status.split(b"\n"):
        key, sep, value = line.partition(b":")
        if sep and key in (b"NoNewPrivs", b"Seccomp", b"Seccomp_filters"):
            fields[key] = value.strip()
    nnp = int(fields.get(b"NoNewPrivs") or 0)
    filters = fields.get(b"Seccomp_filters")
    if filters is not None:
        return nnp, int(filters or 0)
    return nnp, 1 if fields.get(b"Seccomp", b"0") == b"2" else 0


class SessionServer:
    """Owns the listening socket and the warm :class:`Session`; one thread per client."""

    def __init__(
        self,
        name: str,
        plan: LinuxPlan,
        env_policy: EnvPolicy,
        *,
        workspace: str,
        idle_timeout: float | None = None,
        audit: bool = True,
        gate: ApprovalGate | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        why = wire.check_name(name)
        if why:
            raise PolicyError(why)
        if not plan.sandboxed:
            raise PolicyError("a session runs commands inside a sandbox; full-access mode has none")
        if idle_timeout is not None and not idle_timeout > 0:
            raise PolicyError("--idle-timeout must be a positive number of seconds")
        self.name = name
        self.plan = plan
        self.env_policy = env_policy
        self.workspace = workspace
        self.idle_timeout = idle_timeout
        self.audit = audit
        self.gate = gate
        self.path = wire.socket_path(name, dict(environ))
        self.session: Session | None = None
        self.sock: socket.socket | None = None
        self._ino: int | None = None
        self._stop = threading.Event()
        # A `session stop` in progress: the server's process must not exit before it has
        # ended the commands and said so to the caller.
        self._quitting = False
        self._quit_answered = threading.Event()
        self._lock = threading.Lock()
        self.stats = _Stats()
        # per client sys.path seen: the warning for it, or "" (clients of one install share one)
        self._path_warnings: dict[bytes, str] = {}

    # -- life ---------------------------------------------------------------------------------
    def bind(self) -> None:
        """Take the socket path; a live server of the same name is an error, a stale one not."""
        private_dir(os.path.dirname(self.path))
        if os.path.lexists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # left by a server that was killed
            else:  # a usage error (exit 2): nothing is wrong with the sandbox
                raise UsageError(
                    f"session {self.name!r} is already running (stop it with `ringfence "
                    f"session stop --name {self.name}`)"
                )
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as e:
            sock.close()
            raise SandboxError(f"cannot listen at {self.path}: {e.strerror}") from None
        finally:
            os.umask(old)
        sock.listen(64)
        self._ino = os.lstat(self.path).st_ino
        self.sock = sock

    def start(self) -> None:
        """Build the sandbox (errors surface here, before anyone is told the server is up)."""
        # A server has nobody to ask: what the approval policy would ask about is refused.
        self.session = Session(_plan=self.plan, _gate=self.gate, audit=self.audit)
        self.session.start()

    def serve_forever(self) -> None:
        assert self.sock is not None
        self.sock.settimeout(ACCEPT_POLL)
        while not self._stop.is_set() and not self._idle_expired() and not self._orphaned():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            conn.settimeout(None)
            # Not threading.Thread: its start() waits until the new thread has run, a thread
            # switch on every call's critical path. These threads need no join.
            _thread.start_new_thread(self._handle, (conn,))
        if self._quitting:
            self._quit_answered.wait(30)
        self.close()

    def stop(self) -> None:
        """Stop listening at once (a new server may take the name), then end every command."""
        self._stop.set()
        self._unlink()

    def close(self) -> None:
        self.stop()
        if self.sock is not None:
            self.sock.close()
        if self.session is not None:
            self.session.close()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            if self._ino is not None and os.lstat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        self._ino = None

    def _orphaned(self) -> bool:
        """Whether our socket was removed or replaced: nobody can reach this server any more,
        so it stops instead of holding a sandbox forever."""
        try:
            return os.lstat(self.path).st_ino != self._ino
        except OSError:
            return True

    def _idle_expired(self) -> bool:
        if self.idle_timeout is None:
            return False
        with self._lock:
            quiet = time.monotonic() - self.stats.last_activity
            return self.stats.running == 0 and quiet > self.idle_timeout

    def describe(self) -> dict[str, Any]:
        with self._lock:
            stats = {"commands": self.stats.commands, "active": self.stats.running}
        return {
            "name": self.name,
            "pid": os.getpid(),
            "socket": self.path,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.stats.started)),
            "workspace": self.workspace,
            "mode": self.plan.mode,
            "network": self.plan.network,
            "writable_roots": list(self.plan.guard_roots),
            "idle_timeout": self.idle_timeout,
            **stats,
        }

    # -- one client ---------------------------------------------------------------------------
    def _handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            self._serve_one(conn, fds)
        except OSError:
            pass  # the client went away; its command (if any) was killed by the watcher
        except Exception as e:  # a bug of ours: tell the client rather than vanish
            with contextlib.suppress(OSError):
                message = f"internal error in the session server: {type(e).__name__}: {e}"
                self._reply_exit(conn, RunResult(EXIT_INTERNAL, message=message))
        finally:
            conn.close()
            for fd in fds:
                os.close(fd)

    def _serve_one(self, conn: socket.socket, fds: list[int]) -> None:
        why = peer_refusal(conn)
        reader = wire.FrameReader(conn)
        try:  # a refused peer's request is read (to answer it), but not a large one
            got = reader.read(fds, limit=REFUSED_FRAME if why else wire.MAX_FRAME)
        except (OSError, wire.WireError):
            return
        if got is None:
            return
        if why:
            self._reply_exit(conn, RunResult(EXIT_INTERNAL, message=why))
            return
        kind, payload = got
        if kind == b"R":
            taken = fds[:]
            fds.clear()
            self._run(conn, reader, payload, taken)
        elif kind == b"I":
            wire.send_all(conn, wire.frame(b"i", json.dumps(self.describe()).encode()))
        elif kind == b"Q":
            self._quitting = True
            try:
                self.stop()
                if self.session is not None:
                    self.session.close()
                wire.send_all(conn, wire.frame(b"q"))
            finally:
                self._quit_answered.set()
        else:
            self._reply_exit(conn, RunResult(EXIT_INTERNAL, message="unknown request"))

    def _reply_exit(self, conn: socket.socket, outcome: RunResult) -> None:
        body = str(outcome.returncode).encode()
        if outcome.message:
            lines = [printable(line) for line in outcome.message.split("\n")]
            body += b"\0" + "\nringfence: ".join(lines).encode("utf-8", "replace")
        wire.send_all(conn, wire.frame(b"X", body))

    def _run(
        self, conn: socket.socket, reader: wire.FrameReader, payload: bytes, fds: list[int]
    ) -> None:
        with self._lock:
            self.stats.running += 1
        try:
            try:
                req = wire.decode_request(payload)
            except wire.WireError as e:
                outcome = RunResult(EXIT_INTERNAL, message=f"bad request: {e}")
            else:
                warning = self._imports_warning(req)
                if warning:  # before the command runs: one that never ends is told too
                    with contextlib.suppress(OSError):
                        wire.send_all(conn, wire.frame(b"W", printable(warning).encode()))
                outcome = self._run_outcome(reader, req, fds)
        finally:
            for fd in fds:
                os.close(fd)
            with self._lock:  # only commands keep a session alive, not `session list`
                self.stats.running -= 1
                self.stats.last_activity = time.monotonic()
        self._reply_exit(conn, outcome)

    def _imports_warning(self, req: wire.Request) -> str:
        """The warning for a client that imports from where this session's commands write
        (a ``ringfence`` in a virtualenv inside the workspace: importpaths.py), or ""."""
        from ringfence import importpaths

        key = hashlib.sha256(b"\0".join([req.cwd, *req.path])).digest()
        warning = self._path_warnings.get(key)
        if warning is None:
            cwd = os.fsdecode(req.cwd)
            path = [os.path.join(cwd, os.fsdecode(p)) for p in req.path]  # relative: the client's
            found = importpaths.writable_entries(self.plan.writable_places(), path, cwd)
            warning = importpaths.front_end_warning(found[0]) if found else ""
            if len(self._path_warnings) >= 64:  # bounded: clients of odd paths start over
                self._path_warnings.clear()
            self._path_warnings[key] = warning
        return warning

    def _run_outcome(
        self, reader: wire.FrameReader, req: wire.Request, fds: list[int]
    ) -> RunResult:
        if len(fds) != 3:
            return RunResult(EXIT_INTERNAL, message="a request must carry stdin, stdout and stderr")
        assert self.session is not None
        argv = [os.fsdecode(a) for a in req.argv]
        caller_env = {os.fsdecode(k): os.fsdecode(v) for k, v in req.env.items()}
        env = build_environment(caller_env, self.env_policy, self.plan.sandbox_env)
        cwd = os.fsdecode(req.cwd)
        with self._lock:
            self.stats.commands += 1
        proc = spawn_or_outcome(
            self.session, argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], cwd=cwd, env=env
        )
        if isinstance(proc, RunResult):
            return proc
        for fd in fds:
            os.close(fd)
        fds.clear()

        def watch() -> None:
            """Forward the client's signals; a client that goes away takes its command."""
            while True:
                try:
                    got = reader.read()
                except (OSError, wire.WireError):
                    got = None
                if got is None:
                    proc.kill()
                    return
                if got[0] == b"S" and got[1].isdigit():
                    sig = int(got[1])
                    if 0 < sig < signal.NSIG:
                        proc.send_signal(sig)

        _thread.start_new_thread(watch, ())  # without waiting for it to run (see serve_forever)
        return wait_outcome(proc, self.session, req.timeout)


def daemonize(server: SessionServer) -> int:
    """Fork the server into the background; return once it is ready (0) or has failed (125).

    The parent waits on a pipe for the child's first word, so a sandbox that cannot be built
    is reported here, on the caller's terminal, not lost in a background process.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the server
        os.close(r)
        code = 0
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            signal.signal(signal.SIGTERM, lambda *_: server.stop())
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                server.start()
            except BaseException as e:  # everything is reported to the parent
                os.write(w, f"error {e}".encode())
                code = 1
            else:
                os.write(w, b"ready")
                os.close(w)
                server.serve_forever()
        finally:
            with contextlib.suppress(BaseException):
                server.close()
            os._exit(code)
    os.close(w)
    if server.sock is not None:
        server.sock.close()  # the child listens
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    word = b"".join(chunks).decode("utf-8", "replace")
    if word == "ready":
        print(
            f"session {server.name!r} ready (pid {pid}): "
            f"ringfence run --session {server.name} -- CMD"
        )
        return 0
    os.waitpid(pid, 0)
    detail = word.removeprefix("error ") or "the server exited before it was ready"
    print(f"ringfence: session {server.name!r} did not start: {detail}", file=sys.stderr)
    return EXIT_INTERNAL
