"""A real OpenAI-compatible chat-completions server whose replies follow fixed scripts.

The agents service talks to any OpenAI-compatible endpoint; tests need one that answers
deterministically, over real HTTP, so the whole path (client, retries, timeouts, parsing) runs.
Each reply is a function of the conversation alone (how many tool results follow the last user
message), so any number of conversations can run at once against one server.

    with ScriptedModel() as model:
        httpx.post(model.url + "/chat/completions", json={"model": "scripted-hello", ...})

The script comes from the request's ``model`` (``scripted-chart`` or ``chart``), else from
``default_script``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

PYTHON_TOOL = "python"

CHART_CODE = """\
import csv
import matplotlib.pyplot as plt

companies = ["Company A", "Company B"]
profit = [1.2, 2.5]
with open("/mnt/data/chart_data.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["company", "operating_profit"])
    writer.writerows(zip(companies, profit))
fig, ax = plt.subplots()
ax.bar(companies, profit)
ax.set_title("Operating profit")
ax.set_ylabel("Operating profit (billion)")
fig.savefig("/mnt/data/chart.png")
print("saved chart")
"""

CHART_ANSWER = (
    "Here is the bar chart: [chart.png](sandbox:/mnt/data/chart.png). "
    "The data is in [chart_data.csv](sandbox:/mnt/data/chart_data.csv)."
)

READ_FILE_CODE = """\
import glob
import pandas as pd

paths = sorted(glob.glob('/mnt/data/*.csv'))
df = pd.read_csv(paths[0])
print(df.to_csv(index=False))
print('sum:', df.iloc[:, 1].sum())
"""

READ_FILE_PREFIX = "The file says:\n"
HELLO_ANSWER = "Hello from the scripted model."
LOOP_CODE = "print('again')"
SLOW_CODE = "import time; time.sleep(60)"
SLOW_ANSWER = "Done waiting."
HANG_SECONDS = 600.0
ECHO_PREFIX = "Output:\n"
PREAMBLE_TEXT = "Let me compute that first."
PREAMBLE_CODE = "print(6 * 7)"
PREAMBLE_ANSWER = "The answer is 42."
#: characters per streamed piece of text or tool-call arguments
STREAM_PIECE = 16
#: the ``shell`` script's commands (the hosted shell tool): a file, an exit code, stderr
SHELL_COMMANDS = [
    "echo 42 > answer.txt && cat /mnt/data/answer.txt",
    "echo to stderr >&2; exit 3",
]
SHELL_ANSWER = "The shell says:\n"
ERROR_BODY = {"error": {"message": "scripted failure", "type": "server_error"}}


class Reply:
    """What a script answers: text, a python or shell tool call, or an HTTP error."""

    def __init__(
        self,
        *,
        content: str | None = None,
        code: str | None = None,
        commands: list[str] | None = None,
        status: int = 200,
        error: dict[str, Any] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.content = content
        self.code = code
        self.commands = commands
        self.status = status
        self.error = error
        self.delay = delay


def tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``tool`` messages after the last ``user`` message: this turn's progress."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]


def text_of(message: dict[str, Any]) -> str:
    """A message's content as text (plain string or a list of text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def chart(messages: list[dict[str, Any]]) -> Reply:
    if not tool_results(messages):
        return Reply(code=CHART_CODE)
    return Reply(content=CHART_ANSWER)


def read_file(messages: list[dict[str, Any]]) -> Reply:
    results = tool_results(messages)
    if not results:
        return Reply(code=READ_FILE_CODE)
    return Reply(content=READ_FILE_PREFIX + text_of(results[-1]))


def hello(messages: list[dict[str, Any]]) -> Reply:
    return Reply(content=HELLO_ANSWER)


def error(messages: list[dict[str, Any]]) -> Reply:
    return Reply(status=500, error=ERROR_BODY)


def loop(messages: list[dict[str, Any]]) -> Reply:
    return Reply(code=LOOP_CODE)


def slow(messages: list[dict[str, Any]]) -> Reply:
    if not tool_results(messages):
        return Reply(code=SLOW_CODE)
    return Reply(content=SLOW_ANSWER)


def hang(messages: list[dict[str, Any]]) -> Reply:
    return Reply(content="too late", delay=HANG_SECONDS)


def preamble(messages: list[dict[str, Any]]) -> Reply:
    """Text and a tool call in the same reply (as real models often do), then the answer."""
    if not tool_results(messages):
        return Reply(content=PREAMBLE_TEXT, code=PREAMBLE_CODE)
    return Reply(content=PREAMBLE_ANSWER)


def echo(messages: list[dict[str, Any]]) -> Reply:
    """Runs the last user message as code, then answers with its output: any cell, on demand."""
    results = tool_results(messages)
    if not results:
        users = [m for m in messages if m.get("role") == "user"]
        return Reply(code=text_of(users[-1]) if users else "pass")
    return Reply(content=ECHO_PREFIX + text_of(results[-1]))


def shell(messages: list[dict[str, Any]]) -> Reply:
    """Runs ``SHELL_COMMANDS`` with the shell tool, then answers with their output."""
    results = tool_results(messages)
    if not results:
        return Reply(commands=SHELL_COMMANDS)
    return Reply(content=SHELL_ANSWER + text_of(results[-1]))


SCRIPTS: dict[str, Callable[[list[dict[str, Any]]], Reply]] = {
    "chart": chart,
    "read_file": read_file,
    "hello": hello,
    "error": error,
    "loop": loop,
    "slow": slow,
    "hang": hang,
    "echo": echo,
    "preamble": preamble,
    "shell": shell,
}


def script_name(model: object, default: str) -> str:
    """The script a request's ``model`` names (``scripted-X`` or ``X``), else ``default``."""
    if isinstance(model, str):
        name = model.removeprefix("scripted-")
        if name in SCRIPTS:
            return name
    return default


def _tokens(value: object) -> int:
    """A deterministic, rough token count: words in the JSON text."""
    return max(1, len(json.dumps(value).split()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a ``hang`` reply must not hold up shutdown
    request_queue_size = 256  # bursts of concurrent runs connect at once (the default is 5)
    model: ScriptedModel

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut kept-alive connections too: a stopped model answers nothing more."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: with Nagle's algorithm the body would wait
    # for the client's delayed ACK (40 ms a reply), which a real model server does not add
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the requests are recorded in ``ScriptedModel.requests``."""

    def _send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        if self._path() in ("/v1/models", "/models"):
            created = int(time.time())
            data = [
                {
                    "id": f"scripted-{name}",
                    "object": "model",
                    "created": created,
                    "owned_by": "test",
                }
                for name in SCRIPTS
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "invalid_request"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self._path() not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, {"error": {"message": "not found", "type": "invalid_request"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(messages, list):
            self._send_json(
                400,
                {
                    "error": {
                        "message": "expected a JSON body with messages",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        model = self.server.model
        model.record(body)
        reply = SCRIPTS[script_name(body.get("model"), model.default_script)](messages)
        if reply.delay and model.stopping.wait(reply.delay):
            self.close_connection = True  # stopped while hanging: answer nothing
            return
        if reply.error is not None:
            self._send_json(reply.status, reply.error)
            return
        if body.get("stream"):
            self._stream(body, reply)
        else:
            self._send_json(200, completion(body, reply))

    def _stream(self, body: dict[str, Any], reply: Reply) -> None:
        """The same reply as Server-Sent Events of ``chat.completion.chunk`` objects."""
        whole = completion(body, reply)
        message = whole["choices"][0]["message"]
        base = {k: whole[k] for k in ("id", "created", "model")} | {
            "object": "chat.completion.chunk"
        }
        # as real servers stream: text in small pieces, a tool call's name first and its
        # arguments in fragments after it
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        text = message["content"] or ""
        deltas += [
            {"content": text[i : i + STREAM_PIECE]} for i in range(0, len(text), STREAM_PIECE)
        ]
        for i, call in enumerate(message.get("tool_calls", [])):
            head = {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            deltas.append({"tool_calls": [{"index": i, **head}]})
            args = call["function"]["arguments"]
            for j in range(0, len(args), STREAM_PIECE):
                piece = {"index": i, "function": {"arguments": args[j : j + STREAM_PIECE]}}
                deltas.append({"tool_calls": [piece]})
        chunks = [
            {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
        ]
        chunks.append(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": whole["choices"][0]["finish_reason"]}
                ],
            }
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": whole["usage"]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


_calls = itertools.count(1)


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """A ``chat.completion`` object shaped like OpenAI's."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    finish = "stop"
    if reply.code is not None:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": PYTHON_TOOL, "arguments": json.dumps({"code": reply.code})},
            }
        ]
        finish = "tool_calls"
    elif reply.commands is not None:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": "shell",
                    "arguments": json.dumps({"commands": reply.commands}),
                },
            }
        ]
        finish = "tool_calls"
    prompt = _tokens(body.get("messages"))
    answer = _tokens(message)
    return {
        "id": f"chatcmpl-{next(_calls)}{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or "scripted"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "total_tokens": prompt + answer,
        },
    }


class ScriptedModel:
    """The scripted chat-completions server on a free loopback port, in a daemon thread."""

    def __init__(self, default_script: str = "chart") -> None:
        if default_script not in SCRIPTS:
            raise ValueError(f"unknown script {default_script!r}; known: {sorted(SCRIPTS)}")
        self.default_script = default_script
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def requests_for(self, script: str) -> list[dict[str, Any]]:
        """The bodies received that ran ``script``."""
        with self._lock:
            bodies = list(self.requests)
        return [b for b in bodies if script_name(b.get("model"), self.default_script) == script]

    def start(self) -> None:
        self.stopping.clear()
        server = _Server(("127.0.0.1", 0))
        server.model = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()  # wakes ``hang`` replies
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ScriptedModel:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
