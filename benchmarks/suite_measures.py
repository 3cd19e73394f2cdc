"""What the suite measures, the same way on every system that has it.

Time to interactive in its modes (``tti_modes``, ``bare_print``, ``sp_breakdown``), warm cells,
throughput against concurrency; for sessionpool alone files and the scaling ramp up to admission
control; ipykernel's memory. The sample sizes (``FULL``, ``QUICK``) and the results they fill
(``Results``: rows, curves, extra facts).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from benchmarks._common import MB, SESSION_API_VERSION, ms_since, nearest_rank
from benchmarks.engine import meminfo, parent_pid, uss_pss
from benchmarks.http_api import check_execute, descendants, execute_body
from benchmarks.suite_drivers import (
    DESCRIBE_CELL,
    JSON,
    PNG_CELL,
    TTI_CELL,
    X_CELL,
    Driver,
    IpykernelDriver,
    SessionpoolDriver,
    log,
    past_stale_connection,
)
from sessionpool.sandbox.ksm import PAGE_SIZE, RUN_RUNNING, KsmStatus
from sessionpool.sandbox.ksm import status as ksm_status
from sessionpool.server.testing import ServerProcess

STAGGER_S = 0.2
#: a new session that has no answer by then counts as failed (and the suite goes on)
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Sizes:
    seq: int  # sessionpool TTI, sequential
    stagger: int
    bursts: tuple[int, ...]
    steady: int  # x += 1 samples
    cells: int  # describe / PNG samples
    files: int  # 10 MB upload + download
    concurrency: tuple[int, ...]
    window_s: float
    peer_seq: int  # peers' TTI samples per mode (a kernel costs ~1 CPU-second)
    peer_burst: int
    peer_steady: int
    peer_cells: int
    peer_concurrency: tuple[int, ...]
    peer_memory: int  # ipykernel kernels for the memory figure
    steps: tuple[int, ...]  # live idle sessions of the scaling ramp (then +step_after)
    step_after: int
    scale_cap: int | None  # max_sessions of the scale pool (None: memory admission refuses)
    ramp_budget_s: float
    probe_allocs: int
    probe_x: int
    wrk_s: float  # seconds of wrk load
    merge_settle_s: float  # longest wait for page merging after the ramp
    merge_each_step: bool = False  # wait for page merging before each step's figures


FULL = Sizes(
    seq=100,
    stagger=50,
    bursts=(100, 500),
    steady=1000,
    cells=50,
    files=10,
    concurrency=(1, 10, 50, 200),
    window_s=3.0,
    peer_seq=8,
    peer_burst=8,
    peer_steady=300,
    peer_cells=15,
    peer_concurrency=(1, 10),
    peer_memory=8,
    steps=(0, 100, 250, 500, 750, 1000),
    step_after=250,
    scale_cap=None,
    ramp_budget_s=300.0,
    probe_allocs=20,
    probe_x=300,
    wrk_s=10.0,
    merge_settle_s=180.0,
)
QUICK = Sizes(
    seq=20,
    stagger=10,
    bursts=(500,),
    steady=200,
    cells=10,
    files=3,
    concurrency=(1, 10, 50),
    window_s=1.0,
    peer_seq=2,
    peer_burst=3,
    peer_steady=50,
    peer_cells=3,
    peer_concurrency=(1, 4),
    peer_memory=8,
    steps=(0, 50, 100),
    step_after=0,
    scale_cap=110,
    ramp_budget_s=40.0,
    probe_allocs=10,
    probe_x=100,
    wrk_s=5.0,
    merge_settle_s=150.0,
)
#: ``--ramp``: the scaling ramp alone, to where admission refuses (the 5,000 target measured,
#: not projected). Steps of 250 with page merging waited for after each: a step's sessions
#: are unmerged (about 13 MB each) until ksmd reaches them, and admission reads the memory
#: the machine has now, so a larger step would be refused for memory merging is about to
#: give back.
RAMP = replace(
    FULL,
    steps=tuple(range(0, 5001, 250)),
    step_after=250,
    ramp_budget_s=3600.0,
    probe_allocs=5,
    probe_x=100,
    merge_settle_s=240.0,
    merge_each_step=True,
)

# -- results ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a distribution (ms) with its success rate, or a single value."""

    metric: str
    system: str
    mode: str
    samples: list[float] = field(default_factory=list, repr=False)
    attempts: int = 0
    value: float | None = None
    unit: str = "ms"
    note: str = ""

    def summary(self) -> dict[str, Any]:
        values = sorted(self.samples)
        out: dict[str, Any] = {
            "metric": self.metric,
            "system": self.system,
            "mode": self.mode,
            "unit": self.unit,
            "note": self.note,
        }
        if self.value is not None:
            return {**out, "value": self.value, "n": self.attempts}
        return {
            **out,
            "n": self.attempts,
            "succeeded": len(values),
            "success_rate": len(values) / self.attempts if self.attempts else math.nan,
            "p50": nearest_rank(values, 50),
            "p95": nearest_rank(values, 95),
            "p99": nearest_rank(values, 99),
        }

    def pct(self, p: float) -> float:
        return float(nearest_rank(sorted(self.samples), p))


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.curves: dict[str, list[dict[str, Any]]] = {}
        self.extra: dict[str, Any] = {}

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        s = row.summary()
        if row.value is not None:
            log(f"  {row.system} {row.metric} [{row.mode}]: {row.value:,.1f} {row.unit}")
        else:
            log(
                f"  {row.system} {row.metric} [{row.mode}]: {s['succeeded']}/{s['n']} ok, "
                f"p50 {s['p50']:.2f} p95 {s['p95']:.2f} p99 {s['p99']:.2f} {row.unit}"
            )
        return row

    def get(self, metric: str, system: str, mode: str = "sequential") -> Row | None:
        for r in self.rows:
            if (r.metric, r.system, r.mode) == (metric, system, mode):
                return r
        return None


# -- measurements shared by every system -----------------------------------------------------------


#: how long the teardown of sessions closed just before takes to finish (it runs after their
#: close has answered)
TEARDOWN_S = 1.0


async def quiet(driver: Driver) -> None:
    """Before a measured window: the pool's refill of the sessions just taken and the teardown
    of those earlier phases closed run now, not in the window."""
    await driver.settle()
    await asyncio.sleep(TEARDOWN_S)


async def tti_sample(driver: Driver, keep: list[Any], cell: str = TTI_CELL) -> float:
    t0 = time.perf_counter()
    session = await driver.open()
    keep.append(session)
    out = await driver.run(session, cell)
    elapsed = ms_since(t0)
    if out.stdout != "1\n":
        raise RuntimeError(f"{driver.name}: print(1) printed {out.stdout!r}")
    return elapsed


async def tti_modes(
    res: Results,
    driver: Driver,
    seq: int,
    stagger: int,
    bursts: tuple[int, ...],
    suffix: str = "",
) -> None:
    errors: Counter[str] = Counter()

    async def guarded(keep: list[Any]) -> float | None:
        try:
            return await asyncio.wait_for(tti_sample(driver, keep), REQUEST_TIMEOUT_S)
        except Exception as exc:  # a failed session counts against the success rate
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            return None

    async def close_all(keep: list[Any]) -> None:
        await asyncio.gather(*(driver.close(s) for s in keep), return_exceptions=True)

    keep: list[Any] = []
    if seq:
        log(f"{driver.name}: time to interactive, sequential x{seq}")
        samples: list[float] = []
        await driver.prepare(1)
        for _ in range(seq + 1):  # the first is a warm-up
            await driver.settle()
            got = await guarded(keep)
            await close_all(keep)
            keep.clear()
            if got is not None:
                samples.append(got)
        res.add(Row("time to interactive", driver.name, "sequential", samples[1:], seq))

    async def later(i: int) -> float | None:
        await asyncio.sleep(i * STAGGER_S)
        await driver.prepare(1)  # untimed: this agent's connection is fresh
        return await guarded(keep)

    if stagger:
        log(f"{driver.name}: time to interactive, staggered x{stagger} every {STAGGER_S:g} s")
        await driver.prepare(stagger)
        await driver.settle()
        got_all = await asyncio.gather(*(later(i) for i in range(stagger)))
        await close_all(keep)
        keep.clear()
        res.add(
            Row(
                "time to interactive",
                driver.name,
                f"staggered {STAGGER_S * 1000:.0f} ms",
                [g for g in got_all if g is not None],
                stagger,
            )
        )
    for n in bursts:
        log(f"{driver.name}: time to interactive, burst of {n}")
        await driver.prepare(n)
        await driver.settle()
        await asyncio.sleep(0.5)
        keep = []
        got_all = await asyncio.gather(*(guarded(keep) for _ in range(n)))
        await close_all(keep)
        res.add(
            Row(
                "time to interactive",
                driver.name,
                f"burst {n}{suffix}",
                [g for g in got_all if g is not None],
                n,
            )
        )
    if errors:
        res.extra.setdefault("tti_errors", {})[driver.name] = dict(errors)
        log(f"  errors: {dict(errors)}")


async def new_session_prints(
    driver: Driver, n: int, before: Callable[[], Awaitable[None]]
) -> list[float]:
    """n new sessions one at a time (after an untimed warm-up one), each -> print(1), each
    closed after; ``before`` runs untimed ahead of each."""
    samples: list[float] = []
    await driver.prepare(1)
    for i in range(n + 1):
        await before()
        keep: list[Any] = []
        try:
            elapsed = await tti_sample(driver, keep, "print(1)")
        finally:
            await asyncio.gather(*(driver.close(s) for s in keep), return_exceptions=True)
        if i:
            samples.append(elapsed)
    return samples


async def bare_print(res: Results, driver: Driver, n: int) -> None:
    """Breakdown: new session -> print(1) without importing numpy/pandas (what the import adds
    to time to interactive)."""
    log(f"{driver.name}: new session -> print(1) without imports x{n}")
    samples = await new_session_prints(driver, n, driver.settle)
    res.add(
        Row(
            "new session -> print(1), no imports (breakdown)", driver.name, "sequential", samples, n
        )
    )


async def sp_breakdown(res: Results, sp: SessionpoolDriver, n: int) -> None:
    """Where a sessionpool request's time goes: the HTTP floor (GET /healthz, no session),
    the same after 200 ms idle (waking an idle vCPU), and a new session split into allocation
    (GET files on a new identifier: allocates, runs nothing) and its first cell."""
    log(f"sessionpool: breakdown x{n}")
    await sp.prepare(1)
    client = sp.idle[-1]
    url = sp.server.url + "/healthz"
    floor: list[float] = []
    for i in range(n * 4 + 10):
        t0 = time.perf_counter()
        await sp.get(client, url)
        if i >= 10:
            floor.append(ms_since(t0))
    res.add(
        Row("HTTP floor: GET /healthz (breakdown)", "sessionpool", "back to back", floor, n * 4)
    )
    idle: list[float] = []
    for _ in range(n):
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        await sp.get(client, url)
        idle.append(ms_since(t0))
    res.add(
        Row("HTTP floor: GET /healthz (breakdown)", "sessionpool", "after 200 ms idle", idle, n)
    )
    alloc: list[float] = []
    first: list[float] = []
    for i in range(n + 1):
        await sp.settle()
        session = await sp.open()
        _, ident = session
        t0 = time.perf_counter()
        await sp.get(client, sp.url(ident, "files"))
        t_alloc = ms_since(t0)
        await sp.settle()
        t0 = time.perf_counter()
        await sp.run(session, TTI_CELL)
        t_first = ms_since(t0)
        await sp.close(session)
        if i:
            alloc.append(t_alloc)
            first.append(t_first)
    res.add(
        Row(
            "allocation only: GET files, new identifier (breakdown)",
            "sessionpool",
            "sequential",
            alloc,
            n,
        )
    )
    res.add(
        Row(
            "first TTI cell of an allocated session (breakdown)",
            "sessionpool",
            "sequential",
            first,
            n,
        )
    )


async def warm_cells(res: Results, driver: Driver, steady: int, cells: int) -> None:
    log(f"{driver.name}: warm cells (x += 1 x{steady}, describe/PNG x{cells})")
    await driver.prepare(1)
    await quiet(driver)
    session = await driver.open()
    try:
        await driver.run(session, "x = 0")
        await driver.run(session, DESCRIBE_CELL)
        for metric, code, n in (
            ("warm x += 1", X_CELL, steady),
            ("pandas df.describe() cell", DESCRIBE_CELL, cells),
            ("matplotlib PNG cell", PNG_CELL, cells),
        ):
            samples: list[float] = []
            warmup = max(2, n // 20)
            for i in range(warmup + n):
                t0 = time.perf_counter()
                out = await driver.run(session, code)
                elapsed = ms_since(t0)
                if code == PNG_CELL and out.pngs < 1:
                    raise RuntimeError(f"{driver.name}: the plot cell returned no PNG")
                if i >= warmup:
                    samples.append(elapsed)
            res.add(Row(metric, driver.name, "sequential", samples, n))
    finally:
        await driver.close(session)


#: the breakdown row of x += 1 through each protocol's blocking client
BLOCKING_X = "warm x += 1, blocking client (breakdown)"


def _blocking_x_http(sp: SessionpoolDriver, n: int) -> list[float]:
    """x += 1 with ``http.client`` on one keep-alive connection (in a thread: it blocks)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(sp.server.url)
    if url.scheme != "http" or url.hostname is None:
        raise RuntimeError(f"the blocking client speaks plain HTTP, not {sp.server.url}")
    conn = http.client.HTTPConnection(url.hostname, url.port)
    target = sp.url(f"{sp.pool}-blocking-{uuid.uuid4().hex[:8]}").removeprefix(sp.server.url)

    def run(code: str) -> None:
        body = json.dumps(execute_body(code)).encode()
        conn.request("POST", target, body=body, headers=sp.headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200 or json.loads(answer)["properties"]["status"] != "Success":
            raise RuntimeError(f"blocking x += 1: {response.status} {answer[:300]!r}")

    try:
        run("x = 0")
        return _timed(lambda: run(X_CELL), n)
    finally:
        conn.close()


def _blocking_x_ipykernel(n: int) -> list[float]:
    """x += 1 with jupyter_client's ``BlockingKernelClient`` (shell reply, then iopub idle)."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(stderr=subprocess.DEVNULL)
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)

        def run(code: str) -> None:
            msg_id = kc.execute(code)
            reply = kc.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=60)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"ipykernel blocking x += 1: {reply['content']}")
            while True:
                msg = kc.get_iopub_msg(timeout=60)
                if (
                    msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    return

        run("x = 0")
        return _timed(lambda: run(X_CELL), n)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _timed(call: Callable[[], None], n: int) -> list[float]:
    for _ in range(max(2, n // 20)):  # warm-up, untimed
        call()
    samples: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(ms_since(t0))
    return samples


async def blocking_x(res: Results, driver: Driver, n: int) -> None:
    """Breakdown: x += 1 through the leanest client of each protocol, blocking: ``http.client``
    for sessionpool, jupyter_client's ``BlockingKernelClient`` for ipykernel. The async clients
    of ``warm x += 1`` (httpx, the async kernel client) spend a large share of each round trip
    themselves; this shows what is left when they do not."""
    log(f"{driver.name}: x += 1 through a blocking client x{n}")
    if isinstance(driver, SessionpoolDriver):
        samples = await asyncio.to_thread(_blocking_x_http, driver, n)
    elif isinstance(driver, IpykernelDriver):
        samples = await asyncio.to_thread(_blocking_x_ipykernel, n)
    else:
        raise TypeError(f"no blocking client for {driver.name}")
    res.add(Row(BLOCKING_X, driver.name, "sequential", samples, n))


#: the breakdown row of x += 1 through httpx's async client (the suite's agent client until
#: 2026-12-07: this row continues that series)
HTTPX_X = "warm x += 1, httpx client (breakdown)"


async def httpx_x(res: Results, sp: SessionpoolDriver, n: int) -> None:
    """Breakdown: x += 1 through httpx's async client on one keep-alive connection, beside
    ``warm x += 1`` through aiohttp's: what the choice of asyncio client adds."""
    log(f"sessionpool: x += 1 through httpx's async client x{n}")
    ident = f"{sp.pool}-httpx-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(headers=sp.headers, timeout=300.0, verify=sp.ssl) as client:

        async def run(code: str) -> None:
            body = json.dumps(execute_body(code)).encode()
            check_execute(await client.post(sp.url(ident), content=body), code)

        await run("x = 0")
        for _ in range(max(2, n // 20)):  # warm-up, untimed
            await run(X_CELL)
        samples: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            await run(X_CELL)
            samples.append(ms_since(t0))
        await sp.control.delete(sp.url(ident, "session", SESSION_API_VERSION))
    res.add(Row(HTTPX_X, "sessionpool", "sequential", samples, n))


async def load_window(
    driver: Driver, sessions: list[Any], window: float
) -> tuple[list[float], int, int, float, int]:
    """Every session runs x += 1 back to back; (latencies, index at window start and end,
    window seconds, failures)."""
    state = {"stop": False, "failed": 0}
    done: list[float] = []

    async def worker(s: Any) -> None:
        while not state["stop"]:
            t0 = time.perf_counter()
            try:
                await driver.run(s, X_CELL)
            except Exception:
                state["failed"] += 1
                await asyncio.sleep(0.01)
                continue
            done.append(ms_since(t0))

    tasks = [asyncio.create_task(worker(s)) for s in sessions]
    await asyncio.sleep(min(1.0, window / 2))  # warm-up
    n0, t0 = len(done), time.perf_counter()
    await asyncio.sleep(window)
    n1, elapsed = len(done), time.perf_counter() - t0
    state["stop"] = True
    await asyncio.gather(*tasks)
    return done, n0, n1, elapsed, int(state["failed"])


async def throughput(res: Results, driver: Driver, levels: tuple[int, ...], window: float) -> None:
    for c in levels:
        log(f"{driver.name}: throughput, {c} concurrent sessions x += 1 for {window:g} s")
        await driver.prepare(c)
        sessions = list(await asyncio.gather(*(driver.open() for _ in range(c))))
        try:
            await asyncio.gather(*(driver.run(s, "x = 0") for s in sessions))
            await quiet(driver)
            done, n0, n1, elapsed, failed = await load_window(driver, sessions, window)
            rate = (n1 - n0) / elapsed
            res.add(
                Row(
                    "throughput (x += 1)",
                    driver.name,
                    f"{c} concurrent",
                    value=rate,
                    attempts=n1 - n0,
                    unit="exec/s",
                    note=f"{failed} failed",
                )
            )
            res.add(Row("x += 1 under load", driver.name, f"{c} concurrent", done[n0:n1], n1 - n0))
        finally:
            await asyncio.gather(*(driver.close(s) for s in sessions), return_exceptions=True)


# -- sessionpool only: a light load generator, on-demand sessions, files, scaling ramp -------------

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_execute.lua"


async def wrk_throughput(
    res: Results, sp: SessionpoolDriver, sessions: int, seconds: float
) -> None:
    """Executions per second with ``sessions`` sessions under wrk (a C load generator: the
    Python clients above spend about as much CPU per request as the server does, on the same
    two cores). Every reply is checked for ``Success``; afterwards the sessions' counters must
    add up to at least what wrk counted, so a request that was answered without running counts
    as a failure, not as throughput."""
    wrk = shutil.which("wrk")
    if wrk is None:
        log("sessionpool: wrk is not installed (apt-get install wrk): no wrk throughput figure")
        res.extra["wrk"] = "not installed"
        return
    log(f"sessionpool: wrk, {sessions} sessions x += 1 for {seconds:g} s")
    prefix = f"wrk-{uuid.uuid4().hex[:8]}"
    idents = [f"{prefix}-{k}" for k in range(sessions)]
    body = json.dumps(execute_body("x = 0")).encode()
    sem = asyncio.Semaphore(8)

    async def reset(ident: str) -> None:
        async with sem:
            (await sp.control.post(sp.url(ident), content=body)).raise_for_status()

    await asyncio.gather(*(reset(i) for i in idents))
    await quiet(sp)  # this figure is executions, not refills and teardowns
    # the identifier last: the script appends each request's own
    path = sp.url("").removeprefix(sp.server.url).replace("identifier=&", "") + "&identifier="
    env = {
        **os.environ,
        "WRK_PATH": path,
        "WRK_PREFIX": prefix,
        "WRK_SESSIONS": str(sessions),
        "WRK_KEY": sp.server.auth["Authorization"].removeprefix("Bearer "),
    }
    proc = await asyncio.create_subprocess_exec(
        wrk,
        "-t2",
        f"-c{sessions}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        sp.server.url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-500:]}")
    got = json.loads(lines[-1])
    check = json.dumps(execute_body("print(x)")).encode()

    async def count(ident: str) -> int:
        async with sem:
            r = await sp.control.post(sp.url(ident), content=check)
            r.raise_for_status()
            return int(r.json()["properties"]["stdout"])

    counted = sum(await asyncio.gather(*(count(i) for i in idents)))

    async def delete(ident: str) -> None:
        async with sem:
            with contextlib.suppress(httpx.HTTPError):
                await sp.control.delete(sp.url(ident, "session", SESSION_API_VERSION))

    await asyncio.gather(*(delete(i) for i in idents))
    # a non-2xx answer fails the script's check too: count it once
    failed = max(got["failed_checks"], got["non2xx"])
    failed += got["connect"] + got["read"] + got["write"] + got["timeout"]
    if counted < got["requests"] - failed:
        failed += got["requests"] - failed - counted
    rate = got["requests"] / (got["duration_us"] / 1e6)
    res.add(
        Row(
            "throughput (x += 1), wrk",
            "sessionpool",
            f"{sessions} sessions",
            value=rate,
            attempts=got["requests"],
            unit="exec/s",
            note=f"{failed} failed; p50 {got['p50_us'] / 1000:.2f} ms, "
            f"p99 {got['p99_us'] / 1000:.2f} ms; sessions counted {counted}",
        )
    )
    res.extra["wrk"] = {**got, "sessions_counted": counted, "failed": failed}


async def on_demand(res: Results, sp: SessionpoolDriver, n: int) -> None:
    """The pool exhausted: ``sp``'s pool keeps no ready sessions, so every new identifier is
    forked on demand; new identifier -> print(1), sequential."""
    log(f"sessionpool: pool exhausted, on-demand session -> print(1) x{n}")
    samples = await new_session_prints(sp, n, lambda: asyncio.sleep(0.05))
    res.add(
        Row(
            "pool exhausted: on-demand session -> print(1)", "sessionpool", "sequential", samples, n
        )
    )


# -- files, scaling ramp ------------------------------------------------------------------------


async def files(res: Results, sp: SessionpoolDriver, n: int) -> None:
    log(f"sessionpool: 10 MB upload and download x{n}")
    await sp.prepare(1)
    session = await sp.open()
    client, ident = session
    data = os.urandom(10 * MB)
    up: list[float] = []
    down: list[float] = []
    try:
        for i in range(n + 1):
            form = aiohttp.FormData()
            form.add_field(  # a stream: aiohttp warns that 10 MB of bytes would block the loop
                "file",
                io.BytesIO(data),
                filename="blob.bin",
                content_type="application/octet-stream",
            )
            t0 = time.perf_counter()
            async with client.post(sp.url(ident, "files/upload"), data=form) as r:
                answer = await r.read()
            t_up = ms_since(t0)
            if r.status not in (200, 201):
                raise RuntimeError(f"upload: HTTP {r.status}: {answer[:300]!r}")
            t0 = time.perf_counter()
            got = await sp.get(client, sp.url(ident, "files/content/blob.bin"))
            t_down = ms_since(t0)
            if len(got) != len(data):
                raise RuntimeError(f"download: {len(got)} bytes of {len(data)}")
            if i:
                up.append(t_up)
                down.append(t_down)
    finally:
        await sp.close(session)
    res.add(Row("10 MB upload", "sessionpool", "sequential", up, n))
    res.add(Row("10 MB download", "sessionpool", "sequential", down, n))


def session_pids(server: ServerProcess) -> list[int]:
    """The session processes: the children of the server's zygotes (forked children inherit
    the zygote's command line, so only the server's direct children are zygotes)."""
    assert server.process is not None
    below = descendants(server.process.pid)
    zygotes: set[int] = set()
    for pid in below:
        with contextlib.suppress(OSError):
            if parent_pid(pid) == server.process.pid:
                with open(f"/proc/{pid}/cmdline") as f:
                    if "sandbox.zygote" in f.read():
                        zygotes.add(pid)
    found = []
    for pid in below:
        with contextlib.suppress(OSError):
            if parent_pid(pid) in zygotes:
                found.append(pid)
    return found


def used_memory_gb() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return (info["MemTotal"] - info["MemAvailable"]) / 1e9


async def scaling(res: Results, sp: SessionpoolDriver, sizes: Sizes, merging: bool = True) -> None:
    """Idle sessions (each ran the pandas cell) added step by step until refused or out of
    time; at each step allocation latency, x += 1 latency and memory. ``merging``: the pool
    merges memory (otherwise a ksmd left running by other work is not waited for)."""
    server = sp.server
    live: list[Any] = []
    points: list[dict[str, Any]] = []
    refusal: dict[str, Any] | None = None
    clients = [sp.client() for _ in range(16)]
    await sp.prepare(2)
    probe = await sp.open()
    await sp.run(probe, "x = 0")
    # the pool's ready sessions and zygote merge too: let that happen before the baseline, or
    # the ramp's sessions would be credited with it
    await until_merged(sizes.merge_settle_s, merging)
    baseline_gb = await steady_used_memory_gb()
    deadline = time.monotonic() + sizes.ramp_budget_s
    steps = list(sizes.steps)

    async def add_one(k: int) -> bool:
        nonlocal refusal
        ident = f"scale-{uuid.uuid4().hex[:12]}"
        client = clients[k % len(clients)]
        body = json.dumps(execute_body(DESCRIBE_CELL)).encode()
        async with client.post(sp.url(ident), data=body, headers=JSON) as r:
            answer = await r.read()
        if r.status == 200:
            live.append((client, ident))
            return True
        if refusal is None:
            refusal = {
                "at_live_sessions": len(live),
                "http_status": r.status,
                "error_code": r.headers.get("x-ms-error-code", ""),
                "body": answer[:300].decode(errors="replace"),
                "used_memory_gb": round(used_memory_gb(), 2),
            }
        return False

    sem = asyncio.Semaphore(16)

    async def limited(k: int) -> bool:
        async with sem:
            return await add_one(k)

    try:
        while True:
            target = steps.pop(0) if steps else (points[-1]["live"] + sizes.step_after)
            if steps == [] and sizes.step_after == 0 and points and target <= points[-1]["live"]:
                break
            log(f"sessionpool scaling: -> {target} live idle sessions")
            need = target - len(live)
            if need > 0:
                await asyncio.gather(*(limited(k) for k in range(need)))
            await asyncio.sleep(1.0)
            if sizes.merge_each_step and live:  # with none, nothing merges: no wait
                await until_merged(sizes.merge_settle_s, merging)
            point = await scale_point(sp, probe, len(live), sizes, refused=refusal is not None)
            point["newest_kept_state"] = await kept_state(sp, live[-1]) if live else None
            point["used_memory_gb"] = round(used_memory_gb(), 3)
            point["added_memory_gb"] = round(point["used_memory_gb"] - baseline_gb, 3)
            point["mem_available_gb"] = round(meminfo().get("MemAvailable", 0) / 2**30, 3)
            point.update(ksm_figures())
            points.append(point)
            log(
                f"  live {point['live']}: alloc p50 {point['alloc_p50']:.2f} p99 "
                f"{point['alloc_p99']:.2f} ms; x += 1 p50 {point['x_p50']:.2f} p99 "
                f"{point['x_p99']:.2f} ms; USS/session {point['uss_mb_per_session']:.2f} MB; "
                f"machine used {point['used_memory_gb']:.2f} GB"
            )
            if refusal is not None or time.monotonic() > deadline:
                break
            if not steps and sizes.step_after == 0:
                break
        if refusal is None and live:
            res.extra["scaling_settled"] = await merge_settled(
                len(live), baseline_gb, sizes, merging
            )
        if refusal is None and sizes.scale_cap is not None:  # show the refusal at the cap
            await asyncio.gather(*(add_one(k) for k in range(sizes.scale_cap - len(live) + 2)))
        alive = (await sp.control.get(server.url + "/healthz")).status_code == 200
        if refusal is not None:
            refusal["server_alive_after"] = alive
            log(f"  refused at {refusal['at_live_sessions']} live sessions: {refusal}")
        res.extra["scaling_refusal"] = refusal
        res.extra["scaling_stopped_by"] = "refusal" if refusal else "time budget / last step"
    finally:
        log(f"sessionpool scaling: deleting {len(live)} sessions")
        sem2 = asyncio.Semaphore(32)

        async def delete(s: Any) -> None:
            async with sem2:
                with contextlib.suppress(httpx.HTTPError):
                    await sp.control.delete(sp.url(s[1], "session", SESSION_API_VERSION))

        await asyncio.gather(*(delete(s) for s in live))
        await sp.close(probe)
    if points and points[-1]["uss_mb"]:
        last = points[-1]
        res.add(
            Row(
                "private memory (USS) per idle session",
                "sessionpool",
                f"{last['live']} sessions",
                last["uss_mb"],
                len(last["uss_mb"]),
                unit="MB",
                note="every session process at the last step (the pools' ready ones included)",
            )
        )
    res.curves["scaling"] = [{k: v for k, v in p.items() if k != "uss_mb"} for p in points]
    ok = [p for p in points if p["x_p99"] <= 10.0 and p.get("newest_kept_state") is not False]
    res.extra["density_x_p99_10ms"] = max((p["live"] for p in ok), default=0)


async def steady_used_memory_gb(longest_s: float = 30.0) -> float:
    """The machine's used memory once it holds still: the phases before the ramp delete
    hundreds of sessions, whose memory the kernel gives back over a few seconds; a baseline
    read meanwhile would charge the ramp's sessions less than they cost."""
    end = time.monotonic() + longest_s
    last = used_memory_gb()
    while time.monotonic() < end:
        await asyncio.sleep(2.0)
        now = used_memory_gb()
        if abs(now - last) < 0.01:  # under 10 MB in 2 s
            return now
        last = now
    return last


async def until_merged(longest_s: float, merging: bool = True) -> None:
    """While ksmd runs, wait until it has merged what there is to merge now, or ``longest_s``;
    at once where it does not run. ksmd merges a page on its second look, a pass after the
    first (its content must hold still between them), so the pages there are now are all
    merged once three passes have ended: the one under way, the one that first saw the pages it
    had passed, and the next. The merged count alone says nothing: it stays flat through most
    of a pass and jumps at its end (a pass over 1,000 sessions takes minutes here)."""
    ksm = ksm_status()
    if not merging or ksm is None or ksm.run != RUN_RUNNING:
        return
    log(f"sessionpool scaling: page merging is on; waiting up to {longest_s:g} s for it")
    start = time.monotonic()
    passes = 0
    while time.monotonic() - start < longest_s:
        await asyncio.sleep(2.0)
        now = ksm_status()
        passes = now.full_scans - ksm.full_scans if now is not None else 0
        if passes >= 3:
            return
    log(f"  ksmd ended {passes} of 3 passes in {longest_s:g} s: merging has not caught up")


def ksm_figures(ksm: KsmStatus | None = None) -> dict[str, Any]:
    """What merging saves now (pages_sharing), and what ksmd's own records take (GB; absent
    where there is no KSM): the records are machine memory too, counted in the memory used."""
    ksm = ksm or ksm_status()
    if ksm is None:
        return {}
    records = ksm.records_bytes
    return {
        "ksm_merged_gb": round(ksm.pages_sharing * PAGE_SIZE / 1e9, 3),
        "ksm_records": ksm.rmap_items,
        "ksm_records_gb": round(records / 1e9, 3) if records is not None else None,
    }


async def merge_settled(
    live: int, baseline_gb: float, sizes: Sizes, merging: bool = True
) -> dict[str, Any]:
    """With page merging running (a pool with ``memory_merge``), the idle sessions' memory
    falls for a while after they were made: wait until the merged page count stops growing
    (or ``merge_settle_s``) and read the machine's memory again. Without it, one reading."""
    start = time.monotonic()
    await until_merged(sizes.merge_settle_s, merging)
    ksm = ksm_status()
    used = used_memory_gb()
    settled = {
        "live": live,
        "waited_s": round(time.monotonic() - start, 1),
        "used_memory_gb": round(used, 3),
        "added_memory_gb": round(used - baseline_gb, 3),
        "mem_available_gb": round(meminfo().get("MemAvailable", 0) / 2**30, 3),
        "ksm": asdict(ksm) if ksm is not None else {},
        **ksm_figures(ksm),
    }
    log(
        f"  settled after {settled['waited_s']} s: {settled['added_memory_gb'] * 1000 / live:.2f}"
        f" MB per session (ksm {ksm.describe() if ksm is not None else 'absent'})"
    )
    return settled


async def kept_state(sp: SessionpoolDriver, session: Any) -> bool:
    """The newest session still has the DataFrame its first cell made: a session that lost its
    interpreter (it was replaced) would answer quickly too, so latency alone proves nothing.
    Its client's connection has often been idle past uvicorn's 5 s by now, and a request can
    race the server's close of it: such a failure to send is tried again."""
    try:
        out = await past_stale_connection(lambda: sp.run(session, "print(len(df))"))
    except aiohttp.ClientConnectionError as exc:
        log(f"  the newest session could not be reached: {exc}")
        return False
    except Exception as exc:
        log(f"  the newest session lost its state: {exc}")
        return False
    return out.stdout.strip() == "1000"


async def scale_point(
    sp: SessionpoolDriver, probe: Any, live: int, sizes: Sizes, refused: bool
) -> dict[str, Any]:
    allocs: list[float] = []
    await sp.prepare(1)
    # where admission control refuses, a new session is refused (and the pools cannot refill,
    # so /readyz stays 503): no allocation figure there
    for _ in range(0 if refused else sizes.probe_allocs):
        try:
            await sp.settle()
        except RuntimeError as exc:
            log(f"  {exc}")
        keep: list[Any] = []
        try:
            allocs.append(await tti_sample(sp, keep))
        except Exception as exc:
            log(f"  allocation at {live} live failed: {exc}")
        await asyncio.gather(*(sp.close(s) for s in keep))
    xs: list[float] = []
    for i in range(sizes.probe_x + 20):
        t0 = time.perf_counter()
        await sp.run(probe, X_CELL)
        if i >= 20:
            xs.append(ms_since(t0))
    pids = session_pids(sp.server)
    uss = []
    for pid in pids:
        with contextlib.suppress(OSError, KeyError):
            uss.append(uss_pss(pid)[0])
    # the median session: at larger counts one that ran the pandas cell (the pools' few ready
    # sessions have not)
    per = statistics.median(uss) if live and uss else math.nan
    allocs.sort()
    xs.sort()
    return {
        "live": live,
        "alloc_p50": nearest_rank(allocs, 50),
        "alloc_p99": nearest_rank(allocs, 99),
        "x_p50": nearest_rank(xs, 50),
        "x_p99": nearest_rank(xs, 99),
        "session_processes": len(pids),
        "uss_mb": sorted(uss),
        "uss_mb_per_session": per,
    }


async def ipykernel_memory(res: Results, n: int) -> None:
    log(f"ipykernel: memory of {n} idle kernels after the pandas cell")
    driver = IpykernelDriver()
    before = meminfo()["MemAvailable"]
    sessions = [await driver.open() for _ in range(n)]
    try:
        for s in sessions:
            await driver.run(s, DESCRIBE_CELL)
        await asyncio.sleep(1.0)
        uss = [uss_pss(IpykernelDriver.pid(s))[0] for s in sessions]
        drop = (before - meminfo()["MemAvailable"]) / n / MB
    finally:
        for s in sessions:
            await driver.close(s)
    res.add(
        Row("private memory (USS) per idle session", "ipykernel", f"{n} kernels", uss, n, unit="MB")
    )
    res.extra["ipykernel_memavailable_drop_per_kernel_mb"] = drop
