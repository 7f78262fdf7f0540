"""The name guard's supervisor: the notification loop, which hands each call to its
handler (:mod:`.files`, :mod:`.sockets`), answers it, and reports refusals."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import time
from collections.abc import Callable

from ringfence.errors import SandboxError, UnsupportedError
from ringfence.platforms.linux import libc
from ringfence.platforms.linux.gitguard.fileio import quarantine
from ringfence.platforms.linux.gitguard.guard import GitGuard
from ringfence.platforms.linux.guard_rules import GuardRules
from ringfence.platforms.linux.nameguard.call import Call, GuardView, Handler
from ringfence.platforms.linux.nameguard.files import FileCalls
from ringfence.platforms.linux.nameguard.filter import ARCHES, SOCKET_SYSCALLS
from ringfence.platforms.linux.nameguard.listener import Listener
from ringfence.platforms.linux.nameguard.resolve import Resolver
from ringfence.platforms.linux.nameguard.results import CONTINUE, Denial, Refused, Reply, Value
from ringfence.platforms.linux.nameguard.sockets import SocketCalls
from ringfence.policy.semantics import first_under

# Errors of a call the guard made for the command that are reported as a boundary (a denial).
REFUSALS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


TURN_WAIT = 10.0  # seconds a guard waits for its turn before it gives up on a call


def take_turn(lock_fd: int, wait: float = TURN_WAIT) -> bool:
    """flock(LOCK_EX) on ``lock_fd`` within ``wait`` seconds. Bounded: the user's lock file
    is reachable by name from a sandbox with reduced isolation, whose command could hold it
    to stall every other sandbox's guard."""
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    deadline = time.monotonic() + wait
    pause = 0.0002
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    return False


class Supervisor:
    """Answers the name guard's notifications (single-threaded; FIFO opens use a thread)."""

    def __init__(
        self,
        listener_fd: int,
        rules: GuardRules,
        *,
        on_denial: Callable[[Denial], None] | None = None,
        on_event: Callable[[str, str, str], None] | None = None,
        lock_fd: int = -1,
    ) -> None:
        self.listener_fd = listener_fd
        # flock'ed around each call: the guards of one session's commands take turns
        self.lock_fd = lock_fd
        self.on_event = on_event
        self.rules = rules
        self.git: GitGuard | None = None
        if rules.git != "off":
            self.git = GitGuard(
                roots=(*rules.writable_roots, *rules.git_roots),
                private_roots=rules.git_private_roots,
                strict=rules.git == "strict",
                hooks_dirs=rules.hooks_dirs,
                global_hooks_path=rules.global_hooks_path,
                home=rules.home,
                on_event=self._event,
            )
        self.on_denial = on_denial
        arch = ARCHES.get(libc.MACHINE)
        if arch is None:
            raise UnsupportedError(f"the name guard does not support {libc.MACHINE!r}")
        self._names = {nr: name for name, nr in arch.numbers.items()}
        self.listener = Listener(listener_fd)
        # /proc must be the procfs of our own pid namespace, or the pid in a notification
        # would name a different process there.
        if os.readlink("/proc/self") != str(os.getpid()):
            raise SandboxError("the name guard's /proc is not its own pid namespace's procfs")
        proc_dev = os.stat("/proc").st_dev
        root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
        root = os.fstat(root_fd)
        mnt = os.stat("/proc/self/ns/mnt")
        self.view = GuardView(root_fd, (root.st_dev, root.st_ino), (mnt.st_dev, mnt.st_ino))
        try:
            with open("/proc/sys/fs/protected_symlinks") as f:
                protected_symlinks = f.read().strip() != "0"
        except OSError:
            protected_symlinks = True
        resolver = Resolver(self.view, proc_dev=proc_dev, protected_symlinks=protected_symlinks)
        self.listener.wake_on_same_cpu()
        files = FileCalls(rules, self.git, resolver, self.listener, self._event)
        sockets = SocketCalls(rules, resolver, self.listener, self._event)
        self._handlers: dict[str, Handler] = {**files.handlers(), **sockets.handlers()}
        self.init_pid = os.getppid()
        self.used = False  # answered a call of a command: holds what it learnt from it
        self.noted = False  # a file waits for the end-of-command check (``git_pending``)

    def close(self) -> None:
        """Close the supervisor's own fds (not the listener, which the caller owns)."""
        os.close(self.view.root_fd)

    def finish(self) -> None:
        """Check the pointer files the command created, now that no process of it is left
        to change them (see GitGuard.finish); then say so (event ``git_finished``)."""
        # in turn with the other guards; held files are judged by inode anyway (pins.py),
        # so a check that cannot get its turn in time goes ahead rather than not at all
        turn = self.lock_fd >= 0 and take_turn(self.lock_fd)
        try:
            unsecured = self.git.finish(quarantine) if self.git is not None else []
        finally:
            if turn:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        # not finished unless every refused file is out of the way: the host moves them then
        self._event("git_unfinished" if unsecured else "git_finished", "/")

    # ------------------------------------------------------------------ loop

    def serve(self, stop_fd: int, control_fd: int = -1) -> bool:
        """Answer notifications until ``stop_fd`` is readable or every filtered task is gone
        (False), or until the command's init says its command is over (True).

        ``control_fd``: where the command's init says so (one byte ``R``) once every other
        process of the command is gone; :meth:`finish` runs first if the command created a
        file that waits for it (``B``, sent while the command's init waits for its request,
        is taken as read); its end of file also stops the guard.
        """
        poller = select.poll()
        poller.register(self.listener_fd, select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        if control_fd >= 0:
            poller.register(control_fd, select.POLLIN)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            hup = False
            for fd, ev in events:
                if fd == stop_fd:
                    return False
                if fd == control_fd:
                    said = self._control(control_fd, ev)
                    if said is not None:
                        return said
                    continue
                if ev & select.POLLIN:
                    self.handle_one()
                elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                    hup = True
            if hup:
                return False

    def _control(self, control_fd: int, ev: int) -> bool | None:
        """What the command's init said: its command is over (True, after :meth:`finish` if
        a file waits for it), its end of file (False), or nothing to act on (None)."""
        try:
            data = os.read(control_fd, 16) if ev & select.POLLIN else b""
        except BlockingIOError:
            return None
        if data == b"B":  # "get ready" (see steps._asked): it is already
            return None
        if data != b"R":
            return False
        if self.noted:
            self.finish()
        return True

    def handle_one(self) -> None:
        """Receive one notification and answer it."""
        notif = self.listener.receive()
        if notif is None:
            return
        denial: Denial | None = None
        name = self._names.get(int(notif.data.nr), f"nr {notif.data.nr}")
        call: Call | None = None
        socket_call = name in SOCKET_SYSCALLS
        if int(notif.pid) == self.init_pid and socket_call:
            # The command's init (our parent): ringfence's own code talking to the host and to
            # us, on sockets it made; it is not dumpable, so we could not look at it anyway.
            self.listener.respond(int(notif.id), CONTINUE)
            return
        self.used = True
        # Socket calls change no name (the socket file is held open while used): no need to
        # take turns with the session's other guards.
        locked = self.lock_fd >= 0 and not socket_call
        if locked and not take_turn(self.lock_fd):
            # another guard keeps the lock (or a process that should not hold it does):
            # nothing is done unchecked, and the command may try again
            self.listener.respond(int(notif.id), Value(error=errno.EAGAIN))
            return
        try:
            call = Call(self.listener, self.view, notif)
            handler = self._handlers.get(name)
            reply: Reply = handler(call, name) if handler else Value(error=errno.ENOSYS)
        except Refused as refused:
            denial = Denial(int(notif.pid), name, refused.path, refused.rule, by=refused.by)
            reply = Value(error=errno.EACCES)
        except OSError as exc:
            reply = Value(error=exc.errno or errno.EIO)
            # (a socket call the kernel refused is not a boundary: the socket rule reports
            # itself, and EACCES on the way to a socket would suggest a writable root)
            if (
                exc.errno in REFUSALS
                and call is not None
                and call.path is not None
                and not socket_call
            ):
                rule = self._kernel_rule(call.path, exc)
                denial = Denial(int(notif.pid), name, call.path, rule, by="kernel")
        except Exception:
            self.listener.respond(int(notif.id), Value(error=errno.EACCES))
            raise
        finally:
            if call is not None:
                call.close()
            if locked:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        if denial is not None and self.on_denial is not None:
            self.on_denial(denial)  # before the answer: the report is in before the caller goes on
            if self.git is not None and self.git.is_hook_path(denial.path):
                self._event("refused_hook", denial.path, denial.rule)
        self.listener.respond(int(notif.id), reply)

    def _kernel_rule(self, path: str, exc: OSError) -> str:
        """Which boundary a refusal the kernel gave our emulated call most likely came from."""
        inside = first_under(path, self.rules.writable_roots) is not None
        if exc.errno == errno.EROFS:
            return "protected (read-only)" if inside else "outside writable roots"
        if inside:
            return f"permission denied ({os.strerror(exc.errno or errno.EACCES)})"
        return "outside writable roots"

    def _event(self, kind: str, path: str, detail: str = "") -> None:
        if kind == "git_pending":
            self.noted = True
        if self.on_event is not None:
            self.on_event(kind, path, detail)
