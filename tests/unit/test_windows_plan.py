"""The Windows compiler (Policy -> WindowsPlan): golden texts, refusals, and properties over
generated policies. Pure: nothing here needs (or was run on) Windows."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ringfence.errors import PolicyError
from ringfence.platforms.windows import rights
from ringfence.platforms.windows.explain import render
from ringfence.platforms.windows.plan import (
    WindowsFacts,
    WindowsInstall,
    WindowsPlan,
    compile_windows,
    firewall_rules,
    setup_actions,
)
from ringfence.platforms.windows.setup import AddAce, AddFirewallRule, CreateUser, StoreSecret
from ringfence.policy import semantics, winpaths
from ringfence.policy.model import Mode, Network, PathStyle, Policy
from ringfence.policy.semantics import WINDOWS

GOLDEN = Path(__file__).parent / "golden"
W = PathStyle.WINDOWS
INSTALL = WindowsInstall(
    capability_sid="S-1-15-3-11-22-33-44",
    offline_sid="S-1-5-21-1-2-3-1001",
    online_sid="S-1-5-21-1-2-3-1002",
)
CAP, OFF, ON = INSTALL.capability_sid, INSTALL.offline_sid, INSTALL.online_sid
HOME = "C:\\Users\\dev"
FACTS = WindowsFacts(
    home=HOME,
    temp="C:\\Users\\dev\\AppData\\Local\\ringfence\\tmp\\1",
    profile_roots=(HOME, "C:\\Users\\other"),
    found=("C:\\Users\\dev\\repo\\.git\\hooks", "C:\\Users\\dev\\repo\\lib\\.GIT\\Hooks"),
    existing=frozenset(
        {
            "C:\\Users\\dev\\repo\\secrets",
            "C:\\Users\\dev\\.ssh",
            "C:\\Users\\dev\\.aws",
            "C:\\Users\\dev\\AppData\\Local\\Google\\Chrome\\User Data",
            "C:\\Users\\dev\\AppData\\Roaming\\Microsoft\\Protect",
            "C:\\Users\\dev\\AppData\\Roaming\\Microsoft\\Windows\\PowerShell\\PSReadLine",
            "C:\\Users\\dev\\Documents\\PowerShell",
        }
    ),
    path_dirs=("C:\\Users\\dev\\.cargo\\bin", "C:\\Windows\\System32", HOME),
)
CASES = {
    "windows_default": Policy(workspace="C:\\Users\\dev\\repo", path_style=W),
    "windows_allowlist": Policy(
        workspace="C:\\Users\\dev\\repo",
        writable_roots=("D:\\cache",),
        protected=("C:\\Users\\dev\\repo\\secrets",),
        network=Network.ALLOWLIST,
        allow_domains=("pypi.org",),
        path_style=W,
    ),
    # Documents as a root: its PowerShell\ profile directory is protected as a path, since
    # the relative name Documents/PowerShell cannot match beneath the root it starts at.
    "windows_documents_root": Policy(
        workspace="C:\\Users\\dev\\repo",
        writable_roots=("C:\\Users\\dev\\Documents",),
        path_style=W,
    ),
    "windows_read_only_online": Policy(
        workspace="C:\\Users\\dev\\repo",
        mode=Mode.READ_ONLY,
        network=Network.ON,
        default_deny_read=False,
        path_style=W,
    ),
}


def aces(plan: WindowsPlan, path: str) -> set[tuple[bool, str, bool, str]]:
    return {
        (a.deny, a.rights, a.inherit, a.sid)
        for a in plan.aces
        if winpaths.key(a.path) == winpaths.key(path)
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_plans_match_their_golden_text(name: str) -> None:
    """Review a change here by reading the diff of the golden file; regenerate with
    RINGFENCE_UPDATE_GOLDEN=1."""
    text = render(compile_windows(CASES[name], FACTS, INSTALL), INSTALL) + "\n"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("RINGFENCE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_writable_roots_are_granted_to_the_capability_and_both_users() -> None:
    plan = compile_windows(CASES["windows_allowlist"], FACTS, INSTALL)
    for root in ("C:\\Users\\dev\\repo", "D:\\cache", FACTS.temp):
        assert {(False, "modify", True, sid) for sid in (CAP, OFF, ON)} <= aces(plan, root)
    assert plan.user == "ringfence-offline" and plan.user_sid == OFF
    assert plan.restricting_sids == (CAP,)
    assert plan.proxy_port == 3128 and plan.firewall == firewall_rules(INSTALL)


def test_protected_paths_and_found_names_are_denied_with_their_directories() -> None:
    plan = compile_windows(CASES["windows_allowlist"], FACTS, INSTALL)
    deny_write = {(True, "write", True, sid) for sid in (OFF, ON)}
    assert deny_write <= aces(plan, "C:\\Users\\dev\\repo\\secrets")
    assert deny_write <= aces(plan, "C:\\Users\\dev\\repo\\.git\\hooks")
    assert deny_write <= aces(plan, "C:\\Users\\dev\\repo\\lib\\.git\\hooks")  # any case
    # .git cannot be renamed away with its hooks, nor removed from repo.
    assert (True, "delete", False, OFF) in aces(plan, "C:\\Users\\dev\\repo\\.git")
    assert (True, "delete_child", False, OFF) in aces(plan, "C:\\Users\\dev\\repo\\.git")
    assert (True, "delete_child", False, ON) in aces(plan, "C:\\Users\\dev\\repo")
    assert (True, "delete", False, OFF) in aces(plan, "C:\\Users\\dev\\repo\\lib")
    # The root itself keeps DELETE (it is not ours to pin), and allows nothing it should not.
    assert not any(d and r == "delete" for d, r, _, _ in aces(plan, "C:\\Users\\dev\\repo"))


@pytest.mark.parametrize("flag", ["protected", "deny_read"])
def test_a_path_the_command_could_create_is_refused_not_dropped(flag: str) -> None:
    """A path that does not exist cannot carry an ACE; inside a writable root the command
    could create it, so the rule would not hold: refused, naming the path."""
    missing = "C:\\Users\\dev\\repo\\missing"
    policy = Policy(workspace="C:\\Users\\dev\\repo", path_style=W, **{flag: (missing,)})
    with pytest.raises(PolicyError, match=r"repo\\missing does not exist"):
        compile_windows(policy, FACTS, INSTALL)
    # Outside every writable root it is read-only anyway: a note, not an error.
    outside = "C:\\Users\\dev\\elsewhere"
    plan = compile_windows(
        Policy(workspace="C:\\Users\\dev\\repo", path_style=W, protected=(outside,)),
        FACTS,
        INSTALL,
    )
    assert any("elsewhere does not exist" in u for u in plan.unenforced)


def test_hidden_paths_are_denied_and_path_tools_in_the_profile_are_readable() -> None:
    plan = compile_windows(CASES["windows_default"], FACTS, INSTALL)
    assert {(True, "read_write", True, sid) for sid in (OFF, ON)} <= aces(plan, HOME + "\\.ssh")
    assert not aces(plan, HOME + "\\.kube")  # not on this machine: nothing to put an ACE on
    assert plan.read_roots == ("C:\\Users\\dev\\.cargo\\bin",)  # not System32, not the profile
    assert aces(plan, HOME + "\\.cargo\\bin") == {(False, "read", True, s) for s in (OFF, ON)}


def test_read_only_grants_reads_and_the_temporary_directory_only() -> None:
    plan = compile_windows(CASES["windows_read_only_online"], FACTS, INSTALL)
    assert plan.user == "ringfence-online" and plan.firewall == () and plan.proxy_port is None
    assert plan.writable == (FACTS.temp,)
    assert aces(plan, "C:\\Users\\dev\\repo") == {(False, "read", True, s) for s in (OFF, ON)}
    assert not any(a.rights == "modify" and "repo" in a.path for a in plan.aces)


def test_full_access_has_no_boundary() -> None:
    policy = Policy(workspace="C:\\Users\\dev\\repo", mode=Mode.FULL_ACCESS, path_style=W)
    plan = compile_windows(policy, FACTS, INSTALL)
    assert not plan.sandboxed and plan.aces == ()


@pytest.mark.parametrize(
    ("policy", "facts", "message"),
    [
        (Policy(workspace="C:\\Users\\dev", path_style=W), FACTS, "user profile"),
        (Policy(workspace="C:\\Users", path_style=W), FACTS, "user profile"),
        (Policy(workspace="C:\\", path_style=W), FACTS, "drive or share root"),
        (
            Policy(workspace="C:\\w", writable_roots=("C:\\Users\\Other",), path_style=W),
            FACTS,
            "user profile",
        ),
        (Policy(workspace="C:\\w\\NTUSER.DAT", path_style=W), FACTS, "hive"),
        (
            Policy(workspace="C:\\w", protected=("C:\\w",), path_style=W),
            FACTS,
            "both granted and protected",
        ),
        (
            Policy(workspace="C:\\w", writable_roots=("C:\\w\\.git\\hooks\\x",), path_style=W),
            WindowsFacts(home=HOME, temp="C:\\t\\1", found=("C:\\w\\.git\\hooks",)),
            "inside the protected or hidden path",
        ),
        (
            Policy(workspace="C:\\w", deny_read=("C:\\w",), path_style=W),
            FACTS,
            "both granted and protected or hidden",
        ),
        (
            # A junction inside the workspace that leads into the profile root.
            Policy(workspace="C:\\w", writable_roots=("C:\\w\\link",), path_style=W),
            WindowsFacts(home=HOME, temp="C:\\t\\1", realpaths={"C:\\w\\LINK": HOME}),
            "user profile",
        ),
        (Policy(workspace="/home/dev/repo"), FACTS, "POSIX paths"),
    ],
)
def test_dangerous_or_contradictory_layouts_are_refused(
    policy: Policy, facts: WindowsFacts, message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        compile_windows(policy, facts, INSTALL)


def test_grants_follow_junctions_to_their_target() -> None:
    facts = WindowsFacts(home=HOME, temp="C:\\t\\1", realpaths={"c:\\w\\cache": "E:\\real"})
    policy = Policy(workspace="C:\\w", writable_roots=("C:\\w\\cache",), path_style=W)
    plan = compile_windows(policy, facts, INSTALL)
    assert (False, "modify", True, CAP) in aces(plan, "E:\\real")
    assert not aces(plan, "C:\\w\\cache")


def test_the_offline_firewall_leaves_only_tcp_to_the_proxy_port() -> None:
    rules = firewall_rules(WindowsInstall(CAP, OFF, ON, proxy_port=4000))
    assert all(r.user == "ringfence-offline" for r in rules)
    tcp = next(r for r in rules if r.protocol == "tcp")
    assert tcp.remote_addresses == "127.0.0.0-127.255.255.255,::1"
    assert tcp.remote_ports == "1-3999,4001-65535"
    anything = next(r for r in rules if r.protocol == "any")
    for blocked in ("0.0.0.0", "126.255.255.255", "128.0.0.0", "::", "::2"):
        assert blocked in anything.remote_addresses
    assert "127.0.0.1" not in anything.remote_addresses.replace("126.255.255.255", "")
    assert any(r.protocol == "udp" and r.remote_addresses == tcp.remote_addresses for r in rules)


def test_setup_makes_users_then_secrets_then_rules() -> None:
    actions = setup_actions()
    assert actions[:4] == [
        CreateUser("ringfence-offline"),
        StoreSecret("ringfence-offline"),
        CreateUser("ringfence-online"),
        StoreSecret("ringfence-online"),
    ]
    assert all(isinstance(a, AddFirewallRule) for a in actions[4:])


def test_install_state_round_trips_and_capability_sids_are_random() -> None:
    assert WindowsInstall.from_dict(INSTALL.to_dict()) == INSTALL
    one, two = WindowsInstall.new_capability_sid(), WindowsInstall.new_capability_sid()
    assert one != two and one.startswith("S-1-15-3-") and len(one.split("-")) == 8
    with pytest.raises(PolicyError, match="not a SID"):
        WindowsInstall("S-1-x", OFF, ON)
    with pytest.raises(PolicyError, match="unknown keys"):
        WindowsInstall.from_dict({**INSTALL.to_dict(), "extra": 1})


def test_every_ace_names_a_known_mask_and_deny_masks_cover_every_write_bit() -> None:
    plan = compile_windows(CASES["windows_allowlist"], FACTS, INSTALL)
    assert {a.rights for a in plan.aces} <= set(rights.MASKS)
    write_bits = rights.FILE_WRITE_DATA | rights.FILE_APPEND_DATA | rights.DELETE
    assert rights.MASKS["write"] & write_bits == write_bits
    assert rights.MASKS["modify"] & (rights.WRITE_DAC | rights.WRITE_OWNER) == 0


@pytest.mark.parametrize(
    ("rel", "pattern", "matches"),
    [
        ("\\.git\\hooks", ".git/hooks", True),
        ("\\a\\b\\.GIT\\HOOKS\\pre-commit", ".git/hooks", True),
        ("\\.git\\hooksx", ".git/hooks", False),
        ("\\.git\\modules\\a\\b\\hooks", ".git/modules/**/hooks", True),
        ("\\.git\\modules\\hooks", ".git/modules/**/hooks", True),
        ("\\.git\\worktrees\\wt\\config.worktree", ".git/worktrees/*/config.worktree", True),
        ("\\.git\\worktrees\\a\\b\\config.worktree", ".git/worktrees/*/config.worktree", False),
        ("\\src\\main.c", ".vscode", False),
    ],
)
def test_protected_names_match_as_the_linux_guard_reads_them(
    rel: str, pattern: str, matches: bool
) -> None:
    assert semantics.name_covers(pattern, rel, WINDOWS) is matches


# --- properties over generated policies -------------------------------------------------------

_name = st.text(alphabet="abAB.-_", min_size=1, max_size=4).filter(
    lambda s: not s.endswith(".") and s not in (".", "..")
)
_rel = st.lists(_name, min_size=1, max_size=3)


def _case_variant(path: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if flips[i % len(flips)] else c for i, c in enumerate(path))


@settings(max_examples=150, deadline=None)
@given(
    ws=_rel,
    extra=st.lists(_rel, max_size=2),
    prot=st.lists(st.tuples(st.integers(0, 2), _rel), max_size=3),
    hidden=st.lists(_rel, max_size=2),
    flips=st.lists(st.booleans(), min_size=1, max_size=5),
    dotdot=st.booleans(),
    network=st.sampled_from(list(Network)),
)
def test_no_grant_escapes_and_every_protection_holds(
    *,
    ws: list[str],
    extra: list[list[str]],
    prot: list[tuple[int, list[str]]],
    hidden: list[list[str]],
    flips: list[bool],
    dotdot: bool,
    network: Network,
) -> None:
    workspace = "C:\\p\\" + "\\".join(ws)
    roots = [workspace, *("D:\\" + "\\".join(r) for r in extra)]
    protected = []
    for i, rel in prot:
        base = roots[i % len(roots)]
        # The same path as a user might spell it: another letter case, a detour through "..".
        raw = base + ("\\zz\\.." if dotdot else "") + "\\" + "\\".join(rel)
        protected.append(winpaths.normalize("p", _case_variant(raw, flips)))
    deny = ["E:\\" + "\\".join(h) for h in hidden]
    policy = Policy(
        workspace=workspace,
        writable_roots=tuple(roots[1:]),
        protected=tuple(protected),
        deny_read=tuple(deny),
        network=network,
        path_style=W,
    )
    facts = WindowsFacts(home="C:\\Users\\u", temp="C:\\t\\1", profile_roots=("C:\\Users\\u",))
    try:
        plan = compile_windows(policy, facts, INSTALL)
    except PolicyError as e:
        # Only a root inside (or equal to) a protected path may be refused here.
        assert "protected" in str(e)
        assume(False)
        return
    granted = {winpaths.key(r) for r in (*plan.writable, *plan.read_roots)}
    # Every allow ACE sits exactly on a granted root: nothing above, beside or outside it.
    for ace in plan.aces:
        if not ace.deny:
            assert winpaths.key(ace.path) in granted
            assert ".." not in ace.path.split("\\") and "/" not in ace.path
    # Every writable root is granted to the capability and both users.
    for root in roots:
        assert {(False, "modify", True, s) for s in (CAP, OFF, ON)} <= aces(plan, root)
    # Every protected path is denied writes, in any letter case it was given.
    for p in protected:
        assert {(True, "write", True, s) for s in (OFF, ON)} <= aces(plan, p)
        root = next(r for r in roots if semantics.is_under(p, r, WINDOWS))
        cur = p
        while winpaths.key(cur) != winpaths.key(root):
            up = winpaths.parent(cur)
            assert (True, "delete_child", False, OFF) in aces(plan, up)
            if cur != p:
                assert (True, "delete", False, ON) in aces(plan, cur)
            cur = up
    for h in deny:
        assert {(True, "read_write", True, s) for s in (OFF, ON)} <= aces(plan, h)
    # The user follows the network: online only when the network is on.
    assert (plan.user == "ringfence-online") is (network is Network.ON)
    assert bool(plan.firewall) is (network is not Network.ON)
    assert all(isinstance(a, AddAce) for a in plan.aces)


# --- the command line: `explain --platform windows` and `setup`, from this (Linux) machine ------


def test_explain_windows_reads_windows_paths_from_the_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from ringfence.cli import main

    code = main(
        ["explain", "--platform", "windows", "--json", "--workspace", "c:/Users/bob/app",
         "--writable", "\\\\?\\D:\\cache", "--protect", "C:\\Users\\bob\\app\\secrets",
         "--network", "allowlist", "--allow-domain", "pypi.org"]
    )  # fmt: skip
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["writable"][:2] == ["C:\\Users\\bob\\app", "D:\\cache"]
    assert plan["user"] == "ringfence-offline" and plan["proxy_port"] == 3128
    denied = {a["path"] for a in plan["aces"] if a["deny"] and a["rights"] == "write"}
    assert denied == {"C:\\Users\\bob\\app\\secrets"}
    assert "C:\\Users\\bob\\.ssh" in plan["deny_read"]
    assert any("placeholders" in n for n in plan["notes"])

    assert main(["explain", "--platform", "windows"]) == 0
    text = capsys.readouterr().out
    assert "user:       ringfence-offline" in text and "C:\\Users\\you\\project" in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workspace", "/home/bob/app"], "relative; give an absolute path like C:"),
        (["--workspace", "C:\\Users\\bob"], "user profile"),
        (["--workspace", "C:\\w", "--protect", "C:\\w\\f:s"], "alternate data stream"),
    ],
)
def test_explain_windows_refuses_what_windows_would_misread(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ringfence.cli import main

    assert main(["explain", "--platform", "windows", *flags]) == 2
    assert message in capsys.readouterr().err


def test_setup_on_this_machine_changes_nothing_and_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from ringfence.cli import main

    assert main(["setup"]) == 2
    assert "is for Windows" in capsys.readouterr().err
    assert main(["setup", "--dry-run", "--proxy-port", "4000"]) == 0
    out = capsys.readouterr().out
    assert "create the local user ringfence-offline" in out and "ports 1-3999,4001-65535" in out
    assert main(["setup", "--dry-run", "--json"]) == 0
    kinds = [a["kind"] for a in json.loads(capsys.readouterr().out)["actions"]]
    assert kinds[:2] == ["create_user", "store_secret"] and kinds[-1] == "add_firewall_rule"


def test_what_the_windows_side_cannot_enforce_is_refused_by_its_compiler() -> None:
    """A library caller gets the refusal too: nothing is compiled with less than asked."""
    from ringfence.errors import UnenforceableError
    from ringfence.policy.model import Limits

    base = Policy(workspace="C:\\Users\\dev\\repo", path_style=W)
    for change, setting in (
        ({"expose_ports": (5432,)}, "--expose-port"),
        ({"limits": Limits(memory=1 << 30)}, "--limit memory"),
        ({"limits": Limits(processes=10)}, "--limit processes"),
        ({"limits": Limits(cpu_seconds=5)}, "--limit cpu"),
        ({"allow_sockets": ("C:\\Users\\dev\\agent.sock",)}, "--allow-socket"),
        ({"publish": (8080,)}, "--publish"),
    ):
        with pytest.raises(UnenforceableError, match="not available on Windows") as e:
            compile_windows(dataclasses.replace(base, **change), FACTS, INSTALL)
        assert e.value.setting == setting and e.value.platform == "Windows"
    assert compile_windows(base, FACTS, INSTALL).sandboxed
