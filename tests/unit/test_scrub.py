"""The config-file scrubbers (policy/scrub.py): settings kept, credentials out, or a refusal.

The property tests build files that mix ordinary settings with secrets under every name the
format uses for one, with random secret values, and check that no secret value survives while
every ordinary value does.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.policy import gitconfig, scrub
from ringfence.policy.scrub import ScrubError

# A secret never shares a character run with a setting: settings are lowercase words, secrets
# carry an uppercase marker, so "the secret is not in the output" is a clean test.
SECRET = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=6, max_size=30).map(
    lambda s: "SEKRET" + s
)
SETTING = st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=12)


# -------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("https://user:pw@host/path", "https://host/path"),
        ("https://TOKEN@github.com/o/r.git", "https://github.com/o/r.git"),
        ("http://u:p@proxy:3128", "http://proxy:3128"),
        ("ssh://git@host/r", "ssh://git@host/r"),
        ("ssh://git:pw@host/r", "ssh://host/r"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("see https://a:b@x/ and https://c@y/", "see https://x/ and https://y/"),
        ("https://host/path?u=a@b", "https://host/path?u=a@b"),
    ],
)
def test_url_credentials_are_stripped(url: str, want: str) -> None:
    assert scrub.strip_url_credentials(url) == want


@given(user=SECRET, password=SECRET, host=SETTING)
def test_no_url_credential_survives(user: str, password: str, host: str) -> None:
    out = scrub.strip_url_credentials(f"x https://{user}:{password}@{host}.example/p y")
    assert user not in out and password not in out and f"{host}.example/p" in out


# -------------------------------------------------------------------------------- npm

NPM_SECRET_KEYS = (
    "_auth",
    "_authToken",
    "_password",
    "username",
    "email",
    "certfile",
    "keyfile",
    "cert",
    "key",
    "otp",
    "//registry.example/:_authToken",
    "//registry.example/:_auth",
    "//registry.example/:username",
    "//registry.example/:_password",
    "//registry.example/:always-auth",
    "@acme:_authToken",
    "my-api-token",
)


def test_npmrc_keeps_settings_and_drops_credentials() -> None:
    src = (
        "; a comment with _authToken=npm_" + "a" * 36 + "\n"
        "registry=https://user:pass@registry.example/\n"
        "@acme:registry = https://npm.acme.example/\n"
        "//registry.example/:_authToken=${NPM_TOKEN}\n"
        "_auth = dXNlcjpwYXNz\n"
        "email=me@example.com\n"
        "cafile=/etc/ssl/corp.pem\n"
        "auto-install-peers=true\n"
        "public-hoist-pattern[]=*eslint*\n"
    )
    out = scrub.scrub_npmrc(src.encode())
    assert out.content.decode() == (
        "registry=https://registry.example/\n"
        "@acme:registry = https://npm.acme.example/\n"
        "cafile=/etc/ssl/corp.pem\n"
        "auto-install-peers=true\n"
        "public-hoist-pattern[]=*eslint*\n"
    )
    assert out.removed == ("//registry.example/:_authToken", "_auth", "email")


@settings(max_examples=200)
@given(
    items=st.lists(
        st.tuples(st.booleans(), st.sampled_from(NPM_SECRET_KEYS), SECRET, SETTING),
        min_size=1,
        max_size=12,
    )
)
def test_npmrc_no_secret_survives(items: list[tuple[bool, str, str, str]]) -> None:
    lines = []
    for i, (secret, key, value, setting) in enumerate(items):
        lines.append(f"{key}={value}" if secret else f"setting-{i} = {setting}")
    out = scrub.scrub_npmrc("\n".join(lines).encode()).content.decode()
    for i, (secret, _key, value, setting) in enumerate(items):
        assert value not in out
        if not secret:
            assert f"setting-{i} = {setting}" in out


def test_yarnrc() -> None:
    src = (
        '# yarn lockfile v1 settings\nregistry "https://u:p@r.example/"\n'
        '"//r.example/:_authToken" "SEKRETTOKEN"\n_authToken SEKRET2\nemail me@x\n'
        "--install.frozen-lockfile true\nnetwork-timeout 600000\n"
    )
    out = scrub.scrub_yarnrc(src.encode())
    assert out.content.decode() == (
        'registry "https://r.example/"\n--install.frozen-lockfile true\nnetwork-timeout 600000\n'
    )
    assert out.removed == ("//r.example/:_authToken", "_authToken", "email")


def test_yarnrc_yml_drops_nested_credentials() -> None:
    src = (
        "npmRegistryServer: 'https://r.example'\n"
        "npmAuthToken: SEKRET1\n"
        "npmScopes:\n"
        "  acme:\n"
        "    npmAuthToken: SEKRET2\n"
        "    npmRegistryServer: https://acme.example\n"
        "  other:\n"
        "    npmAuthIdent: |\n"
        "      SEKRET3\n"
        "      SEKRET4\n"
        "    npmAlwaysAuth: true\n"
        "enableTelemetry: false\n"
    )
    out = scrub.scrub_yarnrc_yml(src.encode())
    text = out.content.decode()
    assert "SEKRET" not in text
    assert "npmRegistryServer: https://acme.example" in text
    assert "npmAlwaysAuth: true" in text and text.endswith("enableTelemetry: false\n")
    assert out.removed == ("npmAuthToken", "npmAuthIdent")


@pytest.mark.parametrize(
    "src",
    [
        "a: &tok SEKRET\nnpmAuthToken: *tok\n",
        "npmScopes: {acme: {npmAuthToken: SEKRET}}\n",
        "x: !!binary SEKRET\n",
    ],
)
def test_yarnrc_yml_refuses_what_it_cannot_follow(src: str) -> None:
    with pytest.raises(ScrubError):
        scrub.scrub_yarnrc_yml(src.encode())


# -------------------------------------------------------------------------------- INI


def test_pypirc_is_an_allowlist() -> None:
    src = (
        "[distutils]\nindex-servers =\n    pypi\n    private\n\n"
        "[pypi]\nusername = __token__\npassword = pypi-SEKRET\n\n"
        "[private]\nrepository: https://me:SEKRET@pypi.corp.example/\n"
        "password =\n    SEKRET-continued\nca_cert = /etc/corp.pem\nfuture_option = x\n"
    )
    out = scrub.scrub_pypirc(src.encode())
    text = out.content.decode()
    assert "SEKRET" not in text and "__token__" not in text
    assert "index-servers =\n    pypi\n    private\n" in text
    assert "repository: https://pypi.corp.example/" in text and "ca_cert = /etc/corp.pem" in text
    assert out.removed == (
        "pypi.username",
        "pypi.password",
        "private.password",
        "private.future_option",
    )


def test_pip_conf_keeps_options_and_strips_url_credentials() -> None:
    src = (
        "[global]\nindex-url = https://me:SEKRET@pypi.corp.example/simple\n"
        "extra-index-url =\n  https://SEKRET2@other.example/simple\n  https://pypi.org/simple\n"
        "timeout = 60\nclient-cert = /home/me/client.pem\n[install]\nno-binary = :none:\n"
    )
    out = scrub.scrub_pip_conf(src.encode())
    text = out.content.decode()
    assert "SEKRET" not in text and "client.pem" not in text
    assert "index-url = https://pypi.corp.example/simple" in text
    assert "  https://other.example/simple\n  https://pypi.org/simple" in text
    assert "timeout = 60" in text and "no-binary = :none:" in text
    assert out.removed == ("global.client-cert",)


@given(user=SECRET, password=SECRET, host=SETTING)
def test_pip_conf_no_url_credential_survives(user: str, password: str, host: str) -> None:
    src = f"[global]\nindex-url = https://{user}:{password}@{host}.example/simple\n"
    try:
        text = scrub.scrub_pip_conf(src.encode()).content.decode()
    except scrub.ScrubError:
        # a credential-shaped host name ("npmauthident") makes the scrub refuse the file:
        # it is then hidden whole, which keeps the secret out too
        assert scrub._RESIDUE.search(host) is not None
        return
    assert user not in text and password not in text and f"{host}.example/simple" in text


# -------------------------------------------------------------------------------- docker


def test_docker_config_allowlist() -> None:
    doc = {
        "auths": {"registry.example": {"auth": "SEKRET", "identitytoken": "SEKRET2"}},
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
        "HttpHeaders": {"X-Token": "SEKRET3"},
        "psFormat": "table {{.ID}}",
        "proxies": {"default": {"httpProxy": "http://u:SEKRET4@proxy:3128"}},
        "currentContext": "colima",
        "somethingNew": "x",
    }
    out = scrub.scrub_docker_config(json.dumps(doc).encode())
    kept = json.loads(out.content)
    assert kept == {
        "psFormat": "table {{.ID}}",
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
        "currentContext": "colima",
    }
    assert set(out.removed) == {"auths", "credsStore", "credHelpers", "HttpHeaders", "somethingNew"}


@pytest.mark.parametrize("src", [b"{not json", b"[1, 2]", b'"x"'])
def test_docker_config_unparseable(src: bytes) -> None:
    with pytest.raises(ScrubError):
        scrub.scrub_docker_config(src)


# -------------------------------------------------------------------------------- git


def test_gitconfig() -> None:
    src = (
        b"# comment\n[user]\n\tname = Me\n\temail = me@example.com\n"
        b"[credential]\n\thelper = store\n"
        b'[credential "https://u:SEKRET@host"]\n\tusername = me\n'
        b'[url "https://SEKRET2@github.com/"]\n\tinsteadOf = https://github.com/\n'
        b"[http]\n\textraHeader = Authorization: Bearer SEKRET3\n\tsslVerify = true\n"
        b'[http "https://corp.example"]\n\textraheader = PRIVATE-TOKEN: SEKRET4\n'
        b"[sendemail]\n\tsmtpPass = SEKRET5\n\tsmtpServer = smtp.example\n"
        b"[github]\n\ttoken = SEKRET6\n"
        b'[remote "origin"]\n\turl = https://x:SEKRET7@host/r.git\n'
        b"[core]\n\thooksPath = ~/hooks\n\tbare\n"
        b"[include]\n\tpath = ~/.gitconfig.local\n"
    )
    out = scrub.scrub_gitconfig(src)
    assert b"SEKRET" not in out.content
    read = {(e.key, e.value) for e in gitconfig.parse(out.content)}
    assert read == {
        ("user.name", "Me"),
        ("user.email", "me@example.com"),
        ("url.https://github.com/.insteadof", "https://github.com/"),
        ("http.sslverify", "true"),
        ("sendemail.smtpserver", "smtp.example"),
        ("remote.origin.url", "https://host/r.git"),
        ("core.hookspath", "~/hooks"),
        ("core.bare", None),
        ("include.path", "~/.gitconfig.local"),
    }
    assert out.removed == (
        "credential.helper",
        "credential.<url>.username",
        "http.extraheader",
        "http.<url>.extraheader",
        "sendemail.smtppass",
        "github.token",
    )


@settings(max_examples=200)
@given(
    subsection=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"), max_size=20
    ),
    value=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30
    ),
)
def test_gitconfig_copy_reads_back_the_same(subsection: str, value: str) -> None:
    """Whatever git reads from a kept entry, it reads the same from the copy."""
    entry = gitconfig.ConfigEntry("alias", subsection or None, "x", value, 0)
    src = scrub._git_render([entry]).encode("utf-8", "surrogateescape")
    try:
        out = scrub.scrub_gitconfig(src)
    except ScrubError:
        return  # credential-shaped text: hidden, which is safe
    again = gitconfig.parse(out.content)
    want = scrub.strip_url_credentials(value)
    assert [(e.subsection, e.value) for e in again] == [
        (scrub.strip_url_credentials(subsection) if subsection else None, want)
    ]


@settings(max_examples=200)
@given(
    secret=SECRET,
    where=st.sampled_from(
        [
            "[credential]\n\thelper = {}\n",
            '[credential "https://h"]\n\tusername = {}\n',
            "[http]\n\textraHeader = Authorization: Basic {}\n",
            '[url "https://{}@h/"]\n\tinsteadOf = https://h/\n',
            '[remote "o"]\n\turl = https://u:{}@h/r\n',
            "[hub]\n\toauthtoken = {}\n",
            "[sendemail]\n\tsmtppass = {}\n",
        ]
    ),
)
def test_gitconfig_no_secret_survives(secret: str, where: str) -> None:
    src = "[user]\n\tname = me\n" + where.format(secret)
    out = scrub.scrub_gitconfig(src.encode())
    assert secret.encode() not in out.content
    assert b"name = " in out.content


def test_gitconfig_unparseable() -> None:
    with pytest.raises(ScrubError):
        scrub.scrub_gitconfig(b"[user\n\tname = x\n")


# -------------------------------------------------------------------------------- all


@pytest.mark.parametrize("kind", sorted(scrub.SCRUBBERS))
def test_residue_makes_the_file_hidden(kind: str) -> None:
    """A known token shape in a place no rule removes: refused, not passed through."""
    token = "ghp_" + "A" * 36
    src = {
        "npmrc": f"message={token}\n",
        "yarnrc": f"message {token}\n",
        "yarnrc.yml": f"message: {token}\n",
        "pypirc": f"[distutils]\nindex-servers = {token}\n",
        "pip.conf": f"[global]\nlog = {token}\n",
        "docker": json.dumps({"psFormat": token}),
        "gitconfig": f"[alias]\n\tx = {token}\n",
    }[kind]
    with pytest.raises(ScrubError):
        scrub.scrub(kind, src.encode())


@pytest.mark.parametrize("kind", sorted(scrub.SCRUBBERS))
def test_bad_bytes_and_size(kind: str) -> None:
    with pytest.raises(ScrubError):
        scrub.scrub(kind, b"a\0b")
    with pytest.raises(ScrubError):
        scrub.scrub(kind, b"x" * (scrub.MAX_BYTES + 1))


@pytest.mark.parametrize("kind", sorted(scrub.SCRUBBERS))
def test_empty_file(kind: str) -> None:
    if kind == "docker":
        assert scrub.scrub(kind, b"{}").content == b"{}\n"
    else:
        assert scrub.scrub(kind, b"").content == b""


def test_home_files_follow_xdg_config_home() -> None:
    files = scrub.home_files("/h", {"XDG_CONFIG_HOME": "/x"})
    assert files["/h/.npmrc"] == "npmrc"
    assert files["/x/git/config"] == "gitconfig" and files["/x/pip/pip.conf"] == "pip.conf"
    assert "/h/.config/git/config" in scrub.home_files("/h", {})


# Found by an outside review: each was kept by the scrubber before.
@pytest.mark.parametrize(
    ("kind", "text", "secret"),
    [
        ("yarnrc.yml", 'npmAuthToken:   # rotated monthly\n  "corpREGtokenAAAA1111"\n', "AAAA1111"),
        (
            "yarnrc.yml",
            "npmRegistries:\n  //r.example:\n    npmAuthToken:  # note\n      SECRETVALUE9\n",
            "SECRETVALUE9",
        ),
        (
            "gitconfig",
            '[remote "o"]\n\turl = https://gitlab.com/x.git?private_token=PTOK123\n',
            "PTOK123",
        ),
        ("gitconfig", "[gitlab]\n\tpat = PATVALUE77\n", "PATVALUE77"),
        ("gitconfig", "[github]\n\toauth = OAVALUE88\n", "OAVALUE88"),
        (
            "gitconfig",
            '[alias]\n\tapi = !curl -H \\"Authorization: token HDRTOK55\\" https://x\n',
            "HDRTOK55",
        ),
        ("npmrc", "registry=_https://u:PWD4455@h.example/\n", "PWD4455"),
        ("npmrc", "registry=https://h.example/?access_token=QTOK66\n", "QTOK66"),
    ],
)
def test_review_findings_are_scrubbed(kind: str, text: str, secret: str) -> None:
    try:
        out = scrub.scrub(kind, text.encode())
    except scrub.ScrubError:
        return  # hidden entirely: also fine
    assert secret not in out.content.decode()


def test_config_in_both_xdg_and_home_places_is_scrubbed() -> None:
    files = scrub.home_files("/home/u", {"XDG_CONFIG_HOME": "/x/xdg"})
    assert files["/home/u/.config/git/config"] == "gitconfig"
    assert files["/x/xdg/git/config"] == "gitconfig"
    assert files["/home/u/.config/pip/pip.conf"] == "pip.conf"
