#!/usr/bin/env python3
"""Engine benchmark: sessionpool against jupyter_client + ipykernel, same machine, same run.

Run as root (the jail backend needs it)::

    .venv/bin/python benchmarks/engine.py [--quick] [--json PATH] [--wait-quiet SECONDS]

Prints a Markdown table (figures, targets from issue 2 with PASS/MISS) and then the same as
JSON, which is also written to ``--json`` or to ``benchmarks/results/engine-<UTC date>.json``.
``--quick`` takes well under two minutes, the full run a few minutes.

What is measured (``time.perf_counter`` wall times in the benchmark process, which hosts the
engine exactly as the server does; nearest-rank percentiles; warm-ups discarded):

- **warm allocation**: a pool with ready sessions; ``acquire(new identifier)`` + ``execute
  ("print(1)")``. Before each sample the pool is back at its ready target and the machine has
  had ``SETTLE_S`` to finish the previous teardown (neither is timed). The refill that the
  acquire triggers runs concurrently with the timed execute, as it does in production.
  Peer: ``start_kernel`` -> ``wait_for_ready`` -> first ``execute_reply`` of ``print(1)``.
- **on-demand fork**: the same with a pool that keeps no ready session (``ready_sessions=0``),
  so every acquire creates the slot, forks, jails, attaches cgroups and warms a kernel.
- **x += 1**: the round trip of ``x += 1`` in one session after ``x = 0`` (peer: send ->
  ``execute_reply``; send -> iopub ``idle`` is recorded too).
- **PNG**: a cell that leaves one small matplotlib figure open; execute returns its PNG (peer:
  send -> ``display_data`` PNG received and iopub ``idle``).
- **memory**: USS (Private_Clean + Private_Dirty) and PSS from ``/proc/PID/smaps_rollup`` of
  every idle session after a pandas cell, at two session counts (the pool's default
  ``zygote_max_children`` applies, so the larger count may span two zygotes); the same per
  ipykernel process at a small count; /proc/meminfo growth per session between the counts.

Latency on a 2-CPU machine moves with other work: the record includes how busy the machine was
before and during each phase, and whether cgroup ``favordynmods`` is on (it changes the cost of
a cgroup attach on the on-demand path from ~8 ms to ~0.2 ms). ``--wait-quiet`` waits for an
idle machine first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.pool import Pool
from sessionpool.types import ExecutionResult, ExecutionStatus

MB = 1_000_000  # memory is reported in decimal MB, as in the probes

PANDAS_CELL = (
    "import pandas as pd, numpy as np; "
    "df = pd.DataFrame({'a': np.arange(1000), 'b': np.random.rand(1000), 'c': ['x']*1000}); "
    "df.describe()"
)
PLOT_CELL = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(4, 3))\n"
    "ax.plot([1, 3, 2, 4], marker='o')\n"
    "ax.set_title('bench');\n"
)

WARM_POOL = "warm"
COLD_POOL = "cold"
DENSITY_POOL = "density"
WARM_TARGET = 4  # ready sessions kept by the warm pool


@dataclass(frozen=True)
class Sizes:
    warm: int
    on_demand: int
    roundtrip: int
    roundtrip_warmup: int
    png: int
    png_warmup: int
    densities: tuple[int, int]
    peer_start: int
    peer_density: int


FULL = Sizes(
    warm=200,
    on_demand=100,
    roundtrip=2000,
    roundtrip_warmup=50,
    png=50,
    png_warmup=3,
    densities=(50, 200),
    peer_start=30,
    peer_density=10,
)
QUICK = Sizes(
    warm=40,
    on_demand=30,
    roundtrip=300,
    roundtrip_warmup=20,
    png=10,
    png_warmup=2,
    densities=(20, 50),
    peer_start=5,
    peer_density=5,
)
ALLOC_WARMUP = 3  # allocation samples discarded before timing
#: pause before each allocation sample so the previous session's teardown (netns, cgroup and
#: tmpfs release run asynchronously in the kernel) is not measured as allocation latency
SETTLE_S = 0.02


# -- statistics -----------------------------------------------------------------------------------


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (pct in (0, 100])."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Figure:
    """One measured quantity: a distribution of samples in ``unit``."""

    key: str
    system: str  # "sessionpool" or "ipykernel"
    label: str
    unit: str  # "ms" or "MB"
    samples: list[float] = field(repr=False)
    note: str = ""

    def summary(self) -> dict[str, float | int]:
        values = sorted(self.samples)
        return {
            "n": len(values),
            "p50": nearest_rank(values, 50),
            "p95": nearest_rank(values, 95),
            "p99": nearest_rank(values, 99),
            "mean": statistics.fmean(values) if values else math.nan,
            "min": values[0] if values else math.nan,
            "max": values[-1] if values else math.nan,
        }

    @property
    def p50(self) -> float:
        return nearest_rank(sorted(self.samples), 50)


@dataclass
class Target:
    """A goal from the issue: ``figure``'s p50 compared with ``limit``."""

    figure: str
    text: str
    check: Callable[[dict[str, Figure]], tuple[bool, str]]


def _p50_at_most(
    key: str, limit: float, unit: str
) -> Callable[[dict[str, Figure]], tuple[bool, str]]:
    def check(figures: dict[str, Figure]) -> tuple[bool, str]:
        value = figures[key].p50
        return value <= limit, f"p50 {value:.3f} {unit} <= {limit:g} {unit}"

    return check


def _speedup(key: str, peer: str, factor: float) -> Callable[[dict[str, Figure]], tuple[bool, str]]:
    def check(figures: dict[str, Figure]) -> tuple[bool, str]:
        ratio = figures[peer].p50 / figures[key].p50
        return ratio >= factor, f"{ratio:.1f}x faster than ipykernel (>= {factor:g}x)"

    return check


TARGETS = [
    Target("sp.warm", "warm allocation p50 <= 1 ms", _p50_at_most("sp.warm", 1.0, "ms")),
    Target("sp.on_demand", "on-demand p50 <= 15 ms", _p50_at_most("sp.on_demand", 15.0, "ms")),
    Target("sp.x_plus_1", "x += 1 p50 <= 0.5 ms", _p50_at_most("sp.x_plus_1", 0.5, "ms")),
    Target(
        "sp.x_plus_1",
        "x += 1 >= 5x faster than ipykernel (execute_reply)",
        _speedup("sp.x_plus_1", "ipk.x_plus_1", 5.0),
    ),
]


def uss_targets(keys: list[str]) -> list[Target]:
    return [Target(k, "USS <= 15 MB per idle session", _p50_at_most(k, 15.0, "MB")) for k in keys]


# -- /proc helpers --------------------------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup in bytes."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def uss_pss(pid: int) -> tuple[float, float]:
    """(USS, PSS) in MB; USS = Private_Clean + Private_Dirty."""
    f = smaps_rollup(pid)
    return (f["Private_Clean"] + f["Private_Dirty"]) / MB, f["Pss"] / MB


MEMINFO_FIELDS = (
    "MemAvailable",
    "AnonPages",
    "Shmem",
    "Slab",
    "SUnreclaim",
    "PageTables",
    "KernelStack",
    "Percpu",
)


def meminfo() -> dict[str, int]:
    """The fields of /proc/meminfo named in MEMINFO_FIELDS, in bytes."""
    values: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in MEMINFO_FIELDS:
                values[name] = int(rest.split()[0]) * 1024
    return values


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_busy(window: float = 1.0) -> float:
    """Fraction of all CPUs busy during ``window`` seconds (other work on the machine)."""
    b0, t0 = cpu_times()
    time.sleep(window)
    b1, t1 = cpu_times()
    return (b1 - b0) / max(1, t1 - t0)


class PhaseMeter:
    """How busy the whole machine was during each phase (our own work included)."""

    def __init__(self) -> None:
        self.busy: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        b0, t0 = cpu_times()
        try:
            yield
        finally:
            b1, t1 = cpu_times()
            self.busy[name] = round((b1 - b0) / max(1, t1 - t0), 3)


def wait_quiet(limit_s: float, threshold: float, log: Callable[[str], None]) -> float:
    """Wait up to ``limit_s`` for a 2 s window with the machine below ``threshold`` busy."""
    end = time.monotonic() + limit_s
    busy = cpu_busy(2.0)
    while busy > threshold and time.monotonic() < end:
        log(f"machine {busy:.0%} busy; waiting for it to quiet down")
        busy = cpu_busy(2.0)
    return busy


def cgroup_favordynmods() -> str:
    """Whether cgroup attaches take the fast per-threadgroup lock on this boot.

    The ``favordynmods`` cgroup mount option turns an attach from one RCU grace period (~8 ms
    on an idle v1 host) into ~0.2 ms; on recent kernels it is a one-way switch that stays on
    until reboot even after the mount is gone, which the kernel log records. On-demand figures
    depend on it, so it is part of the record.
    """
    with open("/proc/mounts") as f:
        if any(
            line.split()[2] in ("cgroup", "cgroup2") and "favordynmods" in line.split()[3]
            for line in f
        ):
            return "on (a cgroup hierarchy is mounted with favordynmods)"
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if "per threadgroup rwsem mechanism can't be disabled" in log:
        return "on (enabled earlier in this boot, see the kernel log)"
    return "off"


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


# -- sessionpool ----------------------------------------------------------------------------------


def expect_ok(result: ExecutionResult, what: str) -> None:
    if result.status is not ExecutionStatus.OK:
        detail = result.error.evalue if result.error else result.stderr
        raise RuntimeError(f"{what}: {result.status.value}: {detail}")


async def wait_ready(pool: Pool, target: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while pool.ready_count < target:
        if time.monotonic() > end:
            raise RuntimeError(f"pool {pool.name} did not refill to {target} in {timeout:g} s")
        await asyncio.sleep(0.002)


class SessionpoolBench:
    def __init__(self, sizes: Sizes, log: Callable[[str], None], meter: PhaseMeter) -> None:
        self.sizes = sizes
        self.log = log
        self.meter = meter
        self.figures: list[Figure] = []
        self.extra: dict[str, Any] = {}
        self._ids = iter(range(1 << 30))

    def ident(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    async def run(self) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="sessionpool-bench-"))
        sizes = self.sizes
        max_sessions = max(sizes.densities) + 64
        engine = Engine(
            EngineConfig(backend="jail", data_dir=data_dir),
            [
                PoolConfig(
                    name=WARM_POOL,
                    ready_sessions=WARM_TARGET,
                    max_sessions=max_sessions,
                    cooldown_seconds=3600,
                ),
                PoolConfig(
                    name=COLD_POOL,
                    ready_sessions=0,
                    max_sessions=max_sessions,
                    cooldown_seconds=3600,
                ),
                PoolConfig(
                    name=DENSITY_POOL,
                    ready_sessions=0,
                    max_sessions=max_sessions,
                    cooldown_seconds=3600,
                ),
            ],
        )
        t0 = time.perf_counter()
        await engine.start()
        self.extra["engine_start_ms"] = ms_since(t0)
        try:
            await wait_ready(engine.pool(WARM_POOL), WARM_TARGET)
            with self.meter.phase("sessionpool.warm"):
                await self.warm_allocation(engine.pool(WARM_POOL))
            with self.meter.phase("sessionpool.on_demand"):
                await self.on_demand(engine.pool(COLD_POOL))
            with self.meter.phase("sessionpool.x_plus_1"):
                await self.roundtrip(engine.pool(WARM_POOL))
            with self.meter.phase("sessionpool.png"):
                await self.png(engine.pool(WARM_POOL))
            with self.meter.phase("sessionpool.memory"):
                await self.density(engine.pool(DENSITY_POOL))
        finally:
            t0 = time.perf_counter()
            await engine.close()
            self.extra["engine_close_ms"] = ms_since(t0)
            shutil.rmtree(data_dir, ignore_errors=True)

    async def _allocate(self, pool: Pool, prefix: str) -> float:
        ident = self.ident(prefix)
        t0 = time.perf_counter()
        session = await pool.acquire(ident)
        result = await session.execute("print(1)")
        elapsed = ms_since(t0)
        expect_ok(result, "print(1)")
        if result.stdout != "1\n":
            raise RuntimeError(f"print(1) printed {result.stdout!r}")
        await pool.delete(ident)
        return elapsed

    async def warm_allocation(self, pool: Pool) -> None:
        self.log(f"sessionpool: warm allocation x{self.sizes.warm}")
        samples: list[float] = []
        for i in range(ALLOC_WARMUP + self.sizes.warm):
            await wait_ready(pool, WARM_TARGET)  # the refill is not timed
            await asyncio.sleep(SETTLE_S)
            elapsed = await self._allocate(pool, "warm")
            if i >= ALLOC_WARMUP:
                samples.append(elapsed)
        await wait_ready(pool, WARM_TARGET)
        self.figures.append(
            Figure(
                "sp.warm",
                "sessionpool",
                "warm-pool allocation -> first result of print(1)",
                "ms",
                samples,
                f"acquire + execute; {WARM_TARGET} ready sessions, refilled between samples",
            )
        )

    async def on_demand(self, pool: Pool) -> None:
        self.log(f"sessionpool: on-demand fork x{self.sizes.on_demand}")
        samples: list[float] = []
        for i in range(ALLOC_WARMUP + self.sizes.on_demand):
            await asyncio.sleep(SETTLE_S)
            elapsed = await self._allocate(pool, "cold")
            if i >= ALLOC_WARMUP:
                samples.append(elapsed)
        self.figures.append(
            Figure(
                "sp.on_demand",
                "sessionpool",
                "on-demand fork -> first result of print(1)",
                "ms",
                samples,
                "ready_sessions=0: fork + jail + cgroups + warm-up cell + print(1)",
            )
        )

    async def roundtrip(self, pool: Pool) -> None:
        n, warmup = self.sizes.roundtrip, self.sizes.roundtrip_warmup
        self.log(f"sessionpool: x += 1 x{n}")
        ident = self.ident("rt")
        session = await pool.acquire(ident)
        expect_ok(await session.execute("x = 0"), "x = 0")
        samples: list[float] = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            result = await session.execute("x += 1")
            elapsed = ms_since(t0)
            expect_ok(result, "x += 1")
            if i >= warmup:
                samples.append(elapsed)
        check = await session.execute("x")
        expect_ok(check, "x")
        got = check.result.data.get("text/plain") if check.result else None
        if got != str(warmup + n):
            raise RuntimeError(f"x is {got!r}, expected {warmup + n}")
        await pool.delete(ident)
        await wait_ready(pool, WARM_TARGET)
        self.figures.append(
            Figure("sp.x_plus_1", "sessionpool", "x += 1 round trip", "ms", samples, "execute()")
        )

    async def png(self, pool: Pool) -> None:
        n, warmup = self.sizes.png, self.sizes.png_warmup
        self.log(f"sessionpool: PNG x{n}")
        ident = self.ident("png")
        session = await pool.acquire(ident)
        samples: list[float] = []
        sizes: list[int] = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            result = await session.execute(PLOT_CELL)
            elapsed = ms_since(t0)
            expect_ok(result, "plot cell")
            if len(result.images) != 1:
                raise RuntimeError(f"plot cell returned {len(result.images)} PNGs, expected 1")
            if i >= warmup:
                samples.append(elapsed)
                sizes.append(len(result.images[0]))
        await pool.delete(ident)
        await wait_ready(pool, WARM_TARGET)
        self.figures.append(
            Figure(
                "sp.png",
                "sessionpool",
                "PNG round trip (one small plot)",
                "ms",
                samples,
                f"PNG {statistics.median(sizes) / 1000:.1f} kB",
            )
        )

    async def density(self, pool: Pool) -> None:
        low, high = self.sizes.densities
        self.log(f"sessionpool: memory at N={low} and N={high}")
        live: list[int] = []  # host pids of the density sessions

        async def grow(to: int) -> None:
            while len(live) < to:
                ident = self.ident("mem")
                session = await pool.acquire(ident)
                result = await session.execute(PANDAS_CELL)
                expect_ok(result, "pandas cell")
                assert session.kernel is not None
                live.append(session.kernel.pid)

        async def snapshot(n: int) -> dict[str, int]:
            await asyncio.sleep(1.0)  # idle: let teardown of earlier sessions finish
            info = meminfo()
            uss, pss = zip(*(uss_pss(pid) for pid in live), strict=True)
            # sessions are children of their zygote; zygote_max_children may rotate it
            self.extra[f"zygotes_at_n{n}"] = len({parent_pid(pid) for pid in live})
            self.figures.append(
                Figure(
                    f"sp.uss.{n}",
                    "sessionpool",
                    f"USS per idle session, N={n}",
                    "MB",
                    list(uss),
                    "after the pandas cell; Private_Clean + Private_Dirty",
                )
            )
            self.figures.append(
                Figure(
                    f"sp.pss.{n}",
                    "sessionpool",
                    f"PSS per idle session, N={n}",
                    "MB",
                    list(pss),
                    "after the pandas cell",
                )
            )
            return info

        gc.collect()
        await asyncio.sleep(1.0)
        await grow(low)
        info_low = await snapshot(low)
        await grow(high)
        info_high = await snapshot(high)
        per_session = {
            name: round((info_low[name] - info_high[name]) / (high - low) / MB, 3)
            if name == "MemAvailable"
            else round((info_high[name] - info_low[name]) / (high - low) / MB, 3)
            for name in info_low
        }
        self.extra["memavailable_drop_per_session_mb"] = per_session["MemAvailable"]
        self.extra["meminfo_growth_per_session_mb"] = per_session
        self.extra["memavailable_drop_note"] = (
            f"/proc/meminfo from N={low} to N={high}, divided by {high - low} (MemAvailable: its "
            "drop). Machine-wide: includes page tables, slab, namespaces, cgroups, tmpfs, and "
            "anything else running on the machine at the time"
        )
        t0 = time.perf_counter()
        await asyncio.gather(*(pool.delete(s.identifier) for s in pool.sessions()))
        self.extra["delete_density_sessions_ms"] = ms_since(t0)


# -- jupyter_client + ipykernel -------------------------------------------------------------------


class PeerBench:
    def __init__(self, sizes: Sizes, log: Callable[[str], None], meter: PhaseMeter) -> None:
        self.sizes = sizes
        self.log = log
        self.meter = meter
        self.figures: list[Figure] = []
        self.extra: dict[str, Any] = {}

    def run(self) -> None:
        with self.meter.phase("ipykernel.start"):
            self.start()
        with self.meter.phase("ipykernel.x_plus_1+png"):
            self.steady()
        with self.meter.phase("ipykernel.memory"):
            self.density()

    @contextlib.contextmanager
    def kernel(self) -> Iterator[tuple[Any, Any]]:
        from jupyter_client.manager import KernelManager

        km = KernelManager(kernel_name="python3")
        km.start_kernel(stderr=subprocess.DEVNULL)
        kc = km.client()
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            yield km, kc
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    @staticmethod
    def _reply(kc: Any, msg_id: str, timeout: float = 60.0) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    @staticmethod
    def _until_idle(kc: Any, msg_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """iopub messages of ``msg_id`` up to and including its ``idle`` status."""
        seen: list[dict[str, Any]] = []
        while True:
            msg: dict[str, Any] = kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return seen

    def _run(self, kc: Any, code: str) -> list[dict[str, Any]]:
        msg_id = kc.execute(code)
        reply = self._reply(kc, msg_id)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"ipykernel: {code!r} failed: {reply['content']}")
        return self._until_idle(kc, msg_id)

    def start(self) -> None:
        from jupyter_client.manager import KernelManager

        self.log(f"ipykernel: start -> first result x{self.sizes.peer_start}")
        samples: list[float] = []
        shutdown: list[float] = []
        for i in range(1 + self.sizes.peer_start):
            km = KernelManager(kernel_name="python3")
            kc = None
            t0 = time.perf_counter()
            try:
                km.start_kernel(stderr=subprocess.DEVNULL)
                kc = km.client()
                kc.start_channels()
                kc.wait_for_ready(timeout=60)
                msg_id = kc.execute("print(1)")
                reply = self._reply(kc, msg_id)
                elapsed = ms_since(t0)
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"ipykernel: print(1) failed: {reply['content']}")
                out = [
                    m["content"]["text"]
                    for m in self._until_idle(kc, msg_id)
                    if m["msg_type"] == "stream"
                ]
                if "".join(out) != "1\n":
                    raise RuntimeError(f"ipykernel: print(1) printed {out!r}")
            finally:
                if kc is not None:
                    kc.stop_channels()
                t1 = time.perf_counter()
                km.shutdown_kernel(now=True)
                shutdown.append(ms_since(t1))
            if i >= 1:
                samples.append(elapsed)
        self.figures.append(
            Figure(
                "ipk.start",
                "ipykernel",
                "start_kernel -> ready -> first execute_reply of print(1)",
                "ms",
                samples,
                "KernelManager + blocking client; pandas not imported",
            )
        )
        self.extra["ipykernel_shutdown_ms_p50"] = nearest_rank(sorted(shutdown[1:]), 50)

    def steady(self) -> None:
        sizes = self.sizes
        self.log(f"ipykernel: x += 1 x{sizes.roundtrip}, PNG x{sizes.png}")
        with self.kernel() as (_, kc):
            self._run(kc, "x = 0")
            to_reply: list[float] = []
            to_idle: list[float] = []
            for i in range(sizes.roundtrip_warmup + sizes.roundtrip):
                t0 = time.perf_counter()
                msg_id = kc.execute("x += 1")
                reply = self._reply(kc, msg_id)
                t_reply = ms_since(t0)
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"ipykernel: x += 1 failed: {reply['content']}")
                self._until_idle(kc, msg_id)
                t_idle = ms_since(t0)
                if i >= sizes.roundtrip_warmup:
                    to_reply.append(t_reply)
                    to_idle.append(t_idle)
            self.figures.append(
                Figure(
                    "ipk.x_plus_1",
                    "ipykernel",
                    "x += 1 round trip",
                    "ms",
                    to_reply,
                    "send -> execute_reply (ZMQ, blocking client)",
                )
            )
            self.figures.append(
                Figure(
                    "ipk.x_plus_1_idle",
                    "ipykernel",
                    "x += 1 round trip, to iopub idle",
                    "ms",
                    to_idle,
                    "send -> iopub status idle",
                )
            )

            self._run(kc, "import matplotlib.pyplot as plt")
            samples: list[float] = []
            for i in range(sizes.png_warmup + sizes.png):
                t0 = time.perf_counter()
                msg_id = kc.execute(PLOT_CELL)
                msgs = self._until_idle(kc, msg_id)
                elapsed = ms_since(t0)
                self._reply(kc, msg_id)
                pngs = [
                    m
                    for m in msgs
                    if m["msg_type"] == "display_data" and "image/png" in m["content"]["data"]
                ]
                if len(pngs) != 1:
                    raise RuntimeError(f"ipykernel: plot cell gave {len(pngs)} PNGs, expected 1")
                if i >= sizes.png_warmup:
                    samples.append(elapsed)
            self.figures.append(
                Figure(
                    "ipk.png",
                    "ipykernel",
                    "PNG round trip (one small plot)",
                    "ms",
                    samples,
                    "send -> display_data(png) -> iopub idle",
                )
            )

    def density(self) -> None:
        n = self.sizes.peer_density
        self.log(f"ipykernel: memory at N={n}")
        with contextlib.ExitStack() as stack:
            pids: list[int] = []
            for _ in range(n):
                km, kc = stack.enter_context(self.kernel())
                self._run(kc, PANDAS_CELL)
                pid = getattr(km.provisioner, "pid", None)
                if not isinstance(pid, int):
                    raise RuntimeError("cannot find the ipykernel's pid")
                pids.append(pid)
            time.sleep(1.0)
            uss, pss = zip(*(uss_pss(pid) for pid in pids), strict=True)
            self.figures.append(
                Figure(
                    f"ipk.uss.{n}",
                    "ipykernel",
                    f"USS per idle kernel, N={n}",
                    "MB",
                    list(uss),
                    "after the pandas cell",
                )
            )
            self.figures.append(
                Figure(
                    f"ipk.pss.{n}",
                    "ipykernel",
                    f"PSS per idle kernel, N={n}",
                    "MB",
                    list(pss),
                    "after the pandas cell",
                )
            )


# -- report ---------------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "MB":
        return f"{value:.2f} MB"
    if value >= 100:
        return f"{value:.1f} ms"
    return f"{value:.3f} ms"


def build_report(
    figures: list[Figure], targets: list[Target], meta: dict[str, Any], extra: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    by_key = {f.key: f for f in figures}
    verdicts: dict[str, list[str]] = {}
    target_rows: list[dict[str, Any]] = []
    for t in targets:
        if t.figure not in by_key:
            continue
        try:
            ok, detail = t.check(by_key)
        except KeyError as exc:
            ok, detail = False, f"missing figure {exc}"
        verdicts.setdefault(t.figure, []).append(f"{'PASS' if ok else 'MISS'}: {detail}")
        target_rows.append({"figure": t.figure, "target": t.text, "pass": ok, "detail": detail})

    lines = [
        "| measurement | system | n | p50 | p95 | p99 | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for f in figures:
        s = f.summary()
        target = "; ".join(verdicts.get(f.key, [])) or "-"
        lines.append(
            f"| {f.label} | {f.system} | {s['n']} | {fmt(s['p50'], f.unit)} | "
            f"{fmt(s['p95'], f.unit)} | {fmt(s['p99'], f.unit)} | {target} |"
        )
    if "memavailable_drop_per_session_mb" in extra:
        lines.append("")
        lines.append(
            f"MemAvailable drop per session (N {meta['densities'][0]} -> {meta['densities'][1]}): "
            f"{extra['memavailable_drop_per_session_mb']:.2f} MB (machine-wide; of which "
            + ", ".join(
                f"{k} {v:+.2f}"
                for k, v in extra["meminfo_growth_per_session_mb"].items()
                if k != "MemAvailable"
            )
            + " MB)"
        )
    passed = sum(r["pass"] for r in target_rows)
    lines.append("")
    lines.append(f"Targets: {passed}/{len(target_rows)} met.")
    busy = meta.get("machine_busy_by_phase", {})
    lines.append(
        f"Machine: {meta['cpus']} CPUs, {meta['mem_total_gib']} GiB; "
        f"cgroup favordynmods {meta.get('cgroup_favordynmods')}; "
        f"{meta.get('cpu_busy_before', math.nan):.0%} busy before the run; busy by phase "
        "(our own work included): "
        + ", ".join(f"{name} {value:.0%}" for name, value in busy.items())
    )
    doc = {
        "meta": meta,
        "figures": [
            {
                "key": f.key,
                "system": f.system,
                "label": f.label,
                "unit": f.unit,
                "note": f.note,
                **f.summary(),
            }
            for f in figures
        ],
        "targets": target_rows,
        "extra": extra,
    }
    return "\n".join(lines), doc


def machine_meta(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    def version(module: str) -> str:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as v

        try:
            return v(module)
        except PackageNotFoundError:
            return "?"

    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "sizes": asdict(sizes),
        "densities": list(sizes.densities),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "versions": {
            name: version(name)
            for name in (
                "sessionpool",
                "jupyter_client",
                "ipykernel",
                "ipython",
                "pandas",
                "numpy",
                "matplotlib",
            )
        },
        "cgroup_favordynmods": cgroup_favordynmods(),
        "percentiles": "nearest-rank",
        "clock": "time.perf_counter",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sample sizes (< 2 minutes)")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    parser.add_argument("--skip-peer", action="store_true", help="measure sessionpool only")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be idle (other work skews latency)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "the jail backend needs root (per-session uids, namespaces, cgroups)", file=sys.stderr
        )
        return 2
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr, flush=True)

    busy_before = wait_quiet(args.wait_quiet, 0.15, log) if args.wait_quiet > 0 else cpu_busy()
    load_before = loadavg()
    if busy_before > 0.1:
        log(
            f"warning: the machine is {busy_before:.0%} busy with other work before the run; "
            "latency figures will be inflated"
        )

    meter = PhaseMeter()
    sp = SessionpoolBench(sizes, log, meter)
    asyncio.run(sp.run())
    figures = list(sp.figures)
    extra: dict[str, Any] = dict(sp.extra)
    if not args.skip_peer:
        peer = PeerBench(sizes, log, meter)
        peer.run()
        figures += peer.figures
        extra.update(peer.extra)
    extra["total_seconds"] = round(time.perf_counter() - began, 1)
    log("done")

    groups = {"warm": 0, "on_demand": 1, "start": 1, "x_plus_1": 2, "png": 3, "uss": 4, "pss": 5}

    def rank(f: Figure) -> tuple[int, int, int, str]:
        stem = f.key.split(".", 1)[1]
        group = next((g for name, g in groups.items() if stem.startswith(name)), len(groups))
        tail = stem.rsplit(".", 1)[-1]
        count = int(tail) if tail.isdigit() else 0
        return group, 0 if f.system == "sessionpool" else 1, count, f.key

    figures.sort(key=rank)
    uss_keys = [f.key for f in figures if f.key.startswith("sp.uss.")]
    targets = TARGETS + uss_targets(uss_keys)
    meta = machine_meta(args, sizes)
    meta["cpu_busy_before"] = round(busy_before, 3)
    meta["loadavg_before"] = load_before
    meta["loadavg_after"] = loadavg()
    meta["machine_busy_by_phase"] = meter.busy
    table, doc = build_report(figures, targets, meta, extra)
    print(table)
    print()
    print(json.dumps(doc, indent=2))

    path: Path = args.json or (
        Path(__file__).resolve().parent
        / "results"
        / f"engine-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nJSON written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
