"""Cold start: one ``ringfence run -- true`` from nothing, against the floors it cannot beat.

The floors are a bare ``true`` (fork+exec from this process) and an interpreter that does
nothing (``python -I -S -c pass``; ``python -c pass`` adds ``site``, which an installed package
needs to be found at all). A second part times the phases of the same path inside one fresh
interpreter, so the reading can say where the milliseconds go.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

from benchlib import (
    BWRAP_ARGS,
    Scale,
    Section,
    blocked,
    bwrap_path,
    check_rc,
    median,
    ms,
    quiet,
    ratio,
    scratch,
    verdict,
)

COLD_TARGET = 0.025  # seconds
# A `run --session` call may cost at most this much more than an interpreter doing nothing
# (`python -I -S -c pass`, measured in the same run): about one warm command.
SESSION_SLACK = 0.005  # seconds
BARE = "bare `true` (fork+exec)"
PY_ISS = "`python -I -S -c pass`"
PY_SITE = "`python -c pass` (with site)"
MAIN = "`python -m ringfence run -- true`"
SESSION_SCRIPT = "`ringfence run --session bench -- true` (the command)"
SESSION_MAIN = "`python -m ringfence run --session bench -- true`"

# The CLI's own path (cli.run.cmd_run -> engine -> process.run_sandboxed), phase by phase. It
# reaches into internal names (``_plan``, ``_fork``): if they move, the breakdown says so and
# the rest of the benchmark still runs.
PHASES = r"""
import time
t0 = time.perf_counter()
import json, os, subprocess, sys
try:
    from ringfence import cli, process
    from ringfence.cli import flags, run
    from ringfence.engine import backends
    from ringfence.session import Session
    t1 = time.perf_counter()
    ns = cli.build_parser().parse_args(["run", "--", "true"])
    resolved = flags.resolve_flags(ns)
    plan = backends.linux_plan(resolved.policy, resolved.cwd)
    t2 = time.perf_counter()
    s = Session(_plan=plan, _fork=True).start()
    t3 = time.perf_counter()
    null = subprocess.DEVNULL
    p = s.spawn(["true"], stdin=null, stdout=null, stderr=null)
    t4 = time.perf_counter()
    rc = p.wait()
    t5 = time.perf_counter()
    s.close()
    t6 = time.perf_counter()
    out = {"import": t1 - t0, "compile": t2 - t1, "start": t3 - t2, "spawn": t4 - t3,
           "wait": t5 - t4, "close": t6 - t5, "rc": rc}
except Exception as e:
    out = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
"""


def _run(argv: list[str], cwd: str) -> None:
    check_rc(quiet(argv, cwd), " ".join(argv[:4]))


def cold(scale: Scale) -> Section:
    py = sys.executable
    sec = Section(f"cold start: fresh process per sample, median of {scale.cold}")
    with scratch() as ws:
        variants: dict[str, list[str]] = {
            BARE: ["true"],
            PY_ISS: [py, "-I", "-S", "-c", "pass"],
            PY_SITE: [py, "-c", "pass"],
        }
        bwrap = bwrap_path()
        if bwrap:
            variants["`bwrap --unshare-all ... true`"] = [bwrap, *BWRAP_ARGS, "true"]
        rf = [py, "-m", "ringfence", "run"]
        variants[MAIN] = [*rf, "--", "true"]
        script = os.path.join(os.path.dirname(py), "ringfence")
        if os.access(script, os.X_OK):
            variants["`ringfence run -- true` (the command)"] = [script, "run", "--", "true"]
        variants["`... run --no-default-protect -- true` (no guard)"] = [
            *rf,
            "--no-default-protect",
            "--",
            "true",
        ]
        # A session server started once: the path for agents that shell out per command.
        sessions = os.path.join(ws, ".sessions")
        os.mkdir(sessions, 0o700)
        os.environ["RINGFENCE_SESSION_DIR"] = sessions
        check_rc(
            quiet([*rf[:-1], "session", "start", "--name", "bench", "--no-audit"], ws), "start"
        )
        if os.access(script, os.X_OK):
            variants[SESSION_SCRIPT] = [script, "run", "--session", "bench", "--", "true"]
        variants[SESSION_MAIN] = [*rf, "--session", "bench", "--", "true"]
        try:
            for argv in variants.values():  # warm the page cache and the bytecode cache
                for _ in range(2):
                    _run(argv, ws)
            times = blocked(
                {k: functools.partial(_run, a, ws) for k, a in variants.items()},
                scale.cold,
                blocks=min(scale.cold, 5),
            )
        finally:
            quiet([*rf[:-1], "session", "stop", "--name", "bench"], ws)
            del os.environ["RINGFENCE_SESSION_DIR"]
        true_t = median(times[BARE])
        py_t = median(times[PY_ISS])
        for name, ts in times.items():
            t = median(ts)
            if name == BARE:
                vs = ""
            elif name == PY_ISS:
                vs = ratio(t, true_t, "true")
            else:
                vs = f"{ratio(t, py_t, 'py -I -S')}, {ratio(t, true_t, 'true')}"
            hits = (MAIN, SESSION_SCRIPT, SESSION_MAIN)
            target = verdict(t <= COLD_TARGET, "<= 25 ms") if name in hits else ""
            if name in (SESSION_SCRIPT, SESSION_MAIN):
                target = verdict(t <= py_t + SESSION_SLACK, "<= py -I -S + 5 ms")
            sec.add(name, ms(t), vs, target)
        if not bwrap:
            sec.notes.append("bubblewrap is not installed: no bwrap baseline")
        _phases(sec, scale, ws, times[PY_SITE], median(times[MAIN]))
    return sec


def _phases(sec: Section, scale: Scale, ws: str, interp: list[float], whole: float) -> None:
    """Where a cold run's time goes, each phase timed inside one fresh interpreter."""
    samples: list[dict[str, float]] = []
    for _ in range(scale.cold):
        r = subprocess.run(
            [sys.executable, "-c", PHASES], cwd=ws, capture_output=True, text=True, check=False
        )
        try:
            got = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            got = {"error": (r.stderr.strip().splitlines() or ["no output"])[-1]}
        if "error" in got:
            sec.notes.append(f"phase breakdown unavailable: {got['error']}")
            return
        check_rc(int(got["rc"]), "true (phase breakdown)")
        samples.append(got)
    labels = [
        ("import", "  phase: import ringfence.cli + engine + session"),
        ("compile", "  phase: parse flags, compile the policy"),
        ("start", "  phase: start the sandbox (runner fork ... ready)"),
        ("spawn", "  phase: first command: request until started"),
        ("wait", "  phase: first command: started until exit report"),
        ("close", "  phase: close (runner exit, cleanup)"),
    ]
    start = median(interp)
    sec.add("  phase: interpreter + site (= `python -c pass`)", ms(start))
    total = start
    for key, label in labels:
        t = median([s[key] for s in samples])
        total += t
        sec.add(label, ms(t))
    sec.add("  phases summed (medians)", ms(total))
    sec.add("  rest: `-m` start-up, interpreter exit (whole run - summed)", ms(whole - total))
