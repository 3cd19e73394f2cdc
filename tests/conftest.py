"""Shared fixtures: one real engine with jailed sessions for the whole test run.

Two pools: ``default`` with production settings, and ``tight`` with small limits so that the
limit tests finish quickly. Tests that need a session take ``session`` (a fresh identifier in
``default``) or ``tight_session``.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionpool.config import EngineConfig, Limits, MiB, PoolConfig
from sessionpool.engine import Engine
from sessionpool.session import Session

# the agents fixtures (scripted model, agents server, PostgreSQL), for every test directory
pytest_plugins = ["tests.agents.fixtures"]

_ids = itertools.count()

TIGHT_LIMITS = Limits(
    memory_bytes=256 * MiB,
    pids=64,
    cpus=1.0,
    disk_bytes=16 * MiB,
    file_bytes=4 * MiB,
    tmp_bytes=16 * MiB,
    output_bytes=64 * 1024,
)


def pytest_configure(config: pytest.Config) -> None:
    """Detach session workspaces that an interrupted earlier run left mounted under pytest's
    temporary root: pytest cannot delete its old directories through a mount point."""
    if os.geteuid() != 0:
        return
    from sessionpool.sandbox import linux

    root = str(Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted(points, reverse=True):
        if point.startswith(root) and not _run_alive(Path(root) / point[len(root) :].split("/")[0]):
            with contextlib.suppress(OSError):
                linux.umount2(point, linux.MNT_DETACH)


def _run_alive(basetemp: Path) -> bool:
    """pytest keeps its pid in ``<basetemp>/.lock`` while a run uses that directory: the mounts
    of a run still going (a second suite started beside it) are not stale."""
    try:
        pid = int((basetemp / ".lock").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def jail_possible() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    if not jail_possible():
        pytest.skip("the jail backend needs root (user namespaces with per-session uids)")
    data_dir = Path(tmp_path_factory.mktemp("engine"))
    eng = Engine(
        EngineConfig(backend="jail", data_dir=data_dir),
        [
            PoolConfig(name="default", ready_sessions=2, cooldown_seconds=600),
            PoolConfig(
                name="tight",
                ready_sessions=1,
                execution_timeout_seconds=3.0,
                interrupt_grace_seconds=1.0,
                cooldown_seconds=600,
                limits=TIGHT_LIMITS,
            ),
        ],
    )
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture
async def session(engine: Engine) -> AsyncIterator[Session]:
    pool = engine.pool("default")
    ident = f"test-{next(_ids)}"
    s = await pool.acquire(ident)
    yield s
    await pool.delete(ident)


@pytest.fixture
async def tight_session(engine: Engine) -> AsyncIterator[Session]:
    pool = engine.pool("tight")
    ident = f"tight-{next(_ids)}"
    s = await pool.acquire(ident)
    yield s
    await pool.delete(ident)
