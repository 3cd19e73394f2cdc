"""The agents faces in process, on the fake backend, driven by the scripted model: a turn's
code runs in a fake session and its output, files and answer come back through the wire.

The jail-marked suites (tests/clients/test_agents_*.py) run the real client libraries against a
real server; these check the faces and the agent loop in seconds, without root.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from sessionpool.agents.config import AgentsConfig
from sessionpool.faces.assistants import AssistantsFace
from sessionpool.faces.assistants import routes as assistants_routes
from sessionpool.faces.responses import ResponsesFace
from sessionpool.faces.responses import routes as responses_routes
from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import ALL_SCOPES, Scope
from tests.agents.scripted_model import ECHO_PREFIX, ScriptedModel
from tests.fakes import fake_server

ECHO = "scripted-echo"
WRITE_FILE = (
    "with open('/mnt/data/out.txt', 'w') as f:\n    f.write('made by code')\nprint('wrote')"
)


@pytest.fixture
async def http(tmp_path: Path, scripted_model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    agents = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model=ECHO,
        model_timeout_seconds=5,
        data_dir=tmp_path / "fake-data",
    )
    async with fake_server(tmp_path, agents=agents) as client:
        yield client


async def test_an_assistants_run_executes_code_and_answers(http: httpx.AsyncClient) -> None:
    assistant = (await http.post("/v1/assistants", json={"model": ECHO})).json()
    thread = (
        await http.post(
            "/v1/threads", json={"messages": [{"role": "user", "content": "print(6 * 7)"}]}
        )
    ).json()
    run = (
        await http.post(f"/v1/threads/{thread['id']}/runs", json={"assistant_id": assistant["id"]})
    ).json()
    for _ in range(500):
        run = (await http.get(f"/v1/threads/{thread['id']}/runs/{run['id']}")).json()
        if run["status"] not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.01)
    assert run["status"] == "completed", run["last_error"]
    messages = (await http.get(f"/v1/threads/{thread['id']}/messages")).json()["data"]
    answer = messages[0]["content"][0]["text"]["value"]
    assert messages[0]["role"] == "assistant" and answer.startswith(ECHO_PREFIX)
    assert "42" in answer
    steps = (await http.get(f"/v1/threads/{thread['id']}/runs/{run['id']}/steps")).json()["data"]
    calls = next(s for s in steps if s["type"] == "tool_calls")["step_details"]["tool_calls"]
    assert calls[0]["code_interpreter"]["input"] == "print(6 * 7)"
    assert calls[0]["code_interpreter"]["outputs"][0]["logs"] == "42\n"


async def test_a_response_keeps_the_files_its_code_wrote(http: httpx.AsyncClient) -> None:
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    r = await http.post("/v1/responses", json={"model": ECHO, "input": WRITE_FILE, "tools": tools})
    assert r.status_code == 200, r.text
    response = r.json()
    assert response["status"] == "completed"
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["code_interpreter_call", "message"]
    call = response["output"][0]
    assert call["code"] == WRITE_FILE and call["outputs"][0]["logs"] == "wrote\n"
    files = (await http.get(f"/v1/containers/{call['container_id']}/files")).json()["data"]
    assert [f["path"] for f in files] == ["/mnt/data/out.txt"]
    content = await http.get(
        f"/v1/containers/{call['container_id']}/files/{files[0]['id']}/content"
    )
    assert content.content == b"made by code"


async def test_a_streamed_response_ends_completed(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/responses", json={"model": ECHO, "input": "print(1)", "stream": True})
    events: list[dict[str, Any]] = [
        json.loads(line[len("data: ") :])
        for line in r.text.splitlines()
        if line.startswith("data: ")
    ]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "response.code_interpreter_call_code.done" in kinds


# --- tenants ----------------------------------------------------------------------------------


def agents_routes() -> list[tuple[str, str]]:
    """Every (method, path) the two agents faces mount, under every prefix, path parameters
    filled in: what ``install`` puts on the application."""
    mounts: list[tuple[APIRouter, tuple[tuple[str, bool], ...]]] = [
        (AssistantsFace().router(), assistants_routes.PREFIXES),
        (
            AssistantsFace().files_router(),
            assistants_routes.PREFIXES + assistants_routes.FILES_ONLY_PREFIXES,
        ),
        (ResponsesFace().router(), responses_routes.PREFIXES),
        (ResponsesFace().foundry_router(), responses_routes.FOUNDRY_PREFIXES),
    ]
    out = []
    for router, prefixes in mounts:
        for route in router.routes:
            for prefix, _ in prefixes:
                path = re.sub(r"\{\w+\}", "x1", prefix + route.path)  # type: ignore[attr-defined]
                out += [(method, path) for method in sorted(route.methods)]  # type: ignore[attr-defined]
    return out


@pytest.fixture
async def tenants(
    tmp_path: Path, scripted_model: ScriptedModel
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    """The in-process server, and the headers of three stored keys: ``acme`` and ``umbrella``
    with every scope, ``acme-noagents`` (tenant acme) with every scope but the agents one."""
    agents = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model=ECHO,
        model_timeout_seconds=5,
        data_dir=tmp_path / "fake-data",
    )
    store = KeyStore(tmp_path / "fake-data" / "keys.json")
    keys = {
        "acme": store.create("acme")[1],
        "umbrella": store.create("umbrella")[1],
        "acme-noagents": store.create("acme", ALL_SCOPES - {Scope.AGENTS})[1],
    }
    headers = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    async with fake_server(tmp_path, agents=agents) as client:
        yield client, headers


async def test_every_agents_route_needs_the_agents_scope(
    tenants: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    http, keys = tenants
    routes = agents_routes()
    assert len(routes) > 150  # every route of both faces, under every prefix
    for method, path in routes:
        r = await http.request(method, path, headers=keys["acme-noagents"], json={})
        assert r.status_code == 403, (method, path, r.text)
        error = r.json()["error"]
        assert error["code"] == "forbidden", (method, path, error)
        assert "'agents' scope" in error["message"]
    # nothing was made meanwhile: the same tenant, with the scope, finds an empty store
    for path in ("/v1/assistants", "/v1/files", "/v1/containers"):
        assert (await http.get(path, headers=keys["acme"])).json()["data"] == []


def same_as_unknown(theirs: httpx.Response, unknown: httpx.Response, ids: tuple[str, str]) -> None:
    """Another tenant's id answered exactly as an id never issued (the id itself aside)."""
    assert theirs.status_code == unknown.status_code == 404, theirs.text
    assert theirs.json()["error"]["code"] == "not_found"
    assert theirs.text.replace(ids[0], "ID") == unknown.text.replace(ids[1], "ID")
    assert theirs.headers.get("content-type") == unknown.headers.get("content-type")


async def test_one_tenants_objects_are_not_found_by_another(
    tenants: tuple[httpx.AsyncClient, dict[str, dict[str, str]]],
) -> None:
    http, keys = tenants
    acme, umbrella = keys["acme"], keys["umbrella"]
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    r = await http.post(
        "/v1/responses", headers=acme, json={"model": ECHO, "input": WRITE_FILE, "tools": tools}
    )
    response = r.json()
    assert response["status"] == "completed", response
    container = response["output"][0]["container_id"]
    files = (await http.get(f"/v1/containers/{container}/files", headers=acme)).json()["data"]
    assistant = (await http.post("/v1/assistants", headers=acme, json={"model": ECHO})).json()
    upload = await http.post(
        "/v1/files", headers=acme, files={"file": ("a.csv", b"a\n")}, data={"purpose": "assistants"}
    )
    paths = [
        f"/v1/responses/{response['id']}",
        f"/v1/responses/{response['id']}?stream=true",
        f"/v1/responses/{response['id']}/input_items",
        f"/v1/containers/{container}",
        f"/v1/containers/{container}/files/{files[0]['id']}/content",
        f"/v1/assistants/{assistant['id']}",
        f"/api/projects/p/assistants/{assistant['id']}",
        f"/v1/files/{upload.json()['id']}/content",
    ]
    for path in paths:
        object_id = next(
            part
            for part in re.split(r"[/?]", path)
            if re.fullmatch(r"[a-z]+[_-][0-9a-f]{24}", part)
        )
        fresh = object_id[:-24] + secrets.token_hex(12)
        theirs = await http.get(path, headers=umbrella)
        unknown = await http.get(path.replace(object_id, fresh), headers=umbrella)
        same_as_unknown(theirs, unknown, (object_id, fresh))
        assert (await http.get(path, headers=acme)).status_code == 200, path
    for path in ("/v1/assistants", "/v1/files", "/v1/containers"):
        assert (await http.get(path, headers=umbrella)).json()["data"] == []
        assert (await http.get(path, headers=acme)).json()["data"] != []
