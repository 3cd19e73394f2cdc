"""The Assistants v2 face (and Azure AI Agents classic): assistants, threads, messages, runs,
run steps and files, as openai-python ``beta.*``, ``AzureOpenAI``, azure-ai-projects 1.0.0b10
and azure-ai-agents 1.x speak them."""

from __future__ import annotations

from fastapi import FastAPI

from sessionpool.faces.assistants.routes import install_assistants
from sessionpool.faces.base import Runtime


class AssistantsFace:
    name = "assistants"

    def install(self, app: FastAPI) -> None:
        install_assistants(app)

    async def bind(self, runtime: Runtime) -> None:
        """Its routes find the agents service on the application's runtime."""

    async def close(self) -> None:
        """Runs belong to the agents service, which the server closes after its faces."""


__all__ = ["AssistantsFace"]
