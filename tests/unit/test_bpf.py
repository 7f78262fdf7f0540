"""The classic-BPF assembler, instruction by instruction, and the name-guard filter's logic."""

from __future__ import annotations

import errno
import struct
import sys

import pytest

from ringfence.platforms.linux import bpf
from ringfence.platforms.linux.nameguard.filter import (
    AUDIT_ARCH_AARCH64,
    AUDIT_ARCH_X86_64,
    build_filter,
)


def test_insn_encoding_matches_struct_sock_filter() -> None:
    insn = bpf.Insn(0x15, 1, 2, 0xDEADBEEF)
    assert insn.encode() == struct.pack("=HBBI", 0x15, 1, 2, 0xDEADBEEF)
    assert len(insn.encode()) == 8
    assert bpf.decode(bpf.encode([insn, insn])) == [insn, insn]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((0x10000, 0, 0, 0), "16 bits"),
        ((0, 256, 0, 0), "8 bits"),
        ((0, 0, -1, 0), "8 bits"),
        ((0, 0, 0, 1 << 32), "32 bits"),
    ],
)
def test_insn_range_checks(fields: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bpf.Insn(*fields)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda b: b.load_nr(), bpf.Insn(0x20, 0, 0, 0)),  # BPF_LD|BPF_W|BPF_ABS
        (lambda b: b.load_arch(), bpf.Insn(0x20, 0, 0, 4)),
        (lambda b: b.load_imm(7), bpf.Insn(0x00, 0, 0, 7)),  # BPF_LD|BPF_IMM
        (lambda b: b.load_mem(3), bpf.Insn(0x60, 0, 0, 3)),  # BPF_LD|BPF_MEM
        (lambda b: b.store(2), bpf.Insn(0x02, 0, 0, 2)),  # BPF_ST
        (lambda b: b.alu(bpf.BPF_AND, 0xFF), bpf.Insn(0x54, 0, 0, 0xFF)),
        (lambda b: b.alu(bpf.BPF_RSH, 4), bpf.Insn(0x74, 0, 0, 4)),
        (lambda b: b.tax(), bpf.Insn(0x07, 0, 0, 0)),
        (lambda b: b.txa(), bpf.Insn(0x87, 0, 0, 0)),
        (lambda b: b.ret_a(), bpf.Insn(0x16, 0, 0, 0)),  # BPF_RET|BPF_A
    ],
)
def test_single_instructions(build: object, expected: bpf.Insn) -> None:
    b = bpf.Builder()
    build(b)  # type: ignore[operator]
    b.ret(bpf.SECCOMP_RET_ALLOW)
    assert b.build()[0] == expected
    assert b.build()[1] == bpf.Insn(0x06, 0, 0, bpf.SECCOMP_RET_ALLOW)  # BPF_RET|BPF_K


def test_arg_offsets_follow_byte_order() -> None:
    little = sys.byteorder == "little"
    assert bpf.arg_offset(0) == (16 if little else 20)
    assert bpf.arg_offset(0, high=True) == (20 if little else 16)
    assert bpf.arg_offset(5) == (56 if little else 60)
    with pytest.raises(ValueError):
        bpf.arg_offset(6)


def test_jumps_resolve_labels() -> None:
    b = bpf.Builder()
    b.load_nr().jeq(5, "yes", "no")  # pc 1
    b.ret(1)  # pc 2 (skipped)
    b.label("yes").ret(2)  # pc 3
    b.label("no").ret(3)  # pc 4
    prog = b.build()
    assert prog[1] == bpf.Insn(0x15, 1, 2, 5)  # BPF_JMP|BPF_JEQ|BPF_K
    assert bpf.evaluate(prog, bpf.seccomp_data(5, 0)) == 2
    assert bpf.evaluate(prog, bpf.seccomp_data(6, 0)) == 3


def test_fall_through_and_other_conditions() -> None:
    b = bpf.Builder()
    b.load_nr()
    b.jge(10, "big")  # false: fall through
    b.jgt(3, "mid")
    b.jset(1, "odd")
    b.ret(0)
    b.label("odd").ret(1)
    b.label("mid").ret(2)
    b.label("big").ret(3)
    prog = b.build()
    assert prog[1].code == 0x35 and prog[2].code == 0x25 and prog[3].code == 0x45
    got = [bpf.evaluate(prog, bpf.seccomp_data(n, 0)) for n in (0, 1, 2, 3, 4, 10, 11)]
    assert got == [0, 1, 0, 1, 2, 3, 3]


def test_goto_is_ja_with_32bit_offset() -> None:
    b = bpf.Builder()
    b.goto("end")
    for _ in range(300):
        b.ret(9)
    b.label("end").ret(bpf.SECCOMP_RET_ALLOW)
    prog = b.build()
    assert prog[0] == bpf.Insn(0x05, 0, 0, 300)
    assert bpf.evaluate(prog, bpf.seccomp_data(0, 0)) == bpf.SECCOMP_RET_ALLOW


def test_builder_errors() -> None:
    b = bpf.Builder()
    b.load_nr().jeq(1, "far")
    for _ in range(256):
        b.ret(0)
    b.label("far").ret(1)
    with pytest.raises(ValueError, match="limit 255"):
        b.build()
    with pytest.raises(ValueError, match="never defined"):
        bpf.Builder().jeq(1, "nowhere").ret(0).build()
    with pytest.raises(ValueError, match="twice"):
        bpf.Builder().label("a").label("a")
    with pytest.raises(ValueError, match="must end with a return"):
        bpf.Builder().load_nr().build()
    with pytest.raises(ValueError, match="aligned"):
        bpf.Builder().load_abs(2)
    with pytest.raises(ValueError, match="aligned"):
        bpf.Builder().load_abs(64)
    with pytest.raises(ValueError, match="scratch slot"):
        bpf.Builder().store(16)
    with pytest.raises(ValueError, match="not a conditional"):
        bpf.Builder().jump_if(bpf.BPF_JA, 0, "x")
    with pytest.raises(ValueError, match=r"1\.\.4096"):
        bpf.encode([])


def test_ret_errno() -> None:
    assert bpf.ret_errno(errno.EPERM) == 0x00050001
    with pytest.raises(ValueError):
        bpf.ret_errno(0x10000)


def test_interpreter_alu_and_memory() -> None:
    b = bpf.Builder()
    b.load_arg(0).alu(bpf.BPF_ADD, 3).store(0).alu(bpf.BPF_MUL, 2).tax()
    b.load_mem(0).txa().alu(bpf.BPF_XOR, 1).ret_a()
    prog = b.build()
    assert bpf.evaluate(prog, bpf.seccomp_data(0, 0, (4,))) == ((4 + 3) * 2) ^ 1


def test_sock_fprog_points_at_the_program() -> None:
    prog = bpf.Builder().ret(bpf.SECCOMP_RET_ALLOW).build()
    fprog, buf = bpf.sock_fprog(prog)
    assert fprog.len == 1 and fprog.filter is not None
    assert bytes(buf) == bpf.encode(prog)


# ------------------------------------------------------------------ the name-guard filter

X86 = AUDIT_ARCH_X86_64
NOTIFY = bpf.SECCOMP_RET_USER_NOTIF
ALLOW = bpf.SECCOMP_RET_ALLOW
O_CREAT = 0o100


def verdict(nr: int, args: tuple[int, ...] = (), arch: int = X86, machine: str = "x86_64") -> int:
    return bpf.evaluate(build_filter(machine), bpf.seccomp_data(nr, arch, args))


@pytest.mark.parametrize(
    ("nr", "args", "expected"),
    [
        (2, (0, O_CREAT), NOTIFY),  # open O_CREAT
        (2, (0, 0o2), NOTIFY),  # open O_RDWR: may change an existing protected file
        (2, (0, 0o1), NOTIFY),  # open O_WRONLY
        (2, (0, 0o1000), NOTIFY),  # open O_TRUNC
        (2, (0, 0), ALLOW),  # open O_RDONLY
        (257, (0, 0, 0o2000000 | 0o200000), ALLOW),  # openat O_RDONLY|O_CLOEXEC|O_DIRECTORY
        (257, (0, 0, 0o20200002), ALLOW),  # O_TMPFILE|O_RDWR
        (2, (0, O_CREAT | (1 << 32)), NOTIFY),  # high half ignored
        (2, (0, 1 << 38), ALLOW),  # O_CREAT bit only in the high half: not an int flag
        (257, (0, 0, O_CREAT | 0o1), NOTIFY),  # openat
        (257, (0, 0, 0o20200000), ALLOW),  # O_TMPFILE: no name until linkat
        (85, (), NOTIFY),  # creat
        (83, (), NOTIFY),  # mkdir
        (258, (), NOTIFY),  # mkdirat
        (133, (), NOTIFY),  # mknod
        (259, (), NOTIFY),
        (88, (), NOTIFY),  # symlink
        (266, (), NOTIFY),
        (86, (), NOTIFY),  # link
        (265, (), NOTIFY),
        (82, (), NOTIFY),  # rename
        (264, (), NOTIFY),
        (316, (), NOTIFY),
        (87, (), NOTIFY),  # unlink
        (263, (), NOTIFY),
        (84, (), NOTIFY),  # rmdir
        (437, (), bpf.ret_errno(errno.ENOSYS)),  # openat2
        (425, (), bpf.ret_errno(errno.EPERM)),  # io_uring_setup
        (0, (), ALLOW),  # read
        (59, (), ALLOW),  # execve
        (0x40000000 | 2, (0, O_CREAT), bpf.SECCOMP_RET_KILL_PROCESS),  # x32
    ],
)
def test_x86_64_filter(nr: int, args: tuple[int, ...], expected: int) -> None:
    assert verdict(nr, args) == expected


def test_foreign_arch_is_killed() -> None:
    assert verdict(5, arch=0x40000003) == bpf.SECCOMP_RET_KILL_PROCESS  # i386 open
    assert verdict(56, arch=X86, machine="aarch64") == bpf.SECCOMP_RET_KILL_PROCESS


def test_aarch64_filter() -> None:
    a = AUDIT_ARCH_AARCH64
    assert verdict(56, (0, 0, O_CREAT), arch=a, machine="aarch64") == NOTIFY
    assert verdict(56, (0, 0, 0), arch=a, machine="aarch64") == ALLOW
    assert verdict(34, arch=a, machine="aarch64") == NOTIFY  # mkdirat
    assert verdict(276, arch=a, machine="aarch64") == NOTIFY  # renameat2
    assert verdict(0x40000000, arch=a, machine="aarch64") == ALLOW  # no x32 on arm64


def test_unknown_machine() -> None:
    from ringfence.errors import UnsupportedError

    with pytest.raises(UnsupportedError):
        build_filter("riscv64")


# unix sockets on disk: connect and sends with an address go to the guard
CLONE_THREAD, CLONE_FILES = 0x10000, 0x400


@pytest.mark.parametrize(
    ("nr", "args", "expected"),
    [
        (42, (), NOTIFY),  # connect
        (44, (3, 0, 5, 0, 0, 0), ALLOW),  # sendto without an address: send(2)
        (44, (3, 0, 5, 0, 0x7FFF0000, 110), NOTIFY),  # sendto with one
        (44, (3, 0, 5, 0, 1 << 40, 110), NOTIFY),  # an address only in the high half
        (46, (), NOTIFY),  # sendmsg: the address is inside struct msghdr
        (307, (), NOTIFY),  # sendmmsg
        (56, (0x11,), ALLOW),  # clone for fork (SIGCHLD)
        (56, (0x3D0F00,), ALLOW),  # pthread_create's flags (CLONE_THREAD | CLONE_FILES | ...)
        (56, (CLONE_FILES | 0x11,), bpf.ret_errno(errno.EPERM)),  # a file table sharer
        (56, (CLONE_FILES | 0x11 | (1 << 33),), bpf.ret_errno(errno.EPERM)),
    ],
)
def test_socket_calls_and_shared_file_tables(nr: int, args: tuple[int, ...], expected: int) -> None:
    assert verdict(nr, args) == expected


def test_aarch64_socket_calls() -> None:
    a = AUDIT_ARCH_AARCH64
    assert verdict(203, arch=a, machine="aarch64") == NOTIFY  # connect
    assert verdict(206, (3, 0, 1, 0, 0, 0), arch=a, machine="aarch64") == ALLOW  # send
    assert verdict(206, (3, 0, 1, 0, 8, 16), arch=a, machine="aarch64") == NOTIFY
    assert verdict(211, arch=a, machine="aarch64") == NOTIFY  # sendmsg
    assert verdict(269, arch=a, machine="aarch64") == NOTIFY  # sendmmsg


def test_sockets_only_filter_leaves_names_and_nesting_alone() -> None:
    """Without protected names the guard keeps only the socket rule: nothing else is sent to
    it, and a nested Landlock domain is allowed."""

    def only(nr: int, args: tuple[int, ...] = ()) -> int:
        prog = build_filter("x86_64", names=False)
        return bpf.evaluate(prog, bpf.seccomp_data(nr, X86, args))

    assert only(83) == ALLOW  # mkdir
    assert only(2, (0, O_CREAT)) == ALLOW
    assert only(49) == ALLOW  # bind
    assert only(446) == ALLOW  # landlock_restrict_self
    assert only(42) == NOTIFY  # connect
    assert only(44, (3, 0, 5, 0, 8, 16)) == NOTIFY
    assert only(46) == NOTIFY
    assert only(425) == bpf.ret_errno(errno.EPERM)  # io_uring_setup, still
    assert verdict(446) == bpf.ret_errno(errno.EPERM)  # with names: refused
