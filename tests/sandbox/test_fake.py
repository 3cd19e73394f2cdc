"""The in-process fake backend answers the kernel protocol the way a jailed kernel does."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from sessionpool import protocol
from sessionpool.config import PoolConfig
from sessionpool.protocol import Message
from sessionpool.sandbox.backend import KernelDied
from sessionpool.sandbox.fake import KILLED, FakeBackend, FakeKernel, Reply


@pytest.fixture
async def kernel(tmp_path: Path) -> FakeKernel:
    backend = FakeBackend(tmp_path)
    await backend.start()
    pool = PoolConfig()
    return await backend.spawn(pool, await backend.create_slot(pool))


async def call(kernel: FakeKernel, request: Message) -> Reply:
    await kernel.send({"id": 1, **request})
    return await kernel.read(1 << 20, 1 << 20, 4 << 20)


async def test_state_output_value_and_errors(kernel: FakeKernel) -> None:
    header, _ = await call(kernel, {"op": "execute", "code": "x = 6\nprint('x is', x)\nx * 7"})
    assert header["op"] == "result" and header["id"] == 1
    assert header["stdout"] == "x is 6\n"
    assert header["result"] == {"text/plain": "42"}
    header, _ = await call(kernel, {"op": "execute", "code": "x / 0"})
    assert header["status"] == "error"
    assert header["error"]["ename"] == "ZeroDivisionError"
    # the traceback is the cell's, not the fake's own frames
    assert 'File "<cell>", line 1' in header["error"]["traceback"]
    assert "fake.py" not in header["error"]["traceback"]


async def test_files_under_mnt_data_land_in_the_workspace(kernel: FakeKernel) -> None:
    code = (
        "with open('/mnt/data/a.txt', 'w') as f: f.write('abs')\n"
        "with open('b.txt', 'w') as f: f.write('rel')"
    )
    await call(kernel, {"op": "execute", "code": code})
    assert (kernel.workspace / "a.txt").read_text() == "abs"
    assert (kernel.workspace / "b.txt").read_text() == "rel"


async def test_streamed_chunks_come_before_the_result(kernel: FakeKernel) -> None:
    await kernel.send({"op": "execute", "id": 5, "code": "print(1)\nprint(2)", "stream": True})
    seen = []
    while True:
        header, _ = await kernel.read(1 << 20, 0, 1 << 20)
        seen.append(header["op"])
        if header["op"] == "result":
            break
        assert header == {"op": "chunk", "id": 5, "name": "stdout", "text": header["text"]}
    assert seen == ["chunk", "chunk", "result"]


async def test_output_past_the_limit_is_dropped_and_said(kernel: FakeKernel) -> None:
    header, _ = await call(
        kernel, {"op": "execute", "code": "print('x' * 1000)", "output_limit": 100}
    )
    assert header["truncated"] is True
    assert len(header["stdout"]) == 100
    assert "dropped" in header["stderr"]


async def test_sigint_interrupts_the_cell_and_keeps_state(kernel: FakeKernel) -> None:
    await call(kernel, {"op": "execute", "code": "kept = 1"})
    await kernel.send({"op": "execute", "id": 2, "code": "while True: pass"})
    await asyncio.sleep(0.05)
    kernel.signal(signal.SIGINT)
    header, _ = await asyncio.wait_for(kernel.read(1 << 20, 0, 1 << 20), 5)
    assert header["error"]["ename"] == "KeyboardInterrupt" and header["interrupted"]
    header, _ = await call(kernel, {"op": "execute", "code": "kept"})
    assert header["result"] == {"text/plain": "1"}


async def test_sigkill_closes_the_channel(kernel: FakeKernel) -> None:
    await kernel.send({"op": "execute", "id": 3, "code": "while True: pass"})
    await asyncio.sleep(0.05)
    kernel.signal(signal.SIGKILL)
    with pytest.raises(KernelDied):
        await asyncio.wait_for(kernel.read(1 << 20, 0, 1 << 20), 5)
    assert not kernel.alive()
    assert await kernel.wait_exit(1) == KILLED
    with pytest.raises(KernelDied):
        await kernel.send({"op": "ping", "id": 4})


async def test_oversized_replies_are_frame_errors(kernel: FakeKernel) -> None:
    await kernel.send({"op": "execute", "id": 1, "code": "print('y' * 5000)"})
    with pytest.raises(protocol.FrameError):
        await kernel.read(1000, 0, 1000)


async def test_shell_runs_in_the_workspace_with_exit_codes(kernel: FakeKernel) -> None:
    header, _ = await call(kernel, {"op": "shell", "command": "echo hi > f.txt; cat f.txt; exit 3"})
    assert header["op"] == "shell_result"
    assert (header["exit_code"], header["stdout"]) == (3, "hi\n")
    assert (kernel.workspace / "f.txt").read_text() == "hi\n"


async def test_unknown_ops_are_bad_requests(kernel: FakeKernel) -> None:
    header, _ = await call(kernel, {"op": "dance"})
    assert header["op"] == "bad-request"


async def test_a_scripted_handler_replaces_the_interpreter(tmp_path: Path) -> None:
    async def answer(kernel: FakeKernel, request: Message) -> Reply:
        return {"op": "pong", "seen": request["op"]}, []

    backend = FakeBackend(tmp_path, answer)
    await backend.start()
    pool = PoolConfig()
    kernel = await backend.spawn(pool, await backend.create_slot(pool))
    assert await call(kernel, {"op": "anything"}) == (
        {"op": "pong", "seen": "anything", "id": 1},
        [],
    )
    assert backend.kernels == [kernel] and kernel.requests[0]["op"] == "anything"
