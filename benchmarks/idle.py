"""What a request costs after the machine idles, against one that follows another.

On this kind of machine (two vCPUs of a microVM) any request that follows a pause is slower,
and the suite's time to interactive pays that on every sample (the pool settles in between).
This script says whether the extra time is waiting (waking halted vCPUs) or work (the same
code run with cold caches): for one real server and one session it sends the same execute
after ``--pause`` seconds of quiet and then once more at once, and reads each one's wall time
(the client's) and the CPU the server and the session's kernel spent on it (``/proc``, the
scheduler's nanoseconds). ``GET /healthz`` the same way gives the server's own share, with no
session. When the wall time is about the sum of the CPU, the pause costs work, not waiting.

    .venv/bin/python -m benchmarks.idle [--samples 40] [--pause 0.3] [--code 'x += 1']

Prints the medians and writes ``benchmarks/results/idle-<time>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, machine
from benchmarks.http_api import process_cpu_seconds
from benchmarks.paired import Side


def measure(side: Side, call: Any, with_kernel: bool) -> tuple[float, float, float]:
    """One call: its wall time and the server's and the kernel's CPU, in microseconds."""
    server0 = process_cpu_seconds(side.pid)
    kernel0 = process_cpu_seconds(side.kernel) if with_kernel else 0.0
    t0 = time.perf_counter()
    call()
    wall = time.perf_counter() - t0
    server = process_cpu_seconds(side.pid) - server0
    kernel = process_cpu_seconds(side.kernel) - kernel0 if with_kernel else 0.0
    return wall * 1e6, server * 1e6, kernel * 1e6


def medians(rows: list[tuple[float, float, float]]) -> dict[str, float]:
    return {
        name: round(statistics.median(r[i] for r in rows), 1)
        for i, name in enumerate(("wall_us", "server_cpu_us", "kernel_cpu_us"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of quiet before")
    parser.add_argument("--code", default="x += 1", help="the cell (after x = 0)")
    parser.add_argument("--json", type=Path, help="where to write the result")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
        side = Side("server", Path(tmp), {}, access_log=True)
        side.start()
        try:
            side.call("x = 0")
            side.find_kernel(opts.code)

            def healthz() -> None:
                assert side.conn is not None
                side.conn.request("GET", "/healthz")
                answer = side.conn.getresponse()
                answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"GET /healthz: HTTP {answer.status}")

            calls = {
                "execute": (lambda: side.call(opts.code), True),
                "healthz": (healthz, False),
            }
            rows: dict[str, list[tuple[float, float, float]]] = {
                f"{name} {when}": [] for name in calls for when in ("after pause", "at once")
            }
            for _ in range(opts.samples):
                for name, (call, with_kernel) in calls.items():
                    side.connect()  # a fresh connection either way (one idle 5 s is closed)
                    call()
                    time.sleep(opts.pause)
                    rows[f"{name} after pause"].append(measure(side, call, with_kernel))
                    rows[f"{name} at once"].append(measure(side, call, with_kernel))
        finally:
            side.server.stop()
    figures = {key: medians(value) for key, value in rows.items()}
    for key, got in figures.items():
        print(
            f"{key:22s} wall {got['wall_us']:7.0f} us, server CPU {got['server_cpu_us']:6.0f} us,"
            f" kernel CPU {got['kernel_cpu_us']:6.0f} us (medians of {opts.samples})"
        )
    stamp = dt.datetime.now(dt.UTC)
    doc = {
        "when": stamp.isoformat(timespec="seconds"),
        "code": opts.code,
        "pause_s": opts.pause,
        "samples": opts.samples,
        "medians": figures,
        "machine": machine(),
    }
    path = opts.json or RESULTS / f"idle-{stamp:%Y-%m-%d-%H%M}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
