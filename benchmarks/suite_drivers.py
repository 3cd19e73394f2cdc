"""The suite's systems, each opened and driven through the same ``Driver`` interface.

``SessionpoolDriver`` (HTTP to a real ``sessionpool serve``), ``GatewayDriver`` (Jupyter Kernel
Gateway, HTTP + WebSocket), ``IpykernelDriver`` (``jupyter_client``, ZMQ) and ``SubprocessDriver``
(one ``python -c`` per call); the peers' venv (``install_peers``) and Kernel Gateway's process
(``kernel_gateway``); the cells every system runs, the pools and the suite's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx

from benchmarks._common import API_VERSION, SESSION_API_VERSION, logger, ms_since
from benchmarks.engine import PANDAS_CELL, PLOT_CELL
from benchmarks.http_api import check_answer, execute_body
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
TTI_CELL = "import numpy, pandas; print(1)"
X_CELL = "x += 1"
DESCRIBE_CELL = PANDAS_CELL
PNG_CELL = PLOT_CELL
MAIN, BURST, SCALE = "main", "burst", "scale"
MAIN_READY, BURST_READY, SCALE_READY = 16, 8, 8
#: BURST_DEFAULT keeps the shipped zygote_max_children (200); the other pools raise it, as a
#: burst larger than it leaves requests hanging at the zygote's rotation (docs/benchmarks.md)
BURST_DEFAULT = "burst-default"
#: keeps no ready sessions: the pool exhausted, every new identifier forked on demand
ONDEMAND = "ondemand"
#: keeps as many ready sessions as the largest burst (made ahead of demand, as an operator
#: sizes ``ready_sessions`` for the bursts they expect): the burst target's pool. BURST keeps
#: 8, so its bursts measure how fast sessions are made on demand
BURST_AHEAD = "burst-ahead"
#: the mode suffix of BURST_AHEAD's burst row
AHEAD_SUFFIX = ", {n} ready ahead"

#: an execute body's content type (an agent client's own headers carry only the credential)
JSON = {"Content-Type": "application/json"}
#: the suite's log, stamped with the seconds since the suite started
log = logger(time.perf_counter())


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
    """HTTP to a real ``sessionpool serve``. An agent's client is an ``aiohttp`` session: of the
    asyncio HTTP clients here it adds least to a round trip (``GET /healthz`` back to back about
    0.5 ms against httpx's 1.1 ms on this machine), so the figures are the server's more than
    the client's; ``warm x += 1, httpx client (breakdown)`` keeps httpx's figure beside it.
    ``control`` (refills, resets, counts: never timed) is an httpx client."""

    name = "sessionpool"

    def __init__(self, server: ServerProcess, pool: str = MAIN) -> None:
        self.server = server
        self.pool = pool
        self.headers = {**server.auth, "Content-Type": "application/json"}
        self.ssl = ssl.create_default_context()  # one for every client (~20 ms each to build)
        self.control = httpx.AsyncClient(headers=self.headers, timeout=300.0, verify=self.ssl)
        self.idle: list[aiohttp.ClientSession] = []  # agents' clients, connection open
        self.made: list[aiohttp.ClientSession] = []  # every agent client, closed by aclose()

    def client(self) -> aiohttp.ClientSession:
        """A new agent's client: its own connection, as an agent on its own would have."""
        made = aiohttp.ClientSession(
            headers=self.server.auth,  # no content type: an upload's form sets its own
            timeout=aiohttp.ClientTimeout(total=300.0),
            connector=aiohttp.TCPConnector(ssl=self.ssl),
        )
        self.made.append(made)
        return made

    async def aclose(self) -> None:
        await asyncio.gather(*(c.close() for c in self.made))
        self.made.clear()
        self.idle.clear()
        await self.control.aclose()

    async def prepare(self, n: int) -> None:
        """An agent holds its client and connection before it asks for a session: building a
        client (its TLS context, its first connection) is not the server's cost."""
        more = [self.client() for _ in range(n - len(self.idle))]
        self.idle = more + self.idle  # open() pops from the end: the n warmed last
        url = self.server.url + "/healthz"

        async def warm(client: aiohttp.ClientSession) -> None:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                await past_stale_connection(lambda: self.get(client, url))

        await asyncio.gather(*(warm(c) for c in self.idle[-n:]))

    async def get(self, client: aiohttp.ClientSession, url: str) -> bytes:
        """``GET url`` through an agent's client; its body, or an error past HTTP 2xx."""
        async with client.get(url) as response:
            body = await response.read()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"GET {url}: HTTP {response.status}: {body[:300]!r}")
        return body

    def url(self, ident: str, what: str = "code/execute", api: str = API_VERSION) -> str:
        return f"{self.server.endpoint(self.pool)}/{what}?identifier={ident}&api-version={api}"

    async def open(self) -> Any:
        client = self.idle.pop() if self.idle else self.client()  # not prepared: timed
        return (client, f"{self.pool}-{uuid.uuid4().hex[:12]}")

    async def run(self, session: Any, code: str) -> Out:
        client, ident = session
        body = json.dumps(execute_body(code)).encode()
        async with client.post(self.url(ident), data=body, headers=JSON) as response:
            answer = await response.read()
        props = check_answer(response.status, answer, code[:30])
        result = props.get("result")
        pngs = 1 if isinstance(result, dict) and result.get("base64_data") else 0
        return Out(str(props.get("stdout", "")), pngs)

    async def close(self, session: Any) -> None:
        client, ident = session
        with contextlib.suppress(httpx.HTTPError):
            await self.control.delete(self.url(ident, "session", SESSION_API_VERSION))
        self.idle.append(client)

    async def settle(self) -> None:
        end = time.monotonic() + 60
        while (await self.control.get(self.server.url + "/readyz")).status_code != 200:
            if time.monotonic() > end:
                raise RuntimeError("the pools did not refill in 60 s")
            await asyncio.sleep(0.002)


_T = TypeVar("_T")


async def past_stale_connection(call: Callable[[], Awaitable[_T]], tries: int = 3) -> _T:
    """``call()``, tried again when it fails to reach the server: uvicorn closes a connection
    idle for 5 s, and a request sent on it can race that close. The last failure is raised."""
    for _ in range(tries - 1):
        try:
            return await call()
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.01)
    return await call()


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
