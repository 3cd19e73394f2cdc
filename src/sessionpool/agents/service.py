"""AgentService: the one entry point of the agents layer for both HTTP faces.

Faces call these coroutines with internal types and plain values, and translate the results to
their wire formats. Errors are ``sessionpool.errors.AgentsError`` subclasses (ObjectNotFound ->
404, InvalidRequest -> 400, Conflict -> 409), already rendered by the server's error handlers.

Runs execute in the background (``start_run``); ``wait_run`` and ``events.subscribe`` let a face
answer synchronously or stream. The agent loop itself lives in ``loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from sessionpool import errors
from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.events import RunEvents
from sessionpool.agents.llm import ChatModel
from sessionpool.agents.records import Records
from sessionpool.agents.store import Store
from sessionpool.agents.types import (
    Agent,
    Container,
    ContainerStatus,
    Conversation,
    FilePurpose,
    Message,
    Page,
    PageRequest,
    Part,
    Run,
    RunError,
    RunEvent,
    RunStatus,
    Step,
    StoredFile,
    TextPart,
    new_id,
    now,
)
from sessionpool.engine import Engine
from sessionpool.pool import Pool
from sessionpool.session import Session

log = logging.getLogger("sessionpool.agents")


class AgentService:
    def __init__(self, config: AgentsConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.records = Records(Store(config.database))
        self.events = RunEvents(self.records)
        self.model = ChatModel(config)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._container_locks: dict[str, asyncio.Lock] = {}
        self._closing = False
        self.owner = f"{socket.gethostname()}:{config.data_dir.resolve()}"
        self.pool_name = config.pool or (
            "default" if "default" in engine.pools else next(iter(engine.pools))
        )

    def _pool(self) -> Pool:
        return self.engine.pool(self.pool_name)

    async def start(self) -> None:
        """Open (and create) the database; mark runs a previous process left running as failed."""
        await self.records.open()
        for run in await self.records.all(Run):
            if not run.status.terminal and run.owner in (None, self.owner):
                run.status = RunStatus.FAILED
                run.failed_at = now()
                run.last_error = RunError(
                    code="server_error",
                    message="the server restarted while this run was in progress; start a new run",
                )
                await self.records.save(run)
        log.info("agents service ready (database %s)", _redact(self.records.store.url))

    async def close(self) -> None:
        """Cancel runs in flight (they end ``failed``: server shutting down), close the database."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.model.close()
        await self.records.close()

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
        for fid in file_ids or []:
            await self.get_file(fid)
        agent = Agent(
            id=new_id("asst_"),
            model=model or self.config.default_model,
            name=name,
            description=description,
            instructions=instructions,
            tools=tools or [],
            file_ids=file_ids or [],
            temperature=temperature,
            top_p=top_p,
            response_format=response_format,
            metadata=metadata or {},
            extra=extra or {},
        )
        await self.records.insert(agent)
        return agent

    async def get_agent(self, agent_id: str) -> Agent:
        return await self.records.load(Agent, agent_id)

    async def update_agent(self, agent_id: str, **changes: Any) -> Agent:
        """Set the given fields (same names as ``create_agent``); None values are ignored."""
        agent = await self.get_agent(agent_id)
        for fid in changes.get("file_ids") or []:
            await self.get_file(fid)
        data = agent.model_dump()
        for key, value in changes.items():
            if value is None:
                continue
            if key not in data or key in ("id", "created_at"):
                raise errors.InvalidRequest(f"an agent has no field {key!r}", key)
            data[key] = value
        updated = Agent.model_validate(data)
        await self.records.save(updated)
        return updated

    async def list_agents(self, page: PageRequest) -> Page[Agent]:
        return await self.records.page(Agent, page)

    async def delete_agent(self, agent_id: str) -> None:
        """404 if it does not exist."""
        if not await self.records.delete(Agent, agent_id):
            raise errors.ObjectNotFound("agent", agent_id)

    async def agents_named(self, name: str) -> list[Agent]:
        """Every agent called ``name``, oldest first (Foundry's versions of one agent)."""
        return [a for a in await self.records.all(Agent) if a.name == name]

    # --- files ----------------------------------------------------------------------------------

    def _check_size(self, filename: str, data: bytes) -> None:
        if len(data) > self.config.max_file_bytes:
            raise errors.FileTooLarge(filename, self.config.max_file_bytes)

    async def create_file(
        self, *, filename: str, data: bytes, purpose: str = "assistants"
    ) -> StoredFile:
        """Store an uploaded file. Over-limit uploads -> FileTooLarge (413)."""
        name = _clean_filename(filename)
        self._check_size(name, data)
        record = StoredFile(
            id=new_id("file-"), filename=name, bytes=len(data), purpose=purpose or "assistants"
        )
        await self.records.put_blob(record.id, data)
        await self.records.insert(record, tag=record.purpose)
        return record

    async def get_file(self, file_id: str) -> StoredFile:
        return await self.records.load(StoredFile, file_id)

    async def list_files(self, page: PageRequest, purpose: str | None = None) -> Page[StoredFile]:
        """Every file object (uploads and generated outputs), optionally of one purpose."""
        return await self.records.page(
            StoredFile, page, tag=purpose, exclude_tag=FilePurpose.CONTAINER
        )

    async def file_content(self, file_id: str) -> bytes:
        await self.get_file(file_id)
        data = await self.records.get_blob(file_id)
        if data is None:
            raise errors.ObjectNotFound("file content", file_id)
        return data

    async def delete_file(self, file_id: str) -> None:
        if not await self.records.delete(StoredFile, file_id):
            raise errors.ObjectNotFound("file", file_id)
        await self.records.delete_blob(file_id)

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
        for fid in file_ids or []:
            await self.get_file(fid)
        conversation = Conversation(
            id=new_id("thread_"),
            metadata=metadata or {},
            file_ids=file_ids or [],
            extra=extra or {},
        )
        await self.records.insert(conversation)
        for item in messages or []:
            await self.add_message(
                conversation.id,
                role=str(item.get("role", "user")),
                content=item.get("content", ""),
                attachments=item.get("attachments"),
                metadata=item.get("metadata"),
            )
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return await self.records.load(Conversation, conversation_id)

    async def update_conversation(
        self, conversation_id: str, *, metadata: dict[str, str] | None = None
    ) -> Conversation:
        conversation = await self.get_conversation(conversation_id)
        if metadata is not None:
            conversation.metadata = metadata
            await self.records.save(conversation)
        return conversation

    async def delete_conversation(self, conversation_id: str) -> None:
        """Deletes its messages, runs and steps too (files stay until deleted)."""
        conversation = await self.get_conversation(conversation_id)
        run_id = self.events.active_run(conversation_id)
        if run_id is not None:  # stop it first, or it would write into what is deleted next
            await self.cancel_run(run_id)
            await self.wait_run(run_id, timeout=30)
        for rid in await self.records.delete_children(Run, conversation_id):
            await self.records.delete_children(Step, rid)
        await self.records.delete_children(Message, conversation_id)
        await self.records.delete(Conversation, conversation_id)
        if conversation.container_id and conversation.extra.get("auto_container", True):
            with contextlib.suppress(errors.ObjectNotFound):
                await self.delete_container(conversation.container_id)

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
        await self.get_conversation(conversation_id)
        active = self.events.active_run(conversation_id)
        if active is not None:
            raise errors.Conflict(
                f"thread {conversation_id!r} has an active run {active!r}; "
                "wait until it finishes or cancel it before adding messages"
            )
        if role not in ("user", "assistant"):
            raise errors.InvalidRequest(f"role must be 'user' or 'assistant', got {role!r}", "role")
        for fid in attachments or []:
            await self.get_file(fid)
        parts: list[Part] = [TextPart(text=content)] if isinstance(content, str) else list(content)
        message = Message(
            id=new_id("msg_"),
            conversation_id=conversation_id,
            role=role,  # type: ignore[arg-type]
            content=parts,
            attachments=attachments or [],
            metadata=metadata or {},
            completed_at=now(),
        )
        await self.records.insert(message, conversation_id)
        return message

    async def get_message(self, conversation_id: str, message_id: str) -> Message:
        message = await self.records.load(Message, message_id)
        if message.conversation_id != conversation_id:
            raise errors.ObjectNotFound("message", message_id)
        return message

    async def list_messages(
        self, conversation_id: str, page: PageRequest, run_id: str | None = None
    ) -> Page[Message]:
        await self.get_conversation(conversation_id)
        return await self.records.page(Message, page, conversation_id, run_id)

    async def all_messages(self, conversation_id: str) -> list[Message]:
        """Every message of the conversation, oldest first."""
        return await self.records.all(Message, conversation_id)

    async def update_message(
        self, conversation_id: str, message_id: str, *, metadata: dict[str, str] | None = None
    ) -> Message:
        message = await self.get_message(conversation_id, message_id)
        if metadata is not None:
            message.metadata = metadata
            await self.records.save(message)
        return message

    async def delete_message(self, conversation_id: str, message_id: str) -> None:
        await self.get_message(conversation_id, message_id)
        await self.records.delete(Message, message_id)

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
        if self._closing:
            raise errors.Conflict("the server is shutting down; start the run again later")
        conversation = await self.get_conversation(conversation_id)
        agent = await self.get_agent(agent_id) if agent_id else None
        if container_id is not None:
            container = await self.get_container(container_id)
            if container.status == ContainerStatus.EXPIRED:
                raise errors.InvalidRequest(
                    f"container {container_id!r} has expired; create a new container", "container"
                )
        if max_steps is not None and max_steps < 1:
            raise errors.InvalidRequest("max_steps must be at least 1", "max_steps")
        active = self.events.active_run(conversation_id)
        if active is not None:
            raise errors.Conflict(
                f"thread {conversation_id!r} already has an active run {active!r}; "
                "wait for it or cancel it"
            )
        text = instructions if instructions is not None else (agent.instructions if agent else None)
        if additional_instructions:
            text = f"{text}\n\n{additional_instructions}" if text else additional_instructions
        run = Run(
            id=new_id("run_" if kind == "run" else "resp_"),
            conversation_id=conversation_id,
            agent_id=agent.id if agent else None,
            kind=kind,  # type: ignore[arg-type]
            model=model or (agent.model if agent else "") or self.config.default_model,
            instructions=text,
            tools=tools if tools is not None else (agent.tools if agent else []),
            temperature=temperature
            if temperature is not None
            else (agent.temperature if agent else None),
            top_p=top_p if top_p is not None else (agent.top_p if agent else None),
            max_steps=max_steps or self.config.max_steps,
            container_id=container_id or conversation.container_id,
            metadata=metadata or {},
            input_message_ids=input_message_ids or [],
            expires_at=now() + int(self.config.run_timeout_seconds),
            extra=extra or {},
            owner=self.owner,
        )
        # checked again after the awaits
        if self._closing or self.events.active_run(conversation_id) is not None:
            raise errors.Conflict(f"thread {conversation_id!r} already has an active run")
        self.events.claim(conversation_id, run.id)
        try:
            await self.records.insert(run, conversation_id, run.kind)
        except BaseException:
            self.events.release(conversation_id)
            raise
        self.events.open(run.id)
        self.events.emit(run.id, RunEvent(kind="run", run=run.model_copy(deep=True)))
        # imported here: loop imports this module's types at module level
        from sessionpool.agents.loop import execute_run

        task = asyncio.get_running_loop().create_task(execute_run(self, run))
        self._tasks[run.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run.id, None))
        return run

    async def get_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        """404 also when ``conversation_id`` is given and the run is not in it."""
        run = await self.records.load(Run, run_id)
        if conversation_id is not None and run.conversation_id != conversation_id:
            raise errors.ObjectNotFound("run", run_id)
        return run

    async def list_runs(
        self, conversation_id: str, page: PageRequest, kind: str = "run"
    ) -> Page[Run]:
        await self.get_conversation(conversation_id)
        return await self.records.page(Run, page, conversation_id, kind)

    async def all_runs(self, conversation_id: str, kind: str = "run") -> list[Run]:
        """Every run of the conversation of one face's ``kind``, oldest first."""
        return await self.records.all(Run, conversation_id, kind)

    async def update_run(
        self, run_id: str, conversation_id: str | None = None, *, metadata: dict[str, str]
    ) -> Run:
        run = await self.get_run(run_id, conversation_id)
        run.metadata = metadata
        await self.records.save(run)
        return run

    async def cancel_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        """Ask a run to stop; returns the run as ``cancelling`` (or already terminal, unchanged).

        The background task then interrupts any code running and marks it ``cancelled``.
        """
        run = await self.get_run(run_id, conversation_id)
        task = self._tasks.get(run_id)
        if run.status.terminal or task is None:
            return run
        self.events.request_cancel(run_id)
        run.status = RunStatus.CANCELLING
        await self.records.save(run)
        self.events.emit(run_id, RunEvent(kind="run", run=run.model_copy(deep=True)))
        task.cancel()
        return run

    async def delete_run(self, run_id: str) -> None:
        """Delete a run (a response) and its steps; one in flight is cancelled first. The
        messages it added stay in their conversation."""
        run = await self.get_run(run_id)
        if not run.status.terminal and run_id in self._tasks:
            await self.cancel_run(run_id)
            await self.wait_run(run_id, timeout=30)
        await self.records.delete_children(Step, run_id)
        await self.records.delete(Run, run_id)

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it is terminal (or as it is when ``timeout`` passes)."""
        task = self._tasks.get(run_id)
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        return await self.get_run(run_id)

    async def list_steps(
        self, run_id: str, page: PageRequest, conversation_id: str | None = None
    ) -> Page[Step]:
        await self.get_run(run_id, conversation_id)
        return await self.records.page(Step, page, run_id)

    async def get_step(self, run_id: str, step_id: str) -> Step:
        step = await self.records.load(Step, step_id)
        if step.run_id != run_id:
            raise errors.ObjectNotFound("run step", step_id)
        return step

    async def run_messages(self, run_id: str) -> list[Message]:
        """Messages a run created, oldest first."""
        run = await self.get_run(run_id)
        return await self.records.all(Message, run.conversation_id, run_id)

    async def run_steps(self, run_id: str) -> list[Step]:
        """All steps of a run, oldest first (for building Responses ``output``)."""
        return await self.records.all(Step, run_id)

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
        sources = [await self.get_file(fid) for fid in file_ids or []]
        minutes = expires_after_minutes or self.config.container_expiry_minutes
        if minutes < 1:
            raise errors.InvalidRequest("expires_after.minutes must be at least 1", "expires_after")
        cid = new_id("cntr_")
        container = Container(
            id=cid,
            name=name,
            session_id=cid,
            expires_after_minutes=minutes,
            memory_limit=memory_limit,
            metadata=metadata or {},
        )
        await self.records.insert(container)
        for source in sources:
            await self.copy_into_container(container, source)
        return container

    async def _expire_if_idle(self, container: Container) -> Container:
        if container.status == ContainerStatus.RUNNING and now() >= container.expires_at:
            container.status = ContainerStatus.EXPIRED
            await self.records.save(container)
            await self._pool().delete(container.session_id)
        return container

    async def get_container(self, container_id: str) -> Container:
        """Status ``expired`` once idle past its expiry (then files are no longer served)."""
        container = await self.records.load(Container, container_id)
        return await self._expire_if_idle(container)

    async def _live_container(self, container_id: str) -> Container:
        container = await self.get_container(container_id)
        if container.status == ContainerStatus.EXPIRED:
            raise errors.InvalidRequest(
                f"container {container_id!r} expired after {container.expires_after_minutes} idle "
                "minutes; its files are gone. Create a new container.",
                "container_id",
            )
        return container

    async def list_containers(self, page: PageRequest) -> Page[Container]:
        result = await self.records.page(Container, page)
        return Page[Container](
            items=[await self._expire_if_idle(c) for c in result.items], has_more=result.has_more
        )

    async def delete_container(self, container_id: str) -> None:
        """Ends its session and deletes its files."""
        container = await self.records.load(Container, container_id)
        await self._pool().delete(container.session_id)
        for fid in await self.records.delete_children(StoredFile, container.id):
            await self.records.delete_blob(fid)
        await self.records.delete(Container, container_id)

    async def container_for(self, conversation_id: str) -> Container:
        """The conversation's container, created on first use (or again after it expired)."""
        conversation = await self.get_conversation(conversation_id)
        if conversation.container_id:
            with contextlib.suppress(errors.ObjectNotFound):
                container = await self.get_container(conversation.container_id)
                if container.status == ContainerStatus.RUNNING:
                    return container
        container = await self.create_container(name=f"conversation {conversation_id}")
        conversation.container_id = container.id
        conversation.extra["auto_container"] = True
        await self.records.save(conversation)
        return container

    async def bind_container(self, conversation_id: str, container_id: str) -> None:
        """Make ``container_id`` the conversation's container (an explicit choice)."""
        conversation = await self.get_conversation(conversation_id)
        if conversation.container_id != container_id:
            conversation.container_id = container_id
            conversation.extra["auto_container"] = False
            await self.records.save(conversation)

    async def session_for(self, container: Container) -> Session:
        """The container's live session; a fresh one gets the container's files back."""
        lock = self._container_locks.setdefault(container.id, asyncio.Lock())
        async with lock:
            pool = self._pool()
            fresh = pool.get(container.session_id) is None
            session = await pool.acquire(container.session_id)
            if fresh:
                for record in await self.container_files(container.id):
                    data = await self.records.get_blob(record.id)
                    if data is not None and record.path:
                        await session.write_file(_relative(record.path), data)
            container.last_active_at = now()
            await self.records.save(container)
            return session

    async def container_files(self, container_id: str) -> list[StoredFile]:
        return await self.records.all(StoredFile, container_id)

    async def copy_into_container(
        self, container: Container, source: StoredFile, session: Session | None = None
    ) -> StoredFile:
        """The container's copy of file object ``source`` at /mnt/data/<its name>."""
        data = await self.file_content(source.id)
        return await self.put_container_file(
            container,
            path=f"/mnt/data/{source.filename}",
            data=data,
            source="user",
            origin_id=source.id,
            session=session,
        )

    async def put_container_file(
        self,
        container: Container,
        *,
        path: str,
        data: bytes,
        source: str,
        origin_id: str | None = None,
        session: Session | None = None,
        write: bool = True,
    ) -> StoredFile:
        """Record (and, with ``write``, write into the live session) the file at ``path``.

        One record per path: a file rewritten later keeps its id and gets the new bytes.
        """
        self._check_size(path, data)
        existing = next(
            (f for f in await self.container_files(container.id) if f.path == path), None
        )
        purpose = FilePurpose.OUTPUT if source == "assistant" else FilePurpose.CONTAINER
        if existing is not None:
            record = existing
            record.bytes = len(data)
            record.origin_id = origin_id or record.origin_id
            await self.records.put_blob(record.id, data)
            await self.records.save(record)
        else:
            record = StoredFile(
                id=new_id("cfile_"),
                filename=path.rsplit("/", 1)[-1],
                bytes=len(data),
                purpose=purpose,
                container_id=container.id,
                path=path,
                source=source,  # type: ignore[arg-type]
                origin_id=origin_id,
            )
            await self.records.put_blob(record.id, data)
            await self.records.insert(record, container.id, purpose)
        if write:
            if session is None and self._pool().get(container.session_id):
                session = await self.session_for(container)
            if session is not None:
                await session.write_file(_relative(path), data)
        return record

    async def forget_container_file(self, record: StoredFile) -> None:
        """Drop the record (and bytes) of a container file that is gone from /mnt/data."""
        await self.records.delete(StoredFile, record.id)
        await self.records.delete_blob(record.id)

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
        container = await self._live_container(container_id)
        if file_id is not None:
            return await self.copy_into_container(container, await self.get_file(file_id))
        if data is None or not filename:
            raise errors.InvalidRequest("give a file upload or a file_id", "file")
        name = _clean_filename(filename)
        return await self.put_container_file(
            container, path=f"/mnt/data/{name}", data=data, source="user"
        )

    async def list_container_files(self, container_id: str, page: PageRequest) -> Page[StoredFile]:
        await self._live_container(container_id)
        return await self.records.page(StoredFile, page, container_id)

    async def get_container_file(self, container_id: str, file_id: str) -> StoredFile:
        await self._live_container(container_id)
        record = await self.records.load(StoredFile, file_id, "container file")
        if record.container_id != container_id:
            raise errors.ObjectNotFound("container file", file_id)
        return record

    async def container_file_content(self, container_id: str, file_id: str) -> bytes:
        await self.get_container_file(container_id, file_id)
        data = await self.records.get_blob(file_id)
        if data is None:
            raise errors.ObjectNotFound("container file", file_id)
        return data

    async def delete_container_file(self, container_id: str, file_id: str) -> None:
        container = await self._live_container(container_id)
        record = await self.get_container_file(container_id, file_id)
        await self.records.delete(StoredFile, file_id)
        await self.records.delete_blob(file_id)
        session = self._pool().get(container.session_id)
        if session is not None and record.path:
            with contextlib.suppress(errors.FileError):
                await session.delete_file(_relative(record.path))


def _relative(path: str) -> str:
    """``/mnt/data/a/b.csv`` -> ``a/b.csv`` (the session's file API is rooted at /mnt/data)."""
    prefix = "/mnt/data/"
    return path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")


def _clean_filename(filename: str) -> str:
    """The last component of an uploaded name, without NULs or path tricks."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    if name in ("", ".", ".."):
        raise errors.InvalidRequest(f"invalid file name {filename!r}", "file")
    return name[:255]


def _redact(url: str) -> str:
    """The database URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
