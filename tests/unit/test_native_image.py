"""The native launcher's image holds the plan the compiler made, field for field.

The C side reads the image (``launcher/*.c``); here a small reader of the same layout checks
that every mount, Landlock rule, limit and variable of the golden plans is in it, in plan
order, and that :func:`native_image.missing` names each layer the launcher does not do yet.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from ringfence.platforms.linux import bpf, native_image, seccomp
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.plan_model import LinuxPlan


def _golden() -> list[str]:
    from test_linux_golden import CASES

    return sorted(CASES)


def _plan(name: str) -> LinuxPlan:
    from test_linux_golden import CASES

    policy, host = CASES[name]
    return compile_linux(policy, host, cwd=policy.workspace or "/")


def _records(data: bytes) -> list[tuple[int, bytes]]:
    assert data.startswith(native_image.MAGIC)
    pos, out = len(native_image.MAGIC), []
    while pos < len(data):
        tag, length = struct.unpack_from("<BI", data, pos)
        pos += 5
        out.append((tag, data[pos : pos + length]))
        pos += length
    assert pos == len(data)
    return out


def _strings(payload: bytes, count: int) -> list[bytes | None]:
    pos, out = 0, []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", payload, pos)
        pos += 4
        if n == native_image.ABSENT:
            out.append(None)
            continue
        out.append(payload[pos : pos + n])
        pos += n
    assert pos == len(payload)
    return out


@pytest.mark.parametrize("name", _golden())
def test_the_image_holds_every_step_of_the_plan(name: str) -> None:
    plan = _plan(name)
    if not plan.sandboxed or plan.landlock is None or plan.seccomp is None:
        with pytest.raises(ValueError, match="sandboxed"):
            native_image.encode(plan)
        return
    records = _records(native_image.encode(plan).data)
    by_tag: dict[int, list[bytes]] = {}
    for tag, payload in records:
        by_tag.setdefault(tag, []).append(payload)
    mounts = by_tag.get(native_image.TAG_MOUNT, [])
    assert len(mounts) == len(plan.mounts)
    for payload, op in zip(mounts, plan.mounts, strict=True):
        kind, bits, mode = struct.unpack_from("<BBI", payload)
        target, source, size, content, _why = _strings(payload[6:], 5)
        assert kind == native_image.MOUNT_KINDS[op.kind]
        assert mode == op.mode
        assert bool(bits & native_image.BIT_READONLY) == op.readonly
        assert bool(bits & native_image.BIT_CREATE) == op.create
        assert bool(bits & native_image.BIT_RECURSIVE) == op.recursive
        assert target == op.target.encode()
        assert source == (None if op.source is None else op.source.encode())
        assert size == (None if op.size is None else op.size.encode())
        assert content == op.content
    rules = by_tag.get(native_image.TAG_LANDLOCK_PATH, [])
    assert [(r[9:].decode(), struct.unpack_from("<Q", r)[0]) for r in rules] == [
        (r.path, r.access) for r in plan.landlock.rules
    ]
    (program,) = by_tag[native_image.TAG_SECCOMP]
    assert bpf.decode(program) == seccomp.build_program(plan.seccomp)
    env = [e.decode() for e in by_tag.get(native_image.TAG_ENV, [])]
    assert env == [f"{k}={v}" for k, v in plan.env.items()]
    assert by_tag[native_image.TAG_CWD] == [plan.cwd.encode()]


def test_missing_names_every_layer_the_launcher_does_not_do() -> None:
    plan = next(
        p for p in map(_plan, _golden()) if p.sandboxed and p.landlock and "net" in p.namespaces
    )
    bare = dataclasses.replace(
        plan,
        guard_names=(),
        guard_paths=(),
        guard_git="off",
        socket_roots=(),
        cgroup_sites=(),
        proxy_port=None,
        expose_ports=(),
        publish=(),
        namespaces=tuple(n for n in plan.namespaces if n != "net"),
    )
    assert native_image.missing(bare) == ()
    assert native_image.missing(dataclasses.replace(bare, namespaces=plan.namespaces)) == ()
    assert any("relays" in m for m in native_image.missing(dataclasses.replace(bare, proxy_port=1)))
    assert "no pid namespace" in native_image.missing(
        dataclasses.replace(bare, namespaces=("user", "mount"))
    )


@pytest.mark.parametrize("name", _golden())
def test_the_guards_rules_come_back_as_the_plan_made_them(name: str) -> None:
    from ringfence.platforms.linux import guard_exec, steps

    plan = _plan(name)
    if not plan.sandboxed or plan.landlock is None or not plan.guard_enabled:
        return
    by_tag = dict(_records(native_image.encode(plan).data))
    assert guard_exec.rules_from_json(by_tag[native_image.TAG_GUARD_RULES]) == steps.guard_rules_of(
        plan
    )
    assert by_tag[native_image.TAG_GUARD_BPF]


def test_the_guard_is_not_run_natively_from_code_the_command_can_change() -> None:
    """Review 16: the stub executes the interpreter from the sandbox's view after the command
    started; with the interpreter, the standard library or ringfence in a writable place (a
    venv in the workspace, the lasting /tmp layer) the Python runner must run the plan."""
    import os
    import sys

    from ringfence.platforms.linux import landlock

    plan = next(p for p in map(_plan, _golden()) if p.sandboxed and p.landlock and p.guard_enabled)
    plan = dataclasses.replace(plan, proxy_port=None, expose_ports=(), publish=())
    assert plan.landlock is not None
    # This interpreter may itself lie under one of the golden plan's writable places (a CI
    # clone in /tmp): the plan without those rules is the one to start from.
    code = native_image._guard_code()
    kept_rules = tuple(
        r
        for r in plan.landlock.rules
        if not any(c == r.path or c.startswith(r.path.rstrip("/") + "/") for c in code)
    )
    plan = dataclasses.replace(plan, landlock=dataclasses.replace(plan.landlock, rules=kept_rules))
    assert native_image.guard_code_changeable(plan) is None
    assert native_image.missing(plan) == ()
    write = landlock.ACCESS_FS["WRITE_FILE"] | landlock.ACCESS_FS["MAKE_REG"]
    for place in (sys.prefix, os.path.dirname(os.__file__), os.path.dirname(sys.executable)):
        assert plan.landlock is not None
        rules = (*plan.landlock.rules, landlock.PathRule(place, write))
        exposed = dataclasses.replace(
            plan, landlock=dataclasses.replace(plan.landlock, rules=rules)
        )
        code = native_image.guard_code_changeable(exposed)
        assert code is not None and (code == place or code.startswith(place + "/")), place
        assert any("name guard's code" in m for m in native_image.missing(exposed))
    # a read-only rule on the same places changes nothing
    read = landlock.READ_ACCESS
    rules = (*plan.landlock.rules, landlock.PathRule(sys.prefix, read))
    kept = dataclasses.replace(plan, landlock=dataclasses.replace(plan.landlock, rules=rules))
    assert native_image.guard_code_changeable(kept) is None


def test_the_guard_runs_the_base_interpreter_with_ringfence_after_the_stdlib() -> None:
    import os
    import sys

    plan = next(p for p in map(_plan, _golden()) if p.sandboxed and p.landlock and p.guard_enabled)
    by_tag = dict(_records(native_image.encode(plan).data))
    python = by_tag[native_image.TAG_GUARD_PYTHON].decode()
    assert python == os.path.realpath(python)  # no virtualenv link: no pyvenv.cfg is read
    assert os.path.realpath(getattr(sys, "_base_executable", sys.executable)) == python
    boot = by_tag[native_image.TAG_GUARD_BOOT].decode()
    assert "sys.path.append(" in boot and "insert" not in boot


def test_a_cgroup_name_with_an_impossible_pid_does_not_stop_the_prune(tmp_path: Path) -> None:
    """Review 16 (cgroups.py): os.kill of a pid too large for pid_t raised OverflowError,
    which anyone able to make such a directory in the parent could use to fail every run."""
    from ringfence.platforms.linux import cgroups

    (tmp_path / "ringfence-99999999999999999999-deadbeef").mkdir()
    (tmp_path / "ringfence-999999999-deadbeef").mkdir()  # no such process: pruned
    cgroups.prune_stale(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["ringfence-99999999999999999999-deadbeef"]


def test_an_image_with_something_missing_is_never_launched() -> None:
    from ringfence.errors import UnsupportedError
    from ringfence.platforms.linux import native

    if not native.available():
        pytest.skip("the native launcher was not built here")
    gap = "the name guard's code can be changed inside the sandbox: /x"
    with pytest.raises(UnsupportedError, match="cannot run this plan: the name guard's code"):
        native.launch(native_image.Image(native_image.MAGIC, (gap,)), ["true"])
