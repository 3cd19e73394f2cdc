"""The agents faces in process, on the fake backend, driven by the scripted model: a turn's
code runs in a fake session and its output, files and answer come back through the wire.

The jail-marked suites (tests/clients/test_agents_*.py) run the real client libraries against a
real server; these check the faces and the agent loop in seconds, without root.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.agents.config import AgentsConfig
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
