"""What the name guard adds to git-heavy commands, and how that compares with another commit.

    .venv/bin/python bench/git_guard.py [--runs N] [--files N] [--compare REV]

Measures (median wall time over N runs, each in a fresh copy of the same repository):
* ``git status`` in a repository of ``--files`` files;
* ``git add -A && git commit`` of ``--files`` new files (each a loose object: several guarded
  calls per file inside ``.git``);
bare, under ``ringfence run`` with the name guard (the default), and without it
(``--no-default-protect``). The guard's added cost is the difference of the last two.

``--compare REV`` measures the committed tree ``REV`` in the same run, interleaved run by run
with this working tree, so the two guards are compared on the same machine at the same time
(the line "guard cost, this tree / REV" is the ratio of their added costs).
Use the virtualenv's own interpreter (a pyenv shim adds ~75 ms per start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import benchlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def _git(cwd: str, *args: str) -> None:
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _make_repo(base: str, files: int) -> str:
    """A repository with one commit of ``files`` files, and ``files`` more uncommitted."""
    repo = os.path.join(base, "template")
    os.makedirs(repo)
    _git(repo, "init", "-q", ".")
    for i in range(files):
        d = os.path.join(repo, f"d{i % 20}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.txt"), "w") as f:
            f.write(f"file {i}\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    for i in range(files):
        with open(os.path.join(repo, f"d{i % 20}", f"new{i}.txt"), "w") as f:
            f.write(f"new {i}\n")
    return repo


def _export(rev: str, base: str) -> str:
    """``src/`` of the committed tree ``rev``, for PYTHONPATH."""
    dest = os.path.join(base, "src-" + rev.replace("/", "_"))
    os.makedirs(dest)
    return benchlib.export_src(REPO, rev, dest)


def _timed(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--compare", metavar="REV", help="also measure this committed tree")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="ringfence-bench-git-", dir="/var/tmp")
    try:
        template = _make_repo(base, args.files)
        trees: dict[str, str | None] = {"this tree": None}
        if args.compare:
            trees[args.compare] = _export(args.compare, base)
        workloads = {
            "git status": ["git", "status", "--porcelain"],
            f"git add -A && git commit ({args.files} new files)": [
                "sh", "-c", "git add -A && git commit -qm bench",
            ],
        }  # fmt: skip
        variants: dict[str, Callable[[list[str], str | None], list[str]]] = {
            "bare": lambda w, _src: w,
            "ringfence, guard": lambda w, _src: [
                sys.executable, "-P", "-m", "ringfence", "run", "--", *w,
            ],
            "ringfence, no guard": lambda w, _src: [
                sys.executable, "-P", "-m", "ringfence", "run", "--no-default-protect", "--", *w,
            ],
        }  # fmt: skip
        # A private bytecode cache, warmed below: this environment may set
        # PYTHONDONTWRITEBYTECODE, and a cold start would then time the compiler.
        pycache = os.path.join(base, "pycache")
        times: dict[tuple[str, str, str], list[float]] = {}
        for run in range(args.runs + 1):  # interleaved: load changes hit every variant alike
            for wname, work in workloads.items():
                for tname, src in trees.items():
                    for vname, make in variants.items():
                        if vname == "bare" and tname != "this tree":
                            continue
                        ws = os.path.join(base, "ws")
                        shutil.rmtree(ws, ignore_errors=True)
                        shutil.copytree(template, ws, symlinks=True)
                        env = {**os.environ, **GIT_ENV, "PYTHONPYCACHEPREFIX": pycache}
                        env.pop("PYTHONDONTWRITEBYTECODE", None)
                        if src is not None:
                            env["PYTHONPATH"] = os.pathsep.join(
                                p for p in (src, env.get("PYTHONPATH")) if p
                            )
                        ms = _timed(make(work, src), ws, env)
                        if run:  # run 0 warms the caches
                            times.setdefault((wname, tname, vname), []).append(ms)
        print(f"median of {args.runs} runs, {args.files} files; load: {os.getloadavg()[0]:.2f}")
        for wname in workloads:
            print(f"\n{wname}")
            bare = statistics.median(times[(wname, "this tree", "bare")])
            print(f"  {'bare':<40} {bare:9.1f} ms")
            added: dict[str, float] = {}
            for tname in trees:
                on = statistics.median(times[(wname, tname, "ringfence, guard")])
                off = statistics.median(times[(wname, tname, "ringfence, no guard")])
                added[tname] = on - off
                print(f"  {tname + ': ringfence, no guard':<40} {off:9.1f} ms  {off / bare:6.2f}x")
                print(f"  {tname + ': ringfence, guard':<40} {on:9.1f} ms  {on / bare:6.2f}x")
                print(f"  {tname + ': guard adds':<40} {on - off:9.1f} ms")
            if args.compare and added[args.compare] > 0:
                ratio = added["this tree"] / added[args.compare]
                print(f"  guard cost, this tree / {args.compare}: {ratio:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
