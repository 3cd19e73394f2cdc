"""Endpoint shapes, query handling, identifiers, pool limits and the error contract."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.faces.conftest import SMALL_FILE_LIMIT
from tests.faces.helpers import V2502, V2510, assert_error, execute, q

pytestmark = pytest.mark.jail

BODY = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": ""}}


def post_code(http: httpx.Client, url: str, code: str) -> httpx.Response:
    return http.post(url, json={"properties": {**BODY["properties"], "code": code}})


def test_every_endpoint_shape_names_the_same_pool(http: httpx.Client, ident: str) -> None:
    execute(http, ident, "shared = 'one session'")
    for base in (
        "/pools/default",
        "/sessionPools/default",
        "/subscriptions/sub/resourceGroups/rg/sessionPools/default",
        "/anything/at/all/sessionPools/default",
    ):
        r = post_code(http, f"{base}/code/execute{q(ident)}", "shared")
        assert r.status_code == 200, (base, r.text)
        assert r.json()["properties"]["result"] == "'one session'"


def test_trailing_and_doubled_slashes(http: httpx.Client, ident: str) -> None:
    for url in (
        f"/pools/default/code/execute/{q(ident)}",
        f"/pools/default//code/execute{q(ident)}",
        f"/subscriptions/s/resourceGroups/rg/sessionPools/default//code/execute/{q(ident)}",
    ):
        r = post_code(http, url, "1")
        assert r.status_code == 200, (url, r.text)


def test_query_parameters_in_any_order(http: httpx.Client, ident: str) -> None:
    url = f"/pools/default/code/execute?api-version=2024-02-02-preview&identifier={ident}"
    assert post_code(http, url, "2").json()["properties"]["result"] == "2"


def test_raw_and_encoded_identifiers_are_the_same_session(http: httpx.Client) -> None:
    raw = f"id|{uuid.uuid4().hex[:8]}:{{x}}[1]@#$"
    encoded = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in raw)
    try:
        # '#' cannot travel raw; everything else may
        half_raw = raw.replace("#", "%23")
        r = post_code(http, f"/pools/default/code/execute?identifier={half_raw}", "v = 5")
        assert r.status_code == 200, r.text
        r = post_code(http, f"/pools/default/code/execute?identifier={encoded}", "v")
        assert r.json()["properties"]["result"] == "5"
        listed = http.get(f"/pools/default/listSessions?api-version={V2502}").json()
        assert raw in [s["identifier"] for s in listed["sessions"]]
    finally:
        http.delete(f"/pools/default/session?identifier={encoded}&api-version={V2510}")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "MissingIdentifier"),
        ("?identifier=", "MissingIdentifier"),
        ("?identifier=" + "a" * 257, "InvalidIdentifier"),
        ("?identifier=has%20space", "InvalidIdentifier"),
        ("?identifier=back%5Cslash", "InvalidIdentifier"),
        ("?identifier=ctl%01char", "InvalidIdentifier"),
        ("?identifier=caf%C3%A9", "InvalidIdentifier"),
    ],
)
def test_bad_identifiers_are_400(http: httpx.Client, query: str, code: str) -> None:
    assert_error(post_code(http, f"/pools/default/code/execute{query}", "1"), 400, code)
    assert_error(http.get(f"/pools/default/files{query}"), 400, code)


def test_longest_identifier_is_accepted(http: httpx.Client) -> None:
    ident = "L" * 256
    try:
        assert (
            post_code(http, f"/pools/default/code/execute?identifier={ident}", "1").status_code
            == 200
        )
    finally:
        http.delete(f"/pools/default/session?identifier={ident}&api-version={V2510}")


def test_bad_api_version_is_400(http: httpx.Client, ident: str) -> None:
    r = post_code(http, f"/pools/default/code/execute?identifier={ident}&api-version=latest", "1")
    assert_error(r, 400, "UnsupportedApiVersion")


def test_unknown_pool_is_404(http: httpx.Client, ident: str) -> None:
    assert_error(post_code(http, f"/pools/nope/code/execute{q(ident)}", "1"), 404, "PoolNotFound")
    r = http.get(f"/subscriptions/s/resourceGroups/rg/sessionPools/nope/files{q(ident)}")
    assert_error(r, 404, "PoolNotFound")


def test_unknown_operation_and_method(http: httpx.Client, ident: str) -> None:
    assert_error(http.get(f"/pools/default/frobnicate{q(ident)}"), 404, "NotFound")
    assert_error(http.get(f"/pools/default/code/execute{q(ident)}"), 405, "MethodNotAllowed")


def test_json_body_size_limit(http: httpx.Client, ident: str) -> None:
    big = "#" + "x" * (17 * 1024 * 1024)
    assert_error(post_code(http, f"/pools/default/code/execute{q(ident)}", big), 413)


# --- pool limits -------------------------------------------------------------------------------


def test_exhausted_pool_answers_404_and_harms_no_session(http: httpx.Client) -> None:
    ids = [f"tiny-{uuid.uuid4()}" for _ in range(3)]
    try:
        for ident in ids[:2]:
            execute(http, ident, f"name = {ident!r}", pool="tiny")
        r = post_code(http, f"/pools/tiny/code/execute{q(ids[2])}", "1")
        assert_error(r, 404, "SessionPoolExhausted")
        assert "max_sessions" in r.json()["error"]["message"]
        for ident in ids[:2]:
            assert execute(http, ident, "name", pool="tiny")["result"] == repr(ident)
        http.delete(f"/pools/tiny/session{q(ids[0], V2510)}")
        assert execute(http, ids[2], "'room again'", pool="tiny")["result"] == "'room again'"
    finally:
        for ident in ids:
            http.delete(f"/pools/tiny/session{q(ident, V2510)}")


def _upload(http: httpx.Client, ident: str, name: str, data: bytes) -> httpx.Response:
    return http.post(f"/pools/small/files/upload{q(ident)}", files={"file": (name, data)})


def _names(http: httpx.Client, ident: str) -> list[str]:
    body = http.get(f"/pools/small/files{q(ident, V2502, recursive='true')}").json()
    return [f["name"] for f in body["value"]]


@pytest.fixture
def small_ident(http: httpx.Client) -> Iterator[str]:
    ident = f"small-{uuid.uuid4()}"
    yield ident
    http.delete(f"/pools/small/session{q(ident, V2510)}")


def test_upload_at_the_limit_is_accepted(http: httpx.Client, small_ident: str) -> None:
    r = _upload(http, small_ident, "exact.bin", b"e" * SMALL_FILE_LIMIT)
    assert r.status_code == 200, r.text
    assert r.json()["value"][0]["properties"]["size"] == SMALL_FILE_LIMIT


def test_upload_past_the_limit_is_413_and_leaves_nothing(
    http: httpx.Client, small_ident: str
) -> None:
    assert _upload(http, small_ident, "keep.bin", b"old").status_code == 200
    r = _upload(http, small_ident, "big.bin", b"b" * (SMALL_FILE_LIMIT + 1))
    assert_error(r, 413, "FileTooLarge")
    # an oversized replacement leaves the existing file as it was
    assert_error(_upload(http, small_ident, "keep.bin", b"n" * (SMALL_FILE_LIMIT * 3)), 413)
    assert _names(http, small_ident) == ["keep.bin"]
    assert http.get(f"/pools/small/files/content/keep.bin{q(small_ident)}").content == b"old"
    # nothing hidden either: the session sees only the kept file
    r = post_code(
        http, f"/pools/small/code/execute{q(small_ident)}", "import os\nos.listdir('/mnt/data')"
    )
    assert r.json()["properties"]["result"] == "['keep.bin']"


def test_chunked_upload_past_the_limit_is_413(http: httpx.Client, small_ident: str) -> None:
    def body() -> Iterator[bytes]:
        yield b'--x1\r\nContent-Disposition: form-data; name="file"; filename="c.bin"\r\n\r\n'
        for _ in range(40):
            yield b"c" * 8192
        yield b"\r\n--x1--\r\n"

    r = http.post(
        f"/pools/small/files/upload{q(small_ident)}",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=x1"},
    )
    assert_error(r, 413, "FileTooLarge")
    assert _names(http, small_ident) == []


def test_declared_huge_upload_is_refused_before_reading(
    server: ServerProcess, small_ident: str
) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST /pools/small/files{q(small_ident, V2502)} HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {server.api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {10**12}\r\n\r\n--x\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), reply
    assert b"x-ms-error-code: FileTooLarge" in rest


def test_keep_alive_round_trips_do_not_wait_for_delayed_acks(http: httpx.Client) -> None:
    """Without TCP_NODELAY on accepted sockets every response stalls about 40 ms."""
    times = []
    for _ in range(21):
        started = time.perf_counter()
        assert http.get("/healthz").status_code == 200
        times.append(time.perf_counter() - started)
    assert sorted(times)[10] < 0.02
