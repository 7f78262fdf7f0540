"""Each platform's own default lists (``policy/defaults_macos.py``, ``defaults_windows.py``):
well-formed, free of Linux-only places, wired into the macOS and Windows compilers, and the
Linux lists unchanged. Pure: nothing here ran on a Mac or on Windows."""

from __future__ import annotations

import os
import posixpath
import re

import pytest
from winsim import Tree

from ringfence.errors import PolicyError
from ringfence.platforms.macos import sbpl
from ringfence.platforms.macos.plan import MacFacts, compile_macos, path_regex
from ringfence.platforms.windows.facts import gather
from ringfence.platforms.windows.plan import WindowsFacts, WindowsInstall, compile_windows
from ringfence.policy import defaults, defaults_macos, defaults_windows, winpaths
from ringfence.policy.model import PathStyle, Policy

W = PathStyle.WINDOWS
MAC_HOME = "/Users/dev"
WIN_HOME = "C:\\Users\\dev"

# Places only Linux (or a freedesktop session) keeps: none belongs on a Mac or on Windows.
LINUX_ONLY = (
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    ".local/share/keyrings",
    ".local/share/kwalletd",
    ".mozilla",
)


def _components_ok(rel: str) -> bool:
    parts = rel.split("/")
    return all(p and p not in (".", "..") for p in parts) and "\\" not in rel


@pytest.mark.parametrize(
    "entries",
    [
        defaults_macos.HOME_DENY_READ,
        defaults_macos.SHELL_PROTECTED,
        defaults_macos.PERSISTENCE_PROTECTED,
        defaults_macos.HOME_PERSISTENCE,
    ],
)
def test_macos_entries_are_relative_normalised_and_unique(entries: tuple[str, ...]) -> None:
    for rel in entries:
        assert not rel.startswith("/") and _components_ok(rel), rel
        assert posixpath.normpath(rel) == rel, rel
    folded = [e.casefold() for e in entries]  # APFS compares names case-insensitively
    assert len(set(folded)) == len(folded)


@pytest.mark.parametrize(
    "entries",
    [
        defaults_windows.DENY_READ,
        defaults_windows.PERSISTENCE_PATHS,
    ],
)
def test_windows_entries_start_at_a_known_folder_and_join_canonically(
    entries: tuple[str, ...],
) -> None:
    for entry in entries:
        base, rel = defaults_windows.split(entry)
        assert base in defaults_windows.BASES and _components_ok(rel), entry
        joined = winpaths.join(WIN_HOME, rel)  # refuses trailing dots, streams, device names
        assert joined == WIN_HOME + "\\" + rel.replace("/", "\\")
    folded = [e.casefold() for e in entries]
    assert len(set(folded)) == len(folded)
    for pattern in (*defaults_windows.SHELL_PROTECTED, *defaults_windows.PERSISTENCE_PROTECTED):
        assert not pattern.startswith(("/", "%")) and _components_ok(pattern), pattern


def test_windows_entries_use_the_folder_their_program_keeps_them_in() -> None:
    base = dict(defaults_windows.split(e)[::-1] for e in defaults_windows.DENY_READ)
    for rel, want in base.items():
        if rel.startswith("."):
            assert want == "USERPROFILE", rel  # dotfiles live in the home directory
        if rel.endswith("/User Data"):
            assert want == "LOCALAPPDATA", rel  # Chromium-family profiles are local, not roaming
    expected = {
        "Google/Chrome/User Data": "LOCALAPPDATA",
        "Microsoft/Edge/User Data": "LOCALAPPDATA",
        "BraveSoftware/Brave-Browser/User Data": "LOCALAPPDATA",
        "Mozilla/Firefox": "APPDATA",
        "Microsoft/Protect": "APPDATA",
        "Microsoft/Credentials": "LOCALAPPDATA",  # and APPDATA: both are listed
        "Microsoft/Windows/PowerShell/PSReadLine": "APPDATA",
        "GitHub CLI": "APPDATA",
        "1Password": "APPDATA",
        "Bitwarden": "APPDATA",
        ".ssh": "USERPROFILE",
        ".aws": "USERPROFILE",
        ".azure": "USERPROFILE",
        ".git-credentials": "USERPROFILE",
        ".npmrc": "USERPROFILE",
    }
    for rel, want in expected.items():
        assert f"%{want}%/{rel}" in defaults_windows.DENY_READ, rel
    assert "%APPDATA%/Microsoft/Credentials" in defaults_windows.DENY_READ
    assert "%LOCALAPPDATA%/1Password" in defaults_windows.DENY_READ
    startup = "%APPDATA%/Microsoft/Windows/Start Menu/Programs/Startup"
    assert startup in defaults_windows.PERSISTENCE_PATHS


def test_no_macos_or_windows_default_names_a_linux_only_place() -> None:
    mac = Policy(workspace=MAC_HOME + "/repo").deny_read_paths(MAC_HOME, "macos")
    win = Policy(workspace=WIN_HOME + "\\repo", path_style=W).deny_read_paths(WIN_HOME)
    for linux in LINUX_ONLY:
        assert linux not in defaults_macos.HOME_DENY_READ
        assert not any(e.endswith("/" + linux) for e in defaults_windows.DENY_READ)
        assert posixpath.join(MAC_HOME, linux) not in mac
        assert winpaths.key(winpaths.join(WIN_HOME, linux)) not in {winpaths.key(p) for p in win}


def test_each_platform_hides_its_own_secret_stores() -> None:
    mac = Policy(workspace=MAC_HOME + "/repo").deny_read_paths(MAC_HOME, "macos")
    for rel in (
        "Library/Keychains",
        "Library/Cookies",
        "Library/Safari",
        "Library/Application Support/Google/Chrome",
        "Library/Application Support/Firefox",
        "Library/Application Support/BraveSoftware",
        "Library/Application Support/Microsoft Edge",
        "Library/Application Support/Arc",
        "Library/Messages",
        "Library/Group Containers/2BUA8C4S2C.com.1password",
        ".ssh",
        ".aws",
    ):
        assert posixpath.join(MAC_HOME, rel) in mac, rel
    win = Policy(workspace=WIN_HOME + "\\repo", path_style=W).deny_read_paths(WIN_HOME)
    for path in (
        "AppData\\Local\\Google\\Chrome\\User Data",
        "AppData\\Local\\Microsoft\\Edge\\User Data",
        "AppData\\Roaming\\Mozilla\\Firefox",
        "AppData\\Roaming\\Microsoft\\Protect",
        "AppData\\Roaming\\Microsoft\\Credentials",
        "AppData\\Local\\Microsoft\\Vault",
        "AppData\\Roaming\\Microsoft\\Windows\\PowerShell\\PSReadLine",
        "AppData\\Roaming\\GitHub CLI",
        ".ssh",
        ".git-credentials",
    ):
        assert f"{WIN_HOME}\\{path}" in win, path


def test_linux_keeps_its_lists_exactly() -> None:
    policy = Policy(workspace="/w")
    want = tuple(os.path.join("/home/u", rel) for rel in defaults.HOME_DENY_READ)
    assert policy.deny_read_paths("/home/u") == want
    assert policy.deny_read_paths("/home/u", "linux") == want
    names = (*defaults.GIT_PROTECTED, *defaults.TOOL_PROTECTED, *defaults.SHELL_PROTECTED)
    assert policy.protected_names() == names == policy.protected_names("linux")
    assert not set(defaults_macos.PERSISTENCE_PROTECTED) & set(policy.protected_names())


def test_the_platform_must_fit_the_policys_paths() -> None:
    posix = Policy(workspace="/w")
    windows = Policy(workspace="C:\\w", path_style=W)
    with pytest.raises(PolicyError, match="cannot take windows"):
        posix.deny_read_paths("/home/u", "windows")
    with pytest.raises(PolicyError, match="cannot take macos"):
        windows.protected_names("macos")
    with pytest.raises(PolicyError, match="not one of"):
        posix.protected_names("plan9")  # type: ignore[arg-type]
    assert windows.protected_names() == windows.protected_names("windows")
    assert posix.protected_names("macos")[-len(defaults_macos.PERSISTENCE_PROTECTED) :] == (
        defaults_macos.PERSISTENCE_PROTECTED
    )
    off = Policy(workspace="/w", default_deny_read=False, deny_read=("/x",))
    assert off.deny_read_paths("/home/u", "macos") == ("/x",)


def test_redirected_app_data_is_hidden_in_both_places() -> None:
    folders = defaults_windows.folders_from_env(
        {"appdata": "d:/Redirected/Roaming", "LOCALAPPDATA": "relative\\bad", "PATH": ""}
    )
    assert folders == {"APPDATA": "D:\\Redirected\\Roaming"}  # names ignore case; bad is dropped
    share = {"APPDATA": "\\\\srv\\home\\dev\\Roaming"}
    assert defaults_windows.folders_from_env(share) == {}  # a share gets no ACE of ours
    hidden = Policy(workspace="C:\\w", path_style=W).deny_read_paths(WIN_HOME, folders=folders)
    assert "D:\\Redirected\\Roaming\\Mozilla\\Firefox" in hidden
    assert WIN_HOME + "\\AppData\\Roaming\\Mozilla\\Firefox" in hidden
    assert WIN_HOME + "\\AppData\\Local\\Google\\Chrome\\User Data" in hidden
    same = defaults_windows.folders_from_env({"APPDATA": WIN_HOME + "\\appdata\\roaming"})
    assert len(defaults_windows.deny_read_paths(WIN_HOME, same)) == len(
        defaults_windows.DENY_READ
    )  # the default place in another letter case is not listed twice
    with pytest.raises(PolicyError, match="known folder"):
        defaults_windows.split("%PROGRAMDATA%/x")
    with pytest.raises(PolicyError, match="known folder"):
        defaults_windows.split(".ssh")


def test_the_facts_gatherer_reads_the_folders_from_the_environment() -> None:
    roaming = "D:\\Roam"
    fs = Tree(
        dirs=["C:\\w", WIN_HOME, roaming, roaming + "\\Mozilla", roaming + "\\Mozilla\\Firefox"],
        files=[],
        links={},
    )
    policy = Policy(workspace="C:\\w", path_style=W)
    got = gather(policy, home=WIN_HOME, temp="C:\\t\\1", fs=fs, environ={"APPDATA": roaming})
    assert got.facts.folders == {"APPDATA": roaming}
    assert got.facts.existing == {roaming + "\\Mozilla\\Firefox"}
    plan = compile_windows(policy, got.facts, WindowsInstall.placeholder())
    assert roaming + "\\Mozilla\\Firefox" in plan.deny_read
    hidden = [a for a in plan.aces if a.deny and a.rights == "read_write"]
    assert {a.path for a in hidden} == {roaming + "\\Mozilla\\Firefox"}


def test_tools_on_path_in_the_profile_stay_runnable() -> None:
    """A default hidden path holding or lying under a PATH directory would cost that
    directory its read grant: the usual per-user tool directories must not collide."""
    tools = (
        WIN_HOME + "\\AppData\\Roaming\\npm",
        WIN_HOME + "\\AppData\\Local\\Programs\\Python\\Python312\\Scripts",
        WIN_HOME + "\\AppData\\Local\\Microsoft\\WindowsApps",
        WIN_HOME + "\\AppData\\Local\\Google\\Chrome\\Application",
        WIN_HOME + "\\.cargo\\bin",
        WIN_HOME + "\\scoop\\shims",
    )
    facts = WindowsFacts(home=WIN_HOME, temp="C:\\t\\1", path_dirs=tools)
    policy = Policy(workspace="C:\\w", path_style=W)
    plan = compile_windows(policy, facts, WindowsInstall.placeholder())
    assert plan.read_roots == tools


def test_the_mac_profile_hides_the_keychain_and_pins_launch_agents() -> None:
    policy = Policy(workspace=MAC_HOME)  # the whole home writable: the worst case
    plan = compile_macos(policy, MacFacts(home=MAC_HOME, tmpdir="/tmp/rf"))
    sbpl.check(plan.profile)
    hide = next(x for x in plan.profile.splitlines() if x.startswith("(deny file-read* "))
    assert sbpl.regex_literal(path_regex(MAC_HOME + "/Library/Keychains")) in hide
    assert not any(p.endswith(".config/google-chrome") for p in plan.deny_read)
    carve = next(x for x in plan.profile.splitlines() if x.startswith("(deny file-write* "))
    patterns = [
        re.compile(m.replace('\\"', '"'))
        for m in re.findall(r'\(regex #"((?:[^"\\]|\\.)*)"\)', carve)
    ]
    for probe in (
        MAC_HOME + "/Library/LaunchAgents/evil.plist",
        MAC_HOME + "/library/launchagents/Evil.plist",
        MAC_HOME + "/.zprofile",
    ):
        assert any(rx.match(probe) for rx in patterns), probe
    assert any("launchctl" in n for n in plan.notes)
    assert any("LaunchAgents" in n for n in plan.notes)


def test_a_root_that_is_the_start_up_folders_parent_still_protects_them() -> None:
    """A relative name like Library/LaunchAgents cannot match beneath a root of ~/Library;
    the compilers add the places as paths for that case."""
    mac = compile_macos(
        Policy(workspace=MAC_HOME + "/Library"), MacFacts(home=MAC_HOME, tmpdir="/tmp/rf")
    )
    assert MAC_HOME + "/Library/LaunchAgents" in mac.protected
    assert "/Library/LaunchDaemons" not in mac.protected  # not under a writable root
    docs = WIN_HOME + "\\Documents"
    facts = WindowsFacts(
        home=WIN_HOME,
        temp="C:\\t\\1",
        existing=frozenset({docs + "\\WindowsPowerShell"}),
    )
    plan = compile_windows(
        Policy(workspace=docs, path_style=W), facts, WindowsInstall.placeholder()
    )
    assert docs + "\\WindowsPowerShell" in plan.protected
    assert docs + "\\PowerShell" not in plan.protected  # does not exist: no ACE to place
    assert any("Startup folder" in n for n in plan.notes)
    assert any("Task Scheduler" in n for n in plan.notes)
