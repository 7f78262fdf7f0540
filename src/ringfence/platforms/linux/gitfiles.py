"""The git config files git reads for a repository, read the way git does: which file
includes which, and the few keys the sandbox must know before anything runs
(core.hooksPath, core.worktree). Used by the host facts at start and by the name guard for
repositories it meets later.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_INCLUDE_DEPTH = 10  # git's own limit (config.c: MAX_INCLUDE_DEPTH)
MAX_CONFIG_FILES = 64  # per lookup: includes may fan out (a bomb); each file is read once
MAX_CONFIG_BYTES = 1 << 20  # as gitconfig.MAX_CONFIG_BYTES (not imported unless needed)
# Every key read_config acts on has one of these in its name (git keys are case-insensitive;
# a continuation line cannot split a key name).
_WORDS = (b"hookspath", b"worktree", b"path", b"templatedir")


@dataclass
class ConfigRead:
    """What a chain of git config files says that the sandbox must know: the last
    core.hooksPath and core.worktree, and every file included on the way (include.path and
    includeIf.*.path, whatever the condition: any of them may apply)."""

    hooks_path: str | None = None
    worktree: str | None = None
    template_dir: str | None = None  # init.templateDir: copied into every new repository
    includes: list[str] = field(default_factory=list)
    files_read: int = 0  # each file once, and at most MAX_CONFIG_FILES (an include bomb)


def read_config(path: str, home: str | None, out: ConfigRead, depth: int = 0) -> None:
    if out.files_read >= MAX_CONFIG_FILES or path in out.includes[:-1]:
        return
    out.files_read += 1
    try:
        data = _read_plain_file(path, MAX_CONFIG_BYTES)
    except OSError:
        return  # unreadable or not a file: it names nothing git could use either
    lowered = data.lower()
    if not any(word in lowered for word in _WORDS):
        return  # none of the keys we look for (most configs): no need to parse
    from ringfence.policy import gitconfig

    try:
        entries = gitconfig.parse(data)
    except ValueError:
        return  # malformed: git would refuse it too
    for e in entries:
        if e.key == "core.hookspath" and e.value:
            out.hooks_path = e.value  # the last one wins, as in git
        elif e.key == "init.templatedir" and e.value:
            out.template_dir = expand(e.value, os.path.dirname(path), home)
        elif e.key == "core.worktree" and e.value:
            out.worktree = os.path.normpath(os.path.join(os.path.dirname(path), e.value))
        elif e.name == "path" and e.section in ("include", "includeif") and e.value:
            target = expand(e.value, os.path.dirname(path), home)
            if target is not None and depth < MAX_INCLUDE_DEPTH:
                out.includes.append(target)
                read_config(target, home, out, depth + 1)


def _read_plain_file(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file; never waits (a FIFO planted where a config
    is expected must not hang whoever reads it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, total = [], 0
        while total < limit and (chunk := os.read(fd, min(65536, limit - total))):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def expand(value: str, base: str, home: str | None) -> str | None:
    """A path from a git config, as git resolves it: ``~/`` is home, relative is ``base``."""
    if value.startswith("~/"):
        if not home:
            return None
        value = os.path.join(home, value[2:])
    return os.path.realpath(os.path.join(base, value))


def global_config_files(env: Mapping[str, str], home: str | None) -> list[str]:
    """The config files every repository reads first, in git's order (system, XDG, ~), or
    the ones ``GIT_CONFIG_SYSTEM``/``GIT_CONFIG_GLOBAL`` name instead (git >= 2.32)."""
    files: list[str] = []
    if not env.get("GIT_CONFIG_NOSYSTEM"):
        system = env.get("GIT_CONFIG_SYSTEM")
        files.append(system if system and os.path.isabs(system) else "/etc/gitconfig")
    named = env.get("GIT_CONFIG_GLOBAL")
    if named and os.path.isabs(named):
        files.append(named)
        return files
    xdg = env.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else None)
    if xdg:
        files.append(os.path.join(xdg, "git", "config"))
    if home:
        files.append(os.path.join(home, ".gitconfig"))
    return files
