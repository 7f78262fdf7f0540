"""The name guard's git rules: every git directory, judged by what git reads.

The supervisor (``nameguard.py``) resolves each guarded call to canonical paths and asks this
module before acting. The rules themselves are pure (``policy/gitdir.py`` for what may change
inside a git directory, ``policy/gitconfig.py`` for which config keys are harmless); this
module adds the I/O: finding the git directory a path lies in, checking a directory the moment
it *becomes* a git directory, reading the exact bytes of a config that is about to replace the
real one, and remembering the pointer files this command created so their content can be
checked once nothing of the command is left to change them.

Why "becomes": git accepts any directory with ``HEAD`` plus ``objects/`` and ``refs/`` (or
``HEAD`` plus ``commondir``) as a repository, wherever it lies and whatever it is called. A
command may build one in any order; the step that completes the layout is where its config,
hooks and links are checked, so no order of steps yields a repository that host git would
trust and that the check never saw. Before that step the directory is inert to git.

All checks here run in the single-threaded supervisor, which performs every namespace change
the command makes under a writable root, so nothing the command does can interleave with a
check (see SECURITY.md for the remaining limits).
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ringfence.platforms.linux import libc
from ringfence.policy import gitdir
from ringfence.policy.gitdir import Entry

# A directory that completes its layout is scanned before it counts; a bigger one is refused
# (git init makes ~20 entries; a clone completes its layout before it fetches objects).
MAX_SCAN_ENTRIES: Final = 20_000
MAX_CONTENT_BYTES: Final = 1 << 20  # gitconfig.MAX_CONFIG_BYTES (imported only when needed)
GITMODULES: Final = ".gitmodules"
AT_FDCWD: Final = -100
DOT_GIT: Final = ".git"


class Unknown(OSError):
    """The guard cannot tell what a path is (a directory it cannot search): refuse (EACCES)."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EACCES, what)


def _exists(path: str) -> bool:
    """lstat-existence; an answer other than "there" or "not there" is refused by callers."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise Unknown(f"{path}: {os.strerror(exc.errno or errno.EIO)}") from None
    return True


def is_gitdir(path: str) -> bool:
    """Would git accept ``path`` as a git directory? (setup.c: ``is_git_directory``.)

    Stricter than git on purpose: any ``HEAD`` counts, valid or not, and ``objects``/``refs``
    of any type, so a directory is governed no later than git would first trust it.
    """
    if not _exists(path + "/HEAD"):
        return False
    if _exists(path + "/commondir"):
        return True
    return _exists(path + "/objects") and _exists(path + "/refs")


def is_dot_git(name: str) -> bool:
    """``.git`` in any letter case (a case-folding directory finds ``.GIT`` as ``.git``)."""
    return name.lower() == DOT_GIT


@dataclass(frozen=True)
class Place:
    """Where a path lies with respect to git: the nearest git directory above it, if any."""

    gitdir: str | None
    rel: tuple[str, ...]
    kind: Entry | None  # None: not inside a git directory

    @property
    def governed(self) -> bool:
        return self.kind is not None


@dataclass
class GitGuard:
    """The git rules for one command (its supervisor holds one)."""

    roots: tuple[str, ...]  # every root the guard watches: writable roots and git-only roots
    strict: bool = False  # strict_git: every git directory entirely read-only
    hooks_dirs: tuple[str, ...] = ()  # core.hooksPath targets found at start
    on_event: Callable[[str, str, str], None] | None = None  # (kind, path, detail)
    # .git entries this command created (a repository or pointer of its own)
    created_dot_git: set[str] = field(default_factory=set)
    # pointer-like files this command created or replaced, checked when it has ended:
    # path -> kind (".git", "commondir", "gitdir", ".gitmodules")
    pending: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._outermost = tuple(sorted(self.roots, key=len))

    # ---------------------------------------------------------------- where

    def root_of(self, path: str) -> str | None:
        for root in self._outermost:
            if gitdir.inside(path, (root,)):
                return root
        return None

    def place(self, path: str) -> Place:
        """The nearest git directory strictly above ``path`` (within its root) and what
        ``path`` is there."""
        root = self.root_of(path)
        if root is None or path == root:
            return Place(None, (), None)
        cur = path
        while cur != root:
            cur = posixpath.dirname(cur)
            if is_gitdir(cur):
                rel = tuple(path[len(cur) :].strip("/").split("/"))
                return Place(cur, rel, gitdir.classify(rel))
        return Place(None, (), None)

    def event(self, kind: str, path: str, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(kind, path, detail)

    def is_hook_path(self, path: str) -> bool:
        """Is ``path`` in a hooks directory (a git directory's, or a core.hooksPath)? For
        reports: an attempt to plant a hook is always shown."""
        if self._hooks_dir(path) is not None:
            return True
        if "/hooks/" not in path and not path.endswith("/hooks"):
            return False
        try:
            place = self.place(path)
        except OSError:
            return False
        return place.governed and place.rel[0] == "hooks"

    def _hooks_dir(self, path: str) -> str | None:
        for d in self.hooks_dirs:
            if gitdir.inside(path, (d,)):
                return d
        return None

    # ---------------------------------------------------------------- decisions

    def creating(
        self, path: str, kind: int, *, symlink: str | None = None, incoming: str | None = None
    ) -> str | None:
        """May a new entry of file type ``kind`` appear at ``path`` (open O_CREAT, mkdir,
        mknod, symlink, or as the destination of a link or rename)? Returns the refusal's
        rule, or None. ``symlink``: the link text, for a symlink; ``incoming``: the directory
        a rename brings in, whose links are judged where they will be."""
        hooks = self._hooks_dir(path)
        if hooks is not None:
            name = posixpath.basename(path)
            if (
                posixpath.dirname(path) == hooks
                and kind == stat.S_IFREG
                and name.endswith(".sample")
            ):
                return None
            return f"hooks directory {hooks} (core.hooksPath): only *.sample files"
        place = self.place(path)
        name = posixpath.basename(path)
        if place.governed:
            rule = self._inside_rule(place, path, kind, symlink)
            if rule is not None:
                return rule
            if incoming is not None:
                top = self._incubating_top(place) or place.gitdir
                assert top is not None
                rule = self._links_leaving(incoming, path, top)
                if rule is not None:
                    return rule
        elif kind == stat.S_IFLNK and symlink is not None and is_dot_git(name):
            return self._pointer_symlink(path, symlink)
        if name in gitdir.LAYOUT_NAMES:
            return self.completing(posixpath.dirname(path), name, incoming=incoming)
        return None

    def _links_leaving(self, tree: str, new_top: str, gitdir_top: str) -> str | None:
        """A symlink inside ``tree`` (about to be renamed to ``new_top``) that would point out
        of ``gitdir_top`` from its new place."""
        seen = 0
        for dirpath, dirnames, filenames in os.walk(tree, onerror=_raise, followlinks=False):
            new_dir = new_top + dirpath[len(tree) :]
            for name in [*dirnames, *filenames]:
                seen += 1
                if seen > MAX_SCAN_ENTRIES:
                    return f"more than {MAX_SCAN_ENTRIES} entries to check"
                full = f"{dirpath}/{name}"
                if os.path.islink(full):
                    target = gitdir.symlink_target(new_dir, os.readlink(full))
                    if not gitdir.inside(target, (gitdir_top,)):
                        return f"the symlink {new_dir}/{name} would point outside {gitdir_top}"
        return None

    def content_kind(self, path: str) -> tuple[str, str] | None:
        """For a name replaced only through a content check: (``"config"``, ``"todo"`` or
        ``".gitmodules"``, the directory relative paths in it are read from)."""
        if self.root_of(path) is None:
            return None
        if posixpath.basename(path) == GITMODULES:
            return GITMODULES, posixpath.dirname(path)
        place = self.place(path)
        if place.kind is Entry.CONFIG and place.gitdir is not None:
            return "config", place.gitdir
        if place.kind is Entry.TODO and place.gitdir is not None:
            return "todo", place.gitdir
        return None

    def moved(self, src: str, dst: str | None, *, pointer: str | None, is_dir: bool) -> None:
        """Keep track after a rename (``dst``) or removal (None) of ``src``."""
        self.pending.pop(src, None)
        self.created_dot_git.discard(src)
        if is_dir:  # what lies beneath moves with it (or goes)
            prefix = src + "/"
            for path in [p for p in self.pending if p.startswith(prefix)]:
                kind = self.pending.pop(path)
                if dst is not None:
                    self.pending[dst + path[len(src) :]] = kind
            for path in [p for p in self.created_dot_git if p.startswith(prefix)]:
                self.created_dot_git.discard(path)
                if dst is not None:
                    self.created_dot_git.add(dst + path[len(src) :])
        if dst is None:
            return
        if pointer is not None:
            self.note_pointer(dst, pointer)
        if is_dot_git(posixpath.basename(dst)):
            self.created_dot_git.add(dst)

    def _inside_rule(self, place: Place, path: str, kind: int, symlink: str | None) -> str | None:
        assert place.gitdir is not None and place.kind is not None
        where = f"git directory {place.gitdir}"
        what = "/".join(place.rel)
        if self.strict:
            return f"{where} (strict_git)"
        if place.kind is Entry.HOOK_SAMPLE and kind != stat.S_IFREG:
            return f"{where}: hooks/ holds only *.sample files"
        if kind == stat.S_IFLNK and symlink is not None:
            target = gitdir.symlink_target(posixpath.dirname(path), symlink)
            top = self._incubating_top(place) or place.gitdir
            if not gitdir.inside(target, (top,)):
                return f"{where}: a symlink there must point inside it (not to {target})"
        if place.kind in (Entry.CONFIG, Entry.TODO):
            return (
                f"{where}: {what} is replaced only by renaming a checked copy onto it "
                f"(git config and git rebase do this)"
            )
        if place.kind is Entry.POINTER:
            return None  # recorded as pending by the caller (note_pointer)
        if not gitdir.writable(place.kind):
            return f"{where}: {what} is not git's ordinary data"
        return None

    def _incubating_top(self, place: Place) -> str | None:
        """For modules/x/... or worktrees/x/...: the nested directory being built."""
        if place.kind is Entry.INCUBATOR and place.gitdir is not None and len(place.rel) >= 2:
            if place.rel[0] == "worktrees":
                return f"{place.gitdir}/worktrees/{place.rel[1]}"
            return f"{place.gitdir}/modules"
        return None

    def writing(self, path: str) -> str | None:
        """May the existing entry at ``path`` be changed in place (opened for writing,
        truncated, chmod/chown/xattr/utime)?"""
        if path in self.pending:
            return None  # a pointer of this command's own, checked when it ends
        hooks = self._hooks_dir(path)
        if hooks is not None:
            if posixpath.dirname(path) == hooks and path.endswith(".sample"):
                return None
            return f"hooks directory {hooks} (core.hooksPath): only *.sample files"
        name = posixpath.basename(path)
        if name == GITMODULES and self.root_of(path) is not None:
            return ".gitmodules is replaced only by `git config -f .gitmodules` (checked)"
        if (
            is_dot_git(name)
            and self.root_of(path) is not None
            and path not in self.created_dot_git
            and not os.path.isdir(path)
        ):
            return ".git pointer file of an existing repository"
        place = self.place(path)
        if not place.governed:
            return None
        assert place.gitdir is not None and place.kind is not None
        where = f"git directory {place.gitdir}"
        if self.strict:
            return f"{where} (strict_git)"
        if place.kind is Entry.POINTER:
            return f"{where}: {'/'.join(place.rel)} points git elsewhere and never changes"
        if place.kind in (Entry.CONFIG, Entry.TODO):
            return (
                f"{where}: {'/'.join(place.rel)} is replaced only by renaming a checked copy "
                "onto it (git config does this)"
            )
        if not gitdir.writable(place.kind):
            return f"{where}: {'/'.join(place.rel)} is not git's ordinary data"
        return None

    def removing(self, path: str) -> str | None:
        """May the entry at ``path`` go away (unlink, rmdir, or renamed away)?

        Hooks never do (that would disarm a secret-scanning hook), nor does anything else
        that is not git's data (info/attributes can disarm a filter); an existing repository's
        ``.git`` never does (it could be replaced by one pointing elsewhere), nor does a
        config (it is replaced through the content check instead). Git's own data, state
        files and todo lists may go: git removes them itself (gc, rebase, worktree prune).
        """
        hooks = self._hooks_dir(path)
        if hooks is not None and not path.endswith(".sample"):
            return f"hooks directory {hooks} (core.hooksPath)"
        name = posixpath.basename(path)
        if (
            is_dot_git(name)
            and self.root_of(path) is not None
            and path not in self.created_dot_git
            and path not in self.pending
        ):
            return ".git (an existing repository)"
        place = self.place(path)
        if not place.governed:
            return None
        assert place.gitdir is not None
        if self.strict:
            return f"git directory {place.gitdir} (strict_git)"
        if place.kind is Entry.CONFIG:  # a repository keeps its identity (remotes, settings)
            return f"git directory {place.gitdir}: config is replaced, never removed"
        if place.kind is Entry.READ_ONLY:  # hooks, info/ (attributes, exclude), ...
            return f"git directory {place.gitdir}: {'/'.join(place.rel)} is not git's data"
        return None

    # ---------------------------------------------------------------- a new git directory

    def completing(self, parent: str, adding: str, *, incoming: str | None = None) -> str | None:
        """``adding`` is about to appear in ``parent``: if that completes a git directory's
        layout, check the directory now (its config, hooks and links, and those of an
        ``incoming`` directory renamed into place)."""
        if self.root_of(parent) is None or is_gitdir(parent):
            return None
        have = {n for n in gitdir.LAYOUT_NAMES if n != adding and _exists(f"{parent}/{n}")}
        have.add(adding)
        if "HEAD" not in have or not ("commondir" in have or {"objects", "refs"} <= have):
            return None
        if self.strict:
            return f"a new git directory {parent} (strict_git)"
        problem = self.check_new_gitdir(parent)
        if problem is None and incoming is not None:
            problem = self._links_leaving(incoming, f"{parent}/{adding}", parent)
        if problem is not None:
            self.event("refused_repository", parent, problem)
            return f"a new git directory {parent}: {problem}"
        self.event("new_repository", parent, "")
        return None

    def check_new_gitdir(self, top: str) -> str | None:
        """Everything host git would honour in a directory that has just become a git
        directory: config keys, hooks, pointers, and links leading out of it.

        The files judged by content are then replaced by the guard's own copy of the bytes it
        judged: a descriptor the command opened for writing before the layout was complete
        (or passed elsewhere) now refers to a file git never reads.
        """
        checked: dict[str, bytes] = {}
        for name in ("config", "config.worktree", "commondir"):
            path = f"{top}/{name}"
            try:
                data = read_regular(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                return f"{name}: {exc.strerror or os.strerror(exc.errno or errno.EIO)}"
            if name == "commondir":
                problem = self.pointer_problem(path, "commondir", data)
            else:
                problem = self.config_problem(data, gitdir_path=top, kind="config")
            if problem is not None:
                return f"{name}: {problem}"
            checked[name] = data
        seen = 0
        for dirpath, dirnames, filenames in os.walk(top, onerror=_raise, followlinks=False):
            rel_dir = dirpath[len(top) :].strip("/")
            for name in [*dirnames, *filenames]:
                seen += 1
                if seen > MAX_SCAN_ENTRIES:
                    return f"more than {MAX_SCAN_ENTRIES} entries to check"
                full = f"{dirpath}/{name}"
                st = os.lstat(full)
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rel.startswith("hooks/") and not (
                    rel.count("/") == 1 and name.endswith(".sample") and stat.S_ISREG(st.st_mode)
                ):
                    return f"hooks/ may hold only *.sample files, not {rel}"
                if stat.S_ISLNK(st.st_mode):
                    target = gitdir.symlink_target(dirpath, os.readlink(full))
                    if not gitdir.inside(target, (top,)):
                        return f"the symlink {rel} points outside it ({target})"
            if rel_dir == "" and "hooks" in filenames:
                return "hooks is not a directory"
        for name, data in checked.items():
            replace_with_copy(f"{top}/{name}", data)
        return None

    def _refusals(self, data: bytes, *, gitdir_path: str, kind: str) -> list[Any]:
        """The key refusals for config bytes (GitConfigError when malformed). The parser is
        imported on first use: most commands never replace a config."""
        from ringfence.policy import gitconfig

        if kind == GITMODULES:
            return gitconfig.check_gitmodules(data)
        return gitconfig.check_repo_config(
            data, worktree_ok=lambda v: self._worktree_ok(v, gitdir_path)
        )

    def config_problem(self, data: bytes, *, gitdir_path: str, kind: str) -> str | None:
        """Why these exact bytes may not become a config (``kind`` "config", ".gitmodules"
        or "todo"), or None."""
        from ringfence.policy import gitconfig

        if kind == "todo":
            bad = gitdir.todo_refusals(data)
            return f"runs commands ({', '.join(bad[:3])})" if bad else None
        try:
            refusals = self._refusals(data, gitdir_path=gitdir_path, kind=kind)
        except gitconfig.GitConfigError as exc:
            return f"malformed: {exc}"
        return gitconfig.describe(refusals) if refusals else None

    def host_hint(self, data: bytes, *, path: str, gitdir_path: str, kind: str) -> str:
        """What the user can run outside the sandbox to set the refused keys themselves (if
        they trust them): ringfence never widens the sandbox for a config key."""
        if kind == "todo":
            return ""
        try:
            refusals = self._refusals(data, gitdir_path=gitdir_path, kind=kind)
        except ValueError:  # GitConfigError: malformed, nothing to set
            return ""
        keys = list(dict.fromkeys(r.key for r in refusals))[:3]
        if not keys or any(not k.isprintable() or "'" in k for k in keys):
            return ""
        cmds = "; ".join(f"git config --file {shlex.quote(path)} {k} VALUE" for k in keys)
        return f"to set it yourself, outside the sandbox and only if you trust it: {cmds}"

    def _worktree_ok(self, value: str, gitdir_path: str) -> bool:
        target = posixpath.normpath(posixpath.join(gitdir_path, value))
        return (
            self.root_of(target) is not None and self.root_of(os.path.realpath(target)) is not None
        )

    # ---------------------------------------------------------------- pointers

    def pointer_kind(self, path: str) -> str | None:
        """Is ``path`` a pointer-like file whose content is checked: a ``.git`` file, a git
        directory's ``commondir``/``gitdir``, or a ``.gitmodules``?"""
        if self.root_of(path) is None:
            return None
        name = posixpath.basename(path)
        if is_dot_git(name):
            return DOT_GIT
        if name == GITMODULES:
            return GITMODULES
        if name in gitdir.POINTER_NAMES:
            # Beside a HEAD it is what git reads (setup.c); anywhere else a plain file. One
            # made before its HEAD is checked when the HEAD completes the layout.
            place = self.place(path)
            if place.kind is Entry.POINTER or _exists(f"{posixpath.dirname(path)}/HEAD"):
                return name
        return None

    def note_pointer(self, path: str, kind: str) -> None:
        if not self.pending:
            self.event("git_pending", path)  # tells the init to ask for finish() at the end
        self.pending[path] = kind

    def _pointer_symlink(self, path: str, text: str) -> str | None:
        target = gitdir.symlink_target(posixpath.dirname(path), text)
        if self.root_of(target) is None:
            return f"a .git symlink must point inside the writable roots (not {target})"
        return None

    def pointer_problem(
        self, path: str, kind: str, data: bytes, holder_gitdir: str | None = None
    ) -> str | None:
        if kind == GITMODULES:
            return self.config_problem(data, gitdir_path=posixpath.dirname(path), kind=GITMODULES)
        holder = posixpath.dirname(path)
        try:
            target = gitdir.pointer_target(
                kind, data, holder_dir=holder, gitdir=holder_gitdir or holder
            )
        except gitdir.PointerError as exc:
            return f"not a plain pointer ({exc})"
        if self.root_of(target) is None:
            return f"points outside the writable roots ({target})"
        return None

    def finish(self, quarantine: Callable[[str], str | None]) -> None:
        """Check every pointer this command created, now that none of its processes is left
        to change them. One that passes is replaced by the guard's copy of the bytes it
        judged (a descriptor passed elsewhere then writes a file git never reads); one that
        fails is moved aside by ``quarantine`` (which returns the new name)."""
        for path, kind in sorted(self.pending.items()):
            try:
                data = read_regular(path)
            except FileNotFoundError:
                continue  # gone again
            except OSError as exc:
                problem: str | None = f"unreadable ({exc.strerror or exc})"
            else:
                if kind in gitdir.POINTER_NAMES and not _exists(f"{posixpath.dirname(path)}/HEAD"):
                    continue  # no HEAD beside it: git does not read it
                problem = self.pointer_problem(path, kind, data)
                if problem is None:
                    try:
                        replace_with_copy(path, data)
                    except OSError as exc:
                        problem = f"could not be secured ({exc.strerror or exc})"
            if problem is None:
                continue
            moved = quarantine(path)
            self.event(
                "refused_pointer", path, f"{problem}; moved to {moved}" if moved else problem
            )
        self.pending.clear()


def _raise(exc: OSError) -> None:
    raise exc


def read_regular(path: str) -> bytes:
    """The bytes of the regular file at ``path`` (no symlink followed anywhere on the way);
    FileNotFoundError when it is not there, OSError when it is not a plain file."""
    fd = libc.openat2(
        AT_FDCWD,
        path,
        os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC,
        libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS,
    )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return read_all(fd)
    finally:
        os.close(fd)


def put_copy(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Atomically make ``name`` in ``dir_fd`` a fresh file holding exactly ``data``: the
    guard's own inode, which no process of the command holds open."""
    tmp = f".ringfence-{os.urandom(8).hex()}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
        dir_fd=dir_fd,
    )  # fmt: skip
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode & 0o777)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def replace_with_copy(path: str, data: bytes) -> None:
    """:func:`put_copy` at ``path``, reached without following any symlink."""
    parent, name = posixpath.split(path)
    dfd = libc.openat2(
        AT_FDCWD, parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, libc.RESOLVE_NO_SYMLINKS
    )
    try:
        mode = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
        put_copy(dfd, name, data, mode)
    finally:
        os.close(dfd)


def read_all(fd: int) -> bytes:
    """All of a file, refusing one too long to be a config or pointer (EFBIG)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_CONTENT_BYTES:
            raise OSError(errno.EFBIG, f"longer than {MAX_CONTENT_BYTES} bytes")
        chunks.append(chunk)
