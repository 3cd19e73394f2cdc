"""The server under test, two ways.

``ServerProcess``: a real ``serve`` in a child process on a free loopback port. Everything goes
through the same path as production (settings, keys, TLS, the jail, uvicorn, signals), so a test
that passes against it says something about the deployed server::

    with ServerProcess(tmp_path, config=TOML) as server:
        httpx.post(server.url + "/pools/default/code/execute?identifier=a", headers=server.auth)

``in_process``: the same application in this process around an engine the test built (for
instance on ``sandbox.fake.FakeBackend``), driven through httpx's ASGI transport, with its
lifespan run as uvicorn would run it: no root, no port, milliseconds per request::

    async with in_process(settings, engine) as client:
        await client.post("/pools/default/code/execute?identifier=a", json=body)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import httpx

from sessionpool.pool import EngineHandle
from sessionpool.server.app import create_app
from sessionpool.server.cli import LISTENING
from sessionpool.server.settings import ServerSettings

DEFAULT_KEY = "test-key-0123456789"


class ServerProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        args: Sequence[str] = (),
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        api_key: str | None = DEFAULT_KEY,
        wait_ready: bool = True,
        startup_timeout: float = 90.0,
    ) -> None:
        """``workdir`` holds the data dir, the config file and the log; ``api_key=None`` lets
        the server use or generate its key file (or run without auth, given ``--no-auth``)."""
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.args = list(args)
        self.config = config
        self.env = dict(env or {})
        self.api_key = api_key
        self.wait_ready = wait_ready
        self.startup_timeout = startup_timeout
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def endpoint(self, pool: str = "default") -> str:
        return f"{self.url}/pools/{pool}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "sessionpool.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
        cmd += ["--data-dir", str(self.data_dir)]
        if self.config is not None:
            path = self.workdir / "sessionpool.toml"
            path.write_text(self.config)
            cmd += ["--config", str(path)]
        return cmd + self.args

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.api_key:
            env["SESSIONPOOL_API_KEYS"] = self.api_key  # not on the command line, where ps shows it
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + self.startup_timeout
        while not self.url:
            for line in self.log().splitlines():
                if line.startswith(LISTENING):
                    self.url = line[len(LISTENING) :].strip()
            if self.url:
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"server did not start in time:\n{self.log()}")
            time.sleep(0.05)
        if self.wait_ready:
            self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        with httpx.Client(verify=False, timeout=5) as client:
            while True:
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not become ready:\n{self.log()}")
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait; the exit status (the process is killed past ``timeout``)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@asynccontextmanager
async def in_process(
    settings: ServerSettings, engine: EngineHandle
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``create_app(settings, engine)`` in this process, authenticated with the
    first of ``settings.api_keys``. ``engine`` must be started; the app closes it at the end."""
    app = create_app(settings, engine)
    headers = {"Authorization": f"Bearer {settings.api_keys[0]}"} if settings.api_keys else {}
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        # one task enters and leaves the lifespan, as under uvicorn (its task groups insist),
        # whichever tasks the caller's setup and teardown run in
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        await task  # raises what stopped the startup
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sessionpool.test", headers=headers, timeout=30
        ) as client:
            yield client
    finally:
        stop.set()
        await task
