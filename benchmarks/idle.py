"""What a request costs after the machine idles, against one that follows another.

On this kind of machine (two vCPUs of a microVM) any request that follows a pause is slower,
and the suite's time to interactive pays that on every sample (the pool settles in between).
This script says whether the extra time is waiting (waking halted vCPUs) or work (the same
code run with cold caches): for one real server and one session it sends the same execute
after ``--pause`` seconds of quiet and then once more at once, and reads each one's wall time
(the client's) and the CPU the server and the session's kernel spent on it (``/proc``, the
scheduler's nanoseconds). ``GET /healthz`` the same way gives the server's own share, with no
session. When the wall time is about the sum of the CPU, the pause costs work, not waiting.
For scale, ``GET /healthz`` is also measured on two servers with nothing of ours: a bare ASGI
function and a bare Starlette app with one route, each under the same uvicorn (httptools,
uvloop): the floor under what the server's own layers add.

Then what a session's first cell still pays: the suite's time-to-interactive cell on a new
identifier, and the same cell again in that session, each after a second of quiet, with the
minor page faults of its kernel (a ready session forked from the zygote: the pages the first
cell writes to are copied then).

    .venv/bin/python -m benchmarks.idle [--samples 40] [--pause 0.3] [--code 'x += 1']
        [--first-samples 16]

Prints the medians and writes ``benchmarks/results/idle-<time>.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, machine
from benchmarks.http_api import descendants, minor_faults, process_cpu_seconds
from benchmarks.paired import Side
from benchmarks.suite_drivers import TTI_CELL

#: quiet before each first or second cell: the pool's refill is done by then
FIRST_CELL_SETTLE_S = 1.0
#: the two bare servers' apps (module ``bareapp``), each answering ``GET /healthz`` as ours does
BARE_APPS = {
    "bare uvicorn": (
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200,\n"
        "                'headers': [(b'content-type', b'application/json')]})\n"
        "    await send({'type': 'http.response.body', 'body': b'{\"status\":\"ok\"}'})\n"
    ),
    "bare Starlette": (
        "from starlette.applications import Starlette\n"
        "from starlette.responses import JSONResponse\n"
        "from starlette.routing import Route\n"
        "async def healthz(request):\n"
        "    return JSONResponse({'status': 'ok'})\n"
        "app = Starlette(routes=[Route('/healthz', healthz)])\n"
    ),
}


def bare_healthz(name: str, workdir: Path, samples: int, pause: float) -> dict[str, Any]:
    """``GET /healthz`` after a pause and at once on a bare server (``BARE_APPS``)."""
    app_dir = workdir / name.replace(" ", "-")
    app_dir.mkdir()
    (app_dir / "bareapp.py").write_text(BARE_APPS[name])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "bareapp:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log", "--http", "httptools", "--loop", "uvloop"]
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        def call() -> None:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{name}: GET /healthz: HTTP {answer.status}")

        rows: dict[str, list[tuple[float, float, float]]] = {"after pause": [], "at once": []}
        for _ in range(samples):
            time.sleep(pause)
            rows["after pause"].append(timed(server.pid, 0, call))
            rows["at once"].append(timed(server.pid, 0, call))
        return {f"healthz, {name}, {when}": medians(got) for when, got in rows.items()}
    finally:
        server.terminate()
        server.wait()


def timed(server: int, kernel: int, call: Callable[[], None]) -> tuple[float, float, float]:
    """One call: its wall time and the server's and the kernel's CPU (``kernel`` 0: none), in
    microseconds."""
    server0 = process_cpu_seconds(server)
    kernel0 = process_cpu_seconds(kernel) if kernel else 0.0
    t0 = time.perf_counter()
    call()
    wall = time.perf_counter() - t0
    used = process_cpu_seconds(server) - server0
    return wall * 1e6, used * 1e6, (process_cpu_seconds(kernel) - kernel0) * 1e6 if kernel else 0.0


def medians(rows: Sequence[tuple[float, ...]]) -> dict[str, float]:
    names = ("wall_us", "server_cpu_us", "kernel_cpu_us", "kernel_minor_faults")[: len(rows[0])]
    return {name: round(statistics.median(r[i] for r in rows), 1) for i, name in enumerate(names)}


def first_cells(side: Side, samples: int) -> dict[str, dict[str, float]]:
    """A new session's first cell (the suite's time-to-interactive cell), and the same cell
    again in that session, each after ``FIRST_CELL_SETTLE_S`` of quiet: wall, CPU, and the
    kernel's minor page faults (copies of the zygote's pages, mostly, that the cell writes
    to). The kernel is the ready session the call was given: of the server's descendants
    before the call, the one whose CPU grew most (the refill that follows is a new one)."""
    rows: dict[str, list[tuple[float, ...]]] = {"first cell": [], "second cell": []}
    for i in range(samples):
        identifier = f"first-{i}"
        kernel = 0
        for name in rows:
            time.sleep(FIRST_CELL_SETTLE_S)
            side.connect()
            before = {p: process_cpu_seconds(p) for p in descendants(side.pid)}
            faults = {p: minor_faults(p) for p in before}
            row = timed(side.pid, kernel, functools.partial(side.call, TTI_CELL, identifier))
            if not kernel:  # the first cell: find its kernel, and its CPU, afterwards
                kernel = max(before, key=lambda p: process_cpu_seconds(p) - before[p])
                row = (row[0], row[1], (process_cpu_seconds(kernel) - before[kernel]) * 1e6)
            rows[name].append((*row, minor_faults(kernel) - faults[kernel]))
    return {f"{name}, new identifier each sample": medians(got) for name, got in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of quiet before")
    parser.add_argument("--code", default="x += 1", help="the cell (after x = 0)")
    parser.add_argument("--first-samples", type=int, default=16, help="new sessions' first cells")
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

            calls: dict[str, tuple[Callable[[], None], bool]] = {
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
                    kernel = side.kernel if with_kernel else 0
                    rows[f"{name} after pause"].append(timed(side.pid, kernel, call))
                    rows[f"{name} at once"].append(timed(side.pid, kernel, call))
            first = first_cells(side, opts.first_samples)
        finally:
            side.server.stop()
        figures = {key: medians(value) for key, value in rows.items()}
        figures.update(first)
        for name in BARE_APPS:
            figures.update(bare_healthz(name, Path(tmp), opts.samples, opts.pause))
    for key, got in figures.items():
        faults = f", kernel faults {got['kernel_minor_faults']:4.0f}" if key in first else ""
        print(
            f"{key:38s} wall {got['wall_us']:7.0f} us, server CPU {got['server_cpu_us']:6.0f} us,"
            f" kernel CPU {got['kernel_cpu_us']:6.0f} us{faults} (medians)"
        )
    stamp = dt.datetime.now(dt.UTC)
    doc = {
        "when": stamp.isoformat(timespec="seconds"),
        "code": opts.code,
        "pause_s": opts.pause,
        "samples": opts.samples,
        "first_cell": {"code": TTI_CELL, "samples": opts.first_samples},
        "medians": figures,
        "machine": machine(),
    }
    path = opts.json or RESULTS / f"idle-{stamp:%Y-%m-%d-%H%M}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
