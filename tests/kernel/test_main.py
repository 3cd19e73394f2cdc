"""The kernel's serve loop in a jailed session: who reads the socket when. An idle kernel reads
requests on its main thread; while one runs, the drain thread reads, answers ``proc_*`` at once
and queues the rest. These drive the kernel's wire directly (``session.kernel``), as the host
does, to send what the session itself never sends: requests while another one runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessionpool.sandbox.process import KernelProcess
from sessionpool.session import Session

pytestmark = pytest.mark.jail


def kernel_of(session: Session) -> KernelProcess:
    kernel = session.kernel
    assert isinstance(kernel, KernelProcess)
    return kernel


async def replies(kernel: KernelProcess, n: int) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(10):
        for _ in range(n):
            header, _ = await kernel.read(1 << 20, 1 << 20, 1 << 21)
            out.append(dict(header))
    return out


async def test_requests_sent_during_a_cell_are_run_after_it_in_order(session: Session) -> None:
    kernel = kernel_of(session)
    await kernel.send({"op": "execute", "id": 901, "code": "import time; time.sleep(0.3); n = 1"})
    await asyncio.sleep(0.1)  # the cell runs: the drain thread reads what follows
    await kernel.send({"op": "execute", "id": 902, "code": "n += 1; n"})
    await kernel.send({"op": "ping", "id": 903})
    await kernel.send({"op": "execute", "id": 904, "code": "n * 10"})
    got = await replies(kernel, 4)
    assert [r["id"] for r in got] == [901, 902, 903, 904]
    assert got[2]["op"] == "pong"
    assert got[1]["result"]["text/plain"] == "2"
    assert got[3]["result"]["text/plain"] == "20"


async def test_a_process_request_is_answered_while_a_cell_runs(session: Session) -> None:
    kernel = kernel_of(session)
    await kernel.send({"op": "execute", "id": 911, "code": "import time; time.sleep(0.5)"})
    await asyncio.sleep(0.1)
    await kernel.send({"op": "proc_list", "id": 912})
    first = await replies(kernel, 1)
    assert first[0]["id"] == 912 and first[0]["op"] == "proc_list_result"  # not after the cell
    assert (await replies(kernel, 1))[0]["id"] == 911


async def test_requests_back_to_back_while_idle_are_each_answered(session: Session) -> None:
    kernel = kernel_of(session)
    for i in range(20):  # the main thread reads each itself; none is left in a queue
        await kernel.send({"op": "execute", "id": 1000 + i, "code": f"{i} * 2"})
    got = await replies(kernel, 20)
    assert [r["id"] for r in got] == [1000 + i for i in range(20)]
    assert [r["result"]["text/plain"] for r in got] == [str(i * 2) for i in range(20)]
    # and the session's own path still works after the raw traffic
    assert (await session.execute("'still here'")).result is not None


def voluntary_switches(pid: int) -> int:
    """How often the kernel's main thread (its thread id is the process id) has slept."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


async def test_an_idle_kernel_sleeps_once_per_request(session: Session) -> None:
    """Waiting in ``recv`` on the Unix socket, the kernel was woken (and slept again) whenever
    the host read one of its replies: two sleeps per request instead of one."""
    kernel = kernel_of(session)
    n = 50
    await kernel.send({"op": "ping", "id": 1})
    await replies(kernel, 1)
    before = voluntary_switches(kernel.pid)
    for i in range(n):
        await kernel.send({"op": "ping", "id": 2 + i})
        await replies(kernel, 1)
        await asyncio.sleep(0.002)  # the kernel waits for the next request: asleep for sure
    slept = voluntary_switches(kernel.pid) - before
    assert n <= slept < n * 1.4
