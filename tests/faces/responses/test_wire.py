"""The Responses face's objects, checked against openai-python's own types: validated with the
SDK's pydantic models (strictly, not the lenient ``construct`` the client uses)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.container_retrieve_response import ContainerRetrieveResponse
from openai.types.containers.file_retrieve_response import FileRetrieveResponse
from openai.types.conversations.conversation import Conversation as WireConversation
from openai.types.conversations.conversation_item import ConversationItem
from openai.types.conversations.conversation_item_list import ConversationItemList
from openai.types.responses import Response
from openai.types.responses.response_item_list import ResponseItemList
from pydantic import TypeAdapter

from sessionpool.agents.types import (
    CodeCall,
    Container,
    Conversation,
    Message,
    RunError,
    RunStatus,
    Step,
    StoredFile,
    TextPart,
)
from sessionpool.errors import InvalidArgument
from sessionpool.faces.responses import wire
from tests.faces.responses.objects import (
    ANSWER,
    BASE,
    CNTR,
    CONV,
    completed_response,
    make_answer,
    make_question,
    make_run,
    make_steps,
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
    with pytest.raises(InvalidArgument):
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
