"""envd (port 49983): the process and filesystem services of a sandbox.

A placeholder until the envd implementation lands: every call answers 501, so the rest of the
E2B face (control plane, code interpreter) works without it.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

#: the envd version create reports: the SDKs gate features on it (``e2b/envd/versions.py``)
ENVD_VERSION = "0.4.0"


async def _not_yet(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "code": 501,
            "message": f"envd ({request.url.path}: processes and files) is not supported by "
            "this server yet",
        },
        status_code=501,
    )


def build_envd_app() -> Starlette:
    """The envd application: sandbox traffic to port 49983 (``routing`` has authenticated it
    and put the sandbox and its owner in the scope: see ``routing.current_sandbox`` and
    ``routing.open_session``)."""
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", _not_yet, methods=methods)])
