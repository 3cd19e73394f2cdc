"""What every face needs the same way: errors as HTTP answers, mounting, request bodies and
their OpenAPI description, validation messages, paging.

Errors: every non-2xx response carries an ``x-ms-error-code`` header and a body
``{"error": {"code": ..., "message": ...}}``: the Azure REST convention that the dynamic-sessions
clients expect, and a plain shape for anything else. The exception handlers installed here make
sure that nothing a client can send ends as a bare 500: engine errors map to the status their
meaning calls for, malformed input to 400.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from sessionpool import errors

logger = logging.getLogger("sessionpool.server")

#: a JSON object as faces build and read them
JSON = dict[str, Any]

ERROR_CODE_HEADER = "x-ms-error-code"


class HttpError(Exception):
    """An answer decided at the HTTP layer (bad query, bad body, too large ...)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


#: most specific first; the first isinstance match wins
_STATUS_BY_ERROR: tuple[tuple[type[errors.SessionpoolError], int], ...] = (
    # Azure answers 404 when a pool cannot hand out another session; clients rely on it.
    (errors.PoolExhausted, 404),
    (errors.PoolNotFound, 404),
    (errors.PoolClosed, 503),
    (errors.InvalidIdentifier, 400),
    (errors.SessionNotFound, 404),
    (errors.SessionLost, 503),
    # the kernel is our upstream: a malformed frame from it is a bad gateway, not a client error
    (errors.ProtocolError, 502),
    (errors.InvalidPath, 400),
    (errors.FileNotFound, 404),
    (errors.NotARegularFile, 400),
    (errors.FileTooLarge, 413),
    (errors.QuotaExceeded, 413),
    (errors.SandboxError, 503),
    (errors.ObjectNotFound, 404),
    (errors.InvalidRequest, 400),
    (errors.Conflict, 409),
)

_CODE_BY_STATUS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "BadRequest",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status_for(exc: errors.SessionpoolError) -> int:
    """The HTTP status for an engine error; 500 only for errors that are the server's fault."""
    for cls, status in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    """``{"error": {code, message, type, param}}``: the Azure REST shape (code, message) that
    is also the OpenAI one (message, type, param, code), so every client family reads it."""
    all_headers = {ERROR_CODE_HEADER: code, **(headers or {})}
    if status == 409:
        # openai-python retries a 409 by default; a busy thread stays busy for its whole run
        all_headers.setdefault("x-should-retry", "false")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"code": code, "message": message, "type": kind, "param": param}
    return JSONResponse({"error": body}, status_code=status, headers=all_headers)


def describe_validation(problems: Iterable[Mapping[str, Any]]) -> str:
    """pydantic's (or FastAPI's) validation errors as one line: ``where: what; ...``."""
    parts = []
    for err in problems:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _on_engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.SessionpoolError)
    status = status_for(exc)
    if status >= 500:
        logger.warning(
            "%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc
        )
    return error_response(status, exc.code, exc.message, param=getattr(exc, "param", None))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "InvalidRequest", describe_validation(exc.errors()))


async def _on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "Error")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = (
            f"no operation at {request.method} {request.url.path}; pool endpoints look like "
            "/pools/<pool>/... or .../sessionPools/<pool>/..."
        )
    return error_response(exc.status_code, code, message, exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "InternalError", "an unexpected error occurred; the server log has the details"
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HttpError, _on_http_error)
    app.add_exception_handler(errors.SessionpoolError, _on_engine_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_starlette_error)
    app.add_exception_handler(Exception, _on_unexpected)


# --- mounting and the OpenAPI description ----------------------------------------------------


def mount(
    app: FastAPI, router: APIRouter, prefixes: Sequence[tuple[str, bool]], **options: Any
) -> None:
    """Include ``router`` under every prefix a client uses; only those marked True are in the
    OpenAPI description (the others are the same operations again)."""
    for prefix, described in prefixes:
        app.include_router(router, prefix=prefix, include_in_schema=described, **options)


def inline_defs(schema: JSON) -> JSON:
    """``schema`` with pydantic's ``#/$defs/...`` references replaced by their definitions.

    Inside an OpenAPI document such a reference resolves against the document's root, where no
    ``$defs`` exists: left in place it dangles (fuzzers and client generators then cannot build
    a body at all). Request models are not recursive.
    """
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: JSON = walk(schema)
    return inlined


def request_body(
    model: type[BaseModel], *, required: bool = True, multipart: JSON | None = None
) -> JSON:
    """``openapi_extra`` describing a JSON body read as ``model`` (handlers read raw bodies
    themselves, so FastAPI cannot see it), and optionally a multipart form schema too."""
    content: JSON = {"application/json": {"schema": inline_defs(model.model_json_schema())}}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": required, "content": content}}


# --- request bodies ----------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length", "")
    too_large = HttpError(413, "PayloadTooLarge", f"request bodies are limited to {limit} bytes")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect as exc:
        raise HttpError(400, "ClientDisconnected", "the client went away mid-request") from exc
    return bytes(body)


# --- Server-Sent Events ------------------------------------------------------------------------


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event; ``data`` as compact JSON on one line (JSON escapes every newline),
    or verbatim when it is a string (the ``[DONE]`` sentinel)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()
