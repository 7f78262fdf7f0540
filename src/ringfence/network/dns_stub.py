"""The sandbox's own resolver: answers every name lookup at once, and remembers the names.

With the network off (or only the allowlist proxy as a way out) nothing a lookup returns can
be reached, so a lookup that waits, or fails as "temporary", only makes tools retry for tens
of seconds and say nothing useful. The runner makes UDP and TCP sockets on port 53 of the
sandbox's own loopback (127.0.0.1, and ::1 where there is IPv6) and hands them to the host,
like the proxy's; the plan points the sandbox's ``/etc/resolv.conf`` at them
(``offline.RESOLV_CONF``). This module serves them from a thread of the host: every query
gets NXDOMAIN (the name does not resolve here) at once, and the names asked are kept, so
the report can say which host the command tried and which flag would allow it.

Everything here comes from the command: packets are parsed defensively (sizes checked
before every read, no compression pointers followed, names length-checked), answers are never
larger than the query plus a header, and what is kept is bounded (:class:`NameLog`). The
sockets live in the sandbox's network namespace, so nothing outside it can reach them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PORT = 53
HEADER = struct.Struct("!HHHHHH")
MAX_PACKET = 1232  # a query is far smaller; anything larger is dropped
MAX_NAME = 255  # wire length of a name, RFC 1035
MAX_LABEL = 63
QR = 0x8000
RD = 0x0100
RA = 0x0080
OPCODE_QUERY = 0
CLASS_IN = 1
CLASS_ANY = 255
FORMERR = 1
NXDOMAIN = 3
NOTIMP = 4
# Lookups that mean "where is this host" (A, AAAA, SVCB, HTTPS, ANY): the names kept.
HOST_TYPES = frozenset({1, 28, 64, 65, 255})
_LABEL_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")

LOG_SIZE = 256  # names kept per session (the oldest go first)
# A name repeated among the last this many kept is not kept again, unless a command took its
# mark since: that command would not see the earlier entry.
RECENT = 16
TCP_MAX = 32  # TCP connections served at once; more are closed at once
TCP_IDLE = 2.0  # seconds a TCP connection may stay silent
TCP_QUERIES = 16  # queries per TCP connection, then it is closed
UDP_BURST = 64  # datagrams read per wake-up before looking at the other sockets


def resolver_sockets() -> list[socket.socket]:
    """UDP and listening TCP sockets on port 53 of 127.0.0.1 and ::1, made by the runner in
    the sandbox's own network namespace (it may bind port 53 there). Best effort: one that
    cannot be made (no IPv6) is left out; without any, a lookup still fails at once (nothing
    listens), only unrecorded."""
    socks: list[socket.socket] = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(family, kind)
            try:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((address, PORT))
                if kind == socket.SOCK_STREAM:
                    s.listen(64)
            except OSError:
                s.close()
                continue
            socks.append(s)
    return socks


@dataclass(frozen=True)
class Query:
    """A parsed question: ``name`` in lower case without the final dot ("" for the root), or
    None when it is not a host name (bytes a host name cannot hold)."""

    ident: int
    flags: int
    question: bytes  # the question section as sent (name, type, class)
    name: str | None
    qtype: int
    qclass: int


def parse_query(data: bytes) -> Query | int | None:
    """``data`` as a DNS query; an rcode (FORMERR, NOTIMP) when it is a query we only refuse;
    None when it deserves no answer at all (too short, a response, too large)."""
    if len(data) < HEADER.size or len(data) > MAX_PACKET:
        return None
    ident, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if flags & QR:
        return None  # a response: answering it could start a loop
    if (flags >> 11) & 0xF != OPCODE_QUERY:
        return NOTIMP
    if qdcount != 1:
        return FORMERR
    got = _read_name(data, HEADER.size)
    if got is None or got[1] + 4 > len(data):
        return FORMERR
    labels, pos = got
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    question = data[HEADER.size : pos + 4]
    return Query(ident, flags, question, _name(labels), qtype, qclass)


def _read_name(data: bytes, pos: int) -> tuple[list[bytes], int] | None:
    """The labels of the name at ``pos`` and where it ends; None when it is malformed, runs
    past the end or the name limit, or uses compression (never needed in a question)."""
    start = pos
    labels: list[bytes] = []
    while pos < len(data) and pos - start <= MAX_NAME:
        length = data[pos]
        if length == 0:
            return labels, pos + 1
        if length > MAX_LABEL:  # a compression pointer (0xC0) or a reserved form
            return None
        label = data[pos + 1 : pos + 1 + length]
        if len(label) != length:
            return None
        labels.append(label)
        pos += 1 + length
    return None


def _name(labels: list[bytes]) -> str | None:
    lowered = [label.lower() for label in labels]
    if any(not set(label) <= _LABEL_BYTES for label in lowered):
        return None
    return ".".join(label.decode("ascii") for label in lowered)


def reply(query: Query | None, ident: int, flags: int, rcode: int) -> bytes:
    """The answer: the header (the query's id, opcode and RD kept), the question echoed when
    there is one, no records."""
    out_flags = QR | (flags & (0xF << 11)) | (flags & RD) | RA | rcode
    if query is None:
        return HEADER.pack(ident, out_flags, 0, 0, 0, 0)
    return HEADER.pack(ident, out_flags, 1, 0, 0, 0) + query.question


def answer(data: bytes) -> tuple[bytes | None, str | None]:
    """What to send back for ``data`` (None: nothing), and the host name it asked about that
    is worth keeping (None: none)."""
    parsed = parse_query(data)
    if parsed is None:
        return None, None
    if isinstance(parsed, int):
        ident, flags = HEADER.unpack_from(data)[:2]
        return reply(None, ident, flags, parsed), None
    kept = None
    if parsed.name and parsed.qtype in HOST_TYPES and parsed.qclass in (CLASS_IN, CLASS_ANY):
        kept = parsed.name
    return reply(parsed, parsed.ident, parsed.flags, NXDOMAIN), kept


class NameLog:
    """The names the session's commands looked up, in order, numbered; at most ``size`` kept.
    A command takes a :meth:`mark` when it starts and reads :meth:`since` it when it ends
    (with commands running at once in one session, theirs may be among them)."""

    def __init__(self, size: int = LOG_SIZE, keep: Callable[[str], bool] | None = None) -> None:
        # ``keep``: which names are worth a report (the others never take a place, so a flood
        # of them cannot push a command's own out of the log).
        self._keep = keep
        self._lock = threading.Lock()
        self._entries: collections.deque[tuple[int, str]] = collections.deque(maxlen=size)
        self._recent: dict[str, int] = {}  # name -> its number, the last RECENT kept
        self._next = 0
        self._marked = 0  # the latest mark handed out

    def add(self, name: str) -> None:
        if self._keep is not None and not self._keep(name):
            return
        with self._lock:
            if self._recent.get(name, -1) >= self._marked:
                return  # every command that took a mark sees it already
            self._recent.pop(name, None)
            self._recent[name] = self._next
            if len(self._recent) > RECENT:
                del self._recent[next(iter(self._recent))]
            self._entries.append((self._next, name))
            self._next += 1

    def mark(self) -> int:
        with self._lock:
            self._marked = self._next
            return self._next

    def since(self, mark: int) -> tuple[list[str], bool]:
        """The distinct names kept from ``mark`` on, and whether some were lost (pushed out by
        later ones)."""
        with self._lock:
            lost = bool(self._entries) and self._entries[0][0] > mark
            names = [n for seq, n in self._entries if seq >= mark]
        return list(dict.fromkeys(names)), lost


class _Stream:
    """One TCP client: what it sent so far, when it must have said more, how many answered."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.deadline = time.monotonic() + TCP_IDLE
        self.answered = 0


class DnsStub:
    """Serves ``socks`` (UDP and listening TCP sockets made in the sandbox's namespace) from a
    thread of its own until :meth:`close`; the names asked go to :attr:`names`."""

    def __init__(
        self, socks: Sequence[socket.socket], keep: Callable[[str], bool] | None = None
    ) -> None:
        self.names = NameLog(keep=keep)
        self._socks = list(socks)
        self._streams: dict[int, _Stream] = {}
        self._sel = selectors.DefaultSelector()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._sel.register(self._stop_r, selectors.EVENT_READ, None)
        for s in self._socks:
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, "listener")
        self.thread = threading.Thread(target=self._main, name="ringfence-dns", daemon=True)
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self.thread is not threading.current_thread():
            self.thread.join(5)
        for stream in list(self._streams.values()):
            stream.sock.close()
        self._streams.clear()
        for s in self._socks:
            s.close()
        self._sel.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def _main(self) -> None:
        while True:
            timeout = None
            if self._streams:
                first = min(s.deadline for s in self._streams.values())
                timeout = max(0.0, first - time.monotonic())
            try:
                events = self._sel.select(timeout)
            except OSError:
                return
            for key, _mask in events:
                if key.fileobj == self._stop_r:
                    return
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if key.data == "listener" and sock.type == socket.SOCK_DGRAM:
                        self._datagrams(sock)
                    elif key.data == "listener":
                        self._accept(sock)
                    else:
                        self._stream(sock)
                except Exception:  # one bad client never stops the others
                    if key.data != "listener":
                        self._drop(sock)
            self._expire()

    def _datagrams(self, sock: socket.socket) -> None:
        for _ in range(UDP_BURST):
            try:
                data, peer = sock.recvfrom(MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket, say
            out, name = answer(data)
            if name is not None:
                self.names.add(name)
            if out is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(out, peer)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        if len(self._streams) >= TCP_MAX:
            conn.close()
            return
        conn.setblocking(False)
        self._streams[conn.fileno()] = _Stream(conn)
        self._sel.register(conn, selectors.EVENT_READ, "stream")

    def _stream(self, sock: socket.socket) -> None:
        stream = self._streams.get(sock.fileno())
        if stream is None:
            return
        try:
            data = sock.recv(max(1, MAX_PACKET + 2 - len(stream.buffer)))
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._drop(sock)
            return
        stream.buffer += data
        stream.deadline = time.monotonic() + TCP_IDLE
        if not self._answer_stream(stream):
            self._drop(sock)

    def _answer_stream(self, stream: _Stream) -> bool:
        """Answer every whole message ``stream`` holds; False when it must be closed."""
        while len(stream.buffer) >= 2:
            length = int.from_bytes(stream.buffer[:2], "big")
            if length > MAX_PACKET:
                return False
            if len(stream.buffer) < 2 + length:
                return True
            message, stream.buffer = stream.buffer[2 : 2 + length], stream.buffer[2 + length :]
            out, name = answer(message)
            if name is not None:
                self.names.add(name)
            stream.answered += 1
            if out is not None:
                framed = len(out).to_bytes(2, "big") + out
                if stream.sock.send(framed) != len(framed):  # a client that does not read
                    return False
            if stream.answered >= TCP_QUERIES:
                return False
        return True

    def _expire(self) -> None:
        now = time.monotonic()
        for stream in [s for s in self._streams.values() if s.deadline <= now]:
            self._drop(stream.sock)

    def _drop(self, sock: socket.socket) -> None:
        self._streams.pop(sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)
        sock.close()
