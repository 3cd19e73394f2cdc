"""A run's ``RunEvent``s -> Assistants v2 Server-Sent Events.

    event: thread.run.created         data: <run>
    event: thread.run.queued          data: <run>
    event: thread.run.in_progress     data: <run>
    event: thread.run.step.created    data: <step, tool calls []>  (then .in_progress)
    event: thread.run.step.delta      data: a code call (its input), then its outputs
    event: thread.run.step.completed  data: <step>
    event: thread.message.created     data: <message, content []>
    event: thread.message.in_progress data: <message, content []>
    event: thread.message.delta       data: {"id", "object": "thread.message.delta", "delta": ...}
    event: thread.message.completed   data: <message>
    event: thread.run.completed       data: <run>   (or failed, cancelled, expired, incomplete)
    event: done                       data: [DONE]

The message snapshots in ``created``/``in_progress`` carry no content and the text arrives as
deltas, as OpenAI streams: the SDKs' accumulators rebuild the message from those deltas, so
whatever the service did not stream as ``text_delta`` is sent as one delta at completion.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from sessionpool.agents.types import (
    Message,
    MessageStatus,
    Run,
    RunEvent,
    RunStatus,
    Step,
    StepStatus,
    TextPart,
)
from sessionpool.faces.assistants import wire
from sessionpool.faces.http import JSON, sse

logger = logging.getLogger("sessionpool.faces.assistants")


class _StepState:
    def __init__(self) -> None:
        self.status: str = StepStatus.IN_PROGRESS
        self.outputs: dict[str, int] = {}  # call id -> outputs sent as deltas


class _MessageState:
    def __init__(self) -> None:
        self.streamed = ""  # text sent as deltas so far
        self.index = 0  # content index the text deltas go to
        self.done = False


class EventTranslator:
    """Turns one run's events into SSE frames, remembering what each client has seen."""

    def __init__(self) -> None:
        self.run_status: str | None = None
        self.steps: dict[str, _StepState] = {}
        self.messages: dict[str, _MessageState] = {}
        self.terminal_sent = False

    def start(self, run: Run) -> list[bytes]:
        """``thread.run.created`` and ``thread.run.queued`` for the run just started."""
        data = wire.run(run)
        frames = [sse("thread.run.created", data)]
        if run.status == RunStatus.QUEUED:
            frames.append(sse("thread.run.queued", data))
        self.run_status = str(run.status)
        if RunStatus(run.status).terminal:
            frames.append(sse(wire.run_event_name(run.status), data))
            self.terminal_sent = True
        return frames

    def translate(self, event: RunEvent) -> list[bytes]:
        if event.kind == "run" and event.run is not None:
            return self._run(event.run)
        if event.kind == "step" and event.step is not None:
            return self._step(event)
        if event.kind == "message" and event.message is not None:
            return self._message(event.message)
        if event.kind == "text_delta" and event.message_id and event.delta:
            return self._text_delta(event.message_id, event.delta)
        return []

    def _run(self, run: Run) -> list[bytes]:
        status = str(run.status)
        if status == self.run_status or self.terminal_sent:
            return []
        self.run_status = status
        if RunStatus(status).terminal:
            self.terminal_sent = True
        return [sse(wire.run_event_name(status), wire.run(run))]

    def _step(self, event: RunEvent) -> list[bytes]:
        assert event.step is not None
        step = event.step
        data = wire.step(step)
        status = str(step.status)
        frames: list[bytes] = []
        state = self.steps.get(step.id)
        if state is None:
            state = self.steps[step.id] = _StepState()
            shell = {**data, "status": "in_progress", "completed_at": None, "usage": None}
            if step.type == "tool_calls":
                # the calls follow as deltas, as OpenAI streams them (on_tool_call_created ...)
                shell["step_details"] = {"type": "tool_calls", "tool_calls": []}
            frames.append(sse("thread.run.step.created", shell))
            frames.append(sse("thread.run.step.in_progress", shell))
        if step.type == "tool_calls":
            frames.extend(self._call_deltas(step, state))
        if status != state.status and status != StepStatus.IN_PROGRESS:
            frames.append(sse(wire.step_event_name(status), data))
        state.status = status
        return frames

    def _call_deltas(self, step: Step, state: _StepState) -> list[bytes]:
        """``thread.run.step.delta`` for each new code call, then for each new output."""
        frames: list[bytes] = []
        for index, call in enumerate(step.tool_calls):
            entry: JSON = {"index": index, "type": "code_interpreter"}
            sent = state.outputs.get(call.id)
            if sent is None:
                sent = state.outputs[call.id] = 0
                entry["id"] = call.id
                entry["code_interpreter"] = {"input": call.code, "outputs": []}
                frames.append(sse("thread.run.step.delta", wire.step_delta(step.id, entry)))
            if len(call.outputs) > sent:
                outputs = [
                    {"index": i, **wire.tool_output(o)}
                    for i, o in enumerate(call.outputs)
                    if i >= sent
                ]
                state.outputs[call.id] = len(call.outputs)
                entry = {
                    "index": index,
                    "type": "code_interpreter",
                    "code_interpreter": {"outputs": outputs},
                }
                frames.append(sse("thread.run.step.delta", wire.step_delta(step.id, entry)))
        return frames

    def _message(self, msg: Message) -> list[bytes]:
        frames: list[bytes] = []
        state = self.messages.get(msg.id)
        if state is None:
            state = self.messages[msg.id] = _MessageState()
            shell = {**wire.message(msg), "content": [], "status": "in_progress"}
            shell["completed_at"] = None
            frames.append(sse("thread.message.created", shell))
            frames.append(sse("thread.message.in_progress", shell))
        if msg.status != MessageStatus.IN_PROGRESS and not state.done:
            state.done = True
            frames.extend(self._rest_as_delta(msg, state))
            name = (
                "thread.message.incomplete"
                if msg.status == MessageStatus.INCOMPLETE
                else "thread.message.completed"
            )
            frames.append(sse(name, wire.message(msg)))
        return frames

    def _rest_as_delta(self, msg: Message, state: _MessageState) -> list[bytes]:
        """What the deltas sent so far lack of the final message, as one delta."""
        if not state.streamed:
            parts = wire.message_as_deltas(msg)
            return [sse("thread.message.delta", wire.content_delta(msg.id, parts))] if parts else []
        texts = [p for p in msg.content if isinstance(p, TextPart)]
        final = texts[0] if texts else None
        if final is None or not final.text.startswith(state.streamed):
            return []
        rest = final.text[len(state.streamed) :]
        if not rest and not final.annotations:
            return []
        delta = wire.text_delta(msg.id, state.index, rest, final.annotations)
        return [sse("thread.message.delta", delta)]

    def _text_delta(self, message_id: str, text: str) -> list[bytes]:
        state = self.messages.get(message_id)
        if state is None or state.done:
            return []
        state.streamed += text
        return [sse("thread.message.delta", wire.text_delta(message_id, state.index, text))]

    def finish(self, run: Run | None) -> list[bytes]:
        """The terminal run event if the service's last one was missed, then ``done``."""
        frames: list[bytes] = []
        if run is not None and not self.terminal_sent and RunStatus(run.status).terminal:
            self.terminal_sent = True
            frames.append(sse(wire.run_event_name(run.status), wire.run(run)))
        frames.append(sse("done", "[DONE]"))
        return frames


async def run_stream(
    run: Run,
    events: AsyncIterator[RunEvent],
    final: Any,
    prelude: list[bytes] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: ``prelude`` (``thread.created``), the run's events, then ``done``.

    ``final`` is a coroutine function giving the run's last snapshot (to close a stream whose
    terminal event was not seen).
    """
    translator = EventTranslator()
    for frame in prelude or []:
        yield frame
    for frame in translator.start(run):
        yield frame
    try:
        async for event in events:
            if event.kind == "done":
                break
            for frame in translator.translate(event):
                yield frame
    except Exception as exc:  # the stream cannot go on: say so in-band (the status is sent)
        logger.exception("streaming run %s failed", run.id)
        message = f"streaming this run failed ({type(exc).__name__}); poll the run for its state"
        yield sse("error", {"error": {"code": "server_error", "message": message}})
        yield sse("done", "[DONE]")
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    last: Run | None = None
    if not translator.terminal_sent:
        last = await final()
    for frame in translator.finish(last):
        yield frame
