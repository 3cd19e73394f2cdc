"""Streaming executions: ``POST <pool endpoint>/executions/stream`` answers Server-Sent Events.

Azure's API answers only when a cell finishes; this route of the ACA face (a sessionpool
extension, same auth, limits and session as the dynamic-sessions routes) sends stdout and stderr
as the cell writes them, then the final result. Events (docs/streaming.md):

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
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sessionpool import errors
from sessionpool.faces.aca import models, translate
from sessionpool.faces.aca.params import decode_code, family, read_json
from sessionpool.faces.http import HttpError, sse, wire_code
from sessionpool.pool import PoolHandle, SessionHandle
from sessionpool.types import ExecutionResult

PATH = "/executions/stream"


async def stream_execution(
    request: Request,
    p: PoolHandle,
    ident: str,
    acquire: Callable[[], Awaitable[SessionHandle]],
) -> Response:
    """Stream a cell of session ``ident`` (as the caller named it) of pool ``p``; ``acquire``
    gets the session, allocating it in the caller's namespace within its quotas."""
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
    session = await acquire()
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
            except errors.ServiceError as exc:
                yield sse("error", {"error": {"code": wire_code(exc), "message": exc.message}})
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
