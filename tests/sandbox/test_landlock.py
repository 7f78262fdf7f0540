"""Landlock against the real kernel: what a confined process can and cannot do, with exact errnos.

restrict_self is irreversible, so every enforcement happens in an ``os.fork()``ed child that
reports back through a pipe (:func:`in_child`); the pytest process itself is never confined.
Each test checks both sides: the operation's errno inside the child, and the state of the host
files afterwards from the parent, so a probe that silently did nothing cannot pass.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ringfence.errors import SandboxError
from ringfence.platforms.linux.landlock import (
    ACCESS_FS,
    ACCESS_NET,
    READ_ACCESS,
    SCOPE,
    LandlockRuleset,
    PathRule,
    abi_version,
    build_ruleset,
    restrict_self,
)
from ringfence.platforms.linux.libc import syscall

ABI = abi_version()

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(ABI == 0, reason="Landlock is not available on this kernel (ABI 0)"),
]

OK = "ok"


class ChildRaised(Exception):
    """The function run in the child raised; carries the exception's type name and message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child and return its JSON-able result (or raise ChildRaised).

    The child only uses modules imported before the fork: once confined it may not be able to
    read Python's own library to import anything new.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            try:
                out: dict[str, Any] = {"result": fn()}
            except BaseException as exc:
                out = {"raised": type(exc).__name__, "message": str(exc)}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    out = json.loads(data)
    if "raised" in out:
        raise ChildRaised(out["raised"], out["message"])
    return out["result"]


def attempt(op: Callable[[], object]) -> str:
    """``"ok"`` if ``op`` succeeds, else the errno's symbolic name (``"EACCES"``...)."""
    try:
        op()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return OK


def _write_existing(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"changed")
    finally:
        os.close(fd)


def _create(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def _open_trunc(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))


def _make_socket(path: Path) -> None:
    # bind() needs a short path; the child is disposable, so chdir and bind relatively.
    os.chdir(path.parent)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path.name)


def write_probes(base: Path) -> dict[str, str]:
    """Every kind of modification inside ``base``; each probe has its own victim file."""
    return {
        "create": attempt(lambda: _create(base / "new")),
        "write": attempt(lambda: _write_existing(base / "data")),
        "mkdir": attempt(lambda: os.mkdir(base / "newdir")),
        "rmdir": attempt(lambda: os.rmdir(base / "victim_dir")),
        "rename": attempt(lambda: os.rename(base / "victim_rename", base / "renamed")),
        "unlink": attempt(lambda: os.unlink(base / "victim_unlink")),
        "truncate": attempt(lambda: os.truncate(base / "victim_truncate", 0)),
        "open_trunc": attempt(lambda: _open_trunc(base / "victim_open_trunc")),
        "symlink": attempt(lambda: os.symlink("data", base / "link")),
        "mkfifo": attempt(lambda: os.mkfifo(base / "fifo")),
        "mksock": attempt(lambda: _make_socket(base / "sock")),
    }


def read_probes(base: Path) -> dict[str, object]:
    return {
        "read": (base / "data").read_text(),
        "listdir": sorted(os.listdir(base)),
    }


def populate(base: Path) -> Path:
    base.mkdir()
    for name in ("data", "victim_rename", "victim_unlink", "victim_truncate", "victim_open_trunc"):
        (base / name).write_text("original")
    (base / "victim_dir").mkdir()
    return base


def snapshot(base: Path) -> dict[str, str]:
    """Every entry under ``base`` with its content (files) or kind, to compare before/after."""
    out: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        rel = str(path.relative_to(base))
        if path.is_symlink():
            out[rel] = "symlink->" + os.readlink(path)
        elif path.is_file():
            out[rel] = "file:" + path.read_text()
        else:
            out[rel] = "dir" if path.is_dir() else "other"
    return out


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """rw/ and rw2/ are writable, ro/ is readable, outside/ is not in the ruleset at all."""
    dirs = {name: populate(tmp_path / name) for name in ("rw", "rw2", "ro", "outside")}
    (dirs["rw"] / "sub").mkdir()
    return dirs


def confined(tree: dict[str, Path], **extra: Any) -> LandlockRuleset:
    rs = build_ruleset(
        ABI,
        read_paths=[str(tree["ro"])],
        write_paths=[str(tree["rw"]), str(tree["rw2"])],
        device_paths=["/dev/null"],
    )
    return LandlockRuleset(rs.abi, rs.handled_fs, rs.rules, **extra)


# The probe names, spelled out: computing them by calling write_probes() here would run every
# probe in the pytest process itself, against whatever base it was given.
PROBE_NAMES = (
    "create",
    "write",
    "mkdir",
    "rmdir",
    "rename",
    "unlink",
    "truncate",
    "open_trunc",
    "symlink",
    "mkfifo",
    "mksock",
)
ALL_OK = dict.fromkeys(PROBE_NAMES, OK)
ALL_EACCES = dict.fromkeys(ALL_OK, "EACCES")


def test_write_path_allows_every_modification(tree: dict[str, Path]) -> None:
    rs = confined(tree)
    rw = tree["rw"]

    def child() -> dict[str, str]:
        restrict_self(rs)
        return write_probes(rw)

    assert in_child(child) == ALL_OK
    after = snapshot(rw)
    assert after["new"] == "file:"
    assert after["data"] == "file:originalchanged"
    assert after["newdir"] == "dir"
    assert "victim_dir" not in after
    assert "renamed" in after
    assert "victim_rename" not in after
    assert "victim_unlink" not in after
    assert after["victim_truncate"] == "file:"
    assert after["victim_open_trunc"] == "file:"
    assert after["link"] == "symlink->data"
    assert (rw / "fifo").is_fifo()
    assert (rw / "sock").is_socket()


def test_read_path_refuses_every_modification_with_eacces(tree: dict[str, Path]) -> None:
    rs = confined(tree)
    ro = tree["ro"]
    before = snapshot(ro)

    def child() -> dict[str, str]:
        restrict_self(rs)
        return write_probes(ro)

    assert in_child(child) == ALL_EACCES
    assert snapshot(ro) == before


def test_the_probe_would_catch_a_missing_layer(tree: dict[str, Path]) -> None:
    """Without restrict_self the same probes succeed: the EACCES above is Landlock's doing."""
    ro = tree["ro"]
    assert in_child(lambda: write_probes(ro)) == ALL_OK
    assert "new" in snapshot(ro)


def test_reading_works_where_granted_and_nowhere_else(tree: dict[str, Path]) -> None:
    rs = confined(tree)

    def child() -> dict[str, object]:
        restrict_self(rs)
        outside = tree["outside"]
        return {
            "ro": read_probes(tree["ro"]),
            "rw": read_probes(tree["rw"]),
            "outside_read": attempt((outside / "data").read_text),
            "outside_list": attempt(lambda: os.listdir(outside)),
            "outside_write": attempt(lambda: _write_existing(outside / "data")),
            "etc": attempt(lambda: os.listdir("/etc")),
            "dev_null": attempt(lambda: _write_existing(Path("/dev/null"))),
        }

    got = in_child(child)
    listing = sorted(os.listdir(tree["ro"]))
    assert got["ro"] == {"read": "original", "listdir": listing}
    assert got["rw"]["read"] == "original"
    assert got["outside_read"] == "EACCES"
    assert got["outside_list"] == "EACCES"
    assert got["outside_write"] == "EACCES"
    assert got["etc"] == "EACCES"
    assert got["dev_null"] == OK
    assert (tree["outside"] / "data").read_text() == "original"


def test_moving_and_linking_across_the_boundary(tree: dict[str, Path]) -> None:
    """Landlock's errno for a cross-directory rename/link depends on which side is short.

    The kernel (security/landlock/fs.c, current_check_refer_path) reports EACCES when a plain
    right is missing on either side (MAKE_REG at the destination, REMOVE_FILE at the source)
    and EXDEV only when those are present but the move would *widen* the file's rights, i.e.
    the source hierarchy lacks REFER or grants less than the destination. EACCES wins when
    both apply. So: write->read is EACCES (ro lacks MAKE_REG), read->write rename is EACCES
    (ro lacks REMOVE_FILE), but a hard link read->write is EXDEV (rw may create files, yet the
    file would become writable through the new name). Between writable trees (REFER on both
    sides, identical rights) moves work.
    """
    rs = confined(tree)
    rw, rw2, ro = tree["rw"], tree["rw2"], tree["ro"]
    before = snapshot(ro)

    def child() -> dict[str, str]:
        restrict_self(rs)
        return {
            "rename_rw_to_ro": attempt(lambda: os.rename(rw / "data", ro / "moved")),
            "link_rw_to_ro": attempt(lambda: os.link(rw / "data", ro / "linked")),
            "rename_ro_to_rw": attempt(lambda: os.rename(ro / "data", rw / "stolen")),
            "link_ro_to_rw": attempt(lambda: os.link(ro / "data", rw / "hardlink")),
            "rename_dir_ro_to_rw": attempt(lambda: os.rename(ro / "victim_dir", rw / "d")),
            "rename_rw_to_subdir": attempt(lambda: os.rename(rw / "data", rw / "sub" / "x")),
            "rename_rw_to_rw2": attempt(lambda: os.rename(rw / "victim_unlink", rw2 / "moved")),
            "link_rw_to_rw2": attempt(lambda: os.link(rw / "victim_rename", rw2 / "linked")),
        }

    assert in_child(child) == {
        "rename_rw_to_ro": "EACCES",
        "link_rw_to_ro": "EACCES",
        "rename_ro_to_rw": "EACCES",
        "link_ro_to_rw": "EXDEV",
        "rename_dir_ro_to_rw": "EACCES",
        "rename_rw_to_subdir": OK,
        "rename_rw_to_rw2": OK,
        "link_rw_to_rw2": OK,
    }
    assert snapshot(ro) == before
    assert not (rw / "stolen").exists()
    assert not (rw / "hardlink").exists()
    assert (rw / "sub" / "x").read_text() == "original"
    assert (rw2 / "moved").read_text() == "original"
    assert os.stat(rw2 / "linked").st_nlink == 2


@pytest.mark.skipif(ABI < 3, reason="LANDLOCK_ACCESS_FS_TRUNCATE needs ABI 3")
def test_truncate_is_handled_separately_from_write(tree: dict[str, Path]) -> None:
    """A file granted write but not truncate can be appended to, never emptied."""
    rw = tree["rw"]
    target = rw / "data"
    grant = READ_ACCESS | ACCESS_FS["WRITE_FILE"]
    rs = confined(tree)
    rs = LandlockRuleset(rs.abi, rs.handled_fs, (PathRule(str(target), grant),))

    def child() -> dict[str, str]:
        restrict_self(rs)
        return {
            "append": attempt(lambda: _write_existing(target)),
            "open_trunc": attempt(lambda: _open_trunc(target)),
            "truncate": attempt(lambda: os.truncate(target, 0)),
        }

    assert in_child(child) == {"append": OK, "open_trunc": "EACCES", "truncate": "EACCES"}
    assert target.read_text() == "originalchanged"


def test_rule_on_a_file_drops_directory_only_rights(tree: dict[str, Path]) -> None:
    """A write rule naming a single file works (the kernel would reject MAKE_* on it: EINVAL)."""
    target = tree["outside"] / "data"
    rs = build_ruleset(ABI, read_paths=[], write_paths=[str(target)])

    def child() -> dict[str, str]:
        restrict_self(rs)
        return {
            "write": attempt(lambda: _write_existing(target)),
            "sibling": attempt(lambda: _write_existing(tree["outside"] / "victim_rename")),
        }

    assert in_child(child) == {"write": OK, "sibling": "EACCES"}
    assert target.read_text() == "originalchanged"


def _no_new_privs() -> int:
    """PR_GET_NO_NEW_PRIVS via prctl (a confined child cannot read /proc)."""
    pr_get_no_new_privs = 39
    zero = ctypes.c_ulong(0)
    return syscall("prctl", ctypes.c_int(pr_get_no_new_privs), zero, zero, zero, zero)


def _open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def test_missing_required_path_fails_before_anything_is_restricted(
    tree: dict[str, Path],
) -> None:
    missing = tree["rw"] / "does-not-exist"
    rs = build_ruleset(ABI, read_paths=[str(tree["ro"]), str(missing)], write_paths=[])
    parent_nnp = _no_new_privs()

    def child() -> dict[str, object]:
        fds_before = _open_fds()
        try:
            restrict_self(rs)
        except SandboxError as exc:
            error = str(exc)
        else:
            error = ""
        return {
            "error": error,
            "nnp": _no_new_privs(),
            "fds_leaked": sorted(set(_open_fds()) - set(fds_before)),
            "write_ro": attempt(lambda: _write_existing(tree["ro"] / "data")),
        }

    got = in_child(child)
    assert str(missing) in got["error"]
    assert "does not exist" in got["error"]
    assert got["nnp"] == parent_nnp  # not even no_new_privs was set
    assert got["fds_leaked"] == []
    assert got["write_ro"] == OK  # not confined


def test_missing_optional_path_is_skipped(tree: dict[str, Path]) -> None:
    rs = confined(tree)
    optional = PathRule(str(tree["rw"] / "no-such-device"), READ_ACCESS, required=False)
    rs = LandlockRuleset(rs.abi, rs.handled_fs, (*rs.rules, optional))

    def child() -> dict[str, object]:
        restrict_self(rs)
        return {
            "nnp": _no_new_privs(),
            "write_rw": attempt(lambda: _write_existing(tree["rw"] / "data")),
            "write_ro": attempt(lambda: _write_existing(tree["ro"] / "data")),
        }

    assert in_child(child) == {"nnp": 1, "write_rw": OK, "write_ro": "EACCES"}


def test_restrict_self_closes_its_fds(tree: dict[str, Path]) -> None:
    rs = build_ruleset(ABI, read_paths=["/proc", str(tree["ro"])], write_paths=[str(tree["rw"])])

    def child() -> list[str]:
        before = _open_fds()
        restrict_self(rs)
        # listdir's own fd is gone again by the time it returns, so the sets compare exactly.
        return sorted(set(_open_fds()) ^ set(before))

    assert in_child(child) == []


def test_restriction_is_inherited_and_stacks(tree: dict[str, Path]) -> None:
    """A grandchild stays confined, and a second ruleset can only narrow, never widen."""
    rs = confined(tree)
    wider = build_ruleset(ABI, read_paths=[], write_paths=[str(tree["ro"])])

    def child() -> dict[str, str]:
        restrict_self(rs)
        restrict_self(wider)  # asks for write on ro/: the first layer still says no
        return in_child(
            lambda: {
                "write_ro": attempt(lambda: _write_existing(tree["ro"] / "data")),
                "write_rw": attempt(lambda: _write_existing(tree["rw"] / "data")),
            }
        )

    assert in_child(child) == {"write_ro": "EACCES", "write_rw": "EACCES"}
    assert (tree["ro"] / "data").read_text() == "original"
    assert (tree["rw"] / "data").read_text() == "original"


@pytest.mark.skipif(ABI < 4, reason="Landlock network rules need ABI 4")
def test_handled_net_denies_tcp(tree: dict[str, Path]) -> None:
    rs = confined(tree, handled_net=ACCESS_NET["BIND_TCP"] | ACCESS_NET["CONNECT_TCP"])

    def bind() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))

    def child() -> dict[str, str]:
        before = attempt(bind)
        restrict_self(rs)
        return {"before": before, "after": attempt(bind)}

    assert in_child(child) == {"before": OK, "after": "EACCES"}


@pytest.mark.skipif(ABI < 6, reason="Landlock scoping needs ABI 6")
def test_scoped_signal_cannot_reach_outside_the_domain(tree: dict[str, Path]) -> None:
    rs = confined(tree, scoped=SCOPE["SIGNAL"])
    parent = os.getpid()

    def child() -> dict[str, str]:
        before = attempt(lambda: os.kill(parent, 0))
        restrict_self(rs)
        return {"before": before, "after": attempt(lambda: os.kill(parent, 0))}

    assert in_child(child) == {"before": OK, "after": "EPERM"}


def test_probe_names_match_the_probes(tmp_path: Path) -> None:
    assert tuple(in_child(lambda: write_probes(tmp_path))) == PROBE_NAMES
