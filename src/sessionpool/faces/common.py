"""What every HTTP face needs the same way: bounded request bodies, uploads, Server-Sent Events,
and the agents service."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from sessionpool.agents.service import AgentService
from sessionpool.faces.uploads import Form, read_form
from sessionpool.server.errors import HttpError


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length", "")
    too_large = HttpError(413, "PayloadTooLarge", f"request bodies are limited to {limit} bytes")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect as exc:
        raise HttpError(400, "ClientDisconnected", "the client went away mid-request") from exc
    return bytes(body)


def agents_service(request: Request) -> AgentService:
    """The app's agents service; without one, the agents routes answer as if absent."""
    svc = getattr(request.app.state, "agents", None)
    if svc is None:
        raise HttpError(
            404,
            "AgentsDisabled",
            "the agents service (assistants, threads, runs, responses) is not enabled on this "
            "server; set enabled = true in the [agents] section of the server configuration",
        )
    assert isinstance(svc, AgentService)
    return svc


async def read_upload(request: Request, max_file_bytes: int) -> Form:
    """A multipart form with one file part, bounded (see ``uploads.read_form``)."""
    try:
        return await read_form(
            request.headers.get("content-type"),
            request.stream(),
            max_file_bytes,
            request.headers.get("content-length"),
        )
    except ClientDisconnect as exc:
        raise HttpError(400, "ClientDisconnected", "the client went away mid-upload") from exc


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event; ``data`` as compact JSON on one line (JSON escapes every newline),
    or verbatim when it is a string (the ``[DONE]`` sentinel)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()
