"""The git rules for names: :class:`GitGuard` decides whether an entry may appear, change
or go away, checks a directory the moment it becomes a git directory, and keeps the files
whose content is checked once the command has ended."""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ringfence.platforms.linux.gitfiles import ConfigRead, expand, read_config
from ringfence.platforms.linux.gitguard import checkouts, endcheck, layout, newdir
from ringfence.platforms.linux.gitguard.content import EXCLUDE, ContentRules
from ringfence.platforms.linux.gitguard.fileio import (
    read_regular,
)
from ringfence.platforms.linux.gitguard.layout import (
    DOT_GIT,
    GITMODULES,
    UNGOVERNED,
    WORKTREE_GITDIR,
    Place,
    exists,
    hooks_in,
    is_directory,
    is_dot_git,
    is_gitdir,
    probe_name,
    symlink_probe,
    worktree_backlink,
)
from ringfence.platforms.linux.gitguard.newdir import (
    MAX_SCAN_ENTRIES,
    TEMPLATE_DIRS,
    TEMPLATE_ENTRIES,
)
from ringfence.platforms.linux.gitguard.pins import Pins
from ringfence.platforms.linux.gitguard.told import Told

# Imported here, not when first needed: the guard runs inside the sandbox's view of the
# files, where ringfence's own source may not be visible (a checkout under the host's /tmp,
# which the sandbox replaces); everything it can need is loaded before it gets there.
from ringfence.policy import gitdir
from ringfence.policy.gitdir import Entry

MAX_CACHED_DIRS: Final = 20_000


@dataclass(frozen=True)
class _Repo:
    """A repository met in a worktree: its top, the config files its configs include, and
    the hooks directory they name (absolute), if any."""

    top: str
    includes: frozenset[str]
    hooks: str | None
    gitdir: str | None = None  # its git directory, when it is one


_LAYOUT_LOWER: Final = frozenset(n.lower() for n in gitdir.LAYOUT_NAMES)
# Worktree files git reads by name (a FIFO there hangs `git status`, `log`, `add`)
_READ_BY_NAME: Final = frozenset({".gitignore", ".gitattributes", ".mailmap", GITMODULES})


def _raise(exc: OSError) -> None:
    raise exc


@dataclass
class GitGuard:
    """The git rules for one command (its supervisor holds one)."""

    roots: tuple[str, ...]  # writable roots and git-only roots: where a pointer may lead
    # governed too, but no pointer may name them (the /tmp layer: guard_rules.py)
    private_roots: tuple[str, ...] = ()
    strict: bool = False  # strict_git: every git directory entirely read-only
    hooks_dirs: tuple[str, ...] = ()  # core.hooksPath targets found at start
    # a relative core.hooksPath of the user's global config: <worktree>/<this> of every repo
    global_hooks_path: str | None = None
    home: str | None = None  # for ~/ in config paths
    on_event: Callable[[str, str, str], None] | None = None  # (kind, path, detail)
    # .git entries this command created (a repository or pointer of its own)
    created_dot_git: set[str] = field(default_factory=set)
    # files whose content counts only once the command has ended, and the check each gets:
    # ".git", ".git-link", "commondir", "gitdir", ".gitmodules", "todo", "strategy",
    # "sequencer-opts"
    pending: dict[str, str] = field(default_factory=dict)
    # git directories whose layout this command completed: its own, so it may undo them
    completed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._outermost = tuple(sorted((*self.roots, *self.private_roots), key=len))
        self._pointer_roots = tuple(sorted(self.roots, key=len))
        self._tops: dict[str, str | None] = {}  # directory -> its worktree's top, or None
        self._repos: dict[str, _Repo] = {}
        self._checkouts: dict[str, tuple[str, ...]] = {}  # git directory -> modules' checkouts
        self.content = ContentRules(self.pointer_root_of)
        self.pins = Pins()  # the pending files by inode too (pins.py)
        self.told = Told(self.event)  # what the host knows (on_event may be set later)

    # ---------------------------------------------------------------- where

    def root_of(self, path: str) -> str | None:
        """The outermost root the git rules govern ``path`` under, or None."""
        return self._first_root(path, self._outermost)

    def pointer_root_of(self, path: str) -> str | None:
        """The root a pointer to ``path`` would lead into, or None: one whose path is the same
        inside the sandbox and on the host (not the /tmp layer)."""
        return self._first_root(path, self._pointer_roots)

    @staticmethod
    def _first_root(path: str, roots: tuple[str, ...]) -> str | None:
        for root in roots:
            if gitdir.inside(path, (root,)):
                return root
        return None

    def place(self, path: str) -> Place:
        """The nearest git directory strictly above ``path`` (within its root) and what
        ``path`` is there."""
        root = self.root_of(path)
        if root is None or path == root:
            return UNGOVERNED
        cur = path
        while cur != root:
            cur = posixpath.dirname(cur)
            if is_gitdir(cur):
                rel = tuple(path[len(cur) :].strip("/").split("/"))
                return Place(cur, rel, gitdir.classify(rel))
            if is_dot_git(posixpath.basename(cur)) and is_directory(cur):
                # in the making: governed from the start, as `git init` will adopt it
                rel = tuple(path[len(cur) :].strip("/").split("/"))
                return Place(cur, rel, gitdir.classify(rel), making=True)
        return UNGOVERNED

    def event(self, kind: str, path: str, detail: str = "") -> None:
        if self.on_event is not None:
            self.on_event(kind, path, detail)

    def is_hook_path(self, path: str) -> bool:
        """Is ``path`` in a hooks directory (a git directory's, or a core.hooksPath)? For
        reports: an attempt to plant a hook is always shown."""
        if self._hooks_dir(path) is not None:
            return True
        if posixpath.basename(path) in gitdir.HOOK_NAMES and self.root_of(path) is not None:
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

    def _hooks_rule(self, path: str, kind: int | None) -> str | None:
        """A hooks directory named by core.hooksPath takes only ``*.sample`` files. Those found
        at start are known; for any other repository, a file named like a hook git runs is
        checked against that repository's core.hooksPath when it appears or changes."""
        hooks = self._hooks_dir(path)
        name = posixpath.basename(path)
        if hooks is not None:
            if (
                posixpath.dirname(path) == hooks
                and kind in (stat.S_IFREG, None)
                and name.endswith(".sample")
            ):
                return None
            return f"hooks directory {hooks} (core.hooksPath): only *.sample files"
        if name in gitdir.HOOK_NAMES:
            repo = self._repo(posixpath.dirname(path))
            if repo is not None and repo.hooks == posixpath.dirname(path):
                return f"hooks directory {repo.hooks} (core.hooksPath of {repo.top})"
        return None

    def _repo(self, directory: str) -> _Repo | None:
        """The repository whose worktree holds ``directory`` (the nearest ``.git`` above it
        within its root), with what its configs name. Cached: asked on every write in a
        worktree; forgotten whenever a ``.git``, a config or a directory moves."""
        root = self.root_of(directory)
        if root is None:
            return None
        chain: list[str] = []
        cur = directory
        while True:
            if cur in self._tops:
                top = self._tops[cur]
                break
            chain.append(cur)
            if exists(f"{cur}/.git"):
                top = cur
                break
            if cur == root:
                top = None
                break
            cur = posixpath.dirname(cur)
        if len(self._tops) > MAX_CACHED_DIRS:
            self._tops.clear()
        for d in chain:
            self._tops[d] = top
        if top is None:
            return None
        repo = self._repos.get(top)
        if repo is None:
            repo = self._repos[top] = self._read_repo(top)
        return repo

    def _read_repo(self, top: str) -> _Repo:
        dot = f"{top}/.git"
        gd = dot
        if not os.path.isdir(dot):
            try:
                gd = gitdir.pointer_target(".git", read_regular(dot), holder_dir=top, gitdir=None)
            except (OSError, ValueError):
                return _Repo(top, frozenset(), None)
        try:
            usable = is_gitdir(gd)
        except OSError:
            usable = False
        if not usable:  # git reads no config of a directory that is no repository
            return _Repo(top, frozenset(), None)
        read = ConfigRead(hooks_path=self.global_hooks_path)
        try:  # a linked worktree reads the common directory's config first
            common = gitdir.pointer_target(
                "commondir", read_regular(f"{gd}/commondir"), holder_dir=gd, gitdir=gd
            )
            read_config(f"{common}/config", self.home, read)
        except (OSError, ValueError):
            pass
        read_config(f"{gd}/config", self.home, read)
        hooks = None
        if read.hooks_path:
            hooks = expand(read.hooks_path, top, self.home)
        return _Repo(top, frozenset(read.includes), hooks, gd)

    def forget_repos(self) -> None:
        """What :meth:`_repo` learnt may no longer hold (a .git, config or directory moved)."""
        self._tops.clear()
        self._repos.clear()
        self._checkouts.clear()

    def _checkout_rule(self, path: str) -> str | None:
        """No entry may go away, be replaced or arrive (a symlink, a directory renamed in) at
        or above a checkout that a module config's ``core.worktree`` names (``checkouts``):
        those of every repository whose worktree holds ``path``, looked at afresh up to the
        root (git skips a ``.git`` that is no repository; so does this), and the one
        ``path`` is, if it is a checkout."""
        root = self.root_of(path)
        if root is None:
            return None
        named: list[str] = []
        if os.path.isfile(f"{path}/.git"):  # its git directory stays behind if it is moved
            modules, own = self._checkouts_of(path)
            named += [*modules, own]
        cur = path
        while cur != root:
            cur = posixpath.dirname(cur)
            if exists(f"{cur}/.git"):
                named += self._checkouts_of(cur)[0]
        for tree in named:
            if tree and gitdir.inside(tree, (path,)):
                return f"the checkout {tree} a submodule's config names (core.worktree) stays"
        return None

    def _outside_rule(
        self, path: str, kind: int, symlink: str | None, incoming: str | None
    ) -> str | None:
        """The rules for a new entry outside any git directory."""
        rule = self._worktree_rule(path)
        if rule is None and incoming is not None:
            rule = self._incoming_worktree_rule(incoming, path)
        if rule is None and (kind == stat.S_IFLNK or incoming is not None):
            rule = self._checkout_rule(path)
        if rule is None and kind == stat.S_IFLNK and symlink is not None:
            rule = layout.link_problem(path, symlink)
        return rule

    def _incoming_dot_git_rule(self, tree: str, path: str) -> str | None:
        """A directory renamed in as ``.git`` is governed from then on, so it must bring only
        what `git init` leaves in one (a repository already is governed where it is)."""
        if is_gitdir(tree):
            return None
        problem = newdir.scan(self.content, self.event, path, [(tree, ())])
        return None if problem is None else f"a .git directory in the making: {problem}"

    def new_top_problem(self, top: str) -> str | None:
        """A ``.git`` file made at ``top``: leading to no repository now, it could lead to
        one made later, whose hooks directory (relative to this worktree) nobody would look
        at then; leading to one, the hooks it would find here (:meth:`planted_hooks`)."""
        self.forget_repos()
        repo = self._read_repo(top)
        return "it leads to no repository" if repo.gitdir is None else hooks_in(repo.hooks)

    def planted_hooks(self, top: str) -> str | None:
        """A new worktree top (a ``.git`` made here): the hooks directory its repository's
        configs name relative to the worktree (husky's ``core.hooksPath = .husky``) now lies
        in this one, and may hold hooks the command put there before the ``.git``."""
        self.forget_repos()
        return hooks_in(self._read_repo(top).hooks)

    def _checkouts_of(self, top: str) -> tuple[tuple[str, ...], str]:
        """The checkouts the module configs of the repository at ``top`` name, and the one
        its own git directory's config names ("" for none)."""
        repo = self._repos.get(top)  # cached as _repo() caches it; forget_repos() clears both
        if repo is None:
            repo = self._repos[top] = self._read_repo(top)
        gd = repo.gitdir
        if gd is None:
            return (), ""
        if gd not in self._checkouts:
            self._checkouts[gd] = checkouts.work_trees(gd, self.home)
        return self._checkouts[gd], checkouts.work_tree(gd, self.home) or ""

    def _worktree_rule(self, path: str) -> str | None:
        """A file a repository's config includes is config too (include.path,
        includeIf.*.path), wherever it lies in the worktree."""
        repo = self._repo(posixpath.dirname(path))
        if repo is not None and path in repo.includes:
            return f"git config included by the repository at {repo.top}"
        return None

    # ---------------------------------------------------------------- decisions

    def checked_kind(self, path: str) -> str | None:
        """The end-of-run check a regular file at ``path`` gets, if its content matters to
        git: a ``.git`` file, a ``commondir``/``gitdir`` beside a HEAD, a ``.gitmodules``, a
        todo list or merge strategy of an interrupted rebase."""
        if self.root_of(path) is None:
            return None
        name = posixpath.basename(path)
        if is_dot_git(name):
            return DOT_GIT
        if name == GITMODULES:
            return GITMODULES
        place = self.place(path)
        if place.kind is Entry.CHECKED:
            return gitdir.CHECKED_PATHS[place.rel]
        if place.making and place.rel == ("info", "exclude"):
            return EXCLUDE
        if name in gitdir.POINTER_NAMES and (
            place.kind is Entry.POINTER or exists(f"{posixpath.dirname(path)}/HEAD")
        ):
            return name  # beside a HEAD it is what git reads (setup.c)
        if worktree_backlink(place):
            return WORKTREE_GITDIR  # read by `git worktree` commands, HEAD or not
        return None

    def creating(
        self, path: str, kind: int, *, symlink: str | None = None, incoming: str | None = None
    ) -> str | None:
        """May a new entry of file type ``kind`` appear at ``path`` (open O_CREAT, mkdir,
        mknod, symlink, or as the destination of a link or rename)? Returns the refusal's
        rule, or None. ``symlink``: the link text, for a symlink; ``incoming``: the directory
        a rename brings in, judged entry by entry where it will be."""
        rule = self._hooks_rule(path, kind)
        if rule is not None:
            return rule
        place = self.place(path)
        name = posixpath.basename(path)
        if not newdir.plain(kind) and (
            place.governed or is_dot_git(name) or name.lower() in _READ_BY_NAME
        ):
            return "only files, directories and links where git reads (a FIFO would hang it)"
        if is_dot_git(name) or kind == stat.S_IFLNK:  # a link can change what a path reaches
            self.forget_repos()
        if place.governed:
            rule = self._inside_rule(place, path, kind, symlink)
            if rule is None and incoming is not None:
                assert place.gitdir is not None
                rule = newdir.incoming_problem(incoming, place.rel)
        else:
            rule = self._outside_rule(path, kind, symlink, incoming)
        if rule is None and incoming is not None and is_dot_git(name):
            rule = self._incoming_dot_git_rule(incoming, path)  # under modules/ too
        if rule is not None:
            return rule
        if not place.governed and kind == stat.S_IFLNK and symlink is not None and is_dot_git(name):
            target = gitdir.symlink_target(posixpath.dirname(path), symlink)
            if self.pointer_root_of(target) is None:
                return f"a .git symlink must point inside the writable roots (not {target})"
            self.note_pointer(path, ".git-link")
        if name.lower() in _LAYOUT_LOWER:  # a case-folding directory finds "head" as HEAD
            return self.completing(posixpath.dirname(path), name, incoming=incoming)
        return None

    def _inside_rule(self, place: Place, path: str, kind: int, symlink: str | None) -> str | None:
        assert place.gitdir is not None and place.kind is not None
        where, what = place.where, place.what
        if self.strict:
            return f"{where} (strict_git)"
        if kind == stat.S_IFLNK and not symlink_probe(place, symlink):
            # git makes none there; a link would let one name stand for another the rules
            # judge differently (rebase-merge -> a directory of the command's choosing)
            return f"{where}: no symlinks in a git directory ({what})"
        if place.making and probe_name(place) and kind in (stat.S_IFREG, stat.S_IFLNK):
            return None  # git init's symlink probe (the link's text checked above)
        if place.making and place.rel in TEMPLATE_ENTRIES:  # what git init copies in
            want = stat.S_IFDIR if place.rel in TEMPLATE_DIRS else stat.S_IFREG
            return f"{where}: {what} has the wrong type" if kind != want else None
        if place.kind in (Entry.HOOK_SAMPLE, Entry.CHECKED, Entry.POINTER) and (
            kind != stat.S_IFREG
        ):
            return f"{where}: {what} may only be a regular file"
        if place.kind is Entry.CONFIG:
            return (
                f"{where}: {what} is replaced only by renaming a checked copy onto it "
                "(git config does this)"
            )
        if not gitdir.writable(place.kind) and place.kind is not Entry.POINTER:
            return f"{where}: {what} is not git's ordinary data"
        return None

    def _incoming_worktree_rule(self, tree: str, new_top: str) -> str | None:
        """A directory renamed into a worktree brings its files to new names: a file named
        like a hook into a repository's hooks directory, or a file onto a config include.
        Only a repository whose configs name either makes that possible, so only then is the
        directory walked (an ordinary ``mv build build.old`` costs nothing)."""
        repo = self._repo(posixpath.dirname(new_top))
        if repo is None or (repo.hooks is None and not repo.includes):
            return None
        seen = 0
        for dirpath, _dirnames, filenames in os.walk(tree, onerror=_raise, followlinks=False):
            new_dir = new_top + dirpath[len(tree) :]
            for name in filenames:
                seen += 1
                if seen > MAX_SCAN_ENTRIES:
                    return f"a directory of more than {MAX_SCAN_ENTRIES} files to check"
                new = f"{new_dir}/{name}"
                rule = self._hooks_rule(new, None) if name in gitdir.HOOK_NAMES else None
                rule = rule or self._worktree_rule(new)
                if rule is not None:
                    return f"{new} would be in a {rule}"
        return None

    def writing(self, path: str) -> str | None:
        """May the existing entry at ``path`` be changed in place (opened for writing,
        truncated, chmod/chown/xattr)? A checked file may, and is checked at the end."""
        if path in self.pending:
            self.told.tell(path)  # (told already: it waits for the check)
            return None  # the command's own, checked when it ends
        rule = self._hooks_rule(path, None)
        if rule is not None:
            return rule
        name = posixpath.basename(path)
        if name == GITMODULES and self.root_of(path) is not None:
            return ".gitmodules is replaced only by `git config -f .gitmodules` (checked)"
        if self._existing_dot_git(path) and not os.path.isdir(path):
            return ".git pointer file of an existing repository"
        place = self.place(path)
        if not place.governed:
            return self._worktree_rule(path)
        assert place.gitdir is not None and place.kind is not None
        where, what = place.where, place.what
        if self.strict:
            return f"{where} (strict_git)"
        if place.kind is Entry.POINTER:
            return f"{where}: {what} points git elsewhere and never changes"
        if place.kind is Entry.CONFIG:
            return (
                f"{where}: {what} is replaced only by renaming a checked copy onto it "
                "(git config does this)"
            )
        if place.kind is Entry.CHECKED:
            self.note_pointer(path, gitdir.CHECKED_PATHS[place.rel])
            return None
        if worktree_backlink(place):
            self.note_pointer(path, WORKTREE_GITDIR)
            return None
        if not gitdir.writable(place.kind):
            return f"{where}: {what} is not git's ordinary data"
        return None

    def changing_mode(self, path: str, mode: int) -> str | None:
        """May the existing entry at ``path`` get the permission bits ``mode`` (chmod)? As
        :meth:`writing`, but a config's owner-execute bit may change: git's file-mode probe
        flips it and back (`git init`, also in an existing repository). Nothing else of its
        mode may (a config others can write is one others can give a hook)."""
        if self._hooks_rule(path, None) is None and not self.strict:
            place = self.place(path)
            if place.kind is Entry.CONFIG and place.rel == ("config",):
                now = stat.S_IMODE(os.lstat(path).st_mode)
                if (now ^ mode) & 0o7777 & ~stat.S_IXUSR == 0:
                    return None
        return self.writing(path)

    def _existing_dot_git(self, path: str) -> bool:
        """A ``.git`` under a root that this command did not make: the user's repository."""
        return (
            is_dot_git(posixpath.basename(path))
            and self.root_of(path) is not None
            and path not in self.created_dot_git
            and path not in self.pending
        )

    def removing(self, path: str, *, replaced: bool = False) -> str | None:
        """May the entry at ``path`` go away (unlink, rmdir, or renamed away)? ``replaced``:
        something else takes its name at once (a rename onto it), so the name stays.

        Hooks never do (that would disarm a secret-scanning hook), nor does anything else
        that is not git's data (info/attributes can disarm a filter); an existing repository's
        ``.git`` never does (it could be replaced by one pointing elsewhere), nor does a
        config (it is replaced through the content check instead), nor does what makes an
        existing repository one (HEAD, objects, refs): without them its config and the rest
        would no longer be governed, while a linked worktree could still use it as its common
        directory. Git's own data and state files may go (gc, rebase, worktree prune), and a
        repository this command completed is its own to undo.
        """
        rule = self._hooks_rule(path, None)
        if rule is not None and not path.endswith(".sample"):
            return rule
        if self._existing_dot_git(path):
            return ".git (an existing repository)"
        place = self.place(path)
        if not place.governed:
            return self._checkout_rule(path)
        assert place.gitdir is not None
        where, what = place.where, place.what
        if self.strict:
            return f"{where} (strict_git)"
        if place.making and place.kind is not Entry.INCUBATOR:
            return None  # git uses nothing in it yet
        if place.kind is Entry.CONFIG:
            return f"{where}: config is replaced, never removed"
        if place.kind is Entry.READ_ONLY:
            return f"{where}: {what} is not git's data"
        if place.kind is Entry.INCUBATOR:
            tree = checkouts.named_at_or_below(path, self.home)
            if tree is not None:  # moved, its core.worktree would name another directory
                return f"{where}: {what} holds the git directory of the checkout {tree}"
        if (
            not replaced
            and len(place.rel) == 1
            and place.rel[0] in ("HEAD", "objects", "refs")
            and place.gitdir not in self.completed
            and not exists(f"{place.gitdir}/commondir")
        ):
            return f"{where}: without {what} it would stop being a repository"
        return None

    def content_kind(self, path: str) -> tuple[str, str] | None:
        """For a name replaced only through a content check now, by the guard's own copy:
        (``"config"`` or ``".gitmodules"``, the directory relative paths in it are read
        from)."""
        if self.root_of(path) is None:
            return None
        if posixpath.basename(path) == GITMODULES:
            return GITMODULES, posixpath.dirname(path)
        place = self.place(path)
        if place.kind is Entry.CONFIG and place.gitdir is not None:
            return "config", place.gitdir
        return None

    # ---------------------------------------------------------------- bookkeeping

    def moved(self, src: str, dst: str | None, *, pointer: str | None, is_dir: bool) -> None:
        """Keep track after a rename (``dst``) or removal (None) of ``src``. Nothing here may
        fail: the call has been done."""
        gone: set[str] = set()
        self._carry(src, dst, is_dir, gone)
        if dst is not None:
            if pointer is not None:
                self.note_pointer(dst, pointer, done=True)  # (told before the call)
            if is_dot_git(posixpath.basename(dst)):
                self.created_dot_git.add(dst)
            if is_dir:
                self._linked_moved(dst)
        self._forget(gone)

    def _linked_moved(self, path: str) -> None:
        """A linked git directory renamed: its commondir (``../..``) names another directory
        from where it is now, so it is judged again when the command has ended. Looked at
        after the rename, by the name it has now (an exchange swaps what each name holds)."""
        if self.root_of(path) is not None and self._maybe_linked(path):
            # (the end check decides; told before the call: moving)
            self.note_pointer(f"{path}/commondir", "commondir", done=True)

    def moving(self, src: str, dst: str, *, is_dir: bool, room: int = 0) -> None:
        """Before ``src`` is renamed to ``dst``: tell the names its files left for the end
        check will have there, and a linked git directory's ``commondir``. Told after the
        rename, they would be lost should the guard fail in between, while the old names no
        longer hold the files (guard_tell)."""
        prefix = src + "/"
        for p in [p for p in self.pending if p == src or (is_dir and p.startswith(prefix))]:
            self.told.tell(dst + p[len(src) :])
        if is_dir and self.root_of(dst) is not None and self._maybe_linked(src):
            # noted once the call is done (_linked_moved), where nothing may fail: room now
            if f"{dst}/commondir" not in self.pending:
                self.pins.make_room(len(self.pending) + room)
            self.told.tell(f"{dst}/commondir")

    def exchanging(self, a: str, b: str) -> None:
        """Before ``a`` and ``b`` swap: :meth:`moving` both ways (room for two notes)."""
        self.moving(a, b, is_dir=True, room=1)
        self.moving(b, a, is_dir=True)

    @staticmethod
    def _maybe_linked(path: str) -> bool:
        """Could the directory ``path`` be a linked git directory (HEAD and a commondir)?"""
        try:
            return exists(f"{path}/HEAD") and exists(f"{path}/commondir")
        except OSError:
            return True  # cannot tell: told anyway

    def exchanged(self, a: str, b: str) -> None:
        """After RENAME_EXCHANGE of ``a`` and ``b``: what was tracked under each is now under
        the other (a pointer must not drop out of the end-of-run check by a swap)."""
        tmp = f"{a}\0exchanging"
        gone: set[str] = set()
        self._carry(a, tmp, True, gone, tell=False)  # a name no file has
        self._carry(b, a, True, gone)
        self._carry(tmp, b, True, gone)
        self._linked_moved(a)
        self._linked_moved(b)
        self._forget(gone)

    def _forget(self, gone: set[str]) -> None:
        """Names whose files went, and that nothing came to: the host is told so (told.py)."""
        for path in gone - self.pending.keys():
            self.told.forget(path)

    def _carry(
        self, src: str, dst: str | None, is_dir: bool, gone: set[str], *, tell: bool = True
    ) -> None:
        """Pending names under ``src`` now under ``dst`` (None: removed). The old names go to
        ``gone``; the new ones are told, not counted against the budget (:meth:`moving` paid
        for them before the call, which has now been done)."""
        if is_dir or is_dot_git(posixpath.basename(src)):
            self.forget_repos()
        prefix = src + "/"
        self.pins.carry(src, dst, is_dir)
        pend = [p for p in self.pending if p == src or (is_dir and p.startswith(prefix))]
        for p in pend:
            kind = self.pending.pop(p)
            gone.add(p)
            if dst is None:
                continue
            new = dst + p[len(src) :]
            if tell:  # (told before the rename: moving; this for a caller that did not)
                self.told.tell(new, budget=False)
            self.pending[new] = kind  # carried, not a new file: no room to make
            if not is_dir:  # renamed itself: held again where it went (pins.carry)
                self.pin_after(new)
        for book in (self.created_dot_git, self.completed):
            for p in [q for q in book if q == src or (is_dir and q.startswith(prefix))]:
                book.discard(p)
                if dst is not None:
                    book.add(dst + p[len(src) :])

    def note_pointer(self, path: str, kind: str, *, done: bool = False) -> None:
        """``path`` is checked when the command ends. The host hears of every such path: the
        guard then runs :meth:`finish` at the end, and should it not answer, the host moves
        them aside. ``done``: noted where nothing may be refused any more (after a call that
        has been done, whose room and budget were taken before it; the end check itself)."""
        before = self.pending.get(path)
        if before is None and not done:
            self.pins.make_room(len(self.pending))
        self.told.tell(path, budget=not done)
        if before != kind:
            self.told.noting(path, before)
        self.pending[path] = kind
        if done:
            self.pin_after(path)
        else:
            self.pins.pin(path)  # the file there now, if any; files.py pins one made after this

    def pin_after(self, path: str) -> None:
        """Hold the file at ``path`` once a call has been done, if there is room: out of
        descriptors (a command can use up the guard's), it is judged by its name alone, and
        nothing after a call the kernel has done may fail it (the books would stay behind)."""
        with contextlib.suppress(OSError):
            self.pins.pin(path)

    def told_mark(self) -> int:
        """Where a call's tells start (:meth:`undo_since`)."""
        return self.told.mark()

    def undo_since(self, mark: int) -> None:
        """The call that told names and noted files since ``mark`` failed (told.py)."""
        self.told.undo_since(mark, self.pending, lambda p: self.pins.carry(p, None, False))

    def call_done(self) -> None:
        self.told.done()

    # ---------------------------------------------------------------- a new git directory

    def completing(self, parent: str, adding: str, *, incoming: str | None = None) -> str | None:
        """``adding`` is about to appear in ``parent``: if that completes a git directory's
        layout, check the whole directory now (and an ``incoming`` directory renamed into
        place as ``adding``)."""
        if self.root_of(parent) is None:
            return None
        adding = {n.lower(): n for n in gitdir.LAYOUT_NAMES}[adding.lower()]
        if is_gitdir(parent):
            if adding == "HEAD" and exists(f"{parent}/commondir"):
                # A common directory becoming a linked one too: git now reads its commondir.
                self.note_pointer(f"{parent}/commondir", "commondir")
            return None
        have = {n for n in gitdir.LAYOUT_NAMES if exists(f"{parent}/{n}")}
        have.add(adding)
        if not ({"objects", "refs"} <= have or {"HEAD", "commondir"} <= have):
            return None
        if self.strict:
            return f"a new git directory {parent} (strict_git)"
        problem = self.check_new_gitdir(parent, incoming=(incoming, adding) if incoming else None)
        if problem is not None:
            self.event("refused_repository", parent, problem)
            return f"a new git directory {parent}: {problem}"
        if is_dot_git(posixpath.basename(parent)):
            problem = self.planted_hooks(posixpath.dirname(parent))
            if problem is not None:
                self.event("refused_repository", parent, problem)
                return f"a new git directory {parent}: {problem}"
        self.completed.add(parent)
        self.event("new_repository", parent, "")
        if {"HEAD", "commondir"} <= have:
            # Judged now, against a common directory that is complete now; the command may
            # still take that one apart (it made it: it may undo it), so it is judged again
            # when the command has ended, and the init hears of it as any pointer it waits for.
            self.note_pointer(f"{parent}/commondir", "commondir")
        return None

    def check_new_gitdir(self, top: str, *, incoming: tuple[str, str] | None = None) -> str | None:
        """Everything in a directory that is about to become a git directory must be what a
        new repository holds (``newdir``); an ``incoming`` directory renamed into place as
        one of its entries is judged too."""
        trees: list[tuple[str, tuple[str, ...]]] = [(top, ())]
        if incoming is not None:
            trees.append((incoming[0], (incoming[1],)))
        return newdir.scan(self.content, self.event, top, trees)

    # ---------------------------------------------------------------- the end of a command

    def finish(self, quarantine: Callable[[str], str | None]) -> list[str]:
        """Check every file whose content counts only now (``endcheck.finish``)."""
        return endcheck.finish(self, quarantine)
