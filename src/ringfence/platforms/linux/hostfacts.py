"""What the compiler needs to know about the host, gathered in one place with I/O.

The compiler stays a pure function of (Policy, HostFacts). Only paths the policy names, the
fixed default candidates and a bounded list of ``.git/modules`` are looked at: per-command work
never grows with the size of the workspace.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ringfence.linkchain import link_chain
from ringfence.network.offline import RESOLV_CONF_PATH
from ringfence.plancache.facts import derived, effect
from ringfence.platforms.linux import cgroups
from ringfence.platforms.linux.gitfiles import ConfigRead, global_config_files, read_config
from ringfence.platforms.linux.realpaths import RealPaths
from ringfence.policy import caches, defaults, scrub, semantics, statedirs
from ringfence.policy import paths as paths_mod
from ringfence.policy.model import Isolation, Policy

# Bounds for the .git/modules listing (submodules of submodules ...).
MAX_MODULE_DEPTH = 4
MAX_MODULES = 256
# The sandbox always has a private, writable tmpfs here: ``--writable /dev/shm`` names it,
# never the host's (a channel to the host and to every other sandbox).
PRIVATE_SHM = "/dev/shm"


def host_roots(policy: Policy) -> tuple[str, ...]:
    """The writable roots that are host directories to bind: ``--writable /dev/shm`` names the
    sandbox's own private /dev/shm (already writable) and is left out. Never the workspace: a
    command started in the host's /dev/shm would find it empty (the plan refuses that)."""
    return tuple(r for r in policy.writable_paths() if r != PRIVATE_SHM or r == policy.workspace)


@dataclass(frozen=True)
class PathInfo:
    """``kind`` is "dir", "file", "symlink" or "other"; ``real`` is the resolved path."""

    kind: str
    real: str


@dataclass(frozen=True)
class HostFacts:
    uid: int
    gid: int
    home: str | None
    landlock_abi: int
    env: Mapping[str, str]
    paths: Mapping[str, PathInfo] = field(default_factory=dict)
    # gitdir pointer files: the ``.git`` file's path -> the gitdir it names (resolved)
    gitdirs: Mapping[str, str] = field(default_factory=dict)
    # a gitdir -> its commondir (resolved), for linked worktrees
    commondirs: Mapping[str, str] = field(default_factory=dict)
    # a gitdir -> the .git file its own ``gitdir`` file points back to (resolved): a linked
    # worktree's, which git writes; what makes a pointer more than a claim
    backlinks: Mapping[str, str] = field(default_factory=dict)
    # a .git directory -> submodule gitdirs found under .git/modules (bounded)
    modules: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # a git directory -> the core.hooksPath directory its config names (absolute, resolved)
    hooks_paths: Mapping[str, str] = field(default_factory=dict)
    # submodule checkouts a module's core.worktree names (as git resolves it, lexically): a
    # command moving one and putting a symlink into a git directory in its place would make
    # your next checkout in the moved one write into that git directory
    module_worktrees: tuple[str, ...] = ()
    # files git configs include (include.path, includeIf.*.path): config by another name
    git_includes: tuple[str, ...] = ()
    # the user's global core.hooksPath when relative: <worktree>/<it> in every repository
    global_hooks_path: str | None = None
    # cgroup controller -> (version, writable parent directory) for per-run cgroups, and why
    # the controllers that are not there are not
    cgroups: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    cgroup_note: str = ""
    # ringfence's own package-manager cache directory for this workspace (made if missing)
    cache_root: str | None = None
    # this workspace's /tmp layer (holding upper/ and work/ for overlayfs), or None
    tmp_layer: str | None = None
    # the directory holding both (statedirs.py): locked while a sandbox uses it
    state_dir: str | None = None
    # ringfence's own state (caches and /tmp layers of every workspace, the audit log, session
    # sockets): hidden inside every sandbox, whether it exists yet or not
    own_state: tuple[str, ...] = ()
    # what runs as ringfence on the host (own_code_paths): read-only where a root holds it
    own_code: tuple[str, ...] = ()
    # entries of the host's /tmp that match defaults.TMP_DENY_READ
    tmp_secrets: tuple[str, ...] = ()
    # the account's home (password database) when $HOME names another directory or is unset:
    # its secrets are hidden and its persistence places protected as well
    account_home: str | None = None
    # $XDG_CONFIG_HOME and $XDG_DATA_HOME, resolved ("config", "data"; defaults under home)
    xdg_dirs: Mapping[str, str] = field(default_factory=dict)
    # what every repository's git reads or copies from outside it: the global config files
    # (wherever GIT_CONFIG_GLOBAL/SYSTEM put them), init.templateDir, $GIT_TEMPLATE_DIR, and
    # the symlinks on the way to home and the XDG directories (re-pointing one re-points them)
    outside_git_and_links: tuple[str, ...] = ()
    # a path looked at -> where it really is, when that differs (a link on the way), also for
    # paths that do not exist yet: the guard compares real paths
    resolved: Mapping[str, str] = field(default_factory=dict)
    # a symlink looked at -> the links between it and its target (link_chain): replacing one
    # of them re-points the first, so a protected link's hops are protected too
    link_hops: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the hidden (dot) entries of $HOME when a writable root holds it: all protected
    home_dot_entries: tuple[str, ...] = ()
    # the caller's own per-user quotas (/proc/sys/user/max_*), for the sandbox's lower ones
    user_quotas: Mapping[str, int] = field(default_factory=dict)

    # config files that mix settings and credentials (defaults.HOME_SCRUB) -> what was read
    scrub_files: Mapping[str, ScrubFile] = field(default_factory=dict)

    def info(self, path: str) -> PathInfo | None:
        return self.paths.get(path)


@dataclass(frozen=True)
class ScrubFile:
    """A mixed config file read for scrubbing: its format, the regular file it resolves to,
    and either the scrubbed copy (with the names taken out) or why there is none."""

    kind: str
    real: str
    mode: int = 0o400
    content: bytes | None = None
    removed: tuple[str, ...] = ()
    error: str | None = None


def _lstat_info(
    path: str,
    realpath: Callable[[str], str] = os.path.realpath,
    lstat: Callable[[str], os.stat_result] = os.lstat,
) -> PathInfo | None:
    try:
        st = lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    # Resolved whatever the kind: a parent may be a link too (~/.config -> dotfiles/config),
    # and a mount goes on the real place (the mount code refuses symlinks on the way).
    real = realpath(path)
    return PathInfo(kind, real)


def candidate_paths(policy: Policy, home: str | None, gitdirs: Iterable[str] = ()) -> list[str]:
    """Every path whose existence the compiler may ask about (no tree walks)."""
    out: list[str] = []
    roots = host_roots(policy)
    names = [n for n in policy.protected_names() if "*" not in n]
    out.append(policy.workspace)
    for root in roots:
        out.append(root)
        out.extend(os.path.join(root, n) for n in names)
        out.append(os.path.join(root, ".git"))
    for gd in gitdirs:
        out.append(gd)
        out.extend(os.path.join(gd, n) for n in ("config", "hooks", "commondir", "HEAD"))
    out.extend(policy.protected)
    out.extend(policy.deny_read_paths(home))
    out.extend(defaults.RUNTIME_SOCKETS)
    out.extend(policy.allow_sockets)
    if home:
        out.extend(os.path.join(home, rel) for rel in defaults.HOME_PROTECTED)
    out.extend(defaults.SYSTEM_PROTECTED)
    out.append(RESOLV_CONF_PATH)  # replaced by the sandbox's own resolver's (plan.py)
    return out


def xdg_dirs(env: Mapping[str, str], home: str | None) -> dict[str, str]:
    """Where programs look for their config and data (resolved): the XDG variables when set
    to an absolute path, else their defaults under home."""
    out: dict[str, str] = {}
    for key, var, default in (
        ("config", "XDG_CONFIG_HOME", ".config"),
        ("data", "XDG_DATA_HOME", ".local/share"),
    ):
        value = env.get(var)
        if not value or not os.path.isabs(value):
            if not home:
                continue
            value = os.path.join(home, default)
        out[key] = os.path.realpath(value)
    return out


def dot_entries(home: str) -> tuple[str, ...]:
    """The hidden entries of ``home`` (one listing, whatever is in it)."""
    try:
        return tuple(sorted(e.path for e in os.scandir(home) if e.name.startswith(".")))
    except OSError:
        return ()


# Where dotfile managers (GNU stow, chezmoi symlink mode, yadm) put their links: the hidden
# entries of home, what .config and .local/{bin,share} hold, one level more under .config.
# Every hidden entry of home, to any depth (bounded by the budget): a link anywhere in there
# may be read at start by something (~/.ssh/config, ~/.bashrc.d/*, an editor's plugin dir).
_LINK_SCAN = ((".", 64),)
LINK_SCAN_BUDGET = 8000  # hidden entries looked at, at most (a sandbox cannot add any)
LINK_SCAN_STOPPED = "/\0link-scan-stopped"  # a marker no real path can be


def _bulk(home: str, e: os.DirEntry[str]) -> bool:
    """A directory the scan need not enter, every run: a cache, a browser profile or a store
    of downloaded packages (big, and read by their own tool only)."""
    lowered = e.name.lower()
    if "cache" in lowered or lowered in ("trash", "node_modules", "site-packages"):
        return True
    return os.path.relpath(e.path, home) in _BULK_STORES


_BULK_STORES = frozenset(
    (".mozilla", ".config/google-chrome", ".config/chromium", ".config/BraveSoftware",
     ".config/microsoft-edge", ".config/vivaldi",
     # stores of downloaded packages and toolchains: large, and no one's start-up file
     ".npm", ".rustup", ".cargo/registry", ".cargo/git", ".m2", ".gradle", ".nvm", ".pyenv",
     ".rbenv", ".sdkman", ".goenv", ".jenv", ".asdf", ".bun", ".deno", ".dotnet",
     ".local/share/pipx", ".local/lib", ".vscode-server", ".cursor-server", ".ivy2", ".sbt",
     ".conda/pkgs", ".local/share/containers")
)  # fmt: skip


def dotfile_link_targets(home: str) -> tuple[str, ...]:
    """Where the symlinks among home's start-up files lead (resolved, existing or not): a
    link ``~/.bash_aliases -> dotfiles/bash_aliases`` makes its target a start-up file too,
    wherever it lies."""
    out: list[str] = []
    budget = LINK_SCAN_BUDGET
    for rel, depth in _LINK_SCAN:
        frontier = [os.path.join(home, rel) if rel != "." else home]
        for level in range(depth):
            nxt: list[str] = []
            for d in frontier:
                try:
                    entries = list(os.scandir(d))
                except OSError:
                    continue
                for e in entries:
                    if rel == "." and level == 0 and not e.name.startswith("."):
                        continue  # not counted: a command may fill home's visible part
                    budget -= 1
                    if budget < 0:  # said in the plan's notes (see LINK_SCAN_STOPPED)
                        return (*dict.fromkeys(out), LINK_SCAN_STOPPED)
                    if e.is_symlink():
                        out.extend(link_chain(e.path)[1:])
                    elif e.is_dir(follow_symlinks=False) and not _bulk(home, e):
                        nxt.append(e.path)
            frontier = nxt
    return tuple(dict.fromkeys(out))


def own_state_dirs(env: Mapping[str, str], home: str | None) -> tuple[str, ...]:
    """ringfence's state directories, resolved as far as they exist."""
    from ringfence.session_wire import session_dir

    found = [
        statedirs.cache_base(env, home),
        statedirs.state_base(env, home),
        session_dir(dict(env)),
    ]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in found if p and os.path.isabs(p)))


def own_code_paths() -> tuple[str, ...]:
    """What runs as ringfence, with your rights, the next time it starts: its package (and
    the native launcher in it), the ``ringfence`` command beside the interpreter, the
    interpreter, and the virtualenv's ``pyvenv.cfg`` (which names the standard library).
    Where a writable root holds them (ringfence installed in the workspace's virtualenv, or
    from its checkout), a command could change the sandbox it will next run in."""
    import sys

    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found = [
        package,
        os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "ringfence"),
        os.path.abspath(sys.executable),
        os.path.join(sys.prefix, "pyvenv.cfg"),
    ]
    return tuple(dict.fromkeys([*found, *(os.path.realpath(p) for p in found)]))


QUOTAS = ("max_inotify_instances", "max_inotify_watches")


def user_quotas() -> dict[str, int]:
    """The per-user quotas of the caller's user namespace that the sandbox's count against."""
    out: dict[str, int] = {}
    for name in QUOTAS:
        try:
            with open(f"/proc/sys/user/{name}", encoding="ascii") as f:
                out[name] = int(f.read().strip())
        except (OSError, ValueError):
            continue
    return out


def tmp_secrets(tmp: str = "/tmp") -> tuple[str, ...]:
    """The host /tmp entries the default deny-read patterns name (tmp_entries.py); a
    recording compile notes the answer, not the whole listing (plancache/facts.py)."""
    found: tuple[str, ...] = derived("tmp-secrets", tmp)
    return found


def _read_gitdir_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            line = f.read(4096).splitlines()[0] if os.path.getsize(path) else ""
    except (OSError, IndexError):
        return None
    if not line.startswith("gitdir:"):
        return None
    target = line[len("gitdir:") :].strip()
    if not target:
        return None
    return os.path.realpath(os.path.join(os.path.dirname(path), target))


def _list_modules(gitdir: str) -> tuple[str, ...]:
    found: list[str] = []
    frontier = [os.path.join(gitdir, "modules")]
    for _ in range(MAX_MODULE_DEPTH):
        nxt: list[str] = []
        for mdir in frontier:
            try:
                entries = sorted(os.scandir(mdir), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if len(found) >= MAX_MODULES:
                    return tuple(found)
                if e.is_dir(follow_symlinks=False):
                    if os.path.exists(os.path.join(e.path, "HEAD")):
                        found.append(e.path)
                        nxt.append(os.path.join(e.path, "modules"))
                    else:  # module names may contain slashes: nested dirs
                        nxt.append(e.path)
        frontier = nxt
    return tuple(found)


def _hooks_path(value: str | None, worktree: str | None, home: str | None) -> str | None:
    """A core.hooksPath value resolved as git would (relative to the worktree), or None."""
    if not value:
        return None
    if value.startswith("~/") and home:
        value = os.path.join(home, value[2:])
    if not os.path.isabs(value):
        if worktree is None:
            return None
        value = os.path.join(worktree, value)
    return os.path.realpath(value)


def _read_scrub_files(
    policy: Policy,
    home: str | None,
    env: Mapping[str, str],
    paths: dict[str, PathInfo],
    git_includes: Iterable[str] = (),
) -> dict[str, ScrubFile]:
    """Read and scrub the mixed config files under ``home`` (adding what was looked at to
    ``paths``). A symlinked file is read at its target, opened without following links, so a
    link swapped in between is an error (the file is hidden), never a read of something else."""
    if not (policy.sandboxed and policy.default_deny_read and home):
        return {}
    out: dict[str, ScrubFile] = {}
    files = scrub.home_files(home, env)
    for included in git_includes:  # ~/.gitconfig's [include] path = ~/.gitconfig.secrets
        files.setdefault(os.path.normpath(included), "gitconfig")
    for path, kind in files.items():
        info = paths.get(path) or _lstat_info(path)
        if info is None:
            continue
        paths[path] = info
        real = os.path.realpath(path)  # also through a linked parent (~/.config -> ...)
        target = paths.get(real) or _lstat_info(real)
        if target is None or target.kind != "file":
            continue  # a link to nothing, or a directory: nothing to scrub
        paths[real] = target
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise scrub.ScrubError("not a regular file")
                data = os.read(fd, scrub.MAX_BYTES + 1)
            finally:
                os.close(fd)
            done = scrub.scrub(kind, data)
        except OSError as e:
            out[path] = ScrubFile(kind, real, error=f"cannot read it: {os.strerror(e.errno or 0)}")
        except scrub.ScrubError as e:
            out[path] = ScrubFile(kind, real, error=str(e))
        else:
            mode = 0o400 | (st.st_mode & 0o044)
            out[path] = ScrubFile(kind, real, mode, done.content, done.removed)
    return out


def gather(policy: Policy, *, env: Mapping[str, str], landlock_abi: int) -> HostFacts:
    """Look at the host once, for one policy."""
    sites, cgroup_note = cgroups.discover() if policy.sandboxed else ({}, "")
    account_home = paths_mod.account_home()
    home = env.get("HOME") or None
    home = os.path.realpath(home) if home and os.path.isabs(home) else account_home
    cache_dir = tmp_layer = state_dir = None
    own_state: tuple[str, ...] = ()
    namespaces = policy.sandboxed and policy.isolation is Isolation.NAMESPACES
    if namespaces:
        own_state = own_state_dirs(env, home)
    own_code = own_code_paths() if policy.sandboxed else ()
    state_base = statedirs.cache_base(env, home) if policy.sandboxed else None
    if state_base is not None:
        ws = effect("statedirs.prepare_workspace", statedirs.prepare_workspace, state_base,
                    policy.workspace)  # fmt: skip
        if ws is not None:
            ws = state_dir = os.path.realpath(ws)
            tmp_layer = os.path.join(ws, "tmp") if namespaces else None
            root = os.path.join(ws, "cache")
            if (
                policy.tool_caches
                and policy.writable_paths()
                and effect("caches.ensure", caches.ensure, root)
            ):
                cache_dir = root
    gitdirs: dict[str, str] = {}
    commondirs: dict[str, str] = {}
    modules: dict[str, tuple[str, ...]] = {}
    for root in host_roots(policy):
        dotgit = os.path.join(root, ".git")
        info = _lstat_info(dotgit)
        if info is None:
            continue
        if info.kind == "file":
            gd = _read_gitdir_file(dotgit)
            if gd:
                gitdirs[dotgit] = gd
        elif info.kind == "dir":
            modules[dotgit] = _list_modules(dotgit)
    backlinks: dict[str, str] = {}
    for gd in list(gitdirs.values()):
        try:
            with open(os.path.join(gd, "commondir"), encoding="utf-8") as f:
                rel = f.read(4096).strip()
            commondirs[gd] = os.path.realpath(os.path.join(gd, rel))
        except OSError:
            pass
        try:
            with open(os.path.join(gd, "gitdir"), encoding="utf-8") as f:
                back = f.read(4096).strip()
            if back:
                backlinks[gd] = os.path.realpath(os.path.join(gd, back))
        except OSError:
            pass
        modules[gd] = _list_modules(gd)
    extra_dirs = [*gitdirs.values(), *commondirs.values()]
    for mods in modules.values():
        extra_dirs.extend(mods)
    hooks_paths: dict[str, str] = {}
    base = ConfigRead()
    for config_file in global_config_files(env, home):
        read_config(config_file, home, base)
    includes = list(base.includes)
    outside = [q for f in global_config_files(env, home) for q in link_chain(f)]
    global_hooks = base.hooks_path
    if global_hooks and global_hooks.startswith("~/") and home:
        global_hooks = os.path.join(home, global_hooks[2:])
    for named in (base.template_dir, env.get("GIT_TEMPLATE_DIR"), global_hooks):
        if named and os.path.isabs(named):  # a relative core.hooksPath is per worktree
            outside.extend(link_chain(named))
    if namespaces and policy.default_protected and policy.writable_paths():
        for h in dict.fromkeys(x for x in (home, account_home) if x):
            outside.extend(dotfile_link_targets(h))

    for var in ("HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                "GIT_CONFIG_GLOBAL", "RINGFENCE_SESSION_DIR"):  # fmt: skip
        value = env.get(var)
        if value and os.path.isabs(value):
            outside.extend(link_chain(value)[:-1])  # the links on the way, not the end
    worktrees = {os.path.join(r, ".git"): r for r in host_roots(policy)}
    worktrees.update({gd: os.path.dirname(f) for f, gd in gitdirs.items()})
    module_dirs = [m for mods in modules.values() for m in mods]
    module_worktrees: list[str] = []
    for gd in [*worktrees, *commondirs.values(), *module_dirs]:
        read = ConfigRead(hooks_path=base.hooks_path)
        common = commondirs.get(gd)
        if common is not None:
            read_config(os.path.join(common, "config"), home, read)
        read.worktree = None
        read_config(os.path.join(gd, "config"), home, read)
        includes.extend(read.includes)
        if read.worktree and gd in module_dirs:
            module_worktrees.append(read.worktree)
        if os.path.isdir(gd):
            named = _hooks_path(read.hooks_path, worktrees.get(gd) or read.worktree, home)
            if named is not None:
                hooks_paths[gd] = named
    secrets_in_tmp = tmp_secrets() if namespaces and policy.default_deny_read else ()
    found_xdg = xdg_dirs(env, home) if policy.sandboxed else {}
    xdg_protected = [
        os.path.join(found_xdg[key], rel)
        for key, names in (
            ("config", defaults.XDG_CONFIG_PROTECTED),
            ("data", defaults.XDG_DATA_PROTECTED),
        )
        if key in found_xdg
        for rel in names
    ]
    home_dots: tuple[str, ...] = ()
    if (
        namespaces
        and home
        and policy.default_protected
        and semantics.first_under(home, policy.writable_paths())
    ):
        home_dots = dot_entries(home)
    paths: dict[str, PathInfo] = {}
    resolved: dict[str, str] = {}
    link_hops: dict[str, tuple[str, ...]] = {}
    real = RealPaths()  # many candidates share their parents: each resolved once
    for p in [
        *candidate_paths(policy, home, extra_dirs),
        *(candidate_paths(policy, account_home) if account_home not in (None, home) else ()),
        *own_state,
        *own_code,
        *secrets_in_tmp,
        *xdg_protected,
        *home_dots,
        *(o for o in outside if "\0" not in o),
    ]:
        if p not in resolved:
            resolved[p] = real(p)  # also where it does not exist (yet)
        if p not in paths:
            info = _lstat_info(p, real, real.lstat)
            if info is not None:
                paths[p] = info
                if info.kind == "symlink":
                    hops = link_chain(p)[1:-1]
                    if hops:
                        link_hops[p] = tuple(hops)
                if info.real != p and info.real not in paths:
                    target = _lstat_info(info.real, real, real.lstat)
                    if target is not None:
                        paths[info.real] = target
    checkouts = [os.path.join(w, ".git") for w in module_worktrees]
    for named in [*hooks_paths.values(), *includes, *checkouts]:
        if named not in paths and (named_info := _lstat_info(named)) is not None:
            paths[named] = named_info
    for sock in (env.get("XDG_RUNTIME_DIR"), env.get("SSH_AUTH_SOCK")):
        if sock and os.path.isabs(sock) and sock not in paths:
            found = _lstat_info(sock)
            if found is not None:
                paths[sock] = found
    return HostFacts(
        uid=os.getuid(),
        gid=os.getgid(),
        home=home,
        landlock_abi=landlock_abi,
        env=dict(env),
        paths=paths,
        gitdirs=gitdirs,
        commondirs=commondirs,
        backlinks=backlinks,
        modules=modules,
        hooks_paths=hooks_paths,
        module_worktrees=tuple(dict.fromkeys(module_worktrees)),
        git_includes=tuple(dict.fromkeys(includes)),
        global_hooks_path=(
            base.hooks_path if base.hooks_path and not os.path.isabs(base.hooks_path) else None
        ),
        cgroups={c: (s.version, s.parent) for c, s in sites.items()},
        cgroup_note=cgroup_note,
        cache_root=cache_dir,
        tmp_layer=tmp_layer,
        state_dir=state_dir,
        xdg_dirs=found_xdg,
        account_home=account_home if account_home != home else None,
        home_dot_entries=home_dots,
        link_hops=link_hops,
        resolved={p: r for p, r in resolved.items() if r != p},
        outside_git_and_links=tuple(dict.fromkeys(outside)),
        own_state=own_state,
        own_code=own_code,
        tmp_secrets=secrets_in_tmp,
        user_quotas=user_quotas() if namespaces else {},
        scrub_files=_read_scrub_files(policy, home, env, paths, base.includes),
    )
