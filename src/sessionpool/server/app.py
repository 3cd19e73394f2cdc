"""The ASGI application: faces, authentication, error rendering, health probes and lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionpool._version import __version__
from sessionpool.agents import AgentService
from sessionpool.cluster.remote import ClusterEngine
from sessionpool.engine import Engine
from sessionpool.errors import ConfigError, InvalidArgument
from sessionpool.faces.aca import AcaFace
from sessionpool.faces.assistants import AssistantsFace
from sessionpool.faces.base import Face, Runtime, require
from sessionpool.faces.console import PUBLIC_PATHS as CONSOLE_PATHS
from sessionpool.faces.console import ConsoleFace
from sessionpool.faces.e2b import E2bFace
from sessionpool.faces.e2b.routing import is_sandbox_traffic
from sessionpool.faces.http import HotRoutes, HttpError, install_error_handlers
from sessionpool.faces.mcp import McpFace
from sessionpool.faces.quotas import Quotas
from sessionpool.faces.responses import ResponsesFace
from sessionpool.pool import EngineHandle
from sessionpool.server.auth import Authenticator, AuthMiddleware
from sessionpool.server.keys import KeyStore
from sessionpool.server.msi import MSI_PATH, install_msi
from sessionpool.server.observe import (
    FASTAPI_TELEMETRY_OFF,
    install_inner,
    install_metrics,
    install_outer,
)
from sessionpool.server.settings import ServerSettings
from sessionpool.server.tokens import verifier_for
from sessionpool.tenancy import Scope as Right

logger = logging.getLogger("sessionpool.server")

#: reachable without a key: probes, and the API description (it holds no secrets)
PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


class NormalizePath:
    """Collapse repeated slashes and drop a trailing one before routing.

    Clients join the configured endpoint and the operation by hand, so ``pool//code/execute``
    and ``files/`` arrive; a redirect would not help (few clients follow one for a POST).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if "//" in path or (len(path) > 1 and path.endswith("/")):
                while "//" in path:
                    path = path.replace("//", "/")
                if len(path) > 1:
                    path = path.rstrip("/") or "/"
                scope = {**scope, "path": path}
        await self.app(scope, receive, send)


class Shutdown:
    """One deadline for the whole stop, and one close of the engine, whoever asks first.

    When the stop signal comes (``begin``), requests in flight have ``deadline_s`` to finish;
    then the engine is closed, which ends the executions still running, so their requests answer
    (503) before the server exits instead of being cancelled mid-flight. The lifespan's own close
    joins the same task.
    """

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.requested_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime: Runtime | None = None
        self._faces: list[Face] = []
        self._closing: asyncio.Task[None] | None = None

    def attach(self, runtime: Runtime, faces: list[Face]) -> None:
        self._loop = asyncio.get_running_loop()
        self._runtime, self._faces = runtime, faces

    def begin(self) -> None:
        """The stop signal came (called in the event loop's thread, from a signal handler)."""
        if self.requested_at is not None:
            return
        self.requested_at = time.monotonic()
        if self._runtime is not None:
            self._runtime.stopping = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.call_later, self.deadline_s, self._expire)

    def remaining(self) -> float:
        if self.requested_at is None:
            return self.deadline_s
        return max(0.0, self.deadline_s - (time.monotonic() - self.requested_at))

    def _expire(self) -> None:
        if self._closing is None:
            logger.info("shutdown deadline reached: ending executions still running")
            self._closing = asyncio.ensure_future(self._close(0.0))

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(self.remaining()))
        await asyncio.shield(self._closing)

    async def _close(self, deadline_s: float) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        runtime.stopping = True
        for face in self._faces:
            await face.close()
        if runtime.agents is not None:
            await runtime.agents.close()  # runs in flight end "failed", before their sessions go
        logger.info("closing sessions (deadline %.1f s)", deadline_s)
        await runtime.engine.close(deadline_s=deadline_s)


def make_engine(settings: ServerSettings) -> EngineHandle:
    """This machine's engine, or with ``[cluster]`` the pools of a Ray cluster (Ray is then
    imported, when the engine starts; a single server never imports it)."""
    if settings.cluster is None:
        return Engine(settings.engine_config(), list(settings.pools))
    return ClusterEngine(settings.cluster, settings.engine_config(), list(settings.pools))


def create_app(
    settings: ServerSettings,
    engine: EngineHandle | None = None,
    *,
    shutdown: Shutdown | None = None,
    on_closed: Callable[[], None] | None = None,
) -> FastAPI:
    """The application for ``settings``.

    With ``engine`` given (already started), the app takes it over and closes it on shutdown;
    without, the lifespan builds and starts one from the settings. ``settings.api_keys`` must
    hold the resolved keys unless ``no_auth`` is set: the app is never open by default.
    """
    if not settings.no_auth and not settings.api_keys:
        raise ConfigError("no API key configured (resolve or generate one before create_app)")
    faces: list[Face] = [AcaFace(), McpFace(), E2bFace(cluster=settings.cluster is not None)]
    faces.append(ConsoleFace())
    if settings.agents.enabled:
        faces += [AssistantsFace(), ResponsesFace()]
    stopper = shutdown or Shutdown(settings.shutdown_deadline_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng = engine
        if eng is None:
            eng = make_engine(settings)
            await eng.start()
        runtime = Runtime(eng, quotas=Quotas(settings.quotas, dict(settings.tenant_quotas)))
        app.state.engine = eng
        if settings.agents.enabled:
            runs = eng.run_locks if isinstance(eng, ClusterEngine) else None
            runtime.agents = AgentService(
                settings.agents, eng, runs, admit_run=runtime.quotas.admit_run
            )
            try:
                await runtime.agents.start()
            except BaseException:
                await eng.close()
                raise
            app.state.agents = runtime.agents
        app.state.runtime = runtime
        stopper.attach(runtime, faces)
        try:
            for face in faces:
                await face.bind(runtime)
            yield
        finally:
            await stopper.close()
            if on_closed is not None:
                on_closed()

    app = FastAPI(
        title="sessionpool",
        version=__version__,
        summary="Self-hosted dynamic sessions: stateful, sandboxed Python for LLM agents",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def index() -> JSONResponse:
        return JSONResponse({"name": "sessionpool", "version": __version__, "docs": "/docs"})

    @app.get("/healthz", tags=["probes"], summary="The process is alive")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["probes"], summary="Every pool has its ready sessions")
    async def readyz() -> JSONResponse:
        eng = getattr(app.state, "engine", None)
        if eng is None or not eng.ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    if settings.cluster is not None:
        install_cluster_routes(app)
    # added first, so innermost: inside the sandbox router, the audit log and the rest
    app.add_middleware(HotRoutes, router=app.router)
    for face in faces:
        face.install(app)
    install_metrics(app)
    public = set(PUBLIC_PATHS) | CONSOLE_PATHS  # the console's page: static, no data
    if settings.agents.enabled and settings.agents.managed_identity:
        install_msi(app, settings.api_keys, settings.no_auth)
        public.add(MSI_PATH)  # it checks the identity header itself
    # middleware added first runs innermost: the audit log (which reads the principal) inside
    # the authentication, request ids (and traces) outside everything, so every line has the id
    install_inner(app, settings, public)
    if not settings.no_auth:
        authenticator = Authenticator(
            settings.api_keys, KeyStore(settings.key_store), verifier_for(settings.issuers)
        )
        app.add_middleware(
            AuthMiddleware,
            authenticator=authenticator,
            public_paths=public,
            own_auth=is_sandbox_traffic,  # E2B sandbox traffic: its access token, checked inside
        )
    app.add_middleware(NormalizePath)
    install_outer(app, settings)
    return app


def install_cluster_routes(app: FastAPI) -> None:
    """``GET /cluster``: the nodes, their sessions, ready pools, memory and health;
    ``POST /cluster/nodes/{node_id}/drain``: no new sessions there (``{"draining": false}``
    takes it back), for a rolling restart."""

    def cluster_engine(request: Request) -> ClusterEngine:
        require(request, Right.ADMIN, "the cluster's routes")
        eng = getattr(request.app.state, "engine", None)
        if not isinstance(eng, ClusterEngine):
            raise HttpError(503, "ServiceUnavailable", "the server is starting; retry shortly")
        return eng

    @app.get("/cluster", tags=["cluster"], summary="The cluster's nodes and their sessions")
    async def cluster_view(request: Request) -> JSONResponse:
        return JSONResponse(await cluster_engine(request).view())

    @app.get(
        "/cluster/pools/{pool}/session",
        tags=["cluster"],
        summary="Which node holds a session (query: identifier)",
    )
    async def cluster_locate(request: Request, pool: str, identifier: str) -> JSONResponse:
        route = await cluster_engine(request).locate(pool, identifier)
        if route is None:
            raise HttpError(404, "SessionNotFound", f"no session {identifier!r} in pool {pool!r}")
        return JSONResponse({"pool": pool, "identifier": identifier, "node_id": route.node_id})

    @app.post(
        "/cluster/nodes/{node_id}/drain",
        tags=["cluster"],
        summary="Stop placing new sessions on a node (or, with draining false, start again)",
    )
    async def cluster_drain(request: Request, node_id: str) -> JSONResponse:
        draining = True
        if await request.body():
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("draining", True), bool):
                raise InvalidArgument('the body is {"draining": true|false}', "draining")
            draining = body.get("draining", True)
        if not await cluster_engine(request).drain(node_id, draining):
            raise HttpError(404, "NodeNotFound", f"no node {node_id!r} in the cluster")
        return JSONResponse({"node_id": node_id, "draining": draining})
