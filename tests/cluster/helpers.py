"""What the cluster tests ask a gateway, shared by the cluster and client tests."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from sessionpool.server.testing import ServerProcess


def new_ident(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def view(gw: ServerProcess) -> dict[str, Any]:
    """``GET /cluster`` through ``gw``."""
    r = httpx.get(gw.url + "/cluster", headers=gw.auth, timeout=30)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def holder(gw: ServerProcess, ident: str, pool: str = "default") -> str:
    """The node that holds ``ident``, as the directory says through ``gw``."""
    r = httpx.get(
        f"{gw.url}/cluster/pools/{pool}/session",
        params={"identifier": ident},
        headers=gw.auth,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["node_id"])


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
