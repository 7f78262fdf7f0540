"""Approvals: the shell splitter, the known-safe classifier, prefix rules and the decision."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ringfence.approval import lookup, rules, safe, shell
from ringfence.approval.decide import ASK, REFUSE, RUN, decide
from ringfence.errors import PolicyError


@pytest.mark.parametrize(
    ("line", "commands"),
    [
        ("ls -la", [["ls", "-la"]]),
        (
            "ls && git status; echo 'a;b' | wc -l",
            [["ls"], ["git", "status"], ["echo", "a;b"], ["wc", "-l"]],
        ),
        ('false || echo "x \\"y\\""', [["false"], ["echo", 'x "y"']]),
        ("grep -r x . 2>/dev/null", [["grep", "-r", "x", "."]]),
        ("a\\ b c'd'\"e\"", [["a b", "cde"]]),
        ("ls # a comment", [["ls"]]),
    ],
)
def test_plain_lines_split_into_their_commands(line: str, commands: list[list[str]]) -> None:
    assert shell.split(line) == commands


@pytest.mark.parametrize(
    "line",
    [
        "echo $(rm -rf ~)",
        "echo `id`",
        'echo "$(id)"',
        "cat $HOME/x",
        "FOO=1 ls",
        "LD_PRELOAD=/tmp/x.so ls",
        "(cd x; ls)",
        "ls > out",
        "ls >> out",
        "cat < /etc/passwd",
        "cat <<EOF\n$(rm -rf ~)\nEOF",
        "ls &",
        "for f in *; do rm $f; done",
        "f() { rm -rf ~; }; f",
        "ls &&",
        "if true; then rm x; fi",
        "ls |& cat",
    ],
)
def test_lines_that_run_or_expand_hidden_things_cannot_be_judged(line: str) -> None:
    with pytest.raises(shell.Unjudgeable):
        shell.split(line)


@pytest.mark.parametrize(
    "line",
    [
        "ls -la",
        "cat README.md | head -n 5",
        "git status && git log --oneline -5 && git diff HEAD~1",
        "git -C sub branch -a",
        "find . -name '*.py' -type f",
        "rg -n TODO src",
        "grep -rn foo . 2>/dev/null | sort | uniq -c",
        "bash -lc 'ls && git status'",
        "sh -c 'pwd; echo hi'",
        "wc -l README.md",
        "/bin/ls -la",
        "/usr/bin/git status",
        "/bin/sh -c 'ls'",
        "ls *.py && wc -l src/*.py",
        "grep -rn TODO src/*.py",
        "find . -name '*.py'",
        "echo '{a,b}' \"{c,d}\" \\{e,f\\}",
        "uniq -c counts.txt",
        "file -b README.md",
        "tree -L 2",
        "sort -k2 data.txt",
        "git log --oneline --stat",
    ],
)
def test_read_only_lines_are_known_safe(line: str) -> None:
    assert safe.script_unsafe_reason(line) is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('bash -lc "ls && rm -rf ~"', "rm is not on the list"),
        ("ls; rm -rf build", "rm is not on the list"),
        ("echo $(whoami)", "command substitution"),
        ("cat <<EOF\nhello\nEOF", "cannot be judged"),
        ("ls | xargs rm", "xargs"),
        ("env ls", "env"),
        ("env PATH=/tmp ls", "env"),
        ("sudo ls", "sudo"),
        ("timeout 5 rm x", "timeout"),
        ("find . -exec rm {} ;", "-exec"),
        ("find . -delete", "-delete"),
        ("find . -fprint out", "-fprint"),
        ("rg --pre ./script x", "--pre"),
        ("rg -z x", "-z"),
        ("sort -o out in", "sort -o"),
        ("sort --output=out in", "--output"),
        ("git push", "not a read-only subcommand"),
        ("git -c core.pager=evil log", "git -c"),
        ("git branch -D main", "create or delete"),
        ("git diff --output=out", "--output"),
        ("git log --ext-diff", "--ext-diff"),
        ("bash script.sh", "without a single -c script"),
        ("bash -c 'ls' extra", "without a single -c script"),
        ("python -c 'print(1)'", "python is not on the list"),
        ("ls > out", "redirection"),
        # A program with a safe name, but whichever the repository put there.
        ("./ls", "outside the system's directories"),
        ("bin/cat README.md", "outside the system's directories"),
        ("/usr/bin/../../tmp/ls", "outside the system's directories"),
        ("./bash -c ls", "outside the system's directories"),
        ("sh -c './git status'", "outside the system's directories"),
        # bash joins a backslash-newline's two lines; the grammar ends a word there.
        ("bash -c 'test\\\n/run.sh'", "line continuation"),
        ("tr\\\nuncate -s 0 important", "line continuation"),
        # Brace expansion makes words the checker would not see.
        ("find . -name x {-exec,./evil} ;", "brace expansion"),
        ("git status {--output=x,-s}", "brace expansion"),
        # A pattern becomes file names the repository chooses, which may be options.
        ("find . -[d]elete", "file names, which may be options"),
        ("sort *", "file names, which may be options"),
        ("uniq *.txt", "file names, which may be options"),
        ("git diff *", "file names, which may be options"),
        # Long options GNU getopt and git accept abbreviated.
        ("sort -S 64K --co=./evilz big", "runs a program"),
        ("sort --outp=sorted in", "writes a file"),
        ("git diff --outp=x", "can write or run"),
        ("git log --ext", "can write or run"),
        ("rg --hostname-bin=./x foo", "runs other programs"),
        # Plain-looking commands that write.
        ("uniq in out", "writes the second"),
        ("file -C -m magic", "compiled magic"),
        ("file -bC x", "compiled magic"),
        ("tree -o out", "writes files"),
        ("tree -HR x", "writes files"),
    ],
)
def test_tricky_lines_are_not_known_safe(line: str, why: str) -> None:
    reason = safe.script_unsafe_reason(line)
    assert reason is not None and why in reason, reason


RULES = """
[[rule]]
prefix = ["git", ["push", "pull"]]
decision = "prompt"
why = "talks to the remote"
match = ["git push origin main", ["git", "pull"]]
not_match = ["git status", "gitx push"]

[[rule]]
prefix = ["rm", "-rf", "/"]
decision = "forbid"
match = ["rm -rf /"]

[[rule]]
prefix = ["pytest"]
decision = "allow"
match = ["pytest -q"]

[[rule]]
prefix = ["git"]
decision = "allow"
"""


def test_rules_load_and_the_strictest_match_wins() -> None:
    rs = rules.parse(RULES, "r.toml")
    push = rs.verdict(["git", "push", "-f"])
    assert push is not None and push.decision == "prompt" and push.source == "r.toml: rule 1"
    status = rs.verdict(["git", "status"])
    assert status is not None and status.decision == "allow"
    assert rs.verdict(["make"]) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\nprefix = ["git", "push"]\ndecision = "forbid"\nmatch = ["git pull"]\n',
         "r.toml: rule 1: the example 'git pull' in match does not match the rule"),
        ('[[rule]]\nprefix = ["git"]\ndecision = "allow"\nnot_match = ["git status"]\n',
         "r.toml: rule 1: the example 'git status' in not_match matches the rule"),
        ('[[rule]]\nprefix = ["ls"]\ndecision = "maybe"\n', "decision must be one of"),
        ('[[rule]]\nprefix = []\ndecision = "allow"\n', "prefix must be a non-empty list"),
        ('[[rule]]\nprefix = ["ls"]\ndecision = "allow"\ncolour = 1\n', "unknown key 'colour'"),
        ('[[rule]]\nprefix = ["ls", []]\ndecision = "allow"\n', "prefix elements are words"),
        ('[rules]\n', "unknown table or key 'rules'"),
        ('[[rule]\n', "r.toml: "),
        ('[[rule]]\nprefix = ["ls"]\ndecision = "allow"\nmatch = ["a \'b"]\n', "match example"),
    ],
)  # fmt: skip
def test_bad_rules_files_are_errors_that_name_the_rule(text: str, message: str) -> None:
    with pytest.raises(rules.RulesError) as e:
        rules.parse(text, "r.toml")
    assert message in str(e.value)


def test_the_default_rules_file_is_optional_but_a_named_one_is_not(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert rules.default_path(env) == tmp_path / "ringfence" / "rules.toml"
    with pytest.raises(rules.RulesError, match="no such rules file"):
        rules.load(tmp_path / "missing.toml")
    f = tmp_path / "r.toml"
    f.write_text(RULES)
    assert len(rules.load(f).rules) == 4


@pytest.mark.parametrize(
    ("argv", "policy", "action"),
    [
        (["ls"], "untrusted", RUN),
        (["touch", "x"], "untrusted", ASK),
        (["touch", "x"], "on-request", RUN),
        (["touch", "x"], "never-ask", RUN),
        (["git", "push"], "on-request", ASK),
        (["git", "push"], "never-ask", REFUSE),
        (["git", "push"], "untrusted", ASK),
        (["rm", "-rf", "/"], "on-request", REFUSE),
        (["bash", "-lc", "ls && rm -rf /"], "never-ask", REFUSE),
        (["bash", "-c", "ls; git pull"], "on-request", ASK),
        (["pytest", "-q"], "untrusted", RUN),
        (["bash", "-c", "pytest -q && ls"], "untrusted", RUN),
        (["bash", "-c", "echo $(git push)"], "on-request", ASK),
        (["bash", "-c", "echo $(git push)"], "never-ask", REFUSE),
    ],
)
def test_the_decision_follows_the_policy_and_the_rules(
    argv: list[str], policy: str, action: str
) -> None:
    d = decide(argv, policy, rules.parse(RULES, "r.toml"))
    assert d.action == action, d.reason


def test_without_rules_an_unjudgeable_line_still_runs_under_on_request() -> None:
    assert decide(["bash", "-c", "echo $(id)"], "on-request").action == RUN
    d = decide(["bash", "-c", "echo $(id)"], "untrusted")
    assert d.action == ASK and "command substitution" in d.reason


def test_a_bad_policy_name_is_a_clear_error() -> None:
    with pytest.raises(PolicyError, match="use one of never-ask, on-request, untrusted"):
        decide(["ls"], "sometimes")


def test_refusing_rules_match_every_spelling_of_their_prefix_allow_rules_only_theirs() -> None:
    rs = rules.parse(
        '[[rule]]\nprefix = ["rm", "-rf"]\ndecision = "forbid"\n'
        '[[rule]]\nprefix = ["git", "push"]\ndecision = "prompt"\n'
        '[[rule]]\nprefix = ["git", "status"]\ndecision = "allow"\n',
        "r.toml",
    )
    for line in ("rm -fr x", "rm -r -f x", "rm -f -r x", "rm --recursive --force x",
                 "/bin/rm -rf x", "rm x -Rf", "rm -rfv x"):  # fmt: skip
        rule = rs.verdict(shlex.split(line))
        assert rule is not None and rule.decision == "forbid", line
    for line in ("rm -r x", "rm -- -rf", "rmdir -rf x"):
        assert rs.verdict(shlex.split(line)) is None, line
    for line in ("git -C . push", "git -c k=v push origin", "git --git-dir=.git push"):
        rule = rs.verdict(shlex.split(line))
        assert rule is not None and rule.decision == "prompt", line
    assert rs.verdict(["git", "-c", "push", "status"]) is None  # -c's value, not the subcommand
    # an allow rule is matched as written: an option could smuggle something in
    assert rs.verdict(["git", "status"]) is not None
    assert rs.verdict(["git", "-ccore.pager=touch x", "status"]) is None
    assert decide(["bash", "-c", "rm -r -f build"], "on-request", rs).action == REFUSE


def test_a_bare_name_is_the_systems_only_if_path_cannot_lead_elsewhere(tmp_path: Path) -> None:
    """``lookup.planted_reason``: the PATH is read up to the first entry holding the program;
    a relative entry, or one commands can write (as written or through a symlink), before it
    means the name may find a program someone put there."""
    ws = tmp_path / "ws"
    (ws / "bin").mkdir(parents=True)
    (tmp_path / "link").symlink_to(ws / "bin")
    writable = [str(ws), "/tmp"]
    assert lookup.planted_reason("ls", "/usr/bin:/bin", writable) is None
    assert lookup.planted_reason("ls", None, writable) is None  # the default search
    assert lookup.planted_reason("ls", f"/usr/bin:{ws}/bin", writable) is None  # found first
    for path_var, why in [
        (f"{ws}/bin:/usr/bin", f"looks in {ws}/bin"),
        (f"{tmp_path}/link:/usr/bin", "link"),
        ("/tmp/x:/usr/bin", "commands can write in /tmp"),
        (".:/usr/bin", "relative entry (.)"),
        (":/usr/bin", "relative entry (empty)"),
        ("node_modules/.bin:/usr/bin", "relative entry"),
    ]:
        reason = lookup.planted_reason("ls", path_var, writable)
        assert reason is not None and why in reason, (path_var, reason)
    assert lookup.planted_reason("./ls", f"{ws}/bin", writable) is None  # a path: safe.py's
    assert lookup.planted_reason("no-such-program-here", "/usr/bin", writable) is None


def test_untrusted_asks_about_a_name_its_path_may_find_elsewhere(tmp_path: Path) -> None:
    """decide(): such a name is neither known-safe nor allowed by an allow rule written for
    it (a refusing rule still applies)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    where = lookup.checker(f"{ws}:/usr/bin:/bin", [str(ws)])
    assert decide(["ls"], "untrusted", where=where).action == ASK
    assert decide(["sh", "-c", "ls | wc -l"], "untrusted", where=where).action == ASK
    allow = rules.parse('[[rule]]\nprefix = ["pytest"]\ndecision = "allow"\n')
    assert decide(["pytest"], "untrusted", allow).action == RUN
    assert decide(["pytest"], "untrusted", allow, where).action == ASK
    forbid = rules.parse('[[rule]]\nprefix = ["rm"]\ndecision = "forbid"\n')
    assert decide(["rm", "x"], "untrusted", forbid, where).action == REFUSE
    system = lookup.checker("/usr/bin:/bin", [str(ws)])
    assert decide(["ls"], "untrusted", where=system).action == RUN


def test_a_git_run_without_asking_uses_no_repository_it_only_discovers() -> None:
    """An untrusted run judged read-only that runs git gets GIT_CONFIG entries (after the
    caller's own) that keep a committed bare repository's config from being used."""
    from ringfence.engine.approval import READ_ONLY_GIT, read_only_git_env

    env = {"PATH": "/usr/bin", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "a.b"}
    d = decide(["bash", "-c", "cd sub && git status"], "untrusted")
    assert d.action == RUN
    out = read_only_git_env(d, env)
    assert out is not None and out["GIT_CONFIG_COUNT"] == str(1 + len(READ_ONLY_GIT))
    assert out["GIT_CONFIG_KEY_0"] == "a.b"  # the caller's own stays
    assert (out["GIT_CONFIG_KEY_1"], out["GIT_CONFIG_VALUE_1"]) == READ_ONLY_GIT[0]
    assert read_only_git_env(decide(["ls"], "untrusted"), env) is None  # no git in it
    assert read_only_git_env(decide(["git", "status"], "on-request"), env) is None
