"""network = allowlist, for real: the filtering proxy is the command's only way out.

Traffic goes only to the package registries (PyPI, npm) and to listeners these tests open on
127.0.0.1. Names that are refused are refused before any lookup, so no query about them ever
leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Confinement, Runner

from ringfence import Network, Policy, Session

pytestmark = pytest.mark.sandbox

PYPI = ("--allow-domain", "pypi.org", "--allow-domain", "files.pythonhosted.org")


class Listener:
    """A TCP server on the host's 127.0.0.1 that records what reaches it; it answers one
    HTTP "hello", or with ``echo`` sends back everything until the client is done."""

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if not self.echo:
                    self.received.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    continue
                while data := conn.recv(65536):
                    self.received.append(data)
                    conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def test_pip_download_through_the_allowlist(rf: Runner) -> None:
    ws = rf.mkdir()
    pip = "python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check"
    r = rf.confined(
        ws, [*pip.split(), "-d", "dl", "six==1.16.0"], "--network", "allowlist", *PYPI, timeout=180
    )
    assert r.returncode == 0, r.stderr
    assert (ws / "dl" / "six-1.16.0-py2.py3-none-any.whl").exists()


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_view_through_the_allowlist(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined(
        ws,
        ["npm", "view", "is-number@7.0.0", "version"],
        "--network",
        "allowlist",
        "--allow-domain",
        "registry.npmjs.org",
        "--env",
        f"npm_config_cache={ws}/.npm",
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "7.0.0"


def test_a_host_not_on_the_list_is_refused_by_name(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "curl -sS -m 10 -o /dev/null https://example.com/; echo curl=$?",
        "--network",
        "allowlist",
        *PYPI,
    )
    assert "curl=56" in r.stdout, (r.stdout, r.stderr)  # the proxy answered 403
    assert "403" in r.stderr
    assert "blocked example.com:443 (not in the allowlist)" in r.stderr


def test_the_refused_name_is_never_resolved() -> None:
    ws = Path(tempfile.mkdtemp(prefix="ringfence-resolve-", dir="/var/tmp"))
    try:
        policy = Policy(workspace=str(ws), network=Network.ALLOWLIST, allow_domains=("pypi.org",))
        with Session(policy) as s:
            conn = s._conn
            assert conn is not None and conn.proxy is not None
            asked: list[str] = []
            real = conn.proxy.proxy.resolver

            async def recording(host: str, port: int) -> list[str]:
                asked.append(host)
                return await real(host, port)

            conn.proxy.proxy.resolver = recording
            r = s.run(
                ["curl", "-sS", "-m", "10", "-o", "/dev/null", "https://example.com/"],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 56
            assert asked == []
            [event] = r.network_events
            assert (event.host, event.port, event.allowed) == ("example.com", 443, False)
            assert event.rule == "not in the allowlist" and event.address is None
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def test_direct_tcp_udp_and_dns_fail_while_the_proxy_is_up(rf: Runner, listener: Listener) -> None:
    """Only the proxy port may be connected to; the host's loopback is not the sandbox's."""
    ws = rf.mkdir()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    probe = f"""
import socket, errno
def tcp(port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port)); return "CONNECTED"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
print("tcp-host", tcp({listener.port}))
print("tcp-proxy", tcp(3128))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"leak", ("127.0.0.1", {udp.getsockname()[1]}))
try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns RESOLVED")
except socket.gaierror as e:
    print("dns failed")
"""
    try:
        r = rf.confined(ws, ["python3", "-c", probe], "--network", "allowlist", *PYPI)
        assert r.returncode == 0, r.stderr
        assert "tcp-host EACCES" in r.stdout  # Landlock: connect to the proxy port only
        assert "tcp-proxy CONNECTED" in r.stdout
        assert "dns failed" in r.stdout
        assert listener.received == []
        with pytest.raises(TimeoutError):
            udp.recvfrom(100)  # nothing reached the host
    finally:
        udp.close()


def test_an_allowed_name_that_resolves_to_loopback_is_refused(
    rf: Runner, listener: Listener
) -> None:
    ws = rf.mkdir()
    url = f"http://localhost:{listener.port}/"
    flags = ("--network", "allowlist", "--allow-domain", f"localhost:{listener.port}")
    r = rf.confined_sh(ws, f"curl --noproxy '' -sS -m 10 {url}; echo curl=$?", *flags)
    # the proxy's 403 body, and ringfence's summary of what it blocked
    assert f"blocked localhost:{listener.port} resolves to 127.0.0.1 is loopback" in r.stdout
    assert "but 127.0.0.1 is loopback" in r.stderr
    assert listener.received == []
    # allowed on purpose: the same request goes through, to the checked address
    r = rf.confined_sh(
        ws,
        f"curl --noproxy '' -sS -m 10 {url}; echo; echo curl=$?",
        *flags,
        "--allow-local-targets",
    )
    assert "hello" in r.stdout and "curl=0" in r.stdout, (r.stdout, r.stderr)
    assert len(listener.received) == 1
    request = listener.received[0].decode()
    assert request.startswith("GET / HTTP/1.1") and "Proxy-" not in request


def test_domain_entries_are_checked_when_the_policy_loads(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf(
        "run", "--network", "allowlist", "--allow-domain", "https://pypi.org", "--", "true", cwd=ws
    )
    assert r.returncode == 2
    assert "network rule 'https://pypi.org'" in r.stderr and "not a URL" in r.stderr
    r = rf("run", "--allow-domain", "pypi.org", "--", "true", cwd=ws)
    assert r.returncode == 2 and "need network = allowlist" in r.stderr


@pytest.mark.parametrize("network", ["off", "allowlist"])
def test_exposed_ports_reach_exactly_the_named_host_port(rf: Runner, network: str) -> None:
    exposed, other = Listener(), Listener()
    probe = f"""
import socket, errno
for port in ({exposed.port}, {other.port}):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        print(port, s.recv(100).split(b"\\r\\n")[-1].decode())
    except OSError as e:
        print(port, errno.errorcode.get(e.errno, str(e)))
"""
    try:
        ws = rf.mkdir()
        r = rf.confined(
            ws, ["python3", "-c", probe], "--network", network, "--expose-port", str(exposed.port)
        )
        assert r.returncode == 0, r.stderr
        assert f"{exposed.port} hello" in r.stdout
        refused = "EACCES" if network == "allowlist" else "ECONNREFUSED"
        assert f"{other.port} {refused}" in r.stdout, r.stdout
        assert len(exposed.received) == 1 and other.received == []
    finally:
        exposed.close()
        other.close()


def test_exposed_ports_are_refused_with_the_network_on(rf: Runner) -> None:
    r = rf("run", "--network", "on", "--expose-port", "5432", "--", "true", cwd=rf.mkdir())
    assert r.returncode == 2 and "exposed ports" in r.stderr


SSH_PROXY_PROBE = """
import os, shlex, subprocess, sys
option = shlex.split(os.environ["GIT_SSH_COMMAND"])[2]
command = option.split("=", 1)[1].replace("%h", sys.argv[1]).replace("%p", sys.argv[2])
r = subprocess.run(command, shell=True, input=b"through the tunnel", capture_output=True)
print(r.returncode, r.stdout.decode(), r.stderr.decode().strip())
"""


def test_git_ssh_proxy_command_tunnels_to_allowed_hosts_only(rf: Runner) -> None:
    echo = Listener(echo=True)
    try:
        ws = rf.mkdir()
        flags = ("--network", "allowlist", "--allow-domain", f"localhost:{echo.port}")
        flags = (*flags, "--allow-local-targets")
        probe = ["python3", "-c", SSH_PROXY_PROBE]
        r = rf.confined(ws, [*probe, "localhost", str(echo.port)], *flags)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("0 through the tunnel"), r.stdout
        r = rf.confined(ws, [*probe, "example.com", "22"], *flags)
        assert r.stdout.startswith("1 "), r.stdout
        assert "blocked example.com:22 not in the allowlist" in r.stdout
    finally:
        echo.close()


def test_a_host_application_is_asked_about_names_off_the_list(
    listener: Listener, confinement: Confinement
) -> None:
    ws = Path(tempfile.mkdtemp(prefix="ringfence-ask-", dir="/var/tmp"))
    asked: list[tuple[str, int]] = []
    answers = iter(["session", "never"])

    def on_network_request(host: str, port: int) -> str:
        asked.append((host, port))
        return next(answers)

    policy = Policy(
        workspace=str(ws),
        network=Network.ALLOWLIST,
        allow_domains=("pypi.org",),
        deny_domains=("denied.localhost",),
        allow_local_targets=True,
    )
    curl = "curl --noproxy '' -sS -m 10 http://{}:{}/; echo"
    try:
        with Session(policy, on_network_request=on_network_request) as s:
            for _ in range(2):  # the session answer is remembered: asked once
                cmd = confinement.shell(curl.format("localhost", listener.port))
                r = s.run(cmd, capture_output=True, text=True)
                assert "hello" in confinement.strip(r.stdout, r.stderr), r.stdout
            assert asked == [("localhost", listener.port)]
            other = Listener()
            try:
                r = s.run(
                    curl.format("localhost", other.port), shell=True, capture_output=True, text=True
                )
                assert "refused when asked" in r.stdout
                assert other.received == []
            finally:
                other.close()
            r = s.run(
                curl.format("denied.localhost", listener.port),
                shell=True,
                capture_output=True,
                text=True,
            )
            assert "denied by 'denied.localhost'" in r.stdout  # a deny is never asked about
            assert len(asked) == 2
            assert len(listener.received) == 2
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def test_cli_ask_on_the_terminal(rf: Runner, listener: Listener) -> None:
    from test_session import _drive_cli

    ws = rf.mkdir()
    code, out = _drive_cli(
        rf,
        [
            "run",
            "--network",
            "allowlist",
            "--allow-local-targets",
            "--ask",
            "--",
            "sh",
            "-c",
            f"curl --noproxy '' -sS -m 20 http://localhost:{listener.port}/",
        ],
        ws,
        feed=b"o\n",
    )
    assert code == 0, out
    assert f"wants localhost:{listener.port}" in out and "hello" in out
    r = rf("run", "--network", "allowlist", "--ask", "--", "true", cwd=ws)
    assert r.returncode == 2 and "--ask needs a terminal" in r.stderr


def test_the_proxy_ends_with_the_session() -> None:
    ws = Path(tempfile.mkdtemp(prefix="ringfence-proxy-end-", dir="/var/tmp"))
    try:
        policy = Policy(workspace=str(ws), network=Network.ALLOWLIST, allow_domains=("pypi.org",))
        s = Session(policy).start()
        conn = s._conn
        assert conn is not None and conn.proxy is not None
        service = conn.proxy
        assert service.thread.is_alive()
        s.close()
        assert not service.thread.is_alive()
        assert not any(t.name == "ringfence-proxy" and t.is_alive() for t in threading.enumerate())
    finally:
        shutil.rmtree(ws, ignore_errors=True)


class EchoServer:
    """An asyncio echo server on the host's 127.0.0.1, in a thread: holds as many connections
    as clients open, each sending back what it gets until the client half-closes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        started = threading.Event()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(asyncio.start_server(handle, sock=self.sock, backlog=1024))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        started.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.sock.close()


# Opens N tunnels through the proxy at once, holds them all open, then sends a distinct
# message through each and reads it back; prints {"held": ..., "errors": [...]}.
TUNNELS = """
import asyncio, json, os, resource, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
errors, opened = [], []
async def one(i, go):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", 3128)
        w.write(f"CONNECT localhost:{port} HTTP/1.1\\r\\n\\r\\n".encode())
        head = await r.readuntil(b"\\r\\n\\r\\n")
        assert head.startswith(b"HTTP/1.1 200"), head[:40]
        opened.append(i)
        await go.wait()
        msg = f"tunnel {i} {os.urandom(8).hex()}\\n".encode() * 8
        w.write(msg)
        await w.drain()
        assert await r.readexactly(len(msg)) == msg
        w.write_eof()
        assert await r.read() == b""
        w.close()
    except Exception as e:
        errors.append(f"{i}: {e!r}"[:200])
async def main():
    go = asyncio.Event()
    tasks = [asyncio.create_task(one(i, go)) for i in range(n)]
    while len(opened) + len(errors) < n:
        await asyncio.sleep(0.005)
    held = len(opened)
    go.set()
    await asyncio.gather(*tasks)
    print(json.dumps({"held": held, "errors": errors[:5]}))
asyncio.run(main())
"""


def test_hundreds_of_concurrent_tunnels_carry_data_both_ways(confinement: Confinement) -> None:
    """200 tunnels open at once through the filtering proxy, each echoing its own bytes.
    The host process starts with a soft descriptor limit too small for them (as a user's
    agent might): the proxy raises it to the hard limit rather than refuse connections."""
    echo = EchoServer()
    ws = Path(tempfile.mkdtemp(prefix="ringfence-tunnels-", dir="/var/tmp"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        policy = Policy(
            workspace=str(ws),
            network=Network.ALLOWLIST,
            allow_domains=(f"localhost:{echo.port}",),
            allow_local_targets=True,
        )
        with Session(policy) as s:
            cmd = confinement.argv(["python3", "-c", TUNNELS, "200", str(echo.port)])
            r = s.run(cmd, capture_output=True, text=True, timeout=60)
            out = confinement.strip(r.stdout, r.stderr)
            assert r.returncode == 0, r.stderr
            assert json.loads(out) == {"held": 200, "errors": []}
            allowed = [e for e in r.network_events if e.allowed]
            assert len(allowed) == 200 and all(e.port == echo.port for e in allowed)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        echo.close()
        shutil.rmtree(ws, ignore_errors=True)
