"""``ringfence doctor``: find out, by trying, which layers this kernel can enforce.

Every check runs the real operation in a throwaway forked child (unshare, fsopen, Landlock
ABI query), because configuration files and version numbers lie: containers, AppArmor and
seccomp profiles refuse calls that the kernel version says exist.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ringfence.errors import RingfenceError
from ringfence.platforms.linux import landlock, libc, namespaces
from ringfence.platforms.linux.libc import syscall
from ringfence.platforms.linux.namespaces import CLONE_FLAGS


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    needed_by_default: bool = True
    fix: str = ""


@dataclass(frozen=True)
class Report:
    kernel: str
    machine: str
    checks: tuple[Check, ...] = field(default=())

    @property
    def default_policy_ok(self) -> bool:
        return all(c.ok for c in self.checks if c.needed_by_default)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["default_policy_ok"] = self.default_policy_ok
        return d


def _in_child(fn_name: str) -> tuple[bool, str]:
    """Run probe ``fn_name`` in a forked child; (ok, detail)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            detail = _CHILD_PROBES[fn_name]()
            msg = {"ok": True, "detail": detail}
        except OSError as e:
            msg = {"ok": False, "detail": f"{e.strerror or e} (errno {e.errno})"}
        except RingfenceError as e:
            cause = e.__cause__
            detail = (
                f"{cause.strerror} (errno {cause.errno})" if isinstance(cause, OSError) else str(e)
            )
            msg = {"ok": False, "detail": detail}
        except Exception as e:  # a probe must never crash doctor
            msg = {"ok": False, "detail": repr(e)}
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    try:
        res = json.loads(data or b'{"ok": false, "detail": "probe died"}')
    except ValueError:
        return False, "probe produced no answer"
    return bool(res["ok"]), str(res["detail"])


def _probe_userns() -> str:
    namespaces.unshare(("user", "mount", "pid", "ipc", "uts", "net"), os.getuid(), os.getgid())
    return "user, mount, pid, ipc, uts and net namespaces created as this user"


def _probe_mount_api() -> str:
    from ringfence.platforms.linux import mounts

    syscall("unshare", CLONE_FLAGS["user"] | CLONE_FLAGS["mount"])
    fd = mounts.new_fs("tmpfs", [("mode", "0700")], mounts.MOUNT_ATTR_NOSUID)
    mounts.set_attr(fd, mounts.MOUNT_ATTR_RDONLY, recursive=False)
    root = libc.openat2(mounts.AT_FDCWD, "/", os.O_PATH, libc.RESOLVE_NO_SYMLINKS)
    os.close(mounts.clone_tree(root))
    return "fsopen, fsmount, mount_setattr, open_tree and openat2 work"


def _probe_proc() -> str:
    """A fresh procfs for a new pid namespace: refused where the host's /proc is partly
    covered (container runtimes mask parts of it), which the sandbox cannot work around."""
    from ringfence.platforms.linux import mounts

    namespaces.unshare(("user", "mount", "pid"), os.getuid(), os.getgid())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(mounts.new_fs("proc", [], mounts.MOUNT_ATTR_NOSUID))
            os.write(w, b"ok")
        except OSError as e:
            os.write(w, f"{e.strerror} (errno {e.errno})".encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 200).decode()
    os.waitpid(pid, 0)
    if answer != "ok":
        raise OSError(0, f"mounting a fresh /proc failed: {answer}")
    return "a fresh /proc can be mounted for the sandbox's pid namespace"


def _probe_seccomp_notify() -> str:
    from ringfence.platforms.linux.nameguard.filter import install_filter

    os.close(install_filter())
    return "filters with a user-notification listener can be installed"


def _probe_tmp_layer() -> str:
    """The overlay the sandbox's /tmp is: host /tmp below, a layer in ringfence's cache
    directory above. Made here with a scratch layer on the same file system, then removed."""
    import tempfile

    from ringfence import cleanup
    from ringfence.platforms.linux import mounts
    from ringfence.platforms.linux.mountops import overlay
    from ringfence.policy import statedirs

    home = os.environ.get("HOME")
    base = statedirs.cache_base(os.environ, home)
    if base is None:
        raise OSError(0, "neither XDG_CACHE_HOME nor HOME is set: nowhere to keep the layer")
    os.makedirs(base, mode=0o700, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="probe-", dir=base)
    try:
        for sub in ("upper", "work"):
            os.mkdir(os.path.join(scratch, sub), 0o700)
        namespaces.unshare(("user", "mount"), os.getuid(), os.getgid())
        layer = os.path.realpath(scratch)
        os.close(mounts.overlay_tree(overlay("/tmp", layer)))
    finally:
        cleanup.remove(scratch)
    return f"an overlay of /tmp with a layer in {base} can be mounted"


_CHILD_PROBES = {
    "tmp_layer": _probe_tmp_layer,
    "userns": _probe_userns,
    "mount_api": _probe_mount_api,
    "seccomp_notify": _probe_seccomp_notify,
    "proc": _probe_proc,
}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def probe() -> Report:
    checks: list[Check] = []
    ok, detail = _in_child("userns")
    fix = ""
    if not ok:
        hints = []
        if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
            hints.append("sysctl kernel.unprivileged_userns_clone=1")
        if _read("/proc/sys/user/max_user_namespaces") == "0":
            hints.append("sysctl user.max_user_namespaces=15000")
        if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
            hints.append("allow user namespaces in AppArmor (Ubuntu 24.04+)")
        hints.append("or run outside a container whose seccomp profile forbids unshare")
        fix = "; ".join(hints) if len(hints) > 1 else hints[0].removeprefix("or ")
    checks.append(Check("user namespaces", ok, detail, fix=fix))
    ok, detail = _in_child("mount_api")
    checks.append(Check("new mount API", ok, detail, fix="" if ok else "needs Linux >= 5.12"))
    ok, detail = _in_child("proc")
    masked = (
        "the host's /proc is partly masked (typical inside containers); run on the host or in "
        "a container started with an unmasked /proc"
    )
    checks.append(Check("fresh /proc", ok, detail, fix="" if ok else masked))
    abi = landlock.abi_version()
    checks.append(
        Check(
            "Landlock",
            abi >= 1,
            f"ABI {abi}" if abi else "not available",
            fix="" if abi else "needs Linux >= 5.13 with 'landlock' in the lsm= boot parameter",
        )
    )
    ok, detail = _in_child("tmp_layer")
    checks.append(
        Check(
            "/tmp layer (overlayfs)",
            ok,
            detail,
            fix=""
            if ok
            else "needs Linux >= 5.11 and a cache directory on ext4, xfs or btrfs (tmpfs from "
            "6.6): point XDG_CACHE_HOME at one, or use --limit tmp-size=SIZE (a private tmpfs)",
        )
    )
    ok, detail = _in_child("seccomp_notify")
    checks.append(
        Check(
            "seccomp user notification (name guard)",
            ok,
            detail,
            fix="" if ok else "needs Linux >= 5.9 with CONFIG_SECCOMP_FILTER",
        )
    )
    status = _read("/proc/self/status") or ""
    nnp = "NoNewPrivs:" in status
    checks.append(Check("no_new_privs", nnp, "available" if nnp else "missing"))
    return Report(
        kernel=platform.release(),
        machine=platform.machine(),
        checks=tuple(_explain_errno(c) for c in checks),
    )


_INSIDE_SANDBOX = (
    "refused here: this looks like the inside of another sandbox or a restricted container; "
    "run ringfence on the host"
)


def _explain_errno(check: Check) -> Check:
    """Replace a generic fix by what the errno says about *this* host."""
    if check.ok:
        return check
    if "(errno 13)" in check.detail or "(errno 1)" in check.detail:
        return replace(check, fix=_INSIDE_SANDBOX)
    if "(errno 16)" in check.detail:
        return replace(
            check,
            fix="a seccomp user-notification listener is already installed for this process "
            "tree (inside another ringfence sandbox?)",
        )
    if "(errno 38)" in check.detail:
        return replace(check, fix=f"{check.fix} (or a seccomp filter refuses the call)")
    return check


def render(report: Report) -> str:
    lines = [f"kernel {report.kernel} ({report.machine})", ""]
    for c in report.checks:
        mark = "ok  " if c.ok else "MISSING"
        need = "" if c.needed_by_default else " (not used yet)"
        lines.append(f"  [{mark}] {c.name}{need}: {c.detail}")
        if c.fix:
            lines.append(f"           fix: {c.fix}")
    lines.append("")
    if report.default_policy_ok:
        lines.append(
            "The default policy (workspace-write, network off) is fully enforced here: "
            "namespaces (user, mount, pid, ipc, uts, net), read-only root, a per-workspace /tmp "
            "layer, minimal /dev, fresh /proc, Landlock write rules, the seccomp filter, the name "
            "guard for protected names, no capabilities, no_new_privs."
        )
    else:
        lines.append(
            "ringfence will refuse to run sandboxed commands on this host until the missing "
            "layers above are available (it never falls back to running unconfined)."
        )
    return "\n".join(lines)
