"""envd in process, on the fake backend (no root): the filesystem service's unary Connect
calls as the SDKs send them (``application/json``), its watchers, the REST file routes, and
the scopes. Processes need a real kernel: ``tests/clients/test_e2b_envd.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.config import PoolConfig
from sessionpool.faces.e2b.envd import ENVD_VERSION
from sessionpool.tenancy import Scope
from tests.faces.e2b.test_sandboxes import create, e2b_key, traffic
from tests.fakes import fake_server


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with fake_server(tmp_path, PoolConfig(ready_sessions=1)) as client:
        yield client


async def call(
    http: httpx.AsyncClient, sbx: dict[str, Any], method: str, body: dict[str, Any]
) -> httpx.Response:
    headers = {**traffic(sbx, 49983), "Content-Type": "application/json"}
    return await http.post(f"/filesystem.Filesystem/{method}", json=body, headers=headers)


async def test_filesystem_calls_and_rest_files(http: httpx.AsyncClient, tmp_path: Path) -> None:
    files = e2b_key(tmp_path, "acme", frozenset({Scope.EXECUTE, Scope.FILES}))
    sbx = await create(http, files)
    assert sbx["envdVersion"] == ENVD_VERSION
    envd = traffic(sbx, 49983)
    assert (await http.get("/health", headers=envd)).status_code == 204

    r = await http.post(
        "/files", params={"path": "/home/user/d/a.txt"}, content=b"abc", headers=envd
    )
    assert r.status_code == 200 and r.json() == [
        {"name": "a.txt", "type": "file", "path": "/home/user/d/a.txt"}
    ]
    r = await http.get("/files", params={"path": "d/a.txt"}, headers=envd)
    assert r.status_code == 200 and r.content == b"abc"
    r = await http.get("/files", params={"path": "d/none.txt"}, headers=envd)
    assert r.status_code == 404 and "d/none.txt" in r.json()["message"]

    r = await call(http, sbx, "Stat", {"path": "/home/user/d/a.txt"})
    assert r.status_code == 200, r.text
    entry = r.json()["entry"]
    assert (entry["name"], entry["type"], entry["path"], entry["size"]) == (
        "a.txt",
        "FILE_TYPE_FILE",
        "/home/user/d/a.txt",
        "3",  # int64 is a string in Connect's JSON
    )
    r = await call(http, sbx, "MakeDir", {"path": "/home/user/d"})
    assert r.status_code == 409 and r.json()["code"] == "already_exists"
    r = await call(http, sbx, "ListDir", {"path": "/mnt/data", "depth": 2})
    assert [e["path"] for e in r.json()["entries"]] == ["/mnt/data/d", "/mnt/data/d/a.txt"]
    r = await call(http, sbx, "Move", {"source": "d/a.txt", "destination": "e/b.txt"})
    assert r.json()["entry"]["path"] == "/home/user/e/b.txt"
    for method, body in (
        ("Stat", {"path": "/etc/passwd"}),
        ("ListDir", {"path": "../.."}),
        ("Move", {"source": "e/b.txt", "destination": "/tmp/b.txt"}),
    ):
        r = await call(http, sbx, method, body)
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
    r = await call(http, sbx, "Remove", {"path": "e"})
    assert r.status_code == 200
    r = await call(http, sbx, "Stat", {"path": "e/b.txt"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"

    # a watcher sees what changed since it was made (or last asked)
    r = await call(http, sbx, "CreateWatcher", {"path": "/home/user", "recursive": True})
    watcher = r.json()["watcherId"]
    await http.post("/files", params={"path": "w/new.txt"}, content=b"1", headers=envd)
    r = await call(http, sbx, "GetWatcherEvents", {"watcherId": watcher})
    events = {(e["name"], e["type"]) for e in r.json()["events"]}
    assert events == {("w", "EVENT_TYPE_CREATE"), ("w/new.txt", "EVENT_TYPE_CREATE")}
    r = await call(http, sbx, "GetWatcherEvents", {"watcherId": watcher})
    assert r.json().get("events", []) == []
    # another sandbox does not find this one's watcher
    other = await create(http, files)
    r = await call(http, other, "GetWatcherEvents", {"watcherId": watcher})
    assert r.status_code == 404
    assert (await call(http, sbx, "RemoveWatcher", {"watcherId": watcher})).status_code == 200
    r = await call(http, sbx, "GetWatcherEvents", {"watcherId": watcher})
    assert r.status_code == 404

    # multipart: several files in one body, each named by its part
    r = await http.post(
        "/files",
        files=[("file", ("m/1.txt", b"one")), ("file", ("/mnt/data/m/2.txt", b"two"))],
        headers=envd,
    )
    assert [f["path"] for f in r.json()] == ["/home/user/m/1.txt", "/mnt/data/m/2.txt"]
    r = await http.get("/files", params={"path": "/home/user/m/2.txt"}, headers=envd)
    assert r.content == b"two"


async def test_scopes(http: httpx.AsyncClient, tmp_path: Path) -> None:
    """Files need the files scope; processes the execute scope."""
    execute_only = e2b_key(tmp_path, "acme", frozenset({Scope.EXECUTE}))
    sbx = await create(http, execute_only)
    r = await call(http, sbx, "Stat", {"path": "x"})
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    r = await http.get("/files", params={"path": "x"}, headers=traffic(sbx, 49983))
    assert r.status_code == 403 and "files" in r.json()["message"]
    r = await http.post(
        "/process.Process/List",
        json={},
        headers={**traffic(sbx, 49983), "Content-Type": "application/json"},
    )
    # the scope is there: the fake kernel has no processes to offer, and says so
    assert r.status_code == 400 and "not supported" in r.json()["message"]
    files_only = e2b_key(tmp_path, "globex", frozenset({Scope.FILES}))
    r = await http.post("/v2/sandboxes", json={}, headers=files_only)
    assert r.status_code == 403  # creating a sandbox takes the execute scope
