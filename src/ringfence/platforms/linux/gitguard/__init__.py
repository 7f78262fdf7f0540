"""The name guard's git rules: every git directory, judged by what git reads.

The supervisor (the ``nameguard`` package) resolves each guarded call to canonical paths
and asks this package before acting. The rules themselves are pure (``policy/gitdir.py`` for
what may change inside a git directory, ``policy/gitconfig.py`` for which config keys are
harmless); this package adds the I/O: finding the git directory a path lies in, checking a
directory the moment it *becomes* a git directory, reading the exact bytes of a config that
is about to replace the real one, and remembering the pointer files this command created so
their content can be checked once nothing of the command is left to change them.

Why "becomes": git accepts any directory with ``HEAD`` plus ``objects/`` and ``refs/`` (or
``HEAD`` plus ``commondir``) as a repository, wherever it lies and whatever it is called. A
command may build one in any order; the step that completes the layout is where its config,
hooks and links are checked, so no order of steps yields a repository that host git would
trust and that the check never saw. Before that step the directory is inert to git, but a
``.git`` directory is governed from its ``mkdir`` anyway (``git init`` there later adopts
what it holds), with room only for what ``git init`` makes in it (``newdir.py``).

All checks here run in the single-threaded supervisor, which performs every namespace change
the command makes under a writable root, so nothing the command does can interleave with a
check (see SECURITY.md for the remaining limits).

The package: ``guard.py`` (:class:`GitGuard`: the rules for names, the end-of-command
checks), ``newdir.py`` (what a new git directory may hold), ``content.py`` (which bytes may
become a config, ``.gitmodules``, pointer or todo list), ``layout.py`` (what git takes for a
repository, where a path lies), ``fileio.py`` (reading, replacing and moving aside files
without following a link).
"""

from ringfence.platforms.linux.gitguard.fileio import (
    MAX_CONTENT_BYTES,
    put_copy,
    quarantine,
    read_all,
    read_regular,
)
from ringfence.platforms.linux.gitguard.guard import GitGuard
from ringfence.platforms.linux.gitguard.layout import Unknown, is_dot_git, is_gitdir

__all__ = [
    "MAX_CONTENT_BYTES",
    "GitGuard",
    "Unknown",
    "is_dot_git",
    "is_gitdir",
    "put_copy",
    "quarantine",
    "read_all",
    "read_regular",
]
