"""AgentService: the one entry point of the agents layer for both HTTP faces.

Every object belongs to a tenant, and faces act for one: ``AgentService.for_tenant(t)`` is the
tenant's view (``TenantAgents``), which holds its agents, conversations, messages and runs and
composes the collaborators faces reach through it: ``files`` (file objects), ``containers``
(containers and their files) and ``events`` (run event streams). The service itself keeps what
tenants share (the database, the model client, runs in flight) and starts every run
(``launch``, where the ``admit_run`` quota hook is asked). Faces call the view's coroutines
with internal types and plain values, and translate the results to their wire formats.
Errors are
``sessionpool.errors.AgentsError`` subclasses (ObjectNotFound -> 404, InvalidArgument -> 400,
Conflict -> 409), already rendered by the server's error handlers.

Runs execute in the background (``start_run``, ``start_response``); ``wait_run`` and
``events.subscribe`` let a face answer synchronously or stream. The agent loop itself lives in
``loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sessionpool import errors
from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.containers import Containers
from sessionpool.agents.events import RunEvents
from sessionpool.agents.files import Files
from sessionpool.agents.llm import ChatModel
from sessionpool.agents.loop import Collaborators, execute_run
from sessionpool.agents.records import Records
from sessionpool.agents.store import Store
from sessionpool.agents.types import (
    Agent,
    ContainerNetwork,
    ContainerStatus,
    Conversation,
    Message,
    Page,
    PageRequest,
    Part,
    Run,
    RunError,
    RunEvent,
    RunStatus,
    Step,
    TextPart,
    new_id,
    now,
)
from sessionpool.pool import EngineHandle

log = logging.getLogger("sessionpool.agents")


@dataclass(frozen=True)
class ResponseRequest:
    """One Responses turn in internal terms, for ``AgentService.start_response``."""

    #: input messages to add first, as ``create_conversation`` takes them
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: where the turn goes: this conversation, the one of that earlier response, or (neither)
    #: a new conversation of its own
    conversation_id: str | None = None
    previous_response_id: str | None = None
    agent_id: str | None = None
    model: str | None = None
    instructions: str | None = None
    #: system and developer text of the input, after the conversation's own
    input_instructions: list[str] = field(default_factory=list)
    #: None: the agent's
    tools: list[dict[str, Any]] | None = None
    #: an explicit container, bound to the conversation
    container_id: str | None = None
    #: files for the conversation's own container, copied in unless it has one of that name
    container_file_ids: list[str] = field(default_factory=list)
    #: the egress of the conversation's own container, narrowed from its pool's (None: as is)
    container_network: ContainerNetwork | None = None
    #: the memory limit of the conversation's own container, below its pool's (None: as is)
    container_memory_bytes: int | None = None
    container_memory_limit: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] | None = None
    #: wire fields the face wants back verbatim
    extra: dict[str, Any] = field(default_factory=dict)


#: how often a gateway asks whether its runs were cancelled through another gateway
CANCEL_POLL_SECONDS = 0.25


class RunLocks(Protocol):
    """Runs across the gateways of a cluster (``cluster.remote.ClusterRunLocks``): one run in
    flight per conversation, and cancels that reach the gateway executing the run."""

    async def claim(self, conversation: str, run_id: str, until: float) -> str | None: ...

    async def release(self, conversation: str, run_id: str) -> None: ...

    async def holder(self, conversation: str) -> str | None: ...

    async def cancel(self, run_id: str) -> None: ...

    async def cancels(self, run_ids: list[str]) -> list[str]: ...


#: admits one run (a response too) of a tenant, or refuses it (raising, e.g.
#: ``errors.TenantQuotaExceeded``); what it returns is called once when the run ends, however
#: it ends (a quota's counter goes back down)
RunAdmission = Callable[[str], Callable[[], None]]


class AgentService:
    """What every tenant shares: the database, the model client, runs in flight and their
    events, the cluster's run locks. A tenant's agents, conversations, runs, files and
    containers are reached only through ``for_tenant``.
    """

    def __init__(
        self,
        config: AgentsConfig,
        engine: EngineHandle,
        runs: RunLocks | None = None,
        admit_run: RunAdmission | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        #: set in cluster mode: the runs of every gateway; None: this server's alone
        self.runs = runs
        #: the quota hook: asked before each run starts (None: every run is admitted)
        self.admit_run = admit_run
        self.owner = f"{socket.gethostname()}:{config.data_dir.resolve()}"
        self.pool_name = config.pool or (
            "default" if "default" in engine.pools else next(iter(engine.pools))
        )
        self.model = ChatModel(config)
        #: every tenant's records: for recovery at start and replaying a finished run's events
        #: (whose run a tenant view has already found); tenant views scope their own
        self.records = Records(Store(config.database))
        self.events = RunEvents(self.records)
        #: one lock per container, for every tenant view (see ``Containers.session_for``)
        self.container_locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: the tenant of each run in ``_tasks``, so a cancel from another gateway finds it
        self._tenants: dict[str, str] = {}
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()

    def for_tenant(self, tenant: str) -> TenantAgents:
        """The service as ``tenant`` sees it: its own objects, and nobody else's."""
        return TenantAgents(self, tenant)

    @property
    def closing(self) -> bool:
        return self._closing

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
                if self.runs is not None:
                    with contextlib.suppress(errors.ServiceError):
                        await self.runs.release(run.conversation_id, run.id)
        if self.runs is not None:
            self._spawn(self._watch_cancels())
        log.info("agents service ready (database %s)", _redact(self.records.store.url))

    def _spawn(self, call: Any) -> None:
        task = asyncio.ensure_future(call)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_cancels(self) -> None:
        """Cancels of this gateway's runs sent to another gateway (cluster mode)."""
        assert self.runs is not None
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not self._tasks:
                continue
            try:
                asked = await self.runs.cancels(list(self._tasks))
            except errors.ServiceError:
                continue
            for run_id in asked:
                tenant = self._tenants.get(run_id)
                if tenant is not None and not self.events.cancel_requested(run_id):
                    with contextlib.suppress(errors.ServiceError):
                        await self.for_tenant(tenant).cancel_run(run_id)

    async def active_run(self, conversation_id: str) -> str | None:
        """The run in flight on the conversation: here, or (cluster mode) on any gateway."""
        active = self.events.active_run(conversation_id)
        if active is None and self.runs is not None:
            active = await self.runs.holder(conversation_id)
        return active

    def task(self, run_id: str) -> asyncio.Task[None] | None:
        """The background task executing ``run_id`` on this server, if any."""
        return self._tasks.get(run_id)

    async def launch(self, tenant: str, parts: Collaborators, run: Run) -> Run:
        """Start executing ``run`` (already validated by ``tenant``'s view): the one place every
        run and response starts, so the admission hook sees them all.

        The conversation is claimed here (Conflict while another run holds it, here or on
        another gateway); on any failure before the run is stored, nothing stays claimed or
        admitted.
        """
        conversation_id = run.conversation_id
        if self._closing or self.events.active_run(conversation_id) is not None:
            raise errors.Conflict(f"thread {conversation_id!r} already has an active run")
        release = self.admit_run(tenant) if self.admit_run is not None else _nothing
        self.events.claim(conversation_id, run.id)
        try:
            if self.runs is not None:  # and on no other gateway either
                until = run.expires_at or now() + int(self.config.run_timeout_seconds)
                held = await self.runs.claim(conversation_id, run.id, float(until))
                if held is not None:
                    raise errors.Conflict(
                        f"thread {conversation_id!r} already has an active run {held!r} "
                        "(started through another gateway); wait for it or cancel it"
                    )
            await parts.records.insert(run, conversation_id, run.kind)
        except BaseException:
            release()
            self.events.release(conversation_id)
            if self.runs is not None:
                self._spawn(self._release(conversation_id, run.id))
            raise
        self.events.open(run.id)
        self.events.emit(run.id, RunEvent(kind="run", run=run.model_copy(deep=True)))
        task = asyncio.get_running_loop().create_task(execute_run(parts, run))
        self._tasks[run.id] = task
        self._tenants[run.id] = tenant

        def done(_task: asyncio.Task[None]) -> None:
            release()
            self._tasks.pop(run.id, None)
            self._tenants.pop(run.id, None)
            if self.runs is not None:
                self._spawn(self._release(conversation_id, run.id))

        task.add_done_callback(done)
        return run

    async def _release(self, conversation_id: str, run_id: str) -> None:
        assert self.runs is not None
        try:
            await self.runs.release(conversation_id, run_id)
        except errors.ServiceError as exc:  # it lapses at the run's expiry
            log.warning("run %s: could not release its conversation: %s", run_id, exc.message)

    async def close(self) -> None:
        """Cancel runs in flight (they end ``failed``: server shutting down), close the database."""
        self._closing = True
        for background in list(self._background):
            background.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.model.close()
        await self.records.close()


def _nothing() -> None:
    """The release of a run no admission hook counted."""


class TenantAgents:
    """One tenant's agents service: its agents, conversations, messages, runs, files and
    containers, and no one else's.

    Everything it reads, lists, changes or deletes is the tenant's own (``records`` is scoped),
    so another tenant's id answers ObjectNotFound exactly as an id never issued; everything it
    creates belongs to the tenant; its runs execute in the tenant's containers. Faces get one
    per request (``AgentService.for_tenant``); it is cheap and holds no state of its own.
    """

    def __init__(self, service: AgentService, tenant: str) -> None:
        self.service = service
        self.tenant = tenant
        self.config = service.config
        self.engine = service.engine
        #: a face subscribes to runs it has found through this view
        self.events = service.events
        self.records = service.records.scoped(tenant)
        self.files = Files(self.config, self.records)
        self.containers = Containers(
            self.config,
            self.records,
            self.files,
            service.engine,
            service.pool_name,
            tenant,
            service.container_locks,
        )
        self._run_parts = Collaborators(
            config=self.config,
            model=service.model,
            records=self.records,
            events=self.events,
            files=self.files,
            containers=self.containers,
        )

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
            await self.files.get(fid)
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
            await self.files.get(fid)
        data = agent.model_dump()
        for key, value in changes.items():
            if value is None:
                continue
            if key not in data or key in ("id", "created_at"):
                raise errors.InvalidArgument(f"an agent has no field {key!r}", key)
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

    # --- conversations (threads) and messages ---------------------------------------------------

    async def create_conversation(
        self,
        *,
        metadata: dict[str, str] | None = None,
        file_ids: list[str] | None = None,
        messages: list[dict[str, Any]] | None = None,
        instructions: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Conversation:
        """``messages`` items: ``{"role", "content": str | list[Part], "attachments": [file ids],
        "metadata"}`` added in order. ``instructions`` go before those of every turn."""
        for fid in file_ids or []:
            await self.files.get(fid)
        conversation = Conversation(
            id=new_id("thread_"),
            metadata=metadata or {},
            file_ids=file_ids or [],
            instructions=instructions or [],
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

    async def list_conversations(self, page: PageRequest) -> Page[Conversation]:
        """The tenant's conversations (threads), newest first by default (the console's list;
        neither wire API has one)."""
        return await self.records.page(Conversation, page)

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
        if conversation.container_id and conversation.auto_container:
            with contextlib.suppress(errors.ObjectNotFound):
                await self.containers.delete(conversation.container_id)

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
        active = await self.service.active_run(conversation_id)
        if active is not None:
            raise errors.Conflict(
                f"thread {conversation_id!r} has an active run {active!r}; "
                "wait until it finishes or cancel it before adding messages"
            )
        if role not in ("user", "assistant"):
            raise errors.InvalidArgument(
                f"role must be 'user' or 'assistant', got {role!r}", "role"
            )
        for fid in attachments or []:
            await self.files.get(fid)
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
        if self.service.closing:
            raise errors.Conflict("the server is shutting down; start the run again later")
        conversation = await self.get_conversation(conversation_id)
        agent = await self.get_agent(agent_id) if agent_id else None
        if container_id is not None:
            container = await self.containers.get(container_id)
            if container.status == ContainerStatus.EXPIRED:
                raise errors.InvalidArgument(
                    f"container {container_id!r} has expired; create a new container", "container"
                )
        if max_steps is not None and max_steps < 1:
            raise errors.InvalidArgument("max_steps must be at least 1", "max_steps")
        active = await self.service.active_run(conversation_id)
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
            owner=self.service.owner,
        )
        return await self.service.launch(self.tenant, self._run_parts, run)

    async def start_response(self, request: ResponseRequest) -> Run:
        """Add a Responses turn's input to its conversation and start its run (kind response).

        Should anything fail before the run starts, nothing of the turn stays behind: a
        conversation made for it is deleted, the messages it added are removed.
        """
        if request.conversation_id and request.previous_response_id:
            raise errors.InvalidArgument(
                "give either conversation or previous_response_id, not both",
                "previous_response_id",
            )
        if request.container_id is not None:
            await self.containers.get(request.container_id)  # 404 before anything is written
        if request.container_network is not None:
            self.containers.check_network(request.container_network)  # 400 likewise
        if request.container_memory_bytes is not None:
            self.containers.check_memory(
                request.container_memory_bytes, request.container_memory_limit
            )
        created = False
        if request.conversation_id:
            conversation = await self.get_conversation(request.conversation_id)
        elif request.previous_response_id:
            previous = await self.get_response(request.previous_response_id)
            conversation = await self.get_conversation(previous.conversation_id)
        else:  # a conversation of the response's own, one the client never named
            conversation = await self.create_conversation(extra={"hidden": True})
            created = True
        instructions = [*conversation.instructions, *request.input_instructions]
        message_ids: list[str] = []
        try:
            if request.container_id is None and (
                request.container_file_ids
                or request.container_network is not None
                or request.container_memory_bytes is not None
            ):
                # the conversation's own container (made now, or kept from earlier turns: its
                # interpreter state stays) gets the files, once, and the network and memory
                # limit asked for
                container = await self.containers.for_conversation(conversation.id)
                if request.container_network is not None:
                    await self.containers.set_network(container, request.container_network)
                if request.container_memory_bytes is not None:
                    await self.containers.set_memory(
                        container, request.container_memory_bytes, request.container_memory_limit
                    )
                await self.containers.add_missing_files(container.id, request.container_file_ids)
            for m in request.messages:
                message = await self.add_message(
                    conversation.id,
                    role=m["role"],
                    content=m["content"],
                    attachments=m["attachments"],
                )
                message_ids.append(message.id)
            return await self.start_run(
                conversation.id,
                agent_id=request.agent_id,
                kind="response",
                model=request.model,
                instructions=request.instructions,
                additional_instructions="\n\n".join(instructions) or None,
                tools=request.tools,
                temperature=request.temperature,
                top_p=request.top_p,
                container_id=request.container_id,
                metadata=request.metadata,
                input_message_ids=message_ids,
                extra=request.extra,
            )
        except errors.ServiceError:
            if created:
                await self.delete_conversation(conversation.id)
            else:
                for mid in message_ids:
                    with contextlib.suppress(errors.ServiceError):
                        await self.delete_message(conversation.id, mid)
            raise

    async def get_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        """404 also when ``conversation_id`` is given and the run is not in it."""
        run = await self.records.load(Run, run_id)
        if conversation_id is not None and run.conversation_id != conversation_id:
            raise errors.ObjectNotFound("run", run_id)
        return run

    async def get_response(self, response_id: str) -> Run:
        """A run the Responses face started (404 for an Assistants run)."""
        run = await self.get_run(response_id)
        if run.kind != "response":
            raise errors.ObjectNotFound("response", response_id)
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
        task = self.service.task(run_id)
        if run.status.terminal:
            return run
        if task is None:
            runs = self.service.runs
            if runs is None or run.owner == self.service.owner:
                return run
            # another gateway executes it: it hears of the cancel within CANCEL_POLL_SECONDS
            await runs.cancel(run_id)
            return run.model_copy(update={"status": RunStatus.CANCELLING})
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
        if not run.status.terminal and self.service.task(run_id) is not None:
            await self.cancel_run(run_id)
            await self.wait_run(run_id, timeout=30)
        await self.records.delete_children(Step, run_id)
        await self.records.delete(Run, run_id)

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        """The run once it is terminal (or as it is when ``timeout`` passes).

        Another tenant's run is not found at once, never after waiting for it to end.
        """
        await self.get_run(run_id)
        task = self.service.task(run_id)
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


def _redact(url: str) -> str:
    """The database URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
