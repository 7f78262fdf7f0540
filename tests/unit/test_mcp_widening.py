"""What an agent may ask for through ``request_widening``, checked before anyone is asked:
the escalation rules (escalation.requested_widenings), then the managed ceiling (propose)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence import escalation
from ringfence.errors import PolicyError
from ringfence.mcp_tools import propose, to_allow
from ringfence.platforms.linux import hostfacts
from ringfence.platforms.linux.plan import compile_linux
from ringfence.platforms.linux.plan_model import LinuxPlan
from ringfence.policy import config
from ringfence.policy.config import ConfigError
from ringfence.policy.model import Mode, Network, Policy


class Tree:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ringfence-widen-", dir="/var/tmp")).resolve()
        self.home = self.base / "home" / "u"
        self.ws = self.home / "proj"
        self.other = self.base / "srv" / "data"
        for d in (self.ws / "sub", self.other / "repo" / ".git" / "hooks"):
            d.mkdir(parents=True)
        (self.ws / "link").symlink_to(self.other)

    def plan(self, policy: Policy) -> LinuxPlan:
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin"}
        facts = hostfacts.gather(policy, env=env, landlock_abi=6)
        return compile_linux(policy, facts, cwd=str(self.ws))


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    t = Tree()
    yield t
    shutil.rmtree(t.base, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_managed_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "load_ceiling", lambda *a: None)


def _policy(tree: Tree, **kw: object) -> Policy:
    return Policy(workspace=str(tree.ws), tool_caches=False, **kw).validate()  # type: ignore[arg-type]


def _ask(tree: Tree, kind: str, value: str, **kw: object) -> tuple[dict[str, object], ...]:
    policy = _policy(tree, **kw)
    return escalation.requested_widenings(tree.plan(policy), policy, kind, value)


def test_a_writable_directory_is_granted_exactly(tree: Tree) -> None:
    (w,) = _ask(tree, "writable_path", f"{tree.other}/")
    assert w == {
        "kind": "writable_root",
        "path": str(tree.other),
        "flag": f"--writable {tree.other}",
    }
    policy = _policy(tree)
    got = propose(
        tree.plan(policy), policy, "writable_path", str(tree.other), approval=None, audit=True
    )
    assert got is not None and got.policy.writable_roots == (str(tree.other),)
    assert got.words() == f"make the directory {tree.other} writable"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("/", "the root or a top-level directory"),
        ("/srv", "the root or a top-level directory"),
        ("/etc/ssl", "a system directory"),
        ("/usr/lib", "a system directory"),
        ("{home}", "a home directory or one holding it"),
        ("{base}/home", "a home directory or one holding it"),
        ("{other}/repo/.git/hooks", "a protected name"),
        ("{other}/repo/.git", "a protected name (.git/config)"),
        ("{ws}/link", "passes through the symlink"),
        ("{ws}/missing", "does not exist"),
        ("srv/data", "is relative"),
    ],
)
def test_a_writable_directory_the_rules_refuse(tree: Tree, value: str, why: str) -> None:
    path = value.format(home=tree.home, base=tree.base, other=tree.other, ws=tree.ws)
    with pytest.raises(PolicyError) as e:
        _ask(tree, "writable_path", path)
    assert why in str(e.value)


def test_what_is_writable_already_needs_nothing(tree: Tree) -> None:
    assert _ask(tree, "writable_path", str(tree.ws)) == ()
    assert _ask(tree, "writable_path", str(tree.ws / "sub")) == ()


def test_a_read_only_sandbox_has_no_writable_paths(tree: Tree) -> None:
    with pytest.raises(PolicyError, match="the sandbox is read-only"):
        _ask(tree, "writable_path", str(tree.other), mode=Mode.READ_ONLY)


def test_a_domain_with_the_network_off_is_an_allowlist_of_that_name(tree: Tree) -> None:
    ws = _ask(tree, "domain", "PyPI.org ")
    assert [w["kind"] for w in ws] == ["network", "allow_domain"]
    wider = escalation.widen(_policy(tree), ws)
    assert (wider.network, wider.allow_domains) == (Network.ALLOWLIST, ("PyPI.org",))


def test_a_domain_in_an_allowlist(tree: Tree) -> None:
    net = {
        "network": Network.ALLOWLIST,
        "allow_domains": ("pypi.org",),
        "deny_domains": ("evil.example",),
    }
    assert _ask(tree, "domain", "pypi.org:443", **net) == ()
    (w,) = _ask(tree, "domain", "files.pythonhosted.org", **net)
    assert w["entry"] == "files.pythonhosted.org"
    with pytest.raises(PolicyError, match=r"is denied by 'evil\.example' in the user's policy"):
        _ask(tree, "domain", "evil.example", **net)
    assert _ask(tree, "domain", "anything.example", network=Network.ON) == ()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("*.example.com", "not a wildcard"),
        ("https://example.com/", "not a URL"),
        ("exa mple.com", "characters a host name cannot have"),
        ("example.com:99999", "port"),
        # a Cyrillic i: reads as github.com, would allow xn--gthub-n2e.com
        ("g\u0456thub.com", r"in ASCII \(its ASCII form is xn--gthub-n2e\.com\)"),
    ],
)
def test_a_domain_that_is_not_one_name_is_refused(tree: Tree, value: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        _ask(tree, "domain", value)


def test_the_network_only_on_and_only_by_name(tree: Tree) -> None:
    (w,) = _ask(tree, "network", "on")
    assert escalation.widen(_policy(tree), [w]).network is Network.ON
    assert _ask(tree, "network", "on", network=Network.ON) == ()
    with pytest.raises(PolicyError, match="'on'"):
        _ask(tree, "network", "allowlist")
    with pytest.raises(PolicyError, match="not a widening that can be asked for"):
        _ask(tree, "allow_socket", "/run/docker.sock")
    # Never proposed from refusals: only an agent asking by name gets to the person.
    assert all(w["kind"] != "network" for w in escalation.widenings(tree.plan(_policy(tree)), []))


def test_the_managed_ceiling_refuses_before_anyone_is_asked(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    ceiling = config.Ceiling(
        path="/etc/ringfence/managed.toml",
        max_network="allowlist",
        writable_within=(str(tree.home),),
    )
    monkeypatch.setattr(config, "load_ceiling", lambda *a: ceiling)
    policy = _policy(tree)
    plan = tree.plan(policy)
    with pytest.raises(ConfigError, match="max_network is allowlist; network on exceeds it"):
        propose(plan, policy, "network", "on", approval=None, audit=True)
    with pytest.raises(ConfigError, match=f"writable_within does not include {tree.other}"):
        propose(plan, policy, "writable_path", str(tree.other), approval=None, audit=True)
    got = propose(plan, policy, "domain", "pypi.org", approval=None, audit=True)
    assert got is not None and got.policy.network is Network.ALLOWLIST


def test_the_question_shows_the_agents_words_escaped_and_short(tree: Tree) -> None:
    policy = _policy(tree)
    got = propose(tree.plan(policy), policy, "network", "on", approval=None, audit=True)
    assert got is not None
    reason = "\x1b[2J\x1b]0;ok\x07 please\u202e" + "x" * 1000
    q = got.question(reason)
    assert not any(c in q for c in "\x1b\x07\u202e")
    assert "\\x1b[2J\\x1b]0;ok\\x07 please\\u202e" in q
    assert len(q) < 700 and "turn the network ON" in q


def test_to_allow_says_what_request_widening_takes() -> None:
    widenings = [
        {
            "kind": "writable_root",
            "path": "/srv/x",
            "flag": "--writable /srv/x",
            "because": "openat /srv/x/y",
        },
        {"kind": "allow_domain", "entry": "pypi.org:443", "flag": "--allow-domain pypi.org:443"},
        {"kind": "allow_socket", "path": "/run/a.sock", "flag": "--allow-socket /run/a.sock"},
        {"kind": "something_new", "flag": "--new\x1b[0m"},
    ]
    assert to_allow(widenings) == [
        {
            "kind": "writable_path",
            "value": "/srv/x",
            "flag": "--writable /srv/x",
            "because": "openat /srv/x/y",
        },
        {"kind": "domain", "value": "pypi.org:443", "flag": "--allow-domain pypi.org:443"},
        {"flag": "--allow-socket /run/a.sock"},
        {"flag": "--new\\x1b[0m"},
    ]
    assert os.sep == "/"


def test_a_widening_request_is_audited_in_one_line() -> None:
    from ringfence.audit import format_record, widening_record

    record = widening_record(
        server="ab12",
        kind="writable_path",
        value="/srv/x",
        reason="token=hunter2 " + "x" * 1000,
        decision="granted",
        detail="--writable /srv/x",
    )
    assert record["reason"].startswith("token=[REDACTED] ") and len(record["reason"]) < 520
    line = format_record(record)
    assert line.endswith("mcp:ab12 widening writable_path '/srv/x' -> granted (--writable /srv/x)")


def test_the_question_warns_when_the_directory_holds_where_the_server_imports_from(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Granting a directory that holds this server's own Python (its virtualenv, a PYTHONPATH
    entry) lets a command change code that runs outside the sandbox: the person is told
    (review 39: the warning went only to the server's stderr, which clients hide)."""
    import sys

    policy = _policy(tree)
    plan = tree.plan(policy)
    lib = tree.other / "venv" / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    got = propose(plan, policy, "writable_path", str(tree.other), approval=None, audit=True)
    assert got is not None and "WARNING" not in got.question("need it")
    monkeypatch.setattr(sys, "path", [*sys.path, str(lib)])
    q = got.question("need it")
    assert f"WARNING: it holds {lib}, Python code this ringfence server runs" in q, q
