"""What a session's listing reads of its use: CPU time from /proc where cgroup v1 keeps no CPU
count for it (cpuacct mounted apart), memory and CPU from the cgroups where it does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sessionpool.sandbox.cgroups import Cgroups, process_cpu_seconds


def test_a_process_cpu_time_counts_itself_and_its_waited_children() -> None:
    before = process_cpu_seconds(os.getpid())
    assert before is not None and before > 0
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass",
        ],
        check=True,
    )
    after = process_cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.25
    assert process_cpu_seconds(2**22 + 12345) is None  # no such process


def test_cgroup_usage_files_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "s1").mkdir(parents=True)
    (v2 / "s1" / "memory.current").write_text("1048576\n")
    (v2 / "s1" / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert Cgroups(2, {"": v2}).usage("s1") == (1048576, 2.5)
    assert Cgroups(2, {"": v2}).usage("gone") == (None, None)
    mem, cpu = tmp_path / "memory", tmp_path / "cpu"
    (mem / "s1").mkdir(parents=True)
    (cpu / "s1").mkdir(parents=True)
    (mem / "s1" / "memory.usage_in_bytes").write_text("4096\n")
    v1 = Cgroups(1, {"memory": mem, "cpu": cpu, "pids": tmp_path / "pids"})
    assert v1.usage("s1") == (4096, None)  # cpuacct is not beside cpu here
    (cpu / "s1" / "cpuacct.usage").write_text(str(int(1.5e9)))
    assert v1.usage("s1") == (4096, 1.5)
