"""The macOS runner, run for real on Linux: a stand-in for ``sandbox-exec`` (it drops
``-p PROFILE`` and execs the rest) and for ``log``. What this proves: exit codes, signals,
stdio and timeouts come back; a background child and a setsid'd grandchild are dead afterwards;
a missing sandbox-exec refuses; the facts are gathered as promised. What it cannot prove: that
Seatbelt confines anything (nothing here has run on a Mac)."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.errors import PolicyError, UnsupportedError
from ringfence.platforms.macos import execute, sbpl
from ringfence.platforms.macos.execute import ProcInfo
from ringfence.platforms.macos.plan import (
    EXPLAIN_TAG,
    SANDBOX_EXEC,
    MacFacts,
    SeatbeltPlan,
    canonical,
    compile_macos,
    new_tag,
)
from ringfence.policy.model import Mode, Policy

TAG = new_tag()


def _exe(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    """sandbox-exec that checks it was given ``-p PROFILE`` (and saves the profile where
    RF_PROFILE_OUT says), then execs the command; log that prints one header line and waits."""
    sandbox_exec = _exe(
        tmp_path / "sandbox-exec",
        '#!/bin/sh\n[ "$1" = "-p" ] || exit 99\n'
        '[ -n "$RF_PROFILE_OUT" ] && printf "%s" "$2" > "$RF_PROFILE_OUT"\n'
        'shift 2\nexec "$@"\n',
    )
    log = _exe(tmp_path / "log", "#!/bin/sh\necho 'Filtering the log data'\nexec sleep 100\n")
    return {"sandbox_exec": sandbox_exec, "log": log}


def _plan(tmp_path: Path) -> SeatbeltPlan:
    facts = MacFacts(home=str(tmp_path), tmpdir=str(tmp_path / "tmp"), tag=TAG)
    return compile_macos(Policy(workspace=str(tmp_path)), facts)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids a test saw started: killed at the end whatever happened (they should be gone)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_exit_codes_and_signals_come_back(tmp_path: Path, stand_ins: dict[str, str]) -> None:
    plan = _plan(tmp_path)
    r = execute.run_plan(plan, ["sh", "-c", "exit 3"], **stand_ins)
    assert (r.returncode, r.exit_code, r.signal, r.timed_out) == (3, 3, None, False)
    r = execute.run_plan(plan, ["sh", "-c", "kill -TERM $$"], **stand_ins)
    assert (r.returncode, r.exit_code, r.signal) == (-signal.SIGTERM, None, signal.SIGTERM)
    assert r.survivors == () and r.violations == []


def test_stdio_cwd_and_env_reach_the_command(tmp_path: Path, stand_ins: dict[str, str]) -> None:
    r = execute.run_plan(
        _plan(tmp_path), ["sh", "-c", 'cat; echo "$RF_X"; pwd; echo oops >&2'],
        input=b"from stdin\n", capture_output=True, cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"], "RF_X": "x-value"}, **stand_ins,
    )  # fmt: skip
    assert r.stdout == f"from stdin\nx-value\n{tmp_path}\n".encode() and r.stderr == b"oops\n"
    out = tmp_path / "out.txt"
    with out.open("wb") as f:
        execute.run_plan(_plan(tmp_path), ["echo", "to a file"], stdout=f, **stand_ins)
    assert out.read_bytes() == b"to a file\n"


def test_the_profile_goes_to_sandbox_exec(tmp_path: Path, stand_ins: dict[str, str]) -> None:
    saved = tmp_path / "profile.sb"
    env = {"PATH": os.environ["PATH"], "RF_PROFILE_OUT": str(saved)}
    plan = _plan(tmp_path)
    assert execute.run_plan(plan, ["true"], env=env, **stand_ins).returncode == 0
    assert saved.read_text() == plan.profile
    sbpl.check(saved.read_text(), tag=TAG)


def test_a_timeout_kills_the_whole_tree(
    tmp_path: Path, stand_ins: dict[str, str], started: list[int]
) -> None:
    pids = tmp_path / "pids"
    t0 = time.monotonic()
    r = execute.run_plan(
        _plan(tmp_path), ["sh", "-c", f"sleep 100 & echo $! > {pids}; sleep 100"],
        timeout=0.5, **stand_ins,
    )  # fmt: skip
    started += [int(x) for x in pids.read_text().split()]
    assert r.timed_out and r.signal == signal.SIGKILL and time.monotonic() - t0 < 10
    assert not any(_alive(p) for p in started) and r.survivors == ()


def test_background_children_and_a_setsid_grandchild_die_with_the_command(
    tmp_path: Path, stand_ins: dict[str, str], started: list[int]
) -> None:
    """The command leaves a background child (its process group) and, through a subshell that
    keeps running, a grandchild in a session of its own (no longer in the group, still a
    descendant); then exits 0 while both hold its stdout. All of them must be gone."""
    bg, gc, sub, go = (tmp_path / n for n in ("bg", "gc", "sub", "go"))
    script = (
        f"sleep 100 & echo $! > {bg}; "
        f"( setsid sleep 100 & echo $! > {gc}; wait ) & echo $! > {sub}; "
        f"while [ ! -e {go} ]; do sleep 0.02; done; echo done"
    )
    box: dict[str, execute.MacResult] = {}

    def work() -> None:
        box["r"] = execute.run_plan(
            _plan(tmp_path), ["sh", "-c", script], capture_output=True, timeout=30, **stand_ins
        )

    th = threading.Thread(target=work)
    th.start()

    def ready() -> bool:
        if not all(f.exists() and f.read_text().strip() for f in (bg, gc, sub)):
            return False
        table = {p.pid: p for p in execute.process_table()}
        g, b = int(gc.read_text()), int(bg.read_text())
        return g in table and b in table and table[g].pgid != table[b].pgid

    deadline = time.monotonic() + 10
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    background, grandchild, subshell = (int(f.read_text()) for f in (bg, gc, sub))
    started += [background, grandchild, subshell]
    table = {p.pid: p for p in execute.process_table()}
    assert table[grandchild].pgid != table[background].pgid  # it really left the group
    assert table[grandchild].ppid == subshell  # and is still a descendant
    go.touch()
    th.join(30)
    r = box["r"]
    assert r.returncode == 0 and r.stdout == b"done\n" and not r.timed_out
    assert [p for p in started if _alive(p)] == [] and r.survivors == ()


def test_a_missing_sandbox_exec_refuses_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for missing in ("/nonexistent/sandbox-exec", "relative/sandbox-exec", str(tmp_path)):
        with pytest.raises(UnsupportedError, match="will not run the command"):
            execute.run_plan(_plan(tmp_path), ["touch", str(marker)], sandbox_exec=missing)
    assert not marker.exists()
    if not os.path.exists(SANDBOX_EXEC):  # this machine: the default refuses too
        with pytest.raises(UnsupportedError, match=SANDBOX_EXEC):
            execute.run_plan(_plan(tmp_path), ["touch", str(marker)])
        assert not marker.exists()


def test_a_plan_with_the_explain_tag_is_refused(tmp_path: Path, stand_ins: dict[str, str]) -> None:
    facts = MacFacts(home=str(tmp_path), tmpdir=str(tmp_path), tag=EXPLAIN_TAG)
    plan = compile_macos(Policy(workspace=str(tmp_path)), facts)
    with pytest.raises(PolicyError, match="fresh session tag"):
        execute.run_plan(plan, ["true"], **stand_ins)


def test_violations_from_the_monitor_come_back_with_their_rule(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    message = f"Sandbox: touch(77) deny(1) file-write-create /Users/else/x\n{TAG}"
    line = '{"eventType":"logEvent","processID":0,"eventMessage":' + _json(message) + "}"
    (tmp_path / "lines").write_text(line + "\n")
    log = _exe(tmp_path / "log2", f"#!/bin/sh\ncat {tmp_path}/lines\nexec sleep 100\n")
    sx = _exe(tmp_path / "sx", '#!/bin/sh\nshift 2\nexec "$@"\n')
    r = execute.run_plan(plan, ["true"], sandbox_exec=sx, log=log)
    assert r.violations == [{"kind": "filesystem", "op": "file-write-create",
                             "path": "/Users/else/x", "rule": "outside writable roots",
                             "pid": 77}]  # fmt: skip


def _json(text: str) -> str:
    import json

    return json.dumps(text)


def test_a_missing_log_is_noted_not_fatal(tmp_path: Path, stand_ins: dict[str, str]) -> None:
    r = execute.run_plan(
        _plan(tmp_path), ["true"], sandbox_exec=stand_ins["sandbox_exec"], log="/nonexistent/log"
    )
    assert r.returncode == 0 and any("no violation report" in n for n in r.notes)


def test_full_access_runs_the_command_directly(tmp_path: Path) -> None:
    plan = compile_macos(
        Policy(workspace=str(tmp_path), mode=Mode.FULL_ACCESS),
        MacFacts(home=str(tmp_path), tmpdir=str(tmp_path)),
    )
    r = execute.run_plan(plan, ["sh", "-c", "echo $0"], capture_output=True)
    assert r.returncode == 0 and r.stdout == b"sh\n"


def test_gather_facts_and_run_end_to_end(tmp_path: Path, stand_ins: dict[str, str]) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "ws").symlink_to(real)
    policy = Policy(workspace=str(tmp_path / "ws"))
    facts = execute.gather_facts(policy, home=str(tmp_path), tmp_parent=str(tmp_path))
    try:
        assert stat.S_IMODE(os.stat(facts.tmpdir).st_mode) == 0o700
        assert facts.realpaths[str(tmp_path / "ws")] == str(real)
        assert (
            facts.tag != EXPLAIN_TAG
            and facts.tag
            != execute.gather_facts(policy, home=str(tmp_path), tmp_parent=str(tmp_path)).tag
        )
        seen = canonical(str(tmp_path / "ws"), facts)  # the link resolved, /tmp -> /private/tmp
        assert (
            seen.endswith(str(real))
            and f'(subpath "{seen}")' in compile_macos(policy, facts).profile
        )
    finally:
        os.rmdir(facts.tmpdir)
    for leftover in tmp_path.glob("ringfence-*"):
        os.rmdir(leftover)  # the second gather_facts above
    r = execute.run(
        policy, ["sh", "-c", 'stat -c %a "$TMPDIR"; echo "$TMPDIR"'], capture_output=True,
        home=str(tmp_path), tmp_parent=str(tmp_path), **stand_ins,
    )  # fmt: skip
    mode, tmpdir = r.stdout.decode().split()
    assert mode == "700" and tmpdir.startswith(str(tmp_path / "ringfence-"))
    assert not os.path.exists(tmpdir)  # removed afterwards


def test_process_table_parsers_and_membership() -> None:
    stat_text = "4242 (a) b (c)) S 1 4000 4000 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0"
    info = execute.parse_proc_stat(4242, stat_text)
    assert info == ProcInfo(4242, 1, 4000, "98765")
    assert execute.parse_proc_stat(1, "garbage") is None
    ps = (
        "  10     1    10 Ss   Tue Nov 25 10:00:00 2026\n"
        "  11    10    10 Z+   Tue Nov 25 10:00:01 2026\nx"
    )
    assert execute.parse_ps(ps) == [
        ProcInfo(10, 1, 10, "Tue Nov 25 10:00:00 2026"),
        ProcInfo(11, 10, 10, "Tue Nov 25 10:00:01 2026", zombie=True),
    ]
    table = [
        ProcInfo(100, 50, 100, "t0"),  # the command
        ProcInfo(101, 100, 100, "t1"),  # in its group
        ProcInfo(102, 101, 102, "t2"),  # setsid'd, parent in the group
        ProcInfo(103, 1, 103, "t3"),  # double-forked, seen before: remembered
        ProcInfo(104, 1, 104, "t4-new"),  # a remembered pid now reused by someone else
        ProcInfo(105, 100, 100, "t5", zombie=True),
        ProcInfo(1, 0, 1, "t"),
        ProcInfo(os.getpid(), 100, 100, "me"),  # never ourselves, whatever the table says
    ]
    members = execute.tree_members(table, 100, {103: "t3", 104: "t4-old"}, {os.getpid()})
    assert members == {100: "t0", 101: "t1", 102: "t2", 103: "t3"}


def test_the_real_process_table_sees_us_both_ways() -> None:
    me = {p.pid: p for p in execute.process_table()}[os.getpid()]
    assert me.ppid == os.getppid() and me.pgid == os.getpgrp()
    if os.path.exists(execute.PS):  # the macOS way, on this machine
        import subprocess

        out = subprocess.run(
            [execute.PS, "-axo", "pid=,ppid=,pgid=,stat=,lstart="], capture_output=True,
            text=True, check=True, env={"LC_ALL": "C"},
        ).stdout  # fmt: skip
        ps_me = {p.pid: p for p in execute.parse_ps(out)}[os.getpid()]
        assert (ps_me.ppid, ps_me.pgid) == (os.getppid(), os.getpgrp()) and ps_me.start


def test_ringfence_run_on_a_mac_goes_through_the_runner(
    tmp_path: Path,
    stand_ins: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ringfence run`` on the macOS backend with the stand-ins: exit statuses as on Linux,
    the environment scrubbed by the policy, and what macOS cannot do yet refused."""
    from ringfence.cli.parser import build_parser
    from ringfence.cli.run import cmd_run

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("GITHUB_TOKEN", "secret-value")

    def run(*args: str) -> int:
        ns = build_parser("run").parse_args(["run", "--workspace", str(tmp_path), *args])
        return cmd_run(ns, platform="macos", **stand_ins)

    assert run("--", "sh", "-c", "exit 3") == 3
    assert run("--", "sh", "-c", "kill -TERM $$") == 128 + signal.SIGTERM
    assert run("--timeout", "0.5", "--", "sleep", "30") == 124
    assert "timed out" in capsys.readouterr().err
    out = tmp_path / "env.txt"
    assert run("--", "sh", "-c", f'echo "[$GITHUB_TOKEN][$RINGFENCE_SANDBOX]" > {out}') == 0
    assert out.read_text() == "[][1]\n"
    import json

    log = tmp_path / "state" / "ringfence" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # the audit record is the run's record (docs/report.md): statuses as ringfence exits
    assert [(r["exit"], r["signal"], r["outcome"]) for r in records] == [
        (3, None, "exited"),
        (128 + signal.SIGTERM, signal.SIGTERM, "signaled"),
        (124, None, "timed_out"),
        (0, None, "exited"),
    ]
    assert records[2]["timed_out"] and records[0]["argv"] == ["sh", "-c", "exit 3"]
    for flags in (["--network", "allowlist", "--expose-port", "5432"], ["-t"]):
        with pytest.raises(UnsupportedError, match="not available on macOS"):
            run(*flags, "--", "true")


def test_the_allowlist_on_a_mac_goes_through_ringfences_proxy(
    tmp_path: Path,
    stand_ins: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The proxy runs on the host's loopback on a port the profile names; the command finds
    it in its environment; an allowed local target answers through it, an unlisted name is
    refused by it (and reported). The test sends traffic to 127.0.0.1 only."""
    import http.server

    from ringfence.cli.parser import build_parser
    from ringfence.cli.run import cmd_run

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the target")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{server.server_address[1]}"
    out = tmp_path / "out.txt"
    # A raw request to the proxy named in the environment (NO_PROXY would let urllib go direct).
    script = (
        "import os, socket, sys, urllib.parse as u\n"
        "p = u.urlsplit(os.environ['RINGFENCE_PROXY'])\n"
        "for host in sys.argv[1:]:\n"
        "    s = socket.create_connection((p.hostname, p.port))\n"
        "    s.sendall(f'GET http://{host}/ HTTP/1.1\\r\\nHost: {host}\\r\\n"
        "Connection: close\\r\\n\\r\\n'.encode())\n"
        "    data = b''\n"
        "    while chunk := s.recv(65536):\n"
        "        data += chunk\n"
        f"    with open({str(out)!r}, 'a') as f:\n"
        "        print(repr(data), file=f)\n"
    )
    try:
        ns = build_parser("run").parse_args(
            ["run", "--workspace", str(tmp_path), "--network", "allowlist",
             "--allow-domain", target, "--allow-local-targets", "--",
             sys.executable, "-c", script, target, "denied.example"]
        )  # fmt: skip
        assert cmd_run(ns, platform="macos", **stand_ins) == 0
    finally:
        server.shutdown()
        server.server_close()
    import ast

    first, second = (ast.literal_eval(line) for line in out.read_text().splitlines())
    assert first.startswith(b"HTTP/1.0 200") and first.endswith(b"hello from the target")
    assert second.startswith(b"HTTP/1.1 403") and b"not in the allowlist" in second
    assert "blocked denied.example:80" in capsys.readouterr().err
