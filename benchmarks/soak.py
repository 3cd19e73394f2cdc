"""Soak: a real ``sessionpool serve`` under 100 sessions doing random work for a fixed time.

Run as ``.venv/bin/python -m benchmarks.soak [--minutes 10] [--sessions 100] [--json PATH]``
from the repository root (as root: the jail backend needs it); ``make soak`` runs it with the
defaults. Exit status 0 when every check holds, 1 otherwise; the figures go to stdout and to
``--json`` or ``benchmarks/results/soak-<UTC date>.json``.

Each of ``--sessions`` asyncio tasks owns one identifier and loops until the deadline, picking
at random: ``x += 1`` (the state must follow), writing a file from code, uploading, downloading
(the bytes must match what was written), deleting a file, a cell past its timeout (interrupted,
state kept), a cell that ignores SIGINT (killed, state lost, files kept), ``os._exit`` (state
lost, files kept), listing, and deleting the whole session (files gone).

Checks, printed with the figures:

- no 5xx answer and no transport error, ever;
- every download and the final read-back of every file of every live session match the bytes
  written (SHA-256);
- after the sessions are deleted and the pool has refilled, the server's child processes,
  mounts under its data directory, cgroups and workspace directories are back to the baseline
  taken before the load (ready sessions included), and its RSS and open fds are back within a
  tolerance (RSS: +64 MiB; fds: +16, keep-alive sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks._common import RESULTS
from sessionpool.server.testing import ServerProcess

NEW = "2025-10-02-preview"
OLD = "2024-02-02-preview"
RSS_TOLERANCE = 64 << 20
FD_TOLERANCE = 16

CONFIG = """
[pools.soak]
preload = {preload}
ready_sessions = 8
max_sessions = {max_sessions}
execution_timeout_seconds = 5
interrupt_grace_seconds = 1
cooldown_seconds = 3600

[pools.soak.limits]
memory_bytes = "256MiB"
pids = 64
disk_bytes = "32MiB"
file_bytes = "4MiB"
output_bytes = "64KiB"
"""

OPS = {
    # name: weight
    "increment": 30,
    "write_file": 12,
    "upload": 12,
    "download": 18,
    "delete_file": 6,
    "list": 6,
    "timeout": 4,
    "kill": 2,
    "crash": 2,
    "delete_session": 2,
}


@dataclass
class Stats:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        if len(self.failures) < 200:
            self.failures.append(text)


@dataclass
class Worker:
    ident: str
    x: int | None = None  # the counter's value, None when unknown (fresh interpreter)
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256


# -- host-side measurements -------------------------------------------------------------------


def cgroups_of(pid: int) -> int:
    count = 0
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d.startswith(f"sessionpool-{pid}-"):
                count += 1 + sum(1 for _ in Path(root, d).iterdir() if _.is_dir())
        if root.count("/") > 6:
            dirs.clear()
    return count


def footprint(server: ServerProcess) -> dict[str, int]:
    assert server.process is not None
    proc = psutil.Process(server.process.pid)
    with open("/proc/self/mountinfo") as fh:
        mounts = sum(1 for line in fh if str(server.data_dir.resolve()) in line)
    return {
        "rss_bytes": proc.memory_info().rss,
        "open_fds": proc.num_fds(),
        "child_processes": len(proc.children(recursive=True)),
        "mounts": mounts,
        "cgroups": cgroups_of(proc.pid),
        "workspace_dirs": sum(1 for _ in (server.data_dir / "workspaces").iterdir()),
    }


# -- the load -----------------------------------------------------------------------------------


def q(ident: str, version: str = NEW) -> str:
    return f"?identifier={ident}&api-version={version}"


async def execute(
    client: httpx.AsyncClient, stats: Stats, w: Worker, code: str, timeout: float | None = None
) -> dict[str, Any] | None:
    props: dict[str, Any] = {"codeInputType": "inline", "executionType": "synchronous"}
    props["code"] = code
    if timeout is not None:
        props["timeoutInSeconds"] = timeout
    r = await client.post(f"/pools/soak/code/execute{q(w.ident, OLD)}", json={"properties": props})
    stats.statuses[r.status_code] += 1
    if r.status_code != 200:
        stats.fail(f"{w.ident}: execute answered {r.status_code} {r.text[:200]}")
        return None
    out: dict[str, Any] = r.json()["properties"]
    return out


async def op(
    client: httpx.AsyncClient, stats: Stats, w: Worker, name: str, rng: random.Random
) -> None:
    if name == "increment":
        if w.x is None:
            res = await execute(client, stats, w, "x = 0\nx")
            w.x = 0 if res and res["status"] == "Success" else None
            return
        res = await execute(client, stats, w, "x += 1\nx")
        if res is None:
            return
        if res["status"] != "Success" or res["result"] != str(w.x + 1):
            stats.fail(f"{w.ident}: x += 1 gave {res['status']} {res['result']!r}, want {w.x + 1}")
            w.x = None
        else:
            w.x += 1
    elif name == "write_file":
        fname = f"code-{rng.randrange(8)}.bin"
        seed, size = rng.randrange(1 << 30), rng.choice([0, 1, 1000, 65536, 1 << 20])
        res = await execute(
            client,
            stats,
            w,
            f"import random\ndata = random.Random({seed}).randbytes({size})\n"
            f"open('/mnt/data/{fname}', 'wb').write(data)",
        )
        if res is not None and res["status"] == "Success":
            w.files[fname] = hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest()
        elif res is not None:
            stats.fail(f"{w.ident}: write_file failed: {res['stderr'][-200:]}")
    elif name == "upload":
        fname = f"up-{rng.randrange(8)}.bin"
        data = rng.randbytes(rng.choice([0, 10, 4096, 300_000, 2 << 20]))
        r = await client.post(
            f"/pools/soak/files{q(w.ident)}",
            files={"file": (fname, data, "application/octet-stream")},
        )
        stats.statuses[r.status_code] += 1
        if r.status_code == 200:
            w.files[fname] = hashlib.sha256(data).hexdigest()
        else:
            stats.fail(f"{w.ident}: upload answered {r.status_code} {r.text[:200]}")
    elif name == "download":
        if not w.files:
            return
        fname = rng.choice(sorted(w.files))
        r = await client.get(f"/pools/soak/files/{fname}/content{q(w.ident)}")
        stats.statuses[r.status_code] += 1
        if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != w.files[fname]:
            stats.fail(f"{w.ident}: {fname} read back wrong ({r.status_code})")
    elif name == "delete_file":
        if not w.files:
            return
        fname = rng.choice(sorted(w.files))
        r = await client.delete(f"/pools/soak/files/{fname}{q(w.ident)}")
        stats.statuses[r.status_code] += 1
        if r.status_code == 204:
            del w.files[fname]
        else:
            stats.fail(f"{w.ident}: delete {fname} answered {r.status_code}")
    elif name == "list":
        r = await client.get(f"/pools/soak/files{q(w.ident)}")
        stats.statuses[r.status_code] += 1
        names = {f["name"] for f in r.json().get("value", [])} if r.status_code == 200 else set()
        if r.status_code != 200 or not set(w.files) <= names:
            stats.fail(f"{w.ident}: listing {r.status_code} misses {set(w.files) - names}")
    elif name == "timeout":
        res = await execute(client, stats, w, "while True:\n    pass", timeout=0.5)
        if res is not None and res["status"] != "Failure":
            stats.fail(f"{w.ident}: a spin past its timeout answered {res['status']}")
        # interrupted at the deadline, state normally kept; under heavy load the grace may pass
        if res is not None and "lost" in res["stderr"]:
            w.x = None
    elif name in ("kill", "crash"):
        code = (
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
            if name == "kill"
            else "import os\nos._exit(1)"
        )
        res = await execute(client, stats, w, code, timeout=0.5 if name == "kill" else None)
        if res is not None and (res["status"] != "Failure" or "lost" not in res["stderr"].lower()):
            stats.fail(f"{w.ident}: {name} answered {res['status']} {res['stderr'][-200:]!r}")
        w.x = None
    elif name == "delete_session":
        r = await client.delete(f"/pools/soak/session{q(w.ident)}")
        stats.statuses[r.status_code] += 1
        if r.status_code != 204:
            stats.fail(f"{w.ident}: delete session answered {r.status_code}")
        w.x, w.files = None, {}


async def worker_loop(
    server: ServerProcess, stats: Stats, w: Worker, deadline: float, seed: int
) -> None:
    rng = random.Random(seed)
    names, weights = list(OPS), list(OPS.values())
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as client:
        while time.monotonic() < deadline:
            name = rng.choices(names, weights)[0]
            started = time.monotonic()
            try:
                await op(client, stats, w, name, rng)
            except httpx.HTTPError as exc:
                stats.fail(f"{w.ident}: {name}: transport error {exc!r}")
            stats.ops[name] += 1
            stats.latencies[name].append(time.monotonic() - started)


async def read_back(server: ServerProcess, stats: Stats, workers: list[Worker]) -> int:
    checked = 0
    async with httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=60) as client:
        for w in workers:
            for fname, digest in sorted(w.files.items()):
                r = await client.get(f"/pools/soak/files/{fname}/content{q(w.ident)}")
                checked += 1
                if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != digest:
                    stats.fail(f"final read-back: {w.ident}/{fname} wrong ({r.status_code})")
            await client.delete(f"/pools/soak/session{q(w.ident)}")
    return checked


def settle(server: ServerProcess, want: dict[str, int], seconds: float = 30) -> dict[str, int]:
    """Footprint once the pool has refilled and the counts match (or the time is up)."""
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=server.url, timeout=10) as c:
        while True:
            ready = c.get("/readyz").status_code == 200
            now = footprint(server)
            keys = ("child_processes", "mounts", "cgroups", "workspace_dirs")
            if (ready and all(now[k] == want[k] for k in keys)) or time.monotonic() > deadline:
                return now
            time.sleep(0.5)


def percentile(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(len(data) * p))] if data else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-template", action="store_true", help="preload numpy etc.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("soak: the jail backend needs root", file=sys.stderr)
        return 2
    preload = '["numpy", "pandas", "matplotlib.pyplot", "IPython"]' if args.full_template else "[]"
    config = CONFIG.format(preload=preload, max_sessions=args.sessions + 20)
    workdir = Path(tempfile.mkdtemp(prefix="sessionpool-soak-"))
    stats = Stats()
    with ServerProcess(workdir, config=config, args=["--no-access-log"]) as server:
        time.sleep(2)
        baseline = settle(server, footprint(server), 5)
        workers = [Worker(f"soak-{i}") for i in range(args.sessions)]
        started = time.monotonic()
        deadline = started + args.minutes * 60

        async def run() -> None:
            await asyncio.gather(
                *(
                    worker_loop(server, stats, w, deadline, args.seed * 1000 + i)
                    for i, w in enumerate(workers)
                )
            )

        peak: dict[str, int] = {}

        async def sample() -> None:
            while time.monotonic() < deadline:
                now = footprint(server)
                for k, v in now.items():
                    peak[k] = max(peak.get(k, 0), v)
                await asyncio.sleep(5)

        async def both() -> None:
            await asyncio.gather(run(), sample())

        asyncio.run(both())
        elapsed = time.monotonic() - started
        under_load = footprint(server)
        checked = asyncio.run(read_back(server, stats, workers))
        after = settle(server, baseline)
        log_errors = [
            line for line in server.log().splitlines() if "Traceback" in line or "ERROR" in line
        ]
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "minutes": round(elapsed / 60, 2),
        "sessions": args.sessions,
        "operations": sum(stats.ops.values()),
        "operations_per_second": round(sum(stats.ops.values()) / elapsed, 1),
        "by_operation": dict(stats.ops),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "latency_ms": {
            name: {
                "p50": round(percentile(v, 0.5) * 1000, 1),
                "p99": round(percentile(v, 0.99) * 1000, 1),
            }
            for name, v in sorted(stats.latencies.items())
        },
        "files_read_back": checked,
        "baseline": baseline,
        "peak": peak,
        "under_load_end": under_load,
        "after": after,
        "server_log_errors": log_errors[:20],
        "failures": stats.failures,
    }
    problems = list(stats.failures)
    if any(s >= 500 for s in stats.statuses):
        problems.append("5xx answers")
    for key in ("child_processes", "mounts", "cgroups", "workspace_dirs"):
        if after[key] != baseline[key]:
            problems.append(f"{key}: {baseline[key]} before, {after[key]} after")
    if after["rss_bytes"] > baseline["rss_bytes"] + RSS_TOLERANCE:
        problems.append(f"RSS grew {(after['rss_bytes'] - baseline['rss_bytes']) >> 20} MiB")
    if after["open_fds"] > baseline["open_fds"] + FD_TOLERANCE:
        problems.append(f"fds: {baseline['open_fds']} before, {after['open_fds']} after")
    if log_errors:
        problems.append(f"{len(log_errors)} errors in the server log")
    report["ok"] = not problems
    report["problems"] = problems[:50]
    text = json.dumps(report, indent=2)
    print(text)
    out = args.json or RESULTS / f"soak-{dt.date.today().isoformat()}.json"
    out.write_text(text + "\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
