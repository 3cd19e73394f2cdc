"""The agents service in process: real jailed sessions, a real scripted model over HTTP, SQLite.

Each test drives ``AgentService`` the way the faces do (through the default tenant's view) and
checks what a client would see:
statuses, steps, messages, annotations, files in the container and their bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessionpool import errors
from sessionpool.agents import AgentsConfig, AgentService, TenantAgents
from sessionpool.agents.service import ResponseRequest
from sessionpool.agents.types import (
    Conversation,
    ImagePart,
    PageRequest,
    Run,
    RunError,
    RunStatus,
    StepStatus,
    TextPart,
)
from sessionpool.engine import Engine
from sessionpool.tenancy import DEFAULT_TENANT
from tests.agents.scripted_model import (
    CHART_ANSWER,
    CHART_CODE,
    HELLO_ANSWER,
    PREAMBLE_ANSWER,
    PREAMBLE_TEXT,
    READ_FILE_PREFIX,
    ScriptedModel,
)

pytestmark = pytest.mark.jail

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def service(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> AsyncIterator[TenantAgents]:
    config = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model="scripted-chart",
        max_steps=3,
        model_timeout_seconds=2,
        data_dir=tmp_path,
    )
    svc = AgentService(config, engine)
    await svc.start()
    yield svc.for_tenant(DEFAULT_TENANT)
    await svc.close()


async def run_to_end(service: TenantAgents, model: str, prompt: str, **kw: object) -> Run:
    conversation = await service.create_conversation()
    await service.add_message(conversation.id, role="user", content=prompt)
    run = await service.start_run(conversation.id, model=model, **kw)  # type: ignore[arg-type]
    return await service.wait_run(run.id, timeout=60)


async def test_chart_run_records_code_figure_files_and_annotated_answer(
    service: TenantAgents,
) -> None:
    run = await run_to_end(service, "scripted-chart", "a bar chart please")
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert run.usage is not None and run.usage.total_tokens > 0
    steps = await service.run_steps(run.id)
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert all(s.status == StepStatus.COMPLETED for s in steps)
    call = steps[0].tool_calls[0]
    assert "plt" in call.code and call.container_id == run.container_id
    logs = [o.logs for o in call.outputs if o.type == "logs"]
    assert logs and "saved chart" in (logs[0] or "")
    images = [o.file_id for o in call.outputs if o.type == "image"]
    assert len(images) == 1 and images[0] is not None
    assert (await service.files.content(images[0])).startswith(PNG)

    [message] = await service.run_messages(run.id)
    assert message.role == "assistant" and steps[1].message_id == message.id
    image_part, text_part = message.content
    assert isinstance(image_part, ImagePart) and image_part.file_id == images[0]
    assert isinstance(text_part, TextPart) and text_part.text == CHART_ANSWER
    by_name = {a.filename: a for a in text_part.annotations}
    assert set(by_name) == {"chart.png", "chart_data.csv"}
    for ann in text_part.annotations:
        assert CHART_ANSWER[ann.start_index : ann.end_index] == ann.text
        assert ann.text == f"sandbox:/mnt/data/{ann.filename}"
    assert run.container_id is not None
    png = await service.containers.file_content(run.container_id, by_name["chart.png"].file_id)
    assert png.startswith(PNG)
    csv = await service.files.content(by_name["chart_data.csv"].file_id)
    assert b"Company B,2.5" in csv
    generated = await service.files.page(PageRequest(limit=100), purpose="assistants_output")
    assert {by_name["chart.png"].file_id, images[0]} <= {f.id for f in generated.items}


async def test_uploaded_file_is_read_by_the_code(service: TenantAgents) -> None:
    upload = await service.files.create(filename="profits.csv", data=b"company,profit\nX,7\nY,35\n")
    conversation = await service.create_conversation()
    await service.add_message(
        conversation.id, role="user", content="sum it", attachments=[upload.id]
    )
    run = await service.start_run(conversation.id, model="scripted-read_file")
    run = await service.wait_run(run.id, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.last_error
    [message] = await service.run_messages(run.id)
    assert message.text.startswith(READ_FILE_PREFIX)
    assert "X,7" in message.text and "42" in message.text  # the code read the uploaded bytes
    # staged once: a second run does not copy it again
    files = await service.containers.all_files(str(run.container_id))
    assert [f.filename for f in files if f.origin_id == upload.id] == ["profits.csv"]


async def test_variables_persist_across_runs_of_a_conversation(
    service: TenantAgents, scripted_model: ScriptedModel
) -> None:
    conversation = await service.create_conversation()
    await service.add_message(conversation.id, role="user", content="hi")
    first = await service.start_run(conversation.id, model="scripted-chart")
    first = await service.wait_run(first.id, timeout=60)
    assert first.container_id
    container = await service.containers.get(first.container_id)
    session = await service.containers.session_for(container)
    assert (await session.execute("companies")).result is not None  # the run's variable
    await service.add_message(conversation.id, role="user", content="hello again")
    second = await service.start_run(conversation.id, model="scripted-hello")
    second = await service.wait_run(second.id, timeout=60)
    assert second.status == RunStatus.COMPLETED and second.container_id == first.container_id
    [answer] = await service.run_messages(second.id)
    assert answer.text == HELLO_ANSWER
    # the model saw the first turn's code and its output, in order, before the new question
    sent = next(
        r["messages"]
        for r in reversed(scripted_model.requests)
        if r["messages"][-1].get("content") == "hello again"
    )
    roles = [m["role"] for m in sent]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {"code": CHART_CODE}
    assert "saved chart" in sent[3]["content"]
    assert sent[3]["tool_call_id"] == sent[2]["tool_calls"][0]["id"]
    assert sent[4]["content"] == CHART_ANSWER
    page = await service.list_messages(conversation.id, PageRequest())
    assert [m.role for m in page.items] == ["assistant", "user", "assistant", "user"]


async def test_model_error_fails_the_run_with_last_error(service: TenantAgents) -> None:
    run = await run_to_end(service, "scripted-error", "x")
    assert run.status == RunStatus.FAILED and run.failed_at is not None
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "HTTP 500" in run.last_error.message and "scripted failure" in run.last_error.message


async def test_model_that_never_stops_hits_the_step_limit(service: TenantAgents) -> None:
    run = await run_to_end(service, "scripted-loop", "x")
    assert run.status == RunStatus.FAILED
    assert run.last_error == RunError(code="max_steps_exceeded", message=run.last_error.message)
    steps = await service.run_steps(run.id)
    assert len(steps) == 3 and all(s.type == "tool_calls" for s in steps)


async def test_model_that_never_answers_times_out(service: TenantAgents) -> None:
    run = await run_to_end(service, "scripted-hang", "x")
    assert run.status == RunStatus.FAILED and run.last_error is not None
    assert "did not answer within 2 s" in run.last_error.message


async def test_cancel_interrupts_running_code(service: TenantAgents) -> None:
    conversation = await service.create_conversation()
    await service.add_message(conversation.id, role="user", content="wait")
    run = await service.start_run(conversation.id, model="scripted-slow")
    for _ in range(200):  # until the code is running
        steps = await service.run_steps(run.id)
        if steps and steps[0].tool_calls[0].status == "interpreting":
            break
        await asyncio.sleep(0.05)
    with pytest.raises(errors.Conflict):
        await service.add_message(conversation.id, role="user", content="more")
    cancelling = await service.cancel_run(run.id)
    assert cancelling.status == RunStatus.CANCELLING
    done = await service.wait_run(run.id, timeout=10)
    assert done.status == RunStatus.CANCELLED and done.cancelled_at is not None
    [step] = await service.run_steps(run.id)
    assert step.status == StepStatus.CANCELLED
    # the interpreter was interrupted, not left sleeping: the container answers at once
    container = await service.containers.get(str(done.container_id))
    session = await service.containers.session_for(container)
    result = await session.execute("1 + 1", timeout=5)
    assert result.result is not None and result.result.data["text/plain"] == "2"


async def test_events_stream_the_whole_run(service: TenantAgents) -> None:
    conversation = await service.create_conversation()
    await service.add_message(conversation.id, role="user", content="chart")
    run = await service.start_run(conversation.id, model="scripted-chart")
    kinds, statuses = [], []
    async for event in service.events.subscribe(run.id):
        kinds.append(event.kind)
        if event.run is not None:
            statuses.append(event.run.status)
    assert kinds[-1] == "done" and "text_delta" in kinds and "step" in kinds
    assert statuses[0] == RunStatus.QUEUED and statuses[-1] == RunStatus.COMPLETED
    assert RunStatus.IN_PROGRESS in statuses
    # a late subscriber gets the replay
    replay = [e.kind async for e in service.events.subscribe(run.id)]
    assert replay == kinds


async def test_container_files_come_back_after_the_session_cooled_down(
    service: TenantAgents,
) -> None:
    run = await run_to_end(service, "scripted-chart", "chart")
    container = await service.containers.get(str(run.container_id))
    assert await service.engine.pool("default").delete(container.session_id)
    session = await service.containers.session_for(container)
    assert (await session.read_file("chart_data.csv")).startswith(b"company,")


async def test_runs_left_in_flight_are_failed_on_restart(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> None:
    config = AgentsConfig(model_base_url=scripted_model.url, data_dir=tmp_path)
    first = AgentService(config, engine)
    await first.start()
    conversation = await first.for_tenant(DEFAULT_TENANT).create_conversation()
    mine = Run(id="run_stale", conversation_id=conversation.id, model="m", owner=first.owner)
    # a run of another server sharing the database: not this server's to declare dead
    theirs = Run(id="run_theirs", conversation_id=conversation.id, model="m", owner="elsewhere")
    for run in (mine, theirs):
        await first.for_tenant(DEFAULT_TENANT).records.insert(run, conversation.id, "run")
    await first.close()
    restarted = AgentService(dataclasses.replace(config), engine)
    await restarted.start()
    second = restarted.for_tenant(DEFAULT_TENANT)
    try:
        stale = await second.get_run("run_stale")
        assert stale.status == RunStatus.FAILED and stale.last_error is not None
        assert "restarted" in stale.last_error.message
        assert (await second.get_run("run_theirs")).status == RunStatus.QUEUED
        assert (await second.get_conversation(conversation.id)).id == conversation.id
    finally:
        await restarted.close()


async def test_unknown_ids_and_bad_input_raise_the_right_errors(service: TenantAgents) -> None:
    with pytest.raises(errors.ObjectNotFound, match="thread_nope"):
        await service.start_run("thread_nope")
    conversation = await service.create_conversation()
    with pytest.raises(errors.ObjectNotFound):
        await service.start_run(conversation.id, agent_id="asst_nope")
    with pytest.raises(errors.ObjectNotFound):
        await service.create_agent(model="m", file_ids=["file-nope"])
    with pytest.raises(errors.InvalidArgument):
        await service.add_message(conversation.id, role="system", content="x")
    with pytest.raises(errors.InvalidArgument):
        await service.list_agents(PageRequest(limit=0))
    with pytest.raises(errors.InvalidArgument):
        await service.files.create(filename="..", data=b"x")


async def test_no_model_configured_fails_with_a_clear_error(engine: Engine, tmp_path: Path) -> None:
    service = AgentService(AgentsConfig(data_dir=tmp_path), engine)
    await service.start()
    svc = service.for_tenant(DEFAULT_TENANT)
    try:
        agent = await svc.create_agent(model=None)
        conversation = await svc.create_conversation()
        run = await svc.start_run(conversation.id, agent_id=agent.id)
        run = await svc.wait_run(run.id, timeout=30)
        assert run.status == RunStatus.FAILED and run.last_error is not None
        assert "default_model" in run.last_error.message
    finally:
        await service.close()


async def test_delete_run_removes_it_and_its_steps_but_not_its_messages(
    service: TenantAgents,
) -> None:
    run = await run_to_end(service, "scripted-chart", "chart")
    [message] = await service.run_messages(run.id)
    await service.delete_run(run.id)
    with pytest.raises(errors.ObjectNotFound):
        await service.get_run(run.id)
    assert await service.run_steps(run.id) == []
    assert (await service.get_message(run.conversation_id, message.id)).id == message.id


def said(text: str) -> dict[str, Any]:
    """A user message as ``ResponseRequest.messages`` takes it."""
    return {"role": "user", "content": text, "attachments": []}


async def test_responses_continue_their_conversation_and_copy_auto_container_files_once(
    service: TenantAgents,
) -> None:
    upload = await service.files.create(filename="in.csv", data=b"a\n1\n")
    turn = ResponseRequest(
        messages=[said("hi")], model="scripted-hello", container_file_ids=[upload.id]
    )
    first = await service.wait_run((await service.start_response(turn)).id, timeout=60)
    assert first.status == RunStatus.COMPLETED and first.kind == "response"
    # code of the first turn rewrote the input: the next turn must not copy it in again
    container = await service.containers.get(str(first.container_id))
    await service.containers.put_file(
        container, path="/mnt/data/in.csv", data=b"rewritten", source="assistant"
    )
    again = dataclasses.replace(turn, previous_response_id=first.id)
    second = await service.wait_run((await service.start_response(again)).id, timeout=60)
    assert second.status == RunStatus.COMPLETED
    assert (second.conversation_id, second.container_id) == (
        first.conversation_id,
        first.container_id,
    )
    [copy] = await service.containers.all_files(str(first.container_id))
    assert copy.origin_id == upload.id
    assert await service.containers.file_content(container.id, copy.id) == b"rewritten"
    messages = await service.all_messages(first.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert second.input_message_ids == [messages[2].id]


async def test_a_response_that_cannot_start_leaves_nothing_behind(service: TenantAgents) -> None:
    doomed = ResponseRequest(messages=[said("one"), said("two")], agent_id="asst_nope")
    with pytest.raises(errors.ObjectNotFound, match="asst_nope"):
        await service.start_response(doomed)
    assert await service.records.all(Conversation) == []  # the one made for it is gone
    conversation = await service.create_conversation()
    with pytest.raises(errors.ObjectNotFound, match="asst_nope"):
        await service.start_response(dataclasses.replace(doomed, conversation_id=conversation.id))
    assert await service.all_messages(conversation.id) == []  # the client's conversation stays
    assert (await service.get_conversation(conversation.id)).id == conversation.id
    run = await run_to_end(service, "scripted-hello", "an Assistants run, not a response")
    with pytest.raises(errors.ObjectNotFound, match="response"):
        await service.start_response(ResponseRequest(previous_response_id=run.id))
    with pytest.raises(errors.InvalidArgument, match="not both"):
        await service.start_response(
            ResponseRequest(conversation_id=conversation.id, previous_response_id=run.id)
        )


async def test_a_conversation_stored_with_its_flags_in_extra_keeps_their_meaning(
    service: TenantAgents,
) -> None:
    """Earlier versions kept auto_container and a conversation's instructions in ``extra``."""
    chosen = await service.containers.create(name="chosen by the client")
    made = await service.containers.create(name="made for the conversation")
    for cid, container, auto in (("thread_chose", chosen, False), ("thread_made", made, True)):
        extra = {"auto_container": auto, "instructions": ["Answer briefly."], "hidden": True}
        body = {"id": cid, "created_at": 1, "container_id": container.id, "extra": extra}
        service.records.store.insert("conversation", cid, 1, body, tenant=DEFAULT_TENANT)
    old = await service.get_conversation("thread_chose")
    assert (old.auto_container, old.instructions, old.extra) == (
        False,
        ["Answer briefly."],
        {"hidden": True},
    )
    turn = ResponseRequest(
        messages=[said("hi")],
        conversation_id="thread_chose",
        model="scripted-hello",
        instructions="Be kind.",
    )
    run = await service.wait_run((await service.start_response(turn)).id, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert (run.instructions, run.container_id) == ("Be kind.\n\nAnswer briefly.", chosen.id)
    await service.delete_conversation("thread_chose")
    assert (await service.containers.get(chosen.id)).id == chosen.id  # the client's: it stays
    await service.delete_conversation("thread_made")
    with pytest.raises(errors.ObjectNotFound):
        await service.containers.get(made.id)


async def test_a_turn_without_code_takes_no_session(service: TenantAgents) -> None:
    upload = await service.files.create(filename="in.csv", data=b"a,b\n1,2\n")
    conversation = await service.create_conversation(file_ids=[upload.id])
    await service.add_message(conversation.id, role="user", content="hi")
    run = await service.start_run(conversation.id, model="scripted-hello")
    run = await service.wait_run(run.id, timeout=30)
    assert run.status == RunStatus.COMPLETED and run.container_id
    container = await service.containers.get(run.container_id)
    assert service.engine.pool("default").get(container.session_id) is None
    # the input was staged all the same, and reaches the session once code runs
    [staged] = await service.containers.all_files(container.id)
    assert staged.origin_id == upload.id
    session = await service.containers.session_for(container)
    assert await session.read_file("in.csv") == b"a,b\n1,2\n"


async def test_answers_stream_piece_by_piece(service: TenantAgents) -> None:
    conversation = await service.create_conversation()
    await service.add_message(conversation.id, role="user", content="chart")
    run = await service.start_run(conversation.id, model="scripted-chart")
    events = [e async for e in service.events.subscribe(run.id)]
    deltas = [e for e in events if e.kind == "text_delta"]
    assert len(deltas) > 3  # the scripted model streams 16 characters at a time
    assert "".join(d.delta or "" for d in deltas) == CHART_ANSWER
    first = events.index(deltas[0])
    created = [e for e in events[:first] if e.kind == "message" and e.message is not None]
    assert created and created[-1].message is not None
    assert created[-1].message.id == deltas[0].message_id  # the message exists first
    [message] = await service.run_messages(run.id)
    assert message.text == CHART_ANSWER and len(message.content[-1].annotations) == 2  # type: ignore[union-attr]


async def test_text_before_code_is_a_message_of_its_own(
    service: TenantAgents, scripted_model: ScriptedModel
) -> None:
    run = await run_to_end(service, "scripted-preamble", "what is 6 times 7?")
    assert run.status == RunStatus.COMPLETED, run.last_error
    steps = await service.run_steps(run.id)
    assert [s.type for s in steps] == ["message_creation", "tool_calls", "message_creation"]
    first, final = await service.run_messages(run.id)
    assert first.text == PREAMBLE_TEXT and final.text == PREAMBLE_ANSWER
    assert [steps[0].message_id, steps[2].message_id] == [first.id, final.id]
    # the next turn shows the model its earlier turn in order: text, code, output, answer
    await service.add_message(run.conversation_id, role="user", content="thanks")
    second = await service.start_run(run.conversation_id, model="scripted-hello")
    await service.wait_run(second.id, timeout=30)
    sent = scripted_model.requests[-1]["messages"]
    assert [m["role"] for m in sent] == [
        "system",
        "user",
        "assistant",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert sent[2]["content"] == PREAMBLE_TEXT and sent[5]["content"] == PREAMBLE_ANSWER
    assert "42" in sent[4]["content"]


async def test_a_model_that_cannot_stream_is_asked_without(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> None:
    config = AgentsConfig(model_base_url=scripted_model.url, model_stream=False, data_dir=tmp_path)
    service = AgentService(config, engine)
    await service.start()
    svc = service.for_tenant(DEFAULT_TENANT)
    try:
        conversation = await svc.create_conversation()
        await svc.add_message(conversation.id, role="user", content="chart")
        run = await svc.start_run(conversation.id, model="scripted-chart")
        deltas = [e.delta async for e in svc.events.subscribe(run.id) if e.kind == "text_delta"]
        assert deltas == [CHART_ANSWER]
        assert "stream" not in scripted_model.requests[-1]
        assert (await svc.get_run(run.id)).status == RunStatus.COMPLETED
    finally:
        await service.close()
