"""Egress policies: which hosts a session may reach through the proxy, and narrowing them.

A pool's policy comes from its configuration (``network`` and ``egress``); the API may narrow it
for one session (fewer hosts, no network at all, headers for a domain), never widen it. The
proxy asks ``decide`` on every connection, so a session's new policy holds from the next one
(and the proxy closes open connections the new policy no longer admits).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sessionpool import errors
from sessionpool.config import EgressSettings, NetworkMode, PoolConfig

#: ports a rule without ``:port`` admits
DEFAULT_PORTS = frozenset({80, 443})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: header names the proxy may set (a token, RFC 9110), and values without line breaks
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


def normalize_host(text: str) -> str:
    """A host name in its comparable form (IDNA, lower case, no trailing dot); raises
    ValueError for anything that is not a DNS name (IP literals included)."""
    host = text.strip().rstrip(".").lower()
    if not host:
        raise ValueError("an empty host name")
    if is_ip_literal(host):
        raise ValueError(f"{text!r} is an IP address; egress rules name hosts")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{text!r} is not a valid host name") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not a valid host name")
    return host


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class EgressRule:
    """``host`` (exactly that name) or ``*.domain`` (its subdomains), on some ports."""

    pattern: str
    ports: frozenset[int] = DEFAULT_PORTS

    @classmethod
    def parse(cls, text: str) -> EgressRule:
        raw = text.strip()
        ports = DEFAULT_PORTS
        if raw.count(":") == 1:
            raw, _, port_text = raw.partition(":")
            # ASCII digits only: int() would take "+80", " 80", "8_0" and other scripts' digits
            if not (port_text.isascii() and port_text.isdigit()):
                raise ValueError(f"{text!r}: the port must be a number")
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError(f"{text!r}: port {port} is out of range")
            ports = frozenset({port})
        wildcard = raw.startswith("*.")
        name = raw[2:] if wildcard else raw
        if "*" in name:
            raise ValueError(f"{text!r}: a wildcard is only allowed as the first label (*.)")
        host = normalize_host(name)
        return cls(f"*.{host}" if wildcard else host, ports)

    @property
    def wildcard(self) -> bool:
        return self.pattern.startswith("*.")

    def matches_host(self, host: str) -> bool:
        if self.wildcard:
            return host.endswith(self.pattern[1:])
        return host == self.pattern

    def matches(self, host: str, port: int) -> bool:
        return port in self.ports and self.matches_host(host)

    def covers(self, other: EgressRule) -> bool:
        """Everything ``other`` admits, this rule admits too."""
        if not other.ports <= self.ports:
            return False
        if other.wildcard:
            return self.wildcard and (
                other.pattern == self.pattern or other.pattern.endswith(self.pattern[1:])
            )
        return self.matches_host(other.pattern)

    def __str__(self) -> str:
        if self.ports == DEFAULT_PORTS:
            return self.pattern
        return ",".join(f"{self.pattern}:{p}" for p in sorted(self.ports))


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EgressPolicy:
    mode: NetworkMode = "off"
    rules: tuple[EgressRule, ...] = ()
    #: headers the proxy adds per exact domain (it terminates TLS for these domains only)
    secrets: Mapping[str, Headers] = field(default_factory=dict)

    def decide(self, host: str, port: int) -> str | None:
        """None if ``host:port`` may be reached, else the reason it may not."""
        if self.mode == "off":
            return "network access is off for this session"
        if is_ip_literal(host):
            if self.mode == "on":
                return None
            return "IP addresses are not allowed (name the host)"
        if self.mode == "on":
            return None
        if any(rule.matches(host, port) for rule in self.rules):
            return None
        if any(rule.matches_host(host) for rule in self.rules):
            return f"port {port} not in allowlist for this host"
        return "host not in allowlist"

    def admits_host(self, host: str) -> bool:
        """Whether ``host`` may be reached on some port (secrets hold for a domain whatever
        the port: the proxy adds them to every admitted connection to it)."""
        if self.mode == "off":
            return False
        return self.mode == "on" or any(rule.matches_host(host) for rule in self.rules)

    def headers_for(self, host: str) -> Headers | None:
        return self.secrets.get(host)

    def describe(self) -> dict[str, object]:
        """The policy as an API shows it: the secrets' domains and header names, no values."""
        return {
            "mode": self.mode,
            "allow": [str(rule) for rule in self.rules],
            "secrets": {d: [name for name, _ in hs] for d, hs in sorted(self.secrets.items())},
        }


def parse_rules(texts: Iterable[str], where: str = "allow") -> tuple[EgressRule, ...]:
    rules = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"{where}: expected host names, got {text!r}")
        try:
            rules.append(EgressRule.parse(text))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(rules)


def parse_secrets(
    raw: Mapping[str, Mapping[str, str]], where: str = "secrets"
) -> dict[str, Headers]:
    """``{domain: {header: value}}`` checked: exact domains, token header names, no CR/LF."""
    out: dict[str, Headers] = {}
    for domain, headers in raw.items():
        if domain.strip().startswith("*"):
            raise ValueError(f"{where}: {domain!r}: secrets name one domain, not a wildcard")
        try:
            host = normalize_host(domain)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(headers, Mapping) or not headers:
            raise ValueError(f"{where}: {domain!r}: expected a table of header names to values")
        pairs = []
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise ValueError(f"{where}: {domain!r}: {name!r} is not a header name")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"{where}: {domain!r}: the value of {name} must be one line")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"{where}: {domain!r}: {name} cannot be set by a policy")
            pairs.append((name, value))
        out[host] = tuple(pairs)
    return out


def settings_policy(mode: NetworkMode, settings: EgressSettings) -> EgressPolicy:
    """The policy of a pool's configuration (``network`` and ``egress``)."""
    rules = parse_rules(settings.allow, "egress.allow")
    secrets = parse_secrets(
        {domain: dict(headers) for domain, headers in settings.secrets}, "egress.secrets"
    )
    return EgressPolicy(mode, rules, secrets)


def pool_policy(pool: PoolConfig) -> EgressPolicy:
    return settings_policy(pool.network, pool.egress)


def narrow(
    pool: str,
    base: EgressPolicy,
    mode: NetworkMode,
    allow: Iterable[str] | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> EgressPolicy:
    """``base`` narrowed as a session asks: raises ``EgressWidens`` if it asks for more.

    ``allow`` None keeps the base's hosts. Secrets may be added for domains the result admits;
    the pool's own secrets for a domain win over the session's.
    """
    if mode == "off":
        return EgressPolicy("off")
    if base.mode == "off":
        raise errors.EgressWidens(pool, "the pool's network is off", "network")
    if mode == "on" and base.mode != "on":
        raise errors.EgressWidens(
            pool, "unrestricted network (`on`) asked of an allowlist pool", "network"
        )
    try:
        rules = base.rules if allow is None else parse_rules(allow)
        extra = parse_secrets(secrets or {})
    except ValueError as exc:
        raise errors.InvalidArgument(f"egress policy: {exc}", "network") from None
    if base.mode == "allowlist":
        for rule in rules:
            if not any(b.covers(rule) for b in base.rules):
                raise errors.EgressWidens(pool, f"{rule} is not in the pool's allowlist", "allow")
    result = EgressPolicy(mode, rules)
    for domain in extra:
        if not result.admits_host(domain):
            raise errors.EgressWidens(
                pool, f"secrets for {domain}, which this policy does not admit", "secrets"
            )
    merged = dict(extra)
    for domain, headers in base.secrets.items():
        if result.admits_host(domain):
            names = {n.lower() for n, _ in headers}
            merged[domain] = headers + tuple(
                (n, v) for n, v in merged.get(domain, ()) if n.lower() not in names
            )
    return EgressPolicy(mode, rules, merged)
