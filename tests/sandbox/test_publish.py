"""``--publish``, for real: a server inside the sandbox, reached from the host's loopback.

The server runs confined (its first line is the ``Confinement`` proof) and answers each
connection with the port it listens on, this test's nonce, the peer address it saw and what it
received: the peer 127.0.0.1 (or ::1) is the sandbox's own loopback, where the relay connects.
Every connection here goes to 127.0.0.1 or ::1 only.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import Confinement, Runner

from ringfence import Policy, PublishError, Session

pytestmark = pytest.mark.sandbox

# argv: nonce, connections to serve, host ports to try first (comma separated), then one
# "4:PORT" or "6:PORT" per listener. It reports each try at a host port before it listens.
SERVER = r"""
import errno, selectors, socket, sys
nonce, count, probes, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
for probe in filter(None, probes.split(",")):
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(family)
        s.settimeout(5)
        try:
            s.connect((address, int(probe)))
            print("probe", address, probe, "CONNECTED", flush=True)
        except OSError as e:
            print("probe", address, probe, errno.errorcode.get(e.errno, str(e)), flush=True)
        s.close()
sel = selectors.DefaultSelector()
for spec in specs:
    family, port = spec.split(":")
    s = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::1" if family == "6" else "127.0.0.1", int(port)))
    s.listen()
    sel.register(s, selectors.EVENT_READ, port)
print("ready", flush=True)
for _ in range(count):
    key, _ = sel.select()[0]
    conn, peer = key.fileobj.accept()
    with conn:
        data = conn.recv(1024)
        conn.sendall(f"{key.data} {nonce} {peer[0]} ".encode() + data)
print("served", count, flush=True)
"""


def free_port() -> int:
    """A port free on the host's 127.0.0.1 and ::1 right now."""
    for _ in range(50):
        with socket.socket() as s4:
            s4.bind(("127.0.0.1", 0))
            port: int = s4.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port on the host's loopback")


def nobody_listens(port: int) -> bool:
    """Whether a server could listen on the host's 127.0.0.1:``port`` now (connections of
    the relay may linger in TIME_WAIT, which SO_REUSEADDR passes over, as ringfence does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def fetch(port: int, payload: bytes = b"hello", host: str = "127.0.0.1") -> bytes:
    """Connect from the host, send ``payload``, read until the other side is done."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(20)
        s.connect((host, port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while data := s.recv(65536):
            out += data
        return out


def closed_at_once(port: int) -> bool:
    """A connection to the host's ``port`` that the relay ends without an answer (nothing
    listens inside): an end of stream, or a reset since what the client sent was unread."""
    try:
        return fetch(port) == b""
    except OSError:  # reset, or not connected any more by the time of the half-close
        return True


class Server:
    """``ringfence run [flags] -- python3 -c SERVER ...`` in the background, up to "ready"."""

    def __init__(
        self,
        rf: Runner,
        flags: Sequence[str],
        specs: Sequence[str],
        *,
        count: int,
        probes: Sequence[int] = (),
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.rf = rf
        self.c: Confinement = rf.confinement
        probe_arg = ",".join(str(p) for p in probes)
        argv = ["python3", "-c", SERVER, rf.nonce, str(count), probe_arg, *specs]
        self.proc = rf.popen(
            "run", *flags, "--", *self.c.argv(argv), cwd=cwd or rf.mkdir(), env=env
        )
        assert self.proc.stdout is not None
        self.head = ""
        while True:
            line = self.proc.stdout.readline()
            self.head += line
            if line == "ready\n":
                break
            if not line:
                _, err = self.proc.communicate(timeout=30)
                raise AssertionError(f"the server did not start: {self.head!r} {err!r}")

    def finish(self) -> str:
        """Its output after the proof line, asserted to come from inside."""
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return self.c.strip(self.head + out, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@contextlib.contextmanager
def server(
    rf: Runner, flags: Sequence[str], specs: Sequence[str], **kw: object
) -> Iterator[Server]:
    srv = Server(rf, flags, specs, **kw)  # type: ignore[arg-type]
    try:
        yield srv
    finally:
        srv.kill()


class HostService:
    """Another program's server on the host's 127.0.0.1: it counts who reaches it."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.sendall(b"host service")

    def close(self) -> None:
        self.sock.close()


def listening_addresses(port: int) -> set[str]:
    """Every local address the host's TCP sockets listen on ``port`` with (from /proc)."""
    found: set[str] = set()
    # (each 32-bit word in the host's byte order: 127.0.0.1 and ::1 on little-endian machines)
    v6 = "0" * 24 + "01000000"
    for table, loopback in (("/proc/net/tcp", "0100007F"), ("/proc/net/tcp6", v6)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:
                    found.add("loopback" if address.upper() == loopback else address)
    return found


@pytest.mark.parametrize("network", ["off", "allowlist"])
def test_a_server_inside_is_reached_from_the_hosts_loopback(rf: Runner, network: str) -> None:
    host_port = free_port()
    flags = ["--network", network, "--publish", f"{host_port}:8000"]
    with server(rf, flags, ["4:8000"], count=2) as srv:
        assert listening_addresses(host_port) == {"loopback"}  # nowhere but the loopback
        assert fetch(host_port, b"one") == f"8000 {rf.nonce} 127.0.0.1 one".encode()
        assert fetch(host_port, b"two", host="::1") == f"8000 {rf.nonce} 127.0.0.1 two".encode()
        assert "served 2" in srv.finish()
    assert nobody_listens(host_port)  # the port is the host's again once the command is done


def test_two_ports_at_once_and_a_server_on_ipv6_inside(rf: Runner) -> None:
    first, second = free_port(), free_port()
    flags = ["--publish", f"{first}:8000", "--publish", f"{second}:9000"]
    with server(rf, flags, ["4:8000", "6:9000"], count=3) as srv:
        assert fetch(second, b"b") == f"9000 {rf.nonce} ::1 b".encode()  # bound to ::1 only
        assert fetch(first, b"a") == f"8000 {rf.nonce} 127.0.0.1 a".encode()
        big = bytes(range(256)) * 3  # more than one read of the server's
        assert fetch(second, big).endswith(big[:1024])
        srv.finish()


def test_a_taken_host_port_is_refused_and_nothing_runs(rf: Runner) -> None:
    taken = HostService()
    try:
        ws = rf.mkdir()
        r = rf("run", "--publish", f"{taken.port}:8000", "--", "touch", "ran", cwd=ws)
        assert r.returncode == 125, r.stderr
        assert r.stderr == (
            f"ringfence: --publish {taken.port}:8000: the host's 127.0.0.1:{taken.port} is in "
            "use by another program; nothing was run. Publish on another host port: "
            "--publish HOST_PORT:8000\n"
        )
        assert not (ws / "ran").exists() and taken.accepted == 0
    finally:
        taken.close()


def test_the_path_leads_only_to_the_published_port_inside(rf: Runner) -> None:
    """The command reaches neither the host's other services nor the published host port
    from inside; and when nothing listens inside, the relay reaches nothing else either, not
    even a host service on the very port number it was told."""
    service = HostService()
    host_port, served_port = free_port(), free_port()
    flags = ["--publish", f"{host_port}:{service.port}", "--publish", f"{served_port}:8000"]
    probes = (service.port, host_port)
    try:
        with server(rf, flags, ["4:8000"], count=1, probes=probes) as srv:
            assert closed_at_once(host_port)  # nothing inside on service.port
            assert fetch(served_port).startswith(b"8000 ")
            out = srv.finish()
        for address in ("127.0.0.1", "::1"):
            for port in probes:
                assert f"probe {address} {port} ECONNREFUSED" in out, out
        assert service.accepted == 0
    finally:
        service.close()


def test_an_allowlisted_command_cannot_reach_the_published_port_either(rf: Runner) -> None:
    host_port = free_port()
    flags = ["--network", "allowlist", "--publish", f"{host_port}:8000"]
    with server(rf, flags, ["4:8000"], count=1, probes=[host_port]) as srv:
        fetch(host_port)
        out = srv.finish()
    # Landlock (ABI >= 4) refuses a TCP connect to anything but the proxy; older: no route
    for address in ("127.0.0.1", "::1"):
        assert any(f"probe {address} {host_port} {e}" in out for e in ("EACCES", "ECONNREFUSED"))


def test_with_the_network_on_publish_is_refused(rf: Runner) -> None:
    r = rf("run", "--network", "on", "--publish", "8000", "--", "true", cwd=rf.mkdir())
    assert r.returncode == 2
    assert r.stderr == (
        "ringfence: policy: published ports are for a sandbox with its own network (off or "
        "allowlist); with the network on, a server inside listens on the host's loopback "
        "already\n"
    )


def test_the_project_file_cannot_publish(rf: Runner) -> None:
    ws = rf.mkdir()
    (ws / ".ringfence.toml").write_text('publish = ["8000"]\n')
    r = rf("run", "--", "true", cwd=ws)
    assert r.returncode == 2 and "publish: the project file" in r.stderr, r.stderr


def test_a_cli_session_publishes_for_the_commands_run_in_it(rf: Runner) -> None:
    ws, sessions = rf.mkdir(), rf.mkdir("sessions-")
    sessions.chmod(0o700)
    env = {"RINGFENCE_SESSION_DIR": str(sessions)}
    host_port = free_port()
    publish = ["--publish", f"{host_port}:8000"]
    r = rf("session", "start", "--name", "pub", *publish, cwd=ws, env=env)
    assert r.returncode == 0, r.stderr
    try:
        with server(rf, ["--session", "pub"], ["4:8000"], count=1, cwd=ws, env=env) as srv:
            assert fetch(host_port) == f"8000 {rf.nonce} 127.0.0.1 hello".encode()
            srv.finish()
        r = rf("session", "start", "--name", "again", *publish, cwd=ws, env=env)
        assert r.returncode == 125 and f"127.0.0.1:{host_port} is in use" in r.stderr
    finally:
        rf("session", "stop", "--name", "pub", env=env)


def test_a_session_publishes_for_its_whole_life(confinement: Confinement) -> None:
    ws = tempfile.mkdtemp(prefix="ringfence-publish-", dir="/var/tmp")
    host_port = free_port()
    policy = Policy(workspace=ws, publish=(f"{host_port}:8000",))
    argv = ["python3", "-c", SERVER, confinement.nonce, "1", "", "4:8000"]
    try:
        with Session(policy, cwd=ws) as s:
            with pytest.raises(PublishError) as taken:
                Session(policy, cwd=ws).start()
            assert taken.value.host_port == host_port
            p = s.spawn(confinement.argv(argv), stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None
            head = p.stdout.readline() + p.stdout.readline()
            assert head.endswith("ready\n"), head
            assert fetch(host_port) == f"8000 {confinement.nonce} 127.0.0.1 hello".encode()
            out, _ = p.communicate(timeout=30)
            assert "served 1" in confinement.strip(head + out)
            assert closed_at_once(host_port)  # the command is gone; the session listens on
        assert nobody_listens(host_port)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
