"""The Assistants v2 routes in process, on the real ``AgentService``.

Real jailed sessions (the session ``engine``), the scripted chat-completions server over HTTP
(tests/agents/scripted_model.py) and SQLite under ``tmp_path``: these pin the HTTP contract
(prefixes, status codes, envelopes, headers, SSE framing) on what the service really produces.
tests/clients/test_agents_assistants.py runs the real clients over TLS against a real server.

Models pick the script: ``gpt-4o-mini`` and other unknown names draw the bar chart (a code
call that writes chart.png and chart_data.csv, then an answer linking both); ``scripted-hello``
answers with text alone, ``scripted-error`` fails, ``scripted-slow`` runs a long cell.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI

from sessionpool.agents import AgentsConfig, AgentService
from sessionpool.engine import Engine
from sessionpool.faces.assistants import AssistantsFace
from sessionpool.faces.assistants.routes import AZURE_HUB_PREFIX, AZURE_OPENAI_V1_PREFIX
from sessionpool.faces.base import Runtime
from sessionpool.faces.http import install_error_handlers
from tests.agents.scripted_model import (
    CHART_ANSWER,
    CHART_CODE,
    HELLO_ANSWER,
    READ_FILE_PREFIX,
    ScriptedModel,
)

pytestmark = pytest.mark.jail

AZ = AZURE_HUB_PREFIX.format(subscription="sub", resource_group="rg", project="proj")
PREFIXES = ["/v1", AZ, "/api/projects/proj", "/openai"]
PNG = b"\x89PNG\r\n\x1a\n"
CHART = "gpt-4o-mini"  # an unknown name: the scripted model draws the bar chart
HELLO = "scripted-hello"


def agents_config(model: ScriptedModel, data_dir: Path, **kw: Any) -> AgentsConfig:
    return AgentsConfig(
        model_base_url=model.url,
        default_model=HELLO,
        max_steps=3,
        model_timeout_seconds=5,
        data_dir=data_dir,
        **kw,
    )


@pytest.fixture
async def svc(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> AsyncIterator[AgentService]:
    service = AgentService(agents_config(scripted_model, tmp_path), engine)
    await service.start()
    yield service
    await service.close()


def make_app(service: AgentService) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    AssistantsFace().install(app)
    app.state.runtime = Runtime(service.engine, service)
    return app


@pytest.fixture
async def client(svc: AgentService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
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


async def wait_run(
    c: httpx.AsyncClient, base: str, tid: str, rid: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await c.get(f"{base}/threads/{tid}/runs/{rid}")
        run = ok(r)
        assert r.headers["openai-poll-after-ms"] == "200"
        if run["status"] not in ("queued", "in_progress", "cancelling"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError("run did not finish")


def sse_events(text: str) -> list[tuple[str, Any]]:
    """Strict framing: blocks of exactly ``event: <name>`` then ``data: <json or [DONE]>``."""
    assert text.endswith("\n\n")
    out = []
    for block in text.split("\n\n")[:-1]:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: "), block
        name, payload = event[len("event: ") :], data[len("data: ") :]
        out.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return out


def streamed_text(events: list[tuple[str, Any]]) -> str:
    deltas = [d for e, d in events if e == "thread.message.delta"]
    return "".join(
        p["text"]["value"] for d in deltas for p in d["delta"]["content"] if p["type"] == "text"
    )


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
        "model": CHART,
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
    assert run["model"] == CHART and run["instructions"] == "You are helpful agent"
    run = await wait_run(c, prefix, tid, run["id"])
    assert run["status"] == "completed", run["last_error"]
    assert run["usage"]["total_tokens"] > 0 and run["completed_at"] is not None

    page = ok(await c.get(f"{prefix}/threads/{tid}/messages{q}"))
    assert [m["role"] for m in page["data"]] == ["assistant", "user"]  # newest first
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == msg["id"]
    answer = page["data"][0]
    assert answer["run_id"] == run["id"] and answer["assistant_id"] == asst["id"]
    image, text = answer["content"]
    assert image["type"] == "image_file" and text["type"] == "text"
    assert text["text"]["value"] == CHART_ANSWER
    anns = text["text"]["annotations"]
    assert [a["type"] for a in anns] == ["file_path", "file_path"]
    assert [a["text"] for a in anns] == [
        "sandbox:/mnt/data/chart.png",
        "sandbox:/mnt/data/chart_data.csv",
    ]
    for a in anns:
        assert CHART_ANSWER[a["start_index"] : a["end_index"]] == a["text"]
    r = await c.get(f"{prefix}/files/{image['image_file']['file_id']}/content{q}")
    assert r.status_code == 200 and r.content.startswith(PNG)
    assert r.headers["content-type"] == "application/octet-stream"
    csv_id = anns[1]["file_path"]["file_id"]
    csv = ok(await c.get(f"{prefix}/files/{csv_id}{q}"))
    assert csv["id"] == csv_id and csv["filename"] == "chart_data.csv"
    r = await c.get(f"{prefix}/files/{csv_id}/content{q}")
    assert r.status_code == 200 and b"Company B,2.5" in r.content

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
    by_run = ok(await c.get(f"{prefix}/threads/{tid}/messages?run_id={run['id']}"))
    assert [m["id"] for m in by_run["data"]] == [answer["id"]]

    steps = ok(await c.get(f"{prefix}/threads/{tid}/runs/{run['id']}/steps{q}"))
    assert [s["type"] for s in steps["data"]] == ["message_creation", "tool_calls"]
    assert all(s["status"] == "completed" for s in steps["data"])
    mc, tc = steps["data"]
    assert mc["step_details"]["message_creation"]["message_id"] == answer["id"]
    [call] = tc["step_details"]["tool_calls"]
    assert call["type"] == "code_interpreter"
    ci = call["code_interpreter"]
    assert ci["input"] == CHART_CODE
    logs, img = ci["outputs"]
    assert logs["type"] == "logs" and "saved chart" in logs["logs"]
    assert img == {"type": "image", "image": {"file_id": image["image_file"]["file_id"]}}
    one = ok(await c.get(f"{prefix}/threads/{tid}/runs/{run['id']}/steps/{tc['id']}{q}"))
    assert one == tc
    runs = ok(await c.get(f"{prefix}/threads/{tid}/runs{q}"))
    assert [r["id"] for r in runs["data"]] == [run["id"]]

    files = ok(await c.get(f"{prefix}/files{q}"))
    assert up["id"] in {f["id"] for f in files["data"]}
    outputs = ok(await c.get(f"{prefix}/files?purpose=assistants_output"))
    assert image["image_file"]["file_id"] in {f["id"] for f in outputs["data"]}
    assert up["id"] not in {f["id"] for f in outputs["data"]}
    assert ok(await c.delete(f"{prefix}/files/{up['id']}{q}")) == {
        "id": up["id"],
        "object": "file",
        "deleted": True,
    }
    error(await c.get(f"{prefix}/files/{up['id']}{q}"), 404)
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
    assert ok(await c.get(f"/v1/assistants/{asst['id']}"))["name"] == "renamed"
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
    assert ok(await c.get(f"/v1/threads/{tid}"))["metadata"] == {"k": "w"}
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
    error(
        await c.post(
            "/v1/assistants",
            json={
                "model": "m",
                "tool_resources": {"code_interpreter": {"file_ids": ["file-nope"]}},
            },
        ),
        404,
    )
    error(await c.post(f"/v1/threads/{tid}/messages", json={"role": "user"}), 400)
    error(await c.post(f"/v1/threads/{tid}/messages", json={"role": "robot", "content": "x"}), 400)
    error(
        await c.post(
            f"/v1/threads/{tid}/messages",
            json={"content": "x", "attachments": [{"file_id": "file-nope"}]},
        ),
        404,
    )
    error(await c.get(f"/v1/threads/{tid}/messages?limit=0"), 400)
    error(await c.get(f"/v1/threads/{tid}/messages?limit=101"), 400)
    error(await c.get(f"/v1/threads/{tid}/messages?order=sideways"), 400)
    error(await c.get("/v1/files/file-nope/content"), 404)
    error(await c.get("/v1/assistants/asst_nope"), 404)
    error(await c.post("/v1/files", data={"purpose": "assistants"}), 400)
    error(await c.get(f"/v1/threads/{tid}/runs/run_nope"), 404)

    asst = ok(await c.post("/v1/assistants", json={"model": HELLO}))
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
    error(await c.get(f"/v1/threads/{other['id']}/runs/{run['id']}/steps"), 404)
    assert (await wait_run(c, "/v1", tid, run["id"]))["status"] == "completed"


async def test_failed_run(client: httpx.AsyncClient, scripted_model: ScriptedModel) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": "scripted-error"}))
    tid = ok(await c.post("/v1/threads", json={}))["id"]
    ok(await c.post(f"/v1/threads/{tid}/messages", json={"content": "fail please"}))
    run = ok(await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"]}))
    run = await wait_run(c, "/v1", tid, run["id"])
    assert run["status"] == "failed"
    assert run["last_error"]["code"] == "server_error" and run["last_error"]["message"]
    assert run["failed_at"] is not None and run["completed_at"] is None
    assert scripted_model.requests_for("error")

    # cancel answers with the run (terminal here: unchanged)
    cancelled = ok(await c.post(f"/v1/threads/{tid}/runs/{run['id']}/cancel"))
    assert cancelled["status"] == "failed"
    # a failed run leaves no assistant message
    roles = [m["role"] for m in ok(await c.get(f"/v1/threads/{tid}/messages"))["data"]]
    assert roles == ["user"]


async def test_cancel_interrupts_a_running_cell(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": "scripted-slow"}))
    tid = ok(await c.post("/v1/threads", json={}))["id"]
    ok(await c.post(f"/v1/threads/{tid}/messages", json={"content": "take your time"}))
    run = ok(await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"]}))
    rid = run["id"]
    # wait until the cell runs
    deadline = time.monotonic() + 30
    while True:
        steps = ok(await c.get(f"/v1/threads/{tid}/runs/{rid}/steps"))["data"]
        if steps and steps[0]["step_details"]["tool_calls"]:
            break
        assert time.monotonic() < deadline, "the slow cell never started"
        await asyncio.sleep(0.05)
    assert steps[0]["status"] == "in_progress"
    # the thread is busy: 409, and openai-python is told not to retry
    r = await c.post(f"/v1/threads/{tid}/messages", json={"content": "hurry"})
    error(r, 409)
    assert r.headers["x-should-retry"] == "false"
    error(await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"]}), 409)

    started = time.monotonic()
    cancelling = ok(await c.post(f"/v1/threads/{tid}/runs/{rid}/cancel"))
    assert cancelling["status"] == "cancelling"
    run = await wait_run(c, "/v1", tid, rid, timeout=30)
    assert run["status"] == "cancelled" and run["cancelled_at"] is not None
    assert time.monotonic() - started < 20  # the 60 s sleep was interrupted
    # the thread takes messages again
    ok(await c.post(f"/v1/threads/{tid}/messages", json={"content": "ok"}))


async def test_stream_run(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": CHART}))
    tid = ok(await c.post("/v1/threads", json={}))["id"]
    ok(await c.post(f"/v1/threads/{tid}/messages", json={"role": "user", "content": "go"}))
    r = await c.post(f"/v1/threads/{tid}/runs", json={"assistant_id": asst["id"], "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert names[-2:] == ["thread.run.completed", "done"]
    assert events[-1][1] == "[DONE]"
    for name in (
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.step.completed",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.completed",
    ):
        assert name in names
    rid = events[0][1]["id"]
    assert all(
        d["thread_id"] == tid
        for e, d in events
        if e.startswith("thread.run.") and not e.startswith("thread.run.step.delta")
    )
    # the code call streams as step deltas: its input, then its outputs
    calls = [
        tc
        for e, d in events
        if e == "thread.run.step.delta"
        for tc in d["delta"]["step_details"]["tool_calls"]
    ]
    assert "".join(tc["code_interpreter"].get("input") or "" for tc in calls) == CHART_CODE
    outs = [o["type"] for tc in calls for o in tc["code_interpreter"].get("outputs") or []]
    assert outs == ["logs", "image"]
    assert streamed_text(events) == CHART_ANSWER
    [done_msg] = [d for e, d in events if e == "thread.message.completed"]
    assert [p["type"] for p in done_msg["content"]] == ["image_file", "text"]
    anns = done_msg["content"][1]["text"]["annotations"]
    assert {a["text"] for a in anns} == {
        "sandbox:/mnt/data/chart.png",
        "sandbox:/mnt/data/chart_data.csv",
    }
    final = events[-2][1]
    assert final["id"] == rid and final["usage"]["total_tokens"] > 0
    # what the stream announced is what the thread holds
    [answer, _] = ok(await c.get(f"/v1/threads/{tid}/messages"))["data"]
    assert answer["id"] == done_msg["id"] and answer["content"] == done_msg["content"]


async def test_stream_create_thread_and_run(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": HELLO}))
    r = await c.post(
        "/v1/threads/runs",
        json={
            "assistant_id": asst["id"],
            "stream": True,
            "thread": {"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "v"}},
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [e for e, _ in events]
    assert names[0] == "thread.created"
    thread = events[0][1]
    tid = thread["id"]
    assert thread["object"] == "thread" and thread["metadata"] == {"k": "v"}
    assert names[1:4] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert events[1][1]["thread_id"] == tid and events[1][1]["assistant_id"] == asst["id"]
    assert names[-2:] == ["thread.run.completed", "done"] and events[-1][1] == "[DONE]"
    assert "thread.run.step.delta" not in names  # a text answer, no code
    assert streamed_text(events) == HELLO_ANSWER
    msgs = ok(await c.get(f"/v1/threads/{tid}/messages"))["data"]
    assert [m["role"] for m in msgs] == ["assistant", "user"]
    assert msgs[0]["content"][0]["text"]["value"] == HELLO_ANSWER
    assert msgs[0]["run_id"] == events[1][1]["id"]

    # non-streaming: a run object on a new thread
    r = await c.post("/v1/threads/runs", json={"assistant_id": asst["id"]})
    run = ok(r)
    assert r.headers["openai-poll-after-ms"] == "200"
    assert run["object"] == "thread.run" and run["thread_id"] != tid
    assert (await wait_run(c, "/v1", run["thread_id"], run["id"]))["status"] == "completed"


async def test_stream_create_thread_and_run_reads_thread_files(client: httpx.AsyncClient) -> None:
    """``tool_resources`` on the new thread reach the container: the code reads the upload."""
    c = client
    up = ok(await c.post("/v1/files", files={"file": ("sales.csv", b"item,n\nx,7\ny,35\n")}))
    asst = ok(await c.post("/v1/assistants", json={"model": HELLO}))
    r = await c.post(
        f"{AZ}/threads/runs?api-version=2024-12-01-preview",
        json={
            "assistant_id": asst["id"],
            "model": "scripted-read_file",
            "stream": True,
            "thread": {
                "messages": [{"role": "user", "content": "sum it"}],
                "tool_resources": {"code_interpreter": {"file_ids": [up["id"]]}},
            },
        },
    )
    events = sse_events(r.text)
    assert events[0][0] == "thread.created"
    assert events[0][1]["tool_resources"] == {"code_interpreter": {"file_ids": [up["id"]]}}
    assert events[-2][0] == "thread.run.completed", events[-2]
    assert events[-2][1]["model"] == "scripted-read_file"
    text = streamed_text(events)
    assert text.startswith(READ_FILE_PREFIX) and "x,7" in text and "42" in text


async def test_openai_sdk_in_process(svc: AgentService) -> None:
    """openai-python parses every shape, including the stream, through its own models."""
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=make_app(svc)), timeout=60)
    client = openai.AsyncOpenAI(base_url="http://t/v1", api_key="k", http_client=http)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        f = await client.files.create(file=("d.csv", b"x,y\n1,2\n"), purpose="assistants")
        asst = await client.beta.assistants.create(
            model=CHART,
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
            thread_id=thread.id, assistant_id=asst.id, poll_interval_ms=20
        )
        assert run.status == "completed" and run.usage is not None
        msgs = await client.beta.threads.messages.list(thread.id)
        answer = msgs.data[0]
        assert answer.role == "assistant"
        assert answer.content[0].type == "image_file"
        png = await client.files.content(answer.content[0].image_file.file_id)
        assert png.content.startswith(PNG)
        assert answer.content[1].type == "text"
        ann = answer.content[1].text.annotations[1]
        assert ann.type == "file_path" and ann.text.endswith("chart_data.csv")
        content = await client.files.content(ann.file_path.file_id)
        assert b"Company B,2.5" in content.content
        steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
        assert {s.step_details.type for s in steps.data} == {"tool_calls", "message_creation"}

        calls: list[Any] = []
        deltas: list[Any] = []

        class Handler(openai.AsyncAssistantEventHandler):
            async def on_tool_call_created(self, tool_call: Any) -> None:
                calls.append(tool_call)

            async def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
                deltas.append(delta)

        # a new question: the model sees the first turn's code and output, then this
        await client.beta.threads.messages.create(thread.id, role="user", content="once more")
        async with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=asst.id, event_handler=Handler()
        ) as stream:
            seen = [event.event async for event in stream]
            final = await stream.get_final_run()
            messages = await stream.get_final_messages()
            steps_done = await stream.get_final_run_steps()
        assert [c.code_interpreter.input for c in calls] == [CHART_CODE]
        outs = [o for d in deltas if d.code_interpreter for o in d.code_interpreter.outputs or []]
        assert [o.type for o in outs] == ["logs", "image"]
        [tool_step] = [s for s in steps_done if s.step_details.type == "tool_calls"]
        ci = tool_step.step_details.tool_calls[0].code_interpreter
        assert ci.input == CHART_CODE and [o.type for o in ci.outputs] == ["logs", "image"]
        assert seen[0] == "thread.run.created" and seen[-1] == "thread.run.completed"
        assert final.status == "completed"
        [last] = messages
        texts = [p for p in last.content if p.type == "text"]
        assert texts[0].text.value == CHART_ANSWER
        assert [a.type for a in texts[0].text.annotations] == ["file_path", "file_path"]
    await http.aclose()


async def test_files_under_foundry_openai_prefix(client: httpx.AsyncClient) -> None:
    """azure-ai-projects 2.x ``get_openai_client()`` uploads to ``/api/projects/{p}/openai/v1``."""
    base = "/api/projects/proj/openai/v1"
    up = ok(await client.post(f"{base}/files", files={"file": ("a.txt", b"hi")}))
    assert up["purpose"] == "assistants"
    r = await client.get(f"{base}/files/{up['id']}/content")
    assert r.status_code == 200 and r.content == b"hi"
    # the same store as every other prefix
    assert ok(await client.get(f"/v1/files/{up['id']}"))["filename"] == "a.txt"
    # the rest of the Assistants routes are not there
    assert (await client.post(f"{base}/assistants", json={"model": "m"})).status_code == 404


async def test_files_under_azure_openai_v1_prefix(
    client: httpx.AsyncClient, svc: AgentService
) -> None:
    """``AzureOpenAI``'s v1 base (``.../openai/v1``): the files routes, on the same store."""
    c, base, q = client, AZURE_OPENAI_V1_PREFIX, "?api-version=preview"
    assert base == "/openai/v1"
    up = ok(
        await c.post(
            f"{base}/files{q}",
            files={"file": ("notes.txt", b"line one\nline two\n")},
            data={"purpose": "assistants"},
        )
    )
    assert up["object"] == "file" and up["bytes"] == 18 and up["filename"] == "notes.txt"
    assert ok(await c.get(f"{base}/files/{up['id']}{q}")) == up
    r = await c.get(f"{base}/files/{up['id']}/content{q}")
    assert r.status_code == 200 and r.content == b"line one\nline two\n"
    assert r.headers["content-type"] == "application/octet-stream"
    listed = ok(await c.get(f"{base}/files{q}&purpose=assistants"))
    assert up["id"] in {f["id"] for f in listed["data"]}
    # uploaded here, seen through /openai and /v1 too
    assert ok(await c.get(f"/openai/files/{up['id']}"))["id"] == up["id"]
    assert ok(await c.get(f"/v1/files/{up['id']}"))["id"] == up["id"]
    error(await c.get(f"{base}/files/file-nope{q}"), 404)
    error(await c.post(f"{base}/files{q}", data={"purpose": "assistants"}), 400)
    # only the files routes: no assistants or threads on this base
    assert (await c.post(f"{base}/assistants{q}", json={"model": "m"})).status_code == 404
    assert (await c.post(f"{base}/threads{q}", json={})).status_code == 404

    # openai-python on that base parses every files shape
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=make_app(svc)))
    sdk = openai.AsyncOpenAI(base_url=f"http://t{base}/", api_key="k", http_client=http)
    f = await sdk.files.create(file=("b.csv", b"a,b\n1,2\n"), purpose="assistants")
    assert f.filename == "b.csv" and f.bytes == 8
    assert (await sdk.files.retrieve(f.id)).id == f.id
    assert (await sdk.files.content(f.id)).content == b"a,b\n1,2\n"
    ids = [x.id async for x in sdk.files.list()]
    assert {f.id, up["id"]} <= set(ids)
    gone = await sdk.files.delete(f.id)
    assert gone.deleted is True and gone.id == f.id
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(f.id)
    await http.aclose()
    assert ok(await c.delete(f"{base}/files/{up['id']}{q}"))["deleted"] is True
    error(await c.get(f"/v1/files/{up['id']}"), 404)


async def test_without_agents_service_routes_answer_404() -> None:
    app = FastAPI()
    install_error_handlers(app)
    AssistantsFace().install(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        err = error(await c.get("/v1/assistants"), 404)
        assert err["code"] == "AgentsDisabled"
        err = error(await c.post("/openai/v1/files", files={"file": ("a", b"x")}), 404)
        assert err["code"] == "AgentsDisabled"


async def test_run_update(client: httpx.AsyncClient) -> None:
    c = client
    asst = ok(await c.post("/v1/assistants", json={"model": HELLO}))
    tid = ok(await c.post("/v1/threads", json={}))["id"]
    run = ok(
        await c.post(
            f"/v1/threads/{tid}/runs",
            json={
                "assistant_id": asst["id"],
                "metadata": {"a": "1"},
                "tool_choice": "auto",
                "additional_messages": [{"role": "user", "content": "hi"}],
            },
        )
    )
    assert run["tool_choice"] == "auto"
    await wait_run(c, "/v1", tid, run["id"])
    same = ok(await c.post(f"/v1/threads/{tid}/runs/{run['id']}", json={}))
    assert same["metadata"] == {"a": "1"} and same["status"] == "completed"
    changed = ok(await c.post(f"/v1/threads/{tid}/runs/{run['id']}", json={"metadata": {"b": "2"}}))
    assert changed["metadata"] == {"b": "2"}
    assert ok(await c.get(f"/v1/threads/{tid}/runs/{run['id']}"))["metadata"] == {"b": "2"}
    roles = [m["role"] for m in ok(await c.get(f"/v1/threads/{tid}/messages"))["data"]]
    assert roles == ["assistant", "user"]  # the additional message, then the answer


async def test_upload_limit(engine: Engine, scripted_model: ScriptedModel, tmp_path: Path) -> None:
    small = AgentService(agents_config(scripted_model, tmp_path, max_file_bytes=8), engine)
    await small.start()
    try:
        transport = httpx.ASGITransport(app=make_app(small))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post(
                "/v1/files", files={"file": ("big.bin", b"x" * 9)}, data={"purpose": "x"}
            )
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "FileTooLarge"
            small_file = ok(await c.post("/v1/files", files={"file": ("s.bin", b"x" * 8)}))
            assert small_file["bytes"] == 8
    finally:
        await small.close()
