"""Translation between the Responses, Conversations and Containers wire and the agents model.

Pure functions: nothing here awaits the service or knows about HTTP (request bodies are read in
``parse``, the event stream is ``stream``). The shapes follow openai-python 3.54.0's types
(``openai.types.responses.Response``, ``ResponseCodeInterpreterToolCall``,
``ResponseOutputMessage``, ``openai.types.conversations.*``, ``openai.types.containers.*``).

Mapping (see also docs/agents.md):

- a ``response`` is an internal ``Run`` with ``kind="response"``; its ``output`` is built from the
  run's steps in order: each ``CodeCall`` becomes a ``code_interpreter_call`` item (outputs
  always filled: logs, and images as a container file's content URL or, for a figure kept as
  a plain file, a ``data:`` URL), a shell call (the hosted ``shell`` tool) a ``shell_call``
  item and its ``shell_call_output``, the answer message a ``message`` item whose annotations
  are ``container_file_citation``\\ s;
- a ``conversation`` is an internal ``Conversation``; its items are its messages plus the code
  calls of its responses, in time order;
- a ``container`` is an internal ``Container``; its files are ``StoredFile``\\ s with
  ``container_id`` set.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from sessionpool.agents.types import (
    Annotation,
    CodeCall,
    Container,
    ContainerNetwork,
    Conversation,
    Message,
    Run,
    RunError,
    RunStatus,
    ShellOutput,
    Step,
    StoredFile,
    TextPart,
    Usage,
)
from sessionpool.errors import InvalidArgument
from sessionpool.faces.http import JSON

# --- responses ----------------------------------------------------------------------------------

STATUS: dict[RunStatus, str] = {
    RunStatus.QUEUED: "queued",
    RunStatus.IN_PROGRESS: "in_progress",
    RunStatus.REQUIRES_ACTION: "in_progress",
    RunStatus.CANCELLING: "in_progress",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.FAILED: "failed",
    RunStatus.COMPLETED: "completed",
    RunStatus.INCOMPLETE: "incomplete",
    RunStatus.EXPIRED: "failed",
}

#: the codes openai's ``ResponseError`` knows; any other internal code is sent as server_error
ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


def response_status(status: RunStatus) -> str:
    return STATUS[status]


def response_error(run: Run) -> JSON | None:
    """``error`` of a response: set when it failed; the internal code rides along in ``type``."""
    err: RunError | None = run.last_error
    if err is None:
        if run.status is RunStatus.EXPIRED:
            return {"code": "server_error", "message": "the response expired", "type": "timeout"}
        return None
    if run.status not in (RunStatus.FAILED, RunStatus.EXPIRED):
        return None
    code = err.code if err.code in ERROR_CODES else "server_error"
    return {"code": code, "message": err.message, "type": err.code}


def usage(value: Usage | None) -> JSON | None:
    if value is None:
        return None
    return {
        "input_tokens": value.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": value.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": value.total_tokens,
    }


def file_content_url(base_url: str, container_id: str, file_id: str) -> str:
    return f"{base_url}/containers/{container_id}/files/{file_id}/content"


def image_file_ids(steps: Iterable[Step]) -> list[str]:
    """The files behind the image outputs of ``steps``' code calls."""
    return [
        out.file_id
        for step in steps
        for call in step.tool_calls
        for out in call.outputs
        if out.type == "image" and out.file_id
    ]


def image_url(f: StoredFile, data: bytes | None, *, base_url: str) -> str:
    """A container file's content URL, else (a figure, kept as a plain file) a data: URL."""
    if f.container_id:
        return file_content_url(base_url, f.container_id, f.id)
    mime = mimetypes.guess_type(f.filename)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data or b'').decode()}"


def code_call_item(
    call: CodeCall,
    *,
    container_id: str | None,
    base_url: str,
    done: bool = True,
    image_urls: Mapping[str, str] | None = None,
) -> JSON:
    """A ``code_interpreter_call`` item (``done=False``: as first announced, no code yet).

    ``image_urls`` maps the file id of an image output to its URL (``image_url``); an image
    missing there is linked as a file of the call's container.
    """
    cid = call.container_id or container_id or ""
    if not done:
        return {
            "type": "code_interpreter_call",
            "id": call.id,
            "status": "in_progress",
            "code": "",
            "container_id": cid,
            "outputs": None,
        }
    outputs: list[JSON] = []
    for out in call.outputs:
        if out.type == "logs":
            outputs.append({"type": "logs", "logs": out.logs or ""})
        elif out.file_id:
            url = (image_urls or {}).get(out.file_id) or file_content_url(
                base_url, cid, out.file_id
            )
            outputs.append({"type": "image", "url": url})
    return {
        "type": "code_interpreter_call",
        "id": call.id,
        "status": call.status,
        "code": call.code,
        "container_id": cid,
        "outputs": outputs,
    }


def shell_item_ids(call: CodeCall) -> tuple[str, str]:
    """The ids of a shell call's two items: the ``shell_call`` and its ``shell_call_output``
    (the model's call id is ``call.id``)."""
    suffix = call.id.removeprefix("call_")
    return f"sh_{suffix}", f"sho_{suffix}"


def _shell_status(call: CodeCall) -> str:
    if call.status == "completed":
        return "completed"
    return "incomplete" if call.status in ("failed", "incomplete") else "in_progress"


def shell_call_item(call: CodeCall, *, container_id: str | None) -> JSON:
    """A ``shell_call`` item (``ResponseFunctionShellToolCall``): the commands the model gave,
    run in the container's session."""
    action: JSON = {"commands": list(call.commands), "timeout_ms": None}
    action["max_output_length"] = call.max_output_length
    return {
        "type": "shell_call",
        "id": shell_item_ids(call)[0],
        "call_id": call.id,
        "status": _shell_status(call),
        "action": action,
        "environment": {
            "type": "container_reference",
            "container_id": call.container_id or container_id or "",
        },
    }


def shell_output(out: ShellOutput) -> JSON:
    """One command's output, as ``shell_call_output.output[]`` holds it."""
    outcome: JSON = (
        {"type": "timeout"}
        if out.exit_code is None
        else {"type": "exit", "exit_code": out.exit_code}
    )
    return {"stdout": out.stdout, "stderr": out.stderr, "outcome": outcome}


def shell_call_output_item(call: CodeCall, *, done: bool = True) -> JSON:
    """A ``shell_call_output`` item (``done=False``: as first announced, no output yet)."""
    return {
        "type": "shell_call_output",
        "id": shell_item_ids(call)[1],
        "call_id": call.id,
        "status": _shell_status(call) if done else "in_progress",
        "output": [shell_output(o) for o in call.shell_outputs] if done else [],
        "max_output_length": call.max_output_length,
    }


def call_items(
    call: CodeCall,
    *,
    container_id: str | None,
    base_url: str,
    image_urls: Mapping[str, str] | None = None,
) -> list[JSON]:
    """A tool call's output items: a ``code_interpreter_call``, or a shell call's
    ``shell_call`` and ``shell_call_output``."""
    if call.kind == "shell":
        return [
            shell_call_item(call, container_id=container_id),
            shell_call_output_item(call),
        ]
    return [
        code_call_item(call, container_id=container_id, base_url=base_url, image_urls=image_urls)
    ]


def annotation(value: Annotation, container_id: str | None) -> JSON:
    return {
        "type": "container_file_citation",
        "container_id": value.container_id or container_id or "",
        "file_id": value.file_id,
        "filename": value.filename,
        "start_index": value.start_index,
        "end_index": value.end_index,
    }


def output_text(part: TextPart, container_id: str | None) -> JSON:
    return {
        "type": "output_text",
        "text": part.text,
        "annotations": [annotation(a, container_id) for a in part.annotations],
        "logprobs": [],
    }


def message_item(message: Message, *, container_id: str | None = None) -> JSON:
    """A ``message`` item: assistant text as ``output_text``, user text as ``input_text``."""
    content: list[JSON] = []
    if message.role == "assistant":
        content = [output_text(p, container_id) for p in message.content if isinstance(p, TextPart)]
    else:
        for p in message.content:
            if isinstance(p, TextPart):
                content.append({"type": "input_text", "text": p.text})
            else:
                content.append({"type": "input_image", "file_id": p.file_id, "detail": "auto"})
        content.extend({"type": "input_file", "file_id": f} for f in message.attachments)
    return {
        "type": "message",
        "id": message.id,
        "role": message.role,
        "status": str(message.status),
        "content": content,
    }


def run_output(
    run: Run,
    steps: Iterable[Step],
    messages: Iterable[Message],
    *,
    base_url: str,
    image_urls: Mapping[str, str] | None = None,
) -> list[JSON]:
    """A response's ``output``: its steps in order, code calls and the answer message."""
    by_id = {m.id: m for m in messages if m.role == "assistant"}
    out: list[JSON] = []
    seen: set[str] = set()
    for step in steps:
        if step.type == "tool_calls":
            for call in step.tool_calls:
                out += call_items(
                    call, container_id=run.container_id, base_url=base_url, image_urls=image_urls
                )
        elif step.message_id is not None and step.message_id in by_id:
            seen.add(step.message_id)
            out.append(message_item(by_id[step.message_id], container_id=run.container_id))
    for mid, message in by_id.items():  # messages no step names (defensive), oldest first
        if mid not in seen:
            out.append(message_item(message, container_id=run.container_id))
    return out


def response_object(run: Run, output: list[JSON]) -> JSON:
    """The ``response`` object; every field openai's ``Response`` requires is present."""
    extra = run.extra
    conversation = extra.get("conversation")
    completed_at = run.completed_at if run.status is RunStatus.COMPLETED else None
    status = response_status(run.status)
    return {
        "id": run.id,
        "object": "response",
        "created_at": run.created_at,
        "status": status,
        "background": bool(extra.get("background", False)),
        "completed_at": completed_at,
        "conversation": {"id": conversation} if isinstance(conversation, str) else None,
        "error": response_error(run),
        "incomplete_details": {"reason": None} if status == "incomplete" else None,
        "instructions": run.instructions,
        "max_output_tokens": extra.get("max_output_tokens"),
        "max_tool_calls": extra.get("max_tool_calls"),
        "metadata": dict(run.metadata),
        "model": run.model,
        "output": output,
        "parallel_tool_calls": bool(extra.get("parallel_tool_calls", True)),
        "previous_response_id": extra.get("previous_response_id"),
        "reasoning": None,
        "service_tier": "default",
        "store": bool(extra.get("store", True)),
        "temperature": run.temperature,
        "text": extra.get("text") or {"format": {"type": "text"}},
        "tool_choice": extra.get("tool_choice") or "auto",
        "tools": extra.get("tools", run.tools),
        "top_p": run.top_p,
        "truncation": extra.get("truncation") or "disabled",
        "usage": usage(run.usage),
        "user": extra.get("user"),
    }


# --- conversations ------------------------------------------------------------------------------


def conversation_object(conv: Conversation) -> JSON:
    return {
        "id": conv.id,
        "object": "conversation",
        "created_at": conv.created_at,
        "metadata": dict(conv.metadata),
    }


def response_deleted(response_id: str) -> JSON:
    """What ``DELETE /responses/{id}`` answers (the SDK returns nothing, but reads JSON)."""
    return {"id": response_id, "object": "response", "deleted": True}


def conversation_deleted(conversation_id: str) -> JSON:
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def conversation_items(
    messages: Sequence[Message],
    runs: Sequence[Run],
    steps: dict[str, list[Step]],
    *,
    base_url: str,
    image_urls: Mapping[str, str] | None = None,
) -> list[JSON]:
    """A conversation's items in time order (oldest first).

    Each response's output (its code calls, then its answer) follows the last of its input
    messages; messages no response wrote stay where they are. ``steps`` maps run id -> steps.
    """
    by_message = {m.id: m for m in messages}
    outputs: dict[str, list[JSON]] = {}
    owned: set[str] = set()  # message ids that appear as some response's output
    after: dict[str, list[str]] = {}  # message id -> runs whose output follows it
    orphans: list[str] = []
    for run in sorted(runs, key=lambda r: r.created_at):
        run_messages = [m for m in messages if m.run_id == run.id and m.role == "assistant"]
        items = run_output(
            run, steps.get(run.id, []), run_messages, base_url=base_url, image_urls=image_urls
        )
        outputs[run.id] = items
        owned.update(m.id for m in run_messages)
        anchors = [mid for mid in run.input_message_ids if mid in by_message]
        if anchors:
            after.setdefault(anchors[-1], []).append(run.id)
        else:
            orphans.append(run.id)
    out: list[JSON] = []
    for m in messages:
        if m.id not in owned:
            out.append(message_item(m))
        for run_id in after.get(m.id, []):
            out.extend(outputs[run_id])
    for run_id in orphans:
        out.extend(outputs[run_id])
    return out


# --- containers ---------------------------------------------------------------------------------


def network_policy(network: ContainerNetwork | None) -> JSON | None:
    """A container's egress as OpenAI's ``network_policy`` (None: unrestricted, which the
    API has no word for)."""
    if network is None:
        return None
    if network.mode == "off":
        return {"type": "disabled"}
    return {"type": "allowlist", "allowed_domains": list(network.allow)}


def container_object(container: Container, network: ContainerNetwork | None = None) -> JSON:
    return {
        "id": container.id,
        "object": "container",
        "name": container.name or "",
        "status": str(container.status),
        "created_at": container.created_at,
        "last_active_at": container.last_active_at,
        "expires_after": {
            "anchor": "last_active_at",
            "minutes": container.expires_after_minutes,
        },
        "memory_limit": container.memory_limit,
        "network_policy": network_policy(network),
        "metadata": dict(container.metadata),
    }


def container_deleted(container_id: str) -> JSON:
    return {"id": container_id, "object": "container.deleted", "deleted": True}


def container_file_object(f: StoredFile, container_id: str) -> JSON:
    return {
        "id": f.id,
        "object": "container.file",
        "bytes": f.bytes,
        "container_id": f.container_id or container_id,
        "created_at": f.created_at,
        "path": f.path or f"/mnt/data/{f.filename}",
        "source": f.source,
    }


def container_file_deleted(file_id: str) -> JSON:
    return {"id": file_id, "object": "container.file.deleted", "deleted": True}


# --- lists --------------------------------------------------------------------------------------


def list_object(data: list[JSON], has_more: bool) -> JSON:
    """The list envelope; ``first_id``/``last_id`` null on an empty page (clients stop there)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def paginate(
    items: Sequence[JSON],
    *,
    limit: int,
    order: Literal["asc", "desc"],
    after: str | None,
) -> tuple[list[JSON], bool]:
    """A page of ``items`` (given oldest first) in ``order``, after the item ``after``."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidArgument(f"no item with id {after!r} to page after", "after")
        ordered = ordered[ids.index(after) + 1 :]
    return ordered[:limit], len(ordered) > limit


# --- Foundry agent versions ---------------------------------------------------------------------


def agent_version_object(
    name: str,
    version: str,
    definition: JSON,
    *,
    description: str | None,
    created_at: int,
    metadata: dict[str, str],
) -> JSON:
    return {
        "id": f"{name}:{version}",
        "object": "agent.version",
        "name": name,
        "version": version,
        "description": description,
        "definition": definition,
        "created_at": created_at,
        "metadata": metadata,
    }
