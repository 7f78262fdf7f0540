"""Config layers: user file and profiles, flags, the untrusted project file (tighten only), and
the managed ceiling (nothing exceeds it); errors give file, line and key."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from ringfence import Mode, Network, Policy
from ringfence.cli.flags import gate_of, resolve_flags
from ringfence.cli.parser import build_parser
from ringfence.policy import config
from ringfence.policy.config import Ceiling, ConfigError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a Session makes caches
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # and an audit log
    monkeypatch.setattr(config, "MANAGED_PATH", str(tmp_path / "managed.toml"))
    monkeypatch.setattr(config.load_ceiling, "__defaults__", (str(tmp_path / "managed.toml"),))
    (tmp_path / "xdg" / "ringfence").mkdir(parents=True)
    (tmp_path / "ws").mkdir()
    return tmp_path


def _user(home: Path, text: str) -> Path:
    path = home / "xdg" / "ringfence" / "config.toml"
    path.write_text(text)
    return path


def _ns(home: Path, *flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--workspace", str(home / "ws"), *flags, "--", "x"])


def layered_policy(ns: argparse.Namespace) -> tuple[Policy, str, config.Settings]:
    r = resolve_flags(ns)
    return r.policy, r.cwd, r.settings


def test_user_config_profile_then_flags(home: Path) -> None:
    _user(
        home,
        'mode = "read-only"\nnetwork = "allowlist"\nallow_domains = ["pypi.org"]\n'
        "strict_git = true\n"
        '[limits]\nprocesses = 100\n[profiles.web]\nallow_domains = ["*.npmjs.org"]\n',
    )
    policy, _, settings = layered_policy(_ns(home, "--profile", "web", "--allow-domain", "x.org"))
    assert policy.network is Network.ALLOWLIST and policy.strict_git
    assert policy.allow_domains == ("*.npmjs.org", "x.org")  # the profile replaces, flags add
    assert policy.limits.processes == 100
    assert settings.sources["allow_domains"].startswith("profile web in")
    assert settings.sources["allow_domains"].endswith("+ flag")
    assert policy.mode is Mode.READ_ONLY
    policy, _, _ = layered_policy(_ns(home, "--mode", "workspace-write"))
    assert policy.mode is Mode.WORKSPACE_WRITE  # a flag beats the file
    with pytest.raises(ConfigError, match=r"--profile nope: no \[profiles.nope\]"):
        layered_policy(_ns(home, "--profile", "nope"))


def test_malformed_toml_and_wrong_types_name_file_line_and_key(home: Path) -> None:
    path = _user(home, 'mode = "workspace-write"\nnetwork = \n')
    with pytest.raises(ConfigError, match=rf"{path}: not valid TOML: .*line 2"):
        layered_policy(_ns(home))
    _user(home, '# a comment\nstrict_git = "yes"\n')
    with pytest.raises(ConfigError, match=rf"{path}:2: strict_git: must be true or false"):
        layered_policy(_ns(home))
    _user(home, "\n\nprotected = [1]\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: protected: must be a list of strs"):
        layered_policy(_ns(home))
    _user(home, 'netwrok = "on"\n')
    with pytest.raises(ConfigError, match=rf"{path}:1: netwrok: unknown key"):
        layered_policy(_ns(home))
    _user(home, '[limits]\nmemmory = "1g"\n')
    with pytest.raises(ConfigError, match=r"limits\.memmory: unknown limit"):
        layered_policy(_ns(home))


def test_the_project_file_tightens(home: Path) -> None:
    _user(home, 'network = "on"\n')
    (home / "ws" / ".ringfence.toml").write_text(
        'protected = ["/etc/x"]\ndeny_read = ["/srv/secret"]\nnetwork = "allowlist"\n'
        'allow_domains = ["pypi.org"]\nstrict_git = true\n[limits]\nprocesses = 50\n'
    )
    policy, _, settings = layered_policy(_ns(home, "--protect", "/etc/y"))
    assert policy.protected == ("/etc/y", "/etc/x")
    assert policy.deny_read == ("/srv/secret",)
    assert policy.network is Network.ALLOWLIST and policy.allow_domains == ("pypi.org",)
    assert policy.strict_git and policy.limits.processes == 50
    assert settings.sources["network"].startswith("project ")
    policy, _, _ = layered_policy(_ns(home, "--ignore-project-config"))
    assert policy.network is Network.ON and not policy.strict_git


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('mode = "full-access"', "mode"),
        ('writable_roots = ["/var/tmp"]', "writable_roots"),
        ('network = "on"', "network"),
        ('allow_domains = ["evil.example"]', "allow_domains"),
        ("allow_local_targets = true", "allow_local_targets"),
        ("expose_ports = [5432]", "expose_ports"),
        ('publish = ["8080"]', "publish"),
        ('allow_sockets = ["/run/docker.sock"]', "allow_sockets"),
        ("default_protected = false", "default_protected"),
        ("default_deny_read = false", "default_deny_read"),
        ("tool_caches = true", "tool_caches"),
        ("[limits]\nprocesses = 100000", "limits"),
        ('[env]\nkeep = ["AWS_SECRET_ACCESS_KEY"]', "env"),
        ('isolation = "reduced"', "isolation"),
        ("landlock_min_abi = 0", "landlock_min_abi"),
    ],
)
def test_the_project_file_may_not_loosen_anything(home: Path, line: str, key: str) -> None:
    project = home / "ws" / ".ringfence.toml"
    project.write_text("# from the repository\n" + line + "\n")
    with pytest.raises(ConfigError) as e:
        layered_policy(_ns(home))
    msg = str(e.value)
    assert msg.startswith(f"{project}:") and f": {key}" in msg
    assert "may only tighten" in msg or "must be" in msg


def test_a_symlinked_project_file_is_refused(home: Path) -> None:
    (home / "elsewhere.toml").write_text("strict_git = true\n")
    (home / "ws" / ".ringfence.toml").symlink_to(home / "elsewhere.toml")
    with pytest.raises(ConfigError, match="may not be a symlink"):
        layered_policy(_ns(home))


def test_the_managed_ceiling_binds_flags_and_adds_its_paths(home: Path) -> None:
    (home / "managed.toml").write_text(
        'forbid_modes = ["full-access"]\nmax_network = "allowlist"\n'
        'allowed_domains = ["pypi.org", "*.pythonhosted.org"]\nprotected = ["/etc/managed"]\n'
        f'writable_within = ["{home}"]\nrequire_audit = true\n'
    )
    policy, _, _ = layered_policy(
        _ns(home, "--network", "allowlist", "--allow-domain", "files.pythonhosted.org")
    )
    assert "/etc/managed" in policy.protected
    for flags, why in (
        (("--mode", "full-access"), "forbid_modes forbids mode full-access"),
        (("--network", "on"), "max_network is allowlist"),
        (("--network", "allowlist", "--allow-domain", "evil.example"), "does not cover"),
        (("--network", "allowlist", "--allow-domain", "*.example.org"), "does not cover"),
        (("--writable", "/var/tmp"), "writable_within does not include /var/tmp"),
        (("--no-audit",), "require_audit"),
    ):
        with pytest.raises(ConfigError, match=why):
            layered_policy(_ns(home, *flags))


def test_the_managed_ceiling_binds_the_api(home: Path) -> None:
    (home / "managed.toml").write_text('forbid_modes = ["full-access"]\n')
    from ringfence.session import Session

    with pytest.raises(ConfigError, match="forbids mode full-access"):
        Session(Policy(mode=Mode.FULL_ACCESS, workspace=str(home / "ws")))


def test_a_malformed_managed_file_is_an_error_not_a_missing_ceiling(home: Path) -> None:
    (home / "managed.toml").write_text("max_network = 3\n")
    with pytest.raises(ConfigError, match=r"managed.toml:1: max_network: must be a str"):
        layered_policy(_ns(home))
    assert isinstance(config.load_ceiling(str(home / "nothing.toml")), type(None))
    assert Ceiling(path="x").check(Policy(workspace=os.getcwd())).workspace == os.getcwd()


def _approval(home: Path, *flags: str) -> tuple[str | None, object]:
    gate = gate_of(resolve_flags(_ns(home, *flags)))
    return (gate.policy, gate.rules) if gate is not None else (None, None)


def test_approval_comes_from_flags_then_user_config_and_the_project_may_only_raise_it(
    home: Path,
) -> None:
    rules = home / "rules.toml"
    rules.write_text('[[rule]]\nprefix = ["git", "push"]\ndecision = "prompt"\n')
    _user(
        home,
        f'approval = "on-request"\nrules = "{rules}"\n[profiles.strict]\napproval = "untrusted"\n',
    )
    policy_name, ruleset = _approval(home)
    assert policy_name == "on-request" and len(ruleset.rules) == 1  # type: ignore[attr-defined]
    assert _approval(home, "--profile", "strict")[0] == "untrusted"
    assert _approval(home, "--approval", "never-ask")[0] == "never-ask"  # a flag beats the file
    project = home / "ws" / ".ringfence.toml"
    project.write_text('approval = "untrusted"\n')
    assert _approval(home)[0] == "untrusted"
    for loosening in ('approval = "never-ask"\n', f'rules = "{rules}"\n'):
        project.write_text(loosening)
        with pytest.raises(ConfigError, match="may only tighten"):
            _approval(home)
    project.unlink()
    _user(home, 'approval = "sometimes"\n')
    with pytest.raises(
        ConfigError, match="approval: must be one of never-ask, on-request, untrusted"
    ):
        _approval(home)


def test_the_managed_file_sets_a_floor_for_approval_that_binds_flags_and_the_api(
    home: Path,
) -> None:
    (home / "managed.toml").write_text('require_approval = "untrusted"\n')
    assert _approval(home)[0] == "untrusted"  # nothing asked: the floor applies
    assert _approval(home, "--approval", "untrusted")[0] == "untrusted"
    with pytest.raises(ConfigError, match="require_approval is untrusted; approval on-request"):
        _approval(home, "--approval", "on-request")
    from ringfence.session import Session

    with pytest.raises(ConfigError, match="require_approval"):
        Session(Policy(workspace=str(home / "ws")), approval="never-ask")
    s = Session(Policy(workspace=str(home / "ws")))
    assert s.gate is not None and s.gate.policy == "untrusted"
    s.close()
    (home / "managed.toml").write_text('require_approval = "always"\n')
    with pytest.raises(ConfigError, match="must be one of never-ask, on-request, untrusted"):
        _approval(home)
