"""A large policy compiles to the plan the simple loops would give.

The compiler answers "which root holds this path" with ``RootIndex`` and the mount list "is
this inside a fresh mount" with ``PrefixSet`` (policy/semantics.py). Here the same large
policy (a hundred writable roots, a thousand protected paths: nested, behind symlinks, in
linked parents, outside every root, many deny-read masks) is compiled twice, once with
stand-ins that loop over the roots as the compiler did before; the plans must be equal.
``LinuxPlan.to_dict`` is checked against ``dataclasses.asdict``, which it replaces.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

import pytest

from ringfence.platforms.linux import mountops, plan, plan_model
from ringfence.platforms.linux.hostfacts import HostFacts, PathInfo, ScrubFile
from ringfence.platforms.linux.plan import compile_linux
from ringfence.policy.model import Network, Policy
from ringfence.policy.semantics import first_under, is_strictly_under, is_under

HOME = "/home/dev"
WS = "/home/dev/repo"


class LoopIndex:
    """The reference: what ``RootIndex`` replaced, a loop over the roots."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = tuple(roots)

    def first_under(self, path: str) -> str | None:
        return first_under(path, self.roots)


class LoopSet:
    """The reference for ``PrefixSet``: ``any(is_strictly_under(...))`` over a list."""

    def __init__(self) -> None:
        self.roots: list[str] = []

    def add(self, root: str) -> None:
        self.roots.append(root)

    def strictly_holds(self, path: str) -> bool:
        return any(is_strictly_under(path, r) for r in self.roots)


def _large() -> tuple[Policy, HostFacts]:
    paths: dict[str, PathInfo] = {WS: PathInfo("dir", WS)}
    roots = [f"/srv/w{i:03d}" for i in range(100)]
    for r in roots:
        paths[r] = PathInfo("dir", r)
    for i in range(0, 100, 4):  # protected names in some roots, a git directory in others
        paths[f"{roots[i]}/.envrc"] = PathInfo("file", f"{roots[i]}/.envrc")
        paths[f"{roots[i + 1]}/.git"] = PathInfo("dir", f"{roots[i + 1]}/.git")
        paths[f"{roots[i + 1]}/.git/hooks"] = PathInfo("dir", f"{roots[i + 1]}/.git/hooks")
        paths[f"{roots[i + 2]}/.vscode"] = PathInfo("dir", f"{roots[i + 2]}/.vscode")
    protected: list[str] = []
    resolved: dict[str, str] = {}
    for i in range(1000):
        root = WS if i % 3 == 0 else roots[i % 100]
        p = f"{root}/d{i % 7}/p{i:04d}"
        protected.append(p)
        if i % 11 == 0:  # a symlink into another root: its target is protected
            target = f"{roots[(i + 1) % 100]}/t{i:04d}"
            paths[p] = PathInfo("symlink", target)
            paths[target] = PathInfo("file", target)
        elif i % 13 == 0:  # does not exist (yet): the guard keeps it
            pass
        elif i % 17 == 0:  # behind a linked parent
            real = f"{roots[(i + 5) % 100]}/real{i:04d}"
            paths[p] = PathInfo("file", real)
            paths[real] = PathInfo("file", real)
            resolved[p] = real
        elif i % 19 == 0:  # outside every writable root
            p = f"/opt/elsewhere/p{i:04d}"
            protected[-1] = p
            paths[p] = PathInfo("file", p)
        else:
            paths[p] = PathInfo("dir" if i % 2 else "file", p)
    protected += [f"{WS}/d1", f"{WS}/d1/p0001/deeper"]  # an enclosing protected path wins
    paths[f"{WS}/d1"] = PathInfo("dir", f"{WS}/d1")
    deny = tuple(f"/srv/w{i:03d}/secret{i}" for i in range(0, 100, 2))
    for d in deny:
        paths[d] = PathInfo("dir", d)
    facts = HostFacts(
        uid=1000,
        gid=1000,
        home=HOME,
        landlock_abi=7,
        env={"HOME": HOME, "PATH": f"/usr/bin:/bin:{HOME}/bin"},
        paths=paths,
        resolved=resolved,
        cache_root=f"{HOME}/.cache/ringfence/workspaces/repo/cache",
        tmp_layer=f"{HOME}/.cache/ringfence/workspaces/repo/tmp",
        own_state=(f"{HOME}/.cache/ringfence",),
        xdg_dirs={"config": f"{HOME}/.config", "data": f"{HOME}/.local/share"},
        scrub_files={
            f"{HOME}/.npmrc": ScrubFile("npmrc", f"{HOME}/.npmrc", content=b"a=b\n"),
        },
        home_dot_entries=(f"{HOME}/.bashrc", f"{HOME}/.profile"),
    )
    policy = Policy(
        workspace=WS,
        writable_roots=(*roots, HOME + "/bin"),
        protected=tuple(protected),
        deny_read=deny,
        network=Network.ALLOWLIST,
        allow_domains=("example.org",),
    )
    paths[HOME + "/bin"] = PathInfo("dir", HOME + "/bin")
    return policy, facts


@pytest.fixture(scope="module")
def large() -> tuple[Policy, HostFacts]:
    return _large()


def test_large_policy_plan_equals_the_loops(
    large: tuple[Policy, HostFacts], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy, facts = large
    fast = compile_linux(policy, facts, cwd=WS)
    monkeypatch.setattr(plan, "RootIndex", LoopIndex)
    monkeypatch.setattr(mountops, "PrefixSet", LoopSet)
    slow = compile_linux(policy, facts, cwd=WS)
    assert fast == slow
    assert fast.to_dict() == slow.to_dict()
    # it is a large plan, with every kind of entry in it
    binds = [m for m in fast.mounts if m.kind == "bind" and m.readonly]
    assert len(binds) > 900
    assert len(fast.guard_paths) > 1000
    assert sum(1 for m in fast.mounts if m.kind == "mask") >= 50


def test_large_policy_protects_what_the_loops_say(large: tuple[Policy, HostFacts]) -> None:
    """Decisions, not only equality: every existing protected path in a root is bound
    read-only (or lies beneath one that is), one outside the roots is left to the read-only
    host root, and one that does not exist yet is the guard's."""
    policy, facts = large
    p = compile_linux(policy, facts, cwd=WS)
    ro = {m.target for m in p.mounts if m.kind == "bind" and m.readonly}
    roots = p.guard_roots
    for path in policy.protected:
        info = facts.info(path)
        if info is None:
            assert path in p.guard_paths
            continue
        target = info.real
        if first_under(target, roots) is None:
            assert target not in ro  # the read-only host root shows it as it is
            continue
        assert any(is_under(target, t) for t in ro), path


def test_to_dict_is_asdict(large: tuple[Policy, HostFacts]) -> None:
    policy, facts = large
    p = compile_linux(policy, facts, cwd=WS)
    want = dataclasses.asdict(p)
    got = plan_model._as_plain(p)
    assert got == want
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    assert type(got["mounts"][0]) is dict and type(got["mounts"]) is tuple
    # the same JSON-able digest input as before (content summarised, landlock by name)
    d = p.to_dict()
    for m in d["mounts"]:
        if m["content"] is not None:
            assert m["content"].startswith(f"{len(b'a=b' + bytes([10]))} bytes, sha256 ")
            assert m["content"].endswith(hashlib.sha256(b"a=b\n").hexdigest())
