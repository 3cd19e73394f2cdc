"""2024-02-02-preview: code/execute, files/upload, files, files/content, as clients use them."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.faces.helpers import assert_error, execute, q

pytestmark = pytest.mark.jail

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def upload(
    http: httpx.Client, ident: str, filename: str, data: bytes, pool: str = "default"
) -> httpx.Response:
    return http.post(
        f"/pools/{pool}/files/upload{q(ident)}",
        files={"file": (filename, data, "application/octet-stream")},
    )


def listing(http: httpx.Client, ident: str, pool: str = "default") -> dict[str, dict[str, object]]:
    r = http.get(f"/pools/{pool}/files{q(ident)}")
    assert r.status_code == 200, r.text
    body = r.json()
    return {item["properties"]["filename"]: item["properties"] for item in body["value"]}


# --- execute -----------------------------------------------------------------------------------


def test_execute_returns_the_full_envelope(http: httpx.Client, ident: str) -> None:
    body = {
        "properties": {
            "codeInputType": "inline",
            "executionType": "synchronous",
            "code": "print('hi')\n6*7\n",
        }
    }
    r = http.post(f"/pools/default/code/execute{q(ident)}", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["$id"] == "1"
    props = data["properties"]
    assert props["$id"] == "2"
    assert props["status"] == "Success"
    assert props["stdout"] == "hi\n"
    assert props["stderr"] == ""
    assert props["result"] == "42"
    assert isinstance(props["executionTimeInMilliseconds"], int)


def test_state_persists_between_calls(http: httpx.Client, ident: str) -> None:
    assert execute(http, ident, "x = 41")["result"] == ""
    assert execute(http, ident, "x += 1\nx")["result"] == "42"


def test_pretty_repr_of_a_long_list_is_a_string(http: httpx.Client, ident: str) -> None:
    props = execute(http, ident, "[f'package-{i}' for i in range(30)]")
    assert props["result"].startswith("['package-0',\n 'package-1',")


def test_exception_is_failure_with_traceback_in_stderr(http: httpx.Client, ident: str) -> None:
    props = execute(http, ident, "print('before')\n1/0")
    assert props["status"] == "Failure"
    assert props["stdout"] == "before\n"
    assert "ZeroDivisionError" in props["stderr"]
    assert "Traceback" in props["stderr"] or "----" in props["stderr"]
    assert props["result"] == ""
    # the session survives its exception
    assert execute(http, ident, "'alive'")["result"] == "'alive'"


def test_figure_comes_back_as_png(http: httpx.Client, ident: str) -> None:
    props = execute(http, ident, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert props["status"] == "Success", props["stderr"]
    result = props["result"]
    assert result["type"] == "image"
    assert result["format"] == "png"
    assert base64.b64decode(result["base64_data"]).startswith(PNG_MAGIC)


def test_timeout_is_failure_and_says_state_is_kept(http: httpx.Client, ident: str) -> None:
    execute(http, ident, "kept = 'yes'")
    props = execute(http, ident, "import time\ntime.sleep(30)", timeoutInSeconds=1)
    assert props["status"] == "Failure"
    assert "timed out" in props["stderr"].lower() or "timeout" in props["stderr"].lower()
    assert "kept" in props["stderr"]
    assert execute(http, ident, "kept")["result"] == "'yes'"


def test_flat_body_and_unknown_keys_are_accepted(http: httpx.Client, ident: str) -> None:
    r = http.post(
        f"/pools/default/code/execute{q(ident)}",
        json={"code": "1+1", "somethingNew": True},
    )
    assert r.status_code == 200
    assert r.json()["properties"]["result"] == "2"


def test_base64_code_input(http: httpx.Client, ident: str) -> None:
    code = base64.b64encode(b"'b64'").decode()
    props = execute(http, ident, code, codeInputType="InlineBase64")
    assert props["result"] == "'b64'"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "InvalidRequestBody"),
        (b'{"properties": {}}', "InvalidRequestBody"),
        (b'{"properties": {"code": 5}}', "InvalidRequestBody"),
        (b'{"properties": {"code": "1", "timeoutInSeconds": -1}}', "InvalidRequestBody"),
        (b'{"properties": {"code": "1", "codeInputType": "carrier-pigeon"}}', None),
        (b"", "InvalidRequestBody"),
    ],
)
def test_bad_execute_bodies_are_400(
    http: httpx.Client, ident: str, body: bytes, code: str | None
) -> None:
    r = http.post(
        f"/pools/default/code/execute{q(ident)}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_error(r, 400, code)


# --- files -------------------------------------------------------------------------------------


def test_upload_list_download_roundtrip(http: httpx.Client, ident: str) -> None:
    data = bytes(range(256)) * 100
    r = upload(http, ident, "data.bin", data)
    assert r.status_code == 200, r.text
    body = r.json()
    props = body["value"][0]["properties"]
    assert props["filename"] == "data.bin"
    assert props["size"] == len(data)
    assert TIMESTAMP.fullmatch(props["lastModifiedTime"])

    files = listing(http, ident)
    assert files["data.bin"]["size"] == len(data)

    r = http.get(f"/pools/default/files/content/data.bin{q(ident)}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == data


def test_mnt_data_prefix_and_subdirectories(http: httpx.Client, ident: str) -> None:
    r = upload(http, ident, "/mnt/data/sub/dir/x.txt", b"nested")
    assert r.status_code == 200, r.text
    assert r.json()["value"][0]["properties"]["filename"] == "sub/dir/x.txt"
    assert "sub/dir/x.txt" in listing(http, ident)
    for path in ("sub/dir/x.txt", "sub%2Fdir%2Fx.txt"):
        r = http.get(f"/pools/default/files/content/{path}{q(ident)}")
        assert r.status_code == 200
        assert r.content == b"nested"
    # the session sees the same file under /mnt/data
    assert execute(http, ident, "open('/mnt/data/sub/dir/x.txt').read()")["result"] == "'nested'"


def test_files_made_by_code_are_listed_and_downloadable(http: httpx.Client, ident: str) -> None:
    execute(http, ident, "open('/mnt/data/made.csv', 'w').write('a,b\\n1,2\\n')")
    assert listing(http, ident)["made.csv"]["size"] == 8
    r = http.get(f"/pools/default/files/content/made.csv{q(ident)}")
    assert r.content == b"a,b\n1,2\n"


def test_empty_listing_is_an_empty_value(http: httpx.Client, ident: str) -> None:
    r = http.get(f"/pools/default/files{q(ident)}")
    assert r.status_code == 200
    assert r.json()["value"] == []


def test_multipart_labelled_as_json_is_recovered(http: httpx.Client, ident: str) -> None:
    boundary = "ed6e8a09c78ef7f8c8fd511673f91a73"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="/mnt/data/sk_in.txt"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
        "sk upload data\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    r = http.post(
        f"/pools/default/files/upload{q(ident)}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert listing(http, ident)["sk_in.txt"]["size"] == len(b"sk upload data\n")
    r = http.get(f"/pools/default/files/content/sk_in.txt{q(ident)}")
    assert r.content == b"sk upload data\n"


def test_chunked_upload_without_content_length(http: httpx.Client, ident: str) -> None:
    boundary = "6f0f66e98e534629a6cddff4689fc23c"
    payload = b"z" * 300_000

    def body() -> Iterator[bytes]:
        yield (
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: form-data; name="file"; filename="ag_in.txt"\r\n\r\n'
        ).encode()
        for i in range(0, len(payload), 7_000):
            yield payload[i : i + 7_000]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = http.post(
        f"/pools/default/files/upload{q(ident)}",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 200, r.text
    assert http.get(f"/pools/default/files/content/ag_in.txt{q(ident)}").content == payload


def test_several_files_in_one_upload(http: httpx.Client, ident: str) -> None:
    r = http.post(
        f"/pools/default/files/upload{q(ident)}",
        files=[("file", ("a.txt", b"A")), ("file", ("b.txt", b"BB"))],
    )
    assert r.status_code == 200
    names = [v["properties"]["filename"] for v in r.json()["value"]]
    assert names == ["a.txt", "b.txt"]


def test_missing_file_is_404(http: httpx.Client, ident: str) -> None:
    r = http.get(f"/pools/default/files/content/nope.txt{q(ident)}")
    assert_error(r, 404, "FileNotFound")


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b"])
def test_paths_outside_the_workspace_are_400(http: httpx.Client, ident: str, name: str) -> None:
    assert_error(upload(http, ident, name, b"x"), 400, "InvalidFilePath")


def test_upload_without_a_file_part_is_400(http: httpx.Client, ident: str) -> None:
    r = http.post(f"/pools/default/files/upload{q(ident)}", data={"note": "no file"}, files={})
    assert_error(r, 400)
    r = http.post(
        f"/pools/default/files/upload{q(ident)}",
        content=b"just bytes",
        headers={"content-type": "application/octet-stream"},
    )
    assert_error(r, 400)


def test_truncated_multipart_is_400_and_leaves_nothing(http: httpx.Client, ident: str) -> None:
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="cut.txt"\r\n\r\n'
        b"half of the data"
    )
    r = http.post(
        f"/pools/default/files/upload{q(ident)}",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert_error(r, 400)
    assert "cut.txt" not in listing(http, ident)
