"""cgroup discovery: which hierarchy, which directory, and why not (pure parsing + a fake tree)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringfence.platforms.linux import cgroups

HYBRID = """\
25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:16 - cgroup cgroup rw,cpu,cpuacct
"""


def test_parse_mounts_reads_versions_and_controllers() -> None:
    mounts = cgroups.parse_mounts(HYBRID)
    assert [(m.path, m.version, sorted(m.controllers)) for m in mounts] == [
        ("/sys/fs/cgroup/unified", 2, []),
        ("/sys/fs/cgroup/memory", 1, ["memory"]),
        ("/sys/fs/cgroup/pids", 1, ["pids"]),
    ]


def test_parse_membership() -> None:
    text = "9:name=systemd:/\n8:pids:/user.slice\n4:memory:/a/b\n0::/user.slice/x.scope\n"
    assert cgroups.parse_membership(text) == {
        "pids": "/user.slice",
        "memory": "/a/b",
        "": "/user.slice/x.scope",
    }


def _cg_dir(path: Path, subtree: str = "", mode: int = 0o755) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text("")
    (path / "cgroup.subtree_control").write_text(subtree)
    path.chmod(mode)


def test_v1_site_is_our_own_cgroup_when_writable(tmp_path: Path) -> None:
    _cg_dir(tmp_path / "memory" / "a" / "b")
    _cg_dir(tmp_path / "pids")
    info = (
        f"1 0 0:1 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
        f"2 0 0:2 / {tmp_path}/pids rw - cgroup cgroup rw,pids\n"
    )
    sites, why = cgroups.discover(info, "4:memory:/a/b\n3:pids:/\n")
    assert sites["memory"] == cgroups.Site("memory", 1, f"{tmp_path}/memory/a/b")
    assert sites["pids"] == cgroups.Site("pids", 1, f"{tmp_path}/pids")
    assert why == ""


@pytest.mark.skipif(os.getuid() == 0, reason="root writes any directory")
def test_v1_unwritable_is_explained(tmp_path: Path) -> None:
    _cg_dir(tmp_path / "memory", mode=0o555)
    info = f"1 0 0:1 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
    sites, why = cgroups.discover(info, "4:memory:/\n")
    assert "memory" not in sites
    assert "not writable" in why and "pids: no cgroup hierarchy" in why


def test_v2_site_is_the_delegated_ancestor_that_enables_the_controller(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _cg_dir(root, "cpu memory pids")
    _cg_dir(root / "user.slice" / "user@1000.service", "memory pids")
    _cg_dir(root / "user.slice" / "user@1000.service" / "app.slice" / "term.scope")
    info = f"1 0 0:1 / {root} rw - cgroup2 cgroup2 rw\n"
    sites, why = cgroups.discover(info, "0::/user.slice/user@1000.service/app.slice/term.scope\n")
    want = str(root / "user.slice" / "user@1000.service")
    assert sites == {
        "memory": cgroups.Site("memory", 2, want),
        "pids": cgroups.Site("pids", 2, want),
    }
    assert why == ""


def test_v2_without_the_controller_anywhere_says_how_to_get_one(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _cg_dir(root, "cpu")
    _cg_dir(root / "x.scope")
    sites, why = cgroups.discover(f"1 0 0:1 / {root} rw - cgroup2 cgroup2 rw\n", "0::/x.scope\n")
    assert sites == {}
    assert "Delegate=yes" in why


def test_v1_wins_for_a_controller_it_holds_in_hybrid_mode(tmp_path: Path) -> None:
    _cg_dir(tmp_path / "memory")
    _cg_dir(tmp_path / "unified", "pids")
    info = (
        f"1 0 0:1 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n"
        f"2 0 0:2 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
    )
    sites, _ = cgroups.discover(info, "4:memory:/\n0::/\n")
    assert sites["memory"].version == 1
    assert sites["pids"] == cgroups.Site("pids", 2, f"{tmp_path}/unified")
