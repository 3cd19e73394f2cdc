"""What every face needs the same way: errors as HTTP answers (each face naming the neutral
error codes in its own vocabulary), mounting, request bodies and their OpenAPI description,
validation messages, paging, Server-Sent Events.

Errors: every non-2xx response carries an ``x-ms-error-code`` header and a body
``{"error": {"code": ..., "message": ...}}``: the Azure REST convention that the dynamic-sessions
clients expect, and a plain shape for anything else. The exception handlers installed here make
sure that nothing a client can send ends as a bare 500: engine errors map to the status their
meaning calls for, malformed input to 400.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionpool import errors
from sessionpool.agents.types import PageRequest
from sessionpool.errors import InvalidArgument

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


Code = errors.ErrorCode

#: what each neutral code means over HTTP, in every face
STATUS: Mapping[Code, int] = {
    Code.INTERNAL: 500,
    Code.CONFIG: 500,
    Code.SANDBOX_FAILED: 503,
    Code.SANDBOX_UNAVAILABLE: 503,
    Code.POOL_NOT_FOUND: 404,
    # Azure answers 404 when a pool cannot hand out another session; clients rely on it
    Code.POOL_AT_CAPACITY: 404,
    Code.POOL_CLOSED: 503,
    Code.INVALID_IDENTIFIER: 400,
    Code.SESSION_NOT_FOUND: 404,
    Code.INTERPRETER_LOST: 503,
    # the kernel is our upstream: a malformed frame from it is a bad gateway, not a client error
    Code.KERNEL_PROTOCOL: 502,
    Code.INVALID_PATH: 400,
    Code.FILE_NOT_FOUND: 404,
    Code.NOT_A_REGULAR_FILE: 400,
    Code.FILE_OVER_LIMIT: 413,
    Code.QUOTA_EXCEEDED: 413,
    Code.OBJECT_NOT_FOUND: 404,
    Code.INVALID_ARGUMENT: 400,
    Code.CONFLICT: 409,
    Code.SCOPE_DENIED: 403,
    Code.TENANT_QUOTA: 429,
}

#: the neutral codes' wire names in the Azure REST vocabulary (``x-ms-error-code``), which the
#: dynamic-sessions clients read; every route a face does not claim answers with these too
AZURE_CODES: Mapping[Code, str] = {
    Code.INTERNAL: "InternalError",
    Code.CONFIG: "InvalidConfiguration",
    Code.SANDBOX_FAILED: "SandboxFailure",
    Code.SANDBOX_UNAVAILABLE: "SandboxUnavailable",
    Code.POOL_NOT_FOUND: "PoolNotFound",
    Code.POOL_AT_CAPACITY: "SessionPoolExhausted",
    Code.POOL_CLOSED: "PoolClosed",
    Code.INVALID_IDENTIFIER: "InvalidIdentifier",
    Code.SESSION_NOT_FOUND: "SessionNotFound",
    Code.INTERPRETER_LOST: "SessionLost",
    Code.KERNEL_PROTOCOL: "SessionProtocolError",
    Code.INVALID_PATH: "InvalidFilePath",
    Code.FILE_NOT_FOUND: "FileNotFound",
    Code.NOT_A_REGULAR_FILE: "NotARegularFile",
    Code.FILE_OVER_LIMIT: "FileTooLarge",
    Code.QUOTA_EXCEEDED: "DiskQuotaExceeded",
    Code.OBJECT_NOT_FOUND: "NotFound",
    Code.INVALID_ARGUMENT: "InvalidRequest",
    Code.CONFLICT: "Conflict",
    Code.SCOPE_DENIED: "Forbidden",
    Code.TENANT_QUOTA: "TooManyRequests",
}

#: the OpenAI-style faces (Assistants, Responses): OpenAI's own codes where it has them
OPENAI_CODES: Mapping[Code, str] = {
    **AZURE_CODES,
    Code.OBJECT_NOT_FOUND: "not_found",
    Code.INVALID_ARGUMENT: "invalid_request",
    Code.CONFLICT: "conflict",
    Code.SCOPE_DENIED: "forbidden",
    Code.TENANT_QUOTA: "rate_limit_exceeded",
}


def wire_code(exc: errors.ServiceError, codes: Mapping[Code, str] = AZURE_CODES) -> str:
    return codes.get(exc.code, codes[Code.INTERNAL])


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


def status_for(exc: errors.ServiceError) -> int:
    """The HTTP status for an engine error; 500 only for errors that are the server's fault."""
    return STATUS.get(exc.code, 500)


def _wire_codes(request: Request) -> Mapping[Code, str]:
    """The vocabulary of the face whose route took ``request`` (see ``mount``)."""
    claimed: dict[int, Mapping[Code, str]] = getattr(request.app.state, "wire_codes", {})
    return claimed.get(id(request.scope.get("route")), AZURE_CODES)


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
    assert isinstance(exc, errors.ServiceError)
    status = status_for(exc)
    code = wire_code(exc, _wire_codes(request))
    if status >= 500:
        logger.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, code, exc)
    headers = {}
    if isinstance(exc, errors.TenantQuotaExceeded):
        # whole seconds, rounded up: every client library reads the integer form
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return error_response(status, code, exc.message, headers, param=getattr(exc, "param", None))


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
    app.add_exception_handler(errors.ServiceError, _on_engine_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_starlette_error)
    app.add_exception_handler(Exception, _on_unexpected)


# --- mounting and the OpenAPI description ----------------------------------------------------


class DirectRoute(Route):
    """One of a face's busiest operations, matched first and called without FastAPI's routing
    through included routers and its dependency solving (15-18 % of the server's CPU per
    execute request, measured under load). It serves only handlers that take the request and
    string path parameters and read the body themselves, which is every face's shape; the
    ``APIRoute`` it stands in front of stays for the OpenAPI description, and is what the
    request's scope names (audit records, traces and error vocabularies are unchanged)."""

    def __init__(self, path: str, inner: APIRoute) -> None:
        handler = inner.endpoint
        names = [n for n in inspect.signature(handler).parameters if n != "request"]

        async def endpoint(request: Request) -> Response:
            params = request.path_params
            answer: Response = await handler(request, **{n: params[n] for n in names})
            return answer

        methods = sorted(inner.methods or ())
        super().__init__(path, endpoint, methods=methods, name=inner.name, include_in_schema=False)
        self.inner = inner

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.inner
        await super().handle(scope, receive, send)


class HotRoutes:
    """The innermost middleware: a request for a ``DirectRoute`` is handed to it here, with
    the scope the framework's exception middleware, exit stack and router would have given
    it, instead of passing through those six layers. Each is a coroutine that every request
    enters, and passes through again each time the request resumes (after the kernel's
    answer, after each send): for the busiest operations, a third of the frames between the
    server and the handler. Errors are answered by the same handlers, found the same way
    (``wrap_app_handling_exceptions`` inside the route reads them from the scope); anything
    else, a method the route does not take included, goes on as before."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router  # its routes are read when the first request comes
        self.direct: list[DirectRoute] | None = None
        #: what the exception middleware puts in the scope; without one next, nothing is direct
        self.handlers: tuple[Any, Any] | None = None
        if isinstance(app, ExceptionMiddleware):
            self.handlers = (app._exception_handlers, app._status_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.handlers is not None:
            if self.direct is None:
                self.direct = [r for r in self.router.routes if isinstance(r, DirectRoute)]
            for route in self.direct:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    scope["starlette.exception_handlers"] = self.handlers
                    scope.setdefault("router", self.router)
                    scope["route"] = route.inner
                    await route.app(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def mount(
    app: FastAPI,
    router: APIRouter,
    prefixes: Sequence[tuple[str, bool]],
    *,
    codes: Mapping[Code, str] = AZURE_CODES,
    direct: Iterable[str] = (),
    **options: Any,
) -> None:
    """Include ``router`` under every prefix a client uses; only those marked True are in the
    OpenAPI description (the others are the same operations again). Errors on these routes
    are answered with ``codes``, the face's names for the neutral error codes. The operations
    named in ``direct`` (endpoint names) are also served by a ``DirectRoute`` each, ahead of
    every other route."""
    claimed: dict[int, Mapping[Code, str]] = getattr(app.state, "wire_codes", {})
    app.state.wire_codes = claimed
    for prefix, described in prefixes:
        before = len(app.router.routes)
        app.include_router(router, prefix=prefix, include_in_schema=described, **options)
        for route in app.router.routes[before:]:
            claimed[id(route)] = codes
    # this FastAPI includes a router as one entry that dispatches to the router's own routes,
    # and those are what a request's scope names: claim them too
    for route in router.routes:
        claimed[id(route)] = codes
    wanted = set(direct)
    inner = [r for r in router.routes if isinstance(r, APIRoute) and r.name in wanted]
    if len(inner) != len(wanted):
        missing = wanted - {r.name for r in inner}
        raise ValueError(f"no operation named {sorted(missing)} to serve directly")
    # the prefixes in their order, as include_router matched them
    app.router.routes[0:0] = [
        DirectRoute(prefix + r.path, r) for prefix, _ in prefixes for r in inner
    ]


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

M = TypeVar("M", bound=BaseModel)


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


def parse_object(raw: bytes) -> JSON:
    """The request body as a JSON object; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return value


def parse_model(raw: bytes, model: type[M]) -> M:
    """``raw`` JSON (an empty body is ``{}``) as ``model``: InvalidArgument naming the first
    bad field otherwise."""
    data = parse_object(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        problems = describe_validation(exc.errors())
        raise InvalidArgument(f"invalid request body: {problems}", param) from None


# --- paging ------------------------------------------------------------------------------------

#: the largest page the list operations give
MAX_PAGE = 100

#: ``openapi_extra`` of a list operation: the cursor-paging query ``page_request`` reads
PAGE_PARAMETERS: JSON = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in (
            ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
            ("order", {"type": "string", "enum": ["asc", "desc"]}),
            ("after", {"type": "string"}),
            ("before", {"type": "string"}),
        )
    ]
}


def page_request(query: Mapping[str, str]) -> PageRequest:
    """``limit`` (1..100, default 20), ``order`` (default desc), ``after``, ``before``."""
    limit = 20
    raw = query.get("limit")
    if raw not in (None, ""):
        try:
            limit = int(str(raw))
        except ValueError:
            raise InvalidArgument("'limit' must be an integer from 1 to 100", "limit") from None
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("'limit' must be an integer from 1 to 100", "limit")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidArgument("'order' must be 'asc' or 'desc'", "order")
    return PageRequest(
        limit=limit,
        order="asc" if order == "asc" else "desc",
        after=query.get("after") or None,
        before=query.get("before") or None,
    )
