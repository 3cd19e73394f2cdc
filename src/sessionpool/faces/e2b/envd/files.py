"""envd's REST routes: ``GET /files`` (download), ``POST /files`` (upload: multipart, or the
raw body with ``application/octet-stream``), ``GET /health``.

Uploads stream into the session's workspace (never held whole), bounded by the pool's per-file
limit and counted against the tenant's upload quota, as dynamic-sessions uploads are. Errors are
envd's JSON (``{"code", "message"}``): the SDKs read ``message`` and map 404 to a missing file.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sessionpool import errors
from sessionpool.faces.base import require
from sessionpool.faces.e2b.envd.common import root_of, to_client, to_session
from sessionpool.faces.e2b.routing import FACE_KEY, current_sandbox, open_session
from sessionpool.faces.http import HttpError
from sessionpool.faces.uploads import DRAIN_LIMIT, FRAMING_ALLOWANCE, open_multipart
from sessionpool.tenancy import Scope
from sessionpool.types import FileInfo

_STATUS: dict[errors.ErrorCode, int] = {
    errors.ErrorCode.FILE_NOT_FOUND: 404,
    errors.ErrorCode.SESSION_NOT_FOUND: 404,
    errors.ErrorCode.INVALID_PATH: 400,
    errors.ErrorCode.NOT_A_REGULAR_FILE: 400,
    errors.ErrorCode.INVALID_ARGUMENT: 400,
    errors.ErrorCode.FILE_OVER_LIMIT: 413,
    errors.ErrorCode.QUOTA_EXCEEDED: 507,
    errors.ErrorCode.SCOPE_DENIED: 403,
    errors.ErrorCode.TENANT_QUOTA: 429,
    errors.ErrorCode.POOL_AT_CAPACITY: 429,
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status, headers=headers)


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, errors.ServiceError):
        headers = None
        if isinstance(exc, errors.TenantQuotaExceeded):
            headers = {"retry-after": str(max(1, int(exc.retry_after + 0.999)))}
        return _error(_STATUS.get(exc.code, 500), str(exc), headers)
    if isinstance(exc, HttpError):
        return _error(exc.status, exc.message)
    raise exc


async def health(request: Request) -> Response:
    return Response(status_code=204)


async def download(request: Request) -> Response:
    path = request.query_params.get("path", "")
    try:
        require(request, Scope.FILES, "reading files")
        session = await open_session(request)
        info, chunks = await session.download(to_session(path))
    except (errors.ServiceError, HttpError) as exc:
        return error_response(exc)
    name = info.name.replace('"', "")
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(info.size),
            "content-disposition": f'attachment; filename="{name}"',
        },
    )


def _write_info(info: FileInfo, root: str) -> dict[str, Any]:
    return {
        "name": info.name,
        "type": "dir" if info.is_dir else "file",
        "path": to_client(info.path, root),
    }


async def _gunzip(body: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """A gzip body (``Content-Encoding: gzip``) inflated as it arrives, bounded by ``limit``
    (a small body must not inflate into the server's memory)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = 0
    async for chunk in body:
        data = inflater.decompress(chunk, limit + 1 - out)
        out += len(data)
        if out > limit or inflater.unconsumed_tail:
            raise errors.FileOverLimit("upload", limit)
        yield data
    tail = inflater.flush()
    if out + len(tail) > limit:
        raise errors.FileOverLimit("upload", limit)
    if tail:
        yield tail


async def upload(request: Request) -> Response:
    try:
        return await _upload(request)
    except ClientDisconnect:
        return _error(400, "the client went away mid-upload")
    except (errors.ServiceError, HttpError) as exc:
        return error_response(exc)
    except (gzip.BadGzipFile, zlib.error) as exc:
        return _error(400, f"the gzip body does not inflate: {exc}")


async def _upload(request: Request) -> Response:
    who = require(request, Scope.FILES, "uploading files")
    sandbox = current_sandbox(request)
    face = request.scope[FACE_KEY]
    limit = face.engine.pool(sandbox.pool).config.limits.file_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FRAMING_ALLOWANCE + DRAIN_LIMIT:
        return _error(413, f"the upload is larger than the per-file limit of {limit} bytes")
    face.quotas.upload_allowed(who.tenant, int(declared) if declared.isdigit() else None)
    session = await open_session(request)
    path = request.query_params.get("path")
    ctype = request.headers.get("content-type", "")
    body: AsyncIterator[bytes] = request.stream()
    if request.headers.get("content-encoding", "").strip().lower() == "gzip":
        body = _gunzip(body, limit)
    written: list[dict[str, Any]] = []
    if not ctype.startswith("multipart/"):
        if not path:
            return _error(400, "the path query parameter is required")
        info = await session.write_file(to_session(path), body)
        face.quotas.uploaded(who.tenant, info.size)
        return JSONResponse([_write_info(info, root_of(path))])
    reader = await open_multipart(ctype, body, limit)
    try:
        while (part := await reader.next_part()) is not None:
            if part.filename is None:
                continue  # a plain form field
            # one file: the path parameter names it; several: each part's file name does
            target = path or part.filename
            if not target.strip():
                return _error(400, "a file part needs a path (its file name)")
            info = await session.write_file(to_session(target), part.chunks())
            face.quotas.uploaded(who.tenant, info.size)
            written.append(_write_info(info, root_of(target)))
    except (errors.ServiceError, HttpError):
        await reader.drain()
        raise
    if not written:
        return _error(400, "the multipart body has no file part")
    return JSONResponse(written)
