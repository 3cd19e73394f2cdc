"""The egress tests' fixtures: one test internet for the run, one jailed engine per module.

``internet`` is the test internet (``netlab.Internet``): built once, when the first test asks
for it, and kept up for the rest of the run, since only one can be up on a host and building
it takes a host-wide lock. Tests that build an internet of their own take ``internet_down``
first (it closes the shared one; the next ``internet`` builds it again).

``egress_engine`` is a jailed engine whose egress proxy knows the test internet (its names, its
network, its CA), with three pools:

- ``net``: ``allowlist`` of the internet's names (the private, loopback and metadata ones too,
  so that what refuses them is the address check), secrets for ``SECRET``;
- ``off``: no network;
- ``flood``: the same allowlist with small per-session limits, for the flood tests.

It is module-scoped: each module gets a fresh proxy (its decisions, counters and limits), and
the engine never outlives the internet whose CA it trusts.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sessionpool.config import EgressSettings, PoolConfig
from sessionpool.engine import Engine
from sessionpool.session import Session
from tests.egress.helpers import (
    FLOOD_CONNECTIONS,
    FLOOD_PER_SECOND,
    NET_ALLOW,
    SECRET_HEADERS,
    netns_usable,
)
from tests.egress.netlab import Internet

_ids = itertools.count()


class SharedInternet:
    """The run's one test internet, built on first use."""

    def __init__(self) -> None:
        self.net: Internet | None = None

    def up(self) -> Internet:
        if self.net is None:
            reason = netns_usable()
            if reason:
                pytest.skip(reason)
            net = Internet()
            net.start()
            self.net = net
        return self.net

    def down(self) -> None:
        net, self.net = self.net, None
        if net is not None:
            net.close()


@pytest.fixture(scope="session")
def shared_internet() -> Iterator[SharedInternet]:
    shared = SharedInternet()
    yield shared
    shared.down()


@pytest.fixture(scope="module")
def internet(shared_internet: SharedInternet) -> Internet:
    return shared_internet.up()


@pytest.fixture
def internet_down(shared_internet: SharedInternet) -> None:
    """For a test that builds an internet of its own: the shared one is closed first. Use it
    before the module's first use of ``internet``."""
    shared_internet.down()


@pytest.fixture(scope="module")
async def egress_engine(
    internet: Internet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Engine]:
    data_dir = Path(tmp_path_factory.mktemp("egress-engine"))
    allow = EgressSettings(allow=NET_ALLOW, secrets=((Internet.SECRET, SECRET_HEADERS),))
    flood = EgressSettings(
        allow=NET_ALLOW,
        connections=FLOOD_CONNECTIONS,
        connections_per_second=FLOOD_PER_SECOND,
    )
    eng = Engine(
        internet.engine_config(data_dir),
        [
            # first: a pool without network must not give the pools with network a zygote
            # without their CA bundle (nor they give it one with)
            PoolConfig(name="off", network="off", ready_sessions=1, cooldown_seconds=600),
            PoolConfig(
                name="net",
                network="allowlist",
                egress=allow,
                ready_sessions=2,
                cooldown_seconds=600,
            ),
            PoolConfig(
                name="flood",
                network="allowlist",
                egress=flood,
                ready_sessions=1,
                cooldown_seconds=600,
            ),
        ],
    )
    await eng.start()
    yield eng
    await eng.close()


async def _session(engine: Engine, pool_name: str) -> AsyncIterator[Session]:
    pool = engine.pool(pool_name)
    ident = f"egress-{pool_name}-{next(_ids)}"
    session = await pool.acquire(ident)
    yield session
    await pool.delete(ident)


@pytest.fixture
async def net_session(egress_engine: Engine) -> AsyncIterator[Session]:
    async for s in _session(egress_engine, "net"):
        yield s


@pytest.fixture
async def off_session(egress_engine: Engine) -> AsyncIterator[Session]:
    async for s in _session(egress_engine, "off"):
        yield s


@pytest.fixture
async def flood_session(egress_engine: Engine) -> AsyncIterator[Session]:
    async for s in _session(egress_engine, "flood"):
        yield s
