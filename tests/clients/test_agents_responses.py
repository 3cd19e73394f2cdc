"""openai-python 3.54.0, unmodified, against the Responses, Conversations and Containers face.

A real server over TLS (``agents_server``), its model a scripted chat-completions server
(``scripted_model``): the model name picks the script (``scripted-chart`` draws a bar chart and
links its files, ``scripted-read_file`` prints the first CSV under /mnt/data, ...). The client
trusts the server's CA through ``SSL_CERT_FILE`` (httpx2 reads it; docs/agents.md).
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import PREAMBLE_ANSWER, PREAMBLE_CODE, PREAMBLE_TEXT

pytestmark = pytest.mark.jail

CHART_TOOL: Any = {"type": "code_interpreter", "container": {"type": "auto"}}
CSV = b"company,operating_profit\nNorthwind,3.5\nContoso,4.25\n"
TERMINAL = ("completed", "failed", "cancelled", "incomplete")


def make_client(server: AgentsServer, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + prefix, api_key=server.api_key, max_retries=0, timeout=120
    )


@pytest.fixture
def client(agents_server: AgentsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[openai.OpenAI]:
    monkeypatch.setenv("SSL_CERT_FILE", str(agents_server.ca_bundle))
    with make_client(agents_server) as c:
        yield c


def raw(server: AgentsServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers=server.auth,
        verify=ssl.create_default_context(cafile=str(server.ca_bundle)),
        timeout=60,
    )


def poll(client: openai.OpenAI, response_id: str, timeout: float = 90) -> Response:
    deadline = time.monotonic() + timeout
    while True:
        resp = client.responses.retrieve(response_id)
        if resp.status in TERMINAL or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def items_of(resp: Response, kind: str) -> list[Any]:
    return [item for item in resp.output if item.type == kind]


def citations(resp: Response) -> dict[str, Any]:
    (message,) = items_of(resp, "message")
    out = {}
    for part in message.content:
        assert part.type == "output_text"
        for ann in part.annotations:
            assert ann.type == "container_file_citation"
            assert part.text[ann.start_index : ann.end_index].endswith(ann.filename)
            out[ann.filename] = ann
    return out


# --- responses ----------------------------------------------------------------------------------


def test_chart_response_with_files_to_download(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model="scripted-chart", tools=[CHART_TOOL], input="bar chart please"
    )
    assert resp.status == "completed", resp.error
    assert resp.object == "response" and resp.error is None
    assert resp.model == "scripted-chart"
    (call,) = items_of(resp, "code_interpreter_call")
    assert "savefig" in (call.code or "")
    assert call.status == "completed"
    assert call.container_id.startswith("cntr_")
    assert call.outputs is not None
    logs = "".join(o.logs for o in call.outputs if o.type == "logs")
    assert "saved chart" in logs
    images = [o for o in call.outputs if o.type == "image"]
    assert images  # the figure left open, inline
    assert base64.b64decode(images[0].url.split("base64,", 1)[1]).startswith(b"\x89PNG")
    assert "sandbox:/mnt/data/chart.png" in resp.output_text
    cited = citations(resp)
    assert set(cited) >= {"chart.png", "chart_data.csv"}
    for ann in cited.values():
        assert ann.container_id == call.container_id
    png = client.containers.files.content.retrieve(
        cited["chart.png"].file_id, container_id=call.container_id
    )
    assert png.read().startswith(b"\x89PNG")
    csv = client.containers.files.content.retrieve(
        cited["chart_data.csv"].file_id, container_id=call.container_id
    ).read()
    assert b"Company A" in csv
    meta = client.containers.files.retrieve(
        cited["chart.png"].file_id, container_id=call.container_id
    )
    assert meta.path == "/mnt/data/chart.png" and meta.bytes > 100
    assert meta.source == "assistant"
    # the stored response reads back the same; its input is the user message
    again = client.responses.retrieve(resp.id)
    assert [i.id for i in again.output] == [i.id for i in resp.output]
    inputs = client.responses.input_items.list(resp.id)
    assert [i.type for i in inputs.data] == ["message"]
    assert inputs.data[0].content[0].text == "bar chart please"  # type: ignore[union-attr]


def test_background_response_is_polled(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model="scripted-chart", tools=[CHART_TOOL], input="bar chart please", background=True
    )
    assert resp.status in ("queued", "in_progress")
    assert resp.background is True
    done = poll(client, resp.id)
    assert done.status == "completed"
    assert items_of(done, "code_interpreter_call")
    assert "chart.png" in citations(done)


def test_streaming_events_parse(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="scripted-chart", tools=[CHART_TOOL], input="bar chart please"
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    for kind in (
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.completed",
    ):
        assert kind in kinds, kind
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert final.status == "completed"
    assert "sandbox:/mnt/data/chart.png" in final.output_text
    code = "".join(e.delta for e in events if e.type == "response.code_interpreter_call_code.delta")
    assert "savefig" in code
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text


def test_background_stream_is_resumed(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model="scripted-chart", tools=[CHART_TOOL], input="bar chart please", background=True
    )
    events = list(client.responses.retrieve(resp.id, stream=True))
    assert events[0].type == "response.created" and events[0].sequence_number == 0
    assert events[-1].type == "response.completed"
    assert events[-1].response.id == resp.id
    later = list(client.responses.retrieve(resp.id, stream=True, starting_after=3))
    assert later[0].sequence_number == 4
    assert [e.type for e in later] == [e.type for e in events][4:]


def test_streaming_with_create(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="scripted-hello", input="hi", stream=True)
    kinds = [event.type for event in stream]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds


def test_previous_response_id_keeps_the_container(client: openai.OpenAI) -> None:
    first = client.responses.create(model="scripted-chart", tools=[CHART_TOOL], input="chart")
    assert first.status == "completed"
    second = client.responses.create(
        model="scripted-read_file",
        tools=[CHART_TOOL],
        input="what does the csv say?",
        previous_response_id=first.id,
    )
    assert second.status == "completed", second.error
    assert second.previous_response_id == first.id
    assert "Company A" in second.output_text
    (c1,) = items_of(first, "code_interpreter_call")
    (c2,) = items_of(second, "code_interpreter_call")
    assert c1.container_id == c2.container_id


# --- conversations ------------------------------------------------------------------------------


def test_conversation_shares_state_and_lists_items(client: openai.OpenAI) -> None:
    conv = client.conversations.create(
        metadata={"topic": "profits"},
        items=[{"type": "message", "role": "user", "content": "context: profits in billions"}],
    )
    assert conv.object == "conversation" and conv.metadata == {"topic": "profits"}
    first = client.responses.create(
        model="scripted-chart", tools=[CHART_TOOL], input="bar chart please", conversation=conv.id
    )
    assert first.status == "completed"
    assert first.conversation is not None and first.conversation.id == conv.id
    second = client.responses.create(
        model="scripted-read_file",
        tools=[CHART_TOOL],
        input="read the csv back",
        conversation=conv.id,
    )
    assert second.status == "completed", second.error
    assert "Company A" in second.output_text  # the first turn's file, same container
    items = client.conversations.items.list(conv.id, order="asc")
    kinds = [(i.type, getattr(i, "role", None)) for i in items.data]
    assert kinds == [
        ("message", "user"),
        ("message", "user"),
        ("code_interpreter_call", None),
        ("message", "assistant"),
        ("message", "user"),
        ("code_interpreter_call", None),
        ("message", "assistant"),
    ]
    newest = client.conversations.items.list(conv.id, limit=2)
    assert [i.id for i in newest.data] == [i.id for i in items.data][::-1][:2]
    assert newest.has_more
    page2 = client.conversations.items.list(conv.id, limit=2, after=newest.data[-1].id)
    assert page2.data[0].id == items.data[-3].id
    one = client.conversations.items.retrieve(items.data[2].id, conversation_id=conv.id)
    assert one.type == "code_interpreter_call"
    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "thanks"}]
    )
    assert added.data[0].type == "message"
    client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert len(client.conversations.items.list(conv.id, limit=50).data) == len(items.data)
    updated = client.conversations.update(conv.id, metadata={"topic": "done"})
    assert updated.metadata == {"topic": "done"}
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "done"}
    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted and deleted.id == conv.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


# --- containers ---------------------------------------------------------------------------------


def test_containers_crud_and_upload_read_by_code(client: openai.OpenAI) -> None:
    container = client.containers.create(
        name="sales", expires_after={"anchor": "last_active_at", "minutes": 10}
    )
    assert container.id.startswith("cntr_") and container.status == "running"
    assert container.name == "sales"
    assert container.expires_after is not None and container.expires_after.minutes == 10
    assert client.containers.retrieve(container.id).id == container.id
    assert container.id in [c.id for c in client.containers.list(limit=100).data]

    uploaded = client.containers.files.create(container.id, file=("sales.csv", CSV, "text/csv"))
    assert uploaded.object == "container.file"
    assert uploaded.path == "/mnt/data/sales.csv" and uploaded.bytes == len(CSV)
    listed = client.containers.files.list(container.id)
    assert uploaded.id in [f.id for f in listed.data]
    body = client.containers.files.content.retrieve(uploaded.id, container_id=container.id)
    assert body.read() == CSV

    resp = client.responses.create(
        model="scripted-read_file",
        tools=[{"type": "code_interpreter", "container": container.id}],
        input="what is in the file?",
    )
    assert resp.status == "completed", resp.error
    assert "Northwind" in resp.output_text
    (call,) = items_of(resp, "code_interpreter_call")
    assert call.container_id == container.id

    client.containers.files.delete(uploaded.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(uploaded.id, container_id=container.id)
    client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(container.id)


def test_uploaded_file_in_an_auto_container(client: openai.OpenAI) -> None:
    f = client.files.create(file=("inputs.csv", CSV), purpose="assistants")
    resp = client.responses.create(
        model="scripted-read_file",
        tools=[{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [f.id]}}],
        input="read it",
    )
    assert resp.status == "completed", resp.error
    assert "Contoso" in resp.output_text
    container = client.containers.create(name="by id", file_ids=[f.id])
    names = [x.path for x in client.containers.files.list(container.id).data]
    assert names == ["/mnt/data/inputs.csv"]
    copied = client.containers.files.create(container.id, file_id=f.id)
    assert copied.path == "/mnt/data/inputs.csv"
    client.containers.delete(container.id)


# --- the Foundry prefix -------------------------------------------------------------------------


def test_foundry_prefix(agents_server: AgentsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(agents_server.ca_bundle))
    with make_client(agents_server, "/api/projects/p/openai/v1") as client:
        conv = client.conversations.create()
        resp = client.responses.create(
            model="scripted-chart",
            tools=[CHART_TOOL],
            input="bar chart please",
            conversation=conv.id,
            extra_query={"api-version": "v1"},
        )
        assert resp.status == "completed", resp.error
        (call,) = items_of(resp, "code_interpreter_call")
        png = citations(resp)["chart.png"]
        data = client.containers.files.content.retrieve(png.file_id, container_id=call.container_id)
        assert data.read().startswith(b"\x89PNG")
        assert call.outputs is not None
        image = next(o for o in call.outputs if o.type == "image")
        assert image.url.startswith("data:image/png;base64,")


def test_azure_openai_v1_base(agents_server: AgentsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Azure OpenAI's v1 base (``.../openai/v1``): responses and containers from this face, and
    ``files`` from the Assistants face, which serves ``/openai/v1/files`` too."""
    monkeypatch.setenv("SSL_CERT_FILE", str(agents_server.ca_bundle))
    with openai.OpenAI(
        base_url=agents_server.url + "/openai/v1",
        api_key=agents_server.api_key,
        max_retries=0,
        timeout=120,
    ) as client:
        f = client.files.create(file=("inputs.csv", CSV), purpose="assistants")
        assert f.filename == "inputs.csv" and f.bytes == len(CSV)
        resp = client.responses.create(
            model="scripted-read_file",
            tools=[{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [f.id]}}],
            input="read it",
        )
        assert resp.status == "completed", resp.error
        assert "Contoso" in resp.output_text
        chart = client.responses.create(
            model="scripted-chart", tools=[CHART_TOOL], input="bar chart please"
        )
        assert chart.status == "completed", chart.error
        (call,) = items_of(chart, "code_interpreter_call")
        png = citations(chart)["chart.png"]
        data = client.containers.files.content.retrieve(png.file_id, container_id=call.container_id)
        assert data.read().startswith(b"\x89PNG")
        client.files.delete(f.id)


def test_foundry_agent_reference(
    agents_server: AgentsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(agents_server.ca_bundle))
    with raw(agents_server) as http:
        made = http.post(
            "/api/projects/p/agents/ChartAgent/versions",
            params={"api-version": "v1"},
            json={
                "definition": {
                    "kind": "prompt",
                    "model": "scripted-chart",
                    "instructions": "You are a helpful assistant.",
                    "tools": [CHART_TOOL],
                },
                "description": "ci agent",
            },
        )
        assert made.status_code == 200, made.text
        version = made.json()
        assert version["object"] == "agent.version" and version["id"].startswith("ChartAgent:")
    with make_client(agents_server, "/api/projects/p/openai/v1") as client:
        conv = client.conversations.create()
        resp = client.responses.create(
            conversation=conv.id,
            input="bar chart please",
            extra_body={"agent_reference": {"name": "ChartAgent", "type": "agent_reference"}},
        )
        assert resp.status == "completed", resp.error
        assert resp.model == "scripted-chart"
        assert "chart.png" in citations(resp)
    with raw(agents_server) as http:
        gone = http.delete(f"/api/projects/p/agents/ChartAgent/versions/{version['version']}")
        assert gone.status_code == 200 and gone.json()["deleted"] is True


# --- deletion -----------------------------------------------------------------------------------


def test_delete_a_response(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="scripted-hello", input="hi")
    assert resp.status == "completed", resp.error
    assert client.responses.delete(resp.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_nope")


def test_delete_answers_the_deleted_object(agents_server: AgentsServer) -> None:
    with raw(agents_server) as http:
        made = http.post("/v1/responses", json={"model": "scripted-hello", "input": "hi"})
        assert made.status_code == 200, made.text
        rid = made.json()["id"]
        gone = http.delete(f"/v1/responses/{rid}")
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"id": rid, "object": "response", "deleted": True}
        assert http.get(f"/v1/responses/{rid}").status_code == 404


# --- failures -----------------------------------------------------------------------------------


def test_model_error_fails_the_response(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="scripted-error", input="hi")
    assert resp.status == "failed"
    assert resp.error is not None and resp.error.message


def test_cancel_a_background_response(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model="scripted-slow", tools=[CHART_TOOL], input="wait", background=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the slow cell runs
        current = client.responses.retrieve(resp.id)
        if items_of(current, "code_interpreter_call"):
            break
        time.sleep(0.2)
    started = time.monotonic()
    cancelled = client.responses.cancel(resp.id)
    assert cancelled.status == "cancelled"
    assert time.monotonic() - started < 20
    assert client.responses.retrieve(resp.id).status == "cancelled"


def test_unknown_objects_are_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve("cntr_nope")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="scripted-hello",
            tools=[{"type": "code_interpreter", "container": "cntr_nope"}],
            input="hi",
        )
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nope")
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_nope")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="scripted-hello", input="hi", conversation="conv_nope")


def test_bad_requests_are_400(agents_server: AgentsServer) -> None:
    with raw(agents_server) as http:
        bad = http.post(
            "/v1/responses", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["message"]
        tool = http.post(
            "/v1/responses",
            json={"model": "scripted-hello", "input": "x", "tools": [{"type": "web_search"}]},
        )
        assert tool.status_code == 400
        both = http.post(
            "/v1/responses",
            json={"input": "x", "conversation": "conv_a", "previous_response_id": "resp_b"},
        )
        assert both.status_code == 400


FOUNDRY_SCRIPT = """
import io, json, os
from azure.core.credentials import AccessToken
from azure.ai.projects import AIProjectClient
from azure.ai.projects.models import (
    AutoCodeInterpreterToolParam, CodeInterpreterTool, PromptAgentDefinition,
)

class StaticToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(os.environ["SP_TOKEN"], 2**31 - 1)

with AIProjectClient(endpoint=os.environ["SP_ENDPOINT"], credential=StaticToken()) as project:
    client = project.get_openai_client()
    upload = client.files.create(
        purpose="assistants", file=("v2.csv", io.BytesIO(b"company,profit\\nA,1.2\\nB,2.5\\n"))
    )
    agent = project.agents.create_version(
        agent_name="FoundryReader",
        definition=PromptAgentDefinition(
            model="scripted-read_file",
            instructions="You are a helpful assistant.",
            tools=[CodeInterpreterTool(container=AutoCodeInterpreterToolParam(file_ids=[upload.id]))],
        ),
        description="ci agent",
    )
    ref = {"agent_reference": {"name": agent.name, "type": "agent_reference"}}
    conv = client.conversations.create()
    first = client.responses.create(conversation=conv.id, input="read my file", extra_body=ref)
    # the same agent and conversation, another script: the chart, its files cited
    second = client.responses.create(
        conversation=conv.id, input="bar chart please", model="scripted-chart", extra_body=ref
    )
    out = {"agent": agent.id, "version": agent.version, "base_url": str(client.base_url),
           "status": [first.status, second.status], "first_text": first.output_text,
           "files": {}}
    for item in second.output:
        if item.type != "message":
            continue
        for part in item.content:
            for ann in part.annotations:
                if ann.type == "container_file_citation":
                    data = client.containers.files.content.retrieve(
                        file_id=ann.file_id, container_id=ann.container_id
                    ).read()
                    out["files"][ann.filename] = data[:4].hex()
    project.agents.delete_version(agent_name=agent.name, agent_version=agent.version)
    print(json.dumps(out))
"""


def test_foundry_sdk_code_interpreter_flow(agents_server: AgentsServer, tmp_path: Any) -> None:
    """azure-ai-projects 2.x as in its code-interpreter-with-files sample:
    a file upload, an agent version whose auto container holds it, ``get_openai_client()``, a
    conversation, responses by ``agent_reference``, cited files downloaded from the container."""
    script = tmp_path / "foundry.py"
    script.write_text(FOUNDRY_SCRIPT)
    env = agents_server.client_env()
    env["SP_ENDPOINT"] = agents_server.url + "/api/projects/my-project"
    env["SP_TOKEN"] = agents_server.api_key
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["base_url"].endswith("/api/projects/my-project/openai/v1/")
    assert out["agent"] == f"FoundryReader:{out['version']}"
    assert out["status"] == ["completed", "completed"]
    assert "A,1.2" in out["first_text"]
    assert out["files"]["chart.png"] == b"\x89PNG".hex()
    assert "chart_data.csv" in out["files"]


def test_text_streams_as_written_and_text_before_code_is_its_own_item(
    client: openai.OpenAI,
) -> None:
    """A model that writes a sentence, then asks for code, then answers: the output holds a
    message, the code call and the answer, in that order, and the stream carries the text in
    pieces as the model wrote it (the scripted model streams 16 characters at a time)."""
    with client.responses.stream(
        model="scripted-preamble", tools=[CHART_TOOL], input="what is 6 times 7?"
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.status == "completed"
    assert [item.type for item in final.output] == ["message", "code_interpreter_call", "message"]
    first, call, answer = final.output
    assert first.content[0].text == PREAMBLE_TEXT  # type: ignore[union-attr]
    assert answer.content[0].text == PREAMBLE_ANSWER  # type: ignore[union-attr]
    assert call.code == PREAMBLE_CODE  # type: ignore[union-attr]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3
    by_item: dict[str, str] = {}
    for e in deltas:
        by_item[e.item_id] = by_item.get(e.item_id, "") + e.delta
    assert by_item == {first.id: PREAMBLE_TEXT, answer.id: PREAMBLE_ANSWER}
    assert final.output_text.endswith(PREAMBLE_ANSWER)
