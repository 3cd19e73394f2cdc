"""The zygote launcher's mount namespace: what the host had mounted under the workspaces
directory is gone from it (and only from it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
