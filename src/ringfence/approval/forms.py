"""The equivalent spellings of a command line, for the prefix rules that refuse or ask.

A ``forbid`` rule on ``rm -rf`` that ``rm -fr``, ``rm -r -f``, ``rm --recursive --force`` or
``/bin/rm -rf`` walks past is no rule. So a command line and a rule's prefix are both read as
a *form*: the command's name (its last path component), its positional words in order, and
its options as a set (a cluster ``-rf`` is ``-r`` and ``-f``; ``--force=x`` is ``--force``;
known long and short names of one option are one option; after ``--`` every word is
positional). For git, the global options before the subcommand (``-C DIR``, ``-c K=V``,
``--git-dir=...``) are dropped, so ``git -C . push`` is a ``git push``.

A prefix matches a form when its command name is the form's, its positional words start the
form's positional words, and every option it names is among the form's options. This reading
only ever makes a rule match more command lines, so the rules module applies it to ``prompt``
and ``forbid`` rules only: an ``allow`` rule matches exactly as written, and an extra option
(``git -ccore.pager=... status``) can never turn a command into one it allows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

# Long and short names of one option, per command (or "command subcommand"): each maps to
# its canonical spelling.
_SAME: dict[str, dict[str, str]] = {
    "rm": {"-R": "-r", "--recursive": "-r", "--force": "-f", "--interactive": "-i",
           "--dir": "-d", "--verbose": "-v"},
    "cp": {"-R": "-r", "--recursive": "-r", "--force": "-f"},
    "mv": {"--force": "-f"},
    "chmod": {"-R": "-R", "--recursive": "-R"},
    "chown": {"--recursive": "-R"},
    "git push": {"--force": "-f", "--set-upstream": "-u", "--dry-run": "-n", "--delete": "-d",
                 "--all": "--all", "--mirror": "--mirror", "--tags": "--tags"},
    "git clean": {"--force": "-f", "--dry-run": "-n"},
    "git reset": {},
    "git branch": {"--delete": "-d", "--force": "-f"},
    "git checkout": {"--force": "-f"},
}  # fmt: skip

# Commands whose single-dash options are words, not clusters (``find -delete``).
_WORD_OPTIONS = frozenset(
    {"find", "java", "javac", "go", "gcc", "g++", "cc", "clang", "clang++", "ffmpeg", "openssl"}
)

# git's global options that take the next word as their value (git(1), "OPTIONS").
_GIT_VALUED = frozenset(
    {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env", "--super-prefix",
     "--attr-source", "--exec-path"}
)  # fmt: skip
_GIT_VALUE_ATTACHED = ("--exec-path",)  # only with "=" (git --exec-path alone prints it)


@dataclass(frozen=True)
class Form:
    name: str
    words: tuple[str, ...]
    options: frozenset[str]


def form_of(argv: Sequence[str]) -> Form:
    """The form of a command line (``argv[0]`` is the command)."""
    name = os.path.basename(argv[0]) if argv else ""
    rest = list(argv[1:])
    if name == "git":
        rest = _without_git_globals(rest)
    words: list[str] = []
    raw: list[str] = []
    literal = False
    for arg in rest:
        if literal or not _is_option(arg):
            words.append(arg)
        elif arg == "--":
            literal = True
        else:
            raw.append(arg)
    return Form(name, tuple(words), _canonical(name, words, raw))


def prefix_matches(prefix: Sequence[frozenset[str]], argv: Sequence[str]) -> bool:
    """Whether a rule's prefix (each element: alternative words) matches ``argv`` read as a
    form. Alternatives of one element are all options or all words; the first element names
    the command."""
    if not argv or not prefix:
        return False
    form = form_of(argv)
    if form.name not in {os.path.basename(a) for a in prefix[0]}:
        return False
    i = 0
    for alternatives in prefix[1:]:
        if all(_is_option(a) and a != "--" for a in alternatives):
            named = (_canonical(form.name, form.words, [a]) for a in alternatives)
            if not any(n <= form.options for n in named):
                return False
        else:
            if i >= len(form.words) or form.words[i] not in alternatives:
                return False
            i += 1
    return True


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and arg != "-"


def _canonical(name: str, words: Sequence[str], options: Sequence[str]) -> frozenset[str]:
    """Each option split (clusters) and named by its canonical spelling for this command."""
    same = {**_SAME.get(name, {}), **(_SAME.get(f"{name} {words[0]}", {}) if words else {})}
    out: set[str] = set()
    for opt in options:
        if opt.startswith("--"):
            long = opt.split("=", 1)[0]
            out.add(same.get(long, long))
        elif name in _WORD_OPTIONS:
            out.add(opt)
        else:
            out.update(same.get(f"-{c}", f"-{c}") for c in opt[1:])
    return frozenset(out)


def _without_git_globals(rest: list[str]) -> list[str]:
    """git's arguments from its subcommand on."""
    i = 0
    while i < len(rest) and _is_option(rest[i]) and rest[i] != "--":
        opt = rest[i]
        takes_next = opt in _GIT_VALUED and opt not in _GIT_VALUE_ATTACHED
        i += 2 if takes_next else 1
    return rest[i:]
