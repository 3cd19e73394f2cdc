"""The Responses face: OpenAI Responses, Conversations and Containers (and Foundry's agents).

Its routes are mounted under ``/v1``, ``/openai/v1`` and ``/api/projects/{project}/openai/v1``;
``wire`` translates between that wire and the agents service's internal model
(``sessionpool.agents.types``).
"""

from __future__ import annotations

from fastapi import FastAPI

from sessionpool.faces.base import Runtime
from sessionpool.faces.responses.routes import install_responses


class ResponsesFace:
    name = "responses"

    def install(self, app: FastAPI) -> None:
        install_responses(app)

    async def bind(self, runtime: Runtime) -> None:
        """Its routes find the agents service on the application's runtime."""

    async def close(self) -> None:
        """Responses belong to the agents service, which the server closes after its faces."""


__all__ = ["ResponsesFace"]
