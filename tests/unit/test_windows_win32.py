"""The pure parts of the ctypes Win32Api, on Linux: the mask and inheritance mapping, SDDL
reading (has_ace), firewall rule validation and the PowerShell argv/environment (no rule field
ever inside the script), the propagation-hazard scan, and the DPAPI secret store with a
stand-in for DPAPI. Nothing here runs on Windows."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from ringfence.errors import PolicyError, SandboxError, UnsupportedError
from ringfence.platforms.windows import (
    dacl,
    dll,
    file_acls,
    firewall,
    secrets,
    setup,
    win32,
    window_access,
)
from ringfence.platforms.windows.rights import MASKS
from ringfence.platforms.windows.setup import AddAce, AddFirewallRule

CAP = "S-1-15-3-1024-1"
USER_SID = "S-1-5-21-1-2-3-1001"


def test_win32api_off_windows_is_a_typed_refusal() -> None:
    with pytest.raises(UnsupportedError, match="needs Windows"):
        win32.Win32Api()
    with pytest.raises(UnsupportedError):
        dll.load_dll("advapi32")


@pytest.mark.parametrize("rights", sorted(MASKS))
def test_ace_fields(rights: str) -> None:
    grant = dacl.ace_fields(AddAce("C:\\w", CAP, rights))
    assert grant == dacl.AceFields(
        MASKS[rights], dacl.GRANT_ACCESS, dacl.OBJECT_INHERIT_ACE | dacl.CONTAINER_INHERIT_ACE
    )
    deny = dacl.ace_fields(AddAce("C:\\w", CAP, rights, deny=True, inherit=False))
    assert deny == dacl.AceFields(MASKS[rights], dacl.DENY_ACCESS, dacl.NO_INHERITANCE)


@pytest.mark.parametrize(
    "ace", [AddAce("C:\\w", CAP, "everything"), AddAce("C:\\w", "Everyone", "read")]
)
def test_ace_fields_refusals(ace: AddAce) -> None:
    with pytest.raises(PolicyError):
        dacl.ace_fields(ace)


def test_user_condition_sddl() -> None:
    assert firewall.user_condition_sddl(USER_SID) == f"O:LSD:(A;;CC;;;{USER_SID})"
    for bad in ["S-1-5-21-1)(A;;CC;;;WD", "WD", "S-1-", "s-1-5-21-1 "]:
        with pytest.raises(PolicyError):
            firewall.user_condition_sddl(bad)


def test_dacl_protection_flag() -> None:
    assert (
        dacl.dacl_protection_flag(dacl.SE_DACL_PROTECTED | 0x4)
        == dacl.PROTECTED_DACL_SECURITY_INFORMATION
    )
    assert dacl.dacl_protection_flag(0x4) == dacl.UNPROTECTED_DACL_SECURITY_INFORMATION


@pytest.mark.parametrize("sddl", ["", "O:BAD:(A;;FA;;;SY)", "D:(A;;FA;;;SY)S:(AU;;FA;;;WD)", "x"])
def test_journal_copies_must_be_a_dacl(sddl: str) -> None:
    with pytest.raises(SandboxError):
        dacl.check_dacl_sddl(sddl)


def test_sddl_has_ace() -> None:
    modify, write = MASKS["modify"], MASKS["write"]
    sddl = (
        f"D:PAI(D;OICI;{write:#x};;;{USER_SID})(D;;SD;;;{USER_SID})"
        f"(A;OICI;{modify:#x};;;{CAP})(A;OICIID;FA;;;SY)"
        f"(XA;;FA;;;WD;(Member_of {{SID(BA)}}))(A;OICI;FRFX;;;{USER_SID})"
    )
    assert dacl.sddl_has_ace(sddl, AddAce("C:\\w", CAP, "modify"))
    assert dacl.sddl_has_ace(sddl, AddAce("C:\\w", USER_SID, "write", deny=True))
    assert dacl.sddl_has_ace(sddl, AddAce("C:\\w", USER_SID, "delete", deny=True, inherit=False))
    assert dacl.sddl_has_ace(sddl, AddAce("C:\\w", USER_SID, "read"))  # FRFX covers it
    # not there: wrong type, wrong inheritance, only inherited, more rights than present
    assert not dacl.sddl_has_ace(sddl, AddAce("C:\\w", CAP, "modify", deny=True))
    assert not dacl.sddl_has_ace(sddl, AddAce("C:\\w", CAP, "modify", inherit=False))
    assert not dacl.sddl_has_ace(sddl, AddAce("C:\\w", "S-1-5-18", "read"))
    assert not dacl.sddl_has_ace(sddl, AddAce("C:\\w", USER_SID, "modify"))


def test_sddl_masks() -> None:
    assert dacl.parse_sddl_mask("FA") == 0x1F01FF
    assert dacl.parse_sddl_mask(f"{MASKS['modify']:#x}") == MASKS["modify"] == 0x1301FF
    assert dacl.parse_sddl_mask("SDWD") == 0x50000
    with pytest.raises(SandboxError):
        dacl.parse_sddl_mask("ZZ")
    with pytest.raises(SandboxError):
        dacl.parse_sddl_dacl("D:(A;;FA;;;SY")


PLAN_RULES = [
    AddFirewallRule(
        "ringfence offline: not loopback",
        "ringfence-offline",
        "any",
        "0.0.0.0-126.255.255.255,128.0.0.0-255.255.255.255,::,::2-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ),
    AddFirewallRule(
        "ringfence offline: loopback tcp but the proxy",
        "ringfence-offline",
        "tcp",
        "127.0.0.0-127.255.255.255,::1",
        "1-3127,3129-65535",
    ),
    AddFirewallRule("ringfence offline: loopback udp", "ringfence-offline", "udp", "10.0.0.0/8"),
]


@pytest.mark.parametrize("rule", PLAN_RULES)
def test_plan_rules_pass(rule: AddFirewallRule) -> None:
    fields = firewall.check_firewall_rule(rule)
    assert fields.name == rule.name
    assert ",".join(fields.remote_addresses) == rule.remote_addresses
    assert ",".join(fields.remote_ports) == rule.remote_ports
    assert fields.protocol in ("Any", "TCP", "UDP")


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "x'; Remove-NetFirewallRule -All; '"},
        {"name": "ringfence*"},  # -Name would expand the wildcard
        {"name": "a$(calc)"},
        {"name": "line\nbreak"},
        {"name": ""},
        {"user": "ringfence-offline;x"},
        {"user": "..\\Administrator"},
        {"protocol": "icmp"},
        {"remote_addresses": "LocalSubnet"},
        {"remote_addresses": "10.0.0.1-10.0.0.0"},
        {"remote_addresses": "10.0.0.1-::1"},
        {"remote_addresses": "10.0.0.1/8"},  # host bits set
        {"remote_addresses": "1.2.3.4,"},
        {"protocol": "tcp", "remote_ports": "0-10"},
        {"protocol": "tcp", "remote_ports": "10-65536"},
        {"protocol": "tcp", "remote_ports": "20-10"},
        {"protocol": "tcp", "remote_ports": "80;443"},
        {"protocol": "any", "remote_ports": "80"},
    ],
)
def test_firewall_rule_refusals(changes: dict[str, str]) -> None:
    base = {"name": "r", "user": "ringfence-offline", "protocol": "udp", "remote_addresses": "::1"}
    with pytest.raises(PolicyError):
        firewall.check_firewall_rule(AddFirewallRule(**{**base, **changes}))


def test_powershell_argv_and_env_keep_fields_out_of_the_script() -> None:
    fields = firewall.check_firewall_rule(PLAN_RULES[1])
    params = firewall.firewall_params(fields, USER_SID)
    argv = firewall.powershell_argv("C:\\Windows", firewall.FIREWALL_ADD_SCRIPT)
    assert argv[0] == "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    assert argv[1:5] == ["-NoLogo", "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    script = base64.b64decode(argv[5]).decode("utf-16-le")
    assert script == firewall.FIREWALL_ADD_SCRIPT
    for value in params.values():  # every field travels outside the script
        assert value not in script
    assert params["RINGFENCE_FW_LOCAL_USER"] == f"O:LSD:(A;;CC;;;{USER_SID})"
    assert params["RINGFENCE_FW_REMOTE_PORTS"] == "1-3127,3129-65535"
    env = firewall.powershell_env(
        {"SYSTEMROOT": "C:\\Windows", "PSModulePath": "C:\\evil", "SECRET_TOKEN": "x"}, params
    )
    assert env["PSModulePath"] == "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\Modules"
    assert env["SystemRoot"] == "C:\\Windows" and "SECRET_TOKEN" not in env
    assert {k: env[k] for k in params} == params
    with pytest.raises(SandboxError):
        firewall.powershell_argv("Windows", "x")
    with pytest.raises(SandboxError):
        firewall.powershell_env({"SystemRoot": "C:\\Windows"}, {"OTHER": "x"})


def test_propagation_hazards(tmp_path: Path) -> None:
    root = tmp_path / "work"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "deep" / "plain.txt").write_text("x")
    assert file_acls.propagation_hazards(str(root)) == []
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.link(outside, root / "src" / "deep" / "linked.txt")
    os.symlink(tmp_path, root / "src" / "junction")
    found = file_acls.propagation_hazards(str(root))
    assert sorted(found) == sorted(
        [
            f"{root / 'src' / 'deep' / 'linked.txt'} (a file with 2 hard links)",
            f"{root / 'src' / 'junction'} (a reparse point)",
        ]
    )
    assert len(file_acls.propagation_hazards(str(root), limit=1)) == 1
    assert file_acls.propagation_hazards(str(root / "src" / "junction")) == [
        f"{root / 'src' / 'junction'} (a reparse point)"
    ]


def fake_protect(data: bytes, entropy: bytes) -> bytes:
    return b"P" + entropy + b"|" + data[::-1]


def fake_unprotect(blob: bytes, entropy: bytes) -> bytes:
    head, _, body = blob.partition(b"|")
    if head != b"P" + entropy:
        raise SandboxError("CryptUnprotectData failed: [13] The data is invalid.")
    return body[::-1]


def test_secret_store(tmp_path: Path) -> None:
    store = secrets.SecretStore(
        secrets.secrets_directory(str(tmp_path)), fake_protect, fake_unprotect
    )
    assert store.path("ringfence-offline") == str(
        tmp_path / "ringfence" / "secrets" / "ringfence-offline.dpapi"
    )
    assert not store.exists("ringfence-offline")
    with pytest.raises(SandboxError, match="ringfence setup"):
        store.load("ringfence-offline")
    store.save("ringfence-offline", "pässwörd")
    assert store.exists("ringfence-offline")
    assert "pässwörd".encode() not in Path(store.path("ringfence-offline")).read_bytes()
    assert store.load("ringfence-offline") == "pässwörd"
    # a blob made for one user does not load as another's (the entropy names the user)
    os.replace(store.path("ringfence-offline"), store.path("ringfence-online"))
    with pytest.raises(SandboxError):
        store.load("ringfence-online")
    store.delete("ringfence-online")
    store.delete("ringfence-online")  # idempotent
    assert os.listdir(store.directory) == []  # no temporary file left behind
    with pytest.raises(PolicyError):
        store.path("..\\x")
    with pytest.raises(SandboxError):
        secrets.secrets_directory("relative")


def test_generate_password() -> None:
    passwords = {secrets.generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for p in passwords:
        assert len(p) == 32
        assert any(c.islower() for c in p) and any(c.isupper() for c in p)
        assert any(c.isdigit() for c in p) and any(not c.isalnum() for c in p)
    with pytest.raises(ValueError):
        secrets.generate_password(8)


def test_write_atomic_replaces(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f"
    setup.write_atomic(str(target), b"one")
    setup.write_atomic(str(target), b"two")
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["f"]


# --- window station and desktop grants (the ctypes part is untested) ---------------------------


def test_window_grants_are_narrow() -> None:
    grants = window_access.window_grants([USER_SID, CAP, USER_SID])
    assert [(g.object, g.sid) for g in grants] == [
        ("winsta", USER_SID),
        ("desktop", USER_SID),
        ("winsta", CAP),
        ("desktop", CAP),
    ]
    for grant in grants:
        mask = (
            window_access.WINDOW_STATION_ACCESS
            if grant.object == "winsta"
            else window_access.DESKTOP_ACCESS
        )
        assert grant.mask == mask
        assert not grant.mask & (window_access.WRITE_DAC | 0x80000 | 0x10000)  # WRITE_OWNER, DELETE
    # no hooks, journal record/playback, WRITEOBJECTS or SWITCHDESKTOP on the desktop;
    # no clipboard, desktop creation, attribute writes, ExitWindows or screen reads on winsta
    assert not window_access.DESKTOP_ACCESS & (0x8 | 0x10 | 0x20 | 0x80 | 0x100)
    assert not window_access.WINDOW_STATION_ACCESS & (0x4 | 0x8 | 0x10 | 0x40 | 0x200)


def test_window_grants_refusals() -> None:
    with pytest.raises(PolicyError):
        window_access.window_grants([])
    with pytest.raises(PolicyError):
        window_access.window_grants(["WD"])
    with pytest.raises(UnsupportedError, match="needs Windows"):
        window_access.grant_window_access([CAP])
