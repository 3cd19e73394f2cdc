"""The agent loop: model -> code in the container -> model ... -> answer, every step recorded.

One run is one background task. Each model reply either asks for code (a ``tool_calls`` step:
the code runs in the conversation's container and its output goes back to the model) or
answers (the assistant message, with the figures shown and links to files the code wrote).
Every way a run can go wrong ends in a terminal status with ``last_error``; none hangs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from sessionpool import errors, paths
from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.containers import Containers
from sessionpool.agents.events import RunEvents
from sessionpool.agents.files import Files
from sessionpool.agents.llm import ChatModel, ModelError, ToolCallRequest
from sessionpool.agents.records import Records
from sessionpool.agents.types import (
    Agent,
    Annotation,
    CodeCall,
    Container,
    Conversation,
    FilePurpose,
    ImagePart,
    Message,
    MessageStatus,
    Run,
    RunError,
    RunEvent,
    RunStatus,
    ShellOutput,
    Step,
    StepStatus,
    StoredFile,
    TextPart,
    ToolOutput,
    Usage,
    new_id,
    now,
)
from sessionpool.pool import SessionHandle
from sessionpool.types import ExecutionResult, ExecutionStatus

log = logging.getLogger("sessionpool.agents")

#: a link the model writes to a file in the container: ``sandbox:/mnt/data/chart.png``
SANDBOX_LINK = re.compile(r"sandbox:/mnt/data/[^\s)\]\"'<>]+")

#: the tool output the model sees is cut here (the step keeps the cell's full logs)
MODEL_OUTPUT_CHARS = 20_000
#: an earlier turn's cell output is cut here when the conversation goes back to the model
HISTORY_OUTPUT_CHARS = 2_000
#: files one cell may add to its container (the rest stay in the session, unrecorded)
CAPTURE_MAX_FILES = 100

HINT = (
    "You can run Python with the `python` tool: a stateful sandbox whose working directory is "
    "/mnt/data. Files you save there can be offered to the user as links of the form "
    "sandbox:/mnt/data/<name>. Figures left open are shown to the user."
)


SHELL_HINT = (
    "You can also run shell commands with the `shell` tool, in the same sandbox (the same files "
    "and working directory)."
)


@dataclass(frozen=True)
class Collaborators:
    """What a run works with: the service builds one and hands it to every run."""

    config: AgentsConfig
    model: ChatModel
    records: Records
    events: RunEvents
    files: Files
    containers: Containers


class _Stop(Exception):
    """End the run with this status and error."""

    def __init__(self, status: RunStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = RunError(code=code, message=message)


async def execute_run(parts: Collaborators, run: Run) -> None:
    """Carry ``run`` to a terminal status. Never raises."""
    loop = _Loop(parts, run)
    parts.model.stats.runs_started += 1
    try:
        try:
            async with asyncio.timeout(parts.config.run_timeout_seconds):
                await loop.run()
        except TimeoutError:
            raise _Stop(
                RunStatus.FAILED,
                "timeout",
                f"the run did not finish within {parts.config.run_timeout_seconds:g} s "
                "(agents.run_timeout_seconds)",
            ) from None
    except _Stop as stop:
        await loop.finish(stop.status, stop.error)
    except ModelError as exc:
        await loop.finish(RunStatus.FAILED, RunError(code=exc.code, message=exc.message))
    except asyncio.CancelledError:
        await loop.interrupt()
        if parts.events.cancel_requested(run.id):
            await loop.finish(RunStatus.CANCELLED, None)
        else:
            await loop.finish(
                RunStatus.FAILED,
                RunError(
                    code="server_error",
                    message="the server shut down while this run was in progress; start it again",
                ),
            )
    except errors.ServiceError as exc:
        await loop.finish(
            RunStatus.FAILED,
            RunError(code="session_error", message=f"the code interpreter failed: {exc.message}"),
        )
    except Exception:
        log.exception("run %s failed unexpectedly", run.id)
        await loop.finish(
            RunStatus.FAILED,
            RunError(
                code="server_error",
                message="an unexpected error ended the run; the server log has the details",
            ),
        )


class _Loop:
    def __init__(self, parts: Collaborators, run: Run) -> None:
        self.config = parts.config
        self.model = parts.model
        self.records = parts.records
        self.events = parts.events
        self.files = parts.files
        self.containers = parts.containers
        self.run_ = run
        self.usage = Usage()
        self.container: Container | None = None
        self.session: SessionHandle | None = None
        self.open_steps: list[Step] = []
        self.images: list[str] = []
        #: files a cell wrote that were not recorded (past the capture limits)
        self.skipped: list[str] = []
        #: the assistant message being streamed, its step, and the text so far
        self.writing: tuple[Message, Step] | None = None
        self.streamed: list[str] = []

    # --- state changes ------------------------------------------------------------------------

    def emit(self, event: RunEvent) -> None:
        self.events.emit(self.run_.id, event)

    async def set_run(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.run_, key, value)
        await self.records.save(self.run_)
        self.emit(RunEvent(kind="run", run=self.run_.model_copy(deep=True)))

    async def save_step(self, step: Step, new: bool = False) -> None:
        if new:
            await self.records.insert(step, self.run_.id)
        else:
            await self.records.save(step)
        self.emit(RunEvent(kind="step", step=step.model_copy(deep=True)))

    async def interrupt(self) -> None:
        if self.session is not None:
            try:
                await self.session.interrupt()
            except Exception:  # the session may already be gone
                log.debug("interrupt of run %s's session failed", self.run_.id, exc_info=True)

    async def finish(self, status: RunStatus, error: RunError | None) -> None:
        """Record the terminal state (shielded: a second cancel cannot leave it half-written)."""
        try:
            await asyncio.shield(self._finish(status, error))
        except asyncio.CancelledError:
            pass

    async def _finish(self, status: RunStatus, error: RunError | None) -> None:
        t = now()
        step_status = {
            RunStatus.CANCELLED: StepStatus.CANCELLED,
            RunStatus.EXPIRED: StepStatus.EXPIRED,
        }.get(status, StepStatus.FAILED)
        try:
            if self.writing is not None:  # cut off mid-answer: keep what was written
                message = self.writing[0]
                message.status = MessageStatus.INCOMPLETE
                message.content = [TextPart(text="".join(self.streamed))]
                await self.records.save(message)
                self.emit(RunEvent(kind="message", message=message.model_copy(deep=True)))
                self.writing = None
            for step in self.open_steps:
                step.status = step_status
                if step_status == StepStatus.CANCELLED:
                    step.cancelled_at = t
                else:
                    step.failed_at = t
                    step.last_error = error
                for call in step.tool_calls:
                    if call.status in ("in_progress", "interpreting"):
                        call.status = "incomplete" if status == RunStatus.CANCELLED else "failed"
                await self.save_step(step)
            self.open_steps.clear()
            stamp = {
                RunStatus.COMPLETED: "completed_at",
                RunStatus.CANCELLED: "cancelled_at",
                RunStatus.FAILED: "failed_at",
                RunStatus.EXPIRED: "failed_at",
            }.get(status)
            changes: dict[str, Any] = {"status": status, "last_error": error, "usage": self.usage}
            if stamp:
                changes[stamp] = t
            await self.set_run(**changes)
            if status == RunStatus.FAILED and error is not None:
                log.info("run %s failed: %s: %s", self.run_.id, error.code, error.message)
        except Exception:
            log.exception("could not record the end of run %s", self.run_.id)
        finally:
            self.model.stats.run_ended(status)
            self.emit(RunEvent(kind="done"))

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        run = self.run_
        await asyncio.sleep(0)  # let the caller subscribe to events before the first change
        await self.set_run(status=RunStatus.IN_PROGRESS, started_at=now())
        if not run.model:
            raise _Stop(
                RunStatus.FAILED,
                "invalid_request",
                "no model was named and agents.default_model is not set; name a model in the "
                "request or the agent, or configure a default (docs/agents.md)",
            )
        chat = await self.prepare()
        shell = any(tool.get("type") == "shell" for tool in run.tools)
        for _ in range(run.max_steps):
            began = time.perf_counter()
            try:
                reply = await self.model.complete(
                    run.model,
                    chat,
                    temperature=run.temperature,
                    top_p=run.top_p,
                    shell=shell,
                    on_text=self.on_text,
                )
            except ModelError:
                self.model.stats.model_seconds["error"].observe(time.perf_counter() - began)
                raise
            self.model.stats.model_seconds["ok"].observe(time.perf_counter() - began)
            self.usage = self.usage.add(reply.usage)
            if not reply.tool_calls:
                await self.answer(reply.content or "", reply.usage, final=True)
                await self.finish(RunStatus.COMPLETED, None)
                return
            if self.writing is not None:  # text before the code: a message of its own
                await self.answer(reply.content or "", reply.usage, final=False)
            chat.append(reply.raw_message)
            step = Step(
                id=new_id("step_"),
                run_id=run.id,
                conversation_id=run.conversation_id,
                agent_id=run.agent_id,
                type="tool_calls",
                tool_calls=[self.new_call(call, shell) for call in reply.tool_calls],
                usage=reply.usage,
            )
            self.open_steps.append(step)
            await self.save_step(step, new=True)
            for call, request in zip(step.tool_calls, reply.tool_calls, strict=True):
                if request.name not in ("python", "shell") or (
                    request.name == "shell" and not shell
                ):
                    offered = "`python` or `shell`" if shell else "`python`"
                    text = f"error: there is no tool named {request.name!r}; use {offered}"
                    call.outputs = [ToolOutput(type="logs", logs=text)]
                    call.status = "failed"
                else:
                    call.status = "interpreting"
                    await self.save_step(step)
                    if call.kind == "shell":
                        text = await self.execute_shell(call, request.timeout_ms)
                    else:
                        text = await self.execute(call)
                chat.append(
                    {
                        "role": "tool",
                        "tool_call_id": request.id,
                        "content": text[:MODEL_OUTPUT_CHARS] or "(no output)",
                    }
                )
            step.status = StepStatus.COMPLETED
            step.completed_at = now()
            self.open_steps.remove(step)
            await self.save_step(step)
        raise _Stop(
            RunStatus.FAILED,
            "max_steps_exceeded",
            f"the model asked to run code {run.max_steps} times without giving an answer; "
            "ask for less per turn, or raise max_steps (agents.max_steps)",
        )

    def new_call(self, request: ToolCallRequest, shell: bool) -> CodeCall:
        """The step's record of one tool call the model asked for."""
        if shell and request.name == "shell":
            commands = request.commands
            return CodeCall(
                kind="shell",
                code="\n".join(commands),
                commands=commands,
                max_output_length=request.max_output_length,
                container_id=self.container_id,
            )
        return CodeCall(code=request.code, container_id=self.container_id)

    @property
    def container_id(self) -> str | None:
        return self.container.id if self.container else None

    async def prepare(self) -> list[dict[str, Any]]:
        """Bind the container, stage the input files, and build the chat transcript."""
        run = self.run_
        if run.container_id:
            await self.containers.bind(run.conversation_id, run.container_id)
        self.container = await self.containers.for_conversation(run.conversation_id)
        if run.container_id != self.container.id:
            await self.set_run(container_id=self.container.id)
        # no session yet: a turn that runs no code never takes one from the pool; the first
        # cell's session_for writes every container file (the staged inputs too) into it
        messages = await self.records.all(Message, run.conversation_id)
        conversation = await self.records.load(Conversation, run.conversation_id)
        inputs: list[str] = list(conversation.file_ids)
        if run.agent_id:
            try:
                inputs = (await self.records.load(Agent, run.agent_id)).file_ids + inputs
            except errors.ObjectNotFound:
                pass
        for message in messages:
            inputs += message.attachments
        staged = {f.origin_id for f in await self.containers.all_files(self.container.id)}
        for fid in dict.fromkeys(inputs):
            if fid in staged:
                continue
            try:
                source = await self.files.get(fid)
            except errors.ObjectNotFound:
                continue  # deleted since it was attached
            await self.containers.copy_in(self.container, source)
        files = [f.path for f in await self.containers.all_files(self.container.id) if f.path]
        system = [run.instructions or "", HINT]
        if any(tool.get("type") == "shell" for tool in run.tools):
            system.append(SHELL_HINT)
        if files:
            system.append("Files in /mnt/data: " + ", ".join(sorted(files)))
        chat: list[dict[str, Any]] = [
            {"role": "system", "content": "\n\n".join(s for s in system if s)}
        ]
        # an earlier turn's code goes before its final message (after any text it wrote first)
        last_of_run = {m.run_id: m.id for m in messages if m.role == "assistant" and m.run_id}
        for message in messages:
            if message.run_id and last_of_run.get(message.run_id) == message.id:
                chat += await self.earlier_code(message.run_id)
            if message.text:
                chat.append({"role": message.role, "content": message.text})
        return chat

    async def earlier_code(self, run_id: str) -> list[dict[str, Any]]:
        """An earlier turn's code and outputs, as the model saw them: the next turn can build on
        the variables and files it made ("now make the bars red")."""
        chat: list[dict[str, Any]] = []
        for step in await self.records.all(Step, run_id):
            calls = [c for c in step.tool_calls if c.status == "completed"]
            if step.type != "tool_calls" or not calls:
                continue
            chat.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {
                                "name": "shell",
                                "arguments": json.dumps({"commands": c.commands}),
                            }
                            if c.kind == "shell"
                            else {
                                "name": "python",
                                "arguments": json.dumps({"code": c.code}),
                            },
                        }
                        for c in calls
                    ],
                }
            )
            for c in calls:
                logs = "".join(o.logs or "" for o in c.outputs if o.type == "logs")
                chat.append(
                    {
                        "role": "tool",
                        "tool_call_id": c.id,
                        "content": logs[:HISTORY_OUTPUT_CHARS] or "(no output)",
                    }
                )
        return chat

    async def execute(self, call: CodeCall) -> str:
        """Run one code call; fill its outputs; the text the model gets back."""
        assert self.container is not None
        self.session = await self.containers.session_for(self.container)
        before = await _snapshot(self.session)
        result = await self.session.execute(call.code, timeout=self.config.tool_timeout_seconds)
        logs = format_logs(result)
        call.outputs = [ToolOutput(type="logs", logs=logs)] if logs else []
        for index, png in enumerate(result.images):
            image = StoredFile(
                id=new_id("file-"),
                filename=f"{call.id}-{index}.png",
                bytes=len(png),
                purpose=FilePurpose.OUTPUT,
                source="assistant",
            )
            await self.files.add(image, png)
            call.outputs.append(ToolOutput(type="image", file_id=image.id))
            self.images.append(image.id)
        self.skipped.clear()
        written = await self.capture(before)
        call.file_ids = [f.id for f in written]
        call.status = "completed"
        text = logs
        if written:
            text += "\n[files written: " + ", ".join(str(f.path) for f in written) + "]"
        if self.skipped:
            text += (
                f"\n[{len(self.skipped)} file(s) not kept for the user: more than "
                f"{CAPTURE_MAX_FILES} files or {self.config.max_file_bytes} bytes in one "
                "call]"
            )
        if result.images:
            text += f"\n[{len(result.images)} figure(s) shown to the user]"
        return text

    async def execute_shell(self, call: CodeCall, timeout_ms: int | None) -> str:
        """Run a shell call's commands one after another in the container's session (the
        python tool's); fill their outputs; the text the model gets back."""
        assert self.container is not None
        self.session = await self.containers.session_for(self.container)
        before = await _snapshot(self.session)
        limit = self.config.tool_timeout_seconds
        timeout = min(limit, timeout_ms / 1000) if timeout_ms else limit
        keep = call.max_output_length
        texts: list[str] = []
        for command in call.commands:
            result = await self.session.run_shell(command, timeout=timeout)
            output = ShellOutput(
                stdout=result.stdout[:keep] if keep else result.stdout,
                stderr=result.stderr[:keep] if keep else result.stderr,
                exit_code=None if result.timed_out else result.exit_code,
            )
            call.shell_outputs.append(output)
            ending = (
                "[stopped at its time limit]"
                if output.exit_code is None
                else f"[exit code {output.exit_code}]"
            )
            texts.append(f"$ {command}\n{output.stdout}{output.stderr}{ending}\n")
        self.skipped.clear()
        written = await self.capture(before)
        call.file_ids = [f.id for f in written]
        text = "".join(texts)
        call.outputs = [ToolOutput(type="logs", logs=text)] if text else []
        call.status = "completed"
        if written:
            text += "[files written: " + ", ".join(str(f.path) for f in written) + "]"
        return text

    async def capture(self, before: dict[str, tuple[int, float]]) -> list[StoredFile]:
        """Record files the cell created or changed under /mnt/data as container files, and
        forget those it deleted.

        Session code is untrusted: only regular files are read (the host-side file API refuses
        links, FIFOs and devices), at most ``CAPTURE_MAX_FILES`` files and
        ``max_file_bytes`` in all per cell, so a cell cannot flood the database.
        """
        assert self.container is not None and self.session is not None
        after = await _snapshot(self.session)
        gone = set(before) - set(after)
        if gone:
            for record in await self.containers.all_files(self.container.id):
                if record.path and paths.relative(record.path) in gone:
                    await self.containers.forget_file(record)
        written: list[StoredFile] = []
        budget = self.config.max_file_bytes
        for path, stamp in sorted(after.items()):
            if before.get(path) == stamp:
                continue
            if len(written) >= CAPTURE_MAX_FILES or stamp[0] > budget:
                self.skipped.append(path)
                continue
            try:
                data = await self.session.read_file(path)
            except errors.FileError:
                continue  # gone again, or replaced by something that is not a file
            if len(data) > budget:
                self.skipped.append(path)
                continue
            budget -= len(data)
            record = await self.containers.put_file(
                self.container,
                path=paths.absolute(path),
                data=data,
                source="assistant",
                write=False,
            )
            written.append(record)
        return written

    async def on_text(self, piece: str) -> None:
        """A piece of streamed answer text: the message exists from the first piece on."""
        if self.writing is None:
            self.writing = await self.begin_message()
            self.streamed.clear()
        self.streamed.append(piece)
        self.emit(RunEvent(kind="text_delta", message_id=self.writing[0].id, delta=piece))

    async def begin_message(self) -> tuple[Message, Step]:
        """An assistant message in progress, and the step that creates it."""
        run = self.run_
        message = Message(
            id=new_id("msg_"),
            conversation_id=run.conversation_id,
            role="assistant",
            content=[],
            status=MessageStatus.IN_PROGRESS,
            agent_id=run.agent_id,
            run_id=run.id,
        )
        step = Step(
            id=new_id("step_"),
            run_id=run.id,
            conversation_id=run.conversation_id,
            agent_id=run.agent_id,
            type="message_creation",
            message_id=message.id,
        )
        self.open_steps.append(step)
        await self.save_step(step, new=True)
        await self.records.insert(message, run.conversation_id, run.id)
        self.emit(RunEvent(kind="message", message=message.model_copy(deep=True)))
        return message, step

    async def answer(self, text: str, usage: Usage, final: bool) -> None:
        """Complete the assistant message: the answer (with the figures shown during the run,
        then the text with links), or text the model wrote before asking for code."""
        if self.writing is None:  # not streamed: the message and its text come at once
            self.writing = await self.begin_message()
            if text:
                self.emit(RunEvent(kind="text_delta", message_id=self.writing[0].id, delta=text))
        message, step = self.writing
        self.writing = None
        parts: list[ImagePart | TextPart] = []
        if final:
            parts += [ImagePart(file_id=fid) for fid in self.images]
        parts.append(TextPart(text=text, annotations=await self.annotate(text)))
        message.content = parts
        message.status = MessageStatus.COMPLETED
        message.completed_at = now()
        await self.records.save(message)
        self.emit(RunEvent(kind="message", message=message.model_copy(deep=True)))
        step.usage = usage
        step.status = StepStatus.COMPLETED
        step.completed_at = now()
        self.open_steps.remove(step)
        await self.save_step(step)

    async def annotate(self, text: str) -> list[Annotation]:
        """Each ``sandbox:/mnt/data/<name>`` link that names a container file."""
        if self.container is None:
            return []
        by_path = {f.path: f for f in await self.containers.all_files(self.container.id) if f.path}
        annotations = []
        for match in SANDBOX_LINK.finditer(text):
            path = match.group(0)[len("sandbox:") :].rstrip(".,;:")
            record = by_path.get(path)
            if record is None:
                continue
            span = "sandbox:" + path
            annotations.append(
                Annotation(
                    text=span,
                    start_index=match.start(),
                    end_index=match.start() + len(span),
                    file_id=record.id,
                    filename=record.filename,
                    container_id=self.container.id,
                )
            )
        return annotations


async def _snapshot(session: SessionHandle) -> dict[str, tuple[int, float]]:
    """size and mtime of every regular file under /mnt/data, by relative path."""
    try:
        files = await session.list_files("", recursive=True)
    except errors.FileError:
        return {}
    return {f.path: (f.size, f.mtime) for f in files if not f.is_dir}


def format_logs(result: ExecutionResult) -> str:
    """What a notebook would show, as text: output streams, the value, the traceback."""
    parts = [result.stdout, result.stderr]
    if result.result is not None:
        value = result.result.data.get("text/plain")
        if isinstance(value, str) and value:
            parts.append(value + "\n")
    if result.error is not None:
        parts.append(result.error.traceback or f"{result.error.ename}: {result.error.evalue}")
    if result.truncated:
        parts.append("\n[output truncated]")
    if result.status == ExecutionStatus.TIMEOUT and result.error is None:
        parts.append("\n[the code was stopped at its time limit]")
    return "".join(p for p in parts if p)
