"""``--publish``: the policy field, its layering, and the host's relay against real sockets on
127.0.0.1 (the socket maker runs in a thread here, so "inside" is the host's own loopback;
tests/sandbox/test_publish.py runs it across a real network namespace)."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence import Network, Policy, PolicyError, PublishError
from ringfence.cli.flags import resolve_flags
from ringfence.cli.parser import build_parser
from ringfence.network import publish, publish_maker
from ringfence.network.publish import PublishedPorts
from ringfence.policy import config
from ringfence.policy.config import ConfigError
from ringfence.policy.model import Isolation, parse_publish

WS = "/home/dev/repo"

# -- the policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "pair"),
    [
        (8080, (8080, 8080)),
        ("8080", (8080, 8080)),
        ("18080:3000", (18080, 3000)),
        (" 1:2 ", (1, 2)),
    ],
)
def test_publish_entries(entry: int | str, pair: tuple[int, int]) -> None:
    assert parse_publish(entry) == pair


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("127.0.0.1:80:80", "give [HOST_PORT:]PORT"),
        ("0.0.0.0:80", "give [HOST_PORT:]PORT"),
        ("localhost:80", "give [HOST_PORT:]PORT"),
        ("80:", "give [HOST_PORT:]PORT"),
        ("\uff18\uff10", "give [HOST_PORT:]PORT"),  # fullwidth digits are not a port
        (True, "give [HOST_PORT:]PORT"),
        (8.0, "give [HOST_PORT:]PORT"),
        ("0", "from 1 to 65535"),
        ("65536", "from 1 to 65535"),
        ("1:0000000000000080", "from 1 to 65535"),
    ],
)
def test_bad_publish_entries_are_refused_by_name(entry: object, why: str) -> None:
    with pytest.raises(PolicyError, match=f"publish {entry!r}: .*{why}".replace("[", r"\[")):
        Policy(workspace=WS, publish=(entry,)).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"publish": ("8080", "8080:3000")}, "host port 8080 is published twice"),
        ({"publish": tuple(range(1000, 1033))}, "at most 32 published ports"),
        ({"publish": ("8080",), "network": Network.ON}, "with the network on"),
        ({"publish": ("8080",), "mode": "full-access"}, "with the network on"),
        ({"publish": ("8080:5432",), "expose_ports": (5432,)}, "port 5432 is both exposed"),
        ({"publish": ("5432:80",), "expose_ports": (5432,)}, "port 5432 is both exposed"),
    ],
)
def test_publish_is_checked_against_the_rest_of_the_policy(change: dict, why: str) -> None:  # type: ignore[type-arg]
    from ringfence.policy.model import Mode

    if change.get("mode"):
        change = {**change, "mode": Mode(change["mode"])}
    with pytest.raises(PolicyError, match=why):
        Policy(workspace=WS, **change).validate()


def test_the_linux_plan_carries_the_pairs_and_refuses_what_it_cannot_relay() -> None:
    from test_linux_golden import _facts

    from ringfence.errors import UnsupportedError
    from ringfence.platforms.linux.plan import compile_linux

    plan = compile_linux(Policy(workspace=WS, publish=("9000:3000", 8080)), _facts(), cwd=WS)
    assert plan.publish == ((9000, 3000), (8080, 8080)) and "net" in plan.namespaces
    with pytest.raises(PolicyError, match="port 3128 inside is the proxy's"):
        compile_linux(
            Policy(workspace=WS, network=Network.ALLOWLIST, publish=("9000:3128",)),
            _facts(),
            cwd=WS,
        )
    with pytest.raises(UnsupportedError, match="--publish needs the sandbox's own network"):
        compile_linux(
            Policy(workspace=WS, isolation=Isolation.REDUCED, publish=(8080,)), _facts(), cwd=WS
        )


# -- flags and config files ----------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(config, "MANAGED_PATH", str(tmp_path / "managed.toml"))
    monkeypatch.setattr(config.load_ceiling, "__defaults__", (str(tmp_path / "managed.toml"),))
    (tmp_path / "xdg" / "ringfence").mkdir(parents=True)
    (tmp_path / "ws").mkdir()
    return tmp_path


def _ns(home: Path, *flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--workspace", str(home / "ws"), *flags, "--", "x"])


def test_flags_and_the_user_config_add_up(home: Path) -> None:
    (home / "xdg" / "ringfence" / "config.toml").write_text('publish = [3000, "18080:8080"]\n')
    r = resolve_flags(_ns(home, "--publish", "5173", "--publish", "9000:9001"))
    assert r.policy.publish == ("3000", "18080:8080", "5173", "9000:9001")
    assert r.settings.sources["publish"].endswith("+ flag")


def test_the_managed_ceiling_can_forbid_publishing(home: Path) -> None:
    (home / "managed.toml").write_text("forbid_publish = true\n")
    assert resolve_flags(_ns(home)).policy.publish == ()
    with pytest.raises(ConfigError, match="forbid_publish forbids publishing"):
        resolve_flags(_ns(home, "--publish", "8080"))
    from ringfence.session import Session

    with pytest.raises(ConfigError, match="forbid_publish"):
        Session(Policy(workspace=str(home / "ws"), publish=(8080,)))


# -- the host's relay ----------------------------------------------------------------------


class Maker:
    """The sandbox's socket maker (its real loop), in a thread of this process."""

    def __init__(self) -> None:
        self.host_end, own = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        threading.Thread(target=_run_maker, args=(own,), daemon=True).start()


def _run_maker(own: socket.socket) -> None:
    with own:
        publish_maker.make_sockets(own)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Inside:
    """The "server inside": on 127.0.0.1 (or ::1), echoing with a prefix, holding each
    connection open until its client is done."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family)
        self.sock.bind((address, 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.open = 0
        self.most = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.most = max(self.most, self.open)
        with conn:
            while data := conn.recv(65536):
                conn.sendall(b"inside:" + data)
        with self.lock:
            self.open -= 1


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Inside, int, PublishedPorts]]:
    inside = Inside()
    host_port = _free_port()
    ports = PublishedPorts([(host_port, inside.port)])
    ports.start(Maker().host_end)
    yield inside, host_port, ports
    ports.close()
    inside.sock.close()


def _talk(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # the half-close reaches the server, which then ends
        out = b""
        while data := s.recv(65536):
            out += data
        return out


def _closed_at_once(port: int) -> bool:
    """The relay ended the connection without an answer (an end of stream, or a reset since
    what the client sent was never read)."""
    try:
        return _talk(port, b"x") == b""
    except OSError:
        return True


def test_the_relay_carries_both_ways_and_passes_the_half_close_on(
    relay: tuple[Inside, int, PublishedPorts],
) -> None:
    _, host_port, _ = relay
    assert _talk(host_port, b"hello") == b"inside:hello"
    big = bytes(range(256)) * 4096  # 1 MiB: more than any buffer on the way
    assert _talk(host_port, big).replace(b"inside:", b"") == big
    if socket.has_ipv6:
        with socket.socket(socket.AF_INET6) as probe:
            try:
                probe.bind(("::1", 0))
            except OSError:
                return
        assert _talk(host_port, b"six", host="::1") == b"inside:six"


def test_a_server_on_ipv6_inside_is_reached_when_nothing_listens_on_ipv4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        inside = Inside("::1")
    except OSError:
        pytest.skip("no ::1 here")
    host_port = _free_port()
    ports = PublishedPorts([(host_port, inside.port)])
    ports.start(Maker().host_end)
    try:
        assert _talk(host_port, b"x") == b"inside:x"
    finally:
        ports.close()
        inside.sock.close()


def test_connections_beyond_the_bound_wait_in_the_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publish, "MAX_CONNECTIONS", 2)
    inside = Inside()
    host_port = _free_port()
    ports = PublishedPorts([(host_port, inside.port)])
    ports.start(Maker().host_end)
    held = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", host_port), timeout=10)
            s.sendall(b"x")
            held.append(s)
        assert held[0].recv(100) == b"inside:x" and held[1].recv(100) == b"inside:x"
        held[2].settimeout(0.5)
        with pytest.raises(TimeoutError):  # accepted by the kernel, not yet by the relay
            held[2].recv(100)
        held[0].close()
        held[2].settimeout(10)
        assert held[2].recv(100) == b"inside:x"  # a slot came free
        assert inside.most == 2
    finally:
        for s in held:
            s.close()
        ports.close()
        inside.sock.close()


def test_a_taken_port_is_a_publish_error_naming_it() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(PublishError) as e:
            PublishedPorts([(_free_port(), 80), (port, 3000)])
    assert e.value.host_port == port
    assert str(e.value) == (
        f"--publish {port}:3000: the host's 127.0.0.1:{port} is in use by another program; "
        "nothing was run. Publish on another host port: --publish HOST_PORT:3000"
    )


def test_the_listeners_are_on_the_loopback_only() -> None:
    port = _free_port()
    ports = PublishedPorts([(port, 80)])
    try:
        addresses = {s.getsockname()[0] for s, _ in ports.listeners}
        assert addresses <= {"127.0.0.1", "::1"} and "127.0.0.1" in addresses
    finally:
        ports.close()
    with socket.socket() as again:  # closed: the port is free
        again.bind(("127.0.0.1", port))


def _fake_maker(reply: bytes, fd_of: socket.socket | None) -> socket.socket:
    """A maker that answers every request with ``reply`` and ``fd_of``'s descriptor."""
    host_end, own = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def serve() -> None:
        with own:
            while own.recv(16):
                if fd_of is None:
                    own.send(reply)
                else:
                    socket.send_fds(own, [reply], [fd_of.fileno()])

    threading.Thread(target=serve, daemon=True).start()
    return host_end


@pytest.mark.parametrize("kind", ["unix", "udp", "connected", "listening", "bad reply"])
def test_anything_but_a_fresh_tcp_socket_from_the_maker_is_refused(kind: str) -> None:
    """Fail closed: the relay connects only a fresh TCP socket, whatever it is handed."""
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    given: socket.socket
    if kind == "unix":
        given = socket.socket(socket.AF_UNIX)
    elif kind == "udp":
        given = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif kind == "connected":
        given = socket.create_connection(other.getsockname())
    elif kind == "listening":
        given = socket.socket()
        given.bind(("127.0.0.1", 0))
        given.listen()
    else:
        given = socket.socket()
    assert publish._fresh_tcp(given, socket.AF_INET) is (kind == "bad reply")
    inside = Inside()
    host_port = _free_port()
    ports = PublishedPorts([(host_port, inside.port)])
    ports.start(_fake_maker(b"?" if kind == "bad reply" else b"+", given))
    try:
        assert _closed_at_once(host_port)
        assert inside.most == 0
    finally:
        ports.close()
        for s in (given, other, inside.sock):
            s.close()


def test_when_the_maker_is_gone_clients_are_closed_and_close_is_prompt() -> None:
    host_end, own = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    own.close()
    inside = Inside()
    host_port = _free_port()
    ports = PublishedPorts([(host_port, inside.port)])
    ports.start(host_end)
    try:
        assert _closed_at_once(host_port) and _closed_at_once(host_port)
    finally:
        started = time.monotonic()
        ports.close()
        assert time.monotonic() - started < 5
        inside.sock.close()
