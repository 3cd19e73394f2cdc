"""The E2B face's control plane and sandbox routing in process, on the fake backend: a
sandbox outlives its pool's idle cooldown and ends at its own timeout, tenants meet nothing of
each other's, and sandbox traffic reaches only the sandbox's apps (never the API-key routes).
The SDK flows against a jailed server are in ``tests/clients/test_e2b.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.config import PoolConfig
from sessionpool.faces.e2b.routing import sandbox_target
from sessionpool.faces.e2b.sandboxes import new_sandbox_id
from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import Scope
from tests.fakes import fake_server

#: sessions idle for more than a second cool down
POOL = PoolConfig(ready_sessions=1, cooldown_seconds=1.0)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with fake_server(tmp_path, POOL) as client:
        yield client


def e2b_key(
    tmp_path: Path, tenant: str, scopes: frozenset[Scope] = frozenset({Scope.EXECUTE})
) -> dict[str, str]:
    _, secret = KeyStore(tmp_path / "fake-data" / "keys.json").create(tenant, scopes, e2b=True)
    return {"X-API-KEY": secret, "Authorization": ""}


async def create(http: httpx.AsyncClient, key: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await http.post("/v2/sandboxes", json=body, headers=key)
    assert r.status_code == 201, r.text
    return dict(r.json())


def traffic(sandbox: dict[str, Any], port: int = 49999) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": sandbox["sandboxID"],
        "E2b-Sandbox-Port": str(port),
        "X-Access-Token": sandbox["envdAccessToken"],
        "Authorization": "",
    }


async def run(http: httpx.AsyncClient, sandbox: dict[str, Any], code: str) -> list[dict[str, Any]]:
    r = await http.post("/execute", json={"code": code}, headers=traffic(sandbox))
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def main_text(lines: list[dict[str, Any]]) -> str | None:
    return next((x.get("text") for x in lines if x.get("is_main_result")), None)


async def test_a_sandbox_lives_to_its_timeout_not_the_pools_cooldown(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = e2b_key(tmp_path, "acme")
    # a wide margin over the 2 s idle wait: a stalled machine must not reach the timeout
    sbx = await create(http, key, timeout=10, envVars={"MODE": "e2b"})
    await run(http, sbx, "x = 41")
    await asyncio.sleep(2.0)  # idle twice the cooldown: a plain session would be gone
    lines = await run(http, sbx, "import os; (x + 1, os.environ['MODE'])")
    assert main_text(lines) == "(42, 'e2b')"
    assert lines[-2:] == [
        {"type": "number_of_executions", "execution_count": 2},
        {"type": "end_of_execution"},
    ]
    # set_timeout counts from now: 1 s more, then the reaper ends it
    r = await http.post(f"/sandboxes/{sbx['sandboxID']}/timeout", json={"timeout": 1}, headers=key)
    assert r.status_code == 204
    await asyncio.sleep(2.0)
    assert (await http.get(f"/sandboxes/{sbx['sandboxID']}", headers=key)).status_code == 404
    gone = await http.post("/execute", json={"code": "x"}, headers=traffic(sbx))
    assert gone.status_code == 502 and "not found" in gone.json()["message"]


async def test_tenants_see_only_their_own_sandboxes(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    acme, other = e2b_key(tmp_path, "acme"), e2b_key(tmp_path, "other")
    sbx = await create(http, acme, metadata={"team": "a"})
    sid = sbx["sandboxID"]
    for method, path in (
        ("GET", f"/sandboxes/{sid}"),
        ("DELETE", f"/sandboxes/{sid}"),
        ("POST", f"/sandboxes/{sid}/timeout"),
        ("POST", f"/v2/sandboxes/{sid}/connect"),
        ("POST", f"/sandboxes/{sid}/connect"),
        ("POST", f"/sandboxes/{sid}/resume"),
    ):
        r = await http.request(method, path, json={"timeout": 5}, headers=other)
        assert r.status_code == 404 and r.json()["message"] == f"sandbox '{sid}' not found"
    assert (await http.get("/v2/sandboxes", headers=other)).json() == []
    assert (await http.get("/sandboxes", headers=other)).json() == []
    mine = (await http.get("/v2/sandboxes", params={"metadata": "team=a"}, headers=acme)).json()
    assert [s["sandboxID"] for s in mine] == [sid] and "envdAccessToken" not in mine[0]
    none = await http.get("/v2/sandboxes", params={"metadata": "team=b"}, headers=acme)
    assert none.json() == []
    # the same Idempotency-Key in another tenant is another sandbox
    a = await http.post("/v2/sandboxes", json={}, headers={**acme, "Idempotency-Key": "same"})
    b = await http.post("/v2/sandboxes", json={}, headers={**other, "Idempotency-Key": "same"})
    assert a.json()["sandboxID"] != b.json()["sandboxID"]
    # a key without the execute scope may not create one
    files_only = e2b_key(tmp_path, "acme", frozenset({Scope.FILES}))
    assert (await http.post("/v2/sandboxes", json={}, headers=files_only)).status_code == 403


async def test_sandbox_traffic_reaches_only_the_sandboxs_apps(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    sbx = await create(http, e2b_key(tmp_path, "acme"))
    # with a valid sandbox token, an API route's path is still the sandbox's app: no key check
    # is skipped for the server's own routes
    r = await http.post(
        "/pools/default/code/execute?identifier=x&api-version=2024-02-02-preview",
        json={"properties": {"code": "1"}},
        headers=traffic(sbx),
    )
    assert r.status_code == 404
    assert (await http.get("/v2/sandboxes", headers=traffic(sbx))).status_code == 404
    # the host form, a port nothing serves, and the placeholder-free health of the interpreter
    host = {"Host": f"49999-{sbx['sandboxID']}.sandboxes.test", "Authorization": ""}
    token = {"X-Access-Token": sbx["envdAccessToken"]}
    r = await http.post("/execute", json={"code": "6 * 7"}, headers={**host, **token})
    assert main_text([json.loads(x) for x in r.text.splitlines()]) == "42"
    r = await http.get("/", headers={**traffic(sbx), "E2b-Sandbox-Port": "8080"})
    assert r.status_code == 404 and "port 8080" in r.json()["message"]
    # the traffic token admits too (the SDKs' context calls carry only it); a wrong one refuses
    ctx_headers = {k: v for k, v in traffic(sbx).items() if k != "X-Access-Token"}
    ok = await http.get(
        "/contexts", headers={**ctx_headers, "E2B-Traffic-Access-Token": sbx["trafficAccessToken"]}
    )
    assert ok.status_code == 200 and ok.json()[0]["id"] == "default"
    bad = await http.get(
        "/contexts", headers={**traffic(sbx), "E2B-Traffic-Access-Token": "0" * 48}
    )
    assert bad.status_code == 401


async def test_create_refuses_what_it_cannot_honour(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = e2b_key(tmp_path, "acme")
    for body, field in (
        ({"allow_internet_access": True}, "allow_internet_access"),
        ({"volumeMounts": [{"name": "v", "path": "/v"}]}, "volumeMounts"),
        ({"autoPause": True}, "autoPause"),
        ({"autoResume": {"enabled": True}}, "autoResume"),
        ({"mcp": {"server": {}}}, "mcp"),
        ({"network": {"allowPublicTraffic": True}}, "network"),
        ({"templateID": "nope"}, "template"),
        ({"timeout": -1}, "timeout"),
    ):
        r = await http.post("/v2/sandboxes", json=body, headers=key)
        assert r.status_code in (400, 404), (body, r.text)
        assert field in r.json()["message"], r.text
    for body in ({"allow_internet_access": False}, {"network": {"denyOut": ["0.0.0.0/0"]}}):
        assert (await http.post("/v2/sandboxes", json=body, headers=key)).status_code == 201


async def test_a_full_pool_is_e2bs_rate_limit(tmp_path: Path) -> None:
    async with fake_server(tmp_path, PoolConfig(ready_sessions=0, max_sessions=1)) as http:
        key = e2b_key(tmp_path, "acme")
        await create(http, key)
        r = await http.post("/v2/sandboxes", json={}, headers=key)
        assert r.status_code == 429 and r.json()["code"] == 429, r.text


async def test_a_host_name_that_only_looks_like_the_host_form_is_the_api(
    http: httpx.AsyncClient,
) -> None:
    r = await http.get("/healthz", headers={"Host": "8080-gateway.example.com"})
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_one_sandboxs_token_does_not_open_another(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = e2b_key(tmp_path, "acme")
    a, b = await create(http, key), await create(http, key)
    await run(http, b, "secret = 'b'")
    tricks = (
        {**traffic(b), "X-Access-Token": a["envdAccessToken"]},
        {**traffic(b), "X-Access-Token": "", "E2B-Traffic-Access-Token": a["trafficAccessToken"]},
        {
            "Host": f"49999-{b['sandboxID']}.sandboxes.test",
            "X-Access-Token": a["envdAccessToken"],
            "Authorization": "",
        },
    )
    for headers in tricks:
        r = await http.post("/execute", json={"code": "secret"}, headers=headers)
        assert r.status_code == 401 and "secret" not in r.text, headers
    # the headers name the sandbox before the host does: a's token with a's headers and b's
    # host is a's sandbox, where b's variable does not exist
    mixed = {**traffic(a), "Host": f"49999-{b['sandboxID']}.sandboxes.test"}
    r = await http.post("/execute", json={"code": "secret"}, headers=mixed)
    assert r.status_code == 200 and '"name":"NameError"' in r.text


async def test_bodies_are_bounded(http: httpx.AsyncClient, tmp_path: Path) -> None:
    key = e2b_key(tmp_path, "acme")
    huge = b'{"metadata": {"a": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    r = await http.post("/v2/sandboxes", content=huge, headers=key)
    assert r.status_code == 413
    sbx = await create(http, key)
    r = await http.post("/execute", content=huge, headers=traffic(sbx))
    assert r.status_code == 413


def test_a_requests_sandbox_target_from_its_headers_or_host() -> None:
    """The first of each header counts; a host names a sandbox only in the
    ``{port}-{id}.{domain}`` form with an id this server issues."""
    sid = new_sandbox_id()

    def target(*headers: tuple[bytes, bytes]) -> tuple[str, int] | None:
        return sandbox_target({"type": "http", "headers": list(headers)})

    assert target((b"e2b-sandbox-id", sid.encode()), (b"e2b-sandbox-port", b" 49999 ")) == (
        sid,
        49999,
    )
    assert target((b"e2b-sandbox-id", b"x"), (b"e2b-sandbox-port", b"http")) == ("x", -1)
    assert target(
        (b"e2b-sandbox-port", b"1"), (b"e2b-sandbox-id", b"a"), (b"e2b-sandbox-id", b"b")
    ) == (
        "a",
        1,
    )
    assert target((b"e2b-sandbox-id", b"x")) is None  # no port: not sandbox traffic
    assert target((b"host", f"49983-{sid}.sandbox.test".encode())) == (sid, 49983)
    assert target((b"host", f"49983-{sid}".encode())) is None  # no domain
    assert target((b"host", b"8080-myhost.example.com")) is None  # not an id we issue
    assert target((b"host", b"127.0.0.1:8080")) is None
    assert sandbox_target({"type": "websocket", "headers": []}) is None
