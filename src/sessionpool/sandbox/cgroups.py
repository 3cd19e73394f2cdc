"""Per-session memory, pids and cpu cgroups on cgroup v1 or v2 hosts.

Groups are created under the server's own cgroup (``sessionpool-<server pid>/<session>``), so
an operator's limits on the server also bound its sessions. Attaching a process to a v1 cgroup
is slow and spiky (10 ms median, 30 ms p99 measured), so the pool does it at refill time, off
the allocation path, in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


@dataclass
class CgroupLimits:
    memory_bytes: int
    pids: int
    cpus: float


def _own_paths() -> dict[str, str]:
    """Map controller name (or "" for the v2 unified hierarchy) to our cgroup path."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(",") if names else [""]:
                paths[name] = path
    return paths


def _sweep_stale(parent: Path, tag: str) -> None:
    """Remove the trees of servers that died without cleaning up (SIGKILL, OOM, power loss).

    Trees are named ``sessionpool-<pid>-<random>``; one whose server pid no longer exists is
    removed, leaves first. rmdir refuses a group that still holds a process, so a tree still in
    use (a pid reused by a live server) is never harmed.
    """
    prefix = tag.split("-", 1)[0] + "-"
    with contextlib.suppress(OSError):
        for tree in parent.iterdir():
            if not tree.name.startswith(prefix) or tree.name == tag or not tree.is_dir():
                continue
            pid = tree.name[len(prefix) :].split("-", 1)[0]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            for child in tree.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        os.rmdir(child)
            with contextlib.suppress(OSError):
                os.rmdir(tree)


class Cgroups:
    """Creates, fills and removes per-session cgroups. ``version`` is 1 or 2."""

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self.bases = bases  # controller -> our parent directory (v2: a single "" entry)

    @classmethod
    def detect(cls, tag: str) -> Cgroups:
        """Find usable controllers; raise OSError naming what is missing."""
        own = _own_paths()
        root = Path("/sys/fs/cgroup")
        v1 = {c: root / c for c in CONTROLLERS if (root / c / "cgroup.procs").exists()}
        if len(v1) == len(CONTROLLERS):
            bases = {c: v1[c] / own.get(c, "/").lstrip("/") / tag for c in CONTROLLERS}
            for base in bases.values():
                _sweep_stale(base.parent, tag)
                base.mkdir(parents=True, exist_ok=True)
            return cls(1, bases)
        unified = root if (root / "cgroup.controllers").exists() else root / "unified"
        controllers_file = unified / "cgroup.controllers"
        if controllers_file.exists():
            available = set(controllers_file.read_text().split())
            missing = [c for c in CONTROLLERS if c not in available]
            if missing:
                raise OSError(f"cgroup v2 lacks controllers {missing}")
            parent = unified / own.get("", "/").lstrip("/")
            base = parent / tag
            _sweep_stale(parent, tag)
            base.mkdir(parents=True, exist_ok=True)
            # v2: processes may only live in leaves; controllers are enabled for the children
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
            return cls(2, {"": base})
        missing_v1 = [c for c in CONTROLLERS if c not in v1]
        raise OSError(f"no cgroup hierarchy offers {missing_v1} (neither v1 nor v2)")

    def create(self, name: str, limits: CgroupLimits) -> None:
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        if self.version == 1:
            mem = self.bases["memory"] / name
            mem.mkdir(exist_ok=True)
            (mem / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):  # absent where swap accounting is off
                (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
            pids = self.bases["pids"] / name
            pids.mkdir(exist_ok=True)
            (pids / "pids.max").write_text(str(limits.pids))
            cpu = self.bases["cpu"] / name
            cpu.mkdir(exist_ok=True)
            (cpu / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            group = self.bases[""] / name
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
            (group / "pids.max").write_text(str(limits.pids))
            (group / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")

    def attach(self, name: str, pid: int) -> None:
        for base in self.bases.values():
            (base / name / "cgroup.procs").write_text(str(pid))

    def oom_kills(self, name: str) -> int:
        """How many times the kernel's OOM killer fired in this group."""
        try:
            if self.version == 1:
                text = (self.bases["memory"] / name / "memory.oom_control").read_text()
            else:
                text = (self.bases[""] / name / "memory.events").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids_events(self, name: str) -> int:
        base = self.bases["pids" if self.version == 1 else ""]
        try:
            text = (base / name / "pids.events").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def remove(self, name: str, timeout: float = 2.0) -> bool:
        """rmdir the groups; retries while the kernel finishes tearing the processes down."""
        deadline = time.monotonic() + timeout
        ok = True
        for base in self.bases.values():
            path = base / name
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        ok = False
                        break
                    time.sleep(0.01)
        return ok

    def remove_base(self) -> None:
        for base in self.bases.values():
            for child in list(base.iterdir()) if base.exists() else []:
                if child.is_dir():
                    self.remove(child.name, timeout=0.5)
            with contextlib.suppress(OSError):
                os.rmdir(base)
