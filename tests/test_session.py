"""Session behaviour: queueing, interrupts, replacement after death, files kept across it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest

from sessionpool.engine import Engine
from sessionpool.session import Session
from sessionpool.types import ExecutionStatus

pytestmark = pytest.mark.jail


async def test_executions_queue_one_at_a_time(session: Session) -> None:
    await session.execute("order = []")
    slow = asyncio.create_task(session.execute("import time; time.sleep(0.3); order.append(1)"))
    await asyncio.sleep(0.05)
    fast = await session.execute("order.append(2); order")
    await slow
    assert fast.result is not None and fast.result.data["text/plain"] == "[1, 2]"


async def test_interrupt_stops_a_cell_and_keeps_state(session: Session) -> None:
    await session.execute("kept = 'yes'")
    running = asyncio.create_task(session.execute("import time\nwhile True: time.sleep(0.01)"))
    await asyncio.sleep(0.3)
    await session.interrupt()
    r = await asyncio.wait_for(running, 5)
    assert r.status is ExecutionStatus.ERROR
    assert r.error is not None and r.error.ename == "KeyboardInterrupt"
    after = await session.execute("kept")
    assert after.result is not None and after.result.data["text/plain"] == "'yes'"


async def test_death_between_calls_is_reported_on_the_next_call(session: Session) -> None:
    await session.execute("v = 1")
    await session.write_file("keep.txt", b"still here")
    assert session.kernel is not None
    os.kill(session.kernel.pid, signal.SIGKILL)
    await asyncio.sleep(0.1)
    r = await session.execute("open('keep.txt').read()")
    assert r.state_lost
    assert "previous interpreter" in r.stderr
    assert r.result is not None and r.result.data["text/plain"] == "'still here'"
    gone = await session.execute("v")
    assert gone.status is ExecutionStatus.ERROR and not gone.state_lost


async def test_death_during_a_call_is_reported_and_replaced(session: Session) -> None:
    r = await session.execute("import os; os._exit(3)")
    assert r.status is ExecutionStatus.LOST
    assert r.state_lost
    assert "exited with status 3" in r.stderr
    again = await session.execute("1 + 1")
    assert again.status is ExecutionStatus.OK
    assert session.kernels_started == 2


async def test_timeout_interrupts_and_keeps_state(tight_session: Session) -> None:
    await tight_session.execute("counter = 7")
    r = await tight_session.execute("while True: pass", timeout=0.5)
    assert r.status is ExecutionStatus.TIMEOUT
    assert not r.state_lost
    assert "timed out after 0.5 s" in r.stderr
    after = await tight_session.execute("counter")
    assert after.result is not None and after.result.data["text/plain"] == "7"


async def test_timeout_is_capped_by_the_pool(tight_session: Session) -> None:
    # the tight pool allows 3 s; asking for more does not lift the cap
    r = await tight_session.execute("import time; time.sleep(30)", timeout=100)
    assert r.status is ExecutionStatus.TIMEOUT
    assert "timed out after 3 s" in r.stderr


async def test_an_abandoned_call_never_hands_its_reply_to_the_next(session: Session) -> None:
    await session.execute("kept = 'state'")
    caller = asyncio.create_task(session.execute("import time\ntime.sleep(30)\n'stale'"))
    await asyncio.sleep(0.3)
    caller.cancel()  # the client went away (disconnect, client-side timeout)
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    r = await asyncio.wait_for(session.execute("'fresh', kept"), 10)
    assert r.result is not None and r.result.data["text/plain"] == "('fresh', 'state')"
    assert not r.state_lost  # the abandoned cell was interrupted, not killed


async def test_sessions_past_descriptor_1024_keep_their_state(engine: Engine) -> None:
    """A server with a few hundred sessions holds descriptors above 1023. The liveness check
    once used select(), which cannot watch those: such a session looked dead on every call and
    its interpreter was replaced, losing its variables."""
    fillers = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    session = None
    try:
        pool = engine.pool("default")
        session = await Session.create(pool.config, engine.backend, warm_up=False)
        assert session.kernel is not None and session.kernel.pidfd > 1023
        assert session.kernel.alive()
        await session.execute("x = 41")
        result = await session.execute("x += 1; x")
        assert not result.state_lost, result.stderr
        assert result.result is not None and result.result.data["text/plain"] == "42"
    finally:
        for fd in fillers:
            os.close(fd)
        if session is not None:
            await session.close()
