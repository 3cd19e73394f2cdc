"""The console's page and assets, and its two read-only listings.

- ``GET /console`` (and ``console.js``, ``console.css``): the built page, with a strict
  Content-Security-Policy; a page saying how to build it when the bundle is missing.
- ``GET /console/api/pools`` (``sessions`` scope): each pool the key may use, with its ready
  depth, states, limits and runtime, and the caller's own sessions in it (age, idle time,
  memory, CPU, last executions).
- ``GET /console/api/threads`` (``agents`` scope): the tenant's threads (conversations), newest
  first, with the usual cursor paging.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from sessionpool.faces.base import Runtime, require, tenant_agents
from sessionpool.faces.http import PAGE_PARAMETERS, HttpError, page_request
from sessionpool.pool import Pool, PoolHandle, SessionInfo
from sessionpool.session import Session
from sessionpool.tenancy import Principal, Scope, identifier_of

#: where the build puts the bundle (``make console``); SESSIONPOOL_CONSOLE_DIR overrides it
STATIC_DIR = Path(__file__).parent / "static"
PAGE = "/console"
#: the built files, by name under /console/ (the build makes exactly these)
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
#: reachable without a key: the page and its assets hold no data
PUBLIC_PATHS = frozenset({PAGE, *(f"{PAGE}/{name}" for name in ASSETS)})

#: where the page names its style nonce (the editor's styles are <style> elements it makes)
NONCE_MARK = "__CSP_NONCE__"


def csp(nonce: str | None = None) -> str:
    """No inline script, no eval, nothing from elsewhere; styles from the page (and with
    ``nonce``, the style elements the editor makes with it); images from the page, data: and
    blob: (figures, downloaded files); calls to this server only; never framed."""
    styles = f"style-src 'self' 'nonce-{nonce}'" if nonce else "style-src 'self'"
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            styles,
            "img-src 'self' data: blob:",
            "connect-src 'self'",
            "font-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(nonce: str | None = None) -> dict[str, str]:
    return {
        "content-security-policy": csp(nonce),
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }


NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessionpool console: not built</title></head>
<body><h1>The console is not built</h1>
<p>This server serves its web console from static files that the build makes with npm
and esbuild. <code>make serve</code> builds them once; to build them by hand, from the
repository's root:</p>
<pre>cd console &amp;&amp; npm ci --ignore-scripts &amp;&amp; node build.mjs</pre>
<p>then reload this page. The API works without it.</p></body></html>
"""


def static_dir() -> Path:
    return Path(os.environ.get("SESSIONPOOL_CONSOLE_DIR") or STATIC_DIR)


class ConsoleFace:
    name = "console"

    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def install(self, app: FastAPI) -> None:
        app.add_api_route(PAGE, self.page, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"{PAGE}/{{asset}}", self.asset, methods=["GET"], include_in_schema=False)
        app.add_api_route(
            f"{PAGE}/api/pools",
            self.pools,
            methods=["GET"],
            tags=["console"],
            summary="The pools the key may use, their figures and the caller's sessions",
        )
        app.add_api_route(
            f"{PAGE}/api/threads",
            self.threads,
            methods=["GET"],
            tags=["console"],
            summary="The tenant's threads (conversations), newest first",
            openapi_extra=PAGE_PARAMETERS,
        )

    async def bind(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def close(self) -> None:
        pass

    # --- the page ----------------------------------------------------------------------------

    async def page(self) -> Response:
        try:
            text = (static_dir() / "index.html").read_text(encoding="utf-8")
        except FileNotFoundError:
            return HTMLResponse(NOT_BUILT, status_code=503, headers=security_headers())
        nonce = secrets.token_urlsafe(18)  # a new one for each load of the page
        return HTMLResponse(text.replace(NONCE_MARK, nonce), headers=security_headers(nonce))

    async def asset(self, asset: str) -> Response:
        media_type = ASSETS.get(asset)
        path = static_dir() / asset
        if media_type is None or not path.is_file():
            raise HttpError(404, "NotFound", f"no console file {asset!r}")
        return FileResponse(path, media_type=media_type, headers=security_headers())

    # --- the listings ------------------------------------------------------------------------

    async def pools(self, request: Request) -> JSONResponse:
        who = require(request, Scope.SESSIONS, "listing pools and sessions")
        if self._runtime is None:
            raise HttpError(503, "ServiceUnavailable", "the server is starting; retry shortly")
        now = time.time()
        out = []
        for name, pool in sorted(self._runtime.engine.pools.items()):
            if who.may_use(name):
                out.append(await describe_pool(pool, who, now))
        return JSONResponse({"pools": out, "now": now})

    async def threads(self, request: Request) -> JSONResponse:
        agents = tenant_agents(request, "listing threads")
        page = await agents.list_conversations(page_request(request.query_params))
        data = [
            {"id": c.id, "created_at": c.created_at, "metadata": c.metadata} for c in page.items
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": page.has_more,
            }
        )


async def describe_pool(pool: PoolHandle, who: Principal, now: float) -> dict[str, Any]:
    """One pool as the console shows it; sessions are the caller's own, by its names."""
    config = pool.config
    runtime = pool.runtime()
    mine = [
        (s, ident)
        for s in await pool.list_sessions()
        if (ident := identifier_of(who.tenant, s.identifier)) is not None
    ]
    mine.sort(key=lambda si: (si[0].created_at, si[1]))
    # memory and CPU are a few reads of cgroup files per session: off the event loop
    usages = await asyncio.to_thread(lambda: [usage_of(s) for s, _ in mine])
    return {
        "name": pool.name,
        "runtime": {
            "name": runtime.name,
            "kind": runtime.kind,
            "version": runtime.version,
            "image": runtime.image or None,
        },
        "ready": pool.is_ready(),
        "ready_target": config.ready_sessions,
        "max_sessions": config.max_sessions,
        # this server's pools count their states; a cluster's are counted on its nodes
        "states": pool.states() if isinstance(pool, Pool) else None,
        "execution_timeout_seconds": config.execution_timeout_seconds,
        "cooldown_seconds": config.cooldown_seconds,
        "network": config.network,
        "limits": {
            "memory_bytes": config.limits.memory_bytes,
            "cpus": config.limits.cpus,
            "pids": config.limits.pids,
            "disk_bytes": config.limits.disk_bytes,
            "file_bytes": config.limits.file_bytes,
            "output_bytes": config.limits.output_bytes,
        },
        "sessions": [
            describe_session(s, ident, now, usage)
            for (s, ident), usage in zip(mine, usages, strict=True)
        ],
    }


def usage_of(session: SessionInfo) -> tuple[int | None, float | None]:
    return session.usage() if isinstance(session, Session) else (None, None)


def describe_session(
    session: SessionInfo, identifier: str, now: float, usage: tuple[int | None, float | None]
) -> dict[str, Any]:
    memory, cpu = usage
    recent = list(session.recent) if isinstance(session, Session) else []
    return {
        "identifier": identifier,
        "created_at": session.created_at,
        "last_used": session.last_used,
        "expires_at": session.expires_at,
        "age_seconds": max(0.0, now - session.created_at),
        "idle_seconds": max(0.0, now - session.last_used),
        "busy": session.busy if isinstance(session, Session) else None,
        "memory_bytes": memory,
        "cpu_seconds": cpu,
        "executions": [
            {"started_at": started, "status": status, "duration_ms": round(ms, 1)}
            for started, status, ms in reversed(recent)
        ],
    }
