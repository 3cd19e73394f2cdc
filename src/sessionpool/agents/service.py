"""AgentService: the one entry point of the agents layer for both HTTP faces.

Faces call these coroutines with internal types and plain values, and translate the results to
their wire formats. Errors are ``sessionpool.errors.AgentsError`` subclasses (ObjectNotFound ->
404, InvalidRequest -> 400, Conflict -> 409), already rendered by the server's error handlers.

Runs execute in the background (``start_run``); ``wait_run`` and ``events`` let a face answer
synchronously or stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.types import (
    Agent,
    Container,
    Conversation,
    Message,
    Page,
    PageRequest,
    Part,
    Run,
    RunEvent,
    Step,
    StoredFile,
)
from sessionpool.engine import Engine


class AgentService:
    def __init__(self, config: AgentsConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine

    async def start(self) -> None:
        """Open (and create) the database; mark runs a previous process left running as failed."""
        raise NotImplementedError

    async def close(self) -> None:
        """Cancel runs in flight (they end ``failed``: server shutting down), close the database."""
        raise NotImplementedError

    # --- agents ---------------------------------------------------------------------------------

    async def create_agent(
        self,
        *,
        model: str | None,
        name: str | None = None,
        description: str | None = None,
        instructions: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        file_ids: list[str] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        response_format: Any = None,
        metadata: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Agent:
        """``model`` None or empty means the configured default model. Unknown file ids -> 404."""
        raise NotImplementedError

    async def get_agent(self, agent_id: str) -> Agent:
        raise NotImplementedError

    async def update_agent(self, agent_id: str, **changes: Any) -> Agent:
        """Set the given fields (same names as ``create_agent``); None values are ignored."""
        raise NotImplementedError

    async def list_agents(self, page: PageRequest) -> Page[Agent]:
        raise NotImplementedError

    async def delete_agent(self, agent_id: str) -> None:
        """404 if it does not exist."""
        raise NotImplementedError

    # --- files ----------------------------------------------------------------------------------

    async def create_file(
        self, *, filename: str, data: bytes, purpose: str = "assistants"
    ) -> StoredFile:
        """Store an uploaded file. Empty or over-limit uploads -> InvalidRequest / FileTooLarge."""
        raise NotImplementedError

    async def get_file(self, file_id: str) -> StoredFile:
        raise NotImplementedError

    async def list_files(self, page: PageRequest, purpose: str | None = None) -> Page[StoredFile]:
        """Every file object (uploads and generated outputs), optionally of one purpose."""
        raise NotImplementedError

    async def file_content(self, file_id: str) -> bytes:
        raise NotImplementedError

    async def delete_file(self, file_id: str) -> None:
        raise NotImplementedError

    # --- conversations (threads) and messages ---------------------------------------------------

    async def create_conversation(
        self,
        *,
        metadata: dict[str, str] | None = None,
        file_ids: list[str] | None = None,
        messages: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Conversation:
        """``messages`` items: ``{"role", "content": str | list[Part], "attachments": [file ids],
        "metadata"}`` added in order."""
        raise NotImplementedError

    async def get_conversation(self, conversation_id: str) -> Conversation:
        raise NotImplementedError

    async def update_conversation(
        self, conversation_id: str, *, metadata: dict[str, str] | None = None
    ) -> Conversation:
        raise NotImplementedError

    async def delete_conversation(self, conversation_id: str) -> None:
        """Deletes its messages, runs and steps too (files stay until deleted)."""
        raise NotImplementedError

    async def add_message(
        self,
        conversation_id: str,
        *,
        role: str,
        content: str | list[Part],
        attachments: list[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Message:
        """Conflict while a run is active on the conversation (as Assistants v2 answers)."""
        raise NotImplementedError

    async def get_message(self, conversation_id: str, message_id: str) -> Message:
        raise NotImplementedError

    async def list_messages(
        self, conversation_id: str, page: PageRequest, run_id: str | None = None
    ) -> Page[Message]:
        raise NotImplementedError

    async def update_message(
        self, conversation_id: str, message_id: str, *, metadata: dict[str, str] | None = None
    ) -> Message:
        raise NotImplementedError

    async def delete_message(self, conversation_id: str, message_id: str) -> None:
        raise NotImplementedError

    # --- runs -----------------------------------------------------------------------------------

    async def start_run(
        self,
        conversation_id: str,
        *,
        agent_id: str | None = None,
        kind: str = "run",
        model: str | None = None,
        instructions: str | None = None,
        additional_instructions: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_steps: int | None = None,
        container_id: str | None = None,
        metadata: dict[str, str] | None = None,
        input_message_ids: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Run:
        """Create a run (status ``queued``) and execute it in the background.

        Fields left None come from the agent (if any), then the configuration. With no agent
        and no model configured, the run still starts and fails with a clear ``last_error``.
        ``container_id`` binds the conversation to that container (Responses' explicit one).
        Conflict if a run is already active on the conversation.
        """
        raise NotImplementedError

    async def get_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        """404 also when ``conversation_id`` is given and the run is not in it."""
        raise NotImplementedError

    async def list_runs(
        self, conversation_id: str, page: PageRequest, kind: str = "run"
    ) -> Page[Run]:
        raise NotImplementedError

    async def update_run(
        self, run_id: str, conversation_id: str | None = None, *, metadata: dict[str, str]
    ) -> Run:
        raise NotImplementedError

    async def cancel_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        """Ask a run to stop; returns the run as ``cancelling`` (or already terminal, unchanged).

        The background task then interrupts any code running and marks it ``cancelled``.
        """
        raise NotImplementedError

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it is terminal (or as it is when ``timeout`` passes)."""
        raise NotImplementedError

    def events(self, run_id: str) -> AsyncIterator[RunEvent]:
        """Events of a run from now on, ending with ``done``.

        Subscribe right after ``start_run`` (before awaiting anything else) to see them all:
        the run does not start executing before the caller yields to the event loop.
        """
        raise NotImplementedError

    async def list_steps(
        self, run_id: str, page: PageRequest, conversation_id: str | None = None
    ) -> Page[Step]:
        raise NotImplementedError

    async def get_step(self, run_id: str, step_id: str) -> Step:
        raise NotImplementedError

    async def run_messages(self, run_id: str) -> list[Message]:
        """Messages a run created, oldest first."""
        raise NotImplementedError

    async def run_steps(self, run_id: str) -> list[Step]:
        """All steps of a run, oldest first (for building Responses ``output``)."""
        raise NotImplementedError

    # --- containers -----------------------------------------------------------------------------

    async def create_container(
        self,
        *,
        name: str | None = None,
        file_ids: list[str] | None = None,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Container:
        """A new container; ``file_ids`` are copied into its /mnt/data."""
        raise NotImplementedError

    async def get_container(self, container_id: str) -> Container:
        """Status ``expired`` once idle past its expiry (then files are no longer served)."""
        raise NotImplementedError

    async def list_containers(self, page: PageRequest) -> Page[Container]:
        raise NotImplementedError

    async def delete_container(self, container_id: str) -> None:
        """Ends its session and deletes its files."""
        raise NotImplementedError

    async def container_for(self, conversation_id: str) -> Container:
        """The conversation's container, created on first use."""
        raise NotImplementedError

    async def add_container_file(
        self,
        container_id: str,
        *,
        filename: str | None = None,
        data: bytes | None = None,
        file_id: str | None = None,
    ) -> StoredFile:
        """Upload bytes (``filename`` + ``data``) or copy an existing file (``file_id``) into
        the container's /mnt/data. Returns the container file record (``path`` set)."""
        raise NotImplementedError

    async def list_container_files(
        self, container_id: str, page: PageRequest
    ) -> Page[StoredFile]:
        raise NotImplementedError

    async def get_container_file(self, container_id: str, file_id: str) -> StoredFile:
        raise NotImplementedError

    async def container_file_content(self, container_id: str, file_id: str) -> bytes:
        raise NotImplementedError

    async def delete_container_file(self, container_id: str, file_id: str) -> None:
        raise NotImplementedError
