"""The pure half of the Landlock layer: rights table, ruleset compilation, struct layouts.

Nothing here talks to the kernel, so these run on any host; the real enforcement is proven in
tests/sandbox/test_landlock.py.
"""

from __future__ import annotations

import ctypes
import dataclasses

import pytest

from ringfence.errors import PolicyError, UnsupportedError
from ringfence.platforms.linux import landlock as ll
from ringfence.platforms.linux.landlock import (
    ACCESS_FS,
    DEVICE_ACCESS,
    FILE_ACCESS,
    READ_ACCESS,
    LandlockRuleset,
    PathRule,
    access_names,
    build_ruleset,
    fs_rights_for_abi,
)

ABI1_NAMES = [
    "EXECUTE",
    "WRITE_FILE",
    "READ_FILE",
    "READ_DIR",
    "REMOVE_DIR",
    "REMOVE_FILE",
    "MAKE_CHAR",
    "MAKE_DIR",
    "MAKE_REG",
    "MAKE_SOCK",
    "MAKE_FIFO",
    "MAKE_BLOCK",
    "MAKE_SYM",
]


def test_access_fs_matches_the_uapi_header_bits() -> None:
    # include/uapi/linux/landlock.h: LANDLOCK_ACCESS_FS_* are bits 0..15 in this order.
    assert list(ACCESS_FS) == [*ABI1_NAMES, "REFER", "TRUNCATE", "IOCTL_DEV"]
    assert list(ACCESS_FS.values()) == [1 << i for i in range(16)]


@pytest.mark.parametrize("abi", [-1, 0])
def test_no_abi_means_no_rights(abi: int) -> None:
    assert fs_rights_for_abi(abi) == 0


def test_abi_to_rights_table() -> None:
    abi1 = fs_rights_for_abi(1)
    assert abi1 == 0x1FFF
    assert access_names(abi1) == ABI1_NAMES
    assert fs_rights_for_abi(2) == abi1 | ACCESS_FS["REFER"]
    assert fs_rights_for_abi(3) == fs_rights_for_abi(2) | ACCESS_FS["TRUNCATE"]
    # ABI 4 added networking only.
    assert fs_rights_for_abi(4) == fs_rights_for_abi(3)
    assert fs_rights_for_abi(5) == fs_rights_for_abi(4) | ACCESS_FS["IOCTL_DEV"]
    # ABI 6 (scoping) and ABI 7 (audit flags) added no filesystem right.
    assert fs_rights_for_abi(6) == fs_rights_for_abi(5)
    assert fs_rights_for_abi(7) == fs_rights_for_abi(5) == 0xFFFF
    assert [bin(fs_rights_for_abi(a)).count("1") for a in range(1, 8)] == [
        13,
        14,
        15,
        15,
        16,
        16,
        16,
    ]


def test_read_and_file_access_sets() -> None:
    assert access_names(READ_ACCESS) == ["EXECUTE", "READ_FILE", "READ_DIR"]
    assert access_names(FILE_ACCESS) == [
        "EXECUTE",
        "WRITE_FILE",
        "READ_FILE",
        "TRUNCATE",
        "IOCTL_DEV",
    ]
    assert access_names(DEVICE_ACCESS) == [
        "EXECUTE",
        "WRITE_FILE",
        "READ_FILE",
        "READ_DIR",
        "TRUNCATE",
        "IOCTL_DEV",
    ]


def test_access_names_is_in_bit_order_and_shows_unknown_bits() -> None:
    assert access_names(0) == []
    assert access_names(ACCESS_FS["REFER"] | ACCESS_FS["EXECUTE"]) == ["EXECUTE", "REFER"]
    assert access_names(ACCESS_FS["READ_FILE"] | (1 << 40)) == ["READ_FILE", hex(1 << 40)]


def test_build_ruleset_handles_every_right_of_the_abi() -> None:
    rs = build_ruleset(7, read_paths=["/usr"], write_paths=["/work"], device_paths=["/dev/null"])
    assert rs == LandlockRuleset(
        abi=7,
        handled_fs=0xFFFF,
        rules=(
            PathRule("/usr", READ_ACCESS, True),
            PathRule("/work", 0xFFFF, True),
            PathRule("/dev/null", DEVICE_ACCESS, False),
        ),
    )
    assert rs.handled_net == 0
    assert rs.scoped == 0


def test_build_ruleset_masks_grants_by_the_abi() -> None:
    rs = build_ruleset(1, read_paths=[], write_paths=["/w"], device_paths=["/dev/tty"])
    assert rs.handled_fs == 0x1FFF
    write, device = rs.rules
    assert write.access == 0x1FFF
    assert "REFER" not in access_names(write.access)
    # TRUNCATE and IOCTL_DEV do not exist in ABI 1: they must not be asked for.
    assert access_names(device.access) == [
        "EXECUTE",
        "WRITE_FILE",
        "READ_FILE",
        "READ_DIR",
    ]
    assert "REFER" in access_names(
        build_ruleset(2, read_paths=[], write_paths=["/w"]).rules[0].access
    )
    assert all(r.access & ~rs.handled_fs == 0 for r in rs.rules)


def test_build_ruleset_merges_a_path_given_twice() -> None:
    rs = build_ruleset(
        5, read_paths=["/a", "/dev/pts"], write_paths=["/a"], device_paths=["/dev/pts"]
    )
    assert [r.path for r in rs.rules] == ["/a", "/dev/pts"]
    assert rs.rules[0].access == 0xFFFF
    # A device path that policy also lists as read stays required and gets both grants.
    assert rs.rules[1] == PathRule("/dev/pts", DEVICE_ACCESS, True)


def test_build_ruleset_refuses_without_landlock() -> None:
    with pytest.raises(
        UnsupportedError, match=r"Landlock.*ABI version 0.*CONFIG_SECURITY_LANDLOCK"
    ):
        build_ruleset(0, read_paths=["/usr"], write_paths=[])


def test_rule_paths_must_be_absolute() -> None:
    with pytest.raises(PolicyError, match="not absolute"):
        PathRule("relative/dir", READ_ACCESS)
    with pytest.raises(PolicyError):
        build_ruleset(3, read_paths=[], write_paths=["."])


def test_ruleset_types_are_frozen() -> None:
    rs = build_ruleset(3, read_paths=["/usr"], write_paths=[])
    with pytest.raises(dataclasses.FrozenInstanceError):
        rs.abi = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rs.rules[0].access = 0  # type: ignore[misc]


def test_struct_layouts_match_the_kernel_abi() -> None:
    assert ctypes.sizeof(ll.RulesetAttr) == 24
    assert ll.RulesetAttr.handled_access_net.offset == 8
    assert ll.RulesetAttr.scoped.offset == 16
    # landlock_path_beneath_attr is __attribute__((packed)): 8 + 4 bytes, no padding.
    assert ctypes.sizeof(ll.PathBeneathAttr) == 12
    assert ll.PathBeneathAttr.parent_fd.offset == 8


@pytest.mark.parametrize(
    ("net", "scoped", "size"),
    [(0, 0, 8), (1, 0, 16), (0, 1, 24), (3, 3, 24)],
)
def test_ruleset_attr_size_covers_only_fields_in_use(net: int, scoped: int, size: int) -> None:
    assert ll.ruleset_attr_size(net, scoped) == size
