"""A real Ray cluster on this machine (head + 3 nodes, each its own raylet, all on 127.0.0.1)
and two sessionpool gateways in cluster mode over it, started once for the cluster tests.

The node engines are Ray actors running the jail backend, so these tests need root like the
other jail tests; the gateways are real ``serve --cluster`` processes on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

#: small pools: three nodes' engines share two cores with the gateways and the tests
CONFIG = """
[pools.default]
ready_sessions = 2
max_sessions = 60
execution_timeout_seconds = 60
cooldown_seconds = 600

[pools.small]
ready_sessions = 1
max_sessions = 5
cooldown_seconds = 600

[cluster]
node_ip_address = "127.0.0.1"
poll_seconds = 0.25
"""

#: every node engine forks its zygotes and warms its pools: give a loaded machine its time
ENGINES_UP_SECONDS = 180.0


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    from sessionpool.cluster.testing import LocalCluster

    cluster = LocalCluster(nodes=3)
    try:
        yield cluster
    finally:
        cluster.shutdown()


def wait_for_nodes(
    server: ServerProcess, count: int, timeout: float = ENGINES_UP_SECONDS
) -> dict[str, Any]:
    """The cluster view once ``count`` node engines are active (fails with the last view)."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = httpx.get(server.url + "/cluster", headers=server.auth, timeout=30)
        if r.status_code == 200:
            view = r.json()
            active = [n for n in view["nodes"] if n["state"] == "active"]
            if len(active) == count:
                return view
        time.sleep(0.25)
    raise AssertionError(f"{count} active node engines expected; the last view: {view}")


def gateway(workdir: Path, address: str) -> ServerProcess:
    return ServerProcess(
        workdir, config=CONFIG, args=["--cluster", address], startup_timeout=ENGINES_UP_SECONDS
    )


@pytest.fixture(scope="session")
def gateways(
    ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two gateways of the same cluster: either may answer any request."""
    with gateway(tmp_path_factory.mktemp("gateway-a"), ray_cluster.address) as a:
        wait_for_nodes(a, 3)
        with gateway(tmp_path_factory.mktemp("gateway-b"), ray_cluster.address) as b:
            wait_for_nodes(b, 3)
            yield a, b
