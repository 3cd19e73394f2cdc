"""``GET``/``PUT /session/network`` on the fake backend: a session's egress policy through the
dynamic-sessions face (status codes, error shapes, scopes and tenants), without root.

The fake backend isolates nothing, so it runs no egress proxy: a pool with network gives its
sessions no gate, and only ``off`` can be asked of them. The jailed tests (tests/egress) check
the policies actually holding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sessionpool.config import EgressSettings, PoolConfig
from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import ALL_SCOPES, Scope
from tests.faces.helpers import V2510, assert_error, q
from tests.fakes import fake_server

POOLS = (
    PoolConfig(name="default", ready_sessions=0),
    PoolConfig(
        name="net",
        ready_sessions=0,
        network="allowlist",
        egress=EgressSettings(allow=("api.example.com",)),
    ),
)
OFF = {"mode": "off", "allow": [], "secrets": {}, "recent": []}


@pytest.fixture
async def http(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """The in-process server and the headers of stored keys: ``acme`` and ``umbrella`` with every
    scope, ``acme-run`` (tenant acme) with every scope but ``sessions``."""
    store = KeyStore(tmp_path / "fake-data" / "keys.json")
    keys = {
        "acme": store.create("acme")[1],
        "umbrella": store.create("umbrella")[1],
        "acme-run": store.create("acme", ALL_SCOPES - {Scope.SESSIONS})[1],
    }
    headers = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    async with fake_server(tmp_path, *POOLS) as client:
        yield client, headers


async def test_an_unknown_session_has_no_network_to_show(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, _ = http
    r = await client.get(f"/pools/default/session/network{q('never-made')}")
    assert_error(r, 404, "SessionNotFound")
    assert "never-made" in r.json()["error"]["message"]
    assert_error(await client.get(f"/pools/nope/session/network{q('a')}"), 404, "PoolNotFound")
    assert_error(await client.get("/pools/default/session/network"), 400, "MissingIdentifier")


async def test_off_on_an_off_pool_allocates_the_session_and_says_off(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, _ = http
    r = await client.put(f"/pools/default/session/network{q('s1')}", json={"mode": "off"})
    assert r.status_code == 200, r.text
    assert r.json() == OFF
    # the session now exists (its first cell would run under the policy) and says the same
    assert (await client.get(f"/pools/default/session{q('s1', V2510)}")).status_code == 200
    got = await client.get(f"/pools/default/session/network{q('s1')}")
    assert (got.status_code, got.json()) == (200, OFF)


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "allowlist", "allow": ["api.example.com"]},
        {"mode": "allowlist"},
        {"mode": "on"},
    ],
)
async def test_network_on_an_off_pool_is_a_400_naming_the_pool(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]], body: dict[str, object]
) -> None:
    client, _ = http
    r = await client.put(f"/pools/default/session/network{q('s2')}", json=body)
    assert_error(r, 400, "InvalidRequest")
    error = r.json()["error"]
    assert "pool 'default': the pool's network is off" in error["message"]
    assert "`network`" in error["message"]
    assert error["param"] == "network"
    # nothing changed: the session is still off
    assert (await client.get(f"/pools/default/session/network{q('s2')}")).json() == OFF


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"mode": "wide-open"}, "mode"),
        ({}, "mode"),
        ({"mode": "off", "allow": "api.example.com"}, "allow"),
        ({"mode": "off", "secrets": {"a.com": "token"}}, "secrets"),
        # a misspelt field is refused, not ignored (ignored, ``allow`` would be the pool's)
        ({"mode": "allowlist", "alow": ["api.example.com"]}, "alow"),
    ],
)
async def test_malformed_bodies_are_400_naming_the_field(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
    body: dict[str, object],
    needle: str,
) -> None:
    client, _ = http
    r = await client.put(f"/pools/default/session/network{q('s3')}", json=body)
    assert_error(r, 400, "InvalidRequestBody")
    assert needle in r.json()["error"]["message"]


async def test_a_body_that_is_not_json_is_400(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, _ = http
    for content in (b"{", b"[]", b'"off"'):
        r = await client.put(f"/pools/default/session/network{q('s4')}", content=content)
        assert_error(r, 400, "InvalidRequestBody")


async def test_bad_rules_in_a_narrowing_are_400_not_widening(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, _ = http
    r = await client.put(
        f"/pools/net/session/network{q('s5')}", json={"mode": "allowlist", "allow": ["10.0.0.1"]}
    )
    assert_error(r, 400, "InvalidRequest")
    assert "egress policy: allow: '10.0.0.1' is an IP address" in r.json()["error"]["message"]
    r = await client.put(
        f"/pools/net/session/network{q('s5')}", json={"mode": "allowlist", "allow": ["evil.com"]}
    )
    assert_error(r, 400, "InvalidRequest")
    assert "evil.com is not in the pool's allowlist" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "allow"
    r = await client.put(f"/pools/net/session/network{q('s5')}", json={"mode": "on"})
    assert_error(r, 400, "InvalidRequest")
    assert "unrestricted network (`on`)" in r.json()["error"]["message"]


async def test_a_backend_without_isolation_enforces_no_policy_and_says_so(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    """The fake backend runs no proxy (it isolates nothing): a narrowing the pool admits
    cannot be enforced, and the answer says why instead of pretending it holds."""
    client, _ = http
    r = await client.put(
        f"/pools/net/session/network{q('s6')}",
        json={"mode": "allowlist", "allow": ["api.example.com"]},
    )
    assert_error(r, 400, "InvalidRequest")
    message = r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "network"
    assert "the fake backend gives sessions no network of their own" in message
    assert "no egress policy can be enforced" in message
    # off needs no proxy
    r = await client.put(f"/pools/net/session/network{q('s6')}", json={"mode": "off"})
    assert (r.status_code, r.json()) == (200, OFF)


async def test_the_sessions_scope_is_needed_and_tenants_are_apart(
    http: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    client, keys = http
    url = f"/pools/default/session/network{q('shared-name')}"
    r = await client.put(url, json={"mode": "off"}, headers=keys["acme"])
    assert r.status_code == 200, r.text
    for method in ("GET", "PUT"):
        denied = await client.request(method, url, json={"mode": "off"}, headers=keys["acme-run"])
        assert_error(denied, 403, "Forbidden")
        assert "'sessions' scope" in denied.json()["error"]["message"]
    # another tenant's session of the same name is not found, and its own is its own
    assert_error(await client.get(url, headers=keys["umbrella"]), 404, "SessionNotFound")
    assert (await client.get(url, headers=keys["acme"])).json() == OFF
    unauthenticated = await client.get(url, headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
