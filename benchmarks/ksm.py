"""Kernel samepage merging: machine memory per idle pandas session, memory_merge off/zygote/all.

For each mode a real server (``ServerProcess``) serves one pool with that ``memory_merge``; N new
identifiers each run the pandas cell; then, at each time after the burst has settled (0, 30, 60,
90 s by default), the machine's memory per session (the MemAvailable drop since before the
burst, divided by N), the sessions' summed PSS per session (the zygote's included: merged
pages count once, split among their sharers), ksmd's counters and CPU, and the latency of
``x += 1`` on one session while ksmd scans (paced at 20 a second, so the probe is not the load).
Before each mode KSM is stopped and unmerged, so each mode starts from nothing merged; at the
end the host's KSM settings are put back as they were. That is machine-wide: a KSM already
running (another server's, another benchmark's) makes the script refuse unless ``--force``.

Run as root, on a machine as quiet as you can get (MemAvailable is machine-wide: other work's
memory shows up in it; the run records the load):

    .venv/bin/python -m benchmarks.ksm                      # 200 sessions, off/zygote/all
    .venv/bin/python -m benchmarks.ksm --sessions 50 --modes off,zygote --times 0,30

Writes ``benchmarks/results/ksm-<date>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import (
    API_KEY,
    API_VERSION,
    RESULTS,
    cpu_times,
    loadavg,
    logger,
    machine,
    ms_since,
    nearest_rank,
    proc_stat,
)
from benchmarks.engine import meminfo
from benchmarks.http_api import descendants
from sessionpool.config import EngineConfig
from sessionpool.sandbox import ksm
from sessionpool.server.testing import ServerProcess

MiB = 1 << 20
POOL = "bench"
PANDAS_CELL = "import pandas as pd\ndf = pd.DataFrame({'a': range(1000)})\ndf.describe()"
X_CELL = "x += 1"
#: pace of the x += 1 probe while ksmd scans
PROBE_INTERVAL_S = 0.05
KSM_FILES = ("pages_to_scan", "sleep_millisecs", "run")

log = logger(time.perf_counter())


def mem_available() -> int:
    return meminfo()["MemAvailable"]


def baseline_mem_available() -> float:
    """The median of five reads a fifth of a second apart (one read can catch a spike)."""
    reads = []
    for _ in range(5):
        reads.append(mem_available())
        time.sleep(0.2)
    return statistics.median(reads)


def pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def ksmd_pid() -> int | None:
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{name}/comm") as f:
                if f.read().strip() == "ksmd":
                    return int(name)
    return None


def ksmd_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ksm_counter(name: str) -> int:
    return int((ksm.KSM_DIR / name).read_text())


def stop_and_unmerge(timeout: float = 60.0) -> None:
    """run=2 (unmerge everything), until nothing is shared; then run=0: a mode starts clean."""
    (ksm.KSM_DIR / "run").write_text("2")
    end = time.monotonic() + timeout
    while ksm_counter("pages_sharing") and time.monotonic() < end:
        time.sleep(0.5)
    (ksm.KSM_DIR / "run").write_text("0")


def server_config(mode: str, sessions: int) -> str:
    # one ready session: the zygote is up (and in the baseline) before the burst
    return (
        f"[pools.{POOL}]\nready_sessions = 1\nmax_sessions = {sessions + 16}\n"
        f'cooldown_seconds = 3600\nmemory_merge = "{mode}"\n'
    )


class Mode:
    def __init__(self, args: argparse.Namespace, mode: str) -> None:
        self.args = args
        self.mode = mode
        self.server: ServerProcess | None = None
        self.result: dict[str, Any] = {"mode": mode}

    def url(self, ident: str) -> str:
        assert self.server is not None
        return (
            f"{self.server.endpoint(POOL)}/code/execute?identifier={ident}"
            f"&api-version={API_VERSION}"
        )

    @staticmethod
    def body(code: str) -> bytes:
        return json.dumps(
            {
                "properties": {
                    "codeInputType": "inline",
                    "executionType": "synchronous",
                    "code": code,
                }
            }
        ).encode()

    def check(self, response: httpx.Response, what: str) -> None:
        if response.status_code != 200:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
        props = response.json()["properties"]
        if props["status"] != "Success":
            raise RuntimeError(f"{what}: {props['status']}: {props['stderr'][-300:]}")

    async def burst(self, headers: dict[str, str]) -> None:
        """N new identifiers, each running the pandas cell, ``concurrency`` at a time."""
        gate = asyncio.Semaphore(self.args.concurrency)
        body = self.body(PANDAS_CELL)
        async with httpx.AsyncClient(headers=headers, timeout=300.0) as client:

            async def one(i: int) -> None:
                async with gate:
                    response = await client.post(self.url(f"ksm-{i}"), content=body)
                    self.check(response, f"session {i}: the pandas cell")

            await asyncio.gather(*(one(i) for i in range(self.args.sessions)))

    def run(self) -> dict[str, Any]:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="sessionpool-ksm-bench-"))
        env = {
            "SESSIONPOOL_KSM_PAGES_TO_SCAN": str(args.pages_to_scan),
            "SESSIONPOOL_KSM_SLEEP_MILLISECS": str(args.sleep_millisecs),
            "SESSIONPOOL_ACCESS_LOG": "false",
        }
        server = ServerProcess(
            workdir,
            config=server_config(self.mode, args.sessions),
            env=env,
            api_key=API_KEY,
            startup_timeout=180.0,
        )
        self.server = server
        try:
            server.start()
            assert server.process is not None
            headers = {**server.auth, "Content-Type": "application/json"}
            time.sleep(2.0)
            before = baseline_mem_available()
            t0 = time.perf_counter()
            asyncio.run(self.burst(headers))
            self.result["burst_s"] = round(time.perf_counter() - t0, 1)
            log(
                f"{self.mode}: {args.sessions} sessions ran the pandas cell in "
                f"{self.result['burst_s']} s"
            )
            with httpx.Client(headers=headers, timeout=60.0) as client:
                x_url = self.url("ksm-0")
                self.check(client.post(x_url, content=self.body("x = 0")), "x = 0")
                end = time.monotonic() + 60
                while client.get(server.url + "/readyz").status_code != 200:
                    if time.monotonic() > end:
                        raise RuntimeError("the pool did not refill")
                    time.sleep(0.1)
                time.sleep(2.0)  # the burst has settled: t = 0
                self.result["samples"] = self.sample_over_time(client, x_url, before)
        except BaseException:
            log(f"server log ({server.log_path}):\n{server.log()[-4000:]}")
            raise
        finally:
            server.stop()
            lines = server.log().splitlines()
            self.result["ksm_log"] = [line for line in lines if "samepage" in line][:3]
            self.result["server_log_errors"] = [
                line for line in lines if "Traceback" in line or " ERROR" in line
            ][:10]
            shutil.rmtree(workdir, ignore_errors=True)
        return self.result

    def sample_over_time(
        self, client: httpx.Client, x_url: str, before: float
    ) -> list[dict[str, Any]]:
        assert self.server is not None and self.server.process is not None
        n = self.args.sessions
        ksmd = ksmd_pid()
        cpu0 = ksmd_cpu_seconds(ksmd)
        x_body = self.body(X_CELL)
        start = time.monotonic()
        samples: list[dict[str, Any]] = []
        busy0 = cpu_times()
        for at in self.args.times:
            xs: list[float] = []
            while time.monotonic() - start < at:
                t0 = time.perf_counter()
                response = client.post(x_url, content=x_body)
                xs.append(ms_since(t0))
                self.check(response, "x += 1")
                time.sleep(PROBE_INTERVAL_S)
            busy1 = cpu_times()
            pids = descendants(self.server.process.pid)
            xs.sort()
            sample = {
                "t_s": at,
                "mib_per_session": round((before - mem_available()) / n / MiB, 2),
                "pss_mib_per_session": round(pss_bytes(pids) / n / MiB, 2),
                "pages_sharing": ksm_counter("pages_sharing"),
                "pages_shared": ksm_counter("pages_shared"),
                "full_scans": ksm_counter("full_scans"),
                "ksmd_cpu_s": round(ksmd_cpu_seconds(ksmd) - cpu0, 1),
                "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
                "loadavg": loadavg(),
                "x_plus_1_ms": {
                    "n": len(xs),
                    "p50": round(nearest_rank(xs, 50), 2) if xs else None,
                    "p99": round(nearest_rank(xs, 99), 2) if xs else None,
                },
            }
            busy0 = busy1
            samples.append(sample)
            log(
                f"{self.mode} t={at:>3} s: {sample['mib_per_session']:.2f} MiB/session "
                f"(PSS {sample['pss_mib_per_session']:.2f}), pages_sharing "
                f"{sample['pages_sharing']}, ksmd {sample['ksmd_cpu_s']} s CPU, x += 1 p50 "
                f"{sample['x_plus_1_ms']['p50']} ms, machine {sample['machine_busy']:.0%} busy"
            )
        return samples


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--modes", default="off,zygote,all")
    parser.add_argument("--times", default="0,30,60,90", help="seconds after the burst settled")
    parser.add_argument("--concurrency", type=int, default=8, help="burst requests at once")
    parser.add_argument("--pages-to-scan", type=int, default=EngineConfig.ksm_pages_to_scan)
    parser.add_argument("--sleep-millisecs", type=int, default=EngineConfig.ksm_sleep_millisecs)
    parser.add_argument(
        "--advisor",
        action="store_true",
        help="let the kernel's advisor (advisor_mode = scan-time) set pages_to_scan",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run even if KSM is running already (the run stops and unmerges it, machine-wide)",
    )
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.times = [int(t) for t in args.times.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the jail backend and /sys/kernel/mm/ksm need it", file=sys.stderr)
        return 2
    if ksm.status() is None:
        print(f"this kernel has no samepage merging ({ksm.KSM_DIR})", file=sys.stderr)
        return 2
    status = ksm.status()
    if status is not None and status.run == ksm.RUN_RUNNING and not args.force:
        print(
            f"KSM is running already ({status.describe()}): another server or benchmark may be "
            "using it, and this run would stop and unmerge it. Stop it (echo 0 > "
            f"{ksm.KSM_DIR}/run) or pass --force",
            file=sys.stderr,
        )
        return 2
    saved = {name: (ksm.KSM_DIR / name).read_text() for name in KSM_FILES}
    advisor = ksm.KSM_DIR / "advisor_mode"
    if args.advisor:
        advisor.write_text("scan-time")
    out: dict[str, Any] = {
        "meta": {
            "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **machine(),
            "sessions": args.sessions,
            "cell": PANDAS_CELL,
            "ksm": {
                "pages_to_scan": "advisor (scan-time)" if args.advisor else args.pages_to_scan,
                "sleep_millisecs": args.sleep_millisecs,
                "smart_scan": (ksm.KSM_DIR / "smart_scan").read_text().strip(),
                "host_before": {k: v.strip() for k, v in saved.items()},
            },
            "loadavg_before": loadavg(),
            "memory": "MiB per session: (MemAvailable before the burst - now) / sessions",
            "x_plus_1": f"one session, paced every {PROBE_INTERVAL_S * 1000:g} ms, in the "
            "window ending at the sample",
        },
        "modes": {},
    }
    try:
        for mode in args.modes:
            stop_and_unmerge()
            out["modes"][mode] = Mode(args, mode).run()
    finally:
        stop_and_unmerge()
        if args.advisor:
            advisor.write_text("none")  # before pages_to_scan, which the advisor owns
        for name in KSM_FILES:
            with contextlib.suppress(OSError):
                (ksm.KSM_DIR / name).write_text(saved[name])
    out["meta"]["loadavg_after"] = loadavg()
    path = args.json or RESULTS / f"ksm-{dt.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'mode':<8}" + "".join(f"{f't={t}s':>10}" for t in args.times) + "  x+=1 p50 (ms)")
    for mode, result in out["modes"].items():
        cells = "".join(f"{s['mib_per_session']:>10.2f}" for s in result["samples"])
        lat = " ".join(str(s["x_plus_1_ms"]["p50"]) for s in result["samples"][1:])
        print(f"{mode:<8}{cells}  {lat}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
