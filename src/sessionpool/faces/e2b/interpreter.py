"""The code interpreter (port 49999): ``/execute`` and contexts. Placeholder for now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionpool.faces.e2b.sandboxes import Sandbox
from sessionpool.pool import SessionHandle

if TYPE_CHECKING:
    from sessionpool.faces.e2b.face import E2bFace


async def _not_yet(request: Request) -> JSONResponse:
    return JSONResponse({"code": 501, "message": "not supported by this server yet"}, 501)


def build_interpreter_app() -> Starlette:
    methods = ["GET", "POST", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", _not_yet, methods=methods)])


async def prepare(session: SessionHandle, sandbox: Sandbox, runtime: str) -> None:
    """A new session of ``sandbox``: its environment variables applied."""


def forget(sandbox: Sandbox) -> None:
    """The sandbox ended: drop what the interpreter kept of it."""


async def close_all(face: E2bFace) -> None:
    """The server stops."""
