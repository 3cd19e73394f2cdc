"""Session.execute(on_output=...): output reaches the host while the cell still runs."""

from __future__ import annotations

import time

import pytest

from sessionpool.session import Session
from sessionpool.types import ExecutionStatus

pytestmark = pytest.mark.jail


async def test_chunks_arrive_before_the_cell_ends(session: Session) -> None:
    seen: list[tuple[float, str, str]] = []
    code = (
        "import sys, time, os\n"
        "print('first', flush=True)\n"
        "time.sleep(1.0)\n"
        "os.system('echo from-a-subprocess')\n"
        "print('oops', file=sys.stderr)\n"
        "print('last')\n"
        "42"
    )
    start = time.monotonic()
    res = await session.execute(
        code, on_output=lambda name, text: seen.append((time.monotonic(), name, text))
    )
    end = time.monotonic()
    assert res.status is ExecutionStatus.OK
    assert res.stdout == "first\nfrom-a-subprocess\nlast\n"
    # everything the result carries was streamed, in order per stream
    assert "".join(t for _, n, t in seen if n == "stdout") == res.stdout
    assert "".join(t for _, n, t in seen if n == "stderr") == res.stderr == "oops\n"
    first_at = next(at for at, _, text in seen if "first" in text)
    assert first_at - start < end - start - 0.5, "the first line came only at the end"


async def test_a_plain_execute_streams_nothing_and_later_calls_are_clean(session: Session) -> None:
    seen: list[str] = []
    await session.execute("print('a')", on_output=lambda n, t: seen.append(t))
    res = await session.execute("print('b')\n1")
    assert (res.stdout, seen) == ("b\n", ["a\n"])


async def test_streamed_output_is_bounded_by_the_output_limit(tight_session: Session) -> None:
    seen: list[str] = []
    res = await tight_session.execute(
        "for i in range(20000): print('x' * 99)", on_output=lambda n, t: seen.append(t)
    )
    limit = tight_session.pool_config.limits.output_bytes
    streamed = "".join(seen)
    assert len(streamed) <= limit
    assert streamed == res.stdout
    assert res.truncated


async def test_interrupted_cell_streams_what_it_wrote(tight_session: Session) -> None:
    seen: list[str] = []
    res = await tight_session.execute(
        "import time\nprint('started', flush=True)\ntime.sleep(60)",
        timeout=1,
        on_output=lambda n, t: seen.append(t),
    )
    assert res.status is ExecutionStatus.TIMEOUT
    assert "started\n" in "".join(seen)
