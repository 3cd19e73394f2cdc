"""Real servers for the client conformance tests: jailed sessions on loopback.

``server`` speaks plain http (llama-index, LangChain, AutoGen accept it); ``tls_server`` serves
https with ``--tls-self-signed`` for Semantic Kernel, which refuses anything but https. Both are
started once per test run, and only when a test asks for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sessionpool.server.testing import ServerProcess
from sessionpool.server.tls import CA_CERT

CONFIG = """
[pools.default]
ready_sessions = 2
max_sessions = 40
execution_timeout_seconds = 60

[pools.js]
runtime = "node"
ready_sessions = 1
max_sessions = 8
"""

WRONG_KEY = "not-the-key-at-all"

T = TypeVar("T")

#: what the client libraries warn about on import (their dependencies' deprecations, not ours)
CLIENT_WARNINGS = [
    pytest.mark.filterwarnings(
        "ignore:This class will be removed in a future version:DeprecationWarning:abc"
    ),
    pytest.mark.filterwarnings(
        "ignore:The 'validate_default' attribute with value True"
        ":pydantic.warnings.UnsupportedFieldAttributeWarning:pydantic._internal._generate_schema"
    ),
]
LANGCHAIN_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:langchain-azure-dynamic-sessions is deprecated:DeprecationWarning"
)


def ignores_aiohttp_leak(test: T) -> T:
    """For a test that collects the aiohttp connection AutoGen's executor can leave unreleased
    (a leak in the client library): the collector's report then stays inside that test."""
    marks = [
        pytest.mark.filterwarnings("ignore:Unclosed connection:ResourceWarning"),
        pytest.mark.filterwarnings(
            "ignore:Exception ignored in. <function Connection.__del__"
            ":pytest.PytestUnraisableExceptionWarning"
        ),
    ]
    for mark in marks:
        test = mark(test)
    return test


# a PNG from matplotlib: the image path the clients know (``result`` becomes an image dict)
PLOT = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [3, 1, 2])
plt.show()
"""

# bytes that break text-mode handling: NUL, CR/LF, invalid UTF-8, high bytes
PAYLOAD = bytes(range(256)) * 16 + b"\r\n\x00\xff\xfe end"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(Path(tmp_path_factory.mktemp("clients-http")), config=CONFIG) as srv:
        yield srv


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = Path(tmp_path_factory.mktemp("clients-https"))
    args = ["--tls-self-signed", str(workdir / "tls")]
    with ServerProcess(workdir, config=CONFIG, args=args) as srv:
        assert srv.url.startswith("https://")
        yield srv


@pytest.fixture(scope="session")
def ca_pem(tls_server: ServerProcess) -> str:
    return str(tls_server.workdir / "tls" / CA_CERT)


@pytest.fixture
def session_id() -> str:
    return f"client-{uuid.uuid4()}"
