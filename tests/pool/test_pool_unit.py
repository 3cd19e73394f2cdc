"""Pool logic on the in-process fake backend: allocation, limits, refill, cooldown, faults.

tests/pool/test_pool.py shows the same with jailed sessions and real zygotes; here the backend
is scripted, so faults the jail rarely shows (a fork that fails, a sandbox that breaks) are
tested on purpose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.config import PoolConfig
from sessionpool.engine import Engine
from sessionpool.pool import Pool
from sessionpool.pool.pool import mem_available
from sessionpool.sandbox.backend import Slot
from sessionpool.sandbox.fake import FakeBackend, FakeKernel
from tests.fakes import fake_engine

GiB = 1 << 30


async def wait_ready(pool: Pool, count: int) -> None:
    for _ in range(200):
        if pool.ready_count >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"pool {pool.name} never reached {count} ready sessions")


def fake(engine: Engine) -> FakeBackend:
    assert isinstance(engine.backend, FakeBackend)
    return engine.backend


async def test_one_identifier_one_session_even_when_raced(tmp_path: Path) -> None:
    async with fake_engine(tmp_path) as engine:
        pool = engine.pool("default")
        sessions = await asyncio.gather(*(pool.acquire("racy") for _ in range(5)))
        assert all(s is sessions[0] for s in sessions)
        await sessions[0].execute("v = 'kept'")
        again = await pool.acquire("racy")
        r = await again.execute("v")
        assert again is sessions[0] and r.result is not None
        assert r.result.data["text/plain"] == "'kept'"


async def test_warm_sessions_are_taken_and_refilled(tmp_path: Path) -> None:
    async with fake_engine(tmp_path, PoolConfig(ready_sessions=2)) as engine:
        pool = engine.pool("default")
        await wait_ready(pool, 2)
        # the session made last is handed out first: its caches are the warmest
        warm = fake(engine).kernels[-1]
        session = await pool.acquire("warm")
        assert session.kernel is warm
        # the warm-up cell ran before the user's first cell
        assert warm.requests[0]["silent"] is True
        await wait_ready(pool, 2)
        assert len(fake(engine).kernels) == 3


async def test_a_ready_session_of_a_retired_zygote_goes_first(tmp_path: Path) -> None:
    """The newest ready session is handed out first, except when the oldest's zygote has
    retired: that zygote exits only once its last session has, and would wait on it."""
    async with fake_engine(tmp_path, PoolConfig(ready_sessions=3)) as engine:
        pool = engine.pool("default")
        await wait_ready(pool, 3)
        kernels = fake(engine).kernels
        kernels[0].maker_retired = True
        assert (await pool.acquire("first")).kernel is kernels[0]
        newest = kernels[-1]  # the refill's, if it has made one since
        assert (await pool.acquire("second")).kernel is newest is not kernels[1]


async def test_a_ready_session_that_died_is_skipped(tmp_path: Path) -> None:
    async with fake_engine(tmp_path, PoolConfig(ready_sessions=1)) as engine:
        pool = engine.pool("default")
        await wait_ready(pool, 1)
        fake(engine).kernels[0].kill(-9)
        session = await pool.acquire("alive")
        assert session.kernel is not None and session.kernel.alive()
        assert (await session.execute("1")).result is not None


async def test_max_sessions_refuses_cleanly_and_harms_no_one(tmp_path: Path) -> None:
    async with fake_engine(tmp_path, PoolConfig(max_sessions=2, ready_sessions=0)) as engine:
        pool = engine.pool("default")
        held = [await pool.acquire(f"held-{i}") for i in range(2)]
        await held[0].execute("mark = 1")
        with pytest.raises(errors.PoolAtCapacity, match=r"max_sessions \(2\)") as info:
            await pool.acquire("one-too-many")
        assert (info.value.pool, info.value.limit) == ("default", "max_sessions")
        r = await held[0].execute("mark + 1")
        assert r.result is not None and r.result.data["text/plain"] == "2"
        assert await pool.delete("held-0")
        assert (await pool.acquire("after")).identifier == "after"


async def test_delete_is_idempotent_and_destroys_files(tmp_path: Path) -> None:
    async with fake_engine(tmp_path) as engine:
        pool = engine.pool("default")
        s = await pool.acquire("doomed")
        await s.write_file("a.txt", b"x")
        workspace = s.slot.workspace.path
        assert await pool.delete("doomed") is True
        assert await pool.delete("doomed") is False
        assert not workspace.exists()
        assert await (await pool.acquire("doomed")).list_files() == []


@pytest.mark.parametrize(
    "ident", ["", "x" * 257, "bad\x00id", "tab\there", "us\x1fid", "del\x7fid"]
)
async def test_invalid_identifiers_are_refused(tmp_path: Path, ident: str) -> None:
    async with fake_engine(tmp_path) as engine:
        with pytest.raises(errors.InvalidIdentifier):
            await engine.pool("default").acquire(ident)
        with pytest.raises(errors.PoolNotFound):
            engine.pool("nope")


async def test_idle_sessions_cool_down_and_calls_reset_the_timer(tmp_path: Path) -> None:
    async with fake_engine(tmp_path, PoolConfig(ready_sessions=0, cooldown_seconds=0.5)) as eng:
        pool = eng.pool("default")
        busy = await pool.acquire("kept-alive")
        idle = await pool.acquire("left-alone")
        for _ in range(8):
            await asyncio.sleep(0.2)
            await busy.execute("1")
        assert pool.get("left-alone") is None and idle.closed
        assert pool.get("kept-alive") is busy


async def test_memory_admission_refuses_before_the_machine_runs_out(tmp_path: Path) -> None:
    available = mem_available()
    assert available is not None
    async with fake_engine(tmp_path, PoolConfig(ready_sessions=0)) as engine:
        pool = Pool(
            PoolConfig(name="short", ready_sessions=0),
            engine.backend,
            memory_reserve=available + GiB,
        )
        await pool.start()
        try:
            with pytest.raises(errors.PoolAtCapacity, match="of memory is available") as info:
                await pool.acquire("short-1")
            assert info.value.limit == "memory_reserve_bytes"
            assert pool.sessions() == []
        finally:
            await pool.close()


async def test_a_closing_pool_refuses_new_sessions(tmp_path: Path) -> None:
    async with fake_engine(tmp_path) as engine:
        pool = engine.pool("default")
        await pool.close()
        with pytest.raises(errors.PoolClosed):
            await pool.acquire("late")


class BrokenSandbox(FakeBackend):
    """A backend whose kernels stop starting after the first ``healthy`` ones."""

    def __init__(self, data_dir: Path, failure: Exception, healthy: int = 1) -> None:
        super().__init__(data_dir)
        self.failure = failure
        self.healthy = healthy

    async def spawn(self, pool: PoolConfig, slot: Slot) -> FakeKernel:
        if len(self.kernels) >= self.healthy:
            raise self.failure
        return await super().spawn(pool, slot)


@pytest.mark.parametrize(
    "failure",
    [errors.SandboxError("the zygote could not fork"), OSError(12, "Cannot allocate memory")],
)
async def test_a_broken_sandbox_is_a_sandbox_error_not_exhaustion(
    tmp_path: Path, failure: Exception
) -> None:
    """Advice to delete idle sessions would be wrong: the pool is not full, the sandbox broke."""
    backend = BrokenSandbox(tmp_path, failure)
    pool = Pool(PoolConfig(ready_sessions=0), backend, memory_reserve=0)
    await backend.start()
    await pool.start()
    try:
        assert await pool.acquire("first")  # the one healthy fork
        with pytest.raises(errors.SandboxError) as info:
            await pool.acquire("second")
        assert not isinstance(info.value, errors.PoolAtCapacity)
        assert "sandbox failed" in info.value.message and "doctor" in info.value.message
        assert pool.get("second") is None
        assert [s.identifier for s in pool.sessions()] == ["first"]
    finally:
        await pool.close()
        await backend.close()


async def test_refill_failures_are_recorded_and_retried(tmp_path: Path) -> None:
    backend = BrokenSandbox(tmp_path, errors.SandboxError("the jail could not be built"))
    pool = Pool(PoolConfig(ready_sessions=1), backend, memory_reserve=0)
    await backend.start()
    await pool.start()  # the one healthy fork becomes the first ready session
    try:
        await pool.acquire("takes-the-warm-one")
        for _ in range(100):  # its refill fails
            if pool.last_refill_error:
                break
            await asyncio.sleep(0.01)
        assert pool.last_refill_error is not None and "jail" in pool.last_refill_error
        assert pool.ready_count == 0
        backend.healthy = 2  # the host is repaired: the next retry (a second later) succeeds
        await wait_ready(pool, 1)
        assert pool.last_refill_error is None
    finally:
        await pool.close()
        await backend.close()


class GatedSandbox(FakeBackend):
    """Forks wait for ``gate`` (once ``gated`` is set); ``failure`` makes them fail instead."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.gate = asyncio.Event()
        self.gated = False
        self.failure: Exception | None = None

    async def spawn(self, pool: PoolConfig, slot: Slot) -> FakeKernel:
        if self.gated:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return await super().spawn(pool, slot)


async def _tight_pool(tmp_path: Path) -> tuple[GatedSandbox, Pool]:
    """One ready session; memory admission lets one fork at a time through (each being made
    is counted as all the memory there is), and the refill is making one, held at the gate."""
    available = mem_available()
    assert available is not None
    backend = GatedSandbox(tmp_path)
    pool = Pool(
        PoolConfig(ready_sessions=1), backend, memory_reserve=0, creating_estimate=available + GiB
    )
    await backend.start()
    await pool.start()
    backend.gated = True
    await pool.acquire("takes-the-warm-one")
    for _ in range(200):  # the refill is admitted and forking
        if pool.states()["starting"] == 1:
            break
        await asyncio.sleep(0.005)
    assert pool.states()["starting"] == 1 and pool.ready_count == 0
    return backend, pool


async def test_admission_queues_for_the_refill_instead_of_refusing(tmp_path: Path) -> None:
    """A new session memory admission would refuse while the refill is making one (admitted
    already) waits for that session rather than failing."""
    backend, pool = await _tight_pool(tmp_path)
    try:
        waiting = [asyncio.create_task(pool.acquire(f"queued-{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in waiting)  # queued, neither refused nor forked
        backend.gate.set()
        sessions = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert len({id(s) for s in sessions}) == 2  # the refill made one for each
        for i, session in enumerate(sessions):
            assert session.identifier == f"queued-{i}"
            assert (await session.execute("1")).result is not None
        assert pool.stats.allocations["refused"] == 0
    finally:
        await pool.close()
        await backend.close()


async def test_a_queued_allocation_is_refused_when_the_refill_fails(tmp_path: Path) -> None:
    backend, pool = await _tight_pool(tmp_path)
    try:
        waiting = asyncio.create_task(pool.acquire("queued"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        backend.failure = errors.SandboxError("the jail could not be built")
        backend.gate.set()
        with pytest.raises(errors.SandboxError, match="jail"):
            await asyncio.wait_for(waiting, 10)
        assert pool.get("queued") is None
    finally:
        await pool.close()
        await backend.close()


async def test_a_closing_pool_refuses_queued_allocations(tmp_path: Path) -> None:
    backend, pool = await _tight_pool(tmp_path)
    waiting = asyncio.create_task(pool.acquire("queued"))
    await asyncio.sleep(0.05)
    backend.gate.set()
    backend.failure = None
    await pool.close(deadline_s=2)
    with pytest.raises(errors.PoolClosed):
        await asyncio.wait_for(waiting, 10)
    await backend.close()
