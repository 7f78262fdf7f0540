"""Domain allow/deny rules for the filtering proxy: parsed once, matched on every connection.

An entry is ``example.com`` (that name only), ``*.example.com`` (its subdomains, not the apex),
or either with ``:PORT``; without a port an allow entry means 80 and 443, and a deny entry
every port (a deny is never narrower than it reads). Names are compared
case-insensitively after IDNA normalisation, with a trailing dot ignored. An IP address is
matched only by an entry that names it exactly (a name rule never matches a literal address).
Deny wins over allow. The decision is made on the name, before any DNS lookup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ringfence.errors import PolicyError

DEFAULT_PORTS = (80, 443)
_LABEL_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class Rule:
    """One parsed entry. ``host`` is normalised; ``wildcard`` means subdomains of ``host``."""

    text: str
    host: str
    wildcard: bool
    ports: tuple[int, ...]
    is_ip: bool = False

    def matches(self, host: str, port: int) -> bool:
        if self.ports and port not in self.ports:  # () means every port
            return False
        if self.is_ip:
            return host == self.host
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # the entry that decided, or why nothing did

    def __str__(self) -> str:
        return self.rule


def normalize_host(name: str) -> str:
    """Lower-case, IDNA (punycode) form of a host name without a trailing dot; an IP literal in
    its canonical text form. Raises ValueError with the reason for anything else."""
    text = name.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty host name")
    try:
        ascii_name = text.encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise ValueError(f"not a valid international domain name ({e})") from None
    if len(ascii_name) > 253:
        raise ValueError("longer than 253 characters")
    for label in ascii_name.split("."):
        if not label or len(label) > 63:
            raise ValueError("has an empty or over-long label")
        if not set(label) <= _LABEL_OK or label.startswith("-") or label.endswith("-"):
            raise ValueError(f"label {label!r} has characters a host name cannot have")
    return ascii_name


def parse_rule(entry: str, *, default_ports: tuple[int, ...] = DEFAULT_PORTS) -> Rule:
    """One allow/deny entry, or PolicyError naming the entry and the reason."""
    text = entry.strip()
    try:
        return _parse(text, default_ports)
    except ValueError as e:
        raise PolicyError(f"network rule {entry!r}: {e}") from None


def _parse(text: str, default_ports: tuple[int, ...]) -> Rule:
    if not text:
        raise ValueError("empty entry")
    if "/" in text or "@" in text or "://" in text:
        raise ValueError("give a host name (like example.com or *.example.com[:443]), not a URL")
    host = text
    ports = default_ports
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed '['")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("text after ']' must be ':PORT'")
            ports = (_port(rest[1:]),)
    elif text.count(":") == 1:
        host, port = text.rsplit(":", 1)
        ports = (_port(port),)
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        raise ValueError("'*' is allowed only as the whole first label ('*.example.com')")
    name = normalize_host(host)
    is_ip = _is_ip(name)
    if is_ip and wildcard:
        raise ValueError("an IP address cannot have a wildcard")
    if not is_ip and "." not in name and wildcard:
        raise ValueError("a wildcard needs a domain under it ('*.example.com', not '*.com')")
    return Rule(text, name, wildcard, ports, is_ip)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class NetRules:
    """The allow and deny lists of a policy."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> NetRules:
        return cls(
            tuple(parse_rule(a) for a in allow),
            tuple(parse_rule(d, default_ports=()) for d in deny),
        )

    def decide(self, host: str, port: int) -> Decision:
        """Allowed only if an allow rule matches and no deny rule does."""
        try:
            name = normalize_host(host)
        except ValueError as e:
            return Decision(False, f"invalid host name ({e})")
        for rule in self.deny:
            if rule.matches(name, port):
                return Decision(False, f"denied by {rule.text!r}")
        for rule in self.allow:
            if rule.matches(name, port):
                return Decision(True, f"allowed by {rule.text!r}")
        if _is_ip(name):
            return Decision(False, "an IP address not listed exactly")
        return Decision(False, "not in the allowlist")
