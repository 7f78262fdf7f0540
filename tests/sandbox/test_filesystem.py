"""Write narrowly, read broadly: the filesystem boundary, both sides of each rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Runner

pytestmark = pytest.mark.sandbox


def _snapshot(d: Path) -> dict[str, tuple[int, int, bytes | str]]:
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        body: bytes | str = (
            os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else b"")
        )
        out[str(p.relative_to(d))] = (st.st_mode, st.st_mtime_ns, body)
    return out


def test_write_inside_workspace_works(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws, "echo hello > f && mkdir -p d/e && echo x > d/e/g && mv f d/h && cat d/h"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\n"
    assert (ws / "d/h").read_text() == "hello\n"
    assert (ws / "d/e/g").read_text() == "x\n"


def test_write_outside_workspace_fails_read_only(rf: Runner) -> None:
    ws, outside = rf.mkdir(), rf.mkdir("outside-")
    (outside / "keep").write_text("original")
    os.chown(outside / "keep", rf.uid, rf.gid)
    before = _snapshot(outside)
    script = f"""
    cd {outside} || exit 9
    for step in 'echo x > new' 'echo x >> keep' 'mkdir d' 'rm keep' 'mv keep k2' \
                'ln -s keep l' 'ln keep hl' 'mkfifo p' 'chmod 600 keep' \
                'touch -d 2001-01-01 keep' 'truncate -s 0 keep' 'chown {rf.uid} keep'; do
        if sh -c "$step" 2>/dev/null; then echo "ALLOWED: $step"; fi
    done
    python3 -c "import os; os.setxattr('keep', 'user.x', b'1')" 2>&1 | tail -1
    echo done
    """
    r = rf.confined_sh(ws, script)
    assert r.returncode == 0, r.stderr
    assert "ALLOWED" not in r.stdout
    assert "Read-only file system" in r.stdout  # the xattr probe's error
    assert r.stdout.rstrip().endswith("done")
    assert _snapshot(outside) == before


def test_metadata_changes_inside_workspace_work(rf: Runner) -> None:
    ws = rf.mkdir()
    script = """
    echo data > f
    chmod 600 f && truncate -s 2 f && touch -d 2001-01-01 f
    python3 -c "import os; os.setxattr('f', 'user.k', b'v'); print(os.getxattr('f', 'user.k'))"
    ln f hard && ln -s f soft && mkfifo p
    stat -c '%a %s %Y' f
    """
    r = rf.confined_sh(ws, script)
    assert r.returncode == 0, r.stderr
    assert "b'v'" in r.stdout
    assert "600 2 978307200" in r.stdout
    assert (ws / "hard").samefile(ws / "f")


def test_rename_and_link_across_the_boundary(rf: Runner) -> None:
    ws, outside = rf.mkdir(), rf.mkdir("outside-")
    (outside / "secret").write_text("s")
    os.chown(outside / "secret", rf.uid, rf.gid)
    before = _snapshot(outside)
    script = f"""
    echo mine > mine
    mv mine {outside}/stolen; echo "mv-out=$?"
    mv {outside}/secret here; echo "mv-in=$?"
    ln {outside}/secret hl; echo "ln-in=$?"
    ln mine {outside}/hl; echo "ln-out=$?"
    python3 -c "
import os, errno
try:
    os.rename('mine', '{outside}/x')
except OSError as e:
    print('rename-errno', errno.errorcode[e.errno])
try:
    os.link('{outside}/secret', 'hl2')
except OSError as e:
    print('link-errno', errno.errorcode[e.errno])
"
    """
    r = rf.confined_sh(ws, script)
    assert r.returncode == 0, r.stderr
    for step in ("mv-out", "mv-in", "ln-in", "ln-out"):
        assert f"{step}=0" not in r.stdout, r.stdout
    assert "rename-errno EXDEV" in r.stdout
    assert "link-errno EXDEV" in r.stdout
    assert _snapshot(outside) == before
    assert (ws / "mine").read_text() == "mine\n"
    # reading is allowed, so mv falls back to a copy; the source outside stays (checked above)
    assert not (ws / "hl").exists()


def test_read_only_mode_refuses_workspace_writes(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "cat /etc/hostname >/dev/null && echo x > f", "--mode", "read-only")
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    assert not (ws / "f").exists()


def test_extra_writable_root(rf: Runner) -> None:
    ws, extra = rf.mkdir(), rf.mkdir("extra-")
    r = rf.confined_sh(ws, f"echo y > {extra}/out", "--writable", str(extra))
    assert r.returncode == 0, r.stderr
    assert (extra / "out").read_text() == "y\n"


def test_private_tmp(rf: Runner) -> None:
    """Host /tmp shows through read-only; what the command writes there stays in its
    workspace's layer; /dev/shm is private."""
    ws = rf.mkdir(base="/tmp")
    marker = rf.mkdir("hostmarker-", base="/tmp")
    r = rf.confined_sh(
        ws,
        f"ls /tmp; test -e {marker} && echo VISIBLE; echo hi > /tmp/made-inside; "
        f"echo x > {marker}/inside && echo layer-write; "
        "echo $TMPDIR; df -P /tmp | tail -1; echo s > /dev/shm/x && cat /dev/shm/x",
    )
    assert r.returncode == 0, r.stderr
    assert "VISIBLE" in r.stdout and "layer-write" in r.stdout
    assert "/tmp\n" in r.stdout
    assert "ringfence-tmp" in r.stdout  # the overlay
    assert not Path("/tmp/made-inside").exists()
    assert not (marker / "inside").exists()
    assert not Path("/dev/shm/x").exists()
    # the workspace itself lives under /tmp on the host and is still reachable inside
    assert ws.name in r.stdout


def test_tmp_size_asks_for_a_private_tmpfs(rf: Runner) -> None:
    ws = rf.mkdir()
    marker = rf.mkdir("hostmarker-", base="/tmp")
    r = rf.confined_sh(
        ws, f"test -e {marker} && echo VISIBLE; df -P /tmp | tail -1", "--limit", "tmp-size=8m"
    )
    assert r.returncode == 0, r.stderr
    assert "VISIBLE" not in r.stdout and "tmpfs" in r.stdout


def test_minimal_dev_and_fresh_proc(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws,
        "ls /dev; echo ---; ls /proc | grep -E '^[0-9]+$' | wc -l; "
        "echo x > /dev/null && echo null-ok; head -c 4 /dev/urandom | wc -c; "
        "mknod /dev/evil c 1 3 2>&1 || true",
    )
    assert r.returncode == 0, r.stderr
    devs = r.stdout.split("---")[0].split()
    assert "null" in devs and "urandom" in devs and "pts" in devs
    assert "sda" not in devs and "vda" not in devs and "kmsg" not in devs and "mem" not in devs
    nprocs = int(r.stdout.split("---")[1].split()[0])
    assert nprocs <= 6  # only the sandbox's own processes
    assert "null-ok" in r.stdout
    assert "Read-only file system" in r.stdout or "Operation not permitted" in r.stdout


def test_no_capabilities_and_no_new_privs(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(
        ws, "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status"
    )
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(":\t") for line in r.stdout.strip().splitlines())
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"].strip() == "1"


def test_setuid_binary_gives_nothing(rf: Runner) -> None:
    ws = rf.mkdir()
    su = "/usr/bin/su" if Path("/usr/bin/su").exists() else "/bin/su"
    r = rf.confined_sh(ws, f"{su} -c id root </dev/null; id -u")
    assert r.stdout.strip().splitlines()[-1] == str(rf.uid)
    assert "uid=0(root) gid=0(root) groups=0(root)\n" not in r.stdout or rf.uid == 0


def test_file_descriptors_above_two_are_closed(rf: Runner) -> None:
    ws = rf.mkdir()
    r = rf.confined_sh(ws, "ls /proc/self/fd")
    assert r.returncode == 0, r.stderr
    # 0,1,2 and the fd ls itself opens for the directory listing
    assert sorted(int(x) for x in r.stdout.split()) == [0, 1, 2, 3]


def test_writable_dev_shm_is_the_sandboxs_own_never_the_hosts(rf: Runner) -> None:
    """``--writable /dev/shm`` works and names the private tmpfs: a nonce written there reads
    back inside, never reaches the host's /dev/shm, and a file of the host's is not seen."""
    import secrets

    ws = rf.mkdir()
    nonce = secrets.token_hex(8)
    host_file = Path(f"/dev/shm/ringfence-host-{nonce}")
    host_file.write_text("host")
    try:
        r = rf.confined_sh(
            ws,
            f"echo {nonce} > /dev/shm/rf-{nonce} && cat /dev/shm/rf-{nonce}; "
            f"test -e {host_file} && echo HOST-VISIBLE; exit 0",
            "--writable",
            "/dev/shm",
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{nonce}\n"
        assert not Path(f"/dev/shm/rf-{nonce}").exists()
    finally:
        host_file.unlink()
    explained = rf("explain", "--writable", "/dev/shm", cwd=ws)
    assert explained.returncode == 0, explained.stderr
    assert "private to this sandbox (--writable /dev/shm names it)" in explained.stdout


@pytest.mark.parametrize("flag", ["/dev/shm/sub", "/dev", "/proc", "/sys/fs"])
def test_other_system_paths_stay_refused_as_writable_roots(rf: Runner, flag: str) -> None:
    ws = rf.mkdir()
    made = None
    if flag == "/dev/shm/sub":
        made = Path(f"/dev/shm/ringfence-sub-{ws.name}")
        made.mkdir()
        flag = str(made)
    try:
        r = rf.sh(ws, "echo RAN", "--writable", flag)
    finally:
        if made is not None:
            made.rmdir()
    assert r.returncode == 2 and "RAN" not in r.stdout
    assert f"{flag} cannot be a writable root" in r.stderr
    if made is not None:
        assert "--writable /dev/shm names it" in r.stderr
