"""The sans-IO core: requests as Azure's 2025-02-02-preview API expects, answers as Azure sends.

No server: ``httpx.MockTransport`` answers, so these run anywhere and pin the wire contract.
"""

from __future__ import annotations

import json

import httpx
import pytest

from sessionpool import (
    AuthenticationError,
    Client,
    ExecutionTimeout,
    FileTooLarge,
    InvalidRequest,
    NotFound,
    PoolExhausted,
    ServerError,
    SessionLost,
)

AZURE = "https://westus2.dynamicsessions.io/subscriptions/s/resourceGroups/rg/sessionPools/p"


def client_answering(handler: httpx.MockTransport) -> Client:
    return Client(AZURE, api_key=lambda: "tok", http_client=httpx.Client(transport=handler))


def test_execute_request_and_azure_sample_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        # the spec's own example (aca-api.md §1.5)
        return httpx.Response(
            200,
            json={
                "id": "testExecutionId",
                "identifier": "testSessionIdentifier",
                "executionType": "Synchronous",
                "status": "Succeeded",
                "result": {
                    "stdout": "63\n",
                    "stderr": "",
                    "executionResult": "",
                    "executionTimeInMilliseconds": 4,
                },
            },
        )

    res = client_answering(httpx.MockTransport(handler)).session("abc").run("print(7*9)", timeout=5)
    assert (res.stdout, res.text, res.duration, res.execution_id) == (
        "63\n",
        "",
        0.004,
        "testExecutionId",
    )
    (req,) = seen
    assert req.method == "POST"
    assert req.url.path.endswith("/sessionPools/p/executions")
    assert req.url.params["identifier"] == "abc"
    assert req.url.params["api-version"] == "2025-02-02-preview"
    assert req.headers["authorization"] == "Bearer tok"
    assert json.loads(req.content) == {
        "codeInputType": "Inline",
        "executionType": "Synchronous",
        "code": "print(7*9)",
        "timeoutInSeconds": 5,
    }


def test_nested_file_names_go_in_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"data")

    s = client_answering(httpx.MockTransport(handler)).session("abc")
    assert s.download("/mnt/data/a b/c#d.txt") == b"data"
    assert seen[0].url.raw_path.split(b"?")[0].endswith(b"/files/c%23d.txt/content")
    assert seen[0].url.params["path"] == "a b"


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (401, "Unauthorized", AuthenticationError),
        (403, "Forbidden", AuthenticationError),
        (404, "SessionPoolExhausted", PoolExhausted),
        (404, "FileNotFound", NotFound),
        (413, "FileTooLarge", FileTooLarge),
        (413, "DiskQuotaExceeded", FileTooLarge),
        (400, "InvalidIdentifier", InvalidRequest),
        (503, "SessionLost", SessionLost),
        (500, "InternalError", ServerError),
    ],
)
def test_status_maps_to_error(status: int, code: str, error: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            headers={"x-ms-error-code": code},
            json={"error": {"code": code, "message": "the reason"}},
        )

    with pytest.raises(error) as info:
        client_answering(httpx.MockTransport(handler)).session("a").files()
    assert "the reason" in str(info.value)
    assert getattr(info.value, "status", None) == status
    assert getattr(info.value, "code", None) == code


@pytest.mark.parametrize(
    ("code", "error"), [("ExecutionTimeout", ExecutionTimeout), ("SessionLost", SessionLost)]
)
def test_failed_execution_maps_to_error(code: str, error: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "e",
                "status": "Failed",
                "error": {"error": {"code": code, "message": "stopped"}},
                "result": {"stdout": "partial", "stderr": "", "executionResult": ""},
            },
        )

    with pytest.raises(error) as info:
        client_answering(httpx.MockTransport(handler)).session("a").run("x")
    assert info.value.result is not None  # type: ignore[attr-defined]
    assert info.value.result.stdout == "partial"  # type: ignore[attr-defined]
