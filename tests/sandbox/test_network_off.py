"""network = off, for real: lookups fail at once, and the report names what was tried.

Nothing here sends traffic anywhere: inside the sandbox's own (empty) network namespace every
name is answered by ringfence's resolver on the sandbox's loopback, and a connect to an address
outside it fails in the kernel (no route) before any packet is made. The addresses below
are from the documentation ranges (RFC 5737, RFC 3849) and would lead nowhere anyway.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Runner

from ringfence import Policy, Session

pytestmark = pytest.mark.sandbox

PIP = "python3 -m pip install --no-cache-dir --disable-pip-version-check --target dl six==1.16.0"
HINT_PYPI = "ringfence: to allow it: --network allowlist --allow-domain pypi.org"


def test_pip_install_fails_at_once_and_names_the_host_and_the_flag(rf: Runner) -> None:
    ws = rf.mkdir()
    started = time.monotonic()
    # No pip configuration of the machine's (retries, local indexes): pip's own defaults.
    r = rf.confined(ws, PIP.split(), "--env", "PIP_CONFIG_FILE=/dev/null")
    took = time.monotonic() - started
    assert r.returncode == 1, r.stderr
    assert took < 5, f"pip took {took:.1f} s to fail"
    assert "Retrying" not in r.stderr  # told not to: nothing could ever answer
    assert "ringfence: network is off: the command tried pypi.org\n" in r.stderr
    assert r.stderr.endswith(HINT_PYPI + "\n"), r.stderr


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_fails_at_once_and_names_the_registry(rf: Runner) -> None:
    ws = rf.mkdir()
    started = time.monotonic()
    r = rf.confined(
        ws, ["npm", "view", "is-number@7.0.0", "version"], "--env", f"npm_config_cache={ws}/.npm"
    )
    took = time.monotonic() - started
    assert r.returncode != 0
    assert took < 10, f"npm took {took:.1f} s to fail"
    assert "ENOTFOUND registry.npmjs.org" in r.stderr
    assert "ringfence: network is off: the command tried registry.npmjs.org\n" in r.stderr
    assert "--network allowlist --allow-domain registry.npmjs.org" in r.stderr


def test_lookups_over_udp_tcp_and_ipv6_get_nxdomain_at_once(rf: Runner) -> None:
    """The resolver, asked directly: every transport answers NXDOMAIN with the question
    echoed; junk gets no answer; each name asked is reported once."""
    ws = rf.mkdir()
    script = r"""
import socket, struct, time
def query(name, qtype=1):
    q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)
def rcode(reply):
    ident, flags = struct.unpack("!HH", reply[:4])
    assert ident == 0x4242 and flags & 0x8000, reply
    return flags & 0xF
start = time.monotonic()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.sendto(query("udp.example.org"), ("127.0.0.1", 53))
print("udp", rcode(u.recv(600)))
u.sendto(b"\xff" * 7, ("127.0.0.1", 53))
try:
    u.recv(600)
    print("junk answered")
except socket.timeout:
    print("junk ignored")
t = socket.create_connection(("127.0.0.1", 53), timeout=2)
m = query("tcp.example.org", 28)
t.sendall(len(m).to_bytes(2, "big") + m)
print("tcp", rcode(t.recv(600)[2:]))
try:
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.settimeout(2)
    v6.sendto(query("udp6.example.org"), ("::1", 53))
    print("udp6", rcode(v6.recv(600)))
except OSError:
    print("udp6", 3, "(no IPv6 here)")
print("getaddrinfo", end=" ")
try:
    socket.getaddrinfo("udp.example.org", 443)
except socket.gaierror as e:
    print(e.errno == socket.EAI_NONAME)
print("fast", time.monotonic() - start < 2.5)
"""
    r = rf.confined(ws, ["python3", "-c", script])
    assert r.returncode == 0, r.stderr
    assert [x.split(" (")[0] for x in r.stdout.splitlines()] == [
        "udp 3",
        "junk ignored",
        "tcp 3",
        "udp6 3",
        "getaddrinfo True",
        "fast True",
    ], r.stdout
    tried = "ringfence: network is off: the command tried "
    line = next(x for x in r.stderr.splitlines() if x.startswith(tried))
    names = line.removeprefix(tried).split(", ")
    v6 = [] if "(no IPv6 here)" in r.stdout else ["udp6.example.org"]
    assert sorted(names) == sorted(["udp.example.org", "tcp.example.org", *v6]), line


def test_a_literal_address_is_named_and_a_private_one_never_proposed(rf: Runner) -> None:
    ws = rf.mkdir()
    script = r"""
import socket
for host, port in (("198.51.100.7", 8443), ("10.1.2.3", 443)):
    try:
        socket.create_connection((host, port), timeout=2)
    except OSError as e:
        print(host, e.errno)
"""
    r = rf.confined(ws, ["python3", "-c", script])
    assert r.stdout.splitlines() == ["198.51.100.7 101", "10.1.2.3 101"], r.stdout  # ENETUNREACH
    assert (
        "ringfence: network is off: the command tried 198.51.100.7:8443, 10.1.2.3:443\n"
    ) in r.stderr
    # 198.51.100.0/24 is a documentation range, not a global address: never proposed either.
    assert "to allow it" not in r.stderr, r.stderr


def test_resolv_conf_is_the_sandboxs_own_and_read_only(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "grep nameserver /etc/resolv.conf; echo x >> /etc/resolv.conf")
    assert r.stdout.splitlines()[0] == "nameserver 127.0.0.1"
    assert "Read-only file system" in r.stderr or "Permission denied" in r.stderr


def test_the_api_result_carries_the_hint() -> None:
    """The Python API: the violation and the widening, and `widen` accepts it (it switches
    the network to the allowlist with that one host, nothing more)."""
    from ringfence.escalation import widen

    ws = Path(tempfile.mkdtemp(prefix="ringfence-netoff-", dir="/var/tmp"))
    try:
        policy = Policy(workspace=str(ws))
        with Session(policy) as s:
            r = s.run(["getent", "hosts", "pypi.org"], capture_output=True)
        assert r.returncode == 2
        off = "network is off"
        assert r.violations == [
            {"kind": "network", "op": "resolve", "host": "pypi.org", "port": 0, "rule": off}
        ]
        assert r.widenings == [
            {
                "kind": "allow_domain",
                "entry": "pypi.org",
                "flag": "--network allowlist --allow-domain pypi.org",
                "because": "resolve pypi.org",
                "network": "allowlist",
            }
        ]
        wider = widen(policy, r.widenings)
        assert wider.network is not None and wider.network.value == "allowlist"
        assert wider.allow_domains == ("pypi.org",)
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def test_the_mcp_result_names_the_host_and_the_flag() -> None:
    pytest.importorskip("mcp")
    from test_mcp import Server, _data

    ws = Path(tempfile.mkdtemp(prefix="ringfence-netoff-mcp-", dir="/var/tmp"))
    try:

        async def body(c: Any) -> None:
            r = _data(await c.call_tool("run_command", {"command": "getent hosts pypi.org"}))
            assert r["exit_code"] == 2
            assert r["refused"] == ["resolve pypi.org (network is off)"]
            flags = [" ".join(w["flag"] for w in r["to_allow"])]
            assert flags == ["--network allowlist --allow-domain pypi.org"], r["to_allow"]
            assert {"kind": "domain", "value": "pypi.org"}.items() <= r["to_allow"][-1].items()

        Server(sys.executable, ws)(body)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
