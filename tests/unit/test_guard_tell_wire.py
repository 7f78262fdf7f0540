"""The guard's own line to the host (guard_tell.py): what each end writes is what the host
reads, a name is never cut, and a host that stops reading makes the guard fail, not wait."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.platforms.linux import guard_tell, protocol

NAMES = st.lists(
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300)
    | st.binary(min_size=1, max_size=64).map(lambda b: os.fsdecode(b"/w/" + b)),
    max_size=8,
)


@given(st.lists(st.tuples(NAMES.map(lambda n: n[0] if n else "/w/.git"), st.booleans())))
def test_what_the_pipe_carries_is_what_the_host_reads(events: list[tuple[str, bool]]) -> None:
    r, w = os.pipe()
    try:
        tell = guard_tell.PipeTell(w)
        for name, told in events:
            tell(name, told)
        os.close(w)
        w = -1
        raw = b""
        while chunk := os.read(r, 65536):
            raw += chunk
        assert guard_tell.read_told(raw) == events
        assert guard_tell.read_told(raw[:-1]) == events[:-1]  # a cut-off last one is dropped
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_name_taken_back_is_no_longer_told_until_told_again() -> None:
    events = [("/w/a/.git", True), ("/w/b/.git", True), ("/w/a/.git", False)]
    assert guard_tell.still_told(events) == {"/w/b/.git"}
    assert guard_tell.still_told([*events, ("/w/a/.git", True)]) == {"/w/a/.git", "/w/b/.git"}
    records = [{"kind": "git_pending" if told else "git_untold", "path": p} for p, told in events]
    records.insert(1, {"kind": "refused_pointer", "path": "/w/c/.git"})
    assert guard_tell.pending_of(records) == {"/w/b/.git"}


def test_the_session_message_names_the_running_command() -> None:
    host, init = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with host, init:
        page = guard_tell.new_page()
        tell = guard_tell.SessionTell(os.dup(init.fileno()), page)
        guard_tell.set_command(page, 7)
        tell("/w/sub/.git")
        guard_tell.set_command(page, 8)
        tell("/w/x/" + "d" * 5000)  # whole, however long
        tell("/w/sub/.git", False)
        first = protocol.recv(host)
        second = protocol.recv(host)
        assert first == ({"id": 7, "pending": "/w/sub/.git", "nfds": 0}, [])
        assert second is not None and second[0]["id"] == 8
        assert second[0]["pending"] == "/w/x/" + "d" * 5000
        assert protocol.recv(host) == ({"id": 8, "untold": "/w/sub/.git", "nfds": 0}, [])
        assert init.getblocking()  # the init's own sends stay blocking
        tell.sock.close()


def test_a_host_that_stops_reading_fails_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_tell, "TELL_WAIT", 0.2)
    r, w = os.pipe()
    try:
        tell = guard_tell.PipeTell(w)
        with pytest.raises(guard_tell.TellError):
            for i in range(100_000):  # far more than a pipe holds
                tell(f"/w/{i:06d}/.git")
    finally:
        os.close(r)
        os.close(w)


def test_a_gone_host_fails_the_guard() -> None:
    host, init = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with init:
        tell = guard_tell.SessionTell(os.dup(init.fileno()), guard_tell.new_page())
        host.close()
        with pytest.raises(guard_tell.TellError, match="cannot tell the host"):
            tell("/w/.git")
        tell.sock.close()
