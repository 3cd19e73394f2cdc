"""What a face is to the server: routes to mount, services to serve from, work to end.

The server builds each face, lets it ``install`` its routes on the application, ``bind``s it
to the running services once they are up, and ``close``s it first when it stops (before the
agents service and the engine close, so nothing the face started outlives the sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI

from sessionpool.agents.service import AgentService
from sessionpool.engine import Engine


@dataclass
class Runtime:
    """The services a face serves from, once the server has started them."""

    engine: Engine
    agents: AgentService | None = None
    #: the server has begun to stop: executions that the stop ends answer 503, not a result
    stopping: bool = False


class Face(Protocol):
    name: str

    def install(self, app: FastAPI) -> None:
        """Mount the face's routes (while the application is built)."""

    async def bind(self, runtime: Runtime) -> None:
        """The services are up: serve from them until ``close``."""

    async def close(self) -> None:
        """The server is stopping: end the work this face started itself."""
