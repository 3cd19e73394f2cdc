"""Error rendering for every HTTP answer that is not a success.

Every non-2xx response carries an ``x-ms-error-code`` header and a body
``{"error": {"code": ..., "message": ...}}``: the Azure REST convention that the dynamic-sessions
clients expect, and a plain shape for anything else. The exception handlers installed here make
sure that nothing a client can send ends as a bare 500: engine errors map to the status their
meaning calls for, malformed input to 400.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sessionpool import errors

logger = logging.getLogger("sessionpool.server")

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


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
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
    return error_response(400, "InvalidRequest", _describe_validation(exc))


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
