"""Judge a proposed git config file by the keys it sets: an allowlist, parsed the way git does.

The threat: a sandboxed command may replace a repository's ``.git/config`` (git writes
``config.lock`` and renames it onto ``config``), a submodule's ``.git/modules/*/config``, or
``.gitmodules``. Afterwards the *real* git, run by the user with full rights outside the
sandbox, reads that file, and many keys make git run a program (``core.fsmonitor``,
``core.sshCommand``, ``alias.*``, ``filter.*``, ``diff.*.textconv``, ``submodule.*.update =
!cmd``, ``ext::`` URLs ...) or send it elsewhere (``include.path``, ``url.*.insteadOf``,
``core.hooksPath``, ``http.proxy`` ...). Git keeps adding such keys, so a list of dangerous
keys would always be one release behind: this module names the keys *known to be harmless*
(and, where it matters, the values they may take), and everything else is refused.

An allowlist is only as good as the parser under it. The attacker controls every byte, so
if git could read a key from the bytes that we did not see, or saw differently, the check is
worthless. The parser below therefore mirrors git's own, ``config.c`` (``git_parse_source``,
``get_base_var``, ``get_extended_base_var``, ``get_value``, ``parse_value``,
``get_next_char``), character by character, with git's ASCII-only ctype, so that both accept
the same files and read the same keys and values; the unit tests compare it with a real git.
Where git versions disagree (before 2.45 git turned tabs inside an unquoted value into
spaces) or git would read something we cannot represent faithfully (a NUL byte truncates a
value), the whole file is refused as malformed rather than guessed at.

Pure functions of bytes: the supervisor that sees the rename reads the file and calls these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

MAX_CONFIG_BYTES: Final = 1 << 20  # 1 MiB; git writes a few hundred bytes to a few KiB

# --------------------------------------------------------------------------------------------
# Results


class GitConfigError(ValueError):
    """The bytes are not a config file ringfence will judge; ``str()`` names what and where.

    ``strict`` is True when git itself would read the file but ringfence refuses it anyway
    (NUL bytes, a key before any section, whitespace git versions read differently, ...).
    """

    def __init__(self, line: int, what: str, *, strict: bool = False) -> None:
        super().__init__(f"malformed git config, line {line}: {what}")
        self.line = line
        self.what = what
        self.strict = strict


@dataclass(frozen=True)
class ConfigEntry:
    """One ``key = value`` as git reads it."""

    section: str  # lowercased
    subsection: str | None  # case kept; None for a two-level key
    name: str  # lowercased
    value: str | None  # None = bare key (boolean true); bytes beyond UTF-8 as surrogateescape
    line: int  # 1-based line where the key starts

    @property
    def key(self) -> str:
        """Git's canonical spelling: ``section.name`` or ``section.<subsection>.name``."""
        if self.subsection is None:
            return f"{self.section}.{self.name}"
        return f"{self.section}.{self.subsection}.{self.name}"


@dataclass(frozen=True)
class Refusal:
    """A key the proposed file may not set, and why (a short phrase, without the key)."""

    key: str
    line: int
    why: str


# --------------------------------------------------------------------------------------------
# The parser: a transcription of git's config.c. Git reads bytes with fgetc and classifies them
# with its own locale-independent ctype (sane_ctype in ctype.c): ASCII letters and digits only,
# and "space" is exactly SP, HT, LF, CR (not VT or FF).

_EOF: Final = -1
_LF: Final = 0x0A
_CR: Final = 0x0D
_SP: Final = 0x20
_HT: Final = 0x09
_BOM: Final = b"\xef\xbb\xbf"
_SPACE: Final = frozenset({_SP, _HT, _LF, _CR})
_ALPHA: Final = frozenset(range(0x41, 0x5B)) | frozenset(range(0x61, 0x7B))
_ALNUM: Final = _ALPHA | frozenset(range(0x30, 0x3A))
_KEYCHAR: Final = _ALNUM | {ord("-")}  # iskeychar()
# parse_value(): \t \b \n and \\ \" are the only escapes; any other is an error.
_ESCAPES: Final = {
    ord(k): ord(v) for k, v in {"t": "\t", "b": "\b", "n": "\n", "\\": "\\", '"': '"'}.items()
}


def _tolower(c: int) -> int:
    return c + 0x20 if 0x41 <= c <= 0x5A else c


class _Source:
    """git's ``struct config_source``: the bytes, a position, the line number, an EOF flag."""

    __slots__ = ("data", "eof", "linenr", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.linenr = 1
        self.eof = False

    def _getc(self) -> int:
        if self.pos >= len(self.data):
            return _EOF
        c = self.data[self.pos]
        self.pos += 1
        return c

    def next_char(self) -> int:
        """get_next_char(): CR LF reads as LF; at EOF, LF (again and again) with ``eof`` set."""
        c = self._getc()
        if c == _CR:
            c = self._getc()
            if c != _LF:
                if c != _EOF:
                    self.pos -= 1
                c = _CR
        if c == _LF:
            self.linenr += 1
        if c == _EOF:
            self.eof = True
            self.linenr += 1
            c = _LF
        return c

    def error(self, what: str) -> GitConfigError:
        return GitConfigError(self.linenr, what)


def parse(data: bytes) -> list[ConfigEntry]:
    """Every key/value git would read from ``data``, in order; GitConfigError if git would not
    read the file, or would read it in a way ringfence refuses to guess at."""
    _precheck(data)
    src = _Source(data)
    entries: list[ConfigEntry] = []
    stem = b""  # "section." or "section.subsection." (git's var up to baselen)
    comment = False
    bom: int | None = 0  # how much of a UTF-8 BOM has been skipped; None once past it
    while True:
        c = src.next_char()
        if bom is not None and bom < len(_BOM):
            if c == _BOM[bom]:
                bom += 1
                continue
            if bom:
                raise src.error("incomplete UTF-8 byte order mark")
            bom = None
        if c == _LF:
            if src.eof:
                return entries
            comment = False
            continue
        if comment:
            continue
        if c in _SPACE:
            continue
        if c in (ord("#"), ord(";")):
            comment = True
            continue
        if c == ord("["):
            header = _section_header(src)
            if not header:
                raise src.error("empty section name")
            stem = bytes(header) + b"."
            continue
        if c not in _ALPHA:
            raise src.error(f"unexpected {_show_byte(c)} (a key must start with a letter)")
        line = src.linenr
        name, value = _key_and_value(src, c)
        entries.append(_entry(stem + name, value, line))


def _precheck(data: bytes) -> None:
    if len(data) > MAX_CONFIG_BYTES:
        raise GitConfigError(1, f"larger than {MAX_CONFIG_BYTES} bytes", strict=True)
    nul = data.find(b"\0")
    if nul >= 0:
        # git would silently cut a value short at a NUL; there is no honest reading of it.
        line = data.count(b"\n", 0, nul) + 1
        raise GitConfigError(line, "NUL byte", strict=True)


def _section_header(src: _Source) -> bytearray:
    """get_base_var(): after '[', up to and including ']'. ``[a.B]`` reads as ``a.b``."""
    name = bytearray()
    while True:
        c = src.next_char()
        if src.eof:
            raise src.error("section header not closed")
        if c == ord("]"):
            return name
        if c in _SPACE:
            _subsection(src, name, c)
            return name
        if c not in _KEYCHAR and c != ord("."):
            raise src.error(f"{_show_byte(c)} in a section name")
        name.append(_tolower(c))


def _subsection(src: _Source, name: bytearray, c: int) -> None:
    """get_extended_base_var(): ``[section "sub"]``; in the quotes a backslash keeps the next
    character (whatever it is) and the subsection keeps its case."""
    while True:
        if c == _LF:
            src.linenr -= 1
            raise src.error("section header not closed")
        c = src.next_char()
        if c not in _SPACE:
            break
    if c != ord('"'):
        raise src.error('expected a quoted subsection name: [section "subsection"]')
    name.append(ord("."))
    while True:
        c = src.next_char()
        if c == _LF:
            src.linenr -= 1
            raise src.error("subsection name not closed")
        if c == ord('"'):
            break
        if c == ord("\\"):
            c = src.next_char()
            if c == _LF:
                src.linenr -= 1
                raise src.error("subsection name not closed")
        name.append(c)
    if src.next_char() != ord("]"):
        raise src.error("expected ']' right after the subsection's closing quote")


def _key_and_value(src: _Source, first: int) -> tuple[bytes, bytes | None]:
    """get_value(): the variable name (letters, digits, '-'), then nothing or '=' and a value."""
    name = bytearray([_tolower(first)])
    while True:
        c = src.next_char()
        if src.eof or c not in _KEYCHAR:
            break
        name.append(_tolower(c))
    while c in (_SP, _HT):
        c = src.next_char()
    if c == _LF:
        return bytes(name), None
    if c != ord("="):
        raise src.error(f"{_show_byte(c)} after the key name (expected '=' or end of line)")
    return bytes(name), _value(src)


def _value(src: _Source) -> bytes:
    """parse_value(), in both of its historical forms at once.

    git < 2.45 turned each run of unquoted whitespace inside a value into as many spaces;
    git >= 2.45 keeps it verbatim. Both drop leading and trailing unquoted whitespace. A value
    the two read differently (an unquoted tab or CR inside it) is refused: one of them would
    not be reading what we checked.
    """
    quote = False
    comment = False
    new = bytearray()  # git >= 2.45
    trim_len = 0
    old = bytearray()  # git < 2.45
    spaces = 0
    while True:
        c = src.next_char()
        if c == _LF:
            if quote:
                src.linenr -= 1
                raise src.error("unclosed double quote in a value")
            if trim_len:
                del new[trim_len:]
            if new != old:
                raise GitConfigError(
                    src.linenr - 1,
                    "tab or carriage return inside an unquoted value (git versions differ on it)",
                    strict=True,
                )
            return bytes(new)
        if comment:
            continue
        if c in _SPACE and not quote:
            if not trim_len:
                trim_len = len(new)
            if new:
                new.append(c)
            if old:
                spaces += 1
            continue
        if not quote and c in (ord("#"), ord(";")):
            comment = True
            continue
        trim_len = 0
        old.extend(b" " * spaces)
        spaces = 0
        if c == ord("\\"):
            c = src.next_char()
            if c == _LF:
                continue  # backslash-newline: the value goes on on the next line
            if c not in _ESCAPES:
                raise src.error(f"invalid escape '\\{_show_byte(c, quoted=False)}' in a value")
            new.append(_ESCAPES[c])
            old.append(_ESCAPES[c])
            continue
        if c == ord('"'):
            quote = not quote
            continue
        new.append(c)
        old.append(c)


def _entry(var: bytes, value: bytes | None, line: int) -> ConfigEntry:
    """Split git's full variable name the way git's parse_config_key() does: section up to the
    first dot, name after the last, subsection (if any) in between."""
    first = var.find(b".")
    if first < 0:
        raise GitConfigError(line, "key before any [section] header", strict=True)
    if first == 0:
        raise GitConfigError(line, "empty section name", strict=True)
    last = var.rfind(b".")
    section = var[:first].decode("ascii")  # iskeychar() only: ASCII
    name = var[last + 1 :].decode("ascii")
    subsection = _text(var[first + 1 : last]) if last > first else None
    return ConfigEntry(section, subsection, name, None if value is None else _text(value), line)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _show_byte(c: int, *, quoted: bool = True) -> str:
    if c == _LF:
        return "end of line"
    shown = chr(c) if 0x21 <= c <= 0x7E else f"\\x{c:02x}"
    return f"'{shown}'" if quoted else shown


# --------------------------------------------------------------------------------------------
# Values. A check returns None when the value is fine, else a short phrase saying why not.

Check = Callable[[str | None], str | None]

_BOOL_RE: Final = re.compile(r"(?i)true|false|yes|no|on|off|-?[0-9]+|")
_INT_RE: Final = re.compile(r"-?[0-9]+[kmgKMG]?")
_WORD_RE: Final = re.compile(r"[A-Za-z0-9_.,:=+-]*")
_COLOR_RE: Final = re.compile(r"[A-Za-z0-9# -]*")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
NEEDS_VALUE: Final = "needs a value"


def _bool(v: str | None) -> str | None:
    if v is None or _BOOL_RE.fullmatch(v):
        return None
    return "value must be true or false"


def _bool_or(*words: str) -> Check:
    def check(v: str | None) -> str | None:
        if v is None or _BOOL_RE.fullmatch(v) or v in words:
            return None
        return f"value must be true, false or {' or '.join(words)}"

    return check


def _one_of(*words: str) -> Check:
    def check(v: str | None) -> str | None:
        if v in words:
            return None
        return f"value must be {', '.join(words[:-1])} or {words[-1]}"

    return check


def _int(v: str | None) -> str | None:
    if v is not None and _INT_RE.fullmatch(v):
        return None
    return "value must be a number"


def _word(v: str | None) -> str | None:
    """An enum-like setting (``simple``, ``auto``, ``trailing-space,tabwidth=4``)."""
    if v is not None and _WORD_RE.fullmatch(v):
        return None
    return "value must be a plain word"


def _color(v: str | None) -> str | None:
    if v is None or _COLOR_RE.fullmatch(v):
        return None
    return "value must be a colour or true/false/auto"


def _any(v: str | None) -> str | None:
    """Free text git only stores or displays (a name, an email, a description)."""
    return NEEDS_VALUE if v is None else None


def _plain(v: str | None) -> str | None:
    """A ref name, refspec, filter spec or pathspec: no control characters, no leading '-'."""
    if v is None:
        return NEEDS_VALUE
    if _CONTROL_RE.search(v):
        return "control character in the value"
    if v.startswith("-"):
        return "value starts with '-'"
    return None


def _char(v: str | None) -> str | None:
    if v is None:
        return NEEDS_VALUE
    return "control character in the value" if _CONTROL_RE.search(v) else None


def _shared_repository(v: str | None) -> str | None:
    # group/all/0xxx make files git creates later group- or world-writable: someone else could
    # then change what git runs. Only "follow the umask" is known harmless.
    if v is not None and v.lower() in {"umask", "false", "no", "off", "0"}:
        return None
    return "would make the repository writable by other users (only 'umask' is allowed)"


# Transports git runs itself (transport.c: transport_get, connect.c). Any other "scheme://"
# makes git run git-remote-<scheme>; "<transport>::<address>" runs git-remote-<transport>, and
# "ext::<command>" runs <command>.
URL_SCHEMES: Final = frozenset({"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"})
_HELPER_RE: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9+.-]*)::")  # is_urlschemechar() + "::"
_SCHEME_RE: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9+.-]*)://")  # is_url()
_OPTION_RE: Final = re.compile(r"(?:^|[@:\[])-")  # a host, user or port that starts with '-'


def url_problem(v: str | None) -> str | None:
    """None if ``v`` is a plain URL (http(s)/ssh/git/file, scp-like ``host:path``, or a local
    path); else why not. Also used for values git takes as "a remote name or a URL"."""
    if v is None or v == "":
        return NEEDS_VALUE
    if _CONTROL_RE.search(v):
        return "control character in the URL"
    if v.startswith("-"):
        return "URL starts with '-' (would be read as an option)"
    helper = _HELPER_RE.match(v)
    if helper or "::" in v.split("/", 1)[0]:
        name = helper.group(1) if helper else "..."
        return f"URL uses a remote helper ('{_printable(name)}::'), which runs a program"
    scheme = _SCHEME_RE.match(v)
    if scheme:
        if scheme.group(1) not in URL_SCHEMES:
            return f"URL scheme '{_printable(scheme.group(1))}' is not http(s), ssh, git or file"
        rest = v[scheme.end() :]
        authority = rest.split("/", 1)[0]
        if rest.startswith("-") or _OPTION_RE.search(authority):
            return "URL host, user or port starts with '-' (would be read as an option)"
        return None
    colon, slash = v.find(":"), v.find("/")
    if colon >= 0 and (slash < 0 or colon < slash):  # scp-like [user@]host:path, over ssh
        if colon == 0:
            return "URL has an empty host"
        if _OPTION_RE.search(v[:colon]) or v[colon + 1 :].startswith("-"):
            return "URL host, user or path starts with '-' (would be read as an option)"
    return None


def submodule_path_problem(v: str | None) -> str | None:
    """A submodule name or path: relative, no '..' or '.git' component, no leading '-'
    (git's check_submodule_name() and verify_path(), CVE-2018-11235/CVE-2017-1000117)."""
    if v is None or v == "":
        return NEEDS_VALUE
    if _CONTROL_RE.search(v):
        return "control character in a submodule name or path"
    if v.startswith(("/", "\\", "-")):
        return "submodule name or path starts with '/' or '-'"
    parts = re.split(r"[/\\]", v)
    if ".." in parts:
        return "submodule name or path has a '..' component"
    if any(p.lower().rstrip(". ") == ".git" for p in parts):  # also ".git." and ".GIT "
        return "submodule name or path has a '.git' component"
    return None


def _printable(s: str) -> str:
    return "".join(ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else "?" for ch in s)


# --------------------------------------------------------------------------------------------
# The allowlist for a repository's config (.git/config, .git/modules/*/config).

# Two-level keys: section -> name -> check.
REPO_KEYS: Final[dict[str, dict[str, Check]]] = {
    # core: settings that change how git stores and compares files, never a program or a path
    # git would read or run (core.fsmonitor, core.hooksPath, core.sshCommand, core.pager,
    # core.editor, core.askPass, core.gitProxy, core.alternateRefsCommand, core.excludesFile,
    # core.attributesFile are all absent on purpose). core.worktree is judged by the caller.
    "core": {
        "repositoryformatversion": _int,
        "filemode": _bool,
        "bare": _bool,
        "logallrefupdates": _bool_or("always"),
        "ignorecase": _bool,
        "precomposeunicode": _bool,
        "symlinks": _bool,
        "autocrlf": _bool_or("input"),
        "eol": _word,
        "safecrlf": _bool_or("warn"),
        "quotepath": _bool,
        "compression": _int,
        "loosecompression": _int,
        "bigfilethreshold": _int,
        "abbrev": _word,
        "checkstat": _word,
        "trustctime": _bool,
        "ignorestat": _bool,
        "untrackedcache": _bool_or("keep"),
        "splitindex": _bool,
        "preloadindex": _bool,
        "sparsecheckout": _bool,
        "sparsecheckoutcone": _bool,
        "commentchar": _char,
        "commentstring": _char,
        "whitespace": _word,
        "warnambiguousrefs": _bool,
        "commitgraph": _bool,
        "multipackindex": _bool,
        "sharedrepository": _shared_repository,
    },
    # Identity recorded in commits: stored text, never run.
    "user": {"name": _any, "email": _any},
    "author": {"name": _any, "email": _any},
    "committer": {"name": _any, "email": _any},
    "init": {"defaultbranch": _plain},
    # Repository format (git init/clone write these). partialClone names the promisor remote,
    # which git fetches from by name, so it is held to the URL rules like any remote name.
    # worktreeConfig makes git also read config.worktree files, which ringfence protects too.
    "extensions": {
        "objectformat": _word,
        "refstorage": _word,
        "worktreeconfig": _bool,
        "partialclone": url_problem,
        "preciousobjects": _bool,
        "noop": _any,
    },
    # Behaviour knobs whose values are booleans, numbers or fixed words; none names a program.
    # (pull.twohead/octopus name merge strategies, i.e. programs; merge.tool a tool: absent.)
    "pull": {"rebase": _bool_or("merges"), "ff": _bool_or("only")},
    "push": {"default": _word, "autosetupremote": _bool, "followtags": _bool},
    "fetch": {"prune": _bool, "prunetags": _bool},
    "merge": {"ff": _bool_or("only"), "conflictstyle": _word},
    "rebase": {"autostash": _bool, "autosquash": _bool, "updaterefs": _bool},
    "rerere": {"enabled": _bool, "autoupdate": _bool},
    "gc": {"auto": _int, "autopacklimit": _int, "autodetach": _bool},
    "status": {
        name: _word
        for name in (
            "relativepaths",
            "short",
            "branch",
            "aheadbehind",
            "displaycommentprefix",
            "renamelimit",
            "renames",
            "showstash",
            "showuntrackedfiles",
            "submodulesummary",
        )
    },
    "index": {"version": _int, "sparse": _bool, "threads": _word},
    "pack": {"threads": _int},
    "maintenance": {"auto": _bool, "strategy": _word},  # git maintenance register
    "lfs": {"repositoryformatversion": _int},  # written by git-lfs; lfs.url is not allowed
    "branch": {"autosetupmerge": _word, "autosetuprebase": _word},
    # The default push remote is a remote name or a URL (remote.c takes either).
    "remote": {"pushdefault": url_problem},
    # Which submodules are active (a pathspec; git clone --recurse-submodules writes ".").
    "submodule": {"active": _plain},
}

# Three-level keys: section -> name -> check, for any (non-empty) subsection.
REPO_SUBSECTION_KEYS: Final[dict[str, dict[str, Check]]] = {
    # Remotes: where git fetches from and pushes to, held to plain URLs; refspecs; flags.
    # (uploadpack/receivepack run programs, vcs runs a remote helper, proxy redirects: absent.)
    "remote": {
        "url": url_problem,
        "pushurl": url_problem,
        "fetch": _plain,
        "push": _plain,
        "mirror": _bool,
        "tagopt": _one_of("--no-tags", "--tags"),
        "prune": _bool,
        "prunetags": _bool,
        "skipdefaultupdate": _bool,
        "skipfetchall": _bool,
        "promisor": _bool,
        "partialclonefilter": _plain,
    },
    # Upstream tracking. branch.<name>.remote may be a URL as well as a remote name (remote.c
    # falls back to using it as one), so it meets the URL rules; rebase=interactive would open
    # an editor on every pull; mergeOptions passes options to git merge: absent.
    "branch": {
        "remote": url_problem,
        "pushremote": url_problem,
        "merge": _plain,
        "rebase": _bool_or("merges"),
        "description": _any,
    },
    # Submodules: URLs as for remotes; update only as one of git's built-in modes ("!cmd" runs
    # a command); gitdir redirects git: absent.
    "submodule": {
        "url": url_problem,
        "path": submodule_path_problem,
        "active": _bool,
        "branch": _plain,
        "shallow": _bool,
        "ignore": _one_of("all", "dirty", "untracked", "none"),
        "fetchrecursesubmodules": _bool_or("on-demand"),
        "update": _one_of("checkout", "rebase", "merge", "none"),
    },
    # git-lfs remembers how to authenticate to an LFS endpoint (lfs.<url>.access = basic).
    "lfs": {"access": _one_of("basic", "negotiate", "none"), "locksverify": _bool},
}

# Sections whose every key, at two or three levels, is a boolean or a colour.
REPO_ANY_NAME: Final[dict[str, Check]] = {"advice": _bool, "color": _color}

# .gitmodules: only where a submodule lives and how it is fetched (git submodule add).
GITMODULES_KEYS: Final[dict[str, Check]] = {
    "path": submodule_path_problem,
    "url": url_problem,
    "branch": _plain,
    "update": _one_of("checkout", "rebase", "merge", "none"),
    "shallow": _bool,
    "ignore": _one_of("all", "dirty", "untracked", "none"),
    "fetchrecursesubmodules": _bool_or("on-demand"),
}

# --------------------------------------------------------------------------------------------
# Why a key that is not on the list is refused: for the message only. The decision never
# depends on these tables; a key found in none of them is still refused.

RUNS: Final = "runs a command"
READS: Final = "makes git read another file"
REDIRECTS: Final = "redirects git"
NOT_LISTED: Final = "not on ringfence's list of keys known to be harmless"

_WHY_SECTION: Final[dict[str, str]] = {
    "alias": "defines an alias, which can run a command",
    "filter": f"{RUNS} (filter driver)",
    "credential": f"{RUNS} or hands out credentials (credential helper)",
    "include": READS,
    "includeif": READS,
    "url": f"{REDIRECTS} to other URLs (url.*.insteadOf)",
    "http": f"{REDIRECTS} (proxy, TLS or headers for HTTP)",
    "https": f"{REDIRECTS} (proxy, TLS or headers for HTTP)",
    "protocol": "enables git transports that can run commands",
    "safe": "weakens git's safety checks",
    "gpg": f"{RUNS} (signing program)",
    "pager": f"{RUNS} (pager)",
    "difftool": f"{RUNS} (diff tool)",
    "mergetool": f"{RUNS} (merge tool)",
    "sendemail": f"{RUNS} or sends mail",
    "man": f"{RUNS} (manual viewer)",
    "browser": f"{RUNS} (browser)",
    "web": f"{RUNS} (browser)",
    "uploadpack": f"{RUNS} (upload-pack hooks)",
    "receive": f"{RUNS} (receive-pack hooks)",
    "sequence": f"{RUNS} (sequence editor)",
    "hook": f"{RUNS} (configured hook)",
    "trace2": "sends trace output to a file or socket",
    "interactive": f"{RUNS} (diff filter)",
}
_WHY_KEY: Final[dict[tuple[str, str], str]] = {
    ("core", "fsmonitor"): RUNS,
    ("core", "sshcommand"): RUNS,
    ("core", "pager"): RUNS,
    ("core", "editor"): RUNS,
    ("core", "askpass"): RUNS,
    ("core", "gitproxy"): RUNS,
    ("core", "alternaterefscommand"): RUNS,
    ("core", "hookspath"): f"{RUNS} (hooks from another directory)",
    ("core", "attributesfile"): READS,
    ("core", "excludesfile"): READS,
    ("diff", "external"): RUNS,
    ("commit", "gpgsign"): f"{RUNS} (signing program)",
    ("tag", "gpgsign"): f"{RUNS} (signing program)",
    ("push", "gpgsign"): f"{RUNS} (signing program)",
    ("pull", "twohead"): f"{RUNS} (merge strategy)",
    ("pull", "octopus"): f"{RUNS} (merge strategy)",
    ("gc", "recentobjectshook"): RUNS,
    ("lfs", "url"): f"{REDIRECTS} to another URL",
    ("lfs", "pushurl"): f"{REDIRECTS} to another URL",
}
_WHY_SUBKEY: Final[dict[tuple[str, str], str]] = {
    ("diff", "textconv"): f"{RUNS} (diff driver)",
    ("diff", "command"): f"{RUNS} (diff driver)",
    ("merge", "driver"): f"{RUNS} (merge driver)",
    ("remote", "uploadpack"): RUNS,
    ("remote", "receivepack"): RUNS,
    ("remote", "vcs"): f"{RUNS} (remote helper)",
    ("remote", "proxy"): f"{REDIRECTS} through a proxy",
    ("remote", "lfsurl"): f"{REDIRECTS} to another URL",
    ("branch", "mergeoptions"): "passes options to git merge",
    ("submodule", "gitdir"): f"{REDIRECTS} to another directory",
}


def _why_not_listed(e: ConfigEntry) -> str:
    if e.subsection is not None and (e.section, e.name) in _WHY_SUBKEY:
        return _WHY_SUBKEY[(e.section, e.name)]
    if e.subsection is None and (e.section, e.name) in _WHY_KEY:
        return _WHY_KEY[(e.section, e.name)]
    return _WHY_SECTION.get(e.section, NOT_LISTED)


# --------------------------------------------------------------------------------------------
# The checks


WORKTREE_REFUSED: Final = "a work tree set in config could be re-aimed into a git directory"


def is_worktree(e: ConfigEntry) -> bool:
    return e.subsection is None and (e.section, e.name) == ("core", "worktree")


def _repo_entry_problem(e: ConfigEntry) -> str | None:
    if e.subsection == "":
        return "empty subsection name"
    if e.section in REPO_ANY_NAME:
        return REPO_ANY_NAME[e.section](e.value)
    if e.subsection is None:
        if is_worktree(e):
            return WORKTREE_REFUSED
        check = REPO_KEYS.get(e.section, {}).get(e.name)
    else:
        check = REPO_SUBSECTION_KEYS.get(e.section, {}).get(e.name)
        if check is not None and e.section == "submodule":
            bad_name = submodule_path_problem(e.subsection)
            if bad_name:
                return bad_name
    if check is None:
        return _why_not_listed(e)
    return check(e.value)


def check_repo_config(data: bytes) -> list[Refusal]:
    """Refusals for a proposed ``.git/config`` (or ``.git/modules/*/config``); [] if every key
    is known harmless. GitConfigError if the bytes are malformed. (``core.worktree`` is
    refused: ``gitconfig_edit.without_worktree`` takes it out first.)"""
    refusals: list[Refusal] = []
    for e in parse(data):
        why = _repo_entry_problem(e)
        if why is not None:
            refusals.append(Refusal(e.key, e.line, why))
    return refusals


def _gitmodules_entry_problem(e: ConfigEntry) -> str | None:
    if e.section != "submodule" or e.subsection is None:
        return "not a submodule setting (.gitmodules may only say where submodules live)"
    if e.subsection == "":
        return "empty subsection name"
    bad_name = submodule_path_problem(e.subsection)
    if bad_name:
        return bad_name
    check = GITMODULES_KEYS.get(e.name)
    if check is None:
        return _why_not_listed(e)
    return check(e.value)


def check_gitmodules(data: bytes) -> list[Refusal]:
    """Refusals for a proposed ``.gitmodules``; [] if it only says where submodules live and
    how they are fetched. GitConfigError if the bytes are malformed."""
    refusals: list[Refusal] = []
    for e in parse(data):
        why = _gitmodules_entry_problem(e)
        if why is not None:
            refusals.append(Refusal(e.key, e.line, why))
    return refusals


def describe(refusals: Sequence[Refusal], *, limit: int = 5) -> str:
    """One line for a report: which keys, on which lines, and why."""
    if not refusals:
        return "no git config keys refused"
    shown = [f"{_printable(r.key)} (line {r.line}): {r.why}" for r in refusals[:limit]]
    more = len(refusals) - limit
    tail = f"; and {more} more" if more > 0 else ""
    noun = "key" if len(refusals) == 1 else "keys"
    return f"refused git config {noun}: " + "; ".join(shown) + tail
