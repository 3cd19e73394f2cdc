"""Engines and servers on the in-process ``FakeBackend``: the rootless half of the suite.

async with fake_engine(tmp_path) as engine: ...
async with fake_server(tmp_path) as client: await client.post("/pools/default/...")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from sessionpool.agents.config import AgentsConfig
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox.fake import FakeBackend, Handler
from sessionpool.server.settings import ServerSettings
from sessionpool.server.testing import in_process

KEY = "unit-test-key-0123"
DEFAULT_POOL = PoolConfig(ready_sessions=1, cooldown_seconds=600)


@asynccontextmanager
async def fake_engine(
    tmp_path: Path,
    *pools: PoolConfig,
    handler: Handler | None = None,
    memory_reserve_bytes: int = 0,
) -> AsyncIterator[Engine]:
    """A started engine whose kernels are ``FakeKernel``s (``engine.backend`` is the fake)."""
    data = tmp_path / "fake-data"
    engine = Engine(
        EngineConfig(data_dir=data, memory_reserve_bytes=memory_reserve_bytes),
        list(pools) or [DEFAULT_POOL],
        backend=FakeBackend(data, handler),
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@asynccontextmanager
async def fake_server(
    tmp_path: Path,
    *pools: PoolConfig,
    handler: Handler | None = None,
    backend: FakeBackend | None = None,
    agents: AgentsConfig | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole application in process on a fake engine (``backend``, or a ``FakeBackend``
    with ``handler``), with an API key (``KEY``); the agents faces are on (SQLite in
    ``tmp_path``) unless ``agents`` says otherwise."""
    data = tmp_path / "fake-data"
    pool_list = tuple(pools) or (DEFAULT_POOL,)
    settings = ServerSettings(
        api_keys=(KEY,),
        data_dir=data,
        pools=pool_list,
        agents=agents or AgentsConfig(data_dir=data),
    )
    engine = Engine(
        EngineConfig(data_dir=data, memory_reserve_bytes=0),
        list(pool_list),
        backend=backend or FakeBackend(data, handler),
    )
    await engine.start()
    async with in_process(settings, engine) as client:
        yield client
