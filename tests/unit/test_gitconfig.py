"""The git config allowlist: a parser that reads exactly what git reads, and the key checks.

Wherever possible the real git is the oracle: ``git config --file F --list --null`` on the same
bytes must list exactly the keys and values ``parse`` returns, and must fail (on the same line)
where ``parse`` reports a syntax error. ``parse`` may refuse more than git (``strict`` errors),
never less.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfence.policy.gitconfig import (
    MAX_CONFIG_BYTES,
    ConfigEntry,
    GitConfigError,
    Refusal,
    check_gitmodules,
    check_repo_config,
    describe,
    parse,
    url_problem,
)
from ringfence.policy.gitconfig_edit import without_worktree

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")

Pairs = list[tuple[bytes, bytes | None]]
Oracle = Callable[[bytes], "Pairs | int"]


# ---------------------------------------------------------------------------------------------
# Helpers


def git_env(home: Path) -> dict[str, str]:
    """An environment in which no host or user config reaches git."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": "A U Thor",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "A U Thor",
        "GIT_COMMITTER_EMAIL": "author@example.com",
    }


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    """Bytes -> what git reads from them: (key, value) pairs, or the line git calls bad."""
    if GIT is None:
        pytest.skip("git is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        env = git_env(Path(tmp))
        path = Path(tmp) / "config"

        def read(data: bytes) -> Pairs | int:
            path.write_bytes(data)
            proc = subprocess.run(
                [GIT, "config", "--file", str(path), "--list", "--null"],
                capture_output=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                m = re.search(rb"bad config line (\d+)", proc.stderr)
                assert m, proc.stderr
                return int(m.group(1))
            records = proc.stdout.split(b"\0")
            assert records[-1] == b""
            pairs: Pairs = []
            for rec in records[:-1]:
                key, sep, value = rec.partition(b"\n")
                pairs.append((key, value if sep else None))
            return pairs

        yield read


def ours(data: bytes) -> Pairs:
    def enc(s: str) -> bytes:
        return s.encode("utf-8", "surrogateescape")

    return [(enc(e.key), None if e.value is None else enc(e.value)) for e in parse(data)]


def assert_same_as_git(data: bytes, oracle: Oracle) -> None:
    theirs = oracle(data)
    try:
        mine = ours(data)
    except GitConfigError as err:
        if isinstance(theirs, int):
            if not err.strict:
                assert err.line == theirs, (data, str(err), theirs)
        else:
            assert err.strict, f"git reads {data!r} as {theirs!r}, but we said: {err}"
        return
    assert not isinstance(theirs, int), f"git refuses {data!r} at line {theirs}, we read {mine!r}"
    assert mine == theirs, data


def refused(text: str | bytes) -> list[tuple[str, int]]:
    data = text.encode() if isinstance(text, str) else text
    return [(r.key, r.line) for r in check_repo_config(data)]


# ---------------------------------------------------------------------------------------------
# The parser, case by case (and each case against git)

PARSE_CASES: list[tuple[bytes, Pairs | None]] = [
    # (input, expected pairs; None = a syntax error git reports too)
    (b"", []),
    (b"# only a comment\n; another\n\n", []),
    (b"\xef\xbb\xbf[core]\nbare = true\n", [(b"core.bare", b"true")]),
    (b"\xef\xbb\xbf", []),
    (b"\xef\xbb[core]\n", None),  # partial BOM
    (b"[a]\n\xef\xbb\xbfx=1\n", None),  # a BOM only counts at the start
    (b'[Section "Sub"]\n\tKey = v\n', [(b"section.Sub.key", b"v")]),
    (b'[a "b\\\\c\\"d\\e\\n"]x=1', [(b'a.b\\c"den.x', b"1")]),  # \\ and \" kept, others dropped
    (b"[a.B.c]x=1\n", [(b"a.b.c.x", b"1")]),  # old style: subsection lowercased
    (b'[a.B "C"]\nx=1\n', [(b"a.b.C.x", b"1")]),
    (b'[a "]=;#"]\nx=1\n', [(b"a.]=;#.x", b"1")]),
    (b'[a\t"b"]x', [(b"a.b.x", None)]),
    (b"[core] bare\n", [(b"core.bare", None)]),  # key after ']' on the same line
    (b"[core]bare=1 ;c\n", [(b"core.bare", b"1")]),
    (b"[a]\nb\nc =\nd=\n", [(b"a.b", None), (b"a.c", b""), (b"a.d", b"")]),
    (b"[a]\nb", [(b"a.b", None)]),  # bare key at EOF
    (b"[a]\nb=c", [(b"a.b", b"c")]),
    (b"[a]\n  b  =   x  y   \n", [(b"a.b", b"x  y")]),
    (b'[a]\nb = " x " \n', [(b"a.b", b" x ")]),
    (b'[a]\nb = a"b c"d\n', [(b"a.b", b"ab cd")]),
    (b'[a]\nb = "a;b#c" ; comment\n', [(b"a.b", b"a;b#c")]),
    (b"[a]\nb = a# comment\nc = x;y\n", [(b"a.b", b"a"), (b"a.c", b"x")]),
    (b'[a]\nb = \\\\ \\" \\n \\t \\b\n', [(b"a.b", b'\\ " \n \t \x08')]),
    (b"[a]\nb = \\x\n", None),  # invalid escape
    (b"[a]\n\n\nb = ok\\q\n", None),
    (b"[a]\nb = one\\\ntwo\n", [(b"a.b", b"onetwo")]),
    (b"[a]\nb = one \\\n  two\n", [(b"a.b", b"one   two")]),
    (b'[a]\nb = "one\\\ntwo"\n', [(b"a.b", b"onetwo")]),
    (b"[a]\nb = c \\", [(b"a.b", b"c ")]),  # backslash at EOF continues into nothing
    (b"[a]\r\nb = c\r\nd = e\\\r\nf\r\n", [(b"a.b", b"c"), (b"a.d", b"ef")]),
    (b'[a]\nb = "c\rd"\n', [(b"a.b", b"c\rd")]),  # a lone CR inside quotes is kept
    (b'[a]\nb = "x\ty"\n', [(b"a.b", b"x\ty")]),
    (b"[a]\nb =\tx\t\n", [(b"a.b", b"x")]),
    (b"[a]\nb = x\x0cy\n", [(b"a.b", b"x\x0cy")]),  # FF is not space to git
    (b"[a]\n\x0bb = 1\n", None),  # nor is VT
    (b"[a]\nb = \xff\xfe\xc3\xa9\n", [(b"a.b", b"\xff\xfe\xc3\xa9")]),
    (b'[a "\xff"]\nb = 1\n', [(b"a.\xff.b", b"1")]),
    (b"[a]\nb-2 = 1\nB = 2\n", [(b"a.b-2", b"1"), (b"a.b", b"2")]),
    (b"[a]\nb_c = 1\n", None),
    (b"[a]\n1b = 1\n", None),
    (b"[a]\nb c\n", None),
    (b"[a]\nb\t=\tc\n", [(b"a.b", b"c")]),
    (b"[a]\nb==c\n", [(b"a.b", b"=c")]),
    (b"[a]\nb ; comment\n", None),  # a bare key takes no comment
    (b'[a]\nb = "open\n', None),
    (b"[core\n", None),
    (b"[core", None),
    (b"[core ]\n", None),
    (b"[ core]\n", None),
    (b'[a "b" ]\n', None),
    (b'[a "b"\n', None),
    (b'[a "b\nc"]\n', None),
    (b'[a "b\\\nc"]\n', None),
    (b"[]\n", None),
    (b"[a_b]\n", None),
    (b"[a]]\n", None),
    (b"[a] [b] c = 1\n", [(b"b.c", b"1")]),
    (b"[a]\nx=1\n[a]\nx=2\n", [(b"a.x", b"1"), (b"a.x", b"2")]),
    (b"[a]\nb = \n", [(b"a.b", b"")]),
    (b'[a]\nb = ""  x\n', [(b"a.b", b"x")]),
    (b'[a]\nb = x "  "\n', [(b"a.b", b"x   ")]),
    (b'[a]\nb = "" \n', [(b"a.b", b"")]),
]


@pytest.mark.parametrize(("data", "expected"), PARSE_CASES)
def test_parse_cases(data: bytes, expected: Pairs | None) -> None:
    if expected is None:
        with pytest.raises(GitConfigError) as info:
            parse(data)
        assert not info.value.strict
    else:
        assert ours(data) == expected


@needs_git
@pytest.mark.parametrize(("data", "expected"), PARSE_CASES)
def test_parse_cases_agree_with_git(data: bytes, expected: Pairs | None, oracle: Oracle) -> None:
    theirs = oracle(data)
    assert isinstance(theirs, int) == (expected is None)
    assert_same_as_git(data, oracle)


# Files git reads but ringfence refuses as malformed: the refusal is deliberate.
STRICT_CASES = [
    b"[a]\nb = x\0y\n",  # git would cut the value at the NUL
    b"# \0 in a comment\n",
    b"[a]\nb = x\ty\n",  # git < 2.45 reads "x y", newer git "x\ty"
    b"[a]\nb = x\ry\n",
    b'[a]\nb = "q"\tz\n',
    b"key = v\n",  # a key before any section
    b"[.]\nx = 1\n",  # an empty section name
    b'[ "sub"]\nx = 1\n',
]


@pytest.mark.parametrize("data", STRICT_CASES)
def test_strict_refusals(data: bytes) -> None:
    with pytest.raises(GitConfigError) as info:
        parse(data)
    assert info.value.strict


@needs_git
@pytest.mark.parametrize("data", STRICT_CASES)
def test_strict_refusals_are_files_git_reads(data: bytes, oracle: Oracle) -> None:
    assert not isinstance(oracle(data), int)


def test_too_large_is_refused() -> None:
    with pytest.raises(GitConfigError, match="larger than"):
        parse(b"#" * (MAX_CONFIG_BYTES + 1))


def test_error_names_the_line() -> None:
    with pytest.raises(GitConfigError, match=r"line 3: invalid escape") as info:
        parse(b"[a]\nb = 1\nc = \\z\n")
    assert info.value.line == 3


def test_entries_carry_the_line_where_the_key_starts() -> None:
    entries = parse(b'[core]\n\n  bare = a\\\nb\\\nc\n[remote "o"] url = x\n')
    assert entries == [
        ConfigEntry("core", None, "bare", "abc", 3),
        ConfigEntry("remote", "o", "url", "x", 6),
    ]
    assert [e.key for e in entries] == ["core.bare", "remote.o.url"]


# Config-like bytes: sections, quotes, backslashes, comments, continuations, BOM, CRLF, odd
# whitespace, and now and then arbitrary bytes. Common tokens are repeated so that about half
# of the files are ones git reads (and the rest exercise the error paths).


def _weighted(common: list[bytes], rare: list[bytes], weight: int = 6) -> st.SearchStrategy[bytes]:
    return st.sampled_from(common * weight + rare)


_ws = _weighted([b"", b" ", b"\t"], [b"  \t", b"\r"])
_section = _weighted([b"core", b"Remote", b"a", b"b-c", b"x1", b"a.B"], [b"1x", b"a_b", b"", b"."])
_sub = st.lists(
    _weighted(
        [b"sub", b"S", b" ", b"\\\\", b'\\"', b".", b"]", b"\xff", b"\\n", b"#", b"="],
        [b"\\", b"\t", b"\n", b"\\\n", b"\r"],
    ),
    max_size=4,
).map(b"".join)
_value = st.lists(
    _weighted(
        [b"v", b"A b", b" ", b"  ", b'" q "', b"\\\\", b'\\"', b"\\n", b"\\t", b"\\b", b'"'],
        [
            *[b"\\\n", b"\\\r\n", b"#", b";", b"=", b"\xff", b"\xc3\xa9", b"[", b"]", b"\x0c"],
            *[b"\t", b"\r", b"\\x", b"\\", b"\x0b", b"\xef\xbb\xbf", b"\0"],
        ],
        weight=3,
    ),
    max_size=6,
).map(b"".join)
_header = st.one_of(
    st.builds(lambda n: b"[" + n + b"]", _section),
    st.builds(
        lambda n, w, s, tail: b"[" + n + w + b'"' + s + b'"' + tail,
        _section,
        _weighted([b" "], [b"\t", b"  ", b" \r"]),
        _sub,
        _weighted([b"]"], [b" ]", b"", b"]]", b"]x"]),
    ),
)
_keyline = st.builds(
    lambda w1, k, w2, eq, v: w1 + k + w2 + eq + v,
    _ws,
    _weighted([b"key", b"Key-2", b"url", b"a", b"fsMonitor"], [b"x_y", b"9a", b"-a"]),
    _ws,
    _weighted([b"=", b" = ", b"=\t"], [b"", b" ", b"=="]),
    _value,
)
_line = st.one_of(
    _header,
    _keyline,
    _keyline,
    _keyline,
    st.builds(lambda h, k: h + b" " + k, _header, _keyline),
    st.builds(lambda c, v: c + v, st.sampled_from([b"#", b";", b"  #"]), _value),
    st.just(b""),
    st.one_of(st.just(b""), st.just(b""), st.binary(max_size=4)),
)
_config = st.builds(
    lambda bom, first, lines, last: bom + first + b"".join(ln + eol for ln, eol in lines) + last,
    _weighted([b""], [b"\xef\xbb\xbf", b"\xef\xbb"], weight=12),
    _weighted([b"[a]\n", b'[remote "o"] '], [b""]),
    st.lists(st.tuples(_line, _weighted([b"\n", b"\r\n"], [b"\r", b"\n\n", b" \\\n"])), max_size=6),
    st.one_of(st.just(b""), _keyline),
)


@needs_git
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_config)
def test_parser_agrees_with_git_on_generated_configs(oracle: Oracle, data: bytes) -> None:
    assert_same_as_git(data, oracle)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _config))
def test_malformed_input_raises_only_gitconfigerror(data: bytes) -> None:
    for check in (
        parse,
        check_gitmodules,
        check_repo_config,
        without_worktree,
    ):
        try:
            check(data)
        except GitConfigError as err:
            assert str(err).startswith("malformed git config, line ")


# ---------------------------------------------------------------------------------------------
# Refusals: dangerous keys in many spellings


def spellings_2(section: str, name: str, value: str = "x") -> list[tuple[str, int]]:
    """(text, line of the key) for a two-level key, spelled every way git accepts."""
    s, n = section, name
    return [
        (f"[{s}]\n\t{n} = {value}\n", 2),
        (f"[{s.upper()}]\n\t{n.upper()} = {value}\n", 2),
        (f"[{s.title()}] {n} = {value}\n", 1),
        (f'[core]\nbare = false\n[{s}]\n{n} = "{value}"\n', 4),
        (f"[{s}]\n{n} = {value[:1]}\\\n{value[1:]}\n", 2),
        (f"\ufeff[{s}]\r\n# comment\r\n{n}={value}\r\n", 3),
        (f"[{s}]\n; {n} = ignored\n\t{n}\n", 3),  # bare: boolean true
    ]


def spellings_3(section: str, sub: str, name: str, value: str = "x") -> list[tuple[str, str, int]]:
    """(text, expected key, line) for a three-level key."""
    s, n = section, name
    key = f"{s.lower()}.{sub}.{n.lower()}"
    out = [
        (f'[{s} "{sub}"]\n\t{n} = {value}\n', key, 2),
        (f'[{s.upper()} "{sub}"] {n.upper()} = "{value}"\n', key, 1),
        (f'[{s}\t"{sub}"]\n{n} = {value[:1]}\\\n{value[1:]}\n', key, 2),
        (f'[core]\r\n\tbare = false\r\n[{s} "{sub}"]\r\n{n}={value}\r\n', key, 4),
        (f'[{s} "{sub}"]\n{n}\n', key, 2),
    ]
    if re.fullmatch(r"[A-Za-z0-9.-]+", sub):  # the old [section.subsection] form
        out.append((f"[{s}.{sub}]\n\t{n} = {value}\n", f"{s.lower()}.{sub.lower()}.{n.lower()}", 2))
    return out


DANGEROUS_2 = [
    ("core", "fsmonitor"),
    ("core", "hooksPath"),
    ("core", "sshCommand"),
    ("core", "pager"),
    ("core", "editor"),
    ("core", "askPass"),
    ("core", "gitProxy"),
    ("core", "alternateRefsCommand"),
    ("core", "attributesFile"),
    ("core", "excludesFile"),
    ("alias", "st"),
    ("include", "path"),
    ("sequence", "editor"),
    ("commit", "gpgSign"),
    ("diff", "external"),
    ("interactive", "diffFilter"),
    ("web", "browser"),
    ("gpg", "program"),
    ("credential", "helper"),
    ("http", "proxy"),
    ("http", "sslVerify"),
    ("protocol", "allow"),
    ("safe", "directory"),
    ("uploadpack", "packObjectsHook"),
    ("receive", "denyCurrentBranch"),
    ("pager", "log"),
    ("man", "viewer"),
    ("sendemail", "smtpServer"),
    ("pull", "twohead"),
    ("merge", "tool"),
    ("lfs", "url"),
    ("core", "protectNTFS"),
    ("hook", "x"),
    ("gc", "recentObjectsHook"),
]
DANGEROUS_3 = [
    ("filter", "lfs", "process"),
    ("filter", "lfs", "smudge"),
    ("credential", "https://example.com", "helper"),
    ("includeIf", "gitdir:/tmp/", "path"),
    ("url", "ext::sh -c x", "insteadOf"),
    ("url", "https://evil/", "pushInsteadOf"),
    ("protocol", "ext", "allow"),
    ("http", "https://example.com", "proxy"),
    ("remote", "origin", "uploadpack"),
    ("remote", "origin", "receivepack"),
    ("remote", "origin", "proxy"),
    ("remote", "origin", "vcs"),
    ("branch", "main", "mergeOptions"),
    ("diff", "pdf", "textconv"),
    ("diff", "pdf", "command"),
    ("merge", "ours", "driver"),
    ("merge", "ours", "ff"),  # merge.ff is fine; merge.<driver>.ff is not on the list
    ("gpg", "ssh", "program"),
    ("browser", "x", "cmd"),
    ("man", "x", "cmd"),
    ("difftool", "x", "cmd"),
    ("mergetool", "x", "cmd"),
    ("sendemail", "x", "smtpServer"),
    ("submodule", "sub", "gitdir"),
    ("core", "x", "bare"),  # core keys only at two levels
    ("user", "x", "name"),
]


@pytest.mark.parametrize(("section", "name"), DANGEROUS_2)
def test_dangerous_two_level_keys_are_refused(section: str, name: str) -> None:
    key = f"{section}.{name}".lower()
    for text, line in spellings_2(section, name, value="evil"):
        assert refused(text) == [(key, line)], text


@pytest.mark.parametrize(("section", "sub", "name"), DANGEROUS_3)
def test_dangerous_three_level_keys_are_refused(section: str, sub: str, name: str) -> None:
    for text, key, line in spellings_3(section, sub, name, value="evil"):
        assert refused(text) == [(key, line)], text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[core]\nfsmonitor = x\n", "runs a command"),
        ("[alias]\nx = !sh\n", "alias"),
        ("[include]\npath = /tmp/x\n", "another file"),
        ('[url "ext::sh"]\ninsteadOf = https://\n', "redirects git"),
        ('[diff "x"]\ntextconv = sh\n', "runs a command"),
        ("[frobnicate]\nx = 1\n", "not on ringfence's list"),
        ("[core]\nfrobnicate = 1\n", "not on ringfence's list"),
    ],
)
def test_refusals_say_why(text: str, why: str) -> None:
    [r] = check_repo_config(text.encode())
    assert why in r.why


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "foo::bar",
        "x+y.z::whatever",
        "-oProxyCommand=sh",
        "ssh://-oProxyCommand=sh/x",
        "ssh://user@-oProxyCommand=sh/x",
        "ssh://host:-1/x",
        "git+ssh://[-oProxyCommand=sh]/x",
        "git@-oProxyCommand=sh:x",
        "host:-path",
        "[-o]:x",
        ":path",
        "foo://example.com/x",
        "HTTPS://example.com/x",
        "rsync://example.com/x",
        "file://-x",
        "https://example.com/x\\n",  # escaped newline: a control character in the URL
        "",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    text = f'[remote "origin"]\n\turl = "{url}"\n'
    assert refused(text) == [("remote.origin.url", 2)]
    text = f'[remote "origin"]\n\tpushurl = "{url}"\n'
    assert refused(text) == [("remote.origin.pushurl", 2)]
    text = f'[submodule "s"]\n\tpath = s\n\turl = "{url}"\n'
    assert [(r.key, r.line) for r in check_gitmodules(text.encode())] == [("submodule.s.url", 3)]
    assert refused(f'[branch "main"]\n\tremote = "{url}"\n') == [("branch.main.remote", 2)]


def test_a_bare_url_is_refused() -> None:
    assert refused('[remote "o"]\nurl\n') == [("remote.o.url", 2)]


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/owner/repo.git",
        "http://example.com/x",
        "ssh://git@example.com:2222/owner/repo.git",
        "ssh://[::1]/repo",
        "git://example.com/repo",
        "git+ssh://example.com/repo",
        "file:///srv/repo.git",
        "git@github.com:owner/repo.git",
        "example.com:repo",
        "/srv/git/repo.git",
        "../sibling",
        "./sub",
        "origin",
        "dir/with:colon",
    ],
)
def test_plain_urls_are_allowed(url: str) -> None:
    assert url_problem(url) is None
    text = f'[remote "origin"]\n\turl = {url}\n\tpushurl = {url}\n[branch "x"]\n\tremote = {url}\n'
    assert refused(text) == []


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[submodule "s"]\nupdate = !sh -c evil\n', "submodule.s.update"),
        ('[submodule "s"]\nupdate = "!sh"\n', "submodule.s.update"),
        ('[submodule "s"]\nupdate = Checkout\n', "submodule.s.update"),
        ('[submodule "s"]\nupdate\n', "submodule.s.update"),
        ('[submodule "../../x"]\nurl = https://e/x\n', "submodule.../../x.url"),
        ('[branch "main"]\nrebase = interactive\n', "branch.main.rebase"),
        ("[pull]\nrebase = interactive\n", "pull.rebase"),
        ("[core]\nsharedRepository = group\n", "core.sharedrepository"),
        ("[core]\nsharedRepository = 0777\n", "core.sharedrepository"),
        ('[remote "o"]\ntagOpt = --upload-pack=evil\n', "remote.o.tagopt"),
        ('[remote "o"]\nfetch = --upload-pack=evil\n', "remote.o.fetch"),
        ("[extensions]\npartialClone = ext::sh\n", "extensions.partialclone"),
        ("[remote]\npushDefault = ext::sh\n", "remote.pushdefault"),
        ("[color]\nui = $(evil)\n", "color.ui"),
        ("[advice]\ndetachedHead = sh\n", "advice.detachedhead"),
        ('[remote ""]\nurl = https://e/x\n', "remote..url"),
        ("[core.]\nbare = true\n", "core..bare"),
        ("[core]\nrepositoryFormatVersion = one\n", "core.repositoryformatversion"),
    ],
)
def test_bad_values_are_refused(text: str, key: str) -> None:
    assert [k for k, _line in refused(text)] == [key]


def test_core_worktree_is_refused_and_taken_out_where_git_writes_it() -> None:
    """git submodule writes ``\tworktree = ../../../sub`` on a line of its own: the guard keeps
    the config without it (git then finds the checkout by its .git file). Anything it cannot
    take out cleanly stays, and is refused."""
    good = b"[core]\n\tbare = false\n\tworktree = ../../../sub\n[user]\n\tname = a\n"
    [r] = check_repo_config(good)
    assert (r.key, r.line) == ("core.worktree", 3) and "re-aimed" in r.why
    kept = without_worktree(good)
    assert kept == b"[core]\n\tbare = false\n[user]\n\tname = a\n"
    assert check_repo_config(kept) == []
    assert without_worktree(kept) == kept
    assert without_worktree(b"[CORE]\r\n  WorkTree=x\r\n") == b"[CORE]\r\n"
    for tangled in (
        b"[core] worktree = x\n",  # shares the header's line
        b"[core]\n\tworktree = a\\\nb\n",  # continues onto the next line
    ):
        with pytest.raises(GitConfigError):
            without_worktree(tangled)
    other = b'[core "x"]\n\tworktree = /y\n'  # another key: untouched, and not on the list
    assert without_worktree(other) == other
    assert [r.key for r in check_repo_config(other)] == ["core.x.worktree"]


def test_harmless_knobs_are_allowed() -> None:
    text = """
[core]
\trepositoryformatversion = 1
\tfilemode = false
\tignorecase = true
\tprecomposeunicode = true
\tautocrlf = input
\tsymlinks = false
\tsharedRepository = umask
\tcommentChar = ";"
\twhitespace = trailing-space,tabwidth=4
\tabbrev = auto
[extensions]
\tobjectFormat = sha256
\trefStorage = reftable
\tworktreeConfig = true
\tpartialClone = origin
[user]
\tname = "Ann O'Nymous"
\temail = ann@example.com
[init]
\tdefaultBranch = main
[pull]
\trebase = false
\tff = only
[push]
\tdefault = simple
\tautoSetupRemote = true
[fetch]
\tprune = true
[merge]
\tff = false
[rebase]
\tautoStash = true
[gc]
\tauto = 0
[status]
\tshowUntrackedFiles = no
[color]
\tui = auto
[color "diff"]
\tmeta = yellow bold
[advice]
\tdetachedHead = false
[index]
\tversion = 4
[pack]
\tthreads = 2
[maintenance]
\tauto = false
[lfs]
\trepositoryformatversion = 0
[lfs "https://example.com/repo.git/info/lfs"]
\taccess = basic
[remote "origin"]
\turl = https://example.com/repo.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
\ttagOpt = --no-tags
\tpromisor = true
\tpartialclonefilter = blob:none
[branch "main"]
\tremote = origin
\tmerge = refs/heads/main
\trebase = merges
\tdescription = "What this branch is for.\\nSecond line."
[submodule "lib/x"]
\turl = ../x.git
\tactive = true
\tupdate = rebase
"""
    assert refused(text) == []


# .gitmodules


def gitmodules_refused(text: str) -> list[tuple[str, int]]:
    return [(r.key, r.line) for r in check_gitmodules(text.encode())]


def test_gitmodules_allows_what_submodule_add_writes() -> None:
    text = (
        '[submodule "lib/x"]\n\tpath = lib/x\n\turl = https://example.com/x.git\n'
        "\tbranch = main\n\tupdate = merge\n\tshallow = true\n\tignore = dirty\n"
        "\tfetchRecurseSubmodules = on-demand\n"
    )
    assert gitmodules_refused(text) == []


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[submodule "x"]\n\tupdate = !touch /tmp/pwned\n', "submodule.x.update"),
        ('[submodule "x"]\n\tpath = ../outside\n', "submodule.x.path"),
        ('[submodule "x"]\n\tpath = a/../../b\n', "submodule.x.path"),
        ('[submodule "x"]\n\tpath = /etc\n', "submodule.x.path"),
        ('[submodule "x"]\n\tpath = -x\n', "submodule.x.path"),
        ('[submodule "x"]\n\tpath = .git/hooks\n', "submodule.x.path"),
        ('[submodule "x"]\n\tpath = a\\\\..\\\\..\\\\b\n', "submodule.x.path"),
        ('[submodule "../../modules/x"]\n\tpath = x\n', "submodule.../../modules/x.path"),
        ('[submodule "a\\\\..\\\\b"]\n\tpath = x\n', "submodule.a\\..\\b.path"),
        ('[submodule "/abs"]\n\tpath = x\n', "submodule./abs.path"),
        ('[submodule "-x"]\n\tpath = x\n', "submodule.-x.path"),
        ('[submodule "x"]\n\turl = ext::sh -c evil\n', "submodule.x.url"),
        ('[submodule "x"]\n\tgitdir = /tmp/x\n', "submodule.x.gitdir"),
        ('[submodule "x"]\n\tactive = true\n', "submodule.x.active"),
        ("[submodule]\n\trecurse = true\n", "submodule.recurse"),
        ("[core]\n\tfsmonitor = evil\n", "core.fsmonitor"),
        ('[Submodule.X] UPDATE = "!evil"\n', "submodule.x.update"),
    ],
)
def test_gitmodules_refusals(text: str, key: str) -> None:
    assert [k for k, _ in gitmodules_refused(text)] == [key]


def test_gitmodules_malformed_raises() -> None:
    with pytest.raises(GitConfigError):
        check_gitmodules(b'[submodule "x"\n\tpath = x\n')


# describe


def test_describe() -> None:
    assert describe([]) == "no git config keys refused"
    one = describe([Refusal("core.fsmonitor", 3, "runs a command")])
    assert one == "refused git config key: core.fsmonitor (line 3): runs a command"
    many = describe([Refusal(f"alias.a{i}", i, "x") for i in range(8)])
    assert many.endswith("; and 3 more")
    assert "\n" not in describe([Refusal("a.\x1b[31m\udcff.b", 1, "x")])
    assert "\x1b" not in describe([Refusal("a.\x1b[31m.b", 1, "x")])


# ---------------------------------------------------------------------------------------------
# What real git writes is accepted


@pytest.fixture(scope="module")
def real_git_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Config files written by git init, clone, remote add, branch -u, submodule add, ..."""
    assert GIT is not None
    root = tmp_path_factory.mktemp("real")
    env = git_env(root / "home")
    (root / "home").mkdir()

    def git(*args: str, cwd: Path = root) -> None:
        subprocess.run(
            [GIT, "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "lib")
    (root / "lib" / "f").write_text("x\n")
    git("add", "f", cwd=root / "lib")
    git("commit", "-qm", "lib", cwd=root / "lib")

    git("init", "-q", "sup")
    sup = root / "sup"
    git("commit", "-q", "--allow-empty", "-m", "init", cwd=sup)
    git("config", "--local", "user.email", "someone@example.com", cwd=sup)
    git("config", "user.name", "Some One", cwd=sup)
    git("remote", "add", "upstream", "https://example.com/up.git", cwd=sup)
    git("remote", "add", "fork", "git@example.com:me/fork.git", cwd=sup)
    git("submodule", "add", "-q", "../lib", "libs/lib", cwd=sup)
    git("commit", "-qm", "add lib", cwd=sup)
    git("config", "branch.main.description", "main line\nsecond", cwd=sup)

    git("clone", "-q", "--recurse-submodules", "sup", "clone")
    clone = root / "clone"
    git("branch", "feature", cwd=clone)
    git("branch", "-u", "origin/main", "feature", cwd=clone)
    git("remote", "set-url", "--push", "origin", "ssh://git@example.com/x.git", cwd=clone)
    git("config", "pull.rebase", "false", cwd=clone)
    git("sparse-checkout", "set", "--cone", "libs", cwd=clone)
    git("maintenance", "register", cwd=clone)

    git("clone", "-q", "--bare", "sup", "bare.git")
    git("clone", "-q", "--mirror", "sup", "mirror.git")
    lib_config = (root / "lib/.git/config").read_bytes()
    git("-C", "lib", "config", "uploadpack.allowFilter", "true")  # serve the partial clone
    git("clone", "-q", "--filter=blob:none", f"file://{root / 'lib'}", "partial")
    git("init", "-q", "--object-format=sha256", "sha256")
    git("init", "-q", "--bare", "plain.git")

    files = {
        "superproject": sup / ".git/config",
        "superproject .gitmodules": sup / ".gitmodules",
        "submodule": sup / ".git/modules/libs/lib/config",
        "clone": clone / ".git/config",
        "clone's submodule": clone / ".git/modules/libs/lib/config",
        "bare clone": root / "bare.git/config",
        "mirror": root / "mirror.git/config",
        "partial clone": root / "partial/.git/config",
        "sha256": root / "sha256/.git/config",
        "bare init": root / "plain.git/config",
    }
    return {"init": lib_config} | {name: path.read_bytes() for name, path in files.items()}


@needs_git
def test_what_git_writes_is_allowed(real_git_files: dict[str, bytes], oracle: Oracle) -> None:
    taken_out = []
    for name, data in real_git_files.items():
        assert_same_as_git(data, oracle)
        if name.endswith(".gitmodules"):
            assert check_gitmodules(data) == [], name
        else:
            kept = without_worktree(data)
            if kept != data:
                taken_out.append(name)
            assert check_repo_config(kept) == [], (name, data)
    assert sorted(taken_out) == ["clone's submodule", "submodule"]  # git submodule's core.worktree
    assert b"[submodule]\n\tactive = ." in real_git_files["clone"]
    assert b"partialclonefilter" in real_git_files["partial clone"]
