"""A run's ``RunEvent``s -> Responses stream events (``response.created`` ... ``completed``).

A small state machine: item ids and output indexes stay the same from ``added`` to ``done`` and
in the final response, as openai's stream accumulator checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionpool.agents.types import CodeCall, Message, MessageStatus, Run, RunEvent, RunStatus
from sessionpool.faces import http
from sessionpool.faces.http import JSON
from sessionpool.faces.responses.wire import (
    code_call_item,
    message_item,
    response_object,
    shell_call_item,
    shell_call_output_item,
)

Event = tuple[str, JSON]  # (event type, data)


@dataclass
class _CallState:
    index: int
    interpreting: bool = False
    done: bool = False


@dataclass
class _ShellState:
    #: the ``shell_call`` item's (its ``shell_call_output`` is the next)
    index: int
    done: bool = False


@dataclass
class _MessageState:
    index: int
    text: str = ""
    done: bool = False


class ResponseStream:
    """Turns a run's ``RunEvent``\\ s into Responses stream events, numbered from 0.

    ``start`` gives ``response.created``; ``feed`` maps each run event; ``finish`` takes the
    final response object, closes every item still open (and announces items the events never
    showed), then gives ``response.completed`` / ``response.failed`` / ``response.incomplete``.
    Item ids and output indexes stay the same from ``added`` to ``done`` and in the final
    response, as openai's stream accumulator checks.
    """

    def __init__(self, run: Run, *, base_url: str) -> None:
        self.run = run
        self.base_url = base_url
        self.sequence = 0
        self.next_index = 0
        self.in_progress_sent = False
        self.calls: dict[str, _CallState] = {}
        self.shells: dict[str, _ShellState] = {}
        #: image output file id -> URL; the face fills it before feeding a step
        self.image_urls: dict[str, str] = {}
        self.messages: dict[str, _MessageState] = {}

    def _event(self, kind: str, **fields: Any) -> Event:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, data

    def _snapshot(self) -> JSON:
        return response_object(self.run, [])

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self._snapshot())]

    def _ensure_in_progress(self) -> list[Event]:
        if self.in_progress_sent:
            return []
        self.in_progress_sent = True
        if self.run.status is RunStatus.QUEUED:
            self.run = self.run.model_copy(update={"status": RunStatus.IN_PROGRESS})
        return [self._event("response.in_progress", response=self._snapshot())]

    def feed(self, event: RunEvent) -> list[Event]:
        out: list[Event] = []
        if event.kind == "run" and event.run is not None:
            self.run = event.run
            if event.run.status is not RunStatus.QUEUED and not event.run.status.terminal:
                out += self._ensure_in_progress()
        elif event.kind == "step" and event.step is not None:
            if event.step.type == "tool_calls":
                for call in event.step.tool_calls:
                    out += self._call(call)
        elif event.kind == "message" and event.message is not None:
            message = event.message
            if message.role == "assistant":
                out += self._message(message)
        elif event.kind == "text_delta" and event.message_id and event.delta:
            out += self._open_message(event.message_id)
            state = self.messages[event.message_id]
            if not state.done:
                state.text += event.delta
                out.append(self._text_delta(event.message_id, state.index, event.delta))
        return out

    # code calls

    def _call(self, call: CodeCall, final: JSON | None = None) -> list[Event]:
        if call.kind == "shell":
            return self._shell(call)
        out: list[Event] = []
        state = self.calls.get(call.id)
        if state is None:
            out += self._ensure_in_progress()
            state = self.calls[call.id] = _CallState(self.next_index)
            self.next_index += 1
            added = code_call_item(
                call, container_id=self.run.container_id, base_url=self.base_url, done=False
            )
            out.append(
                self._event("response.output_item.added", output_index=state.index, item=added)
            )
            ids = {"item_id": call.id, "output_index": state.index}
            out.append(self._event("response.code_interpreter_call.in_progress", **ids))
            if call.code:
                out.append(
                    self._event("response.code_interpreter_call_code.delta", delta=call.code, **ids)
                )
            out.append(
                self._event("response.code_interpreter_call_code.done", code=call.code, **ids)
            )
        if state.done:
            return out
        ids = {"item_id": call.id, "output_index": state.index}
        finished = final is not None or call.status in ("completed", "failed", "incomplete")
        if (call.status == "interpreting" or finished) and not state.interpreting:
            state.interpreting = True
            out.append(self._event("response.code_interpreter_call.interpreting", **ids))
        if finished:
            state.done = True
            item = final or code_call_item(
                call,
                container_id=self.run.container_id,
                base_url=self.base_url,
                image_urls=self.image_urls,
            )
            out.append(self._event("response.code_interpreter_call.completed", **ids))
            out.append(
                self._event("response.output_item.done", output_index=state.index, item=item)
            )
        return out

    # shell calls

    def _shell(self, call: CodeCall, final: tuple[JSON, JSON | None] | None = None) -> list[Event]:
        """A ``shell_call`` item with its commands and its ``shell_call_output``, both added at
        once (so output indexes follow the final output's order), each command's output when
        they ran (``final``: both items, from the final response)."""
        out: list[Event] = []
        state = self.shells.get(call.id)
        if state is None:
            out += self._ensure_in_progress()
            state = self.shells[call.id] = _ShellState(self.next_index)
            self.next_index += 2
            added = {**shell_call_item(call, container_id=self.run.container_id)}
            added["status"] = "in_progress"
            out.append(
                self._event("response.output_item.added", output_index=state.index, item=added)
            )
            for i, command in enumerate(call.commands):
                ids = {"output_index": state.index, "command_index": i}
                out.append(self._event("response.shell_call_command.added", command="", **ids))
                out.append(self._event("response.shell_call_command.delta", delta=command, **ids))
                out.append(self._event("response.shell_call_command.done", command=command, **ids))
            pending = shell_call_output_item(call, done=False)
            out.append(
                self._event(
                    "response.output_item.added", output_index=state.index + 1, item=pending
                )
            )
        if state.done:
            return out
        finished = final is not None or call.status in ("completed", "failed", "incomplete")
        if not finished:
            return out
        state.done = True
        item, result = final or (
            shell_call_item(call, container_id=self.run.container_id),
            shell_call_output_item(call),
        )
        if result is None:  # never expected: the final output has both
            result = shell_call_output_item(call)
        out.append(self._event("response.output_item.done", output_index=state.index, item=item))
        index = state.index + 1
        for i, piece in enumerate(result["output"]):
            ids = {"item_id": result["id"], "output_index": index, "command_index": i}
            delta = {"stdout": piece["stdout"], "stderr": piece["stderr"]}
            out.append(self._event("response.shell_call_output_content.delta", delta=delta, **ids))
            out.append(
                self._event("response.shell_call_output_content.done", output=[piece], **ids)
            )
        out.append(self._event("response.output_item.done", output_index=index, item=result))
        return out

    # messages

    def _open_message(self, message_id: str) -> list[Event]:
        if message_id in self.messages:
            return []
        out = self._ensure_in_progress()
        state = self.messages[message_id] = _MessageState(self.next_index)
        self.next_index += 1
        item = {
            "type": "message",
            "id": message_id,
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        out.append(self._event("response.output_item.added", output_index=state.index, item=item))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        out.append(
            self._event(
                "response.content_part.added",
                item_id=message_id,
                output_index=state.index,
                content_index=0,
                part=part,
            )
        )
        return out

    def _text_delta(self, message_id: str, index: int, delta: str) -> Event:
        return self._event(
            "response.output_text.delta",
            item_id=message_id,
            output_index=index,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _message(self, message: Message, final: JSON | None = None) -> list[Event]:
        out = self._open_message(message.id)
        state = self.messages[message.id]
        if state.done or (final is None and message.status is MessageStatus.IN_PROGRESS):
            return out
        item = final or message_item(message, container_id=self.run.container_id)
        parts: list[JSON] = item["content"] or [
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ]
        text = "".join(p.get("text", "") for p in parts[:1])
        if text.startswith(state.text) and len(text) > len(state.text):
            out.append(self._text_delta(message.id, state.index, text[len(state.text) :]))
        state.text = text
        state.done = True
        ids = {"item_id": message.id, "output_index": state.index, "content_index": 0}
        out.append(self._event("response.output_text.done", text=text, logprobs=[], **ids))
        out.append(self._event("response.content_part.done", part=parts[0], **ids))
        out.append(self._event("response.output_item.done", output_index=state.index, item=item))
        return out

    # the end

    def finish(self, response: JSON) -> list[Event]:
        """Close what is open, from the final ``response`` object, then the terminal event."""
        out = self._ensure_in_progress() if response["status"] != "queued" else []
        output = response["output"]
        results = {i["call_id"]: i for i in output if i["type"] == "shell_call_output"}
        for item in response["output"]:
            if item["type"] == "shell_call":
                call = CodeCall(
                    id=item["call_id"],
                    kind="shell",
                    code="\n".join(item["action"]["commands"]),
                    commands=item["action"]["commands"],
                    container_id=item["environment"]["container_id"],
                )
                out += self._shell(call, final=(item, results.get(item["call_id"])))
            elif item["type"] == "code_interpreter_call":
                call = CodeCall(
                    id=item["id"],
                    code=item.get("code") or "",
                    status=item["status"],
                    container_id=item.get("container_id"),
                )
                out += self._call(call, final=item)
            elif item["type"] == "message":
                stub = Message(id=item["id"], conversation_id="", role="assistant", content=[])
                out += self._message(stub, final=item)
        kind = {
            "completed": "response.completed",
            "failed": "response.failed",
        }.get(response["status"], "response.incomplete")
        out.append(self._event(kind, response=response))
        return out

    def error(self, code: str, message: str) -> list[Event]:
        return [self._event("error", code=code, message=message, param=None)]


def sse(event: Event) -> bytes:
    kind, data = event
    return http.sse(kind, data)
