"""2024-10-02-preview and later: executions, shell commands, files?path=, sessions, metadata."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest

from tests.faces.helpers import OLD, V2410, V2502, V2510, assert_error, q

pytestmark = pytest.mark.jail


def run(
    http: httpx.Client, ident: str, body: dict[str, Any], version: str = V2502
) -> httpx.Response:
    return http.post(f"/pools/default/executions{q(ident, version)}", json=body)


def code_body(code: str, **extra: Any) -> dict[str, Any]:
    return {"codeInputType": "Inline", "executionType": "Synchronous", "code": code, **extra}


def test_code_execution_resource(http: httpx.Client, ident: str) -> None:
    r = run(http, ident, code_body("print(7*9)\n'done'", timeoutInSeconds=60))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["identifier"] == ident
    assert body["status"] == "Succeeded"
    assert body["executionType"] == "Synchronous"
    assert body["result"]["stdout"] == "63\n"
    assert body["result"]["stderr"] == ""
    assert body["result"]["executionResult"] == "'done'"
    assert isinstance(body["result"]["executionTimeInMilliseconds"], int)
    assert "error" not in body
    assert r.headers["operation-id"] == body["id"]
    location = r.headers["operation-location"]
    assert f"/pools/default/executions/{body['id']}?" in location

    again = http.get(location, headers={"Authorization": http.headers["Authorization"]})
    assert again.status_code == 200
    assert again.json() == body


def test_2024_10_answers_202(http: httpx.Client, ident: str) -> None:
    r = run(http, ident, code_body("1"), version=V2410)
    assert r.status_code == 202
    assert r.json()["status"] == "Succeeded"


def test_operation_id_header_names_the_execution(http: httpx.Client, ident: str) -> None:
    r = http.post(
        f"/pools/default/executions{q(ident, V2502)}",
        json=code_body("1"),
        headers={"operation-id": "my-op-1"},
    )
    assert r.json()["id"] == "my-op-1"
    assert http.get(f"/pools/default/executions/my-op-1{q(ident, V2502)}").status_code == 200


def test_exception_is_failed_with_error(http: httpx.Client, ident: str) -> None:
    body = run(http, ident, code_body("raise ValueError('bad value')")).json()
    assert body["status"] == "Failed"
    assert body["error"]["error"]["code"] == "ValueError"
    assert "bad value" in body["error"]["error"]["message"]
    assert "ValueError" in body["result"]["stderr"]


def test_output_streams_max_length(http: httpx.Client, ident: str) -> None:
    body = run(http, ident, code_body("print('x' * 100)", outputStreamsMaxLength=10)).json()
    assert body["result"]["stdout"] == "x" * 10
    assert body["result"]["outputStreamsMaxLength"] == 10


def test_image_execution_result(http: httpx.Client, ident: str) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()"
    result = run(http, ident, code_body(code)).json()["result"]["executionResult"]
    assert result["type"] == "image"
    assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG")


def test_asynchronous_execution_is_polled(http: httpx.Client, ident: str) -> None:
    r = run(
        http, ident, code_body("import time\ntime.sleep(0.5)\n'late'", executionType="Asynchronous")
    )
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "Running"
    deadline = time.monotonic() + 30
    while body["status"] == "Running" and time.monotonic() < deadline:
        time.sleep(0.1)
        body = http.get(f"/pools/default/executions/{body['id']}{q(ident, V2502)}").json()
    assert body["status"] == "Succeeded"
    assert body["result"]["executionResult"] == "'late'"


def test_unknown_execution_is_404(http: httpx.Client, ident: str) -> None:
    r = http.get(f"/pools/default/executions/does-not-exist{q(ident, V2502)}")
    assert_error(r, 404, "ExecutionNotFound")


def test_shell_command_status_is_the_exit_code(http: httpx.Client, ident: str) -> None:
    body = run(http, ident, {"shellCommand": "echo hi; echo oops >&2"}).json()
    assert body["identifier"] == ident
    assert body["status"] == "0"
    assert body["result"]["stdout"] == "hi\n"
    assert body["result"]["stderr"] == "oops\n"
    assert isinstance(body["result"]["executionTimeInMilliseconds"], int)
    assert run(http, ident, {"shellCommand": "exit 3"}).json()["status"] == "3"


def test_shell_and_python_share_the_workspace(http: httpx.Client, ident: str) -> None:
    run(http, ident, {"shellCommand": "echo shared > /mnt/data/s.txt"})
    body = run(http, ident, code_body("open('/mnt/data/s.txt').read()")).json()
    assert body["result"]["executionResult"] == "'shared\\n'"


def test_code_and_shell_together_is_400(http: httpx.Client, ident: str) -> None:
    assert_error(run(http, ident, {"code": "1", "shellCommand": "true"}), 400)
    assert_error(run(http, ident, {"codeInputType": "Inline"}), 400)


# --- files -------------------------------------------------------------------------------------


def test_file_operations(http: httpx.Client, ident: str) -> None:
    base = "/pools/default/files"
    r = http.post(
        f"{base}{q(ident, V2502, path='/mnt/data')}",
        files={"file": ("b.txt", b"0123456789", "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["name"] == "b.txt"
    assert meta["type"] == "File"
    assert meta["sizeInBytes"] == 10
    assert meta["contentType"] == "text/plain"
    assert meta["lastModifiedAt"].endswith("Z")

    listing = http.get(f"{base}{q(ident, V2502)}").json()
    assert listing["nextLink"] is None
    assert [f["name"] for f in listing["value"]] == ["b.txt"]

    assert http.get(f"{base}/b.txt{q(ident, V2502)}").json()["sizeInBytes"] == 10
    assert http.get(f"{base}/b.txt/content{q(ident, V2502)}").content == b"0123456789"

    r = http.delete(f"{base}/b.txt{q(ident, V2502)}")
    assert r.status_code == 204
    assert r.content == b""
    assert_error(http.get(f"{base}/b.txt{q(ident, V2502)}"), 404, "FileNotFound")
    assert_error(http.delete(f"{base}/b.txt{q(ident, V2502)}"), 404)


def test_path_parameter_and_recursive_listing(http: httpx.Client, ident: str) -> None:
    base = "/pools/default/files"
    r = http.post(f"{base}{q(ident, V2510, path='/mnt/data/sub')}", files={"file": ("n.txt", b"n")})
    assert r.status_code == 200, r.text
    assert r.json()["directory"] == "/mnt/data/sub"

    top = http.get(f"{base}{q(ident, V2510)}").json()["value"]
    assert [(f["name"], f["type"]) for f in top] == [("sub", "Directory")]
    inside = http.get(f"{base}{q(ident, V2510, path='/mnt/data/sub')}").json()["value"]
    assert [f["name"] for f in inside] == ["n.txt"]
    everything = http.get(f"{base}{q(ident, V2510, recursive='true')}").json()["value"]
    assert {(f["directory"], f["name"]) for f in everything} == {
        ("/mnt/data", "sub"),
        ("/mnt/data/sub", "n.txt"),
    }
    r = http.get(f"{base}/n.txt/content{q(ident, V2510, path='/mnt/data/sub')}")
    assert r.content == b"n"


def test_file_list_shape_follows_api_version(http: httpx.Client, ident: str) -> None:
    http.post(f"/pools/default/files{q(ident, V2502)}", files={"file": ("v.txt", b"v")})
    old = http.get(f"/pools/default/files{q(ident, OLD)}").json()
    assert old["value"][0]["properties"]["filename"] == "v.txt"
    new = http.get(f"/pools/default/files{q(ident, V2502)}").json()
    assert new["value"][0]["name"] == "v.txt"
    assert "properties" not in new["value"][0]


# --- sessions ----------------------------------------------------------------------------------


def test_session_resource_and_delete(http: httpx.Client, ident: str) -> None:
    assert_error(http.get(f"/pools/default/session{q(ident, V2502)}"), 404, "SessionNotFound")
    run(http, ident, code_body("secret = 1"))
    http.post(f"/pools/default/files{q(ident, V2502)}", files={"file": ("keep.txt", b"k")})

    body = http.get(f"/pools/default/session{q(ident, V2502)}").json()
    assert body["identifier"] == ident
    for key in ("createdAt", "lastAccessedAt", "expireAt"):
        assert body[key].endswith("Z")
    assert body["expireAt"] > body["lastAccessedAt"]
    assert body["etag"].startswith('"')

    listed = http.get(f"/pools/default/listSessions{q(ident, V2502)}").json()
    assert ident in [s["identifier"] for s in listed["sessions"]]
    assert listed["nextLink"] is None

    for _ in range(2):  # idempotent
        r = http.delete(f"/pools/default/session{q(ident, V2510)}")
        assert r.status_code == 204
        assert r.content == b""
    assert_error(http.get(f"/pools/default/session{q(ident, V2502)}"), 404)

    # the identifier now names a fresh session: no variables, no files
    body = run(http, ident, code_body("'secret' in globals()")).json()
    assert body["result"]["executionResult"] == "False"
    assert http.get(f"/pools/default/files{q(ident, V2502)}").json()["value"] == []


def test_delete_of_unknown_session_is_204(http: httpx.Client) -> None:
    r = http.delete(f"/pools/default/session{q('never-used-identifier', V2510)}")
    assert r.status_code == 204


def test_list_sessions_rejects_bad_skip(http: httpx.Client) -> None:
    assert_error(http.get("/pools/default/listSessions?api-version=2025-02-02-preview&skip=x"), 400)


def test_metadata(http: httpx.Client) -> None:
    body = http.get("/pools/default/metadata?api-version=2025-02-02-preview").json()
    assert body["runtimes"][0]["name"] == "python"
    names = {p["name"].lower() for p in body["preInstalledPackages"]}
    assert {"numpy", "pandas", "matplotlib"} <= names
    assert body["jupyterKernel"]["name"] == "python3"


def test_operation_ids_are_per_session(http: httpx.Client, ident: str) -> None:
    other = f"{ident}-other"
    try:
        for name, code in ((ident, "'mine'"), (other, "'theirs'")):
            r = http.post(
                f"/pools/default/executions{q(name, V2502)}",
                json=code_body(code),
                headers={"operation-id": "shared-op"},
            )
            assert r.status_code == 200
        mine = http.get(f"/pools/default/executions/shared-op{q(ident, V2502)}").json()
        assert mine["result"]["executionResult"] == "'mine'"
    finally:
        http.delete(f"/pools/default/session{q(other, V2510)}")


@pytest.mark.parametrize("path", ["/etc", "/mnt/database", "../x"])
def test_paths_outside_the_workspace_are_400(http: httpx.Client, ident: str, path: str) -> None:
    base = "/pools/default/files"
    assert_error(http.get(f"{base}{q(ident, V2510, path=path)}"), 400, "InvalidFilePath")
    r = http.post(f"{base}{q(ident, V2510, path=path)}", files={"file": ("x.txt", b"x")})
    assert_error(r, 400, "InvalidFilePath")
    assert http.get(f"{base}{q(ident, V2510, recursive='true')}").json()["value"] == []
