"""Network: egress is disabled; the host's loopback (the server's port included), DNS and every
other address are unreachable from a session."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from sessionpool.server.testing import ServerProcess
from tests.security.helpers import ATTEMPT, Api

pytestmark = pytest.mark.jail

CONNECT = ATTEMPT + (
    "import socket\n"
    "def conn(host, port, family=socket.AF_INET):\n"
    "    s = socket.socket(family, socket.SOCK_STREAM)\n"
    "    s.settimeout(2)\n"
    "    try:\n"
    "        s.connect((host, port))\n"
    "    finally:\n"
    "        s.close()\n"
)


@pytest.fixture
def host_tcp_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on the host's 127.0.0.1 that records every connection it accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            got.append(b"connected")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join(2)
    srv.close()


def host_ipv4_addresses() -> list[str]:
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                ifreq = fcntl.ioctl(s, 0x8915, struct.pack("256s", name.encode()[:15]))
                address = socket.inet_ntoa(ifreq[20:24])
                if not address.startswith("127."):
                    found.append(address)
    return found


def test_the_servers_own_port_is_unreachable(api: Api, server: ServerProcess, ident: str) -> None:
    port = urlparse(server.url).port
    found = api.value(
        ident,
        CONNECT + f"attempt(conn, '127.0.0.1', {port}), attempt(conn, 'localhost', {port}),"
        f" attempt(conn, '::1', {port}, socket.AF_INET6)",
    )
    assert found[0] == "ECONNREFUSED" and found[1] == "ECONNREFUSED", found
    assert found[2] in ("ECONNREFUSED", "EADDRNOTAVAIL", "ENETUNREACH"), found


def test_a_host_loopback_listener_is_unreachable(
    api: Api, ident: str, host_tcp_listener: tuple[int, list[bytes]]
) -> None:
    port, got = host_tcp_listener
    assert api.value(ident, CONNECT + f"attempt(conn, '127.0.0.1', {port})") == "ECONNREFUSED"
    assert got == []


def test_udp_to_the_host_loopback_is_not_delivered(api: Api, ident: str) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    port = rx.getsockname()[1]
    try:
        api.ok(
            ident,
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range(10):\n    s.sendto(b'leak', ('127.0.0.1', {port}))",
        )
        with pytest.raises(TimeoutError):
            rx.recv(100)
    finally:
        rx.close()


def test_dns_lookups_fail(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import socket\nout = []\n"
        "for name in ('example.com', 'pypi.org', 'metadata.google.internal'):\n"
        "    try:\n"
        "        socket.getaddrinfo(name, 443)\n"
        "        out.append('resolved')\n"
        "    except socket.gaierror:\n"
        "        out.append('failed')\n"
        "out, open('/etc/resolv.conf').read()",
    )
    assert found == (["failed"] * 3, "")


def test_dns_servers_are_unreachable_directly(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "[attempt(s.sendto, b'\\0' * 12, (ip, 53)) for ip in ('8.8.8.8', '1.1.1.1', '127.0.0.53')]",
    )
    assert found[:2] == ["ENETUNREACH", "ENETUNREACH"], found
    assert found[2] in ("ok", "ECONNREFUSED")  # the session's own loopback: nobody listens


@pytest.mark.parametrize(
    "target",
    ["8.8.8.8", "169.254.169.254", "10.0.0.1", "192.168.0.1", "2001:4860:4860::8888", "host-ips"],
)
def test_other_addresses_are_unreachable(api: Api, ident: str, target: str) -> None:
    targets = host_ipv4_addresses() if target == "host-ips" else [target]
    if not targets:
        pytest.skip("the host has no non-loopback address")
    found = api.value(
        ident,
        CONNECT + "[attempt(conn, t, 80, socket.AF_INET6 if ':' in t else socket.AF_INET)"
        f" for t in {targets!r}]",
    )
    for result in found:
        assert result in ("ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL"), found


def test_only_loopback_exists_and_raw_sockets_are_refused(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "import socket\n"
        "sorted(n for _, n in socket.if_nameindex()),"
        " attempt(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0),"
        " attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
    )
    names, packet, raw = found
    assert names == ["lo"], names
    assert packet == "EPERM" and raw == "EPERM", found


def test_a_host_abstract_unix_socket_is_unreachable(api: Api, ident: str) -> None:
    name = "\0sp-security-host-abstract"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(name)
    srv.listen()
    try:
        found = api.value(
            ident,
            ATTEMPT + f"import socket\nattempt(socket.socket(socket.AF_UNIX).connect, {name!r})",
        )
        assert found == "ECONNREFUSED"
    finally:
        srv.close()
