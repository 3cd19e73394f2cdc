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
in PEER_PINS; numpy, pandas and matplotlib at our versions).

Time to interactive (TTI) is new session -> the first successful ``import numpy, pandas;
print(1)``. It is measured in three modes: sequential, staggered (a new session every 200 ms)
and burst (all at once); each with success rate and nearest-rank p50/p95/p99. Then warm cells
(``x += 1``, a pandas ``describe()``, a matplotlib PNG), 10 MB upload and download, throughput
against concurrency, and sessionpool's scaling ramp: idle sessions (each ran a pandas cell) added
step by step until admission control refuses, with allocation and ``x += 1`` latency, private
memory (USS) per session and the machine's used memory at every step.

Writes ``<out>/<UTC date>.json``, ``<out>/<UTC date>.md`` and PNG charts to ``<out>``
(``benchmarks/results`` by default).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run by path, as `sessionpool bench` does: import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from benchmarks import _common
from benchmarks import engine as eng
from benchmarks import http_api as hb
from sessionpool.server.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".bench"
PEER_VENV = BENCH_DIR / "peers"
#: what the suite installs into .bench/peers (numpy/pandas/matplotlib as in our own venv)
PEER_PINS = [
    "jupyter-kernel-gateway==3.0.1",
    "ipykernel==7.4.0",
    "jupyter_client==8.10.0",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "matplotlib==3.11.2",
]
API_KEY = "bench-key-0123456789abcdef"
API = "2024-02-02-preview"
SESSION_API = "2025-02-02-preview"

TTI_CELL = "import numpy, pandas; print(1)"
X_CELL = "x += 1"
DESCRIBE_CELL = eng.PANDAS_CELL
PNG_CELL = eng.PLOT_CELL
MAIN, BURST, SCALE = "main", "burst", "scale"
MAIN_READY, BURST_READY, SCALE_READY = 16, 8, 8
SYSTEMS = ["sessionpool", "kernel-gateway", "ipykernel", "subprocess"]
STAGGER_S = 0.2
#: a new session that has no answer by then counts as failed (and the suite goes on)
REQUEST_TIMEOUT_S = 60.0
#: BURST_DEFAULT keeps the shipped zygote_max_children (200); the other pools raise it, as a
#: burst larger than it leaves requests hanging at the zygote's rotation (docs/benchmarks.md)
BURST_DEFAULT = "burst-default"
MB = 1_000_000


@dataclass(frozen=True)
class Sizes:
    seq: int  # sessionpool TTI, sequential
    stagger: int
    bursts: tuple[int, ...]
    steady: int  # x += 1 samples
    cells: int  # describe / PNG samples
    files: int  # 10 MB upload + download
    concurrency: tuple[int, ...]
    window_s: float
    peer_seq: int  # peers' TTI samples per mode (a kernel costs ~1 CPU-second)
    peer_burst: int
    peer_steady: int
    peer_cells: int
    peer_concurrency: tuple[int, ...]
    peer_memory: int  # ipykernel kernels for the memory figure
    steps: tuple[int, ...]  # live idle sessions of the scaling ramp (then +step_after)
    step_after: int
    scale_cap: int | None  # max_sessions of the scale pool (None: memory admission refuses)
    ramp_budget_s: float
    probe_allocs: int
    probe_x: int


FULL = Sizes(
    seq=100,
    stagger=50,
    bursts=(100, 500),
    steady=1000,
    cells=50,
    files=10,
    concurrency=(1, 10, 50, 200),
    window_s=3.0,
    peer_seq=8,
    peer_burst=8,
    peer_steady=300,
    peer_cells=15,
    peer_concurrency=(1, 10),
    peer_memory=8,
    steps=(0, 100, 250, 500, 750, 1000),
    step_after=250,
    scale_cap=None,
    ramp_budget_s=300.0,
    probe_allocs=20,
    probe_x=300,
)
QUICK = Sizes(
    seq=20,
    stagger=10,
    bursts=(50,),
    steady=200,
    cells=10,
    files=3,
    concurrency=(1, 10, 50),
    window_s=1.0,
    peer_seq=2,
    peer_burst=3,
    peer_steady=50,
    peer_cells=3,
    peer_concurrency=(1, 4),
    peer_memory=3,
    steps=(0, 50, 100),
    step_after=0,
    scale_cap=110,
    ramp_budget_s=40.0,
    probe_allocs=10,
    probe_x=100,
)

began = time.perf_counter()


def log(text: str) -> None:
    print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr, flush=True)


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


# -- results --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a distribution (ms) with its success rate, or a single value."""

    metric: str
    system: str
    mode: str
    samples: list[float] = field(default_factory=list, repr=False)
    attempts: int = 0
    value: float | None = None
    unit: str = "ms"
    note: str = ""

    def summary(self) -> dict[str, Any]:
        values = sorted(self.samples)
        out: dict[str, Any] = {
            "metric": self.metric,
            "system": self.system,
            "mode": self.mode,
            "unit": self.unit,
            "note": self.note,
        }
        if self.value is not None:
            return {**out, "value": self.value, "n": self.attempts}
        return {
            **out,
            "n": self.attempts,
            "succeeded": len(values),
            "success_rate": len(values) / self.attempts if self.attempts else math.nan,
            "p50": _common.nearest_rank(values, 50),
            "p95": _common.nearest_rank(values, 95),
            "p99": _common.nearest_rank(values, 99),
        }

    def pct(self, p: float) -> float:
        return float(_common.nearest_rank(sorted(self.samples), p))


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.curves: dict[str, list[dict[str, Any]]] = {}
        self.extra: dict[str, Any] = {}

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        s = row.summary()
        if row.value is not None:
            log(f"  {row.system} {row.metric} [{row.mode}]: {row.value:,.1f} {row.unit}")
        else:
            log(
                f"  {row.system} {row.metric} [{row.mode}]: {s['succeeded']}/{s['n']} ok, "
                f"p50 {s['p50']:.2f} p95 {s['p95']:.2f} p99 {s['p99']:.2f} {row.unit}"
            )
        return row

    def get(self, metric: str, system: str, mode: str = "sequential") -> Row | None:
        for r in self.rows:
            if (r.metric, r.system, r.mode) == (metric, system, mode):
                return r
        return None


# -- drivers: one per system, the same interface ---------------------------------------------------


@dataclass
class Out:
    stdout: str
    pngs: int


class Driver:
    name = ""

    async def open(self) -> Any:
        """A new session (whatever that costs is part of time to interactive)."""
        raise NotImplementedError

    async def run(self, session: Any, code: str) -> Out:
        raise NotImplementedError

    async def close(self, session: Any) -> None:
        raise NotImplementedError

    async def settle(self) -> None:
        """Between sequential TTI samples, untimed (a warm pool refills)."""

    async def prepare(self, n: int) -> None:
        """Before a phase, untimed: client-side resources for ``n`` agents (connections)."""


class SessionpoolDriver(Driver):
    name = "sessionpool"

    def __init__(self, server: ServerProcess, pool: str = MAIN) -> None:
        self.server = server
        self.pool = pool
        self.headers = {**server.auth, "Content-Type": "application/json"}
        self.ssl = ssl.create_default_context()  # one for every client (~20 ms each to build)
        self.control = httpx.AsyncClient(headers=self.headers, timeout=300.0, verify=self.ssl)
        self.idle: list[httpx.AsyncClient] = []  # agents' clients, connection open

    async def prepare(self, n: int) -> None:
        """An agent holds its client and connection before it asks for a session: building an
        httpx client (its TLS context) costs ~20 ms and is not the server's."""
        more = [
            httpx.AsyncClient(headers=self.headers, timeout=300.0, verify=self.ssl)
            for _ in range(n - len(self.idle))
        ]
        self.idle = more + self.idle  # open() pops from the end: the n warmed last
        url = self.server.url + "/healthz"

        async def warm(client: httpx.AsyncClient) -> None:
            # uvicorn closes a connection idle for 5 s; a request can race that close
            for _ in range(3):
                try:
                    (await client.get(url)).raise_for_status()
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(warm(c) for c in self.idle[-n:]))

    def url(self, ident: str, what: str = "code/execute", api: str = API) -> str:
        return f"{self.server.endpoint(self.pool)}/{what}?identifier={ident}&api-version={api}"

    async def open(self) -> Any:
        if self.idle:
            client = self.idle.pop()
        else:  # not prepared: the client's cost is timed
            client = httpx.AsyncClient(headers=self.headers, timeout=300.0, verify=self.ssl)
        return (client, f"{self.pool}-{uuid.uuid4().hex[:12]}")

    async def run(self, session: Any, code: str) -> Out:
        client, ident = session
        body = json.dumps(hb.execute_body(code)).encode()
        response = await client.post(self.url(ident), content=body)
        props = hb.check_execute(response, code[:30])
        result = props.get("result")
        pngs = 1 if isinstance(result, dict) and result.get("base64_data") else 0
        return Out(str(props.get("stdout", "")), pngs)

    async def close(self, session: Any) -> None:
        client, ident = session
        with contextlib.suppress(httpx.HTTPError):
            await self.control.delete(self.url(ident, "session", SESSION_API))
        self.idle.append(client)

    async def settle(self) -> None:
        end = time.monotonic() + 60
        while (await self.control.get(self.server.url + "/readyz")).status_code != 200:
            if time.monotonic() > end:
                raise RuntimeError("the pools did not refill in 60 s")
            await asyncio.sleep(0.002)


def _jmsg(code: str, session: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "username": "bench",
            "session": session,
            "date": dt.datetime.now(dt.UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def _collect(msg: dict[str, Any], outs: list[str], pngs: list[int]) -> str | None:
    """Fold one Jupyter message into stdout/PNG counts; the reply status when it is one."""
    kind = msg.get("msg_type") or msg["header"]["msg_type"]
    content = msg["content"]
    if kind == "stream" and content.get("name") == "stdout":
        outs.append(content["text"])
    elif kind in ("display_data", "execute_result") and "image/png" in content.get("data", {}):
        pngs.append(1)
    elif kind == "error":
        raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
    elif kind == "execute_reply":
        return str(content["status"])
    return None


class GatewayDriver(Driver):
    name = "kernel-gateway"

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=300.0)
        self.taken: set[str] = set()
        self.lock = asyncio.Lock()

    async def open(self) -> Any:
        import websockets

        async with self.lock:  # take a prespawned kernel nobody has used; else start one
            kernels = (await self.http.get(self.url + "/api/kernels")).json()
            free = [k["id"] for k in kernels if k["id"] not in self.taken]
            if free:
                kid = free[0]
            else:
                response = await self.http.post(self.url + "/api/kernels", json={})
                response.raise_for_status()
                kid = response.json()["id"]
            self.taken.add(kid)
        ws_url = self.url.replace("http", "ws", 1) + f"/api/kernels/{kid}/channels"
        ws = await websockets.connect(ws_url, max_size=None, open_timeout=120)
        return (kid, ws, uuid.uuid4().hex)

    async def run(self, session: Any, code: str) -> Out:
        _, ws, sid = session
        msg = _jmsg(code, sid)
        msg_id = msg["header"]["msg_id"]
        await ws.send(json.dumps(msg))
        outs: list[str] = []
        pngs: list[int] = []
        status, idle = None, False
        while status is None or not idle:
            reply = json.loads(await ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply.get("msg_type") or reply["header"]["msg_type"]
            if kind == "status" and reply["content"]["execution_state"] == "idle":
                idle = True
            got = _collect(reply, outs, pngs)
            if got is not None:
                status = got
        if status != "ok":
            raise RuntimeError(f"kernel-gateway: {status}")
        return Out("".join(outs), len(pngs))

    async def close(self, session: Any) -> None:
        kid, ws, _ = session
        await ws.close()
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(self.url + f"/api/kernels/{kid}")


class IpykernelDriver(Driver):
    name = "ipykernel"

    async def open(self) -> Any:
        from jupyter_client.manager import AsyncKernelManager

        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel(stderr=subprocess.DEVNULL)
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=120)
        return (km, kc)

    async def run(self, session: Any, code: str) -> Out:
        _, kc = session
        msg_id = kc.execute(code)
        outs: list[str] = []
        pngs: list[int] = []
        status, idle = None, False
        while not idle:
            msg = await kc.get_iopub_msg(timeout=300)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            _collect(msg, outs, pngs)
        while status is None:
            msg = await kc.get_shell_msg(timeout=300)
            if msg["parent_header"].get("msg_id") == msg_id:
                status = msg["content"]["status"]
        if status != "ok":
            raise RuntimeError(f"ipykernel: {status}")
        return Out("".join(outs), len(pngs))

    async def close(self, session: Any) -> None:
        km, kc = session
        kc.stop_channels()
        await km.shutdown_kernel(now=True)

    @staticmethod
    def pid(session: Any) -> int:
        pid = getattr(session[0].provisioner, "pid", None)
        assert isinstance(pid, int)
        return pid


class SubprocessDriver(Driver):
    """``python -c CELL`` per call; a cell's last line is printed when it is an expression."""

    name = "subprocess"

    def __init__(self, python: str) -> None:
        self.python = python

    async def open(self) -> Any:
        return None

    async def run(self, session: Any, code: str) -> Out:
        if code == X_CELL:
            code = "x = 0\nx += 1"  # no state survives a call
        elif code == DESCRIBE_CELL:
            code = DESCRIBE_CELL.rsplit("; ", 1)[0] + "; print(df.describe())"
        elif code == PNG_CELL:
            code = (
                "import matplotlib; matplotlib.use('Agg')\n" + code + "import io\n"
                "b = io.BytesIO(); fig.savefig(b, format='png'); print('PNG', len(b.getvalue()))"
            )
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            code,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"python -c: {stderr.decode()[-300:]}")
        text = stdout.decode()
        return Out(text, 1 if "PNG " in text else 0)

    async def close(self, session: Any) -> None:
        return None


# -- measurements shared by every system -----------------------------------------------------------


async def tti_sample(driver: Driver, keep: list[Any], cell: str = TTI_CELL) -> float:
    t0 = time.perf_counter()
    session = await driver.open()
    keep.append(session)
    out = await driver.run(session, cell)
    elapsed = ms_since(t0)
    if out.stdout != "1\n":
        raise RuntimeError(f"{driver.name}: print(1) printed {out.stdout!r}")
    return elapsed


async def tti_modes(
    res: Results,
    driver: Driver,
    seq: int,
    stagger: int,
    bursts: tuple[int, ...],
    suffix: str = "",
) -> None:
    errors: Counter[str] = Counter()

    async def guarded(keep: list[Any]) -> float | None:
        try:
            return await asyncio.wait_for(tti_sample(driver, keep), REQUEST_TIMEOUT_S)
        except Exception as exc:  # a failed session counts against the success rate
            errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            return None

    async def close_all(keep: list[Any]) -> None:
        await asyncio.gather(*(driver.close(s) for s in keep), return_exceptions=True)

    keep: list[Any] = []
    if seq:
        log(f"{driver.name}: time to interactive, sequential x{seq}")
        samples: list[float] = []
        await driver.prepare(1)
        for _ in range(seq + 1):  # the first is a warm-up
            await driver.settle()
            got = await guarded(keep)
            await close_all(keep)
            keep.clear()
            if got is not None:
                samples.append(got)
        res.add(Row("time to interactive", driver.name, "sequential", samples[1:], seq))

    async def later(i: int) -> float | None:
        await asyncio.sleep(i * STAGGER_S)
        await driver.prepare(1)  # untimed: this agent's connection is fresh
        return await guarded(keep)

    if stagger:
        log(f"{driver.name}: time to interactive, staggered x{stagger} every {STAGGER_S:g} s")
        await driver.prepare(stagger)
        await driver.settle()
        got_all = await asyncio.gather(*(later(i) for i in range(stagger)))
        await close_all(keep)
        keep.clear()
        res.add(
            Row(
                "time to interactive",
                driver.name,
                f"staggered {STAGGER_S * 1000:.0f} ms",
                [g for g in got_all if g is not None],
                stagger,
            )
        )
    for n in bursts:
        log(f"{driver.name}: time to interactive, burst of {n}")
        await driver.prepare(n)
        await driver.settle()
        await asyncio.sleep(0.5)
        keep = []
        got_all = await asyncio.gather(*(guarded(keep) for _ in range(n)))
        await close_all(keep)
        res.add(
            Row(
                "time to interactive",
                driver.name,
                f"burst {n}{suffix}",
                [g for g in got_all if g is not None],
                n,
            )
        )
    if errors:
        res.extra.setdefault("tti_errors", {})[driver.name] = dict(errors)
        log(f"  errors: {dict(errors)}")


async def bare_print(res: Results, driver: Driver, n: int) -> None:
    """Breakdown: new session -> print(1) without importing numpy/pandas (what the import adds
    to time to interactive)."""
    log(f"{driver.name}: new session -> print(1) without imports x{n}")
    samples: list[float] = []
    await driver.prepare(1)
    for i in range(n + 1):
        await driver.settle()
        keep: list[Any] = []
        try:
            elapsed = await tti_sample(driver, keep, "print(1)")
        finally:
            await asyncio.gather(*(driver.close(s) for s in keep), return_exceptions=True)
        if i:
            samples.append(elapsed)
    res.add(
        Row(
            "new session -> print(1), no imports (breakdown)", driver.name, "sequential", samples, n
        )
    )


async def sp_breakdown(res: Results, sp: SessionpoolDriver, n: int) -> None:
    """Where a sessionpool request's time goes: the HTTP floor (GET /healthz, no session),
    the same after 200 ms idle (waking an idle vCPU), and a new session split into allocation
    (GET files on a new identifier: allocates, runs nothing) and its first cell."""
    log(f"sessionpool: breakdown x{n}")
    await sp.prepare(1)
    client = sp.idle[-1]
    url = sp.server.url + "/healthz"
    floor: list[float] = []
    for i in range(n * 4 + 10):
        t0 = time.perf_counter()
        (await client.get(url)).raise_for_status()
        if i >= 10:
            floor.append(ms_since(t0))
    res.add(
        Row("HTTP floor: GET /healthz (breakdown)", "sessionpool", "back to back", floor, n * 4)
    )
    idle: list[float] = []
    for _ in range(n):
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        (await client.get(url)).raise_for_status()
        idle.append(ms_since(t0))
    res.add(
        Row("HTTP floor: GET /healthz (breakdown)", "sessionpool", "after 200 ms idle", idle, n)
    )
    alloc: list[float] = []
    first: list[float] = []
    for i in range(n + 1):
        await sp.settle()
        session = await sp.open()
        _, ident = session
        t0 = time.perf_counter()
        r = await client.get(sp.url(ident, "files"))
        t_alloc = ms_since(t0)
        r.raise_for_status()
        await sp.settle()
        t0 = time.perf_counter()
        await sp.run(session, TTI_CELL)
        t_first = ms_since(t0)
        await sp.close(session)
        if i:
            alloc.append(t_alloc)
            first.append(t_first)
    res.add(
        Row(
            "allocation only: GET files, new identifier (breakdown)",
            "sessionpool",
            "sequential",
            alloc,
            n,
        )
    )
    res.add(
        Row(
            "first TTI cell of an allocated session (breakdown)",
            "sessionpool",
            "sequential",
            first,
            n,
        )
    )


async def warm_cells(res: Results, driver: Driver, steady: int, cells: int) -> None:
    log(f"{driver.name}: warm cells (x += 1 x{steady}, describe/PNG x{cells})")
    await driver.prepare(1)
    await driver.settle()
    await asyncio.sleep(1.0)  # earlier sessions' teardown
    session = await driver.open()
    try:
        await driver.run(session, "x = 0")
        await driver.run(session, DESCRIBE_CELL)
        for metric, code, n in (
            ("warm x += 1", X_CELL, steady),
            ("pandas df.describe() cell", DESCRIBE_CELL, cells),
            ("matplotlib PNG cell", PNG_CELL, cells),
        ):
            samples: list[float] = []
            warmup = max(2, n // 20)
            for i in range(warmup + n):
                t0 = time.perf_counter()
                out = await driver.run(session, code)
                elapsed = ms_since(t0)
                if code == PNG_CELL and out.pngs < 1:
                    raise RuntimeError(f"{driver.name}: the plot cell returned no PNG")
                if i >= warmup:
                    samples.append(elapsed)
            res.add(Row(metric, driver.name, "sequential", samples, n))
    finally:
        await driver.close(session)


async def load_window(
    driver: Driver, sessions: list[Any], window: float
) -> tuple[list[float], int, int, float, int]:
    """Every session runs x += 1 back to back; (latencies, index at window start and end,
    window seconds, failures)."""
    state = {"stop": False, "failed": 0}
    done: list[float] = []

    async def worker(s: Any) -> None:
        while not state["stop"]:
            t0 = time.perf_counter()
            try:
                await driver.run(s, X_CELL)
            except Exception:
                state["failed"] += 1
                await asyncio.sleep(0.01)
                continue
            done.append(ms_since(t0))

    tasks = [asyncio.create_task(worker(s)) for s in sessions]
    await asyncio.sleep(min(1.0, window / 2))  # warm-up
    n0, t0 = len(done), time.perf_counter()
    await asyncio.sleep(window)
    n1, elapsed = len(done), time.perf_counter() - t0
    state["stop"] = True
    await asyncio.gather(*tasks)
    return done, n0, n1, elapsed, int(state["failed"])


async def throughput(res: Results, driver: Driver, levels: tuple[int, ...], window: float) -> None:
    for c in levels:
        log(f"{driver.name}: throughput, {c} concurrent sessions x += 1 for {window:g} s")
        await driver.prepare(c)
        sessions = list(await asyncio.gather(*(driver.open() for _ in range(c))))
        try:
            await asyncio.gather(*(driver.run(s, "x = 0") for s in sessions))
            done, n0, n1, elapsed, failed = await load_window(driver, sessions, window)
            rate = (n1 - n0) / elapsed
            res.add(
                Row(
                    "throughput (x += 1)",
                    driver.name,
                    f"{c} concurrent",
                    value=rate,
                    attempts=n1 - n0,
                    unit="exec/s",
                    note=f"{failed} failed",
                )
            )
            res.add(Row("x += 1 under load", driver.name, f"{c} concurrent", done[n0:n1], n1 - n0))
        finally:
            await asyncio.gather(*(driver.close(s) for s in sessions), return_exceptions=True)


# -- sessionpool only: files, scaling ramp ---------------------------------------------------------


async def files(res: Results, sp: SessionpoolDriver, n: int) -> None:
    log(f"sessionpool: 10 MB upload and download x{n}")
    await sp.prepare(1)
    session = await sp.open()
    client, ident = session
    data = os.urandom(10 * MB)
    up: list[float] = []
    down: list[float] = []
    try:
        for i in range(n + 1):
            t0 = time.perf_counter()
            r = await client.post(
                sp.url(ident, "files/upload"),
                files={"file": ("blob.bin", data, "application/octet-stream")},
            )
            t_up = ms_since(t0)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"upload: HTTP {r.status_code}: {r.text[:300]}")
            t0 = time.perf_counter()
            r = await client.get(sp.url(ident, "files/content/blob.bin"))
            t_down = ms_since(t0)
            if r.status_code != 200 or len(r.content) != len(data):
                raise RuntimeError(f"download: HTTP {r.status_code}, {len(r.content)} bytes")
            if i:
                up.append(t_up)
                down.append(t_down)
    finally:
        await sp.close(session)
    res.add(Row("10 MB upload", "sessionpool", "sequential", up, n))
    res.add(Row("10 MB download", "sessionpool", "sequential", down, n))


def session_pids(server: ServerProcess) -> list[int]:
    """The session processes: the children of the server's zygotes (forked children inherit
    the zygote's command line, so only the server's direct children are zygotes)."""
    assert server.process is not None
    below = hb.descendants(server.process.pid)
    zygotes: set[int] = set()
    for pid in below:
        with contextlib.suppress(OSError):
            if eng.parent_pid(pid) == server.process.pid:
                with open(f"/proc/{pid}/cmdline") as f:
                    if "sandbox.zygote" in f.read():
                        zygotes.add(pid)
    found = []
    for pid in below:
        with contextlib.suppress(OSError):
            if eng.parent_pid(pid) in zygotes:
                found.append(pid)
    return found


def used_memory_gb() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return (info["MemTotal"] - info["MemAvailable"]) / 1e9


async def scaling(res: Results, sp: SessionpoolDriver, sizes: Sizes) -> None:
    """Idle sessions (each ran the pandas cell) added step by step until refused or out of
    time; at each step allocation latency, x += 1 latency and memory."""
    server = sp.server
    live: list[Any] = []
    points: list[dict[str, Any]] = []
    refusal: dict[str, Any] | None = None
    clients = [
        httpx.AsyncClient(headers=sp.headers, timeout=300.0, verify=sp.ssl) for _ in range(16)
    ]
    await sp.prepare(2)
    probe = await sp.open()
    await sp.run(probe, "x = 0")
    deadline = time.monotonic() + sizes.ramp_budget_s
    steps = list(sizes.steps)
    baseline_gb = used_memory_gb()

    async def add_one(k: int) -> bool:
        nonlocal refusal
        ident = f"scale-{uuid.uuid4().hex[:12]}"
        client = clients[k % len(clients)]
        body = json.dumps(hb.execute_body(DESCRIBE_CELL)).encode()
        r = await client.post(sp.url(ident), content=body)
        if r.status_code == 200:
            live.append((client, ident))
            return True
        if refusal is None:
            refusal = {
                "at_live_sessions": len(live),
                "http_status": r.status_code,
                "error_code": r.headers.get("x-ms-error-code", ""),
                "body": r.text[:300],
                "used_memory_gb": round(used_memory_gb(), 2),
            }
        return False

    sem = asyncio.Semaphore(16)

    async def limited(k: int) -> bool:
        async with sem:
            return await add_one(k)

    try:
        while True:
            target = steps.pop(0) if steps else (points[-1]["live"] + sizes.step_after)
            if steps == [] and sizes.step_after == 0 and points and target <= points[-1]["live"]:
                break
            log(f"sessionpool scaling: -> {target} live idle sessions")
            need = target - len(live)
            if need > 0:
                await asyncio.gather(*(limited(k) for k in range(need)))
            await asyncio.sleep(1.0)
            point = await scale_point(sp, probe, len(live), sizes, refused=refusal is not None)
            point["newest_kept_state"] = await kept_state(sp, live[-1]) if live else None
            point["used_memory_gb"] = round(used_memory_gb(), 3)
            point["added_memory_gb"] = round(point["used_memory_gb"] - baseline_gb, 3)
            points.append(point)
            log(
                f"  live {point['live']}: alloc p50 {point['alloc_p50']:.2f} p99 "
                f"{point['alloc_p99']:.2f} ms; x += 1 p50 {point['x_p50']:.2f} p99 "
                f"{point['x_p99']:.2f} ms; USS/session {point['uss_mb_per_session']:.2f} MB; "
                f"machine used {point['used_memory_gb']:.2f} GB"
            )
            if refusal is not None or time.monotonic() > deadline:
                break
            if not steps and sizes.step_after == 0:
                break
        if refusal is None and sizes.scale_cap is not None:  # show the refusal at the cap
            await asyncio.gather(*(add_one(k) for k in range(sizes.scale_cap - len(live) + 2)))
        alive = (await sp.control.get(server.url + "/healthz")).status_code == 200
        if refusal is not None:
            refusal["server_alive_after"] = alive
            log(f"  refused at {refusal['at_live_sessions']} live sessions: {refusal}")
        res.extra["scaling_refusal"] = refusal
        res.extra["scaling_stopped_by"] = "refusal" if refusal else "time budget / last step"
    finally:
        log(f"sessionpool scaling: deleting {len(live)} sessions")
        sem2 = asyncio.Semaphore(32)

        async def delete(s: Any) -> None:
            async with sem2:
                with contextlib.suppress(httpx.HTTPError):
                    await sp.control.delete(sp.url(s[1], "session", SESSION_API))

        await asyncio.gather(*(delete(s) for s in live))
        await sp.close(probe)
        for c in clients:
            await c.aclose()
    if points and points[-1]["uss_mb"]:
        last = points[-1]
        res.add(
            Row(
                "private memory (USS) per idle session",
                "sessionpool",
                f"{last['live']} sessions",
                last["uss_mb"],
                len(last["uss_mb"]),
                unit="MB",
                note="every session process at the last step (the pools' ready ones included)",
            )
        )
    res.curves["scaling"] = [{k: v for k, v in p.items() if k != "uss_mb"} for p in points]
    ok = [p for p in points if p["x_p99"] <= 10.0 and p.get("newest_kept_state") is not False]
    res.extra["density_x_p99_10ms"] = max((p["live"] for p in ok), default=0)


async def kept_state(sp: SessionpoolDriver, session: Any) -> bool:
    """The newest session still has the DataFrame its first cell made: a session that lost its
    interpreter (it was replaced) would answer quickly too, so latency alone proves nothing."""
    try:
        out = await sp.run(session, "print(len(df))")
    except Exception as exc:
        log(f"  the newest session lost its state: {exc}")
        return False
    return out.stdout.strip() == "1000"


async def scale_point(
    sp: SessionpoolDriver, probe: Any, live: int, sizes: Sizes, refused: bool
) -> dict[str, Any]:
    allocs: list[float] = []
    await sp.prepare(1)
    # where admission control refuses, a new session is refused (and the pools cannot refill,
    # so /readyz stays 503): no allocation figure there
    for _ in range(0 if refused else sizes.probe_allocs):
        try:
            await sp.settle()
        except RuntimeError as exc:
            log(f"  {exc}")
        keep: list[Any] = []
        try:
            allocs.append(await tti_sample(sp, keep))
        except Exception as exc:
            log(f"  allocation at {live} live failed: {exc}")
        await asyncio.gather(*(sp.close(s) for s in keep))
    xs: list[float] = []
    for i in range(sizes.probe_x + 20):
        t0 = time.perf_counter()
        await sp.run(probe, X_CELL)
        if i >= 20:
            xs.append(ms_since(t0))
    pids = session_pids(sp.server)
    uss = []
    for pid in pids:
        with contextlib.suppress(OSError, KeyError):
            uss.append(eng.uss_pss(pid)[0])
    # the median session: at larger counts one that ran the pandas cell (the pools' few ready
    # sessions have not)
    per = statistics.median(uss) if live and uss else math.nan
    allocs.sort()
    xs.sort()
    return {
        "live": live,
        "alloc_p50": _common.nearest_rank(allocs, 50),
        "alloc_p99": _common.nearest_rank(allocs, 99),
        "x_p50": _common.nearest_rank(xs, 50),
        "x_p99": _common.nearest_rank(xs, 99),
        "session_processes": len(pids),
        "uss_mb": sorted(uss),
        "uss_mb_per_session": per,
    }


async def ipykernel_memory(res: Results, n: int) -> None:
    log(f"ipykernel: memory of {n} idle kernels after the pandas cell")
    driver = IpykernelDriver()
    before = eng.meminfo()["MemAvailable"]
    sessions = [await driver.open() for _ in range(n)]
    try:
        for s in sessions:
            await driver.run(s, DESCRIBE_CELL)
        await asyncio.sleep(1.0)
        uss = [eng.uss_pss(IpykernelDriver.pid(s))[0] for s in sessions]
        drop = (before - eng.meminfo()["MemAvailable"]) / n / MB
    finally:
        for s in sessions:
            await driver.close(s)
    res.add(
        Row("private memory (USS) per idle session", "ipykernel", f"{n} kernels", uss, n, unit="MB")
    )
    res.extra["ipykernel_memavailable_drop_per_kernel_mb"] = drop


# -- peers: install and start ----------------------------------------------------------------------


def install_peers() -> Path:
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    want = "\n".join(PEER_PINS)
    if stamp.exists() and stamp.read_text() == want:
        return python
    log(f"installing the peers into {PEER_VENV}: {', '.join(PEER_PINS)}")
    BENCH_DIR.mkdir(exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PINS], check=True)
    stamp.write_text(want)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def kernel_gateway(python: Path, prespawn: int, workdir: Path) -> Any:
    port = free_port()
    logf = (workdir / "kernel-gateway.log").open("wb")
    cmd = [
        str(python),
        "-m",
        "kernel_gateway",
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        f"--KernelGatewayApp.prespawn_count={prespawn}",
        "--KernelGatewayApp.default_kernel_name=python3",
        "--JupyterWebsocketPersonality.list_kernels=True",
    ]
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        end = time.monotonic() + 300
        while True:  # up, and every prespawned kernel started
            if proc.poll() is not None:
                raise RuntimeError(
                    f"kernel gateway exited: {(workdir / 'kernel-gateway.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError, ValueError):
                kernels = httpx.get(url + "/api/kernels", timeout=5).json()
                if len(kernels) >= prespawn:
                    break
            if time.monotonic() > end:
                raise RuntimeError("kernel gateway did not prespawn in time")
            time.sleep(0.2)
        log(f"kernel gateway up with {prespawn} prespawned kernels in {ms_since(t0) / 1000:.1f} s")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()


# -- report ----------------------------------------------------------------------------------------


def fmt(v: Any, unit: str) -> str:
    if not isinstance(v, (int, float)) or math.isnan(v):
        return "-"
    if unit == "exec/s":
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:.1f}"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def targets(res: Results) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def p50(metric: str, system: str, mode: str = "sequential") -> float:
        r = res.get(metric, system, mode)
        return r.pct(50) if r and r.samples else math.nan

    def ratio(text: str, metric: str, peer: str, need: float) -> None:
        ours, theirs = p50(metric, "sessionpool"), p50(metric, peer)
        got = theirs / ours
        out.append(
            {
                "target": text,
                "pass": got >= need,
                "detail": f"{got:.1f}x ({theirs:.2f} ms / {ours:.2f} ms p50); "
                f"{got / need:.0%} of the {need:g}x asked",
            }
        )

    ratio(
        "TTI p50 >= 100x faster than Kernel Gateway with prespawn",
        "time to interactive",
        "kernel-gateway",
        100,
    )
    ratio("TTI p50 >= 200x faster than a fresh ipykernel", "time to interactive", "ipykernel", 200)
    ratio("x += 1 >= 3x faster than ipykernel", "warm x += 1", "ipykernel", 3)
    held = res.extra.get("density_x_p99_10ms", 0)
    points = res.curves.get("scaling", [])
    max_live = max((p["live"] for p in points), default=0)
    out.append(
        {
            "target": ">= 1,000 idle pandas sessions with x += 1 p99 <= 10 ms",
            "pass": held >= 1000,
            "detail": f"{held} held within 10 ms p99 (largest step reached {max_live}; "
            f"stopped by {res.extra.get('scaling_stopped_by')})",
        }
    )
    per_kernel = res.extra.get("ipykernel_memavailable_drop_per_kernel_mb")
    if per_kernel and points:
        last = points[-1]
        per_ours = last["added_memory_gb"] * 1000 / max(1, last["live"])
        ratio_mem = per_kernel / per_ours if per_ours > 0 else math.nan
        out.append(
            {
                "target": "density >= 10x ipykernel in the same memory",
                "pass": ratio_mem >= 10,
                "detail": f"{ratio_mem:.1f}x: machine memory per session {per_ours:.1f} MB vs "
                f"{per_kernel:.1f} MB per ipykernel (MemAvailable drop)",
            }
        )
    for r in res.rows:
        if (
            r.system == "sessionpool"
            and r.metric == "time to interactive"
            and r.mode.startswith("burst")
        ):
            s = r.summary()
            out.append(
                {
                    "target": f"{r.mode} new sessions: 100% success",
                    "pass": s["succeeded"] == s["n"],
                    "detail": f"{s['succeeded']}/{s['n']}, p99 {s['p99']:.0f} ms",
                }
            )
    return out


def markdown(res: Results, meta: dict[str, Any], tgts: list[dict[str, Any]]) -> str:
    lines = [
        f"# Benchmark suite, {meta['date_utc']}{' (quick)' if meta['quick'] else ''}",
        "",
        f"{meta['cpus']} CPUs, {meta['mem_total_gib']} GiB, kernel {meta['kernel']}, "
        f"cgroup favordynmods {meta['cgroup_favordynmods']}; machine "
        f"{meta['cpu_busy_before']:.0%} busy before the run; {meta['total_seconds']:.0f} s in all.",
        "",
        "| metric | system | mode | n | success | p50 | p95 | p99 | unit |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in res.rows:
        s = r.summary()
        if r.value is not None:
            lines.append(
                f"| {r.metric} | {r.system} | {r.mode} | {s['n']} | - | "
                f"{fmt(r.value, r.unit)} | - | - | {r.unit} |"
            )
        else:
            lines.append(
                f"| {r.metric} | {r.system} | {r.mode} | {s['n']} | {s['success_rate']:.0%} | "
                f"{fmt(s['p50'], r.unit)} | {fmt(s['p95'], r.unit)} | "
                f"{fmt(s['p99'], r.unit)} | {r.unit} |"
            )
    lines += ["", "Scaling (sessionpool, idle sessions that each ran a pandas cell):", ""]
    lines += [
        "| live sessions | alloc p50 | alloc p99 | x += 1 p50 | x += 1 p99 | USS/session MB "
        "| machine used GB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in res.curves.get("scaling", []):
        lines.append(
            f"| {p['live']} | {fmt(p['alloc_p50'], 'ms')} | {fmt(p['alloc_p99'], 'ms')} | "
            f"{fmt(p['x_p50'], 'ms')} | {fmt(p['x_p99'], 'ms')} | "
            f"{fmt(p['uss_mb_per_session'], 'MB')} | {p['used_memory_gb']:.2f} |"
        )
    ref = res.extra.get("scaling_refusal")
    lines += [
        "",
        f"Admission control: {json.dumps(ref) if ref else 'not reached'}.",
        f"Density (largest step with x += 1 p99 <= 10 ms): {res.extra.get('density_x_p99_10ms')}.",
        "",
        "| target | result | detail |",
        "|---|---|---|",
    ]
    for t in tgts:
        lines.append(f"| {t['target']} | {'PASS' if t['pass'] else 'MISS'} | {t['detail']} |")
    return "\n".join(lines) + "\n"


def charts(res: Results, out: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / f"{stem}-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path.name)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names, values = [], []
    for system in SYSTEMS:
        r = res.get("time to interactive", system)
        if r and r.samples:
            names.append(system)
            values.append(r.pct(50))
    ax.barh(names, values, color=["C2", "C0", "C1", "C3"][: len(names)])
    ax.set_xscale("log")
    ax.set_xlabel("time to interactive, p50 ms (log)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f} ms", va="center")
    save(fig, "tti")

    points = res.curves.get("scaling", [])
    if points:
        live = [p["live"] for p in points]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for key, label in (
            ("alloc_p50", "allocation p50"),
            ("alloc_p99", "allocation p99"),
            ("x_p50", "x += 1 p50"),
            ("x_p99", "x += 1 p99"),
        ):
            ax.plot(live, [p[key] for p in points], marker="o", label=label)
        ax.axhline(10, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("live idle sessions")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.legend()
        save(fig, "scaling-latency")

        fig, ax1 = plt.subplots(figsize=(7, 3.5))
        ax1.plot(live, [p["uss_mb_per_session"] for p in points], marker="o", color="C0")
        ax1.set_xlabel("live idle sessions (each ran a pandas cell)")
        ax1.set_ylabel("USS per session, MB", color="C0")
        ax2 = ax1.twinx()
        ax2.plot(live, [p["used_memory_gb"] for p in points], marker="s", color="C3")
        ax2.set_ylabel("machine memory used, GB", color="C3")
        uss_top = max((p["uss_mb_per_session"] for p in points[1:]), default=1.0)
        ax1.set_ylim(0, (uss_top if uss_top == uss_top else 1.0) * 1.3)  # NaN at 0 sessions
        ax2.set_ylim(bottom=0)
        ref = res.extra.get("scaling_refusal")
        if ref:
            ax1.axvline(ref["at_live_sessions"], color="grey", ls="--", lw=0.8)
            ax1.annotate(
                " admission control refuses",
                xy=(ref["at_live_sessions"], 0.05),
                xycoords=("data", "axes fraction"),
                color="grey",
                ha="right",
            )
        save(fig, "scaling-memory")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for system in SYSTEMS:
        rows = [r for r in res.rows if r.system == system and r.metric == "throughput (x += 1)"]
        if rows:
            ax.plot(
                [int(r.mode.split()[0]) for r in rows],
                [r.value or 0.0 for r in rows],
                marker="o",
                label=system,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("x += 1 executions/s")
    ax.legend()
    save(fig, "throughput")
    return made


# -- main ------------------------------------------------------------------------------------------


def server_config(sizes: Sizes, reserve: str, zygote_max_children: int) -> str:
    scale_max = sizes.scale_cap or 20000
    pools = {
        MAIN: (MAIN_READY, max(sizes.concurrency) + 64, zygote_max_children),
        BURST: (BURST_READY, max(sizes.bursts) + 64, zygote_max_children),
        SCALE: (SCALE_READY, scale_max, zygote_max_children),
        BURST_DEFAULT: (BURST_READY, max(sizes.bursts) + 64, 0),
    }
    text = f'[server]\nmemory_reserve_bytes = "{reserve}"\naccess_log = false\n\n'
    for name, (ready, cap, zmc) in pools.items():
        text += (
            f"[pools.{name}]\nready_sessions = {ready}\nmax_sessions = {cap}\n"
            "cooldown_seconds = 3600\n" + (f"zygote_max_children = {zmc}\n" if zmc else "") + "\n"
        )
    return text


async def run_all(args: argparse.Namespace, sizes: Sizes, res: Results, workdir: Path) -> None:
    server = ServerProcess(
        workdir / "server",
        config=server_config(sizes, args.memory_reserve, args.zygote_max_children),
        api_key=API_KEY,
        startup_timeout=180.0,
    )
    server.start()
    try:
        sp = SessionpoolDriver(server)
        burst = SessionpoolDriver(server, BURST)
        await tti_modes(res, sp, sizes.seq, sizes.stagger, ())
        await bare_print(res, sp, sizes.peer_seq * 4)
        await sp_breakdown(res, sp, max(10, sizes.seq // 4))
        for n in sizes.bursts:  # the burst pool: BURST_READY ready, the rest on demand
            await tti_modes(res, burst, 0, 0, (n,))
        # the largest burst again with the shipped zygote rotation (its own zygote set)
        default = SessionpoolDriver(server, BURST_DEFAULT)
        await tti_modes(res, default, 0, 0, (max(sizes.bursts),), ", zygote_max_children 200")
        await warm_cells(res, sp, sizes.steady, sizes.cells)
        await files(res, sp, sizes.files)
        await throughput(res, sp, sizes.concurrency, sizes.window_s)
        await scaling(res, SessionpoolDriver(server, SCALE), sizes)
    except BaseException:
        log(f"server log:\n{server.log()[-3000:]}")
        raise
    finally:
        server.stop()
    # burst rows came out as separate modes runs with empty sequential rows: drop those
    res.rows = [r for r in res.rows if r.attempts > 0 or r.value is not None]

    if args.skip_peers:
        return
    ipk = IpykernelDriver()
    await tti_modes(res, ipk, sizes.peer_seq, sizes.peer_seq, (sizes.peer_burst,))
    await bare_print(res, ipk, sizes.peer_seq)
    await warm_cells(res, ipk, sizes.peer_steady, sizes.peer_cells)
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
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
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
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the jail backend needs root", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if not args.skip_peers:
        install_peers()  # before the clock matters
    busy_before = _common.cpu_busy()
    res = Results()
    workdir = Path(tempfile.mkdtemp(prefix="sessionpool-suite-"))
    t0 = time.perf_counter()
    try:
        runner = asyncio.Runner(loop_factory=hb._loop_factory())
        with runner:
            runner.run(run_all(args, sizes, res, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    now = dt.datetime.now(dt.UTC)
    meta = {
        "date_utc": now.isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "sizes": asdict(sizes),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "cgroup_favordynmods": eng.cgroup_favordynmods(),
        "cpu_busy_before": round(busy_before, 3),
        "loadavg_after": _common.loadavg(),
        "peer_pins": PEER_PINS,
        "memory_reserve": args.memory_reserve,
        "zygote_max_children": args.zygote_max_children,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "percentiles": "nearest-rank",
    }
    tgts = targets(res)
    stem = f"{now:%Y-%m-%d}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    pngs = charts(res, args.out, stem)
    doc = {
        "meta": meta,
        "rows": [r.summary() for r in res.rows],
        "curves": res.curves,
        "targets": tgts,
        "extra": res.extra,
        "charts": pngs,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = markdown(res, meta, tgts)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    log(f"written: {stem}.json, {stem}.md, {', '.join(pngs)} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
