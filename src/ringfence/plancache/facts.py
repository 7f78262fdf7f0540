"""What a plan was compiled from, as far as the file system goes: every question the compile
asked of it, and the answer, so that a later run can ask again and reuse the plan only if
every answer is the same.

The recorder wraps the ``os`` calls (and ``open``, ``pwd``) that policy resolution, host
facts and the compiler use, for the duration of one compile in the CLI's own single-threaded
process. It records by what the code asked, not by a list of files someone thought of: a new
config file, a new ``.git``, a changed ``~/.gitconfig``, a link swapped in, each changes an
answer and so misses the cache. Anything it cannot replay (a write, a call relative to a
directory descriptor) makes the compile uncacheable rather than half-recorded.

Answers are compared by what callers can observe: for a stat, the file's type, permissions,
owner, identity (device, inode) and, for a regular file, size, link count and modification
time; for a directory listing, the names and their kinds; for a file read, its whole content
(digest). A directory's own times are left out: a command that writes in the workspace
changes them, and the compile never reads them.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import pwd
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any

try:  # the built-in module: hashlib loads OpenSSL first (~3 ms on the one-shot path)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b

Answer = tuple[Any, ...]
Question = tuple[str, str]  # (op, absolute path or key)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_READ_LIMIT = 1 << 22  # a file larger than this is not worth caching a plan over


def _stat_answer(st: os.stat_result) -> Answer:
    kind = stat.S_IFMT(st.st_mode)
    base = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_dev, st.st_ino)
    if stat.S_ISREG(kind):
        return (*base, st.st_size, st.st_nlink, st.st_mtime_ns)
    return base


def _err(e: OSError) -> Answer:
    return ("err", e.errno)


def _read(path: str, nofollow: bool) -> Answer:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ("not-a-file", stat.S_IFMT(st.st_mode))
        data = os.read(fd, _READ_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > _READ_LIMIT:
        return ("too-large",)  # not digested whole: a compile that read it is not kept
    return ("content", blake2b(data, digest_size=20).hexdigest(), len(data))


def _scan(path: str) -> Answer:
    with os.scandir(path) as it:
        return ("entries", tuple(sorted(_entry(e) for e in it)))


_ASK: dict[str, Callable[[str], Answer]] = {
    "stat": lambda p: _stat_answer(os.stat(p)),
    "lstat": lambda p: _stat_answer(os.lstat(p)),
    "readlink": lambda p: ("link", os.readlink(p)),
    "listdir": lambda p: ("names", tuple(sorted(os.listdir(p)))),
    "scandir": _scan,
    "read": lambda p: _read(p, nofollow=False),
    "read-nofollow": lambda p: _read(p, nofollow=True),
    "pwuid": lambda p: ("pw", tuple(pwd.getpwuid(int(p)))),
    "pwnam": lambda p: ("pw", tuple(pwd.getpwnam(p))),
}


def ask(op: str, path: str) -> Answer:
    """The answer the file system gives now (never raises for a known question)."""
    try:
        if op.startswith("access:"):
            return ("access", os.access(path, int(op[7:])))
        if op in DERIVED:
            return _derived(op, path)
        fn = _ASK.get(op)
        if fn is None:
            raise ValueError(f"unknown question {op!r}")
        return fn(path)
    except OSError as e:
        return _err(e)
    except KeyError:
        return ("missing",)


# Questions answered by a function of ringfence's rather than one call: what the compile
# depends on is narrower than the listing it reads (the secrets among /tmp's entries, not
# every temporary file). op -> (module, function of one path).
DERIVED = {"tmp-secrets": ("ringfence.platforms.linux.tmp_entries", "secrets_in")}


def _derived(op: str, arg: str) -> Answer:
    import importlib

    module, name = DERIVED[op]
    return ("value", getattr(importlib.import_module(module), name)(arg))


def derived(op: str, arg: str) -> Any:
    """Answer a derived question (see DERIVED); a recording compile notes it as one."""
    rec = current()
    if rec is None:
        return _derived(op, arg)[1]
    with rec.paused():
        answer = _derived(op, arg)
    rec.note_answer(op, arg, answer)
    return answer[1]


def _entry(e: os.DirEntry[str]) -> tuple[str, bool, bool, bool]:
    try:
        return (e.name, e.is_symlink(), e.is_dir(follow_symlinks=False), e.is_file())
    except OSError:
        return (e.name, False, False, False)


def unchanged(answers: dict[Question, Answer]) -> Question | None:
    """The first question whose answer is different now, or None when all are the same."""
    for (op, path), was in answers.items():
        if ask(op, path) != was:
            return (op, path)
    return None


class Recorder:
    """Records while active; ``answers`` is what a later run must see again. ``uncacheable``
    says why a compile cannot be cached (None: it can)."""

    def __init__(self) -> None:
        self.asked: dict[Question, Answer] = {}
        self.uncacheable: str | None = None
        self.effects: list[tuple[str, tuple[Any, ...], Any]] = []  # see oneshot.effect
        self._paused = 0
        self._thread = threading.get_ident()
        self._saved: list[tuple[Any, str, Any]] = []

    # -- recording -----------------------------------------------------------------------

    def _note(self, op: str, path: Any, answer: Answer | None = None) -> None:
        """``answer``: what the call itself saw (None: ask now, before the caller does)."""
        if self._paused or threading.get_ident() != self._thread:
            return
        if isinstance(path, int):
            return  # an fd: what was opened is recorded where it was opened
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            self.refuse(f"{op} of {type(path).__name__}")
            return
        q = (op, path if op.startswith("pw") else os.path.abspath(path))
        if answer is None:
            with self.paused():  # ask() makes the same calls; they are not questions
                answer = ask(*q)
        seen = answer
        if seen == ("too-large",):
            self.refuse(f"{path} is too large to check again")
        if self.asked.setdefault(q, seen) != seen:
            self.refuse(f"{path} changed while the plan was compiled")

    def note_answer(self, op: str, key: str, answer: Answer) -> None:
        if self._paused or threading.get_ident() != self._thread:
            return
        if self.asked.setdefault((op, key), answer) != answer:
            self.refuse(f"{op} {key} changed while the plan was compiled")

    def refuse(self, why: str) -> None:
        if not self._paused and self.uncacheable is None:
            self.uncacheable = why

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made here are not questions the plan depends on (ringfence making its own
        state directories, which a cache hit makes again)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def _wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, make(original))

    def __enter__(self) -> Recorder:
        for owner, name, make in _wrappers(self):
            self._wrap(owner, name, make)
        for name in ("getpwall", "statvfs", "getxattr", "listxattr", "walk", "fwalk"):
            owner = pwd if name == "getpwall" else os
            if hasattr(owner, name):
                self._wrap(owner, name, self._refusing(name))
        return self

    def _refusing(self, name: str) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def wrapper(*a: Any, **kw: Any) -> Any:
                self.refuse(f"{name}() is not recorded")
                return orig(*a, **kw)

            return wrapper

        return make

    def __exit__(self, *exc: object) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)

    def answers(self) -> dict[Question, Answer] | None:
        """Every question asked and the answer the compile saw; None when an answer is
        different now (the host changed under the compile: do not keep that plan)."""
        if self.uncacheable is not None or unchanged(self.asked) is not None:
            return None
        return dict(self.asked)


Wrap = Callable[[Any], Any]


def _wrappers(rec: Recorder) -> list[tuple[Any, str, Wrap]]:
    """(owner, attribute, wrapper maker) for every call the recorder answers for."""

    def stat_like(op: str) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def wrapper(path: Any, *a: Any, dir_fd: Any = None, **kw: Any) -> Any:
                if dir_fd is not None:
                    rec.refuse(f"{op} relative to a directory descriptor")
                q = op if kw.get("follow_symlinks", True) else "lstat"
                try:
                    st = orig(path, *a, dir_fd=dir_fd, **kw)
                except OSError as e:
                    rec._note(q, path, _err(e))
                    raise
                rec._note(q, path, _stat_answer(st))
                return st

            return wrapper

        return make

    def simple(op: str) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def wrapper(path: Any = ".", *a: Any, **kw: Any) -> Any:
                if kw.get("dir_fd") is not None:
                    rec.refuse(f"{op} relative to a directory descriptor")
                try:
                    got = orig(path, *a, **kw)
                except OSError as e:
                    rec._note(op, path, _err(e))
                    raise
                if op == "lstat":
                    rec._note(op, path, _stat_answer(got))
                elif op == "readlink":
                    rec._note(op, path, ("link", got))
                elif op == "listdir":
                    rec._note(op, path, ("names", tuple(sorted(got))))
                else:
                    rec._note(op, path)
                return got

            return wrapper

        return make

    return [
        (os, "stat", stat_like("stat")),
        (os, "lstat", simple("lstat")),
        (os, "readlink", simple("readlink")),
        (os, "listdir", simple("listdir")),
        (os, "scandir", simple("scandir")),
        *_open_wrappers(rec),
    ]


def _open_wrappers(rec: Recorder) -> list[tuple[Any, str, Wrap]]:
    """Opens (recorded as reads, or refused as writes), access() and the password file."""

    def access(orig: Any) -> Any:
        def wrapper(path: Any, mode: int, *a: Any, **kw: Any) -> Any:
            if a or kw.get("dir_fd") is not None or kw.get("follow_symlinks") is False:
                rec.refuse("access with options")
            got = orig(path, mode, *a, **kw)
            rec._note(f"access:{mode}", path, ("access", got))
            return got

        return wrapper

    def os_open(orig: Any) -> Any:
        def wrapper(path: Any, flags: int, *a: Any, dir_fd: Any = None, **kw: Any) -> Any:
            if dir_fd is not None:
                rec.refuse("open relative to a directory descriptor")
            elif flags & _WRITE_FLAGS:
                rec.refuse(f"a write to {path!r}")
            elif flags & (os.O_DIRECTORY | os.O_PATH):
                rec._note("lstat" if flags & os.O_NOFOLLOW else "stat", path)
            else:
                rec._note("read-nofollow" if flags & os.O_NOFOLLOW else "read", path)
            return orig(path, flags, *a, dir_fd=dir_fd, **kw)

        return wrapper

    def py_open(orig: Any) -> Any:
        def wrapper(file: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
            if not isinstance(file, int):
                if any(c in mode for c in "wax+"):
                    rec.refuse(f"a write to {file!r}")
                elif kw.get("opener") is not None:
                    rec.refuse("open with an opener")
                else:
                    rec._note("read", file)
            return orig(file, mode, *a, **kw)

        return wrapper

    def pw(op: str) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def wrapper(key: Any) -> Any:
                rec._note(op, str(key))
                return orig(key)

            return wrapper

        return make

    return [
        (os, "access", access),
        (os, "open", os_open),
        (builtins, "open", py_open),
        (io, "open", py_open),
        (pwd, "getpwuid", pw("pwuid")),
        (pwd, "getpwnam", pw("pwnam")),
    ]


_current: list[Recorder] = []


def current() -> Recorder | None:
    """The recorder of the compile in progress, if any (for ``paused`` side effects)."""
    return _current[-1] if _current else None


@contextlib.contextmanager
def recording(rec: Recorder) -> Iterator[Recorder]:
    """Record into ``rec`` while in this block (it may be entered again: answers add up)."""
    rec._thread = threading.get_ident()
    _current.append(rec)
    try:
        with rec:
            yield rec
    finally:
        _current.pop()


def effect(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one of ringfence's own preparations during a compile (making its state
    directories): a recording compile notes it, not as a question, and a cache hit does it
    again (``oneshot._effect`` names the ones it may do)."""
    rec = current()
    if rec is None:
        return fn(*args)
    with rec.paused():
        result = fn(*args)
    rec.effects.append((name, args, result))
    return result


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Calls here are not questions as such (a directory listed to answer many ``lstat``s at
    once: the caller notes each answer it draws from it with ``note``)."""
    rec = current()
    if rec is None:
        yield
        return
    with rec.paused():
        yield


def note(op: str, path: str, answer: Answer) -> None:
    """Record an answer the caller found some other way than asking (see ``unrecorded``)."""
    rec = current()
    if rec is not None:
        rec.note_answer(op, path, answer)
