"""The session wire format and the fast path's argument parsing (no sandbox needed)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from ringfence import session_client, session_wire
from ringfence.forwarded import FORWARDED


def test_a_request_round_trips_including_non_utf8_bytes() -> None:
    env = {b"PATH": b"/bin", b"ODD": b"\xff\xfe", b"EMPTY": b"", b"EQ": b"a=b"}
    argv = [b"printf", b"%s\n", b"\xe9t\xe9", b""]
    path = [b"/venv/bin", b"/usr/lib/python3.11", b"/odd/\xff"]
    payload = session_wire.encode_request(b"/w/\xff", 2.5, argv, env, path)
    req = session_wire.decode_request(payload)
    assert (req.cwd, req.timeout, req.argv, req.env) == (b"/w/\xff", 2.5, argv, env)
    assert req.path == path
    bare = session_wire.decode_request(session_wire.encode_request(b"/", None, [b"x"], {}, []))
    assert (bare.timeout, bare.path, bare.argv) == (None, [], [b"x"])


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "different ringfence versions"),
        (b"1\0/\0\x000\x001\0true", "different ringfence versions"),
        (b"3\0/\0\x000\x001\0true", "different ringfence versions"),
        (b"2\0/\0soon\x000\x001\0true", "bad request field"),
        (b"2\0/\0-1\x000\x001\0true", "positive"),
        (b"2\0/\0inf\x000\x001\0true", "positive"),
        (b"2\0/\0nan\x000\x001\0true", "positive"),
        (b"2\0/\0\x009\x001\0true", "bad path count"),
        (b"2\0/\0\x001025\0" + b"/p\0" * 1025 + b"1\0true", "bad path count"),
        (b"2\0/\0\x00x\x001\0true", "bad request field"),
        (b"2\0/\0\x001\0/p\x005\0true", "bad argument count"),
        (b"2\0/\0\x000\x000\0true", "bad argument count"),
        (b"2\0/\0\x000\x001\0true\0NOEQUALS", "bad environment entry"),
        (b"2\0/\0\x000\x001\0\0A=b", "command name is empty"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(payload: bytes, why: str) -> None:
    with pytest.raises(session_wire.WireError, match=why):
        session_wire.decode_request(payload)


def test_a_nul_byte_cannot_smuggle_an_extra_field() -> None:
    with pytest.raises(session_wire.WireError, match="NUL"):
        session_wire.encode_request(b"/", None, [b"echo", b"a\0b"], {}, [])
    with pytest.raises(session_wire.WireError, match="NUL"):
        session_wire.encode_request(b"/", None, [b"echo"], {}, [b"/a\0b"])


def test_frames_cross_a_stream_in_pieces_with_their_fds() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        big = b"x" * 300_000  # more than the socket buffer: several send()s and recv()s

        def send() -> None:
            session_wire.send_all(a, session_wire.frame(b"R", big), (r, w, w))
            session_wire.send_all(a, session_wire.frame(b"S", b"15"))
            a.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        reader = session_wire.FrameReader(b)
        fds: list[int] = []
        assert reader.read(fds) == (b"R", big)
        assert len(fds) == 3
        os.write(fds[1], b"via passed fd")
        assert os.read(r, 100) == b"via passed fd"
        for fd in fds:
            os.close(fd)
        assert reader.read() == (b"S", b"15")
        assert reader.read() is None
        sender.join()
    finally:
        for s in (a, b):
            s.close()
        os.close(r)
        os.close(w)


def test_a_truncated_or_oversized_frame_is_an_error() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(b"R\x00\x00\x00\x09abc")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(session_wire.WireError, match="ended inside a frame"):
            session_wire.FrameReader(b).read()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(b"R\xff\xff\xff\xff")
        with pytest.raises(session_wire.WireError, match="too large"):
            session_wire.FrameReader(b).read()


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("default", True),
        ("a.b_c-1", True),
        ("", False),
        ("../x", False),
        ("a/b", False),
        (".hidden", False),
        ("-x", False),
        ("x" * 65, False),
    ],
)
def test_session_names_are_plain_file_names(name: str, ok: bool) -> None:
    assert (session_wire.check_name(name) is None) is ok


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--session", "s", "--", "ls", "-l"], ("s", None, ["ls", "-l"])),
        (["run", "--session=s", "--timeout=2", "--", "x"], ("s", 2.0, ["x"])),
        (["run", "--timeout", "0.5", "--session", "s", "--", "x"], ("s", 0.5, ["x"])),
        (["run", "--", "ls"], None),  # no session: the full CLI
        (["run", "--session", "s", "--network", "on", "--", "x"], None),  # a policy flag
        (["run", "--session", "s", "--"], None),  # no command
        (["run", "--session", "s", "--timeout", "-1", "--", "x"], None),
        (["run", "--session", "s", "--timeout", "nan", "--", "x"], None),
        (["run", "--session", "../s", "--", "x"], None),
        (["run", "--session", "s", "ls"], None),  # no "--": the full CLI explains
        (["explain", "--session", "s", "--", "x"], None),
    ],
)
def test_the_fast_path_takes_only_plain_session_calls(
    argv: list[str], expected: tuple[str, float | None, list[str]] | None
) -> None:
    assert session_client.fast_args(argv) == expected


def test_the_client_forwards_the_same_signals_as_the_runner() -> None:
    assert session_client.FORWARDED is FORWARDED  # one list for the fast path and the CLI
    assert {signal.Signals(s).name for s in FORWARDED} >= {"SIGINT", "SIGTERM", "SIGWINCH"}


def test_the_session_directory_is_never_inside_a_sandbox_view() -> None:
    assert session_wire.session_dir({"XDG_RUNTIME_DIR": "/proc"}) == "/proc/ringfence/sessions"
    assert session_wire.session_dir({}) == f"/tmp/ringfence-{os.getuid()}/sessions"
    assert session_wire.session_dir({"RINGFENCE_SESSION_DIR": "/x"}) == "/x"


def test_a_session_peer_is_judged_by_its_pidfd_and_a_gone_one_is_refused(
    tmp_path: Path,
) -> None:
    """SO_PEERPIDFD names the peer itself: once it has exited, its pid number proves
    nothing (it may belong to another process by now), and the call is refused."""
    import socket

    from ringfence import session_server

    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    try:
        with socket.socket(socket.AF_UNIX) as c:  # a living peer: this process
            c.connect(path)
            conn, _ = srv.accept()
            with conn:
                assert session_server.peer_refusal(conn) is None
        pid = os.fork()
        if pid == 0:  # a peer that connects and is gone before the server looks
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(path)
            os._exit(0)
        os.waitpid(pid, 0)
        conn, _ = srv.accept()
        with conn:
            if session_server._peer_pidfd(conn) is None:
                pytest.skip("no SO_PEERPIDFD on this kernel (Linux < 6.5)")
            assert session_server.peer_refusal(conn) == "the caller has exited; refused"
    finally:
        srv.close()


def test_a_peer_more_confined_than_the_server_is_refused(tmp_path: Path) -> None:
    """A sandbox with reduced isolation shares our user namespace; its no_new_privs (read
    from its /proc status) gives it away."""
    import ctypes
    import socket

    from ringfence import session_server

    mine = session_server._confinement("self")
    assert mine is not None and all(isinstance(x, int) for x in mine)
    if mine[0]:
        pytest.skip("the test process runs with no_new_privs already")
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    go_r, go_w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # a peer with no_new_privs, alive until the parent has looked
            code = 1
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
                    with socket.socket(socket.AF_UNIX) as c:
                        c.connect(path)
                        os.read(go_r, 1)
                    code = 0
            finally:
                os._exit(code)
        conn, _ = srv.accept()
        with conn:
            assert session_server._confinement(str(pid)) == (1, mine[1])
            why = session_server.peer_refusal(conn)
        os.write(go_w, b"x")
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert why == "a command inside a sandbox may not use a session (it is more confined)"
    finally:
        srv.close()
        os.close(go_r)
        os.close(go_w)
