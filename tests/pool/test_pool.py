"""Pool behaviour with real jailed sessions: allocation, limits, cooldown, zygote faults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.pool import Pool
from sessionpool.sandbox.backend import Slot
from sessionpool.sandbox.runtimes import JAIL_BUILD
from sessionpool.sandbox.zygote import EMBRYO_WARMUP_DELAY_MS
from sessionpool.types import ExecutionStatus

pytestmark = pytest.mark.jail


@pytest.fixture(scope="module")
async def small(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    eng = Engine(
        EngineConfig(data_dir=Path(tmp_path_factory.mktemp("pool"))),
        [
            PoolConfig(name="small", max_sessions=3, ready_sessions=1, cooldown_seconds=600),
            PoolConfig(name="cool", ready_sessions=0, cooldown_seconds=0.5),
            PoolConfig(name="rotate", ready_sessions=0, zygote_max_children=2),
            # a zygote set of its own (the key holds max children): forks made at once
            PoolConfig(name="rotate-burst", ready_sessions=0, zygote_max_children=3),
            PoolConfig(name="burst", ready_sessions=0, cooldown_seconds=600),
            # a zygote of its own (no other pool's refill takes its forked-ahead child)
            PoolConfig(name="prefork", ready_sessions=0, zygote_max_children=50),
        ],
    )
    await eng.start()
    yield eng
    await eng.close()


async def _ready(pool_name: str, eng: Engine, count: int) -> None:
    pool = eng.pool(pool_name)
    for _ in range(200):
        if pool.ready_count >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pool {pool_name} never reached {count} ready sessions")


async def test_same_identifier_same_session(small: Engine) -> None:
    pool = small.pool("small")
    a = await pool.acquire("same")
    await a.execute("v = 'kept'")
    b = await pool.acquire("same")
    assert a is b
    r = await b.execute("v")
    assert r.result is not None and r.result.data["text/plain"] == "'kept'"
    await pool.delete("same")


async def test_concurrent_first_use_allocates_once(small: Engine) -> None:
    pool = small.pool("small")
    sessions = await asyncio.gather(*(pool.acquire("racy") for _ in range(5)))
    assert all(s is sessions[0] for s in sessions)
    await pool.delete("racy")


async def test_ready_queue_is_refilled_after_allocation(small: Engine) -> None:
    await _ready("small", small, 1)
    pool = small.pool("small")
    s = await pool.acquire("refill")
    assert s.kernels_started == 1
    await _ready("small", small, 1)
    await pool.delete("refill")


async def test_max_sessions_refuses_cleanly_and_harms_no_one(small: Engine) -> None:
    pool = small.pool("small")
    held = [await pool.acquire(f"held-{i}") for i in range(3)]
    await held[0].execute("mark = 1")
    with pytest.raises(errors.PoolAtCapacity, match="max_sessions"):
        await pool.acquire("one-too-many")
    r = await held[0].execute("mark + 1")
    assert r.result is not None and r.result.data["text/plain"] == "2"
    for i in range(3):
        await pool.delete(f"held-{i}")
    assert (await pool.acquire("after")).identifier == "after"
    await pool.delete("after")


async def test_delete_is_idempotent_and_destroys_files(small: Engine) -> None:
    pool = small.pool("small")
    s = await pool.acquire("doomed")
    await s.write_file("a.txt", b"x")
    workspace = s.slot.workspace.path
    assert await pool.delete("doomed") is True
    assert await pool.delete("doomed") is False
    assert not workspace.exists()
    fresh = await pool.acquire("doomed")
    assert await fresh.list_files() == []
    await pool.delete("doomed")


@pytest.mark.parametrize("ident", ["", "x" * 257, "bad\x00id", "tab\there"])
async def test_invalid_identifiers_are_refused(small: Engine, ident: str) -> None:
    with pytest.raises(errors.InvalidIdentifier):
        await small.pool("small").acquire(ident)


async def test_unknown_pool(small: Engine) -> None:
    with pytest.raises(errors.PoolNotFound):
        small.pool("nope")


async def test_idle_sessions_cool_down_and_calls_reset_the_timer(small: Engine) -> None:
    pool = small.pool("cool")
    busy = await pool.acquire("kept-alive")
    idle = await pool.acquire("left-alone")
    pid = idle.kernel.pid if idle.kernel else 0
    for _ in range(8):
        await asyncio.sleep(0.2)
        await busy.execute("1")
    assert pool.get("left-alone") is None
    assert pool.get("kept-alive") is busy
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone, or a zombie
    await pool.delete("kept-alive")


async def test_zygote_is_rotated_after_max_children(small: Engine) -> None:
    pool = small.pool("rotate")
    sessions = [await pool.acquire(f"rot-{i}") for i in range(3)]
    zygotes = small.backend.zygote_set(pool.config)
    assert len(zygotes.retired) == 1  # the first zygote forked 2 live sessions, then retired
    # the retired zygote's sessions say so (a ready one of them is handed out first)
    assert [s.kernel is not None and s.kernel.outdated() for s in sessions] == [True, True, False]
    for s in sessions:
        r = await s.execute("6 * 7")
        assert r.result is not None and r.result.data["text/plain"] == "42"
    for i in range(3):
        await pool.delete(f"rot-{i}")


async def test_max_children_holds_for_sessions_allocated_at_once(small: Engine) -> None:
    """Allocations made at once cannot all pass the zygote's check before any has forked:
    no zygote forks more than zygote_max_children live sessions, and every session works."""
    pool = small.pool("rotate-burst")
    names = [f"rb-{i}" for i in range(8)]
    sessions = await asyncio.gather(*(pool.acquire(n) for n in names))
    try:
        zygotes = small.backend.zygote_set(pool.config)
        assert zygotes is not None
        handles = [z for z in [zygotes.current, *zygotes.retired] if z is not None]
        assert sum(z.spawned for z in handles) == len(names)
        assert max(z.spawned for z in handles) <= 3
        # the sessions really are the zygotes' children: the host's view, not the counters
        parents = [int(_ppid(s.kernel.pid)) for s in sessions if s.kernel is not None]
        assert len(parents) == len(names)
        assert max(parents.count(p) for p in set(parents)) <= 3
        for s in sessions:
            r = await s.execute("6 * 7")
            assert r.result is not None and r.result.data["text/plain"] == "42"
    finally:
        for n in names:
            await pool.delete(n)


def _ppid(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[1]


async def test_an_on_demand_session_takes_the_slot_made_ahead(tmp_path: Path) -> None:
    """After an on-demand allocation the pool makes the next one's slot (workspace, cgroups)
    in the background; the next on-demand session gets it, fresh, and closing the pool
    releases a slot nobody took."""
    eng = Engine(EngineConfig(data_dir=tmp_path), [PoolConfig(name="spare", ready_sessions=0)])
    await eng.start()
    try:
        pool = eng.pool("spare")
        first = await pool.acquire("first")
        spare = await _spare(pool)
        assert spare is not first.slot
        second = await pool.acquire("second")
        assert second.slot is spare
        r = await second.execute(
            "import os; open('/mnt/data/f', 'w').write('x'); os.listdir('/mnt/data')"
        )
        assert r.result is not None and r.result.data["text/plain"] == "['f']"
        assert (spare.workspace.path / "f").read_text() == "x"
        left = await _spare(pool)  # made after the second allocation, never taken
        assert os.path.ismount(left.workspace.path)
    finally:
        await eng.close()
    assert not left.workspace.path.exists()


async def _spare(pool: Pool) -> Slot:
    for _ in range(200):
        if pool.spare_slot is not None:
            return pool.spare_slot
        await asyncio.sleep(0.02)
    raise AssertionError("no slot was made ahead")


async def test_killing_the_zygote_spares_sessions_and_is_repaired(small: Engine) -> None:
    pool = small.pool("small")
    s = await pool.acquire("survivor")
    await s.execute("alive = True")
    zygote = small.backend.zygote_set(pool.config)
    assert zygote.current is not None
    os.kill(zygote.current.pid, signal.SIGKILL)
    for _ in range(100):
        if zygote.current is None or zygote.current.dead:
            break
        await asyncio.sleep(0.02)
    r = await s.execute("alive")
    assert r.result is not None and r.result.data["text/plain"] == "True"
    fresh = await pool.acquire("after-zygote-death")  # forks from a new zygote if needed
    assert (await fresh.execute("1 + 1")).status is ExecutionStatus.OK
    await pool.delete("survivor")
    await pool.delete("after-zygote-death")


def _zygote_children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(c) for c in f.read().split())
    return found


async def _embryo(pid: int, live: set[int]) -> int:
    """The zygote's child that serves no session yet (the one forked ahead of demand)."""
    for _ in range(200):
        spare = _zygote_children(pid) - live
        if len(spare) == 1:
            return spare.pop()
        await asyncio.sleep(0.01)
    raise AssertionError(f"zygote {pid} keeps no child forked ahead: {_zygote_children(pid)}")


async def test_a_spawn_takes_the_child_forked_ahead_and_another_is_forked(small: Engine) -> None:
    pool = small.pool("prefork")
    first = await pool.acquire("prefork-1")
    zygote = small.backend.zygote_set(pool.config).current
    assert zygote is not None and first.kernel is not None
    embryo = await _embryo(zygote.pid, set(zygote.live))
    second = await pool.acquire("prefork-2")
    assert second.kernel is not None and second.kernel.pid == embryo
    assert (await second.execute("print(6 * 7)")).stdout == "42\n"
    following = await _embryo(zygote.pid, set(zygote.live))
    assert following not in (first.kernel.pid, embryo)
    await pool.delete("prefork-1")
    await pool.delete("prefork-2")


def _minor_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far (its copy-on-write copies among them)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


async def test_the_child_forked_ahead_runs_its_first_cell_before_its_request(
    small: Engine,
) -> None:
    """It runs the warm-up cell while it waits, so the session's first cell no longer copies
    the pages a first run writes: about 50 minor faults for ``x = 1`` here, against about 350
    when the child does not warm up (measured with the call taken out)."""
    pool = small.pool("prefork")
    await pool.acquire("first-cell-faults-0")  # the pool's zygote runs
    zygote = small.backend.zygote_set(pool.config).current
    assert zygote is not None
    embryo = await _embryo(zygote.pid, set(zygote.live))
    # it warms up once no request came for EMBRYO_WARMUP_DELAY_MS; the cell takes milliseconds
    await asyncio.sleep(EMBRYO_WARMUP_DELAY_MS / 1000 + 0.5)
    s = await pool.acquire("first-cell-faults")
    assert s.kernel is not None and s.kernel.pid == embryo
    before = _minor_faults(embryo)
    assert (await s.execute("x = 1")).status is ExecutionStatus.OK
    assert _minor_faults(embryo) - before < 150
    await pool.delete("first-cell-faults-0")
    await pool.delete("first-cell-faults")


def _mounts(pid: int) -> dict[str, str]:
    """Mount point -> its options, in the mount namespace of process ``pid``."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return {line.split()[4]: line.split()[5] for line in f}


async def test_the_child_forked_ahead_builds_the_jails_skeleton_before_its_request(
    small: Engine,
) -> None:
    """The embryo has its own mount and network namespaces, and has pivoted into the read-only
    root skeleton with the host's tree gone, none of a session's own mounts (/tmp, /dev/shm,
    the workspace) yet; the session it becomes has them."""
    pool = small.pool("prefork")
    await pool.acquire("skeleton-1")
    zygote = small.backend.zygote_set(pool.config).current
    assert zygote is not None
    embryo = await _embryo(zygote.pid, set(zygote.live))
    for _ in range(200):
        mounts = _mounts(embryo)
        if "/sys" not in mounts:  # the host's tree is detached: its last step
            break
        await asyncio.sleep(0.01)
    for ns in ("mnt", "net"):
        assert os.readlink(f"/proc/{embryo}/ns/{ns}") != os.readlink(f"/proc/{zygote.pid}/ns/{ns}")
    assert mounts["/"].split(",")[0] == "ro"
    assert "/usr" in mounts and "/proc" in mounts
    assert not [m for m in mounts if m.startswith((JAIL_BUILD, "/sys", "/root", "/var"))], mounts
    for own in ("/tmp", "/dev/shm", "/mnt/data"):
        assert own not in mounts
    second = await pool.acquire("skeleton-2")
    assert second.kernel is not None and second.kernel.pid == embryo
    tmp_bytes = pool.config.limits.tmp_bytes
    r = await second.execute(
        "import os; s = os.statvfs('/tmp'); open('/mnt/data/f', 'w').write('x'); "
        "s.f_blocks * s.f_frsize, os.path.ismount('/dev/shm'), os.path.ismount('/mnt/data')"
    )
    assert r.result is not None
    assert r.result.data["text/plain"] == f"({tmp_bytes}, True, True)"
    assert (second.slot.workspace.path / "f").read_text() == "x"
    await pool.delete("skeleton-1")
    await pool.delete("skeleton-2")


async def test_a_retired_zygote_exits_though_it_had_a_child_forked_ahead(small: Engine) -> None:
    pool = small.pool("rotate")  # retires after 2 children
    sessions = [await pool.acquire(f"retire-{i}") for i in range(3)]
    zygotes = small.backend.zygote_set(pool.config)
    assert zygotes is not None
    old = zygotes.retired[-1]
    assert old.retired and not old.dead
    for s in sessions:
        assert (await s.execute("1 + 1")).status is ExecutionStatus.OK
    for i in range(3):
        await pool.delete(f"retire-{i}")
    for _ in range(300):  # its sessions are gone: so is its embryo, and then the zygote
        if old.dead:
            break
        await asyncio.sleep(0.01)
    assert old.dead


async def test_a_kernel_is_in_its_cgroups_and_on_v1_moved_itself(small: Engine) -> None:
    pool = small.pool("burst")
    s = await pool.acquire("cgroup-member")
    cgroups = small.backend.cgroups
    assert cgroups is not None and s.kernel is not None and s.slot.cgroup is not None
    assert cgroups.holds(s.slot.cgroup, s.kernel.pid)
    assert not cgroups.holds("s-no-such-group", s.kernel.pid)
    files = cgroups.self_attach_files(s.slot.cgroup)
    if cgroups.version == 1:  # the tasks files it wrote itself, one per controller
        assert len(files) == len(cgroups.bases) and all(f.endswith("/tasks") for f in files)
    else:
        assert files == []
    await pool.delete("cgroup-member")


def test_jail_backend_fails_closed_without_privileges(tmp_path: Path) -> None:
    """Without root the host cannot build the jail: start must refuse, loudly.

    The engine runs in a fresh user namespace with no uid mapping, where it is not root.
    """
    data = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from sessionpool import errors
        from sessionpool.config import EngineConfig, PoolConfig
        from sessionpool.engine import Engine
        async def main():
            eng = Engine(EngineConfig(data_dir=Path({str(data)!r})), [PoolConfig(ready_sessions=1)])
            try:
                await eng.start()
            except errors.SandboxUnavailable as exc:
                print("REFUSED:", exc)
                return
            print("STARTED")
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        ["unshare", "--user", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "REFUSED:" in out.stdout, out.stdout + out.stderr
    assert "running as root" in out.stdout
    assert "unsafe" in out.stdout  # the message names the explicit way out


async def test_a_burst_of_on_demand_sessions_all_succeed(small: Engine) -> None:
    """More forks at once than the zygote's control queue holds (10): none may fail."""
    pool = small.pool("burst")  # no ready sessions: every allocation forks on demand
    idents = [f"burst-{i}" for i in range(120)]
    sessions = await asyncio.gather(*(pool.acquire(i) for i in idents))
    results = await asyncio.gather(*(s.execute("print(1)") for s in sessions))
    assert [r.stdout for r in results] == ["1\n"] * len(idents)
    await asyncio.gather(*(pool.delete(i) for i in idents))


async def test_requests_queued_for_a_retiring_zygote_go_to_its_successor(small: Engine) -> None:
    """Fork requests still waiting their turn when their zygote retires must not be lost (each
    used to wait out its 30 s timeout): they go to the successor at once."""
    pool = small.pool("rotate")
    await pool.acquire("rot-first")  # the zygote exists
    zygotes = small.backend.zygote_set(pool.config)
    old = zygotes.current
    assert old is not None
    slots = [await small.backend.create_slot(pool.config) for _ in range(8)]
    spawns = [asyncio.create_task(small.backend.spawn(pool.config, s)) for s in slots]
    for _ in range(5):
        await asyncio.sleep(0)  # the first requests are sent, the rest wait their turn
    old.retire()
    kernels = await asyncio.wait_for(asyncio.gather(*spawns), 20)
    assert len({k.pid for k in kernels}) == 8
    for kernel, slot in zip(kernels, slots, strict=True):
        kernel.close()
        await kernel.wait_exit(2)
        small.backend.release_slot(slot)
    await pool.delete("rot-first")


GiB = 1 << 30


async def test_admission_counts_sessions_still_being_forked(small: Engine) -> None:
    """Concurrent allocations all pass a check of MemAvailable made before any of them is
    forked; each one in flight must count against the reserve, or a burst overshoots it.
    The estimate per session is 1 GiB here so the margins dwarf the machine's own drift."""
    from sessionpool.pool import Pool
    from sessionpool.pool.pool import mem_available

    available = mem_available()
    assert available is not None
    # 3.5 GiB over the reserve: four are admitted (the fourth sees three in flight, 0.5 GiB
    # left), the fifth and sixth would leave less than the reserve
    pool = Pool(
        PoolConfig(name="admit", ready_sessions=0, max_sessions=20),
        small.backend,
        memory_reserve=available - int(3.5 * GiB),
        creating_estimate=GiB,
    )
    await pool.start()
    try:
        results = await asyncio.gather(
            *(pool.acquire(f"admit-{i}") for i in range(6)), return_exceptions=True
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, errors.PoolAtCapacity)]
        assert len(admitted) == 4 and len(refused) == 2, results
        assert "being created" in refused[0].message and "reserve" in refused[0].message
        # once they exist, MemAvailable shows them: a new one is admitted against the real figure
        later = await pool.acquire("admit-later")
        assert later.kernel is not None and later.kernel.alive()
    finally:
        await pool.close()


async def test_admission_refuses_cleanly_when_memory_is_short(small: Engine) -> None:
    from sessionpool.pool import Pool
    from sessionpool.pool.pool import mem_available

    available = mem_available()
    assert available is not None
    pool = Pool(
        PoolConfig(name="short", ready_sessions=0, max_sessions=20),
        small.backend,
        memory_reserve=available + GiB,
    )
    await pool.start()
    try:
        with pytest.raises(errors.PoolAtCapacity, match="of memory is available"):
            await pool.acquire("short-1")
        assert pool.sessions() == []
    finally:
        await pool.close()
