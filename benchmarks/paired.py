"""Paired comparison of two builds: server and kernel CPU per request, requests interleaved.

On this kind of machine (two vCPUs of a microVM) a whole suite run moves by a quarter from one
run to the next, so a change worth 5 % cannot be seen by comparing runs. Here two real servers
run side by side, one on a base revision (``git archive REV src``) and one on the working tree
(a copy; both imported through ``PYTHONPATH``), and the same cell goes to each in turn, one
request at a time over a keep-alive connection, in alternating order. Whatever the machine
does meanwhile, both pay it alike. Each server's own CPU and that of the kernel of its one
session are read from ``/proc`` per round (the scheduler's nanoseconds); caches are cold for
every request (the other server ran in between), which is what a request meets under load
here.

    .venv/bin/python -m benchmarks.paired --base dc2b3dc
    .venv/bin/python -m benchmarks.paired --base HEAD~2 --tree HEAD --code 'print(1)'
    .venv/bin/python -m benchmarks.paired --base HEAD --wrk 5 --access-log
    .venv/bin/python -m benchmarks.paired --base HEAD~1 --new-identifier --requests 300
    .venv/bin/python -m benchmarks.paired --base HEAD~1 --runtime python-3.13

``--new-identifier`` times what the suite's time to interactive does instead: each request
names a new identifier (the pool hands out one of its 16 ready sessions, as the suite's), after
``/readyz`` says the refill of the last one is done, and the session is deleted afterwards. It
reports the wall time and the server's CPU over the request, and the CPU of all the server's
descendants per new identifier (the fork, the session's jail, warm-up, first cell and exit).
``--requests 300`` is enough here; each takes a refill. ``--ready 0`` keeps no ready
sessions: each new identifier is forked on demand, in the request's path.

``--wrk SECONDS`` measures under load instead: each round runs wrk for that long against one
server and then the other (50 sessions, ``x += 1``, as the suite's throughput figure), and
reports executions per second and the CPU per request of the server and of all its
descendants (the kernels, the zygotes, the pool's refills). Work that batches several
requests (one write for several log lines, say) only shows here: sequential requests come
one at a time. ``--access-log`` turns on the access log (the shipped default; off otherwise,
as it is one more line per request on both sides).

The whole comparison runs twice, each side starting first once: the server started first
cost 2-4 % more CPU per request in a comparison of a build with itself. Prints one line per
round and the totals of both orders; writes ``benchmarks/results/paired-<time>.json`` (or
``--json``). A change is real when it points the same way in both orders, well past that.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    API_KEY,
    API_VERSION,
    RESULTS,
    SESSION_API_VERSION,
    machine,
    nearest_rank,
)
from benchmarks.http_api import (
    check_answer,
    descendants,
    execute_body,
    process_cpu_seconds,
    reaped_cpu_seconds,
)
from benchmarks.suite_drivers import MAIN_READY, TTI_CELL, X_CELL
from benchmarks.suite_measures import WRK_SCRIPT
from sessionpool.server.testing import ServerProcess

REPO = Path(__file__).resolve().parent.parent
WRK_SESSIONS = 50
#: one side's figures in one round
Row = dict[str, int]


def config(access_log: bool, ready: int, runtime: str = "python") -> str:
    return (
        f"[server]\naccess_log = {str(access_log).lower()}\n\n[pools.main]\n"
        f'ready_sessions = {ready}\nruntime = "{runtime}"\n'
        f"max_sessions = {WRK_SESSIONS + 8}\ncooldown_seconds = 3600\n"
    )


class Side:
    """One server, its keep-alive connection and the kernel of its session."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        env: dict[str, str],
        access_log: bool,
        ready: int = 2,
        runtime: str = "python",
    ) -> None:
        self.name = name
        self.server = ServerProcess(
            workdir / name,
            config=config(access_log, ready, runtime),
            api_key=API_KEY,
            startup_timeout=180.0,
            env=env,
        )
        self.conn: http.client.HTTPConnection | None = None
        self.kernel = 0
        self.server_s = 0.0  # CPU seconds over the measured rounds
        self.kernel_s = 0.0
        self.latencies: list[float] = []

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the server and of its session's kernel."""
        return process_cpu_seconds(self.pid), process_cpu_seconds(self.kernel)

    def start(self) -> None:
        self.server.start()
        self.connect()

    def connect(self) -> None:
        """A new keep-alive connection (the server closes one idle for 5 s)."""
        if self.conn is not None:
            self.conn.close()
        host, port = self.server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def call(self, code: str, identifier: str = "paired") -> None:
        assert self.conn is not None
        body = json.dumps(execute_body(code))
        path = f"/pools/main/code/execute?api-version={API_VERSION}&identifier={identifier}"
        headers = {**self.server.auth, "Content-Type": "application/json"}
        self.conn.request("POST", path, body, headers)
        answer = self.conn.getresponse()
        check_answer(answer.status, answer.read(), f"{self.name}: {code!r}")

    def settle(self) -> None:
        """Until ``/readyz`` answers 200: the pool's refill is done."""
        assert self.conn is not None
        end = time.monotonic() + 60
        while True:
            self.conn.request("GET", "/readyz")
            answer = self.conn.getresponse()
            answer.read()
            if answer.status == 200:
                return
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name}: the pool did not refill in 60 s")
            time.sleep(0.002)

    def delete(self, identifier: str) -> None:
        assert self.conn is not None
        path = f"/pools/main/session?api-version={SESSION_API_VERSION}&identifier={identifier}"
        self.conn.request("DELETE", path, headers=self.server.auth)
        answer = self.conn.getresponse()
        body = answer.read()
        if answer.status != 204:
            raise RuntimeError(f"{self.name}: delete {identifier}: HTTP {answer.status}: {body!r}")

    def find_kernel(self, code: str) -> None:
        """The session's kernel: of the server's descendants, the one whose CPU grows with
        the calls (the zygotes and the ready sessions stay idle)."""
        pids = descendants(self.pid)
        before = {p: process_cpu_seconds(p) for p in pids}
        for _ in range(100):
            self.call(code)
        self.kernel = max(pids, key=lambda p: process_cpu_seconds(p) - before[p])

    def charge(self, before: tuple[float, float], after: tuple[float, float], n: int) -> Row:
        """Add one round's CPU (the server's, the rest's) over its ``n`` requests to the
        totals; returns that round's figures per request."""
        server, rest = after[0] - before[0], after[1] - before[1]
        self.server_s += server
        self.kernel_s += rest
        return {"server_us": round(server * 1e6 / n), "kernel_us": round(rest * 1e6 / n)}

    def all_cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the server and of all its descendants together, those that
        have exited and been waited for included (a deleted session's through its zygote, a
        retired zygote's through the server)."""
        rest = reaped_cpu_seconds(self.pid)
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError):  # exited since the listing
                rest += process_cpu_seconds(pid) + reaped_cpu_seconds(pid)
        return process_cpu_seconds(self.pid), rest

    def wrk(self, seconds: float) -> int:
        """wrk for ``seconds`` against this server's ``WRK_SESSIONS`` sessions, as the suite
        runs it; returns the requests it completed (every answer checked)."""
        env = {
            **os.environ,
            "WRK_PATH": f"/pools/main/code/execute?api-version={API_VERSION}&identifier=",
            "WRK_PREFIX": "wrk",
            "WRK_SESSIONS": str(WRK_SESSIONS),
            "WRK_KEY": API_KEY,
        }
        command = ["wrk", "-t2", f"-c{WRK_SESSIONS}", f"-d{seconds:g}s", "-s", str(WRK_SCRIPT)]
        done = subprocess.run(
            [*command, self.server.url],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
        failed = got["failed_checks"] + got["non2xx"] + got["read"] + got["timeout"]
        if failed:
            raise RuntimeError(f"{self.name}: {failed} of wrk's requests failed: {got}")
        return int(got["requests"])


def export(rev: str, into: Path) -> Path:
    """``src`` of ``rev`` under ``into``; returns the directory to put on ``PYTHONPATH``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


@dataclass
class Options:
    base: str
    tree: str | None  # None: the working tree
    requests: int
    rounds: int
    code: str
    wrk_s: float  # 0: sequential requests
    access_log: bool
    new_identifier: bool = False  # each request a new identifier (a ready session)
    ready: int = MAIN_READY  # the pool's ready sessions with new_identifier (0: on demand)
    runtime: str = "python"  # the pool's runtime on both sides


def run(opts: Options, tree_first: bool) -> dict[str, Any]:
    """One comparison. Whichever server starts first costs 2-4 % more CPU per request with
    the same code, so ``main`` runs both orders."""
    with tempfile.TemporaryDirectory(prefix="paired-") as tmp:
        work = Path(tmp)
        # both sides import copies the same way: the installed working tree against a copy
        # differed by 5 % with the same code
        copies = work / "code"
        for name in ("base", "tree"):
            (copies / name).mkdir(parents=True)
        if opts.tree is None:
            tree_src = copies / "tree" / "src"
            shutil.copytree(REPO / "src", tree_src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            tree_src = export(opts.tree, copies / "tree")
        base_env = {"PYTHONPATH": str(export(opts.base, copies / "base"))}
        ready = opts.ready if opts.new_identifier else 2
        sides = [
            Side("base", work, base_env, opts.access_log, ready, opts.runtime),
            Side("tree", work, {"PYTHONPATH": str(tree_src)}, opts.access_log, ready, opts.runtime),
        ]
        try:
            for side in sides[::-1] if tree_first else sides:
                side.start()
                side.call("x = 0")
            if opts.wrk_s:
                return {"tree_first": tree_first, **under_wrk(sides, opts)}
            if opts.new_identifier:
                return {"tree_first": tree_first, **new_identifiers(sides, opts)}
            return {"tree_first": tree_first, **sequential(sides, opts)}
        finally:
            for side in sides:
                side.server.stop()


def sequential(sides: list[Side], opts: Options) -> dict[str, Any]:
    """Requests one at a time, alternating between the sides."""
    for side in sides:
        side.connect()
        side.find_kernel(opts.code)
    for _ in range(200):  # both warmed alike
        for side in sides:
            side.call(opts.code)
    per_round = opts.requests // opts.rounds
    table = []
    for r in range(opts.rounds):
        start = {side.name: side.cpu() for side in sides}
        for i in range(per_round):
            for side in sides if i % 2 else sides[::-1]:
                t0 = time.perf_counter()
                side.call(opts.code)
                side.latencies.append(time.perf_counter() - t0)
        row: dict[str, Any] = {"round": r}
        for side in sides:
            row[side.name] = side.charge(start[side.name], side.cpu(), per_round)
        table.append(row)
        say(row, sides, "kernel")
    return {"requests": per_round * opts.rounds, "rounds": table, "totals": totals_of(sides)}


def totals_of(sides: list[Side]) -> dict[str, dict[str, float]]:
    """Each side's CPU per request and latency percentiles over the measured rounds."""
    totals = {}
    for side in sides:
        done = len(side.latencies)
        lat = sorted(side.latencies)
        totals[side.name] = {
            "server_us_per_request": round(side.server_s * 1e6 / done, 1),
            "kernel_us_per_request": round(side.kernel_s * 1e6 / done, 1),
            "p50_ms": round(nearest_rank(lat, 50) * 1000, 3),
            "p99_ms": round(nearest_rank(lat, 99) * 1000, 3),
        }
    return totals


def new_identifiers(sides: list[Side], opts: Options) -> dict[str, Any]:
    """One new identifier at a time, alternating between the sides, each after its pool has
    refilled. The server's CPU is read over each request alone (one read of ``/proc``); its
    descendants' over the whole round (the forks, each session's jail, warm-up, first cell and
    exit, counted through the zygote once it has waited for the session), as the scan of every
    descendant between refill and request would stand in the timed path."""
    for side in sides:
        side.connect()

    def sample(side: Side, measured: bool) -> float:
        side.settle()
        identifier = f"new-{uuid.uuid4().hex[:12]}"
        before = process_cpu_seconds(side.pid)
        t0 = time.perf_counter()
        side.call(opts.code, identifier)
        took = time.perf_counter() - t0
        server = process_cpu_seconds(side.pid) - before
        side.delete(identifier)
        if measured:
            side.latencies.append(took)
        return server

    for _ in range(10):  # both warmed alike
        for side in sides:
            sample(side, measured=False)
    per_round = opts.requests // opts.rounds
    table = []
    for r in range(opts.rounds):
        server = {side.name: 0.0 for side in sides}
        start = {side.name: side.all_cpu()[1] for side in sides}
        for i in range(per_round):
            for side in sides if i % 2 else sides[::-1]:
                server[side.name] += sample(side, measured=True)
        row: dict[str, Any] = {"round": r}
        for side in sides:
            rest = side.all_cpu()[1] - start[side.name]
            row[side.name] = side.charge((0.0, 0.0), (server[side.name], rest), per_round)
        table.append(row)
        say(row, sides, "descendants")
    return {"requests": per_round * opts.rounds, "rounds": table, "totals": totals_of(sides)}


def say(row: dict[str, Any], sides: list[Side], rest: str) -> None:
    """One line per round: each side's figures (``rest``: what the CPU beside the server's
    is of)."""
    parts = []
    for side in sides:
        got = row[side.name]
        rate = f"{got['exec_per_s']} exec/s, " if "exec_per_s" in got else ""
        parts.append(
            f"{side.name} {rate}server {got['server_us']} us, {rest} {got['kernel_us']} us"
        )
    print(f"round {row['round']}: " + ", ".join(parts), flush=True)


def under_wrk(sides: list[Side], opts: Options) -> dict[str, Any]:
    """wrk against one side and then the other, each round in the other order; CPU per
    request of each server and of its descendants (the kernels above all)."""
    for side in sides:
        side.connect()
        for k in range(WRK_SESSIONS):
            side.call("x = 0", f"wrk-{k}")
        side.wrk(2.0)  # warmed alike
    requests = {side.name: 0 for side in sides}
    table = []
    for r in range(opts.rounds):
        row: dict[str, Any] = {"round": r}
        for side in sides if r % 2 else sides[::-1]:
            before = side.all_cpu()
            n = side.wrk(opts.wrk_s)
            requests[side.name] += n
            figures = side.charge(before, side.all_cpu(), n)
            row[side.name] = {"exec_per_s": round(n / opts.wrk_s), **figures}
        table.append(row)
        say(row, sides, "descendants")
    totals = {
        side.name: {
            "exec_per_s": round(requests[side.name] / (opts.wrk_s * opts.rounds), 1),
            "server_us_per_request": round(side.server_s * 1e6 / requests[side.name], 1),
            "kernel_us_per_request": round(side.kernel_s * 1e6 / requests[side.name], 1),
        }
        for side in sides
    }
    return {"wrk_s": opts.wrk_s, "rounds": table, "totals": totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD", help="the revision to compare with")
    parser.add_argument("--tree", help="a revision instead of the working tree")
    parser.add_argument("--requests", type=int, default=3000, help="per server and order")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--code",
        help="the cell (after x = 0); default x += 1, or with --new-identifier the suite's "
        "time-to-interactive cell (a new session has no x)",
    )
    parser.add_argument("--json", type=Path, help="where to write the result")
    parser.add_argument("--wrk", type=float, default=0.0, help="seconds of wrk per round")
    parser.add_argument("--access-log", action="store_true", help="the servers' access log on")
    parser.add_argument(
        "--new-identifier", action="store_true", help="each request a new identifier"
    )
    parser.add_argument(
        "--ready",
        type=int,
        default=MAIN_READY,
        help="the pool's ready sessions with --new-identifier (0: each forked on demand)",
    )
    parser.add_argument("--runtime", default="python", help="the pool's runtime on both sides")
    args = parser.parse_args()
    if args.code is None:
        args.code = TTI_CELL if args.new_identifier else X_CELL
    opts = Options(
        args.base,
        args.tree,
        args.requests,
        args.rounds,
        args.code,
        args.wrk,
        args.access_log,
        args.new_identifier,
        args.ready,
        args.runtime,
    )

    def commit(rev: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", rev],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    runs = []
    for tree_first in (False, True):
        print(f"-- {'tree' if tree_first else 'base'} started first")
        runs.append(run(opts, tree_first))
    totals: dict[str, dict[str, float]] = {}
    for name in ("base", "tree"):
        both = [r["totals"][name] for r in runs]
        totals[name] = {k: round(sum(t[k] for t in both) / len(both), 3) for k in both[0]}
        t = totals[name]
        if opts.wrk_s:
            print(
                f"{name}: {t['exec_per_s']:.0f} exec/s; server {t['server_us_per_request']:.0f}"
                f" us, descendants {t['kernel_us_per_request']:.0f} us of CPU per request "
                "(both orders)"
            )
            continue
        rest = "descendants" if opts.new_identifier else "kernel"
        print(
            f"{name}: server {t['server_us_per_request']:.0f} us, {rest} "
            f"{t['kernel_us_per_request']:.0f} us of CPU per request; p50 {t['p50_ms']} ms, "
            f"p99 {t['p99_ms']} ms (both orders)"
        )
    doc = {
        "base": args.base,
        "base_commit": commit(args.base),
        "tree": args.tree or "working tree",
        "tree_commit": commit(args.tree or "HEAD") + ("" if args.tree else " + changes"),
        "code": args.code,
        "wrk_s": args.wrk,
        "access_log": args.access_log,
        "new_identifier": args.new_identifier,
        "ready": args.ready if args.new_identifier else None,
        "runtime": args.runtime,
        "runs": runs,
        "totals": totals,
        "machine": machine(),
    }
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H%M")
    path = args.json or RESULTS / f"paired-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
