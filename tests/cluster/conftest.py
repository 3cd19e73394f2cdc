"""A real Ray cluster on this machine (head + 3 nodes, each its own raylet, all on 127.0.0.1)
and two sessionpool gateways in cluster mode over it, started once for the cluster tests; for
the client tests, an https gateway and one with the agents faces on, started when asked for.

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
from tests.agents.scripted_model import ScriptedModel

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


@pytest.fixture(scope="package")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sessionpool.cluster.testing import LocalCluster, unmount_under

    cluster = LocalCluster(nodes=3)
    try:
        yield cluster
    finally:
        cluster.shutdown()
        # the killed node engines' session workspaces, under the gateways' data directories:
        # left mounted, they would slow every later jail (each copies the mount table)
        for nodes in tmp_path_factory.getbasetemp().glob("gateway-*/data/nodes"):
            unmount_under(nodes)


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


@pytest.fixture(scope="package")
def gateways(
    ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two gateways of the same cluster: either may answer any request."""
    with gateway(tmp_path_factory.mktemp("gateway-a"), ray_cluster.address) as a:
        wait_for_nodes(a, 3)
        with gateway(tmp_path_factory.mktemp("gateway-b"), ray_cluster.address) as b:
            wait_for_nodes(b, 3)
            yield a, b


# --- more gateways of the same cluster, for the clients (tests/cluster/test_clients.py) ----------


@pytest.fixture(scope="package")
def tls_gateway(
    gateways: tuple[ServerProcess, ServerProcess],
    ray_cluster: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A third gateway over https (``--tls-self-signed``), for Semantic Kernel; it comes after
    ``gateways``, so the node engines are up and the directory has its pools."""
    workdir = tmp_path_factory.mktemp("gateway-tls")
    args = ["--cluster", ray_cluster.address, "--tls-self-signed", str(workdir / "tls")]
    with ServerProcess(
        workdir, config=CONFIG, args=args, startup_timeout=ENGINES_UP_SECONDS
    ) as server:
        assert server.url.startswith("https://"), server.url
        yield server


@pytest.fixture(scope="package")
def tls_gateway_ca(tls_gateway: ServerProcess) -> str:
    """The CA (PEM) that signed the https gateway's certificate."""
    from sessionpool.server.tls import CA_CERT

    return str(tls_gateway.workdir / "tls" / CA_CERT)


def agents_cluster_config(model_url: str) -> str:
    """CONFIG (pools and [cluster]) plus an ``[agents]`` table on the scripted model."""
    return (
        CONFIG
        + f"""
[agents]
model_base_url = "{model_url}"
default_model = "scripted-chart"
max_steps = 4
model_timeout_seconds = 5
"""
    )


@pytest.fixture(scope="package")
def agents_gateway(
    gateways: tuple[ServerProcess, ServerProcess],
    ray_cluster: Any,
    scripted_model: ScriptedModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A gateway with the agents faces on (SQLite in its data_dir), its model the scripted
    chat-completions server on loopback; containers are sessions of the cluster's ``default``."""
    with ServerProcess(
        tmp_path_factory.mktemp("gateway-agents"),
        config=agents_cluster_config(scripted_model.url),
        args=["--cluster", ray_cluster.address],
        startup_timeout=ENGINES_UP_SECONDS,
    ) as server:
        yield server
