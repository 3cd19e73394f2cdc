"""Auth and hostile input: each gets the right 4xx in the error shape, never a 5xx, never a hang."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.security.helpers import NEW, OLD, Api, LatencyProbe, assert_client_error, code_body, q

pytestmark = pytest.mark.jail

ROUTES = [
    ("POST", "/pools/default/code/execute"),
    ("POST", "/pools/default/executions"),
    ("GET", "/pools/default/executions/x"),
    ("POST", "/pools/default/files/upload"),
    ("POST", "/pools/default/files"),
    ("GET", "/pools/default/files"),
    ("GET", "/pools/default/files/a.txt/content"),
    ("DELETE", "/pools/default/files/a.txt"),
    ("GET", "/pools/default/session"),
    ("DELETE", "/pools/default/session"),
    ("GET", "/pools/default/listSessions"),
    ("GET", "/pools/default/metadata"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"api-key": "wrong-key"},
        {"Authorization": "Basic dGVzdDp0ZXN0"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer test-key-0123456789x"},
        {"Authorization": "Bearer test-key-012345678"},
        {"api-key": "test-key-0123456789\x00"},
    ],
    ids=[
        "none",
        "wrong-bearer",
        "wrong-api-key",
        "basic",
        "empty",
        "key-plus-one",
        "key-prefix",
        "key-nul",
    ],
)
def test_every_route_refuses_a_missing_or_wrong_key(
    raw: httpx.Client, headers: dict[str, str]
) -> None:
    for method, path in ROUTES:
        try:
            r = raw.request(method, path + q("auth-probe", NEW), headers=headers)
        except httpx.LocalProtocolError:
            return  # the client refuses to send this header at all
        assert r.status_code == 401, (method, path, r.status_code)
        assert "auth-probe" not in r.text


def test_unauthenticated_requests_create_no_session(api: Api, raw: httpx.Client) -> None:
    raw.post(f"/pools/default/code/execute{q('ghost')}", json=code_body("1"))
    r = api.client.get(f"/pools/default/session{q('ghost', NEW)}")
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b'{"properties": {"code": 123}}', "application/json"),
        (b'{"properties": []}', "application/json"),
        (b'{"properties": {"code": "1", "timeoutInSeconds": -5}}', "application/json"),
        (b'{"properties": {"code": "1", "timeoutInSeconds": "soon"}}', "application/json"),
        (b'{"properties": {"code": "1", "codeInputType": "python2"}}', "application/json"),
        (b'{"properties": {"code": "!!!", "codeInputType": "inlineBase64"}}', "application/json"),
        (b'{"properties": {"code": "\xff\xfe"}}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"properties": {"code": "1"}}', "text/plain"),
    ],
    ids=range(13),
)
def test_malformed_execute_bodies(api: Api, body: bytes, ctype: str) -> None:
    r = api.client.post(
        f"/pools/default/code/execute{q('malformed')}",
        content=body,
        headers={"content-type": ctype},
    )
    if r.status_code == 200:  # a lenient content type is fine; a crash is not
        return
    assert_client_error(r, 400)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"code": "1", "shellCommand": "true"},
        {"code": None},
        {"code": "1", "outputStreamsMaxLength": -1},
        {"shellCommand": 5},
    ],
    ids=range(5),
)
def test_malformed_executions_bodies(api: Api, body: dict[str, object]) -> None:
    r = api.client.post(f"/pools/default/executions{q('malformed', NEW)}", json=body)
    assert_client_error(r, 400)


def test_a_huge_body_is_refused_without_being_buffered(api: Api) -> None:
    big = b'{"properties": {"code": "' + b"#" * (20 << 20) + b'"}}'
    started = time.monotonic()
    r = api.client.post(
        f"/pools/default/code/execute{q('huge')}",
        content=big,
        headers={"content-type": "application/json"},
    )
    assert_client_error(r, 413)
    assert time.monotonic() - started < 10


def test_a_huge_chunked_body_is_cut_off(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"properties": {"code": "'
        for _ in range(40):
            yield b"#" * (1 << 20)
        yield b'"}}'

    r = api.client.post(
        f"/pools/default/code/execute{q('huge')}",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert_client_error(r, 413)


@pytest.mark.parametrize(
    "ident",
    ["", "x" * 257, "a b", "tab\there", "new\nline", "\x01ctl", "é", "\u202e"],
    ids=["empty", "too-long", "space", "tab", "newline", "control", "accent", "rtl"],
)
def test_invalid_identifiers(api: Api, ident: str) -> None:
    r = api.client.post(f"/pools/default/code/execute{q(ident)}", json=code_body("1"))
    assert_client_error(r, 400)
    r = api.client.get(f"/pools/default/files{q(ident, NEW)}")
    assert_client_error(r, 400)


def test_missing_identifier(api: Api) -> None:
    r = api.client.post(f"/pools/default/code/execute?api-version={OLD}", json=code_body("1"))
    assert_client_error(r, 400)


@pytest.mark.parametrize("version", ["2099-01-01", "latest", "", "2024-02-02-preview'--"])
def test_unknown_api_version(api: Api, version: str) -> None:
    r = api.client.post(
        f"/pools/default/code/execute?identifier=v&api-version={version}", json=code_body("1")
    )
    if version in ("", "2099-01-01"):
        # an empty version means the default; a well-formed future date is served leniently
        # by the newest family it can mean (forward compatibility): either way never a 5xx
        assert r.status_code in (200, 400), r.text
        return
    assert_client_error(r, 400)


@pytest.mark.parametrize("pool", ["nope", "a" * 100, "..", "%2e%2e", "default%00"])
def test_unknown_pool(api: Api, pool: str) -> None:
    r = api.client.post(f"/pools/{pool}/code/execute{q('p')}", json=code_body("1"))
    assert_client_error(r, 400, 404)


def test_unknown_routes_and_methods(api: Api) -> None:
    assert api.client.get("/pools/default/nothing-here").status_code == 404
    assert api.client.put(f"/pools/default/code/execute{q('m')}").status_code in (404, 405)
    assert api.client.get("/../../etc/passwd").status_code == 404
    assert api.client.get(f"/pools/default/listSessions{q('s', NEW, skip='-1')}").status_code == 400


def test_bad_multipart_uploads(api: Api) -> None:
    cases = [
        (b"garbage", "multipart/form-data; boundary=x"),
        (
            b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nno name\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
        ),
        (
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\ncut',
            "multipart/form-data; boundary=x",
        ),
        (b"plain", "text/plain"),
        (b"", "multipart/form-data"),
    ]
    for body, ctype in cases:
        r = api.client.post(
            f"/pools/default/files{q('mp', NEW)}", content=body, headers={"content-type": ctype}
        )
        assert_client_error(r, 400, 413)
    api.delete_session("mp")


def _slow_connection(url: str, body_declared: int) -> socket.socket:
    parsed = urlparse(url)
    assert parsed.port is not None
    s = socket.create_connection((parsed.hostname, parsed.port), timeout=5)
    s.sendall(
        (
            f"POST /pools/default/code/execute{q('slowloris')} HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Bearer test-key-0123456789\r\n"
            f"Content-Type: application/json\r\nContent-Length: {body_declared}\r\n\r\n"
        ).encode()
    )
    return s


def test_slowloris_does_not_starve_other_clients(server: ServerProcess) -> None:
    """Fifty connections trickling their bodies a byte at a time, plus fifty that send only
    half a header: the server keeps answering other sessions within the usual latency."""
    parsed = urlparse(server.url)
    assert parsed.port is not None
    conns = [_slow_connection(server.url, 1000) for _ in range(50)]
    half = []
    for _ in range(50):
        s = socket.create_connection((parsed.hostname, parsed.port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        half.append(s)
    try:
        with LatencyProbe(server, 0.25) as probe:
            for _ in range(10):
                for s in conns:
                    s.sendall(b" ")
                time.sleep(0.2)
            probe.check()
        with httpx.Client(timeout=5) as c:
            assert c.get(server.url + "/healthz").status_code == 200
    finally:
        for s in conns + half:
            s.close()


def test_a_slow_body_that_never_finishes_does_not_hang_a_session(
    api: Api, server: ServerProcess
) -> None:
    """A body that stops halfway: the client's own bounded wait ends it; the session named in
    it stays usable for everyone else."""
    s = _slow_connection(server.url, 1000)
    s.sendall(b'{"properties": {"code": "1"')
    s.settimeout(2)
    try:
        with pytest.raises(TimeoutError):
            s.recv(100)  # the server is (correctly) still waiting for the declared body
        r = api.client.post(f"/pools/default/code/execute{q('slowloris')}", json=code_body("7"))
        assert r.status_code == 200 and r.json()["properties"]["result"] == "7"
    finally:
        s.close()
        api.delete_session("slowloris")


def test_many_connections_at_once_are_served(server: ServerProcess) -> None:
    conns = []
    parsed = urlparse(server.url)
    assert parsed.port is not None
    try:
        for _ in range(300):
            conns.append(socket.create_connection((parsed.hostname, parsed.port), timeout=5))
        with httpx.Client(timeout=10) as c:
            assert c.get(server.url + "/healthz").status_code == 200
    finally:
        for s in conns:
            s.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"content-length": "-1"},
        {"content-length": "99999999999999999999"},
        {"transfer-encoding": "chunked", "content-length": "5"},
    ],
    ids=["negative", "enormous", "both"],
)
def test_malformed_framing_headers(server: ServerProcess, headers: dict[str, str]) -> None:
    parsed = urlparse(server.url)
    assert parsed.port is not None
    s = socket.create_connection((parsed.hostname, parsed.port), timeout=5)
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(
            (
                f"POST /pools/default/code/execute{q('framing')} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer test-key-0123456789\r\n{extra}\r\n0\r\n\r\n"
            ).encode()
        )
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
                if b"\r\n\r\n" in data:
                    break
        except TimeoutError:
            pass
        if data:
            status = int(data.split(b" ", 2)[1])
            assert 400 <= status < 500, data[:200]
    finally:
        s.close()
