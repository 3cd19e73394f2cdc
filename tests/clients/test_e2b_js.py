"""The E2B JavaScript SDKs from npm (``@e2b/code-interpreter`` 2.8.0 on ``e2b`` 2.51.0),
unmodified, with Node.js: ``tests/clients/e2b_js/run.mjs`` runs code, files and commands in a
sessionpool sandbox and prints what it saw. ``make install`` installs the packages from the
lock file (``npm ci``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

HERE = Path(__file__).resolve().parent / "e2b_js"
CONFIG = """
[pools.default]
ready_sessions = 1
max_sessions = 8
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if os.geteuid() != 0:
        pytest.skip("the jail backend needs root")
    if shutil.which("node") is None:
        pytest.skip("no Node.js on this machine (make install puts Debian's there)")
    if not (HERE / "node_modules" / "@e2b" / "code-interpreter").is_dir():
        pytest.skip("the E2B JS SDKs are not installed: make install runs npm ci in " + str(HERE))
    with ServerProcess(Path(tmp_path_factory.mktemp("e2b-js")), config=CONFIG) as srv:
        yield srv


def test_the_js_sdk_runs_code_files_and_commands(server: ServerProcess) -> None:
    _, key = KeyStore(server.data_dir / "keys.json").create("js", e2b=True)
    env = {
        **os.environ,
        "E2B_API_URL": server.url,
        "E2B_SANDBOX_URL": server.url,
        "E2B_API_KEY": key,
    }
    done = subprocess.run(
        ["node", "run.mjs"], cwd=HERE, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["result"] == "42"
    assert seen["errorName"] == "ZeroDivisionError"
    assert "streamed" in seen["stdout"]
    assert seen["read"] == "hello from js"
    assert seen["listed"] == ["hello.txt"]
    assert seen["cmdStdout"] == "13" and seen["cmdExit"] == 0
    assert seen["failedExit"] == 7
    assert seen["inList"] is True
    assert seen["runningAfterKill"] is False
