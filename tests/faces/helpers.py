"""URL and body builders shared by the face tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

OLD = "2024-02-02-preview"
V2410 = "2024-10-02-preview"
V2502 = "2025-02-02-preview"
V2510 = "2025-10-02-preview"


def q(identifier: str, version: str = OLD, **extra: str) -> str:
    """A query string built by hand, as clients do (identifier percent-encoded)."""
    parts = [f"identifier={quote(identifier, safe='')}", f"api-version={version}"]
    parts += [f"{k}={quote(v, safe='/')}" for k, v in extra.items()]
    return "?" + "&".join(parts)


def execute(
    http: httpx.Client, ident: str, code: str, pool: str = "default", **props: Any
) -> dict[str, Any]:
    """POST code/execute (2024-02-02-preview); returns ``properties`` after checking the shape."""
    body = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}
    body["properties"].update(props)
    r = http.post(f"/pools/{pool}/code/execute{q(ident)}", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    props_out: dict[str, Any] = data["properties"]
    assert props_out["status"] in ("Success", "Failure")
    assert isinstance(props_out["stdout"], str)
    assert isinstance(props_out["stderr"], str)
    assert "result" in props_out
    return props_out


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    """A non-2xx answer in the service's error shape."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert r.headers["x-ms-error-code"] == body["error"]["code"]
    if code is not None:
        assert body["error"]["code"] == code
