"""One real ``sessionpool serve`` (jail backend, an API key) for the whole adversarial suite.

Every case in this package talks to it over HTTP only, as an attacker holding a key would. Pools:

- ``default``: the production template (numpy, pandas, matplotlib, IPython preloaded): the
  positive controls and the *victim* whose latency is measured while attacks run;
- ``tight``: small limits (256 MiB, 64 pids, 0.5 CPU, 16 MiB disk, 4 MiB per file, 64 KiB
  output, 3 s timeout) so that each resource attack reaches its limit in about a second;
- ``other``: a second pool, to show that a name in one pool is a different session in another.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionpool.server.testing import DEFAULT_KEY, ServerProcess
from tests.security.helpers import Api

#: planted in the server's environment and data directory: no session may ever read them
CANARY_ENV = "SP_SECURITY_CANARY"
CANARY = "canary-" + secrets.token_hex(12)
SECOND_KEY = "second-key-" + secrets.token_hex(8)

TIGHT_MEMORY = 256 << 20
TIGHT_PIDS = 64
TIGHT_DISK = 16 << 20
TIGHT_FILE = 4 << 20
TIGHT_OUTPUT = 64 << 10
TIGHT_IMAGE = 1 << 20

CONFIG = f"""
[pools.default]
ready_sessions = 3
max_sessions = 60
execution_timeout_seconds = 30
cooldown_seconds = 600

[pools.tight]
preload = []
ready_sessions = 2
max_sessions = 40
execution_timeout_seconds = 3
interrupt_grace_seconds = 1
cooldown_seconds = 600

[pools.tight.limits]
memory_bytes = {TIGHT_MEMORY}
pids = {TIGHT_PIDS}
cpus = 0.5
open_files = 256
disk_bytes = {TIGHT_DISK}
file_bytes = {TIGHT_FILE}
tmp_bytes = {16 << 20}
output_bytes = {TIGHT_OUTPUT}
image_bytes = {TIGHT_IMAGE}
images_per_execution = 4

[pools.other]
preload = []
ready_sessions = 1
max_sessions = 8
"""


def jail_possible() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not jail_possible():
        pytest.skip("the jail backend needs root (user namespaces with per-session uids)")
    workdir = Path(tmp_path_factory.mktemp("security-server"))
    data = workdir / "data"
    data.mkdir(mode=0o700)
    # a secret beside the workspaces, the way an operator's key file sits there
    (data / "host-secret.txt").write_text(CANARY)
    (data / "host-secret.txt").chmod(0o600)
    # two accepted keys; api_key=None so that ServerProcess does not replace the variable
    srv = ServerProcess(
        workdir,
        config=CONFIG,
        env={CANARY_ENV: CANARY, "SESSIONPOOL_API_KEYS": f"{DEFAULT_KEY},{SECOND_KEY}"},
        api_key=None,
    )
    with srv:
        srv.api_key = DEFAULT_KEY
        yield srv


@pytest.fixture(scope="package")
def api(server: ServerProcess) -> Iterator[Api]:
    with Api(server) as a:
        yield a


@pytest.fixture
def ident(api: Api) -> Iterator[str]:
    """A fresh identifier in the default pool, deleted afterwards."""
    name = f"sec-{uuid.uuid4().hex[:12]}"
    yield name
    api.delete_session(name)


@pytest.fixture
def peer(api: Api) -> Iterator[str]:
    name = f"peer-{uuid.uuid4().hex[:12]}"
    yield name
    api.delete_session(name)


@pytest.fixture
def tight(api: Api) -> Iterator[str]:
    """A fresh identifier in the tight pool, deleted afterwards."""
    name = f"tight-{uuid.uuid4().hex[:12]}"
    yield name
    api.delete_session(name, pool="tight")


@pytest.fixture
def raw(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client with no credentials at all."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
