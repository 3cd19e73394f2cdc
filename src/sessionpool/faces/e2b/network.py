"""A sandbox's network, between E2B's wire (``allow_internet_access``, ``network``) and the
egress policy of its session.

E2B's model: every sandbox may reach anything unless ``denyOut`` (or ``allow_internet_access:
false``, which is ``denyOut: ["0.0.0.0/0"]``) says otherwise, ``allowOut`` wins over ``denyOut``,
domains are only allowed (never denied) and take effect behind a deny of all traffic, and
``rules`` add headers to requests for a host. Here a session's network is its pool's policy
(``off``, ``allowlist`` of host names, or ``on``), which a sandbox may narrow, never widen:

- nothing asked, or all traffic (``allow_internet_access: true``, ``allowOut`` without a deny of
  all traffic): the pool's policy, as it is; asked explicitly of a pool whose network is off, a
  400 (the sandbox would silently get less than it asked for).
- all traffic denied: ``off``; with ``allowOut`` hosts, an allowlist of those hosts (each must
  be in the pool's allowlist: ``EgressWidens`` otherwise).
- ``allowOut: ["0.0.0.0/0"]``: unrestricted (``on``), which only a pool that is ``on`` has.
- ``rules`` with header transforms: headers the proxy adds for that host (the host must be
  admitted by the result).

Refused, since they cannot be honoured exactly: IP addresses and networks in ``allowOut`` (the
proxy's rules name hosts), a ``denyOut`` of particular addresses where the sandbox has network
(the proxy resolves names itself: a denied network cannot be told from an allowed name),
``dnsServers`` (sessions resolve no names: the proxy does), ``egressProxy``, public sandbox
URLs and their options, and workload-identity placeholders in transforms.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sessionpool import errors
from sessionpool.config import NetworkMode, PoolConfig
from sessionpool.egress.policy import narrow, pool_policy
from sessionpool.faces.http import HttpError

#: E2B's "all traffic" (``e2b.ALL_TRAFFIC``)
ALL_TRAFFIC = "0.0.0.0/0"
#: what the detail answer shows for a header the proxy adds (values are never returned)
HIDDEN = "***"

Secrets = dict[str, dict[str, str]]


def _refuse(field_name: str, why: str) -> HttpError:
    return HttpError(400, "BadRequest", f"{field_name}: {why}")


@dataclass(frozen=True)
class NetworkAsk:
    """What a sandbox asked of its network, in the egress policy's terms."""

    #: ``off``, ``allowlist``, ``on``, or None: the pool's own policy
    mode: NetworkMode | None = None
    #: the allowlist's hosts (``allowlist``); with ``mode`` None, hosts that must be reachable
    allow: tuple[str, ...] = ()
    #: headers the proxy adds, per domain
    secrets: Secrets = field(default_factory=dict)
    #: network access was asked for explicitly (``allow_internet_access: true``, ``allowOut``)
    explicit: bool = False
    #: ``denyOut`` entries other than all traffic (honoured only where the result is ``off``)
    denied: tuple[str, ...] = ()
    #: the field the ask came from, for messages
    where: str = "network"


def _is_address(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry.strip().strip("[]"), strict=False)
    except ValueError:
        return False
    return True


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _refuse(where, "expected a list of strings")
    return list(value)


def _secrets(rules: Any) -> Secrets:
    """``{host: [{"transform": {"headers": {name: value}}}, ...]}``: the headers of a host's
    rules, later rules winning."""
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise _refuse("network.rules", "expected an object of hosts to lists of rules")
    out: Secrets = {}
    for host, host_rules in rules.items():
        where = f"network.rules[{host!r}]"
        if not isinstance(host_rules, list):
            raise _refuse(where, "expected a list of rules")
        headers: dict[str, str] = {}
        for rule in host_rules:
            if not isinstance(rule, Mapping):
                raise _refuse(where, "a rule is an object")
            unknown = sorted(set(rule) - {"transform"})
            if unknown:
                raise _refuse(where, f"{', '.join(unknown)}: only header transforms are supported")
            transform = rule.get("transform") or {}
            if not isinstance(transform, Mapping):
                raise _refuse(where, "transform is an object")
            unknown = sorted(set(transform) - {"headers"})
            if unknown:
                raise _refuse(where, f"transform {', '.join(unknown)}: only headers are supported")
            added = transform.get("headers") or {}
            if not isinstance(added, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in added.items()
            ):
                raise _refuse(where, "transform headers are an object of names to strings")
            for name, value in added.items():
                if "${e2b." in value:
                    raise _refuse(
                        where,
                        f"{name}: workload identity placeholders are not supported by this "
                        "server (no iam tokens); give the header's value",
                    )
            headers.update(added)
        if headers:
            out[host] = headers
    return out


def parse(allow_internet_access: bool | None, network: Mapping[str, Any] | None) -> NetworkAsk:
    """The ask of a create's (or a network update's) fields; raises a 400 naming the field
    for what cannot be honoured exactly."""
    net: Mapping[str, Any] = network or {}
    for key, why in (
        ("egressProxy", "tunnelling egress through a proxy of yours is not supported"),
        ("maskRequestHost", "public sandbox URLs are not served by this server"),
        ("httpsPorts", "public sandbox URLs are not served by this server"),
    ):
        if net.get(key):
            raise _refuse(f"network.{key}", why)
    if net.get("allowPublicTraffic") is True:
        raise _refuse(
            "network.allowPublicTraffic",
            "sandbox traffic always needs the sandbox's access token on this server",
        )
    if _strings(net.get("dnsServers"), "network.dnsServers"):
        raise _refuse(
            "network.dnsServers",
            "sessions resolve no names themselves (the egress proxy resolves the hosts they "
            "reach), so no DNS server is reachable; leave it out",
        )
    allow_out = _strings(net.get("allowOut"), "network.allowOut")
    deny_out = _strings(net.get("denyOut"), "network.denyOut")
    secrets = _secrets(net.get("rules"))
    for entry in deny_out:
        if entry != ALL_TRAFFIC and not _is_address(entry):
            raise _refuse(
                "network.denyOut",
                f"{entry!r}: denyOut takes IP addresses and networks (as on E2B); to reach "
                "only some hosts, deny all traffic and list the hosts in allowOut",
            )
    everything = False
    hosts: list[str] = []
    for entry in allow_out:
        if entry.strip() == ALL_TRAFFIC:
            everything = True
        elif _is_address(entry):
            raise _refuse(
                "network.allowOut",
                f"{entry!r}: this server's egress rules name hosts (api.example.com, "
                "*.example.com), not IP addresses or networks",
            )
        else:
            hosts.append(entry)
    deny_all = allow_internet_access is False or ALL_TRAFFIC in deny_out
    denied = tuple(d for d in deny_out if d != ALL_TRAFFIC)
    where = "network" if network else "allow_internet_access"
    if everything:
        return NetworkAsk("on", (), secrets, True, (), "network.allowOut")
    if deny_all:
        if hosts:
            return NetworkAsk("allowlist", tuple(hosts), secrets, True, (), "network.allowOut")
        return NetworkAsk("off", (), secrets, False, (), where)
    explicit = allow_internet_access is True or bool(hosts)
    return NetworkAsk(None, tuple(hosts), secrets, explicit, denied, where)


@dataclass(frozen=True)
class Resolved:
    """What the sandbox's sessions are set to: ``set_network(mode, allow, secrets)``."""

    mode: NetworkMode
    allow: tuple[str, ...] | None
    secrets: Secrets


def resolve(ask: NetworkAsk, pool: PoolConfig, template: str) -> Resolved:
    """The ask against the pool's policy, checked as the session will check it; a 400 for
    what would be narrower than asked (a pool without network) or wider than the pool."""
    base = pool.network
    mode: NetworkMode = base if ask.mode is None else ask.mode
    allow = None if ask.mode is None else ask.allow
    if base == "off" and (ask.explicit or (mode != "off")):
        raise _refuse(
            ask.where,
            f"template {template!r} (pool {pool.name!r}) has no network access: its sandboxes "
            "reach nothing beyond their own loopback. The operator enables it with "
            f'`network = "allowlist"` (and the hosts in `egress.allow`) in [pools.{pool.name}] '
            "of the server's configuration; or ask for no internet access "
            "(allow_internet_access=False)",
        )
    if ask.denied and mode != "off":
        raise _refuse(
            "network.denyOut",
            f"{', '.join(ask.denied)}: denying particular addresses cannot be enforced here "
            "(the egress proxy admits host names and resolves them itself); deny all traffic "
            "(ALL_TRAFFIC) and list the hosts to reach in allowOut",
        )
    if mode == "off" and ask.secrets:
        raise errors.EgressWidens(
            pool.name,
            f"headers for {', '.join(sorted(ask.secrets))}, which a sandbox without network "
            "never reaches",
            "network.rules",
        )
    policy = pool_policy(pool)
    if ask.mode is None and ask.allow:
        # hosts named with no deny of all traffic: the pool's policy, which must reach them
        narrow(pool.name, policy, "allowlist", ask.allow)
    narrow(pool.name, policy, mode, allow, ask.secrets)
    return Resolved(mode, allow, dict(ask.secrets))


def wire(net: Mapping[str, Any]) -> dict[str, Any]:
    """A session's ``network()`` as E2B's ``network`` of a sandbox's detail."""
    mode = net.get("mode", "off")
    out: dict[str, Any] = {}
    if mode == "off":
        out["denyOut"] = [ALL_TRAFFIC]
    elif mode == "allowlist":
        out["allowOut"] = [str(a) for a in net.get("allow") or []]
        out["denyOut"] = [ALL_TRAFFIC]
    secrets = net.get("secrets") or {}
    if secrets:
        out["rules"] = {
            domain: [{"transform": {"headers": dict.fromkeys(names, HIDDEN)}}]
            for domain, names in secrets.items()
        }
    return out
