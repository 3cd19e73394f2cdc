"""The streamable HTTP transport mounted in the server at ``/mcp``.

Requests reach it through the server's API-key middleware, like every other route. Its tools call
the server's own dynamic-sessions routes in-process (``httpx.ASGITransport``), on the ``default``
pool, so they behave exactly as the HTTP API does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.routing import Route

from sessionpool.client import AsyncClient

PATH = "/mcp"
POOL = "default"


def install_mcp(app: FastAPI, api_key: str | None) -> None:
    """Serve MCP at ``/mcp``; its session manager runs for the app's lifetime."""
    from mcp.server.fastmcp.server import StreamableHTTPASGIApp

    from sessionpool.mcp._tools import build_server

    holder: dict[str, AsyncClient] = {}

    async def client() -> AsyncClient:
        if "client" not in holder:
            http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=None)
            holder["client"] = AsyncClient(
                f"http://sessionpool.internal/pools/{POOL}", api_key=api_key, http_client=http
            )
        return holder["client"]

    server = build_server(client)
    server.streamable_http_app()  # creates the session manager
    manager = server.session_manager
    app.router.routes.append(Route(PATH, endpoint=StreamableHTTPASGIApp(manager)))

    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with outer(a) as state, manager.run():
            try:
                yield state
            finally:
                if "client" in holder:
                    await holder["client"]._http.aclose()

    app.router.lifespan_context = lifespan
