"""A run's events -> the Responses stream, fed through openai-python's own accumulator
(``ResponseStreamState``), which checks ids and output indexes the way ``responses.stream()``
does."""

from __future__ import annotations

import json
from typing import Any

from openai import omit
from openai._models import construct_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from sessionpool.agents.types import (
    CodeCall,
    MessageStatus,
    RunError,
    RunEvent,
    RunStatus,
    ShellOutput,
)
from sessionpool.faces.responses import stream, wire
from tests.faces.responses.objects import (
    ANSWER,
    BASE,
    CNTR,
    completed_response,
    make_answer,
    make_call,
    make_run,
    make_steps,
)

# --- streaming ----------------------------------------------------------------------------------


def feed_sdk(events: list[stream.Event]) -> tuple[ResponseStreamState[Any], list[Any]]:
    """Events -> what ``client.responses.stream()`` would make of them (SSE round trip)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    seen: list[Any] = []
    for kind, data in events:
        raw = stream.sse((kind, data)).decode()
        assert raw.startswith(f"event: {kind}\ndata: ") and raw.endswith("\n\n")
        payload = json.loads(raw.split("data: ", 1)[1])
        assert "error" not in payload  # the SDK would raise on a top-level "error" key
        event = construct_type(type_=ResponseStreamEvent, value=payload)
        seen.extend(state.handle_event(event))  # type: ignore[arg-type]
    return state, seen


def test_stream_from_fine_grained_events() -> None:
    queued = make_run(status=RunStatus.QUEUED, usage=None, completed_at=None)
    running = queued.model_copy(update={"status": RunStatus.IN_PROGRESS})
    machine = stream.ResponseStream(queued, base_url=BASE)
    step = make_steps()[0]
    in_progress_call = make_call("in_progress")
    events = machine.start()
    events += machine.feed(RunEvent(kind="run", run=running))
    events += machine.feed(
        RunEvent(kind="step", step=step.model_copy(update={"tool_calls": [in_progress_call]}))
    )
    events += machine.feed(
        RunEvent(
            kind="step", step=step.model_copy(update={"tool_calls": [make_call("interpreting")]})
        )
    )
    events += machine.feed(RunEvent(kind="step", step=step))
    draft = make_answer(status=MessageStatus.IN_PROGRESS, content=[])
    events += machine.feed(RunEvent(kind="message", message=draft))
    events += machine.feed(RunEvent(kind="text_delta", message_id="msg_out", delta=ANSWER[:10]))
    events += machine.feed(RunEvent(kind="text_delta", message_id="msg_out", delta=ANSWER[10:]))
    events += machine.feed(RunEvent(kind="message", message=make_answer()))
    events += machine.feed(RunEvent(kind="run", run=make_run()))
    events += machine.feed(RunEvent(kind="done"))
    events += machine.finish(completed_response())

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
    machine = stream.ResponseStream(queued, base_url=BASE)
    events = machine.start()
    events += machine.feed(RunEvent(kind="run", run=make_run()))
    events += machine.finish(completed_response())
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
    machine = stream.ResponseStream(queued, base_url=BASE)
    failed = make_run(
        status=RunStatus.FAILED,
        completed_at=None,
        last_error=RunError(code="server_error", message="model endpoint answered 500"),
    )
    events = machine.start()
    events += machine.feed(RunEvent(kind="run", run=failed))
    events += machine.finish(wire.response_object(failed, []))
    assert [k for k, _ in events][-1] == "response.failed"
    _, seen = feed_sdk(events)
    assert seen[-1].response.error.message == "model endpoint answered 500"
    cancelled = stream.ResponseStream(queued, base_url=BASE)
    tail = cancelled.finish(wire.response_object(make_run(status=RunStatus.CANCELLED), []))
    assert tail[-1][0] == "response.incomplete"
    assert tail[-1][1]["response"]["status"] == "cancelled"


def test_shell_call_before_a_code_call_in_one_step_keeps_output_order() -> None:
    """A shell call's two items take adjacent output indexes from the start, so a code call
    announced in the same step comes after both, as in the final output."""
    shell = CodeCall(
        id="call_sh1",
        kind="shell",
        code="echo hi\nexit 3",
        commands=["echo hi", "exit 3"],
        container_id=CNTR,
    )
    done_shell = shell.model_copy(
        update={
            "status": "completed",
            "shell_outputs": [
                ShellOutput(stdout="hi\n", exit_code=0),
                ShellOutput(stderr="oops\n", exit_code=3),
            ],
        }
    )
    (step, answer_step) = make_steps()
    step = step.model_copy(update={"tool_calls": [done_shell, make_call()]})
    running = make_run(status=RunStatus.IN_PROGRESS, usage=None, completed_at=None)
    machine = stream.ResponseStream(running, base_url=BASE)
    events = machine.start()
    announced = [shell, make_call("in_progress")]
    first = step.model_copy(update={"tool_calls": announced})
    events += machine.feed(RunEvent(kind="step", step=first))
    events += machine.feed(RunEvent(kind="step", step=step))
    events += machine.feed(RunEvent(kind="message", message=make_answer()))
    run = make_run()
    final = wire.response_object(
        run, wire.run_output(run, [step, answer_step], [make_answer()], base_url=BASE)
    )
    assert [i["type"] for i in final["output"]] == [
        "shell_call",
        "shell_call_output",
        "code_interpreter_call",
        "message",
    ]
    events += machine.finish(final)
    _, seen = feed_sdk(events)
    response = seen[-1].response
    assert [i.type for i in response.output] == [i["type"] for i in final["output"]]
    added = [(e.output_index, e.item.type) for e in seen if e.type == "response.output_item.added"]
    assert added == [
        (0, "shell_call"),
        (1, "shell_call_output"),
        (2, "code_interpreter_call"),
        (3, "message"),
    ]
    pieces = [e for e in seen if e.type == "response.shell_call_output_content.done"]
    assert [(e.output_index, e.command_index) for e in pieces] == [(1, 0), (1, 1)]
    result = response.output[1]
    assert [(o.stdout, o.stderr, o.outcome.exit_code) for o in result.output] == [
        ("hi\n", "", 0),
        ("", "oops\n", 3),
    ]
    assert result.call_id == response.output[0].call_id == "call_sh1"
