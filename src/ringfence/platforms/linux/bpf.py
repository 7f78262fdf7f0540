"""A small classic-BPF assembler (and reference interpreter) for seccomp filters.

seccomp filters are classic BPF programs run over ``struct seccomp_data``. We write them by
hand rather than depend on libseccomp, so this module gives three things:

* the instruction encoding (``struct sock_filter``: u16 code, u8 jt, u8 jf, u32 k),
* a :class:`Builder` with symbolic labels, so a policy reads top to bottom and jump offsets
  are computed (and range-checked: conditional jumps reach at most 255 instructions) instead of
  counted by hand,
* :func:`evaluate`, an interpreter for the subset seccomp accepts, so a filter's decisions can
  be unit-tested on any OS without installing it.

Only the opcodes the kernel's seccomp checker allows are provided (no packet loads, no
``BPF_LD|BPF_IND``); see ``seccomp_check_filter`` in kernel/seccomp.c.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from dataclasses import dataclass
from typing import NamedTuple

# Instruction classes.
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_MISC = 0x07
# Load sizes and modes.
BPF_W = 0x00
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_MEM = 0x60
BPF_LEN = 0x80
# ALU and jump operations.
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
# Operand source / return source.
BPF_K = 0x00
BPF_X = 0x08
BPF_A = 0x10
# BPF_MISC operations.
BPF_TAX = 0x00
BPF_TXA = 0x80

BPF_MEMWORDS = 16
BPF_MAXINSNS = 4096

# seccomp return actions (include/uapi/linux/seccomp.h).
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_DATA = 0x0000FFFF

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
SECCOMP_DATA_SIZE = 64
OFF_NR = 0
OFF_ARCH = 4
OFF_IP = 8
_OFF_ARGS = 16


def arg_offset(index: int, *, high: bool = False) -> int:
    """Offset of the low (or high) 32-bit half of syscall argument ``index`` in seccomp_data.

    BPF loads are 32 bits wide, so a 64-bit argument is two loads; which half sits first
    depends on the machine's byte order.
    """
    if not 0 <= index < 6:
        raise ValueError(f"syscall argument index {index} is not in 0..5")
    base = _OFF_ARGS + 8 * index
    first_is_low = sys.byteorder == "little"
    return base + (4 if high == first_is_low else 0)


def ret_errno(errno: int) -> int:
    """The return value that makes the syscall fail with ``errno``."""
    if not 0 <= errno <= SECCOMP_RET_DATA:
        raise ValueError(f"errno {errno} does not fit in SECCOMP_RET_DATA")
    return SECCOMP_RET_ERRNO | errno


@dataclass(frozen=True)
class Insn:
    """One ``struct sock_filter``; ``encode`` gives its 8 bytes in native byte order."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"BPF code {self.code:#x} does not fit 16 bits")
        if not (0 <= self.jt <= 0xFF and 0 <= self.jf <= 0xFF):
            raise ValueError(f"BPF jump offsets ({self.jt}, {self.jf}) do not fit 8 bits")
        if not 0 <= self.k <= 0xFFFFFFFF:
            raise ValueError(f"BPF constant {self.k:#x} does not fit 32 bits")

    def encode(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k)


def stmt(code: int, k: int = 0) -> Insn:
    """A non-jump instruction (the kernel's BPF_STMT)."""
    return Insn(code, 0, 0, k)


def jump(code: int, k: int, jt: int, jf: int) -> Insn:
    """A jump instruction with numeric offsets (the kernel's BPF_JUMP)."""
    return Insn(code, jt, jf, k)


def encode(program: list[Insn]) -> bytes:
    """The program as the byte array ``struct sock_fprog.filter`` points to."""
    if not 0 < len(program) <= BPF_MAXINSNS:
        raise ValueError(f"a BPF program has 1..{BPF_MAXINSNS} instructions, not {len(program)}")
    return b"".join(insn.encode() for insn in program)


def decode(blob: bytes) -> list[Insn]:
    """Inverse of :func:`encode` (for tests and debugging)."""
    if len(blob) % 8:
        raise ValueError("a BPF program is a multiple of 8 bytes")
    return [Insn(*struct.unpack_from("=HBBI", blob, i)) for i in range(0, len(blob), 8)]


class SockFprog(ctypes.Structure):
    """``struct sock_fprog`` (unsigned short len; struct sock_filter *filter)."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def sock_fprog(program: list[Insn]) -> tuple[SockFprog, ctypes.Array[ctypes.c_char]]:
    """A ``sock_fprog`` for ``program`` plus the buffer it points into (keep both alive)."""
    blob = encode(program)
    buf = ctypes.create_string_buffer(blob, len(blob))
    return SockFprog(len(program), ctypes.addressof(buf)), buf


class Encoded(NamedTuple):
    """A program ready for seccomp(2): its ``sock_fprog`` and the buffer that holds it.

    A session's runner makes one per filter and every command's init loads it as it is
    (encoding in Python costs each command a few hundred microseconds otherwise)."""

    fprog: SockFprog
    buf: ctypes.Array[ctypes.c_char]


def encoded(program: list[Insn]) -> Encoded:
    """:func:`sock_fprog` as an :class:`Encoded`."""
    return Encoded(*sock_fprog(program))


# --------------------------------------------------------------------------- builder


@dataclass(frozen=True)
class _Jump:
    code: int
    k: int
    jt: str | int  # label name, or 0 for "fall through"
    jf: str | int


@dataclass(frozen=True)
class _Ja:
    target: str


class Builder:
    """Assemble a program with named labels; :meth:`build` resolves the offsets.

    Conditional targets are label names or ``None`` for "fall through to the next
    instruction". BPF only jumps forward, so a label must be placed after every jump to it.
    """

    def __init__(self) -> None:
        self._items: list[Insn | _Jump | _Ja] = []
        self._labels: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def label(self, name: str) -> Builder:
        if name in self._labels:
            raise ValueError(f"BPF label {name!r} is defined twice")
        self._labels[name] = len(self._items)
        return self

    def emit(self, insn: Insn) -> Builder:
        self._items.append(insn)
        return self

    # loads / stores / alu
    def load_abs(self, offset: int) -> Builder:
        """A = 32-bit word at ``offset`` of seccomp_data (must be aligned and in range)."""
        if offset % 4 or not 0 <= offset < SECCOMP_DATA_SIZE:
            raise ValueError(f"seccomp_data offset {offset} is not an aligned word")
        return self.emit(stmt(BPF_LD | BPF_W | BPF_ABS, offset))

    def load_nr(self) -> Builder:
        return self.load_abs(OFF_NR)

    def load_arch(self) -> Builder:
        return self.load_abs(OFF_ARCH)

    def load_arg(self, index: int, *, high: bool = False) -> Builder:
        return self.load_abs(arg_offset(index, high=high))

    def load_imm(self, k: int) -> Builder:
        return self.emit(stmt(BPF_LD | BPF_IMM, k))

    def load_mem(self, slot: int) -> Builder:
        return self.emit(stmt(BPF_LD | BPF_MEM, _slot(slot)))

    def store(self, slot: int) -> Builder:
        return self.emit(stmt(BPF_ST, _slot(slot)))

    def alu(self, op: int, k: int) -> Builder:
        return self.emit(stmt(BPF_ALU | op | BPF_K, k))

    def tax(self) -> Builder:
        return self.emit(stmt(BPF_MISC | BPF_TAX))

    def txa(self) -> Builder:
        return self.emit(stmt(BPF_MISC | BPF_TXA))

    # control flow
    def jump_if(self, op: int, k: int, jt: str | None, jf: str | None = None) -> Builder:
        """If ``A <op> k`` go to ``jt`` else to ``jf`` (``None`` = next instruction)."""
        if op not in (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET):
            raise ValueError(f"{op:#x} is not a conditional jump")
        self._items.append(_Jump(BPF_JMP | op | BPF_K, k, jt or 0, jf or 0))
        return self

    def jeq(self, k: int, jt: str | None, jf: str | None = None) -> Builder:
        return self.jump_if(BPF_JEQ, k, jt, jf)

    def jge(self, k: int, jt: str | None, jf: str | None = None) -> Builder:
        return self.jump_if(BPF_JGE, k, jt, jf)

    def jgt(self, k: int, jt: str | None, jf: str | None = None) -> Builder:
        return self.jump_if(BPF_JGT, k, jt, jf)

    def jset(self, k: int, jt: str | None, jf: str | None = None) -> Builder:
        return self.jump_if(BPF_JSET, k, jt, jf)

    def goto(self, target: str) -> Builder:
        """Unconditional jump (32-bit offset, so it reaches any later label)."""
        self._items.append(_Ja(target))
        return self

    def ret(self, k: int) -> Builder:
        return self.emit(stmt(BPF_RET | BPF_K, k))

    def ret_a(self) -> Builder:
        return self.emit(stmt(BPF_RET | BPF_A))

    def build(self) -> list[Insn]:
        out: list[Insn] = []
        for pc, item in enumerate(self._items):
            if isinstance(item, Insn):
                out.append(item)
            elif isinstance(item, _Ja):
                out.append(Insn(BPF_JMP | BPF_JA, 0, 0, self._offset(pc, item.target, 2**32)))
            else:
                jt = self._offset(pc, item.jt, 256) if isinstance(item.jt, str) else 0
                jf = self._offset(pc, item.jf, 256) if isinstance(item.jf, str) else 0
                out.append(Insn(item.code, jt, jf, item.k))
        if not out or out[-1].code & 0x07 != BPF_RET:
            raise ValueError("a seccomp program must end with a return")
        return out

    def _offset(self, pc: int, label: str, limit: int) -> int:
        if label not in self._labels:
            raise ValueError(f"BPF label {label!r} is never defined")
        off = self._labels[label] - pc - 1
        if off < 0:
            raise ValueError(f"BPF label {label!r} is before its jump (BPF jumps forward only)")
        if off >= limit:
            raise ValueError(f"BPF label {label!r} is {off} instructions away (limit {limit - 1})")
        return off


def _slot(slot: int) -> int:
    if not 0 <= slot < BPF_MEMWORDS:
        raise ValueError(f"scratch slot {slot} is not in 0..{BPF_MEMWORDS - 1}")
    return slot


# --------------------------------------------------------------------------- interpreter


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = (), ip: int = 0) -> bytes:
    """Pack a ``struct seccomp_data`` (for :func:`evaluate`)."""
    full = tuple(a & 0xFFFFFFFFFFFFFFFF for a in args) + (0,) * (6 - len(args))
    return struct.pack("=iIQ6Q", nr, arch, ip, *full)


def evaluate(program: list[Insn], data: bytes) -> int:
    """Run ``program`` over ``data`` the way the kernel would and return its verdict.

    Raises ValueError for an instruction seccomp would reject, so a test cannot pass on a
    program the kernel refuses to load.
    """
    a = x = 0
    mem = [0] * BPF_MEMWORDS
    pc = 0
    mask = 0xFFFFFFFF
    while pc < len(program):
        ins = program[pc]
        cls = ins.code & 0x07
        if cls == BPF_LD:
            mode = ins.code & 0xE0
            if ins.code == BPF_LD | BPF_W | BPF_ABS:
                if ins.k % 4 or ins.k + 4 > len(data):
                    raise ValueError(f"pc {pc}: bad load offset {ins.k}")
                a = struct.unpack_from("=I", data, ins.k)[0]
            elif ins.code == BPF_LD | BPF_W | BPF_LEN:
                a = len(data)
            elif mode == BPF_IMM:
                a = ins.k
            elif mode == BPF_MEM:
                a = mem[_slot(ins.k)]
            else:
                raise ValueError(f"pc {pc}: load {ins.code:#x} not allowed in seccomp")
        elif cls == BPF_LDX:
            mode = ins.code & 0xE0
            if mode == BPF_IMM:
                x = ins.k
            elif mode == BPF_MEM:
                x = mem[_slot(ins.k)]
            elif mode == BPF_LEN:
                x = len(data)
            else:
                raise ValueError(f"pc {pc}: ldx {ins.code:#x} not allowed in seccomp")
        elif cls == BPF_ST:
            mem[_slot(ins.k)] = a
        elif cls == BPF_STX:
            mem[_slot(ins.k)] = x
        elif cls == BPF_ALU:
            a = _alu(ins, a, x, pc) & mask
        elif cls == BPF_JMP:
            op = ins.code & 0xF0
            if op == BPF_JA:
                pc += 1 + ins.k
                continue
            operand = x if ins.code & BPF_X else ins.k
            if op == BPF_JEQ:
                taken = a == operand
            elif op == BPF_JGT:
                taken = a > operand
            elif op == BPF_JGE:
                taken = a >= operand
            elif op == BPF_JSET:
                taken = bool(a & operand)
            else:
                raise ValueError(f"pc {pc}: jump {ins.code:#x} unknown")
            pc += 1 + (ins.jt if taken else ins.jf)
            continue
        elif cls == BPF_RET:
            src = ins.code & 0x18
            return a if src == BPF_A else ins.k
        elif cls == BPF_MISC:
            if ins.code & 0xF8 == BPF_TXA:
                a = x
            else:
                x = a
        pc += 1
    raise ValueError("program ran off its end without returning")


def _alu(ins: Insn, a: int, x: int, pc: int) -> int:
    op = ins.code & 0xF0
    operand = x if ins.code & BPF_X else ins.k
    if op == BPF_ADD:
        return a + operand
    if op == BPF_SUB:
        return a - operand
    if op == BPF_MUL:
        return a * operand
    if op in (BPF_DIV, BPF_MOD):
        if operand == 0:
            raise ValueError(f"pc {pc}: division by zero")
        return a // operand if op == BPF_DIV else a % operand
    if op == BPF_OR:
        return a | operand
    if op == BPF_AND:
        return a & operand
    if op == BPF_LSH:
        return a << (operand & 31)
    if op == BPF_RSH:
        return a >> (operand & 31)
    if op == BPF_NEG:
        return -a
    if op == BPF_XOR:
        return a ^ operand
    raise ValueError(f"pc {pc}: alu {ins.code:#x} unknown")
