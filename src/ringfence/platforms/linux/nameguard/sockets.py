"""Emulating connect, sendto, sendmsg and sendmmsg: unix sockets on disk outside the
writable roots are refused, and every call is performed by the guard on its own copy of the
caller's socket with the address it read and checked (see the comment above
:class:`SocketCalls`)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import queue
import select
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

from ringfence.network.offline import UNREACHABLE
from ringfence.platforms.linux import libc
from ringfence.platforms.linux.guard_rules import GuardRules, check_canonical, socket_refused
from ringfence.platforms.linux.nameguard.call import AT_FDCWD, Call, Handler
from ringfence.platforms.linux.nameguard.ffi import (
    SOCKADDR_MAX,
    SUN_ADDR_MAX,
    IoVec,
    MsgHdr,
    check,
    connect_raw,
    getsockopt,
    process_vm_writev,
    sendmsg_raw,
)
from ringfence.platforms.linux.nameguard.filter import SENDTO_ADDR_ARG
from ringfence.platforms.linux.nameguard.listener import Listener
from ringfence.platforms.linux.nameguard.resolve import Resolver
from ringfence.platforms.linux.nameguard.results import (
    CONTINUE,
    DEFERRED,
    Magic,
    Refused,
    Reply,
    Value,
)

MSGHDR_SIZE: Final = ctypes.sizeof(MsgHdr)
MMSGHDR_SIZE: Final = MSGHDR_SIZE + 8
SOL_SOCKET: Final = 1
SO_TYPE: Final = 3
SO_DOMAIN: Final = 39
SO_ERROR: Final = 4
CONNECT_TRY: Final = 0.02  # seconds a blocking connect may take in the guard's own thread
SCM_RIGHTS: Final = 1
CMSG_HDR: Final = 16  # struct cmsghdr: size_t len, int level, int type (8-byte aligned data)
MSG_DONTWAIT: Final = 0x40
MSG_NOSIGNAL: Final = 0x4000
UIO_MAXIOV: Final = 1024
# The most a sent message may carry through the guard: the kernel's own datagram limits are
# far lower (a unix datagram ~208 KiB by default, UDP 64 KiB); a stream send is cut to this
# and returns the count sent, as a send on a stream socket may.
SEND_MAX: Final = 1 << 20
CONTROL_MAX: Final = 1 << 16  # ancillary data (the kernel's optmem limit is lower)
# Descriptors one message may pass (the kernel's SCM_MAX_FD: more is EINVAL). A sendmmsg
# batch is taken while its messages together stay within SEND_MAX bytes (data and ancillary
# data) and SCM_MAX_FD descriptors (at least its first message); the rest is left to the
# caller, as a short count (sendmmsg may send fewer than asked). So one call never makes the
# guard hold more than about a megabyte and 253 of the caller's descriptors.
SCM_MAX_FD: Final = 253
# Calls that wait (a blocking connect or send) are finished by worker threads, so the guard
# itself never waits for a peer; at most this many at once, then EAGAIN.
WORKERS_MAX: Final = 64
# The descriptors all waiting calls may hold together (a call's own: its /proc directory,
# its socket, its destinations, what it passes); a call that would go over gets EAGAIN,
# unless none waits and it holds at most ONE_CALL_FDS (a batch is cut there, and at
# SCM_MAX_FD passed). Counted in gitguard.pins.SPARE_FDS, beside the files that wait for the
# git check.
HELD_FDS_MAX: Final = 256
ONE_CALL_FDS: Final = SCM_MAX_FD + 16


def _inet_address(addr: bytes) -> str | None:
    """ "ADDRESS PORT" of a sockaddr_in or sockaddr_in6, or None (for the report only)."""
    family = int.from_bytes(addr[:2], sys.byteorder) if len(addr) >= 2 else -1
    if family == socket.AF_INET and len(addr) >= 8:
        host = socket.inet_ntop(socket.AF_INET, addr[4:8])
    elif family == socket.AF_INET6 and len(addr) >= 24:
        host = socket.inet_ntop(socket.AF_INET6, addr[8:24])
    else:
        return None
    return f"{host} {int.from_bytes(addr[2:4], 'big')}"


def _sockopt(fd: int, option: int) -> int:
    value = ctypes.c_int(0)
    size = ctypes.c_uint32(ctypes.sizeof(value))
    check(getsockopt(fd, SOL_SOCKET, option, ctypes.byref(value), ctypes.byref(size)), "getsockopt")
    return value.value


def _proc_fd_address(fd: int) -> bytes:
    """A unix address naming the socket file our O_PATH ``fd`` holds: the kernel follows the
    magic link to exactly the inode we checked (and a long path fits in sun_path this way)."""
    return socket.AF_UNIX.to_bytes(2, sys.byteorder) + f"/proc/self/fd/{fd}".encode() + b"\0"


def _send_one(sock: int, name: bytes, data: bytes, control: bytes, flags: int) -> int:
    """sendmsg(2) on our copy of the caller's socket with what we read (and checked)."""
    hdr = MsgHdr()
    keep: list[Any] = []
    if name:
        buf = ctypes.create_string_buffer(name, len(name))
        keep.append(buf)
        hdr.name, hdr.namelen = ctypes.addressof(buf), len(name)
    body = ctypes.create_string_buffer(data, len(data)) if data else None
    iov = IoVec(ctypes.addressof(body) if body is not None else None, len(data))
    hdr.iov, hdr.iovlen = ctypes.addressof(iov), 1
    if control:
        cbuf = ctypes.create_string_buffer(control, len(control))
        keep.append(cbuf)
        hdr.control, hdr.controllen = ctypes.addressof(cbuf), len(control)
    n = sendmsg_raw(sock, ctypes.byref(hdr), flags)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(n)


def _connected(sock: int) -> Reply:
    """Wait for a TCP connect already under way on ``sock``; its result, as connect gives it."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    poller.poll()
    err = _sockopt(sock, SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    return Value()


def _cmsgs(control: bytes) -> list[tuple[int, int, int, int]]:
    """The control messages in ``control``: (offset, length, level, type) each."""
    out = []
    off = 0
    while off + CMSG_HDR <= len(control):
        clen = int.from_bytes(control[off : off + 8], sys.byteorder)
        level = int.from_bytes(control[off + 8 : off + 12], sys.byteorder, signed=True)
        kind = int.from_bytes(control[off + 12 : off + 16], sys.byteorder, signed=True)
        if clen < CMSG_HDR or clen > len(control) - off:
            raise OSError(errno.EINVAL, "bad control message")
        out.append((off, clen, level, kind))
        off += (clen + 7) & ~7
    return out


def _rights(control: bytes) -> int:
    """How many descriptors ``control`` passes (SCM_RIGHTS)."""
    return sum(
        (clen - CMSG_HDR) // 4
        for _, clen, level, kind in _cmsgs(control)
        if level == SOL_SOCKET and kind == SCM_RIGHTS
    )


class Workers:
    """Threads that finish calls which may wait for a peer (a blocking connect, a send into a
    full buffer), so the guard keeps answering everyone else meanwhile. A waiting call waits
    as long as the caller would have (it ends with the guard, which ends with the command);
    at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.idle = 0
        self.count = 0

    def submit(self, job: Callable[[], None]) -> bool:
        with self.lock:
            if self.idle > 0:
                self.idle -= 1
                self.jobs.put(job)
                return True
            if self.count >= self.limit:
                return False
            self.count += 1
        try:  # the guard runs under the command's process limit: it may have used it up
            threading.Thread(
                target=self._loop, args=(job,), name="nameguard-wait", daemon=True
            ).start()
        except RuntimeError:
            with self.lock:
                self.count -= 1
            return False
        return True

    def _loop(self, job: Callable[[], None]) -> None:
        # Signals are the main thread's business: a blocking connect interrupted here would
        # leave a TCP socket half-connected.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            job()
            with self.lock:
                self.idle += 1
            job = self.jobs.get()


# connect() to a path socket, and a send with a destination address on a datagram socket,
# reach whatever listens at that path: through the read-only root, any host daemon whose
# socket is not masked (a database, a build server, a container engine). Landlock up to
# ABI 7 has no rule for this (ABI 6 scopes abstract sockets only).
# TODO(landlock): should a Landlock ABI gain a right for resolving unix sockets by path,
# hand the socket rules (GuardRules.socket_roots/allow_sockets) to it in plan.py and keep
# this as the second wall.
#
# The guard never checks and then lets the call continue: the address is in the caller's
# memory and the socket a number in its descriptor table, and another thread can change
# either between our look and the kernel's. So it acts for the caller: it takes the caller's
# socket itself (pidfd_getfd: the open file, not the number), reads the address once,
# opens the socket file with O_PATH and no symlink left to follow, checks where that file
# really is, and connects or sends through /proc/self/fd/N of that O_PATH fd, so what was
# checked is what is reached. Calls on other families are performed the same way (their
# address is not looked at), because the number could name a unix socket by the time the
# kernel looked again. The one exception is sendmsg on anything but a unix datagram socket
# from a single-threaded caller: nobody can change its descriptors while it waits, and the
# address in its message means nothing to such a socket (see ``_sendmsg``).


class SocketCalls:
    """The guard's handlers for calls that may reach a unix socket by its path."""

    def __init__(
        self,
        rules: GuardRules,
        resolver: Resolver,
        listener: Listener,
        on_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.on_event = on_event
        # The address the call being handled named and whether its socket is a stream (TCP):
        # for the report of an unreachable one.
        self.address = b""
        self.stream = False
        self.rules = rules
        self.resolver = resolver
        self.listener = listener
        self.workers = Workers(WORKERS_MAX)
        self._held = 0  # descriptors the waiting calls hold (HELD_FDS_MAX)
        self._held_lock = threading.Lock()
        # A blocking connect is tried here first, under a short timer (SIGALRM, no SA_RESTART:
        # the connect returns EINTR); only one that really waits goes to a worker thread.
        self.alarm = threading.current_thread() is threading.main_thread()
        if self.alarm:
            signal.signal(signal.SIGALRM, lambda _sig, _frame: None)

    def handlers(self) -> dict[str, Handler]:
        """Each syscall this class performs."""
        return {
            "connect": lambda c, s: self._unreachable_noted(c, self._connect),
            "sendto": lambda c, s: self._unreachable_noted(c, self._sendto),
            "sendmsg": lambda c, s: self._sendmsg(c, batch=False),
            "sendmmsg": lambda c, s: self._sendmsg(c, batch=True),
        }

    def _unreachable_noted(self, call: Call, handler: Callable[[Call], Reply]) -> Reply:
        """``handler(call)``; when the kernel answers an inet address with ENETUNREACH (the
        sandbox's own network has no route there: the network is off), say which address
        (event ``unreachable``, "ADDRESS PORT", detail "tcp" for a stream connect, else
        "udp"), so the report can name it. Only on that failure: a call that works costs
        nothing more."""
        self.address, self.stream = b"", False
        try:
            return handler(call)
        except OSError as exc:
            if exc.errno == errno.ENETUNREACH and self.on_event is not None:
                where = _inet_address(self.address)
                if where is not None:
                    self.on_event(UNREACHABLE, where, "tcp" if self.stream else "udp")
            raise

    def _socket(self, call: Call) -> tuple[int, int, int, bool]:
        """Our copy of the caller's socket (argument 0), its family and type (both fixed when
        the socket was made), and whether it blocks (shared with the caller's descriptor)."""
        sock = call.own(call.socket_fd(call.arg_int(0)))
        blocking = not fcntl.fcntl(sock, fcntl.F_GETFL) & os.O_NONBLOCK
        return sock, _sockopt(sock, SO_DOMAIN), _sockopt(sock, SO_TYPE), blocking

    def _peer_address(
        self, call: Call, domain: int, stype: int, addr: bytes, *, send: bool
    ) -> bytes:
        """The address to hand the kernel for the caller: for a unix path, /proc/self/fd/N of
        the checked socket file; anything else exactly the bytes read (the kernel judges it).
        A send on a stream socket refuses an address and a seqpacket send ignores it: no path
        is looked up for them, so theirs pass unchanged."""
        family = int.from_bytes(addr[:2], sys.byteorder) if len(addr) >= 2 else -1
        if domain != socket.AF_UNIX or family != socket.AF_UNIX or len(addr) <= 2 or addr[2] == 0:
            return addr  # not a unix path: an inet address, an abstract name, or invalid
        if send and stype != socket.SOCK_DGRAM:
            return addr
        if len(addr) > SUN_ADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        path = os.fsdecode(addr[2:].split(b"\0", 1)[0])
        return _proc_fd_address(self._socket_file(call, path))

    def _socket_file(self, call: Call, path: str) -> int:
        """An O_PATH fd of the socket file ``path`` names for the caller, checked against the
        socket rules by where it really is; raises like the kernel's connect would."""
        call.path = path
        for _attempt in range(8):
            res = self.resolver.resolve(call, AT_FDCWD, path, follow_last=True)
            if isinstance(res, Magic):
                fd = res.fd
            else:
                try:
                    fd = call.own(
                        os.open(res.kernel_name, os.O_PATH | os.O_NOFOLLOW, dir_fd=res.parent_fd)
                    )
                except FileNotFoundError:
                    raise OSError(errno.ENOENT, "no such socket") from None
            st = os.fstat(fd)
            if not stat.S_ISLNK(st.st_mode):
                break  # (a symlink planted since we looked: resolve again)
        else:
            raise OSError(errno.ELOOP, "the path kept changing")
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ECONNREFUSED, "not a socket")
        if st.st_nlink == 0:
            raise OSError(errno.ENOENT, "the socket file was removed")
        real = self.resolver.fd_path(fd)
        call.path = real
        try:
            check_canonical(real)
        except ValueError:
            raise Refused(real, "a socket the guard cannot name", by="socket") from None
        rule = socket_refused(self.rules, real)
        if rule is not None:
            raise Refused(real, rule, by="socket")
        return fd

    def _defer(self, call: Call, fds: list[int], work: Callable[[], Reply]) -> Reply:
        """Finish ``call`` in a worker thread (it may wait for a peer). ``fds`` (the call's
        own) now belong to the work and are closed when it ends."""
        with self._held_lock:
            first = not self._held and len(fds) <= ONE_CALL_FDS
            if self._held + len(fds) > HELD_FDS_MAX and not first:
                raise OSError(errno.EAGAIN, "too many descriptors held by waiting calls")
            self._held += len(fds)
        for fd in fds:
            call.fds.remove(fd)
        notif_id = call.id

        def job() -> None:
            try:
                reply = work()
            except OSError as exc:
                reply = Value(error=exc.errno or errno.EIO)
            except Exception:  # never leave the caller waiting
                reply = Value(error=errno.EIO)
            finally:
                for fd in fds:
                    os.close(fd)
                self._let_go(len(fds))
            self.listener.respond(notif_id, reply)

        if not self.workers.submit(job):
            call.fds.extend(fds)
            self._let_go(len(fds))
            raise OSError(errno.EAGAIN, "too many calls waiting for a peer")
        return DEFERRED

    def _let_go(self, count: int) -> None:
        with self._held_lock:
            self._held -= count

    def _connect(self, call: Call) -> Reply:
        """connect(fd, addr, len), performed on the caller's socket with the address checked.

        A nonblocking socket answers at once (EINPROGRESS, EAGAIN, as the caller would see
        them: our copy shares its flags). A blocking stream connect may wait (a full backlog,
        a TCP handshake): a worker thread does it, waiting as long as the caller would.
        """
        length = call.arg_uint(2)
        if length > SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        addr = self.address = call.read_bytes(1, length)
        call.validate()
        sock, domain, stype, blocking = self._socket(call)
        self.stream = stype == socket.SOCK_STREAM
        target = self._peer_address(call, domain, stype, addr, send=False)
        call.path = None  # checked: a refusal from here on is the kernel's answer, not ours

        def work() -> Reply:
            check(connect_raw(sock, target, len(target)), "connect")
            return Value()

        if not blocking or stype == socket.SOCK_DGRAM:
            return work()  # answers at once (EINPROGRESS, EAGAIN: as the caller would see them)
        if self.alarm:
            signal.setitimer(signal.ITIMER_REAL, CONNECT_TRY)
            try:
                return work()
            except InterruptedError:
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if domain in (socket.AF_INET, socket.AF_INET6):  # the handshake is under way
                return self._defer(call, list(call.fds), lambda: _connected(sock))
        return self._defer(call, list(call.fds), work)

    def _sendto(self, call: Call) -> Reply:
        """sendto(fd, buf, len, flags, addr, addrlen) with an address (without one the filter
        lets it through): performed for the caller like sendmsg."""
        size = call.args[2]
        flags = call.arg_uint(3)
        alen = call.arg_uint(5)
        if alen > SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "address too long")
        addr = self.address = call.read_bytes(SENDTO_ADDR_ARG, alen)
        data = call.read_at(call.args[1], min(size, SEND_MAX))
        call.validate()
        sock, domain, stype, blocking = self._socket(call)
        if size > SEND_MAX and stype != socket.SOCK_STREAM:
            raise OSError(errno.EMSGSIZE, "message too long")
        name = self._peer_address(call, domain, stype, addr, send=True)
        call.path = None
        return self._send(call, sock, blocking, [(name, data, b"")], flags=flags, lens=None)

    def _sendmsg(self, call: Call, *, batch: bool) -> Reply:
        """sendmsg(fd, msg, flags) and sendmmsg(fd, msgs, vlen, flags).

        Unix datagram sockets (the only kind a destination address takes to a path) are always
        served by the guard: the messages are read once, each destination checked, descriptors
        passed with SCM_RIGHTS taken from the caller (pidfd_getfd), and sent from our copy of
        the socket. Any other socket is too, unless the caller is single-threaded: then no one
        can swap the descriptor under the call (clone with CLONE_FILES but not CLONE_THREAD is
        refused by the filter), and the kernel may run it itself.
        """
        call.validate()
        sock, domain, stype, blocking = self._socket(call)
        unix_dgram = domain == socket.AF_UNIX and stype == socket.SOCK_DGRAM
        if not unix_dgram and call.status("Threads") == "1":
            return CONTINUE
        flags = call.arg_uint(3 if batch else 2)
        count = min(call.arg_uint(2), UIO_MAXIOV) if batch else 1
        if count == 0:
            return Value()
        table = call.read_at(call.args[1], count * (MMSGHDR_SIZE if batch else MSGHDR_SIZE))
        step = MMSGHDR_SIZE if batch else MSGHDR_SIZE
        raw = [
            (
                MsgHdr.from_buffer_copy(table, i * step),
                call.args[1] + i * step + MSGHDR_SIZE,
            )
            for i in range(count)
        ]
        read: list[tuple[bytes, bytes, bytes]] = []
        batch_bytes = batch_fds = 0
        for hdr, _ in raw:
            if hdr.namelen > SOCKADDR_MAX and hdr.name:
                raise OSError(errno.EINVAL, "address too long")
            if hdr.iovlen > UIO_MAXIOV:
                raise OSError(errno.EMSGSIZE, "too many iovecs")
            if hdr.controllen > CONTROL_MAX:
                raise OSError(errno.ENOBUFS, "too much ancillary data")
            iovs = call.read_at(hdr.iov, hdr.iovlen * 16) if hdr.iovlen else b""
            spans = [
                (
                    int.from_bytes(iovs[16 * j : 16 * j + 8], sys.byteorder),
                    int.from_bytes(iovs[16 * j + 8 : 16 * j + 16], sys.byteorder),
                )
                for j in range(hdr.iovlen)
            ]
            size = min(sum(length for _, length in spans), SEND_MAX)
            control = call.read_at(hdr.control, hdr.controllen) if hdr.control else b""
            rights = _rights(control) if domain == socket.AF_UNIX else 0
            if rights > SCM_MAX_FD:
                raise OSError(errno.EINVAL, "too many descriptors in one message")
            size += len(control)  # held (twice) as long as the data
            if read and (batch_bytes + size > SEND_MAX or batch_fds + rights > SCM_MAX_FD):
                break  # the rest of the batch is the caller's to send again (a short count)
            batch_bytes += size
            batch_fds += rights
            name = call.read_at(hdr.name, hdr.namelen) if hdr.name else b""
            chunks: list[bytes] = []
            total = 0
            for base, length in spans:
                take = min(length, SEND_MAX - total)
                if take < length and stype != socket.SOCK_STREAM:
                    raise OSError(errno.EMSGSIZE, "message too long")
                chunks.append(call.read_at(base, take))
                total += take
            read.append((name, b"".join(chunks), control))
        self.listener.id_valid(call.id)  # what we read was the caller's memory
        msgs = self._checked(call, domain, stype, read)
        call.path = None
        lens = [where for _, where in raw[: len(msgs)]] if batch else None
        return self._send(call, sock, blocking, msgs, flags=flags, lens=lens)

    def _checked(
        self, call: Call, domain: int, stype: int, read: list[tuple[bytes, bytes, bytes]]
    ) -> list[tuple[bytes, bytes, bytes]]:
        """The messages read, each with its destination checked and its descriptors ours;
        fewer when the next one's destination (held open until the send) and what it passes
        would take the call past what one call may hold (ONE_CALL_FDS)."""
        msgs: list[tuple[bytes, bytes, bytes]] = []
        for name, data, control in read:
            opened = len(call.fds)
            try:
                peer: bytes | None = self._peer_address(call, domain, stype, name, send=True)
            except (OSError, Refused):
                if not msgs:
                    raise
                peer = None  # the ones before go; the caller meets this one's answer next
            rights = _rights(control) if domain == socket.AF_UNIX else 0
            if msgs and (peer is None or len(call.fds) + rights > ONE_CALL_FDS):
                for fd in call.fds[opened:]:
                    os.close(fd)
                del call.fds[opened:]
                break
            assert peer is not None
            ctl = self._control(call, control) if domain == socket.AF_UNIX else control
            msgs.append((peer, data, ctl))
        return msgs

    def _control(self, call: Call, control: bytes) -> bytes:
        """Ancillary data with the caller's SCM_RIGHTS descriptors replaced by our copies of
        the same open files (the receiver gets exactly what the caller passed)."""
        out = bytearray(control)
        for off, clen, level, kind in _cmsgs(control):
            if level == SOL_SOCKET and kind == SCM_RIGHTS:
                for pos in range(off + CMSG_HDR, off + clen - 3, 4):
                    theirs = int.from_bytes(control[pos : pos + 4], sys.byteorder, signed=True)
                    ours = call.own(call.fd_copy(theirs))
                    out[pos : pos + 4] = ours.to_bytes(4, sys.byteorder)
        return bytes(out)

    def _send(
        self,
        call: Call,
        sock: int,
        blocking: bool,
        msgs: list[tuple[bytes, bytes, bytes]],
        *,
        flags: int,
        lens: list[int] | None,
    ) -> Reply:
        """Send ``msgs`` (name, data, control) on our copy of the socket; ``lens``: where the
        caller's msg_len fields are (sendmmsg), else the answer is the byte count.

        Sent without waiting first; if the caller's call would wait (a blocking socket, no
        MSG_DONTWAIT) and the kernel says EAGAIN, a worker thread sends the rest, waiting.
        MSG_NOSIGNAL always: a SIGPIPE the caller asked for is sent to it, not to us.
        """
        wait = blocking and not flags & MSG_DONTWAIT
        tgid, tid = call.tgid, call.tid
        sent: list[int] = []

        def finish(error: OSError | None) -> Reply:
            if error is not None and error.errno == errno.EPIPE and not flags & MSG_NOSIGNAL:
                with contextlib.suppress(OSError):
                    libc.syscall("tgkill", tgid, tid, signal.SIGPIPE)
            if not sent:
                assert error is not None
                raise error
            if lens is None:
                return Value(val=sent[0])
            for where, n in zip(lens, sent, strict=False):
                value = ctypes.c_uint32(n)
                local = IoVec(ctypes.addressof(value), 4)
                remote = IoVec(where, 4)
                process_vm_writev(tid, local, 1, remote, 1, 0)
            return Value(val=len(sent))

        def rest(start: int, done: int) -> Reply:  # in a worker: the kernel may wait here
            """From message ``start``, of which ``done`` bytes (and its ancillary data) went
            out already: a blocking send of a stream sends all of a message."""
            for i in range(start, len(msgs)):
                name, data, control = msgs[i]
                got = done if i == start else 0
                try:
                    got += _send_one(
                        sock, name, data[got:], b"" if got else control, flags | MSG_NOSIGNAL
                    )
                except OSError as exc:
                    if not got:
                        return finish(exc)
                    sent.append(got)  # a count, and no SIGPIPE: as the kernel
                    return finish(None)
                sent.append(got)
                if got < len(data):  # cut short (a send timeout): the batch stops here
                    return finish(None)
            return finish(None)

        def wait_for(start: int, done: int, error: OSError | None) -> Reply:
            try:
                return self._defer(call, list(call.fds), functools.partial(rest, start, done))
            except OSError as full:  # no room to wait: what went out is the answer
                if done:
                    sent.append(done)
                return finish(None if sent else error or full)

        for i, (name, data, control) in enumerate(msgs):
            try:
                n = _send_one(sock, name, data, control, flags | MSG_DONTWAIT | MSG_NOSIGNAL)
            except OSError as exc:
                if exc.errno == errno.EAGAIN and wait:
                    return wait_for(i, 0, exc)
                return finish(exc)
            if n < len(data) and wait:  # part of a stream's message: the caller would wait
                return wait_for(i, n, None)
            sent.append(n)
            if n < len(data):  # part of a stream's message: the batch stops, as the kernel's
                return finish(None)
        return finish(None)
