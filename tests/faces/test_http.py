"""The faces' shared HTTP pieces: every engine error has a deliberate status and a wire name in
each vocabulary (only the server's own faults are 500); bodies and paging are read one way."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient

from sessionpool import errors
from sessionpool.agents.types import PageRequest
from sessionpool.errors import InvalidArgument
from sessionpool.faces.http import (
    AZURE_CODES,
    OPENAI_CODES,
    DirectRoute,
    HotRoutes,
    install_error_handlers,
    mount,
    page_request,
    parse_object,
    status_for,
    wire_code,
)

EXPECTED = {
    "ServiceError": 500,
    "ConfigError": 500,
    "SandboxError": 503,
    "SandboxUnavailable": 503,
    "PoolError": 500,
    "PoolNotFound": 404,
    "PoolAtCapacity": 404,  # what Azure answers, and what its clients expect
    "PoolClosed": 503,
    "SessionError": 500,
    "InvalidIdentifier": 400,
    "SessionNotFound": 404,
    "InterpreterLost": 503,
    "SessionLost": 503,  # its node was lost; the clients read it as SessionLost too
    "ProtocolError": 502,
    "FileError": 500,
    "InvalidPath": 400,
    "FileNotFound": 404,
    "NotARegularFile": 400,
    "FileOverLimit": 413,
    "QuotaExceeded": 413,
    "InvalidArgument": 400,
    "EgressWidens": 400,  # a session asked for more network than its pool has
    "AgentsError": 500,
    "ObjectNotFound": 404,
    "Conflict": 409,
    "AccessError": 500,
    "ScopeDenied": 403,
    "TenantQuotaExceeded": 429,
}

#: the wire names the clients read (x-ms-error-code, and the OpenAI error's code)
AZURE_NAMES = {
    "PoolAtCapacity": "SessionPoolExhausted",
    "InterpreterLost": "SessionLost",
    "SessionLost": "SessionLost",
    "FileOverLimit": "FileTooLarge",
    "QuotaExceeded": "DiskQuotaExceeded",
    "InvalidPath": "InvalidFilePath",
    "SessionNotFound": "SessionNotFound",
    "SandboxError": "SandboxFailure",
    "ScopeDenied": "Forbidden",
    "TenantQuotaExceeded": "TooManyRequests",
}
OPENAI_NAMES = {
    "ObjectNotFound": "not_found",
    "InvalidArgument": "invalid_request",
    "TenantQuotaExceeded": "rate_limit_exceeded",
}


def _instance(cls: type[errors.ServiceError]) -> errors.ServiceError:
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.default is inspect.Parameter.empty
    ]
    args: list[object] = []
    for p in params:
        numeric = p.name in ("limit_bytes", "quota", "retry_after")
        args.append(1 if numeric else ["x"] if p.name == "missing" else "x")
    return cls(*args)


def _classes() -> dict[str, type[errors.ServiceError]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.ServiceError)
    }


def test_every_error_class_has_a_deliberate_status() -> None:
    classes = _classes()
    assert set(classes) == set(EXPECTED), "a new error class needs a status in faces.http"
    for name, cls in classes.items():
        assert status_for(_instance(cls)) == EXPECTED[name], name


def test_every_code_has_a_wire_name_in_every_vocabulary() -> None:
    for code in errors.ErrorCode:
        assert AZURE_CODES[code] and OPENAI_CODES[code], code
    classes = _classes()
    for name, wire in AZURE_NAMES.items():
        assert wire_code(_instance(classes[name])) == wire, name
    for name, wire in OPENAI_NAMES.items():
        assert wire_code(_instance(classes[name]), OPENAI_CODES) == wire, name
        assert wire_code(_instance(classes[name])) != wire, name  # the Azure face's own


def test_errors_name_their_pool_session_and_limit() -> None:
    full = errors.PoolAtCapacity("p", "max_sessions (3) sessions are allocated", "max_sessions")
    assert (full.pool, full.identifier, full.limit) == ("p", None, "max_sessions")
    lost = errors.InterpreterLost("p", "s1", "killed by signal 9")
    assert (lost.pool, lost.identifier) == ("p", "s1")
    big = errors.FileOverLimit("a.bin", 10)
    assert (big.limit, big.limit_bytes) == ("limits.file_bytes", 10)
    assert errors.QuotaExceeded("a.bin", 10).limit == "limits.disk_bytes"


def test_body_object() -> None:
    assert parse_object(b"") == {}
    assert parse_object(b'{"a": 1, "unknown": [1]}') == {"a": 1, "unknown": [1]}
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        parse_object(b"{nope")
    with pytest.raises(InvalidArgument, match="JSON object"):
        parse_object(b"[1, 2]")


def test_page_request() -> None:
    assert page_request({}) == PageRequest(limit=20, order="desc")
    page = page_request({"limit": "5", "order": "asc", "after": "msg_1", "api-version": "x"})
    assert page == PageRequest(limit=5, order="asc", after="msg_1")
    for bad in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"order": "up"}):
        with pytest.raises(InvalidArgument):
            page_request(bad)


# --- streaming ----------------------------------------------------------------------------------


def _direct_app() -> FastAPI:
    """An app with one face mounted under two prefixes, ``run`` served directly."""

    async def run(request: Request, pool: str) -> Response:
        body = await request.body()
        if body == b"bad":
            raise errors.InvalidArgument("a bad body", "body")
        route = request.scope["route"]
        return JSONResponse({"pool": pool, "route": route.path, "body": body.decode()})

    async def other(request: Request, pool: str) -> Response:
        return JSONResponse({"other": pool})

    router = APIRouter()
    router.add_api_route("/run", run, methods=["POST"])
    router.add_api_route("/other", other, methods=["GET"])
    app = FastAPI()
    install_error_handlers(app)
    prefixes = (("/pools/{pool}", True), ("/{base:path}/sessionPools/{pool}", False))
    mount(app, router, prefixes, codes=OPENAI_CODES, direct=("run",))
    return app


def test_an_operation_served_directly_answers_as_through_routing() -> None:
    app = _direct_app()
    direct = [r for r in app.router.routes if isinstance(r, DirectRoute)]
    assert [r.path for r in direct] == ["/pools/{pool}/run", "/{base:path}/sessionPools/{pool}/run"]
    assert app.router.routes[: len(direct)] == direct  # ahead of every other route
    with TestClient(app) as client:
        for url in ("/pools/p1/run", "/sub/rg/sessionPools/p1/run"):
            r = client.post(url, content=b"hi")
            # the scope names the face's own route, as audit records and traces read it
            assert r.json() == {"pool": "p1", "route": "/run", "body": "hi"}
        # the face's vocabulary for errors, as FastAPI's route would have answered
        r = client.post("/pools/p1/run", content=b"bad")
        assert r.status_code == 400
        code = errors.InvalidArgument.code
        assert OPENAI_CODES[code] != AZURE_CODES[code]
        assert r.json()["error"]["code"] == OPENAI_CODES[code]
        assert client.get("/pools/p1/run").status_code == 405
        assert client.get("/pools/p1/other").json() == {"other": "p1"}
        # described once, by the APIRoute it stands in front of
        paths = client.get("/openapi.json").json()["paths"]
        assert list(paths) == ["/pools/{pool}/run", "/pools/{pool}/other"]


def test_hot_routes_answer_as_the_router_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HotRoutes`` hands a direct operation its request ahead of the router: the same
    answers, errors in the face's vocabulary included, and the route named in the scope;
    what is not a direct operation (another route, a method it does not take, an unknown
    path) still goes through the router."""
    routed: list[str] = []
    handle = DirectRoute.handle

    async def spy(self: DirectRoute, scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await handle(self, scope, receive, send)

    monkeypatch.setattr(DirectRoute, "handle", spy)
    calls = [
        ("POST", "/pools/p1/run", b"hi"),
        ("POST", "/sub/rg/sessionPools/p1/run", b"hi"),
        ("POST", "/pools/p1/run", b"bad"),
        ("GET", "/pools/p1/run", b""),
        ("GET", "/pools/p1/other", b""),
        ("GET", "/nowhere", b""),
    ]
    answers = {}
    for hot in (False, True):
        app = _direct_app()
        if hot:
            app.add_middleware(HotRoutes, router=app.router)
        routed.clear()
        with TestClient(app) as client:
            answers[hot] = [
                (r.status_code, r.headers.get("x-ms-error-code"), r.content)
                for r in (client.request(m, url, content=body) for m, url, body in calls)
            ]
        # the router hands the route only the method it does not take (for its 405)
        direct = ["/pools/p1/run", "/sub/rg/sessionPools/p1/run", "/pools/p1/run"]
        assert routed == (["/pools/p1/run"] if hot else [*direct, "/pools/p1/run"])
    assert answers[True] == answers[False]
    statuses = [status for status, _, _ in answers[True]]
    assert statuses == [200, 200, 400, 405, 200, 404]


def test_serving_an_unknown_operation_directly_is_refused() -> None:
    router = APIRouter()
    with pytest.raises(ValueError, match="nope"):
        mount(FastAPI(), router, (("/x", True),), direct=("nope",))
