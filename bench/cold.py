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

ONE_SHOT_TARGET = 3.0  # issue 18: a one-shot run within 3x `python -I -S -c pass`
# A `run --session` call may cost at most this much more than an interpreter doing nothing
# (`python -I -S -c pass`, measured in the same run): about one warm command.
SESSION_SLACK = 0.005  # seconds
BARE = "bare `true` (fork+exec)"
PY_ISS = "`python -I -S -c pass`"
PY_SITE = "`python -c pass` (with site)"
MAIN = "`python -P -m ringfence run -- true`"
ONE_SHOT_SCRIPT = "`ringfence run -- true` (the command)"
NO_CACHE = "`... run -- true`, plan cache off (compiles every time)"
PY_FAST = "`ringfence run -- true`, native launcher off (the Python fast path)"
CACHE_OFF = {"RINGFENCE_PLAN_CACHE": "off"}
NATIVE_OFF = {"RINGFENCE_NATIVE": "off"}
SESSION_SCRIPT = "`ringfence run --session bench -- true` (the command)"
SESSION_MAIN = "`python -P -m ringfence run --session bench -- true`"

# The one-shot path as ``ringfence run -- true`` takes it on a plan-cache hit (oneshot.py),
# phase by phase, in one fresh interpreter. It reaches into internal names (``_where``,
# ``prefork``, ``_fork``, ``_gate``): if they move, the breakdown says so and the rest of the
# benchmark still runs. The entry it reads is the one the `python -P -m ringfence run -- true`
# rows made (same flags, directory, environment and interpreter).
PHASES = r"""
import time
t0 = time.perf_counter()
import json, os, subprocess, sys
try:
    sys.argv = ["ringfence", "run", "--", "true"]
    from ringfence import oneshot
    where = oneshot._where(sys.argv[1:])
    if where is None:
        raise RuntimeError("no plan cache here")
    t1 = time.perf_counter()
    from ringfence.plancache import facts, store
    from ringfence.platforms.linux import plan_model
    entry = store.load(where.directory, where.key, where.secret)
    if entry is None:
        raise RuntimeError("no kept plan")
    from ringfence.platforms.linux import prefork
    prefork.start()
    t2 = time.perf_counter()
    if facts.unchanged(entry.answers) is not None:
        raise RuntimeError("the plan cache missed")
    t3 = time.perf_counter()
    from ringfence.session import Session
    t4 = time.perf_counter()
    s = Session(_plan=entry.plan, _fork=True, _gate=False).start()
    t5 = time.perf_counter()
    null = subprocess.DEVNULL
    p = s.spawn(["true"], stdin=null, stdout=null, stderr=null)
    t6 = time.perf_counter()
    rc = p.wait()
    t7 = time.perf_counter()
    s.close()
    t8 = time.perf_counter()
    out = {"key": t1 - t0, "load": t2 - t1, "check": t3 - t2, "import": t4 - t3,
           "start": t5 - t4, "spawn": t6 - t5, "wait": t7 - t6, "close": t8 - t7, "rc": rc}
except Exception as e:
    out = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
"""


def _run(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> None:
    check_rc(quiet(argv, cwd, env), " ".join(argv[:4]))


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
        rf = [py, "-P", "-m", "ringfence", "run"]
        variants[MAIN] = [*rf, "--", "true"]
        script = os.path.join(os.path.dirname(py), "ringfence")
        if os.access(script, os.X_OK):
            variants[ONE_SHOT_SCRIPT] = [script, "run", "--", "true"]
        variants[NO_CACHE] = [*rf, "--", "true"]
        variants["`... run --no-default-protect -- true` (no guard)"] = [
            *rf,
            "--no-default-protect",
            "--",
            "true",
        ]
        if os.access(script, os.X_OK):
            variants[PY_FAST] = [script, "run", "--", "true"]
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
            for k, argv in variants.items():  # warm the page, bytecode and plan caches
                for _ in range(2):
                    _run(argv, ws, _env_of(k))
            times = blocked(
                {k: functools.partial(_run, a, ws, _env_of(k)) for k, a in variants.items()},
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
            sec.add(name, ms(t), vs, _target(name, t, py_t))
        if not bwrap:
            sec.notes.append("bubblewrap is not installed: no bwrap baseline")
        # the environment the timed runs had: the phases read the entry they kept
        env = {**os.environ, "RINGFENCE_SESSION_DIR": sessions}
        python_path = times.get(PY_FAST, times[MAIN])
        _phases(sec, scale, ws, times[PY_SITE], median(python_path), env=env)
    return sec


def _env_of(variant: str) -> dict[str, str] | None:
    if variant == NO_CACHE:
        return CACHE_OFF
    if variant == PY_FAST:
        return NATIVE_OFF
    return None


def _target(name: str, t: float, py_t: float) -> str:
    if name in (MAIN, ONE_SHOT_SCRIPT, NO_CACHE):
        return verdict(t <= ONE_SHOT_TARGET * py_t, "<= 3x py -I -S")
    if name in (SESSION_SCRIPT, SESSION_MAIN):
        return verdict(t <= py_t + SESSION_SLACK, "<= py -I -S + 5 ms")
    return ""


def _phases(
    sec: Section, scale: Scale, ws: str, interp: list[float], whole: float, *, env: dict[str, str]
) -> None:
    """Where a cold run of the Python fast path goes (the native launcher's is one call),
    each phase timed inside one fresh interpreter."""
    samples: list[dict[str, float]] = []
    for _ in range(scale.cold):
        r = subprocess.run(
            [sys.executable, "-c", PHASES],
            cwd=ws,
            env=env,
            capture_output=True,
            text=True,
            check=False,
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
        ("key", "  phase: import the fast path, the request's key"),
        ("load", "  phase: read and decode the kept plan, fork the runner-to-be"),
        ("check", "  phase: ask the file system again (the runner imports meanwhile)"),
        ("import", "  phase: import the session"),
        ("start", "  phase: start the sandbox (plan handed over ... ready)"),
        ("spawn", "  phase: first command: request until started"),
        ("wait", "  phase: first command: started until exit report"),
        ("close", "  phase: close (runner exit, cleanup)"),
    ]
    start = median(interp)
    sec.add("  the Python fast path, phase by phase:", "")
    sec.add("  phase: interpreter + site (= `python -c pass`)", ms(start))
    total = start
    for key, label in labels:
        t = median([s[key] for s in samples])
        total += t
        sec.add(label, ms(t))
    sec.add("  phases summed (medians)", ms(total))
    sec.add("  rest: `-m` start-up, interpreter exit (whole run - summed)", ms(whole - total))
