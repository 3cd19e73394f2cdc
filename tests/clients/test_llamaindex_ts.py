"""LlamaIndex TS's ``AzureDynamicSessionTool`` (``@llamaindex/azure`` 0.2.1 from npm, deprecated
but published, locked in ``tests/clients/llamaindex_ts``), unmodified, with Node.js:
``llamaindex_ts/run.mjs`` runs code, an image, files up, listed and down, and prints what it saw.

The tool speaks the first preview: ``POST python/execute`` with ``pythonCode`` in a
``properties`` envelope, reading ``result``, ``stdout`` and ``stderr`` flat at the top level of
the answer (an image ``result`` it writes under ``tool-output/``); ``files/upload`` (it reads
``value[0].properties``), ``files/content/<name>``, ``files``. ``make install`` installs the
package from the lock file (``npm ci --ignore-scripts``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

HERE = Path(__file__).resolve().parent / "llamaindex_ts"


def test_the_ts_tool_runs_code_images_and_files(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    if shutil.which("node") is None:
        pytest.skip("no Node.js on this machine (make install puts Debian's there)")
    if not (HERE / "node_modules" / "@llamaindex" / "azure").is_dir():
        pytest.skip("@llamaindex/azure is not installed: make install runs npm ci in " + str(HERE))
    env = {
        **os.environ,
        "AZURE_POOL_MANAGEMENT_ENDPOINT": server.endpoint(),
        "SP_TOKEN": server.api_key or "",
        "SP_SESSION": session_id,
    }
    done = subprocess.run(
        ["node", str(HERE / "run.mjs")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["sum"] == {"result": "12", "stdout": "3\n", "stderr": "", "status": "Success"}
    assert seen["failed"]["status"] == "Failure" and seen["failed"]["result"] == ""
    assert "IndexError" in seen["failed"]["stderr"]
    # the image: saved as a PNG under tool-output/ (the path it answers repeats the file name:
    # the client joins the saved file's path with its name again)
    ((name, magic),) = seen["saved"]
    assert name.endswith(".png") and magic == b"\x89PNG".hex()
    assert seen["plotResult"].startswith(f"tool-output/{name}")
    assert (tmp_path / "tool-output" / name).read_bytes().startswith(b"\x89PNG")
    csv = "region,revenue\nnorth,120\nsouth,80\n"
    assert seen["uploaded"]["filename"] == "sales.csv" and seen["uploaded"]["size"] == len(csv)
    assert seen["listed"] == [["sales.csv", len(csv)]]
    assert seen["downloaded"] == csv
    assert seen["lines"] == "3"
