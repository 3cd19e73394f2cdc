"""The dynamic-sessions routes, both API families, mounted under every pool endpoint shape.

A pool endpoint is ``/pools/<pool>``, or any path ending in ``/sessionPools/<pool>`` (the shape of
an Azure endpoint, so a client's configured URL keeps working with only the host changed). The
operation is appended to it; the ``api-version`` query parameter picks the family where one path
means different things (``GET files``, uploads).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sessionpool import errors, paths
from sessionpool.faces.aca import models, stream, translate
from sessionpool.faces.aca.executions import Execution, ExecutionStore
from sessionpool.faces.aca.params import (
    Family,
    decode_code,
    family,
    identifier,
    query,
    read_json,
    version_at_least,
)
from sessionpool.faces.base import Runtime, require
from sessionpool.faces.http import HttpError, mount, request_body, wire_code
from sessionpool.faces.quotas import Quotas
from sessionpool.faces.uploads import (
    DRAIN_LIMIT,
    FRAMING_ALLOWANCE,
    open_multipart,
)
from sessionpool.pool import EngineHandle, PoolHandle, SessionHandle
from sessionpool.tenancy import Principal, Scope, identifier_of, session_key
from sessionpool.types import ExecutionStatus, FileInfo, RuntimeInfo

logger = logging.getLogger("sessionpool.faces.aca")

#: sessions per page of ``GET listSessions``
PAGE_SIZE = 100
#: a pool endpoint: ``/pools/<pool>``, or anything ending in ``/sessionPools/<pool>`` (Azure's
#: shape); described once
PREFIXES: tuple[tuple[str, bool], ...] = (
    ("/pools/{pool}", True),
    ("/sessionPools/{pool}", False),
    ("/{endpoint_base:path}/sessionPools/{pool}", False),
)

IDENTIFIER_PARAM = {
    "name": "identifier",
    "in": "query",
    "required": True,
    "description": "The session: allocated on first use, kept until it cools down",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
_VERSION_PARAM = {
    "name": "api-version",
    "in": "query",
    "required": False,
    "description": "2024-02-02-preview, 2024-10-02-preview, 2025-02-02-preview or "
    "2025-10-02-preview (default 2024-02-02-preview); a newer date is served as the newest",
    "schema": {"type": "string"},
}
_PATH_PARAM = {
    "name": "path",
    "in": "query",
    "required": False,
    "description": "Directory under /mnt/data (executions family)",
    "schema": {"type": "string"},
}


def _params(*extra: dict[str, Any], session: bool = True) -> dict[str, Any]:
    params = [IDENTIFIER_PARAM] if session else []
    return {"parameters": [*params, _VERSION_PARAM, *extra]}


def _multipart_body() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                }
            },
        }
    }


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def json_response(
    model: models._Wire, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        content=model.json_bytes(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


class AcaFace:
    """The face's routes and the little state it keeps (executions for ``GET executions/<id>``)."""

    name = "aca"

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._executions = ExecutionStore()
        self._metadata: dict[str, models.Metadata] = {}
        self._started_at = time.time()

    # --- lifecycle -----------------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        # the execute operations are the hot path: served without FastAPI's generic routing
        hot = ("code_execute", "python_execute", "create_execution")
        mount(app, self.router(), PREFIXES, tags=["dynamic sessions"], direct=hot)

    async def bind(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def close(self) -> None:
        """Cancel asynchronous executions still running (the engine is closing their sessions)."""
        await self._executions.close()

    def router(self) -> APIRouter:
        r = APIRouter()
        r.add_api_route(
            "/code/execute",
            self.code_execute,
            methods=["POST"],
            summary="Run Python code (2024-02-02-preview)",
            response_model=models.ExecuteResponse,
            openapi_extra=_merge(_params(), request_body(models.ExecuteRequest)),
        )
        r.add_api_route(
            "/python/execute",
            self.python_execute,
            methods=["POST"],
            summary="Run Python code, the result's fields flat (the first preview; LlamaIndex TS)",
            response_model=models.FlatExecuteResponse,
            openapi_extra=_merge(_params(), request_body(models.PythonExecuteRequest)),
        )
        r.add_api_route(
            "/executions",
            self.create_execution,
            methods=["POST"],
            summary="Run Python code or a shell command (2024-10-02-preview and later)",
            response_model=models.CodeExecutionResource | models.ShellExecutionResource,
            openapi_extra=_merge(_params(), request_body(models.ExecutionRequest)),
        )
        r.add_api_route(
            stream.PATH,
            self.stream_execution,
            methods=["POST"],
            summary="Run Python code, streaming its output as Server-Sent Events (sessionpool)",
            response_class=StreamingResponse,
            openapi_extra=_merge(
                {"parameters": [IDENTIFIER_PARAM]},
                request_body(models.ExecutionRequest),
                {"responses": {"200": {"content": {"text/event-stream": {}}}}},
            ),
        )
        r.add_api_route(
            "/executions/{execution_id}",
            self.get_execution,
            methods=["GET"],
            summary="An execution's status and result",
            response_model=models.CodeExecutionResource | models.ShellExecutionResource,
            openapi_extra=_params(),
        )
        r.add_api_route(
            "/files/upload",
            self.upload,
            methods=["POST"],
            summary="Upload files into /mnt/data (2024-02-02-preview)",
            # both upload paths answer in the shape of the api-version's family
            response_model=models.FileList | models.SessionResourceFile,
            openapi_extra=_merge(_params(_PATH_PARAM), _multipart_body()),
        )
        r.add_api_route(
            "/files",
            self.upload,
            methods=["POST"],
            summary="Upload a file into /mnt/data (2024-10-02-preview and later)",
            response_model=models.SessionResourceFile | models.FileList,
            openapi_extra=_merge(_params(_PATH_PARAM), _multipart_body()),
        )
        r.add_api_route(
            "/files",
            self.list_files,
            methods=["GET"],
            summary="List files; the item shape follows api-version",
            response_model=models.FileList | models.SessionResourceFileList,
            openapi_extra=_params(
                _PATH_PARAM,
                {
                    "name": "recursive",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean"},
                },
            ),
        )
        r.add_api_route(
            "/files/{file_path:path}",
            self.get_file,
            methods=["GET"],
            summary="A file: content (files/content/<name>, files/<name>/content) or metadata",
            response_model=models.SessionResourceFile,
            openapi_extra=_params(_PATH_PARAM),
        )
        r.add_api_route(
            "/files/{file_path:path}",
            self.delete_file,
            methods=["DELETE"],
            status_code=204,
            summary="Delete a file",
            openapi_extra=_params(_PATH_PARAM),
        )
        r.add_api_route(
            "/session",
            self.get_session,
            methods=["GET"],
            summary="A session's timestamps",
            response_model=models.SessionResource,
            openapi_extra=_params(),
        )
        r.add_api_route(
            "/session",
            self.delete_session,
            methods=["DELETE"],
            status_code=204,
            summary="Destroy a session and its files (idempotent)",
            openapi_extra=_params(),
        )
        r.add_api_route(
            "/session/network",
            self.get_network,
            methods=["GET"],
            summary="A session's egress policy and its latest decisions (sessionpool)",
            openapi_extra=_params(),
        )
        r.add_api_route(
            "/session/network",
            self.set_network,
            methods=["PUT"],
            summary="Narrow a session's egress from its pool's; holds at once (sessionpool)",
            openapi_extra=_merge(_params(), request_body(models.NetworkPolicy)),
        )
        r.add_api_route(
            "/listSessions",
            self.list_sessions,
            methods=["GET"],
            summary="Sessions allocated in the pool",
            response_model=models.SessionList,
            openapi_extra=_params(
                {"name": "skip", "in": "query", "required": False, "schema": {"type": "integer"}},
                session=False,
            ),
        )
        r.add_api_route(
            "/metadata",
            self.metadata,
            methods=["GET"],
            summary="Runtime and preinstalled packages",
            response_model=models.Metadata,
            openapi_extra=_params(session=False),
        )
        return r

    # --- helpers -------------------------------------------------------------------------------

    @property
    def engine(self) -> EngineHandle:
        if self._runtime is None:
            raise HttpError(503, "ServiceUnavailable", "the server is starting; retry shortly")
        return self._runtime.engine

    @property
    def stopping(self) -> bool:
        """The server is stopping: executions it ends answer 503, not a result."""
        return self._runtime is not None and self._runtime.stopping

    def _stopped(self) -> HttpError:
        return HttpError(
            503,
            "ServerShuttingDown",
            "the server shut down while this was running; the session and its files are gone",
        )

    @property
    def quotas(self) -> Quotas:
        return self._runtime.quotas if self._runtime is not None else Quotas()

    def _open(
        self, request: Request, pool: str, scope: Scope, operation: str
    ) -> tuple[PoolHandle, str, str, Principal]:
        """The pool, the identifier as the caller named it, the session's key in the pool (the
        caller's tenant's namespace), and the caller, once it is known to carry ``scope``."""
        who = require(request, scope, operation, pool)
        p = self.engine.pool(pool)
        ident = identifier(request)
        return p, ident, session_key(who.tenant, ident), who

    async def _acquire(self, p: PoolHandle, who: Principal, key: str) -> SessionHandle:
        """The session, allocated on first use within the tenant's ``max_sessions``."""
        if self.quotas.of(who.tenant).max_sessions <= 0:
            return await p.acquire(key)
        session = await p.lookup(key)
        if session is not None:
            return session
        async with self.quotas.new_session(who.tenant, lambda: self._live(who.tenant)):
            return await p.acquire(key)

    async def _live(self, tenant: str) -> int:
        """The tenant's live sessions, over every pool."""
        total = 0
        for handle in self.engine.pools.values():
            total += sum(
                identifier_of(tenant, s.identifier) is not None
                for s in await handle.list_sessions()
            )
        return total

    def _effective_timeout(self, pool_default: float, requested: float | None) -> float:
        return pool_default if requested is None else min(requested, pool_default)

    # --- 2024-02-02-preview --------------------------------------------------------------------

    async def code_execute(self, request: Request, pool: str) -> Response:
        p, _, key, who = self._open(request, pool, Scope.EXECUTE, "running code")
        family(request)
        body = await read_json(request, models.ExecuteRequest)
        props = body.properties
        code = decode_code(props.codeInputType, props.code)
        return json_response(await self._run_cell(p, key, who, code, props.timeoutInSeconds))

    async def python_execute(self, request: Request, pool: str) -> Response:
        """The first preview's ``python/execute``: ``pythonCode`` in, the result's fields flat
        at the top level out (LlamaIndex TS reads ``result``, ``stdout``, ``stderr`` there)."""
        p, ident, key, who = self._open(request, pool, Scope.EXECUTE, "running code")
        family(request)
        body = await read_json(request, models.PythonExecuteRequest)
        props = body.properties
        if props.identifier is not None and props.identifier != ident:
            raise HttpError(
                400,
                "IdentifierMismatch",
                f"properties.identifier {props.identifier!r} is not the query's identifier "
                f"{ident!r}: the query names the session",
            )
        code = decode_code(props.codeInputType, props.pythonCode)
        answer = await self._run_cell(p, key, who, code, props.timeoutInSeconds)
        flat = models.FlatExecuteResponse(
            **answer.properties.model_dump(by_alias=False, exclude={"id_"})
        )
        return json_response(flat)

    async def _run_cell(
        self, p: PoolHandle, key: str, who: Principal, code: str, requested: float | None
    ) -> models.ExecuteResponse:
        """A cell in the session, answered in the 2024-02-02-preview shape."""
        timeout = self._effective_timeout(p.config.execution_timeout_seconds, requested)
        self.quotas.execution(who.tenant)
        session = await self._acquire(p, who, key)
        try:
            res = await session.execute(code, timeout=requested)
        except errors.ServiceError as exc:
            if self.stopping:
                raise self._stopped() from exc
            if isinstance(exc, errors.InterpreterLost):
                return translate.lost_response(f"SessionLost: {exc.message}")
            raise
        if self.stopping and res.status is ExecutionStatus.LOST:
            raise self._stopped()
        return translate.execute_response(res, timeout)

    # --- files (both families) -----------------------------------------------------------------

    async def upload(self, request: Request, pool: str) -> Response:
        p, _, key, who = self._open(request, pool, Scope.FILES, "uploading files")
        fam = family(request)
        limit = p.config.limits.file_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + FRAMING_ALLOWANCE + DRAIN_LIMIT:
            raise HttpError(
                413,
                "FileTooLarge",
                f"the upload is larger than the per-file limit of {limit} bytes",
                headers={"connection": "close"},
            )
        self.quotas.upload_allowed(who.tenant, int(declared) if declared.isdigit() else None)
        session = await self._acquire(p, who, key)
        directory = query(request).get("path")
        stored: list[FileInfo] = []
        try:
            reader = await open_multipart(
                request.headers.get("content-type"), request.stream(), limit
            )
            try:
                while (part := await reader.next_part()) is not None:
                    if part.filename is None:
                        continue  # a plain form field
                    if not part.filename.strip():
                        raise HttpError(400, "MissingFileName", "a file part needs a file name")
                    target = paths.joined(directory, part.filename)
                    stored.append(await session.write_file(target, part.chunks()))
                    self.quotas.uploaded(who.tenant, stored[-1].size)
            except (errors.ServiceError, HttpError):
                await reader.drain()
                raise
        except ClientDisconnect as exc:
            raise HttpError(400, "ClientDisconnected", "the client went away mid-upload") from exc
        if not stored:
            raise HttpError(
                400, "MissingFile", "the multipart body has no file part (field 'file')"
            )
        if fam is Family.PROPERTIES:
            return json_response(
                models.FileList.numbered([translate.file_properties(i) for i in stored])
            )
        return json_response(translate.resource_file(stored[0]))

    async def list_files(self, request: Request, pool: str) -> Response:
        p, _, key, who = self._open(request, pool, Scope.FILES, "listing files")
        fam = family(request)
        q = query(request)
        session = await self._acquire(p, who, key)
        directory = paths.relative(q.get("path", ""))
        if fam is Family.PROPERTIES:
            # one flat list of files, sub-paths included, as uploads name them
            infos = await session.list_files(directory, recursive=True)
            return json_response(
                models.FileList.numbered(
                    [translate.file_properties(i) for i in infos if not i.is_dir]
                )
            )
        recursive = q.get("recursive", "").strip().lower() in ("true", "1", "yes")
        infos = await session.list_files(directory, recursive=recursive)
        return json_response(
            models.SessionResourceFileList(value=[translate.resource_file(i) for i in infos])
        )

    async def get_file(self, request: Request, pool: str, file_path: str) -> Response:
        p, _, key, who = self._open(request, pool, Scope.FILES, "reading files")
        fam = family(request)
        directory = query(request).get("path")
        if file_path.startswith("content/") and (
            fam is Family.PROPERTIES or not file_path.endswith("/content")
        ):
            name, download = file_path[len("content/") :], True
        elif file_path.endswith("/content"):
            name, download = file_path[: -len("/content")], True
        else:
            name, download = file_path, False
        target = paths.joined(directory, name)
        session = await self._acquire(p, who, key)
        if download:
            info, chunks = await session.download(target)
            return StreamingResponse(
                chunks,
                media_type="application/octet-stream",
                headers={"content-length": str(info.size)},
            )
        info = await session.stat_file(target)
        if fam is Family.PROPERTIES:
            props = translate.file_properties(info)
            props.id_ = "2"
            return json_response(models.FileItem(**{"$id": "1"}, properties=props))
        return json_response(translate.resource_file(info))

    async def delete_file(self, request: Request, pool: str, file_path: str) -> Response:
        p, _, key, who = self._open(request, pool, Scope.FILES, "deleting files")
        family(request)
        target = paths.joined(query(request).get("path"), file_path)
        session = await self._acquire(p, who, key)
        await session.delete_file(target)
        return Response(status_code=204)

    # --- executions family ---------------------------------------------------------------------

    def _operation_location(self, request: Request, execution_id: str, ident: str) -> str:
        path = request.url.path
        path = path[: path.rindex("/executions")] if "/executions" in path else path
        version = query(request).get("api-version", "")
        return str(
            request.url.replace(
                path=f"{path}/executions/{quote(execution_id, safe='')}",
                query=f"identifier={quote(ident, safe='')}&api-version={quote(version, safe='')}",
            )
        )

    async def create_execution(self, request: Request, pool: str) -> Response:
        p, ident, key, who = self._open(request, pool, Scope.EXECUTE, "running code")
        family(request)
        req = await read_json(request, models.ExecutionRequest)
        execution_id = request.headers.get("operation-id") or str(uuid.uuid4())
        timeout = self._effective_timeout(p.config.execution_timeout_seconds, req.timeoutInSeconds)
        self.quotas.execution(who.tenant)
        session = await self._acquire(p, who, key)
        headers = {
            "operation-id": execution_id,
            "Operation-Location": self._operation_location(request, execution_id, ident),
        }
        # 2024-10-02-preview answers 202 to every execute; later versions 200 when it is done
        done_status = 200 if version_at_least(request, "2025-02-02") else 202

        if req.shellCommand is not None:
            try:
                shell = await session.run_shell(req.shellCommand, timeout=req.timeoutInSeconds)
            except errors.ServiceError as exc:
                if self.stopping:
                    raise self._stopped() from exc
                raise
            if self.stopping and shell.exit_code == 137:
                raise self._stopped()
            resource: models._Wire = translate.shell_resource(
                shell, execution_id=execution_id, identifier=ident, timeout_s=timeout
            )
            self._executions.remember(execution_id, Execution(pool, key, resource))
            return json_response(resource, done_status, headers)

        assert req.code is not None
        code = decode_code(req.codeInputType, req.code)
        asynchronous = req.executionType.strip().lower() == "asynchronous"
        execution_type: Literal["Synchronous", "Asynchronous"] = (
            "Asynchronous" if asynchronous else "Synchronous"
        )

        async def run() -> models.CodeExecutionResource:
            try:
                res = await session.execute(code, timeout=req.timeoutInSeconds)
            except errors.ServiceError as exc:
                return models.CodeExecutionResource(
                    id=execution_id,
                    identifier=ident,
                    executionType=execution_type,
                    status="Failed",
                    error=models.ErrorEnvelope(
                        error=models.ErrorDetail(code=wire_code(exc), message=exc.message)
                    ),
                )
            return translate.execution_resource(
                res,
                execution_id=execution_id,
                identifier=ident,
                execution_type=execution_type,
                timeout_s=timeout,
                max_length=req.outputStreamsMaxLength,
            )

        if not asynchronous:
            resource = await run()
            if self.stopping and resource.status == "Failed":
                raise self._stopped()
            self._executions.remember(execution_id, Execution(pool, key, resource))
            return json_response(resource, done_status, headers)

        record = Execution(
            pool,
            key,
            models.CodeExecutionResource(
                id=execution_id, identifier=ident, executionType="Asynchronous", status="Running"
            ),
        )
        record.task = asyncio.create_task(self._finish(record, run))
        self._executions.remember(execution_id, record)
        return json_response(record.resource, 202, headers)

    async def _finish(
        self, record: Execution, run: Callable[[], Awaitable[models.CodeExecutionResource]]
    ) -> None:
        try:
            self._executions.update(record, await run())
        except Exception:  # pragma: no cover - run() turns engine errors into results
            logger.exception("asynchronous execution failed")
            running = record.resource
            assert isinstance(running, models.CodeExecutionResource)
            failed = running.model_copy(
                update={
                    "status": "Failed",
                    "error": models.ErrorEnvelope(
                        error=models.ErrorDetail(code="InternalError", message="execution failed")
                    ),
                }
            )
            self._executions.update(record, failed)

    async def get_execution(self, request: Request, pool: str, execution_id: str) -> Response:
        _, _, key, _ = self._open(request, pool, Scope.EXECUTE, "reading an execution")
        family(request)
        record = self._executions.get(pool, key, execution_id)
        if record is None:
            raise HttpError(
                404,
                "ExecutionNotFound",
                f"no execution {execution_id!r} for this session (executions are kept a while, "
                "and forgotten when the session is deleted)",
            )
        return json_response(record.resource)

    async def stream_execution(self, request: Request, pool: str) -> Response:
        p, ident, key, who = self._open(request, pool, Scope.EXECUTE, "running code")

        async def acquire() -> SessionHandle:
            self.quotas.execution(who.tenant)
            return await self._acquire(p, who, key)

        return await stream.stream_execution(request, p, ident, acquire)

    # --- sessions ------------------------------------------------------------------------------

    async def get_session(self, request: Request, pool: str) -> Response:
        p, ident, key, _ = self._open(request, pool, Scope.SESSIONS, "reading a session")
        family(request)
        session = await p.lookup(key)
        if session is None:
            raise errors.SessionNotFound(pool, ident)
        return json_response(
            translate.session_resource(
                pool, ident, session.created_at, session.last_used, session.expires_at
            )
        )

    async def get_network(self, request: Request, pool: str) -> Response:
        p, ident, key, _ = self._open(request, pool, Scope.SESSIONS, "reading a session")
        session = await p.lookup(key)
        if session is None:
            raise errors.SessionNotFound(pool, ident)
        return JSONResponse(session.network())

    async def set_network(self, request: Request, pool: str) -> Response:
        """Allocates the session if it is new, so its first cell already runs under the policy."""
        p, _, key, who = self._open(request, pool, Scope.SESSIONS, "changing a session's network")
        body = await read_json(request, models.NetworkPolicy)
        session = await self._acquire(p, who, key)
        await session.set_network(body.mode, body.allow, body.secrets)
        return JSONResponse(session.network())

    async def delete_session(self, request: Request, pool: str) -> Response:
        p, _, key, _ = self._open(request, pool, Scope.SESSIONS, "deleting a session")
        family(request)
        await p.delete(key)
        self._executions.forget_session(pool, key)
        return Response(status_code=204)

    async def list_sessions(self, request: Request, pool: str) -> Response:
        who = require(request, Scope.SESSIONS, "listing sessions", pool)
        p = self.engine.pool(pool)
        family(request)
        raw_skip = query(request).get("skip", "0") or "0"
        if not raw_skip.isdigit():
            raise HttpError(400, "InvalidSkip", "skip must be a non-negative integer")
        skip = int(raw_skip)
        # the caller's own sessions only, under the names it gave them
        sessions = sorted(
            (
                (s, ident)
                for s in await p.list_sessions()
                if (ident := identifier_of(who.tenant, s.identifier)) is not None
            ),
            key=lambda si: (si[0].created_at, si[1]),
        )
        page = sessions[skip : skip + PAGE_SIZE]
        next_link = None
        if skip + PAGE_SIZE < len(sessions):
            params = {k: v for k, v in query(request).items() if k != "skip"}
            params["skip"] = str(skip + PAGE_SIZE)
            next_link = str(
                request.url.replace(
                    query="&".join(
                        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items()
                    )
                )
            )
        return json_response(
            models.SessionList(
                sessions=[
                    translate.session_resource(pool, ident, s.created_at, s.last_used, s.expires_at)
                    for s, ident in page
                ],
                nextLink=next_link,
            )
        )

    async def metadata(self, request: Request, pool: str) -> Response:
        # what any caller that may use the pool is entitled to read: it holds no session
        require(request, Scope.EXECUTE, "reading the pool's metadata", pool)
        handle = self.engine.pool(pool)
        family(request)
        if pool not in self._metadata:
            self._metadata[pool] = self._build_metadata(handle.runtime())
        return json_response(self._metadata[pool])

    def _build_metadata(self, runtime: RuntimeInfo) -> models.Metadata:
        """What the pool's sessions run: its runtime and the packages built into it."""
        packages = dict(p.split("==", 1) for p in runtime.packages if "==" in p)
        stamp = translate.timestamp(self._started_at)
        if runtime.kind == "node":
            kernel = models.KernelInfo(
                name="javascript",
                version=runtime.version,
                projectUrl="https://nodejs.org",
                description="a Node.js REPL: state kept across calls, the last expression is "
                "the result, console output is stdout",
            )
        else:
            kernel = models.KernelInfo(
                name="python3",
                version=packages.get("ipython", "unknown"),
                projectUrl="https://ipython.org",
                description="IPython semantics: the last expression is the result; display() "
                "output and matplotlib figures come back as images",
            )
        return models.Metadata(
            runtimes=[models.NameVersion(name=runtime.kind, version=runtime.version)],
            preInstalledPackages=[
                models.NameVersion(name=n, version=v)
                for n, v in sorted(packages.items(), key=lambda kv: kv[0].lower())
            ],
            createdAt=stamp,
            lastUpdatedAt=stamp,
            jupyterKernel=kernel,
            runtime=models.RuntimeDescription(
                name=runtime.name,
                kind=runtime.kind,
                version=runtime.version,
                packagesDigest=runtime.digest,
                image=runtime.image or None,
            ),
        )
