"""A node engine: one machine's engine (zygotes, jails, cgroups) behind the node API.

On a cluster node it runs inside a Ray actor pinned to that node (``cluster.raylink``). Control
(placement, figures, health) goes through Ray; the data path (executions, streams, files) is
plain HTTP from the gateways to this server, because an actor call on every execution would
cost more than the execution (see docs/cluster.md). The API is internal: every request carries
the node's token, which only reaches the gateways through Ray.

    POST   /pools/{pool}/execute?identifier=I&create=0|1      {"code", "timeout", "stream"}
    POST   /pools/{pool}/shell?identifier=I&create=0|1        {"command", "timeout"}
    POST   /pools/{pool}/interrupt?identifier=I
    PUT    /pools/{pool}/files?identifier=I&path=P&create=0|1 body: the file's bytes
    GET    /pools/{pool}/files?identifier=I&path=P&recursive=0|1&create=0|1
    GET    /pools/{pool}/files/stat?identifier=I&path=P&create=0|1
    GET    /pools/{pool}/files/content?identifier=I&path=P&create=0|1
    DELETE /pools/{pool}/files?identifier=I&path=P&create=0|1
    GET    /pools/{pool}/session?identifier=I                 404 when it is not here
    DELETE /pools/{pool}/session?identifier=I
    GET    /pools/{pool}/sessions

``create=1`` allocates the session on first use (the directory placed it here); ``create=0``
answers 404 ``not_here`` for a session this node does not hold (it cooled down, or the gateway's
route is stale), and the gateway asks the directory again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sessionpool import errors
from sessionpool.cluster import wire
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.pool import Pool
from sessionpool.pool.pool import mem_available
from sessionpool.session import Session

log = logging.getLogger("sessionpool.cluster.node")


class NodeServer:
    """The node API around one started engine."""

    def __init__(self, engine: Engine, token: str) -> None:
        self.engine = engine
        self.token = token
        self.draining = False
        self.app = Starlette(
            routes=[
                Route("/pools/{pool}/execute", self._execute, methods=["POST"]),
                Route("/pools/{pool}/shell", self._shell, methods=["POST"]),
                Route("/pools/{pool}/interrupt", self._interrupt, methods=["POST"]),
                Route("/pools/{pool}/files", self._put_file, methods=["PUT"]),
                Route("/pools/{pool}/files", self._list_files, methods=["GET"]),
                Route("/pools/{pool}/files", self._delete_file, methods=["DELETE"]),
                Route("/pools/{pool}/files/stat", self._stat_file, methods=["GET"]),
                Route("/pools/{pool}/files/content", self._get_file, methods=["GET"]),
                Route("/pools/{pool}/session", self._get_session, methods=["GET"]),
                Route("/pools/{pool}/session", self._delete_session, methods=["DELETE"]),
                Route("/pools/{pool}/sessions", self._sessions, methods=["GET"]),
            ],
        )
        self.app.add_exception_handler(errors.ServiceError, self._error)  # type: ignore[arg-type]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not wire.token_ok(scope, self.token):
            await JSONResponse({"error": {"message": "bad node token"}}, 401)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _error(request: Request, exc: errors.ServiceError) -> Response:
        status = 404 if isinstance(exc, errors.SessionNotFound) else 400
        return JSONResponse(wire.error_out(exc), status)

    # -- helpers --------------------------------------------------------------------------------

    def _pool(self, request: Request) -> Pool:
        return self.engine.pool(request.path_params["pool"])

    async def _session(self, request: Request) -> Session:
        """The session the request names; allocated here only when the directory placed it."""
        pool = self._pool(request)
        ident = request.query_params.get("identifier", "")
        if request.query_params.get("create") == "1":
            return await pool.acquire(ident)
        session = pool.get(ident)
        if session is None:
            raise _NotHere(pool.name, ident)
        return session

    # -- executions -----------------------------------------------------------------------------

    async def _execute(self, request: Request) -> Response:
        body = await request.json()
        session = await self._session(request)
        code, timeout = str(body["code"]), body.get("timeout")
        if not body.get("stream"):
            res = await session.execute(code, timeout=timeout)
            return JSONResponse({"result": wire.result_out(res)})
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()

        def chunk(name: str, text: str) -> None:
            lines.put_nowait(json.dumps({"chunk": [name, text]}).encode() + b"\n")

        async def run() -> None:
            try:
                res = await session.execute(code, timeout=timeout, on_output=chunk)
                lines.put_nowait(json.dumps({"result": wire.result_out(res)}).encode() + b"\n")
            except errors.ServiceError as exc:
                lines.put_nowait(json.dumps(wire.error_out(exc)).encode() + b"\n")
            finally:
                lines.put_nowait(None)

        task = asyncio.create_task(run())

        async def body_lines() -> AsyncIterator[bytes]:
            try:
                while (line := await lines.get()) is not None:
                    yield line
            finally:
                if not task.done():  # the gateway went away: do not leave the cell running
                    await session.interrupt()
                    task.cancel()

        return StreamingResponse(body_lines(), media_type="application/x-ndjson")

    async def _shell(self, request: Request) -> Response:
        body = await request.json()
        session = await self._session(request)
        res = await session.run_shell(str(body["command"]), timeout=body.get("timeout"))
        return JSONResponse({"result": wire.shell_out(res)})

    async def _interrupt(self, request: Request) -> Response:
        session = self._pool(request).get(request.query_params.get("identifier", ""))
        if session is not None:
            await session.interrupt()
        return Response(status_code=204)

    # -- files ----------------------------------------------------------------------------------

    def _path(self, request: Request) -> str:
        return request.query_params.get("path", "")

    async def _put_file(self, request: Request) -> Response:
        session = await self._session(request)
        info = await session.write_file(self._path(request), request.stream())
        return JSONResponse(wire.file_out(info))

    async def _list_files(self, request: Request) -> Response:
        session = await self._session(request)
        recursive = request.query_params.get("recursive") == "1"
        infos = await session.list_files(self._path(request), recursive)
        return JSONResponse([wire.file_out(i) for i in infos])

    async def _stat_file(self, request: Request) -> Response:
        session = await self._session(request)
        return JSONResponse(wire.file_out(await session.stat_file(self._path(request))))

    async def _get_file(self, request: Request) -> Response:
        session = await self._session(request)
        info, chunks = session.open_file(self._path(request))
        return StreamingResponse(
            chunks,
            media_type="application/octet-stream",
            headers={"x-file-info": json.dumps(wire.file_out(info))},
        )

    async def _delete_file(self, request: Request) -> Response:
        session = await self._session(request)
        await session.delete_file(self._path(request))
        return Response(status_code=204)

    # -- sessions -------------------------------------------------------------------------------

    async def _get_session(self, request: Request) -> Response:
        session = self._pool(request).get(request.query_params.get("identifier", ""))
        if session is None:
            return JSONResponse({"error": {"class": "", "message": wire.NOT_HERE}}, 404)
        return JSONResponse(_info(session))

    async def _delete_session(self, request: Request) -> Response:
        deleted = await self._pool(request).delete(request.query_params.get("identifier", ""))
        return JSONResponse({"deleted": deleted})

    async def _sessions(self, request: Request) -> Response:
        return JSONResponse([_info(s) for s in self._pool(request).sessions()])

    # -- figures for the directory (through Ray) --------------------------------------------------

    def figures(self) -> dict[str, Any]:
        pools = {
            name: {
                "ready": pool.ready_count,
                "sessions": [s.identifier for s in pool.sessions()],
                "max_sessions": pool.config.max_sessions,
                "busy": sum(1 for s in pool.sessions() if s.busy),
            }
            for name, pool in self.engine.pools.items()
        }
        return {"pools": pools, "mem_available": mem_available(), "draining": self.draining}


class _NotHere(errors.SessionNotFound):
    def __init__(self, pool: str, identifier: str) -> None:
        super().__init__(pool, identifier)
        self.message = wire.NOT_HERE


def _info(session: Session) -> dict[str, Any]:
    return {
        "identifier": session.identifier,
        "created_at": session.created_at,
        "last_used": session.last_used,
        "expires_at": session.expires_at,
    }


def serve_http(app: Any, host: str) -> tuple[Any, asyncio.Task[None], str]:
    """Serve ``app`` on ``host`` (a free port) in this event loop: (server, its task, its URL).

    Idle connections are kept longer than the gateways keep them, so a gateway never sends on
    a connection this side is closing.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(2048)
    config = uvicorn.Config(
        app,
        interface="asgi3",  # said, not guessed from the app's shape
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=wire.NODE_KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    return server, task, f"http://{host}:{sock.getsockname()[1]}"


class NodeEngine:
    """What the Ray actor of one node runs: the engine and its node API server.

    Ray restarts the actor when its process dies; the new one starts a new engine (a new
    ``incarnation``), so the directory knows the old sessions are gone.
    """

    def __init__(
        self, engine_config: EngineConfig, pools: list[PoolConfig], node_id: str, host: str
    ) -> None:
        self.engine_config = engine_config
        self.pool_configs = pools
        self.node_id = node_id
        self.host = host
        self.incarnation = uuid.uuid4().hex
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.started_at = time.time()
        self.url = ""
        self.error = ""
        self._server: NodeServer | None = None
        self._uvicorn: Any = None
        self._serving: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, Any]:
        """Start the engine and the node API once; what a gateway needs to reach it."""
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        with contextlib.suppress(Exception):
            await asyncio.shield(self._starting)
        return self.info()

    async def _start(self) -> None:
        try:
            engine = Engine(self.engine_config, self.pool_configs)
            await engine.start()
            self._server = NodeServer(engine, self.token)
            self._uvicorn, self._serving, self.url = serve_http(self._server, self.host)
            log.info("node %s: engine up at %s", self.node_id[:12], self.url)
        except Exception as exc:
            self.error = str(exc.message if isinstance(exc, errors.ServiceError) else exc)
            log.exception("node %s: the engine did not start", self.node_id[:12])
            raise

    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "incarnation": self.incarnation,
            "url": self.url,
            "token": self.token,
            "started": self._server is not None,
            "pid": os.getpid(),
            "error": self.error,
        }

    async def figures(self) -> dict[str, Any]:
        if self._server is None:
            return {**self.info(), "pools": {}, "mem_available": None, "draining": False}
        return {**self.info(), **self._server.figures()}

    async def drain(self, draining: bool) -> None:
        """No new sessions here while draining; existing ones finish or cool down."""
        if self._server is not None:
            self._server.draining = draining

    async def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._server is not None:
            await self._server.engine.close(deadline_s=5.0)
