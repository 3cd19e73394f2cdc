"""What a face is to the server: routes to mount, services to serve from, work to end.

The server builds each face, lets it ``install`` its routes on the application, ``bind``s it
to the running services once they are up, and ``close``s it first when it stops (before the
agents service and the engine close, so nothing the face started outlives the sessions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI
from starlette.requests import Request

from sessionpool.agents.service import AgentService, TenantAgents
from sessionpool.errors import PoolNotFound, ScopeDenied
from sessionpool.faces.http import HttpError
from sessionpool.faces.quotas import Quotas
from sessionpool.pool import EngineHandle
from sessionpool.tenancy import ROOT, Principal, Scope

#: where the server's authentication leaves the request's principal (an ASGI scope key)
PRINCIPAL_KEY = "sessionpool.principal"


@dataclass
class Runtime:
    """The services a face serves from, once the server has started them."""

    engine: EngineHandle
    agents: AgentService | None = None
    #: the server has begun to stop: executions that the stop ends answer 503, not a result
    stopping: bool = False
    #: every tenant's quotas and their counters
    quotas: Quotas = field(default_factory=Quotas)


class Face(Protocol):
    name: str

    def install(self, app: FastAPI) -> None:
        """Mount the face's routes (while the application is built)."""

    async def bind(self, runtime: Runtime) -> None:
        """The services are up: serve from them until ``close``."""

    async def close(self) -> None:
        """The server is stopping: end the work this face started itself."""


def runtime_of(request: Request) -> Runtime:
    """The runtime of the application that took ``request`` (set once the server started)."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HttpError(503, "ServiceUnavailable", "the server is starting; retry shortly")
    assert isinstance(runtime, Runtime)
    return runtime


def principal_of(request: Request) -> Principal:
    """Who ``request`` acts for: set by the server's authentication; with authentication off
    (development only) every request is the server's own, the default tenant with every scope."""
    principal = request.scope.get(PRINCIPAL_KEY)
    if principal is None:
        return ROOT
    assert isinstance(principal, Principal)
    return principal


def require(request: Request, scope: Scope, operation: str, pool: str | None = None) -> Principal:
    """The request's principal, if it carries ``scope`` (403 otherwise) and may use ``pool``.

    A pool outside the credential's pools is not found (404), like a pool that does not exist:
    the answer does not tell a tenant which pools others have.
    """
    principal = principal_of(request)
    if not principal.may(scope):
        raise ScopeDenied(principal.tenant, scope.value, operation)
    if pool is not None and not principal.may_use(pool):
        raise PoolNotFound(pool)
    return principal


def agents_service(request: Request) -> AgentService:
    """The agents service; without one (not configured, or not started yet), the agents routes
    answer as if absent."""
    runtime = getattr(request.app.state, "runtime", None)
    svc = runtime.agents if isinstance(runtime, Runtime) else None
    if svc is None:
        raise HttpError(
            404,
            "AgentsDisabled",
            "the agents service (assistants, threads, runs, responses) is not enabled on this "
            "server; set enabled = true in the [agents] section of the server configuration",
        )
    return svc


def tenant_agents(request: Request, operation: str) -> TenantAgents:
    """The agents service as the request's tenant sees it, once the request is known to carry
    the agents scope: every agents route starts here, so none reads another tenant's objects."""
    who = require(request, Scope.AGENTS, operation)
    return agents_service(request).for_tenant(who.tenant)
