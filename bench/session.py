"""Warm sessions: per-command cost, stdout throughput, setup cost as the policy grows, and a
session under load (many sequential commands, many concurrent ones).

Each section builds its own session in a fresh workspace under /var/tmp and measures its
baselines (bare ``subprocess``, bubblewrap) in the same minute, so the ratios survive a noisy
VM. Commands get ``/dev/null`` for stdin/stdout/stderr unless the section is about output:
a terminal on stdin sends a session down its slower path (a fresh init with a rule for that
terminal), and the numbers must not depend on how the benchmark was launched.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from benchlib import (
    BWRAP_ARGS,
    Scale,
    Section,
    blocked,
    bwrap_path,
    check_rc,
    children,
    descendants,
    fd_count,
    fmt_kib,
    fmt_opt,
    median,
    ms,
    own_cpu,
    p99,
    quiet,
    ratio,
    scratch,
    status_kib,
    verdict,
    zombies,
)

from ringfence import Policy
from ringfence.session import DEVNULL, PIPE, Session

WARM_TARGET = 2.5  # x bare spawn, commands back to back
WARM_GAP_TARGET = 2.0  # x bare spawn, commands 20 ms apart (issue 18)
THROUGHPUT_TARGET = 0.95  # x bare
MIB = 1 << 20
# Before counting processes and zombies: the last command's init exits just after its exit
# report, and the runner reaps it a moment later. A zombie still there after this is a leak.
SETTLE = 0.2


def _quiet(s: Session, argv: list[str]) -> int:
    """``Session.run`` with stdio on /dev/null, like ``benchlib.quiet`` for the bare rows."""
    return s.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL).returncode


def _runner_pids(s: Session) -> tuple[int | None, int | None]:
    """The outer runner (the host's child) and the sandbox's pid 1 runner (its only child).

    Private attributes: a benchmark may look inside; if they move, the /proc columns say "?".
    """
    conn = getattr(s, "_conn", None)
    outer = getattr(conn, "runner_pid", None)
    if not isinstance(outer, int):
        return None, None
    kids = children(outer)
    return outer, (kids[0] if kids else None)


# -- warm per-command cost -----------------------------------------------------------------------
def warm(scale: Scale) -> Section:
    sec = Section(
        f"warm per-command cost: `true`, median of {scale.warm} back-to-back / "
        f"{scale.warm_gap} spaced {scale.gap * 1000:.0f} ms apart"
    )
    bwrap = bwrap_path()
    with (
        scratch() as ws,
        Session(Policy(workspace=ws), cwd=ws) as s,
        Session(Policy(workspace=ws, default_protected=False), cwd=ws) as unguarded,
    ):

        def bare() -> None:
            check_rc(quiet(["true"], ws), "true")

        def sandboxed() -> None:
            check_rc(_quiet(s, ["true"]), "s.run")

        def bare_capture() -> None:
            r = subprocess.run(["true"], cwd=ws, stdin=DEVNULL, capture_output=True, check=False)
            check_rc(r.returncode, "true")

        def sandboxed_capture() -> None:
            check_rc(s.run(["true"], stdin=DEVNULL, capture_output=True).returncode, "s.run")

        def sandboxed_unguarded() -> None:
            check_rc(_quiet(unguarded, ["true"]), "s.run (no guard)")

        fns: dict[str, Callable[[], None]] = {
            "bare": bare,
            "session": sandboxed,
            "no guard": sandboxed_unguarded,
        }
        if bwrap:
            argv = [bwrap, *BWRAP_ARGS, "true"]

            def bubblewrap() -> None:
                check_rc(quiet(argv, ws), "bwrap")

            fns["bwrap"] = bubblewrap
        captures = {"bare": bare_capture, "session": sandboxed_capture}
        for fn in [*fns.values(), *captures.values()]:
            for _ in range(20):
                fn()
        b2b = blocked(fns, scale.warm)
        cap = blocked(captures, scale.warm)
        spaced = blocked(fns, scale.warm_gap, gap=scale.gap)
        split = _split(s, scale.warm, 0.0)
        split_gap = _split(s, scale.warm_gap, scale.gap)
        aio = _arun(s, scale.warm)
    with scratch() as ws:
        cpu = {
            "bare": _cpu_per_command(ws, None, scale.warm_gap),
            "session": _cpu_per_command(ws, Policy(workspace=ws), scale.warm_gap),
            "no guard": _cpu_per_command(
                ws, Policy(workspace=ws, default_protected=False), scale.warm_gap
            ),
        }

    base = median(b2b["bare"])
    sec.add('bare `subprocess.run(["true"])`, back-to-back', ms(base))
    if bwrap:
        sec.add(
            "bwrap `--unshare-all` (cold sandbox each), back-to-back",
            ms(median(b2b["bwrap"])),
            ratio(median(b2b["bwrap"]), base, "bare"),
        )
    t = median(b2b["session"])
    sec.add(
        '`Session.run(["true"])`, back-to-back',
        ms(t),
        ratio(t, base, "bare"),
        verdict(t <= WARM_TARGET * base, "<= 2.5x bare"),
    )
    t = median(b2b["no guard"])
    sec.add("  same, name guard off (`default_protected=False`)", ms(t), ratio(t, base, "bare"))
    t = median(aio)
    sec.add('`await Session.arun(["true"])`, back-to-back', ms(t), ratio(t, base, "bare"))
    cbase = median(cap["bare"])
    sec.add("bare `subprocess.run(capture_output=True)`", ms(cbase))
    t = median(cap["session"])
    sec.add("`Session.run(capture_output=True)`", ms(t), ratio(t, cbase, "bare capture"))
    gbase = median(spaced["bare"])
    gap = f"{scale.gap * 1000:.0f} ms gap"
    sec.add(f'bare `subprocess.run(["true"])`, {gap}', ms(gbase))
    if bwrap:
        t = median(spaced["bwrap"])
        sec.add(f"bwrap `--unshare-all`, {gap}", ms(t), ratio(t, gbase, "bare"))
    t = median(spaced["session"])
    sec.add(
        f'`Session.run(["true"])`, {gap}',
        ms(t),
        ratio(t, gbase, "bare"),
        verdict(t <= WARM_GAP_TARGET * gbase, f"<= {WARM_GAP_TARGET:g}x bare"),
    )
    t = median(spaced["no guard"])
    sec.add("  same, name guard off", ms(t), ratio(t, gbase, "bare"))
    for label, (a, b) in (("back-to-back", split), (gap, split_gap)):
        sec.add(f"  split, {label}: request until started (`spawn`)", ms(median(a)))
        sec.add(f"  split, {label}: started until exit report (`wait`)", ms(median(b)))
    sec.add(
        "  CPU per command, all processes: bare",
        ms(cpu["bare"][0]),
        f"caller {ms(cpu['bare'][1])}, command {ms(cpu['bare'][0] - cpu['bare'][1])}",
    )
    for key, label in (("session", "session"), ("no guard", "session, name guard off")):
        total, host = cpu[key]
        sec.add(
            f"  CPU per command, all processes: {label}",
            ms(total),
            f"{ratio(total, cpu['bare'][0], 'bare')}; host {ms(host)}, sandbox side "
            f"(runner, init, guard, command) {ms(total - host)}",
        )
    fork = _probe(FORK_PROBE, max(20, scale.warm_gap))
    if fork is not None:
        sec.add("  os.fork()+_exit+wait of a runner-sized interpreter", ms(fork))
    rtt = _probe(RTT_PROBE, scale.warm)
    if rtt is not None:
        sec.add("  request + reply over the session protocol (3 fds), Python echo", ms(rtt))
    if not bwrap:
        sec.notes.append("bubblewrap is not installed: no bwrap baseline")
    return sec


def _cpu_per_command(ws: str, policy: Policy | None, n: int) -> tuple[float, float]:
    """CPU seconds one ``true`` costs all processes together (host, runners, init, guard,
    command), and the part of it this process spent itself: a session with ``n`` commands
    minus one with none, both counted from before ``start`` to after ``close`` (everything
    reaped into this process's totals by then). ``policy=None``: bare ``subprocess.run``."""

    def own() -> float:  # getrusage: os.times counts in clock ticks (10 ms)
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def everyone() -> float:
        k = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own() + k.ru_utime + k.ru_stime

    if policy is None:
        c0, h0 = everyone(), own()
        for _ in range(n):
            check_rc(quiet(["true"], ws), "true")
        return (everyone() - c0) / n, (own() - h0) / n
    spent = []
    for k in (0, n):
        c0, h0 = everyone(), own()
        with Session(policy, cwd=ws) as s:
            for _ in range(k):
                check_rc(_quiet(s, ["true"]), "s.run")
            time.sleep(SETTLE)
        spent.append((everyone() - c0, own() - h0))
    return (spent[1][0] - spent[0][0]) / n, (spent[1][1] - spent[0][1]) / n


def _split(s: Session, n: int, gap: float) -> tuple[list[float], list[float]]:
    """``spawn`` and ``wait`` timed separately: request until the runner reports the command
    started (message, init, vfork+exec, report) vs the rest (the command, its exit report)."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        p = s.spawn(["true"], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        t1 = time.perf_counter()
        check_rc(p.wait(), "s.spawn")
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return a, b


def _arun(s: Session, n: int) -> list[float]:
    """The asyncio path, back-to-back, in a loop of its own."""

    async def go() -> list[float]:
        out: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await s.arun(["true"], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
            out.append(time.perf_counter() - t0)
            check_rc(r.returncode, "s.arun")
        return out

    return asyncio.run(go())


FORK_PROBE = r"""
import os, statistics, sys, time
from ringfence.platforms.linux import sandbox_side  # the runner's modules, so its size
import gc
gc.freeze(); gc.disable()
ts = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    ts.append(time.perf_counter() - t0)
print(statistics.median(ts))
"""


RTT_PROBE = r"""
import os, socket, statistics, sys, time
from ringfence.platforms.linux import protocol  # the session's own wire format
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
pid = os.fork()
if pid == 0:  # echo: what the runner does with a request, minus the work
    a.close()
    while (got := protocol.recv(b)) is not None:
        msg, fds = got
        for fd in fds:
            os.close(fd)
        protocol.send(b, {"id": msg["id"], "started": 1})
    os._exit(0)
b.close()
null = os.open(os.devnull, os.O_RDWR)
req = {"op": "run", "argv": ["true"], "env": None, "cwd": None, "pty": None}
ts = []
for i in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    protocol.send(a, {**req, "id": i}, [null, null, null])
    protocol.recv(a)
    ts.append(time.perf_counter() - t0)
a.close()
os.waitpid(pid, 0)
print(statistics.median(ts))
"""


def _probe(script: str, n: int) -> float | None:
    """A median (seconds) printed by a small script in a fresh interpreter, or None if the
    internals it uses have moved."""
    r = subprocess.run(
        [sys.executable, "-c", script, str(n)], capture_output=True, text=True, check=False
    )
    try:
        return float(r.stdout.strip())
    except ValueError:
        return None


# -- stdout throughput ---------------------------------------------------------------------------
def _drain(f: IO[bytes] | None) -> int:
    """Read a pipe to its end through one reused buffer; returns the byte count."""
    assert f is not None
    buf = memoryview(bytearray(MIB))
    total = 0
    while True:
        n = f.readinto(buf)  # type: ignore[attr-defined]
        if not n:
            return total
        total += n


def throughput(scale: Scale) -> Section:
    """Bytes from a command's stdout into the caller, bare and sandboxed.

    Where the scheduler puts the writer and the reader decides pipe throughput more than
    anything else on a 2-vCPU VM (3-4x, and in opposite directions for 8 KiB and 1 MiB
    writes), and it picks differently from run to run. So both sides are pinned: the reader
    (this thread) to CPU 0, the writer with ``taskset`` (the same wrapper bare and sandboxed)
    to CPU 0 or CPU 1, and each placement gets its own rows.
    """
    size = scale.mib * MIB
    head = ["head", "-c", str(size), "/dev/zero"]
    dd = ["dd", "if=/dev/zero", "bs=1M", f"count={scale.mib}", "status=none"]
    sec = Section(
        f"stdout throughput: {scale.mib} MiB of zeros, whole command (spawn to exit), "
        f"median of {scale.throughput_reps}; reader on CPU 0"
    )
    cpus = sorted(os.sched_getaffinity(0))
    places = [("same CPU", cpus[0])] + ([("other CPU", cpus[1])] if len(cpus) > 1 else [])
    saved = os.sched_getaffinity(0)
    with scratch() as ws, Session(Policy(workspace=ws), cwd=ws) as s:

        def bare_pipe(argv: list[str]) -> None:
            p = subprocess.Popen(argv, cwd=ws, stdin=DEVNULL, stdout=PIPE, bufsize=0)
            got = _drain(p.stdout)
            assert p.stdout is not None
            p.stdout.close()
            check_rc(p.wait(), argv[0])
            _check_size(got, size)

        def session_pipe(argv: list[str]) -> None:
            p = s.spawn(argv, stdin=DEVNULL, stdout=PIPE)
            got = _drain(p.stdout)
            assert p.stdout is not None
            p.stdout.close()
            check_rc(p.wait(), f"{argv[0]} (sandboxed)")
            _check_size(got, size)

        def session_run(argv: list[str]) -> None:
            check_rc(s.run(argv, stdin=DEVNULL, stdout=PIPE).returncode, "run (sandboxed)")

        fns: dict[str, Callable[[], None]] = {}
        for place, cpu in places:
            pin = ["taskset", "-c", str(cpu)]
            for tool, argv in (("head", [*pin, *head]), ("dd", [*pin, *dd])):
                fns[f"bare {tool} {place}"] = functools.partial(bare_pipe, argv)
                fns[f"session {tool} {place}"] = functools.partial(session_pipe, argv)
            fns[f"session run {place}"] = functools.partial(session_run, [*pin, *head])
        fns["bare null"] = lambda: check_rc(quiet(head, ws), "head")
        fns["session null"] = lambda: check_rc(_quiet(s, head), "head (sandboxed)")
        os.sched_setaffinity(0, {cpus[0]})
        try:
            for fn in fns.values():
                fn()
            times = blocked(fns, scale.throughput_reps, blocks=scale.throughput_reps)
        finally:
            os.sched_setaffinity(0, saved)

    def rate(name: str) -> float:
        return scale.mib / median(times[name])

    def spread(name: str) -> str:
        rates = [scale.mib / x for x in times[name]]
        return f"runs {min(rates):,.0f}-{max(rates):,.0f}"

    def row(name: str, label: str, base: str | None, target: bool = False) -> None:
        t = rate(name)
        if base is None:
            sec.add(label, f"{t:,.0f} MiB/s", spread(name))
            return
        b = rate(base)
        ok = verdict(t >= THROUGHPUT_TARGET * b, ">= 0.95x bare") if target else ""
        sec.add(label, f"{t:,.0f} MiB/s", f"{ratio(t, b, 'bare')}; {spread(name)}", ok)

    for place, _ in places:
        row(f"bare head {place}", f"bare `head -c` -> pipe, writer on {place}", None)
        row(
            f"session head {place}",
            f"`Session.spawn(head -c)` -> pipe, writer on {place}",
            f"bare head {place}",
            target=True,
        )
        row(
            f"session run {place}",
            f"`Session.run(head -c, stdout=PIPE)` (its own drain), {place}",
            f"bare head {place}",
        )
        row(f"bare dd {place}", f"bare `dd bs=1M` -> pipe, writer on {place}", None)
        row(
            f"session dd {place}",
            f"`Session.spawn(dd bs=1M)` -> pipe, writer on {place}",
            f"bare dd {place}",
        )
    row("bare null", "bare `head -c` -> `/dev/null`, unpinned", None)
    row("session null", "`Session.run(head -c)` -> `/dev/null`, unpinned", "bare null")
    sec.notes.append(
        "`head -c` moves 8 KiB per read and write (256 system calls per MiB), `dd bs=1M` two "
        "per MiB; the `/dev/null` rows have no pipe and no reader, only the command's own "
        "system calls (each passes the sandbox's seccomp filters)"
    )
    return sec


def _check_size(got: int, want: int) -> None:
    if got != want:
        raise SystemExit(f"bench: read {got} bytes, expected {want}")


# -- setup cost ----------------------------------------------------------------------------------
def setup(scale: Scale) -> Section:
    sec = Section(
        f"setup cost as the policy grows: median of {scale.setup_reps}; API = "
        '`Session(policy)` + `start()` + first `run(["true"])` + `close()`'
    )
    configs: list[tuple[str, int, int]] = [("workspace only", 0, 0)]
    configs += [(f"{n} writable roots", n, 0) for n in scale.roots if n]
    configs += [(f"{n} protected paths", 0, n) for n in scale.protected if n]
    with scratch() as base:
        ws = os.path.join(base, "ws")
        os.mkdir(ws)
        roots = []
        for i in range(max(scale.roots)):
            d = os.path.join(base, f"w{i:03d}")
            os.mkdir(d)
            roots.append(d)
        protected = []
        for i in range(max(scale.protected)):
            f = os.path.join(ws, f"p{i:04d}")
            with open(f, "w"):
                pass
            protected.append(f)
        keys = ("compile", "start", "first", "close", "cli")
        results: dict[str, dict[str, list[float]]] = {
            label: {k: [] for k in keys} for label, _, _ in configs
        }
        for _ in range(scale.setup_reps):
            for label, nr, np_ in configs:
                r = results[label]
                policy = Policy(
                    workspace=ws, writable_roots=tuple(roots[:nr]), protected=tuple(protected[:np_])
                )
                t0 = time.perf_counter()
                s = Session(policy, cwd=ws)
                t1 = time.perf_counter()
                s.start()
                t2 = time.perf_counter()
                check_rc(_quiet(s, ["true"]), "s.run")
                t3 = time.perf_counter()
                s.close()
                t4 = time.perf_counter()
                for key, dt in zip(
                    ("compile", "start", "first", "close"),
                    (t1 - t0, t2 - t1, t3 - t2, t4 - t3),
                    strict=True,
                ):
                    r[key].append(dt)
                flags: list[str] = []
                for d in roots[:nr]:
                    flags += ["--writable", d]
                for f in protected[:np_]:
                    flags += ["--protect", f]
                argv = [sys.executable, "-P", "-m", "ringfence", "run", *flags, "--", "true"]
                t0 = time.perf_counter()
                rc = quiet(argv, ws)
                r["cli"].append(time.perf_counter() - t0)
                check_rc(rc, f"ringfence run ({label})")
    first = configs[0][0]
    api0 = _api_total(results[first])
    cli0 = median(results[first]["cli"])
    for label, _, _ in configs:
        r = results[label]
        api = _api_total(r)
        parts = ", ".join(
            f"{k} {median(r[k]) * 1000:.0f}" for k in ("compile", "start", "first", "close")
        )
        sec.add(
            f"API, {label} ({parts} ms)",
            ms(api),
            ratio(api, api0, "workspace only") if label != first else "",
        )
        cli = median(r["cli"])
        sec.add(
            f"CLI `ringfence run`, {label}",
            ms(cli),
            ratio(cli, cli0, "workspace only") if label != first else "",
        )
    sec.notes.append(
        "writable roots are sibling directories of the workspace; protected paths are existing "
        "files inside it (each is bind-mounted read-only onto itself); the name guard is on"
    )
    return sec


def _api_total(r: dict[str, list[float]]) -> float:
    return sum(median(r[k]) for k in ("compile", "start", "first", "close"))


# -- load ----------------------------------------------------------------------------------------
def _snapshot(s: Session | None) -> dict[str, Any]:
    host = os.getpid()
    snap: dict[str, Any] = {
        "fds": fd_count(),
        "rss": status_kib(host, "VmRSS"),
        "threads": threading.active_count(),
    }
    if s is not None:
        outer, inner = _runner_pids(s)
        snap["outer"], snap["inner"] = outer, inner
        snap["outer_rss"] = status_kib(outer, "VmRSS") if outer else None
        snap["inner_rss"] = status_kib(inner, "VmRSS") if inner else None
        snap["inner_fds"] = fd_count(inner) if inner else None
        snap["procs"] = len(descendants(outer)) + 1 if outer else None
        # The command inits and their guards: one serves command after command now.
        kids = descendants(inner) if inner else []
        snap["kids_rss"] = sum(status_kib(p, "VmRSS") or 0 for p in kids) if inner else None
        snap["kids_fds"] = sum(fd_count(p) or 0 for p in kids) if inner else None
    return snap


def _zombies(s: Session | None) -> int:
    parents = {os.getpid()}
    if s is not None:
        outer, _ = _runner_pids(s)
        if outer:
            parents |= {outer, *descendants(outer)}
    return zombies(parents)


def load(scale: Scale) -> Section:
    n = scale.sequential
    c = scale.concurrent
    sec = Section(f"one session under load: {n:,} sequential `true`, {c} concurrent `sleep 1`")
    with scratch() as ws:
        # Baselines first, so the session's threads and fds are not in their numbers.
        before = _snapshot(None)
        cpu0 = own_cpu()
        bare = _sequential(lambda: quiet(["true"], ws), n)
        bare_cpu = (own_cpu() - cpu0) / n
        time.sleep(SETTLE)
        after = _snapshot(None)
        bare_z = _zombies(None)
        bare_conc, bare_peak = _concurrent(lambda: quiet(["sleep", "1"], ws), c, None)
        time.sleep(SETTLE)
        bare_conc_z = _zombies(None)
        # CPU time is counted from before the session starts to after it closed: by then
        # the runners, every init and every command have been reaped into our own totals.
        cpu0 = own_cpu()
        with Session(Policy(workspace=ws), cwd=ws) as s:
            # A few commands first: from the second one on, the runner keeps two inits
            # prepared (one before), and "before" should count both.
            for _ in range(3):
                check_rc(_quiet(s, ["true"]), "s.run")
            time.sleep(SETTLE)
            s_before = _snapshot(s)
            seq = _sequential(lambda: _quiet(s, ["true"]), n)
            time.sleep(SETTLE)
            s_after = _snapshot(s)
            seq_z = _zombies(s)
        seq_cpu = (own_cpu() - cpu0) / n
        with Session(Policy(workspace=ws), cwd=ws) as s:
            check_rc(_quiet(s, ["true"]), "s.run")
            conc, peak = _concurrent(lambda: _quiet(s, ["sleep", "1"]), c, s)
            time.sleep(SETTLE)
            s_end = _snapshot(s)
            conc_z = _zombies(s)
            outer, _ = _runner_pids(s)
        time.sleep(SETTLE)
        closed_z = _zombies(None)
        left = os.path.exists(f"/proc/{outer}") if outer else False
        closed = _snapshot(None)

    total_b, per_b = bare
    total_s, per_s = seq
    sec.add(
        f"bare: {n:,} x `subprocess.run`, total",
        f"{total_b:.2f} s",
        f"median {ms(median(per_b))}, p99 {ms(p99(per_b))}",
    )
    sec.add(
        f"session: {n:,} x `run`, total",
        f"{total_s:.2f} s",
        f"{total_s / total_b:.2f}x bare; median {ms(median(per_s))}, p99 {ms(p99(per_s))}",
    )
    sec.add(
        "  CPU time per command, all processes (host, runners, inits, command)",
        ms(seq_cpu),
        f"{seq_cpu / bare_cpu:.2f}x bare ({ms(bare_cpu)})",
    )
    sec.add(
        "  host fds, before -> after",
        f"{fmt_opt(s_before['fds'])} -> {fmt_opt(s_after['fds'])}",
        f"bare: {fmt_opt(before['fds'])} -> {fmt_opt(after['fds'])}",
    )
    sec.add(
        "  host RSS, before -> after",
        f"{fmt_kib(s_before['rss'])} -> {fmt_kib(s_after['rss'])}",
        f"bare: {fmt_kib(before['rss'])} -> {fmt_kib(after['rss'])}",
    )
    sec.add(
        "  outer runner RSS, before -> after",
        f"{fmt_kib(s_before['outer_rss'])} -> {fmt_kib(s_after['outer_rss'])}",
    )
    sec.add(
        "  sandbox pid 1 runner RSS, before -> after",
        f"{fmt_kib(s_before['inner_rss'])} -> {fmt_kib(s_after['inner_rss'])}",
    )
    sec.add(
        "  sandbox pid 1 runner fds, before -> after",
        f"{fmt_opt(s_before['inner_fds'])} -> {fmt_opt(s_after['inner_fds'])}",
    )
    sec.add(
        "  inits and their guards, RSS summed, before -> after",
        f"{fmt_kib(s_before['kids_rss'])} -> {fmt_kib(s_after['kids_rss'])}",
        f"fds {fmt_opt(s_before['kids_fds'])} -> {fmt_opt(s_after['kids_fds'])}",
    )
    sec.add(
        "  runner processes, before -> after",
        f"{fmt_opt(s_before['procs'])} -> {fmt_opt(s_after['procs'])}",
    )
    sec.add("  zombies (host's or runners' children)", str(seq_z), f"bare: {bare_z}")
    sec.add(
        f'bare: {c} threads x `subprocess.run(["sleep", "1"])`',
        f"{bare_conc:.2f} s",
        f"peak host fds {fmt_opt(bare_peak['fds'])}, RSS {fmt_kib(bare_peak['rss'])}",
    )
    sec.add(
        f'session: {c} threads x `run(["sleep", "1"])`',
        f"{conc:.2f} s",
        ratio(conc, bare_conc, "bare"),
    )
    sec.add(
        "  peak while running: host fds / RSS", f"{fmt_opt(peak['fds'])} / {fmt_kib(peak['rss'])}"
    )
    sec.add(
        "  peak while running: runner processes / pid 1 RSS",
        f"{fmt_opt(peak.get('procs'))} / {fmt_kib(peak.get('inner_rss'))}",
    )
    sec.add(
        "  after: host fds / runner processes / zombies",
        f"{fmt_opt(s_end['fds'])} / {fmt_opt(s_end['procs'])} / {conc_z}",
        f"bare zombies: {bare_conc_z}",
    )
    sec.add(
        "  after close: host fds / zombies / runner alive",
        f"{fmt_opt(closed['fds'])} / {closed_z} / {'yes' if left else 'no'}",
        f"host fds at start: {fmt_opt(before['fds'])}",
    )
    return sec


def _sequential(fn: Callable[[], int], n: int) -> tuple[float, list[float]]:
    per: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        a = time.perf_counter()
        check_rc(fn(), "sequential command")
        per.append(time.perf_counter() - a)
    return time.perf_counter() - t0, per


def _concurrent(fn: Callable[[], int], c: int, s: Session | None) -> tuple[float, dict[str, Any]]:
    """``c`` threads each run one command at once; the peak fds/RSS are sampled meanwhile."""
    peak: dict[str, Any] = {}

    def keep_max(snap: dict[str, Any]) -> None:
        for k, v in snap.items():
            if isinstance(v, int) and k not in ("outer", "inner"):
                peak[k] = max(peak.get(k, v), v)

    with ThreadPoolExecutor(max_workers=c) as pool:
        t0 = time.perf_counter()
        futures = [pool.submit(fn) for _ in range(c)]
        while not all(f.done() for f in futures):
            keep_max(_snapshot(s))
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        for f in futures:
            check_rc(f.result(), "concurrent command")
    return elapsed, peak
