"""Egress end to end: secrets the proxy adds (and the session never sees), and a session's
policy narrowed, refused when it would widen, and turned off while connections are open."""

from __future__ import annotations

import json
import logging

import pytest

from sessionpool import errors
from sessionpool.session import Session
from tests.egress.helpers import (
    DENIAL,
    NET_ALLOW,
    SECRET_VALUE,
    decisions,
    egress_lines,
    run,
    wait_for_decision,
)
from tests.egress.netlab import Internet

pytestmark = pytest.mark.jail

ALLOWED, OTHER, DENIED, SECRET = (
    Internet.ALLOWED,
    Internet.OTHER_ALLOWED,
    Internet.DENIED,
    Internet.SECRET,
)
#: the part of the secret that would show wherever it leaked
NEEDLE = SECRET_VALUE.split()[-1]


# --- secrets -------------------------------------------------------------------------------------


async def test_the_proxy_adds_a_secret_over_https(
    net_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessionpool.egress")
    echo, own, issuer = await run(
        net_session,
        f"""
        def issuer_of(name):
            s, head = tunnel(name)
            with ssl.create_default_context().wrap_socket(s, server_hostname=name) as t:
                return dict(x[0] for x in t.getpeercert()["issuer"])["commonName"]
        [fetch("https://{SECRET}/echo"),
         fetch("https://{SECRET}/echo", headers={{"Authorization": "Bearer mine"}}),
         [issuer_of("{SECRET}"), issuer_of("{ALLOWED}")]]
        """,
    )
    assert echo["status"] == 200 and own["status"] == 200, (echo, own)
    for answer in (echo, own):
        seen = json.loads(answer["body"])
        assert (seen["host"], seen["sni"]) == (SECRET, SECRET)
        # the pool's value replaces the session's own, and comes once
        assert seen["headers"]["authorization"] == SECRET_VALUE
    # the proxy terminated the session's TLS for the domain with secrets, and only for it
    assert issuer[0].startswith("sessionpool egress CA "), issuer
    assert issuer[1] == "sessionpool netlab test CA", issuer
    secret = [(d["verdict"], d["reason"]) for d in decisions(net_session, SECRET)]
    assert secret[:2] == [("allowed", "https (secrets added)")] * 2, secret
    lines = egress_lines(caplog, net_session)
    assert any(line.endswith(f"{SECRET}:443 allowed: https (secrets added)") for line in lines)
    assert not any(NEEDLE in r.getMessage() for r in caplog.records)


async def test_a_secret_is_nowhere_the_session_can_read(net_session: Session) -> None:
    """After a request that carried it (a response that does not echo it back), the value is
    in no environment, command line or file the session can read, nor in what the API shows."""
    got = await run(
        net_session,
        f"""
        import glob, os
        needle = {NEEDLE!r}.encode()
        bytes_ = fetch("https://{SECRET}/bytes?n=10")
        found, scanned = [], 0
        if needle in repr(dict(os.environ)).encode():
            found.append("os.environ")
        proc = glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline")
        for path in ["/proc/self/environ", "/proc/self/cmdline", *proc]:
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            scanned += 1
            if needle in data:
                found.append(path)
        for top in ["/opt/sessionpool", "/tmp", "/mnt/data", "/etc"]:
            for where, _, names in os.walk(top):
                for name in names:
                    try:
                        with open(os.path.join(where, name), "rb") as f:
                            data = f.read(1 << 24)
                    except OSError:
                        continue
                    scanned += 1
                    if needle in data:
                        found.append(os.path.join(where, name))
        bundle = open(os.environ["SSL_CERT_FILE"]).read()
        [bytes_["status"], found, scanned, bundle.count("BEGIN CERTIFICATE"),
         "PRIVATE KEY" in bundle, os.environ["SSL_CERT_FILE"]]
        """,
    )
    status, found, scanned, certificates, has_key, bundle = got
    assert status == 200
    assert found == [], found
    assert scanned > 10, scanned  # it did look
    assert bundle == "/opt/sessionpool/ca.pem"
    assert certificates >= 2 and not has_key  # the test CA and the proxy's, no key
    assert decisions(net_session, SECRET)[-1]["reason"] == "https (secrets added)"
    shown = net_session.network()
    assert NEEDLE not in json.dumps(shown)
    assert shown["secrets"] == {SECRET: ["Authorization"]}


async def test_plain_http_to_a_domain_with_secrets_is_refused(net_session: Session) -> None:
    got = await run(net_session, f'fetch("http://{SECRET}/echo")')
    reason = f"{SECRET} has secrets: it is reached over HTTPS only"
    assert (got["status"], got["reason"]) == (403, f"{DENIAL}: {reason}")
    assert NEEDLE not in got["body"]
    assert [(d["port"], d["verdict"], d["reason"]) for d in decisions(net_session, SECRET)] == [
        (80, "denied", reason)
    ]


async def test_a_session_adds_secrets_by_narrowing(net_session: Session) -> None:
    shown = await net_session.set_network(
        "allowlist", None, {ALLOWED: {"X-Api-Key": "k-session-7d1e"}}
    )
    assert shown["secrets"] == {ALLOWED: ["X-Api-Key"], SECRET: ["Authorization"]}
    assert "k-session-7d1e" not in json.dumps(shown)
    echo, secret = await run(
        net_session, f'[fetch("https://{ALLOWED}/echo"), fetch("https://{SECRET}/echo")]'
    )
    headers = json.loads(echo["body"])["headers"]
    assert headers["x-api-key"] == "k-session-7d1e" and "authorization" not in headers
    assert json.loads(secret["body"])["headers"]["authorization"] == SECRET_VALUE
    assert decisions(net_session, ALLOWED)[-1]["reason"] == "https (secrets added)"


# --- narrowing -----------------------------------------------------------------------------------


async def test_a_narrowed_policy_holds_from_the_next_request(net_session: Session) -> None:
    before = await run(net_session, f'fetch("https://{OTHER}/echo")["status"]')
    assert before == 200
    shown = await net_session.set_network("allowlist", [ALLOWED])
    # the pool's secrets follow only the domains the narrowed policy still admits
    assert (shown["mode"], shown["allow"], shown["secrets"]) == ("allowlist", [ALLOWED], {})
    allowed, other_tls, other_plain, secret = await run(
        net_session,
        f"""
        [fetch("https://{ALLOWED}/echo"), fetch("https://{OTHER}/echo"),
         fetch("http://{OTHER}/echo"), fetch("https://{SECRET}/echo")]
        """,
    )
    reason = f"{DENIAL}: host not in allowlist"
    assert allowed["status"] == 200
    assert f"Tunnel connection failed: 403 {reason}" in other_tls["error"]
    assert f"Tunnel connection failed: 403 {reason}" in secret["error"]
    assert (other_plain["status"], other_plain["reason"]) == (403, reason)
    # the first fetch's tunnel may still be open when the policy changes (the proxy sees its
    # client close on its own thread), and the change then closes it: a race, and what the
    # tests of run-time changes cover; here only the decisions on new connections count
    seen = [(d["port"], d["verdict"]) for d in decisions(net_session, OTHER)]
    assert [s for s in seen if s[1] != "closed"] == [
        (443, "allowed"),
        (443, "denied"),
        (80, "denied"),
    ]
    assert set(seen) <= {(443, "allowed"), (443, "closed"), (443, "denied"), (80, "denied")}


@pytest.mark.parametrize(
    ("mode", "allow", "secrets", "detail"),
    [
        ("allowlist", [DENIED], None, f"{DENIED} is not in the pool's allowlist"),
        ("allowlist", [ALLOWED, DENIED], None, f"{DENIED} is not in the pool's allowlist"),
        ("allowlist", ["*.allowed.test"], None, "*.allowed.test is not in the pool's allowlist"),
        ("allowlist", [f"{ALLOWED}:8443"], None, f"{ALLOWED}:8443 is not in the pool's allowlist"),
        ("on", None, None, "unrestricted network (`on`) asked of an allowlist pool"),
        (
            "allowlist",
            None,
            {DENIED: {"X-Key": "v"}},
            f"secrets for {DENIED}, which this policy does not admit",
        ),
    ],
)
async def test_widening_the_pools_policy_is_refused(
    net_session: Session,
    mode: str,
    allow: list[str] | None,
    secrets: dict[str, dict[str, str]] | None,
    detail: str,
) -> None:
    with pytest.raises(errors.EgressWidens) as caught:
        await net_session.set_network(mode, allow, secrets)
    assert caught.value.pool == "net"
    assert str(caught.value).startswith(f"pool 'net': {detail}. "), str(caught.value)
    # nothing changed: the pool's policy still holds
    shown = net_session.network()
    assert (shown["mode"], shown["allow"]) == ("allowlist", list(NET_ALLOW))
    got = await run(
        net_session, f'[fetch("https://{OTHER}/echo")["status"], fetch("http://{DENIED}/")]'
    )
    assert got[0] == 200 and got[1]["status"] == 403


@pytest.mark.parametrize(("mode", "allow"), [("allowlist", [ALLOWED]), ("allowlist", None)])
async def test_a_pool_without_network_refuses_any(
    off_session: Session, mode: str, allow: list[str] | None
) -> None:
    with pytest.raises(errors.EgressWidens) as caught:
        await off_session.set_network(mode, allow)
    assert str(caught.value).startswith("pool 'off': the pool's network is off. ")
    with pytest.raises(errors.EgressWidens, match=r"^pool 'off': "):
        await off_session.set_network("on")
    assert (await off_session.set_network("off"))["mode"] == "off"


async def test_network_off_at_run_time_closes_open_connections(
    net_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """A kept-alive tunnel, a kept-alive plain connection and a download in progress are all
    cut when the session's network is turned off; the next request is refused."""
    caplog.set_level(logging.INFO, logger="sessionpool.egress")
    opened = await run(
        net_session,
        f"""
        import http.client, threading, time
        tls = http.client.HTTPSConnection("127.0.0.1", 3128, timeout=10,
                                          context=ssl.create_default_context())
        tls.set_tunnel("{ALLOWED}", 443)
        plain = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)
        def ask(conn, url):
            try:
                conn.request("GET", url)
                resp = conn.getresponse()
                return [resp.status, len(resp.read())]
            except Exception as exc:
                return type(exc).__name__
        slow = []
        def download():
            began = time.monotonic()
            slow.append(fetch("http://{ALLOWED}/slow?s=30", timeout=60))
            slow.append(time.monotonic() - began)
        downloader = threading.Thread(target=download, daemon=True)
        downloader.start()
        # twice each: kept alive, one CONNECT
        [ask(tls, "/echo"), ask(tls, "/echo"), ask(plain, "http://{OTHER}/echo"),
         ask(plain, "http://{OTHER}/echo")]
        """,
    )
    assert [r[0] for r in opened] == [200] * 4, opened
    assert len([d for d in decisions(net_session, ALLOWED) if d["port"] == 443]) == 1
    # the download is under way once the proxy has let it through
    await wait_for_decision(net_session, ALLOWED, "allowed")
    while not [d for d in decisions(net_session, ALLOWED) if d["port"] == 80]:
        await wait_for_decision(net_session, ALLOWED, "allowed")
    shown = await net_session.set_network("off")
    assert (shown["mode"], shown["allow"], shown["secrets"]) == ("off", [], {})
    closed = await wait_for_decision(net_session, ALLOWED, "closed")
    assert closed["reason"] == "the policy changed"
    after = await run(
        net_session,
        f"""
        downloader.join(10)
        [downloader.is_alive(), slow, ask(tls, "/echo"), ask(plain, "http://{OTHER}/echo"),
         fetch("http://{ALLOWED}/echo"), fetch("https://{ALLOWED}/echo")]
        """,
    )
    alive, slow, tls_again, plain_again, http_now, https_now = after
    assert not alive
    assert slow[0]["status"] is None and slow[1] < 20, slow  # cut, not finished
    assert isinstance(tls_again, str) and isinstance(plain_again, str), after  # exceptions
    reason = f"{DENIAL}: network access is off for this session"
    assert (http_now["status"], http_now["reason"]) == (403, reason)
    assert f"Tunnel connection failed: 403 {reason}" in https_now["error"]
    closed_ones = {
        (d["host"], d["port"]) for d in decisions(net_session) if d["verdict"] == "closed"
    }
    assert closed_ones == {(ALLOWED, 443), (ALLOWED, 80), (OTHER, 80)}, decisions(net_session)
    lines = egress_lines(caplog, net_session)
    assert any(line.endswith(f"{ALLOWED}:443 closed: the policy changed") for line in lines)
    # off is a narrowing like the others: the pool's policy can be asked for again
    await net_session.set_network("allowlist", [ALLOWED])
    assert (await run(net_session, f'fetch("https://{ALLOWED}/echo")["status"]')) == 200


async def test_narrowing_closes_only_what_it_no_longer_admits(net_session: Session) -> None:
    opened = await run(
        net_session,
        f"""
        import http.client
        def keep(host):
            c = http.client.HTTPSConnection("127.0.0.1", 3128, timeout=10,
                                            context=ssl.create_default_context())
            c.set_tunnel(host, 443)
            return c
        def ask(conn):
            try:
                conn.request("GET", "/echo")
                resp = conn.getresponse()
                return _json.loads(resp.read())["sni"]
            except Exception as exc:
                return type(exc).__name__
        kept, cut = keep("{ALLOWED}"), keep("{OTHER}")
        [ask(kept), ask(cut)]
        """,
    )
    assert opened == [ALLOWED, OTHER]
    await net_session.set_network("allowlist", [ALLOWED])
    closed = await wait_for_decision(net_session, OTHER, "closed")
    assert closed["reason"] == "the policy changed"
    again = await run(net_session, "[ask(kept), ask(cut)]")
    assert again[0] == ALLOWED, again
    assert again[1] != OTHER, again
    assert not [d for d in decisions(net_session, ALLOWED) if d["verdict"] == "closed"]
    assert len(decisions(net_session, ALLOWED)) == 1  # the kept tunnel, never a new one
