"""OpenAI's Containers ``memory_limit`` (``openai`` 3.54.0, unmodified) sets the container's
session memory limit, against a real server with jailed sessions (its pool's limit: 2 GiB).

A cell that allocates 1.5 GiB fits the pool's limit; in a container limited to ``1g`` the
session's own cgroup kills it, and the server says so with the container's limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.agents.harness import AgentsServer
from tests.clients.test_agents_responses import items_of, make_client

pytestmark = pytest.mark.jail

#: touches every page (a zero-filled buffer might not)
ALLOCATE = "blob = b'\\x01' * (1536 << 20)\nprint('allocated', len(blob) >> 20, 'MiB')"


@pytest.fixture
def client(agents_server: AgentsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[openai.OpenAI]:
    monkeypatch.setenv("SSL_CERT_FILE", str(agents_server.ca_bundle))
    with make_client(agents_server) as c:
        yield c


def run_cell(client: openai.OpenAI, code: str, container: Any) -> str:
    resp = client.responses.create(
        model="scripted-echo",
        tools=[{"type": "code_interpreter", "container": container}],
        input=code,
    )
    assert resp.status == "completed", resp.error
    assert items_of(resp, "code_interpreter_call")
    return resp.output_text


def test_memory_limit_is_the_sessions_limit(client: openai.OpenAI) -> None:
    container = client.containers.create(name="small", memory_limit="1g")
    try:
        assert container.memory_limit == "1g"
        assert client.containers.retrieve(container.id).memory_limit == "1g"
        out = run_cell(client, ALLOCATE, container.id)
        assert "allocated" not in out
        assert "out of memory (the session's limit is 1024 MiB)" in out, out
        # the next cell runs in a fresh interpreter under the same limit
        out = run_cell(client, "print('still here')", container.id)
        assert "still here" in out
    finally:
        client.containers.delete(container.id)


def test_auto_container_memory_limit(client: openai.OpenAI) -> None:
    out = run_cell(client, ALLOCATE, {"type": "auto", "memory_limit": "1g"})
    assert "out of memory (the session's limit is 1024 MiB)" in out, out


def test_memory_limit_above_the_pool_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.containers.create(name="big", memory_limit="4g")
    assert exc.value.status_code == 400
    message = str(exc.value)
    assert "memory_limit '4g'" in message and "2g" in message, message
    with pytest.raises(openai.BadRequestError) as exc:
        client.containers.create(name="odd", memory_limit="lots")
    assert "memory_limit 'lots'" in str(exc.value)
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(
            model="scripted-echo",
            tools=[
                {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "64g"}}
            ],
            input="print(1)",
        )
    assert "memory_limit '64g'" in str(exc.value)
