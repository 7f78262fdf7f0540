"""The sandbox's resolver (network/dns_stub.py), without a sandbox: what it answers to well
formed and hostile packets, what it keeps, and that it serves UDP and TCP sockets at once.
The sockets here are bound to 127.0.0.1 on ports the kernel picks."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.network import dns_stub
from ringfence.network.dns_stub import FORMERR, NOTIMP, NXDOMAIN, DnsStub, NameLog, answer


def query(name: str, qtype: int = 1, *, ident: int = 0x4242, flags: int = 0x0100) -> bytes:
    q = struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0)
    for label in name.split(".") if name else []:
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def header(reply: bytes) -> tuple[int, int, int, int]:
    ident, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    return ident, flags, qd, an


def test_a_lookup_gets_nxdomain_with_its_question_and_the_name_is_kept() -> None:
    q = query("PyPI.org", 28)
    out, name = answer(q)
    assert out is not None
    ident, flags, qd, an = header(out)
    assert (ident, qd, an) == (0x4242, 1, 0)
    assert flags & 0x8000 and flags & 0x0100 and flags & 0xF == NXDOMAIN
    assert out[12:] == q[12:]  # the question echoed as asked
    assert name == "pypi.org"


@pytest.mark.parametrize(
    ("data", "rcode"),
    [
        (query("a.example", flags=0x0100 | (2 << 11)), NOTIMP),  # a status request
        (struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\0\0\1\0\1" * 2, FORMERR),  # 2 questions
        (query("a.example")[:-2], FORMERR),  # cut in the type/class
        (struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1", FORMERR),  # pointer
        (struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab", FORMERR),  # label past the end
        (
            struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1",
            FORMERR,
        ),
    ],
)
def test_malformed_queries_get_an_error_and_keep_nothing(data: bytes, rcode: int) -> None:
    out, name = answer(data)
    assert out is not None and name is None
    _, flags, qd, _ = header(out)
    assert flags & 0xF == rcode and qd == 0 and len(out) == 12


@pytest.mark.parametrize(
    "data",
    [b"", b"\0" * 11, query("x.example", flags=0x8100), b"\0" * (dns_stub.MAX_PACKET + 1)],
)
def test_no_answer_to_responses_and_runts(data: bytes) -> None:
    assert answer(data) == (None, None)


def test_only_host_lookups_of_host_names_are_kept() -> None:
    assert answer(query("example.com", 16))[1] is None  # TXT
    assert answer(query("7.0.0.127.in-addr.arpa", 12))[1] is None  # PTR
    assert answer(query("exa mple.com"))[1] is None  # not a host name
    assert answer(query(""))[1] is None  # the root
    assert answer(query("_x.example.com", 65))[1] == "_x.example.com"  # HTTPS


@given(st.binary(max_size=600))
def test_any_bytes_get_a_bounded_answer_or_none(data: bytes) -> None:
    out, name = answer(data)
    if out is not None:
        assert len(out) <= max(12, len(data))
    if name is not None:
        assert len(name) <= 255 and name == name.lower()


def test_the_log_is_bounded_deduplicated_and_read_from_a_mark() -> None:
    log = NameLog(size=4)
    start = log.mark()
    for n in ("a.com", "a.com", "b.com", "a.com"):
        log.add(n)
    assert log.since(start) == (["a.com", "b.com"], False)
    middle = log.mark()
    for n in ("c.com", "d.com", "e.com", "f.com"):
        log.add(n)
    assert log.since(middle) == (["c.com", "d.com", "e.com", "f.com"], False)
    assert log.since(start) == (["c.com", "d.com", "e.com", "f.com"], True)  # a, b are gone


def test_a_name_looked_up_again_is_seen_by_a_later_command() -> None:
    """A command that took its mark after a name was kept still sees that name when it
    looks it up again (a repeat is dropped only when every mark already covers it)."""
    log = NameLog()
    first = log.mark()
    log.add("pypi.org")
    assert log.since(first) == (["pypi.org"], False)
    second = log.mark()
    log.add("pypi.org")
    log.add("pypi.org")
    assert log.since(second) == (["pypi.org"], False)
    assert log.since(first) == (["pypi.org"], False)
    assert log.mark() == second + 1


def _bound(kind: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return s


def test_the_stub_serves_udp_and_tcp_and_drops_bad_streams() -> None:
    udp, tcp = _bound(socket.SOCK_DGRAM), _bound(socket.SOCK_STREAM)
    uaddr, taddr = udp.getsockname(), tcp.getsockname()
    stub = DnsStub([udp, tcp])
    try:
        mark = stub.names.mark()
        silent = socket.create_connection(taddr)  # says nothing: must not hold up the others
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(2)
        c.sendto(query("udp.example.com"), uaddr)
        assert header(c.recv(600))[1] & 0xF == NXDOMAIN
        t = socket.create_connection(taddr, timeout=2)
        m = query("tcp.example.com", 28)
        t.sendall(len(m).to_bytes(2, "big") + m + len(m).to_bytes(2, "big") + m)
        got = b""
        while len(got) < 2 * (2 + len(m)):
            got += t.recv(600)
        assert header(got[2:])[1] & 0xF == NXDOMAIN
        big = socket.create_connection(taddr, timeout=2)
        big.sendall(b"\xff\xff")  # a 64 KiB message announced: closed at once
        assert big.recv(10) == b""
        assert stub.names.since(mark) == (["udp.example.com", "tcp.example.com"], False)
        silent.settimeout(dns_stub.TCP_IDLE + 2)
        started = time.monotonic()
        assert silent.recv(10) == b""  # closed once idle
        assert time.monotonic() - started < dns_stub.TCP_IDLE + 1
    finally:
        stub.close()
