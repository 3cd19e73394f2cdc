"""envd (port 49983): the process and filesystem services of a sandbox, on its session.

Connect RPC with the JSON codec, as the SDKs speak it (unary calls as ``application/json``,
server streams as ``application/connect+json`` with enveloped frames and an end-of-stream
frame), served by connectrpc's own ASGI applications over the message classes generated from
envd's protos (vendored here: ``*_pb.py``, ``*_connect.py``); plus envd's REST file routes.
``routing`` has authenticated the request as the sandbox's and put the sandbox, its owner and
the face in the ASGI scope; each handler checks the owner's scope (files: ``files``, processes:
``execute``) and works on the sandbox's session.
"""

from __future__ import annotations

from typing import cast

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionpool.faces.e2b.envd import files
from sessionpool.faces.e2b.envd.common import current_scope
from sessionpool.faces.e2b.envd.filesystem import FilesystemService
from sessionpool.faces.e2b.envd.filesystem_connect import FilesystemASGIApplication
from sessionpool.faces.e2b.envd.process import ProcessService
from sessionpool.faces.e2b.envd.process_connect import ProcessASGIApplication

#: the envd version create reports. The SDKs gate features on it (``e2b/envd/versions.py``):
#: 0.5.7 turns on everything served here (stdin on or off 0.3.0, no default user 0.4.0,
#: CloseStdin 0.5.2, octet-stream uploads 0.5.7) and nothing that is not (file metadata 0.6.2,
#: entries in watch events 0.6.3)
ENVD_VERSION = "0.5.7"

#: a request body (a Connect message) is at most this large: input and paths are small
READ_MAX_BYTES = 4 * 1024 * 1024


class EnvdApp:
    """Connect calls to their service, everything else to the REST routes; the request's scope
    is left where the Connect handlers (which see no request) find it."""

    def __init__(self) -> None:
        self.process = ProcessASGIApplication(ProcessService(), read_max_bytes=READ_MAX_BYTES)
        self.filesystem = FilesystemASGIApplication(
            FilesystemService(), read_max_bytes=READ_MAX_BYTES
        )
        self.rest = Starlette(
            routes=[
                Route("/health", files.health, methods=["GET"]),
                Route("/files", files.download, methods=["GET"]),
                Route("/files", files.upload, methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        app: ASGIApp = self.rest
        if path.startswith(self.process.path + "/"):
            app = cast(ASGIApp, self.process)
        elif path.startswith(self.filesystem.path + "/"):
            app = cast(ASGIApp, self.filesystem)
        token = current_scope.set(scope)
        try:
            await app(scope, receive, send)
        finally:
            current_scope.reset(token)


def build_envd_app() -> ASGIApp:
    """The envd application: sandbox traffic to port 49983."""
    return EnvdApp()
