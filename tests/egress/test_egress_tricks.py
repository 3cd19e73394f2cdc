"""Egress end to end: what a session might try to get past the proxy, spoken to it raw."""

from __future__ import annotations

import logging

import pytest

from sessionpool.session import Session
from tests.egress.helpers import DENIAL, decisions, egress_lines, run
from tests.egress.netlab import Internet

pytestmark = pytest.mark.jail

ALLOWED, OTHER, DENIED = Internet.ALLOWED, Internet.OTHER_ALLOWED, Internet.DENIED
#: the TLS alert a tunnel refused after its 200 carries: fatal, access_denied
ALERT = "\x15\x03\x03\x00\x02\x02\x31"
ESTABLISHED = "HTTP/1.1 200 Connection established\r\n\r\n"


def _denial(reason: str) -> str:
    """The whole answer of a 403 from the proxy."""
    text = f"{DENIAL}: {reason}"
    body = text + "\n"
    return (
        f"HTTP/1.1 403 {text}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"X-Sessionpool-Egress: denied\r\n\r\n{body}"
    )


async def test_a_tls_server_name_other_than_the_connect_host(
    net_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """Domain fronting: a tunnel opened for an allowed name carries a ClientHello for another
    (the upstream at that address would answer for it: the proxy must not let it)."""
    caplog.set_level(logging.INFO, logger="sessionpool.egress")
    fronted, no_sni, honest = await run(
        net_session,
        f"""
        [tls_through("{ALLOWED}", "{DENIED}"), tls_through("{ALLOWED}", None),
         tls_through("{ALLOWED}", "{ALLOWED}")]
        """,
    )
    assert fronted == {"head": ESTABLISHED, "tls": "TLSV1_ALERT_ACCESS_DENIED"}, fronted
    assert no_sni == {"head": ESTABLISHED, "tls": "TLSV1_ALERT_ACCESS_DENIED"}, no_sni
    assert honest["tls"] == "ok" and f'"sni": "{ALLOWED}"' in honest["answer"], honest
    seen = [(d["verdict"], d["reason"]) for d in decisions(net_session, ALLOWED)]
    assert seen == [
        ("denied", f"TLS server name '{DENIED}' does not match the CONNECT host '{ALLOWED}'"),
        ("denied", f"TLS server name None does not match the CONNECT host '{ALLOWED}'"),
        ("allowed", "tls"),
    ]
    lines = egress_lines(caplog, net_session)
    assert any(
        line.endswith(
            f"{ALLOWED}:443 denied: TLS server name '{DENIED}' does not match the "
            f"CONNECT host '{ALLOWED}'"
        )
        for line in lines
    ), lines


async def test_a_host_header_other_than_the_url_host(net_session: Session) -> None:
    answer = await run(
        net_session,
        f'talk(b"GET http://{ALLOWED}/echo HTTP/1.1\\r\\nHost: {DENIED}\\r\\n\\r\\n")',
    )
    reason = f"the Host header ({DENIED}) does not match the request's host ({ALLOWED}:80)"
    assert answer == _denial(reason)
    assert [(d["port"], d["verdict"], d["reason"]) for d in decisions(net_session, ALLOWED)] == [
        (80, "denied", reason)
    ]


async def test_each_request_on_a_kept_connection_is_checked(net_session: Session) -> None:
    """Two requests on one client connection: the second, for a denied host, is refused."""
    answer = await run(
        net_session,
        f"""
        talk(b"GET http://{ALLOWED}/echo HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n"
             b"GET http://{DENIED}/echo HTTP/1.1\\r\\nHost: {DENIED}\\r\\n\\r\\n")
        """,
    )
    first, _, second = answer.partition("HTTP/1.1 403")
    assert first.startswith("HTTP/1.1 200 OK\r\n") and f'"host": "{ALLOWED}"' in first, answer
    assert "HTTP/1.1 403" + second == _denial("host not in allowlist")
    seen = [(d["host"], d["verdict"]) for d in decisions(net_session)]
    assert seen == [(ALLOWED, "allowed"), (DENIED, "denied")]


@pytest.mark.parametrize("together", [False, True], ids=["after-200", "with-connect"])
async def test_a_tunnel_carries_tls_only(net_session: Session, together: bool) -> None:
    """Plain HTTP (or anything not TLS) through a CONNECT tunnel to an allowed host: the proxy
    answers with a TLS alert and closes, and never connects upstream."""
    request = f"GET /echo HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n"
    connect = f"CONNECT {ALLOWED}:443 HTTP/1.1\\r\\nHost: {ALLOWED}:443\\r\\n\\r\\n"
    if together:
        code = f'talk(b"{connect}{request}")'
    else:
        code = f"""
        s, head = tunnel("{ALLOWED}")
        s.sendall(b"{request}")
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        head + rest.decode("latin-1")
        """
    answer = await run(net_session, code)
    assert answer == ESTABLISHED + ALERT, repr(answer)
    reason = "only TLS may pass a CONNECT tunnel (the first bytes are not a TLS handshake)"
    assert [(d["verdict"], d["reason"]) for d in decisions(net_session, ALLOWED)] == [
        ("denied", reason)
    ]


async def test_connect_to_a_port_not_in_the_allowlist(net_session: Session) -> None:
    answer, via_urllib = await run(
        net_session,
        f"""
        [talk(b"CONNECT {ALLOWED}:8443 HTTP/1.1\\r\\nHost: {ALLOWED}:8443\\r\\n\\r\\n"),
         fetch("https://{ALLOWED}:22/")]
        """,
    )
    assert answer == _denial("port 8443 not in allowlist for this host")
    reason = f"{DENIAL}: port 22 not in allowlist for this host"
    assert f"Tunnel connection failed: 403 {reason}" in via_urllib["error"]
    seen = [(d["port"], d["verdict"]) for d in decisions(net_session, ALLOWED)]
    assert seen == [(8443, "denied"), (22, "denied")]


async def test_connect_without_a_port(net_session: Session) -> None:
    answer = await run(
        net_session, f'talk(b"CONNECT {ALLOWED} HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n")'
    )
    body = "sessionpool egress proxy: CONNECT needs host:port\n"
    assert answer == (
        "HTTP/1.1 400 bad request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"X-Sessionpool-Egress: bad request\r\n\r\n{body}"
    )
    assert [(d["verdict"], d["reason"]) for d in decisions(net_session, ALLOWED)] == [
        ("failed", "CONNECT needs host:port")
    ]


async def test_requests_the_proxy_does_not_forward(net_session: Session) -> None:
    """Origin-form (as if the proxy were the server), https:// in absolute form, no Host."""
    origin, https, hostless = await run(
        net_session,
        f"""
        [talk(b"GET /echo HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n"),
         talk(b"GET https://{ALLOWED}/echo HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n"),
         talk(b"CONNECT {ALLOWED}:443 HTTP/1.1\\r\\n\\r\\n")]
        """,
    )
    assert origin.startswith("HTTP/1.1 400 bad request\r\n"), origin
    assert origin.endswith(
        "sessionpool egress proxy: this is the egress proxy: send absolute URLs (set "
        "HTTP_PROXY), https via CONNECT\n"
    )
    assert https.startswith("HTTP/1.1 400 bad request\r\n"), https
    assert https.endswith("the proxy forwards http:// URLs; https goes via CONNECT\n")
    assert hostless.startswith("HTTP/1.1 400 bad request\r\n"), hostless
    assert "a malformed request (Missing mandatory Host: header)" in hostless
    assert [d["verdict"] for d in decisions(net_session)] == ["failed"] * 3


async def test_a_redirect_to_a_denied_host(net_session: Session) -> None:
    """urllib follows the redirect: the second hop is a request of its own, and refused."""
    plain, tls = await run(
        net_session,
        f"""
        [fetch("http://{ALLOWED}/redirect?to=http://{DENIED}/echo"),
         fetch("https://{ALLOWED}/redirect?to=https://{DENIED}/echo")]
        """,
    )
    reason = f"{DENIAL}: host not in allowlist"
    assert (plain["status"], plain["reason"]) == (403, reason)
    assert f"Tunnel connection failed: 403 {reason}" in tls["error"]
    seen = [(d["host"], d["port"], d["verdict"]) for d in decisions(net_session)]
    assert seen == [
        (ALLOWED, 80, "allowed"),
        (DENIED, 80, "denied"),
        (ALLOWED, 443, "allowed"),
        (DENIED, 443, "denied"),
    ]


async def test_an_allowed_redirect_is_followed(net_session: Session) -> None:
    """The control of the test above: the same redirect to another allowed host works."""
    got = await run(net_session, f'fetch("http://{ALLOWED}/redirect?to=http://{OTHER}/echo")')
    assert got["status"] == 200 and f'"host": "{OTHER}"' in got["body"]
