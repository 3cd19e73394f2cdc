"""Uploads charged to the sessions' memory bound: a real helper process in a real cgroup, a
real tmpfs workspace. The charge must land in the helper's group, never leave a preallocated
tail, fall back to what fits near a full workspace, and survive the helper's death."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.sandbox.cgroups import UPLOADS, Cgroups
from sessionpool.sandbox.charge import Charger
from sessionpool.sandbox.workspace import Workspace

pytestmark = pytest.mark.jail

MiB = 1 << 20


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    cg = Cgroups.detect(f"sessionpool-chargetest{os.getpid()}-{secrets.token_hex(3)}")
    yield cg
    cg.remove_base()


@pytest.fixture
async def charger(cgroups: Cgroups) -> AsyncIterator[Charger]:
    c = Charger(cgroups.join_uploads)
    await c.start()
    yield c
    c.close()


@pytest.fixture
def workspace(tmp_path: Path, charger: Charger) -> Iterator[Workspace]:
    ws = Workspace.create(tmp_path / "ws", None, 16 * MiB, 128 * MiB, True)
    ws.charge = charger.allocate
    yield ws
    ws.destroy()


def charged(cgroups: Cgroups) -> int:
    if cgroups.version == 1:
        return int((cgroups.bases["memory"] / UPLOADS / "memory.usage_in_bytes").read_text())
    return int((cgroups.bases[""] / UPLOADS / "memory.current").read_text())


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_an_upload_is_charged_to_the_helpers_group(
    workspace: Workspace, cgroups: Cgroups
) -> None:
    before = charged(cgroups)
    data = os.urandom(6 * MiB + 123)
    info = await workspace.write("a.bin", chunks(data))
    assert info.size == len(data)
    assert workspace.read("a.bin") == data  # the step allocated ahead was cut off again
    # the group's usage may be off by the kernel's per-cpu charge batches (64 pages per cpu)
    assert 5 * MiB < charged(cgroups) - before < 7 * MiB
    workspace.delete("a.bin")
    assert charged(cgroups) - before < MiB


async def test_near_a_full_workspace_only_what_is_needed_is_allocated(
    workspace: Workspace,
) -> None:
    await workspace.write("filler", b"f" * (10 * MiB))
    data = os.urandom(5 * MiB)  # fits; the step ahead of it would not
    await workspace.write("fits.bin", chunks(data))
    assert workspace.read("fits.bin") == data
    with pytest.raises(errors.QuotaExceeded):
        await workspace.write("over.bin", chunks(os.urandom(2 * MiB)))
    assert [f.path for f in workspace.list()] == ["filler", "fits.bin"]


async def test_a_dead_helper_is_started_again(
    workspace: Workspace, charger: Charger, cgroups: Cgroups
) -> None:
    assert charger.proc is not None
    os.kill(charger.proc.pid, signal.SIGKILL)
    charger.proc.wait(5)
    await workspace.write("small.bin", b"s")  # finds the helper gone, starts a new one
    assert charger.proc is not None and charger.proc.poll() is None
    data = os.urandom(4 * MiB)
    before = charged(cgroups)
    await workspace.write("b.bin", chunks(data))
    assert workspace.read("b.bin") == data
    assert charged(cgroups) - before > 3 * MiB
