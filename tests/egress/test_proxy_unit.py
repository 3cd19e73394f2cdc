"""The egress proxy's pieces without a jail: the ClientHello parser, the request-target and Host
checks, the token bucket, the address checks, and the proxy itself in this process answering
denials on 127.0.0.1 (it never connects anywhere: every request here is refused before that).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest

from sessionpool.config import EgressSettings
from sessionpool.egress.addresses import Resolver, Unresolved
from sessionpool.egress.policy import EgressPolicy, parse_rules
from sessionpool.egress.proxy import (
    DENIAL_PREFIX,
    Bucket,
    Denied,
    EgressProxy,
    Gate,
    _authority,
    _http_target,
    _read_client_hello,
    _split_host_header,
    server_name,
)

# --- the ClientHello's server name -------------------------------------------------------------


def client_hello(server_hostname: str | None) -> bytes:
    """The first flight of a real TLS client (this Python's OpenSSL), as it goes on the wire."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def split_records(hello: bytes, at: int) -> bytes:
    """The same ClientHello in two TLS records (legal, and what evasive clients send)."""
    body = hello[5:]
    head = hello[:3]
    first, rest = body[:at], body[at:]
    return head + len(first).to_bytes(2, "big") + first + head + len(rest).to_bytes(2, "big") + rest


@pytest.mark.parametrize("name", ["api.example.com", "xn--bcher-kva.de", "a.b.c.example.org"])
def test_server_name_of_real_client_hellos(name: str) -> None:
    hello = client_hello(name)
    assert hello[0] == 0x16
    assert server_name(hello) == name
    assert server_name(split_records(hello, 60)) == name
    assert server_name(split_records(hello, 3)) == name


def test_a_client_hello_without_sni_has_no_server_name() -> None:
    assert server_name(client_hello(None)) is None
    # an IP address is never sent as SNI (RFC 6066): a tunnel to an address has no name
    assert server_name(client_hello("93.184.216.34")) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x16\x03\x01\x00\x00",
        b"\x16\x03\x01\x00\x01\x02",  # a handshake message that is not a ClientHello
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"\x17\x03\x03\x00\x05hello",  # application data
    ],
)
def test_malformed_client_hellos_raise(data: bytes) -> None:
    with pytest.raises(ValueError):
        server_name(data)


def test_truncated_client_hellos_raise() -> None:
    hello = client_hello("api.example.com")
    for cut in (6, 20, 45, 60):
        with pytest.raises(ValueError, match="ClientHello"):
            server_name(hello[:cut])


async def test_reading_a_client_hello_off_the_tunnel() -> None:
    hello = client_hello("api.example.com")

    def reader_of(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        if eof:
            reader.feed_eof()
        return reader

    # early bytes (after the CONNECT head) plus the rest, in odd pieces, in two records
    two = split_records(hello, 100)
    got = await _read_client_hello(reader_of(two[7:50], two[50:], eof=False), two[:7])
    assert got == two and server_name(got) == "api.example.com"
    # what follows the ClientHello is kept, to be forwarded as it came
    got = await _read_client_hello(reader_of(hello + b"more", eof=False), b"")
    assert got == hello + b"more"
    with pytest.raises(ValueError, match="only TLS may pass"):
        await _read_client_hello(reader_of(b"GET / HTTP/1.1\r\n\r\n"), b"")
    with pytest.raises(ValueError, match="closed before a TLS ClientHello"):
        await _read_client_hello(reader_of(b"\x16\x03"), b"")
    with pytest.raises(ValueError, match="closed inside the ClientHello"):
        await _read_client_hello(reader_of(hello[:100]), b"")


# --- request targets and Host headers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com:443", ("example.com", 443)),
        ("Example.COM.:80", ("example.com", 80)),
        ("bücher.de:443", ("xn--bcher-kva.de", 443)),
        ("[2001:db8::1]:8443", ("2001:db8::1", 8443)),
        ("[::1]:443", ("::1", 443)),
        ("example.com", ("", 0)),
        ("example.com:", ("", 0)),
        ("example.com:0", ("", 0)),
        ("example.com:65536", ("", 0)),
        ("example.com:+443", ("", 0)),
        ("example.com:https", ("", 0)),
    ],
)
def test_connect_authorities(text: str, expected: tuple[str, int]) -> None:
    assert _authority(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", 0)),
        ("Example.com.", ("example.com", 0)),
        ("example.com:8080", ("example.com", 8080)),
        ("example.com:x", ("example.com", -1)),
        ("[::1]", ("::1", 0)),
        ("[::1]:80", ("::1", 80)),
        ("[2001:db8::1]:x", ("2001:db8::1", -1)),
        ("::1", ("::1", 0)),  # unbracketed: all of it is the host
    ],
)
def test_host_headers(text: str, expected: tuple[str, int]) -> None:
    assert _split_host_header(text) == expected


def request(target: bytes, host: bytes | None, version: bytes = b"1.1") -> h11.Request:
    headers = [(b"host", host)] if host is not None else []
    return h11.Request(method=b"GET", target=target, headers=headers, http_version=version)


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        (b"http://a.example/x?y=1", b"a.example", ("a.example", 80, b"/x?y=1")),
        (b"http://a.example", b"a.example", ("a.example", 80, b"/")),
        (b"http://a.example/", b"a.example:80", ("a.example", 80, b"/")),
        (b"http://a.example:8080/p", b"a.example:8080", ("a.example", 8080, b"/p")),
        (b"http://A.EXAMPLE./p", b"a.example", ("a.example", 80, b"/p")),
        (b"http://a.example/p#frag", b"a.example", ("a.example", 80, b"/p")),
        (b"http://u:pw@a.example/", b"a.example", ("a.example", 80, b"/")),
        (b"http://[2001:db8::1]:8080/", b"[2001:db8::1]:8080", ("2001:db8::1", 8080, b"/")),
    ],
)
def test_plain_http_targets(target: bytes, host: bytes, expected: tuple[str, int, bytes]) -> None:
    assert _http_target(request(target, host), None, 0) == expected


@pytest.mark.parametrize(
    ("target", "host", "status", "needle"),
    [
        (b"/x", b"a.example", 400, "send absolute URLs"),
        (b"https://a.example/", b"a.example", 400, "https goes via CONNECT"),
        (b"ftp://a.example/", b"a.example", 400, "ftp goes via CONNECT"),
        (b"a.example:80", b"a.example", 400, "goes via CONNECT"),
        (b"http://a.example:abc/", b"a.example", 400, "a bad port in the URL"),
        (b"http://a.example:70000/", b"a.example", 400, "a bad port in the URL"),
        (b"http:///x", b"a.example", 400, "a URL without a host"),
        (b"http://a.example/", b"b.example", 403, "does not match the request's host"),
        (b"http://a.example:8080/", b"a.example", 403, "(a.example:8080)"),
        (b"http://a.example/", b"a.example:8080", 403, "does not match"),
        (b"http://a.example/", b"a.example:x", 403, "does not match"),
        (b"http://[::1]/", b"[::2]", 403, "does not match"),
    ],
)
def test_plain_http_refusals(target: bytes, host: bytes, status: int, needle: str) -> None:
    with pytest.raises(Denied) as info:
        _http_target(request(target, host), None, 0)
    assert info.value.status == status
    assert needle in info.value.reason


def test_a_host_mismatch_still_says_what_was_asked_for() -> None:
    with pytest.raises(Denied) as info:
        _http_target(request(b"http://a.example:8080/", b"b.example"), None, 0)
    assert (info.value.host, info.value.port) == ("a.example", 8080)


def test_a_request_needs_exactly_one_host_header() -> None:
    with pytest.raises(Denied) as info:
        _http_target(request(b"http://a.example/", None, b"1.0"), None, 0)
    assert (info.value.status, info.value.reason) == (
        400,
        "a request needs exactly one Host header",
    )


def test_targets_inside_a_terminated_tunnel() -> None:
    assert _http_target(request(b"/x?q", b"a.example"), "a.example", 443) == (
        "a.example",
        443,
        b"/x?q",
    )
    assert _http_target(request(b"/", b"a.example:443"), "a.example", 443)[:2] == (
        "a.example",
        443,
    )
    assert _http_target(request(b"https://a.example/p", b"a.example"), "a.example", 443)[2] == b"/p"
    assert _http_target(request(b"/", b"a.example:8443"), "a.example", 8443)[1] == 8443
    for target, host, needle in (
        (b"/", b"b.example", "Host header (b.example) does not match"),
        (b"/", b"a.example", "(a.example:8443)"),  # the tunnel's port, not the default
        (b"https://b.example/", b"a.example", "the URL's host does not match the tunnel's"),
    ):
        port = 8443 if needle.endswith("8443)") else 443
        with pytest.raises(Denied) as info:
            _http_target(request(target, host), "a.example", port)
        assert info.value.status == 403
        assert needle in info.value.reason


# --- the token bucket --------------------------------------------------------------------------


def test_a_bucket_admits_its_burst_then_its_rate() -> None:
    bucket = Bucket(rate=0.5, burst=3.0)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    bucket.stamp -= 2.0  # two seconds later (the clock moved back): one more token
    assert bucket.try_take()
    assert not bucket.try_take()
    bucket.stamp -= 100.0  # long idle: back to the burst, never above it
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]


def test_a_zero_rate_bucket_is_no_limit() -> None:
    bucket = Bucket(rate=0.0, burst=0.0)
    assert all(bucket.try_take(1000) for _ in range(100))


async def test_take_goes_into_debt_and_sleeps_it_off() -> None:
    bucket = Bucket(rate=200.0, burst=100.0)
    start = time.monotonic()
    await bucket.take(100)  # the burst: no wait
    assert time.monotonic() - start < 0.25
    start = time.monotonic()
    await bucket.take(80)  # 80 tokens in debt at 200/s: 400 ms
    assert time.monotonic() - start >= 0.38
    assert bucket.tokens < 0  # the debt stays for the next taker to wait out
    free = Bucket(rate=0.0, burst=0.0)
    start = time.monotonic()
    await free.take(10**9)
    assert time.monotonic() - start < 0.25


# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("10.1.2.3", "is a private address"),
        ("172.16.0.1", "is a private address"),
        ("192.168.1.1", "is a private address"),
        ("100.64.0.1", "is a private address"),  # carrier-grade NAT
        ("fd00::1", "is a private address"),
        ("fd12:3456::1", "is a private address"),
        ("127.0.0.1", "loopback, link-local or reserved"),
        ("127.8.9.10", "loopback, link-local or reserved"),
        ("::1", "loopback, link-local or reserved"),
        ("0.0.0.0", "loopback, link-local or reserved"),
        ("::", "loopback, link-local or reserved"),
        ("169.254.1.1", "loopback, link-local or reserved"),
        ("fe80::1", "loopback, link-local or reserved"),
        ("224.0.0.1", "loopback, link-local or reserved"),
        ("169.254.169.254", "169.254.169.254 is a metadata address"),
        ("169.254.170.2", "is a metadata address"),
        ("100.100.100.200", "is a metadata address"),
        ("fd00:ec2::254", "is a metadata address"),
        # IPv6 forms of IPv4 addresses are judged as the IPv4 address they stand for
        ("::ffff:127.0.0.1", "127.0.0.1 is a loopback"),
        ("::ffff:10.0.0.1", "10.0.0.1 is a private address"),
        ("::ffff:169.254.169.254", "169.254.169.254 is a metadata address"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254 is a metadata address"),  # NAT64
        ("64:ff9b::a00:1", "10.0.0.1 is a private address"),
        ("2002:7f00:1::", "127.0.0.1 is a loopback"),  # 6to4
        ("2002:a9fe:a9fe::1", "169.254.169.254 is a metadata address"),
    ],
)
def test_the_resolver_refuses_inner_addresses(address: str, needle: str) -> None:
    reason = Resolver().verdict(ipaddress.ip_address(address))
    assert reason is not None and needle in reason, reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_the_resolver_admits_public_addresses(address: str) -> None:
    assert Resolver().verdict(ipaddress.ip_address(address)) is None


def test_allow_networks_admit_private_networks_but_never_loopback_or_metadata() -> None:
    resolver = Resolver(
        allow_networks=("10.20.0.0/16", "fd00::/8", "127.0.0.0/8", "169.254.0.0/16")
    )
    assert resolver.verdict(ipaddress.ip_address("10.20.3.4")) is None
    assert resolver.verdict(ipaddress.ip_address("::ffff:10.20.3.4")) is None
    assert resolver.verdict(ipaddress.ip_address("fd00::5")) is None
    assert "private" in (resolver.verdict(ipaddress.ip_address("10.21.0.1")) or "")
    assert "loopback" in (resolver.verdict(ipaddress.ip_address("127.0.0.1")) or "")
    assert "metadata" in (resolver.verdict(ipaddress.ip_address("169.254.169.254")) or "")
    assert "link-local" in (resolver.verdict(ipaddress.ip_address("169.254.1.1")) or "")
    assert "metadata" in (resolver.verdict(ipaddress.ip_address("fd00:ec2::254")) or "")


async def test_resolve_uses_the_hosts_map_and_literals_without_dns() -> None:
    resolver = Resolver(
        hosts=(("Pypi.Internal.", "10.20.0.5"), ("meta.example", "169.254.169.254")),
        allow_networks=("10.20.0.0/16",),
    )
    assert await resolver.resolve("pypi.internal", 443) == (
        [ipaddress.ip_address("10.20.0.5")],
        None,
    )
    addresses, reason = await resolver.resolve("meta.example", 80)
    assert addresses == []
    assert reason == (
        "meta.example resolves to a refused address (169.254.169.254 is a metadata address)"
    )
    assert await resolver.resolve("[2606:4700::1111]", 443) == (
        [ipaddress.ip_address("2606:4700::1111")],
        None,
    )
    addresses, reason = await resolver.resolve("127.0.0.1", 80)
    assert addresses == [] and reason is not None and "loopback" in reason


async def test_resolve_keeps_the_admitted_addresses_of_a_mixed_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: dict[str, Any] = {
        "mixed.example": ["10.0.0.1", "93.184.216.34", "fe80::1%eth0", "93.184.216.34"],
        "inner.example": ["10.0.0.1", "127.0.0.1"],
        "none.example": [],
        "broken.example": OSError("Name or service not known"),
    }

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answer
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    resolver = Resolver()
    assert await resolver.resolve("mixed.example", 443) == (
        [ipaddress.ip_address("93.184.216.34")],
        None,
    )
    addresses, reason = await resolver.resolve("inner.example", 443)
    assert addresses == [] and reason is not None
    assert "10.0.0.1 is a private address" in reason  # the first refusal is the reason
    for name in ("none.example", "broken.example"):
        with pytest.raises(Unresolved, match=f"{name} does not resolve"):
            await resolver.resolve(name, 443)


async def test_localhost_resolves_to_a_refused_address() -> None:
    addresses, reason = await Resolver().resolve("localhost", 80)
    assert addresses == []
    assert reason is not None and reason.startswith("localhost resolves to a refused address")


# --- the proxy in this process ------------------------------------------------------------------


@dataclass
class Door:
    proxy: EgressProxy
    gate: Gate
    port: int


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Door]:
    """A running proxy and one gate listening on 127.0.0.1 (an ephemeral port, this
    namespace), for an allowlist of ``api.example.com`` whose name maps to loopback."""
    proxy = EgressProxy(tmp_path / "egress", hosts=(("api.example.com", "127.0.0.1"),))
    proxy.start()
    gate = proxy.gate(
        lambda: "unit-session",
        EgressPolicy("allowlist", parse_rules(["api.example.com"])),
        EgressSettings(connections=4, connections_per_second=1000.0),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        await gate.attach(sock)
        yield Door(proxy, gate, port)
    finally:
        gate.close()
        proxy.close()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` to the proxy and read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body.decode()


async def test_the_proxy_denies_a_host_outside_the_allowlist(
    door: Door, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessionpool.egress")
    raw = await exchange(
        door.port, b"GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    )
    status, headers, body = parse_answer(raw)
    assert status == 403
    assert body == "blocked by sessionpool egress policy: host not in allowlist\n"
    assert body.startswith(DENIAL_PREFIX)
    assert raw.startswith(b"HTTP/1.1 403 blocked by sessionpool egress policy: host not in")
    assert headers["x-sessionpool-egress"] == "denied"
    assert headers["content-length"] == str(len(body.encode()))
    assert headers["connection"] == "close"
    _, host, port, verdict, reason = door.gate.decisions[-1]
    assert (host, port, verdict, reason) == ("evil.example", 80, "denied", "host not in allowlist")
    assert door.proxy.counts["denied"] == 1
    records = [r for r in caplog.records if r.name == "sessionpool.egress"]
    assert [r.getMessage() for r in records] == [
        "egress: session unit-session: evil.example:80 denied: host not in allowlist"
    ]
    assert records[0].levelno == logging.WARNING


async def test_the_proxy_denies_connects_by_policy_and_by_address(door: Door) -> None:
    status, headers, body = parse_answer(
        await exchange(
            door.port, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
        )
    )
    assert (status, headers["x-sessionpool-egress"]) == (403, "denied")
    assert "host not in allowlist" in body
    status, _, body = parse_answer(
        await exchange(
            door.port, b"CONNECT api.example.com:22 HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
        )
    )
    assert status == 403 and "port 22 not in allowlist for this host" in body
    status, _, body = parse_answer(
        await exchange(door.port, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
    )
    assert status == 403 and "IP addresses are not allowed (name the host)" in body
    # allowed by name, refused by address: the operator's map sends it to loopback
    status, _, body = parse_answer(
        await exchange(
            door.port, b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
        )
    )
    assert status == 403
    assert body == (
        f"{DENIAL_PREFIX}: api.example.com resolves to a refused address "
        "(127.0.0.1 is a loopback, link-local or reserved address)\n"
    )
    verdicts = [(h, p, v) for _, h, p, v, _ in door.gate.decisions]
    assert verdicts == [
        ("evil.example", 443, "denied"),
        ("api.example.com", 22, "denied"),
        ("127.0.0.1", 443, "denied"),
        ("api.example.com", 443, "denied"),
    ]
    assert door.proxy.counts["allowed"] == 0


async def test_the_proxy_answers_bad_requests_with_400(door: Door) -> None:
    for data, needle in (
        (b"GET /x HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "send absolute URLs"),
        (b"GET https://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "CONNECT"),
        (b"CONNECT api.example.com HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "host:port"),
        (b"NOT HTTP AT ALL\r\n\r\n", "a malformed request"),
    ):
        status, headers, body = parse_answer(await exchange(door.port, data))
        assert status == 400, body
        assert headers["x-sessionpool-egress"] == "bad request"
        assert body.startswith("sessionpool egress proxy: ") and needle in body


async def test_a_host_header_that_disagrees_is_denied(door: Door) -> None:
    raw = await exchange(
        door.port, b"GET http://api.example.com/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    )
    status, _, body = parse_answer(raw)
    assert status == 403 and "does not match the request's host (api.example.com:80)" in body
    assert door.gate.decisions[-1][1:4] == ("api.example.com", 80, "denied")


async def test_a_new_policy_holds_from_the_next_connection(door: Door) -> None:
    door.gate.set_policy(EgressPolicy("off"))
    status, _, body = parse_answer(
        await exchange(
            door.port, b"GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
        )
    )
    assert status == 403 and "network access is off for this session" in body


async def test_new_connections_beyond_the_rate_are_limited(tmp_path: Path) -> None:
    proxy = EgressProxy(tmp_path / "egress")
    proxy.start()
    gate = proxy.gate(
        lambda: "flood", EgressPolicy("allowlist"), EgressSettings(connections_per_second=0.5)
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        await gate.attach(sock)
        request_ = b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        first = parse_answer(await exchange(port, request_))
        assert first[0] == 403  # the burst (twice the rate: one) admits one connection
        # refused before its request is read: send none (unread bytes would make the close a
        # reset, which may overtake the answer)
        status, headers, body = parse_answer(await exchange(port, b""))
        assert (status, headers["x-sessionpool-egress"]) == (429, "limited")
        assert "too many new connections (egress.connections_per_second 0.5)" in body
        assert gate.decisions[-1][3] == "limited"
    finally:
        gate.close()
        proxy.close()
