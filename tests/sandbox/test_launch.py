"""The zygote launcher: what the host had mounted under the workspaces directory is gone from
its mount namespace (and only from it), and the kernel it installs is the server's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

import sessionpool
from sessionpool.sandbox.runtimes import KERNEL_LIB
from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

CHILD = """
import os, sys
from sessionpool.sandbox import launch, linux
base, ws = sys.argv[1], sys.argv[2]
linux.unshare(linux.CLONE_NEWNS)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
linux.mount("tmpfs", ws, "tmpfs")
before = os.path.ismount(ws)
launch.drop_mounts_under(base)
print(before, os.path.ismount(ws))
"""


def test_workspaces_are_unmounted_in_the_launchers_namespace(tmp_path: Path) -> None:
    """A path with spaces too (mountinfo escapes them); the host's own mount stays."""
    base = tmp_path / "data dir" / "workspaces"
    ws = base / "a b"
    ws.mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(base), str(ws)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["True", "False"]
    assert not os.path.ismount(ws)  # the child's mount never reached the host


def test_sessions_run_the_kernel_of_the_servers_own_package(tmp_path: Path) -> None:
    """A server run from another tree (a copy on ``PYTHONPATH``, as the paired benchmark runs
    two builds) gives its sessions that tree's kernel, not the installed one: the launcher runs
    isolated (``-I``) and so imports the installed package itself."""
    copy = tmp_path / "tree"
    shutil.copytree(
        Path(sessionpool.__file__).parent,
        copy / "sessionpool",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    marker = f"# tree {uuid.uuid4().hex}\n"
    with (copy / "sessionpool" / "kernel" / "main.py").open("a") as f:
        f.write(marker)
    server = ServerProcess(
        tmp_path / "server",
        config="[pools.default]\nready_sessions = 1\n",
        env={"PYTHONPATH": str(copy)},
    )
    server.start()
    try:
        code = f"open('{KERNEL_LIB}/sessionpool/kernel/main.py').read()[-100:]"
        answer = httpx.post(
            f"{server.endpoint()}/code/execute",
            params={"identifier": "tree", "api-version": "2024-02-02-preview"},
            json={
                "properties": {
                    "codeInputType": "inline",
                    "executionType": "synchronous",
                    "code": code,
                }
            },
            headers=server.auth,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert marker.strip() in str(answer.json()["properties"]), answer.text
    finally:
        server.stop()
