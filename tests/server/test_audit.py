"""The audit log: one record per request that acts on something, saying who, what, which and how
it ended; nothing for probes and scrapes. The application runs in process on the fake backend;
records are read from the ``sessionpool.audit`` logger, with the fields the JSON lines carry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.agents.config import AgentsConfig
from sessionpool.config import PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox.fake import FakeBackend
from sessionpool.server.keys import KeyStore
from sessionpool.server.observe import AUDIT_LOGGER, RequestIdFilter
from sessionpool.server.settings import ServerSettings
from sessionpool.server.testing import in_process
from sessionpool.tenancy import Scope
from tests.fakes import fake_server

API = "api-version=2024-02-02-preview"
FIELDS = (
    "tenant",
    "credential",
    "method",
    "route",
    "operation",
    "status",
    "pool",
    "identifier",
    "path",
    "objects",
    "files",
    "created_id",
    "request_id",
)


def body(code: str) -> dict[str, object]:
    return {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """The audit records of the test, as dicts of their fields (what the JSON lines hold)."""
    ids = RequestIdFilter()
    caplog.handler.addFilter(ids)
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    found: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            ids.filter(record)
            doc = {k: getattr(record, k) for k in FIELDS if hasattr(record, k)}
            found.append({**doc, "message": record.getMessage()})

    handler = Collect()
    logging.getLogger(AUDIT_LOGGER).addHandler(handler)
    yield found
    logging.getLogger(AUDIT_LOGGER).removeHandler(handler)
    caplog.handler.removeFilter(ids)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    agents = AgentsConfig(data_dir=tmp_path / "fake-data")
    async with fake_server(tmp_path, agents=agents) as client:
        yield client


async def test_who_did_what_to_which_session_and_file(
    http: httpx.AsyncClient, audit: list[dict[str, Any]]
) -> None:
    q = f"identifier=demo&{API}"
    await http.post(
        f"/pools/default/code/execute?{q}", json=body("1"), headers={"x-request-id": "r1"}
    )
    files = [("file", ("a.csv", b"1")), ("file", ("b.txt", b"22"))]
    await http.post(f"/pools/default/files/upload?{q}&path=in", files=files)
    await http.get(f"/pools/default/files/content/in/a.csv?{q}")
    await http.delete(f"/pools/default/files/in/b.txt?{q}")
    await http.get(f"/pools/default/listSessions?{API}")
    await http.delete(f"/pools/default/session?{q}")
    # nothing for probes, the API description, scrapes, or paths that are no route
    await http.get("/healthz")
    await http.get("/readyz")
    await http.get("/openapi.json")
    await http.get("/metrics")
    await http.get("/no/such/route")

    execute, upload, download, delete, listing, end = audit
    assert execute == {
        "tenant": "default",
        "credential": "server-key",
        "method": "POST",
        "route": "/code/execute",
        "operation": "code_execute",
        "status": 200,
        "pool": "default",
        "identifier": "demo",
        "request_id": "r1",
        "message": "POST /code/execute -> 200 by default (server-key): pool='default' "
        "identifier='demo'",
    }
    assert upload["files"] == ["in/a.csv", "in/b.txt"] and upload["path"] == "in"
    assert download["objects"] == {"file_path": "content/in/a.csv"}
    assert download["method"] == "GET" and download["status"] == 200
    assert delete["method"] == "DELETE" and delete["objects"] == {"file_path": "in/b.txt"}
    assert delete["status"] == 204
    assert listing["operation"] == "list_sessions" and "identifier" not in listing
    assert end["route"] == "/session" and end["method"] == "DELETE"
    assert len({r["request_id"] for r in audit}) == 6


async def test_a_tenant_is_recorded_by_its_key_and_its_own_identifier(
    tmp_path: Path, http: httpx.AsyncClient, audit: list[dict[str, Any]]
) -> None:
    store = KeyStore(tmp_path / "fake-data" / "keys.json")
    entry, key = store.create("acme", frozenset({Scope.EXECUTE}))
    auth = {"authorization": f"Bearer {key}"}
    q = f"identifier=demo&{API}"
    r = await http.post(f"/pools/default/code/execute?{q}", json=body("1"), headers=auth)
    assert r.status_code == 200
    # a right the key does not carry: refused, and recorded as refused
    r = await http.get(f"/pools/default/files?{q}", headers=auth)
    assert r.status_code == 403
    ran, refused = audit
    assert ran["tenant"] == "acme" and ran["credential"] == f"key:{entry.id}"
    assert ran["identifier"] == "demo"  # as the tenant named it, not the key it is kept under
    assert refused["status"] == 403 and refused["operation"] == "list_files"
    # a request whose credential is refused never reaches a route: the access log has it
    assert (
        await http.get(f"/pools/default/files?{q}", headers={"authorization": "Bearer nope"})
    ).status_code == 401
    assert len(audit) == 2


async def test_agents_objects_by_id_and_the_ids_of_created_ones(
    http: httpx.AsyncClient, audit: list[dict[str, Any]]
) -> None:
    thread = (await http.post("/v1/threads", json={})).json()["id"]
    await http.get(f"/v1/threads/{thread}")
    await http.delete(f"/v1/threads/{thread}")
    await http.post(
        "/v1/threads", content=b"{not json", headers={"content-type": "application/json"}
    )
    created, read, deleted, bad = audit
    assert created["created_id"] == thread and created["route"] == "/threads"
    assert read["objects"] == {"thread_id": thread} and "created_id" not in read
    assert deleted["objects"] == {"thread_id": thread}
    assert bad["status"] == 400 and "created_id" not in bad


async def test_without_authentication_every_request_is_the_servers(
    tmp_path: Path, audit: list[dict[str, Any]]
) -> None:
    data = tmp_path / "data"
    pools = (PoolConfig(ready_sessions=0),)
    settings = ServerSettings(no_auth=True, data_dir=data, pools=pools)
    engine = Engine(settings.engine_config(), list(pools), backend=FakeBackend(data))
    await engine.start()
    async with in_process(settings, engine) as client:
        r = await client.post(f"/pools/default/code/execute?identifier=x&{API}", json=body("1"))
        assert r.status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    (record,) = audit
    assert record["tenant"] == "default" and record["credential"] == "server-key"


async def test_a_name_cannot_forge_a_line(
    http: httpx.AsyncClient, audit: list[dict[str, Any]]
) -> None:
    await http.get("/v1/threads/x%0AINFO:%20forged")
    (record,) = audit
    assert record["objects"] == {"thread_id": "x\nINFO: forged"}
    assert "\n" not in record["message"] and "x\\nINFO: forged" in record["message"]
