"""The macOS compiler (Policy -> Seatbelt profile): golden texts, the structural check, and
properties over generated policies. Pure: nothing here needs (or was run on) a Mac."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.errors import PolicyError
from ringfence.platforms.macos import sbpl
from ringfence.platforms.macos.plan import (
    EXPLAIN_TAG,
    SANDBOX_EXEC,
    MacFacts,
    canonical,
    check_tag,
    compile_macos,
    name_regex,
    new_tag,
    path_regex,
)
from ringfence.policy.model import Mode, Network, Policy

GOLDEN = Path(__file__).parent / "golden"
FACTS = MacFacts(home="/Users/dev", tmpdir="/tmp/ringfence-1")
CASES = {
    "macos_default": Policy(workspace="/Users/dev/repo"),
    "macos_allowlist": Policy(
        workspace="/Users/dev/repo",
        writable_roots=("/var/folders/cache",),
        protected=("/Users/dev/repo/secrets",),
        network=Network.ALLOWLIST,
        allow_domains=("pypi.org",),
        allow_sockets=("/var/run/docker.sock",),
        default_deny_read=False,
    ),
    # ~/Library as a root: LaunchAgents and the other start-up places are protected as paths,
    # since the relative name Library/LaunchAgents cannot match beneath the root it starts at.
    "macos_library_root": Policy(
        workspace="/Users/dev/repo",
        writable_roots=("/Users/dev/Library",),
        default_deny_read=False,
    ),
    "macos_read_only": Policy(
        workspace="/Users/dev/repo",
        mode=Mode.READ_ONLY,
        network=Network.ON,
        deny_read=("/Users/dev/x",),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_profiles_match_their_golden_text(name: str) -> None:
    """Review a change here by reading the diff of the golden file; regenerate with
    RINGFENCE_UPDATE_GOLDEN=1."""
    text = compile_macos(CASES[name], FACTS).profile
    path = GOLDEN / f"{name}.sb"
    if os.environ.get("RINGFENCE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_the_plan_runs_sandbox_exec_by_absolute_path_and_full_access_has_no_profile() -> None:
    plan = compile_macos(CASES["macos_default"], FACTS)
    assert plan.argv_prefix[:2] == (SANDBOX_EXEC, "-p") and SANDBOX_EXEC.startswith("/usr/bin/")
    assert plan.argv_prefix[2] == plan.profile
    full = compile_macos(Policy(workspace="/Users/dev/repo", mode=Mode.FULL_ACCESS), FACTS)
    assert not full.sandboxed and full.profile == ""


def test_paths_are_canonicalised_and_dotdot_cannot_survive() -> None:
    assert canonical("/var/folders/x", FACTS) == "/private/var/folders/x"
    assert canonical("/tmp", FACTS) == "/private/tmp"
    assert canonical("/etc/hosts", FACTS) == "/private/etc/hosts"
    assert canonical("/variable", FACTS) == "/variable"
    linked = MacFacts(home="/Users/dev", tmpdir="/tmp/x", realpaths={"/Users/dev/link": "/var/x"})
    assert canonical("/Users/dev/link", linked) == "/private/var/x"
    bad = MacFacts(home="/Users/dev", tmpdir="/tmp/x", realpaths={"/Users/dev/l": "rel/path"})
    with pytest.raises(PolicyError):
        canonical("/Users/dev/l", bad)


def test_a_hostile_path_stays_inside_its_string() -> None:
    hostile = '/Users/dev/a") (allow file-write* (subpath "/")) ; ('
    plan = compile_macos(Policy(workspace=hostile), FACTS)
    sbpl.check(plan.profile)
    assert '(allow file-write* (subpath "/"))' not in plan.profile.replace('\\"', "")
    forms = [f for f in _top_forms(plan.profile) if f.startswith("(allow file-write*")]
    assert len(forms) == 1 and sbpl.string(hostile) in forms[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_deny_rule_carries_the_session_tag_and_no_allow_rule_does(name: str) -> None:
    tag = new_tag()
    plan = compile_macos(CASES[name], MacFacts(home=FACTS.home, tmpdir=FACTS.tmpdir, tag=tag))
    assert plan.tag == tag
    forms = _top_forms(plan.profile)
    denies = [f for f in forms if f.startswith("(deny ")]
    assert denies[0] == f'(deny default (with message "{tag}"))'
    assert len(denies) >= 2  # default plus the carve-outs every case has
    for f in denies:
        assert f.endswith(f' (with message "{tag}"))'), f[:80]
        assert f.count("(with ") == 1
    assert not any("(with " in f for f in forms if f.startswith("(allow "))
    sbpl.check(plan.profile, tag=tag)
    with pytest.raises(sbpl.ProfileError, match="without the session tag"):
        sbpl.check(plan.profile, tag=new_tag())  # another session's tag is not ours


def test_tags_are_fresh_and_only_safe_characters_pass() -> None:
    tags = {new_tag() for _ in range(50)}
    assert len(tags) == 50 and all(check_tag(t) == t for t in tags)
    for bad in ("", "short", 'a"b) (allow default', "x" * 65, "tag with space", "tag\nnewline",
                "ta;g_12345", "tägg_12345"):  # fmt: skip
        with pytest.raises(PolicyError):
            check_tag(bad)
        with pytest.raises(PolicyError):
            compile_macos(CASES["macos_default"], dataclasses.replace(FACTS, tag=bad))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('(version 1)\n(allow file-read* (with message "t"))', "not a deny"),
        ('(version 1)\n(deny default (with message "t") (with message "t"))', "only once"),
        ('(version 1)\n(deny file-read* (with message "t") (subpath "/x"))', "only once"),
        ("(version 1)\n(deny default (with report))", 'only (with message "TEXT")'),
        ("(version 1)\n(deny default (with message t))", 'only (with message "TEXT")'),
        ('(version 1)\n(deny default (with message "t" "u"))', 'only (with message "TEXT")'),
        ('(version 1)\n(deny (subpath "/x") file-read*)', "an operation after a filter"),
        ("(allow file-read*)", "starts with (version 1)"),
        ("(version 1)\n(allow file-read*", "not closed"),
        ("(version 1)\n(allow file-read*))", "without '('"),
        ("(version 1)\n(allow file-launch-nukes)", "unknown operation"),
        ("(version 1)\n(allow file-read* (everywhere))", "unknown filter"),
        ('(version 1)\n(allow file-read* (subpath "/x))', "not closed"),
        ('(version 1)\n(import "system.sb")', "unknown top-level form"),
    ],
)
def test_the_structural_check_refuses_malformed_profiles(text: str, why: str) -> None:
    with pytest.raises(sbpl.ProfileError, match=re.escape(why)):
        sbpl.check(text)


def test_protected_names_match_at_any_depth_in_any_case_existing_or_not() -> None:
    rx = re.compile(name_regex("/Users/dev/repo", ".git/hooks"))
    for p in ("/Users/dev/repo/.git/hooks", "/Users/dev/repo/.git/hooks/pre-commit",
              "/Users/dev/repo/sub/.GIT/Hooks/x", "/users/DEV/repo/.git/hooks"):  # fmt: skip
        assert rx.match(p), p
    for p in (
        "/Users/dev/repo/.git/hooksx",
        "/Users/dev/other/.git/hooks",
        "/Users/dev/repo/git/hooks",
    ):
        assert not rx.match(p), p
    star = re.compile(name_regex("/w", ".git/worktrees/*/config.worktree"))
    assert star.match("/w/.git/worktrees/a/config.worktree")
    assert not star.match("/w/.git/worktrees/a/b/config.worktree")
    anydepth = re.compile(name_regex("/w", ".git/modules/**/hooks"))
    assert anydepth.match("/w/.git/modules/hooks") and anydepth.match("/w/.git/modules/a/b/hooks/x")


_comp = st.text(alphabet="abcXYZ._-", min_size=1, max_size=6).filter(lambda c: c not in (".", ".."))


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    base = draw(st.sampled_from(["/Users/dev", "/var/work", "/tmp/w", "/private/var/x"]))
    ws = base + "/" + draw(_comp)
    roots = draw(st.lists(st.builds(lambda c: f"/var/folders/{c}", _comp), max_size=3))
    protected = draw(st.lists(st.builds(lambda a, b: f"{ws}/{a}/{b}", _comp, _comp), max_size=3))
    deny = draw(st.lists(st.builds(lambda c: f"/Users/dev/.{c}", _comp), max_size=3))
    return Policy(
        workspace=ws,
        writable_roots=tuple(dict.fromkeys(roots)),
        protected=tuple(dict.fromkeys(protected)),
        deny_read=tuple(dict.fromkeys(deny)),
        network=draw(st.sampled_from([Network.OFF, Network.ON, Network.ALLOWLIST])),
    )


def _swapcase_once(p: str) -> str:
    i = next((i for i, c in enumerate(p) if c.isalpha()), None)
    return p if i is None else p[:i] + p[i].swapcase() + p[i + 1 :]


@settings(max_examples=150, deadline=None)
@given(_policies())
def test_every_profile_grants_each_root_and_carves_out_each_protected_path(policy: Policy) -> None:
    plan = compile_macos(policy, FACTS)
    sbpl.check(plan.profile)
    forms = _top_forms(plan.profile)
    grant = next(f for f in forms if f.startswith("(allow file-write* "))
    for root in policy.writable_paths():
        assert f"(subpath {sbpl.string(canonical(root, FACTS))})" in grant
    deny = next((f for f in forms if f.startswith("(deny file-write* ")), "")
    patterns = [
        re.compile(m.replace('\\"', '"'))
        for m in re.findall(r'\(regex #"((?:[^"\\]|\\.)*)"\)', deny)
    ]
    for p in policy.protected:
        c = canonical(p, FACTS)
        for probe in (c, c + "/child", _swapcase_once(c)):
            assert any(rx.match(probe) for rx in patterns), probe
    for root in policy.writable_paths():
        hooks = canonical(root, FACTS) + "/deep/.git/hooks/pre-commit"
        assert any(rx.match(hooks) for rx in patterns)
    hide = next((f for f in forms if f.startswith("(deny file-read* file-write* ")), "")
    for p in policy.deny_read_paths(FACTS.home, "macos"):
        assert re.compile(path_regex(canonical(p, FACTS))).match(
            _swapcase_once(canonical(p, FACTS))
        )
        assert sbpl.regex_literal(path_regex(canonical(p, FACTS))) in hide
    assert "/../" not in plan.profile and "/./" not in plan.profile
    assert all(not w.startswith(("/var/", "/tmp/", "/etc/")) for w in plan.writable)


def _top_forms(text: str) -> list[str]:
    """Each top-level form as its text (strings are respected when counting parentheses)."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == ";" and depth == 0:
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c == "(":
            if depth == 0:
                start = i
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
        i += 1
    return out


def test_explain_shows_the_macos_plan_from_this_machine(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-P", "-m", "ringfence", "explain", "--platform", "macos", "--json",
         "--workspace", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["sandboxed"] and plan["profile"].startswith(
        f'(version 1)\n(deny default (with message "{EXPLAIN_TAG}"))\n'
    )
    sbpl.check(plan["profile"], tag=EXPLAIN_TAG)
    argv = [sys.executable, "-P", "-m", "ringfence", "explain", "--platform", "macos"]
    text = subprocess.run(
        [*argv, "--workspace", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    assert text.startswith("; note: not run on a Mac yet")


def test_what_seatbelt_cannot_enforce_is_refused_by_the_compiler() -> None:
    """A memory limit and exposed ports have no Seatbelt form: the compiler refuses them, so
    a library caller gets the same refusal as the CLI instead of a weaker sandbox."""
    from ringfence.errors import UnenforceableError
    from ringfence.policy.model import Limits

    base = CASES["macos_default"]
    for change, setting in (
        ({"expose_ports": (5432,)}, "--expose-port"),
        ({"publish": ("18080:8080",)}, "--publish"),
        ({"limits": Limits(memory=1 << 30)}, "--limit memory"),
        ({"limits": Limits(processes=10)}, "--limit processes"),
        ({"limits": Limits(cpu_seconds=5)}, "--limit cpu"),
        ({"limits": Limits(file_size=1 << 20)}, "--limit file-size"),
        ({"limits": Limits(open_files=20)}, "--limit open-files"),
    ):
        with pytest.raises(UnenforceableError, match="not available on macOS") as e:
            compile_macos(dataclasses.replace(base, **change), FACTS)
        assert e.value.setting == setting
