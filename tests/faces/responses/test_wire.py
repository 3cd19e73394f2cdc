"""The Responses face's translation, checked against openai-python's own types.

Objects are validated with the SDK's pydantic models (strictly, not the lenient ``construct``
the client uses), and the stream is fed through the SDK's accumulator
(``ResponseStreamState``), which checks ids and output indexes the way ``responses.stream()``
does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import omit
from openai._models import construct_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.container_retrieve_response import ContainerRetrieveResponse
from openai.types.containers.file_retrieve_response import FileRetrieveResponse
from openai.types.conversations.conversation import Conversation as WireConversation
from openai.types.conversations.conversation_item import ConversationItem
from openai.types.conversations.conversation_item_list import ConversationItemList
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_item_list import ResponseItemList
from pydantic import TypeAdapter

from sessionpool.agents.types import (
    Annotation,
    CodeCall,
    Container,
    Conversation,
    ImagePart,
    Message,
    MessageStatus,
    Run,
    RunError,
    RunEvent,
    RunStatus,
    Step,
    StepStatus,
    StoredFile,
    TextPart,
    ToolOutput,
    Usage,
)
from sessionpool.errors import InvalidRequest
from sessionpool.faces.responses import wire

BASE = "https://example.test/v1"
CONV = "conv_1"
CNTR = "cntr_1"
ANSWER = "Here is the chart: sandbox:/mnt/data/chart.png and the data sandbox:/mnt/data/d.csv"


def make_run(**changes: Any) -> Run:
    fields: dict[str, Any] = {
        "id": "resp_1",
        "conversation_id": CONV,
        "kind": "response",
        "status": RunStatus.COMPLETED,
        "model": "scripted-chart",
        "container_id": CNTR,
        "completed_at": 1_700_000_010,
        "created_at": 1_700_000_000,
        "usage": Usage(prompt_tokens=10, completion_tokens=5),
        "input_message_ids": ["msg_in"],
        "extra": {
            "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
            "conversation": None,
            "background": False,
        },
    }
    fields.update(changes)
    return Run(**fields)


def citations() -> list[Annotation]:
    png = ANSWER.index("sandbox:/mnt/data/chart.png")
    csv = ANSWER.index("sandbox:/mnt/data/d.csv")
    return [
        Annotation(
            text="sandbox:/mnt/data/chart.png",
            start_index=png,
            end_index=png + len("sandbox:/mnt/data/chart.png"),
            file_id="cfile_png",
            filename="chart.png",
            container_id=CNTR,
        ),
        Annotation(
            text="sandbox:/mnt/data/d.csv",
            start_index=csv,
            end_index=csv + len("sandbox:/mnt/data/d.csv"),
            file_id="cfile_csv",
            filename="d.csv",
        ),
    ]


def make_call(status: str = "completed") -> CodeCall:
    return CodeCall(
        id="call_1",
        code="print(6 * 7)",
        status=status,  # type: ignore[arg-type]
        container_id=CNTR,
        outputs=[
            ToolOutput(type="logs", logs="42\n"),
            ToolOutput(type="image", file_id="cfile_img"),
        ],
    )


def make_steps() -> list[Step]:
    return [
        Step(
            id="step_1",
            run_id="resp_1",
            conversation_id=CONV,
            type="tool_calls",
            status=StepStatus.COMPLETED,
            tool_calls=[make_call()],
        ),
        Step(
            id="step_2",
            run_id="resp_1",
            conversation_id=CONV,
            type="message_creation",
            status=StepStatus.COMPLETED,
            message_id="msg_out",
        ),
    ]


def make_answer(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "msg_out",
        "conversation_id": CONV,
        "role": "assistant",
        "run_id": "resp_1",
        "content": [TextPart(text=ANSWER, annotations=citations())],
    }
    fields.update(changes)
    return Message(**fields)


def make_question() -> Message:
    return Message(
        id="msg_in",
        conversation_id=CONV,
        role="user",
        content=[TextPart(text="bar chart please")],
        created_at=1_700_000_000,
    )


def completed_response() -> dict[str, Any]:
    run = make_run()
    return wire.response_object(
        run, wire.run_output(run, make_steps(), [make_answer()], base_url=BASE)
    )


# --- responses ----------------------------------------------------------------------------------


def test_completed_response_validates_as_the_sdk_response() -> None:
    body = completed_response()
    resp = Response.model_validate(json.loads(json.dumps(body)))
    assert resp.status == "completed"
    assert resp.object == "response"
    assert resp.error is None
    assert resp.usage is not None and resp.usage.total_tokens == 15
    call, message = resp.output
    assert call.type == "code_interpreter_call"
    assert call.code == "print(6 * 7)"
    assert call.container_id == CNTR
    assert call.outputs is not None
    assert call.outputs[0].type == "logs" and call.outputs[0].logs == "42\n"
    assert call.outputs[1].type == "image"
    assert call.outputs[1].url == f"{BASE}/containers/{CNTR}/files/cfile_img/content"
    assert message.type == "message" and message.role == "assistant"
    assert resp.output_text == ANSWER
    text = message.content[0]
    assert text.type == "output_text"
    png, csv = text.annotations
    assert png.type == "container_file_citation"
    assert (png.file_id, png.filename, png.container_id) == ("cfile_png", "chart.png", CNTR)
    assert ANSWER[png.start_index : png.end_index] == "sandbox:/mnt/data/chart.png"
    # an annotation without a container of its own takes the run's
    assert csv.type == "container_file_citation" and csv.container_id == CNTR


@pytest.mark.parametrize(
    ("internal", "wire_status"),
    [
        (RunStatus.QUEUED, "queued"),
        (RunStatus.IN_PROGRESS, "in_progress"),
        (RunStatus.CANCELLING, "in_progress"),
        (RunStatus.COMPLETED, "completed"),
        (RunStatus.FAILED, "failed"),
        (RunStatus.CANCELLED, "cancelled"),
        (RunStatus.INCOMPLETE, "incomplete"),
        (RunStatus.EXPIRED, "failed"),
    ],
)
def test_status_mapping(internal: RunStatus, wire_status: str) -> None:
    body = wire.response_object(make_run(status=internal), [])
    assert body["status"] == wire_status
    Response.model_validate(body)


def test_failed_response_carries_an_error_the_sdk_accepts() -> None:
    run = make_run(
        status=RunStatus.FAILED,
        last_error=RunError(code="max_steps_exceeded", message="too many steps"),
    )
    body = wire.response_object(run, [])
    resp = Response.model_validate(body)
    assert resp.error is not None
    assert resp.error.code == "server_error"  # the SDK's closed set
    assert resp.error.type == "max_steps_exceeded"  # the internal code is kept
    assert resp.error.message == "too many steps"
    run = make_run(
        status=RunStatus.FAILED, last_error=RunError(code="server_error", message="HTTP 500")
    )
    assert wire.response_object(run, [])["error"]["code"] == "server_error"
    expired = wire.response_object(make_run(status=RunStatus.EXPIRED), [])
    assert expired["error"]["code"] == "server_error"
    # an error left over from a run that later completed is not shown
    done = make_run(last_error=RunError(code="server_error", message="old"))
    assert wire.response_object(done, [])["error"] is None


def test_response_echoes_request_fields() -> None:
    run = make_run(
        instructions="be brief",
        metadata={"k": "v"},
        extra={
            "tools": [{"type": "code_interpreter", "container": "cntr_x"}],
            "conversation": CONV,
            "background": True,
            "previous_response_id": "resp_0",
        },
        usage=None,
        status=RunStatus.QUEUED,
    )
    body = wire.response_object(run, [])
    resp = Response.model_validate(body)
    assert resp.conversation is not None and resp.conversation.id == CONV
    assert resp.background is True
    assert resp.previous_response_id == "resp_0"
    assert resp.instructions == "be brief"
    assert resp.metadata == {"k": "v"}
    assert resp.usage is None
    assert resp.tools[0].type == "code_interpreter"
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True


def test_output_follows_steps_and_keeps_unnamed_messages() -> None:
    run = make_run()
    stray = make_answer(id="msg_stray", content=[TextPart(text="extra")])
    out = wire.run_output(run, make_steps(), [make_answer(), stray, make_question()], base_url=BASE)
    assert [item["id"] for item in out] == ["call_1", "msg_out", "msg_stray"]


def test_image_urls() -> None:
    figure = StoredFile(id="file-1", filename="call_1-0.png", bytes=4, source="assistant")
    assert wire.image_url(figure, b"\x89PNG", base_url=BASE) == "data:image/png;base64,iVBORw=="
    kept = StoredFile(id="cfile_2", filename="c.png", bytes=4, container_id=CNTR)
    assert (
        wire.image_url(kept, None, base_url=BASE)
        == f"{BASE}/containers/{CNTR}/files/cfile_2/content"
    )
    assert wire.image_file_ids(make_steps()) == ["cfile_img"]
    run = make_run()
    urls = {"cfile_img": "data:image/png;base64,AA=="}
    out = wire.run_output(run, make_steps(), [], base_url=BASE, image_urls=urls)
    assert out[0]["outputs"][1] == {"type": "image", "url": "data:image/png;base64,AA=="}


def test_code_call_uses_the_runs_container_when_the_call_has_none() -> None:
    call = CodeCall(id="call_2", code="1", status="completed")
    item = wire.code_call_item(call, container_id=CNTR, base_url=BASE)
    assert item["container_id"] == CNTR and item["outputs"] == []


# --- input --------------------------------------------------------------------------------------


def test_parse_input_string_and_items() -> None:
    assert wire.parse_input("hi").messages == [{"role": "user", "content": "hi", "attachments": []}]
    parsed = wire.parse_input(
        [
            {"role": "system", "content": "be terse"},
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "x"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "read this"},
                    {"type": "input_file", "file_id": "file_1"},
                    {"type": "input_image", "file_id": "file_2"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "item_reference", "id": "msg_x"},
        ]
    )
    assert parsed.instructions == ["be terse", "x"]
    user, assistant = parsed.messages
    assert user["role"] == "user"
    assert user["attachments"] == ["file_1"]
    assert user["content"] == [TextPart(text="read this"), ImagePart(file_id="file_2")]
    assert assistant == {"role": "assistant", "content": "ok", "attachments": []}


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ([{"type": "function_call_output", "call_id": "c", "output": "x"}], "input[0]"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "input[0].content[0]"),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], None),
        ([{"role": "tool", "content": "x"}], "input[0].role"),
        ([3], "input[0]"),
    ],
)
def test_parse_input_refuses_what_cannot_run(value: list[Any], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        wire.parse_input(value)
    if param is not None:
        assert info.value.param == param


def test_parse_tools() -> None:
    auto = wire.parse_tools(
        [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["f1"]}}]
    )
    assert auto.tools == [{"type": "code_interpreter"}]
    assert auto.auto and auto.file_ids == ["f1"] and auto.container_id is None
    explicit = wire.parse_tools([{"type": "code_interpreter", "container": "cntr_9"}])
    assert explicit.container_id == "cntr_9" and not explicit.auto
    assert wire.parse_tools(None).tools == []
    with pytest.raises(InvalidRequest) as info:
        wire.parse_tools([{"type": "web_search"}])
    assert info.value.param == "tools[0]"
    with pytest.raises(InvalidRequest):
        wire.parse_tools([{"type": "code_interpreter", "container": 5}])


def test_parse_body() -> None:
    req = wire.parse_body(
        b'{"model": "m", "input": "x", "conversation": {"id": "conv_2"}, "whatever": 1}',
        wire.ResponseCreate,
    )
    assert req.conversation_id == "conv_2"
    assert wire.parse_body(b"", wire.ResponseCreate).model is None
    with pytest.raises(InvalidRequest):
        wire.parse_body(b"{not json", wire.ResponseCreate)
    with pytest.raises(InvalidRequest):
        wire.parse_body(b"[1]", wire.ResponseCreate)
    with pytest.raises(InvalidRequest) as info:
        wire.parse_body(b'{"background": "maybe"}', wire.ResponseCreate)
    assert info.value.param == "background"
    ref = wire.parse_body(b'{"agent_reference": {"name": "A", "version": 2}}', wire.ResponseCreate)
    assert ref.agent_name == ("A", "2")
    old = wire.parse_body(b'{"agent": {"name": "A"}}', wire.ResponseCreate)
    assert old.agent_name == ("A", None)


# --- conversations ------------------------------------------------------------------------------


def test_conversation_object_and_deleted() -> None:
    conv = Conversation(id=CONV, metadata={"topic": "x"})
    WireConversation.model_validate(wire.conversation_object(conv))
    assert wire.conversation_deleted(CONV) == {
        "id": CONV,
        "object": "conversation.deleted",
        "deleted": True,
    }


def test_conversation_items_in_time_order() -> None:
    first = make_run()
    second = make_run(id="resp_2", input_message_ids=["msg_in2"], created_at=1_700_000_100)
    failed = make_run(id="resp_3", input_message_ids=["msg_in3"], created_at=1_700_000_200)
    note = Message(id="msg_note", conversation_id=CONV, role="user", content=[TextPart(text="n")])
    q2 = Message(id="msg_in2", conversation_id=CONV, role="user", content=[TextPart(text="q2")])
    a2 = make_answer(id="msg_out2", run_id="resp_2", content=[TextPart(text="a2")])
    q3 = Message(id="msg_in3", conversation_id=CONV, role="user", content=[TextPart(text="q3")])
    steps2 = [
        Step(
            id="step_3",
            run_id="resp_2",
            conversation_id=CONV,
            type="message_creation",
            message_id="msg_out2",
        )
    ]
    steps3 = [
        Step(
            id="step_4",
            run_id="resp_3",
            conversation_id=CONV,
            type="tool_calls",
            tool_calls=[CodeCall(id="call_3", code="1/0", status="failed")],
        )
    ]
    # the service lists messages oldest first; an answer is stored before the next question
    messages = [note, make_question(), make_answer(), q2, a2, q3]
    items = wire.conversation_items(
        messages,
        [second, first, failed],
        {"resp_1": make_steps(), "resp_2": steps2, "resp_3": steps3},
        base_url=BASE,
    )
    assert [i["id"] for i in items] == [
        "msg_note",
        "msg_in",
        "call_1",
        "msg_out",
        "msg_in2",
        "msg_out2",
        "msg_in3",
        "call_3",
    ]
    adapter: TypeAdapter[Any] = TypeAdapter(ConversationItem)
    for item in items:
        adapter.validate_python(item)
    assert items[1]["content"] == [{"type": "input_text", "text": "bar chart please"}]
    page, has_more = wire.paginate(items, limit=3, order="desc", after=None)
    body = wire.list_object(page, has_more)
    listed = ConversationItemList.model_validate(body)
    assert [i.id for i in listed.data] == ["call_3", "msg_in3", "msg_out2"]
    assert listed.has_more and listed.first_id == "call_3" and listed.last_id == "msg_out2"


def test_paginate() -> None:
    items = [{"id": str(i)} for i in range(5)]
    assert wire.paginate(items, limit=2, order="asc", after="1") == (
        [{"id": "2"}, {"id": "3"}],
        True,
    )
    assert wire.paginate(items, limit=10, order="desc", after="1") == ([{"id": "0"}], False)
    with pytest.raises(InvalidRequest):
        wire.paginate(items, limit=2, order="asc", after="nope")
    assert wire.list_object([], False) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_input_items_list_validates() -> None:
    body = wire.list_object([wire.message_item(make_question())], False)
    ResponseItemList.model_validate(body)


# --- containers ---------------------------------------------------------------------------------


def test_container_objects() -> None:
    container = Container(
        id=CNTR, name="mine", session_id="s1", expires_after_minutes=30, memory_limit="4g"
    )
    body = wire.container_object(container)
    parsed = ContainerRetrieveResponse.model_validate(body)
    assert parsed.status == "running"
    assert parsed.expires_after is not None and parsed.expires_after.minutes == 30
    assert parsed.memory_limit == "4g"
    f = StoredFile(
        id="cfile_1",
        filename="d.csv",
        bytes=12,
        container_id=CNTR,
        path="/mnt/data/d.csv",
        source="assistant",
    )
    fb = FileRetrieveResponse.model_validate(wire.container_file_object(f, CNTR))
    assert (fb.path, fb.bytes, fb.source, fb.container_id) == (
        "/mnt/data/d.csv",
        12,
        "assistant",
        CNTR,
    )
    assert wire.container_deleted(CNTR)["object"] == "container.deleted"


# --- streaming ----------------------------------------------------------------------------------


def feed_sdk(events: list[wire.Event]) -> tuple[ResponseStreamState[Any], list[Any]]:
    """Events -> what ``client.responses.stream()`` would make of them (SSE round trip)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    seen: list[Any] = []
    for kind, data in events:
        raw = wire.sse((kind, data)).decode()
        assert raw.startswith(f"event: {kind}\ndata: ") and raw.endswith("\n\n")
        payload = json.loads(raw.split("data: ", 1)[1])
        assert "error" not in payload  # the SDK would raise on a top-level "error" key
        event = construct_type(type_=ResponseStreamEvent, value=payload)
        seen.extend(state.handle_event(event))  # type: ignore[arg-type]
    return state, seen


def test_stream_from_fine_grained_events() -> None:
    queued = make_run(status=RunStatus.QUEUED, usage=None, completed_at=None)
    running = queued.model_copy(update={"status": RunStatus.IN_PROGRESS})
    stream = wire.ResponseStream(queued, base_url=BASE)
    step = make_steps()[0]
    in_progress_call = make_call("in_progress")
    events = stream.start()
    events += stream.feed(RunEvent(kind="run", run=running))
    events += stream.feed(
        RunEvent(kind="step", step=step.model_copy(update={"tool_calls": [in_progress_call]}))
    )
    events += stream.feed(
        RunEvent(
            kind="step", step=step.model_copy(update={"tool_calls": [make_call("interpreting")]})
        )
    )
    events += stream.feed(RunEvent(kind="step", step=step))
    draft = make_answer(status=MessageStatus.IN_PROGRESS, content=[])
    events += stream.feed(RunEvent(kind="message", message=draft))
    events += stream.feed(RunEvent(kind="text_delta", message_id="msg_out", delta=ANSWER[:10]))
    events += stream.feed(RunEvent(kind="text_delta", message_id="msg_out", delta=ANSWER[10:]))
    events += stream.feed(RunEvent(kind="message", message=make_answer()))
    events += stream.feed(RunEvent(kind="run", run=make_run()))
    events += stream.feed(RunEvent(kind="done"))
    events += stream.finish(completed_response())

    kinds = [k for k, _ in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    _, seen = feed_sdk(events)
    final = seen[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == ANSWER
    deltas = [e for e in seen if e.type == "response.output_text.delta"]
    assert deltas[-1].snapshot == ANSWER
    done = next(e for e in seen if e.type == "response.output_item.done")
    assert done.output_index == 0 and done.item.outputs[0].logs == "42\n"
    message_done = next(e for e in seen if e.type == "response.content_part.done")
    assert message_done.part.annotations[0].type == "container_file_citation"


def test_stream_from_coarse_events_is_completed_by_finish() -> None:
    """A service that reports only the run's status still gives a well-formed stream."""
    queued = make_run(status=RunStatus.QUEUED, usage=None, completed_at=None)
    stream = wire.ResponseStream(queued, base_url=BASE)
    events = stream.start()
    events += stream.feed(RunEvent(kind="run", run=make_run()))
    events += stream.finish(completed_response())
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_item.added") == 2
    assert kinds.count("response.output_item.done") == 2
    assert "response.code_interpreter_call_code.delta" in kinds
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed"
    _, seen = feed_sdk(events)
    assert seen[-1].response.output_text == ANSWER


def test_stream_of_a_failed_response() -> None:
    queued = make_run(status=RunStatus.QUEUED, usage=None, completed_at=None)
    stream = wire.ResponseStream(queued, base_url=BASE)
    failed = make_run(
        status=RunStatus.FAILED,
        completed_at=None,
        last_error=RunError(code="server_error", message="model endpoint answered 500"),
    )
    events = stream.start()
    events += stream.feed(RunEvent(kind="run", run=failed))
    events += stream.finish(wire.response_object(failed, []))
    assert [k for k, _ in events][-1] == "response.failed"
    _, seen = feed_sdk(events)
    assert seen[-1].response.error.message == "model endpoint answered 500"
    cancelled = wire.ResponseStream(queued, base_url=BASE)
    tail = cancelled.finish(wire.response_object(make_run(status=RunStatus.CANCELLED), []))
    assert tail[-1][0] == "response.incomplete"
    assert tail[-1][1]["response"]["status"] == "cancelled"
