"""The hardening seccomp program, instruction by instruction and decision by decision.

Pure tests: the program is run by :func:`bpf.evaluate`, never installed. The last section
compares it with an independent oracle: the same rules written for libseccomp (through
pyseccomp), exported as BPF and run by the same interpreter on the same inputs.
"""

from __future__ import annotations

import errno
import itertools
import socket
import tempfile
import termios
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.errors import UnsupportedError
from ringfence.platforms.linux import bpf
from ringfence.platforms.linux import seccomp as sc

ALLOW = bpf.SECCOMP_RET_ALLOW
EPERM = bpf.ret_errno(errno.EPERM)
ENOSYS = bpf.ret_errno(errno.ENOSYS)
KILL = bpf.SECCOMP_RET_KILL_PROCESS
MACHINES = ("x86_64", "aarch64")
POLICIES = (sc.SeccompPolicy(allow_inet=False), sc.SeccompPolicy(allow_inet=True))
OFFLINE, ONLINE = POLICIES
X86_ONLY = {"iopl", "ioperm", "uselib"}
U64 = (1 << 64) - 1

# Syscalls an ordinary command needs, per machine (not in any table of ours).
ORDINARY = {
    "x86_64": {
        "read": 0,
        "write": 1,
        "mmap": 9,
        "openat": 257,
        "execve": 59,
        "fork": 57,
        "vfork": 58,
        "wait4": 61,
        "getpid": 39,
        "connect": 42,
        "sendto": 44,
        "sendmsg": 46,
        "prctl": 157,
        "seccomp": 317,
        "landlock_restrict_self": 446,
        "adjtimex": 159,
        "clock_adjtime": 305,
        "exit_group": 231,
    },
    "aarch64": {
        "read": 63,
        "write": 64,
        "mmap": 222,
        "openat": 56,
        "execve": 221,
        "wait4": 260,
        "getpid": 172,
        "connect": 203,
        "sendto": 206,
        "sendmsg": 211,
        "prctl": 167,
        "seccomp": 277,
        "landlock_restrict_self": 446,
        "adjtimex": 171,
        "clock_adjtime": 266,
        "exit_group": 94,
    },
}

_PROGRAMS: dict[tuple[bool, str], list[bpf.Insn]] = {}


def program(policy: sc.SeccompPolicy = OFFLINE, machine: str = "x86_64") -> list[bpf.Insn]:
    key = (policy.allow_inet, machine)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = sc.build_program(policy, machine)
    return _PROGRAMS[key]


def data(nr: int, arch: int, args: tuple[int, ...] = ()) -> bytes:
    """seccomp_data with ``nr`` given as the kernel's u32 view of the (signed) int."""
    return bpf.seccomp_data(nr - (1 << 32) if nr >= 1 << 31 else nr, arch, args)


def verdict(
    name_or_nr: str | int,
    args: tuple[int, ...] = (),
    *,
    policy: sc.SeccompPolicy = OFFLINE,
    machine: str = "x86_64",
    arch: int | None = None,
) -> int:
    table = sc.SYSCALL_TABLES[machine]
    nr = table.numbers[name_or_nr] if isinstance(name_or_nr, str) else name_or_nr
    audit = table.audit_arch if arch is None else arch
    return bpf.evaluate(program(policy, machine), data(nr, audit, args))


def target(prog: list[bpf.Insn], pc: int, taken: bool) -> int:
    ins = prog[pc]
    return pc + 1 + (ins.jt if taken else ins.jf)


# ----------------------------------------------------------------------------- instructions


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
def test_program_starts_with_the_arch_check(policy: sc.SeccompPolicy, machine: str) -> None:
    prog = sc.build_program(policy, machine)
    table = sc.SYSCALL_TABLES[machine]
    assert prog[0] == bpf.Insn(bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, 0, 0, bpf.OFF_ARCH)
    assert prog[1].code == bpf.BPF_JMP | bpf.BPF_JEQ | bpf.BPF_K
    assert prog[1].k == table.audit_arch and prog[1].jt == 0
    assert prog[target(prog, 1, False)] == bpf.Insn(bpf.BPF_RET | bpf.BPF_K, 0, 0, KILL)
    assert prog[2] == bpf.Insn(bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS, 0, 0, bpf.OFF_NR)
    if machine == "x86_64":
        assert prog[3].code == bpf.BPF_JMP | bpf.BPF_JGE | bpf.BPF_K
        assert prog[3].k == sc.X32_SYSCALL_BIT
        assert prog[target(prog, 3, True)].k == KILL
    else:
        assert prog[3].k != sc.X32_SYSCALL_BIT  # no x32 on arm64: straight to the dispatch


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
def test_program_is_loadable_and_small(policy: sc.SeccompPolicy, machine: str) -> None:
    prog = sc.build_program(policy, machine)
    assert len(prog) < 160
    assert bpf.encode(prog)  # 1..4096 instructions
    for ins in prog:
        cls = ins.code & 0x07
        if cls == bpf.BPF_LD:  # only aligned word loads from seccomp_data
            assert ins.code == bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS
            assert ins.k % 4 == 0 and ins.k < bpf.SECCOMP_DATA_SIZE
        else:
            assert cls in (bpf.BPF_JMP, bpf.BPF_RET, bpf.BPF_ALU), ins
    # Every argument load reads a *low* half: no comparison ever looks at a high word.
    low = {bpf.arg_offset(i) for i in range(6)}
    arg_loads = {ins.k for ins in prog if ins.code == 0x20 and ins.k >= 16}
    assert arg_loads <= low


def test_program_is_deterministic() -> None:
    assert sc.build_program(ONLINE, "x86_64") == sc.build_program(ONLINE, "x86_64")
    assert sc.build_program(ONLINE, "x86_64") != sc.build_program(OFFLINE, "x86_64")


def test_unknown_machine_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="riscv64"):
        sc.build_program(OFFLINE, "riscv64")


def test_ioctl_compares_only_the_low_word() -> None:
    prog = program()
    nr = sc.SYSCALL_TABLES["x86_64"].numbers["ioctl"]
    pc = next(i for i, ins in enumerate(prog) if ins.k == nr and ins.code == 0x15)
    block = target(prog, pc, True)
    assert prog[block] == bpf.Insn(0x20, 0, 0, bpf.arg_offset(1))  # low word of cmd
    assert prog[block + 1].k == sc.TIOCSTI and prog[block + 2].k == sc.TIOCLINUX


# ----------------------------------------------------------------------------- architecture


@pytest.mark.parametrize(
    "arch",
    [sc.AUDIT_ARCH_I386, sc.AUDIT_ARCH_ARM, sc.AUDIT_ARCH_AARCH64, 0, 0xFFFFFFFF],
)
@pytest.mark.parametrize("nr", [0, 1, 20, 39, 101, 165, 0x40000014])
def test_foreign_arch_is_killed_on_x86_64(arch: int, nr: int) -> None:
    # i386 int 0x80 arrives as AUDIT_ARCH_I386 with i386 numbers (20 is getpid there).
    for policy in POLICIES:
        assert verdict(nr, arch=arch, policy=policy) == KILL


@pytest.mark.parametrize("arch", [sc.AUDIT_ARCH_ARM, sc.AUDIT_ARCH_X86_64, sc.AUDIT_ARCH_I386])
def test_foreign_arch_is_killed_on_aarch64(arch: int) -> None:
    assert verdict(172, arch=arch, machine="aarch64") == KILL


@pytest.mark.parametrize(
    "nr", [0x40000000, 0x40000000 | 39, 0x40000000 | 101, 0x40000000 | 512, 0x7FFFFFFF, U64 >> 32]
)
def test_x32_numbers_are_killed(nr: int) -> None:
    # x32 syscalls carry AUDIT_ARCH_X86_64 and set bit 30 of nr; -1 (0xffffffff) too.
    for policy in POLICIES:
        assert verdict(nr, policy=policy) == KILL


def test_aarch64_has_no_x32_rule() -> None:
    assert verdict(0x40000000 | 172, machine="aarch64") == ALLOW


# ----------------------------------------------------------------------------- deny list


def test_deny_list_is_documented_once() -> None:
    names = [name for name, _ in sc.DENIED]
    assert len(names) == len(set(names))
    assert all(why for _, why in sc.DENIED)
    restricted = {name for name, _ in sc.RESTRICTED}
    assert not restricted & set(names)
    assert restricted <= set(sc.SYSCALL_TABLES["x86_64"].numbers)


@pytest.mark.parametrize("machine", MACHINES)
def test_every_table_name_has_a_rule(machine: str) -> None:
    table = set(sc.SYSCALL_TABLES[machine].numbers)
    ruled = {name for name, _ in sc.DENIED} | {name for name, _ in sc.RESTRICTED}
    assert table == ruled - (X86_ONLY if machine == "aarch64" else set())


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
@pytest.mark.parametrize("name", [name for name, _ in sc.DENIED])
def test_denied_syscall_fails_with_eperm(name: str, policy: sc.SeccompPolicy, machine: str) -> None:
    if name not in sc.SYSCALL_TABLES[machine].numbers:
        assert machine == "aarch64" and name in X86_ONLY
        return
    for args in [(), (1, 2, 3, 4, 5, 6), (U64,) * 6]:
        assert verdict(name, args, policy=policy, machine=machine) == EPERM


@pytest.mark.parametrize("machine", MACHINES)
def test_ordinary_syscalls_are_allowed(machine: str) -> None:
    for policy in POLICIES:
        for name, nr in ORDINARY[machine].items():
            assert verdict(nr, (0, 0, 0), policy=policy, machine=machine) == ALLOW, name


@settings(max_examples=300, deadline=None, database=None)
@given(
    machine=st.sampled_from(MACHINES),
    nr=st.integers(0, 1000),
    args=st.tuples(*[st.integers(0, U64)] * 6),
)
def test_unlisted_syscalls_are_allowed_whatever_their_arguments(
    machine: str, nr: int, args: tuple[int, ...]
) -> None:
    # Also the property the kernel's action cache needs: the verdict depends on nr alone.
    if nr in sc.SYSCALL_TABLES[machine].numbers.values():
        return
    for policy in POLICIES:
        assert verdict(nr, args, policy=policy, machine=machine) == ALLOW


# ----------------------------------------------------------------------------- clone & co

SIGCHLD = 17
THREAD_FLAGS = 0x3D0F00  # glibc pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|...
NS_FLAGS = {
    "NEWNS": sc.CLONE_NEWNS,
    "NEWCGROUP": sc.CLONE_NEWCGROUP,
    "NEWUTS": sc.CLONE_NEWUTS,
    "NEWIPC": sc.CLONE_NEWIPC,
    "NEWUSER": sc.CLONE_NEWUSER,
    "NEWPID": sc.CLONE_NEWPID,
    "NEWNET": sc.CLONE_NEWNET,
}


@pytest.mark.parametrize("machine", MACHINES)
def test_plain_clone_is_allowed(machine: str) -> None:
    for flags in (SIGCHLD, THREAD_FLAGS, 0x4111, SIGCHLD | (1 << 40), 0x80):
        # 0x80 in clone is part of the exit signal byte, not CLONE_NEWTIME.
        assert verdict("clone", (flags, 0, 0, 0, 0), machine=machine) == ALLOW


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("flag", NS_FLAGS.values(), ids=NS_FLAGS.keys())
def test_namespace_flags_are_refused(flag: int, machine: str) -> None:
    for base in (0, SIGCHLD, THREAD_FLAGS, 0xFFFFFFFF00000000):
        assert verdict("clone", (base | flag,), machine=machine) == EPERM
        assert verdict("unshare", (base | flag,), machine=machine) == EPERM
    assert verdict("unshare", (sc.CLONE_NEWTIME,), machine=machine) == EPERM


def test_unshare_without_namespaces_is_allowed() -> None:
    clone_files, clone_fs, clone_sysvsem = 0x400, 0x200, 0x40000
    for flags in (0, clone_files, clone_fs | clone_files, clone_sysvsem):
        assert verdict("unshare", (flags,)) == ALLOW


def test_namespace_bit_only_in_the_high_word_is_not_a_namespace() -> None:
    # The kernel keeps the low 32 bits of clone's flags; these ask for no namespace.
    assert verdict("clone", (sc.CLONE_NEWUSER << 32 | SIGCHLD,)) == ALLOW


@pytest.mark.parametrize("machine", MACHINES)
def test_clone3_is_enosys(machine: str) -> None:
    for args in [(), (0x1000, 88), (U64,) * 6]:
        assert verdict("clone3", args, machine=machine) == ENOSYS


# ----------------------------------------------------------------------------- ioctl

TCGETS, TIOCGWINSZ, FIONREAD = 0x5401, 0x5413, 0x541B


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (TCGETS, ALLOW),
        (TIOCGWINSZ, ALLOW),
        (FIONREAD, ALLOW),
        (sc.TIOCSTI, EPERM),
        (sc.TIOCLINUX, EPERM),
        (0xDEADBEEF00005412, EPERM),  # high bits set: the kernel still sees TIOCSTI
        (0xFFFFFFFF0000541C, EPERM),
        (0x0000000100005412, EPERM),
        (0x0000541200000000, ALLOW),  # TIOCSTI only in the high word: the kernel sees 0
        (0x5412 | 0x10000, ALLOW),
    ],
)
@pytest.mark.parametrize("machine", MACHINES)
def test_ioctl_terminal_injection(cmd: int, expected: int, machine: str) -> None:
    for policy in POLICIES:
        assert verdict("ioctl", (0, cmd, 0), policy=policy, machine=machine) == expected


# ----------------------------------------------------------------------------- personality


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        (0xFFFFFFFF, ALLOW),  # query
        (0, ALLOW),  # PER_LINUX
        (U64, ALLOW),  # the kernel takes an unsigned int: still the query
        (1 << 32, ALLOW),  # likewise PER_LINUX
        (0x0040000, EPERM),  # ADDR_NO_RANDOMIZE
        (0x0008, EPERM),  # PER_LINUX32
        (0x0400000, EPERM),  # READ_IMPLIES_EXEC
        (0x0020000, EPERM),  # UNAME26
        (0xFFFFFFFE, EPERM),
        ((1 << 32) | 0x40000, EPERM),
    ],
)
@pytest.mark.parametrize("machine", MACHINES)
def test_personality(persona: int, expected: int, machine: str) -> None:
    assert verdict("personality", (persona,), machine=machine) == expected


# ----------------------------------------------------------------------------- sockets

AF_PACKET, AF_VSOCK, AF_ALG, AF_KEY, AF_BLUETOOTH, AF_XDP, AF_CAN = 17, 40, 38, 15, 31, 44, 29
SOCK_RAW, SOCK_SEQPACKET, SOCK_RDM = 3, 5, 4
NB, CE = sc.SOCK_NONBLOCK, sc.SOCK_CLOEXEC
IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_MPTCP, IPPROTO_UDPLITE = 1, 132, 262, 136

# (domain, type, protocol, allowed offline, allowed online)
SOCKETS = [
    (sc.AF_UNIX, sc.SOCK_STREAM, 0, True, True),
    (sc.AF_UNIX, sc.SOCK_DGRAM | CE, 0, True, True),
    (sc.AF_UNIX, SOCK_SEQPACKET | NB | CE, 0, True, True),
    (sc.AF_UNIX, SOCK_RAW, 99, True, True),  # any type: the kernel sorts it out
    (sc.AF_INET, sc.SOCK_STREAM, 0, False, True),
    (sc.AF_INET, sc.SOCK_STREAM | NB | CE, 0, False, True),
    (sc.AF_INET, sc.SOCK_STREAM | CE, sc.IPPROTO_TCP, False, True),
    (sc.AF_INET6, sc.SOCK_STREAM | NB, sc.IPPROTO_TCP, False, True),
    (sc.AF_INET, sc.SOCK_DGRAM, 0, False, True),
    (sc.AF_INET6, sc.SOCK_DGRAM | NB | CE, sc.IPPROTO_UDP, False, True),
    (sc.AF_INET, sc.SOCK_STREAM, sc.IPPROTO_UDP, False, False),
    (sc.AF_INET, sc.SOCK_DGRAM, sc.IPPROTO_TCP, False, False),
    (sc.AF_INET, SOCK_RAW, IPPROTO_ICMP, False, False),
    (sc.AF_INET6, SOCK_RAW | CE, 0, False, False),
    (sc.AF_INET, sc.SOCK_DGRAM, IPPROTO_ICMP, False, False),  # ping sockets
    (sc.AF_INET, sc.SOCK_DGRAM, IPPROTO_UDPLITE, False, False),
    (sc.AF_INET, sc.SOCK_STREAM, IPPROTO_SCTP, False, False),
    (sc.AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP, False, False),
    (sc.AF_INET6, SOCK_SEQPACKET, 0, False, False),
    (sc.AF_INET, sc.SOCK_STREAM, IPPROTO_MPTCP, False, False),
    (sc.AF_INET6, sc.SOCK_STREAM | NB, IPPROTO_MPTCP, False, False),
    (sc.AF_INET, SOCK_RDM, 0, False, False),
    (sc.AF_INET, sc.SOCK_STREAM | 0x100, 0, False, False),  # stray type bits
    (sc.AF_NETLINK, SOCK_RAW | CE, sc.NETLINK_ROUTE, False, True),
    (sc.AF_NETLINK, sc.SOCK_DGRAM, sc.NETLINK_ROUTE, False, True),
    (sc.AF_NETLINK, SOCK_RAW, 9, False, False),  # NETLINK_AUDIT
    (sc.AF_NETLINK, SOCK_RAW, 4, False, False),  # NETLINK_SOCK_DIAG
    (sc.AF_NETLINK, SOCK_RAW, 12, False, False),  # NETLINK_NETFILTER
    (AF_PACKET, SOCK_RAW, 0x0300, False, False),
    (AF_PACKET, sc.SOCK_DGRAM, 0, False, False),
    (AF_VSOCK, sc.SOCK_STREAM, 0, False, False),
    (AF_ALG, SOCK_SEQPACKET, 0, False, False),
    (AF_KEY, SOCK_RAW, 2, False, False),
    (AF_BLUETOOTH, SOCK_RAW, 0, False, False),
    (AF_XDP, SOCK_RAW, 0, False, False),
    (AF_CAN, SOCK_RAW, 1, False, False),
    (0, sc.SOCK_STREAM, 0, False, False),
]


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("case", SOCKETS, ids=lambda c: "-".join(map(str, c)))
def test_socket_matrix(case: tuple[int, int, int, bool, bool], machine: str) -> None:
    domain, type_, proto, offline, online = case
    for policy, allowed in ((OFFLINE, offline), (ONLINE, online)):
        expected = ALLOW if allowed else EPERM
        args = (domain, type_, proto)
        assert verdict("socket", args, policy=policy, machine=machine) == expected
        # int arguments: garbage in the high halves changes nothing.
        high = tuple(a | 0xA5A5A5A5 << 32 for a in args)
        assert verdict("socket", high, policy=policy, machine=machine) == expected


@pytest.mark.parametrize("machine", MACHINES)
def test_socketpair_is_unix_only(machine: str) -> None:
    for policy in POLICIES:
        assert verdict("socketpair", (sc.AF_UNIX, 1, 0), policy=policy, machine=machine) == ALLOW
        got = verdict("socketpair", (sc.AF_UNIX | 1 << 40, 5), policy=policy, machine=machine)
        assert got == ALLOW
        for domain in (sc.AF_INET, sc.AF_INET6, sc.AF_NETLINK, AF_PACKET, AF_VSOCK, 0):
            got = verdict("socketpair", (domain, 1, 0), policy=policy, machine=machine)
            assert got == EPERM


# ----------------------------------------------------------------------------- the oracle
#
# libseccomp builds the same rules from its own syscall tables; both programs run in the same
# interpreter. What libseccomp cannot say is worked around, not skipped:
#
# * a rule cannot be unconditional and conditional at once, nor compare one argument twice,
#   so "deny unless the argument is in an allow-list" (socket, socketpair, personality,
#   clone, unshare) is a second libseccomp filter whose default is EPERM and whose rules
#   ALLOW the permitted argument patterns. The oracle's verdict for those five syscalls comes
#   from that filter (picked by libseccomp's own number for the name), for all else from the
#   first. The masked socket type is a MASKED_EQ with the same mask, which libseccomp has.
# * low-word comparisons are MASKED_EQ with mask 0xffffffff (libseccomp then checks
#   ``hi & 0 == 0``, i.e. ignores the high word), "no CLONE_NEW* bit" is MASKED_EQ(mask, 0).
# * the oracle's constants come from the standard library (socket, termios) and the kernel
#   headers, not from the module under test, and its syscall numbers from libseccomp's own
#   tables: a wrong number or constant in ours is a disagreement.
# * random search (Hypothesis) is backed by exhaustive sweeps: every syscall number below
#   1024, and every combination of the argument values that matter.
#
# Two known differences are asserted, not hidden: libseccomp lets nr -1 through on x86_64
# (the value a tracer writes to skip a call; the kernel answers ENOSYS) where we kill, and
# libseccomp 2.5 does not know syscalls newer than it (open_tree_attr, Linux 6.15), so their
# numbers are left out of the comparison (the deny-list tests above cover them).


def _pyseccomp() -> ModuleType:
    try:
        import pyseccomp
    except RuntimeError as exc:  # pyseccomp raises this when libseccomp.so is missing
        pytest.skip(f"libseccomp, the oracle, is not installed on this host: {exc}")
    except ImportError as exc:
        pytest.fail(f"pyseccomp is in the test extra (pip install -e '.[test]'): {exc}")
    return pyseccomp


_ARG_SYSCALLS = ("personality", "clone", "unshare", "socket", "socketpair", "prlimit64")


class K:
    """The oracle's constants, from the standard library and the kernel headers, never from
    the module under test (so a wrong constant there shows up as a disagreement)."""

    TIOCSTI = termios.TIOCSTI
    TIOCLINUX = termios.TIOCLINUX
    AF_UNIX, AF_INET, AF_INET6 = socket.AF_UNIX, socket.AF_INET, socket.AF_INET6
    AF_NETLINK, NETLINK_ROUTE = socket.AF_NETLINK, socket.NETLINK_ROUTE
    SOCK_STREAM, SOCK_DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM
    TYPE_MASK = 0xFFFFFFFF & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
    # include/uapi/linux/sched.h: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
    CLONE_NS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
    CLONE_NS |= 0x40000000
    UNSHARE_NS = CLONE_NS | 0x00000080  # | CLONE_NEWTIME


class Oracle:
    """libseccomp's programs for one machine and policy, and how to ask them."""

    def __init__(self, s: Any, policy: sc.SeccompPolicy, machine: str) -> None:
        self.arch = {"x86_64": s.Arch.X86_64, "aarch64": s.Arch.AARCH64}[machine]
        self.unknown: set[str] = set()
        main = self._filter(s, s.ALLOW)
        for name, _why in sc.DENIED:
            self._add(main, s.ERRNO(errno.EPERM), name)
        self._add(main, s.ERRNO(errno.ENOSYS), "clone3")
        for cmd in (K.TIOCSTI, K.TIOCLINUX):
            self._add(main, s.ERRNO(errno.EPERM), "ioctl", s.Arg(1, s.MASKED_EQ, 0xFFFFFFFF, cmd))

        args = self._filter(s, s.ERRNO(errno.EPERM))

        def low(index: int, value: int) -> Any:
            return s.Arg(index, s.MASKED_EQ, 0xFFFFFFFF, value)

        self._add(args, s.ALLOW, "personality", low(0, 0xFFFFFFFF))
        self._add(args, s.ALLOW, "personality", low(0, 0))
        self._add(args, s.ALLOW, "prlimit64", low(0, 0))
        self._add(args, s.ALLOW, "clone", s.Arg(0, s.MASKED_EQ, K.CLONE_NS, 0))
        self._add(args, s.ALLOW, "unshare", s.Arg(0, s.MASKED_EQ, K.UNSHARE_NS, 0))
        self._add(args, s.ALLOW, "socket", low(0, K.AF_UNIX))
        self._add(args, s.ALLOW, "socketpair", low(0, K.AF_UNIX))
        if policy.allow_inet:
            for family in (K.AF_INET, K.AF_INET6):
                for type_, protocols in (
                    (K.SOCK_STREAM, (0, K.TCP)),
                    (K.SOCK_DGRAM, (0, K.UDP)),
                ):
                    for proto in protocols:
                        self._add(
                            args,
                            s.ALLOW,
                            "socket",
                            low(0, family),
                            s.Arg(1, s.MASKED_EQ, K.TYPE_MASK, type_),
                            low(2, proto),
                        )
            self._add(args, s.ALLOW, "socket", low(0, K.AF_NETLINK), low(2, K.NETLINK_ROUTE))

        self.main = self._export(main)
        self.args = self._export(args)
        self.arg_nrs = {s.resolve_syscall(self.arch, name) for name in _ARG_SYSCALLS}
        # libseccomp's own numbers for every name we rule on (negative: not on this arch).
        ruled = [name for name, _ in (*sc.DENIED, *sc.RESTRICTED)]
        resolved = (s.resolve_syscall(self.arch, name) for name in ruled)
        self.numbers = sorted({nr for nr in resolved if nr >= 0})
        table = sc.SYSCALL_TABLES[machine].numbers
        self.excluded = {table[name] for name in self.unknown} | {0xFFFFFFFF}

    def _filter(self, s: Any, default: int) -> Any:
        f = s.SyscallFilter(default)
        if self.arch != s.system_arch():
            f.add_arch(self.arch)
            f.remove_arch(s.Arch.NATIVE)
        f.set_attr(s.Attr.ACT_BADARCH, bpf.SECCOMP_RET_KILL_PROCESS)
        return f

    def _add(self, f: Any, action: int, name: str, *args: Any) -> None:
        try:
            f.add_rule(action, name, *args)
        except OSError as exc:  # a name this libseccomp does not know
            assert exc.errno == errno.EINVAL, (name, exc)
            self.unknown.add(name)

    @staticmethod
    def _export(f: Any) -> list[bpf.Insn]:
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            return bpf.decode(out.read())

    def verdict(self, blob: bytes, nr: int, arch: int) -> int:
        prog = self.args if nr in self.arg_nrs and arch == self.arch else self.main
        return bpf.evaluate(prog, blob)


_ORACLES: dict[tuple[bool, str], Oracle] = {}


def oracle(policy: sc.SeccompPolicy, machine: str) -> Oracle:
    s = _pyseccomp()
    key = (policy.allow_inet, machine)
    if key not in _ORACLES:
        _ORACLES[key] = Oracle(s, policy, machine)
    return _ORACLES[key]


def test_oracle_knows_every_name_but_the_newest() -> None:
    o = oracle(OFFLINE, "x86_64")
    assert o.unknown <= {"open_tree_attr"}  # Linux 6.15; libseccomp 2.6 knows it


@pytest.mark.parametrize("machine", MACHINES)
def test_oracle_differs_only_on_minus_one(machine: str) -> None:
    o = oracle(OFFLINE, machine)
    audit = sc.SYSCALL_TABLES[machine].audit_arch
    blob = data(0xFFFFFFFF, audit)
    assert bpf.evaluate(program(OFFLINE, machine), blob) == (KILL if machine == "x86_64" else ALLOW)
    assert o.verdict(blob, 0xFFFFFFFF, audit) == ALLOW


INTERESTING_ARGS = [
    0,
    1,
    2,
    3,
    5,
    6,
    10,
    16,
    17,
    38,
    40,
    132,
    262,
    0x80,
    0x0300,
    0x40000,
    0x3D0F00,
    0xFFFFFFFF,
    termios.TIOCSTI,
    termios.TIOCLINUX,
    termios.TCGETS,
    socket.SOCK_STREAM | socket.SOCK_NONBLOCK,
    socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
    socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
    socket.SOCK_RAW | socket.SOCK_CLOEXEC,
    *(1 << bit for bit in range(32)),  # every single flag, CLONE_NEW* among them
    SIGCHLD | 0x10000000,  # CLONE_NEWUSER
]
args_st = st.one_of(
    st.sampled_from(INTERESTING_ARGS),
    st.builds(
        lambda hi, lo: hi << 32 | lo,
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from(INTERESTING_ARGS),
    ),
    st.integers(0, U64),
)


def _numbers(machine: str) -> list[int]:
    nums = sorted(set(sc.SYSCALL_TABLES[machine].numbers.values()))
    return nums + list(ORDINARY[machine].values()) + [n | 0x40000000 for n in nums[:8]]


def _arches(machine: str) -> st.SearchStrategy[int]:
    native = sc.SYSCALL_TABLES[machine].audit_arch
    foreign = [sc.AUDIT_ARCH_I386, sc.AUDIT_ARCH_ARM, sc.AUDIT_ARCH_X86_64, sc.AUDIT_ARCH_AARCH64]
    return st.one_of(st.just(native), st.just(native), st.just(native), st.sampled_from(foreign))


def _check_against_oracle(
    draw: Callable[[st.SearchStrategy[Any]], Any], policy: sc.SeccompPolicy, machine: str
) -> None:
    o = oracle(policy, machine)
    table = sc.SYSCALL_TABLES[machine].numbers
    argful = [table[name] for name in (*_ARG_SYSCALLS, "ioctl")]
    nr = draw(
        st.one_of(
            st.sampled_from(argful),  # where arguments matter: drawn often
            st.sampled_from(_numbers(machine) + o.numbers),
            st.integers(0, 0xFFFFFFFF),
        )
    )
    arch = draw(_arches(machine))
    args = draw(st.tuples(*[args_st] * 6))
    if nr in o.excluded and arch == sc.SYSCALL_TABLES[machine].audit_arch:
        return
    blob = data(nr, arch, args)
    ours = bpf.evaluate(program(policy, machine), blob)
    theirs = o.verdict(blob, nr, arch)
    assert ours == theirs, (hex(nr), hex(arch), [hex(a) for a in args], hex(ours), hex(theirs))


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
@settings(
    max_examples=800, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.data())
def test_program_matches_libseccomp(
    policy: sc.SeccompPolicy, machine: str, drawn: st.DataObject
) -> None:
    _check_against_oracle(drawn.draw, policy, machine)


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
def test_socket_matrix_matches_libseccomp(policy: sc.SeccompPolicy, machine: str) -> None:
    o = oracle(policy, machine)
    table = sc.SYSCALL_TABLES[machine]
    for domain, type_, proto, *_ in SOCKETS:
        for name in ("socket", "socketpair"):
            blob = data(table.numbers[name], table.audit_arch, (domain, type_, proto))
            ours = bpf.evaluate(program(policy, machine), blob)
            assert ours == o.verdict(blob, table.numbers[name], table.audit_arch)


SOCKET_VALUES = {
    "domain": [0, 1, 2, 10, 15, 16, 17, 29, 31, 38, 40, 44],
    "type": [0, 1, 2, 3, 4, 5, 6, 10, 0x101, 1 | 0x800, 2 | 0x80000, 1 | 0x80800, 3 | 0x80000],
    "proto": [0, 1, 2, 4, 6, 9, 12, 17, 132, 136, 255, 262, 0x300],
}


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
def test_argument_rules_match_libseccomp_exhaustively(
    policy: sc.SeccompPolicy, machine: str
) -> None:
    """Every combination of the values that matter, with and without high-word garbage.

    Random search rarely draws, say, ioctl with TIOCSTI in exactly argument 1; this does.
    """
    o = oracle(policy, machine)
    table = sc.SYSCALL_TABLES[machine]
    prog = program(policy, machine)
    cases: list[tuple[str, tuple[int, ...]]] = []
    for d, t, p in itertools.product(*SOCKET_VALUES.values()):
        cases += [("socket", (d, t, p)), ("socketpair", (d, t, p, 0))]
    bits = [0, *(1 << b for b in range(64)), SIGCHLD, THREAD_FLAGS, 0xFFFFFFFF, U64]
    for flags in bits:
        cases += [("clone", (flags, 0, 0, 0, 0)), ("unshare", (flags,))]
        cases += [("clone", (flags | SIGCHLD,)), ("unshare", (flags | 0x400,))]
        cases += [("personality", (flags,)), ("personality", (flags ^ 0xFFFFFFFF,))]
        cases += [("prlimit64", (flags, 7, 0, 0))]
    for cmd in [0, termios.TCGETS, termios.TIOCSTI, termios.TIOCLINUX, termios.FIONREAD]:
        for shift in range(0, 64, 4):
            cases += [("ioctl", (0, cmd | (0xF << shift) & U64, 0)), ("ioctl", (3, cmd, 7))]
    for name, args in cases:
        for high in (0, 0x5A5A5A5A << 32):
            full = tuple(a | high for a in args)
            nr = table.numbers[name]
            blob = data(nr, table.audit_arch, full)
            ours, theirs = bpf.evaluate(prog, blob), o.verdict(blob, nr, table.audit_arch)
            assert ours == theirs, (name, [hex(a) for a in full], hex(ours), hex(theirs))


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("policy", POLICIES, ids=["offline", "online"])
def test_every_syscall_number_matches_libseccomp(policy: sc.SeccompPolicy, machine: str) -> None:
    """Each number up to 1023 (and a sweep of x32 numbers) against libseccomp's own tables:
    a wrong number in ours is a disagreement here, whatever the arguments."""
    o = oracle(policy, machine)
    audit = sc.SYSCALL_TABLES[machine].audit_arch
    prog = program(policy, machine)
    numbers = [*range(1024), *range(0x40000000, 0x40000000 + 1024, 7), 0x7FFFFFFF, 0xFFFFFFFE]
    for nr in numbers:
        if nr in o.excluded:
            continue
        for args in ((0,) * 6, (U64,) * 6, (1, 2, 3, 4, 5, 6)):
            blob = data(nr, audit, args)
            ours, theirs = bpf.evaluate(prog, blob), o.verdict(blob, nr, audit)
            assert ours == theirs, (hex(nr), args, hex(ours), hex(theirs))
