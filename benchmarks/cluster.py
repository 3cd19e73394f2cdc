"""Cluster benchmark: a ``serve --cluster`` gateway over a 3-node Ray cluster beside one server.

Run as ``.venv/bin/python -m benchmarks.cluster [--quick] [--json PATH]`` from the repository
root (as root: the node engines run the jail backend). The script starts, in this one run and
all on 127.0.0.1, a real Ray cluster of a head and three nodes (``cluster.testing.LocalCluster``:
each node its own raylet, each running a node engine), a gateway on it (``ServerProcess`` with
``--cluster``) and a single ``sessionpool serve`` with the same pools (``ServerProcess``
without). It prints a Markdown table and JSON, and writes the JSON to ``--json`` or to
``benchmarks/results/cluster-<UTC date>.json``. Everything it starts is stopped at the end, on
error too.

What is measured (``time.perf_counter`` wall times in this process, the client; percentiles are
nearest-rank; warm-ups are discarded). Every call is the 2024-02-02-preview ``code/execute`` with
a bearer key, over HTTP/1.1 keep-alive. Pools: ``default`` keeps 4 ready sessions, ``burst``
keeps 4 ready sessions with ``max_sessions`` 600; on the cluster that is per node (every node
engine keeps its own ready sessions), and ``max_sessions`` also holds cluster-wide.

- **warm allocation**: a new identifier -> the first result of ``print(1)``, on the single server
  and on the gateway, alternating (the order flips each round, so drift in the machine's load
  falls on both alike). After each sample the session is deleted (``DELETE session``); before
  the next one the script waits 2 x ``poll_seconds`` + 0.1 s (so the directory's view is newer
  than the delete), then polls until every pool is refilled (single: ``/readyz``; cluster:
  ``GET /cluster`` shows every active node's ready sessions back at the target), and times the
  sample as soon as it is.
- **x += 1**: the round trip of ``x += 1`` in one session after ``x = 0``, back to back, on
  both, in alternating blocks of 25 calls.
- **difference**: cluster - single at p50, p95 and p99 of both; targets: at most +1 ms at p50
  for the allocation, +0.5 ms for ``x += 1``.
- **burst**: 500 new identifiers at once (``asyncio.gather``, one ``httpx.AsyncClient`` each,
  connections opened beforehand) in pool ``burst`` over the gateway: the success rate, each
  request's latency, and how the sessions spread over the nodes (``GET /cluster``). The same
  burst on the single server beside it, for reference.
- **node loss**: sessions placed on the three nodes (``x = i``), then the node holding the first
  one is removed (``LocalCluster.remove_node``: its raylet and every process of it killed).
  Each identifier the node held is polled with ``x`` every 50 ms from before the loss; the
  figures are the times from the start of ``remove_node`` to the first answer reporting the
  loss (a failed execution whose stderr says "was lost") and to the first answer from a fresh
  session on another node (with ``x`` that is a ``NameError``: the state is gone, as the loss
  answer said; ``x = 7`` then runs there, checked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _common
from benchmarks._common import (
    API_KEY,
    API_VERSION,
    SESSION_API_VERSION,
    Check,
    Figure,
    PhaseMeter,
    Target,
    loadavg,
    loop_factory,
    ms_since,
)
from sessionpool.server.testing import ServerProcess

NODES = 3
DEFAULT_POOL = "default"
BURST_POOL = "burst"
DEFAULT_READY = 4
BURST_READY = 4
BURST_MAX = 600
#: how often the directory reads the node engines' figures (the view is this far behind)
POLL_SECONDS = 0.25
#: after a delete, the cluster's view is newer than it once this has passed
SETTLE_S = 2 * POLL_SECONDS + 0.1
#: the interval of the node-loss polls
LOSS_POLL_S = 0.05
#: three node engines fork their zygotes and warm their pools on a small machine
ENGINES_UP_SECONDS = 300.0
#: x += 1 alternates between the two servers in blocks of this many calls
BLOCK = 25

POOLS = f"""
[pools.{DEFAULT_POOL}]
ready_sessions = {DEFAULT_READY}
max_sessions = 64
cooldown_seconds = 3600

[pools.{BURST_POOL}]
ready_sessions = {BURST_READY}
max_sessions = {BURST_MAX}
cooldown_seconds = 3600
"""
CLUSTER = f"""
[cluster]
node_ip_address = "127.0.0.1"
poll_seconds = {POLL_SECONDS}
"""
READY = {DEFAULT_POOL: DEFAULT_READY, BURST_POOL: BURST_READY}

SINGLE = "single server"
CLUSTERED = f"cluster ({NODES} nodes)"


@dataclass(frozen=True)
class Sizes:
    warm: int
    alloc_warmup: int
    roundtrip: int
    roundtrip_warmup: int
    burst: int
    loss_sessions: int  # placed before the node loss, spread over the nodes


FULL = Sizes(
    warm=200, alloc_warmup=3, roundtrip=2000, roundtrip_warmup=50, burst=500, loss_sessions=9
)
QUICK = Sizes(
    warm=30, alloc_warmup=3, roundtrip=300, roundtrip_warmup=25, burst=500, loss_sessions=9
)


# -- targets --------------------------------------------------------------------------------------


def difference(figures: dict[str, Figure], what: str, pct: float) -> float:
    return figures[f"cluster.{what}"].pct(pct) - figures[f"single.{what}"].pct(pct)


def _diff_at_most(what: str, limit: float) -> Check:
    def check(figures: dict[str, Figure], extra: dict[str, Any]) -> tuple[bool, str]:
        diff = difference(figures, what, 50)
        return diff <= limit, f"cluster - single p50 {diff:+.3f} ms <= +{limit:g} ms"

    return check


TARGETS = [
    Target(
        "cluster.warm",
        "warm allocation: cluster - single p50 <= +1 ms",
        _diff_at_most("warm", 1.0),
    ),
    Target(
        "cluster.x_plus_1",
        "x += 1: cluster - single p50 <= +0.5 ms",
        _diff_at_most("x_plus_1", 0.5),
    ),
]


# -- HTTP -----------------------------------------------------------------------------------------


def execute_body(code: str) -> dict[str, Any]:
    return {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}


def body(code: str) -> bytes:
    return json.dumps(execute_body(code)).encode()


PRINT_1 = body("print(1)")
X = body("x")


def check_execute(response: httpx.Response, what: str, stdout: str | None = None) -> dict[str, Any]:
    """The ``properties`` of a successful execute; raises on anything else."""
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    props: dict[str, Any] = response.json()["properties"]
    if props["status"] != "Success":
        raise RuntimeError(f"{what}: {props['status']}: {props['stderr'][-500:]}")
    if stdout is not None and props["stdout"] != stdout:
        raise RuntimeError(f"{what}: printed {props['stdout']!r}, expected {stdout!r}")
    return props


class Side:
    """One of the two systems measured: its server process and how to tell it is refilled."""

    def __init__(self, name: str, key: str, server: ServerProcess) -> None:
        self.name = name
        self.key = key  # "single" or "cluster": the figures' key prefix
        self.server = server

    @property
    def clustered(self) -> bool:
        return self.key == "cluster"

    def execute_url(self, pool: str, ident: str) -> httpx.URL:
        return httpx.URL(
            f"{self.server.endpoint(pool)}/code/execute"
            f"?identifier={ident}&api-version={API_VERSION}"
        )

    def session_url(self, pool: str, ident: str) -> str:
        return (
            f"{self.server.endpoint(pool)}/session"
            f"?identifier={ident}&api-version={SESSION_API_VERSION}"
        )

    def refilled(self, client: httpx.Client) -> bool:
        if not self.clustered:
            return client.get(self.server.url + "/readyz").status_code == 200
        return view_refilled(cluster_view(client, self.server))


def cluster_view(client: httpx.Client, server: ServerProcess) -> dict[str, Any]:
    r = client.get(server.url + "/cluster")
    if r.status_code != 200:
        raise RuntimeError(f"GET /cluster: HTTP {r.status_code}: {r.text[:300]}")
    view: dict[str, Any] = r.json()
    return view


def active(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in view["nodes"] if n["state"] == "active"]


def view_refilled(view: dict[str, Any], nodes: int = NODES) -> bool:
    """``nodes`` active node engines, each with every pool's ready sessions at the target."""
    up = active(view)
    return len(up) == nodes and all(
        n["pools"][pool]["ready"] >= ready for n in up for pool, ready in READY.items()
    )


def per_node(view: dict[str, Any], pool: str) -> dict[str, int]:
    return {n["node_id"][:12]: int(n["pools"][pool]["sessions"]) for n in view["nodes"]}


def wait_for(
    what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.005
) -> float:
    """Poll ``probe`` until true; the seconds it took (raises past ``timeout``)."""
    t0 = time.monotonic()
    while not probe():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: not after {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - t0


def log_errors(server: ServerProcess, limit: int = 4) -> list[str]:
    """The server log's distinct tracebacks (by their last line), whole, and its ERROR lines."""
    found: dict[str, str] = {}
    block: list[str] = []
    for line in server.log().splitlines():
        if block:
            block.append(line)
            if (
                line
                and not line[0].isspace()
                and not line.startswith(("Traceback", "During", "The above"))
            ):
                found.setdefault(line, "\n".join(block)[-3000:])
                block = []
        elif line.startswith("Traceback"):
            block = [line]
        elif " ERROR" in line or "ERROR:" in line:
            found.setdefault(line, line)
    return list(found.values())[:limit]


def engines_gone(pids: set[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` for the node engines' processes to exit; those still there."""
    end = time.monotonic() + timeout
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    while alive and time.monotonic() < end:
        time.sleep(0.1)
        alive = [p for p in alive if Path(f"/proc/{p}").exists()]
    return alive


def remove_cgroups(pids: set[int]) -> int:
    """Remove the (empty) cgroup trees the node engines of ``pids`` made, as a server's own
    start sweeps those of dead servers (``sessionpool-<pid>-*``); how many trees."""
    removed = 0
    root = Path("/sys/fs/cgroup")
    for pid in pids:
        for pattern in (f"*/sessionpool-{pid}-*", f"*/*/sessionpool-{pid}-*"):
            for tree in root.glob(pattern):
                if not tree.is_dir():
                    continue
                for child in tree.iterdir():
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    tree.rmdir()
                    removed += 1
    return removed


def other_work() -> dict[str, int]:
    """Processes of other work on the machine before this run starts anything (another test
    run, its Ray cluster, its servers), by kind."""
    kinds = {"pytest": "pytest", "raylet": "raylet", "gcs_server": "gcs_server"}
    kinds["sessionpool serve"] = "sessionpool.cli serve"
    found: Counter[str] = Counter()
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        for kind, needle in kinds.items():
            if needle in cmdline:
                found[kind] += 1
    return dict(found)


# -- the run --------------------------------------------------------------------------------------


class ClusterBench:
    def __init__(self, sizes: Sizes, log: Callable[[str], None], meter: PhaseMeter) -> None:
        self.sizes = sizes
        self.log = log
        self.meter = meter
        self.figures: list[Figure] = []
        self.extra: dict[str, Any] = {}
        self.notes: list[str] = []
        self._ids = iter(range(1 << 30))
        self.cluster: Any = None
        self.single: Side | None = None
        self.gateway: Side | None = None
        self.engine_pids: set[int] = set()  # the node engines' processes (from GET /cluster)

    def ident(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    @staticmethod
    def client(headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(headers=headers, timeout=120.0, http1=True, http2=False, verify=False)

    def run(self) -> None:
        from sessionpool.cluster.testing import LocalCluster

        workdir = Path(tempfile.mkdtemp(prefix="sessionpool-cluster-bench-"))
        servers: list[ServerProcess] = []
        try:
            with self.meter.phase("start"):
                t0 = time.perf_counter()
                self.log(f"starting a Ray cluster: head + {NODES} nodes on 127.0.0.1")
                self.cluster = LocalCluster(nodes=NODES)
                self.extra["ray_cluster_start_ms"] = round(ms_since(t0), 1)
                t1 = time.perf_counter()
                gateway = ServerProcess(
                    workdir / "gateway",
                    config=POOLS + CLUSTER,
                    args=["--cluster", self.cluster.address],
                    api_key=API_KEY,
                    startup_timeout=ENGINES_UP_SECONDS,
                )
                servers.append(gateway)
                self.log("starting the gateway (serve --cluster)")
                gateway.start()
                self.gateway = Side(CLUSTERED, "cluster", gateway)
                self.extra["gateway_start_to_ready_ms"] = round(ms_since(t1), 1)
                t2 = time.perf_counter()
                single = ServerProcess(
                    workdir / "single", config=POOLS, api_key=API_KEY, startup_timeout=180.0
                )
                servers.append(single)
                self.log("starting the single server")
                single.start()
                self.single = Side(SINGLE, "single", single)
                self.extra["single_start_to_ready_ms"] = round(ms_since(t2), 1)
                headers = {**gateway.auth, "Content-Type": "application/json"}
                with self.client(headers) as client:
                    self.log(f"waiting for {NODES} active node engines with their pools warm")
                    waited = wait_for(
                        "every node engine up with its ready sessions",
                        lambda: view_refilled(cluster_view(client, gateway)),
                        ENGINES_UP_SECONDS,
                        interval=0.25,
                    )
                self.extra["nodes_up_after_gateway_ready_s"] = round(waited, 1)
                nodes = cluster_view_once(gateway)["nodes"]
                self.extra["nodes"] = [n["node_id"] for n in nodes]
                self.engine_pids = {int(n["pid"]) for n in nodes if n.get("pid")}
                self.log(f"  cluster up: {ms_since(t0) / 1000:.1f} s from the start")
            with self.client(headers) as sc, self.client(headers) as cc:
                clients = {"single": sc, "cluster": cc}
                with self.meter.phase("warm_allocation"):
                    self.warm_allocation(clients)
                with self.meter.phase("x_plus_1"):
                    self.roundtrip(clients)
            runner = asyncio.Runner(loop_factory=loop_factory())
            with runner:
                with self.meter.phase("single.burst"):
                    runner.run(self.burst(self.single, headers))
                self.log("stopping the single server (the rest is the cluster's)")
                self.extra["single_server_exit_status"] = single.stop()
                with self.meter.phase("cluster.burst"):
                    runner.run(self.burst(self.gateway, headers))
                with self.meter.phase("node_loss"):
                    runner.run(self.node_loss(headers))
        except BaseException:
            for server in servers:
                self.log(f"server log ({server.log_path}):\n{server.log()[-4000:]}")
            raise
        finally:
            self.log("stopping the servers and the Ray cluster")
            for server in servers:
                status = server.stop()
                self.extra.setdefault("server_exit_status", {})[server.workdir.name] = status
                self.extra.setdefault("server_log_errors", {})[server.workdir.name] = log_errors(
                    server
                )
            if self.cluster is not None:
                t = time.perf_counter()
                self.cluster.shutdown()
                self.extra["ray_cluster_shutdown_ms"] = round(ms_since(t), 1)
            self.clean_up(workdir)

    def clean_up(self, workdir: Path) -> None:
        """What Ray's kill of the node engines leaves: their sessions' workspace mounts."""
        alive = engines_gone(self.engine_pids, 30.0)
        if alive:
            self.notes.append(f"node engine processes still alive after the shutdown: {alive}")
        from sessionpool.cluster.testing import unmount_under

        leaked = unmount_under(workdir)
        self.extra["mounts_left_by_the_node_engines"] = leaked
        if leaked:
            self.log(f"unmounted {leaked} session workspaces the killed node engines left behind")
            self.notes.append(
                f"{leaked} session workspace mounts (tmpfs) under the node engines' data "
                "directories were still mounted after the Ray cluster's shutdown (the node "
                "engines are killed, never closed); this script unmounted them"
            )
        cgroups = remove_cgroups(set(self.engine_pids) - set(alive))
        self.extra["cgroup_trees_left_by_the_node_engines"] = cgroups
        if cgroups:
            self.notes.append(
                f"{cgroups} cgroup trees of the killed node engines were left; this script "
                "removed them"
            )
        shutil.rmtree(workdir, ignore_errors=True)
        if workdir.exists():
            self.notes.append(f"{workdir} could not be removed entirely")

    # -- sequential: warm allocation and x += 1 --------------------------------------------------

    def sides(self, i: int) -> list[Side]:
        """Both systems; the order flips every round."""
        assert self.single is not None and self.gateway is not None
        pair = [self.single, self.gateway]
        return pair if i % 2 == 0 else pair[::-1]

    def delete(self, client: httpx.Client, side: Side, pool: str, ident: str) -> None:
        r = client.delete(side.session_url(pool, ident))
        if r.status_code != 204:
            raise RuntimeError(f"{side.name}: DELETE session: HTTP {r.status_code}: {r.text}")

    def settle(self, client: httpx.Client, side: Side) -> None:
        """Until every pool of ``side`` has its ready sessions again (never timed)."""
        time.sleep(SETTLE_S)
        wait_for(f"{side.name}: the pools refilled", lambda: side.refilled(client), 120.0)

    def warm_allocation(self, clients: dict[str, httpx.Client]) -> None:
        n, warmup = self.sizes.warm, self.sizes.alloc_warmup
        self.log(f"warm allocation x{n} on each, alternating ({DEFAULT_READY} ready per engine)")
        samples: dict[str, list[float]] = {"single": [], "cluster": []}
        for i in range(warmup + n):
            for side in self.sides(i):
                client = clients[side.key]
                self.settle(client, side)
                ident = self.ident(f"warm-{side.key}")
                url = side.execute_url(DEFAULT_POOL, ident)
                t0 = time.perf_counter()
                response = client.post(url, content=PRINT_1)
                elapsed = ms_since(t0)
                check_execute(response, f"{side.name}: print(1)", stdout="1\n")
                self.delete(client, side, DEFAULT_POOL, ident)
                if i >= warmup:
                    samples[side.key].append(elapsed)
            if (i + 1) % 10 == 0:
                self.log(f"  {i + 1}/{warmup + n}")
        for side in self.sides(0):
            self.figures.append(
                Figure(
                    f"{side.key}.warm",
                    side.name,
                    "new identifier -> first print(1) result, warm pool",
                    "ms",
                    samples[side.key],
                    f"POST code/execute; {DEFAULT_READY} ready sessions"
                    + (" per node engine" if side.clustered else "")
                    + f"; deleted after each sample, then {SETTLE_S:g} s and a poll until "
                    + ("GET /cluster shows every node refilled" if side.clustered else "/readyz")
                    + " (not timed); alternating with the other system",
                )
            )

    def roundtrip(self, clients: dict[str, httpx.Client]) -> None:
        n, warmup = self.sizes.roundtrip, self.sizes.roundtrip_warmup
        self.log(f"x += 1 x{n} on each, alternating in blocks of {BLOCK}")
        payload = body("x += 1")
        idents: dict[str, str] = {}
        samples: dict[str, list[float]] = {"single": [], "cluster": []}
        calls: Counter[str] = Counter()
        for side in self.sides(0):
            client = clients[side.key]
            idents[side.key] = self.ident(f"rt-{side.key}")
            url = side.execute_url(DEFAULT_POOL, idents[side.key])
            check_execute(client.post(url, content=body("x = 0")), f"{side.name}: x = 0")
            for _ in range(warmup):
                check_execute(client.post(url, content=payload), f"{side.name}: x += 1")
                calls[side.key] += 1
        blocks = math.ceil(n / BLOCK)
        for b in range(blocks):
            for side in self.sides(b):
                client = clients[side.key]
                url = side.execute_url(DEFAULT_POOL, idents[side.key])
                for _ in range(min(BLOCK, n - b * BLOCK)):
                    t0 = time.perf_counter()
                    response = client.post(url, content=payload)
                    elapsed = ms_since(t0)
                    check_execute(response, f"{side.name}: x += 1")
                    calls[side.key] += 1
                    samples[side.key].append(elapsed)
        for side in self.sides(0):
            client = clients[side.key]
            url = side.execute_url(DEFAULT_POOL, idents[side.key])
            got = check_execute(client.post(url, content=X), f"{side.name}: x")["result"]
            if str(got) != str(calls[side.key]):
                raise RuntimeError(f"{side.name}: x is {got!r}, expected {calls[side.key]}")
            self.delete(client, side, DEFAULT_POOL, idents[side.key])
            self.figures.append(
                Figure(
                    f"{side.key}.x_plus_1",
                    side.name,
                    "x += 1 round trip",
                    "ms",
                    samples[side.key],
                    "POST code/execute on one keep-alive connection, back to back in blocks of "
                    f"{BLOCK} alternating with the other system"
                    + ("; gateway -> node engine over HTTP" if side.clustered else ""),
                )
            )

    # -- concurrent: the burst ---------------------------------------------------------------------

    @staticmethod
    def async_client(headers: dict[str, str], connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=4.0,  # below uvicorn's 5 s keep-alive timeout
        )
        return httpx.AsyncClient(
            headers=headers, timeout=300.0, limits=limits, http1=True, http2=False, verify=False
        )

    async def async_settle(self, control: httpx.AsyncClient, side: Side, timeout: float) -> None:
        await asyncio.sleep(SETTLE_S)
        end = time.monotonic() + timeout
        while True:
            if side.clustered:
                r = await control.get(side.server.url + "/cluster")
                if r.status_code == 200 and view_refilled(r.json()):
                    return
            elif (await control.get(side.server.url + "/readyz")).status_code == 200:
                return
            if time.monotonic() > end:
                raise RuntimeError(f"{side.name}: the pools did not refill in {timeout:g} s")
            await asyncio.sleep(0.05)

    async def burst(self, side: Side | None, headers: dict[str, str]) -> None:
        assert side is not None
        n = self.sizes.burst
        key = f"{side.key}.burst"
        self.log(f"{side.name}: burst of {n} new identifiers in pool {BURST_POOL!r}")
        async with contextlib.AsyncExitStack() as stack:
            control = await stack.enter_async_context(self.async_client(headers, 64))
            clients = [
                await stack.enter_async_context(self.async_client(headers, 1)) for _ in range(n)
            ]
            await self.async_settle(control, side, 120.0)
            await asyncio.gather(*(c.get(side.server.url + "/healthz") for c in clients))
            await asyncio.sleep(0.5)
            idents = [self.ident(f"burst-{side.key}") for _ in range(n)]
            outcomes: Counter[str] = Counter()
            messages: dict[str, str] = {}

            async def one(client: httpx.AsyncClient, ident: str) -> float | None:
                url = side.execute_url(BURST_POOL, ident)
                return await _common.timed_print_1(client, url, PRINT_1, outcomes, messages)

            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(one(c, i) for c, i in zip(clients, idents, strict=True))
            )
            wall = ms_since(t0)
            ok = [r for r in results if r is not None]
            info: dict[str, Any] = {
                "requests": n,
                "succeeded": len(ok),
                "success_rate": round(len(ok) / n, 4),
                "outcomes": dict(outcomes),
                "errors": messages,
                "wall_ms": round(wall, 1),
            }
            self.log(
                f"  {len(ok)}/{n} ok; all answered in {wall:.0f} ms; outcomes {dict(outcomes)}"
            )
            for outcome, text in messages.items():
                self.log(f"    {outcome}: {text}")
            spread = ""
            if side.clustered:
                # the view is a poll behind: wait until it shows every session of the burst
                counts: dict[str, int] = {}
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    r = await control.get(side.server.url + "/cluster")
                    counts = per_node(r.json(), BURST_POOL)
                    if sum(counts.values()) >= len(ok):
                        break
                    await asyncio.sleep(0.1)
                info["sessions_per_node"] = counts
                spread = "; sessions per node " + ", ".join(
                    f"{node} {count}" for node, count in sorted(counts.items())
                )
                self.log(f"  spread over the nodes: {counts}")
            self.extra[key] = info
            self.figures.append(
                Figure(
                    key,
                    side.name,
                    f"burst of {n} new identifiers -> print(1) result",
                    "ms",
                    ok,
                    f"asyncio.gather, one AsyncClient each, connections opened beforehand; "
                    f"{BURST_READY} ready"
                    + (" per node engine" if side.clustered else "")
                    + f", the rest forked on demand; {len(ok)}/{n} succeeded; all answered in "
                    f"{wall:.0f} ms{spread}" + ("" if side.clustered else " (reference)"),
                    count=n,
                )
            )
            t1 = time.perf_counter()
            limit = asyncio.Semaphore(32)

            async def delete(ident: str) -> int:
                async with limit:
                    return (await control.delete(side.session_url(BURST_POOL, ident))).status_code

            statuses = await asyncio.gather(*(delete(i) for i in idents))
            bad = Counter(s for s in statuses if s != 204)
            if bad:
                self.log(f"  DELETE session after the burst: {dict(bad)} (besides 204)")
                info["delete_statuses"] = dict(bad)
            if side.clustered:
                end = time.monotonic() + 300
                while True:
                    r = await control.get(side.server.url + "/cluster")
                    view = r.json()
                    if sum(per_node(view, BURST_POOL).values()) == 0 and view_refilled(view):
                        break
                    if time.monotonic() > end:
                        raise RuntimeError(f"the burst's sessions did not go: {view}")
                    await asyncio.sleep(0.25)
            else:
                await self.async_settle(control, side, 300.0)
            info["deleted_and_refilled_ms"] = round(ms_since(t1), 1)

    # -- the node loss -----------------------------------------------------------------------------

    async def node_loss(self, headers: dict[str, str]) -> None:
        from sessionpool.cluster.testing import LocalCluster

        side = self.gateway
        assert side is not None and self.cluster is not None
        gw = side.server
        n = self.sizes.loss_sessions
        self.log(f"node loss: {n} sessions placed, then the holder of the first one removed")
        async with self.async_client(headers, 8) as control:
            idents = [self.ident("loss") for _ in range(n)]
            for i, ident in enumerate(idents):
                r = await control.post(
                    side.execute_url(DEFAULT_POOL, ident), content=body(f"x = {i}")
                )
                check_execute(r, f"x = {i}")
            holders: dict[str, str] = {}
            for ident in idents:
                r = await control.get(
                    f"{gw.url}/cluster/pools/{DEFAULT_POOL}/session", params={"identifier": ident}
                )
                if r.status_code != 200:
                    raise RuntimeError(f"locate {ident}: HTTP {r.status_code}: {r.text[:300]}")
                holders[ident] = str(r.json()["node_id"])
            victim_id = holders[idents[0]]
            on_victim = [i for i in idents if holders[i] == victim_id]
            kept = [i for i in idents if holders[i] != victim_id]
            victim = next(
                node for node in self.cluster.nodes if LocalCluster.node_id(node) == victim_id
            )
            self.log(
                f"  node {victim_id[:12]} holds {len(on_victim)} of {n}; polling them with x "
                f"every {LOSS_POLL_S * 1000:g} ms"
            )
            expected = {ident: str(idents.index(ident)) for ident in idents}
            timelines: dict[str, list[dict[str, Any]]] = {i: [] for i in on_victim}
            loss_at: list[float] = []  # set when remove_node starts
            limit_s = 120.0

            def kind(r: httpx.Response, ident: str) -> tuple[str, str]:
                """What an answer says, and its text when it is not the old session's."""
                if r.status_code != 200:
                    return f"http:{r.status_code}", r.text[:300]
                props = r.json()["properties"]
                if props["status"] == "Success":
                    if str(props["result"]) == expected[ident]:
                        return "old", ""
                    return "other-success", str(props)[:300]
                if "was lost" in props["stderr"]:
                    return "lost", props["stderr"][:300]
                if "NameError" in props["stderr"]:
                    return "fresh", ""
                return "failure", props["stderr"][-300:]

            async def poll(ident: str) -> None:
                async with self.async_client(headers, 1) as client:
                    url = side.execute_url(DEFAULT_POOL, ident)
                    next_at = time.perf_counter()
                    while True:
                        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                        t0 = time.perf_counter()
                        next_at = t0 + LOSS_POLL_S
                        try:
                            r = await client.post(url, content=X)
                            what, text = kind(r, ident)
                        except httpx.HTTPError as exc:
                            what, text = f"transport:{type(exc).__name__}", repr(exc)[:300]
                        t1 = time.perf_counter()
                        if loss_at:
                            entry = {
                                "sent_ms": round((t0 - loss_at[0]) * 1000, 1),
                                "answered_ms": round((t1 - loss_at[0]) * 1000, 1),
                                "kind": what,
                            }
                            if text:
                                entry["text"] = text
                            timelines[ident].append(entry)
                            if what == "fresh" or t1 - loss_at[0] > limit_s:
                                return

            pollers = [asyncio.create_task(poll(i)) for i in on_victim]
            await asyncio.sleep(0.5)  # the pollers see the sessions answer first
            loss_at.append(time.perf_counter())
            await asyncio.to_thread(self.cluster.remove_node, victim)
            removed_ms = ms_since(loss_at[0])
            self.log(f"  remove_node returned after {removed_ms:.0f} ms")
            await asyncio.gather(*pollers)
            lost_ms: list[float] = []
            fresh_ms: list[float] = []
            per_ident: dict[str, Any] = {}
            for ident in on_victim:
                line = timelines[ident]
                first_lost = next((e for e in line if e["kind"] == "lost"), None)
                first_fresh = next((e for e in line if e["kind"] == "fresh"), None)
                first_change = next((e for e in line if e["kind"] != "old"), None)
                kinds = Counter(e["kind"] for e in line)
                per_ident[ident] = {
                    "first_not_old_ms": first_change and first_change["answered_ms"],
                    "first_lost_ms": first_lost and first_lost["answered_ms"],
                    "first_fresh_ms": first_fresh and first_fresh["answered_ms"],
                    "answers": dict(kinds),
                    "timeline_after_loss": line[:200],
                }
                if first_lost is not None:
                    lost_ms.append(first_lost["answered_ms"])
                if first_fresh is not None:
                    fresh_ms.append(first_fresh["answered_ms"])
                if first_lost is None:
                    self.notes.append(f"{ident}: no answer reported the loss: {dict(kinds)}")
                elif first_fresh is None or first_fresh["answered_ms"] < first_lost["answered_ms"]:
                    self.notes.append(f"{ident}: no fresh session after the loss: {dict(kinds)}")
                self.log(
                    f"  {ident}: first 'was lost' at {per_ident[ident]['first_lost_ms']} ms, "
                    f"fresh session at {per_ident[ident]['first_fresh_ms']} ms; answers "
                    f"{dict(kinds)}"
                )
            # the fresh sessions work, elsewhere; the other nodes' sessions kept their state
            for ident in on_victim:
                r = await control.post(
                    side.execute_url(DEFAULT_POOL, ident), content=body("x = 7\nx")
                )
                props = check_execute(r, f"{ident}: x = 7 after the loss")
                if str(props["result"]) != "7":
                    raise RuntimeError(f"{ident}: x = 7 answered {props['result']!r}")
                r = await control.get(
                    f"{gw.url}/cluster/pools/{DEFAULT_POOL}/session", params={"identifier": ident}
                )
                if r.status_code != 200 or r.json()["node_id"] == victim_id:
                    raise RuntimeError(f"{ident}: not placed on another node: {r.text[:300]}")
            for ident in kept:
                r = await control.post(side.execute_url(DEFAULT_POOL, ident), content=X)
                got = check_execute(r, f"{ident}: x after the loss")["result"]
                if str(got) != expected[ident]:
                    raise RuntimeError(
                        f"{ident}: x is {got!r} after the loss, not {expected[ident]}"
                    )
            view = (await control.get(gw.url + "/cluster")).json()
            self.extra["node_loss"] = {
                "victim": victim_id,
                "sessions_placed": n,
                "sessions_on_victim": len(on_victim),
                "remove_node_ms": round(removed_ms, 1),
                "nodes_after": [(nd["node_id"][:12], nd["state"]) for nd in view["nodes"]],
                "identifiers": per_ident,
            }
            note = (
                f"one node loss (remove_node, not graceful); {len(on_victim)} identifiers of the "
                f"node polled concurrently with x every {LOSS_POLL_S * 1000:g} ms, one sample "
                f"each; remove_node itself returned after {removed_ms:.0f} ms"
            )
            self.figures.append(
                Figure(
                    "cluster.loss_reported",
                    CLUSTERED,
                    "node loss -> first answer saying the session 'was lost'",
                    "ms",
                    lost_ms,
                    note,
                    count=len(on_victim),
                )
            )
            self.figures.append(
                Figure(
                    "cluster.loss_recovered",
                    CLUSTERED,
                    "node loss -> first answer from a fresh session on another node",
                    "ms",
                    fresh_ms,
                    note + "; the fresh session answers x with NameError (its state is gone)",
                    count=len(on_victim),
                )
            )


def cluster_view_once(server: ServerProcess) -> dict[str, Any]:
    with httpx.Client(headers=server.auth, timeout=30) as client:
        return cluster_view(client, server)


# -- report ---------------------------------------------------------------------------------------

ORDER = [
    "single.warm",
    "cluster.warm",
    "single.x_plus_1",
    "cluster.x_plus_1",
    "single.burst",
    "cluster.burst",
    "cluster.loss_reported",
    "cluster.loss_recovered",
]


def signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.3f} ms"


def difference_rows(by_key: dict[str, Figure], extra: dict[str, Any]) -> list[str]:
    """Table rows of cluster - single, below the figures (their verdicts are the targets')."""
    rows: list[str] = []
    limits = {"warm": 1.0, "x_plus_1": 0.5}
    labels = {"warm": "warm allocation", "x_plus_1": "x += 1 round trip"}
    for what, limit in limits.items():
        if f"cluster.{what}" not in by_key or f"single.{what}" not in by_key:
            continue
        diffs = {f"p{p}": difference(by_key, what, p) for p in (50, 95, 99)}
        extra.setdefault("differences_ms", {})[what] = {k: round(v, 3) for k, v in diffs.items()}
        verdict = "PASS" if diffs["p50"] <= limit else "MISS"
        rows.append(
            f"| {labels[what]}: cluster - single | difference | - | "
            + " | ".join(signed(v) for v in diffs.values())
            + f" | {verdict}: p50 <= +{limit:g} ms |"
        )
    return rows


def after_lines(by_key: dict[str, Figure], extra: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key in ("single.burst", "cluster.burst"):
        if key in extra:
            b = extra[key]
            spread = b.get("sessions_per_node")
            lines.append(
                f"{by_key[key].system}, burst: {b['succeeded']}/{b['requests']} succeeded "
                f"({b['success_rate']:.1%}), all answered in {b['wall_ms']:.0f} ms"
                + (f"; sessions per node {spread}" if spread else "")
                + (f"; failures {b['outcomes']}" if b["succeeded"] != b["requests"] else "")
            )
    if "node_loss" in extra:
        loss = extra["node_loss"]
        lines.append(
            f"Node loss: node {loss['victim'][:12]} held {loss['sessions_on_victim']} of "
            f"{loss['sessions_placed']} sessions; remove_node took {loss['remove_node_ms']:.0f} "
            "ms; per identifier (ms from the loss): "
            + "; ".join(
                f"{ident}: lost at {v['first_lost_ms']}, fresh at {v['first_fresh_ms']}, "
                f"answers {v['answers']}"
                for ident, v in loss["identifiers"].items()
            )
        )
    return lines


def build_report(
    figures: list[Figure], meta: dict[str, Any], extra: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    figures.sort(key=lambda f: ORDER.index(f.key) if f.key in ORDER else len(ORDER))
    return _common.build_report(
        figures,
        TARGETS,
        meta,
        extra,
        before_targets=lambda by_key: difference_rows(by_key, extra),
        after_targets=lambda by_key: after_lines(by_key, extra),
    )


def machine_meta(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    packages = ("sessionpool", "ray", "httpx", "uvicorn", "uvloop", "fastapi")
    about = {
        "cluster": f"ray.cluster_utils.Cluster via sessionpool.cluster.testing.LocalCluster: a "
        f"head (no sessionpool resource: the directory only) and {NODES} nodes, each its own "
        "raylet with one node engine (jail backend), all on 127.0.0.1 on this one machine; "
        f"a gateway (serve --cluster, poll_seconds {POLL_SECONDS})",
        "single": "sessionpool serve on 127.0.0.1, jail backend, the same pools",
        "pools": f"{DEFAULT_POOL}: ready {DEFAULT_READY}, max 64; {BURST_POOL}: ready "
        f"{BURST_READY}, max {BURST_MAX} (ready per engine: the cluster keeps {NODES}x as many)",
        "client": "httpx, HTTP/1.1 keep-alive; a sync Client per system for the sequential "
        "figures, one AsyncClient per request (uvloop) for the burst",
    }
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "sizes": asdict(sizes),
        **_common.machine(),
        "versions": {name: _common.package_version(name) for name in packages},
        **about,
        "percentiles": "nearest-rank",
        "clock": "time.perf_counter",
    }


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _common.parse_args(__doc__, argv, quick="small sample sizes (a few minutes)", peer=False)
    if os.geteuid() != 0:
        print(
            "the jail backend needs root (per-session uids, namespaces, cgroups)", file=sys.stderr
        )
        return 2
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    log = _common.logger(began)
    others = other_work()
    busy_before, load_before = _common.machine_before(args, log)
    meter = PhaseMeter()
    bench = ClusterBench(sizes, log, meter)
    bench.run()
    extra = bench.extra
    extra["total_seconds"] = round(time.perf_counter() - began, 1)
    log("done")
    meta = machine_meta(args, sizes)
    meta["cpu_busy_before"] = round(busy_before, 3)
    meta["loadavg_before"] = load_before
    meta["loadavg_after"] = loadavg()
    meta["machine_busy_by_phase"] = meter.busy
    notes = [
        "the Ray head, the three nodes, their engines, the gateway, the single server and this "
        f"client all share this machine's {os.cpu_count()} CPUs: the cluster's hops are loopback, "
        "and its nodes compete for the same cores",
        "warm allocation and x += 1 alternate between the two systems, so the machine's load "
        "falls on both alike",
    ]
    if others:
        notes.append(
            f"other work was running when the run started (processes by kind: {others}): "
            "another test run may have been using the CPU at the same time; the latencies are "
            "inflated by it, and more so where its load peaked"
        )
    if busy_before > 0.1:
        notes.append(f"the machine was {busy_before:.0%} busy before the run")
    meta["notes"] = notes + bench.notes
    table, document = build_report(bench.figures, meta, extra)
    _common.publish(table, document, args.json, "cluster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
