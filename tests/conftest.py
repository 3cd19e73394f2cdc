"""Shared fixtures, and the rule that splits the suite in two.

Tests that build jailed sessions (a jail-backend engine, or a server process, directly or
through a fixture) are marked ``jail``: they need root, and are skipped with the reason
without it. Everything else runs anywhere in seconds: ``make unit`` (``pytest -m "not jail"``)
runs that part, most of it on the in-process ``FakeBackend``. The marker is enforced: a test
that starts a jailed engine or a server process without it fails, and so does an unmarked test
that uses a fixture which did.

The ``engine`` fixture is one real engine with jailed sessions for the whole run, with two
pools: ``default`` with production settings, and ``tight`` with small limits so that the limit
tests finish quickly. Tests that need a session take ``session`` (a fresh identifier in
``default``) or ``tight_session``.

``make test`` spreads the modules over one worker per vCPU (pytest-xdist, a module to a
worker, so module fixtures start once). Tests that share a host-wide resource only one of
them can hold at a time go to one worker together: ``SERIAL_SCOPES``.
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
from sessionpool.sandbox.jailed import JailBackend
from sessionpool.server.testing import ServerProcess
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


#: directories whose tests go to one worker together: each of their modules brings up the
#: egress tests' internet, of which a host holds one at a time (``tests/egress/netlab.py``);
#: on two workers one would wait for the other's modules, and give up after two minutes
SERIAL_SCOPES = ("tests/egress/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Under ``--dist loadscope``: modules to workers as it does, ``SERIAL_SCOPES`` as one unit
    each (any other mode is xdist's own)."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            for scope in SERIAL_SCOPES:
                if nodeid.startswith(scope):
                    return scope
            return super()._split_scope(nodeid)

    return Scheduling(config, log)


def jail_possible() -> bool:
    return os.geteuid() == 0


# --- the jail marker --------------------------------------------------------------------------

ROOTLESS_HINT = "make unit runs the tests that need no root"
_current: pytest.Item | None = None
_fixtures: list[str] = []  # fixtures being set up, innermost last
_jailed_fixtures: set[str] = set()  # fixtures seen building jailed sessions


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if jail_possible():
        return
    skip = pytest.mark.skip(reason=f"needs root to build jailed sessions ({ROOTLESS_HINT})")
    for item in items:
        if item.get_closest_marker("jail") is not None:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    global _current
    _current = item
    if item.get_closest_marker("jail") is None:
        used = sorted(_jailed_fixtures & set(getattr(item, "fixturenames", ())))
        if used:
            pytest.fail(f"uses {', '.join(used)}, which build jailed sessions: mark it jail")


def pytest_runtest_teardown(item: pytest.Item) -> None:
    global _current
    _current = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object]) -> object:
    _fixtures.append(fixturedef.argname)
    try:
        return (yield)
    finally:
        _fixtures.pop()


def _building_jailed_sessions(what: str) -> None:
    _jailed_fixtures.update(_fixtures)
    if _current is not None and _current.get_closest_marker("jail") is None:
        pytest.fail(f"{_current.nodeid} {what} but is not marked jail ({ROOTLESS_HINT})")


@pytest.fixture(scope="session", autouse=True)
def _enforce_the_jail_marker() -> object:
    """Every jailed engine and every server process checks the test that starts it."""
    jail_start, server_start = JailBackend.start, ServerProcess.start

    async def start_jail(self: JailBackend) -> None:
        _building_jailed_sessions("starts a jailed engine")
        await jail_start(self)

    def start_server(self: ServerProcess) -> None:
        _building_jailed_sessions("starts a server process")
        server_start(self)

    patch = pytest.MonkeyPatch()
    patch.setattr(JailBackend, "start", start_jail)
    patch.setattr(ServerProcess, "start", start_server)
    yield
    patch.undo()


@pytest.fixture(scope="session")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
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
