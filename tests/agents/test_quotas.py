"""The agents' quotas on a real server: a tenant with one run in progress cannot start a second
(429 with Retry-After naming the quota), another tenant can, and the slot comes back when the run
ends; file uploads count against the tenant's upload budget as uploads into sessions do."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.server.keys import KeyStore
from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import ScriptedModel

pytestmark = pytest.mark.jail


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentsServer]:
    with (
        ScriptedModel() as model,
        AgentsServer(
            Path(tmp_path_factory.mktemp("agents-quota")),
            model.url,
            extra_config="[quotas]\nagents_runs = 1\nupload_bytes_per_hour = 100000\n",
            tls=False,
        ) as srv,
    ):
        yield srv


def client(server: AgentsServer, tenant: str) -> httpx.Client:
    key = KeyStore(server.process.data_dir / "keys.json").create(tenant)[1]
    return httpx.Client(
        base_url=server.process.url + "/v1",
        headers={"Authorization": f"Bearer {key}", "OpenAI-Beta": "assistants=v2"},
        timeout=60,
    )


def start_run(c: httpx.Client, assistant: str) -> httpx.Response:
    thread = c.post("/threads", json={"messages": [{"role": "user", "content": "go"}]})
    assert thread.status_code == 200, thread.text
    return c.post(f"/threads/{thread.json()['id']}/runs", json={"assistant_id": assistant})


def wait_done(c: httpx.Client, run: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = c.get(f"/threads/{run['thread_id']}/runs/{run['id']}").json()["status"]
        if state in ("completed", "failed", "cancelled", "expired", "incomplete"):
            return
        time.sleep(0.2)
    raise AssertionError("the run did not end")


def test_one_run_at_a_time_per_tenant(server: AgentsServer) -> None:
    with client(server, "busy") as busy, client(server, "idle") as idle:
        slow = busy.post(
            "/assistants",
            json={"model": "scripted-slow", "tools": [{"type": "code_interpreter"}]},
        ).json()["id"]
        first = start_run(busy, slow)
        assert first.status_code == 200, first.text
        second = start_run(busy, slow)
        assert second.status_code == 429, second.text
        assert int(second.headers["retry-after"]) >= 1
        assert "agents_runs quota" in second.json()["error"]["message"]
        # another tenant's run is not held up by the busy one
        hello = idle.post("/assistants", json={"model": "scripted-hello"}).json()["id"]
        other = start_run(idle, hello)
        assert other.status_code == 200, other.text
        wait_done(idle, other.json())
        # the slot comes back when the run ends (here: cancelled)
        run = first.json()
        busy.post(f"/threads/{run['thread_id']}/runs/{run['id']}/cancel")
        wait_done(busy, run)
        quick = busy.post("/assistants", json={"model": "scripted-hello"}).json()["id"]
        again = start_run(busy, quick)
        assert again.status_code == 200, again.text
        wait_done(busy, again.json())


def test_agents_uploads_count_against_the_upload_budget(server: AgentsServer) -> None:
    with client(server, "uploader") as up, client(server, "other-uploader") as other:
        data = os.urandom(60_000)
        first = up.post("/files", data={"purpose": "assistants"}, files={"file": ("a.bin", data)})
        assert first.status_code == 200, first.text
        second = up.post("/files", data={"purpose": "assistants"}, files={"file": ("b.bin", data)})
        assert second.status_code == 429, second.text
        assert "upload_bytes_per_hour quota" in second.json()["error"]["message"]
        mine = other.post("/files", data={"purpose": "assistants"}, files={"file": ("c.bin", data)})
        assert mine.status_code == 200, mine.text
