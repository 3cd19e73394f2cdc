"""What the agents faces share: the agents service, uploads, Server-Sent Events (and the bounded
body reader of ``faces.http``)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from sessionpool.agents.service import AgentService
from sessionpool.faces.http import HttpError
from sessionpool.faces.http import read_body as read_body
from sessionpool.faces.http import sse as sse
from sessionpool.faces.uploads import Form, read_form


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
