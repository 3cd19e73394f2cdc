"""HTTP helpers for the adversarial suite: run code, move files, watch another session's latency."""

from __future__ import annotations

import ast
import contextlib
import statistics
import threading
import time
import uuid
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from sessionpool.server.testing import ServerProcess

OLD = "2024-02-02-preview"
NEW = "2025-10-02-preview"

#: session-side helper: ``attempt(fn, *args)`` returns "ok" or the errno name of the OSError
ATTEMPT = """
import errno as _errno, os
def attempt(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return _errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"
"""


def q(ident: str, version: str = OLD, **extra: str) -> str:
    parts = [f"identifier={quote(ident, safe='')}", f"api-version={version}"]
    parts += [f"{k}={quote(v, safe='')}" for k, v in extra.items()]
    return "?" + "&".join(parts)


def code_body(code: str, **props: Any) -> dict[str, Any]:
    return {
        "properties": {
            "codeInputType": "inline",
            "executionType": "synchronous",
            "code": code,
            **props,
        }
    }


def assert_client_error(r: httpx.Response, *statuses: int) -> None:
    """A 4xx in the service's error shape (never a 5xx, never a body-less answer)."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    if statuses:
        assert r.status_code in statuses, (r.status_code, r.text[:500])
    if r.status_code not in (405,):
        body = r.json()
        assert "error" in body and body["error"]["message"], body


class Api:
    """A client holding a valid key."""

    def __init__(self, server: ServerProcess, timeout: float = 60) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, headers=server.auth, timeout=timeout)

    def __enter__(self) -> Api:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.client.close()

    # -- code --------------------------------------------------------------------------------

    def execute_raw(
        self, ident: str, code: str, pool: str = "default", **props: Any
    ) -> httpx.Response:
        return self.client.post(
            f"/pools/{pool}/code/execute{q(ident)}", json=code_body(code, **props)
        )

    def execute(self, ident: str, code: str, pool: str = "default", **props: Any) -> dict[str, Any]:
        r = self.execute_raw(ident, code, pool, **props)
        assert r.status_code == 200, r.text[:2000]
        out: dict[str, Any] = r.json()["properties"]
        return out

    def ok(self, ident: str, code: str, pool: str = "default", **props: Any) -> dict[str, Any]:
        out = self.execute(ident, code, pool, **props)
        assert out["status"] == "Success", out["stderr"][-3000:]
        return out

    def value(self, ident: str, code: str, pool: str = "default", **props: Any) -> Any:
        """The literal value of the cell's last expression."""
        return ast.literal_eval(self.ok(ident, code, pool, **props)["result"])

    def shell(self, ident: str, command: str, pool: str = "default") -> dict[str, Any]:
        r = self.client.post(
            f"/pools/{pool}/executions{q(ident, NEW)}", json={"shellCommand": command}
        )
        assert r.status_code == 200, r.text[:2000]
        out: dict[str, Any] = r.json()
        return out

    # -- files -------------------------------------------------------------------------------

    def upload(
        self, ident: str, name: str, data: bytes, pool: str = "default", path: str | None = None
    ) -> httpx.Response:
        extra = {"path": path} if path is not None else {}
        return self.client.post(
            f"/pools/{pool}/files{q(ident, NEW, **extra)}",
            files={"file": (name, data, "application/octet-stream")},
        )

    def download(self, ident: str, name: str, pool: str = "default") -> httpx.Response:
        return self.client.get(
            f"/pools/{pool}/files/{quote(name, safe='/')}/content{q(ident, NEW)}"
        )

    def download_old(self, ident: str, name: str, pool: str = "default") -> httpx.Response:
        return self.client.get(f"/pools/{pool}/files/content/{quote(name, safe='/')}{q(ident)}")

    def delete(self, ident: str, name: str, pool: str = "default") -> httpx.Response:
        return self.client.delete(f"/pools/{pool}/files/{quote(name, safe='/')}{q(ident, NEW)}")

    def listing(self, ident: str, pool: str = "default", recursive: bool = True) -> list[str]:
        r = self.client.get(f"/pools/{pool}/files{q(ident, NEW, recursive=str(recursive).lower())}")
        assert r.status_code == 200, r.text
        return sorted((f["directory"].rstrip("/") + "/" + f["name"]) for f in r.json()["value"])

    def delete_session(self, ident: str, pool: str = "default") -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.client.delete(f"/pools/{pool}/session{q(ident, NEW)}")


class LatencyProbe:
    """Another session's ``x += 1`` over HTTP, in a loop, while an attack runs.

    ``check()`` asserts that every call succeeded with the next value (the victim's state is
    intact) and that the 99th percentile stayed under ``p99_bound`` seconds.
    """

    def __init__(self, server: ServerProcess, p99_bound: float = 0.25) -> None:
        self.server = server
        self.p99_bound = p99_bound
        self.ident = f"victim-{uuid.uuid4().hex[:10]}"
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._client = httpx.Client(base_url=server.url, headers=server.auth, timeout=30)

    def _call(self, code: str) -> Any:
        r = self._client.post(f"/pools/default/code/execute{q(self.ident)}", json=code_body(code))
        if r.status_code != 200:
            raise AssertionError(f"{r.status_code} {r.text[:300]}")
        props = r.json()["properties"]
        if props["status"] != "Success":
            raise AssertionError(props["stderr"][-300:])
        return ast.literal_eval(props["result"]) if props["result"] else None

    def _loop(self) -> None:
        expected = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                got = self._call("x += 1\nx")
            except Exception as exc:  # recorded, asserted in check()
                self.failures.append(repr(exc))
                continue
            self.latencies.append(time.monotonic() - started)
            expected += 1
            if got != expected:
                self.failures.append(f"state lost: expected {expected}, got {got}")
                expected = got
            time.sleep(0.01)

    def __enter__(self) -> LatencyProbe:
        self._call("x = 0")
        for _ in range(3):  # warm: first calls pay allocation
            self._call("x = 0")
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(60)
        with contextlib.suppress(httpx.HTTPError):
            self._client.delete(f"/pools/default/session{q(self.ident, NEW)}")
        self._client.close()

    def p99(self) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(len(data) * 0.99))]

    def check(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) >= 5, f"the victim answered only {len(self.latencies)} times"
        p99 = self.p99()
        assert p99 < self.p99_bound, (
            f"victim p99 {p99 * 1000:.0f} ms (median "
            f"{statistics.median(self.latencies) * 1000:.0f} ms, n={len(self.latencies)})"
        )
