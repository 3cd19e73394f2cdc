"""Tenants in the agents service, in process on the fake backend (no root, seconds): each
tenant's view finds only its own objects, runs only in its own containers, and every run passes
the admission hook once.

The same rules over HTTP, against a real server with stored keys, are in
tests/security/test_agents_surface.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sessionpool import errors, tenancy
from sessionpool.agents import AgentsConfig, AgentService
from sessionpool.agents.containers import session_key
from sessionpool.agents.service import ResponseRequest
from sessionpool.agents.types import Conversation, PageRequest, Run, RunStatus
from sessionpool.engine import Engine
from tests.agents.scripted_model import ScriptedModel
from tests.fakes import fake_engine

ECHO = "scripted-echo"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with fake_engine(tmp_path) as e:
        yield e


@pytest.fixture
async def service(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> AsyncIterator[AgentService]:
    config = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model=ECHO,
        model_timeout_seconds=5,
        data_dir=tmp_path / "agents",
    )
    svc = AgentService(config, engine)
    await svc.start()
    yield svc
    await svc.close()


def said(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text, "attachments": []}


def like(object_id: str) -> str:
    """An id of the same shape that was never issued."""
    prefix = object_id[: len(object_id) - 24]
    return prefix + secrets.token_hex(12)


async def not_found(call: Callable[[str], Awaitable[object]], object_id: str) -> None:
    """``call`` on another tenant's id fails exactly as on an id never issued."""
    with pytest.raises(errors.ObjectNotFound) as theirs:
        await call(object_id)
    fresh = like(object_id)
    with pytest.raises(errors.ObjectNotFound) as never:
        await call(fresh)
    assert theirs.value.message.replace(object_id, "ID") == never.value.message.replace(fresh, "ID")


async def test_a_tenant_finds_nothing_of_anothers(service: AgentService) -> None:
    acme, umbrella = service.for_tenant("acme"), service.for_tenant("umbrella")
    upload = await acme.files.create(filename="in.csv", data=b"a,b\n1,2\n")
    agent = await acme.create_agent(model=ECHO, file_ids=[upload.id])
    code = "with open('/mnt/data/out.txt', 'w') as f:\n    f.write('acme')\nprint(42)"
    response = await acme.start_response(ResponseRequest(messages=[said(code)], model=ECHO))
    response = await acme.wait_run(response.id, timeout=30)
    assert response.status == RunStatus.COMPLETED, response.last_error
    assert response.container_id
    conversation = await acme.get_conversation(response.conversation_id)
    [message, _answer] = await acme.all_messages(conversation.id)
    [step, *_] = await acme.run_steps(response.id)
    [written] = await acme.containers.all_files(response.container_id)
    mine = await umbrella.create_conversation()
    own_container = await umbrella.containers.create()

    await not_found(umbrella.get_agent, agent.id)
    await not_found(lambda i: umbrella.update_agent(i, name="stolen"), agent.id)
    await not_found(umbrella.delete_agent, agent.id)
    await not_found(umbrella.files.get, upload.id)
    await not_found(umbrella.files.content, upload.id)
    await not_found(umbrella.files.delete, upload.id)
    await not_found(umbrella.get_conversation, conversation.id)
    await not_found(lambda i: umbrella.update_conversation(i, metadata={"x": "y"}), conversation.id)
    await not_found(lambda i: umbrella.add_message(i, role="user", content="x"), conversation.id)
    await not_found(lambda i: umbrella.list_messages(i, PageRequest()), conversation.id)
    await not_found(umbrella.delete_conversation, conversation.id)
    await not_found(lambda i: umbrella.get_message(conversation.id, i), message.id)
    await not_found(umbrella.get_run, response.id)
    await not_found(umbrella.get_response, response.id)
    await not_found(umbrella.cancel_run, response.id)
    await not_found(lambda i: umbrella.wait_run(i, timeout=1), response.id)
    await not_found(umbrella.delete_run, response.id)
    await not_found(umbrella.run_messages, response.id)
    await not_found(lambda i: umbrella.list_steps(i, PageRequest()), response.id)
    await not_found(lambda i: umbrella.start_run(i), conversation.id)
    await not_found(lambda i: umbrella.start_run(mine.id, agent_id=i), agent.id)
    await not_found(lambda i: umbrella.start_run(mine.id, container_id=i), response.container_id)
    await not_found(lambda i: umbrella.create_agent(model=ECHO, file_ids=[i]), upload.id)
    await not_found(lambda i: umbrella.create_conversation(file_ids=[i]), upload.id)
    await not_found(
        lambda i: umbrella.add_message(mine.id, role="user", content="x", attachments=[i]),
        upload.id,
    )
    await not_found(umbrella.containers.get, response.container_id)
    await not_found(umbrella.containers.delete, response.container_id)
    await not_found(
        lambda i: umbrella.containers.page_files(i, PageRequest()), response.container_id
    )
    await not_found(lambda i: umbrella.containers.create(file_ids=[i]), upload.id)
    await not_found(lambda i: umbrella.containers.add_file(own_container.id, file_id=i), upload.id)
    await not_found(
        lambda i: umbrella.containers.get_file(response.container_id or "", i), written.id
    )
    await not_found(lambda i: umbrella.containers.file_content(own_container.id, i), written.id)
    for turn in (
        ResponseRequest(messages=[said("x")], previous_response_id=response.id),
        ResponseRequest(messages=[said("x")], conversation_id=conversation.id),
        ResponseRequest(messages=[said("x")], container_id=response.container_id),
        ResponseRequest(messages=[said("x")], agent_id=agent.id),
        ResponseRequest(messages=[said("x")], container_file_ids=[upload.id]),
    ):
        with pytest.raises(errors.ObjectNotFound):
            await umbrella.start_response(turn)
    assert step.run_id == response.id
    with pytest.raises(errors.ObjectNotFound):
        await umbrella.get_step(response.id, step.id)

    # listings: umbrella's own only, and acme's ids as cursors are unknown cursors
    assert (await umbrella.list_agents(PageRequest())).items == []
    assert (await umbrella.files.page(PageRequest())).items == []
    assert [c.id for c in (await umbrella.containers.page(PageRequest())).items] == [
        own_container.id
    ]
    assert await umbrella.agents_named(agent.name or "") == []
    for cursor in (agent.id, upload.id, response.container_id):
        page = PageRequest(after=cursor)
        assert (await umbrella.list_agents(page)).items == []
        assert (await umbrella.containers.page(page)).items == []

    # all of acme's is still there, unchanged
    assert (await acme.get_agent(agent.id)).name is None
    assert await acme.files.content(upload.id) == b"a,b\n1,2\n"
    assert (await acme.get_conversation(conversation.id)).metadata == {}
    assert await acme.containers.file_content(response.container_id, written.id) == b"acme"
    assert [r.id for r in await acme.all_runs(conversation.id, kind="response")] == [response.id]


async def test_container_sessions_are_under_a_key_no_identifier_can_name(
    service: AgentService, engine: Engine
) -> None:
    """A container's session is not under its id (which the sessions API would accept as an
    identifier): the reserved key starts with the separator, which no tenant's key does, so
    it is in no tenant's session listing and no client can name it."""
    acme = service.for_tenant("acme")
    code = "secret = 41\nprint(secret)"
    response = await acme.start_response(ResponseRequest(messages=[said(code)], model=ECHO))
    response = await acme.wait_run(response.id, timeout=30)
    assert response.status == RunStatus.COMPLETED and response.container_id
    key = session_key("acme", response.container_id)
    pool = engine.pool(service.pool_name)
    assert await pool.lookup(key) is not None
    assert await pool.lookup(response.container_id) is None
    assert (await acme.containers.get(response.container_id)).session_id == key
    for tenant in (tenancy.DEFAULT_TENANT, "acme", "umbrella"):
        assert tenancy.identifier_of(tenant, key) is None
        assert tenancy.session_key(tenant, response.container_id) != key
    # the same container id of another tenant would be another session
    assert session_key("umbrella", response.container_id) != key


async def test_every_run_passes_the_admission_hook_once(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> None:
    """``admit_run`` sees each run and response before it starts, by tenant; a refusal leaves
    nothing behind; what it admitted is released once, when the run ends."""
    admitted: list[str] = []
    released: list[str] = []
    refuse = {"umbrella"}

    def admit(tenant: str) -> Callable[[], None]:
        if tenant in refuse:
            raise errors.TenantQuotaExceeded(tenant, "agents_runs", "0 runs at once", 5.0)
        admitted.append(tenant)
        return lambda: released.append(tenant)

    config = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model=ECHO,
        model_timeout_seconds=5,
        data_dir=tmp_path / "agents",
    )
    svc = AgentService(config, engine, admit_run=admit)
    await svc.start()
    try:
        acme, umbrella = svc.for_tenant("acme"), svc.for_tenant("umbrella")
        thread = await acme.create_conversation(messages=[said("print(1)")])
        run = await acme.wait_run((await acme.start_run(thread.id)).id, timeout=30)
        response = await acme.start_response(ResponseRequest(messages=[said("print(2)")]))
        response = await acme.wait_run(response.id, timeout=30)
        assert {run.status, response.status} == {RunStatus.COMPLETED}
        assert admitted == ["acme", "acme"]
        assert await wait_for(lambda: released == ["acme", "acme"])

        with pytest.raises(errors.TenantQuotaExceeded) as refused:
            await umbrella.start_response(ResponseRequest(messages=[said("print(3)")]))
        assert refused.value.quota == "agents_runs" and refused.value.retry_after == 5.0
        assert await umbrella.records.all(Run) == []
        assert await umbrella.records.all(Conversation) == []  # the turn's own is gone too
        thread = await umbrella.create_conversation(messages=[said("print(4)")])
        with pytest.raises(errors.TenantQuotaExceeded):
            await umbrella.start_run(thread.id)
        refuse.clear()  # the refusal held nothing: the thread takes a run at once
        run = await umbrella.wait_run((await umbrella.start_run(thread.id)).id, timeout=30)
        assert run.status == RunStatus.COMPLETED
        assert admitted == ["acme", "acme", "umbrella"]
        assert await wait_for(lambda: released == admitted)
    finally:
        await svc.close()


async def wait_for(check: Callable[[], bool]) -> bool:
    for _ in range(200):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()
