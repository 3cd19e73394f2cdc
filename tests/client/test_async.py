"""The asyncio client against a real server: the same protocol, sent with httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from sessionpool import AsyncClient, AuthenticationError, ExecutionTimeout, NotFound
from sessionpool.server.testing import ServerProcess
from tests.client.conftest import PAYLOAD, PLOT

pytestmark = pytest.mark.jail


async def test_async_session_end_to_end(sdk_server: ServerProcess, tmp_path: Path) -> None:
    async with AsyncClient(sdk_server.endpoint(), api_key=sdk_server.api_key) as client:
        ident = f"async-{uuid.uuid4()}"
        async with client.session(ident) as s:
            await s.run("x = 20")
            assert (await s.run("x * 2 + 2")).text == "42"
            res = await s.run(PLOT)
            assert res.images[0].data.startswith(b"\x89PNG")
            err = await s.run("raise KeyError('k')")
            assert err.error is not None and err.error.name == "KeyError"
            assert (await s.run_shell("exit 4")).exit_code == 4
            local = tmp_path / "in.bin"
            local.write_bytes(PAYLOAD)
            assert (await s.upload(local, "in.bin")).size == len(PAYLOAD)
            assert (await s.upload(b"abc", "b.txt")).size == 3
            assert {f.name for f in await s.files()} == {"in.bin", "b.txt"}
            assert await s.download("in.bin") == PAYLOAD
            await s.delete_file("b.txt")
            with pytest.raises(NotFound):
                await s.download("b.txt")
            with pytest.raises(ExecutionTimeout):
                await s.run("import time; time.sleep(30)", timeout=1)
            assert ident in {i.identifier for i in await client.sessions()}
        assert ident not in {i.identifier for i in await client.sessions()}


async def test_async_concurrent_sessions(sdk_server: ServerProcess) -> None:
    async with AsyncClient(sdk_server.endpoint(), api_key=sdk_server.api_key) as client:
        sessions = [client.session() for _ in range(3)]
        results = await asyncio.gather(
            *(s.run(f"import time; time.sleep(0.5); {i}") for i, s in enumerate(sessions))
        )
        assert [r.text for r in results] == ["0", "1", "2"]
        await asyncio.gather(*(s.close() for s in sessions))


async def test_async_wrong_key(sdk_server: ServerProcess) -> None:
    async with AsyncClient(sdk_server.endpoint(), api_key="wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.sessions()
