"""Copies of mixed config files with the credentials taken out: pure functions of bytes.

``~/.npmrc`` holds the registry a project needs *and* the token that publishes to it; hiding
the whole file (as macOS and Windows still do) breaks every install from a private registry.
On Linux the sandbox instead sees a copy made here, mounted read-only over the original: all
settings, no auth tokens, passwords or credential helpers. Each format has one function that
returns the new bytes and the *names* of what it removed (never values, so ``explain`` can
show them).

How each format decides (see docs/policy.md, "Scrubbed config files"):
* a closed, documented key set is scrubbed by an allowlist: ``~/.docker/config.json`` (known
  top-level keys only), ``~/.pypirc`` (``index-servers``, ``repository``, ``ca_cert``);
* an open key set (npm, pnpm and yarn all read ``.npmrc``; pip takes any of its options; git
  any key) is scrubbed by the names credentials go under: every key npm documents as an auth
  key, any name with auth/token/password/secret/credential in it, every registry-scoped
  ``//host/:key`` line, git's ``credential`` section and ``http.extraHeader``;
* everywhere: comments are dropped (a commented-out token is still a token), and every URL
  loses its ``user:password@`` part.
Then every result is checked once more for anything credential-shaped (known token formats,
auth key names, a URL with a password); a hit, or a file that does not parse, raises
:class:`ScrubError` and the caller hides the file entirely: fail closed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ringfence.policy import defaults, gitconfig

MAX_BYTES: Final = 1 << 20  # config files are a few KiB; a larger one is hidden, not scrubbed


class ScrubError(ValueError):
    """The file cannot be scrubbed with confidence (it does not parse, or something
    credential-shaped would survive): the caller hides it instead."""


@dataclass(frozen=True)
class Scrubbed:
    """The copy the sandbox sees, and the names (keys, sections) taken out of it."""

    content: bytes
    removed: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Shared rules

# scheme://userinfo@ — the userinfo stops at the first '/', '@' or whitespace (RFC 3986: it
# cannot hold a '/'; a token with an '@' in it must be percent-encoded).
_URL_USERINFO: Final = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://)([^/@\s\"'<>]*)@")
# A query parameter that carries a credential (GitLab's ?private_token=, ?access_token=, a
# signed URL's signature): its value goes, the parameter's name stays.
_URL_QUERY_SECRET: Final = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:token|secret|password|passwd|apikey|api_key|auth)"
    r"[a-z0-9_.-]*|key|sig|signature|x-amz-signature|x-amz-credential)=)[^&;#\s\"'<>]*"
)
_SSH_SCHEMES: Final = frozenset({"ssh://", "git+ssh://", "ssh+git://", "sftp://"})


def strip_url_credentials(text: str) -> str:
    """``text`` with the credentials out of every URL in it: ``https://user:tok@host/`` ->
    ``https://host/``. An ssh URL keeps a bare user name (``ssh://git@host/``: a login name,
    not a secret) but loses a password."""

    def repl(m: re.Match[str]) -> str:
        scheme, userinfo = m.group(1), m.group(2)
        if scheme.lower() in _SSH_SCHEMES and ":" not in userinfo and userinfo:
            return m.group(0)
        return scheme

    return _URL_QUERY_SECRET.sub(r"\1", _URL_USERINFO.sub(repl, text))


# Names credentials go under, in any of these formats (compared lowercased, '-' and '_' kept).
_SECRET_NAME_PARTS: Final = ("_auth", "auth-token", "authtoken", "token", "password", "passwd")
_SECRET_NAME_PARTS2: Final = ("secret", "credential", "apikey", "api-key", "api_key")
_SECRET_NAMES: Final = frozenset(
    {
        "_auth",
        "username",
        "email",
        "certfile",
        "keyfile",
        "cert",
        "key",
        "otp",
        "npmauthident",
        "npmauthtoken",
        "smtppass",
        "auth",
        "identitytoken",
        "registrytoken",
        "pat",
        "oauth",
        "bearer",
        "pass",
    }
)


def secret_name(name: str) -> bool:
    """Whether a key called ``name`` holds a credential, by its name alone."""
    n = name.strip().lower()
    if n in _SECRET_NAMES:
        return True
    return any(p in n for p in (*_SECRET_NAME_PARTS, *_SECRET_NAME_PARTS2))


# What must never be in a scrubbed copy. Known token shapes, key names that only ever hold
# credentials, and a URL with a password. Checked on every result, whatever the format.
_RESIDUE: Final = re.compile(
    r"""(?ix)
      \bnpm_[a-z0-9]{36}\b
    | \bgh[pousr]_[a-z0-9]{30,}
    | \bgithub_pat_[a-z0-9_]{20,}
    | \bglpat-[a-z0-9_-]{20,}
    | \bpypi-[a-z0-9_-]{50,}
    | \b(?:akia|asia)[0-9a-z]{16}\b
    | \bxox[abprs]-[a-z0-9-]{10,}
    | _authtoken | (?<![a-z0-9-])_auth\b | _password | npmauthtoken | npmauthident
    | identitytoken | "auths" | credsstore | credhelpers
    | \b[a-z][a-z0-9+.-]*://[^/@\s"'<>]*:[^/@\s"'<>]*@
    | -----BEGIN[ A-Z]*PRIVATE[ ]KEY-----
    """
)


def _checked(content: str | bytes, removed: list[str]) -> Scrubbed:
    if isinstance(content, str):
        if content and not content.endswith("\n"):
            content += "\n"
        content = content.encode("utf-8", "surrogateescape")
    data = content
    text = data.decode("utf-8", "replace")
    m = _RESIDUE.search(text)
    if m is not None:
        raise ScrubError("something credential-shaped would remain after scrubbing")
    return Scrubbed(data, tuple(dict.fromkeys(removed)))


def _text(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise ScrubError(f"larger than {MAX_BYTES} bytes")
    if b"\0" in data:
        raise ScrubError("NUL byte")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScrubError(f"not UTF-8 (byte {e.start})") from None


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").split("\n")


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    return s


# --------------------------------------------------------------------------------------------
# npm (.npmrc: the `ini` package's format, read by npm, pnpm and yarn 1)


def _npm_key_secret(key: str) -> bool:
    k = _unquote(key).removesuffix("[]").strip()
    if k.startswith("//"):
        return True  # //registry.host/:_authToken, :username, :_password, :certfile ...
    if ":" in k and k.startswith("@"):
        k = k.split(":", 1)[1]  # @scope:_authToken
    return secret_name(k)


def scrub_npmrc(data: bytes) -> Scrubbed:
    """``.npmrc``: drops every ``//host/:...`` line (npm's per-registry credentials), every
    auth key (``_auth``, ``_authToken``, ``_password``, ``username``, ``email``, ``certfile``,
    ``keyfile``, ``cert``, ``key``, ``otp``, and any name with token/password/secret in it),
    every comment; keeps the rest (``registry``, ``@scope:registry``, ``cafile``, ``proxy``,
    pnpm's settings ...) with credentials stripped from URLs."""
    out: list[str] = []
    removed: list[str] = []
    for line in _lines(_text(data)):
        s = line.strip()
        if not s or (s.startswith("[") and s.endswith("]")):
            out.append(line)
            continue
        if s[0] in "#;":
            continue
        key, _, _value = s.partition("=")
        if _npm_key_secret(key):
            removed.append(_unquote(key).strip())
            continue
        out.append(strip_url_credentials(line))
    return _checked("\n".join(out), removed)


def scrub_yarnrc(data: bytes) -> Scrubbed:
    """Yarn 1's ``.yarnrc`` (``key value`` lines, keys may be quoted): the npm rules."""
    out: list[str] = []
    removed: list[str] = []
    for line in _lines(_text(data)):
        s = line.strip()
        if not s:
            out.append(line)
            continue
        if s.startswith("#"):
            continue
        if s[0] in "\"'":
            end = s.find(s[0], 1)
            if end < 0:
                raise ScrubError("unclosed quote in a key")
            key = s[1:end]
        else:
            key = s.split(None, 1)[0]
        key = key.lstrip("-")
        if key.startswith("--"):
            key = key[2:]
        if _npm_key_secret(key) or (
            "." in key and _npm_key_secret(key.rsplit(".", 1)[1])
        ):  # --install.key scoped to a command
            removed.append(key)
            continue
        out.append(strip_url_credentials(line))
    return _checked("\n".join(out), removed)


# Yarn 2+ (.yarnrc.yml). Only a line-oriented subset of YAML is understood: block mappings and
# sequences, plain or quoted scalars. Anchors, aliases, tags and merges (which could carry a
# token from a removed block to a kept one) are refused.
_YAML_KEY: Final = re.compile(
    r"""^(\s*)(?:-\s+)?("[^"]*"|'[^']*'|[^\s"'#:][^:#]*?)\s*:(?:\s+(.*))?$"""
)


def scrub_yarnrc_yml(data: bytes) -> Scrubbed:
    """``.yarnrc.yml``: drops ``npmAuthToken``, ``npmAuthIdent`` and any key with
    token/password/secret in its name, together with everything nested under it, at any
    depth (``npmScopes.*``, ``npmRegistries.*``); keeps the rest."""
    out: list[str] = []
    removed: list[str] = []
    drop_deeper_than: int | None = None
    for line in _lines(_text(data)):
        s = line.strip()
        indent = len(line) - len(line.lstrip())
        if drop_deeper_than is not None:
            if not s or indent > drop_deeper_than:
                continue
            drop_deeper_than = None
        if not s:
            out.append(line)
            continue
        if s.startswith("#"):
            continue
        if re.search(r"(^|[\s:\[{,-])[&*!]|<<\s*:", s):
            raise ScrubError("YAML anchors, aliases, tags and merges are not scrubbed")
        m = _YAML_KEY.match(line)
        if m is not None:
            key = _unquote(m.group(2))
            if secret_name(key):
                removed.append(key)
                # Whatever follows, deeper: a nested block, a block scalar, or a plain
                # scalar continued on the next lines ("key:  # comment" then the value).
                drop_deeper_than = indent
                continue
        out.append(strip_url_credentials(line))
    return _checked("\n".join(out), removed)


# --------------------------------------------------------------------------------------------
# INI (Python's configparser: .pypirc, pip.conf)

_INI_KEY: Final = re.compile(r"^\s*([^=:\s][^=:]*?)\s*(?:[=:](.*))?$")


def _scrub_ini(data: bytes, keep: Callable[[str, str], bool]) -> Scrubbed:
    """Keep ``[section]`` headers and the options ``keep(section, option)`` allows, with their
    continuation lines (indented lines after an option belong to it); drop comments."""
    out: list[str] = []
    removed: list[str] = []
    section = ""
    keeping = True  # the fate of the current option's continuation lines
    in_option = False
    for line in _lines(_text(data)):
        s = line.strip()
        if not s:
            if keeping:
                out.append(line)
            continue
        if s[0] in "#;":
            continue
        if in_option and line[0] in " \t":
            if keeping:
                out.append(strip_url_credentials(line))
            continue
        if s.startswith("["):
            if not s.endswith("]"):
                raise ScrubError("a section header without its closing ']'")
            section = s[1:-1].strip()
            out.append(line)
            keeping, in_option = True, False
            continue
        m = _INI_KEY.match(line)
        if m is None:
            raise ScrubError("a line that is neither a section, an option nor a comment")
        option = m.group(1).strip()
        in_option = True
        keeping = keep(section.lower(), option.lower().replace("_", "-"))
        if keeping:
            out.append(strip_url_credentials(line))
        else:
            removed.append(f"{section}.{option}" if section else option)
    return _checked("\n".join(out), removed)


def scrub_pypirc(data: bytes) -> Scrubbed:
    """``.pypirc``: an allowlist. ``[distutils] index-servers`` and each server's
    ``repository`` and ``ca_cert`` stay; ``username``, ``password`` and anything else go."""

    def keep(section: str, option: str) -> bool:
        if section == "distutils":
            return option == "index-servers"
        return option in ("repository", "ca-cert")

    return _scrub_ini(data, keep)


def scrub_pip_conf(data: bytes) -> Scrubbed:
    """pip's ``pip.conf``: every option stays (it takes any command-line option) except
    ``client-cert`` and secret-named ones; ``index-url``, ``extra-index-url``, ``find-links``
    and ``proxy`` lose any ``user:password@`` in their URLs."""

    def keep(_section: str, option: str) -> bool:
        return option != "client-cert" and not secret_name(option)

    return _scrub_ini(data, keep)


# --------------------------------------------------------------------------------------------
# Docker (~/.docker/config.json)

DOCKER_KEEP: Final = frozenset(
    {
        "proxies",
        "detachKeys",
        "psFormat",
        "imagesFormat",
        "pluginsFormat",
        "servicesFormat",
        "statsFormat",
        "networksFormat",
        "volumesFormat",
        "nodesFormat",
        "configFormat",
        "secretFormat",
        "serviceInspectFormat",
        "tasksFormat",
        "currentContext",
        "cliPluginsExtraDirs",
        "experimental",
        "features",
        "aliases",
        "stackOrchestrator",
    }
)


def _strip_json(value: Any) -> Any:
    if isinstance(value, str):
        return strip_url_credentials(value)
    if isinstance(value, list):
        return [_strip_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_json(v) for k, v in value.items()}
    return value


def scrub_docker_config(data: bytes) -> Scrubbed:
    """``~/.docker/config.json``: an allowlist of top-level keys (output formats, proxies,
    the current context, plugin directories ...). ``auths``, ``credsStore``, ``credHelpers``,
    ``HttpHeaders`` and anything unknown go."""
    try:
        doc = json.loads(_text(data))
    except ValueError as e:
        raise ScrubError(f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ScrubError("not a JSON object")
    kept = {k: _strip_json(v) for k, v in doc.items() if k in DOCKER_KEEP}
    removed = [k for k in doc if k not in DOCKER_KEEP]
    return _checked(json.dumps(kept, indent=1) + "\n", removed)


# --------------------------------------------------------------------------------------------
# git (~/.gitconfig, ~/.config/git/config)


def _git_secret(e: gitconfig.ConfigEntry) -> bool:
    if e.section == "credential":
        return True  # helper, username, useHttpPath ..., for every URL
    if e.name == "extraheader":
        return True  # http.extraHeader / http.<url>.extraHeader: an Authorization header
    # Not secret_name(): user.email and the like are settings here, not npm login details.
    n = e.name
    if n in _GIT_SECRET_NAMES or any(p in n for p in (*_SECRET_NAME_PARTS, *_SECRET_NAME_PARTS2)):
        return True
    # An alias or command that carries a header with a credential (curl -H "Authorization: ..").
    return e.value is not None and _AUTH_HEADER.search(e.value) is not None


_GIT_SECRET_NAMES: Final = frozenset({"smtppass", "pat", "oauth", "bearer", "pass"})
_AUTH_HEADER: Final = re.compile(
    r"(?i)\b(?:proxy-)?authorization\s*:|\bbearer\s+\S|private-token\s*:"
)


def _git_quote(text: str) -> str:
    out = ['"']
    for ch in text:
        out.append({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\b": "\\b"}.get(ch, ch))
    out.append('"')
    return "".join(out)


def _git_render(entries: list[gitconfig.ConfigEntry]) -> str:
    out: list[str] = []
    current: tuple[str, str | None] | None = None
    for e in entries:
        if (e.section, e.subsection) != current:
            current = (e.section, e.subsection)
            if e.subsection is None:
                out.append(f"[{e.section}]")
            else:
                sub = e.subsection.replace("\\", "\\\\").replace('"', '\\"')
                out.append(f'[{e.section} "{sub}"]')
        out.append(f"\t{e.name}" if e.value is None else f"\t{e.name} = {_git_quote(e.value)}")
    return "\n".join(out) + ("\n" if out else "")


def scrub_gitconfig(data: bytes) -> Scrubbed:
    """A git config: drops the ``credential`` section (``credential.helper``,
    ``credential.<url>.*``), every ``http[.<url>].extraHeader``, and secret-named keys
    (``sendemail.smtpPass``, ``*.token``, ``hub.oauthtoken`` ...); strips credentials from
    every URL, in values and in ``url.<base>.insteadOf`` bases. The copy is written afresh
    from what git reads (comments and layout are not kept) and parsed again to check it reads
    as intended. Files the include mechanism pulls in are not scrubbed."""
    try:
        entries = gitconfig.parse(data)
    except gitconfig.GitConfigError as err:
        raise ScrubError(str(err)) from None
    kept: list[gitconfig.ConfigEntry] = []
    removed: list[str] = []
    for e in entries:
        sub = None if e.subsection is None else strip_url_credentials(e.subsection)
        if _git_secret(e):
            # A URL may carry a token outside its userinfo too (?private_token=): name the
            # key's shape, not the URL.
            removed.append(e.key if sub is None else f"{e.section}.<url>.{e.name}")
            continue
        value = None if e.value is None else strip_url_credentials(e.value)
        kept.append(gitconfig.ConfigEntry(e.section, sub, e.name, value, 0))
    text = _git_render(kept)
    try:
        again = gitconfig.parse(text.encode("utf-8", "surrogateescape"))
    except gitconfig.GitConfigError as err:  # pragma: no cover - a bug in _git_render
        raise ScrubError(f"the scrubbed copy does not parse: {err}") from None
    if [(x.key, x.value) for x in again] != [(x.key, x.value) for x in kept]:
        raise ScrubError("the scrubbed copy reads differently")  # pragma: no cover
    return _checked(text.encode("utf-8", "surrogateescape"), removed)


# --------------------------------------------------------------------------------------------


def home_files(home: str, env: Mapping[str, str]) -> dict[str, str]:
    """The files under ``home`` to scrub (path -> format), from defaults.HOME_SCRUB; a
    ``.config/`` entry follows ``$XDG_CONFIG_HOME`` where that is set (as git and pip do)."""
    xdg = env.get("XDG_CONFIG_HOME")
    out: dict[str, str] = {}
    for rel, kind in defaults.HOME_SCRUB:
        # Both places when $XDG_CONFIG_HOME is set elsewhere: a program run without it (or a
        # command that unsets it) reads ~/.config.
        out.setdefault(os.path.normpath(os.path.join(home, rel)), kind)
        if rel.startswith(".config/") and xdg and os.path.isabs(xdg):
            out.setdefault(os.path.normpath(os.path.join(xdg, rel[len(".config/") :])), kind)
    return out


SCRUBBERS: Final[dict[str, Callable[[bytes], Scrubbed]]] = {
    "npmrc": scrub_npmrc,
    "yarnrc": scrub_yarnrc,
    "yarnrc.yml": scrub_yarnrc_yml,
    "pypirc": scrub_pypirc,
    "pip.conf": scrub_pip_conf,
    "docker": scrub_docker_config,
    "gitconfig": scrub_gitconfig,
}


def scrub(kind: str, data: bytes) -> Scrubbed:
    """Scrub ``data`` as a file of ``kind`` (a key of SCRUBBERS); ScrubError to hide it."""
    if len(data) > MAX_BYTES:
        raise ScrubError(f"larger than {MAX_BYTES} bytes")
    return SCRUBBERS[kind](data)
