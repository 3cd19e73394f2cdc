"""Routes of the Responses face: responses, conversations and their items, containers and files.

One router, mounted under ``/v1`` (openai-python), ``/openai/v1`` (Azure OpenAI's v1 base) and
``/api/projects/{project}/openai/v1`` (Azure AI Foundry's ``get_openai_client()``); any
``api-version`` query is ignored. Only the ``/v1`` copy is in the OpenAPI description. Every
handler translates with ``wire`` and calls the caller's tenant's view of the ``AgentService``
(``faces.base.tenant_agents``: the agents scope, then that tenant's objects only); its
errors (ObjectNotFound, InvalidArgument, Conflict) are rendered by the server's handlers.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sessionpool.agents.service import ResponseRequest, TenantAgents
from sessionpool.agents.types import Agent, Message, Run, RunEvent, RunStatus, Step
from sessionpool.errors import InvalidArgument, ObjectNotFound, ServiceError
from sessionpool.faces.base import Runtime, tenant_agents
from sessionpool.faces.http import (
    JSON,
    OPENAI_CODES,
    PAGE_PARAMETERS,
    mount,
    page_request,
    parse_model,
    read_body,
    request_body,
    wire_code,
)
from sessionpool.faces.responses import parse, stream, wire
from sessionpool.faces.uploads import read_upload

logger = logging.getLogger("sessionpool.faces.responses")

M = TypeVar("M", bound=parse.WireModel)

#: JSON bodies larger than this are refused (uploads go through multipart)
MAX_JSON_BYTES = 16 * 1024 * 1024
#: how long a cancel waits for the run to stop before answering
CANCEL_WAIT_SECONDS = 15.0

#: where the routes are mounted, and whether that copy is in the OpenAPI description: one copy
#: (``/v1``) describes the API; the others are the same routes under Azure's bases
PREFIXES: tuple[tuple[str, bool], ...] = (
    ("/v1", True),
    ("/openai/v1", False),
    ("/api/projects/{project}/openai/v1", False),
)
FOUNDRY_PREFIXES: tuple[tuple[str, bool], ...] = (("/api/projects/{project}", False),)


# --- helpers ------------------------------------------------------------------------------------


#: the caller's tenant's agents (403 without the agents scope): every route starts here
service = tenant_agents


def api_base(request: Request) -> str:
    """The base URL this request came through (``.../v1``), for links to container files."""
    project = request.path_params.get("project")
    if project:
        prefix = f"/api/projects/{project}/openai/v1"
    elif request.url.path.startswith("/openai/v1/"):
        prefix = "/openai/v1"
    else:
        prefix = "/v1"
    return str(request.base_url).rstrip("/") + prefix


async def read_model(request: Request, model: type[M]) -> M:
    return parse_model(await read_body(request, MAX_JSON_BYTES), model)


def ok(data: Any) -> JSONResponse:
    return JSONResponse(data)


async def image_urls(
    svc: TenantAgents, steps: list[Step], base_url: str, known: dict[str, str] | None = None
) -> dict[str, str]:
    """URLs of the image outputs in ``steps`` (``wire.image_url``), added to ``known``."""
    urls = known if known is not None else {}
    for file_id in wire.image_file_ids(steps):
        if file_id in urls:
            continue
        try:
            f = await svc.files.get(file_id)
            data = None if f.container_id else await svc.files.content(file_id)
        except ObjectNotFound:
            continue  # deleted since: the item keeps a (dead) container link
        urls[file_id] = wire.image_url(f, data, base_url=base_url)
    return urls


async def render_response(svc: TenantAgents, run: Run, base_url: str) -> dict[str, Any]:
    steps: list[Step] = []
    messages: list[Message] = []
    if run.status is not RunStatus.QUEUED:
        steps = await svc.run_steps(run.id)
        messages = await svc.run_messages(run.id)
    urls = await image_urls(svc, steps, base_url)
    output = wire.run_output(run, steps, messages, base_url=base_url, image_urls=urls)
    return wire.response_object(run, output)


# --- responses ----------------------------------------------------------------------------------


async def resolve_agent(svc: TenantAgents, name: str, version: str | None) -> Agent:
    """A Foundry agent by name (the newest version unless ``version`` is given)."""
    found = [
        a
        for a in await svc.agents_named(name)
        if version is None or str(a.extra.get("version")) == version
    ]
    if not found:
        raise ObjectNotFound("agent", name if version is None else f"{name}:{version}")
    return found[-1]  # oldest first: the last is the newest


def echo_fields(
    req: parse.ResponseCreate, tools: list[dict[str, Any]] | None, agent: Agent | None
) -> dict[str, Any]:
    """What the response object gives back as it was asked (``Run.extra``)."""
    extra: dict[str, Any] = {
        "background": bool(req.background),
        "store": req.store if req.store is not None else True,
        "tools": tools or [],
        "previous_response_id": req.previous_response_id,
        "conversation": req.conversation_id,
    }
    for key in (
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "max_tool_calls",
        "text",
        "truncation",
        "user",
    ):
        value = getattr(req, key)
        if value is not None:
            extra[key] = value
    if agent is not None:
        extra["agent_reference"] = {"type": "agent_reference", "name": agent.name}
    return extra


async def create_response(request: Request) -> Response:
    svc = service(request, "creating responses")
    req: parse.ResponseCreate = await read_model(request, parse.ResponseCreate)
    base = api_base(request)
    parsed = parse.parse_input(req.input)
    agent: Agent | None = None
    ref = req.agent_name
    if ref is not None:
        agent = await resolve_agent(svc, *ref)
    wire_tools: list[dict[str, Any]] | None = req.tools
    if wire_tools is None and agent is not None:
        wire_tools = agent.tools
    spec = parse.parse_tools(wire_tools)
    run = await svc.start_response(
        ResponseRequest(
            messages=parsed.messages,
            conversation_id=req.conversation_id,
            previous_response_id=req.previous_response_id,
            agent_id=agent.id if agent is not None else None,
            model=req.model,
            instructions=req.instructions,
            input_instructions=parsed.instructions,
            tools=spec.tools if (spec.tools or agent is None) else None,
            container_id=spec.container_id,
            container_file_ids=spec.file_ids if spec.auto else [],
            container_network=spec.network,
            container_memory_bytes=spec.memory_bytes if spec.auto else None,
            container_memory_limit=spec.memory_limit if spec.auto else None,
            temperature=req.temperature,
            top_p=req.top_p,
            metadata=req.metadata,
            extra=echo_fields(req, wire_tools, agent),
        )
    )
    if req.stream:
        # subscribe before anything else awaits: the run has not started yet
        events = svc.events.subscribe(run.id)
        first = await anext(events, None)
        return StreamingResponse(
            stream_response(svc, run, events, first, base),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    if req.background:
        return ok(await render_response(svc, run, base))
    run = await svc.wait_run(run.id)
    return ok(await render_response(svc, run, base))


async def stream_response(
    svc: TenantAgents,
    run: Run,
    events: AsyncIterator[RunEvent],
    first: RunEvent | None,
    base_url: str,
    starting_after: int = -1,
) -> AsyncIterator[bytes]:
    """SSE for one response; events numbered up to ``starting_after`` are left out (a client
    resuming a stream has them already)."""
    async for chunk in _stream_events(svc, run, events, first, base_url):
        if chunk[1]["sequence_number"] > starting_after:
            yield stream.sse(chunk)


async def _stream_events(
    svc: TenantAgents,
    run: Run,
    events: AsyncIterator[RunEvent],
    first: RunEvent | None,
    base_url: str,
) -> AsyncIterator[stream.Event]:
    machine = stream.ResponseStream(run, base_url=base_url)
    for ev in machine.start():
        yield ev
    try:
        pending = first
        while pending is not None:
            if pending.step is not None:
                await image_urls(svc, [pending.step], base_url, machine.image_urls)
            for ev in machine.feed(pending):
                yield ev
            if pending.kind == "done" or (
                pending.kind == "run" and pending.run is not None and pending.run.status.terminal
            ):
                break
            pending = await anext(events, None)
        final = await svc.get_run(run.id)
        if not final.status.terminal:
            final = await svc.wait_run(run.id)
        response = await render_response(svc, final, base_url)
    except ServiceError as exc:
        for ev in machine.error(wire_code(exc, OPENAI_CODES), exc.message):
            yield ev
        return
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception:  # pragma: no cover - a subscription that fails to close
                logger.debug("closing the event subscription failed", exc_info=True)
    for ev in machine.finish(response):
        yield ev


async def get_response(request: Request, response_id: str) -> Response:
    """The response; with ``stream=true``, its events again (from ``starting_after`` on)."""
    svc = service(request, "reading responses")
    run = await svc.get_response(response_id)
    if request.query_params.get("stream", "").lower() == "true":
        raw_after = request.query_params.get("starting_after", "")
        try:
            starting_after = int(raw_after) if raw_after else -1
        except ValueError:
            raise InvalidArgument("starting_after must be an integer", "starting_after") from None
        events = svc.events.subscribe(run.id)
        first = await anext(events, None)
        return StreamingResponse(
            stream_response(
                svc,
                run.model_copy(update={"status": RunStatus.QUEUED, "usage": None}),
                events,
                first,
                api_base(request),
                starting_after,
            ),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    return ok(await render_response(svc, run, api_base(request)))


async def delete_response(request: Request, response_id: str) -> Response:
    svc = service(request, "deleting responses")
    run = await svc.get_response(response_id)
    await svc.delete_run(run.id)
    return ok(wire.response_deleted(run.id))


async def cancel_response(request: Request, response_id: str) -> Response:
    svc = service(request, "cancelling responses")
    run = await svc.get_response(response_id)
    if not run.status.terminal:
        await svc.cancel_run(run.id)
        run = await svc.wait_run(run.id, timeout=CANCEL_WAIT_SECONDS)
    return ok(await render_response(svc, run, api_base(request)))


async def list_input_items(request: Request, response_id: str) -> Response:
    svc = service(request, "reading responses")
    run = await svc.get_response(response_id)
    page = page_request(request.query_params)
    items: list[dict[str, Any]] = []
    for mid in run.input_message_ids:
        try:
            items.append(wire.message_item(await svc.get_message(run.conversation_id, mid)))
        except ObjectNotFound:
            continue  # deleted from the conversation since
    data, has_more = wire.paginate(items, limit=page.limit, order=page.order, after=page.after)
    return ok(wire.list_object(data, has_more))


# --- conversations ------------------------------------------------------------------------------


async def create_conversation(request: Request) -> Response:
    svc = service(request, "creating conversations")
    req: parse.ConversationCreate = await read_model(request, parse.ConversationCreate)
    parsed = parse.parse_input(req.items, "items")
    conv = await svc.create_conversation(
        metadata=req.metadata, messages=parsed.messages or None, instructions=parsed.instructions
    )
    return ok(wire.conversation_object(conv))


async def get_conversation(request: Request, conversation_id: str) -> Response:
    svc = service(request, "reading conversations")
    return ok(wire.conversation_object(await svc.get_conversation(conversation_id)))


async def update_conversation(request: Request, conversation_id: str) -> Response:
    svc = service(request, "changing conversations")
    req: parse.ConversationUpdate = await read_model(request, parse.ConversationUpdate)
    conv = await svc.update_conversation(conversation_id, metadata=req.metadata)
    return ok(wire.conversation_object(conv))


async def delete_conversation(request: Request, conversation_id: str) -> Response:
    svc = service(request, "deleting conversations")
    await svc.delete_conversation(conversation_id)
    return ok(wire.conversation_deleted(conversation_id))


async def conversation_items(
    svc: TenantAgents, request: Request, conversation_id: str
) -> list[dict[str, Any]]:
    await svc.get_conversation(conversation_id)
    messages = await svc.all_messages(conversation_id)
    runs = await svc.all_runs(conversation_id, kind="response")
    steps = {run.id: await svc.run_steps(run.id) for run in runs}
    base = api_base(request)
    urls = await image_urls(svc, [s for run_steps in steps.values() for s in run_steps], base)
    return wire.conversation_items(messages, runs, steps, base_url=base, image_urls=urls)


async def list_items(request: Request, conversation_id: str) -> Response:
    svc = service(request, "reading conversations")
    page = page_request(request.query_params)
    items = await conversation_items(svc, request, conversation_id)
    data, has_more = wire.paginate(items, limit=page.limit, order=page.order, after=page.after)
    return ok(wire.list_object(data, has_more))


async def create_items(request: Request, conversation_id: str) -> Response:
    svc = service(request, "adding conversation items")
    req: parse.ItemsCreate = await read_model(request, parse.ItemsCreate)
    parsed = parse.parse_input(req.items, "items")
    if parsed.instructions:
        raise InvalidArgument(
            "system and developer messages cannot be added to a conversation; send them as "
            "instructions",
            "items",
        )
    await svc.get_conversation(conversation_id)
    data = []
    for m in parsed.messages:
        message = await svc.add_message(
            conversation_id, role=m["role"], content=m["content"], attachments=m["attachments"]
        )
        data.append(wire.message_item(message))
    return ok(wire.list_object(data, False))


async def get_item(request: Request, conversation_id: str, item_id: str) -> Response:
    svc = service(request, "reading conversations")
    for item in await conversation_items(svc, request, conversation_id):
        if item["id"] == item_id:
            return ok(item)
    raise ObjectNotFound("item", item_id)


async def delete_item(request: Request, conversation_id: str, item_id: str) -> Response:
    svc = service(request, "deleting conversation items")
    conv = await svc.get_conversation(conversation_id)
    try:
        await svc.delete_message(conversation_id, item_id)
    except ObjectNotFound:
        for item in await conversation_items(svc, request, conversation_id):
            if item["id"] == item_id:
                raise InvalidArgument("only message items can be deleted here", "item_id") from None
        raise
    return ok(wire.conversation_object(conv))


# --- containers ---------------------------------------------------------------------------------


async def create_container(request: Request) -> Response:
    svc = service(request, "creating containers")
    req: parse.ContainerCreate = await read_model(request, parse.ContainerCreate)
    parse.refuse_skills(req.skills)
    minutes = req.expires_after.minutes if req.expires_after is not None else None
    if minutes is not None and minutes < 1:
        raise InvalidArgument("expires_after.minutes must be at least 1", "expires_after.minutes")
    container = await svc.containers.create(
        name=req.name,
        file_ids=req.file_ids,
        expires_after_minutes=minutes,
        memory_limit=req.memory_limit,
        memory_bytes=parse.parse_memory_limit(req.memory_limit),
        metadata=req.metadata,
        network=parse.parse_network_policy(req.network_policy),
    )
    return ok(wire.container_object(container, svc.containers.network_of(container)))


async def list_containers(request: Request) -> Response:
    svc = service(request, "listing containers")
    page = await svc.containers.page(page_request(request.query_params))
    data = [wire.container_object(c, svc.containers.network_of(c)) for c in page.items]
    return ok(wire.list_object(data, page.has_more))


async def get_container(request: Request, container_id: str) -> Response:
    svc = service(request, "reading containers")
    container = await svc.containers.get(container_id)
    return ok(wire.container_object(container, svc.containers.network_of(container)))


async def delete_container(request: Request, container_id: str) -> Response:
    svc = service(request, "deleting containers")
    await svc.containers.delete(container_id)
    return ok(wire.container_deleted(container_id))


async def create_container_file(request: Request, container_id: str) -> Response:
    svc = service(request, "adding container files")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await read_upload(request, svc.config.max_file_bytes, "agents.max_file_bytes")
        file_id = form.fields.get("file_id")
        if form.data is not None:
            stored = await svc.containers.add_file(
                container_id, filename=form.filename or "upload", data=form.data
            )
        elif file_id:
            stored = await svc.containers.add_file(container_id, file_id=file_id)
        else:
            raise InvalidArgument("send a 'file' part or a 'file_id' field", "file")
    else:
        req: parse.ContainerFileCreate = await read_model(request, parse.ContainerFileCreate)
        stored = await svc.containers.add_file(container_id, file_id=req.file_id)
    return ok(wire.container_file_object(stored, container_id))


async def list_container_files(request: Request, container_id: str) -> Response:
    svc = service(request, "listing container files")
    page = await svc.containers.page_files(container_id, page_request(request.query_params))
    data = [wire.container_file_object(f, container_id) for f in page.items]
    return ok(wire.list_object(data, page.has_more))


async def get_container_file(request: Request, container_id: str, file_id: str) -> Response:
    svc = service(request, "reading container files")
    stored = await svc.containers.get_file(container_id, file_id)
    return ok(wire.container_file_object(stored, container_id))


async def container_file_content(request: Request, container_id: str, file_id: str) -> Response:
    svc = service(request, "downloading container files")
    stored = await svc.containers.get_file(container_id, file_id)
    data = await svc.containers.file_content(container_id, file_id)
    media_type = mimetypes.guess_type(stored.filename)[0] or "application/octet-stream"
    name = stored.filename.replace('"', "")
    return Response(
        data,
        media_type=media_type,
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


async def delete_container_file(request: Request, container_id: str, file_id: str) -> Response:
    svc = service(request, "deleting container files")
    await svc.containers.delete_file(container_id, file_id)
    return ok(wire.container_file_deleted(file_id))


# --- Foundry agent versions (``/api/projects/{project}/agents/{name}/versions``) ------------------


def _agent_version(agent: Agent) -> dict[str, Any]:
    return wire.agent_version_object(
        agent.name or "",
        str(agent.extra.get("version", "1")),
        agent.extra.get("definition") or {},
        description=agent.description,
        created_at=agent.created_at,
        metadata=dict(agent.metadata),
    )


async def _agent_versions(svc: TenantAgents, name: str) -> list[Agent]:
    return [a for a in await svc.agents_named(name) if "version" in a.extra]


async def create_agent_version(request: Request, name: str) -> Response:
    svc = service(request, "creating agents")
    req: parse.AgentVersionCreate = await read_model(request, parse.AgentVersionCreate)
    definition = req.definition
    tools = definition.get("tools") or []
    parse.parse_tools(tools, "definition.tools")
    existing = await _agent_versions(svc, name)
    version = 1 + max((int(a.extra.get("version", 0)) for a in existing), default=0)
    agent = await svc.create_agent(
        model=definition.get("model"),
        name=name,
        description=req.description,
        instructions=definition.get("instructions"),
        tools=tools,
        temperature=definition.get("temperature"),
        top_p=definition.get("top_p"),
        metadata=req.metadata,
        extra={"version": version, "definition": definition},
    )
    return ok(_agent_version(agent))


async def get_agent_version(request: Request, name: str, version: str) -> Response:
    svc = service(request, "reading agents")
    for agent in await _agent_versions(svc, name):
        if str(agent.extra.get("version")) == version:
            return ok(_agent_version(agent))
    raise ObjectNotFound("agent version", f"{name}:{version}")


async def delete_agent_version(request: Request, name: str, version: str) -> Response:
    svc = service(request, "deleting agents")
    for agent in await _agent_versions(svc, name):
        if str(agent.extra.get("version")) == version:
            await svc.delete_agent(agent.id)
            return ok(
                {
                    "object": "agent.version.deleted",
                    "name": name,
                    "version": version,
                    "deleted": True,
                }
            )
    raise ObjectNotFound("agent version", f"{name}:{version}")


# --- the face ---------------------------------------------------------------------------------


#: ``openapi_extra`` of ``GET /responses/{id}``: its events again, from a sequence number on
STREAM_AGAIN: JSON = {
    "parameters": [
        {"name": "stream", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {
            "name": "starting_after",
            "in": "query",
            "required": False,
            "schema": {"type": "integer"},
        },
    ]
}
#: the container file upload: a file, or the id of a file object to copy
UPLOAD_FORM: JSON = {
    "type": "object",
    "properties": {"file": {"type": "string", "format": "binary"}, "file_id": {"type": "string"}},
}


def body(model: type[parse.WireModel], multipart: JSON | None = None) -> JSON:
    """A body the handler reads itself; the hosted APIs take an empty one for its defaults."""
    return request_body(model, required=False, multipart=multipart)


class ResponsesFace:
    name = "responses"

    def install(self, app: FastAPI) -> None:
        """The Responses, Conversations and Containers routes under every base, and Foundry's
        agent versions under its project base."""
        mount(app, self.router(), PREFIXES, codes=OPENAI_CODES)
        mount(app, self.foundry_router(), FOUNDRY_PREFIXES, codes=OPENAI_CODES)

    async def bind(self, runtime: Runtime) -> None:
        """The routes find the agents service on the application's runtime."""

    async def close(self) -> None:
        """Responses belong to the agents service, which the server closes after its faces."""

    def router(self) -> APIRouter:
        router = APIRouter(tags=["responses"])
        add = router.add_api_route
        add(
            "/responses",
            create_response,
            methods=["POST"],
            summary="Create a response",
            openapi_extra=body(parse.ResponseCreate),
        )
        add(
            "/responses/{response_id}",
            get_response,
            methods=["GET"],
            summary="Get a response",
            openapi_extra=STREAM_AGAIN,
        )
        add(
            "/responses/{response_id}",
            delete_response,
            methods=["DELETE"],
            summary="Delete a response",
        )
        add(
            "/responses/{response_id}/cancel",
            cancel_response,
            methods=["POST"],
            summary="Cancel a background response",
        )
        add(
            "/responses/{response_id}/input_items",
            list_input_items,
            methods=["GET"],
            summary="List a response's input items",
            openapi_extra=PAGE_PARAMETERS,
        )
        add(
            "/conversations",
            create_conversation,
            methods=["POST"],
            summary="Create a conversation",
            openapi_extra=body(parse.ConversationCreate),
        )
        add(
            "/conversations/{conversation_id}",
            get_conversation,
            methods=["GET"],
            summary="Get a conversation",
        )
        add(
            "/conversations/{conversation_id}",
            update_conversation,
            methods=["POST"],
            summary="Update a conversation's metadata",
            openapi_extra=body(parse.ConversationUpdate),
        )
        add(
            "/conversations/{conversation_id}",
            delete_conversation,
            methods=["DELETE"],
            summary="Delete a conversation",
        )
        add(
            "/conversations/{conversation_id}/items",
            list_items,
            methods=["GET"],
            summary="List a conversation's items",
            openapi_extra=PAGE_PARAMETERS,
        )
        add(
            "/conversations/{conversation_id}/items",
            create_items,
            methods=["POST"],
            summary="Add items to a conversation",
            openapi_extra=body(parse.ItemsCreate),
        )
        add(
            "/conversations/{conversation_id}/items/{item_id}",
            get_item,
            methods=["GET"],
            summary="Get a conversation item",
        )
        add(
            "/conversations/{conversation_id}/items/{item_id}",
            delete_item,
            methods=["DELETE"],
            summary="Delete a conversation item",
        )
        add(
            "/containers",
            create_container,
            methods=["POST"],
            summary="Create a container",
            openapi_extra=body(parse.ContainerCreate),
        )
        add(
            "/containers",
            list_containers,
            methods=["GET"],
            summary="List containers",
            openapi_extra=PAGE_PARAMETERS,
        )
        add("/containers/{container_id}", get_container, methods=["GET"], summary="Get a container")
        add(
            "/containers/{container_id}",
            delete_container,
            methods=["DELETE"],
            summary="Delete a container",
        )
        add(
            "/containers/{container_id}/files",
            create_container_file,
            methods=["POST"],
            summary="Add a file to a container (an upload, or a file_id to copy)",
            openapi_extra=body(parse.ContainerFileCreate, UPLOAD_FORM),
        )
        add(
            "/containers/{container_id}/files",
            list_container_files,
            methods=["GET"],
            summary="List a container's files",
            openapi_extra=PAGE_PARAMETERS,
        )
        add(
            "/containers/{container_id}/files/{file_id}",
            get_container_file,
            methods=["GET"],
            summary="Get a container file",
        )
        add(
            "/containers/{container_id}/files/{file_id}",
            delete_container_file,
            methods=["DELETE"],
            summary="Delete a container file",
        )
        add(
            "/containers/{container_id}/files/{file_id}/content",
            container_file_content,
            methods=["GET"],
            response_class=Response,
            summary="Download a container file's bytes",
        )
        return router

    def foundry_router(self) -> APIRouter:
        router = APIRouter(tags=["foundry agents"])
        router.add_api_route("/agents/{name}/versions", create_agent_version, methods=["POST"])
        router.add_api_route(
            "/agents/{name}/versions/{version}", get_agent_version, methods=["GET"]
        )
        router.add_api_route(
            "/agents/{name}/versions/{version}", delete_agent_version, methods=["DELETE"]
        )
        return router
