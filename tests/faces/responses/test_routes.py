"""The Responses face's routes in process: what the OpenAPI description says, and HTTP
behaviour on the real ``AgentService`` (jailed sessions, the scripted model, SQLite under
``tmp_path``). tests/clients/test_agents_responses.py runs openai-python against a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from sessionpool.agents import AgentsConfig, AgentService
from sessionpool.engine import Engine
from sessionpool.faces.base import Runtime
from sessionpool.faces.http import install_error_handlers
from sessionpool.faces.responses import ResponsesFace
from sessionpool.faces.responses.routes import api_base
from tests.agents.scripted_model import ScriptedModel

HELLO = "scripted-hello"


def make_app(service: AgentService | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    ResponsesFace().install(app)
    if service is not None:
        app.state.runtime = Runtime(service.engine, service)
    return app


# --- the OpenAPI description --------------------------------------------------------------------


def test_schema_describes_the_v1_copy_only() -> None:
    paths: dict[str, Any] = make_app().openapi()["paths"]
    assert paths, "the face describes nothing"
    assert all(p.startswith("/v1/") for p in paths), sorted(paths)
    assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
    assert set(paths["/v1/containers/{container_id}/files"]) == {"get", "post"}
    assert "/v1/conversations/{conversation_id}/items/{item_id}" in paths


def test_schema_describes_the_bodies_and_queries() -> None:
    paths: dict[str, Any] = make_app().openapi()["paths"]
    create = paths["/v1/responses"]["post"]["requestBody"]["content"]["application/json"]
    props = create["schema"]["properties"]
    assert {"model", "input", "tools", "conversation", "background", "stream"} <= set(props)
    container = paths["/v1/containers"]["post"]["requestBody"]["content"]["application/json"]
    assert "$ref" not in str(container["schema"])  # nested models inlined
    upload = paths["/v1/containers/{container_id}/files"]["post"]["requestBody"]["content"]
    assert set(upload) == {"application/json", "multipart/form-data"}
    listed = paths["/v1/conversations/{conversation_id}/items"]["get"]["parameters"]
    assert {p["name"] for p in listed} >= {"conversation_id", "limit", "order", "after"}


# --- on the real service ------------------------------------------------------------------------


@pytest.fixture
async def svc(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> AsyncIterator[AgentService]:
    config = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model=HELLO,
        max_steps=3,
        model_timeout_seconds=5,
        data_dir=tmp_path,
    )
    service = AgentService(config, engine)
    await service.start()
    yield service
    await service.close()


@pytest.fixture
async def client(svc: AgentService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
        yield c


@pytest.mark.jail
async def test_delete_a_response(client: httpx.AsyncClient) -> None:
    made = await client.post("/v1/responses", json={"model": HELLO, "input": "hi"})
    assert made.status_code == 200, made.text
    rid = made.json()["id"]
    gone = await client.delete(f"/v1/responses/{rid}")
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"id": rid, "object": "response", "deleted": True}
    assert (await client.get(f"/v1/responses/{rid}")).status_code == 404
    assert (await client.delete(f"/v1/responses/{rid}")).status_code == 404
    assert (await client.delete("/openai/v1/responses/resp_nope")).status_code == 404


@pytest.mark.jail
async def test_delete_keeps_the_conversation_messages(client: httpx.AsyncClient) -> None:
    """As in OpenAI's API: a conversation's items outlive the response that added them."""
    conv = (await client.post("/v1/conversations", json={})).json()
    made = await client.post(
        "/v1/responses", json={"model": HELLO, "input": "hi", "conversation": conv["id"]}
    )
    assert made.status_code == 200, made.text
    assert (await client.delete(f"/v1/responses/{made.json()['id']}")).status_code == 200
    listed = await client.get(f"/v1/conversations/{conv['id']}/items", params={"order": "asc"})
    items = listed.json()["data"]
    assert [i["role"] for i in items if i["type"] == "message"] == ["user", "assistant"]


@pytest.mark.jail
async def test_a_conversations_developer_items_instruct_each_response(
    client: httpx.AsyncClient,
) -> None:
    """System and developer items cannot be stored as messages: they become instructions."""
    conv = await client.post(
        "/v1/conversations",
        json={"items": [{"type": "message", "role": "developer", "content": "Be brief."}]},
    )
    assert conv.status_code == 200, conv.text
    made = await client.post(
        "/v1/responses",
        json={
            "model": HELLO,
            "input": [
                {"role": "system", "content": "Use SI units."},
                {"role": "user", "content": "hi"},
            ],
            "instructions": "Be kind.",
            "conversation": conv.json()["id"],
        },
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["instructions"] == "Be kind.\n\nBe brief.\n\nUse SI units."
    assert body["conversation"] == {"id": conv.json()["id"]}
    items = (await client.get(f"/v1/conversations/{conv.json()['id']}/items")).json()["data"]
    assert [i["role"] for i in items if i["type"] == "message"] == ["assistant", "user"]


@pytest.mark.parametrize(
    ("path", "params", "base"),
    [
        ("/v1/responses", {}, "http://test/v1"),
        ("/openai/v1/responses", {}, "http://test/openai/v1"),
        (
            "/api/projects/p/openai/v1/responses",
            {"project": "p"},
            "http://test/api/projects/p/openai/v1",
        ),
    ],
)
def test_container_links_keep_the_base_of_the_request(
    path: str, params: dict[str, str], base: str
) -> None:
    """Links to container files go through the base the client used (``/openai/v1`` too)."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("test", 80),
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "path_params": params,
    }
    assert api_base(Request(scope)) == base
