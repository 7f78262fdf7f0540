"""Which commands only read: the ones the ``untrusted`` approval policy runs without asking.

Deliberately short and conservative. A command is known-safe only if nothing in its argv can
make it write, delete, run another program or reach the network: ``find`` without ``-exec``,
``-delete`` or ``-fprint``; ``rg`` without ``--pre`` or ``-z``; ``git`` only with read-only
subcommands and no ``-c``; ``sort`` without ``-o``. Wrappers that run something else
(``env``, ``sudo``, ``xargs``, ``timeout``, ``nice``) are never safe; ``bash -c``/``sh -c``
scripts are safe only when every command in them is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ringfence.approval import shell

_PLAIN = frozenset(
    {
        "cat", "ls", "head", "tail", "wc", "pwd", "echo", "printf", "true", "false", "which",
        "whoami", "id", "date", "uname", "stat", "du", "df", "basename", "dirname",
        "realpath", "readlink", "nl", "cut", "tr", "diff", "cmp", "cd", "test",
        "[", "grep", "egrep", "fgrep", "md5sum", "sha1sum", "sha256sum", "column", "seq",
        "hostname", "printenv", "type",
    }
)  # fmt: skip
# Plain commands none of whose arguments can make them write or run anything, so an argument
# the shell makes from file names (a pattern) is harmless to them.
_ANY_ARGUMENT = frozenset(
    {
        "cat", "ls", "head", "tail", "wc", "grep", "egrep", "fgrep", "stat", "du", "md5sum",
        "sha1sum", "sha256sum", "nl", "readlink", "realpath", "basename", "dirname", "echo",
        "printf", "cmp", "diff",
    }
)  # fmt: skip
_SHELLS = frozenset({"bash", "sh", "zsh", "dash"})
_FIND_UNSAFE = frozenset(
    {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"}
)
_GIT_READ_ONLY = frozenset(
    {"status", "log", "diff", "show", "rev-parse", "ls-files", "blame", "describe", "shortlog",
     "cat-file", "ls-tree", "merge-base", "show-ref"}
)  # fmt: skip
_GIT_UNSAFE_ARGS = ("--output", "--ext-diff", "--exec-path", "-o", "--open-files-in-pager")
_GIT_UNSAFE_LONG = tuple(a for a in _GIT_UNSAFE_ARGS if a.startswith("--"))


# Where a program named by a path is the system's own: ``./ls`` or ``bin/git`` may be anything
# the repository or an earlier command put there, whatever its name.
SYSTEM_DIRS = frozenset({"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin"})


def named_program(arg0: str) -> str | None:
    """Why ``arg0`` is not judged by its name: a path outside the system's directories."""
    if "/" in arg0 and os.path.dirname(os.path.normpath(arg0)) not in SYSTEM_DIRS:
        return f"{arg0} is a program of that name outside the system's directories"
    return None


def unsafe_reason(argv: Sequence[str]) -> str | None:
    """None when ``argv`` is known to only read; otherwise why it is not known-safe."""
    if not argv:
        return "no command"
    name = os.path.basename(argv[0])
    shape = named_program(argv[0]) or _pattern_reason(name, argv)
    if shape is not None:
        return shape
    if name in _SHELLS:
        return _shell_reason(argv)
    check = _SPECIAL.get(name)
    if check is not None:
        return check(argv)
    if name in _PLAIN:
        return None
    return f"{name} is not on the list of read-only commands"


def _pattern_reason(name: str, argv: Sequence[str]) -> str | None:
    pattern = next((a for a in argv[1:] if isinstance(a, shell.Pattern)), None)
    if pattern is None or name in _ANY_ARGUMENT:
        return None
    return f"{name} {pattern}: the shell turns the pattern into file names, which may be options"


def script_unsafe_reason(script: str) -> str | None:
    """The same for a shell command line: every simple command in it must be safe."""
    try:
        commands = shell.split(script)
    except shell.Unjudgeable as e:
        return f"cannot be judged: {e}"
    for argv in commands:
        why = unsafe_reason(argv)
        if why is not None:
            return why
    return None


def _shell_reason(argv: Sequence[str]) -> str | None:
    script = shell_script(argv)
    if script is None:
        return f"{os.path.basename(argv[0])} without a single -c script"
    return script_unsafe_reason(script)


def shell_script(argv: Sequence[str]) -> str | None:
    """The script of ``bash -c SCRIPT`` / ``bash -lc SCRIPT`` (and sh, zsh, dash), else None
    (also for ``./bash -c ...``: a program that only has a shell's name is judged itself)."""
    if os.path.basename(argv[0]) not in _SHELLS or named_program(argv[0]) is not None:
        return None
    opts = list(argv[1:-1])
    if len(argv) < 3 or not opts or opts[-1] not in ("-c", "-lc", "-cl"):
        return None
    if any(o not in ("-c", "-lc", "-cl", "-l", "--login") for o in opts):
        return None
    return argv[-1]


def _find(argv: Sequence[str]) -> str | None:
    bad = [a for a in argv[1:] if a in _FIND_UNSAFE]
    return f"find {bad[0]} can run or delete" if bad else None


def _short_cluster_has(arg: str, letter: str) -> bool:
    return arg.startswith("-") and not arg.startswith("--") and letter in arg[1:]


def _abbreviates(arg: str, options: Sequence[str]) -> bool:
    """Whether ``arg`` (``--name`` or ``--name=value``) is one of ``options`` or, as GNU
    getopt and git accept, an abbreviation of one (``--outp`` for ``--output``)."""
    if not arg.startswith("--") or len(arg) < 3:
        return False
    name = arg.split("=", 1)[0]
    return any(o.startswith(name) or name.startswith(o) for o in options)


def _rg(argv: Sequence[str]) -> str | None:
    for a in argv[1:]:
        if a.startswith("--pre") or _abbreviates(a, _RG_UNSAFE) or _short_cluster_has(a, "z"):
            return f"rg {a} runs other programs"
    return None


_RG_UNSAFE = ("--pre", "--pre-glob", "--search-zip", "--hostname-bin")
_SORT_UNSAFE = ("--output", "--compress-program")


def _sort(argv: Sequence[str]) -> str | None:
    for a in argv[1:]:
        if _abbreviates(a, _SORT_UNSAFE) or _short_cluster_has(a, "o"):
            return f"sort {a} writes a file or runs a program"
    return None


def _uniq(argv: Sequence[str]) -> str | None:
    """``uniq [OPTION]... [INPUT [OUTPUT]]``: a second name is a file it writes."""
    names = [a for a in argv[1:] if not a.startswith("-") or a == "-"]
    return "uniq with two names writes the second" if len(names) > 1 else None


def _file(argv: Sequence[str]) -> str | None:
    for a in argv[1:]:
        if _abbreviates(a, ("--compile",)) or _short_cluster_has(a, "C"):
            return f"file {a} writes a compiled magic file"
    return None


def _tree(argv: Sequence[str]) -> str | None:
    for a in argv[1:]:
        if _short_cluster_has(a, "o") or _short_cluster_has(a, "R"):
            return f"tree {a} writes files"
    return None


def _git(argv: Sequence[str]) -> str | None:
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("-C",) and i + 1 < len(argv):
            i += 2
            continue
        if argv[i] in ("--no-pager", "--no-optional-locks"):
            i += 1
            continue
        return f"git {argv[i]} changes how git runs"
    if i >= len(argv):
        return "git without a subcommand"
    sub = argv[i]
    if sub == "branch":
        listing = all(a in ("-a", "-r", "-v", "-vv", "--list", "--all") for a in argv[i + 1 :])
        return None if listing else "git branch with arguments can create or delete"
    if sub not in _GIT_READ_ONLY:
        return f"git {sub} is not a read-only subcommand"
    for a in argv[i + 1 :]:
        if a.startswith(_GIT_UNSAFE_ARGS) or _abbreviates(a, _GIT_UNSAFE_LONG):
            return f"git {sub} {a} can write or run"
    return None


_SPECIAL: dict[str, Callable[[Sequence[str]], str | None]] = {
    "find": _find,
    "rg": _rg,
    "sort": _sort,
    "git": _git,
    "uniq": _uniq,
    "file": _file,
    "tree": _tree,
}
