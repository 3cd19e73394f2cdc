"""The console face in process on the fake backend: its page and assets (public, with a strict
Content-Security-Policy, or a page saying how to build them), and its two listings, which answer
with the caller's scopes, pools and own sessions only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sessionpool.config import PoolConfig
from sessionpool.faces.console import routes
from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import Scope
from tests.fakes import fake_server

API = "api-version=2025-02-02-preview"
POOLS = (
    PoolConfig(name="default", ready_sessions=1, cooldown_seconds=600),
    PoolConfig(name="other", ready_sessions=0, cooldown_seconds=600, max_sessions=7),
)


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in bundle where the server looks for it."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text(
        f'<meta name="csp-nonce" content="{routes.NONCE_MARK}"><script src="/console/console.js">'
    )
    (static / "console.js").write_text("export {};\n")
    (static / "console.css").write_text("body {}\n")
    monkeypatch.setenv("SESSIONPOOL_CONSOLE_DIR", str(static))
    return static


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with fake_server(tmp_path, *POOLS) as client:
        yield client


def key_for(
    tmp_path: Path, tenant: str, *scopes: Scope, pools: frozenset[str] | None = None
) -> dict[str, str]:
    store = KeyStore(tmp_path / "fake-data" / "keys.json")
    _, key = store.create(tenant, frozenset(scopes), pools=pools)
    return {"authorization": f"Bearer {key}"}


async def test_the_page_is_public_with_a_strict_policy_and_a_fresh_nonce(
    http: httpx.AsyncClient, built: Path
) -> None:
    first = await http.get("/console", headers={"authorization": ""})
    second = await http.get("/console", headers={"authorization": ""})
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    policy = first.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "img-src 'self' data: blob:" in policy and "frame-ancestors 'none'" in policy
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'content="{nonce}"' in first.text and routes.NONCE_MARK not in first.text
    assert nonce not in second.headers["content-security-policy"]
    assert first.headers["x-frame-options"] == "DENY"
    assert first.headers["x-content-type-options"] == "nosniff"
    for name, kind in routes.ASSETS.items():
        r = await http.get(f"/console/{name}", headers={"authorization": ""})
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    # only the built files, never another path under the directory
    assert (await http.get("/console/index.html")).status_code == 404
    assert (await http.get("/console/..%2Fsecret")).status_code == 404


async def test_without_the_bundle_the_page_says_how_to_build_it(
    http: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONPOOL_CONSOLE_DIR", str(tmp_path / "missing"))
    r = await http.get("/console", headers={"authorization": ""})
    assert r.status_code == 503
    assert "npm ci --ignore-scripts" in r.text and "make serve" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert (await http.get("/console/console.js")).status_code == 404


async def test_the_listings_need_a_key(http: httpx.AsyncClient) -> None:
    for path in ("/console/api/pools", "/console/api/threads"):
        assert (await http.get(path, headers={"authorization": ""})).status_code == 401
        wrong = {"authorization": "Bearer wrong-key"}
        assert (await http.get(path, headers=wrong)).status_code == 401


async def test_pools_with_their_figures_and_sessions(http: httpx.AsyncClient) -> None:
    r = await http.post(f"/pools/default/executions?identifier=mine&{API}", json={"code": "1 + 1"})
    assert r.status_code == 200, r.text
    body = (await http.get("/console/api/pools")).json()
    pools = {p["name"]: p for p in body["pools"]}
    assert set(pools) == {"default", "other"}
    other = pools["other"]
    assert other["max_sessions"] == 7 and other["ready_target"] == 0 and other["sessions"] == []
    default = pools["default"]
    assert default["states"]["idle"] == 1 and default["limits"]["memory_bytes"] > 0
    assert default["runtime"]["kind"] == "python"
    (session,) = default["sessions"]
    assert session["identifier"] == "mine" and session["busy"] is False
    assert session["age_seconds"] >= session["idle_seconds"] >= 0
    (run,) = session["executions"]
    assert run["status"] == "ok" and run["duration_ms"] >= 0
    # the fake backend measures nothing
    assert session["memory_bytes"] is None and session["cpu_seconds"] is None


async def test_a_tenant_sees_its_pools_and_its_own_sessions_only(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await http.post(f"/pools/default/executions?identifier=root-one&{API}", json={"code": "1"})
    acme = key_for(tmp_path, "acme", Scope.SESSIONS, Scope.EXECUTE, pools=frozenset({"default"}))
    r = await http.post(
        f"/pools/default/executions?identifier=acme-one&{API}", json={"code": "1"}, headers=acme
    )
    assert r.status_code == 200
    body = (await http.get("/console/api/pools", headers=acme)).json()
    (pool,) = body["pools"]
    assert pool["name"] == "default"
    assert [s["identifier"] for s in pool["sessions"]] == ["acme-one"]
    root = (await http.get("/console/api/pools")).json()
    (default,) = [p for p in root["pools"] if p["name"] == "default"]
    assert [s["identifier"] for s in default["sessions"]] == ["root-one"]
    # a key without the sessions scope is refused (403), as listSessions refuses it
    execute_only = key_for(tmp_path, "acme", Scope.EXECUTE)
    assert (await http.get("/console/api/pools", headers=execute_only)).status_code == 403


async def test_threads_newest_first_with_paging(http: httpx.AsyncClient, tmp_path: Path) -> None:
    ids = []
    for n in range(3):
        r = await http.post("/v1/threads", json={"metadata": {"n": str(n)}})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    page = (await http.get("/console/api/threads?limit=2")).json()
    assert [t["id"] for t in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    assert page["data"][0]["metadata"] == {"n": "2"}
    rest = (await http.get(f"/console/api/threads?limit=2&after={page['last_id']}")).json()
    assert [t["id"] for t in rest["data"]] == [ids[0]] and rest["has_more"] is False
    # another tenant's threads are not listed; a key without the agents scope is refused
    other = key_for(tmp_path, "acme", Scope.AGENTS)
    assert (await http.get("/console/api/threads", headers=other)).json()["data"] == []
    sessions_only = key_for(tmp_path, "acme", Scope.SESSIONS)
    assert (await http.get("/console/api/threads", headers=sessions_only)).status_code == 403
