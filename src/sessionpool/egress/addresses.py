"""Which addresses the egress proxy connects to, and how it finds them.

The proxy resolves every name itself (the operator's ``egress_hosts`` first, then the host's
resolver): the session has no DNS, and nothing it sends can steer where a connection goes. Every
address is checked before the connect, so an allowed name that resolves to a private, loopback,
link-local or metadata address is refused (the usual way into a cloud's instance metadata).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: instance-metadata and similar service addresses of the common clouds
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
    )
)

#: NAT64's well-known prefix (RFC 6052): its last 32 bits are the IPv4 address reached
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Unresolved(Exception):
    """The name does not resolve (not a policy decision: a 502, not a 403)."""


class Resolver:
    def __init__(
        self, hosts: Iterable[tuple[str, str]] = (), allow_networks: Iterable[str] = ()
    ) -> None:
        self.hosts = {name.rstrip(".").lower(): ipaddress.ip_address(a) for name, a in hosts}
        self.allow_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)

    def verdict(self, address: IPAddress) -> str | None:
        """None if the proxy may connect to ``address``, else why not."""
        if isinstance(address, ipaddress.IPv6Address):
            # an IPv6 address that stands for an IPv4 one is judged as that one (a name that
            # resolves to 64:ff9b::a9fe:a9fe is the metadata address behind a NAT64 gateway)
            if address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            elif address in NAT64:
                address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            elif address.sixtofour is not None:
                address = address.sixtofour
        if address in METADATA:
            return f"{address} is a metadata address"
        if (
            address.is_loopback
            or address.is_link_local
            or address.is_unspecified
            or address.is_multicast
        ):
            return f"{address} is a loopback, link-local or reserved address"
        if any(address in net for net in self.allow_networks):
            return None
        if not address.is_global:
            return f"{address} is a private address"
        return None

    async def resolve(self, host: str, port: int) -> tuple[list[IPAddress], str | None]:
        """The addresses ``host`` may be reached at; if none, the reason (the first refusal).
        Raises ``Unresolved`` if the name has no address at all."""
        try:
            found = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            mapped = self.hosts.get(host)
            if mapped is not None:
                found = [mapped]
            else:
                try:
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        host, port, type=socket.SOCK_STREAM
                    )
                except (OSError, UnicodeError):
                    raise Unresolved(f"{host} does not resolve") from None
                found = []
                for info in infos:
                    address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
                    if address not in found:
                        found.append(address)
        ok = [a for a in found if self.verdict(a) is None]
        if ok:
            return ok, None
        if not found:
            raise Unresolved(f"{host} does not resolve")
        reason = self.verdict(found[0])
        return [], f"{host} resolves to a refused address ({reason})"
