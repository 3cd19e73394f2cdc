"""The MCP face: the streamable HTTP transport at ``/mcp``.

Requests reach it through the server's API-key middleware, like every other route. Its tools call
the server's own dynamic-sessions routes in-process (``httpx.ASGITransport``), on the ``default``
pool, so they behave exactly as the HTTP API does.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from fastapi import FastAPI
from mcp.server.fastmcp.server import StreamableHTTPASGIApp
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.routing import Route

from sessionpool.client import AsyncClient
from sessionpool.faces.base import Runtime
from sessionpool.faces.mcp.tools import build_server

PATH = "/mcp"
POOL = "default"


class McpFace:
    name = "mcp"

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self._app: FastAPI | None = None
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    def install(self, app: FastAPI) -> None:
        self._app = app
        server = build_server(self._tools_client)
        server.streamable_http_app()  # creates the session manager
        self._manager = server.session_manager
        app.router.routes.append(Route(PATH, endpoint=StreamableHTTPASGIApp(self._manager)))

    async def bind(self, runtime: Runtime) -> None:
        """Run the session manager (its task group lives in one task of its own until close)."""
        manager = self._manager
        assert manager is not None, "install the face before binding it"
        started = asyncio.Event()

        async def run() -> None:
            async with manager.run():
                started.set()
                await self._stop.wait()

        self._running = asyncio.create_task(run(), name="mcp-sessions")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({self._running, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            waiter.cancel()
            await self._running  # raises why it could not start

    async def close(self) -> None:
        self._stop.set()
        if self._running is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
        if self._http is not None:
            await self._http.aclose()
            self._http = self._client = None

    async def _tools_client(self) -> AsyncClient:
        """The tools' way in: this server's own routes, with its key, made on first use."""
        if self._client is None:
            assert self._app is not None
            transport = httpx.ASGITransport(app=self._app)
            self._http = httpx.AsyncClient(transport=transport, timeout=None)
            self._client = AsyncClient(
                f"http://sessionpool.internal/pools/{POOL}",
                api_key=self.api_key,
                http_client=self._http,
            )
        return self._client
