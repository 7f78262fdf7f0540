"""The one edit the name guard makes to a git config before it counts: taking out
``core.worktree``, which ``git submodule`` writes into every module's config."""

from __future__ import annotations

from ringfence.policy.gitconfig import ConfigEntry, GitConfigError, is_worktree, parse


def without_worktree(data: bytes) -> bytes:
    """``data`` less its ``core.worktree`` entries, each a line of its own as git writes it
    (``git submodule`` sets one in every module's config); GitConfigError when one shares a
    line or continues onto another (then it stays, and is refused).

    A relative work tree is resolved through the file system each time git runs: a command
    could later rename a directory on its way and put a symlink there, so that a checkout by
    you writes the commit's ``hooks/`` into a git directory. Without the key git finds a
    submodule's checkout by its ``.git`` file, as for any repository."""
    entries = parse(data)
    drop = {e.line - 1: e for e in entries if is_worktree(e)}
    if not drop:
        return data
    lines = data.split(b"\n")
    for i, e in drop.items():
        raw = lines[i]
        if not raw.strip().lower().startswith(b"worktree") or raw.rstrip(b"\r").endswith(b"\\"):
            raise GitConfigError(e.line, "core.worktree shares its line or continues")
    out = b"\n".join(line for i, line in enumerate(lines) if i not in drop)

    def kept(es: list[ConfigEntry]) -> list[tuple[str, str | None, str, str | None]]:
        return [(x.section, x.subsection, x.name, x.value) for x in es if not is_worktree(x)]

    if kept(parse(out)) != kept(entries) or any(is_worktree(x) for x in parse(out)):
        raise GitConfigError(min(drop) + 1, "core.worktree could not be taken out cleanly")
    return out
