"""Responses, Conversations and Containers request bodies -> values for the agents service.

Request models ignore unknown fields, as the hosted APIs do; ``parse_input`` turns input items
into messages and instructions, ``parse_tools`` the ``tools`` list into what the service runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from sessionpool.agents.types import ContainerNetwork, ImagePart, Part, TextPart
from sessionpool.errors import InvalidArgument
from sessionpool.faces.http import JSON

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
                raise InvalidArgument("conversation.id must be a string", "conversation")
            return cid
        return conv or None

    @property
    def agent_name(self) -> tuple[str, str | None] | None:
        ref = self.agent_reference or self.agent
        if ref is None:
            return None
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("agent_reference.name must be a string", "agent_reference")
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
    network_policy: Any = None
    skills: Any = None


def refuse_skills(skills: Any, where: str = "skills") -> None:
    """Skills (packaged instructions and files mounted into a container) are not served: a
    request that names any is refused rather than run without them."""
    if skills:
        raise InvalidArgument(
            "skills are not supported by this server: containers run the pool's runtime only; "
            "leave skills out, or upload the files the skill needs with file_ids",
            where,
        )


_MEMORY = re.compile(r"([1-9][0-9]*)\s*([kmgt])b?", re.IGNORECASE)
_MEMORY_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_limit(raw: Any, where: str = "memory_limit") -> int | None:
    """A container's ``memory_limit`` (``"1g"``, ``"4g"`` ...: binary units, as Docker's) in
    bytes; None when not given."""
    if raw is None:
        return None
    if isinstance(raw, str) and (m := _MEMORY.fullmatch(raw.strip())):
        return int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]
    raise InvalidArgument(
        f"memory_limit {raw!r}: expected a size such as '1g', '4g' or '512m'", where
    )


def parse_network_policy(raw: Any, where: str = "network_policy") -> ContainerNetwork | None:
    """OpenAI's ``network_policy``: ``{"type": "disabled"}`` (no network) or ``{"type":
    "allowlist", "allowed_domains": [...]}`` (only those hosts), narrowing the pool's policy.

    ``domain_secrets`` are refused: OpenAI documents them as a secret ``name`` and ``value``
    injected for a domain, not as a header, and the egress proxy here only adds headers (which
    the operator configures per pool, ``[pools.<name>.egress.secrets]``); guessing a header
    could send a secret where its owner never meant it to go.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidArgument("network_policy must be an object with a type", where)
    kind = raw.get("type")
    if kind == "disabled":
        return ContainerNetwork(mode="off")
    if kind != "allowlist":
        raise InvalidArgument(
            f"network_policy type {kind!r} is not supported; use 'disabled' or 'allowlist'",
            f"{where}.type",
        )
    domains = raw.get("allowed_domains")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise InvalidArgument(
            "allowed_domains must be a list of domains", f"{where}.allowed_domains"
        )
    if raw.get("domain_secrets"):
        raise InvalidArgument(
            "domain_secrets are not supported by this server: its egress proxy adds headers "
            "the operator configures for a domain ([pools.<name>.egress.secrets]), and cannot "
            "inject a secret by name; leave domain_secrets out",
            f"{where}.domain_secrets",
        )
    return ContainerNetwork(mode="allowlist", allow=list(domains))


class ContainerFileCreate(WireModel):
    file_id: str


class AgentVersionCreate(WireModel):
    """Foundry ``POST /agents/{name}/versions``: ``{"definition": {...}, "description"}``."""

    definition: dict[str, Any]
    description: str | None = None
    metadata: dict[str, str] | None = None


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
        raise InvalidArgument("message content must be a string or a list of parts", param)
    parts: list[Part] = []
    attachments: list[str] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise InvalidArgument("a content part must be an object", where)
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidArgument("a text part needs a string 'text'", where)
            parts.append(TextPart(text=text))
        elif kind == "input_image":
            file_id = part.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise InvalidArgument(
                    "input_image parts need a file_id here (upload the image with the files API)",
                    where,
                )
            parts.append(ImagePart(file_id=file_id))
        elif kind == "input_file":
            file_id = part.get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise InvalidArgument(
                    "input_file parts need a file_id here (upload the file with the files API)",
                    where,
                )
            attachments.append(file_id)
        else:
            raise InvalidArgument(f"content parts of type {kind!r} are not supported", where)
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
            raise InvalidArgument("an input item must be an object", where)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "item_reference":
            continue
        if kind != "message":
            raise InvalidArgument(
                f"input items of type {kind!r} are not supported; send messages", where
            )
        role = item.get("role")
        parts, attachments = _content(item.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            out.instructions.append("\n".join(p.text for p in parts if isinstance(p, TextPart)))
            continue
        if role not in ("user", "assistant"):
            raise InvalidArgument(f"unknown message role {role!r}", f"{where}.role")
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
    #: ``memory_limit`` in bytes
    memory_bytes: int | None = None
    #: ``"container": {"type": "auto", "network_policy": ...}``
    network: ContainerNetwork | None = None


def _auto_container(spec: ToolSpec, container: JSON, where: str) -> None:
    """``{"type": "auto"|"container_auto", file_ids, memory_limit, network_policy, skills}``."""
    if spec.container_id is not None:
        raise InvalidArgument("the tools must share one container", where)
    spec.auto = True
    file_ids = container.get("file_ids") or []
    if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
        raise InvalidArgument("file_ids must be a list of file ids", f"{where}.file_ids")
    spec.file_ids = list(dict.fromkeys([*spec.file_ids, *file_ids]))
    refuse_skills(container.get("skills"), f"{where}.skills")
    limit = container.get("memory_limit")
    if limit is not None:
        spec.memory_bytes = parse_memory_limit(limit, f"{where}.memory_limit")
        spec.memory_limit = limit if isinstance(limit, str) else None
    network = parse_network_policy(container.get("network_policy"), f"{where}.network_policy")
    if network is not None:
        spec.network = network


def _container_id(spec: ToolSpec, container_id: str, where: str) -> None:
    if spec.auto or spec.container_id not in (None, container_id):
        raise InvalidArgument("the tools must share one container", where)
    spec.container_id = container_id


def parse_tools(tools: Sequence[Any] | None, param: str = "tools") -> ToolSpec:
    """``code_interpreter`` and the hosted ``shell`` run here (in one container, shared);
    anything else is refused rather than ignored."""
    spec = ToolSpec()
    for i, tool in enumerate(tools or ()):
        where = f"{param}[{i}]"
        if not isinstance(tool, dict):
            raise InvalidArgument("a tool must be an object", where)
        kind = tool.get("type")
        if kind not in ("code_interpreter", "shell"):
            raise InvalidArgument(
                f"tools of type {kind!r} are not supported here; only code_interpreter and "
                "shell run",
                where,
            )
        if any(t["type"] == kind for t in spec.tools):
            raise InvalidArgument(f"give the {kind} tool once", where)
        spec.tools.append({"type": kind})
        if kind == "shell":
            _shell_environment(spec, tool.get("environment"), f"{where}.environment")
            continue
        container = tool.get("container")
        if isinstance(container, str) and container:
            _container_id(spec, container, f"{where}.container")
        elif container is None or isinstance(container, dict):
            container = container or {}
            ctype = container.get("type", "auto")
            if ctype != "auto":
                raise InvalidArgument(
                    f"container type {ctype!r} is not supported; use 'auto' or a container id",
                    f"{where}.container.type",
                )
            _auto_container(spec, container, f"{where}.container")
        else:
            raise InvalidArgument(
                "container must be a container id or {'type': 'auto'}", f"{where}.container"
            )
    return spec


def _shell_environment(spec: ToolSpec, environment: Any, where: str) -> None:
    """The hosted shell's ``environment``: the conversation's own container
    (``container_auto``, the default) or a container made with /containers
    (``container_reference``). Its commands run in the same session as code_interpreter's."""
    if environment is None:
        environment = {"type": "container_auto"}
    if not isinstance(environment, dict):
        raise InvalidArgument("environment must be an object", where)
    etype = environment.get("type", "container_auto")
    if etype == "container_auto":
        _auto_container(spec, environment, where)
    elif etype == "container_reference":
        cid = environment.get("container_id")
        if not isinstance(cid, str) or not cid:
            raise InvalidArgument("container_reference needs a container_id", where)
        _container_id(spec, cid, where)
    elif etype == "local":
        raise InvalidArgument(
            "a local shell environment runs commands on the client, which this server cannot "
            "do; use {'type': 'container_auto'} or a container_reference to run them here",
            f"{where}.type",
        )
    else:
        raise InvalidArgument(
            f"environment type {etype!r} is not supported; use 'container_auto' or "
            "'container_reference'",
            f"{where}.type",
        )
