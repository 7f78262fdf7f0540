"""doctor's layer table: pure, from a probe report and a compiled plan."""

from __future__ import annotations

from ringfence.platforms.linux.hostfacts import HostFacts, PathInfo
from ringfence.platforms.linux.layers import layers
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.probe import Check, Report
from ringfence.policy.model import Mode, Policy


def _report(ok: bool = True) -> Report:
    names = (
        "user namespaces",
        "new mount API",
        "fresh /proc",
        "Landlock",
        "seccomp user notification (name guard)",
        "no_new_privs",
    )
    return Report("6.18", "x86_64", tuple(Check(n, ok, "") for n in names))


def _facts(abi: int = 6) -> HostFacts:
    return HostFacts(1000, 1000, "/home/u", abi, {"HOME": "/home/u"}, {"/w": PathInfo("dir", "/w")})


def test_default_policy_uses_every_layer() -> None:
    plan = compile_linux(Policy(workspace="/w"), _facts(), cwd="/w")
    rows = {r.name: r for r in layers(_report(), plan, None, uid=1000)}
    for name in (
        "namespaces",
        "read-only view",
        "Landlock filesystem",
        "Landlock scopes",
        "seccomp hardening",
        "name guard",
        "process limit",
    ):
        assert rows[name].available and rows[name].used, name
    assert not rows["memory limit"].used


def test_scopes_need_abi_6_and_root_is_not_bound_by_nproc() -> None:
    plan = compile_linux(Policy(workspace="/w"), _facts(abi=5), cwd="/w")
    rows = {r.name: r for r in layers(_report(), plan, None, uid=0)}
    assert not rows["Landlock scopes"].used and "ABI 6" in rows["Landlock scopes"].note
    assert not rows["process limit"].used and "root" in rows["process limit"].note


def test_refusal_and_full_access() -> None:
    rows = layers(_report(False), None, "Landlock is not available", uid=1000)
    assert rows[0].note.startswith("refused: Landlock")
    plan = compile_linux(Policy(workspace="/w", mode=Mode.FULL_ACCESS), _facts(), cwd="/w")
    assert "no layer" in layers(_report(), plan, None, uid=1000)[0].note
