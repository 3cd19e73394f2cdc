"""Code in a container is untrusted: what it writes reaches the database and the answer only as
regular files, within limits, and links in the model's text only ever point at those files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.agents import AgentsConfig, AgentService, TenantAgents
from sessionpool.agents.loop import CAPTURE_MAX_FILES
from sessionpool.agents.types import Run, RunStatus, TextPart
from sessionpool.engine import Engine
from sessionpool.tenancy import DEFAULT_TENANT
from tests.agents.scripted_model import ECHO_PREFIX, ScriptedModel

pytestmark = pytest.mark.jail


@pytest.fixture
async def service(
    engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> AsyncIterator[TenantAgents]:
    config = AgentsConfig(
        model_base_url=scripted_model.url,
        default_model="scripted-echo",
        max_file_bytes=1_000_000,
        data_dir=tmp_path,
    )
    svc = AgentService(config, engine)
    await svc.start()
    yield svc.for_tenant(DEFAULT_TENANT)
    await svc.close()


async def run_code(service: TenantAgents, code: str, conversation_id: str | None = None) -> Run:
    """One turn whose cell is ``code`` (the echo script runs the user's message)."""
    if conversation_id is None:
        conversation_id = (await service.create_conversation()).id
    await service.add_message(conversation_id, role="user", content=code)
    run = await service.start_run(conversation_id)
    run = await service.wait_run(run.id, timeout=60)
    assert run.status == RunStatus.COMPLETED, run.last_error
    return run


async def answer(service: TenantAgents, run: Run) -> str:
    [message] = await service.run_messages(run.id)
    return message.text


async def test_links_fifos_and_devices_are_never_read(service: TenantAgents) -> None:
    run = await run_code(
        service,
        "import os\n"
        "os.symlink('/etc/passwd', 'passwd-link')\n"
        "os.symlink('/proc/1/environ', 'environ-link')\n"
        "os.mkfifo('pipe')\n"
        "os.symlink('/etc', 'etc-dir')\n"
        "open('real.txt', 'w').write('mine')\n"
        "print('planted')",
    )
    files = await service.containers.all_files(str(run.container_id))
    assert [f.path for f in files] == ["/mnt/data/real.txt"]
    for record in files:
        assert b"root:" not in await service.files.content(record.id)
    assert "planted" in await answer(service, run)


async def test_a_cell_cannot_flood_the_database(service: TenantAgents) -> None:
    count = CAPTURE_MAX_FILES + 20
    run = await run_code(
        service,
        f"for i in range({count}):\n    open(f'f{{i:04d}}.txt', 'w').write(str(i))\n"
        "open('big.bin', 'wb').write(b'x' * 2_000_000)",
    )
    files = await service.containers.all_files(str(run.container_id))
    assert len(files) == CAPTURE_MAX_FILES
    assert "/mnt/data/big.bin" not in {f.path for f in files}  # over max_file_bytes
    text = await answer(service, run)
    assert "file(s) not kept" in text and str(CAPTURE_MAX_FILES) in text


async def test_files_deleted_by_code_leave_the_container(service: TenantAgents) -> None:
    run = await run_code(service, "open('tmp.csv', 'w').write('a\\n1\\n')")
    [record] = await service.containers.all_files(str(run.container_id))
    again = await run_code(service, "import os; os.remove('tmp.csv')", run.conversation_id)
    assert again.container_id == run.container_id
    assert await service.containers.all_files(str(run.container_id)) == []
    with pytest.raises(errors.ObjectNotFound):
        await service.files.get(record.id)


async def test_links_in_the_answer_only_name_files_the_code_wrote(service: TenantAgents) -> None:
    """The model's text is untrusted too: a link to a path the code did not write, or one
    that climbs out of /mnt/data, is left as plain text."""
    code = (
        "open('ok.txt', 'w').write('fine')\n"
        "print('see sandbox:/mnt/data/ok.txt and sandbox:/mnt/data/../../etc/passwd '"
        " 'and sandbox:/mnt/data/missing.txt')"
    )
    run = await run_code(service, code)
    [message] = await service.run_messages(run.id)
    text_part = message.content[-1]
    assert isinstance(text_part, TextPart) and text_part.text.startswith(ECHO_PREFIX)
    assert [a.text for a in text_part.annotations] == ["sandbox:/mnt/data/ok.txt"]
    [ann] = text_part.annotations
    assert text_part.text[ann.start_index : ann.end_index] == ann.text


async def test_upload_names_cannot_climb_out(service: TenantAgents) -> None:
    upload = await service.files.create(filename="../../etc/cron.d/evil.csv", data=b"a\n")
    assert upload.filename == "evil.csv"
    container = await service.containers.create(file_ids=[upload.id])
    [copy] = await service.containers.all_files(container.id)
    assert copy.path == "/mnt/data/evil.csv"
