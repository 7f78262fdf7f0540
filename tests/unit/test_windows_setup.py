"""The Windows setup state machine on a simulated machine: a crash at every step (each change
and each journal write) is finished by running setup again; uninstall restores the machine
exactly, and is itself resumable after a crash at any step. Nothing here runs on Windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from winsim import Crash, Machine

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows import install, setup
from ringfence.platforms.windows.plan import (
    WindowsFacts,
    WindowsInstall,
    WindowsPlan,
    compile_windows,
)
from ringfence.platforms.windows.setup import AddAce, AddFirewallRule, CreateUser, StoreSecret
from ringfence.policy.model import PathStyle, Policy

CAP_WRITE, CAP_READ = "S-1-15-3-1024-1", "S-1-15-3-1024-2"
ACTIONS: list[setup.Action] = [
    CreateUser("ringfence-offline"),
    StoreSecret("ringfence-offline"),
    CreateUser("ringfence-online"),
    StoreSecret("ringfence-online"),
    AddAce("C:\\work", CAP_WRITE, "modify"),
    AddAce("C:\\work\\.git\\hooks", CAP_WRITE, "write", deny=True),
    AddAce("C:\\work", CAP_READ, "read"),
    AddFirewallRule("ringfence-offline-out", "ringfence-offline", "any", "0.0.0.0-126.255.255.255"),
]


@pytest.fixture
def crashing_saves(monkeypatch: pytest.MonkeyPatch) -> dict[str, int | None]:
    """A crash can also land in a journal write, before its rename."""
    budget: dict[str, int | None] = {"n": None}
    real = setup.os.replace

    def replace(src: str, dst: str) -> None:
        if budget["n"] is not None:
            if budget["n"] == 0:
                raise Crash
            budget["n"] -= 1
        real(src, dst)

    monkeypatch.setattr(setup.os, "replace", replace)
    return budget


def _reference(tmp_path: Path) -> dict[str, Any]:
    m = Machine()
    setup.install(ACTIONS, m, str(tmp_path / "reference.json"))
    return m.state()


def test_install_changes_what_it_must_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    m = Machine()
    journal = str(tmp_path / "journal.json")
    assert setup.install(ACTIONS, m, journal) == len(ACTIONS)
    assert setup.install(ACTIONS, m, journal) == 0
    assert {"ringfence-offline", "ringfence-online"} <= m.users
    assert m.acls["C:\\work\\.git\\hooks"].endswith(f"(D;OICI;write;;;{CAP_WRITE})")
    assert m.rules["ringfence-offline-out"][1] == "0.0.0.0-126.255.255.255"


@pytest.mark.parametrize("where", ["change", "journal"])
def test_a_crash_at_every_step_is_finished_by_running_again(
    tmp_path: Path, crashing_saves: dict[str, int | None], where: str
) -> None:
    reference = _reference(tmp_path)
    for n in range(40):
        m = Machine()
        original = m.state()
        journal = str(tmp_path / f"j-{where}-{n}.json")
        if where == "change":
            m.budget = n
        else:
            crashing_saves["n"] = n
        try:
            setup.install(ACTIONS, m, journal)
            finished_first_time = True
        except Crash:
            finished_first_time = False
        m.budget = crashing_saves["n"] = None
        setup.install(ACTIONS, m, journal)
        assert m.state() == reference, n
        setup.uninstall(m, journal)
        assert m.state() == original, n
        if finished_first_time:
            break
    else:
        pytest.fail("the simulated run never finished: more steps than expected")
    # 7 changes (one user existed), 2 journal writes per action: every one was a crash point
    assert n == (7 if where == "change" else 2 * len(ACTIONS))


def test_uninstall_resumes_after_a_crash_at_every_step(
    tmp_path: Path, crashing_saves: dict[str, int | None]
) -> None:
    for n in range(40):
        m = Machine()
        original = m.state()
        journal = str(tmp_path / f"u-{n}.json")
        setup.install(ACTIONS, m, journal)
        m.budget = n
        try:
            setup.uninstall(m, journal)
            done = True
        except Crash:
            done = False
        m.budget = None
        setup.uninstall(m, journal)
        assert m.state() == original, n
        assert not Path(journal).exists()
        if done:
            break
    assert n == 7  # every undo was a crash point


def test_a_user_that_existed_before_setup_survives_uninstall(tmp_path: Path) -> None:
    m = Machine()
    journal = str(tmp_path / "j.json")
    setup.install(ACTIONS, m, journal)
    setup.uninstall(m, journal)
    assert "ringfence-online" in m.users and "ringfence-offline" not in m.users


@pytest.mark.parametrize(
    "path", ["C:\\Users\\alice", "c:\\users\\ALICE\\", "C:\\Users\\alice\\NTUSER.DAT"]
)
def test_no_ace_ever_lands_on_a_profile_root_or_a_hive_file(tmp_path: Path, path: str) -> None:
    m = Machine()
    before = m.state()
    with pytest.raises(PolicyError, match="user profile root or a registry hive file"):
        setup.install([*ACTIONS, AddAce(path, CAP_WRITE, "write")], m, str(tmp_path / "j.json"))
    assert m.state() == before and not (tmp_path / "j.json").exists()


def test_a_journal_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    from ringfence.errors import SandboxError

    bad = tmp_path / "j.json"
    bad.write_text('{"version": 7}')
    with pytest.raises(SandboxError, match="not a ringfence setup journal"):
        setup.install(ACTIONS, Machine(), str(bad))


# --- `ringfence setup`, uninstall and the per-workspace grants (install.py) -------------------


def _places(tmp_path: Path) -> install.Places:
    return install.Places(machine=str(tmp_path / "machine"), user=str(tmp_path / "user"))


def _plan(inst: WindowsInstall) -> WindowsPlan:
    policy = Policy(
        workspace="C:\\work", protected=("C:\\work\\.git\\hooks",), path_style=PathStyle.WINDOWS
    )
    facts = WindowsFacts(
        home="C:\\Users\\alice",
        temp="C:\\work-tmp",
        existing=frozenset({"C:\\work\\.git\\hooks"}),
        profile_roots=("C:\\Users\\alice",),
    )
    return compile_windows(policy, facts, inst)


def test_setup_records_the_install_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    m, places = Machine(), _places(tmp_path)
    inst, changed = install.run_setup(m, places)
    assert changed == 7  # 1 new user + 2 secrets + 3 rules; ringfence-online existed
    assert inst.offline_sid == m.user_sid("ringfence-offline")
    assert install.load_install(places) == inst
    again, changed = install.run_setup(m, places)
    assert changed == 0 and again == inst  # the capability SID is kept, not re-rolled
    with pytest.raises(SandboxError, match="uninstall"):
        install.run_setup(m, places, proxy_port=4000)


def test_grants_are_added_once_and_a_lost_deny_entry_is_put_back(tmp_path: Path) -> None:
    m, places = Machine(), _places(tmp_path)
    inst, _ = install.run_setup(m, places)
    plan = _plan(inst)
    added = install.ensure_grants(plan, m, places)
    assert added == len(plan.aces) and all(m.has_ace(a) for a in plan.aces)
    assert install.ensure_grants(plan, m, places) == 0
    # Another tool resets the ACL of the protected directory: the next command restores it.
    m.acls["C:\\work\\.git\\hooks"] = "D:(A;;FA;;;alice)"
    assert install.ensure_grants(plan, m, places) > 0
    assert all(m.has_ace(a) for a in plan.aces if a.deny)


def test_a_deny_entry_that_will_not_stick_stops_the_command(tmp_path: Path) -> None:
    m, places = Machine(), _places(tmp_path)
    inst, _ = install.run_setup(m, places)
    plan = _plan(inst)
    install.ensure_grants(plan, m, places)
    m.acls["C:\\work\\.git\\hooks"] = "D:"
    m.add_ace = lambda ace: None  # type: ignore[method-assign]  # e.g. access denied, ignored
    with pytest.raises(SandboxError, match="cannot be restored"):
        install.ensure_grants(plan, m, places)


def test_uninstall_removes_grants_and_setup_and_restores_the_machine(tmp_path: Path) -> None:
    m, places = Machine(), _places(tmp_path)
    before = m.state()
    inst, _ = install.run_setup(m, places)
    install.ensure_grants(_plan(inst), m, places)
    assert m.state() != before
    assert install.run_uninstall(m, places) > 0
    assert m.state() == before
    assert install.load_install(places) is None
    assert install.run_uninstall(m, places) == 0  # nothing left to undo
