"""HTTP benchmark: ``sessionpool serve`` over loopback against jupyter_client + ipykernel.

Run as ``.venv/bin/python -m benchmarks.http_api [--quick] [--json PATH]`` from the repository
root (as root: the jail backend needs it). The script starts a real ``sessionpool serve`` child
on a free loopback port (``ServerProcess``, the same path as production: settings, API key,
uvicorn, the jail), prints a Markdown table and JSON, and writes the JSON to ``--json`` or to
``benchmarks/results/http-<UTC date>.json``.

What is measured (``time.perf_counter`` wall times in this process, the client; percentiles are
nearest-rank; warm-ups are discarded). Every call is the 2024-02-02-preview ``code/execute`` with
a bearer key, over HTTP/1.1 keep-alive connections opened before timing starts:

- **warm allocation**: a new identifier in a pool with ready sessions -> the first result of
  ``print(1)``. Between samples the session is deleted (``DELETE session``) and ``/readyz`` is
  polled every millisecond until every pool has its ready sessions again (not timed); the sample
  starts as soon as it answers 200. A diagnostic beside it: the first ``print(1)`` of a session
  allocated earlier (by ``GET files``) once the pool has refilled.
- **pool exhausted**: the same in a pool that keeps no ready session (``ready_sessions=0``), so
  every new identifier forks, jails and warms a kernel on demand.
- **x += 1**: the round trip of ``x += 1`` in one session after ``x = 0``, back to back; beside
  it ``print(1)`` in the same session, and ``GET /healthz`` on the same connection (the floor of
  any request through this client and server), each back to back and after 100 ms idle (on a VM
  whose idle vCPUs halt, waking them costs every request that follows a pause).
- **burst**: 200 new identifiers at once (``asyncio.gather``) in a pool keeping 8 ready
  sessions, so most are forked on demand; success rate and each request's latency.
- **throughput**: 50 sessions, one async task each running ``x += 1`` back to back; the
  executions completed inside a fixed window (after a discarded warm-up) per second, and the CPU
  each execution cost the client, the server process and the sessions.
- **peer**: ``KernelManager.start_kernel`` -> first ``execute_reply`` of ``print(1)``, and the
  ``x += 1`` round trip (send -> ``execute_reply``) with the blocking client.

The sequential figures use one ``httpx.Client``. The burst and the throughput run twice on
``httpx.AsyncClient`` (uvloop): with one client per agent (one connection each; the figures the
targets apply to), and with one client shared by every task (a reference). httpcore's connection
pool does work proportional to its connections on every request, so a shared client with 200
connections spends milliseconds of CPU per request and measures itself more than the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _common
from benchmarks._common import (
    API_KEY,
    API_VERSION,
    SESSION_API_VERSION,
    Bench,
    Check,
    Figure,
    PhaseMeter,
    Target,
    cpu_times,
    loop_factory,
    ms_since,
    proc_stat,
)
from sessionpool.server.testing import ServerProcess

#: the idle gap of the "after idle" diagnostics. On this machine kind (a VM whose idle vCPUs
#: halt) any request that follows some milliseconds of idleness pays for waking the CPUs up
IDLE_GAP_S = 0.1

WARM_POOL = "warm"  # warm allocation, x += 1, throughput
COLD_POOL = "cold"  # pool exhausted: ready_sessions = 0
BURST_POOL = "burst"  # the burst: a few ready sessions, the rest on demand
WARM_READY = 16
BURST_READY = 8


@dataclass(frozen=True)
class Sizes:
    warm: int
    exhausted: int
    alloc_warmup: int
    roundtrip: int
    roundtrip_warmup: int
    burst: int
    tp_sessions: int
    tp_seconds: float
    tp_warmup_seconds: float
    peer_start: int
    peer_roundtrip: int
    peer_roundtrip_warmup: int
    idle: int  # samples of the after-idle diagnostics


FULL = Sizes(
    warm=200,
    exhausted=100,
    alloc_warmup=3,
    roundtrip=2000,
    roundtrip_warmup=50,
    burst=200,
    tp_sessions=50,
    tp_seconds=5.0,
    tp_warmup_seconds=1.0,
    peer_start=10,
    peer_roundtrip=1000,
    peer_roundtrip_warmup=50,
    idle=100,
)
QUICK = Sizes(
    warm=40,
    exhausted=30,
    alloc_warmup=3,
    roundtrip=300,
    roundtrip_warmup=20,
    burst=200,
    tp_sessions=50,
    tp_seconds=2.0,
    tp_warmup_seconds=0.5,
    peer_start=3,
    peer_roundtrip=200,
    peer_roundtrip_warmup=20,
    idle=20,
)


def server_config(sizes: Sizes) -> str:
    """The TOML the server starts with: three pools, the default template, no cooldown."""
    max_sessions = sizes.burst + sizes.tp_sessions + 64
    pools = {WARM_POOL: WARM_READY, COLD_POOL: 0, BURST_POOL: BURST_READY}
    return "".join(
        f"[pools.{name}]\nready_sessions = {ready}\nmax_sessions = {max_sessions}\n"
        "cooldown_seconds = 3600\n\n"
        for name, ready in pools.items()
    )


# -- targets --------------------------------------------------------------------------------------


def _pct_at_most(key: str, pct: float, limit: float) -> Check:
    def check(figures: dict[str, Figure], extra: dict[str, Any]) -> tuple[bool, str]:
        value = figures[key].pct(pct)
        return value <= limit, f"p{pct:g} {value:.3f} ms <= {limit:g} ms"

    return check


def _burst(key: str, limit: float) -> Check:
    def check(figures: dict[str, Figure], extra: dict[str, Any]) -> tuple[bool, str]:
        ok, total = extra[key]["succeeded"], extra[key]["requests"]
        p99 = figures[key].pct(99)
        passed = ok == total and p99 <= limit
        return passed, (
            f"{ok}/{total} succeeded ({ok / max(1, total):.0%}; 100% needed), "
            f"p99 {p99:.1f} ms <= {limit:g} ms"
        )

    return check


def _rate_at_least(key: str, limit: float) -> Check:
    def check(figures: dict[str, Figure], extra: dict[str, Any]) -> tuple[bool, str]:
        value = figures[key].value or 0.0
        return value >= limit, f"{value:,.0f} exec/s >= {limit:,.0f}"

    return check


TARGETS = [
    Target("sp.warm", "warm allocation p50 <= 3 ms", _pct_at_most("sp.warm", 50, 3.0)),
    Target("sp.warm", "warm allocation p99 <= 10 ms", _pct_at_most("sp.warm", 99, 10.0)),
    Target("sp.exhausted", "pool-exhausted p50 <= 30 ms", _pct_at_most("sp.exhausted", 50, 30.0)),
    Target("sp.x_plus_1", "x += 1 p50 <= 1.5 ms", _pct_at_most("sp.x_plus_1", 50, 1.5)),
    Target("sp.burst", "burst: 100% success and p99 <= 1 s", _burst("sp.burst", 1000.0)),
    Target("sp.throughput", ">= 1,500 executions/s", _rate_at_least("sp.throughput", 1500.0)),
]


# -- machine --------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """CPU time of one process (its live threads, not its children), in seconds.

    From /proc/PID/task/*/schedstat (nanoseconds on the CPU), not utime + stime: those are
    sampled at the clock tick (10 ms here), and a session that runs a few milliseconds at a time
    often shows 0."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/schedstat"
        with contextlib.suppress(OSError, ValueError, IndexError), open(path) as f:
            total += int(f.read().split()[0])
    return total / 1e9


def reaped_cpu_seconds(pid: int) -> float:
    """CPU time of the children ``pid`` has waited for (theirs and their reaped children's), in
    seconds: a zygote's sessions that have exited. The kernel sums it exactly; /proc gives it
    in clock ticks (10 ms here), so it is for totals over many children."""
    fields = proc_stat(pid)
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def minor_faults(pid: int) -> int:
    return int(proc_stat(pid)[7])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its children, theirs, ...), from /proc/*/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with (
                    contextlib.suppress(OSError),
                    open(f"/proc/{parent}/task/{task}/children") as f,
                ):
                    kids = [int(k) for k in f.read().split()]
                    found += kids
                    todo += kids
    return found


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds used so far by ``pids`` (those that have exited count as 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += process_cpu_seconds(pid)
    return total


# -- sessionpool over HTTP ------------------------------------------------------------------------


def execute_body(code: str) -> dict[str, Any]:
    return {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}


PRINT_1 = json.dumps(execute_body("print(1)")).encode()


def check_execute(response: httpx.Response, what: str, stdout: str | None = None) -> dict[str, Any]:
    """The ``properties`` of a successful execute; raises on anything else."""
    return check_answer(response.status_code, response.content, what, stdout)


def check_answer(
    status: int, content: bytes, what: str, stdout: str | None = None
) -> dict[str, Any]:
    """``check_execute`` for any client: the answer's status and body."""
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {content[:500].decode(errors='replace')}")
    props: dict[str, Any] = json.loads(content)["properties"]
    if props["status"] != "Success":
        raise RuntimeError(f"{what}: {props['status']}: {props['stderr'][-500:]}")
    if stdout is not None and props["stdout"] != stdout:
        raise RuntimeError(f"{what}: printed {props['stdout']!r}, expected {stdout!r}")
    return props


class HttpBench(Bench):
    """sessionpool serve in a child process, driven over loopback HTTP."""

    def __init__(self, sizes: Sizes, log: Callable[[str], None], meter: PhaseMeter) -> None:
        super().__init__(sizes, log, meter)
        self.server: ServerProcess | None = None

    # URLs ---------------------------------------------------------------------------------------

    def execute_url(self, pool: str, ident: str) -> str:
        assert self.server is not None
        return (
            f"{self.server.endpoint(pool)}/code/execute"
            f"?identifier={ident}&api-version={API_VERSION}"
        )

    def session_url(self, pool: str, ident: str) -> str:
        assert self.server is not None
        return (
            f"{self.server.endpoint(pool)}/session"
            f"?identifier={ident}&api-version={SESSION_API_VERSION}"
        )

    # driver -------------------------------------------------------------------------------------

    def run(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="sessionpool-http-bench-"))
        server = ServerProcess(
            workdir,
            config=server_config(self.sizes),
            api_key=API_KEY,
            startup_timeout=180.0,
        )
        self.server = server
        t0 = time.perf_counter()
        try:
            server.start()
            self.extra["server_start_to_ready_ms"] = ms_since(t0)
            headers = {**server.auth, "Content-Type": "application/json"}
            with httpx.Client(
                headers=headers, timeout=120.0, http1=True, http2=False, verify=False
            ) as client:
                client.get(server.url + "/healthz").raise_for_status()  # opens the connection
                with self.meter.phase("sessionpool.warm"):
                    self.warm_allocation(client)
                    self.allocated_first_cell(client)
                with self.meter.phase("sessionpool.exhausted"):
                    self.exhausted(client)
                with self.meter.phase("sessionpool.x_plus_1"):
                    self.roundtrip(client)
                self.wait_ready(client)
            runner = asyncio.Runner(loop_factory=loop_factory())
            with runner:
                runner.run(self.concurrent(headers))
        except BaseException:
            self.log(f"server log ({server.log_path}):\n{server.log()[-4000:]}")
            raise
        finally:
            t1 = time.perf_counter()
            status = server.stop()
            self.extra["server_stop_ms"] = ms_since(t1)
            self.extra["server_exit_status"] = status
            errors = [
                line
                for line in server.log().splitlines()
                if "Traceback" in line or " ERROR" in line or "ERROR:" in line
            ]
            self.extra["server_log_errors"] = errors[:20]
            shutil.rmtree(workdir, ignore_errors=True)

    def wait_ready(self, client: httpx.Client, timeout: float = 120.0) -> None:
        """Until ``/readyz`` says every pool has its ready sessions (never timed)."""
        assert self.server is not None
        end = time.monotonic() + timeout
        while client.get(self.server.url + "/readyz").status_code != 200:
            if time.monotonic() > end:
                raise RuntimeError(f"the pools did not refill in {timeout:g} s")
            time.sleep(0.001)

    def delete(self, client: httpx.Client, pool: str, ident: str) -> None:
        response = client.delete(self.session_url(pool, ident))
        if response.status_code != 204:
            raise RuntimeError(f"DELETE session: HTTP {response.status_code}: {response.text}")

    def _allocate(self, client: httpx.Client, pool: str, prefix: str) -> float:
        ident = self.ident(prefix)
        url = httpx.URL(self.execute_url(pool, ident))
        t0 = time.perf_counter()
        response = client.post(url, content=PRINT_1)
        elapsed = ms_since(t0)
        check_execute(response, "print(1)", stdout="1\n")
        self.delete(client, pool, ident)
        return elapsed

    def warm_allocation(self, client: httpx.Client) -> None:
        n = self.sizes.warm
        self.log(f"sessionpool: warm allocation x{n} (pool of {WARM_READY} ready sessions)")
        samples: list[float] = []
        for i in range(self.sizes.alloc_warmup + n):
            # timed right after /readyz answers 200: the pool has refilled, and the machine is
            # awake (see the "after idle" diagnostics for the cost of an idle gap)
            self.wait_ready(client)
            elapsed = self._allocate(client, WARM_POOL, "warm")
            if i >= self.sizes.alloc_warmup:
                samples.append(elapsed)
        self.figures.append(
            Figure(
                "sp.warm",
                "sessionpool",
                "new identifier -> first print(1) result, warm pool",
                "ms",
                samples,
                f"POST code/execute; {WARM_READY} ready sessions, refilled between samples "
                "(DELETE session + /readyz, not timed)",
            )
        )

    def allocated_first_cell(self, client: httpx.Client) -> None:
        """Diagnostic: the first print(1) of a session allocated earlier (by ``GET files``) once
        the pool has refilled: the warm figure minus the allocation and the refill beside it."""
        n = self.sizes.warm // 2
        self.log(f"sessionpool: first print(1) of a session allocated earlier x{n}")
        samples: list[float] = []
        for i in range(self.sizes.alloc_warmup + n):
            ident = self.ident("pre")
            url = httpx.URL(self.execute_url(WARM_POOL, ident))
            files = self.execute_url(WARM_POOL, ident).replace("/code/execute?", "/files?")
            client.get(files).raise_for_status()  # allocates the session
            self.wait_ready(client)
            t0 = time.perf_counter()
            response = client.post(url, content=PRINT_1)
            elapsed = ms_since(t0)
            check_execute(response, "print(1)", stdout="1\n")
            self.delete(client, WARM_POOL, ident)
            if i >= self.sizes.alloc_warmup:
                samples.append(elapsed)
        self.figures.append(
            Figure(
                "sp.first_cell",
                "sessionpool",
                "first print(1) of a session allocated earlier (diagnostic)",
                "ms",
                samples,
                "allocated by GET files, then /readyz until refilled; the difference to the warm "
                "figure is the allocation and the refill running beside it",
            )
        )

    def exhausted(self, client: httpx.Client) -> None:
        n = self.sizes.exhausted
        self.log(f"sessionpool: pool exhausted (ready_sessions=0) x{n}")
        samples: list[float] = []
        for i in range(self.sizes.alloc_warmup + n):
            self.wait_ready(client)  # nothing to refill: only keeps the timing alike
            elapsed = self._allocate(client, COLD_POOL, "cold")
            if i >= self.sizes.alloc_warmup:
                samples.append(elapsed)
        self.figures.append(
            Figure(
                "sp.exhausted",
                "sessionpool",
                "new identifier -> first print(1) result, pool exhausted",
                "ms",
                samples,
                "ready_sessions=0: on-demand fork + jail + cgroups + warm-up cell + print(1)",
            )
        )

    def roundtrip(self, client: httpx.Client) -> None:
        n, warmup = self.sizes.roundtrip, self.sizes.roundtrip_warmup
        self.log(f"sessionpool: x += 1 x{n}")
        ident = self.ident("rt")
        url = httpx.URL(self.execute_url(WARM_POOL, ident))
        check_execute(client.post(url, json=execute_body("x = 0")), "x = 0")
        payload = json.dumps(execute_body("x += 1")).encode()
        samples: list[float] = []
        server_ms: list[float] = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            response = client.post(url, content=payload)
            elapsed = ms_since(t0)
            props = check_execute(response, "x += 1")
            if i >= warmup:
                samples.append(elapsed)
                server_ms.append(float(props["executionTimeInMilliseconds"]))
        got = check_execute(client.post(url, json=execute_body("x")), "x")["result"]
        if str(got) != str(warmup + n):
            raise RuntimeError(f"x is {got!r}, expected {warmup + n}")
        # the warm figure's cell, in a session that has run many: no first-cell costs
        prints: list[float] = []
        for i in range(warmup + n // 4):
            t0 = time.perf_counter()
            response = client.post(url, content=PRINT_1)
            elapsed = ms_since(t0)
            check_execute(response, "print(1)", stdout="1\n")
            if i >= warmup:
                prints.append(elapsed)
        self.extra["x_plus_1_executionTimeInMilliseconds_mean"] = statistics.fmean(server_ms)
        self.figures.append(
            Figure(
                "sp.x_plus_1",
                "sessionpool",
                "x += 1 round trip",
                "ms",
                samples,
                "POST code/execute on one keep-alive connection",
            )
        )
        self.figures.append(
            Figure(
                "sp.print_1",
                "sessionpool",
                "print(1) round trip in a used session (diagnostic)",
                "ms",
                prints,
                "the warm figure's cell without allocation or first-cell costs",
            )
        )
        self.healthz(client)
        self.after_idle(client, url)
        self.delete(client, WARM_POOL, ident)

    def healthz(self, client: httpx.Client) -> None:
        """The floor: the same client and server, a route that does nothing (no key check)."""
        assert self.server is not None
        n, warmup = self.sizes.roundtrip, self.sizes.roundtrip_warmup
        url = httpx.URL(self.server.url + "/healthz")
        samples: list[float] = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            response = client.get(url)
            elapsed = ms_since(t0)
            response.raise_for_status()
            if i >= warmup:
                samples.append(elapsed)
        self.figures.append(
            Figure(
                "sp.healthz",
                "sessionpool",
                "GET /healthz round trip (HTTP floor, for reference)",
                "ms",
                samples,
                "same client and connection; no engine work",
            )
        )

    def after_idle(self, client: httpx.Client, execute: httpx.URL) -> None:
        """Diagnostic: print(1) and /healthz each after an idle gap, not back to back."""
        assert self.server is not None
        n = self.sizes.idle
        healthz = httpx.URL(self.server.url + "/healthz")
        prints: list[float] = []
        probes: list[float] = []
        for i in range(n + 2):
            time.sleep(IDLE_GAP_S)
            t0 = time.perf_counter()
            response = client.post(execute, content=PRINT_1)
            elapsed = ms_since(t0)
            check_execute(response, "print(1)", stdout="1\n")
            time.sleep(IDLE_GAP_S)
            t1 = time.perf_counter()
            client.get(healthz).raise_for_status()
            if i >= 2:
                prints.append(elapsed)
                probes.append(ms_since(t1))
        gap = f"{IDLE_GAP_S * 1000:g} ms"
        self.figures.append(
            Figure(
                "sp.print_1_idle",
                "sessionpool",
                f"print(1) round trip in a used session after {gap} idle (diagnostic)",
                "ms",
                prints,
                "compare with the back-to-back print(1): the cost of waking an idle machine",
            )
        )
        self.figures.append(
            Figure(
                "sp.healthz_idle",
                "sessionpool",
                f"GET /healthz round trip after {gap} idle (diagnostic)",
                "ms",
                probes,
            )
        )

    # concurrent phases --------------------------------------------------------------------------

    async def concurrent(self, headers: dict[str, str]) -> None:
        """The burst and throughput, each twice: one AsyncClient per agent (the figures with
        targets), and one AsyncClient shared by all (what the brief names; client-bound)."""
        sizes = self.sizes

        def new_client(connections: int) -> httpx.AsyncClient:
            limits = httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                # below uvicorn's 5 s keep-alive timeout, so the client never picks a
                # connection the server is closing
                keepalive_expiry=4.0,
            )
            # verify=False: plain http; building a verifying SSL context costs ~20 ms per client
            return httpx.AsyncClient(
                headers=headers,
                timeout=120.0,
                limits=limits,
                http1=True,
                http2=False,
                verify=False,
            )

        async with contextlib.AsyncExitStack() as stack:
            shared = await stack.enter_async_context(new_client(sizes.burst + 16))
            own = [
                await stack.enter_async_context(new_client(1))
                for _ in range(max(sizes.burst, sizes.tp_sessions))
            ]
            with self.meter.phase("sessionpool.burst"):
                await self.burst(shared, own[: sizes.burst], "sp.burst", "one AsyncClient each")
            with self.meter.phase("sessionpool.burst_shared_client"):
                await self.burst(
                    shared, [shared] * sizes.burst, "sp.burst_shared", "one shared AsyncClient"
                )
            await self.async_wait_ready(shared)
            with self.meter.phase("sessionpool.throughput"):
                await self.throughput(
                    shared, own[: sizes.tp_sessions], "sp.throughput", "one AsyncClient each"
                )
            await self.async_wait_ready(shared)
            with self.meter.phase("sessionpool.throughput_shared_client"):
                await self.throughput(
                    shared,
                    [shared] * sizes.tp_sessions,
                    "sp.throughput_shared",
                    "one shared AsyncClient",
                )

    async def open_connections(self, clients: Sequence[httpx.AsyncClient]) -> None:
        """One connection per entry, open before timing: the figures measure the server, not
        connect(). Done just before each phase, as uvicorn closes idle connections after 5 s."""
        assert self.server is not None
        url = self.server.url + "/healthz"
        await asyncio.gather(*(c.get(url) for c in clients))
        await asyncio.sleep(0.05)

    async def async_wait_ready(self, client: httpx.AsyncClient, timeout: float = 120.0) -> None:
        assert self.server is not None
        end = time.monotonic() + timeout
        while (await client.get(self.server.url + "/readyz")).status_code != 200:
            if time.monotonic() > end:
                raise RuntimeError(f"the pools did not refill in {timeout:g} s")
            await asyncio.sleep(0.01)

    def zygotes(self) -> set[int]:
        """Pids of the server's zygote processes now (one per template; more while rotating)."""
        assert self.server is not None and self.server.process is not None
        pid = self.server.process.pid
        found: set[int] = set()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    for child in f.read().split():
                        with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline") as c:
                            if "sandbox.zygote" in c.read():
                                found.add(int(child))
        return found

    async def burst(
        self,
        control: httpx.AsyncClient,
        clients: Sequence[httpx.AsyncClient],
        key: str,
        how: str,
    ) -> None:
        assert self.server is not None and self.server.process is not None
        n = len(clients)
        self.log(f"sessionpool: burst of {n} new identifiers ({how}; {BURST_READY} ready)")
        await self.async_wait_ready(control)
        await asyncio.sleep(0.5)
        await self.open_connections(clients)
        idents = [self.ident("burst") for _ in range(n)]
        payload = PRINT_1
        outcomes: Counter[str] = Counter()
        messages: dict[str, str] = {}  # the first error body of each kind

        async def one(client: httpx.AsyncClient, ident: str) -> float | None:
            url = self.execute_url(BURST_POOL, ident)
            return await _common.timed_print_1(client, url, payload, outcomes, messages)

        zygotes_before = self.zygotes()
        server_pid = self.server.process.pid
        below = descendants(server_pid)
        below0 = tree_cpu_seconds(below)
        server0, cpu0 = process_cpu_seconds(server_pid), time.process_time()
        busy0, total0 = cpu_times()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(c, i) for c, i in zip(clients, idents, strict=True)))
        wall = ms_since(t0)
        busy1, total1 = cpu_times()
        client_cpu = (time.process_time() - cpu0) * 1000
        server_cpu = (process_cpu_seconds(server_pid) - server0) * 1000
        # the zygotes and sessions: those there before, by difference; the new ones, all their CPU
        after = descendants(server_pid)
        new = sorted(set(after) - set(below))
        sessions_cpu = (tree_cpu_seconds(below) - below0 + tree_cpu_seconds(new)) * 1000
        machine = (busy1 - busy0) / max(1, total1 - total0)
        used = machine * (os.cpu_count() or 1) * wall
        rest = max(0.0, used - client_cpu - server_cpu - sessions_cpu)
        zygotes_after = self.zygotes()
        ok = [r for r in results if r is not None]
        info = {
            "requests": n,
            "succeeded": len(ok),
            "outcomes": dict(outcomes),
            "errors": messages,
            "wall_ms": round(wall, 1),
            "client_cpu_ms": round(client_cpu, 1),
            "server_process_cpu_ms": round(server_cpu, 1),
            "zygotes_and_sessions_cpu_ms": round(sessions_cpu, 1),
            "rest_of_machine_cpu_ms": round(rest, 1),
            "machine_busy": round(machine, 3),
            "zygotes_started_during": len(zygotes_after - zygotes_before),
        }
        self.extra[key] = info
        self.log(
            f"  {len(ok)}/{n} ok; all answered in {wall:.0f} ms; CPU: client {client_cpu:.0f} ms, "
            f"server process {server_cpu:.0f} ms, zygotes and sessions {sessions_cpu:.0f} ms, "
            f"rest {rest:.0f} ms (machine {machine:.0%} busy); new zygotes "
            f"{info['zygotes_started_during']}; outcomes {dict(outcomes)}"
        )
        for outcome, text in messages.items():
            self.log(f"    {outcome}: {text}")
        # failed requests count against the success rate, not in the latency percentiles
        self.figures.append(
            Figure(
                key,
                "sessionpool",
                f"burst of {n} new identifiers -> print(1) result ({how})",
                "ms",
                ok,
                f"asyncio.gather, {how}, connections opened beforehand; {BURST_READY} ready, the "
                f"rest forked on demand; {len(ok)}/{n} succeeded; all answered in {wall:.0f} ms; "
                f"client CPU {client_cpu:.0f} ms",
                count=n,
            )
        )
        deletes = await asyncio.gather(
            *(control.delete(self.session_url(BURST_POOL, i)) for i in idents)
        )
        bad = [r.status_code for r in deletes if r.status_code != 204]
        if bad:
            raise RuntimeError(f"DELETE session after the burst: {Counter(bad)}")

    async def throughput(
        self,
        control: httpx.AsyncClient,
        clients: Sequence[httpx.AsyncClient],
        key: str,
        how: str,
    ) -> None:
        assert self.server is not None and self.server.process is not None
        sessions = len(clients)
        seconds, warmup = self.sizes.tp_seconds, self.sizes.tp_warmup_seconds
        self.log(f"sessionpool: throughput, {sessions} sessions x {seconds:g} s ({how})")
        idents = [self.ident("tp") for _ in range(sessions)]
        urls = [httpx.URL(self.execute_url(WARM_POOL, i)) for i in idents]
        zero = json.dumps(execute_body("x = 0")).encode()
        for url in urls:  # allocate one by one, not timed
            check_execute(await control.post(url, content=zero), "x = 0")
        await self.async_wait_ready(control)
        await asyncio.sleep(0.5)
        await self.open_connections(clients)
        payload = json.dumps(execute_body("x += 1")).encode()
        loop_start = time.perf_counter()
        window_start = loop_start + warmup
        window_end = window_start + seconds
        counts = [0] * sessions  # every execution, to check x afterwards
        in_window: list[float] = []  # latencies of the executions completed in the window
        marks: dict[str, float] = {}
        server_pid = self.server.process.pid

        async def worker(k: int) -> None:
            client, url = clients[k], urls[k]
            while time.perf_counter() < window_end:
                t0 = time.perf_counter()
                response = await client.post(url, content=payload)
                t1 = time.perf_counter()
                check_execute(response, "x += 1")
                counts[k] += 1
                if window_start <= t1 <= window_end:
                    in_window.append((t1 - t0) * 1000)

        below = descendants(server_pid)  # zygotes and sessions (none start or end meanwhile)

        def mark(suffix: str) -> None:
            marks["client" + suffix] = time.process_time()
            marks["server" + suffix] = process_cpu_seconds(server_pid)
            marks["sessions" + suffix] = tree_cpu_seconds(below)
            marks["busy" + suffix], marks["total" + suffix] = cpu_times()
            marks["t" + suffix] = time.perf_counter()

        async def meter() -> None:
            await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
            mark("0")
            await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
            mark("1")

        await asyncio.gather(meter(), *(worker(k) for k in range(sessions)))
        rate = len(in_window) / seconds
        x = json.dumps(execute_body("x")).encode()
        checks = await asyncio.gather(*(control.post(url, content=x) for url in urls))
        for k, response in enumerate(checks):
            got = check_execute(response, "x")["result"]
            if str(got) != str(counts[k]):
                raise RuntimeError(f"session {idents[k]}: x is {got!r}, expected {counts[k]}")
        executions = max(1, len(in_window))
        window = marks["t1"] - marks["t0"]
        machine = (marks["busy1"] - marks["busy0"]) / max(1, marks["total1"] - marks["total0"])
        client_cpu = marks["client1"] - marks["client0"]
        server_cpu = marks["server1"] - marks["server0"]
        sessions_cpu = marks["sessions1"] - marks["sessions0"]
        used = machine * (os.cpu_count() or 1) * window
        rest = max(0.0, used - client_cpu - server_cpu - sessions_cpu)
        per_exec = {
            "client": client_cpu / executions * 1000,
            "server process": server_cpu / executions * 1000,
            "session kernels + zygotes": sessions_cpu / executions * 1000,
            "rest of the machine (OS, other work)": rest / executions * 1000,
        }
        self.extra[key] = {
            "executions_in_window": len(in_window),
            "window_s": round(window, 3),
            "machine_busy": round(machine, 3),
            "cpu_ms_per_execution": {k: round(v, 3) for k, v in per_exec.items()},
        }
        self.log(
            f"  {rate:,.0f} exec/s; machine {machine:.0%} busy; CPU ms per execution: "
            + ", ".join(f"{k} {v:.3f}" for k, v in per_exec.items())
        )
        self.figures.append(
            Figure(
                key + "_latency",
                "sessionpool",
                f"x += 1 round trip under load ({sessions} sessions, {how})",
                "ms",
                in_window,
            )
        )
        self.figures.append(
            Figure(
                key,
                "sessionpool",
                f"throughput, {sessions} sessions running x += 1 ({how})",
                "exec/s",
                note=f"{sessions} async tasks, {how}; executions completed in a {seconds:g} s "
                f"window after {warmup:g} s of warm-up; CPU ms per execution: "
                + ", ".join(f"{k} {v:.3f}" for k, v in per_exec.items()),
                value=rate,
                count=len(in_window),
            )
        )
        await asyncio.gather(*(control.delete(self.session_url(WARM_POOL, i)) for i in idents))


# -- jupyter_client + ipykernel -------------------------------------------------------------------


class PeerBench(_common.IpykernelPeer):
    """jupyter_client + ipykernel: start and x += 1."""

    def run(self) -> None:
        with self.meter.phase("ipykernel.start"):
            self.start()
        with self.meter.phase("ipykernel.x_plus_1"):
            self.roundtrip()

    def start(self) -> None:
        self.log(f"ipykernel: start_kernel -> first result x{self.sizes.peer_start}")
        samples, _ = self.time_starts(self.sizes.peer_start)
        self.figures.append(
            Figure(
                "ipk.start",
                "ipykernel",
                "start_kernel -> first execute_reply of print(1)",
                "ms",
                samples,
                "KernelManager + blocking client; no preloaded modules",
            )
        )

    def roundtrip(self) -> None:
        n, warmup = self.sizes.peer_roundtrip, self.sizes.peer_roundtrip_warmup
        self.log(f"ipykernel: x += 1 x{n}")
        with self.kernel() as (_, kc):
            samples, _ = self.time_x_plus_1(kc, n, warmup)  # to iopub idle: engine.py reports it
        self.add_x_plus_1(samples)


# -- report ---------------------------------------------------------------------------------------


def cpu_lines(by_key: dict[str, Figure], extra: dict[str, Any]) -> list[str]:
    """Where the CPU went in the throughput windows and the bursts, below the targets."""
    lines: list[str] = []
    for key in ("sp.throughput", "sp.throughput_shared"):
        if key in extra:
            lines.append(
                f"CPU per execution in the {by_key[key].label} window: "
                + ", ".join(
                    f"{k} {v:.3f} ms" for k, v in extra[key]["cpu_ms_per_execution"].items()
                )
                + f" (machine {extra[key]['machine_busy']:.0%} busy)"
            )
    for key in ("sp.burst", "sp.burst_shared"):
        if key in extra:
            b = extra[key]
            lines.append(
                f"{by_key[key].label}: all answered in {b['wall_ms']:.0f} ms; CPU: client "
                f"{b['client_cpu_ms']:.0f} ms, server process {b['server_process_cpu_ms']:.0f} ms, "
                f"zygotes and sessions {b['zygotes_and_sessions_cpu_ms']:.0f} ms, rest of the "
                f"machine (processes that exited, kernel threads, other work) "
                f"{b['rest_of_machine_cpu_ms']:.0f} ms (machine {b['machine_busy']:.0%} busy); "
                "zygotes started during it: "
                f"{b['zygotes_started_during']}"
            )
    return lines


ORDER = [
    "sp.warm",
    "sp.first_cell",
    "sp.exhausted",
    "ipk.start",
    "sp.x_plus_1",
    "ipk.x_plus_1",
    "sp.print_1",
    "sp.print_1_idle",
    "sp.healthz",
    "sp.healthz_idle",
    "sp.burst",
    "sp.burst_shared",
    "sp.throughput",
    "sp.throughput_latency",
    "sp.throughput_shared",
    "sp.throughput_shared_latency",
]


def build_report(
    figures: list[Figure], meta: dict[str, Any], extra: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    figures.sort(key=lambda f: ORDER.index(f.key) if f.key in ORDER else len(ORDER))
    return _common.build_report(
        figures, TARGETS, meta, extra, after_targets=lambda by_key: cpu_lines(by_key, extra)
    )


def machine_meta(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    packages = (
        "sessionpool",
        "httpx",
        "uvicorn",
        "uvloop",
        "fastapi",
        "jupyter_client",
        "ipykernel",
        "ipython",
    )
    about = {
        "server": "sessionpool serve on 127.0.0.1, jail backend, default template and server "
        f"settings (access log on), pools {WARM_POOL} (ready {WARM_READY}), {COLD_POOL} "
        f"(ready 0), {BURST_POOL} (ready {BURST_READY})",
        "client": "httpx, HTTP/1.1 keep-alive; sync Client for sequential figures, one "
        "AsyncClient on uvloop for the burst and throughput",
    }
    return _common.machine_meta(args, sizes, packages, after_sizes={}, after_versions=about)


def measure(sizes: Sizes, log: Callable[[str], None], meter: PhaseMeter) -> Bench:
    sp = HttpBench(sizes, log, meter)
    sp.run()
    return sp


def main(argv: list[str] | None = None) -> int:
    return _common.main(
        __doc__,
        argv,
        "http",
        lambda quick: QUICK if quick else FULL,
        measure,
        PeerBench,
        machine_meta,
        build_report,
    )


if __name__ == "__main__":
    sys.exit(main())
