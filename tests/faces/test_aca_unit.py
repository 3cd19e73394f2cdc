"""The dynamic-sessions face in process, on the fake backend: both API families, files,
sessions, streaming and the error answers, without root.

The jail-marked tests beside this one check the same routes against a real server with jailed
sessions; these check the face's own logic (translation, status codes, paging, the execution
store, shutdown) in milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sessionpool import errors
from sessionpool.config import PoolConfig
from sessionpool.sandbox.backend import Slot
from sessionpool.sandbox.fake import FakeBackend, FakeKernel
from tests.faces.helpers import V2410, V2502, V2510, q
from tests.fakes import fake_server

POOLS = (
    PoolConfig(name="default", ready_sessions=1, execution_timeout_seconds=1.0),
    PoolConfig(name="tiny", ready_sessions=0, max_sessions=1),
    PoolConfig(
        name="small",
        ready_sessions=0,
        limits=PoolConfig().limits.__class__(file_bytes=1024),
    ),
)


class ForkFails(FakeBackend):
    """Kernels stop starting: the host's sandbox broke after the server started."""

    async def spawn(self, pool: PoolConfig, slot: Slot) -> FakeKernel:
        if pool.name == "broken":
            raise errors.SandboxError("the zygote could not fork")
        return await super().spawn(pool, slot)


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with fake_server(tmp_path, *POOLS) as client:
        yield client


async def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["x-ms-error-code"] == code == r.json()["error"]["code"]
    assert r.json()["error"]["message"]


def props(code: str, **extra: object) -> dict[str, object]:
    return {
        "properties": {
            "codeInputType": "inline",
            "executionType": "synchronous",
            "code": code,
            **extra,
        }
    }


async def test_code_execute_envelope_state_and_errors(http: httpx.AsyncClient) -> None:
    r = await http.post(
        f"/pools/default/code/execute{q('a')}", json=props("x = 6\nprint(x)\nx * 7")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["$id"] == "1" and body["properties"]["$id"] == "2"
    assert body["properties"]["status"] == "Success"
    assert (body["properties"]["stdout"], body["properties"]["result"]) == ("6\n", "42")
    failed = (await http.post(f"/pools/default/code/execute{q('a')}", json=props("x / 0"))).json()
    assert failed["properties"]["status"] == "Failure"
    assert "ZeroDivisionError" in failed["properties"]["stderr"]


async def test_base64_code_and_bad_bodies(http: httpx.AsyncClient) -> None:
    code = base64.b64encode(b"'decoded'").decode()
    r = await http.post(
        f"/pools/default/code/execute{q('b')}", json=props(code, codeInputType="inlineBase64")
    )
    assert r.json()["properties"]["result"] == "'decoded'"
    await assert_error(
        await http.post(f"/pools/default/code/execute{q('b')}", json=props("1", codeInputType="x")),
        400,
        "UnsupportedCodeInputType",
    )
    await assert_error(
        await http.post(f"/pools/default/code/execute{q('b')}", content=b"{"),
        400,
        "InvalidRequestBody",
    )


async def test_timeout_is_a_failure_that_keeps_state(http: httpx.AsyncClient) -> None:
    await http.post(f"/pools/default/code/execute{q('t')}", json=props("kept = 1"))
    r = await http.post(f"/pools/default/code/execute{q('t')}", json=props("while True: pass"))
    body = r.json()["properties"]
    assert body["status"] == "Failure" and "timed out after 1 s" in body["stderr"]
    again = await http.post(f"/pools/default/code/execute{q('t')}", json=props("kept"))
    assert again.json()["properties"]["result"] == "1"


async def test_executions_family_sync_async_shell_and_lookup(http: httpx.AsyncClient) -> None:
    body = {"codeInputType": "Inline", "executionType": "Synchronous", "code": "print(7 * 9)"}
    r = await http.post(f"/pools/default/executions{q('e', V2502)}", json=body)
    assert r.status_code == 200 and r.json()["result"]["stdout"] == "63\n"
    assert r.json()["status"] == "Succeeded"
    assert (
        await http.post(f"/pools/default/executions{q('e', V2410)}", json=body)
    ).status_code == 202
    looked = await http.get(r.headers["operation-location"])
    assert looked.json() == r.json()

    slow = {**body, "executionType": "Asynchronous", "code": "for _ in range(10**6): pass\n'end'"}
    started = await http.post(f"/pools/default/executions{q('e', V2510)}", json=slow)
    assert started.status_code == 202 and started.json()["status"] == "Running"
    for _ in range(200):
        done = (await http.get(started.headers["operation-location"])).json()
        if done["status"] != "Running":
            break
        await asyncio.sleep(0.02)
    assert done["status"] == "Succeeded" and done["result"]["executionResult"] == "'end'"

    shell = await http.post(
        f"/pools/default/executions{q('e', V2510)}", json={"shellCommand": "echo hi; exit 2"}
    )
    assert shell.json()["result"]["stdout"] == "hi\n"
    assert shell.json()["status"] == "2"  # the exit code, as the executions family reports it
    await assert_error(
        await http.get(f"/pools/default/executions/nope{q('e', V2510)}"), 404, "ExecutionNotFound"
    )


async def test_files_in_both_families(http: httpx.AsyncClient) -> None:
    up = await http.post(
        f"/pools/default/files/upload{q('f')}", files={"file": ("data.csv", b"a,b\n1,2\n")}
    )
    assert up.status_code == 200, up.text
    assert up.json()["value"][0]["properties"]["filename"] == "data.csv"
    listed = (await http.get(f"/pools/default/files{q('f')}")).json()
    assert [v["properties"]["filename"] for v in listed["value"]] == ["data.csv"]
    down = await http.get(f"/pools/default/files/content/data.csv{q('f')}")
    assert down.content == b"a,b\n1,2\n"

    sub = await http.post(
        f"/pools/default/files{q('f', V2510, path='/mnt/data/sub')}",
        files={"file": ("x.txt", b"x")},
    )
    assert sub.json()["name"] == "x.txt" and sub.json()["directory"] == "/mnt/data/sub"
    flat = (await http.get(f"/pools/default/files{q('f', V2510, path='sub')}")).json()
    assert [v["name"] for v in flat["value"]] == ["x.txt"]
    r = await http.delete(f"/pools/default/files/x.txt{q('f', V2510, path='sub')}")
    assert r.status_code == 204
    await assert_error(
        await http.get(f"/pools/default/files/content/x.txt{q('f', path='sub')}"),
        404,
        "FileNotFound",
    )
    await assert_error(
        await http.get(f"/pools/default/files/content/..%2Fescape{q('f')}"), 400, "InvalidFilePath"
    )


async def test_code_sees_uploaded_files(http: httpx.AsyncClient) -> None:
    await http.post(f"/pools/default/files/upload{q('g')}", files={"file": ("in.txt", b"hello")})
    r = await http.post(
        f"/pools/default/code/execute{q('g')}",
        json=props("with open('/mnt/data/in.txt') as f: text = f.read()\ntext"),
    )
    assert r.json()["properties"]["result"] == "'hello'"


async def test_upload_past_the_file_limit_is_413(http: httpx.AsyncClient) -> None:
    r = await http.post(
        f"/pools/small/files/upload{q('big')}", files={"file": ("big.bin", b"x" * 2048)}
    )
    await assert_error(r, 413, "FileTooLarge")
    assert (await http.get(f"/pools/small/files{q('big')}")).json()["value"] == []


async def test_sessions_listing_paging_get_and_delete(http: httpx.AsyncClient) -> None:
    for i in range(105):
        await http.get(f"/pools/default/files{q(f'p{i:03}', V2510)}")
    first = (await http.get("/pools/default/listSessions")).json()
    assert len(first["sessions"]) == 100 and first["nextLink"]
    rest = (await http.get(first["nextLink"])).json()
    assert len(rest["sessions"]) == 5 and rest["nextLink"] is None
    names = [s["identifier"] for s in first["sessions"] + rest["sessions"]]
    assert sorted(names) == [f"p{i:03}" for i in range(105)]

    got = await http.get(f"/pools/default/session{q('p000', V2510)}")
    assert got.status_code == 200 and got.json()["identifier"] == "p000"
    assert (await http.delete(f"/pools/default/session{q('p000', V2510)}")).status_code == 204
    assert (await http.delete(f"/pools/default/session{q('p000', V2510)}")).status_code == 204
    await assert_error(
        await http.get(f"/pools/default/session{q('p000', V2510)}"), 404, "SessionNotFound"
    )


async def test_streaming_sends_output_then_the_result(http: httpx.AsyncClient) -> None:
    r = await http.post(
        f"/pools/default/executions/stream{q('s', V2510)}",
        json={"code": "for i in range(3): print(i)\n'last'"},
    )
    events = [
        (block.split("\n")[0][len("event: ") :], json.loads(block.split("\n")[1][len("data: ") :]))
        for block in r.text.strip().split("\n\n")
    ]
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"stdout"}
    assert "".join(data["text"] for kind, data in events if kind == "stdout") == "0\n1\n2\n"
    assert events[-1][1]["result"]["executionResult"] == "'last'"


async def test_request_errors_name_the_problem(http: httpx.AsyncClient) -> None:
    await assert_error(
        await http.post("/pools/default/code/execute", json=props("1")), 400, "MissingIdentifier"
    )
    await assert_error(
        await http.get(f"/pools/default/files{q('x', '2024-13')}"), 400, "UnsupportedApiVersion"
    )
    await assert_error(await http.get(f"/pools/nope/files{q('x')}"), 404, "PoolNotFound")
    unauth = await http.get(f"/pools/default/files{q('x')}", headers={"Authorization": ""})
    assert unauth.status_code == 401


async def test_an_exhausted_pool_answers_404_and_keeps_its_session(
    http: httpx.AsyncClient,
) -> None:
    ok = await http.post(f"/pools/tiny/code/execute{q('only')}", json=props("v = 1"))
    assert ok.status_code == 200
    await assert_error(
        await http.post(f"/pools/tiny/code/execute{q('second')}", json=props("1")),
        404,
        "SessionPoolExhausted",
    )
    kept = await http.post(f"/pools/tiny/code/execute{q('only')}", json=props("v"))
    assert kept.json()["properties"]["result"] == "1"


async def test_metadata_names_the_runtime(http: httpx.AsyncClient) -> None:
    meta = (await http.get(f"/pools/default/metadata{q('m', V2510)}")).json()
    assert meta["runtimes"][0]["name"] == "python"
    # the fake backend's kernels run in this process: its packages are the runtime's
    assert any(p["name"].lower() == "fastapi" for p in meta["preInstalledPackages"])
    assert meta["runtime"]["name"] == "python"
    assert meta["runtime"]["packagesDigest"].startswith("sha256:")


async def test_a_broken_sandbox_is_503_with_what_to_check(tmp_path: Path) -> None:
    pools = (PoolConfig(ready_sessions=0), PoolConfig(name="broken", ready_sessions=0))
    backend = ForkFails(tmp_path / "fake-data")
    async with fake_server(tmp_path, *pools, backend=backend) as http:
        r = await http.post(f"/pools/broken/code/execute{q('x')}", json=props("1"))
        await assert_error(r, 503, "SandboxFailure")
        assert "could not fork" in r.json()["error"]["message"]
        assert "doctor" in r.json()["error"]["message"]
        ok = await http.post(f"/pools/default/code/execute{q('x')}", json=props("1"))
        assert ok.status_code == 200
