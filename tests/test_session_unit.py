"""Session logic on the in-process fake backend: queueing, deadlines, death, protocol faults.

The same behaviour as tests/test_session.py shows with jailed kernels, here in milliseconds and
without root; kernels that misbehave on purpose are scripted handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.config import PoolConfig
from sessionpool.engine import Engine
from sessionpool.protocol import Message
from sessionpool.sandbox.fake import FakeBackend, FakeKernel, Reply, run_python
from sessionpool.session import Session
from sessionpool.types import ExecutionStatus, ProcessSpec
from tests.fakes import fake_engine

QUICK = PoolConfig(
    ready_sessions=0,
    cooldown_seconds=600,
    execution_timeout_seconds=0.5,
    interrupt_grace_seconds=0.3,
)
# the pool's limit is generous here; cells meant to time out say so, so that a slow machine
# cannot time out a quick one
GENEROUS = dataclasses.replace(QUICK, execution_timeout_seconds=30)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with fake_engine(tmp_path, GENEROUS) as eng:
        yield eng


@pytest.fixture
async def session(engine: Engine) -> Session:
    return await engine.pool("default").acquire("unit")


def fake(engine: Engine) -> FakeBackend:
    assert isinstance(engine.backend, FakeBackend)
    return engine.backend


def text(result: object) -> str:
    value = getattr(result, "result", None)
    assert value is not None, result
    plain = value.data["text/plain"]
    assert isinstance(plain, str)
    return plain


async def test_state_persists_and_calls_queue_one_at_a_time(session: Session) -> None:
    await session.execute("order = []")
    slow = asyncio.create_task(session.execute("for _ in range(200000): pass\norder.append(1)"))
    await asyncio.sleep(0)
    fast = await session.execute("order.append(2); order")
    await slow
    assert text(fast) == "[1, 2]"


async def test_a_deadline_interrupts_and_keeps_state(session: Session) -> None:
    await session.execute("counter = 7")
    r = await session.execute("while True: pass", timeout=0.2)
    assert r.status is ExecutionStatus.TIMEOUT and not r.state_lost
    assert "timed out after 0.2 s" in r.stderr
    assert text(await session.execute("counter")) == "7"


async def test_the_pool_caps_the_deadline(tmp_path: Path) -> None:
    async with fake_engine(tmp_path, QUICK) as engine:
        session = await engine.pool("default").acquire("capped")
        r = await session.execute("while True: pass", timeout=100)
        assert r.status is ExecutionStatus.TIMEOUT
        assert "timed out after 0.5 s" in r.stderr


async def test_a_cell_that_outlives_the_grace_is_killed_and_replaced(tmp_path: Path) -> None:
    async def deaf(kernel: FakeKernel, request: Message) -> Reply:
        if request.get("code") == "hang":  # ignores SIGINT, like a cell stuck in C code
            await asyncio.Event().wait()
        return await run_python(kernel, request)

    async with fake_engine(tmp_path, GENEROUS, handler=deaf) as engine:
        session = await engine.pool("default").acquire("deaf")
        await session.execute("v = 1")
        r = await session.execute("hang", timeout=0.5)
        assert r.status is ExecutionStatus.TIMEOUT and r.state_lost
        assert "did not stop within 0.3 s" in r.stderr and "killed by signal 9" in r.stderr
        gone = await session.execute("v")
        assert gone.status is ExecutionStatus.ERROR and gone.error is not None
        assert gone.error.ename == "NameError"
        assert session.kernels_started == 2


async def test_death_between_calls_is_reported_on_the_next_call(
    engine: Engine, session: Session
) -> None:
    await session.execute("v = 1")
    await session.write_file("keep.txt", b"still here")
    fake(engine).kernels[-1].kill(3)
    r = await session.execute("with open('keep.txt') as f: kept = f.read()\nkept")
    assert r.state_lost and "previous interpreter" in r.stderr
    assert "exited with status 3" in r.stderr
    assert text(r) == "'still here'"
    gone = await session.execute("v")
    assert gone.status is ExecutionStatus.ERROR and not gone.state_lost


async def test_death_during_a_call_is_reported_and_replaced(tmp_path: Path) -> None:
    async def dies(kernel: FakeKernel, request: Message) -> Reply:
        if request.get("code") == "die":
            kernel.kill(3)
        return await run_python(kernel, request)

    async with fake_engine(tmp_path, GENEROUS, handler=dies) as engine:
        session = await engine.pool("default").acquire("dies")
        r = await session.execute("die")
        assert r.status is ExecutionStatus.LOST and r.state_lost
        assert "exited with status 3" in r.stderr
        assert (await session.execute("1 + 1")).status is ExecutionStatus.OK
        assert session.kernels_started == 2


async def test_an_abandoned_call_never_hands_its_reply_to_the_next(tmp_path: Path) -> None:
    async with fake_engine(tmp_path, QUICK) as engine:  # the abandoned cell times out soon
        session = await engine.pool("default").acquire("abandoned")
        await session.execute("kept = 'state'")
        caller = asyncio.create_task(session.execute("while True: pass\n'stale'"))
        await asyncio.sleep(0.05)
        caller.cancel()  # the client went away
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        r = await asyncio.wait_for(session.execute("'fresh', kept"), 5)
        assert text(r) == "('fresh', 'state')"
    assert not r.state_lost  # the abandoned cell was interrupted, not killed


async def test_a_malformed_reply_is_a_protocol_error(tmp_path: Path) -> None:
    async def garbage(kernel: FakeKernel, request: Message) -> Reply:
        if request.get("code") == "garbage":
            return {"op": "nonsense"}, []
        return await run_python(kernel, request)

    async with fake_engine(tmp_path, GENEROUS, handler=garbage) as engine:
        session = await engine.pool("default").acquire("garbage")
        with pytest.raises(errors.ProtocolError) as info:
            await session.execute("garbage")
        assert (info.value.pool, info.value.identifier) == ("default", "garbage")


async def test_an_oversized_reply_kills_the_kernel(tmp_path: Path) -> None:
    async def flood(kernel: FakeKernel, request: Message) -> Reply:
        if request.get("code") == "flood":
            return {"op": "result", "stdout": "x" * (16 << 20)}, []
        return await run_python(kernel, request)

    async with fake_engine(tmp_path, GENEROUS, handler=flood) as engine:
        session = await engine.pool("default").acquire("flood")
        r = await session.execute("flood")
        assert r.status is ExecutionStatus.LOST and "malformed reply" in r.stderr
        assert (await session.execute("1")).status is ExecutionStatus.OK


async def test_streamed_output_is_forwarded_and_bounded(tmp_path: Path) -> None:
    small_output = PoolConfig(ready_sessions=0, limits=QUICK.limits.__class__(output_bytes=10))
    async with fake_engine(tmp_path, small_output) as engine:
        session = await engine.pool("default").acquire("stream")
        seen: list[tuple[str, str]] = []
        r = await session.execute(
            "print('hello'); print('world and more')",
            on_output=lambda name, chunk: seen.append((name, chunk)),
        )
        assert "".join(t for _, t in seen) == r.stdout == "hello\nworl"
        assert r.truncated


async def test_shell_commands_and_files(session: Session) -> None:
    await session.write_file("sub/in.txt", b"data")
    shell = await session.run_shell("cat sub/in.txt; echo err >&2; exit 4")
    assert (shell.exit_code, shell.stdout, shell.stderr) == (4, "data", "err\n")
    assert [f.path for f in await session.list_files(recursive=True)] == ["sub", "sub/in.txt"]
    assert await session.read_file("/mnt/data/sub/in.txt") == b"data"
    await session.delete_file("sub")
    assert await session.list_files() == []


async def test_a_closed_session_is_not_found(engine: Engine) -> None:
    pool = engine.pool("default")
    session = await pool.acquire("closing")
    await pool.delete("closing")
    with pytest.raises(errors.SessionNotFound):
        await session.execute("1")
    with pytest.raises(errors.SessionNotFound):
        await session.list_files()


async def test_file_errors_name_the_session_and_the_limit(tmp_path: Path) -> None:
    small = PoolConfig(ready_sessions=0, limits=QUICK.limits.__class__(file_bytes=4))
    async with fake_engine(tmp_path, small) as engine:
        session = await engine.pool("default").acquire("files")
        with pytest.raises(errors.FileOverLimit) as info:
            await session.write_file("big.bin", b"12345")
        assert (info.value.pool, info.value.identifier) == ("default", "files")
        assert (info.value.limit, info.value.limit_bytes) == ("limits.file_bytes", 4)
        with pytest.raises(errors.FileNotFound) as missing:
            await session.read_file("nope.txt")
        assert missing.value.identifier == "files"


async def test_processes_on_a_kernel_without_them_are_refused_clearly(session: Session) -> None:
    """A kernel that answers process requests with bad-request (the fake, the Node.js kernel)
    makes the session say processes are not supported by the pool's runtime."""
    with pytest.raises(errors.InvalidArgument, match="not supported by this pool's runtime"):
        await session.start_process(ProcessSpec("/bin/true"))
    with pytest.raises(errors.InvalidArgument, match="not supported"):
        await session.list_processes()
    with pytest.raises(errors.ObjectNotFound):
        session.connect_process(1)
    assert (await session.execute("1 + 1")).status is ExecutionStatus.OK
