"""What a command tried to reach while its network was off (or only the proxy was a way
out), as violation records: the names it looked up (from the sandbox's resolver,
``dns_stub``) and the addresses it connected to (from the name guard, which performs every
connect). And what tells package managers not to retry when nothing can ever answer.

A record is ``{"kind": "network", "op": "resolve" | "connect" | "send", "host", "port",
"rule"}``: ``resolve`` a name looked up (``port`` 0: a lookup has none), ``connect`` a TCP
connect, ``send`` a UDP datagram (or connect) to an address. Which of them may become a hint
("--network allowlist --allow-domain pypi.org") is escalation.py's decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ringfence.policy.model import Network

RESOLV_CONF_PATH = "/etc/resolv.conf"
# What the sandbox's /etc/resolv.conf says (plan.py): the resolver the runner starts on its
# loopback (dns_stub.py) and nothing else; no search list (a failed name is not tried again
# under the host's domain); one short try should it ever not answer.
RESOLV_CONF = (
    b"# ringfence: the sandbox's own resolver. Every lookup fails at once: the sandbox's\n"
    b"# network is off, or its only way out is the allowlist proxy (which resolves names).\n"
    b"nameserver 127.0.0.1\n"
    b"search .\n"
    b"options timeout:1 attempts:1\n"
)
OFF = "network is off"
OUTSIDE_PROXY = "not in the allowlist (looked up outside the proxy)"
UNREACHABLE = "unreachable"  # the guard's event: a connect the empty namespace had no route for
MAX_NAMES = 20  # names a command's report lists; then {"kind": "more"}

# Nothing can answer these inside the sandbox, and retrying only makes a command hang for
# tens of seconds before it fails (pip: 5 retries with backoff; npm: 2, after 10 s and 60 s;
# cargo, uv likewise). Set with the network off, unless the caller's environment sets them.
NO_RETRY_ENV: Mapping[str, str] = {
    "PIP_RETRIES": "0",
    "UV_HTTP_RETRIES": "0",
    "npm_config_fetch_retries": "0",
    "CARGO_NET_RETRY": "0",
}

# Names that are never a public host: a single label (the machine's own name), the special-use
# and local-only domains. Looked up, they are not reported: nothing to allow.
LOCAL_SUFFIXES = (
    "localhost",
    "local",
    "localdomain",
    "internal",
    "lan",
    "home",
    "arpa",
    "test",
    "invalid",
    "example",
    "onion",
)


def offline_environment(inherited: Mapping[str, str]) -> dict[str, str]:
    """``NO_RETRY_ENV`` less what ``inherited`` (the caller's environment) sets itself."""
    return {k: v for k, v in NO_RETRY_ENV.items() if k not in inherited}


def is_public_name(name: str) -> bool:
    """Whether ``name`` could be a host on the internet: a valid host name with a dot, not in
    a local-only domain, not an IP address."""
    from ringfence.policy.netrules import normalize_host

    try:
        host = normalize_host(name)
    except ValueError:
        return False
    if "." not in host or _is_ip(host):
        return False
    return host.rsplit(".", 1)[1] not in LOCAL_SUFFIXES


def is_public_address(host: str) -> bool:
    """Whether ``host`` is an IP address on the internet (not loopback, private, link-local,
    multicast, reserved or the metadata service's)."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def name_records(
    names: Iterable[str],
    network: Network,
    allow_domains: Iterable[str] = (),
    deny_domains: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The lookups worth reporting: public names; with the allowlist only those the proxy
    would not allow (an allowed one works through the proxy)."""
    from ringfence.policy.netrules import NetRules

    rules = NetRules.parse(allow_domains, deny_domains) if network is Network.ALLOWLIST else None
    out: list[dict[str, Any]] = []
    for name in names:
        if not is_public_name(name):
            continue
        if rules is not None and any(rules.decide(name, p).allowed for p in (443, 80)):
            continue
        rule = OFF if rules is None else OUTSIDE_PROXY
        if len(out) >= MAX_NAMES:
            out.append({"kind": "more"})
            break
        out.append({"kind": "network", "op": "resolve", "host": name, "port": 0, "rule": rule})
    return out


def reportable(
    network: Network, allow_domains: Iterable[str] = (), deny_domains: Iterable[str] = ()
) -> Callable[[str], bool]:
    """Whether a lookup of a name would be among :func:`name_records`' (the rules parsed
    once: it is asked of every lookup)."""
    from ringfence.policy.netrules import NetRules

    rules = NetRules.parse(allow_domains, deny_domains) if network is Network.ALLOWLIST else None

    def check(name: str) -> bool:
        if not is_public_name(name):
            return False
        return rules is None or not any(rules.decide(name, p).allowed for p in (443, 80))

    return check


def connect_records(reports: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """The guard's ``unreachable`` events (``path`` "ADDRESS PORT", ``detail`` "tcp" or
    "udp") as violation records."""
    out: list[dict[str, Any]] = []
    for r in reports:
        if r.get("kind") != UNREACHABLE:
            continue
        host, _, port = str(r.get("path", "")).rpartition(" ")
        if not host or not port.isdigit():
            continue
        op = "connect" if r.get("detail") == "tcp" else "send"  # UDP: no proxy carries it
        out.append({"kind": "network", "op": op, "host": host, "port": int(port), "rule": OFF})
    return out


def tried_line(violations: Iterable[Mapping[str, Any]]) -> str | None:
    """ "network is off: the command tried pypi.org, 1.2.3.4:443" for the report, or None."""
    tried = [
        str(v["host"]) if v.get("op") == "resolve" else _address(v)
        for v in violations
        if v.get("kind") == "network" and v.get("rule") in (OFF, OUTSIDE_PROXY)
    ]
    if not tried:
        return None
    shown = list(dict.fromkeys(tried))
    more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
    if any(v.get("rule") == OFF for v in violations):
        return f"{OFF}: the command tried " + ", ".join(shown[:5]) + more
    return "not in the allowlist: the command looked up " + ", ".join(shown[:5]) + more


def _address(v: Mapping[str, Any]) -> str:
    host = str(v.get("host", ""))
    return f"[{host}]:{v.get('port')}" if ":" in host else f"{host}:{v.get('port')}"


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
