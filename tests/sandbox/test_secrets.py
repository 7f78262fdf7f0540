"""Secrets stay out of reach: deny-read paths, the environment, runtime sockets, the network."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def _fake_home(rf: Runner) -> Path:
    home = rf.mkdir("home-")
    (home / ".ssh").mkdir()
    (home / ".ssh/id_ed25519").write_text("PRIVATE-KEY-MATERIAL")
    (home / ".aws").mkdir()
    (home / ".aws/credentials").write_text("AWS-SECRET-MATERIAL")
    (home / ".netrc").write_text("machine x password NETRC-SECRET")
    (home / ".bash_history").write_text("export TOKEN=HISTORY-SECRET")
    (home / "notes.txt").write_text("ordinary file")
    for p in [home, *home.rglob("*")]:
        os.chown(p, rf.uid, rf.gid)
    return home


def test_default_secret_paths_are_unreadable(rf: Runner) -> None:
    ws = rf.mkdir()
    home = _fake_home(rf)
    r = rf.confined_sh(
        ws,
        "cat ~/.ssh/id_ed25519 ~/.aws/credentials ~/.netrc ~/.bash_history; "
        "ls ~/.ssh; cat ~/notes.txt",
        env={"HOME": str(home)},
    )
    for secret in ("PRIVATE-KEY", "AWS-SECRET", "NETRC-SECRET", "HISTORY-SECRET", "id_ed25519"):
        assert secret not in r.stdout
    assert "ordinary file" in r.stdout  # reading broadly still works
    assert "Permission denied" in r.stderr


def test_deny_read_flag_hides_more(rf: Runner) -> None:
    ws, private = rf.mkdir(), rf.mkdir("private-")
    (private / "data").write_text("CONFIDENTIAL")
    os.chown(private / "data", rf.uid, rf.gid)
    r = rf.confined_sh(ws, f"cat {private}/data; ls {private}", "--deny-read", str(private))
    assert "CONFIDENTIAL" not in r.stdout and "data" not in r.stdout
    assert r.returncode != 0


def test_deny_read_inside_the_workspace_cannot_be_written_either(rf: Runner) -> None:
    ws = rf.mkdir()
    (ws / "secrets").mkdir()
    (ws / "secrets/key").write_text("K")
    for p in [ws / "secrets", ws / "secrets/key"]:
        os.chown(p, rf.uid, rf.gid)
    r = rf.confined_sh(
        ws,
        "cat secrets/key; echo x > secrets/new; rm -rf secrets; echo done",
        "--deny-read",
        str(ws / "secrets"),
    )
    assert r.stdout.strip() == "done"
    assert (ws / "secrets/key").read_text() == "K"
    assert not (ws / "secrets/new").exists()


def test_no_default_deny_read_switches_the_defaults_off(rf: Runner) -> None:
    ws = rf.mkdir()
    home = _fake_home(rf)
    r = rf.confined_sh(ws, "cat ~/.netrc", "--no-default-deny-read", env={"HOME": str(home)})
    assert "NETRC-SECRET" in r.stdout


def test_secret_looking_variables_are_scrubbed(rf: Runner) -> None:
    ws = rf.mkdir()
    env = {
        "OPENAI_API_KEY": "sk-1",
        "GITHUB_TOKEN": "ghp",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "DB_PASSWORD": "pw",
        "SSH_AUTH_SOCK": "/run/agent",
        "MY_SETTING": "visible",
        "RINGFENCE_SANDBOX": "0",
        "KEEP_TOKEN": "kept",
    }
    r = rf.confined_sh(
        ws,
        "env",
        "--keep-env",
        "KEEP_TOKEN",
        "--env",
        "ADDED=1",
        "--unset-env",
        "MY_SETTING",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    for gone in (
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "DB_PASSWORD",
        "SSH_AUTH_SOCK",
        "MY_SETTING",
    ):
        assert gone not in seen
    assert seen["KEEP_TOKEN"] == "kept"
    assert seen["ADDED"] == "1"
    assert seen["RINGFENCE_SANDBOX"] == "1"
    assert seen["RINGFENCE_NETWORK"] == "off"
    assert seen["RINGFENCE_MODE"] == "workspace-write"
    assert seen["TMPDIR"] == "/tmp"


def test_clean_env_starts_empty(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "env", "--clean-env", "--keep-env", "HOME", env={"MY_SETTING": "x"})
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert "MY_SETTING" not in seen
    assert seen["HOME"] == rf.home
    assert "PATH" in seen


@pytest.fixture
def host_listener() -> tuple[int, list[bytes]]:
    """A TCP listener on the host's 127.0.0.1 that records what reaches it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(5)
    got: list[bytes] = []

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], got


def test_network_off_reaches_nothing_on_the_host(
    rf: Runner, host_listener: tuple[int, list[bytes]]
) -> None:
    ws = rf.mkdir()
    port, got = host_listener
    probe = (
        f"python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', {port}), 2); "
        "s.sendall(b'LEAK'); print('CONNECTED')\"; ip -o link 2>/dev/null | cut -d: -f2 | tr -d ' '"
    )
    r = rf.confined_sh(ws, probe)
    assert "CONNECTED" not in r.stdout
    assert "Connection refused" in r.stderr
    assert got == []


def test_network_off_has_a_working_loopback(rf: Runner) -> None:
    ws = rf.mkdir()
    script = (
        "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
        "c=socket.create_connection(s.getsockname()); a,_=s.accept(); c.sendall(b'ok'); "
        'print(a.recv(2).decode())"'
    )
    r = rf.confined_sh(ws, script)
    assert r.stdout.strip() == "ok", r.stderr


def test_network_on_reaches_the_host(rf: Runner, host_listener: tuple[int, list[bytes]]) -> None:
    ws = rf.mkdir()
    port, got = host_listener
    r = rf.confined_sh(
        ws,
        f"python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', {port}), 2); "
        "s.sendall(b'HELLO'); print('CONNECTED')\"",
        "--network",
        "on",
    )
    assert "CONNECTED" in r.stdout, r.stderr
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got == [b"HELLO"]


def test_runtime_sockets_are_hidden(rf: Runner) -> None:
    ws, runtime = rf.mkdir(), rf.mkdir("xdg-")
    sock_path = runtime / "agent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock_path))
    srv.listen()
    os.chown(sock_path, rf.uid, rf.gid)
    try:
        env = {"XDG_RUNTIME_DIR": str(runtime), "SSH_AUTH_SOCK": str(sock_path)}
        probe = (
            f'ls {runtime}; python3 -c "import socket; s=socket.socket(socket.AF_UNIX); '
            f"s.connect('{sock_path}'); print('CONNECTED')\""
        )
        r = rf.confined_sh(ws, probe, env=env)
        assert "CONNECTED" not in r.stdout
        assert "agent.sock" not in r.stdout
        r = rf.confined_sh(ws, probe, "--allow-socket", str(sock_path), env=env)
        assert "CONNECTED" in r.stdout, r.stderr
    finally:
        srv.close()


ABSTRACT_PROBE = (
    "import socket; s = socket.socket(socket.AF_UNIX); "
    "s.connect(b'\\x00{name}'); print('CONNECTED')"
)


@pytest.mark.parametrize("network", ["on", "off"])
def test_host_abstract_sockets_are_out_of_reach(rf: Runner, network: str) -> None:
    """X11 and other services listen on abstract unix sockets, which no file permission
    guards. Network off: a separate namespace. Network on: Landlock's abstract-socket scope."""
    import subprocess
    import uuid

    name = f"ringfence-test-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(b"\0" + name.encode())
    srv.listen()
    try:
        probe = ABSTRACT_PROBE.format(name=name)
        control = subprocess.run(
            ["python3", "-c", probe], capture_output=True, text=True, check=False
        )
        assert "CONNECTED" in control.stdout  # reachable without the sandbox
        ws = rf.mkdir()
        r = rf("run", "--network", network, "--", "python3", "-c", probe, cwd=ws)
        assert "CONNECTED" not in r.stdout
        expected = "Operation not permitted" if network == "on" else "Connection refused"
        assert expected in r.stderr, r.stderr
    finally:
        srv.close()


def test_the_command_cannot_signal_the_runner(rf: Runner) -> None:
    """The session's runner is outside the command's pid namespace (no pid names it), and
    the command's own init, pid 1 there, ignores every signal the command can send it."""
    ws = rf.mkdir()
    script = (
        "for s in KILL TERM INT HUP QUIT USR1; do kill -$s 1; done; sleep 0.3; "
        "echo alive; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"
    )
    r = rf.confined_sh(ws, script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "alive"
    # pid 1 (the command's init), the name guard, the shell and tr: nothing of the host's,
    # and no second command's tree
    assert 2 <= len(lines) - 1 <= 4, lines
    assert all("sh -c" in ln or "tr" in ln or "ringfence" in ln for ln in lines[1:]), lines


KEYRING_PROBE = (
    "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
    "r = libc.syscall(250, 0, -3, 0); print(r, ctypes.get_errno())"  # KEYCTL_GET_KEYRING_ID
)


def test_the_users_session_keyring_is_not_shared(rf: Runner) -> None:
    import platform
    import subprocess

    if platform.machine() != "x86_64":
        pytest.skip("the probe uses x86_64 syscall numbers")
    ws = rf.mkdir()
    host = subprocess.run(
        ["python3", "-c", KEYRING_PROBE],
        capture_output=True,
        text=True,
        check=True,
        **rf.popen_kwargs(),  # type: ignore[arg-type]
    ).stdout.split()
    inside = rf("run", "--", "python3", "-c", KEYRING_PROBE, cwd=ws).stdout.split()
    assert host[0] != "-1"
    # either the keyring calls are refused outright, or the keyring is a fresh one
    assert inside == ["-1", "1"] or inside[0] not in ("-1", host[0]), (host, inside)
