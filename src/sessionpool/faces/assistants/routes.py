"""The Assistants v2 face: one router, mounted under every prefix the clients use.

- ``/v1``: openai-python ``client.beta.*`` and ``client.files``
- ``/agents/v1.0/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices
  /workspaces/{p}``: azure-ai-projects 1.0.0b1 ... b10 (``from_connection_string``)
- ``/api/projects/{p}``: azure-ai-agents 1.x (``AgentsClient``)
- ``/openai``: ``AzureOpenAI``

Every answer is HTTP 200 with a JSON object (Azure's clients accept nothing else); the
``api-version`` query and the ``OpenAI-Beta`` header are accepted and ignored. Errors are the
OpenAI error envelope, which Azure's clients read too.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sessionpool import errors
from sessionpool.agents.service import TenantAgents
from sessionpool.agents.types import Run
from sessionpool.faces.assistants import parse, wire
from sessionpool.faces.assistants.stream import run_stream
from sessionpool.faces.base import Runtime, tenant_agents
from sessionpool.faces.http import (
    JSON,
    OPENAI_CODES,
    PAGE_PARAMETERS,
    mount,
    page_request,
    parse_object,
    read_body,
    sse,
)
from sessionpool.faces.uploads import read_upload

logger = logging.getLogger("sessionpool.faces.assistants")

AZURE_HUB_PREFIX = (
    "/agents/v1.0/subscriptions/{subscription}/resourceGroups/{resource_group}"
    "/providers/Microsoft.MachineLearningServices/workspaces/{project}"
)
#: (prefix, in the OpenAPI description): the others are the same operations again
PREFIXES: tuple[tuple[str, bool], ...] = (
    ("/v1", True),
    (AZURE_HUB_PREFIX, False),
    ("/api/projects/{project}", False),
    ("/openai", False),
)

#: where azure-ai-projects 2.x points its OpenAI client; the Responses face serves the rest
FOUNDRY_OPENAI_PREFIX = "/api/projects/{project}/openai/v1"
#: Azure OpenAI's v1 base (``AzureOpenAI`` with ``base_url=.../openai/v1``): files here too
AZURE_OPENAI_V1_PREFIX = "/openai/v1"
#: the files routes also answer under those two bases
FILES_ONLY_PREFIXES: tuple[tuple[str, bool], ...] = (
    (FOUNDRY_OPENAI_PREFIX, False),
    (AZURE_OPENAI_V1_PREFIX, False),
)

#: how long openai-python waits between polls of a run (it reads this header)
POLL_AFTER_MS = "200"
POLL_HEADERS = {"openai-poll-after-ms": POLL_AFTER_MS}

#: JSON bodies larger than this are refused (messages carry text, not files)
MAX_JSON_BYTES = 32 * 1024 * 1024

FUNCTION_TOOLS_UNSUPPORTED = (
    "only code_interpreter tools run on this server; function tools are not supported"
)


# --- helpers -----------------------------------------------------------------------------------


#: the caller's tenant's agents (403 without the agents scope): every route starts here
service = tenant_agents


async def body(request: Request) -> JSON:
    return parse_object(await read_body(request, MAX_JSON_BYTES))


def ok(data: JSON, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, headers=headers)


def query(request: Request) -> dict[str, str]:
    return dict(request.query_params)


# --- assistants --------------------------------------------------------------------------------


def _agent_fields(data: JSON) -> JSON:
    resources = parse.opt_object(data, "tool_resources")
    fields: JSON = {
        "name": parse.opt_str(data, "name"),
        "description": parse.opt_str(data, "description"),
        "instructions": parse.opt_str(data, "instructions"),
        "tools": parse.opt_tools(data),
        "file_ids": parse.code_interpreter_file_ids(resources),
        "temperature": parse.opt_number(data, "temperature"),
        "top_p": parse.opt_number(data, "top_p"),
        "response_format": data.get("response_format"),
        "metadata": parse.opt_metadata(data),
    }
    others = parse.other_tool_resources(resources)
    if others:
        fields["extra"] = {"tool_resources": others}
    return fields


async def create_assistant(request: Request) -> Response:
    svc = service(request, "creating assistants")
    data = await body(request)
    agent = await svc.create_agent(model=parse.opt_str(data, "model"), **_agent_fields(data))
    return ok(wire.assistant(agent))


async def list_assistants(request: Request) -> Response:
    svc = service(request, "listing assistants")
    page = await svc.list_agents(page_request(query(request)))
    return ok(wire.page(page, wire.assistant))


async def get_assistant(request: Request, assistant_id: str) -> Response:
    svc = service(request, "reading assistants")
    return ok(wire.assistant(await svc.get_agent(assistant_id)))


async def update_assistant(request: Request, assistant_id: str) -> Response:
    svc = service(request, "changing assistants")
    data = await body(request)
    changes = {k: v for k, v in _agent_fields(data).items() if v is not None}
    model = parse.opt_str(data, "model")
    if model:
        changes["model"] = model
    agent = await svc.update_agent(assistant_id, **changes)
    return ok(wire.assistant(agent))


async def delete_assistant(request: Request, assistant_id: str) -> Response:
    svc = service(request, "deleting assistants")
    await svc.delete_agent(assistant_id)
    return ok(wire.deleted(assistant_id, "assistant.deleted"))


# --- threads -----------------------------------------------------------------------------------


def _thread_fields(data: JSON) -> JSON:
    resources = parse.opt_object(data, "tool_resources")
    fields: JSON = {
        "metadata": parse.opt_metadata(data),
        "file_ids": parse.code_interpreter_file_ids(resources),
        "messages": parse.new_messages(data, "messages") or None,
    }
    others = parse.other_tool_resources(resources)
    if others:
        fields["extra"] = {"tool_resources": others}
    return fields


async def create_thread(request: Request) -> Response:
    svc = service(request, "creating threads")
    data = await body(request)
    conversation = await svc.create_conversation(**_thread_fields(data))
    return ok(wire.thread(conversation))


# declared before /threads/{thread_id}: "runs" is not a thread id
async def create_thread_and_run(request: Request) -> Response:
    svc = service(request, "starting runs")
    data = await body(request)
    options = _run_options(data)
    stream = bool(parse.opt_bool(data, "stream"))
    thread_data = parse.opt_object(data, "thread") or {}
    fields = _thread_fields(thread_data)
    # tool_resources next to the thread apply to it as well
    more = parse.code_interpreter_file_ids(parse.opt_object(data, "tool_resources"))
    if more:
        fields["file_ids"] = [*(fields.get("file_ids") or []), *more]
    await svc.get_agent(options["agent_id"])
    conversation = await svc.create_conversation(**fields)
    prelude = [sse("thread.created", wire.thread(conversation))] if stream else None
    return await _start(request, svc, conversation.id, options, stream, prelude)


async def get_thread(request: Request, thread_id: str) -> Response:
    svc = service(request, "reading threads")
    return ok(wire.thread(await svc.get_conversation(thread_id)))


async def update_thread(request: Request, thread_id: str) -> Response:
    svc = service(request, "changing threads")
    data = await body(request)
    conversation = await svc.update_conversation(thread_id, metadata=parse.opt_metadata(data))
    return ok(wire.thread(conversation))


async def delete_thread(request: Request, thread_id: str) -> Response:
    svc = service(request, "deleting threads")
    await svc.delete_conversation(thread_id)
    return ok(wire.deleted(thread_id, "thread.deleted"))


# --- messages ----------------------------------------------------------------------------------


async def create_message(request: Request, thread_id: str) -> Response:
    svc = service(request, "adding messages")
    data = await body(request)
    if "content" not in data:
        raise errors.InvalidArgument("'content' is required", "content")
    msg = await svc.add_message(
        thread_id,
        role=parse.role(data.get("role", "user")),
        content=parse.message_content(data.get("content")),
        attachments=parse.attachments(data.get("attachments")),
        metadata=parse.opt_metadata(data),
    )
    return ok(wire.message(msg))


async def list_messages(request: Request, thread_id: str) -> Response:
    svc = service(request, "listing messages")
    q = query(request)
    page = await svc.list_messages(thread_id, page_request(q), run_id=q.get("run_id") or None)
    return ok(wire.page(page, wire.message))


async def get_message(request: Request, thread_id: str, message_id: str) -> Response:
    svc = service(request, "reading messages")
    return ok(wire.message(await svc.get_message(thread_id, message_id)))


async def update_message(request: Request, thread_id: str, message_id: str) -> Response:
    svc = service(request, "changing messages")
    data = await body(request)
    msg = await svc.update_message(thread_id, message_id, metadata=parse.opt_metadata(data))
    return ok(wire.message(msg))


async def delete_message(request: Request, thread_id: str, message_id: str) -> Response:
    svc = service(request, "deleting messages")
    await svc.delete_message(thread_id, message_id)
    return ok(wire.deleted(message_id, "thread.message.deleted"))


# --- runs --------------------------------------------------------------------------------------

#: run fields kept verbatim and echoed back in the run object
_RUN_EXTRA = (
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "max_prompt_tokens",
    "max_completion_tokens",
)


def _run_options(data: JSON) -> JSON:
    assistant_id = data.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise errors.InvalidArgument("'assistant_id' is required", "assistant_id")
    extra = {k: data[k] for k in _RUN_EXTRA if data.get(k) is not None}
    return {
        "agent_id": assistant_id,
        "model": parse.opt_str(data, "model") or None,
        "instructions": parse.opt_str(data, "instructions"),
        "additional_instructions": parse.opt_str(data, "additional_instructions"),
        "tools": parse.opt_tools(data),
        "temperature": parse.opt_number(data, "temperature"),
        "top_p": parse.opt_number(data, "top_p"),
        "metadata": parse.opt_metadata(data),
        "extra": extra or None,
    }


async def _start(
    request: Request,
    svc: TenantAgents,
    thread_id: str,
    options: JSON,
    stream: bool,
    prelude: list[bytes] | None = None,
) -> Response:
    run = await svc.start_run(thread_id, **options)
    if not stream:
        return ok(wire.run(run), POLL_HEADERS)
    # subscribe before anything else awaits: the run starts when this task yields
    events = svc.events.subscribe(run.id)

    async def final() -> Run:
        return await svc.get_run(run.id)

    return StreamingResponse(
        run_stream(run, events, final, prelude),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def create_run(request: Request, thread_id: str) -> Response:
    svc = service(request, "starting runs")
    data = await body(request)
    options = _run_options(data)
    stream = bool(parse.opt_bool(data, "stream"))
    additional = parse.new_messages(data, "additional_messages")
    await svc.get_conversation(thread_id)
    await svc.get_agent(options["agent_id"])
    for msg in additional:
        await svc.add_message(thread_id, **msg)
    return await _start(request, svc, thread_id, options, stream)


async def list_runs(request: Request, thread_id: str) -> Response:
    svc = service(request, "listing runs")
    page = await svc.list_runs(thread_id, page_request(query(request)))
    return ok(wire.page(page, wire.run))


async def get_run(request: Request, thread_id: str, run_id: str) -> Response:
    svc = service(request, "reading runs")
    run = await svc.get_run(run_id, thread_id)
    return ok(wire.run(run), POLL_HEADERS)


async def update_run(request: Request, thread_id: str, run_id: str) -> Response:
    svc = service(request, "changing runs")
    data = await body(request)
    metadata = parse.opt_metadata(data)
    if metadata is None:  # nothing to change
        run = await svc.get_run(run_id, thread_id)
    else:
        run = await svc.update_run(run_id, thread_id, metadata=metadata)
    return ok(wire.run(run), POLL_HEADERS)


async def cancel_run(request: Request, thread_id: str, run_id: str) -> Response:
    svc = service(request, "cancelling runs")
    run = await svc.cancel_run(run_id, thread_id)
    return ok(wire.run(run), POLL_HEADERS)


async def submit_tool_outputs(request: Request, thread_id: str, run_id: str) -> Response:
    svc = service(request, "submitting tool outputs")
    await svc.get_run(run_id, thread_id)
    raise errors.InvalidArgument(FUNCTION_TOOLS_UNSUPPORTED, "tool_outputs")


# --- run steps ---------------------------------------------------------------------------------


async def list_steps(request: Request, thread_id: str, run_id: str) -> Response:
    svc = service(request, "listing run steps")
    page = await svc.list_steps(run_id, page_request(query(request)), conversation_id=thread_id)
    return ok(wire.page(page, wire.step))


async def get_step(request: Request, thread_id: str, run_id: str, step_id: str) -> Response:
    svc = service(request, "reading run steps")
    await svc.get_run(run_id, thread_id)
    step = await svc.get_step(run_id, step_id)
    if step.conversation_id != thread_id:
        raise errors.ObjectNotFound("run step", step_id)
    return ok(wire.step(step))


# --- files -------------------------------------------------------------------------------------


async def upload_file(request: Request) -> Response:
    svc = service(request, "uploading files")
    form = await read_upload(request, svc.config.max_file_bytes, "agents.max_file_bytes")
    if form.data is None:
        raise errors.InvalidArgument(
            "a multipart part 'file' (with a filename) is required", "file"
        )
    stored = await svc.files.create(
        filename=form.filename or "upload",
        data=form.data,
        purpose=form.fields.get("purpose") or "assistants",
    )
    return ok(wire.file(stored))


async def list_files(request: Request) -> Response:
    svc = service(request, "listing files")
    q = query(request)
    page = await svc.files.page(page_request(q), q.get("purpose") or None)
    return ok(wire.page(page, wire.file))


async def get_file(request: Request, file_id: str) -> Response:
    svc = service(request, "reading files")
    return ok(wire.file(await svc.files.get(file_id)))


async def delete_file(request: Request, file_id: str) -> Response:
    svc = service(request, "deleting files")
    await svc.files.delete(file_id)
    return ok(wire.deleted(file_id, "file"))


async def file_content(request: Request, file_id: str) -> Response:
    svc = service(request, "downloading files")
    data = await svc.files.content(file_id)
    return Response(data, media_type="application/octet-stream")


# --- installation ------------------------------------------------------------------------------


# --- the face ---------------------------------------------------------------------------------


class AssistantsFace:
    name = "assistants"

    def install(self, app: FastAPI) -> None:
        """The Assistants routes under every prefix; the files routes under Foundry's and Azure
        OpenAI's v1 bases too (``get_openai_client()`` uploads there)."""
        mount(app, self.router(), PREFIXES, codes=OPENAI_CODES)
        mount(app, self.files_router(), PREFIXES + FILES_ONLY_PREFIXES, codes=OPENAI_CODES)

    async def bind(self, runtime: Runtime) -> None:
        """The routes find the agents service on the application's runtime."""

    async def close(self) -> None:
        """Runs belong to the agents service, which the server closes after its faces."""

    def router(self) -> APIRouter:
        r = APIRouter(tags=["assistants"])
        r.add_api_route(
            "/assistants",
            create_assistant,
            methods=["POST"],
            summary="Create an assistant",
        )
        r.add_api_route(
            "/assistants",
            list_assistants,
            methods=["GET"],
            summary="List assistants",
            openapi_extra=PAGE_PARAMETERS,
        )
        r.add_api_route(
            "/assistants/{assistant_id}",
            get_assistant,
            methods=["GET"],
            summary="Get an assistant",
        )
        r.add_api_route(
            "/assistants/{assistant_id}",
            update_assistant,
            methods=["POST"],
            summary="Update an assistant",
        )
        r.add_api_route(
            "/assistants/{assistant_id}",
            delete_assistant,
            methods=["DELETE"],
            summary="Delete an assistant",
        )
        r.add_api_route(
            "/threads",
            create_thread,
            methods=["POST"],
            summary="Create a thread",
        )
        r.add_api_route(
            "/threads/runs",
            create_thread_and_run,
            methods=["POST"],
            summary="Create a thread and start a run on it",
        )
        r.add_api_route(
            "/threads/{thread_id}",
            get_thread,
            methods=["GET"],
            summary="Get a thread",
        )
        r.add_api_route(
            "/threads/{thread_id}",
            update_thread,
            methods=["POST"],
            summary="Update a thread",
        )
        r.add_api_route(
            "/threads/{thread_id}",
            delete_thread,
            methods=["DELETE"],
            summary="Delete a thread",
        )
        r.add_api_route(
            "/threads/{thread_id}/messages",
            create_message,
            methods=["POST"],
            summary="Add a message to a thread",
        )
        r.add_api_route(
            "/threads/{thread_id}/messages",
            list_messages,
            methods=["GET"],
            summary="List a thread's messages, newest first",
            openapi_extra=PAGE_PARAMETERS,
        )
        r.add_api_route(
            "/threads/{thread_id}/messages/{message_id}",
            get_message,
            methods=["GET"],
            summary="Get a message",
        )
        r.add_api_route(
            "/threads/{thread_id}/messages/{message_id}",
            update_message,
            methods=["POST"],
            summary="Update a message",
        )
        r.add_api_route(
            "/threads/{thread_id}/messages/{message_id}",
            delete_message,
            methods=["DELETE"],
            summary="Delete a message",
        )
        r.add_api_route(
            "/threads/{thread_id}/runs",
            create_run,
            methods=["POST"],
            summary="Start a run on a thread",
        )
        r.add_api_route(
            "/threads/{thread_id}/runs",
            list_runs,
            methods=["GET"],
            summary="List a thread's runs",
            openapi_extra=PAGE_PARAMETERS,
        )
        r.add_api_route(
            "/threads/{thread_id}/runs/{run_id}",
            get_run,
            methods=["GET"],
            summary="Get a run",
        )
        r.add_api_route(
            "/threads/{thread_id}/runs/{run_id}",
            update_run,
            methods=["POST"],
            summary="Update a run",
        )
        r.add_api_route(
            "/threads/{thread_id}/runs/{run_id}/cancel",
            cancel_run,
            methods=["POST"],
            summary="Cancel a run",
        )
        r.add_api_route(
            "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
            submit_tool_outputs,
            methods=["POST"],
            summary="Not supported: only the code interpreter runs here",
        )
        r.add_api_route(
            "/threads/{thread_id}/runs/{run_id}/steps",
            list_steps,
            methods=["GET"],
            summary="List a run's steps",
            openapi_extra=PAGE_PARAMETERS,
        )
        r.add_api_route(
            "/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
            get_step,
            methods=["GET"],
            summary="Get a run step",
        )
        return r

    def files_router(self) -> APIRouter:
        r = APIRouter(tags=["files"])
        r.add_api_route(
            "/files",
            upload_file,
            methods=["POST"],
            summary="Upload a file (multipart: file, purpose)",
        )
        r.add_api_route(
            "/files",
            list_files,
            methods=["GET"],
            summary="List files",
            openapi_extra=PAGE_PARAMETERS,
        )
        r.add_api_route(
            "/files/{file_id}",
            get_file,
            methods=["GET"],
            summary="Get a file object",
        )
        r.add_api_route(
            "/files/{file_id}",
            delete_file,
            methods=["DELETE"],
            summary="Delete a file",
        )
        r.add_api_route(
            "/files/{file_id}/content",
            file_content,
            methods=["GET"],
            summary="Download a file's bytes",
        )
        return r
