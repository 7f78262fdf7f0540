"""Every channel by which a sandboxed command could make host git run its code is closed.

Each channel test plants something from inside the sandbox (every step is tried; the output
records which ones succeeded), then judges on the host:

* the protected entries of every git directory that existed before (hooks, info/, config,
  config.worktree, pointer files, unknown entries), the ``.git`` pointer files and the
  ``core.hooksPath`` directories are byte-identical (and mode-identical) to before;
* a git directory that the command created has only ``*.sample`` hooks, none of the planted
  config keys, and no pointer leading out of the workspace;
* ordinary host git (status, diff, add, commit, checkout, log on a terminal, ...) run in every
  repository involved runs none of the planted commands: each planted command only creates a
  marker file in a host directory the sandbox cannot see, and that directory must stay empty.

A "probe" test per channel plants the same thing with ``--no-default-protect`` and checks
that the judge above does catch it, so a channel test cannot pass for want of a working probe.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

# Inside the sandbox: every step's errors go to stdout (stderr is then only ringfence's own
# report), no user or system git config, nothing stops at the first refusal.
INNER = "exec 2>&1; export HOME=/tmp GIT_CONFIG_NOSYSTEM=1 GIT_EDITOR=true GIT_PAGER=cat\n"
DONE = "plant-finished"
PREP_FAILED = "PREPARATION-FAILED"

# Config keys the plants try to set: none may end up in a git directory's config.
PLANTED_KEYS = (
    "core.fsmonitor",
    "core.hookspath",
    "core.pager",
    "core.editor",
    "core.sshcommand",
    "diff.external",
    "filter.x.clean",
    "alias.st",
    "include.path",
    "credential.helper",
    "submodule.lib.update",
)

# Top-level entries of a git directory that hold git's ordinary data (writable by design); a
# snapshot of "protected entries" is everything else. Nested git directories (modules/*,
# worktrees/*) are found and snapshotted on their own.
_ORDINARY = frozenset(
    {
        "objects",
        "refs",
        "logs",
        "packed-refs",
        "index",
        "HEAD",
        "shallow",
        "lfs",
        "rebase-merge",
        "rebase-apply",
        "sequencer",
        "COMMIT_EDITMSG",
        "MERGE_MODE",
        "AUTO_MERGE",
        "modules",
        "worktrees",
    }
)


@dataclass
class Ctx:
    """One channel test: its runner, workspace, marker directory and host git HOME."""

    rf: Runner
    ws: Path
    marks: Path
    home: Path
    # Set by the pointer setups: host-made git directories full of marker commands.
    evil_in: Path | None = None  # inside the workspace: an existing repository's gitdir
    evil_out: Path | None = None  # outside every writable root
    extra: list[Path] = field(default_factory=list)  # more protected paths to snapshot

    def cmd(self, name: str) -> str:
        """A shell command that creates marker ``name`` and ignores any arguments git adds."""
        return f"touch {self.marks}/{name}; :"

    def hook_text(self, name: str) -> str:
        return f"#!/bin/sh\ntouch {self.marks}/{name}\n"

    def write_hook(self, path: str, name: str) -> str:
        """Shell: write an executable hook that creates marker ``name`` at ``path``."""
        return f"printf '#!/bin/sh\\ntouch %s\\n' {self.marks}/{name} > {path} && chmod +x {path}"

    def cfg_lines(self, section: str, key: str, name: str) -> str:
        """Shell ``printf`` arguments for a config section setting ``key`` to a marker."""
        return f"'[{section}]\\n\\t{key} = \"%s\"\\n' '{self.cmd(name)}'"


# --- host side -------------------------------------------------------------------------------


@pytest.fixture
def home() -> Iterator[Path]:
    """A HOME for host git: no user config of this machine, every repository trusted."""
    d = Path(tempfile.mkdtemp(prefix="ringfence-githome-"))
    (d / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def marks() -> Iterator[Path]:
    """Where planted commands leave markers: host /tmp, which the sandbox never sees."""
    d = Path(tempfile.mkdtemp(prefix="ringfence-marks-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _host_env(home: Path, ws: Path) -> dict[str, str]:
    """Host git's environment. Where a planted setting would replace a default, the default
    is harmless and local: no editor, no pager, an ssh that fails at once (never the
    network), no terminal prompt; repository discovery stops at the workspace's parent."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_SSH": "/bin/false",
        "GIT_SSH_VARIANT": "simple",
        "EDITOR": "true",
        "PAGER": "cat",
        "GIT_CEILING_DIRECTORIES": str(ws.parent),
    }


_ID = ("-c", "user.name=host", "-c", "user.email=host@example.invalid")


def _git(ctx: Ctx, *args: str | Path, cwd: Path | None = None, check: bool = True) -> str:
    r = subprocess.run(
        ["git", *_ID, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_host_env(ctx.home, ctx.ws),
    )
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout.strip()


def _on_a_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run ``argv`` with its stdout and stderr on a pseudo-terminal (so git starts a pager)."""
    master, slave = os.openpty()
    try:
        p = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        )
    finally:
        os.close(slave)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    if not os.read(master, 65536):
                        break
                except OSError:  # EIO: every writer closed the terminal
                    break
            elif p.poll() is not None:
                break
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()


def _ordinary_git_use(ctx: Ctx, repo: Path) -> None:
    """What a user does next in ``repo``: edit, status, diff, add, commit (hooks, editor),
    checkout (hooks), log on a terminal (pager), an alias, an ssh remote, a credential."""
    env = _host_env(ctx.home, ctx.ws)

    def git(*args: str, stdin: str | None = None) -> None:
        subprocess.run(
            ["git", *_ID, *args],
            cwd=repo,
            env=env,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    note = repo / "host-note.txt"
    note.write_text("one\n")
    git("status")
    git("add", "host-note.txt")
    git("commit", "-q", "-m", "host one")
    note.write_text("two\n")
    git("status")
    git("diff")
    git("add", "-A")
    git("commit", "-q", "-e", "-m", "host two")
    git("checkout", "-q", "-b", f"host-{secrets.token_hex(4)}")
    git("checkout", "-q", "-")
    _on_a_terminal(["git", *_ID, "log", "-2", "-p"], repo, env)
    git("st")
    git("ls-remote", "ssh://ringfence.invalid/repo")
    git("credential", "fill", stdin="protocol=https\nhost=ringfence.invalid\n\n")
    git("status")


def _is_gitdir(d: Path) -> bool:
    """What git takes for a git directory: HEAD plus objects/ and refs/, or plus a commondir
    file (a linked worktree's; its common directory holds them)."""
    if not (d / "HEAD").is_file():
        return False
    return (d / "commondir").is_file() or ((d / "objects").is_dir() and (d / "refs").is_dir())


def _entry(p: Path) -> tuple[int, bytes]:
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        return st.st_mode, os.readlink(p).encode()
    if stat.S_ISREG(st.st_mode):
        return st.st_mode, p.read_bytes()
    return st.st_mode, b""


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``root`` (itself included), by path, with its mode and content."""
    out = {str(root): _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p)] = _entry(p)
    return out


def _gitdirs(ws: Path) -> list[Path]:
    """Every git directory under the workspace: .git, bare layouts, modules/*, worktrees/*."""
    found = []
    for dirpath, dirnames, _ in os.walk(ws):
        d = Path(dirpath)
        if _is_gitdir(d):
            found.append(d)
            dirnames[:] = [n for n in dirnames if n in ("modules", "worktrees")]
    return found


def _protected_entries(gitdir: Path) -> dict[str, tuple[int, bytes]]:
    """A git directory's entries outside git's ordinary data (plus objects/info/alternates)."""
    out: dict[str, tuple[int, bytes]] = {}
    for p in sorted(gitdir.iterdir()):
        name = p.name
        if name in _ORDINARY or name.endswith(("_HEAD", "_MSG", ".lock")):
            continue
        if name.startswith("BISECT_"):
            continue
        out.update(_tree(p) if p.is_dir() and not p.is_symlink() else {str(p): _entry(p)})
    alternates = gitdir / "objects/info/alternates"
    if os.path.lexists(alternates):
        out[str(alternates)] = _entry(alternates)
    return out


def _pointers(ws: Path) -> dict[str, tuple[int, bytes]]:
    """Every ``.git`` entry under the workspace that is not a directory (files, symlinks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            if name == ".git" and not (p.is_dir() and not p.is_symlink()):
                out[str(p)] = _entry(p)
        dirnames[:] = [n for n in dirnames if n not in ("objects", "refs", "logs")]
    return out


@dataclass
class State:
    """The git directories under the workspace and every protected entry, as found."""

    gitdirs: list[Path]
    entries: dict[str, tuple[int, bytes]]


def _state(ctx: Ctx) -> State:
    gitdirs = _gitdirs(ctx.ws)
    entries: dict[str, tuple[int, bytes]] = {}
    for g in gitdirs:
        entries.update(_protected_entries(g))
    entries.update(_pointers(ctx.ws))
    for extra in ctx.extra:
        if os.path.lexists(extra):
            entries.update(_tree(extra))
    return State(gitdirs, entries)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _pointer_target(p: Path) -> Path | None:
    """Where a ``.git`` file, ``.git`` symlink or ``commondir`` file leads."""
    if p.is_symlink():
        return (p.parent / os.readlink(p)).resolve()
    text = p.read_text(errors="replace").strip()
    if p.name == ".git":
        if not text.startswith("gitdir:"):
            return None
        text = text.removeprefix("gitdir:").strip()
    return (p.parent / text).resolve() if text else None


def _judge(ctx: Ctx, before: State) -> list[str]:
    """Everything the host finds wrong after the run; empty when the channel stayed closed."""
    problems: list[str] = []
    after = _state(ctx)
    old = {str(g) for g in before.gitdirs}
    new = {str(g) for g in after.gitdirs} - old  # judged below, by the new-repository rules
    for path, value in before.entries.items():
        now = after.entries.get(path)
        if now != value:
            problems.append(f"changed: {path}")
    for path in after.entries.keys() - before.entries.keys():
        if any(path.startswith(g + "/") for g in new):
            continue
        inside_old = any(path.startswith(g + "/") for g in old)
        is_new_pointer = Path(path).name == ".git"
        if inside_old or is_new_pointer or any(_inside(Path(path), e) for e in ctx.extra):
            if inside_old and Path(path).name.endswith(".sample"):
                continue
            if is_new_pointer:
                target = _pointer_target(Path(path))
                if target is not None and _inside(target, ctx.ws):
                    continue
            problems.append(f"appeared: {path}")
    for g in map(Path, sorted(new)):
        hooks = g / "hooks"
        if hooks.is_dir():
            problems += [
                f"new hook: {h}" for h in sorted(hooks.iterdir()) if not h.name.endswith(".sample")
            ]
        for cfg in (g / "config", g / "config.worktree"):
            if cfg.is_file():
                keys = _git(ctx, "config", "--file", cfg, "--name-only", "--list", check=False)
                problems += [
                    f"planted key {k} in {cfg}" for k in keys.lower().split() if k in PLANTED_KEYS
                ]
        commondir = g / "commondir"
        if commondir.is_file():
            target = _pointer_target(commondir)
            if target is None or not _inside(target, ctx.ws):
                problems.append(f"commondir leads out: {commondir} -> {target}")
    # Ordinary git in every repository involved: the workspace and every directory up to two
    # levels below it that holds a .git entry.
    repos = [ctx.ws]
    for dirpath, dirnames, _ in os.walk(ctx.ws):
        d = Path(dirpath)
        if d != ctx.ws and os.path.lexists(d / ".git"):
            repos.append(d)
        depth = len(d.relative_to(ctx.ws).parts)
        dirnames[:] = [n for n in dirnames if n != ".git" and depth < 2 and not _is_gitdir(d / n)]
    for repo in repos:
        _ordinary_git_use(ctx, repo)
    problems += [f"marker: {m.name} (a planted command ran)" for m in sorted(ctx.marks.iterdir())]
    return problems


def _host_repo(ctx: Ctx, path: Path) -> None:
    """A repository made on the host, with a commit and the user's own pre-commit hook."""
    _git(ctx, "init", "-q", "-b", "main", path)
    (path / "README").write_text("hello\n")
    _git(ctx, "-C", path, "add", "README")
    _git(ctx, "-C", path, "commit", "-qm", "base")
    hook = path / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\ntrue\n")
    hook.chmod(0o755)


def _evil_gitdir(ctx: Ctx, path: Path, name: str) -> None:
    """A git directory (made on the host) whose config and hooks run marker ``name``."""
    _git(ctx, "init", "-q", "--bare", "-b", "main", path)
    _git(ctx, "config", "--file", path / "config", "core.bare", "false")
    _git(ctx, "config", "--file", path / "config", "core.fsmonitor", ctx.cmd(name))
    for hook in ("pre-commit", "post-commit", "post-checkout"):
        (path / "hooks" / hook).write_text(ctx.hook_text(name))
        (path / "hooks" / hook).chmod(0o755)


# --- setups ----------------------------------------------------------------------------------


def _setup_repo(ctx: Ctx) -> None:
    _host_repo(ctx, ctx.ws)


def _setup_repo_without_hooks(ctx: Ctx) -> None:
    _host_repo(ctx, ctx.ws)
    (ctx.ws / ".git/hooks/pre-commit").unlink()


def _setup_husky(ctx: Ctx) -> None:
    _host_repo(ctx, ctx.ws)
    (ctx.ws / ".husky").mkdir()
    hook = ctx.ws / ".husky/pre-commit"
    hook.write_text("#!/bin/sh\n# the project's own hook\ntrue\n")
    hook.chmod(0o755)
    _git(ctx, "-C", ctx.ws, "config", "core.hooksPath", ".husky")
    ctx.extra.append(ctx.ws / ".husky")


def _setup_worktree_config(ctx: Ctx) -> None:
    _host_repo(ctx, ctx.ws)
    _git(ctx, "-C", ctx.ws, "config", "extensions.worktreeConfig", "true")


def _setup_gitmodules(ctx: Ctx) -> None:
    _host_repo(ctx, ctx.ws)
    (ctx.ws / ".gitmodules").write_text('[submodule "lib"]\n\tpath = lib\n\turl = ../lib.git\n')
    ctx.extra.append(ctx.ws / ".gitmodules")


def _setup_pointers(ctx: Ctx) -> None:
    """The workspace repository plus: ``wt/`` whose ``.git`` file names ``store/r.git``; a
    linked worktree ``lwt/`` (``.git/worktrees/lwt/commondir``); ``store/r``, an existing
    git directory whose hooks and config run marker ``evil-in``; and, outside the
    workspace, one that runs marker ``evil-out``."""
    _host_repo(ctx, ctx.ws)
    (ctx.ws / "store").mkdir()
    _git(
        ctx, "init", "-q", "-b", "main", "--separate-git-dir", ctx.ws / "store/r.git", ctx.ws / "wt"
    )
    (ctx.ws / "wt/a").write_text("a\n")
    _git(ctx, "-C", ctx.ws / "wt", "add", "a")
    _git(ctx, "-C", ctx.ws / "wt", "commit", "-qm", "wt")
    _git(ctx, "-C", ctx.ws, "worktree", "add", "-q", "-b", "lwt", ctx.ws / "lwt")
    ctx.evil_in = ctx.ws / "store/r"  # a prefix of store/r.git: see the truncate channel
    _evil_gitdir(ctx, ctx.evil_in, "evil-in")
    outside = ctx.rf.mkdir("evil-")
    ctx.evil_out = outside / "e.git"
    _evil_gitdir(ctx, ctx.evil_out, "evil-out")
    _chown_tree(outside, ctx.rf)


def _chown_tree(root: Path, rf: Runner) -> None:
    for p in [root, *root.rglob("*")]:
        os.lchown(p, rf.uid, rf.gid)


# --- the plants ------------------------------------------------------------------------------


def _step(label: str, cmd: str) -> str:
    """An attempt: the output says whether it was done or refused; the script goes on."""
    return f"{{ {cmd}\n}} && echo did-{label} || echo refused-{label}\n"


def _prep(label: str, cmd: str) -> str:
    """A preparation that must work (an ordinary action): the test checks that it did."""
    return f"{{ {cmd}\n}} || echo {PREP_FAILED}-{label}\n"


def _py(label: str, code: str) -> str:
    """A python3 step, its source on a here-document."""
    return f"python3 - <<'EOF' && echo did-{label} || echo refused-{label}\n{code.strip()}\nEOF\n"


_RENAMEAT2 = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.renameat2(-100, {src!r}.encode(), -100, {dst!r}.encode(), 2) != 0:  # RENAME_EXCHANGE
    raise OSError(ctypes.get_errno(), "renameat2")
"""

_PROC_FD_WRITE = """
import os
fd = os.open({path!r}, os.O_RDONLY)
w = os.open(f"/proc/self/fd/{{fd}}", os.O_WRONLY | {mode})
os.write(w, {data!r}.encode())
"""


def _git_config(ctx: Ctx, key: str, value: str, git_opts: str = "", opts: str = "") -> str:
    q = value.replace("'", "'\\''")
    return _step(key, f"git {git_opts} config {opts} {key} '{q}'")


def p_new_repo_git_config(ctx: Ctx) -> str:
    return _prep("init", "git init -q sub") + _git_config(
        ctx, "core.fsmonitor", ctx.cmd("new-repo"), "-C sub"
    )


def p_new_clone_git_config(ctx: Ctx) -> str:
    return (
        _prep("clone", "git clone -q . cl")
        + _git_config(ctx, "core.fsmonitor", ctx.cmd("new-clone"), "-C cl")
        + _git_config(ctx, "alias.st", "!" + ctx.cmd("new-clone-alias"), "-C cl")
    )


def p_new_repo_config_first_by_hand(ctx: Ctx) -> str:
    return (
        _step("mkdir", "mkdir -p h/.git")
        + _step("config", f"printf {ctx.cfg_lines('core', 'fsmonitor', 'by-hand')} > h/.git/config")
        + _step("head", "echo 'ref: refs/heads/main' > h/.git/HEAD")
        + _step("objects", "mkdir h/.git/objects")
        + _step("refs", "mkdir h/.git/refs")
    )


def p_new_repo_config_lock_mv(ctx: Ctx) -> str:
    return _prep("init", "git init -q s2") + _step(
        "lock-mv",
        f"{{ cat s2/.git/config; printf {ctx.cfg_lines('core', 'fsmonitor', 'lock-mv')}; }} "
        "> s2/.git/config.lock && mv s2/.git/config.lock s2/.git/config",
    )


def p_new_repo_hooks(ctx: Ctx) -> str:
    return (
        _prep("init", "git init -q n")
        + _step("pre-commit", ctx.write_hook("n/.git/hooks/pre-commit", "new-repo-hook"))
        + _step("post-checkout", ctx.write_hook("n/.git/hooks/post-checkout", "new-repo-hook"))
        + _step("sample-renamed", "mv n/.git/hooks/pre-push.sample n/.git/hooks/pre-push")
        + _prep("x", ctx.write_hook("x", "new-repo-hook-mv"))
        + _step("mv-in", "mv x n/.git/hooks/post-commit")
    )


def p_existing_config_lock_mv(ctx: Ctx) -> str:
    return _step(
        "lock-mv",
        f"{{ cat .git/config; printf {ctx.cfg_lines('core', 'fsmonitor', 'lock-mv')}; }} "
        "> .git/config.lock && mv .git/config.lock .git/config",
    )


def _single_key(key: str, value: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    def plant(ctx: Ctx) -> str:
        return _git_config(ctx, key, value(ctx))

    return plant


def p_hooks_path(ctx: Ctx) -> str:
    return (
        _prep("mkdir", "mkdir .myhooks")
        + _prep("pre-commit", ctx.write_hook(".myhooks/pre-commit", "hooks-path"))
        + _prep("post-checkout", ctx.write_hook(".myhooks/post-checkout", "hooks-path"))
        + _git_config(ctx, "core.hooksPath", ".myhooks")
    )


def p_include_path(ctx: Ctx) -> str:
    return _prep(
        "inc", f"printf {ctx.cfg_lines('core', 'fsmonitor', 'include')} > inc.cfg"
    ) + _git_config(ctx, "include.path", "../inc.cfg")


def p_filter(ctx: Ctx) -> str:
    return _step("attributes", "echo '* filter=x' > .gitattributes") + _git_config(
        ctx, "filter.x.clean", ctx.cmd("filter")
    )


def p_husky(ctx: Ctx) -> str:
    return (
        _step("append", f"printf 'touch %s\\n' {ctx.marks}/husky >> .husky/pre-commit")
        + _step("add", ctx.write_hook(".husky/post-commit", "husky"))
        + _step("add2", ctx.write_hook(".husky/post-checkout", "husky"))
        + _step("chmod", "chmod -x .husky/pre-commit")
        + _step("rm", "rm .husky/pre-commit")
        + _step("swap", "mv .husky .husky-old && mkdir .husky")
        + _step("recreate", ctx.write_hook(".husky/pre-commit", "husky"))
    )


def p_info_attributes(ctx: Ctx) -> str:
    return _step("attributes", "mkdir -p .git/info; printf '* diff=x\\n' >> .git/info/attributes")


def p_info_exclude(ctx: Ctx) -> str:
    return _step("exclude", "printf 'evil.sh\\n' >> .git/info/exclude")


def p_config_worktree(ctx: Ctx) -> str:
    return _step(
        "write",
        f"printf {ctx.cfg_lines('core', 'fsmonitor', 'config-worktree')} > .git/config.worktree",
    ) + _git_config(ctx, "core.pager", ctx.cmd("config-worktree-pager"), opts="--worktree")


def p_new_hook_existing_repo(ctx: Ctx) -> str:
    return (
        _step("pre-commit", ctx.write_hook(".git/hooks/pre-commit", "new-hook"))
        + _step("post-checkout", ctx.write_hook(".git/hooks/post-checkout", "new-hook"))
        + _step("post-commit", ctx.write_hook(".git/hooks/post-commit", "new-hook"))
        + _step("sample-renamed", "mv .git/hooks/pre-push.sample .git/hooks/pre-push")
        + _prep("x", ctx.write_hook("x", "new-hook-mv"))
        + _step("mv-in", "mv x .git/hooks/post-merge")
    )


def p_hook_exchange(ctx: Ctx) -> str:
    return _prep("x", ctx.write_hook("x", "hook-exchange")) + _py(
        "exchange", _RENAMEAT2.format(src="x", dst=".git/hooks/pre-commit")
    )


def p_hook_tmpfile_link(ctx: Ctx) -> str:
    return _py(
        "tmpfile-link",
        f"""
import ctypes, os
fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o755)
os.write(fd, {ctx.hook_text("hook-tmpfile")!r}.encode())
libc = ctypes.CDLL(None, use_errno=True)  # linkat(fd, "", ..., AT_EMPTY_PATH): flink()
if libc.linkat(fd, b"", -100, b".git/hooks/post-checkout", 0x1000) != 0:
    raise OSError(ctypes.get_errno(), "linkat")
""",
    )


def p_hook_hardlink(ctx: Ctx) -> str:
    return _step("ln", "ln .git/hooks/pre-commit hl") + _step(
        "write", f"printf '#!/bin/sh\\ntouch %s\\n' {ctx.marks}/hook-hardlink > hl"
    )


def p_config_hardlink(ctx: Ctx) -> str:
    return _step("ln", "ln .git/config cl") + _step(
        "write", f"printf {ctx.cfg_lines('core', 'fsmonitor', 'config-hardlink')} >> cl"
    )


def p_hook_proc_fd(ctx: Ctx) -> str:
    return _py(
        "proc-fd",
        _PROC_FD_WRITE.format(
            path=".git/hooks/pre-commit", mode="os.O_TRUNC", data=ctx.hook_text("hook-proc-fd")
        ),
    )


def p_config_proc_fd(ctx: Ctx) -> str:
    data = f'[core]\n\tfsmonitor = "{ctx.cmd("config-proc-fd")}"\n'
    return _py("proc-fd", _PROC_FD_WRITE.format(path=".git/config", mode="os.O_APPEND", data=data))


def p_hook_disarm(ctx: Ctx) -> str:
    return (
        _step("chmod", "chmod -x .git/hooks/pre-commit")
        + _step("truncate", "truncate -s 0 .git/hooks/pre-commit")
        + _py("truncate-syscall", "import os\nos.truncate('.git/hooks/pre-commit', 0)")
        + _py(
            "fchmod",
            """
import os
os.fchmod(os.open(".git/hooks/pre-commit", os.O_RDONLY), 0o644)
""",
        )
    )


def p_hook_socket_fifo(ctx: Ctx) -> str:
    return _py(
        "bind",
        """
import socket
socket.socket(socket.AF_UNIX).bind(".git/hooks/post-checkout")
""",
    ) + _step("mkfifo", "mkfifo -m 755 .git/hooks/post-merge")


def p_gitmodules_update(ctx: Ctx) -> str:
    return _step(
        "update", f"git config -f .gitmodules submodule.lib.update '!{ctx.cmd('gitmodules')}'"
    )


def _evil_in(ctx: Ctx) -> str:
    assert ctx.evil_in is not None
    return str(ctx.evil_in)


def _evil_out(ctx: Ctx) -> str:
    assert ctx.evil_out is not None
    return str(ctx.evil_out)


def p_pointer_rewrite(ctx: Ctx) -> str:
    return _step("rewrite", f"printf 'gitdir: %s\\n' {_evil_in(ctx)} > wt/.git")


def p_pointer_hardlink(ctx: Ctx) -> str:
    return _step("ln", "ln wt/.git hl") + _step(
        "write", f"printf 'gitdir: %s\\n' {_evil_in(ctx)} > hl"
    )


def p_pointer_proc_fd(ctx: Ctx) -> str:
    data = f"gitdir: {_evil_in(ctx)}\n"
    return _py("proc-fd", _PROC_FD_WRITE.format(path="wt/.git", mode="os.O_TRUNC", data=data))


def p_pointer_truncate(ctx: Ctx) -> str:
    # "gitdir: <ws>/store/r.git\n" cut to "gitdir: <ws>/store/r": another existing gitdir.
    size = len("gitdir: " + _evil_in(ctx))
    return _step("truncate", f"truncate -s {size} wt/.git") + _py(
        "truncate-syscall", f"import os\nos.truncate('wt/.git', {size})"
    )


def p_pointer_chmod(ctx: Ctx) -> str:
    return _step("chmod", "chmod 000 wt/.git") + _py(
        "fchmod", "import os\nos.fchmod(os.open('wt/.git', os.O_RDONLY), 0o600)"
    )


def p_pointer_mv_over(ctx: Ctx) -> str:
    return _prep("p", f"printf 'gitdir: %s\\n' {_evil_in(ctx)} > p") + _step(
        "mv", "mv -f p wt/.git"
    )


def p_pointer_exchange(ctx: Ctx) -> str:
    return _prep("p", f"printf 'gitdir: %s\\n' {_evil_in(ctx)} > p") + _py(
        "exchange", _RENAMEAT2.format(src="p", dst="wt/.git")
    )


def p_pointer_replace(ctx: Ctx) -> str:
    return _step("rm", "rm -f wt/.git") + _step(
        "create", f"printf 'gitdir: %s\\n' {_evil_in(ctx)} > wt/.git"
    )


def p_commondir_rewrite(ctx: Ctx) -> str:
    return _step("rewrite", f"printf '%s\\n' {_evil_in(ctx)} > .git/worktrees/lwt/commondir")


def p_new_pointer_outside(ctx: Ctx) -> str:
    return _prep("mkdir", "mkdir nw") + _step(
        "create", f"printf 'gitdir: %s\\n' {_evil_out(ctx)} > nw/.git"
    )


def p_new_symlink_outside(ctx: Ctx) -> str:
    return _prep("mkdir", "mkdir sl") + _step("symlink", f"ln -s {_evil_out(ctx)} sl/.git")


def p_new_commondir_outside(ctx: Ctx) -> str:
    return (
        _step("mkdir", "mkdir -p cdir/.git")
        + _step("head", "echo 'ref: refs/heads/main' > cdir/.git/HEAD")
        + _step("commondir", f"printf '%s\\n' {_evil_out(ctx)} > cdir/.git/commondir")
    )


@dataclass(frozen=True)
class Channel:
    """One way to plant code for host git: set up on the host, then plant in the sandbox."""

    id: str
    setup: Callable[[Ctx], None]
    plant: Callable[[Ctx], str]
    key: str | None = None  # a refused config key the run's report must name
    marker: bool = True  # without protection, a planted command runs (else only bytes change)


CHANNELS = [
    # a repository the command creates is held to the same rules
    Channel("new-repo-git-config", _setup_repo, p_new_repo_git_config, "core.fsmonitor"),
    Channel("new-clone-git-config", _setup_repo, p_new_clone_git_config, "core.fsmonitor"),
    Channel("new-repo-config-first-by-hand", _setup_repo, p_new_repo_config_first_by_hand),
    Channel("new-repo-config-lock-mv", _setup_repo, p_new_repo_config_lock_mv, "core.fsmonitor"),
    Channel("new-repo-hooks", _setup_repo, p_new_repo_hooks),
    # keys of an existing repository's config that run code or redirect git
    Channel(
        "core.fsmonitor",
        _setup_repo,
        _single_key("core.fsmonitor", lambda c: c.cmd("fsmonitor")),
        "core.fsmonitor",
    ),
    Channel("config-lock-mv", _setup_repo, p_existing_config_lock_mv, "core.fsmonitor"),
    Channel("core.hooksPath", _setup_repo, p_hooks_path, "core.hookspath"),
    Channel(
        "alias",
        _setup_repo,
        _single_key("alias.st", lambda c: "!" + c.cmd("alias")),
        "alias.st",
    ),
    Channel("include.path", _setup_repo, p_include_path, "include.path"),
    Channel("filter", _setup_repo, p_filter, "filter.x.clean"),
    Channel(
        "diff.external",
        _setup_repo,
        _single_key("diff.external", lambda c: c.cmd("diff-external")),
        "diff.external",
    ),
    Channel(
        "core.pager", _setup_repo, _single_key("core.pager", lambda c: c.cmd("pager")), "core.pager"
    ),
    Channel(
        "core.editor",
        _setup_repo,
        _single_key("core.editor", lambda c: c.cmd("editor")),
        "core.editor",
    ),
    Channel(
        "core.sshCommand",
        _setup_repo,
        _single_key("core.sshCommand", lambda c: c.cmd("ssh-command")),
        "core.sshcommand",
    ),
    Channel(
        "credential.helper",
        _setup_repo,
        _single_key("credential.helper", lambda c: "!" + c.cmd("credential")),
        "credential.helper",
    ),
    Channel(
        "gitmodules-update-command",
        _setup_gitmodules,
        p_gitmodules_update,
        "submodule.lib.update",
        marker=False,
    ),
    # hooks, info/ and config.worktree of an existing repository, and a hooksPath directory
    Channel("husky-hooks-path-dir", _setup_husky, p_husky),
    Channel("new-hook-existing-repo", _setup_repo_without_hooks, p_new_hook_existing_repo),
    Channel("info-attributes", _setup_repo, p_info_attributes, marker=False),
    Channel("info-exclude", _setup_repo, p_info_exclude, marker=False),
    Channel("config.worktree", _setup_worktree_config, p_config_worktree),
    # other names for a protected entry
    Channel("hook-hardlink", _setup_repo, p_hook_hardlink),
    Channel("config-hardlink", _setup_repo, p_config_hardlink),
    Channel("hook-proc-fd", _setup_repo, p_hook_proc_fd),
    Channel("config-proc-fd", _setup_repo, p_config_proc_fd),
    Channel("hook-exchange", _setup_repo, p_hook_exchange),
    Channel("hook-tmpfile-link", _setup_repo, p_hook_tmpfile_link),
    Channel("hook-disarm", _setup_repo, p_hook_disarm, marker=False),
    Channel("hook-socket-fifo", _setup_repo, p_hook_socket_fifo, marker=False),
    # pointer files: never changed once they exist, created only pointing inside
    Channel("pointer-rewrite", _setup_pointers, p_pointer_rewrite),
    Channel("pointer-hardlink", _setup_pointers, p_pointer_hardlink),
    Channel("pointer-proc-fd", _setup_pointers, p_pointer_proc_fd),
    Channel("pointer-truncate", _setup_pointers, p_pointer_truncate),
    Channel("pointer-chmod", _setup_pointers, p_pointer_chmod, marker=False),
    Channel("pointer-mv-over", _setup_pointers, p_pointer_mv_over),
    Channel("pointer-exchange", _setup_pointers, p_pointer_exchange),
    Channel("pointer-replace", _setup_pointers, p_pointer_replace),
    Channel("commondir-rewrite", _setup_pointers, p_commondir_rewrite),
    Channel("new-pointer-outside", _setup_pointers, p_new_pointer_outside),
    Channel("new-symlink-outside", _setup_pointers, p_new_symlink_outside),
    Channel("new-commondir-outside", _setup_pointers, p_new_commondir_outside),
]


def _plant(ctx: Ctx, channel: Channel, *flags: str) -> tuple[State, str, str]:
    """Set up on the host, plant inside the sandbox; the state before, stdout and stderr."""
    channel.setup(ctx)
    _chown_tree(ctx.ws, ctx.rf)
    before = _state(ctx)
    r = ctx.rf.confined_sh(ctx.ws, INNER + channel.plant(ctx) + f"echo {DONE}\n", *flags)
    assert DONE in r.stdout, (r.returncode, r.stdout, r.stderr)  # the whole plant ran
    assert PREP_FAILED not in r.stdout, (r.stdout, r.stderr)  # and did what it had to
    return before, r.stdout, r.stderr


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.id)
def test_channel_is_closed(rf: Runner, home: Path, marks: Path, channel: Channel) -> None:
    """Nothing the command planted runs when the user next uses git, and every protected
    entry is as it was; a refused config key is named in the run's report."""
    ctx = Ctx(rf, rf.mkdir(), marks, home)
    before, out, err = _plant(ctx, channel)
    problems = _judge(ctx, before)
    assert problems == [], (problems, out, err)
    if channel.key is not None:
        assert channel.key in err.lower(), (channel.key, err)


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.id)
def test_probe_detects_the_channel_unprotected(
    rf: Runner, home: Path, marks: Path, channel: Channel
) -> None:
    """The probe works: planted with ``--no-default-protect``, the same channel is caught by
    the judge (for most channels: a planted command does run on the host)."""
    ctx = Ctx(rf, rf.mkdir(), marks, home)
    before, out, _ = _plant(ctx, channel, "--no-default-protect")
    problems = _judge(ctx, before)
    if channel.marker:
        assert any(p.startswith("marker:") for p in problems), (problems, out)
    else:
        assert problems, out


# --- the report, and --strict-git ------------------------------------------------------------

_FLOOD = "i=0; while [ $i -lt 500 ]; do echo x > .vscode/x$i; i=$((i+1)); done\n"


@pytest.mark.parametrize("then", ["new-repo", "config-key", "new-hook"])
def test_a_flood_of_refusals_cannot_hide_what_matters(
    rf: Runner, home: Path, marks: Path, then: str
) -> None:
    """500 refusals first, then a new repository, a refused config key or a new hook: the
    run's report still names it."""
    ctx = Ctx(rf, rf.mkdir(), marks, home)
    _host_repo(ctx, ctx.ws)
    (ctx.ws / ".vscode").mkdir()
    _chown_tree(ctx.ws, rf)
    follow, named = {
        "new-repo": ("git init -q newrepo", str(ctx.ws / "newrepo")),
        "config-key": (f"git config core.fsmonitor '{ctx.cmd('flood')}'", "core.fsmonitor"),
        "new-hook": (
            ctx.write_hook(".git/hooks/post-checkout", "flood"),
            str(ctx.ws / ".git/hooks/post-checkout"),
        ),
    }[then]
    r = rf.confined_sh(ctx.ws, INNER + _FLOOD + f"{follow}\necho {DONE}\n")
    assert DONE in r.stdout, (r.stdout, r.stderr)
    assert r.stdout.count(".vscode/x") >= 500, r.stdout[-2000:]  # the flood was refused
    assert named in r.stderr, r.stderr


def test_strict_git_makes_all_of_git_read_only(rf: Runner, home: Path, marks: Path) -> None:
    """With --strict-git a commit in an existing repository fails and .git is unchanged,
    while the rest of the workspace stays writable."""
    ctx = Ctx(rf, rf.mkdir(), marks, home)
    _host_repo(ctx, ctx.ws)
    _chown_tree(ctx.ws, rf)
    head = _git(ctx, "-C", ctx.ws, "rev-parse", "HEAD")
    before = _tree(ctx.ws / ".git")
    r = rf.confined_sh(
        ctx.ws,
        INNER
        + "echo a > a; echo changed >> README\n"
        + _step("add", "git add a")
        + _step("commit", "git -c user.name=a -c user.email=a@example.invalid commit -qam x")
        + _step("after", "echo ok > after.txt"),
        "--strict-git",
    )
    assert "refused-commit" in r.stdout and "did-after" in r.stdout, (r.stdout, r.stderr)
    assert (ctx.ws / "after.txt").read_text() == "ok\n"
    assert _tree(ctx.ws / ".git") == before
    assert _git(ctx, "-C", ctx.ws, "rev-parse", "HEAD") == head
