"""Streaming (Server-Sent Events): the route, the SDK's iterators and the CLI, on a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sessionpool import AsyncClient, ExecutionTimeout, NotFound, OutputEvent, Session
from sessionpool.client._protocol import EventParser
from sessionpool.server.testing import ServerProcess
from tests.client.conftest import PLOT

pytestmark = pytest.mark.jail

SLOW = (
    "import sys, time\nprint('one', flush=True)\ntime.sleep(1.5)\nprint('two', file=sys.stderr)\n3"
)


def test_events_arrive_while_the_cell_runs(session: Session) -> None:
    start = time.monotonic()
    events: list[tuple[float, OutputEvent]] = []
    for event in session.stream(SLOW):
        events.append((time.monotonic() - start, event))
    kinds = [(e.kind, e.text) for _, e in events]
    assert kinds == [("stdout", "one\n"), ("stderr", "two\n"), ("result", "3")]
    first_at, last_at = events[0][0], events[-1][0]
    assert last_at - first_at > 1.0, "stdout came only when the cell ended"
    result = events[-1][1].result
    assert result is not None
    assert (result.stdout, result.stderr, result.text) == ("one\n", "two\n", "3")


def test_result_event_carries_images_and_errors(session: Session) -> None:
    *_, last = session.stream(PLOT)
    assert last.result is not None and last.result.images[0].data.startswith(b"\x89PNG")
    *_, failed = session.stream("print('x')\n1/0")
    assert failed.result is not None and failed.result.error is not None
    assert failed.result.error.name == "ZeroDivisionError"


def test_timeout_raises_after_partial_output(session: Session) -> None:
    seen: list[str] = []
    with pytest.raises(ExecutionTimeout):
        for event in session.stream(
            "import time\nprint('a', flush=True)\ntime.sleep(30)", timeout=1
        ):
            seen.append(event.text)
    assert seen == ["a\n"]


async def test_async_stream(sdk_server: ServerProcess) -> None:
    async with (
        AsyncClient(sdk_server.endpoint(), api_key=sdk_server.api_key) as client,
        client.session() as s,
    ):
        kinds = [e.kind async for e in s.stream("print(1)\nprint(2)\n3")]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"stdout"}


def test_wire_format(sdk_server: ServerProcess) -> None:
    """The event format docs/streaming.md describes, read with a plain HTTP client."""
    ident = f"sse-{uuid.uuid4()}"
    url = sdk_server.endpoint() + "/executions/stream"
    params = {"identifier": ident, "api-version": "2025-02-02-preview"}
    body = {"code": "print('hi')\n6*7"}
    with httpx.stream(
        "POST", url, params=params, json=body, headers=sdk_server.auth, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.startswith('event: stdout\ndata: {"text":"hi\\n"}\n\n')
    parser = EventParser()
    events = [e for line in raw.split("\n") if (e := parser.feed(line))]
    assert events[-1][0] == "result"
    resource = json.loads(events[-1][1])
    assert resource["status"] == "Succeeded"
    assert resource["result"]["executionResult"] == "42"
    # errors before the cell starts are plain HTTP errors
    bad = httpx.post(url, params=params, json=body, headers={"Authorization": "Bearer no"})
    assert bad.status_code == 401
    shell = httpx.post(url, params=params, json={"shellCommand": "ls"}, headers=sdk_server.auth)
    assert shell.status_code == 400
    httpx.delete(
        sdk_server.endpoint() + "/session", params=params, headers=sdk_server.auth, timeout=30
    )


def test_stream_against_a_server_without_the_route(sdk_server: ServerProcess) -> None:
    """What an Azure pool answers (404): NotFound, and the CLI falls back to run."""

    def azure_like(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/executions/stream"):
            return httpx.Response(404, json={"error": {"code": "NotFound", "message": "no"}})
        return httpx.Response(
            200,
            json={"id": "e", "status": "Succeeded", "result": {"stdout": "x\n", "stderr": ""}},
        )

    from sessionpool import Client

    http = httpx.Client(transport=httpx.MockTransport(azure_like))
    with Client("https://pool.example/p", api_key="k", http_client=http) as c:
        s = c.session("a")
        with pytest.raises(NotFound):
            list(s.stream("1"))
        import argparse
        import contextlib
        import io

        from sessionpool.client._cli import execute

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = execute(
                s, "print('x')", argparse.Namespace(json=False, timeout=None, images_dir=".")
            )
        assert (code, out.getvalue()) == (0, "x\n")
    http.close()


def test_cli_prints_as_the_cell_runs(sdk_server: ServerProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPOOL_")}
    env.update(
        SESSIONPOOL_ENDPOINT=sdk_server.endpoint(), SESSIONPOOL_API_KEY=sdk_server.api_key or ""
    )
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessionpool.cli", "exec", SLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_at = time.monotonic() - start
    rest, err = proc.communicate(timeout=60)
    done_at = time.monotonic() - start
    assert proc.returncode == 0, err
    assert (first, rest, err) == ("one\n", "3\n", "two\n")
    assert done_at - first_at > 1.0, "the first line was printed only at the end"
