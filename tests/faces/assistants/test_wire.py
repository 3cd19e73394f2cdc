"""The Assistants v2 translation: internal agents types -> the JSON the SDKs parse (pure)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sessionpool.agents.types import (
    Agent,
    Annotation,
    CodeCall,
    Conversation,
    ImagePart,
    Message,
    MessageStatus,
    Page,
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
from sessionpool.errors import InvalidArgument
from sessionpool.faces.assistants import parse, wire
from sessionpool.faces.assistants.stream import EventTranslator, run_stream

T0 = 1_795_266_653

ASSISTANT_KEYS = {
    "id", "object", "created_at", "name", "description", "model", "instructions", "tools",
    "tool_resources", "temperature", "top_p", "response_format", "metadata",
}  # fmt: skip
MESSAGE_KEYS = {
    "id", "object", "created_at", "thread_id", "status", "incomplete_details", "completed_at",
    "incomplete_at", "role", "content", "assistant_id", "run_id", "attachments", "metadata",
}  # fmt: skip
RUN_KEYS = {
    "id", "object", "thread_id", "assistant_id", "status", "required_action", "last_error",
    "model", "instructions", "tools", "created_at", "expires_at", "started_at", "completed_at",
    "cancelled_at", "failed_at", "incomplete_details", "usage", "temperature", "top_p",
    "max_prompt_tokens", "max_completion_tokens", "truncation_strategy", "tool_choice",
    "response_format", "parallel_tool_calls", "metadata", "tool_resources",
}  # fmt: skip
STEP_KEYS = {
    "id", "object", "type", "assistant_id", "thread_id", "run_id", "status", "step_details",
    "last_error", "created_at", "expired_at", "completed_at", "cancelled_at", "failed_at",
    "usage", "metadata",
}  # fmt: skip
FILE_KEYS = {
    "id", "object", "bytes", "filename", "created_at", "purpose", "status", "status_details",
}  # fmt: skip


def roundtrip(data: Any) -> Any:
    """What the client receives: the JSON text parsed back (proves it is serialisable)."""
    return json.loads(json.dumps(data))


def make_run(**kw: Any) -> Run:
    fields: dict[str, Any] = {
        "id": "run_1",
        "conversation_id": "thread_1",
        "agent_id": "asst_1",
        "model": "gpt-4o-mini",
        "created_at": T0,
    }
    fields.update(kw)
    return Run(**fields)


def answer_message(**kw: Any) -> Message:
    text = "Here is the chart. Data: [chart_data.csv](sandbox:/mnt/data/chart_data.csv)."
    start = text.index("sandbox:")
    end = start + len("sandbox:/mnt/data/chart_data.csv")
    fields: dict[str, Any] = {
        "id": "msg_2",
        "conversation_id": "thread_1",
        "role": "assistant",
        "created_at": T0 + 2,
        "completed_at": T0 + 2,
        "agent_id": "asst_1",
        "run_id": "run_1",
        "content": [
            ImagePart(file_id="file_png"),
            TextPart(
                text=text,
                annotations=[
                    Annotation(
                        text=text[start:end],
                        start_index=start,
                        end_index=end,
                        file_id="file_csv",
                        filename="/mnt/data/chart_data.csv",
                    )
                ],
            ),
        ],
    }
    fields.update(kw)
    return Message(**fields)


# --- objects ------------------------------------------------------------------------------------


def test_assistant_every_field_and_tool_resources() -> None:
    agent = Agent(
        id="asst_1",
        created_at=T0,
        model="gpt-4o-mini",
        name="my-agent",
        instructions="You are helpful agent",
        tools=[{"type": "code_interpreter"}],
        file_ids=["file_a", "file_b"],
    )
    data = roundtrip(wire.assistant(agent))
    assert set(data) == ASSISTANT_KEYS
    assert data["object"] == "assistant"
    assert data["created_at"] == T0 and isinstance(data["created_at"], int)
    assert data["tools"] == [{"type": "code_interpreter"}]
    assert data["tool_resources"] == {"code_interpreter": {"file_ids": ["file_a", "file_b"]}}
    assert data["description"] is None and data["temperature"] is None
    assert data["metadata"] == {}
    assert data["response_format"] == "auto"


def test_assistant_without_files_has_empty_tool_resources() -> None:
    agent = Agent(id="asst_1", model="m", extra={"tool_resources": {"file_search": {"x": 1}}})
    assert wire.assistant(agent)["tool_resources"] == {"file_search": {"x": 1}}
    assert wire.assistant(Agent(id="asst_2", model="m"))["tool_resources"] == {}


def test_thread() -> None:
    conv = Conversation(id="thread_1", created_at=T0, metadata={"k": "v"})
    data = roundtrip(wire.thread(conv))
    assert data == {
        "id": "thread_1",
        "object": "thread",
        "created_at": T0,
        "tool_resources": {},
        "metadata": {"k": "v"},
    }
    conv = Conversation(id="thread_2", file_ids=["file_a"])
    assert wire.thread(conv)["tool_resources"] == {"code_interpreter": {"file_ids": ["file_a"]}}


def test_user_message_annotations_always_a_list() -> None:
    msg = Message(
        id="msg_1",
        conversation_id="thread_1",
        role="user",
        content=[TextPart(text="hi")],
        attachments=["file_a"],
        created_at=T0,
    )
    data = roundtrip(wire.message(msg))
    assert set(data) == MESSAGE_KEYS
    assert data["object"] == "thread.message"
    assert data["thread_id"] == "thread_1"
    assert data["content"] == [{"type": "text", "text": {"value": "hi", "annotations": []}}]
    assert data["attachments"] == [{"file_id": "file_a", "tools": [{"type": "code_interpreter"}]}]
    assert data["assistant_id"] is None and data["run_id"] is None
    assert data["status"] == "completed"
    assert data["incomplete_details"] is None


def test_assistant_message_image_and_file_path_annotation() -> None:
    data = roundtrip(wire.message(answer_message()))
    image, text = data["content"]
    assert image == {"type": "image_file", "image_file": {"file_id": "file_png"}}
    assert text["type"] == "text"
    [ann] = text["text"]["annotations"]
    assert ann["type"] == "file_path"
    assert ann["file_path"] == {"file_id": "file_csv"}
    value = text["text"]["value"]
    assert value[ann["start_index"] : ann["end_index"]] == ann["text"]
    assert ann["text"] == "sandbox:/mnt/data/chart_data.csv"
    assert data["assistant_id"] == "asst_1" and data["run_id"] == "run_1"


def test_incomplete_message() -> None:
    msg = answer_message(status=MessageStatus.INCOMPLETE)
    data = wire.message(msg)
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "run_cancelled"}
    assert data["completed_at"] is None and data["incomplete_at"] == T0 + 2


def test_run_queued_every_field_defaults() -> None:
    data = roundtrip(wire.run(make_run()))
    assert set(data) == RUN_KEYS
    assert data["object"] == "thread.run"
    assert data["status"] == "queued"
    assert data["thread_id"] == "thread_1" and data["assistant_id"] == "asst_1"
    assert data["usage"] is None
    assert data["last_error"] is None and data["required_action"] is None
    assert data["truncation_strategy"] == {"type": "auto", "last_messages": None}
    assert data["tool_choice"] == "auto"
    assert data["parallel_tool_calls"] is True
    assert data["response_format"] == "auto"
    assert data["instructions"] == ""
    assert data["tool_resources"] == {}


def test_run_completed_has_usage() -> None:
    run = make_run(
        status=RunStatus.COMPLETED,
        started_at=T0,
        completed_at=T0 + 2,
        usage=Usage(prompt_tokens=200, completion_tokens=100),
    )
    data = wire.run(run)
    assert data["usage"] == {"prompt_tokens": 200, "completion_tokens": 100, "total_tokens": 300}
    assert data["completed_at"] == T0 + 2
    # terminal without counted usage: zeros, not null
    data = wire.run(make_run(status=RunStatus.CANCELLED, cancelled_at=T0 + 1))
    assert data["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert data["status"] == "cancelled" and data["cancelled_at"] == T0 + 1


def test_run_failed_last_error_and_extra() -> None:
    run = make_run(
        status=RunStatus.FAILED,
        failed_at=T0 + 1,
        last_error=RunError(code="max_steps_exceeded", message="4 model round trips"),
        extra={"tool_choice": "required", "truncation_strategy": {"type": "last_messages"}},
        temperature=0.5,
    )
    data = wire.run(run)
    assert data["last_error"] == {"code": "max_steps_exceeded", "message": "4 model round trips"}
    assert data["tool_choice"] == "required"
    assert data["truncation_strategy"] == {"type": "last_messages"}
    assert data["temperature"] == 0.5


def test_tool_calls_step() -> None:
    step = Step(
        id="step_1",
        run_id="run_1",
        conversation_id="thread_1",
        agent_id="asst_1",
        type="tool_calls",
        status=StepStatus.COMPLETED,
        completed_at=T0 + 1,
        created_at=T0,
        tool_calls=[
            CodeCall(
                id="call_1",
                code="print(1)",
                outputs=[
                    ToolOutput(type="logs", logs="1\n"),
                    ToolOutput(type="image", file_id="file_png"),
                ],
            )
        ],
        usage=Usage(prompt_tokens=3, completion_tokens=4),
    )
    data = roundtrip(wire.step(step))
    assert set(data) == STEP_KEYS
    assert data["object"] == "thread.run.step"
    assert data["type"] == "tool_calls" and data["status"] == "completed"
    assert data["step_details"] == {
        "type": "tool_calls",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "code_interpreter",
                "code_interpreter": {
                    "input": "print(1)",
                    "outputs": [
                        {"type": "logs", "logs": "1\n"},
                        {"type": "image", "image": {"file_id": "file_png"}},
                    ],
                },
            }
        ],
    }
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert data["thread_id"] == "thread_1" and data["assistant_id"] == "asst_1"


def test_message_creation_step() -> None:
    step = Step(
        id="step_2",
        run_id="run_1",
        conversation_id="thread_1",
        type="message_creation",
        message_id="msg_2",
    )
    data = wire.step(step)
    assert data["step_details"] == {
        "type": "message_creation",
        "message_creation": {"message_id": "msg_2"},
    }
    assert data["status"] == "in_progress" and data["usage"] is None


def test_file_objects() -> None:
    upload = StoredFile(id="file_a", filename="profits.csv", bytes=27, created_at=T0)
    data = roundtrip(wire.file(upload))
    assert set(data) == FILE_KEYS
    assert data["purpose"] == "assistants" and data["status"] == "processed"
    assert data["status_details"] is None
    out = StoredFile(
        id="file_b",
        filename="/mnt/data/chart.png",
        bytes=70,
        purpose="assistants_output",
        source="assistant",
        path="/mnt/data/chart.png",
    )
    data = wire.file(out)
    assert data["purpose"] == "assistants_output"
    assert data["filename"] == "/mnt/data/chart.png"


@pytest.mark.parametrize(
    "kind", ["assistant.deleted", "thread.deleted", "thread.message.deleted", "file"]
)
def test_deleted(kind: str) -> None:
    assert wire.deleted("x_1", kind) == {"id": "x_1", "object": kind, "deleted": True}


def test_list_envelope() -> None:
    conv = Conversation(id="thread_1")
    page = Page[Conversation](items=[conv, Conversation(id="thread_2")], has_more=True)
    data = wire.page(page, wire.thread)
    assert data["object"] == "list"
    assert [d["id"] for d in data["data"]] == ["thread_1", "thread_2"]
    assert data["first_id"] == "thread_1" and data["last_id"] == "thread_2"
    assert data["has_more"] is True


def test_empty_page_has_null_cursors() -> None:
    data = roundtrip(wire.page(Page[Message](items=[], has_more=False), wire.message))
    assert data == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


# --- requests -----------------------------------------------------------------------------------


def test_message_content_string_or_parts() -> None:
    assert parse.message_content("hi") == "hi"
    parts = parse.message_content(
        [
            {"type": "text", "text": "a"},
            {"type": "text", "text": {"value": "b", "annotations": []}},
            {"type": "image_file", "image_file": {"file_id": "file_x"}},
        ]
    )
    assert parts == [TextPart(text="a"), TextPart(text="b"), ImagePart(file_id="file_x")]
    for bad in (None, 3, [], [{"type": "image_url", "image_url": {"url": "x"}}], [{"type": "x"}]):
        with pytest.raises(InvalidArgument):
            parse.message_content(bad)


def test_attachments_and_tool_resources() -> None:
    atts = [{"file_id": "file_a", "tools": [{"type": "code_interpreter"}]}, {"file_id": "file_b"}]
    assert parse.attachments(atts) == ["file_a", "file_b"]
    assert parse.attachments(None) == []
    with pytest.raises(InvalidArgument):
        parse.attachments([{"tools": []}])
    assert parse.code_interpreter_file_ids({}) is None
    assert parse.code_interpreter_file_ids(None) is None
    assert parse.code_interpreter_file_ids({"code_interpreter": {"file_ids": ["f"]}}) == ["f"]
    with pytest.raises(InvalidArgument):
        parse.code_interpreter_file_ids({"code_interpreter": {"file_ids": "f"}})
    assert parse.other_tool_resources({"code_interpreter": {}, "file_search": {"v": 1}}) == {
        "file_search": {"v": 1}
    }


def test_new_messages() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "hi", "attachments": [{"file_id": "f"}]},
            {"content": [{"type": "text", "text": "x"}], "metadata": {"a": "b"}},
        ]
    }
    assert parse.new_messages(body, "messages") == [
        {"role": "user", "content": "hi", "attachments": ["f"], "metadata": {}},
        {
            "role": "user",
            "content": [TextPart(text="x")],
            "attachments": [],
            "metadata": {"a": "b"},
        },
    ]
    with pytest.raises(InvalidArgument):
        parse.new_messages({"messages": [{"role": "system", "content": "x"}]}, "messages")


def test_scalar_params() -> None:
    assert parse.opt_number({"t": 1}, "t") == 1.0
    with pytest.raises(InvalidArgument):
        parse.opt_number({"t": "1"}, "t")
    with pytest.raises(InvalidArgument):
        parse.opt_number({"t": True}, "t")
    with pytest.raises(InvalidArgument):
        parse.opt_metadata({"metadata": {"a": 1}})
    with pytest.raises(InvalidArgument):
        parse.opt_tools({"tools": [{"name": "x"}]})
    assert parse.opt_bool({}, "stream") is None


def frames(raw: list[bytes]) -> list[tuple[str, Any]]:
    out = []
    for frame in raw:
        text = frame.decode()
        assert text.endswith("\n\n")
        event_line, data_line = text.strip("\n").split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = data_line[len("data: ") :]
        out.append((event_line[len("event: ") :], data if data == "[DONE]" else json.loads(data)))
    return out


def test_stream_sequence_with_deltas() -> None:
    tr = EventTranslator()
    run = make_run()
    out = frames(tr.start(run))
    assert [e for e, _ in out] == ["thread.run.created", "thread.run.queued"]

    running = make_run(status=RunStatus.IN_PROGRESS, started_at=T0)
    step = Step(id="step_1", run_id="run_1", conversation_id="thread_1", type="tool_calls")
    call = CodeCall(id="call_1", code="print(1)")
    running_step = step.model_copy(update={"tool_calls": [call]})
    outputs = [ToolOutput(type="logs", logs="1\n"), ToolOutput(type="image", file_id="file_png")]
    done_step = step.model_copy(
        update={
            "status": StepStatus.COMPLETED,
            "tool_calls": [call.model_copy(update={"outputs": outputs})],
        }
    )
    msg = answer_message(status=MessageStatus.IN_PROGRESS, content=[], completed_at=None)
    final = answer_message()
    texts = [p for p in final.content if isinstance(p, TextPart)]
    head = texts[0].text[:10]
    events = [
        RunEvent(kind="run", run=running),
        RunEvent(kind="run", run=running),  # repeated status: sent once
        RunEvent(kind="step", step=step),
        RunEvent(kind="step", step=running_step),
        RunEvent(kind="step", step=running_step),  # nothing new: nothing sent
        RunEvent(kind="step", step=done_step),
        RunEvent(kind="message", message=msg),
        RunEvent(kind="text_delta", message_id="msg_2", delta=head),
        RunEvent(kind="message", message=final),
        RunEvent(kind="run", run=make_run(status=RunStatus.COMPLETED, completed_at=T0 + 3)),
    ]
    for ev in events:
        out += frames(tr.translate(ev))
    out += frames(tr.finish(None))
    names = [e for e, _ in out]
    assert names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.step.delta",
        "thread.run.step.completed",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.completed",
        "done",
    ]
    assert out[3][1]["step_details"] == {"type": "tool_calls", "tool_calls": []}
    call_delta, outputs_delta = out[5][1], out[6][1]
    assert call_delta == {
        "id": "step_1",
        "object": "thread.run.step.delta",
        "delta": {
            "step_details": {
                "type": "tool_calls",
                "tool_calls": [
                    {
                        "index": 0,
                        "type": "code_interpreter",
                        "id": "call_1",
                        "code_interpreter": {"input": "print(1)", "outputs": []},
                    }
                ],
            }
        },
    }
    assert outputs_delta["delta"]["step_details"]["tool_calls"] == [
        {
            "index": 0,
            "type": "code_interpreter",
            "code_interpreter": {
                "outputs": [
                    {"index": 0, "type": "logs", "logs": "1\n"},
                    {"index": 1, "type": "image", "image": {"file_id": "file_png"}},
                ]
            },
        }
    ]
    assert out[7][1]["step_details"]["tool_calls"][0]["code_interpreter"]["input"] == "print(1)"
    created = out[8][1]
    assert created["content"] == [] and created["status"] == "in_progress"
    d1, d2 = out[10][1], out[11][1]
    assert d1["object"] == "thread.message.delta" and d1["id"] == "msg_2"
    assert d1["delta"]["content"] == [
        {"index": 0, "type": "text", "text": {"value": head, "annotations": []}}
    ]
    assert head + d2["delta"]["content"][0]["text"]["value"] == texts[0].text
    assert out[12][1]["content"] == wire.message(final)["content"]
    assert out[13][1]["usage"] is not None
    assert out[-1] == ("done", "[DONE]")


def test_stream_message_without_deltas_is_one_delta() -> None:
    tr = EventTranslator()
    final = answer_message()
    out = frames(tr.translate(RunEvent(kind="message", message=final)))
    assert [e for e, _ in out] == [
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.completed",
    ]
    parts = out[2][1]["delta"]["content"]
    assert [p["index"] for p in parts] == [0, 1]
    assert parts[0] == {"index": 0, "type": "image_file", "image_file": {"file_id": "file_png"}}
    assert parts[1]["text"]["annotations"][0]["file_path"] == {"file_id": "file_csv"}


def test_stream_finish_sends_missed_terminal_run_once() -> None:
    tr = EventTranslator()
    tr.start(make_run())
    failed = make_run(
        status=RunStatus.FAILED, last_error=RunError(code="server_error", message="boom")
    )
    out = frames(tr.finish(failed))
    assert [e for e, _ in out] == ["thread.run.failed", "done"]
    assert out[0][1]["last_error"]["code"] == "server_error"
    # once terminal, later run events are dropped
    assert tr.translate(RunEvent(kind="run", run=failed)) == []


async def test_run_stream_reports_a_broken_event_source_in_band() -> None:
    async def broken() -> AsyncIterator[RunEvent]:
        yield RunEvent(kind="run", run=make_run(status=RunStatus.IN_PROGRESS))
        raise RuntimeError("boom")

    async def final() -> Run:
        raise AssertionError("not needed")

    prelude = [b"event: thread.created\ndata: {}\n\n"]
    out = frames([f async for f in run_stream(make_run(), broken(), final, prelude)])
    names = [e for e, _ in out]
    assert names == [
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "error",
        "done",
    ]
    assert out[4][1]["error"]["code"] == "server_error"


async def test_run_stream_closes_with_the_final_run_when_events_end_early() -> None:
    async def short() -> AsyncIterator[RunEvent]:
        yield RunEvent(kind="done")

    async def final() -> Run:
        return make_run(status=RunStatus.EXPIRED)

    out = frames([f async for f in run_stream(make_run(), short(), final)])
    assert [e for e, _ in out] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.expired",
        "done",
    ]
