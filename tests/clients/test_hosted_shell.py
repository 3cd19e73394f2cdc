"""The Responses API's hosted ``shell`` tool (``openai`` 3.54.0, unmodified) against a real
server with jailed sessions: the model's shell calls run as shell commands in the container's
session, the code interpreter's, and come back as ``shell_call`` / ``shell_call_output`` items
and stream events of the shapes openai's types define. The scripted model's ``shell`` script
runs ``SHELL_COMMANDS`` (a file in /mnt/data, then stderr and exit code 3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import (
    ResponseFunctionShellToolCall,
    ResponseFunctionShellToolCallOutput,
)

from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import SHELL_ANSWER, SHELL_COMMANDS
from tests.clients.test_agents_responses import items_of, make_client

pytestmark = pytest.mark.jail

SHELL: Any = {"type": "shell", "environment": {"type": "container_auto"}}
CODE: Any = {"type": "code_interpreter", "container": {"type": "auto"}}
OUTPUTS = [("42\n", "", 0), ("", "to stderr\n", 3)]


@pytest.fixture
def client(agents_server: AgentsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[openai.OpenAI]:
    monkeypatch.setenv("SSL_CERT_FILE", str(agents_server.ca_bundle))
    with make_client(agents_server) as c:
        yield c


def outputs_of(item: ResponseFunctionShellToolCallOutput) -> list[tuple[str, str, int | None]]:
    return [
        (o.stdout, o.stderr, o.outcome.exit_code if o.outcome.type == "exit" else None)
        for o in item.output
    ]


def test_shell_calls_run_in_the_code_interpreters_session(client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    resp = client.responses.create(
        model="scripted-shell", tools=[SHELL], input="run them", conversation=conv.id
    )
    assert resp.status == "completed", resp.error
    assert [i.type for i in resp.output] == ["shell_call", "shell_call_output", "message"]
    call, result = resp.output[0], resp.output[1]
    assert isinstance(call, ResponseFunctionShellToolCall)
    assert isinstance(result, ResponseFunctionShellToolCallOutput)
    assert call.action.commands == SHELL_COMMANDS and call.status == "completed"
    assert result.call_id == call.call_id and result.status == "completed"
    assert outputs_of(result) == OUTPUTS
    assert resp.output_text.startswith(SHELL_ANSWER) and "[exit code 3]" in resp.output_text
    assert call.environment is not None and call.environment.type == "container_reference"
    container_id = call.environment.container_id
    # the file the shell wrote is a container file, and python sees it in the same session
    paths = [f.path for f in client.containers.files.list(container_id).data]
    assert "/mnt/data/answer.txt" in paths
    again = client.responses.create(
        model="scripted-echo",
        tools=[CODE, SHELL],
        conversation=conv.id,
        input="print(open('/mnt/data/answer.txt').read().strip() * 2)",
    )
    assert again.status == "completed", again.error
    (cell,) = items_of(again, "code_interpreter_call")
    assert cell.container_id == container_id
    assert "4242" in again.output_text
    # the conversation lists both items, typed, in order
    items = client.conversations.items.list(conv.id, order="asc").data
    kinds = [i.type for i in items]
    assert kinds[:4] == ["message", "shell_call", "shell_call_output", "message"], kinds
    listed = items[2]
    assert isinstance(listed, ResponseFunctionShellToolCallOutput)
    assert outputs_of(listed) == OUTPUTS


def test_shell_events_stream(client: openai.OpenAI) -> None:
    with client.responses.stream(model="scripted-shell", tools=[SHELL], input="run") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    for kind in (
        "response.shell_call_command.added",
        "response.shell_call_command.delta",
        "response.shell_call_command.done",
        "response.shell_call_output_content.delta",
        "response.shell_call_output_content.done",
    ):
        assert kind in kinds, kind
    commands = [e.command for e in events if e.type == "response.shell_call_command.done"]
    assert commands == SHELL_COMMANDS
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [e.item.type for e in done] == ["shell_call", "shell_call_output", "message"]
    assert [e.output_index for e in done] == [0, 1, 2]
    pieces = [e for e in events if e.type == "response.shell_call_output_content.done"]
    assert [(p.command_index, p.output[0].stdout) for p in pieces] == [(0, "42\n"), (1, "")]
    result = final.output[1]
    assert isinstance(result, ResponseFunctionShellToolCallOutput)
    assert outputs_of(result) == OUTPUTS


def test_shell_in_a_referenced_container(client: openai.OpenAI) -> None:
    container = client.containers.create(name="for the shell")
    try:
        resp = client.responses.create(
            model="scripted-shell",
            tools=[
                {
                    "type": "shell",
                    "environment": {"type": "container_reference", "container_id": container.id},
                }
            ],
            input="run",
        )
        assert resp.status == "completed", resp.error
        call = resp.output[0]
        assert isinstance(call, ResponseFunctionShellToolCall)
        assert call.environment is not None and call.environment.type == "container_reference"
        assert call.environment.container_id == container.id
        paths = [f.path for f in client.containers.files.list(container.id).data]
        assert paths == ["/mnt/data/answer.txt"]
    finally:
        client.containers.delete(container.id)


def test_shell_refusals(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(
            model="scripted-shell",
            tools=[{"type": "shell", "environment": {"type": "local"}}],
            input="run",
        )
    assert "local shell environment" in str(exc.value)
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(
            model="scripted-shell",
            tools=[
                {"type": "code_interpreter", "container": "cntr_a"},
                {"type": "shell", "environment": {"type": "container_auto"}},
            ],
            input="run",
        )
    assert "the tools must share one container" in str(exc.value)
