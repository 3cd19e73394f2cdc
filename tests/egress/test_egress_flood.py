"""One session's flood of connections meets its own limits, and does not slow another session's
allowed traffic through the same proxy."""

from __future__ import annotations

import asyncio
import time

import pytest

from sessionpool.session import Session
from tests.egress.helpers import FLOOD_CONNECTIONS, decisions, run
from tests.egress.netlab import Internet

pytestmark = pytest.mark.jail

ALLOWED = Internet.ALLOWED

#: how many allowed HTTPS requests the quiet session times, one after another
QUIET_REQUESTS = 10

FLOOD = f"""
import threading, time
answers = []
def one():
    answers.append(fetch("http://{ALLOWED}/slow?s=0.3", timeout=20))
threads = []
end = time.monotonic() + 3.0
while time.monotonic() < end:
    t = threading.Thread(target=one)
    t.start()
    threads.append(t)
    time.sleep(0.01)
for t in threads:
    t.join()
statuses = [a["status"] for a in answers]
limited = [a["body"] for a in answers if a["status"] == 429]
{{"sent": len(answers), "ok": statuses.count(200), "limited": len(limited),
  "other": sorted({{str(s) for s in statuses if s not in (200, 429)}}),
  "bodies": sorted(set(limited))[:3]}}
"""

QUIET = f"""
import time
times = []
for _ in range({QUIET_REQUESTS}):
    t0 = time.perf_counter()
    r = fetch("https://{ALLOWED}/echo")
    assert r["status"] == 200, r
    times.append(time.perf_counter() - t0)
times
"""


async def test_a_flood_meets_its_own_limits_and_not_anothers(
    flood_session: Session, net_session: Session
) -> None:
    baseline = await run(net_session, QUIET)
    started = time.monotonic()
    flood = asyncio.create_task(run(flood_session, FLOOD))
    await asyncio.sleep(0.5)  # the flood is under way
    during = await run(net_session, QUIET)
    quiet_done = time.monotonic() - started
    flooded = await flood

    # the flood ran all along the quiet session's requests, and was limited
    assert quiet_done < 3.0 + 1.0, quiet_done
    assert flooded["sent"] > 100, flooded
    assert flooded["limited"] > flooded["ok"] > 0, flooded
    assert flooded["other"] == [], flooded
    assert all("too many" in body for body in flooded["bodies"]), flooded
    limited = [d for d in decisions(flood_session) if d["verdict"] == "limited"]
    assert limited and all("too many" in d["reason"] for d in limited), limited
    # at most the pool's limit of slow requests were open at once: 0.3 s each over ~3 s
    assert flooded["ok"] <= FLOOD_CONNECTIONS * (3.5 / 0.3) + FLOOD_CONNECTIONS, flooded

    # the quiet session was not limited, and not slowed beyond noise on a 2-core machine:
    # its requests still take milliseconds, not the flood's queue
    assert not [d for d in decisions(net_session) if d["verdict"] == "limited"]
    slow_base, slow_during = max(baseline), max(during)
    assert sum(during) < 5 * sum(baseline) + 1.0, (baseline, during)
    assert slow_during < slow_base + 1.0, (baseline, during)
