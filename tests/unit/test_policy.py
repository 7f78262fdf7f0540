"""Policy validation and the environment rebuild: pure, no kernel."""

from __future__ import annotations

import pytest

from ringfence.errors import PolicyError
from ringfence.policy import defaults
from ringfence.policy.environment import build_environment, is_secret_name, scrubbed_names
from ringfence.policy.model import EnvPolicy, Mode, Network, Policy


def test_defaults() -> None:
    p = Policy(workspace="/w").validate()
    assert p.mode is Mode.WORKSPACE_WRITE
    assert p.effective_network is Network.OFF
    assert p.writable_paths() == ("/w",)
    assert ".git/hooks" in p.protected_names() and ".envrc" in p.protected_names()
    assert ".git" not in p.protected_names()


def test_full_access_defaults_to_network_on() -> None:
    assert Policy(workspace="/w", mode=Mode.FULL_ACCESS).validate().effective_network is Network.ON


def test_read_only_has_no_writable_paths() -> None:
    assert Policy(workspace="/w", mode=Mode.READ_ONLY).validate().writable_paths() == ()


def test_strict_git_protects_all_of_git() -> None:
    names = Policy(workspace="/w", strict_git=True).protected_names()
    assert ".git" in names and ".git/hooks" not in names


def test_no_default_protect_keeps_strict_git() -> None:
    assert Policy(workspace="/w", default_protected=False).protected_names() == ()
    assert Policy(workspace="/w", default_protected=False, strict_git=True).protected_names() == (
        ".git",
    )


def test_writable_paths_dedupes_and_keeps_workspace_first() -> None:
    p = Policy(workspace="/w", writable_roots=("/x", "/w", "/x")).validate()
    assert p.writable_paths() == ("/w", "/x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workspace": ""}, "workspace is not set"),
        ({"workspace": "rel"}, "relative"),
        ({"workspace": "/w/../x"}, "not normalised"),
        ({"workspace": "/w", "writable_roots": ("x",)}, "relative"),
        ({"workspace": "/w", "deny_read": ("/a\0b",)}, "NUL"),
        ({"workspace": "/w", "mode": Mode.READ_ONLY, "writable_roots": ("/x",)}, "conflicts"),
        ({"workspace": "/w", "mode": Mode.FULL_ACCESS, "protected": ("/x",)}, "--protect"),
        ({"workspace": "/w", "mode": Mode.FULL_ACCESS, "network": Network.OFF}, "network"),
        ({"workspace": "/w", "env": EnvPolicy(set={"A=B": "x"})}, "invalid environment"),
        ({"workspace": "/w", "env": EnvPolicy(set={"A": "x\0"})}, "NUL"),
    ],
)
def test_validation_errors_name_the_problem(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy(**kwargs).validate()  # type: ignore[arg-type]


def test_deny_read_defaults_live_under_home() -> None:
    paths = Policy(workspace="/w", deny_read=("/extra",)).deny_read_paths("/home/u")
    assert paths[0] == "/extra"
    assert "/home/u/.ssh" in paths and "/home/u/.aws" in paths and "/home/u/.netrc" in paths
    assert Policy(workspace="/w", default_deny_read=False).deny_read_paths("/home/u") == ()


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "aws_secret_access_key",
        "DB_PASSWORD",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SOMETHING_NEW",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_ID",
        "MY_CREDENTIALS",
        "NPM_CONFIG__AUTH",
        "SENTRY_DSN",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "LANG", "TERM", "EDITOR", "PYTHONPATH"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("name", defaults.SECRET_ENV_ALLOW)
def test_documented_non_secret_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)
    assert not is_secret_name(name.lower())


def test_the_allowlist_only_names_what_a_pattern_would_catch() -> None:
    """Each allowed name is an exception to a pattern; one no pattern matches is dead weight."""
    import fnmatch

    for name in defaults.SECRET_ENV_ALLOW:
        assert any(fnmatch.fnmatchcase(name, p) for p in defaults.SECRET_ENV_PATTERNS), name


def test_ringfences_own_variables_are_not_secret_names() -> None:
    """What ringfence sets itself (caches, proxy, RINGFENCE_*) must never look like a secret:
    a session server re-applies them on top of each client's scrubbed environment."""
    from ringfence.network.proxy_env import git_ssh_command, proxy_environment
    from ringfence.policy.caches import cache_environment
    from ringfence.policy.environment import sandbox_variables

    ours = {
        **cache_environment("/c", {}),
        **proxy_environment(3128),
        **sandbox_variables(Policy(workspace="/w")),
        "GIT_SSH_COMMAND": git_ssh_command(),
        "TMPDIR": "/tmp",
    }
    assert [n for n in ours if is_secret_name(n)] == []


def test_build_environment_scrubs_and_sets() -> None:
    caller = {
        "PATH": "/bin",
        "API_KEY": "k",
        "SSH_AUTH_SOCK": "/s",
        "KEEP_TOKEN": "t",
        "RINGFENCE_SANDBOX": "0",
        "GONE": "g",
    }
    policy = EnvPolicy(keep=("KEEP_TOKEN",), unset=("GONE",), set={"NEW": "n", "TMPDIR": "/mine"})
    env = build_environment(caller, policy, {"RINGFENCE_SANDBOX": "1", "TMPDIR": "/tmp"})
    assert env == {
        "PATH": "/bin",
        "KEEP_TOKEN": "t",
        "RINGFENCE_SANDBOX": "1",
        "TMPDIR": "/mine",
        "NEW": "n",
    }
    assert scrubbed_names(caller, policy) == ["API_KEY", "GONE", "SSH_AUTH_SOCK"]


def test_build_environment_without_inherit() -> None:
    env = build_environment({"HOME": "/h", "X": "1"}, EnvPolicy(inherit=False, keep=("HOME",)), {})
    assert env == {"HOME": "/h", "PATH": "/usr/local/bin:/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("text", "value"), [("512m", 512 << 20), ("2g", 2 << 30), ("1048576", 1048576), ("25%", "25%")]
)
def test_parse_size(text: str, value: object) -> None:
    from ringfence.policy.model import parse_size

    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-1", "12x", "0%", "101%", "m"])
def test_parse_size_refuses(text: str) -> None:
    from ringfence.policy.model import parse_size

    with pytest.raises(PolicyError):
        parse_size(text)


def test_limits_from_flags() -> None:
    from ringfence.cli.flags import limits_from_args

    lim = limits_from_args(["processes=10", "cpu=none", "tmp-size=1g", "file-size=5m"])
    assert lim.processes == 10 and lim.cpu_seconds is None
    assert lim.tmp_size == 1 << 30 and lim.file_size == 5 << 20
    for bad in ("bogus=1", "processes", "processes=0", "tmp-size=none", "file-size=10%"):
        with pytest.raises(PolicyError):
            limits_from_args([bad])


def test_the_version_is_written_once() -> None:
    """pyproject.toml reads the version from ringfence.__version__: the installed
    distribution and the package say the same."""
    import importlib.metadata

    import ringfence

    assert importlib.metadata.version("ringfence") == ringfence.__version__


def test_ringfences_own_variables_cannot_be_set_by_the_policy() -> None:
    """Otherwise ``--env RINGFENCE_SANDBOX=1`` under full access would tell every tool (and
    every test) that the command is confined when it is not."""

    for name in ("RINGFENCE_SANDBOX", "RINGFENCE_NETWORK"):
        policy = Policy(workspace="/w", mode=Mode.FULL_ACCESS, env=EnvPolicy(set={name: "1"}))
        with pytest.raises(PolicyError, match=f"{name} is ringfence's own"):
            policy.validate()
    assert Policy(workspace="/w", env=EnvPolicy(set={"RINGFENCE": "x"})).validate()
