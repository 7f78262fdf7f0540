"""What a sandboxed command may change inside a git directory: an allowlist from git's source.

Host git later reads everything in a git directory with the user's full rights, and much of
it decides what git runs: ``config`` (core.fsmonitor, core.hooksPath, aliases, filters),
``hooks/``, ``info/`` (attributes, grafts, exclude), pointer files that send git to another
directory (``commondir``, ``gitdir``, ``objects/info/alternates``), and whatever name a future
git version adds. A list of dangerous names always misses one, so this module names what git
writes during *ordinary work* (commit, fetch, push, merge, rebase, stash, gc, bisect,
worktrees, submodules) and everything else is read-only.

The lists come from git's source (``git_path()``/``GIT_PATH_FUNC`` names in ``sequencer.c``,
``bisect.c``, ``builtin/*.c``, ``refs/*.c``, ``shallow.c``, ``rerere.c``, ``builtin/gc.c``,
``worktree.c``). SECURITY.md explains each group.

A *git directory* is any directory git would read as one or as the common directory of one
(``setup.c``'s ``is_git_directory``): ``objects/`` plus ``refs/`` (with or without a ``HEAD``:
git reads a common directory's config and hooks either way), or a ``HEAD`` plus a
``commondir`` file. This module only classifies a path *relative to* such a directory; finding
the directory is I/O and lives with the name guard.
"""

from __future__ import annotations

import enum
import fnmatch
import posixpath
import re
from collections.abc import Sequence
from typing import Final

from ringfence.policy import semantics


class Entry(enum.Enum):
    """What an entry inside a git directory is, for the guard."""

    DATA = "data"  # git's ordinary data: create, write, remove, rename freely
    CONFIG = "config"  # replaced only by a rename whose exact bytes pass the key allowlist
    CHECKED = "checked"  # state git acts on later (todo lists, strategy): checked at the end
    POINTER = "pointer"  # commondir/gitdir: created once, pointing inside; never changed
    HOOK_SAMPLE = "hook sample"  # hooks/*.sample: git never runs them
    INCUBATOR = "incubator"  # modules/**, worktrees/*/**: a nested git directory in the making
    READ_ONLY = "read-only"  # everything else


# Top-level names git writes during ordinary work (exact), and shell patterns for the
# families (``*_HEAD`` covers ORIG_HEAD, FETCH_HEAD, MERGE_HEAD, CHERRY_PICK_HEAD, REVERT_HEAD,
# BISECT_HEAD, REBASE_HEAD ...).
DATA_NAMES: Final = frozenset(
    {
        "HEAD",
        "AUTO_MERGE",
        "index",
        "packed-refs",
        "packed-refs.new",  # refs/packed-backend.c writes it, then renames it into place
        "shallow",
        "COMMIT_EDITMSG",
        "MERGE_MODE",
        "MERGE_RR",
        "MERGE_AUTOSTASH",
        "EDIT_DESCRIPTION",
        "REPLACE_EDITOBJ",
        "ADD_EDIT.patch",
        "gc.pid",
        "gc.log",
        "locked",  # worktrees/<name>/locked (git worktree lock)
        "rebased-patches",
    }
)
DATA_PATTERNS: Final = (
    "*_HEAD",
    "*_MSG",
    "*_EDITMSG",
    "BISECT_*",
    "NOTES_MERGE_*",
    "sharedindex.*",
    "sharedindex_*",
    "next-index-*",
    "shallow_*",
    "index.stash.*",
)
# Directories whose whole content is git's data.
DATA_TREES: Final = frozenset(
    {
        "objects",
        "refs",
        "logs",
        "reftable",
        "rebase-merge",
        "rebase-apply",
        "sequencer",
        "rr-cache",
        "lfs",
        "lost-found",
        "NOTES_MERGE_WORKTREE",
    }
)
# Inside those trees, entries that redirect git and are therefore not data.
NOT_DATA: Final = frozenset(
    {
        ("objects", "info", "alternates"),
        ("objects", "info", "http-alternates"),
    }
)
# Data outside the data trees, by relative path.
DATA_PATHS: Final = frozenset({("info", "sparse-checkout")})
# State files that `rebase --continue` / `cherry-pick --continue` act on later, with the
# user's rights: todo lists run line by line (an `exec` line is a shell command), and a merge
# strategy names a program (`git-merge-<strategy>`, looked up relative to the worktree too).
# Git writes them directly (not by rename), so they are writable and checked when the
# command has ended (see the gitguard package); the value is the check that applies.
CHECKED_PATHS: Final[dict[tuple[str, ...], str]] = {
    ("rebase-merge", "git-rebase-todo"): "todo",
    ("sequencer", "todo"): "todo",
    ("rebase-merge", "strategy"): "strategy",
    ("sequencer", "opts"): "sequencer-opts",
    # `git am --continue` passes these back to `git apply` as options
    # (--build-fake-ancestor=FILE would write any file of the user's)
    ("rebase-apply", "apply-opt"): "apply-opt",
}
# What a merge strategy may be (builtin/merge.c: all_strategy): git's own, never a program.
BUILTIN_STRATEGIES: Final = frozenset({"ort", "recursive", "resolve", "octopus", "ours", "subtree"})
CONFIG_NAMES: Final = frozenset({"config"})
POINTER_NAMES: Final = frozenset({"commondir", "gitdir"})
INCUBATORS: Final = frozenset({"modules", "worktrees"})
LOCK_SUFFIX: Final = ".lock"
# What makes a directory a git directory (setup.c: is_git_directory): objects + refs, or
# HEAD + commondir.
LAYOUT_NAMES: Final = frozenset({"HEAD", "objects", "refs", "commondir"})


def _data_name(name: str) -> bool:
    return name in DATA_NAMES or any(fnmatch.fnmatchcase(name, p) for p in DATA_PATTERNS)


def classify(rel: Sequence[str]) -> Entry:
    """The kind of the entry at ``rel`` (path components) inside the nearest git directory.

    ``rel`` must be non-empty; the caller has already descended into any *complete* nested git
    directory, so ``modules/x/...`` here means x is not (yet) one.
    """
    if not rel:
        raise ValueError("classify needs a path inside the git directory")
    parts = tuple(rel)
    top = parts[0]
    if len(parts) == 1:
        name = top
        base = name[: -len(LOCK_SUFFIX)] if name.endswith(LOCK_SUFFIX) else name
        if name != base:  # a lock file: git renames it onto ``base`` when done
            if base in CONFIG_NAMES or base in POINTER_NAMES or _data_name(base):
                return Entry.DATA  # the lock itself is inert; the rename is what is checked
            return Entry.READ_ONLY
        if name in CONFIG_NAMES:
            return Entry.CONFIG
        if name in POINTER_NAMES:
            return Entry.POINTER
        if _data_name(name) or name in DATA_TREES:
            return Entry.DATA
        if name in INCUBATORS:
            return Entry.INCUBATOR
        return Entry.READ_ONLY
    if top in INCUBATORS:
        return Entry.INCUBATOR
    if top == "hooks":
        if len(parts) == 2 and parts[1].endswith(".sample") and not parts[1].startswith("."):
            return Entry.HOOK_SAMPLE
        return Entry.READ_ONLY
    if parts in CHECKED_PATHS:
        return Entry.CHECKED
    if top in DATA_TREES:
        unlocked = (*parts[:-1], parts[-1].removesuffix(LOCK_SUFFIX))
        if any(unlocked[: len(bad)] == bad for bad in NOT_DATA):
            return Entry.READ_ONLY
        return Entry.DATA
    if parts in DATA_PATHS or (
        len(parts) == 2 and parts[1].endswith(LOCK_SUFFIX) and (top, parts[1][:-5]) in DATA_PATHS
    ):
        return Entry.DATA
    return Entry.READ_ONLY


def writable(kind: Entry) -> bool:
    """May an entry of this kind be created, opened for writing, removed or renamed directly?
    (A CHECKED entry may too, but is then checked when the command has ended.)"""
    return kind in (Entry.DATA, Entry.HOOK_SAMPLE, Entry.INCUBATOR, Entry.CHECKED)


# Hooks git runs, by name (githooks(5), hook.c callers): in a hooks directory only these names
# are ever executed, so only these need guarding where a repository's hooks directory is not
# known in advance (a core.hooksPath of a repository found later).
HOOK_NAMES: Final = frozenset(
    {
        "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit",
        "pre-merge-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase",
        "post-checkout", "post-merge", "pre-push", "pre-receive", "update", "proc-receive",
        "post-receive", "post-update", "reference-transaction", "push-to-checkout",
        "pre-auto-gc", "post-rewrite", "sendemail-validate", "fsmonitor-watchman",
        "p4-changelist", "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit",
        "post-index-change",
    }
)  # fmt: skip


# ---------------------------------------------------------------- reports

# What the guard finds about git that a person must always see, in a section of the report of
# its own that no number of other refusals can crowd out.
REPORT_KINDS: Final = frozenset(
    {
        "new_repository",
        "refused_repository",
        "refused_config",
        "refused_pointer",
        "refused_hook",
        "dropped_worktree",
        "more_git",
    }
)
_REPORT_TITLES: Final = {
    "new_repository": "new git repository",
    "refused_repository": "refused git repository",
    "refused_config": "refused git config",
    "refused_pointer": "refused git file",
    "refused_hook": "refused git hook",
    "dropped_worktree": "git config kept without core.worktree",
}


def describe_finding(record: dict[str, str]) -> str:
    """One line for a finding (``{"kind", "path", "detail"?}``)."""
    if record.get("kind") == "more_git":
        return "more git findings not listed"
    title = _REPORT_TITLES.get(record.get("kind", ""), record.get("kind", "git"))
    detail = record.get("detail")
    return f"{title}: {record.get('path')}" + (f" ({detail})" if detail else "")


# ---------------------------------------------------------------- pointers

GITFILE_PREFIX: Final = "gitdir:"
MAX_POINTER_BYTES: Final = 4096


class PointerError(ValueError):
    """A pointer file's content git would not read as a plain pointer."""


def pointer_target(kind: str, data: bytes, *, holder_dir: str, gitdir: str | None) -> str:
    """The absolute, lexically normalised directory a pointer file names (see
    :func:`pointer_path`)."""
    return posixpath.normpath(pointer_path(kind, data, holder_dir=holder_dir, gitdir=gitdir))


def pointer_path(kind: str, data: bytes, *, holder_dir: str, gitdir: str | None) -> str:
    """The absolute path a pointer file names, as written: not normalised, because git
    resolves it through the file system (``strbuf_add_real_path``), each ``..`` going up from
    wherever a symlink before it led, which the text alone does not say.

    ``kind``: ``".git"`` (a gitfile: ``gitdir: PATH``, relative to the file's directory),
    ``"commondir"`` (a path relative to the git directory holding it) or ``"gitdir"`` (a
    worktree's back-pointer: the absolute or gitdir-relative path of its ``.git`` file).
    Read as git reads it (setup.c: ``read_gitfile_gently``, ``get_common_dir_noenv``): the
    whole file less trailing CR/LF is the path (a gitfile's after exactly ``gitdir: ``).
    Anything else that could be read two ways (a newline, CR or NUL inside) is refused.
    """
    if len(data) > MAX_POINTER_BYTES:
        raise PointerError(f"longer than {MAX_POINTER_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PointerError("not UTF-8") from None
    line = text.rstrip("\r\n")
    if any(c in line for c in "\0\r\n"):
        raise PointerError("more than one line")
    if kind == ".git":
        if not line.startswith(GITFILE_PREFIX + " "):
            raise PointerError("does not start with 'gitdir: '")
        line = line[len(GITFILE_PREFIX) + 1 :]
        base = holder_dir
    else:
        base = gitdir if gitdir is not None else holder_dir
    if not line:
        raise PointerError("names no path")
    return posixpath.join(base, line)


def symlink_target(link_dir: str, target: str) -> str:
    """Where a symlink with text ``target`` placed in ``link_dir`` points, lexically."""
    return posixpath.normpath(posixpath.join(link_dir, target))


def inside(path: str, roots: Sequence[str]) -> bool:
    """Is canonical ``path`` one of ``roots`` or beneath one?"""
    return semantics.first_under(path, roots) is not None


# ---------------------------------------------------------------- todo lists

# Commands a todo line may start with that only replay commits (sequencer.c todo_command_info,
# long and short forms). Not here: exec/x (a shell command).
_TODO_COMMANDS: Final = frozenset(
    {
        "pick", "p", "revert", "edit", "e", "reword", "r", "fixup", "f", "squash", "s",
        "break", "b", "drop", "d", "label", "l", "reset", "t", "merge", "m", "update-ref", "u",
        "noop",
    }
)  # fmt: skip
_COMMENT: Final = re.compile(r"^\s*(#|$)")


def strategy_refusals(data: bytes) -> list[str]:
    """A ``rebase-merge/strategy`` that names anything but one of git's own strategies."""
    word = data.decode("utf-8", "replace").strip()
    return [] if word in BUILTIN_STRATEGIES or not word else [repr(word)]


# The `git am` options it stores for `git apply` (builtin/am.c: OPT_PASSTHRU_ARGV), in the
# one-element form git writes them.
_APPLY_OPT: Final = re.compile(
    r"--whitespace=(nowarn|warn|fix|error|error-all|strip)|--ignore-space-change"
    r"|--ignore-whitespace|--reject|-C[0-9]+|-p[0-9]+|--(directory|exclude|include)=(?P<v>.*)",
    re.DOTALL,
)


def sq_dequote(text: str) -> list[str] | None:
    """Arguments quoted as git's ``sq_quote_argv`` writes them (``'a' 'b'\''c'``), or None
    when the text is not exactly that."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        if text[i] != "'":
            return None
        arg: list[str] = []
        i += 1
        while True:
            end = text.find("'", i)
            if end < 0:
                return None
            arg.append(text[i:end])
            i = end + 1
            if text[i : i + 3] in ("\\''", "\\!'"):
                arg.append(text[i + 1])
                i += 3
                continue
            break
        args.append("".join(arg))
    return args


def apply_opt_refusals(data: bytes) -> list[str]:
    """Options in ``rebase-apply/apply-opt`` that `git am` would not have written."""
    args = sq_dequote(data.decode("utf-8", "replace").strip())
    if args is None:
        return ["not quoted as git writes it"]
    bad = []
    for a in args:
        m = _APPLY_OPT.fullmatch(a)
        value = m.group("v") if m else None
        if m is None or (value is not None and (value.startswith("/") or ".." in value.split("/"))):
            bad.append(repr(a))
    return bad


def todo_refusals(data: bytes) -> list[str]:
    """The lines of a todo list that are not plain replay commands (``exec`` runs a shell)."""
    bad: list[str] = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if _COMMENT.match(raw):
            continue
        word = raw.split(None, 1)[0]
        if word not in _TODO_COMMANDS:
            bad.append(f"line {number}: {word!r}")
    return bad
