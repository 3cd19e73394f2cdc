"""The Assistants v2 routes in process, on an in-memory service (``fake.FakeAgentService``).

These pin the HTTP contract (prefixes, status codes, envelopes, headers, SSE framing) without a
model or sessions; tests/clients/test_agents_assistants.py runs the real clients against the
real service.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI

from sessionpool.agents.config import AgentsConfig
from sessionpool.faces.assistants import install_assistants
from sessionpool.faces.assistants.routes import AZURE_HUB_PREFIX
from sessionpool.server.errors import install_error_handlers
from tests.faces.assistants.fake import FakeAgentService

AZ = AZURE_HUB_PREFIX.format(subscription="sub", resource_group="rg", project="proj")
PREFIXES = ["/v1", AZ, "/api/projects/proj", "/openai"]


def make_app() -> tuple[FastAPI, FakeAgentService]:
    app = FastAPI()
    install_error_handlers(app)
    install_assistants(app)
    svc = FakeAgentService()
    app.state.agents = svc
    return app, svc


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app, _ = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    data = r.json()
    assert isinstance(data, dict)
    return data


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["code"]
    return dict(err)


async def wait_run(c: httpx.AsyncClient, base: str, tid: str, rid: str) -> dict[str, Any]:
    for _ in range(200):
        r = await c.get(f"{base}/threads/{tid}/runs/{rid}")
        run = ok(r)
        assert r.headers["openai-poll-after-ms"] == "200"
        if run["status"] not in ("queued", "in_progress", "cancelling"):
            return run
        await asyncio.sleep(0.01)
    raise AssertionError("run did not finish")


def sse_events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = lines["data"]
        out.append((lines["event"], data if data == "[DONE]" else json.loads(data)))
    return out


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_full_flow_under_every_prefix(client: httpx.AsyncClient, prefix: str) -> None:
    c, q = client, "?api-version=2024-12-01-preview"
    up = ok(
        await c.post(
            f"{prefix}/files{q}",
            files={"file": ("profits.csv", b"company,profit\nA,1.2\n")},
            data={"purpose": "assistants"},
        )
    )
    assert up["object"] == "file" and up["purpose"] == "assistants"
    assert up["filename"] == "profits.csv" and up["bytes"] == 21 and up["status"] == "processed"

    body = {
        "instructions": "You are helpful agent",
        "model": "gpt-4o-mini",
        "name": "my-agent",
        "tool_resources": {"code_interpreter": {"file_ids": [up["id"]]}},
        "tools": [{"type": "code_interpreter"}],
        "some_future_field": {"ignored": True},
    }
    asst = ok(await c.post(f"{prefix}/assistants{q}", json=body))
    assert asst["object"] == "assistant" and isinstance(asst["created_at"], int)
    assert asst["tool_resources"] == {"code_interpreter": {"file_ids": [up["id"]]}}
    assert ok(await c.get(f"{prefix}/assistants/{asst['id']}{q}"))["name"] == "my-agent"

    thread = ok(await c.post(f"{prefix}/threads{q}", json={}))
    assert thread["object"] == "thread" and thread["tool_resources"] == {}
    tid = thread["id"]
    msg = ok(
        await c.post(
            f"{prefix}/threads/{tid}/messages{q}",
            json={
                "content": "chart it",
                "role": "user",
                "attachments": [{"file_id": up["id"], "tools": [{"type": "code_interpreter"}]}],
            },
        )
    )
    assert msg["content"] == [{"type": "text", "text": {"value": "chart it", "annotations": []}}]
    assert msg["attachments"][0]["file_id"] == up["id"]

    r = await c.post(
        f"{prefix}/threads/{tid}/runs{q}&include[]=step_details.tool_calls[*].file_search",
        json={"assistant_id": asst["id"], "stream": False},
    )
    run = ok(r)
    assert r.headers["openai-poll-after-ms"] == "200"
    assert run["status"] == "queued" and run["usage"] is None
    run = await wait_run(c, prefix, tid, run["id"])
    assert run["status"] == "completed"
    assert run["usage"]["total_tokens"] == 15

    page = ok(await c.get(f"{prefix}/threads/{tid}/messages{q}"))
    assert [m["role"] for m in page["data"]] == ["assistant", "user"]  # newest first
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == msg["id"]
    answer = page["data"][0]
    image, text = answer["content"]
    ann = text["text"]["annotations"][0]
    assert ann["type"] == "file_path" and ann["text"] == "sandbox:/mnt/data/chart_data.csv"
    r = await c.get(f"{prefix}/files/{image['image_file']['file_id']}/content{q}")
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert r.headers["content-type"] == "application/octet-stream"
    csv = ok(await c.get(f"{prefix}/files/{ann['file_path']['file_id']}{q}"))
    assert csv["purpose"] == "assistants_output"

    # the page after the last one: empty, with null cursors (azure-ai-agents stops on it)
    empty = ok(await c.get(f"{prefix}/threads/{tid}/messages{q}&after={page['last_id']}"))
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    asc = ok(await c.get(f"{prefix}/threads/{tid}/messages?order=asc&limit=1"))
    assert [m["id"] for m in asc["data"]] == [msg["id"]] and asc["has_more"] is True

    steps = ok(await c.get(f"{prefix}/threads/{tid}/runs/{run['id']}/steps{q}"))
    types = {s["type"] for s in steps["data"]}
    assert types == {"tool_calls", "message_creation"}
    tc = next(s for s in steps["data"] if s["type"] == "tool_calls")
    ci = tc["step_details"]["tool_calls"][0]["code_interpreter"]
    assert ci["input"] == "plot()" and ci["outputs"][0] == {"type": "logs", "logs": "ok\n"}
    one = ok(await c.get(f"{prefix}/threads/{tid}/runs/{run['id']}/steps/{tc['id']}{q}"))
    assert one == tc
    runs = ok(await c.get(f"{prefix}/threads/{tid}/runs{q}"))
    assert runs["data"][0]["id"] == run["id"]

    files = ok(await c.get(f"{prefix}/files{q}"))
    assert len(files["data"]) == 3
    assert ok(await c.delete(f"{prefix}/files/{up['id']}{q}")) == {
        "id": up["id"],
        "object": "file",
        "deleted": True,
    }
    assert ok(await c.delete(f"{prefix}/threads/{tid}/messages/{msg['id']}{q}"))["object"] == (
        "thread.message.deleted"
    )
    assert ok(await c.delete(f"{prefix}/assistants/{asst['id']}{q}")) == {
        "id": asst["id"],
        "object": "assistant.deleted",
        "deleted": True,
    }
    assert ok(await c.delete(f"{prefix}/threads/{tid}{q}"))["object"] == "thread.deleted"
    error(await c.get(f"{prefix}/threads/{tid}{q}"), 404)


async def test_updates(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": "m"}))
    upd = ok(
        await c.post(
            f"/v1/assistants/{asst['id']}", json={"name": "renamed", "metadata": {"a": "b"}}
        )
    )
    assert upd["name"] == "renamed" and upd["metadata"] == {"a": "b"} and upd["model"] == "m"
    listed = ok(await c.get("/v1/assistants"))
    assert listed["data"][0]["id"] == asst["id"]
    thread = ok(
        await c.post(
            "/v1/threads",
            json={
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "metadata": {"k": "v"},
            },
        )
    )
    tid = thread["id"]
    assert ok(await c.post(f"/v1/threads/{tid}", json={"metadata": {"k": "w"}}))["metadata"] == {
        "k": "w"
    }
    [msg] = ok(await c.get(f"/v1/threads/{tid}/messages"))["data"]
    assert msg["content"][0]["text"]["value"] == "hi"
    mid = msg["id"]
    upd_msg = ok(await c.post(f"/v1/threads/{tid}/messages/{mid}", json={"metadata": {"x": "y"}}))
    assert upd_msg["metadata"] == {"x": "y"}
    assert ok(await c.get(f"/v1/threads/{tid}/messages/{mid}"))["metadata"] == {"x": "y"}


async def test_errors(client: httpx.AsyncClient) -> None:
    c = client
    thread = ok(await c.post("/v1/threads", content=b""))
    tid = thread["id"]
    err = error(await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": "asst_nope"}), 404)
    assert err["type"] == "invalid_request_error"
    error(await c.post("/v1/threads/runs", json={"assistant_id": "asst_nope"}), 404)
    err = error(await c.post(f"/v1/threads/{tid}/runs", json={}), 400)
    assert err["param"] == "assistant_id"
    error(await c.post("/v1/threads/thread_nope/runs", json={"assistant_id": "x"}), 404)
    error(await c.post("/v1/assistants", content=b"{not json"), 400)
    error(await c.post("/v1/assistants", content=b"[1]"), 400)
    error(await c.post("/v1/assistants", json={"model": "m", "metadata": "x"}), 400)
    error(await c.post(f"/v1/threads/{tid}/messages", json={"role": "user"}), 400)
    error(await c.post(f"/v1/threads/{tid}/messages", json={"role": "robot", "content": "x"}), 400)
    error(await c.get(f"/v1/threads/{tid}/messages?limit=0"), 400)
    error(await c.get(f"/v1/threads/{tid}/messages?limit=101"), 400)
    error(await c.get(f"/v1/threads/{tid}/messages?order=sideways"), 400)
    error(await c.get("/v1/files/file-nope/content"), 404)
    error(await c.get("/v1/assistants/asst_nope"), 404)
    error(await c.post("/v1/files", data={"purpose": "assistants"}), 400)
    error(await c.get(f"/v1/threads/{tid}/runs/run_nope"), 404)

    asst = ok(await c.post("/v1/assistants", json={"model": "m"}))
    run = ok(await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"]}))
    r = await c.post(
        f"/v1/threads/{tid}/runs/{run['id']}/submit_tool_outputs",
        json={"tool_outputs": [{"tool_call_id": "call_1", "output": "x"}]},
    )
    err = error(r, 400)
    assert "only code_interpreter tools run on this server" in err["message"]
    # a run on another thread is not found through this one
    other = ok(await c.post("/v1/threads", json={}))
    error(await c.get(f"/v1/threads/{other['id']}/runs/{run['id']}"), 404)


async def test_failed_run_and_cancel() -> None:
    app, _ = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        asst = ok(await c.post("/v1/assistants", json={"model": "fail"}))
        tid = ok(await c.post("/v1/threads", json={}))["id"]
        run = ok(await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"]}))
        run = await wait_run(c, "/v1", tid, run["id"])
        assert run["status"] == "failed"
        assert run["last_error"]["code"] == "server_error"
        assert run["failed_at"] is not None

        # cancel answers with the run (terminal here: unchanged)
        cancelled = ok(await c.post(f"/v1/threads/{tid}/runs/{run['id']}/cancel"))
        assert cancelled["status"] == "failed"


async def test_stream_run(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": "m"}))
    tid = ok(await c.post("/v1/threads", json={}))["id"]
    ok(await c.post(f"/v1/threads/{tid}/messages", json={"role": "user", "content": "go"}))
    r = await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"], "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert names[-2:] == ["thread.run.completed", "done"]
    assert events[-1][1] == "[DONE]"
    for name in (
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.completed",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.completed",
    ):
        assert name in names
    deltas = [d for e, d in events if e == "thread.message.delta"]
    text = "".join(
        p["text"]["value"] for d in deltas for p in d["delta"]["content"] if p["type"] == "text"
    )
    assert text.endswith("(sandbox:/mnt/data/chart_data.csv)")


async def test_stream_create_thread_and_run(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": "m"}))
    r = await c.post(
        "/v1/threads/runs",
        json={
            "assistant_id": asst["id"],
            "stream": True,
            "thread": {"messages": [{"role": "user", "content": "go"}]},
        },
    )
    events = sse_events(r.text)
    assert events[0][0] == "thread.created"
    tid = events[0][1]["id"]
    assert events[1][0] == "thread.run.created" and events[1][1]["thread_id"] == tid
    assert events[-1] == ("done", "[DONE]")
    # non-streaming: a run object
    run = ok(await c.post("/v1/threads/runs", json={"assistant_id": asst["id"]}))
    assert run["object"] == "thread.run" and run["thread_id"] != tid


async def test_openai_sdk_in_process() -> None:
    """openai-python parses every shape, including the stream, through its own models."""
    app, _ = make_app()
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    client = openai.AsyncOpenAI(base_url="http://t/v1", api_key="k", http_client=http)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        f = await client.files.create(file=("d.csv", b"x,y\n1,2\n"), purpose="assistants")
        asst = await client.beta.assistants.create(
            model="m",
            tools=[{"type": "code_interpreter"}],
            tool_resources={"code_interpreter": {"file_ids": [f.id]}},
        )
        thread = await client.beta.threads.create()
        await client.beta.threads.messages.create(
            thread.id,
            role="user",
            content="go",
            attachments=[{"file_id": f.id, "tools": [{"type": "code_interpreter"}]}],
        )
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=asst.id, poll_interval_ms=10
        )
        assert run.status == "completed" and run.usage is not None
        msgs = await client.beta.threads.messages.list(thread.id)
        answer = msgs.data[0]
        assert answer.role == "assistant"
        assert answer.content[0].type == "image_file"
        assert answer.content[1].type == "text"
        ann = answer.content[1].text.annotations[0]
        assert ann.type == "file_path"
        content = await client.files.content(ann.file_path.file_id)
        assert content.content == b"a,b\n1,2\n"
        steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
        assert {s.step_details.type for s in steps.data} == {"tool_calls", "message_creation"}

        calls: list[Any] = []
        deltas: list[Any] = []

        class Handler(openai.AsyncAssistantEventHandler):
            async def on_tool_call_created(self, tool_call: Any) -> None:
                calls.append(tool_call)

            async def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
                deltas.append(delta)

        async with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=asst.id, event_handler=Handler()
        ) as stream:
            seen = [event.event async for event in stream]
            final = await stream.get_final_run()
            messages = await stream.get_final_messages()
            steps_done = await stream.get_final_run_steps()
        assert [c.code_interpreter.input for c in calls] == ["plot()"]
        outs = [o for d in deltas if d.code_interpreter for o in d.code_interpreter.outputs or []]
        assert [o.type for o in outs] == ["logs", "image"]
        [tool_step] = [s for s in steps_done if s.step_details.type == "tool_calls"]
        ci = tool_step.step_details.tool_calls[0].code_interpreter
        assert ci.input == "plot()" and [o.type for o in ci.outputs] == ["logs", "image"]
        assert seen[0] == "thread.run.created" and seen[-1] == "thread.run.completed"
        assert final.status == "completed"
        [last] = messages
        texts = [p for p in last.content if p.type == "text"]
        assert texts[0].text.value.startswith("Done:")
    await http.aclose()


async def test_files_under_foundry_openai_prefix(client: httpx.AsyncClient) -> None:
    """azure-ai-projects 2.x ``get_openai_client()`` uploads to ``/api/projects/{p}/openai/v1``."""
    base = "/api/projects/proj/openai/v1"
    up = ok(await client.post(f"{base}/files", files={"file": ("a.txt", b"hi")}))
    assert up["purpose"] == "assistants"
    r = await client.get(f"{base}/files/{up['id']}/content")
    assert r.status_code == 200 and r.content == b"hi"
    # the rest of the Assistants routes are not there
    assert (await client.post(f"{base}/assistants", json={"model": "m"})).status_code == 404


async def test_without_agents_service_routes_answer_404() -> None:
    app = FastAPI()
    install_error_handlers(app)
    install_assistants(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        err = error(await c.get("/v1/assistants"), 404)
        assert err["code"] == "AgentsDisabled"


async def test_run_update_and_upload_limit() -> None:
    app, svc = make_app()
    svc.config = AgentsConfig(data_dir=svc.config.data_dir, max_file_bytes=8)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        asst = ok(await c.post("/v1/assistants", json={"model": "m"}))
        tid = ok(await c.post("/v1/threads", json={}))["id"]
        run = ok(
            await c.post(
                f"/v1/threads/{tid}/runs",
                json={"assistant_id": asst["id"], "metadata": {"a": "1"}, "tool_choice": "auto"},
            )
        )
        await wait_run(c, "/v1", tid, run["id"])
        same = ok(await c.post(f"/v1/threads/{tid}/runs/{run['id']}", json={}))
        assert same["metadata"] == {"a": "1"}
        changed = ok(
            await c.post(f"/v1/threads/{tid}/runs/{run['id']}", json={"metadata": {"b": "2"}})
        )
        assert changed["metadata"] == {"b": "2"}

        r = await c.post("/v1/files", files={"file": ("big.bin", b"x" * 9)}, data={"purpose": "x"})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "FileTooLarge"
        small = ok(await c.post("/v1/files", files={"file": ("s.bin", b"x")}))
        assert small["bytes"] == 1
