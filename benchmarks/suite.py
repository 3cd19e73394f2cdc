#!/usr/bin/env python3
"""The benchmark suite (``make bench``): sessionpool side by side with self-hosted peers.

Run from the repository root, as root (the jail backend needs it)::

    .venv/bin/python -m benchmarks.suite [--quick] [--out DIR] [--skip-peers]

One run, one machine: a real ``sessionpool serve`` (``ServerProcess``) and three peers, each
driven by the same asyncio client code over its own transport:

- ``sessionpool``: HTTP (httpx, one keep-alive connection per agent), the Azure
  ``code/execute`` call;
- ``kernel-gateway``: Jupyter Kernel Gateway over HTTP + WebSocket (httpx + websockets), with
  its prespawn pool (``--KernelGatewayApp.prespawn_count``); a new session takes a prespawned,
  never used kernel (``GET /api/kernels``), which is the fair comparison to our warm pool;
- ``ipykernel``: ``jupyter_client``'s ``AsyncKernelManager``, one kernel per session (ZMQ);
- ``subprocess``: one ``python -c`` per call (the naive baseline; no state between calls).

The peers that are not in our own venv are installed by the suite into ``.bench/peers`` (pinned
in ``suite_drivers.PEER_PINS``; numpy, pandas and matplotlib at our versions).

Time to interactive (TTI) is new session -> the first successful ``import numpy, pandas;
print(1)``. It is measured in three modes: sequential, staggered (a new session every 200 ms)
and burst (all at once); each with success rate and nearest-rank p50/p95/p99. Then warm cells
(``x += 1``, a pandas ``describe()``, a matplotlib PNG), 10 MB upload and download, throughput
against concurrency, and sessionpool's scaling ramp: idle sessions (each ran a pandas cell) added
step by step until admission control refuses, with allocation and ``x += 1`` latency, private
memory (USS) per session and the machine's used memory at every step.

``--ramp`` (``make bench-ramp``) runs the scaling ramp alone, in steps of 250 sessions with page
merging waited for after each, until admission refuses: the 5,000 idle sessions measured rather
than projected from the quick ramp. It takes about half an hour.

Writes ``<out>/<UTC date>.json``, ``<out>/<UTC date>.md`` and PNG charts to ``<out>``
(``benchmarks/results`` by default).

This module is the command line, the server's configuration and the order of the run; how each
system is opened and driven is in ``suite_drivers``, what is measured (and how many times) in
``suite_measures``, the targets, tables, charts and files in ``suite_report``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks import suite_report as report
from benchmarks._common import API_KEY, RESULTS, cpu_busy, loadavg, loop_factory, machine
from benchmarks.engine import cgroup_favordynmods
from benchmarks.ksm import ksmd_cpu_seconds, ksmd_pid
from benchmarks.suite_drivers import (
    AHEAD_SUFFIX,
    BURST,
    BURST_AHEAD,
    BURST_DEFAULT,
    BURST_READY,
    MAIN,
    MAIN_READY,
    ONDEMAND,
    PEER_PINS,
    SCALE,
    SCALE_READY,
    GatewayDriver,
    IpykernelDriver,
    SessionpoolDriver,
    SubprocessDriver,
    install_peers,
    kernel_gateway,
    log,
)
from benchmarks.suite_measures import (
    FULL,
    QUICK,
    RAMP,
    Results,
    Sizes,
    bare_print,
    blocking_x,
    files,
    httpx_x,
    ipykernel_memory,
    on_demand,
    scaling,
    sp_breakdown,
    throughput,
    tti_modes,
    warm_cells,
    wrk_throughput,
)
from sessionpool.server.settings import parse_size
from sessionpool.server.testing import ServerProcess

#: the sessions of the wrk throughput figure (the issue's measure: 50 sessions)
WRK_SESSIONS = 50


def server_config(
    sizes: Sizes,
    reserve: str,
    zygote_max_children: int,
    memory_merge: str = "off",
    *,
    scale: bool = False,
    ksm_pages: int | None = None,
    runtime: str | None = None,
) -> str:
    """The main server's pools, or (``scale``) the scaling ramp's server: its pool alone, with
    the memory merging the density figure asks for. Apart because ksmd rescans mergeable
    memory for as long as it exists (a third to half a core here): on the main server it
    would tax every latency and throughput figure, which the shipped default (merging off)
    does not pay."""
    scale_max = sizes.scale_cap or 20000
    pools = (
        {SCALE: (SCALE_READY, scale_max, zygote_max_children)}
        if scale
        else {
            MAIN: (MAIN_READY, max(sizes.concurrency) + 64, zygote_max_children),
            BURST: (BURST_READY, max(sizes.bursts) + 64, zygote_max_children),
            BURST_DEFAULT: (BURST_READY, max(sizes.bursts) + 64, 0),
            BURST_AHEAD: (max(sizes.bursts), max(sizes.bursts) + 64, zygote_max_children),
            ONDEMAND: (0, 64, zygote_max_children),  # no ready sessions: every one on demand
        }
    )
    text = f'[server]\nmemory_reserve_bytes = "{reserve}"\naccess_log = false\n'
    if ksm_pages is not None:
        text += f"ksm_pages_to_scan = {ksm_pages}\n"
    text += "\n"
    for name, (ready, cap, zmc) in pools.items():
        text += (
            f"[pools.{name}]\nready_sessions = {ready}\nmax_sessions = {cap}\n"
            "cooldown_seconds = 3600\n" + (f"zygote_max_children = {zmc}\n" if zmc else "")
        )
        if name == SCALE and memory_merge != "off":  # the density figure's pool
            text += f'memory_merge = "{memory_merge}"\n'
        if runtime:
            text += f'runtime = "{runtime}"\n'
        text += "\n"
    return text


async def main_server(
    res: Results, sizes: Sizes, start: Callable[[str, bool], ServerProcess]
) -> None:
    """Every figure but the scaling ramp, on the main server (no page merging)."""
    server = start("server", False)
    main_pools = (MAIN, BURST, ONDEMAND, BURST_DEFAULT, BURST_AHEAD)
    drivers = {p: SessionpoolDriver(server, p) for p in main_pools}
    try:
        sp, burst = drivers[MAIN], drivers[BURST]
        await tti_modes(res, sp, sizes.seq, sizes.stagger, ())
        await bare_print(res, sp, sizes.peer_seq * 4)
        await sp_breakdown(res, sp, max(10, sizes.seq // 4))
        await on_demand(res, drivers[ONDEMAND], sizes.seq)
        for n in sizes.bursts:  # the burst pool: BURST_READY ready, the rest on demand
            await tti_modes(res, burst, 0, 0, (n,))
        # the largest burst again with the shipped zygote rotation (its own zygote set)
        default = drivers[BURST_DEFAULT]
        await tti_modes(res, default, 0, 0, (max(sizes.bursts),), ", zygote_max_children 200")
        # the largest burst from a pool whose ready sessions cover it (the burst target's row)
        ahead = drivers[BURST_AHEAD]
        await tti_modes(
            res, ahead, 0, 0, (max(sizes.bursts),), AHEAD_SUFFIX.format(n=max(sizes.bursts))
        )
        await warm_cells(res, sp, sizes.steady, sizes.cells)
        await blocking_x(res, sp, sizes.steady)
        await httpx_x(res, sp, sizes.steady)
        await files(res, sp, sizes.files)
        await throughput(res, sp, sizes.concurrency, sizes.window_s)
        await wrk_throughput(res, sp, WRK_SESSIONS, sizes.wrk_s)
    except BaseException:
        log(f"server log:\n{server.log()[-3000:]}")
        raise
    finally:
        await asyncio.gather(*(d.aclose() for d in drivers.values()))
        server.stop()


async def run_all(args: argparse.Namespace, sizes: Sizes, res: Results, workdir: Path) -> None:
    def start(name: str, scale: bool) -> ServerProcess:
        config = server_config(
            sizes,
            args.memory_reserve,
            args.zygote_max_children,
            args.memory_merge,
            scale=scale,
            ksm_pages=args.ksm_pages_to_scan,
            runtime=args.runtime,
        )
        server = ServerProcess(
            workdir / name, config=config, api_key=API_KEY, startup_timeout=180.0
        )
        server.start()
        return server

    ksmd = ksmd_pid()  # None where the kernel has no KSM
    ksmd_before = ksmd_cpu_seconds(ksmd)
    if not args.ramp:
        await main_server(res, sizes, start)
    ksmd_main = ksmd_cpu_seconds(ksmd)
    server = start("scale-server", scale=True)
    t_scale = time.perf_counter()
    scale = SessionpoolDriver(server, SCALE)
    try:
        await scaling(res, scale, sizes, merging=args.memory_merge != "off")
    except BaseException:
        log(f"server log:\n{server.log()[-3000:]}")
        raise
    finally:
        await scale.aclose()
        server.stop()
    ksmd_after = ksmd_cpu_seconds(ksmd)
    if ksmd is not None:
        # what merging cost, and proof the other figures did not pay it
        res.extra["ksmd_cpu_s"] = {
            "main_server": round(ksmd_main - ksmd_before, 2),
            "scaling_server": round(ksmd_after - ksmd_main, 2),
            "scaling_wall_s": round(time.perf_counter() - t_scale, 1),
        }
    # burst rows came out as separate modes runs with empty sequential rows: drop those
    res.rows = [r for r in res.rows if r.attempts > 0 or r.value is not None]

    if args.skip_peers or args.ramp:
        return
    ipk = IpykernelDriver()
    await tti_modes(res, ipk, sizes.peer_seq, sizes.peer_seq, (sizes.peer_burst,))
    await bare_print(res, ipk, sizes.peer_seq)
    await warm_cells(res, ipk, sizes.peer_steady, sizes.peer_cells)
    await blocking_x(res, ipk, sizes.peer_steady)
    await throughput(res, ipk, sizes.peer_concurrency, sizes.window_s)
    await ipykernel_memory(res, sizes.peer_memory)

    python = install_peers()
    # every kernel a session takes: TTI (sequential + warm-up, staggered, burst), the bare
    # print(1) breakdown (+ warm-up), the warm cells, the throughput levels
    prespawn = (
        2 * sizes.peer_seq
        + 1
        + sizes.peer_burst
        + sizes.peer_seq
        + 1
        + 1
        + sum(sizes.peer_concurrency)
    )
    with kernel_gateway(python, prespawn, workdir) as url:
        kg = GatewayDriver(url)
        await tti_modes(res, kg, sizes.peer_seq, sizes.peer_seq, (sizes.peer_burst,))
        await bare_print(res, kg, sizes.peer_seq)
        await warm_cells(res, kg, sizes.peer_steady, sizes.peer_cells)
        await throughput(res, kg, sizes.peer_concurrency, sizes.window_s)
        await kg.http.aclose()

    sub = SubprocessDriver(str(python))
    await tti_modes(res, sub, sizes.peer_seq, sizes.peer_seq, (sizes.peer_burst,))
    await bare_print(res, sub, sizes.peer_seq)
    await warm_cells(res, sub, sizes.peer_cells, sizes.peer_cells)
    await throughput(res, sub, sizes.peer_concurrency, sizes.window_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-peers", action="store_true", help="sessionpool only")
    parser.add_argument(
        "--zygote-max-children",
        type=int,
        default=4000,
        help="zygote_max_children of every pool but burst-default (200 is the shipped default)",
    )
    parser.add_argument(
        "--memory-reserve",
        default="2GiB",
        help="the server's memory_reserve_bytes: the scaling ramp stops where it refuses",
    )
    parser.add_argument(
        "--memory-merge",
        # where the kernel has no KSM a pool asking for it stops the server from starting
        default="zygote" if Path("/sys/kernel/mm/ksm/run").exists() else "off",
        choices=["off", "zygote", "all"],
        help="memory_merge of the scale pool, whose sessions make the memory figure "
        "(docs/security.md weighs its risk; zygote merges only what the zygote held)",
    )
    parser.add_argument(
        "--ramp",
        action="store_true",
        help="the scaling ramp alone, in steps of 250 to where admission refuses (the 5,000 "
        "target measured, not projected; about half an hour, ksmd at most of a core)",
    )
    parser.add_argument(
        "--ksm-pages-to-scan",
        type=int,
        help="the scale server's ksm_pages_to_scan (default: the server's; 20000 with --ramp)",
    )
    parser.add_argument(
        "--runtime",
        help="the runtime of every sessionpool pool (default: the shipped default, python); "
        "the peers are unchanged",
    )
    args = parser.parse_args(argv)
    if args.ramp:
        args.quick, args.skip_peers = False, True
        if args.ksm_pages_to_scan is None:
            args.ksm_pages_to_scan = 20000
    if os.geteuid() != 0:
        print("the jail backend needs root", file=sys.stderr)
        return 2
    sizes = RAMP if args.ramp else QUICK if args.quick else FULL
    if not args.skip_peers:
        install_peers()  # before the clock matters
    busy_before = cpu_busy()
    res = Results()
    workdir = Path(tempfile.mkdtemp(prefix="sessionpool-suite-"))
    t0 = time.perf_counter()
    try:
        runner = asyncio.Runner(loop_factory=loop_factory())
        with runner:
            runner.run(run_all(args, sizes, res, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    now = dt.datetime.now(dt.UTC)
    meta = {
        "date_utc": now.isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "ramp": bool(args.ramp),
        "sizes": asdict(sizes),
        **machine(),
        "cgroup_favordynmods": cgroup_favordynmods(),
        "cpu_busy_before": round(busy_before, 3),
        "loadavg_after": loadavg(),
        "peer_pins": PEER_PINS,
        "memory_reserve": args.memory_reserve,
        "memory_reserve_gb": parse_size(args.memory_reserve, "--memory-reserve") / 2**30,
        "memory_merge": args.memory_merge,
        "runtime": args.runtime or "python",
        "ksm_pages_to_scan": args.ksm_pages_to_scan,
        "zygote_max_children": args.zygote_max_children,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "percentiles": "nearest-rank",
    }
    stem = f"{now:%Y-%m-%d}" + ("-quick" if args.quick else "-ramp" if args.ramp else "")
    report.write(res, meta, args.out, stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
