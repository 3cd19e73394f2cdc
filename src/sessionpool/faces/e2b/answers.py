"""Errors in E2B's shape, for the control plane and the sandbox apps alike."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse

from sessionpool import errors
from sessionpool.faces.http import read_body, status_for

#: JSON bodies (a sandbox's create, a cell's code) are refused past this, before buffering more
MAX_JSON_BYTES = 16 * 1024 * 1024


async def json_body(request: Request) -> bytes:
    """The request's body, at most :data:`MAX_JSON_BYTES` (413 past it)."""
    return await read_body(request, MAX_JSON_BYTES)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """E2B's error body: the SDKs read ``message`` (and turn 401, 404, 429 into their own
    exceptions)."""
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def service_error(exc: errors.ServiceError) -> JSONResponse:
    """An engine error in E2B's terms: a full pool or a tenant's quota is E2B's 429 (its
    concurrent-sandboxes limit, the SDKs' RateLimitException), with Retry-After for a quota."""
    if isinstance(exc, errors.TenantQuotaExceeded):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return error(429, exc.message, {"retry-after": retry})
    if exc.code is errors.ErrorCode.POOL_AT_CAPACITY:
        return error(429, exc.message)
    return error(status_for(exc), exc.message)
