"""Streaming executions: ``POST <pool endpoint>/executions/stream`` answers Server-Sent Events.

Azure's API answers only when a cell finishes; this route (a sessionpool extension, same auth,
limits and session as the dynamic-sessions routes) sends stdout and stderr as the cell writes
them, then the final result. Events (docs/streaming.md):

    event: stdout            data: {"text": "..."}
    event: stderr            data: {"text": "..."}
    event: result            data: <the POST executions resource: status, result, error>
    event: error             data: {"error": {"code": ..., "message": ...}}  (instead of result)

Errors known before the cell starts (key, pool, body, identifier, exhausted pool) are ordinary
HTTP errors, as on every other route. A client that goes away interrupts its cell.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sessionpool import errors
from sessionpool.engine import Engine
from sessionpool.faces.aca import models, translate
from sessionpool.faces.aca.params import family, identifier
from sessionpool.faces.aca.routes import IDENTIFIER_PARAM, decode_code, read_json
from sessionpool.faces.common import sse
from sessionpool.server.errors import HttpError
from sessionpool.types import ExecutionResult

PATH = "/executions/stream"


def _engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HttpError(503, "ServiceUnavailable", "the server is starting; retry shortly")
    assert isinstance(engine, Engine)
    return engine


async def stream_execution(request: Request, pool: str) -> Response:
    p = _engine(request).pool(pool)
    ident = identifier(request)
    family(request)
    req = await read_json(request, models.ExecutionRequest)
    if req.code is None:
        raise HttpError(
            400, "StreamingNeedsCode", "only code can be streamed; POST executions runs shell"
        )
    code = decode_code(req.codeInputType, req.code)
    timeout = p.config.execution_timeout_seconds
    if req.timeoutInSeconds is not None:
        timeout = min(timeout, req.timeoutInSeconds)
    session = await p.acquire(ident)
    execution_id = request.headers.get("operation-id") or str(uuid.uuid4())
    chunks: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

    async def run() -> ExecutionResult:
        try:
            return await session.execute(
                code,
                timeout=req.timeoutInSeconds,
                on_output=lambda name, text: chunks.put_nowait((name, text)),
            )
        finally:
            chunks.put_nowait(None)

    task = asyncio.create_task(run())

    async def events() -> AsyncIterator[bytes]:
        try:
            while (item := await chunks.get()) is not None:
                yield sse(item[0], {"text": item[1]})
            try:
                res = await task
            except errors.SessionpoolError as exc:
                yield sse("error", {"error": {"code": exc.code, "message": exc.message}})
                return
            resource = translate.execution_resource(
                res,
                execution_id=execution_id,
                identifier=ident,
                execution_type="Synchronous",
                timeout_s=timeout,
                max_length=req.outputStreamsMaxLength,
            )
            yield sse("result", resource.dump())
        finally:
            if not task.done():
                task.cancel()  # the client went away: the session interrupts the cell

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={
            "cache-control": "no-cache",
            "x-accel-buffering": "no",  # proxies must not hold events back
            "operation-id": execution_id,
        },
    )


def install_stream(app: FastAPI) -> None:
    """Mount the streaming route under every pool endpoint shape (as the aca face does)."""
    router = APIRouter()
    router.add_api_route(
        PATH,
        stream_execution,
        methods=["POST"],
        summary="Run Python code, streaming its output as Server-Sent Events (sessionpool)",
        response_class=StreamingResponse,
        openapi_extra={
            "parameters": [IDENTIFIER_PARAM],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": models.ExecutionRequest.model_json_schema()}
                },
            },
            "responses": {"200": {"content": {"text/event-stream": {}}}},
        },
    )
    # described once (like the aca face's routes); the other prefixes are the same operation
    app.include_router(router, prefix="/pools/{pool}")
    app.include_router(router, prefix="/sessionPools/{pool}", include_in_schema=False)
    app.include_router(
        router, prefix="/{endpoint_base:path}/sessionPools/{pool}", include_in_schema=False
    )
