"""The git rules for file content: which bytes may become a config, a ``.gitmodules``,
a pointer (``.git`` file, ``commondir``, ``gitdir``) or a rebase todo list."""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Callable
from typing import Any

from ringfence.platforms.linux.gitguard.layout import GITMODULES, is_main_gitdir

# Imported here, not when first needed: the guard runs inside the sandbox's view of the
# files, where ringfence's own source may not be visible (a checkout under the host's /tmp,
# which the sandbox replaces); everything it can need is loaded before it gets there.
from ringfence.policy import gitconfig, gitdir
from ringfence.policy.gitconfig_edit import without_worktree

EXCLUDE = "exclude"  # info/exclude of a .git in the making (guard.checked_kind)
COMMONDIR = "../.."  # the commondir of a linked git directory, as `git worktree add` writes it


class ContentRules:
    """Content checks; ``root_of`` names the watched root a path lies in (None: outside)."""

    def __init__(self, root_of: Callable[[str], str | None]) -> None:
        self.root_of = root_of

    def _refusals(self, data: bytes, *, gitdir_path: str, kind: str) -> list[Any]:
        """The key refusals for config bytes (GitConfigError when malformed)."""
        if kind == GITMODULES:
            return gitconfig.check_gitmodules(data)
        return gitconfig.check_repo_config(data)

    def config_problem(self, data: bytes, *, gitdir_path: str, kind: str) -> str | None:
        """Why these exact bytes may not become a config (``kind`` "config" or
        ".gitmodules"), or None."""
        try:
            refusals = self._refusals(data, gitdir_path=gitdir_path, kind=kind)
        except gitconfig.GitConfigError as exc:
            return f"malformed: {exc}"
        return gitconfig.describe(refusals) if refusals else None

    def host_hint(self, data: bytes, *, path: str, gitdir_path: str, kind: str) -> str:
        """What the user can run outside the sandbox to set the refused keys themselves (if
        they trust them): ringfence never widens the sandbox for a config key."""
        try:
            refusals = self._refusals(data, gitdir_path=gitdir_path, kind=kind)
        except ValueError:  # GitConfigError: malformed, nothing to set
            return ""
        keys = list(dict.fromkeys(r.key for r in refusals))[:3]
        if not keys or any(not k.isprintable() or "'" in k for k in keys):
            return ""
        cmds = "; ".join(f"git config --file {shlex.quote(path)} {k} VALUE" for k in keys)
        return f"to set it yourself, outside the sandbox and only if you trust it: {cmds}"

    @staticmethod
    def settle(data: bytes, kind: str) -> tuple[bytes, bool]:
        """The bytes that become a config (``kind`` "config"): ``data`` without its
        ``core.worktree`` lines (``gitconfig_edit``), and whether any went. Bytes
        that cannot lose them cleanly stay as they are, and the check refuses them."""
        if kind != "config":
            return data, False
        try:
            kept = without_worktree(data)
        except gitconfig.GitConfigError:
            return data, False
        return kept, kept != data

    def pointer_problem(self, path: str, kind: str, data: bytes) -> str | None:
        """Why the file at ``path`` with content ``data`` may not stay (``kind`` as in
        ``GitGuard.pending``), or None."""
        holder = posixpath.dirname(path)
        if kind == GITMODULES:
            return self.config_problem(data, gitdir_path=holder, kind=GITMODULES)
        if kind == "todo":
            bad = gitdir.todo_refusals(data)
            return f"runs commands ({', '.join(bad[:3])})" if bad else None
        if kind == "strategy":
            bad = gitdir.strategy_refusals(data)
            return f"names a program as merge strategy ({bad[0]})" if bad else None
        if kind == "sequencer-opts":
            return self._sequencer_opts_problem(data)
        if kind == EXCLUDE:
            return exclude_problem(data)
        if kind == "apply-opt":
            bad = gitdir.apply_opt_refusals(data)
            return f"options git apply must not get ({', '.join(bad[:3])})" if bad else None
        try:
            written = gitdir.pointer_path(kind, data, holder_dir=holder, gitdir=holder)
        except gitdir.PointerError as exc:
            return f"not a plain pointer ({exc})"
        if kind == "commondir" and (
            written != f"{holder}/{COMMONDIR}"
            or posixpath.basename(posixpath.dirname(holder)) != "worktrees"
        ):
            # The only commondir git writes (worktree.c): ``../..`` in ``worktrees/<id>/``,
            # so it names the repository that holds it however that repository is moved.
            # Any other could be re-aimed later by renaming a directory on its way.
            return f"not what git writes (only {COMMONDIR} in <git directory>/worktrees/<id>/)"
        target = posixpath.normpath(written)
        if self.root_of(target) is None:
            return f"points outside the writable roots ({target})"
        # Where git goes: the path resolved step by step, a ``..`` after a symlink going up
        # from where the symlink led (``B/l/../A`` with ``B/l -> ../C/D/E`` is ``C/D/A``),
        # not the normalised text.
        real = os.path.realpath(written)
        if self.root_of(real) is None:
            return f"leads outside the writable roots through a symlink ({real})"
        if kind == "commondir" and not is_main_gitdir(real):
            return f"its common directory {real} is not a complete repository"
        return None

    def _sequencer_opts_problem(self, data: bytes) -> str | None:
        """sequencer/opts is read as config (sequencer.c populate_opts_cb); its strategy names
        a program unless it is one of git's own."""
        try:
            entries = gitconfig.parse(data)
        except gitconfig.GitConfigError as exc:
            return f"malformed: {exc}"
        for e in entries:
            if e.key == "options.strategy" and (e.value or "") not in gitdir.BUILTIN_STRATEGIES:
                return f"names a program as merge strategy ({e.value!r})"
        return None


def exclude_problem(data: bytes) -> str | None:
    """``info/exclude`` of a ``.git`` in the making: git init's template holds comments
    only; patterns would hide files from `git status` and `git add -A` once it is adopted."""
    for line in data.splitlines():
        if line.strip() and not line.lstrip().startswith(b"#"):
            return "patterns in info/exclude (it would hide files from git)"
    return None
