"""Internal agents types -> Assistants v2 JSON: the object shapes the clients read.

Pure functions: no I/O, no service. Every object carries every field its schema names, ``null``
when unset, so strict generated clients (Azure's, OpenAI's) find what they look for; timestamps
are integer Unix seconds; ``text.annotations`` is always a list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

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
    RunStatus,
    Step,
    StoredFile,
    TextPart,
    ToolOutput,
    Usage,
)
from sessionpool.faces.http import JSON

T = TypeVar("T")

#: the tools list an attachment gets when the caller named none
CODE_INTERPRETER_TOOLS: list[JSON] = [{"type": "code_interpreter"}]


# --- building blocks ----------------------------------------------------------------------------


def tool_resources(file_ids: Sequence[str], extra: Any = None) -> JSON:
    """``{}`` or ``{"code_interpreter": {"file_ids": [...]}}``, plus other resources verbatim."""
    out: JSON = {}
    if isinstance(extra, dict):
        for key, value in extra.items():
            if key != "code_interpreter":
                out[key] = value
    if file_ids:
        out["code_interpreter"] = {"file_ids": list(file_ids)}
    return out


def usage(value: Usage | None) -> JSON | None:
    if value is None:
        return None
    return {
        "prompt_tokens": value.prompt_tokens,
        "completion_tokens": value.completion_tokens,
        "total_tokens": value.total_tokens,
    }


def last_error(value: RunError | None) -> JSON | None:
    if value is None:
        return None
    return {"code": value.code, "message": value.message}


def annotation(value: Annotation) -> JSON:
    return {
        "type": "file_path",
        "text": value.text,
        "start_index": value.start_index,
        "end_index": value.end_index,
        "file_path": {"file_id": value.file_id},
    }


def content_part(part: TextPart | ImagePart) -> JSON:
    if isinstance(part, TextPart):
        return {
            "type": "text",
            "text": {
                "value": part.text,
                "annotations": [annotation(a) for a in part.annotations],
            },
        }
    return {"type": "image_file", "image_file": {"file_id": part.file_id}}


def tool_output(value: ToolOutput) -> JSON:
    if value.type == "image":
        return {"type": "image", "image": {"file_id": value.file_id}}
    return {"type": "logs", "logs": value.logs or ""}


def code_call(call: CodeCall) -> JSON:
    return {
        "id": call.id,
        "type": "code_interpreter",
        "code_interpreter": {
            "input": call.code,
            "outputs": [tool_output(o) for o in call.outputs],
        },
    }


# --- objects ------------------------------------------------------------------------------------


def assistant(agent: Agent) -> JSON:
    return {
        "id": agent.id,
        "object": "assistant",
        "created_at": agent.created_at,
        "name": agent.name,
        "description": agent.description,
        "model": agent.model,
        "instructions": agent.instructions,
        "tools": list(agent.tools),
        "tool_resources": tool_resources(agent.file_ids, agent.extra.get("tool_resources")),
        "temperature": agent.temperature,
        "top_p": agent.top_p,
        "response_format": agent.response_format if agent.response_format is not None else "auto",
        "metadata": dict(agent.metadata),
    }


def thread(conversation: Conversation) -> JSON:
    return {
        "id": conversation.id,
        "object": "thread",
        "created_at": conversation.created_at,
        "tool_resources": tool_resources(
            conversation.file_ids, conversation.extra.get("tool_resources")
        ),
        "metadata": dict(conversation.metadata),
    }


def message(msg: Message) -> JSON:
    incomplete = msg.status == MessageStatus.INCOMPLETE
    return {
        "id": msg.id,
        "object": "thread.message",
        "created_at": msg.created_at,
        "thread_id": msg.conversation_id,
        "status": str(msg.status),
        "incomplete_details": {"reason": "run_cancelled"} if incomplete else None,
        "completed_at": msg.completed_at if not incomplete else None,
        "incomplete_at": msg.completed_at if incomplete else None,
        "role": msg.role,
        "content": [content_part(p) for p in msg.content],
        "assistant_id": msg.agent_id,
        "run_id": msg.run_id,
        "attachments": [
            {"file_id": fid, "tools": [dict(t) for t in CODE_INTERPRETER_TOOLS]}
            for fid in msg.attachments
        ],
        "metadata": dict(msg.metadata),
    }


def run(value: Run) -> JSON:
    extra = value.extra
    status = RunStatus(value.status)
    incomplete_details = None
    if status == RunStatus.INCOMPLETE:
        incomplete_details = {"reason": extra.get("incomplete_reason") or "max_completion_tokens"}
    run_usage = None
    if status.terminal:
        run_usage = usage(value.usage or Usage())
    return {
        "id": value.id,
        "object": "thread.run",
        "created_at": value.created_at,
        "thread_id": value.conversation_id,
        "assistant_id": value.agent_id,
        "status": str(status),
        "required_action": None,
        "last_error": last_error(value.last_error),
        "expires_at": value.expires_at,
        "started_at": value.started_at,
        "cancelled_at": value.cancelled_at,
        "failed_at": value.failed_at,
        "completed_at": value.completed_at,
        "incomplete_details": incomplete_details,
        "model": value.model,
        "instructions": value.instructions or "",
        "tools": list(value.tools),
        "metadata": dict(value.metadata),
        "usage": run_usage,
        "temperature": value.temperature,
        "top_p": value.top_p,
        "max_prompt_tokens": extra.get("max_prompt_tokens"),
        "max_completion_tokens": extra.get("max_completion_tokens"),
        "truncation_strategy": extra.get("truncation_strategy")
        or {"type": "auto", "last_messages": None},
        "tool_choice": extra.get("tool_choice") or "auto",
        "parallel_tool_calls": extra.get("parallel_tool_calls", True),
        "response_format": extra.get("response_format") or "auto",
        "tool_resources": extra.get("tool_resources") or {},
    }


def step_details(step: Step) -> JSON:
    if step.type == "message_creation":
        return {
            "type": "message_creation",
            "message_creation": {"message_id": step.message_id},
        }
    return {"type": "tool_calls", "tool_calls": [code_call(c) for c in step.tool_calls]}


def step(value: Step) -> JSON:
    return {
        "id": value.id,
        "object": "thread.run.step",
        "created_at": value.created_at,
        "run_id": value.run_id,
        "assistant_id": value.agent_id,
        "thread_id": value.conversation_id,
        "type": value.type,
        "status": str(value.status),
        "step_details": step_details(value),
        "last_error": last_error(value.last_error),
        "expired_at": value.completed_at if value.status == "expired" else None,
        "cancelled_at": value.cancelled_at,
        "failed_at": value.failed_at,
        "completed_at": value.completed_at,
        "metadata": dict(value.metadata),
        "usage": usage(value.usage),
    }


def file(value: StoredFile) -> JSON:
    return {
        "id": value.id,
        "object": "file",
        "bytes": value.bytes,
        "filename": value.filename,
        "created_at": value.created_at,
        "purpose": value.purpose,
        "status": "processed",
        "status_details": None,
    }


def deleted(object_id: str, kind: str) -> JSON:
    """``kind``: ``assistant.deleted``, ``thread.deleted``, ``thread.message.deleted``, ``file``."""
    return {"id": object_id, "object": kind, "deleted": True}


def page(value: Page[T], render: Callable[[T], JSON]) -> JSON:
    return listing([render(item) for item in value.items], value.has_more)


def listing(data: Iterable[JSON], has_more: bool = False) -> JSON:
    """The list envelope; ``first_id``/``last_id`` are null on an empty page (azure-ai-agents
    pages until ``last_id`` is null)."""
    items = list(data)
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": bool(has_more) and bool(items),
    }


# --- streaming ----------------------------------------------------------------------------------


def text_delta(
    message_id: str, index: int, value: str, annotations: Sequence[Annotation] = ()
) -> JSON:
    """A ``thread.message.delta`` payload appending ``value`` to the text part at ``index``."""
    return content_delta(message_id, [text_delta_part(index, value, annotations)])


def text_delta_part(index: int, value: str, annotations: Sequence[Annotation] = ()) -> JSON:
    return {
        "index": index,
        "type": "text",
        "text": {
            "value": value,
            "annotations": [{"index": i, **annotation(a)} for i, a in enumerate(annotations)],
        },
    }


def image_delta_part(index: int, file_id: str) -> JSON:
    return {"index": index, "type": "image_file", "image_file": {"file_id": file_id}}


def content_delta(message_id: str, parts: list[JSON]) -> JSON:
    return {"id": message_id, "object": "thread.message.delta", "delta": {"content": parts}}


def message_as_deltas(msg: Message) -> list[JSON]:
    """The whole content of ``msg`` as delta parts, each at its final index."""
    parts: list[JSON] = []
    for index, part in enumerate(msg.content):
        if isinstance(part, TextPart):
            parts.append(text_delta_part(index, part.text, part.annotations))
        else:
            parts.append(image_delta_part(index, part.file_id))
    return parts


def step_delta(step_id: str, call: JSON) -> JSON:
    """A ``thread.run.step.delta`` payload for one (indexed) code call fragment."""
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
    }


def run_event_name(status: RunStatus | str) -> str:
    return f"thread.run.{RunStatus(status)}"


def step_event_name(status: str) -> str:
    return f"thread.run.step.{status}"
