"""One real server for the face tests: a child process with jailed sessions on loopback.

Pools: ``default`` (production template), ``small`` (a 64 KiB upload limit, for 413 tests) and
``tiny`` (two sessions at most, for exhaustion). ``small`` and ``tiny`` preload nothing, so they
start fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionpool.server.testing import ServerProcess

SMALL_FILE_LIMIT = 64 * 1024

CONFIG = f"""
[pools.default]
ready_sessions = 2
max_sessions = 40
execution_timeout_seconds = 30

[pools.small]
preload = []
ready_sessions = 1
max_sessions = 8

[pools.small.limits]
file_bytes = {SMALL_FILE_LIMIT}

[pools.tiny]
preload = []
ready_sessions = 1
max_sessions = 2
"""


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = Path(tmp_path_factory.mktemp("faces-server"))
    with ServerProcess(workdir, config=CONFIG) as srv:
        yield srv


@pytest.fixture(scope="package")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as client:
        yield client


@pytest.fixture
def ident(http: httpx.Client) -> Iterator[str]:
    """A fresh session identifier in the default pool, deleted after the test."""
    name = f"t-{uuid.uuid4()}"
    yield name
    http.delete(
        "/pools/default/session", params={"identifier": name, "api-version": "2025-10-02-preview"}
    )
