"""Internal objects of one Responses turn (a chart, its code call, its answer), shared by the
face's wire and stream tests."""

from __future__ import annotations

from typing import Any

from sessionpool.agents.types import (
    Annotation,
    CodeCall,
    Message,
    Run,
    RunStatus,
    Step,
    StepStatus,
    TextPart,
    ToolOutput,
    Usage,
)
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
