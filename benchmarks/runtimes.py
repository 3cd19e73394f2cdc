"""Runtime benchmark: allocation, ``x += 1`` and idle memory for each session runtime.

Run from the repository root, as root (the jail backend needs it)::

    .venv/bin/python -m benchmarks.runtimes [--quick] [--json PATH]

For every runtime built here (``python``, ``python-3.13``, ``node``) and for a custom image
(the default runtime's kernel over a root filesystem made of the host's ``sh``), one jailed
engine in this process measures, with ``time.perf_counter`` and nearest-rank percentiles:

- **warm allocation**: ``acquire(new identifier)`` + the first result of a print, from a pool
  kept at its ready target (the refill runs concurrently, as in production);
- **x += 1**: the round trip in one session after ``x = 0``;
- **idle memory**: USS (Private_Clean + Private_Dirty) and PSS of every session kept idle after
  a typical cell (pandas for Python, an array for Node.js), and MemAvailable's drop per session.

Prints a Markdown table and writes the JSON to ``--json`` or
``benchmarks/results/runtimes-<UTC date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import machine, ms_since, percentiles
from benchmarks.engine import PANDAS_CELL, expect_ok, meminfo, uss_pss, wait_ready
from sessionpool.config import EngineConfig, PoolConfig, default_runtimes_dir
from sessionpool.engine import Engine
from sessionpool.pool import Pool

MB = 1024 * 1024
READY = 4


@dataclass(frozen=True)
class Case:
    name: str
    runtime: str
    image: bool
    print_cell: str
    idle_cell: str


CASES = [
    Case("python (3.11, default)", "python", False, "print(1)", PANDAS_CELL),
    Case("python-3.13", "python-3.13", False, "print(1)", PANDAS_CELL),
    Case(
        "node",
        "node",
        False,
        "console.log(1)",
        "globalThis.rows = Array.from({length: 1000}, (_, i) => ({a: i, b: Math.random()})); 1",
    ),
    Case("custom image (python kernel)", "python", True, "print(1)", PANDAS_CELL),
]


def minimal_rootfs(work: Path) -> Path:
    """A root filesystem tarball with the host's sh and the C library: enough for the kernel."""
    root = work / "root"
    for binary in ("/bin/sh",):
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        paths = [binary] + [
            p
            for line in out.splitlines()
            for p in line.split()
            if p.startswith("/") and "(" not in p
        ]
        for path in paths:
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(path).resolve(), dest)
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    return tar


async def measure(case: Case, image: Path | None, sizes: dict[str, int]) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="sessionpool-bench-rt-"))
    common = {
        "runtime": case.runtime,
        "image": str(image) if image else "",
        "cooldown_seconds": 3600,
    }
    engine = Engine(
        EngineConfig(backend="jail", data_dir=data_dir),
        [
            PoolConfig(name="warm", ready_sessions=READY, max_sessions=200, **common),  # type: ignore[arg-type]
            PoolConfig(name="idle", ready_sessions=0, max_sessions=200, **common),  # type: ignore[arg-type]
        ],
    )
    await engine.start()
    out: dict[str, Any] = {"runtime": case.runtime, "image": bool(image)}
    try:
        warm: Pool = engine.pool("warm")
        await wait_ready(warm, READY, timeout=300)
        alloc = []
        for i in range(sizes["alloc"]):
            t0 = time.perf_counter()
            session = await warm.acquire(f"alloc-{i}")
            result = await session.execute(case.print_cell)
            elapsed = ms_since(t0)
            expect_ok(result, case.print_cell)
            alloc.append(elapsed)
            await warm.delete(f"alloc-{i}")
            await wait_ready(warm, READY)
            await asyncio.sleep(0.05)
        out["allocation_ms"] = percentiles(alloc[2:])
        session = await warm.acquire("roundtrip")
        expect_ok(await session.execute("x = 0"), "x = 0")
        trips = []
        for i in range(sizes["roundtrip"]):
            t0 = time.perf_counter()
            result = await session.execute("x += 1")
            elapsed = ms_since(t0)
            expect_ok(result, "x += 1")
            if i >= 20:
                trips.append(elapsed)
        out["x_plus_1_ms"] = percentiles(trips)
        await warm.delete("roundtrip")
        idle: Pool = engine.pool("idle")
        await asyncio.sleep(1.0)
        before = meminfo()["MemAvailable"]
        pids = []
        for i in range(sizes["idle"]):
            s = await idle.acquire(f"idle-{i}")
            expect_ok(await s.execute(case.idle_cell), "idle cell")
            assert s.kernel is not None
            pids.append(s.kernel.pid)
        await asyncio.sleep(2.0)
        after = meminfo()["MemAvailable"]
        uss, pss = zip(*(uss_pss(pid) for pid in pids), strict=True)
        out["idle_uss_mb"] = round(statistics.median(uss), 2)
        out["idle_pss_mb"] = round(statistics.median(pss), 2)
        out["memavailable_drop_per_session_mb"] = round((before - after) / len(pids) / MB, 2)
        out["idle_sessions"] = len(pids)
    finally:
        await engine.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| runtime | allocation p50 / p99 (ms) | x += 1 p50 / p99 (ms) | idle USS / PSS (MB) "
        "| MemAvailable drop per idle session (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | |")
            continue
        a, x = r["allocation_ms"], r["x_plus_1_ms"]
        lines.append(
            f"| {name} | {a['p50']} / {a['p99']} | {x['p50']} / {x['p99']} "
            f"| {r['idle_uss_mb']} / {r['idle_pss_mb']} | {r['memavailable_drop_per_session_mb']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about a minute)")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    args = parser.parse_args(argv)
    sizes = (
        {"alloc": 12, "roundtrip": 220, "idle": 10}
        if args.quick
        else {"alloc": 52, "roundtrip": 1020, "idle": 40}
    )
    runtimes_dir = default_runtimes_dir()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sessionpool-bench-rootfs-") as work:
        rootfs = minimal_rootfs(Path(work))
        for case in CASES:
            if not (runtimes_dir / case.runtime / "manifest.json").is_file():
                results[case.name] = {"skipped": f"runtime {case.runtime} not built"}
                continue
            print(f"measuring {case.name} ...", file=sys.stderr)
            results[case.name] = asyncio.run(measure(case, rootfs if case.image else None, sizes))
    report = table(results)
    print(report)
    doc = {"machine": machine(), "quick": args.quick, "sizes": sizes, "results": results}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = args.json or Path("benchmarks/results") / f"runtimes-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
