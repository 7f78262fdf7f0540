"""Firewall rules for the sandbox users: checked against strict patterns, then made, found and
deleted through Windows PowerShell's ``NetSecurity`` module.

NOT RUN ON WINDOWS. The checks, the PowerShell argv and environment are tested on Linux; the
PowerShell calls have never run.

``New-NetFirewallRule -LocalUser <SDDL>`` through Windows PowerShell by absolute path:
``netsh advfirewall`` cannot filter by local user, and driving
``INetFwRule3.LocalUserAuthorizedList`` through COM vtables in ctypes is a lot of unverifiable
pointer code. The script is a constant; every rule field travels in an environment variable
(data, never parsed as PowerShell), and is first checked against strict patterns (no
wildcards, which ``-Name`` would expand).
"""

from __future__ import annotations

import base64
import ipaddress
import ntpath
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ringfence.errors import PolicyError, SandboxError
from ringfence.platforms.windows import secrets as secret_store
from ringfence.platforms.windows.setup import AddFirewallRule
from ringfence.platforms.windows.sids import check_sid

CREATE_NO_WINDOW = 0x08000000

# Rule names: what plan.py emits ("ringfence offline: not loopback"); no wildcard or quote.
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:()-]{0,127}")
_PROTOCOLS = {"any": "Any", "tcp": "TCP", "udp": "UDP"}
_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def user_condition_sddl(sid: str) -> str:
    """The ``-LocalUser`` condition of a firewall rule: an SDDL security descriptor granting
    "connect" (CC) to that one user; the rule then applies to that user's traffic only."""
    return f"O:LSD:(A;;CC;;;{check_sid(sid)})"


def _check_ports(ports: str) -> tuple[str, ...]:
    out = []
    for part in ports.split(","):
        m = _PORT_RANGE.fullmatch(part)
        lo = int(m.group(1)) if m else 0
        hi = int(m.group(2)) if m and m.group(2) else lo
        if not m or not 1 <= lo <= hi <= 65535:
            raise PolicyError(f"windows: bad remote port range {part!r} (N or N-M, 1-65535)")
        out.append(part)
    return tuple(out)


def _check_addresses(addresses: str) -> tuple[str, ...]:
    out = []
    for part in addresses.split(","):
        try:
            if "/" in part:
                ipaddress.ip_network(part, strict=True)
            elif "-" in part:
                lo_s, hi_s = part.split("-")
                lo, hi = ipaddress.ip_address(lo_s), ipaddress.ip_address(hi_s)
                if lo.version != hi.version or lo > hi:  # type: ignore[operator]
                    raise ValueError(part)
            else:
                ipaddress.ip_address(part)
        except ValueError:
            raise PolicyError(
                f"windows: bad remote address {part!r} (an address, a CIDR network or A-B)"
            ) from None
        out.append(part)
    return tuple(out)


@dataclass(frozen=True)
class FirewallFields:
    """An ``AddFirewallRule`` checked and split into what ``New-NetFirewallRule`` takes."""

    name: str
    protocol: str  # Any | TCP | UDP
    remote_addresses: tuple[str, ...]
    remote_ports: tuple[str, ...]


def check_firewall_rule(rule: AddFirewallRule) -> FirewallFields:
    """Strict patterns for every field, before anything reaches PowerShell."""
    if not _RULE_NAME.fullmatch(rule.name):
        raise PolicyError(
            f"windows: bad firewall rule name {rule.name!r} "
            "(letters, digits, space and . _ : ( ) -; no wildcards or quotes)"
        )
    secret_store.check_user_name(rule.user)
    if rule.protocol not in _PROTOCOLS:
        raise PolicyError(f"windows: bad protocol {rule.protocol!r} (any, tcp, udp)")
    ports = _check_ports(rule.remote_ports) if rule.remote_ports else ()
    if ports and rule.protocol == "any":
        raise PolicyError(f"windows: rule {rule.name!r}: ports need protocol tcp or udp")
    return FirewallFields(
        name=rule.name,
        protocol=_PROTOCOLS[rule.protocol],
        remote_addresses=_check_addresses(rule.remote_addresses),
        remote_ports=ports,
    )


# The scripts are constants: every value comes from an environment variable, never from text
# pasted into the script. `NetSecurity\` pins the module; -Name takes the exact name.
FIREWALL_ADD_SCRIPT = r"""$ErrorActionPreference = 'Stop'
$p = @{
  Name = $env:RINGFENCE_FW_NAME; DisplayName = $env:RINGFENCE_FW_NAME; Group = 'ringfence'
  Direction = 'Outbound'; Action = 'Block'; Enabled = 'True'; Profile = 'Any'
  Protocol = $env:RINGFENCE_FW_PROTOCOL
  RemoteAddress = [string[]]($env:RINGFENCE_FW_REMOTE_ADDRESSES -split ',')
  LocalUser = $env:RINGFENCE_FW_LOCAL_USER
}
if ($env:RINGFENCE_FW_REMOTE_PORTS) {
  $p.RemotePort = [string[]]($env:RINGFENCE_FW_REMOTE_PORTS -split ',')
}
NetSecurity\New-NetFirewallRule @p | Out-Null
"""
FIREWALL_EXISTS_SCRIPT = r"""$ErrorActionPreference = 'Stop'
$r = NetSecurity\Get-NetFirewallRule -Name $env:RINGFENCE_FW_NAME -ErrorAction SilentlyContinue
if ($r) { exit 0 } else { exit 3 }
"""
FIREWALL_DELETE_SCRIPT = r"""$ErrorActionPreference = 'Stop'
NetSecurity\Remove-NetFirewallRule -Name $env:RINGFENCE_FW_NAME
"""
FIREWALL_ABSENT_EXIT = 3


def powershell_path(system_root: str) -> str:
    return ntpath.join(system_root, "System32", "WindowsPowerShell", "v1.0", "powershell.exe")


def powershell_argv(system_root: str, script: str) -> list[str]:
    """Windows PowerShell by absolute path, no profile, the script base64-encoded (UTF-16LE),
    so no quoting layer of the command line ever sees it."""
    if not ntpath.isabs(system_root):
        raise SandboxError(f"windows: SystemRoot is not absolute: {system_root!r}")
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return [
        powershell_path(system_root),
        "-NoLogo",
        "-NoProfile",
        "-NonInteractive",
        "-EncodedCommand",
        encoded,
    ]


_KEEP_ENV = ("SystemRoot", "windir", "SystemDrive", "TEMP", "TMP", "USERPROFILE", "LOCALAPPDATA")


def powershell_env(base: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """A small environment: what PowerShell needs to start, ``PSModulePath`` pinned to the
    system modules (no user module can shadow ``NetSecurity``), and the rule's fields."""
    lower = {k.lower(): v for k, v in base.items()}
    env = {k: lower[k.lower()] for k in _KEEP_ENV if k.lower() in lower}
    root = lower.get("systemroot")
    if not root:
        raise SandboxError("windows: SystemRoot is not set")
    env["PSModulePath"] = ntpath.join(root, "System32", "WindowsPowerShell", "v1.0", "Modules")
    for key, value in params.items():
        if not key.startswith("RINGFENCE_FW_") or "\0" in value:
            raise SandboxError(f"windows: bad PowerShell parameter {key!r}")
        env[key] = value
    return env


def firewall_params(fields: FirewallFields, user_sid: str) -> dict[str, str]:
    return {
        "RINGFENCE_FW_NAME": fields.name,
        "RINGFENCE_FW_PROTOCOL": fields.protocol,
        "RINGFENCE_FW_REMOTE_ADDRESSES": ",".join(fields.remote_addresses),
        "RINGFENCE_FW_REMOTE_PORTS": ",".join(fields.remote_ports),
        "RINGFENCE_FW_LOCAL_USER": user_condition_sddl(user_sid),
    }


class Firewall:
    """The ringfence group's outbound rules (part of ``win32.Win32Api``), by PowerShell under
    ``system_root``."""

    def __init__(self, system_root: str) -> None:
        self._system_root = system_root
        if not ntpath.isabs(self._system_root):
            raise SandboxError(f"windows: SystemRoot is not absolute: {self._system_root!r}")

    def _powershell(self, script: str, params: Mapping[str, str]) -> int:
        argv = powershell_argv(self._system_root, script)
        env = powershell_env(os.environ, params)
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
                stdin=subprocess.DEVNULL,
                creationflags=CREATE_NO_WINDOW,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SandboxError(f"windows: running {argv[0]} failed: {e}") from None
        if done.returncode not in (0, FIREWALL_ABSENT_EXIT):
            text = done.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise SandboxError(
                f"windows: PowerShell ({params.get('RINGFENCE_FW_NAME', '')}) failed with "
                f"exit {done.returncode}: {text}"
            )
        return done.returncode

    def rule_exists(self, name: str) -> bool:
        if not _RULE_NAME.fullmatch(name):
            raise PolicyError(f"windows: bad firewall rule name {name!r}")
        params = {"RINGFENCE_FW_NAME": name}
        return self._powershell(FIREWALL_EXISTS_SCRIPT, params) == 0

    def add_rule(self, rule: AddFirewallRule, user_sid: Callable[[str], str]) -> None:
        """The rule, checked first; then ``user_sid`` (the account lookup) of its user."""
        fields = check_firewall_rule(rule)
        params = firewall_params(fields, user_sid(rule.user))
        if self._powershell(FIREWALL_ADD_SCRIPT, params) != 0:
            raise SandboxError(f"windows: New-NetFirewallRule {rule.name!r} did not succeed")

    def delete_rule(self, name: str) -> None:
        if not _RULE_NAME.fullmatch(name):
            raise PolicyError(f"windows: bad firewall rule name {name!r}")
        if self._powershell(FIREWALL_DELETE_SCRIPT, {"RINGFENCE_FW_NAME": name}) != 0:
            raise SandboxError(f"windows: Remove-NetFirewallRule {name!r} did not succeed")
