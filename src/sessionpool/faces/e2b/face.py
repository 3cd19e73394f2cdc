"""The E2B face: the control plane (``/sandboxes``), sandbox routing and the sandboxes' apps.

A sandbox is a session of a pool (its template) kept under a reserved key until its lifetime
ends; the control plane creates, lists, extends and kills them for the caller's tenant, and
:class:`routing.SandboxRouter` serves their traffic (envd, the code interpreter) on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from sessionpool import errors
from sessionpool.faces.base import Runtime, require
from sessionpool.faces.e2b import interpreter, network
from sessionpool.faces.e2b.answers import error, json_body, service_error
from sessionpool.faces.e2b.envd import ENVD_VERSION, build_envd_app
from sessionpool.faces.e2b.models import (
    DEFAULT_TEMPLATE,
    Connect,
    NetworkUpdate,
    NewSandbox,
    Timeout,
)
from sessionpool.faces.e2b.routing import ENVD_PORT, INTERPRETER_PORT, SandboxRouter
from sessionpool.faces.e2b.sandboxes import Context, Registry, Sandbox, new_sandbox_id
from sessionpool.faces.http import HttpError, describe_validation
from sessionpool.faces.quotas import Quotas
from sessionpool.pool import EngineHandle, PoolHandle, SessionHandle
from sessionpool.tenancy import Principal, Scope, identifier_of

logger = logging.getLogger("sessionpool.faces.e2b")

#: the pool a template names when it names none
DEFAULT_POOL = "default"
#: a sandbox's lifetime is at most this (E2B's own cap for its base tier: one hour is common,
#: 24 h the highest): longer asks are cut to it
MAX_TIMEOUT = 24 * 3600
#: how often the reaper looks for sandboxes past their end
REAP_INTERVAL = 0.5

Handler = Callable[..., Awaitable[Response]]


def e2b_errors(handler: Handler) -> Handler:
    """Render the server's errors in E2B's shape for one route."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except HttpError as exc:
            return error(exc.status, exc.message)
        except errors.ServiceError as exc:
            return service_error(exc)
        except ValidationError as exc:
            return error(400, describe_validation(exc.errors()))

    return wrapped


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _not_supported(what: str) -> HttpError:
    return HttpError(501, "NotSupported", f"{what} is not supported by this server")


async def _json_body(request: Request) -> Any:
    raw = await json_body(request)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise HttpError(400, "BadRequest", "the body is not JSON") from None


class E2bFace:
    """The control plane's routes, the sandbox registry and the reaper that ends sandboxes."""

    name = "e2b"

    def __init__(self, cluster: bool = False) -> None:
        self.registry = Registry()
        self._runtime: Runtime | None = None
        self._cluster = cluster
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._apps: dict[int, ASGIApp] = {
            INTERPRETER_PORT: interpreter.build_interpreter_app(),
            ENVD_PORT: build_envd_app(),
        }

    # --- lifecycle -----------------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        app.include_router(self.router(), tags=["e2b"])
        # innermost of the middleware: the audit log and request ids wrap sandbox traffic too
        app.add_middleware(SandboxRouter, face=self)

    async def bind(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._reaper = asyncio.create_task(self._reap_loop())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    def port_app(self, port: int) -> ASGIApp | None:
        return self._apps.get(port)

    def owner(self, sandbox: Sandbox) -> Principal:
        return sandbox.principal

    @property
    def engine(self) -> EngineHandle:
        if self._runtime is None:
            raise HttpError(503, "ServiceUnavailable", "the server is starting; retry shortly")
        return self._runtime.engine

    @property
    def quotas(self) -> Quotas:
        return self._runtime.quotas if self._runtime is not None else Quotas()

    # --- sessions ------------------------------------------------------------------------------

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        return lock

    async def _live(self, tenant: str) -> int:
        """The tenant's live sessions over every pool (as the ACA face counts them), plus its
        sandboxes' (kept under reserved keys no identifier names)."""
        total = sum(
            len({c.key for c in s.contexts.values()}) for s in self.registry.of_tenant(tenant)
        )
        for handle in self.engine.pools.values():
            total += sum(
                identifier_of(tenant, s.identifier) is not None
                for s in await handle.list_sessions()
            )
        return total

    def kind_of(self, pool: str) -> str:
        """What a pool's sessions run: ``python`` or ``node``."""
        return self.engine.pool(pool).runtime().kind

    def pool_for_kind(self, kind: str, sandbox: Sandbox) -> str:
        """A pool the sandbox's owner may use whose runtime is ``kind`` (its own pool first)."""
        names = [sandbox.pool, *sorted(self.engine.pools)]
        for name in names:
            if sandbox.principal.may_use(name) and self.kind_of(name) == kind:
                return name
        what = "Node.js" if kind == "node" else kind
        raise HttpError(
            400,
            "BadRequest",
            f'no pool of this server runs {what}: configure one (runtime = "{kind}") to '
            "run that language",
        )

    async def session_of(self, sandbox: Sandbox, new: bool = False) -> SessionHandle:
        """The sandbox's own session (its default context)."""
        return await self.context_session(
            sandbox, sandbox.contexts[interpreter.DEFAULT_CONTEXT], new
        )

    async def context_session(
        self, sandbox: Sandbox, ctx: Context, new: bool = False
    ) -> SessionHandle:
        """A context's session, allocated (environment and cwd applied) if it has none yet or
        it ended early, kept alive until the sandbox's end."""
        async with self._lock(sandbox.sandbox_id):
            if self.registry.get(sandbox.sandbox_id) is not sandbox and not new:
                raise HttpError(404, "NotFound", f"sandbox {sandbox.sandbox_id!r} not found")
            pool = self.engine.pool(ctx.pool)
            session = await pool.lookup(ctx.key)
            if session is None:
                session = await self._allocate(pool, sandbox, ctx)
            session.keep_alive_until(sandbox.end_at)
            return session

    async def _allocate(self, pool: PoolHandle, sandbox: Sandbox, ctx: Context) -> SessionHandle:
        tenant = sandbox.tenant
        if self.quotas.of(tenant).max_sessions > 0:
            async with self.quotas.new_session(tenant, lambda: self._live(tenant)):
                session = await pool.acquire(ctx.key)
        else:
            session = await pool.acquire(ctx.key)
        try:
            # the network first: the sandbox's first code runs under its policy
            await self._apply_network(session, sandbox, pool)
            await interpreter.prepare(session, sandbox, self.kind_of(ctx.pool), ctx.cwd)
        except BaseException:
            await pool.delete(ctx.key)
            raise
        return session

    async def _apply_network(
        self, session: SessionHandle, sandbox: Sandbox, pool: PoolHandle
    ) -> None:
        """Narrow a session of the sandbox as the sandbox asked. A context session in another
        pool (a language the sandbox's pool does not run) gets the same ask against that
        pool's policy; one whose pool has no network keeps none."""
        ask = sandbox.network
        if ask is None:
            return
        if pool.name != sandbox.pool and ask.mode != "off" and pool.config.network == "off":
            return
        r = network.resolve(ask, pool.config, sandbox.template_id)
        await session.set_network(r.mode, r.allow, r.secrets)

    async def end_session(self, ctx: Context) -> None:
        with contextlib.suppress(errors.PoolNotFound):
            await self.engine.pool(ctx.pool).delete(ctx.key)

    async def _keep(self, sandbox: Sandbox) -> None:
        """Move every context session's keep-alive to the sandbox's (new) end."""
        for ctx in list(sandbox.contexts.values()):
            with contextlib.suppress(errors.PoolNotFound):
                session = await self.engine.pool(ctx.pool).lookup(ctx.key)
                if session is not None:
                    session.keep_alive_until(sandbox.end_at)

    # --- the reaper ----------------------------------------------------------------------------

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            for sandbox in self.registry.expired(time.time()):
                logger.info("sandbox %s reached its end: killed", sandbox.sandbox_id)
                with contextlib.suppress(Exception):
                    await self._kill(sandbox)

    async def _kill(self, sandbox: Sandbox) -> None:
        self.registry.remove(sandbox.sandbox_id)
        self._locks.pop(sandbox.sandbox_id, None)
        for ctx in list(sandbox.contexts.values()):
            with contextlib.suppress(Exception):
                await self.end_session(ctx)

    # --- routes --------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        r = APIRouter()
        add = r.add_api_route
        add("/v2/sandboxes", self.create, methods=["POST"], summary="Create a sandbox")
        add("/sandboxes", self.create, methods=["POST"], summary="Create a sandbox (v1 path)")
        add("/v2/sandboxes", self.list, methods=["GET"], summary="List the tenant's sandboxes")
        add("/sandboxes", self.list, methods=["GET"], summary="List sandboxes (v1 path)")
        add("/sandboxes/{sandbox_id}", self.get, methods=["GET"], summary="A sandbox")
        add("/sandboxes/{sandbox_id}", self.kill, methods=["DELETE"], summary="Kill a sandbox")
        add(
            "/sandboxes/{sandbox_id}/timeout",
            self.set_timeout,
            methods=["POST"],
            summary="Set a sandbox's lifetime from now",
        )
        for path in ("/v2/sandboxes/{sandbox_id}/connect", "/sandboxes/{sandbox_id}/connect"):
            add(path, self.connect, methods=["POST"], summary="Connect to a running sandbox")
        for what in ("pause", "resume", "fork", "snapshots", "refreshes"):
            add(
                f"/sandboxes/{{sandbox_id}}/{what}",
                self._unsupported(what),
                methods=["POST"],
                summary=f"{what}: not supported",
                name=f"sandbox_{what}",
            )
        add(
            "/sandboxes/{sandbox_id}/network",
            self.set_network,
            methods=["PUT"],
            summary="Replace a sandbox's egress rules (narrowing its pool's, never widening)",
            name="sandbox_network",
        )
        return r

    def _unsupported(self, what: str) -> Handler:
        @e2b_errors
        async def refuse(request: Request, sandbox_id: str) -> Response:
            self._find(request, sandbox_id, what)
            raise _not_supported(what)

        return refuse

    def _find(self, request: Request, sandbox_id: str, operation: str) -> Sandbox:
        who = require(request, Scope.EXECUTE, operation)
        sandbox = self.registry.get(sandbox_id, who.tenant)
        if sandbox is None:
            raise HttpError(404, "NotFound", f"sandbox {sandbox_id!r} not found")
        return sandbox

    def _pool_of(self, template: str | None, who: Principal) -> str:
        name = DEFAULT_POOL if template in (None, "", DEFAULT_TEMPLATE, "base") else template
        assert name is not None
        if name not in self.engine.pools or not who.may_use(name):
            known = ", ".join(sorted(p for p in self.engine.pools if who.may_use(p)))
            raise HttpError(
                404,
                "NotFound",
                f"template {template!r} not found: a template is {DEFAULT_TEMPLATE!r} (the "
                f"default pool) or the name of a pool of this server ({known})",
            )
        return name

    @staticmethod
    def _refuse_unsupported(body: NewSandbox) -> None:
        def refuse(field: str, why: str) -> None:
            raise HttpError(400, "BadRequest", f"{field}: {why}")

        if body.volumeMounts:
            refuse("volumeMounts", "volumes are not supported by this server")
        if body.autoPause:
            refuse("autoPause", "pausing sandboxes is not supported by this server")
        resume = body.autoResume
        if resume is True or (isinstance(resume, dict) and resume.get("enabled")):
            refuse("autoResume", "pausing and resuming sandboxes is not supported by this server")
        if body.mcp:
            refuse("mcp", "MCP gateways in sandboxes are not supported by this server")
        if body.iam:
            refuse("iam", "workload identity tokens are not supported by this server")

    async def _network_of(self, sandbox: Sandbox) -> dict[str, Any]:
        """The sandbox's network as E2B's detail shows it, from its session's policy."""
        ctx = sandbox.contexts.get(interpreter.DEFAULT_CONTEXT)
        session = None
        if ctx is not None:
            with contextlib.suppress(errors.PoolNotFound):
                session = await self.engine.pool(ctx.pool).lookup(ctx.key)
        net = session.network() if session is not None else {"mode": "off"}
        return {
            "allowInternetAccess": net.get("mode", "off") != "off",
            "network": network.wire(net),
        }

    def _wire(
        self, sandbox: Sandbox, detail: bool, net: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.sandbox_id,
            "clientID": "sessionpool",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": sandbox.envd_access_token,
            "trafficAccessToken": sandbox.traffic_token,
            "domain": None,
        }
        if detail:
            pool = self.engine.pools.get(sandbox.pool)
            limits = pool.config.limits if pool is not None else None
            out.update(
                {
                    "alias": sandbox.template_id,
                    "startedAt": _iso(sandbox.started_at),
                    "endAt": _iso(sandbox.end_at),
                    "cpuCount": max(1, round(limits.cpus)) if limits else 1,
                    "memoryMB": limits.memory_bytes >> 20 if limits else 0,
                    "diskSizeMB": limits.disk_bytes >> 20 if limits else 0,
                    "state": "running",
                    "metadata": dict(sandbox.metadata),
                    **(net or {"allowInternetAccess": False}),
                }
            )
        return out

    def _listed(self, sandbox: Sandbox) -> dict[str, Any]:
        """A listing's row: no tokens (only create, get and connect hand them out), no network
        (E2B's listing has none)."""
        row = self._wire(sandbox, True)
        for key in ("envdAccessToken", "trafficAccessToken", "allowInternetAccess"):
            row.pop(key)
        return row

    @e2b_errors
    async def create(self, request: Request) -> Response:
        who = require(request, Scope.EXECUTE, "creating a sandbox")
        if self._cluster:
            raise _not_supported(
                "the E2B face in cluster mode (a sandbox's lifetime is not part of the "
                "cluster protocol yet)"
            )
        raw = await _json_body(request)
        if not isinstance(raw, dict):
            raise HttpError(400, "BadRequest", "the body is a JSON object")
        body = NewSandbox.model_validate(raw)
        self._refuse_unsupported(body)
        key = request.headers.get("idempotency-key")
        digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
        if key:
            earlier = self.registry.by_idempotency(who.tenant, key)
            if earlier is not None:
                if earlier.idempotency != (key, digest):
                    raise HttpError(
                        409,
                        "Conflict",
                        "this Idempotency-Key was used with another body; use a new key",
                    )
                return JSONResponse(self._wire(earlier, False), status_code=201)
        pool = self._pool_of(body.templateID, who)
        template = body.templateID or DEFAULT_TEMPLATE
        asked = network.parse(body.allow_internet_access, body.network)
        # checked before a session is taken: refused asks allocate nothing
        resolved = network.resolve(asked, self.engine.pool(pool).config, template)
        # the pool's policy as it is: the session is left untouched
        ask = None if asked.mode is None and not resolved.secrets else asked
        now = time.time()
        sandbox = Sandbox(
            sandbox_id=new_sandbox_id(),
            tenant=who.tenant,
            principal=who,
            pool=pool,
            template_id=template,
            metadata=dict(body.metadata or {}),
            env_vars=dict(body.envVars or {}),
            started_at=now,
            end_at=now + min(body.timeout, MAX_TIMEOUT),
            idempotency=(key, digest) if key else None,
            network=ask,
        )
        default = interpreter.default_context(sandbox, self.kind_of(pool))
        sandbox.contexts[default.id] = default
        self.quotas.execution(who.tenant)
        await self.session_of(sandbox, new=True)
        if self.registry.get(sandbox.sandbox_id) is None and key:
            # a concurrent create with the same key won the race: answer with its sandbox
            earlier = self.registry.by_idempotency(who.tenant, key)
            if earlier is not None:
                await self._kill(sandbox)
                return JSONResponse(self._wire(earlier, False), status_code=201)
        self.registry.add(sandbox)
        logger.info("sandbox %s created in pool %s", sandbox.sandbox_id, pool)
        return JSONResponse(self._wire(sandbox, False), status_code=201)

    @e2b_errors
    async def get(self, request: Request, sandbox_id: str) -> Response:
        sandbox = self._find(request, sandbox_id, "reading a sandbox")
        return JSONResponse(self._wire(sandbox, True, await self._network_of(sandbox)))

    @e2b_errors
    async def list(self, request: Request) -> Response:
        who = require(request, Scope.EXECUTE, "listing sandboxes")
        wanted: dict[str, str] = {}
        raw = request.query_params.get("metadata")
        if raw:
            wanted = {unquote(k): unquote(v) for k, v in parse_qsl(raw, keep_blank_values=True)}
        states = request.query_params.get("state")
        if states and "running" not in states.split(","):
            return JSONResponse([])
        found = [
            self._listed(s)
            for s in sorted(self.registry.of_tenant(who.tenant), key=lambda s: s.started_at)
            if all(s.metadata.get(k) == v for k, v in wanted.items())
        ]
        return JSONResponse(found)

    @e2b_errors
    async def kill(self, request: Request, sandbox_id: str) -> Response:
        sandbox = self._find(request, sandbox_id, "killing a sandbox")
        await self._kill(sandbox)
        return Response(status_code=204)

    def _extend(self, sandbox: Sandbox, timeout: int, only_longer: bool) -> None:
        end = time.time() + min(timeout, MAX_TIMEOUT)
        if only_longer and end <= sandbox.end_at:
            return
        sandbox.end_at = end

    @e2b_errors
    async def set_timeout(self, request: Request, sandbox_id: str) -> Response:
        sandbox = self._find(request, sandbox_id, "setting a sandbox's timeout")
        body = Timeout.model_validate(await _json_body(request))
        self._extend(sandbox, body.timeout, only_longer=False)
        await self._keep(sandbox)
        return Response(status_code=204)

    @e2b_errors
    async def set_network(self, request: Request, sandbox_id: str) -> Response:
        """E2B's network update: the new rules replace the last ones, on every live session
        of the sandbox at once (and on those it starts later). Narrower than the pool, or
        refused whole."""
        sandbox = self._find(request, sandbox_id, "changing a sandbox's network")
        body = NetworkUpdate.model_validate(await _json_body(request))
        ask = network.parse(body.allow_internet_access, body.network())
        network.resolve(ask, self.engine.pool(sandbox.pool).config, sandbox.template_id)
        async with self._lock(sandbox.sandbox_id):
            sandbox.network = ask
            done: set[tuple[str, str]] = set()
            for ctx in list(sandbox.contexts.values()):
                if (ctx.pool, ctx.key) in done:
                    continue
                done.add((ctx.pool, ctx.key))
                with contextlib.suppress(errors.PoolNotFound):
                    pool = self.engine.pool(ctx.pool)
                    session = await pool.lookup(ctx.key)
                    if session is not None:
                        await self._apply_network(session, sandbox, pool)
        logger.info("sandbox %s: network rules replaced", sandbox.sandbox_id)
        return Response(status_code=204)

    @e2b_errors
    async def connect(self, request: Request, sandbox_id: str) -> Response:
        sandbox = self._find(request, sandbox_id, "connecting to a sandbox")
        body = Connect.model_validate(await _json_body(request))
        # E2B: connecting to a running sandbox only ever lengthens its life
        if body.timeout is not None:
            self._extend(sandbox, body.timeout, only_longer=True)
        await self.session_of(sandbox)
        await self._keep(sandbox)
        return JSONResponse(self._wire(sandbox, False), status_code=200)
