"""The name guard on the real kernel.

The filter is never installed in the pytest process. Each test forks a supervisor process,
which forks the guarded child; the child installs the filter, hands the listener over a
socketpair and then runs a Python probe or execs a program. The supervisor serves until the
child exits and reports the child's status and the denials back to the test.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringfence.platforms.linux import steps
from ringfence.platforms.linux.guard_rules import GuardRules
from ringfence.platforms.linux.nameguard.filter import install_filter
from ringfence.platforms.linux.nameguard.supervisor import Supervisor

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
]

PROTECTED_NAMES = (".envrc", ".vscode", ".git/hooks", ".git/config", ".mcp.json")
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Outcome:
    status: int  # exit code, or -signal
    denials: list[dict[str, object]]


def _status(raw: int) -> int:
    return os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else -os.WTERMSIG(raw)


def run_guarded(
    rules: GuardRules,
    probe: Callable[[], int] | list[str],
    *,
    cwd: Path,
    guard: bool = True,
    umask: int = 0o022,
    stdout: Path | None = None,
    env: dict[str, str] | None = None,
    lock: str | None = None,
    on_event: Callable[[str, str, str], None] | None = None,
    serve_errors_ok: bool = False,
) -> Outcome:
    """Run ``probe`` (a function returning an exit code, or an argv) under the guard.
    ``on_event``: the supervisor's (runs in its process); ``serve_errors_ok``: a supervisor
    that fails (as when it cannot tell the host) closes its listener, and the probe goes on,
    its guarded calls failing, instead of the run failing."""
    rfd, wfd = os.pipe()
    sup_pid = os.fork()
    if sup_pid == 0:  # supervisor process
        code = 70
        try:
            os.close(rfd)
            parent_sock, child_sock = socket.socketpair()
            child = os.fork()
            if child == 0:  # the guarded command
                ccode = 71
                try:
                    parent_sock.close()
                    os.chdir(cwd)
                    os.umask(umask)
                    if stdout is not None:
                        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                        out = os.open(stdout, flags, 0o644)
                        os.dup2(out, 1)
                        os.close(out)
                    if guard:
                        listener = install_filter()
                        steps.hand_over_listener(child_sock, listener)  # not sendmsg: guarded
                        os.close(listener)
                    child_sock.close()
                    if isinstance(probe, list):
                        os.execvpe(probe[0], probe, env if env is not None else dict(os.environ))
                    ccode = probe()
                except BaseException as exc:
                    os.write(2, f"probe failed: {exc!r}\n".encode())
                finally:
                    os._exit(ccode)
            child_sock.close()
            denials: list[dict[str, object]] = []
            if guard:
                _supervise(parent_sock, child, rules, lock, on_event, serve_errors_ok, denials)
            _, raw = os.waitpid(child, 0)
            os.write(wfd, json.dumps({"status": _status(raw), "denials": denials}).encode())
            code = 0
        except BaseException as exc:
            os.write(2, f"supervisor failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    _, raw = os.waitpid(sup_pid, 0)
    assert _status(raw) == 0, "the supervisor process failed"
    data = json.loads(b"".join(chunks))
    return Outcome(data["status"], data["denials"])


def _supervise(  # noqa: PLR0917 - run_guarded's own parts
    sock: socket.socket,
    child: int,
    rules: GuardRules,
    lock: str | None,
    on_event: Callable[[str, str, str], None] | None,
    serve_errors_ok: bool,
    denials: list[dict[str, object]],
) -> None:
    listener = steps.take_listener(sock, child)
    lock_fd = os.open(lock, os.O_RDWR) if lock is not None else -1
    sup = Supervisor(
        listener,
        rules,
        on_denial=lambda d: denials.append(d.__dict__),
        on_event=on_event,
        lock_fd=lock_fd,
    )
    pidfd = os.pidfd_open(child)
    try:
        sup.serve(pidfd)
    except Exception:
        if not serve_errors_ok:
            raise
        os.close(listener)  # as a guard that dies: guarded calls then fail


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "ws"
    root.mkdir()
    return root


@pytest.fixture
def rules(ws: Path) -> GuardRules:
    return GuardRules(
        writable_roots=(str(ws),),
        protected_paths=(str(ws / "locked"),),
        protected_names=PROTECTED_NAMES,
    )


def expect_errno(fn: Callable[[], object], code: int) -> int:
    """0 when ``fn`` raises OSError(code), else a distinct exit code for the test."""
    try:
        fn()
    except OSError as exc:
        return 0 if exc.errno == code else 10 + (exc.errno or 0) % 100
    return 9


def touch(path: str | Path, mode: str) -> None:
    """open() and close at once (the probes only care whether the open succeeds)."""
    with open(path, mode):
        pass


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- open(O_CREAT)


def test_protected_creation_succeeds_without_the_guard(ws: Path, rules: GuardRules) -> None:
    """The check the other tests rely on: without the filter these creations work."""

    def probe() -> int:
        os.close(os.open(".envrc", os.O_WRONLY | os.O_CREAT, 0o644))
        os.makedirs(".vscode/x")
        os.makedirs(".git/hooks")
        os.symlink("x", ".mcp.json")
        return 0

    out = run_guarded(rules, probe, cwd=ws, guard=False)
    assert out.status == 0
    assert (ws / ".envrc").exists() and (ws / ".vscode/x").is_dir()
    assert (ws / ".git/hooks").is_dir() and (ws / ".mcp.json").is_symlink()


def test_open_creat_protected_refused_and_nothing_left(ws: Path, rules: GuardRules) -> None:
    (ws / ".git").mkdir()

    def probe() -> int:
        checks = [
            expect_errno(lambda: os.open(".envrc", os.O_WRONLY | os.O_CREAT, 0o644), errno.EACCES),
            expect_errno(lambda: os.open(str(ws / ".mcp.json"), os.O_RDWR | os.O_CREAT), 13),
            expect_errno(lambda: touch(".git/config", "w"), errno.EACCES),
            expect_errno(lambda: touch("locked", "x"), errno.EACCES),
            expect_errno(lambda: touch("./sub/../.envrc", "a"), errno.ENOENT),  # no sub/
        ]
        os.mkdir("sub")
        checks.append(expect_errno(lambda: touch("./sub/../.envrc", "a"), errno.EACCES))
        checks.append(expect_errno(lambda: touch("sub/.envrc", "w"), errno.EACCES))
        dfd = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)  # openat relative to a dirfd
        checks.append(expect_errno(lambda: os.open(".envrc", os.O_CREAT, dir_fd=dfd), 13))
        os.close(os.open("made", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=dfd))
        return next((c for c in checks if c), 0)

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
    assert listing(ws) == [".git", "sub", "sub/made"]
    assert {d["syscall"] for d in out.denials} == {"openat"}
    assert {d["rule"] for d in out.denials} >= {".envrc", ".mcp.json", ".git/config"}
    assert str(ws / "locked") in {d["rule"] for d in out.denials}


def test_open_creat_unprotected_works_like_the_kernel(ws: Path, rules: GuardRules) -> None:
    (ws / "existing").write_text("0123456789")
    (ws / "appendme").write_text("abc")

    def probe() -> int:
        fd = os.open("new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, b"hello")
        flags = fcntl_flags(fd)
        os.close(fd)
        if flags & os.O_NONBLOCK:
            return 2
        fd = os.open("existing", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"xy")
        os.close(fd)
        with open("appendme", "a") as f:
            f.write("def")
        fd = os.open("cloexec", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if not os.get_inheritable(fd) and fd >= 0:
            os.close(fd)
        else:
            return 3
        fd = _libc.open(b"inherit", os.O_WRONLY | os.O_CREAT, 0o640)  # os.open adds CLOEXEC
        ok = fd >= 0 and os.get_inheritable(fd)
        os.close(fd)
        if not ok:
            return 4
        if expect_errno(lambda: os.open("new", os.O_CREAT | os.O_EXCL | os.O_WRONLY), 17):
            return 5
        fd = os.open("viacreat", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o777)  # creat-like
        os.close(fd)
        return 0

    out = run_guarded(rules, probe, cwd=ws, umask=0o027)
    assert out.status == 0, out
    assert (ws / "new").read_bytes() == b"hello"
    assert stat.S_IMODE((ws / "new").stat().st_mode) == 0o640  # 0666 & ~027
    assert stat.S_IMODE((ws / "viacreat").stat().st_mode) == 0o750
    assert (ws / "existing").read_text() == "xy"
    assert stat.S_IMODE((ws / "existing").stat().st_mode) == 0o644  # mode of an existing file kept
    assert (ws / "appendme").read_text() == "abcdef"
    assert out.denials == []


def fcntl_flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_creat_syscall(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        creat = _libc.creat
        if creat(b".envrc", 0o644) != -1 or ctypes.get_errno() != errno.EACCES:
            return 2
        fd = creat(b"made", 0o600)
        if fd < 0:
            return 3
        os.write(fd, b"c")
        os.close(fd)
        return 0

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
    assert listing(ws) == ["made"] and (ws / "made").read_bytes() == b"c"
    assert [d["syscall"] for d in out.denials] == ["creat"]


def test_symlink_to_protected_name_is_not_followed_into_creation(
    ws: Path, rules: GuardRules
) -> None:
    os.symlink(".envrc", ws / "foo")
    os.symlink(str(ws / ".vscode" / "tasks.json"), ws / "abs")
    os.symlink("d/../.git/hooks", ws / "hooks")
    (ws / "d").mkdir()
    (ws / ".git").mkdir()

    def probe() -> int:
        return (
            expect_errno(lambda: os.open("foo", os.O_WRONLY | os.O_CREAT, 0o644), errno.EACCES)
            or expect_errno(lambda: touch("abs", "w"), errno.ENOENT)  # .vscode does not exist
            or expect_errno(lambda: touch("hooks/pre-commit", "w"), errno.ENOENT)
            # O_EXCL does not follow: EEXIST from the symlink itself, as the kernel says.
            or expect_errno(lambda: touch("foo", "x"), errno.EEXIST)
            # O_NOFOLLOW: ELOOP.
            or expect_errno(lambda: os.open("foo", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW), 40)
        )

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert not (ws / ".envrc").exists() and not (ws / ".vscode").exists()
    assert not (ws / ".git/hooks").exists()


def test_symlink_into_existing_protected_dir(ws: Path, rules: GuardRules) -> None:
    (ws / ".git" / "hooks").mkdir(parents=True)
    os.symlink(".git/hooks", ws / "h")

    def probe() -> int:
        return expect_errno(lambda: touch("h/pre-commit", "w"), errno.EACCES) or expect_errno(
            lambda: touch("/proc/self/cwd/h/post-merge", "w"), errno.EACCES
        )

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert os.listdir(ws / ".git/hooks") == []
    assert {d["path"] for d in out.denials} == {
        str(ws / ".git/hooks/pre-commit"),
        str(ws / ".git/hooks/post-merge"),
    }


def test_dev_null_stdout_and_proc_self_fd(ws: Path, rules: GuardRules) -> None:
    out_file = ws / "captured"

    def probe() -> int:
        for path in ("/dev/null", "/dev/stdout", "/proc/self/fd/1", "/dev/fd/1"):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(fd, f"{path}\n".encode())
            os.close(fd)
        return 0

    out = run_guarded(rules, probe, cwd=ws, stdout=out_file)
    assert out.status == 0, out
    assert out_file.read_text().splitlines() == ["/dev/stdout", "/proc/self/fd/1", "/dev/fd/1"]


def test_shell_redirections_match_the_unguarded_run(ws: Path, rules: GuardRules) -> None:
    script = (
        "echo one > /dev/null; echo two > /dev/stdout; echo three >> /proc/self/fd/1; "
        "echo four > f; echo five >> f; cat f; echo six >> /dev/fd/1; rm f"
    )
    plain, guarded = ws.parent / "plain", ws.parent / "guarded"
    out = run_guarded(rules, ["/bin/sh", "-c", script], cwd=ws, stdout=plain, guard=False)
    assert out.status == 0
    out = run_guarded(rules, ["/bin/sh", "-c", script], cwd=ws, stdout=guarded)
    assert out.status == 0
    assert plain.read_text() == guarded.read_text() == "two\nthree\nfour\nfive\nsix\n"
    script = "echo x > .envrc || echo refused; test -e .envrc && echo LEAK; true"
    out = run_guarded(rules, ["/bin/sh", "-c", script], cwd=ws, stdout=guarded)
    assert guarded.read_text().endswith("six\nrefused\n")
    assert listing(ws) == []


def test_fifo_open_for_write_waits_for_a_reader(ws: Path, rules: GuardRules) -> None:
    fifo = ws / "fifo"
    os.mkfifo(fifo)

    def probe() -> int:
        # Another process opens the reading end a little later; our O_CREAT write-open must
        # wait for it like the kernel would, and the guard must keep serving meanwhile.
        pid = os.fork()
        if pid == 0:
            import time

            time.sleep(0.3)
            os.close(os.open("other", os.O_WRONLY | os.O_CREAT, 0o644))  # goes through the guard
            fd = os.open("fifo", os.O_RDONLY)
            data = os.read(fd, 100)
            os._exit(0 if data == b"ping" else 1)
        fd = os.open("fifo", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"ping")
        os.close(fd)
        _, raw = os.waitpid(pid, 0)
        return _status(raw)

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
    assert (ws / "other").exists()


def test_fifo_opens_waiting_at_once_are_capped(ws: Path, rules: GuardRules) -> None:
    """Each waits in a thread of the guard's and holds a descriptor: without a cap a command
    could run the guard out of descriptors (so that a call it had done failed afterwards, an
    outside review) or threads (the guard died)."""
    from ringfence.platforms.linux.nameguard.files import FIFO_WAITS_MAX

    os.mkfifo(ws / "fifo")
    extra = 8

    def probe() -> int:
        import time

        errors: list[int] = []

        def reader() -> None:
            try:
                os.close(os.open("fifo", os.O_RDONLY | os.O_CREAT))  # the guard's to open
            except OSError as e:
                errors.append(e.errno or 0)

        threads = [threading.Thread(target=reader) for _ in range(FIFO_WAITS_MAX + extra)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(errors) < extra and time.monotonic() < deadline:
            time.sleep(0.01)
        writer = os.open("fifo", os.O_WRONLY)  # lets every waiting one through
        for t in threads:
            t.join(20)
        os.close(writer)
        return 0 if errors == [errno.EAGAIN] * extra else 1

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out


# ---------------------------------------------------------------- mkdir, mknod


def test_mkdir(ws: Path, rules: GuardRules) -> None:
    (ws / ".git").mkdir()

    def probe() -> int:
        return (
            expect_errno(lambda: os.mkdir(".vscode"), errno.EACCES)
            or expect_errno(lambda: os.makedirs(".vscode/x"), errno.EACCES)
            or expect_errno(lambda: os.mkdir(".git/hooks"), errno.EACCES)
            or expect_errno(lambda: os.mkdir("locked"), errno.EACCES)
            or expect_errno(lambda: os.mkdir("."), errno.EEXIST)
            or expect_errno(lambda: os.mkdir("nope/x"), errno.ENOENT)
            or int(os.mkdir("a", 0o777) or 0)
            or int(os.makedirs("b/c/d") or 0)
            or int(os.mkdir("trail/", 0o700) or 0)
            or int(os.makedirs("nested/.git") or 0)  # a nested repo's .git itself is fine
            or expect_errno(lambda: os.mkdir("nested/.git/hooks"), errno.EACCES)
        )

    out = run_guarded(rules, probe, cwd=ws, umask=0o002)
    assert out.status == 0, out
    assert listing(ws) == [".git", "a", "b", "b/c", "b/c/d", "nested", "nested/.git", "trail"]
    assert stat.S_IMODE((ws / "a").stat().st_mode) == 0o775
    assert stat.S_IMODE((ws / "trail").stat().st_mode) == 0o700
    assert {d["syscall"] for d in out.denials} == {"mkdir"}


def test_mkdir_p_in_shell(ws: Path, rules: GuardRules) -> None:
    out = run_guarded(rules, ["/bin/sh", "-c", "mkdir -p .vscode/x"], cwd=ws)
    assert out.status != 0
    assert listing(ws) == []


def test_mknod_fifo(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        os.mkfifo("pipe", 0o666)
        os.mknod("plain", 0o600 | stat.S_IFREG)
        return expect_errno(lambda: os.mkfifo(".envrc"), errno.EACCES)

    out = run_guarded(rules, probe, cwd=ws, umask=0o022)
    assert out.status == 0
    assert stat.S_ISFIFO((ws / "pipe").stat().st_mode)
    assert stat.S_IMODE((ws / "pipe").stat().st_mode) == 0o644
    assert stat.S_ISREG((ws / "plain").stat().st_mode)
    assert listing(ws) == ["pipe", "plain"]


# ---------------------------------------------------------------- symlink, link


def test_symlink(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        os.symlink("../../anything", "lnk")
        os.mkdir("x")
        return (
            expect_errno(lambda: os.symlink("target", ".envrc"), errno.EACCES)
            or expect_errno(lambda: os.symlink("/tmp", ".vscode"), errno.EACCES)
            # A .git symlink would bring .git/hooks from wherever it points.
            or expect_errno(lambda: os.symlink("/tmp", "x/.git"), errno.EACCES)
            or expect_errno(lambda: os.symlink("t", "lnk"), errno.EEXIST)
        )

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert os.readlink(ws / "lnk") == "../../anything"
    assert listing(ws) == ["lnk", "x"]


def test_link(ws: Path, rules: GuardRules) -> None:
    (ws / "file").write_text("data")
    os.symlink("somewhere", ws / "sl")

    def probe() -> int:
        os.link("file", "hard")
        return (
            expect_errno(lambda: os.link("file", ".envrc"), errno.EACCES)
            or expect_errno(lambda: os.link("file", "locked"), errno.EACCES)
            # A hard link to a symlink named .git would redirect .git/hooks.
            or expect_errno(lambda: os.link("sl", ".git", follow_symlinks=False), errno.EACCES)
            or expect_errno(lambda: os.link("missing", "x"), errno.ENOENT)
        )

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert (ws / "hard").read_text() == "data" and (ws / "hard").stat().st_nlink == 2
    assert listing(ws) == ["file", "hard", "sl"]


def test_o_tmpfile_then_linkat(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
        os.write(fd, b"tmp")
        at, follow = -100, 0x400  # AT_FDCWD, AT_SYMLINK_FOLLOW (plain link() would not follow)
        src = f"/proc/self/fd/{fd}".encode()
        if _libc.linkat(at, src, at, b".envrc", follow) != -1 or ctypes.get_errno() != 13:
            return 2
        if _libc.linkat(at, src, at, b"named", follow) != 0:
            return 3
        fd2 = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o600)
        os.write(fd2, b"two")
        if _libc.linkat(fd2, b"", at, b".mcp.json", 0x1000) != -1:  # AT_EMPTY_PATH
            return 4
        err = ctypes.get_errno()
        os.close(fd)
        os.close(fd2)
        return 0 if err == errno.EACCES else 5

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert listing(ws) == ["named"] and (ws / "named").read_bytes() == b"tmp"


# ---------------------------------------------------------------- rename


def test_rename(ws: Path, rules: GuardRules) -> None:
    (ws / "f").write_text("x")
    (ws / "repo").mkdir()
    (ws / "d" / "hooks").mkdir(parents=True)
    (ws / "d" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    (ws / ".vscode").mkdir()  # exists: protected; renaming it away is refused too

    def probe() -> int:
        os.rename("f", "g")
        return (
            expect_errno(lambda: os.rename("g", ".envrc"), errno.EACCES)
            or expect_errno(lambda: os.rename("d", "repo/.git"), errno.EACCES)
            or expect_errno(lambda: os.rename("d", ".git"), errno.EACCES)
            or expect_errno(lambda: os.rename(".vscode", "vs"), errno.EACCES)
            or expect_errno(lambda: os.rename("g", "locked"), errno.EACCES)
            or expect_errno(lambda: os.rename("g", ".vscode/settings.json"), errno.EACCES)
            or int(os.rename("d", "e") or 0)
        )

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert listing(ws) == [".vscode", "e", "e/hooks", "e/hooks/pre-commit", "g", "repo"]


def test_rename_exchange_and_noreplace(ws: Path, rules: GuardRules) -> None:
    (ws / "a").write_text("A")
    (ws / "b").write_text("B")
    (ws / ".git").mkdir()
    (ws / ".git" / "hooks").mkdir()
    (ws / "dir").mkdir()

    def probe() -> int:
        renameat2 = _libc.renameat2
        at = -100
        if renameat2(at, b"a", at, b"b", 2) != 0:  # RENAME_EXCHANGE
            return 2
        if renameat2(at, b"a", at, b"b", 1) != -1 or ctypes.get_errno() != errno.EEXIST:
            return 3
        if renameat2(at, b"dir", at, b".git/hooks", 2) != -1 or ctypes.get_errno() != 13:
            return 4
        return 0

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert (ws / "a").read_text() == "B" and (ws / "b").read_text() == "A"
    assert (ws / "dir").is_dir() and (ws / ".git/hooks").is_dir()


# ---------------------------------------------------------------- unlink, rmdir


def test_unlink_and_rmdir(ws: Path, rules: GuardRules) -> None:
    (ws / "f").write_text("x")
    (ws / "d").mkdir()
    (ws / ".envrc").write_text("export X=1")  # pre-existing protected file
    (ws / "locked").mkdir()

    def probe() -> int:
        os.unlink("f")
        os.rmdir("d")
        return (
            expect_errno(lambda: os.unlink(".envrc"), errno.EACCES)
            or expect_errno(lambda: os.rmdir("locked"), errno.EACCES)
            or expect_errno(lambda: os.unlink("missing"), errno.ENOENT)
            or expect_errno(lambda: os.rmdir("."), errno.EINVAL)
        )

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0, out
    assert listing(ws) == [".envrc", "locked"]


# ---------------------------------------------------------------- races, misc


def test_race_path_flipping_never_creates_protected_name(ws: Path, rules: GuardRules) -> None:
    """A thread flips the path buffer between "ok" and ".envrc" while another opens it."""
    rounds = 3000

    def probe() -> int:
        buf = ctypes.create_string_buffer(16)
        ok, bad = b"ok\0", b".envrc\0"
        stop = threading.Event()

        def flip() -> None:
            while not stop.is_set():
                ctypes.memmove(buf, ok, len(ok))
                ctypes.memmove(buf, bad, len(bad))

        t = threading.Thread(target=flip)
        t.start()
        opened = refused = 0
        others: list[int] = []
        open_ = _libc.open
        for _ in range(rounds):
            fd = open_(buf, os.O_WRONLY | os.O_CREAT, 0o644)
            if fd >= 0:
                opened += 1
                os.close(fd)
            elif ctypes.get_errno() == errno.EACCES:
                refused += 1
            else:
                others.append(ctypes.get_errno())
        stop.set()
        t.join()
        with open("counts", "w") as f:
            f.write(f"{opened} {refused} {','.join(map(str, others)) or '-'}")
        return 0

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
    assert not (ws / ".envrc").exists()
    fields = (ws / "counts").read_text().split()
    opened, refused = int(fields[0]), int(fields[1])
    others = [] if fields[2] == "-" else [int(e) for e in fields[2].split(",")]
    # A torn read of the buffer mid-flip can name something else entirely (the kernel would
    # read it just as torn); what matters is that .envrc never appears.
    assert opened + refused + len(others) == rounds
    assert len(others) <= rounds // 100, others
    assert opened > 0 and refused > 0, (opened, refused)  # both states were really seen


def test_filter_decisions_for_other_calls(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        syscall = _libc.syscall
        syscall.restype = ctypes.c_long
        # io_uring_setup -> EPERM; openat2 -> ENOSYS
        if syscall(425, 1, None) != -1 or ctypes.get_errno() != errno.EPERM:
            return 2
        if syscall(437, -100, b"x", None, 24) != -1 or ctypes.get_errno() != errno.ENOSYS:
            return 3
        # A read-only open is not intercepted at all.
        os.close(os.open("/etc/hostname", os.O_RDONLY))
        return 0

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x32 exists on x86_64 only")
def test_x32_syscall_kills(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        _libc.syscall(0x40000000 | 39)  # x32 getpid
        return 0

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == -31  # SECCOMP_RET_KILL_PROCESS: the whole process dies with SIGSYS


# ---------------------------------------------------------------- real programs


def test_shell_file_juggling(ws: Path, rules: GuardRules) -> None:
    script = "echo hi > f; mkdir -p a/b; mv f a/b/g; ln -s g a/b/h; cat a/b/h; rm -r a"
    out_file = ws.parent / "out"
    out = run_guarded(rules, ["/bin/sh", "-c", script], cwd=ws, stdout=out_file)
    assert out.status == 0
    assert out_file.read_text() == "hi\n"
    assert listing(ws) == []


def test_cp_r_and_tar(ws: Path, rules: GuardRules, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_text("x")
    os.symlink("x", src / "d" / "y")
    (src / ".envrc").write_text("evil")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "."], check=True)
    cmd = f"cp -r {src}/d copied && tar xf {archive}; echo tar=$?"
    out_file = tmp_path / "out"
    out = run_guarded(rules, ["/bin/sh", "-c", cmd], cwd=ws, stdout=out_file)
    assert out.status == 0
    assert "tar=2" in out_file.read_text()  # tar reports the refused .envrc
    assert (ws / "copied" / "x").read_text() == "x" and os.readlink(ws / "copied/y") == "x"
    assert (ws / "d" / "x").read_text() == "x"
    assert not (ws / ".envrc").exists()
    assert any(d["path"] == str(ws / ".envrc") for d in out.denials)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_init_add_commit(ws: Path, tmp_path: Path) -> None:
    rules = GuardRules(writable_roots=(str(ws),), protected_names=(".git/hooks",))
    templates = tmp_path / "templates"
    templates.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "GIT_TEMPLATE_DIR": str(templates),  # the default template would create .git/hooks
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    script = (
        "git init -q . && echo hi > f && git add f && git commit -qm first && git log --oneline"
    )
    out_file = tmp_path / "out"
    out = run_guarded(rules, ["/bin/sh", "-c", script], cwd=ws, stdout=out_file, env=env)
    assert out.status == 0, out_file.read_text()
    assert "first" in out_file.read_text()
    assert not (ws / ".git" / "hooks").exists()
    # With the default template, git init tries to create .git/hooks and is refused.
    other = tmp_path / "other"
    other.mkdir()
    rules2 = GuardRules(writable_roots=(str(other),), protected_names=(".git/hooks",))
    env.pop("GIT_TEMPLATE_DIR")
    out = run_guarded(rules2, ["git", "init", "-q", "."], cwd=other, env=env, stdout=out_file)
    assert not (other / ".git" / "hooks").exists()


def test_outside_writable_roots_names_are_not_checked(
    ws: Path, rules: GuardRules, tmp_path: Path
) -> None:
    """Only writable roots are checked (elsewhere is read-only by mounts); still emulated."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def probe() -> int:
        with open(scratch / ".envrc", "w") as f:
            f.write("ok")
        return 0

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
    assert (scratch / ".envrc").read_text() == "ok"


def test_other_processes_magic_links_are_refused(ws: Path, rules: GuardRules) -> None:
    """The guard may open /proc/PID/cwd of processes the command may not use; it refuses."""
    other = subprocess.Popen(["sleep", "30"], cwd=ws)
    try:

        def probe() -> int:
            return expect_errno(lambda: touch(f"/proc/{other.pid}/cwd/x", "w"), errno.EACCES)

        out = run_guarded(rules, probe, cwd=ws)
    finally:
        other.kill()
        other.wait()
    assert out.status == 0
    assert listing(ws) == []
    assert out.denials and "another process" in str(out.denials[0]["rule"])


def test_dev_tty_behaves_as_without_the_guard(ws: Path, rules: GuardRules) -> None:
    """/dev/tty is the caller's terminal; the guard must not open its own instead."""

    def probe() -> int:
        try:
            os.close(os.open("/dev/tty", os.O_WRONLY | os.O_CREAT))
        except OSError as exc:
            return 100 + (exc.errno or 0)
        return 0

    def no_ctty(fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            os.setsid()  # no controlling terminal in either run
            return fn()

        return run

    plain = run_guarded(rules, no_ctty(probe), cwd=ws, guard=False)
    guarded = run_guarded(rules, no_ctty(probe), cwd=ws)
    assert plain.status == guarded.status == 100 + errno.ENXIO


def test_signals_do_not_make_an_emulated_call_run_twice(ws: Path, rules: GuardRules) -> None:
    """A signal may interrupt a call before the guard picks it up (EINTR, nothing done: the
    same as on an interruptible filesystem), never after: with WAIT_KILLABLE_RECV a call the
    guard performed is not interrupted, so a retry never finds its own result (EEXIST)."""

    def probe() -> int:
        import signal

        hits = [0]

        def handler(_sig: int, _frame: object) -> None:
            hits[0] += 1

        def retrying(fn: Callable[[], object]) -> None:
            while True:
                try:
                    fn()
                    return
                except InterruptedError:
                    continue  # not performed: try again

        signal.signal(signal.SIGALRM, handler)  # Python handlers have no SA_RESTART
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        try:
            for i in range(400):
                retrying(lambda i=i: os.mkdir(f"d{i}"))
                fd = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # PEP 475
                os.close(fd)
        except FileExistsError:
            return 2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
        return 0 if hits[0] > 0 else 3

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
    assert len(os.listdir(ws)) == 800


def test_dev_tty_reaches_the_callers_terminal(ws: Path, rules: GuardRules) -> None:
    def probe() -> int:
        import pty

        pid, master = pty.fork()
        if pid == 0:  # has the pty as controlling terminal
            code = 1
            try:
                fd = os.open("/dev/tty", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.write(fd, b"via-dev-tty\n")
                os.close(fd)
                code = 0
            finally:
                os._exit(code)
        data = b""
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        _, raw = os.waitpid(pid, 0)
        return 0 if _status(raw) == 0 and b"via-dev-tty" in data else 2

    out = run_guarded(rules, probe, cwd=ws)
    assert out.status == 0
