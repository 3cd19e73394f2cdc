"""A client of any OpenAI-compatible chat-completions endpoint (a hosted model, vLLM, llama.cpp,
Ollama ...): one non-streaming call per agent step, with the code interpreter as a function."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.types import Usage
from sessionpool.telemetry import AgentStats

#: the function offered to the model; its calls run as cells in the conversation's container
PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "python",
        "description": (
            "Run Python code in a stateful Jupyter-like sandbox: variables and imports persist "
            "between calls, the working directory is /mnt/data (the user's files are there; save "
            "files you create there), numpy, pandas and matplotlib are installed, figures left "
            "open are shown to the user, and there is no internet access. Returns stdout, stderr, "
            "the last expression's value and any error."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}


#: offered when a request asks for the hosted ``shell`` tool; its calls run as shell commands
#: in the same session as the python tool's cells
SHELL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "shell",
        "description": (
            "Run shell commands (bash) in the same sandbox as the python tool, one after another, "
            "in /mnt/data (the user's files are there; save files you create there). Returns "
            "each command's stdout, stderr and exit code. There is no internet access."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "commands": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The commands to run, in order.",
                },
                "timeout_ms": {
                    "type": "integer",
                    "description": "Optional time limit for each command, in milliseconds.",
                },
                "max_output_length": {
                    "type": "integer",
                    "description": "Optional: the most characters to return of each output.",
                },
            },
            "required": ["commands"],
        },
    },
}


class ModelError(Exception):
    """The model endpoint failed; ``code`` goes to the run's ``last_error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str

    @property
    def code(self) -> str:
        """The code to run: the ``code`` argument, or the raw arguments when they are not JSON
        (some local models send the code itself)."""
        try:
            args = json.loads(self.arguments)
        except ValueError:
            return self.arguments
        if isinstance(args, dict) and isinstance(args.get("code"), str):
            return str(args["code"])
        if isinstance(args, str):
            return args
        return self.arguments

    def _args(self) -> dict[str, Any]:
        try:
            args = json.loads(self.arguments)
        except ValueError:
            return {}
        return args if isinstance(args, dict) else {}

    @property
    def commands(self) -> list[str]:
        """A shell call's commands: ``commands`` (or one ``command``), else the raw arguments
        as one command."""
        args = self._args()
        commands = args.get("commands")
        if isinstance(commands, list) and all(isinstance(c, str) for c in commands):
            return [str(c) for c in commands]
        if isinstance(commands, str):
            return [commands]
        if isinstance(args.get("command"), str):
            return [str(args["command"])]
        return [self.arguments] if self.arguments and not args else []

    def _positive(self, name: str) -> int | None:
        value = self._args().get(name)
        return value if isinstance(value, int) and value > 0 else None

    @property
    def timeout_ms(self) -> int | None:
        return self._positive("timeout_ms")

    @property
    def max_output_length(self) -> int | None:
        return self._positive("max_output_length")


@dataclass(frozen=True)
class ChatReply:
    content: str | None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    #: the assistant message as sent back to the model on the next step
    raw_message: dict[str, Any] = field(default_factory=dict)


class ChatModel:
    def __init__(self, config: AgentsConfig) -> None:
        self.config = config
        #: runs and model calls, for the metrics: kept here because every run of every tenant
        #: shares this client
        self.stats = AgentStats()
        verify: str | bool = config.model_ca_file or True
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.model_timeout_seconds, connect=10.0), verify=verify
        )

    async def close(self) -> None:
        await self._client.aclose()

    def _request(
        self,
        model: str,
        messages: list[dict[str, Any]],
        temperature: float | None,
        top_p: float | None,
        tools: bool,
        shell: bool = False,
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        base = self.config.model_base_url.rstrip("/")
        if not base:
            raise ModelError(
                "server_error",
                "no model endpoint is configured: set agents.model_base_url (and model_api_key, "
                "default_model) in the server's configuration, see docs/agents.md",
            )
        body: dict[str, Any] = {"model": self.config.mapped_model(model), "messages": messages}
        if tools:
            body["tools"] = [PYTHON_TOOL, SHELL_TOOL] if shell else [PYTHON_TOOL]
            body["tool_choice"] = "auto"
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        headers = {}
        if self.config.model_api_key:
            headers["Authorization"] = f"Bearer {self.config.model_api_key}"
        return f"{base}/chat/completions", body, headers

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        tools: bool = True,
        shell: bool = False,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> ChatReply:
        """One model step (``shell``: the shell tool is offered beside python). With
        ``on_text`` (and ``model_stream`` on), the reply is streamed and each piece of answer
        text is handed to ``on_text`` as it arrives."""
        url, body, headers = self._request(model, messages, temperature, top_p, tools, shell)
        stream = on_text is not None and self.config.model_stream
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        try:
            async with self._client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code == 429:
                    raise ModelError(
                        "rate_limit_exceeded",
                        f"the model endpoint {url} is rate limiting (HTTP 429)",
                    )
                if response.status_code >= 400:
                    await response.aread()
                    raise ModelError(
                        "server_error",
                        f"the model endpoint {url} answered HTTP {response.status_code}: "
                        f"{_error_text(response)}",
                    )
                kind = response.headers.get("content-type", "")
                if stream and kind.startswith("text/event-stream"):
                    assert on_text is not None
                    return await _read_stream(response, on_text)
                # not streamed (asked not to, or the server ignored "stream")
                await response.aread()
                return parse_reply(response.json())
        except httpx.TimeoutException:
            raise ModelError(
                "server_error",
                f"the model endpoint {url} did not answer within "
                f"{self.config.model_timeout_seconds:g} s (agents.model_timeout_seconds)",
            ) from None
        except httpx.HTTPError as exc:
            raise ModelError(
                "server_error", f"the model endpoint {url} could not be reached: {exc}"
            ) from None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ModelError(
                "server_error", f"the model endpoint {url} sent a malformed reply: {exc}"
            ) from None


async def _read_stream(
    response: httpx.Response, on_text: Callable[[str], Awaitable[None]]
) -> ChatReply:
    """Assemble a streamed reply (``chat.completion.chunk`` events): text pieces go to
    ``on_text`` at once; tool calls arrive as a head (id, name) then argument fragments, by
    index."""
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    usage: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if piece:
                text.append(piece)
                await on_text(piece)
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(
                    int(call.get("index", 0)), {"id": "", "name": "", "args": ""}
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["args"] += function.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["args"]},
            }
            for _, c in sorted(calls.items())
        ]
    return parse_reply({"choices": [{"message": message}], "usage": usage})


def _error_text(response: httpx.Response) -> str:
    try:
        doc = response.json()
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return str(doc["error"].get("message") or doc["error"])[:500]
    except ValueError:
        pass
    return response.text[:500]


def parse_reply(doc: Any) -> ChatReply:
    message = doc["choices"][0]["message"]
    calls = [
        ToolCallRequest(
            id=str(c.get("id") or f"call_{i}"),
            name=str(c["function"].get("name") or "python"),
            arguments=str(c["function"].get("arguments") or ""),
        )
        for i, c in enumerate(message.get("tool_calls") or [])
    ]
    usage = doc.get("usage") or {}
    raw: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if calls:
        raw["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return ChatReply(
        content=message.get("content"),
        tool_calls=calls,
        usage=Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        ),
        raw_message=raw,
    )
