"""An in-memory ``AgentService`` for the route tests: no model, no sessions, no database.

A run answers at once with one code call (a log and an image output) and one assistant message
linking a generated CSV, emitting the events a real run emits. Models named ``fail`` fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.service import AgentService
from sessionpool.agents.types import (
    Agent,
    Annotation,
    CodeCall,
    Conversation,
    ImagePart,
    Message,
    MessageStatus,
    Page,
    PageRequest,
    Part,
    Record,
    Run,
    RunError,
    RunEvent,
    RunStatus,
    Step,
    StepStatus,
    StoredFile,
    TextPart,
    ToolOutput,
    Usage,
    new_id,
    now,
)
from sessionpool.errors import Conflict, InvalidRequest, ObjectNotFound

R = TypeVar("R", bound=Record)

ANSWER = "Done: [chart_data.csv](sandbox:/mnt/data/chart_data.csv)"


def paged(items: Sequence[R], page: PageRequest) -> Page[R]:
    ordered = sorted(items, key=lambda r: r.created_at, reverse=page.order == "desc")
    ids = [r.id for r in ordered]
    if page.after in ids:
        ordered = ordered[ids.index(page.after) + 1 :]
    elif page.before in ids:
        ordered = ordered[: ids.index(page.before)]
    return Page[R](items=list(ordered[: page.limit]), has_more=len(ordered) > page.limit)


class FakeAgentService(AgentService):
    def __init__(self) -> None:
        # the real constructor opens a store and binds a pool: none of that here
        self.config = AgentsConfig(data_dir=Path("/nonexistent"))
        self.agents: dict[str, Agent] = {}
        self.files: dict[str, StoredFile] = {}
        self.blobs: dict[str, bytes] = {}
        self.convs: dict[str, Conversation] = {}
        self.msgs: dict[str, Message] = {}
        self.runs: dict[str, Run] = {}
        self.steps: dict[str, Step] = {}
        self.queues: dict[str, list[asyncio.Queue[RunEvent]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.clock = now()

    def tick(self) -> int:
        """Strictly increasing creation times, so ordering is well defined."""
        self.clock += 1
        return self.clock

    # agents
    async def create_agent(self, *, model: str | None, **kw: Any) -> Agent:
        for fid in kw.get("file_ids") or []:
            await self.get_file(fid)
        fields = {k: v for k, v in kw.items() if v is not None}
        agent = Agent(id=new_id("asst_"), created_at=self.tick(), model=model or "dflt", **fields)
        self.agents[agent.id] = agent
        return agent

    async def get_agent(self, agent_id: str) -> Agent:
        if agent_id not in self.agents:
            raise ObjectNotFound("assistant", agent_id)
        return self.agents[agent_id]

    async def update_agent(self, agent_id: str, **changes: Any) -> Agent:
        agent = await self.get_agent(agent_id)
        update = {k: v for k, v in changes.items() if v is not None}
        self.agents[agent_id] = agent.model_copy(update=update)
        return self.agents[agent_id]

    async def list_agents(self, page: PageRequest) -> Page[Agent]:
        return paged(list(self.agents.values()), page)

    async def delete_agent(self, agent_id: str) -> None:
        await self.get_agent(agent_id)
        del self.agents[agent_id]

    # files
    async def create_file(
        self, *, filename: str, data: bytes, purpose: str = "assistants"
    ) -> StoredFile:
        if not data:
            raise InvalidRequest("empty file", "file")
        f = StoredFile(
            id=new_id("file-"),
            created_at=self.tick(),
            filename=filename,
            bytes=len(data),
            purpose=purpose,
        )
        self.files[f.id], self.blobs[f.id] = f, data
        return f

    async def get_file(self, file_id: str) -> StoredFile:
        if file_id not in self.files:
            raise ObjectNotFound("file", file_id)
        return self.files[file_id]

    async def list_files(self, page: PageRequest, purpose: str | None = None) -> Page[StoredFile]:
        items = [f for f in self.files.values() if purpose in (None, f.purpose)]
        return paged(items, page)

    async def file_content(self, file_id: str) -> bytes:
        await self.get_file(file_id)
        return self.blobs[file_id]

    async def delete_file(self, file_id: str) -> None:
        await self.get_file(file_id)
        del self.files[file_id]

    # conversations and messages
    async def create_conversation(
        self,
        *,
        metadata: dict[str, str] | None = None,
        file_ids: list[str] | None = None,
        messages: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Conversation:
        conv = Conversation(
            id=new_id("thread_"),
            created_at=self.tick(),
            metadata=metadata or {},
            file_ids=file_ids or [],
            extra=extra or {},
        )
        self.convs[conv.id] = conv
        for m in messages or []:
            await self.add_message(conv.id, **m)
        return conv

    async def get_conversation(self, conversation_id: str) -> Conversation:
        if conversation_id not in self.convs:
            raise ObjectNotFound("thread", conversation_id)
        return self.convs[conversation_id]

    async def update_conversation(
        self, conversation_id: str, *, metadata: dict[str, str] | None = None
    ) -> Conversation:
        conv = await self.get_conversation(conversation_id)
        if metadata is not None:
            conv = self.convs[conversation_id] = conv.model_copy(update={"metadata": metadata})
        return conv

    async def delete_conversation(self, conversation_id: str) -> None:
        await self.get_conversation(conversation_id)
        del self.convs[conversation_id]

    async def add_message(
        self,
        conversation_id: str,
        *,
        role: str,
        content: str | list[Part],
        attachments: list[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Message:
        await self.get_conversation(conversation_id)
        if any(
            r.conversation_id == conversation_id and not r.status.terminal
            for r in self.runs.values()
        ):
            raise Conflict("a run is active on this thread")
        for fid in attachments or []:
            await self.get_file(fid)
        parts = [TextPart(text=content)] if isinstance(content, str) else content
        msg = Message(
            id=new_id("msg_"),
            created_at=self.tick(),
            conversation_id=conversation_id,
            role="assistant" if role == "assistant" else "user",
            content=parts,
            attachments=attachments or [],
            metadata=metadata or {},
            completed_at=self.clock,
        )
        self.msgs[msg.id] = msg
        return msg

    async def get_message(self, conversation_id: str, message_id: str) -> Message:
        msg = self.msgs.get(message_id)
        if msg is None or msg.conversation_id != conversation_id:
            raise ObjectNotFound("message", message_id)
        return msg

    async def list_messages(
        self, conversation_id: str, page: PageRequest, run_id: str | None = None
    ) -> Page[Message]:
        await self.get_conversation(conversation_id)
        items = [
            m
            for m in self.msgs.values()
            if m.conversation_id == conversation_id and run_id in (None, m.run_id)
        ]
        return paged(items, page)

    async def update_message(
        self, conversation_id: str, message_id: str, *, metadata: dict[str, str] | None = None
    ) -> Message:
        msg = await self.get_message(conversation_id, message_id)
        if metadata is not None:
            msg = self.msgs[message_id] = msg.model_copy(update={"metadata": metadata})
        return msg

    async def delete_message(self, conversation_id: str, message_id: str) -> None:
        await self.get_message(conversation_id, message_id)
        del self.msgs[message_id]

    # runs
    async def start_run(
        self,
        conversation_id: str,
        *,
        agent_id: str | None = None,
        model: str | None = None,
        instructions: str | None = None,
        additional_instructions: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        metadata: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Run:
        await self.get_conversation(conversation_id)
        agent = await self.get_agent(agent_id) if agent_id else None
        run = Run(
            id=new_id("run_"),
            created_at=self.tick(),
            conversation_id=conversation_id,
            agent_id=agent_id,
            model=model or (agent.model if agent else "dflt"),
            instructions=(instructions or (agent.instructions if agent else None) or "")
            + (additional_instructions or ""),
            tools=tools if tools is not None else (agent.tools if agent else []),
            metadata=metadata or {},
            extra=extra or {},
        )
        self.runs[run.id] = run
        task = asyncio.create_task(self._execute(run.id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return run

    def _emit(self, run_id: str, event: RunEvent) -> None:
        for q in self.queues.get(run_id, []):
            q.put_nowait(event)

    def _set_run(self, run_id: str, **update: Any) -> Run:
        run = self.runs[run_id] = self.runs[run_id].model_copy(update=update)
        self._emit(run_id, RunEvent(kind="run", run=run))
        return run

    async def _execute(self, run_id: str) -> None:
        run = self._set_run(run_id, status=RunStatus.IN_PROGRESS, started_at=now())
        await asyncio.sleep(0)
        if run.model == "fail":
            err = RunError(code="server_error", message="the model endpoint answered 500")
            self._set_run(run_id, status=RunStatus.FAILED, failed_at=now(), last_error=err)
            self._emit(run_id, RunEvent(kind="done"))
            return
        png = await self.create_file(filename="/mnt/data/chart.png", data=b"\x89PNG..")
        csv = await self.create_file(filename="/mnt/data/chart_data.csv", data=b"a,b\n1,2\n")
        for f in (png, csv):
            self.files[f.id] = f.model_copy(update={"purpose": "assistants_output"})
        base = {"run_id": run_id, "conversation_id": run.conversation_id, "agent_id": run.agent_id}
        step = Step(id=new_id("step_"), created_at=self.tick(), type="tool_calls", **base)
        self.steps[step.id] = step
        self._emit(run_id, RunEvent(kind="step", step=step))
        call = CodeCall(
            code="plot()",
            outputs=[
                ToolOutput(type="logs", logs="ok\n"),
                ToolOutput(type="image", file_id=png.id),
            ],
        )
        step = self.steps[step.id] = step.model_copy(
            update={"status": StepStatus.COMPLETED, "tool_calls": [call], "completed_at": now()}
        )
        self._emit(run_id, RunEvent(kind="step", step=step))
        msg = Message(
            id=new_id("msg_"),
            created_at=self.tick(),
            conversation_id=run.conversation_id,
            role="assistant",
            status=MessageStatus.IN_PROGRESS,
            agent_id=run.agent_id,
            run_id=run_id,
        )
        self.msgs[msg.id] = msg
        mstep = Step(
            id=new_id("step_"),
            created_at=self.tick(),
            type="message_creation",
            message_id=msg.id,
            **base,
        )
        self.steps[mstep.id] = mstep
        self._emit(run_id, RunEvent(kind="step", step=mstep))
        self._emit(run_id, RunEvent(kind="message", message=msg))
        for piece in (ANSWER[:5], ANSWER[5:]):
            self._emit(run_id, RunEvent(kind="text_delta", message_id=msg.id, delta=piece))
        start = ANSWER.index("sandbox:")
        ann = Annotation(
            text=ANSWER[start:-1],
            start_index=start,
            end_index=len(ANSWER) - 1,
            file_id=csv.id,
            filename=csv.filename,
        )
        msg = self.msgs[msg.id] = msg.model_copy(
            update={
                "status": MessageStatus.COMPLETED,
                "completed_at": now(),
                "content": [ImagePart(file_id=png.id), TextPart(text=ANSWER, annotations=[ann])],
            }
        )
        self._emit(run_id, RunEvent(kind="message", message=msg))
        mstep = self.steps[mstep.id] = mstep.model_copy(
            update={"status": StepStatus.COMPLETED, "completed_at": now()}
        )
        self._emit(run_id, RunEvent(kind="step", step=mstep))
        self._set_run(
            run_id,
            status=RunStatus.COMPLETED,
            completed_at=now(),
            usage=Usage(prompt_tokens=10, completion_tokens=5),
        )
        self._emit(run_id, RunEvent(kind="done"))

    async def get_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        run = self.runs.get(run_id)
        if run is None or conversation_id not in (None, run.conversation_id):
            raise ObjectNotFound("run", run_id)
        return run

    async def list_runs(
        self, conversation_id: str, page: PageRequest, kind: str = "run"
    ) -> Page[Run]:
        await self.get_conversation(conversation_id)
        items = [r for r in self.runs.values() if r.conversation_id == conversation_id]
        return paged(items, page)

    async def update_run(
        self, run_id: str, conversation_id: str | None = None, *, metadata: dict[str, str]
    ) -> Run:
        await self.get_run(run_id, conversation_id)
        run = self.runs[run_id] = self.runs[run_id].model_copy(update={"metadata": metadata})
        return run

    async def cancel_run(self, run_id: str, conversation_id: str | None = None) -> Run:
        run = await self.get_run(run_id, conversation_id)
        if run.status.terminal:
            return run
        return self._set_run(run_id, status=RunStatus.CANCELLED, cancelled_at=now())

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        while not self.runs[run_id].status.terminal:
            await asyncio.sleep(0.01)
        return self.runs[run_id]

    def events(self, run_id: str) -> AsyncIterator[RunEvent]:
        queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        self.queues.setdefault(run_id, []).append(queue)

        async def gen() -> AsyncIterator[RunEvent]:
            try:
                while True:
                    event = await queue.get()
                    yield event
                    if event.kind == "done":
                        return
            finally:
                self.queues[run_id].remove(queue)

        return gen()

    async def list_steps(
        self, run_id: str, page: PageRequest, conversation_id: str | None = None
    ) -> Page[Step]:
        await self.get_run(run_id, conversation_id)
        return paged([s for s in self.steps.values() if s.run_id == run_id], page)

    async def get_step(self, run_id: str, step_id: str) -> Step:
        step = self.steps.get(step_id)
        if step is None or step.run_id != run_id:
            raise ObjectNotFound("run step", step_id)
        return step
