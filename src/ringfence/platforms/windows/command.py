"""One command on Windows, end to end: facts → plan → grants → runner.

The order matters: the plan is compiled from facts gathered just now (links resolved, existing
protected names found), the grants (and the check that every deny ACE is still in place) come
before the command starts, and the runner is only reached with a plan that compiled. Any step
that cannot be done stops the command; nothing runs with less than the plan.

The command's temporary directory is a fresh directory inside one per-user ``tmp`` root that
is granted once (so the grants journal does not grow with every command) and removed after.

Not run on Windows yet: tested on Linux over a simulated machine, file system and runner.
"""

from __future__ import annotations

import ntpath
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import facts as facts_mod
from ringfence.platforms.windows.install import Places, ensure_grants, load_install
from ringfence.platforms.windows.plan import WindowsPlan, compile_windows
from ringfence.platforms.windows.run import RunResult, RunSpec
from ringfence.platforms.windows.setup import WinApi
from ringfence.policy import semantics, winpaths
from ringfence.policy.model import Policy
from ringfence.policy.semantics import WINDOWS

DEFAULT_PATHEXT = ".COM;.EXE;.BAT;.CMD"


@dataclass(frozen=True)
class Ran:
    plan: WindowsPlan
    result: RunResult
    grants_added: int
    notes: tuple[str, ...] = ()


def resolve_program(program: str, env: Mapping[str, str], exists: Callable[[str], bool]) -> str:
    """``program`` as an absolute path, found as Windows would find it on ``PATH`` with
    ``PATHEXT`` (CreateProcess's own search would try the runner's directory first, so the
    search is done here, over the command's environment only)."""
    lower = {k.lower(): v for k, v in env.items()}
    exts = [e for e in lower.get("pathext", DEFAULT_PATHEXT).split(";") if e]
    candidates: list[str] = []
    has_ext = bool(ntpath.splitext(program)[1])

    def with_exts(base: str) -> list[str]:
        return [base] if has_ext else [base + e.lower() for e in exts]

    if ntpath.isabs(program):
        candidates = with_exts(winpaths.normalize("command", program))
    elif "\\" in program or "/" in program:
        raise PolicyError(f"command: {program!r} is a relative path; give an absolute one")
    else:
        for d in lower.get("path", "").split(";"):
            try:
                base = winpaths.normalize("PATH entry", d.strip().strip('"'))
            except PolicyError:
                continue
            candidates += with_exts(base.rstrip("\\") + "\\" + program)
    for c in candidates:
        if exists(c):
            return c
    raise FileNotFoundError(f"{program}: not found on the command's PATH")


def run_command(
    policy: Policy,
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout: float | None,
    home: str,
    places: Places,
    api: WinApi,
    launch: Callable[[RunSpec], RunResult],
    fs: facts_mod.Fs | None = None,
    make_dir: Callable[[str], None] | None = None,
    remove_dir: Callable[[str], None] | None = None,
    tmp_root: str | None = None,
) -> Ran:
    """``tmp_root`` (default ``places.user\\tmp``) holds the per-command temporary
    directories; it is granted once."""
    if not argv:
        raise PolicyError("no command given")
    if not policy.sandboxed:
        raise UnsupportedError("full-access on Windows: run the command directly")
    install = load_install(places)
    if install is None:
        raise SandboxError(
            "ringfence is not set up on this machine: run `ringfence setup` once, elevated"
        )
    if policy.limits.memory is not None:
        raise UnsupportedError("a memory limit is not enforced on Windows yet; drop --limit memory")
    fs = fs or facts_mod.OsFs()
    make_dir = make_dir or _make_private_dir
    remove_dir = remove_dir or (lambda p: shutil.rmtree(p, ignore_errors=True))
    tmp_root = winpaths.normalize(
        "temporary directory", tmp_root or ntpath.join(places.user, "tmp")
    )
    make_dir(tmp_root)
    gathered = facts_mod.gather(
        policy, home=home, temp=tmp_root, profile_roots=api.profile_roots(), environ=env, fs=fs
    )
    plan = compile_windows(policy, gathered.facts, install)
    cwd = winpaths.normalize("--cwd", cwd)
    if not any(semantics.is_under(cwd, r, WINDOWS) for r in (*plan.writable, *plan.read_roots)):
        raise PolicyError(
            f"--cwd {cwd} is outside what the sandbox user may read; use a directory in the "
            "workspace"
        )
    added = ensure_grants(plan, api, places)
    temp = tmp_root + "\\" + secrets.token_hex(8)
    make_dir(temp)
    try:
        command_env = {**env, "TEMP": temp, "TMP": temp}
        program = resolve_program(argv[0], command_env, fs.exists)
        spec = RunSpec(
            user=plan.user,
            restricting_sids=plan.restricting_sids,
            argv=(program, *argv[1:]),
            cwd=cwd,
            env=command_env,
            timeout=timeout,
        )
        result = launch(spec)
    finally:
        remove_dir(temp)
    return Ran(plan, result, added, gathered.notes)


def _make_private_dir(path: str) -> None:
    import os

    os.makedirs(path, mode=0o700, exist_ok=True)
