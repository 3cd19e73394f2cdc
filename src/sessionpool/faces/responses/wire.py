"""Translation between the Responses, Conversations and Containers wire and the agents model.

Pure functions (and one small state machine for streaming): nothing here awaits the service or
knows about HTTP. The shapes follow openai-python 3.54.0's types
(``openai.types.responses.Response``, ``ResponseCodeInterpreterToolCall``,
``ResponseOutputMessage``, ``openai.types.conversations.*``, ``openai.types.containers.*``).

Mapping (see also docs/agents.md):

- a ``response`` is an internal ``Run`` with ``kind="response"``; its ``output`` is built from the
  run's steps in order: each ``CodeCall`` becomes a ``code_interpreter_call`` item (outputs
  always filled: logs, and images as a container file's content URL or, for a figure kept as
  a plain file, a ``data:`` URL), the answer message a ``message`` item whose annotations are
  ``container_file_citation``\\ s;
- a ``conversation`` is an internal ``Conversation``; its items are its messages plus the code
  calls of its responses, in time order;
- a ``container`` is an internal ``Container``; its files are ``StoredFile``\\ s with
  ``container_id`` set.
"""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from sessionpool.agents.types import (
    Annotation,
    CodeCall,
    Container,
    Conversation,
    ImagePart,
    Message,
    MessageStatus,
    Part,
    Run,
    RunError,
    RunEvent,
    RunStatus,
    Step,
    StoredFile,
    TextPart,
    Usage,
)
from sessionpool.errors import InvalidRequest
from sessionpool.faces import common

JSON = dict[str, Any]

# --- request bodies -----------------------------------------------------------------------------


class WireModel(BaseModel):
    """A request body: unknown fields are ignored, as the hosted APIs do."""

    model_config = ConfigDict(extra="ignore")


class ResponseCreate(WireModel):
    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    conversation: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    background: bool | None = None
    stream: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    truncation: str | None = None
    text: Any = None
    reasoning: Any = None
    user: str | None = None
    include: list[str] | None = None
    #: Foundry: ``{"type": "agent_reference", "name": ..., "version": ...}`` (formerly ``agent``)
    agent_reference: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None

    @property
    def conversation_id(self) -> str | None:
        conv = self.conversation
        if isinstance(conv, dict):
            cid = conv.get("id")
            if not isinstance(cid, str) or not cid:
                raise InvalidRequest("conversation.id must be a string", "conversation")
            return cid
        return conv or None

    @property
    def agent_name(self) -> tuple[str, str | None] | None:
        ref = self.agent_reference or self.agent
        if ref is None:
            return None
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("agent_reference.name must be a string", "agent_reference")
        version = ref.get("version")
        return name, (str(version) if version not in (None, "") else None)


class ConversationCreate(WireModel):
    items: list[Any] | None = None
    metadata: dict[str, str] | None = None


class ConversationUpdate(WireModel):
    metadata: dict[str, str] | None = None


class ItemsCreate(WireModel):
    items: list[Any]


class ExpiresAfter(WireModel):
    anchor: str = "last_active_at"
    minutes: int


class ContainerCreate(WireModel):
    name: str | None = None
    file_ids: list[str] | None = None
    expires_after: ExpiresAfter | None = None
    memory_limit: str | None = None
    metadata: dict[str, str] | None = None


class ContainerFileCreate(WireModel):
    file_id: str


class AgentVersionCreate(WireModel):
    """Foundry ``POST /agents/{name}/versions``: ``{"definition": {...}, "description"}``."""

    definition: dict[str, Any]
    description: str | None = None
    metadata: dict[str, str] | None = None


def parse_body(raw: bytes, model: type[WireModel]) -> Any:
    """``raw`` JSON as ``model``; InvalidRequest for bad JSON or a bad field."""
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"invalid request body: {problems}", param) from None


# --- input items --------------------------------------------------------------------------------


@dataclass
class ParsedInput:
    """Input items as the service takes them: messages to add, and system/developer text."""

    messages: list[JSON] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)


_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text"})


def _content(content: Any, param: str) -> tuple[list[Part], list[str]]:
    """Wire message content -> internal parts and attached file ids."""
    if isinstance(content, str):
        return [TextPart(text=content)], []
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of parts", param)
    parts: list[Part] = []
    attachments: list[str] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest("a content part must be an object", where)
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest("a text part needs a string 'text'", where)
            parts.append(TextPart(text=text))
        elif kind == "input_image":
            file_id = part.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise InvalidRequest(
                    "input_image parts need a file_id here (upload the image with the files API)",
                    where,
                )
            parts.append(ImagePart(file_id=file_id))
        elif kind == "input_file":
            file_id = part.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise InvalidRequest(
                    "input_file parts need a file_id here (upload the file with the files API)",
                    where,
                )
            attachments.append(file_id)
        else:
            raise InvalidRequest(f"content parts of type {kind!r} are not supported", where)
    return parts, attachments


def parse_input(value: str | list[Any] | None, param: str = "input") -> ParsedInput:
    """A Responses ``input`` (or conversation ``items``) -> messages for ``add_message``.

    Each message is ``{"role", "content": str | list[Part], "attachments"}``. System and
    developer messages cannot be stored in a conversation; their text is returned apart, to be
    passed on as instructions. ``item_reference`` items are ignored (items are in the
    conversation already).
    """
    out = ParsedInput()
    if value is None:
        return out
    if isinstance(value, str):
        out.messages.append({"role": "user", "content": value, "attachments": []})
        return out
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if isinstance(item, str):
            out.messages.append({"role": "user", "content": item, "attachments": []})
            continue
        if not isinstance(item, dict):
            raise InvalidRequest("an input item must be an object", where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "item_reference":
            continue
        if kind != "message":
            raise InvalidRequest(
                f"input items of type {kind!r} are not supported; send messages", where
            )
        role = item.get("role")
        parts, attachments = _content(item.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            out.instructions.append("\n".join(p.text for p in parts if isinstance(p, TextPart)))
            continue
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"unknown message role {role!r}", f"{where}.role")
        content: str | list[Part] = parts
        if len(parts) == 1 and isinstance(parts[0], TextPart):
            content = parts[0].text
        out.messages.append({"role": role, "content": content, "attachments": attachments})
    return out


# --- tools --------------------------------------------------------------------------------------


@dataclass
class ToolSpec:
    """What a request's ``tools`` ask of the service."""

    #: internal tools for ``start_run``
    tools: list[JSON] = field(default_factory=list)
    #: an explicit container (``"container": "cntr_..."``)
    container_id: str | None = None
    #: ``"container": {"type": "auto", ...}``
    auto: bool = False
    file_ids: list[str] = field(default_factory=list)
    memory_limit: str | None = None


def parse_tools(tools: Sequence[Any] | None, param: str = "tools") -> ToolSpec:
    """Only ``code_interpreter`` runs here; anything else is refused rather than ignored."""
    spec = ToolSpec()
    for i, tool in enumerate(tools or ()):
        where = f"{param}[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest("a tool must be an object", where)
        kind = tool.get("type")
        if kind != "code_interpreter":
            raise InvalidRequest(
                f"tools of type {kind!r} are not supported here; only code_interpreter runs",
                where,
            )
        if spec.tools:
            raise InvalidRequest("give the code_interpreter tool once", where)
        spec.tools.append({"type": "code_interpreter"})
        container = tool.get("container")
        if isinstance(container, str) and container:
            spec.container_id = container
        elif container is None or isinstance(container, dict):
            container = container or {}
            ctype = container.get("type", "auto")
            if ctype != "auto":
                raise InvalidRequest(
                    f"container type {ctype!r} is not supported; use 'auto' or a container id",
                    f"{where}.container.type",
                )
            spec.auto = True
            file_ids = container.get("file_ids") or []
            if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
                raise InvalidRequest(
                    "file_ids must be a list of file ids", f"{where}.container.file_ids"
                )
            spec.file_ids = list(file_ids)
            limit = container.get("memory_limit")
            spec.memory_limit = limit if isinstance(limit, str) else None
        else:
            raise InvalidRequest(
                "container must be a container id or {'type': 'auto'}", f"{where}.container"
            )
    return spec


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
                out.append(
                    code_call_item(
                        call,
                        container_id=run.container_id,
                        base_url=base_url,
                        image_urls=image_urls,
                    )
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


def container_object(container: Container) -> JSON:
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
            raise InvalidRequest(f"no item with id {after!r} to page after", "after")
        ordered = ordered[ids.index(after) + 1 :]
    return ordered[:limit], len(ordered) > limit


# --- streaming ----------------------------------------------------------------------------------

Event = tuple[str, JSON]  # (event type, data)


@dataclass
class _CallState:
    index: int
    interpreting: bool = False
    done: bool = False


@dataclass
class _MessageState:
    index: int
    text: str = ""
    done: bool = False


class ResponseStream:
    """Turns a run's ``RunEvent``\\ s into Responses stream events, numbered from 0.

    ``start`` gives ``response.created``; ``feed`` maps each run event; ``finish`` takes the
    final response object, closes every item still open (and announces items the events never
    showed), then gives ``response.completed`` / ``response.failed`` / ``response.incomplete``.
    Item ids and output indexes stay the same from ``added`` to ``done`` and in the final
    response, as openai's stream accumulator checks.
    """

    def __init__(self, run: Run, *, base_url: str) -> None:
        self.run = run
        self.base_url = base_url
        self.sequence = 0
        self.next_index = 0
        self.in_progress_sent = False
        self.calls: dict[str, _CallState] = {}
        #: image output file id -> URL; the face fills it before feeding a step
        self.image_urls: dict[str, str] = {}
        self.messages: dict[str, _MessageState] = {}

    def _event(self, kind: str, **fields: Any) -> Event:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, data

    def _snapshot(self) -> JSON:
        return response_object(self.run, [])

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self._snapshot())]

    def _ensure_in_progress(self) -> list[Event]:
        if self.in_progress_sent:
            return []
        self.in_progress_sent = True
        if self.run.status is RunStatus.QUEUED:
            self.run = self.run.model_copy(update={"status": RunStatus.IN_PROGRESS})
        return [self._event("response.in_progress", response=self._snapshot())]

    def feed(self, event: RunEvent) -> list[Event]:
        out: list[Event] = []
        if event.kind == "run" and event.run is not None:
            self.run = event.run
            if event.run.status is not RunStatus.QUEUED and not event.run.status.terminal:
                out += self._ensure_in_progress()
        elif event.kind == "step" and event.step is not None:
            if event.step.type == "tool_calls":
                for call in event.step.tool_calls:
                    out += self._call(call)
        elif event.kind == "message" and event.message is not None:
            message = event.message
            if message.role == "assistant":
                out += self._message(message)
        elif event.kind == "text_delta" and event.message_id and event.delta:
            out += self._open_message(event.message_id)
            state = self.messages[event.message_id]
            if not state.done:
                state.text += event.delta
                out.append(self._text_delta(event.message_id, state.index, event.delta))
        return out

    # code calls

    def _call(self, call: CodeCall, final: JSON | None = None) -> list[Event]:
        out: list[Event] = []
        state = self.calls.get(call.id)
        if state is None:
            out += self._ensure_in_progress()
            state = self.calls[call.id] = _CallState(self.next_index)
            self.next_index += 1
            added = code_call_item(
                call, container_id=self.run.container_id, base_url=self.base_url, done=False
            )
            out.append(
                self._event("response.output_item.added", output_index=state.index, item=added)
            )
            ids = {"item_id": call.id, "output_index": state.index}
            out.append(self._event("response.code_interpreter_call.in_progress", **ids))
            if call.code:
                out.append(
                    self._event("response.code_interpreter_call_code.delta", delta=call.code, **ids)
                )
            out.append(
                self._event("response.code_interpreter_call_code.done", code=call.code, **ids)
            )
        if state.done:
            return out
        ids = {"item_id": call.id, "output_index": state.index}
        finished = final is not None or call.status in ("completed", "failed", "incomplete")
        if (call.status == "interpreting" or finished) and not state.interpreting:
            state.interpreting = True
            out.append(self._event("response.code_interpreter_call.interpreting", **ids))
        if finished:
            state.done = True
            item = final or code_call_item(
                call,
                container_id=self.run.container_id,
                base_url=self.base_url,
                image_urls=self.image_urls,
            )
            out.append(self._event("response.code_interpreter_call.completed", **ids))
            out.append(
                self._event("response.output_item.done", output_index=state.index, item=item)
            )
        return out

    # messages

    def _open_message(self, message_id: str) -> list[Event]:
        if message_id in self.messages:
            return []
        out = self._ensure_in_progress()
        state = self.messages[message_id] = _MessageState(self.next_index)
        self.next_index += 1
        item = {
            "type": "message",
            "id": message_id,
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        out.append(self._event("response.output_item.added", output_index=state.index, item=item))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        out.append(
            self._event(
                "response.content_part.added",
                item_id=message_id,
                output_index=state.index,
                content_index=0,
                part=part,
            )
        )
        return out

    def _text_delta(self, message_id: str, index: int, delta: str) -> Event:
        return self._event(
            "response.output_text.delta",
            item_id=message_id,
            output_index=index,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _message(self, message: Message, final: JSON | None = None) -> list[Event]:
        out = self._open_message(message.id)
        state = self.messages[message.id]
        if state.done or (final is None and message.status is MessageStatus.IN_PROGRESS):
            return out
        item = final or message_item(message, container_id=self.run.container_id)
        parts: list[JSON] = item["content"] or [
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ]
        text = "".join(p.get("text", "") for p in parts[:1])
        if text.startswith(state.text) and len(text) > len(state.text):
            out.append(self._text_delta(message.id, state.index, text[len(state.text) :]))
        state.text = text
        state.done = True
        ids = {"item_id": message.id, "output_index": state.index, "content_index": 0}
        out.append(self._event("response.output_text.done", text=text, logprobs=[], **ids))
        out.append(self._event("response.content_part.done", part=parts[0], **ids))
        out.append(self._event("response.output_item.done", output_index=state.index, item=item))
        return out

    # the end

    def finish(self, response: JSON) -> list[Event]:
        """Close what is open, from the final ``response`` object, then the terminal event."""
        out = self._ensure_in_progress() if response["status"] != "queued" else []
        for item in response["output"]:
            if item["type"] == "code_interpreter_call":
                call = CodeCall(
                    id=item["id"],
                    code=item.get("code") or "",
                    status=item["status"],
                    container_id=item.get("container_id"),
                )
                out += self._call(call, final=item)
            elif item["type"] == "message":
                stub = Message(id=item["id"], conversation_id="", role="assistant", content=[])
                out += self._message(stub, final=item)
        kind = {
            "completed": "response.completed",
            "failed": "response.failed",
        }.get(response["status"], "response.incomplete")
        out.append(self._event(kind, response=response))
        return out

    def error(self, code: str, message: str) -> list[Event]:
        return [self._event("error", code=code, message=message, param=None)]


def sse(event: Event) -> bytes:
    kind, data = event
    return common.sse(kind, data)


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
