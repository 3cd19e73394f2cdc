"""Limits: what a session may consume, and what happens to it (and to others) past the limit.

Runs in the ``tight`` pool (256 MiB memory, 64 pids, 16 MiB workspace, 4 MiB per file, 16 MiB
/tmp, 64 KiB output, 3 s timeout, 1 s interrupt grace) so every limit is hit in well under a
second. Each test fails if the limit it names stops holding.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from sessionpool import errors
from sessionpool.config import MiB
from sessionpool.engine import Engine
from sessionpool.session import Session
from sessionpool.types import ExecutionStatus
from tests.conftest import TIGHT_LIMITS
from tests.sandbox.helpers import run_ok, value

pytestmark = pytest.mark.jail

#: allocates up to 2 GiB in touched 16 MiB blocks: far over the tight pool's 256 MiB, but bounded
#: so that a broken memory limit shows up as a cell that completes, not as a host in trouble
MEMORY_BOMB = "blocks = []\nfor _ in range(128):\n    blocks.append(b'x' * (16 << 20))\nlen(blocks)"


@pytest.fixture
async def tight_peer(engine: Engine) -> AsyncIterator[Session]:
    """A second session of the tight pool, alive at the same time as ``tight_session``."""
    pool = engine.pool("tight")
    ident = f"tight-peer-{secrets.token_hex(4)}"
    s = await pool.acquire(ident)
    yield s
    await pool.delete(ident)


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (or is a zombie nobody will run again)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- memory -------------------------------------------------------------------------------------


async def test_memory_bomb_kills_only_its_session(
    tight_session: Session, tight_peer: Session
) -> None:
    """Past the memory limit the session's interpreter dies (or gets MemoryError); a session
    running at the same time keeps its state and answers; the bombed one comes back fresh."""
    await run_ok(tight_session, "x = 1")
    await run_ok(tight_peer, "y = 2")

    async def peer_answers() -> list[int]:
        answers = []
        for _ in range(5):
            answers.append(await value(tight_peer, "sum(range(1000)) + y"))
            await asyncio.sleep(0.05)
        return answers

    bomb, answers = await asyncio.gather(tight_session.execute(MEMORY_BOMB), peer_answers())
    assert answers == [499502] * 5
    assert bomb.status in (ExecutionStatus.LOST, ExecutionStatus.ERROR), bomb
    if bomb.status is ExecutionStatus.LOST:
        assert bomb.state_lost
        assert bomb.error is not None and "memory" in bomb.error.evalue
        assert await value(tight_session, "'x' in dir()") is False
    else:
        assert bomb.error is not None and bomb.error.ename == "MemoryError"
    assert await value(tight_session, "6 * 7") == 42
    assert await value(tight_peer, "y") == 2


async def test_a_later_death_is_not_blamed_on_an_earlier_oom(tight_session: Session) -> None:
    """After an out-of-memory kill, a later death for another reason is reported as what it is."""
    bomb = await tight_session.execute(MEMORY_BOMB)
    assert bomb.status is ExecutionStatus.LOST and bomb.error is not None
    assert "out of memory" in bomb.error.evalue
    exited = await tight_session.execute("import os\nos._exit(3)")
    assert exited.status is ExecutionStatus.LOST and exited.error is not None
    assert "status 3" in exited.error.evalue
    assert "out of memory" not in exited.error.evalue, exited.error.evalue


# -- processes ----------------------------------------------------------------------------------

FORK_BOMB = """
import os, signal, time
def bomb():
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.005)
for _ in range(4):
    try:
        if os.fork() == 0:
            bomb()
    except OSError:
        break
peak, end = 0, time.monotonic() + 1.0
while time.monotonic() < end:
    peak = max(peak, sum(p.isdigit() for p in os.listdir('/proc')))
    time.sleep(0.01)
os.kill(-1, signal.SIGKILL)  # from pid 1: every other process of this session
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
peak, sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
"""


async def test_fork_bomb_is_contained_by_the_pids_limit(
    tight_session: Session, tight_peer: Session
) -> None:
    """A self-replicating fork bomb stops at the session's pids limit; the session survives with
    its state, and another session can still fork and answer while the bomb runs."""
    await run_ok(tight_session, "x = 41")

    async def peer_forks() -> int:
        await asyncio.sleep(0.3)  # the bomb is at its limit by now
        start = time.monotonic()
        code = "import subprocess\nsubprocess.run(['true']).returncode"
        assert await value(tight_peer, code) == 0
        return int(time.monotonic() - start)

    bomb, peer_seconds = await asyncio.gather(
        value(tight_session, FORK_BOMB, timeout=10), peer_forks()
    )
    peak, after = bomb
    assert 8 <= peak <= TIGHT_LIMITS.pids, peak  # it did multiply, and stopped at the limit
    assert after == [1]
    assert peer_seconds < 2
    assert await value(tight_session, "x + 1") == 42


async def test_orphans_are_reaped(tight_session: Session) -> None:
    """The session's pid 1 reaps orphaned grandchildren, so zombies cannot use up the pids
    limit over time."""
    states = await value(
        tight_session,
        "import os, subprocess, time\n"
        + "for _ in range(3):\n"
        + "    subprocess.run('sleep 0.1 & exit 0', shell=True)\n"
        + "time.sleep(1.0)\n"
        + "[open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]"
        + " for p in os.listdir('/proc') if p.isdigit() and p != '1']",
    )
    assert "Z" not in states, f"zombies left behind: {states}"


# -- time ---------------------------------------------------------------------------------------


async def test_infinite_loop_times_out_and_keeps_state(tight_session: Session) -> None:
    """At the deadline the cell gets KeyboardInterrupt; the interpreter and its state stay."""
    await run_ok(tight_session, "x = 41")
    started = time.monotonic()
    r = await tight_session.execute("while True:\n    pass", timeout=1.0)
    assert time.monotonic() - started < 2.5
    assert r.status is ExecutionStatus.TIMEOUT
    assert not r.state_lost
    assert r.error is not None and r.error.ename == "KeyboardInterrupt"
    assert await value(tight_session, "x + 1") == 42


async def test_loop_ignoring_sigint_is_killed_and_replaced(tight_session: Session) -> None:
    """A cell that ignores SIGINT is killed after the grace period; the process is gone, the
    state is lost (and says so), and the next call gets a fresh interpreter."""
    await run_ok(tight_session, "x = 41")
    assert tight_session.kernel is not None
    old_pid = tight_session.kernel.pid
    started = time.monotonic()
    r = await tight_session.execute(
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        timeout=1.0,
    )
    assert time.monotonic() - started < 4
    assert r.status is ExecutionStatus.TIMEOUT
    assert r.state_lost
    assert r.error is not None and "lost" in r.stderr
    for _ in range(50):
        if _gone(old_pid):
            break
        await asyncio.sleep(0.05)
    assert _gone(old_pid), "the killed interpreter is still running"
    fresh = await value(
        tight_session,
        "import signal\n'x' in dir(), signal.getsignal(signal.SIGINT) is signal.SIG_IGN",
    )
    assert tuple(fresh) == (False, False)
    assert tight_session.kernel is not None and tight_session.kernel.pid != old_pid


# -- output -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        # a new 1 MiB string per line, as real output is (not one object printed 1024 times)
        "block = 'x' * (1 << 20)\nfor i in range(1024):\n    print(f'{i:>8} {block}')",
        "import os\nblock = b'x' * (1 << 20)\nfor _ in range(1024):\n    os.write(1, block)",
    ],
    ids=["print", "fd-write"],
)
async def test_output_flood_is_capped(tight_session: Session, code: str) -> None:
    """1 GiB of output finishes quickly, is truncated to the cap with a note, and costs the
    session neither its memory nor its state."""
    await run_ok(tight_session, "x = 41")
    started = time.monotonic()
    r = await tight_session.execute(code)
    assert r.status is ExecutionStatus.OK, (r.status, r.stderr[-500:])
    assert time.monotonic() - started < 3
    assert r.truncated
    assert len(r.stdout.encode()) <= TIGHT_LIMITS.output_bytes
    assert "output truncated" in r.stderr
    assert await value(tight_session, "x + 1") == 42


# -- disk ---------------------------------------------------------------------------------------


async def test_one_large_file_cannot_exceed_the_workspace(tight_session: Session) -> None:
    """Writing 32 MiB into a 16 MiB /mnt/data fails with ENOSPC or EFBIG, not silently."""
    result = await value(
        tight_session,
        "import errno\n"
        + "try:\n"
        + "    with open('/mnt/data/big', 'wb') as f:\n"
        + "        f.write(b'x' * (32 << 20))\n"
        + "    r = 'ok'\n"
        + "except OSError as exc:\n"
        + "    r = errno.errorcode[exc.errno]\n"
        + "r",
    )
    assert result in ("ENOSPC", "EFBIG")


@pytest.mark.parametrize("directory", ["/mnt/data", "/tmp", "/dev/shm"])
async def test_many_files_cannot_exceed_the_size_of_a_writable_mount(
    tight_session: Session, directory: str
) -> None:
    """Each writable mount is sized: files that are each small enough still run out of space
    together (ENOSPC), and the host sees a filesystem no bigger than the limit."""
    result = await value(
        tight_session,
        "import errno\n"
        + "r = 'ok'\n"
        + "try:\n"
        + "    for i in range(6):\n"
        + f"        with open('{directory}/part%d' % i, 'wb') as f:\n"
        + "            f.write(b'x' * (6 << 20))\n"
        + "except OSError as exc:\n"
        + "    r = errno.errorcode[exc.errno]\n"
        + "r",
    )
    assert result == "ENOSPC"
    if directory == "/mnt/data":
        st = os.statvfs(tight_session.slot.workspace.path)
        assert st.f_blocks * st.f_frsize <= TIGHT_LIMITS.disk_bytes


def _host_names(session: Session) -> list[str]:
    return sorted(os.listdir(session.slot.workspace.path))


async def test_upload_over_the_quota_is_refused_and_leaves_nothing(tight_session: Session) -> None:
    """An upload that does not fit raises QuotaExceeded; no partial or temporary file stays."""
    await run_ok(tight_session, "open('/mnt/data/filler', 'wb').write(b'x' * (13 << 20))")
    before = _host_names(tight_session)
    used = os.statvfs(tight_session.slot.workspace.path)
    with pytest.raises(errors.QuotaExceeded):
        await tight_session.write_file("upload.bin", b"y" * (3 * MiB + MiB // 2))
    assert _host_names(tight_session) == before == ["filler"]
    assert os.statvfs(tight_session.slot.workspace.path).f_bfree == used.f_bfree
    with pytest.raises(errors.FileNotFound):
        await tight_session.read_file("upload.bin")


async def test_streamed_upload_over_the_quota_leaves_nothing(tight_session: Session) -> None:
    """The same for an upload streamed in chunks: the error comes mid-stream, nothing stays."""
    await run_ok(tight_session, "open('/mnt/data/filler', 'wb').write(b'x' * (13 << 20))")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(7):
            yield b"z" * (MiB // 2)

    with pytest.raises(errors.QuotaExceeded):
        await tight_session.write_file("dir/streamed.bin", chunks())
    assert [f.path for f in await tight_session.list_files(recursive=True)] in (
        ["dir", "filler"],
        ["filler"],
    )
    names = os.listdir(tight_session.slot.workspace.path / "dir")
    assert names == [], names


async def test_upload_over_the_file_limit_is_refused(tight_session: Session) -> None:
    """A file over the per-file limit raises FileTooLarge; the limit itself is accepted; an
    existing file of the same name is left as it was."""
    limit = TIGHT_LIMITS.file_bytes
    info = await tight_session.write_file("exact.bin", b"e" * limit)
    assert info.size == limit
    await tight_session.write_file("keep.bin", b"original")
    with pytest.raises(errors.FileOverLimit):
        await tight_session.write_file("keep.bin", b"n" * (limit + 1))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"s" * MiB

    with pytest.raises(errors.FileOverLimit):
        await tight_session.write_file("streamed.bin", chunks())
    assert await tight_session.read_file("keep.bin") == b"original"
    assert _host_names(tight_session) == ["exact.bin", "keep.bin"]


# -- deaths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import os\nos._exit(3)", "status 3"),
        ("import ctypes\nctypes.string_at(0)", "signal 11"),
    ],
    ids=["os-exit", "segfault"],
)
async def test_dead_interpreter_is_lost_and_replaced(
    tight_session: Session, code: str, reason: str
) -> None:
    """An interpreter that exits or crashes gives LOST with the reason; the next call runs in a
    fresh interpreter; the files in /mnt/data are kept."""
    await run_ok(tight_session, "x = 1\nopen('/mnt/data/kept.txt', 'w').write('kept')")
    started = tight_session.kernels_started
    r = await tight_session.execute(code)
    assert r.status is ExecutionStatus.LOST
    assert r.state_lost
    assert r.error is not None and reason in r.error.evalue
    fresh = await value(tight_session, "'x' in dir(), open('/mnt/data/kept.txt').read()")
    assert tuple(fresh) == (False, "kept")
    assert tight_session.kernels_started == started + 1


async def test_threads_left_running_do_not_break_the_next_cell(tight_session: Session) -> None:
    """Threads a cell leaves behind (busy, sleeping, printing) do not stop later cells from
    running and returning their own results."""
    await run_ok(
        tight_session,
        "import threading, time\n"
        + "stop = threading.Event()\n"
        + "ticks = [0]\n"
        + "def printer():\n"
        + "    while not stop.is_set():\n"
        + "        ticks[0] += 1\n"
        + "        print('tick')\n"
        + "        time.sleep(0.001)\n"
        + "def spinner():\n"
        + "    n = 0\n"
        + "    while not stop.is_set():\n"
        + "        n += 1\n"
        + "for target in (printer, spinner, printer):\n"
        + "    threading.Thread(target=target, daemon=True).start()\n"
        + "threading.Thread(target=stop.wait).start()  # non-daemon, blocked",
    )
    first = await value(tight_session, "import time\ntime.sleep(0.2)\nticks[0]")
    for i in range(3):
        assert await value(tight_session, f"{i} * 2", timeout=2) == i * 2
    assert await value(tight_session, "ticks[0]") > first  # the threads really kept running
    await run_ok(tight_session, "stop.set()")
    threads = await value(
        tight_session, "import threading, time\ntime.sleep(0.1)\nthreading.active_count()"
    )
    assert threads <= 3  # the main thread, the kernel's output drain and its request reader


async def test_a_kill_leaves_no_unhandled_error_in_the_server(tight_session: Session) -> None:
    """Killing an interpreter at the deadline is fully handled: no task dies with an exception
    nobody retrieved (which asyncio would log as an error in the server)."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(str(ctx.get("message"))))
    try:
        r = await tight_session.execute(
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
            timeout=0.5,
        )
        assert r.state_lost
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
