"""A restarted server keeps everything but live interpreter state: agents, threads, runs, steps,
files, and containers whose files come back into a fresh session on the next run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agents.harness import AgentsServer
from tests.agents.postgres import PostgresServer
from tests.agents.scripted_model import READ_FILE_PREFIX, ScriptedModel

pytestmark = pytest.mark.jail


@contextlib.contextmanager
def serving(workdir: Path, model_url: str, database_url: str) -> Iterator[httpx.Client]:
    """A server on ``workdir`` (its data directory survives it) and a client of it."""
    with (
        AgentsServer(workdir, model_url, database_url=database_url, tls=False) as server,
        httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client,
    ):
        yield client


def wait(client: httpx.Client, thread: str, run: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/threads/{thread}/runs/{run}").json()
        if body["status"] not in ("queued", "in_progress", "cancelling"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run} did not finish")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_everything_but_interpreter_state_survives_a_restart(
    database: str, scripted_model: ScriptedModel, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = ""
    if database == "postgresql":
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.url
    with serving(tmp_path, scripted_model.url, url) as client:
        agent = client.post(
            "/v1/assistants",
            json={"model": "scripted-chart", "tools": [{"type": "code_interpreter"}]},
        ).json()["id"]
        thread = client.post("/v1/threads", json={}).json()["id"]
        client.post(f"/v1/threads/{thread}/messages", json={"role": "user", "content": "go"})
        run = client.post(f"/v1/threads/{thread}/runs", json={"assistant_id": agent}).json()
        first = wait(client, thread, run["id"])
        assert first["status"] == "completed", first["last_error"]
        answer = client.get(f"/v1/threads/{thread}/messages").json()["data"][0]
        image_id = answer["content"][0]["image_file"]["file_id"]
        csv_id = answer["content"][1]["text"]["annotations"][1]["file_path"]["file_id"]

    with serving(tmp_path, scripted_model.url, url) as client:
        again = client.get(f"/v1/threads/{thread}/runs/{run['id']}").json()
        assert again["status"] == "completed" and again["assistant_id"] == agent
        steps = client.get(f"/v1/threads/{thread}/runs/{run['id']}/steps").json()["data"]
        assert {s["type"] for s in steps} == {"tool_calls", "message_creation"}
        png = client.get(f"/v1/files/{image_id}/content")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert b"Company B,2.5" in client.get(f"/v1/files/{csv_id}/content").content
        # a new turn: the container's files are written into a fresh session
        client.post(f"/v1/threads/{thread}/messages", json={"role": "user", "content": "read it"})
        run2 = client.post(
            f"/v1/threads/{thread}/runs",
            json={"assistant_id": agent, "model": "scripted-read_file"},
        ).json()
        second = wait(client, thread, run2["id"])
        assert second["status"] == "completed", second["last_error"]
        text = client.get(f"/v1/threads/{thread}/messages").json()["data"][0]["content"]
        value = text[-1]["text"]["value"]
        assert value.startswith(READ_FILE_PREFIX) and "Company A,1.2" in value
