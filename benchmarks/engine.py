"""Engine benchmark: sessionpool against jupyter_client + ipykernel, same machine, same run.

Run from the repository root, as root (the jail backend needs it)::

    .venv/bin/python -m benchmarks.engine [--quick] [--json PATH] [--wait-quiet SECONDS]

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
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _common
from benchmarks._common import (
    MB,
    Bench,
    Check,
    Figure,
    PhaseMeter,
    Target,
    ms_since,
    nearest_rank,
    proc_stat,
)
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.pool import Pool
from sessionpool.types import ExecutionResult, ExecutionStatus

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


# -- targets --------------------------------------------------------------------------------------


def _p50_at_most(key: str, limit: float, unit: str) -> Check:
    def check(figures: dict[str, Figure], extra: dict[str, Any]) -> tuple[bool, str]:
        value = figures[key].p50
        return value <= limit, f"p50 {value:.3f} {unit} <= {limit:g} {unit}"

    return check


def _speedup(key: str, peer: str, factor: float) -> Check:
    def check(figures: dict[str, Figure], extra: dict[str, Any]) -> tuple[bool, str]:
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
    return int(proc_stat(pid)[1])


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


class SessionpoolBench(Bench):
    """sessionpool's engine, hosted in this process as the server hosts it."""

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


class PeerBench(_common.IpykernelPeer):
    """jupyter_client + ipykernel: start, x += 1, PNG and memory."""

    def run(self) -> None:
        with self.meter.phase("ipykernel.start"):
            self.start()
        with self.meter.phase("ipykernel.x_plus_1+png"):
            self.steady()
        with self.meter.phase("ipykernel.memory"):
            self.density()

    def start(self) -> None:
        self.log(f"ipykernel: start -> first result x{self.sizes.peer_start}")
        samples, shutdown = self.time_starts(self.sizes.peer_start)
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
            to_reply, to_idle = self.time_x_plus_1(kc, sizes.roundtrip, sizes.roundtrip_warmup)
            self.add_x_plus_1(to_reply)
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


def memory_lines(meta: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """The machine-wide MemAvailable drop per session, below the table."""
    if "memavailable_drop_per_session_mb" not in extra:
        return []
    return [
        "",
        f"MemAvailable drop per session (N {meta['densities'][0]} -> {meta['densities'][1]}): "
        f"{extra['memavailable_drop_per_session_mb']:.2f} MB (machine-wide; of which "
        + ", ".join(
            f"{k} {v:+.2f}"
            for k, v in extra["meminfo_growth_per_session_mb"].items()
            if k != "MemAvailable"
        )
        + " MB)",
    ]


GROUPS = {"warm": 0, "on_demand": 1, "start": 1, "x_plus_1": 2, "png": 3, "uss": 4, "pss": 5}


def rank(f: Figure) -> tuple[int, int, int, str]:
    """Table order: by measurement, sessionpool before ipykernel, then by session count."""
    stem = f.key.split(".", 1)[1]
    group = next((g for name, g in GROUPS.items() if stem.startswith(name)), len(GROUPS))
    tail = stem.rsplit(".", 1)[-1]
    count = int(tail) if tail.isdigit() else 0
    return group, 0 if f.system == "sessionpool" else 1, count, f.key


def build_report(
    figures: list[Figure], meta: dict[str, Any], extra: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    figures.sort(key=rank)
    uss_keys = [f.key for f in figures if f.key.startswith("sp.uss.")]
    return _common.build_report(
        figures,
        TARGETS + uss_targets(uss_keys),
        meta,
        extra,
        before_targets=lambda _: memory_lines(meta, extra),
    )


def machine_meta(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    packages = (
        "sessionpool",
        "jupyter_client",
        "ipykernel",
        "ipython",
        "pandas",
        "numpy",
        "matplotlib",
    )
    return _common.machine_meta(
        args,
        sizes,
        packages,
        after_sizes={"densities": list(sizes.densities)},
        after_versions={"cgroup_favordynmods": cgroup_favordynmods()},
    )


def measure(sizes: Sizes, log: Callable[[str], None], meter: PhaseMeter) -> Bench:
    sp = SessionpoolBench(sizes, log, meter)
    asyncio.run(sp.run())
    return sp


def main(argv: list[str] | None = None) -> int:
    return _common.main(
        __doc__,
        argv,
        "engine",
        lambda quick: QUICK if quick else FULL,
        measure,
        PeerBench,
        machine_meta,
        build_report,
    )


if __name__ == "__main__":
    sys.exit(main())
