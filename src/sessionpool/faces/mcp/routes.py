"""The MCP face: the streamable HTTP transport at ``/mcp``.

Requests reach it through the server's authentication, like every other route. Its tools call
the server's own dynamic-sessions routes in-process (``httpx.ASGITransport``), on the ``default``
pool, with the caller's own credential, so they behave exactly as the HTTP API does for that
caller: its tenant's sessions, its scopes, its quotas.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import httpx
from fastapi import FastAPI
from mcp.server.fastmcp import Context
from mcp.server.fastmcp.server import StreamableHTTPASGIApp
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.routing import Route

from sessionpool.client import AsyncClient
from sessionpool.faces.base import Runtime
from sessionpool.faces.mcp.tools import build_server

PATH = "/mcp"
POOL = "default"
#: clients kept for distinct caller credentials (each is a thin wrapper on one transport)
MAX_CLIENTS = 256


class McpFace:
    name = "mcp"

    def __init__(self) -> None:
        self._app: FastAPI | None = None
        #: one client per caller credential, the most recent kept
        self._clients: collections.OrderedDict[str | None, AsyncClient] = collections.OrderedDict()
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
            self._http = None
            self._clients.clear()

    async def _tools_client(self, ctx: Context[Any, Any, Any]) -> AsyncClient:
        """The tools' way in: this server's own routes, with the credential of the MCP request
        that called the tool."""
        if self._http is None:
            assert self._app is not None
            transport = httpx.ASGITransport(app=self._app)
            self._http = httpx.AsyncClient(transport=transport, timeout=None)
        credential = caller_credential(ctx.request_context.request)
        client = self._clients.get(credential)
        if client is None:
            client = AsyncClient(
                f"http://sessionpool.internal/pools/{POOL}",
                api_key=credential,
                http_client=self._http,
            )
            self._clients[credential] = client
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(credential)
        return client


def caller_credential(request: object) -> str | None:
    """The credential the MCP request was authenticated with (None without authentication)."""
    if not isinstance(request, Request):
        return None
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key", "").strip() or None
