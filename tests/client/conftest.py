"""One real server for the client SDK and CLI tests: jailed sessions on loopback.

Pools: ``default`` (short execution limit so timeout tests are quick) and ``small`` (a 64 KiB
upload limit and two sessions at most, for 413 and exhaustion).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionpool import Client, Session
from sessionpool.server.testing import ServerProcess

SMALL_FILE_LIMIT = 64 * 1024

CONFIG = f"""
[pools.default]
ready_sessions = 2
max_sessions = 40
execution_timeout_seconds = 20

[pools.small]
preload = []
ready_sessions = 1
max_sessions = 2

[pools.small.limits]
file_bytes = {SMALL_FILE_LIMIT}
"""

PLOT = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [3, 1, 2])
plt.show()
"""

PAYLOAD = bytes(range(256)) * 16 + b"\r\n\x00\xff\xfe end"


@pytest.fixture(scope="session")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(Path(tmp_path_factory.mktemp("sdk-server")), config=CONFIG) as srv:
        yield srv


@pytest.fixture
def client(sdk_server: ServerProcess) -> Iterator[Client]:
    with Client(sdk_server.endpoint(), api_key=sdk_server.api_key) as c:
        yield c


@pytest.fixture
def session(client: Client) -> Iterator[Session]:
    with client.session(f"sdk-{uuid.uuid4()}") as s:
        yield s
