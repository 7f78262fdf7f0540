"""The hardening seccomp filter is installed by ``ringfence run`` (its rules are tested in
isolation in test_seccomp_enforced.py; here: the real runner applies them)."""

from __future__ import annotations

import platform

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox

PROBE = r"""
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()])

call("unshare_user", 272, 0x10000000)
call("keyctl", 250, 0, -3, 0)
call("io_uring_setup", 425, 1, 0)
call("bpf", 321, 0, 0, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("mount", 165, b"none", b"/tmp", b"tmpfs", 0, 0)
call("clone3", 435, 0, 0)
call("ptrace_attach_pid1", 101, 16, 1, 0, 0)
for fam, name in ((socket.AF_PACKET, "packet"), (40, "vsock"), (38, "alg")):
    try:
        socket.socket(fam, socket.SOCK_RAW if fam == socket.AF_PACKET else socket.SOCK_STREAM)
        print("socket", name, "ok")
    except OSError as e:
        print("socket", name, errno.errorcode[e.errno])
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("socket raw ok")
except OSError as e:
    print("socket raw", errno.errorcode[e.errno])
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="probe uses x86_64 numbers")
def test_kernel_surface_is_narrowed(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined(ws, ["python3", "-c", PROBE])
    assert r.returncode == 0, r.stderr
    seen = dict(line.rsplit(" ", 1) for line in r.stdout.strip().splitlines())
    for name in (
        "unshare_user",
        "keyctl",
        "io_uring_setup",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "mount",
        "ptrace_attach_pid1",
        "socket packet",
        "socket vsock",
        "socket alg",
        "socket raw",
    ):
        assert seen[name] == "EPERM", (name, seen)
    assert seen["clone3"] == "ENOSYS"
    assert seen["fork"] == "7"  # ordinary process creation still works


@pytest.mark.skipif(platform.machine() != "x86_64", reason="i386 entry is x86 only")
def test_foreign_abi_call_kills_the_process(rf: Runner) -> None:
    ws = rf.mkdir()
    # mov eax, 20 (i386 getpid); int 0x80; ret  -- a 32-bit syscall from a 64-bit process
    code = (
        "import ctypes, mmap, resource; "
        "resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); "
        "buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); "
        "buf.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])); "
        "addr = ctypes.addressof(ctypes.c_char.from_buffer(buf)); "
        "ctypes.CFUNCTYPE(ctypes.c_int)(addr)(); print('SURVIVED')"
    )
    r = rf.confined(ws, ["python3", "-c", code])
    assert "SURVIVED" not in r.stdout
    assert r.returncode == 128 + 31, (r.returncode, r.stderr)  # SIGSYS
