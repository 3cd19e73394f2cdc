"""Where an on-demand session's allocation spends its time, step by step.

When a pool has no ready session, ``acquire`` makes one on the request's path: the slot (a uid,
the workspace mount, the cgroups, in a thread), then the fork from the zygote's waiting embryo,
which builds the session's part of its jail and starts the kernel, and the host waits for the
kernel's ``ready`` (``KernelProcess.connect``). This runs a real engine with jailed sessions
and a pool of no ready sessions, times each of those steps by wrapping the backend's methods,
and reports their medians beside the whole ``acquire`` and the first cell.

    .venv/bin/python -m benchmarks.ondemand [--sessions N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, machine, percentiles
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox.cgroups import Cgroups
from sessionpool.sandbox.jailed import JailBackend
from sessionpool.sandbox.process import KernelProcess, ZygoteHandle
from sessionpool.sandbox.workspace import Workspace
from sessionpool.sandbox.zygotes import ZygoteSet

#: the steps timed: (class, method, what it is)
STEPS: tuple[tuple[type, str, str], ...] = (
    (JailBackend, "create_slot", "slot: uid, workspace, cgroups (in a thread)"),
    (Workspace, "create", "  workspace mount"),
    (Cgroups, "create", "  cgroups made and limited"),
    (Cgroups, "oom_counters", "  OOM baseline read"),
    (JailBackend, "spawn", "fork to ready"),
    (ZygoteSet, "get", "  a zygote with a waiting embryo"),
    (ZygoteHandle, "spawn", "  the request to the zygote, its answer with the child's pid"),
    (KernelProcess, "connect", "  waiting for the kernel's ready (jail built in the child)"),
)
WARMUP = 3


def _timed(f: Any, into: list[float]) -> Any:
    """``f`` (a function or a coroutine function) that adds its milliseconds to ``into``."""

    @functools.wraps(f)
    async def timed_async(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return await f(*a, **k)
        finally:
            into.append((time.perf_counter() - t) * 1e3)

    @functools.wraps(f)
    def timed_sync(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            into.append((time.perf_counter() - t) * 1e3)

    return timed_async if asyncio.iscoroutinefunction(f) else timed_sync


def timed(times: defaultdict[str, list[float]]) -> Callable[[], None]:
    """Wrap every step to record its milliseconds in ``times``; returns the undo."""
    undo = []
    for cls, name, label in STEPS:
        # getattr binds a classmethod to its class, and the wrapper calls that; the undo puts
        # back what the class itself held
        undo.append((cls, name, vars(cls)[name]))
        setattr(cls, name, _timed(getattr(cls, name), times[label]))

    def restore() -> None:
        for cls, name, original in undo:
            setattr(cls, name, original)

    return restore


async def measure(sessions: int) -> dict[str, Any]:
    times: defaultdict[str, list[float]] = defaultdict(list)
    data_dir = Path(tempfile.mkdtemp(prefix="ondemand-"))
    engine = Engine(
        EngineConfig(backend="jail", data_dir=data_dir),
        [PoolConfig(name="ondemand", ready_sessions=0, max_sessions=16, cooldown_seconds=600)],
    )
    await engine.start()
    undo = timed(times)
    pool = engine.pool("ondemand")
    acquire: list[float] = []
    first: list[float] = []
    try:
        for k in range(WARMUP + sessions):
            ident = f"ondemand-{k}"
            t0 = time.perf_counter()
            session = await pool.acquire(ident)
            t1 = time.perf_counter()
            result = await session.execute("print(1)")
            t2 = time.perf_counter()
            if result.stdout != "1\n":
                raise RuntimeError(f"{ident}: print(1) gave {result!r}")
            if k >= WARMUP:
                acquire.append((t1 - t0) * 1e3)
                first.append((t2 - t1) * 1e3)
            else:  # the first sessions start the zygote: not this figure
                for values in times.values():
                    values.clear()
            await pool.delete(ident)
            await asyncio.sleep(0.05)  # its teardown, off the next allocation's path
    finally:
        undo()
        await engine.close()
    return {
        "acquire": percentiles(acquire),
        "first_cell": percentiles(first),
        "steps": {label: percentiles(times[label]) for _, _, label in STEPS if times[label]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=40, help="sessions made on demand")
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.sessions))
    whole, cell = figures["acquire"], figures["first_cell"]
    print(
        f"acquire (on demand): p50 {whole['p50']} ms, p99 {whole['p99']} ms; "
        f"first cell p50 {cell['p50']} ms"
    )
    for label, s in figures["steps"].items():
        print(f"  {label:62s} p50 {s['p50']:6.2f} ms  p99 {s['p99']:6.2f} ms  (n={s['n']})")
    now = dt.datetime.now(dt.UTC)
    out = args.json or RESULTS / f"ondemand-{now:%Y-%m-%d-%H%M}.json"
    out.write_text(
        json.dumps({"date": now.isoformat(), "machine": machine(), **figures}, indent=2) + "\n"
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
