"""Cross-tenant cases: a tenant holding a valid key of its own tries to see, name, read, run in
or delete another tenant's sessions, through every dynamic-sessions route and the MCP tools.
Everything of the other tenant must be invisible: not found (never forbidden, which would say
it exists), absent from listings, and untouched. The agents surface has its own cases
(``test_agents_surface.py``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess
from sessionpool.tenancy import ALL_SCOPES, Scope
from tests.security.helpers import NEW, Api, assert_client_error, code_body, q

pytestmark = pytest.mark.jail


class Tenant(Api):
    """A client holding one tenant's key."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        super().__init__(server)
        self.key = key
        self.client.headers["Authorization"] = f"Bearer {key}"


def make_key(
    server: ServerProcess,
    tenant: str,
    scopes: frozenset[Scope] = ALL_SCOPES,
    pools: frozenset[str] | None = None,
) -> str:
    return KeyStore(server.data_dir / "keys.json").create(tenant, scopes, pools)[1]


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> Iterator[Tenant]:
    with Tenant(server, make_key(server, "alice")) as t:
        yield t


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> Iterator[Tenant]:
    with Tenant(server, make_key(server, "bob")) as t:
        yield t


@pytest.fixture
def shared_name(alice: Tenant, bob: Tenant, api: Api) -> Iterator[str]:
    """One identifier that alice, bob and the default tenant all use."""
    name = f"demo-{uuid.uuid4().hex[:8]}"
    yield name
    for who in (alice, bob, api):
        who.delete_session(name)


def not_found_body(r: httpx.Response) -> tuple[int, str]:
    """Status and error code, the parts a caller can compare between two 404s."""
    return r.status_code, r.headers.get("x-ms-error-code", "")


def test_the_same_identifier_is_three_sessions(
    alice: Tenant, bob: Tenant, api: Api, shared_name: str
) -> None:
    alice.ok(shared_name, "secret = 'alice'")
    bob.ok(shared_name, "secret = 'bob'")
    assert alice.value(shared_name, "secret") == "alice"
    assert bob.value(shared_name, "secret") == "bob"
    out = api.execute(shared_name, "secret")
    assert out["status"] == "Failure" and "NameError" in out["stderr"] + str(out["result"])
    # different jails: nothing is shared below the API either
    alice.ok(shared_name, "open('/tmp/mark', 'w').write('alice')")
    assert bob.value(shared_name, "import os; os.path.exists('/tmp/mark')") is False


def test_another_tenants_session_is_not_found(alice: Tenant, bob: Tenant, shared_name: str) -> None:
    alice.ok(shared_name, "x = 1")
    params = {"identifier": shared_name, "api-version": NEW}
    seen = bob.client.get("/pools/default/session", params=params)
    never = bob.client.get(
        "/pools/default/session", params={**params, "identifier": f"nobody-{uuid.uuid4()}"}
    )
    assert seen.status_code == 404
    assert not_found_body(seen) == not_found_body(never)
    assert alice.client.get("/pools/default/session", params=params).status_code == 200


def test_listings_show_only_ones_own(
    alice: Tenant, bob: Tenant, api: Api, shared_name: str
) -> None:
    alice.ok(shared_name, "1")
    alice.ok(shared_name + "-2", "1")
    try:

        def names(t: Api) -> set[str]:
            r = t.client.get("/pools/default/listSessions", params={"api-version": NEW})
            assert r.status_code == 200, r.text
            return {s["identifier"] for s in r.json()["sessions"]}

        assert {shared_name, shared_name + "-2"} <= names(alice)
        assert shared_name not in names(bob) and shared_name + "-2" not in names(bob)
        assert shared_name not in names(api)  # the default tenant is a tenant like the others
        # the listing names sessions as their tenant named them: no namespace leaks out
        assert all("\\" not in n for n in names(alice) | names(api))
    finally:
        alice.delete_session(shared_name + "-2")


def test_files_do_not_cross(alice: Tenant, bob: Tenant, shared_name: str) -> None:
    assert alice.upload(shared_name, "plans.txt", b"alice's plans").status_code in (200, 201)
    assert alice.download(shared_name, "plans.txt").content == b"alice's plans"
    # bob naming the same session and file: his own empty session, nothing of alice's
    assert bob.listing(shared_name) == []
    r = bob.download(shared_name, "plans.txt")
    assert_client_error(r, 404)
    assert_client_error(bob.download_old(shared_name, "plans.txt"), 404)
    assert_client_error(bob.delete(shared_name, "plans.txt"), 404)
    assert bob.value(shared_name, "import os; os.listdir('/mnt/data')") == []
    assert alice.download(shared_name, "plans.txt").content == b"alice's plans"


def test_deleting_the_same_name_deletes_only_ones_own(
    alice: Tenant, bob: Tenant, shared_name: str
) -> None:
    alice.ok(shared_name, "kept = True")
    r = bob.client.delete(f"/pools/default/session{q(shared_name, NEW)}")
    assert r.status_code == 204  # idempotent: bob's (absent) session is gone
    assert alice.value(shared_name, "kept") is True


def test_executions_are_per_tenant(alice: Tenant, bob: Tenant, shared_name: str) -> None:
    op = str(uuid.uuid4())
    r = alice.client.post(
        f"/pools/default/executions{q(shared_name, NEW)}",
        json={"code": "'alice ran this'"},
        headers={"operation-id": op},
    )
    assert r.status_code == 200, r.text
    mine = alice.client.get(f"/pools/default/executions/{op}{q(shared_name, NEW)}")
    assert mine.status_code == 200 and mine.json()["id"] == op
    theirs = bob.client.get(f"/pools/default/executions/{op}{q(shared_name, NEW)}")
    assert theirs.status_code == 404 and "alice" not in theirs.text


def test_streaming_runs_in_ones_own_session(alice: Tenant, bob: Tenant, shared_name: str) -> None:
    alice.ok(shared_name, "token = 'alice-token'")
    with bob.client.stream(
        "POST",
        f"/pools/default/executions/stream{q(shared_name, NEW)}",
        json={"code": "print(globals().get('token'))"},
    ) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "alice-token" not in text and "None" in text


def test_a_key_limited_to_a_pool_does_not_see_others(server: ServerProcess) -> None:
    with Tenant(server, make_key(server, "carol", ALL_SCOPES, frozenset({"default"}))) as carol:
        name = f"c-{uuid.uuid4().hex[:8]}"
        assert carol.value(name, "1 + 1") == 2
        other = carol.execute_raw(name, "1", pool="other")
        absent = carol.execute_raw(name, "1", pool=f"nopool{uuid.uuid4().hex[:6]}")
        assert not_found_body(other) == not_found_body(absent) == (404, "PoolNotFound")
        carol.delete_session(name)


@pytest.mark.parametrize(
    ("scopes", "method", "route", "needs"),
    [
        ({Scope.FILES}, "POST", "code/execute", "execute"),
        ({Scope.EXECUTE}, "GET", "files", "files"),
        ({Scope.EXECUTE}, "GET", "listSessions", "sessions"),
        ({Scope.EXECUTE, Scope.FILES}, "DELETE", "session", "sessions"),
        ({Scope.SESSIONS}, "POST", "executions", "execute"),
    ],
)
def test_a_missing_scope_is_forbidden_and_named(
    server: ServerProcess, scopes: set[Scope], method: str, route: str, needs: str
) -> None:
    with Tenant(server, make_key(server, "dave", frozenset(scopes))) as dave:
        body: dict[str, Any] | None = None
        if route == "code/execute":
            body = code_body("1")
        elif route == "executions":
            body = {"code": "1"}
        r = dave.client.request(method, f"/pools/default/{route}{q('d-scope', NEW)}", json=body)
        assert r.status_code == 403, r.text
        assert f"'{needs}' scope" in r.json()["error"]["message"]


@asynccontextmanager
async def mcp_session(server: ServerProcess, key: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        streamable_http_client(server.url + "/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def tool_text(result: Any) -> dict[str, Any]:
    first = result.content[0]
    assert isinstance(first, TextContent)
    doc: dict[str, Any] = json.loads(first.text)
    return doc


async def test_mcp_tools_act_in_the_callers_tenant(
    server: ServerProcess, alice: Tenant, bob: Tenant
) -> None:
    async with mcp_session(server, alice.key) as mcp:
        launched = await mcp.call_tool("launchShell", {})
        env = json.loads(launched.content[0].text)["environmentId"]  # type: ignore[union-attr]
        await mcp.call_tool(
            "runPythonCodeInRemoteEnvironment",
            {"pythonCode": "mine = 'alice via mcp'", "environmentId": env},
        )
    try:
        # the same environment id from bob: his own fresh session
        async with mcp_session(server, bob.key) as mcp:
            out = await mcp.call_tool(
                "runPythonCodeInRemoteEnvironment",
                {"pythonCode": "globals().get('mine')", "environmentId": env},
            )
            assert "alice via mcp" not in str(tool_text(out))
            files = await mcp.call_tool("listFilesInRemoteEnvironment", {"environmentId": env})
            assert "alice" not in str(files.content)
        # through the HTTP API too: alice's session is under her tenant, bob's under his
        assert alice.value(env, "mine") == "alice via mcp"
        assert bob.value(env, "'mine' in globals()") is False
    finally:
        alice.delete_session(env)
        bob.delete_session(env)


async def test_mcp_refuses_a_revoked_key(server: ServerProcess) -> None:
    store = KeyStore(server.data_dir / "keys.json")
    entry, key = store.create("erin")
    store.revoke(entry.id)
    with pytest.raises(Exception):  # noqa: B017 - the SDK's error for a 401 varies by version
        async with mcp_session(server, key) as mcp:
            await mcp.call_tool("launchShell", {})
    r = httpx.post(server.url + "/mcp", headers={"Authorization": f"Bearer {key}"}, json={})
    assert r.status_code == 401


@pytest.mark.parametrize("form", ["{tenant}\\{name}", "{tenant}%5C{name}", "{tenant}\\\\{name}"])
def test_no_identifier_names_another_tenants_session_key(
    alice: Tenant, api: Api, shared_name: str, form: str
) -> None:
    """Sessions are kept under ``tenant\\identifier``: no caller may write that form itself."""
    alice.ok(shared_name, "x = 'alice'")
    forged = form.format(tenant="alice", name=shared_name)
    r = api.client.post(
        f"/pools/default/code/execute?identifier={forged}&api-version=2024-02-02-preview",
        json=code_body("x"),
    )
    assert_client_error(r, 400)
    assert "alice'" not in r.text
