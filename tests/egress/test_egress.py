"""Egress end to end, the basics: what a session reaches through the proxy, and that nothing
else leaves its network namespace (no route, no UDP, no DNS, no IPv6)."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from sessionpool.session import Session
from tests.egress.helpers import DENIAL, decisions, egress_lines, run
from tests.egress.netlab import WHEEL_VALUE, Internet

pytestmark = pytest.mark.jail

ALLOWED, OTHER, DENIED = Internet.ALLOWED, Internet.OTHER_ALLOWED, Internet.DENIED


async def test_allowed_hosts_over_http_and_https(
    net_session: Session, internet: Internet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessionpool.egress")
    got = await run(
        net_session,
        f"""
        [fetch("http://{ALLOWED}/echo?via=http"), fetch("https://{ALLOWED}/echo?via=https"),
         fetch("https://{OTHER}/echo")]
        """,
    )
    assert [r["status"] for r in got] == [200, 200, 200], got
    plain, tls, other = (json.loads(r["body"]) for r in got)
    assert (plain["host"], plain["sni"], plain["path"]) == (ALLOWED, None, "/echo?via=http")
    assert (tls["host"], tls["sni"], tls["path"]) == (ALLOWED, ALLOWED, "/echo?via=https")
    assert (other["host"], other["sni"]) == (OTHER, OTHER)
    # it came from the proxy, on the host's side of the test internet
    assert {e["client_address"] for e in (plain, tls, other)} == {internet.host_address}
    assert {e["server_address"] for e in (plain, tls, other)} == {internet.address}
    # the proxy does not read a plain tunnel: no header of its own in it
    assert "via" not in tls["headers"] and "authorization" not in tls["headers"]
    seen = [(d["host"], d["port"], d["verdict"], d["reason"]) for d in decisions(net_session)]
    assert seen == [
        (ALLOWED, 80, "allowed", "http"),
        (ALLOWED, 443, "allowed", "tls"),
        (OTHER, 443, "allowed", "tls"),
    ]
    lines = egress_lines(caplog, net_session)
    assert any(line.endswith(f"{ALLOWED}:443 allowed: tls") for line in lines), lines


async def test_pip_installs_from_an_allowed_index(net_session: Session) -> None:
    """pip, in a subprocess of the session, finds the proxy and trusts the CA bundle from the
    environment alone."""
    got = await run(
        net_session,
        f"""
        import subprocess, sys
        p = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-input",
             "--disable-pip-version-check", "--index-url", "https://{Internet.INDEX}/simple/",
             "--target", "/tmp/site", "sp-egress-probe"],
            capture_output=True, text=True, timeout=90)
        sys.path.insert(0, "/tmp/site")
        import sp_egress_probe
        [p.returncode, p.stdout + p.stderr, sp_egress_probe.VALUE]
        """,
        timeout=120,
    )
    code, output, value = got
    assert code == 0, output
    assert "Successfully installed sp-egress-probe-1.0" in output
    assert value == WHEEL_VALUE
    index = decisions(net_session, Internet.INDEX)
    assert index and all(d["verdict"] == "allowed" for d in index), index


async def test_a_denied_host_is_refused_with_the_reason(
    net_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessionpool.egress")
    plain, tls = await run(
        net_session, f'[fetch("http://{DENIED}/echo"), fetch("https://{DENIED}/echo")]'
    )
    reason = f"{DENIAL}: host not in allowlist"
    assert (plain["status"], plain["reason"], plain["body"]) == (403, reason, reason + "\n")
    assert tls["status"] is None and f"Tunnel connection failed: 403 {reason}" in tls["error"]
    seen = [(d["port"], d["verdict"], d["reason"]) for d in decisions(net_session, DENIED)]
    assert seen == [
        (80, "denied", "host not in allowlist"),
        (443, "denied", "host not in allowlist"),
    ]
    lines = egress_lines(caplog, net_session)
    assert any(line.endswith(f"{DENIED}:443 denied: host not in allowlist") for line in lines)
    warned = [r for r in caplog.records if r.name == "sessionpool.egress" and DENIED in r.message]
    assert warned and all(r.levelno == logging.WARNING for r in warned)


async def test_an_ip_address_is_refused(net_session: Session, internet: Internet) -> None:
    plain, tls = await run(
        net_session,
        f'[fetch("http://{internet.address}/echo"), fetch("https://{internet.address}/echo")]',
    )
    reason = f"{DENIAL}: IP addresses are not allowed (name the host)"
    assert (plain["status"], plain["reason"]) == (403, reason)
    assert f"Tunnel connection failed: 403 {reason}" in tls["error"]
    seen = {(d["port"], d["verdict"]) for d in decisions(net_session, internet.address)}
    assert seen == {(80, "denied"), (443, "denied")}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (Internet.PRIVATE, "10.0.0.7 is a private address"),
        (Internet.LOOPBACK, "127.0.0.1 is a loopback, link-local or reserved address"),
        (Internet.METADATA, "169.254.169.254 is a metadata address"),
    ],
)
async def test_an_allowed_name_with_a_refused_address(
    net_session: Session, name: str, why: str
) -> None:
    """The names are in the allowlist: what refuses them is where they resolve to."""
    plain, tls = await run(net_session, f'[fetch("http://{name}/"), fetch("https://{name}/")]')
    reason = f"{DENIAL}: {name} resolves to a refused address ({why})"
    assert (plain["status"], plain["reason"]) == (403, reason)
    assert f"Tunnel connection failed: 403 {reason}" in tls["error"]
    seen = [(d["port"], d["verdict"], d["reason"]) for d in decisions(net_session, name)]
    assert [s[:2] for s in seen] == [(80, "denied"), (443, "denied")]
    assert all(s[2] == f"{name} resolves to a refused address ({why})" for s in seen)


async def test_no_route_but_the_proxy(net_session: Session, internet: Internet) -> None:
    got = await run(
        net_session,
        f"""
        [socket.if_nameindex(),
         attempt(socket.create_connection, ("{internet.address}", 80), 3),
         attempt(socket.create_connection, ("{internet.address}", 443), 3),
         attempt(socket.create_connection, ("{internet.second_address}", 80), 3),
         attempt(socket.create_connection, ("{internet.host_address}", 80), 3),
         attempt(socket.create_connection, PROXY, 3)]
        """,
    )
    links, *direct, proxy = got
    assert links == [[1, "lo"]], links
    assert direct == ["ENETUNREACH"] * 4, direct
    assert proxy == "ok"
    assert decisions(net_session) == []


def _udp_datagrams(internet: Internet) -> int:
    """Datagrams the test internet's namespace has received (UDP InDatagrams + NoPorts)."""
    out = subprocess.run(
        ["ip", "netns", "exec", internet.netns, "cat", "/proc/net/snmp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names, values = [line.split()[1:] for line in out.splitlines() if line.startswith("Udp:")]
    counts = dict(zip(names, values, strict=True))
    return int(counts["InDatagrams"]) + int(counts["NoPorts"])


async def test_udp_goes_nowhere(net_session: Session, internet: Internet) -> None:
    before = _udp_datagrams(internet)
    got = await run(
        net_session,
        f"""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(1)
        ports = {list(internet.udp_ports)}
        [attempt(u.sendto, b"ping", ("{internet.address}", port)) for port in ports]
        """,
    )
    assert got == ["ENETUNREACH"] * len(internet.udp_ports)
    assert _udp_datagrams(internet) == before
    # the counter does count: the host's own datagram arrives
    assert internet.udp_echo(b"ping") == b"ping"
    assert _udp_datagrams(internet) == before + 1


async def test_no_dns_in_the_session(net_session: Session) -> None:
    got = await run(
        net_session,
        f"""
        def lookup(name):
            try:
                return socket.getaddrinfo(name, 443)
            except socket.gaierror as exc:
                return ["gaierror", exc.errno]
        [lookup("{ALLOWED}"), lookup("{DENIED}"), lookup("example.com")]
        """,
    )
    assert all(r[0] == "gaierror" for r in got), got
    assert decisions(net_session) == []


async def test_ipv6_goes_nowhere(net_session: Session) -> None:
    got = await run(
        net_session,
        """
        def v6(address, port):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(3)
            try:
                s.connect((address, port))
            finally:
                s.close()
        def v6_udp(address, port):
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                s.sendto(b"ping", (address, port))
            finally:
                s.close()
        [attempt(v6, "2001:db8::10", 443), attempt(v6, "::ffff:203.0.113.10", 80),
         attempt(v6, "2606:4700:4700::1111", 443), attempt(v6_udp, "2001:db8::10", 53)]
        """,
    )
    assert got == ["ENETUNREACH"] * 4, got


async def test_a_pool_without_network_has_no_proxy(off_session: Session) -> None:
    got = await run(
        off_session,
        f"""
        import os
        [sorted(k for k in os.environ if "proxy" in k.lower() or "CERT" in k),
         os.path.exists("/opt/sessionpool/ca.pem"),
         attempt(socket.create_connection, PROXY, 3),
         fetch("http://{ALLOWED}/echo", timeout=5)["status"]]
        """,
    )
    assert got == [[], False, "ECONNREFUSED", None], got
    assert off_session.network() == {"mode": "off", "allow": [], "secrets": {}, "recent": []}
