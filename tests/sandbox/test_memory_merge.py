"""memory_merge with real jailed sessions: which of a session's mappings KSM may merge.

What the kernel will merge is visible per mapping: ``mg`` in the ``VmFlags`` line of
``/proc/<pid>/smaps``. ``zygote`` must mark exactly what a session inherits from its zygote and
nothing the session maps afterwards (that claim is the whole of its security argument,
docs/security.md); ``all`` marks everything; ``off`` nothing. Whether pages do get merged is a
matter of time and scan rate: ``benchmarks/ksm.py`` measures it, no test here waits for it.

The engine turns the host's ksmd on (machine-wide); the fixture puts the operator's settings
back afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox import ksm
from sessionpool.session import Session
from tests.sandbox.helpers import ATTEMPT, value

pytestmark = pytest.mark.jail

#: a cell that maps new memory two ways (a private anonymous mmap, since a shared one is never
#: merged; a large bytearray, which malloc serves with its own mmap) and touches it; its value
#: is both addresses
NEW_MAPPINGS = """
import ctypes, mmap
_m = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
_m.write(b"s" * (32 << 20))
_b = bytearray(b"t" * (48 << 20))
[ctypes.addressof(ctypes.c_char.from_buffer(_m)), ctypes.addressof(ctypes.c_char.from_buffer(_b))]
"""


#: a cell that tries to make its own memory mergeable both ways: the errno of each, or "ok"
OPT_IN = (
    ATTEMPT
    + """
import ctypes, mmap
_libc = ctypes.CDLL(None, use_errno=True)
def _checked(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), "")
_own = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
_at = ctypes.addressof(ctypes.c_char.from_buffer(_own))
[
    attempt(lambda: _checked(_libc.madvise(ctypes.c_void_p(_at), ctypes.c_size_t(1 << 20), 12))),
    attempt(lambda: _checked(_libc.prctl(67, ctypes.c_ulong(1), 0, 0, 0))),
    attempt(lambda: _own.madvise(mmap.MADV_MERGEABLE)),
]
"""
)


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    name: str
    mergeable: bool

    def holds(self, address: int) -> bool:
        return self.start <= address < self.end


def mappings(pid: int) -> list[Mapping]:
    out: list[Mapping] = []
    head: list[str] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                head = fields
            elif fields and fields[0] == "VmFlags:":
                start, end = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else ""
                out.append(Mapping(start, end, head[1], name, "mg" in fields[1:]))
    return out


def zygote_pid(session: Session) -> int:
    assert session.kernel is not None
    with open(f"/proc/{session.kernel.pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def containing(maps: list[Mapping], address: int) -> Mapping:
    return next(m for m in maps if m.holds(address))


@pytest.fixture(scope="module")
def ksm_restored() -> Iterator[None]:
    """Put the host's KSM settings back as they were (the engine leaves ksmd running)."""
    names = ("pages_to_scan", "sleep_millisecs", "run")
    before = {name: (ksm.KSM_DIR / name).read_text() for name in names}
    yield
    for name in names:
        try:
            (ksm.KSM_DIR / name).write_text(before[name])
        except OSError:  # pages_to_scan while the kernel's advisor runs
            pass


@pytest.fixture(scope="module")
async def merge_engine(
    tmp_path_factory: pytest.TempPathFactory, ksm_restored: None
) -> AsyncIterator[Engine]:
    data_dir = Path(tmp_path_factory.mktemp("merge"))
    pools = [
        PoolConfig(name=mode, preload=(), ready_sessions=0, cooldown_seconds=600, memory_merge=mode)
        for mode in ("off", "zygote", "all")
    ]
    eng = Engine(EngineConfig(backend="jail", data_dir=data_dir), pools)
    await eng.start()
    yield eng
    await eng.close()


async def _session(engine: Engine, pool: str) -> AsyncIterator[Session]:
    ident = f"merge-{pool}-{secrets.token_hex(4)}"
    s = await engine.pool(pool).acquire(ident)
    yield s
    await engine.pool(pool).delete(ident)


@pytest.fixture
async def zygote_session(merge_engine: Engine) -> AsyncIterator[Session]:
    async for s in _session(merge_engine, "zygote"):
        yield s


@pytest.fixture
async def all_session(merge_engine: Engine) -> AsyncIterator[Session]:
    async for s in _session(merge_engine, "all"):
        yield s


@pytest.fixture
async def off_session(merge_engine: Engine) -> AsyncIterator[Session]:
    async for s in _session(merge_engine, "off"):
        yield s


async def test_the_engine_starts_ksm_for_a_merging_pool(merge_engine: Engine) -> None:
    status = ksm.status()
    assert status is not None and status.run == ksm.RUN_RUNNING


async def test_zygote_scope_marks_what_the_session_inherited_and_nothing_it_maps(
    zygote_session: Session,
) -> None:
    assert zygote_session.kernel is not None
    pid = zygote_session.kernel.pid
    inherited = [m for m in mappings(zygote_pid(zygote_session)) if m.mergeable]
    # the zygote's own writable private mappings: the heap, the interpreter's, the libraries'
    assert any(m.name == "[heap]" for m in inherited)
    assert len(inherited) >= 10
    assert all(m.perms[1] == "w" and m.perms[3] == "p" for m in inherited)

    mmapped, malloced = await value(zygote_session, NEW_MAPPINGS)
    session_maps = mappings(pid)
    marked = [m for m in session_maps if m.mergeable]
    # the session's mergeable mappings are the zygote's (or parts of them), and still there
    assert marked
    assert all(any(z.start <= m.start and m.end <= z.end for z in inherited) for m in marked)
    assert any(m.name == "[heap]" for m in marked)
    # what the session mapped after the fork is not mergeable
    for address in (mmapped, malloced):
        new = containing(session_maps, address)
        assert not new.mergeable, new
        assert not any(z.holds(address) for z in inherited)


async def test_all_scope_marks_what_the_session_maps_too(all_session: Session) -> None:
    assert all_session.kernel is not None
    mmapped, malloced = await value(all_session, NEW_MAPPINGS)
    session_maps = mappings(all_session.kernel.pid)
    for address in (mmapped, malloced):
        assert containing(session_maps, address).mergeable
    assert any(m.mergeable and m.name == "[heap]" for m in session_maps)


async def test_off_marks_nothing(off_session: Session) -> None:
    assert off_session.kernel is not None
    await value(off_session, NEW_MAPPINGS)
    assert not [m for m in mappings(off_session.kernel.pid) if m.mergeable]
    assert not [m for m in mappings(zygote_pid(off_session)) if m.mergeable]


async def test_each_scope_has_its_own_zygote(
    off_session: Session, zygote_session: Session, all_session: Session
) -> None:
    """Pools differing only in memory_merge must not share a zygote: the marks are its."""
    parents = {zygote_pid(s) for s in (off_session, zygote_session, all_session)}
    assert len(parents) == 3


async def test_a_session_cannot_make_its_own_memory_mergeable(
    off_session: Session, zygote_session: Session
) -> None:
    """Whatever its pool's choice, session code gets EPERM for MADV_MERGEABLE and
    PR_SET_MEMORY_MERGE: with ksmd running for another pool, a session of an ``off`` pool could
    otherwise make probe pages of its own and learn what other processes' mergeable pages hold."""
    for session in (off_session, zygote_session):
        assert session.kernel is not None
        assert await value(session, OPT_IN) == ["EPERM", "EPERM", "EPERM"]
    assert not [m for m in mappings(off_session.kernel.pid) if m.mergeable]
