"""Sandbox traffic on the server's one port: recognised, authenticated and dispatched.

The SDKs send every sandbox call (envd and the code interpreter) to ``E2B_SANDBOX_URL`` with
``E2b-Sandbox-Id`` and ``E2b-Sandbox-Port`` headers; behind wildcard DNS the host names them
instead (``{port}-{sandbox id}.{domain}``). Such a request carries no API key but the sandbox's
access token (``X-Access-Token``), so the server's API-key middleware lets it through
(:func:`is_sandbox_traffic`) and :class:`SandboxRouter` checks the token, puts the sandbox and
its owner's principal into the request's scope and hands it to the app of the port.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sessionpool.faces.base import PRINCIPAL_KEY
from sessionpool.faces.e2b.sandboxes import Sandbox
from sessionpool.faces.http import HttpError
from sessionpool.pool import SessionHandle
from sessionpool.tenancy import Principal

if TYPE_CHECKING:
    from sessionpool.faces.e2b.face import E2bFace

#: the sandbox a request is for (set by the router)
SANDBOX_KEY = "sessionpool.e2b.sandbox"
#: the face that serves it (for sessions, quotas)
FACE_KEY = "sessionpool.e2b.face"
ENVD_PORT = 49983
INTERPRETER_PORT = 49999
#: ``{port}-{sandbox id}``: only the ids this server issues (``sandboxes.new_sandbox_id``), so a
#: deployment's own host name that merely starts with digits and a dash is not taken for one
_HOST_FORM = re.compile(r"(\d{1,5})-(i[a-z0-9]{19})")


#: the headers that name a request's sandbox (``sandbox_target``)
_TARGET_HEADERS = (b"e2b-sandbox-id", b"e2b-sandbox-port", b"host")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1")).strip()
    return None


def sandbox_target(scope: Scope) -> tuple[str, int] | None:
    """The sandbox id and port a request is for, from the headers or the host; None if it is
    not sandbox traffic."""
    if scope.get("type") != "http":
        return None
    # one pass over the headers (every request of every face comes here, twice), the first of
    # each name kept, as ``_header`` keeps it
    named: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        if key in _TARGET_HEADERS and key not in named:
            named[key] = value.decode("latin-1").strip()
    sandbox_id = named.get(b"e2b-sandbox-id")
    port = named.get(b"e2b-sandbox-port")
    if sandbox_id is not None and port is not None:
        return (sandbox_id, int(port)) if port.isdigit() else (sandbox_id, -1)
    host = named.get(b"host")
    if host:
        label = host.split(".", 1)[0]
        found = _HOST_FORM.fullmatch(label)
        if found is not None and "." in host:
            return found.group(2), int(found.group(1))
    return None


def is_sandbox_traffic(scope: Scope) -> bool:
    """For the API-key middleware: this request authenticates with a sandbox token instead."""
    return sandbox_target(scope) is not None


async def _answer(send: Send, status: int, message: str) -> None:
    # the shape the SDKs read an error from (``message``) in both of the sandbox's services
    body = json.dumps({"code": status, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _check_tokens(scope: Scope, sandbox: Sandbox) -> str:
    """Why the request's sandbox tokens do not admit it ("" if they do). The access token
    (``X-Access-Token``) is what envd calls carry; the SDKs' context calls carry only the
    traffic token (``E2B-Traffic-Access-Token``): either admits, a wrong one refuses."""
    offered = [
        (name, given, expected)
        for name, header, expected in (
            ("X-Access-Token", b"x-access-token", sandbox.envd_access_token),
            ("E2B-Traffic-Access-Token", b"e2b-traffic-access-token", sandbox.traffic_token),
        )
        if (given := _header(scope, header))
    ]
    if not offered:
        return "no X-Access-Token"
    for name, given, expected in offered:
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            return f"a wrong {name}"
    return ""


class SandboxRouter:
    """Sandbox traffic to its port's app; everything else to ``app`` untouched."""

    def __init__(self, app: ASGIApp, face: E2bFace) -> None:
        self.app = app
        self.face = face

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = sandbox_target(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        sandbox_id, port = target
        sandbox = self.face.registry.get(sandbox_id)
        if sandbox is None:
            # E2B's proxy answers 502 for a sandbox that is not running: the SDKs read it as
            # "not running" (is_running() is False) and name the sandbox's timeout as the cause
            await _answer(
                send, 502, f"sandbox {sandbox_id!r} not found: killed, timed out or never created"
            )
            return
        problem = _check_tokens(scope, sandbox)
        if problem:
            await _answer(send, 401, f"{problem} for sandbox {sandbox_id!r}")
            return
        app = self.face.port_app(port)
        if app is None:
            await _answer(
                send,
                404,
                f"port {port} of sandbox {sandbox_id!r}: this server serves only envd "
                f"({ENVD_PORT}) and the code interpreter ({INTERPRETER_PORT})",
            )
            return
        # in place: the audit log (outside) reads the principal and route from this scope
        scope[PRINCIPAL_KEY] = self.face.owner(sandbox)
        scope[SANDBOX_KEY] = sandbox
        scope[FACE_KEY] = self.face
        await app(scope, receive, send)


def current_sandbox(request: Request) -> Sandbox:
    """The sandbox a sandbox-traffic request is for (the router put it there)."""
    sandbox = request.scope.get(SANDBOX_KEY)
    if not isinstance(sandbox, Sandbox):
        raise HttpError(404, "NotFound", "not a sandbox request")
    return sandbox


def current_principal(request: Request) -> Principal:
    principal = request.scope.get(PRINCIPAL_KEY)
    assert isinstance(principal, Principal)
    return principal


async def open_session(request: Request) -> SessionHandle:
    """The sandbox's session in its pool (allocated again if it ended, within the tenant's
    quotas, with the sandbox's environment applied), kept alive until the sandbox's end."""
    face = request.scope.get(FACE_KEY)
    assert face is not None
    return await face.session_of(current_sandbox(request))  # type: ignore[no-any-return]
