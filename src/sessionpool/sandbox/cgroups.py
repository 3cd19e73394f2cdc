"""Per-session memory, pids and cpu cgroups on cgroup v1 or v2 hosts.

Groups are created under the server's own cgroup (``sessionpool-<server pid>/<session>``), so
an operator's limits on the server also bound its sessions. That parent group carries the
sessions' shared memory bound (``MemoryBound``): enough busy sessions meet it and the kernel
ends sessions inside it, long before the host's global OOM killer would pick anything. The
server and its zygotes live outside it. Attaching another process to a cgroup waits for an
RCU grace period without ``favordynmods`` (spikes of 10-30 ms measured): on v1 a session moves
itself, as a single thread, which does not wait (``self_attach_files``); on v2 the host attaches
it in a worker thread while it builds its jail.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
#: the leaf of the upload helper (``charge``), beside the sessions' groups
UPLOADS = "uploads"
CPU_PERIOD_US = 100_000
GiB = 1 << 30
#: a cgroup v1 limit at or above this means "no limit" (PAGE_COUNTER_MAX, page-rounded)
_V1_UNLIMITED = 1 << 62


@dataclass
class CgroupLimits:
    memory_bytes: int
    pids: int
    cpus: float


@dataclass(frozen=True)
class MemoryBound:
    """The memory limit all of a server's sessions share, and how it was reached."""

    #: the limit on the sessions' parent cgroup
    limit: int
    #: the memory the sessions may not have: left to the server, its zygotes and the host
    reserve: int
    #: the machine's memory, or a lower limit the server itself already runs under
    ceiling: int
    #: set with sessions_memory_bytes (not derived from the ceiling)
    explicit: bool

    def describe(self) -> str:
        if self.explicit:
            return f"{_size(self.limit)} (sessions_memory_bytes, of {_size(self.ceiling)})"
        return (
            f"{_size(self.limit)} = {_size(self.ceiling)} - a reserve of {_size(self.reserve)} "
            "for the server and the host (sessions_memory_reserve_bytes)"
        )


def _size(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n >> 20} MiB"


def default_reserve(ceiling: int) -> int:
    """max(1 GiB, 10% of the ceiling), at most half of it.

    The reserve holds what the bound does not: the server (about 100 MB, more under load and
    with the agents service), its zygotes (100-200 MB each, one per runtime and preload list,
    and the pages sessions share with them), the kernel's own memory that no cgroup is charged
    for (page tables, slab, socket buffers on v1), and the host's daemons and page cache. 1 GiB
    covers the fixed part on a small machine; 10% follows what grows with the machine and the
    number of sessions. Half the ceiling at most, so that a tiny machine still runs sessions.
    """
    return min(max(GiB, ceiling // 10), ceiling // 2)


def resolve_bound(explicit: int, reserve: int, ceiling: int) -> MemoryBound:
    """The sessions' bound from the settings (0 = derived) and the ceiling; ValueError if the
    settings leave the sessions nothing."""
    if explicit > 0:
        return MemoryBound(explicit, max(0, ceiling - explicit), ceiling, True)
    reserve = reserve if reserve > 0 else default_reserve(ceiling)
    if reserve >= ceiling:
        raise ValueError(
            f"sessions_memory_reserve_bytes ({_size(reserve)}) leaves the sessions nothing of "
            f"the {_size(ceiling)} this server may use"
        )
    return MemoryBound(ceiling - reserve, reserve, ceiling, False)


def memory_ceiling() -> int:
    """The memory this server's sessions could ever have: the machine's, or less when the
    server itself runs in a cgroup with a lower limit (a container, a systemd unit)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    own = _own_paths()
    root = Path("/sys/fs/cgroup")
    v1 = root / "memory" / own.get("memory", "/").lstrip("/")
    with contextlib.suppress(OSError, ValueError):
        if "memory" in own:
            for line in (v1 / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "hierarchical_memory_limit" and int(value) < _V1_UNLIMITED:
                    total = min(total, int(value))
            return total
    unified = root if (root / "cgroup.controllers").exists() else root / "unified"
    group = unified / own.get("", "/").lstrip("/")
    for path in (group, *group.parents):
        if not path.is_relative_to(unified):
            break
        with contextlib.suppress(OSError, ValueError):
            text = (path / "memory.max").read_text().strip()
            if text != "max":
                total = min(total, int(text))
    return total


@dataclass(frozen=True)
class OomCounters:
    """What the kernel counted for one session's group; compared before and after a death.

    ``kills``: its processes the OOM killer ended (None where a v1 kernel has no counter).
    ``own``: times its own limit was reached. ``bound``: times the sessions' shared bound was.
    On v2 the last two count OOMs at each limit (``memory.events.local``'s ``oom``); v1 has no
    such count, so they count meeting the limit at all, reclaimed or not (``_v1_limit_met``).
    """

    kills: int | None
    own: int
    bound: int


def _field(text: str, name: str) -> int | None:
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time of process ``pid`` and of the children it has waited for (``/proc``)."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    # the command name (field 2) may hold spaces and parentheses: count from its end
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 15:
        return None
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime (fields 14-17)
    return ticks / os.sysconf("SC_CLK_TCK")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


#: v1: a watermark this close to its limit means the limit was met (a charge that fails is
#: at most a huge page)
_V1_SLACK = 4 << 20


def _v1_limit_met(group: Path) -> int:
    """v1: how often the group's limit was met. ``memory.failcnt`` counts it for the memory
    counter; with swap accounting the memory+swap counter is charged first, and recent kernels
    keep no failcnt for it (it stays 0), so a memsw watermark within a huge page of its limit
    counts once more (``reset_peak`` restarts the watermarks)."""
    text = _read(group / "memory.failcnt").strip()
    met = int(text) if text else 0
    limit = _read(group / "memory.memsw.limit_in_bytes").strip()
    peak = _read(group / "memory.memsw.max_usage_in_bytes").strip()
    if limit and peak and int(limit) < _V1_UNLIMITED and int(peak) >= int(limit) - _V1_SLACK:
        met += 1
    return met


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
    def detect(cls, tag: str, bound: int | None = None) -> Cgroups:
        """Find usable controllers; raise OSError naming what is missing. ``bound``: the
        sessions' shared memory limit, set on our parent group before any session joins it."""
        own = _own_paths()
        root = Path("/sys/fs/cgroup")
        v1 = {c: root / c for c in CONTROLLERS if (root / c / "cgroup.procs").exists()}
        if len(v1) == len(CONTROLLERS):
            bases = {c: v1[c] / own.get(c, "/").lstrip("/") / tag for c in CONTROLLERS}
            for base in bases.values():
                _sweep_stale(base.parent, tag)
                base.mkdir(parents=True, exist_ok=True)
            cgroups = cls(1, bases)
            if bound is not None:
                cgroups._bound_v1(bound)
            return cgroups
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
            if bound is not None:
                (base / "memory.max").write_text(str(bound))
                with contextlib.suppress(OSError):  # absent without swap accounting
                    (base / "memory.swap.max").write_text("0")
            return cls(2, {"": base})
        missing_v1 = [c for c in CONTROLLERS if c not in v1]
        raise OSError(f"no cgroup hierarchy offers {missing_v1} (neither v1 nor v2)")

    def _bound_v1(self, bound: int) -> None:
        """v1: the parent's limit holds for its children only with use_hierarchy (always on
        since Linux 5.11; older kernels inherit it, and a fresh group may still turn it on).

        The bound is on memory only, not memory+swap: the memsw counter is charged first and
        keeps no failcnt, so with both at one limit nothing would tell that the bound was met.
        Each session's own memsw limit still keeps it from swapping past its own limit."""
        mem = self.bases["memory"]
        flag = mem / "memory.use_hierarchy"
        if flag.read_text().strip() != "1":
            with contextlib.suppress(OSError):
                flag.write_text("1")
            if flag.read_text().strip() != "1":
                raise OSError(
                    f"{flag} is 0 and cannot be set: the sessions' shared memory bound would "
                    "not hold (turn use_hierarchy on in the server's cgroup)"
                )
        (mem / "memory.limit_in_bytes").write_text(str(bound))

    def bound(self) -> int | None:
        """The sessions' shared memory limit as the kernel holds it (page-rounded)."""
        if self.version == 1:
            text = _read(self.bases["memory"] / "memory.limit_in_bytes").strip()
            return int(text) if text and int(text) < _V1_UNLIMITED else None
        text = _read(self.bases[""] / "memory.max").strip()
        return int(text) if text and text != "max" else None

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

    def set_memory(self, name: str, memory_bytes: int) -> None:
        """Change a session group's memory limit (a container's own, below its pool's)."""
        if self.version == 1:
            mem = self.bases["memory"] / name
            memsw = mem / "memory.memsw.limit_in_bytes"
            # memsw may never be below the limit: raised before it, lowered after it (the
            # first write fails when lowering; memsw is absent where swap accounting is off)
            with contextlib.suppress(OSError):
                memsw.write_text(str(memory_bytes))
            (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                memsw.write_text(str(memory_bytes))
        else:
            (self.bases[""] / name / "memory.max").write_text(str(memory_bytes))

    def attach(self, name: str, pid: int) -> None:
        for base in self.bases.values():
            (base / name / "cgroup.procs").write_text(str(pid))

    def self_attach_files(self, name: str) -> list[str]:
        """v1: the files a freshly forked (single-threaded) session writes ``0`` to, moving
        itself into its groups before its jail is built; empty on v2 (the host attaches).

        Moving a whole thread group (``cgroup.procs``, or a ``tasks`` write naming a pid) takes
        the kernel's global threadgroup lock for writing, which waits for an RCU grace period:
        0.3 ms median but 10-17 ms spikes measured here, on the allocation path. A thread moving
        only itself (``tasks``, pid 0) skips that lock; a session that has just been forked is
        one thread, so it is the whole process."""
        if self.version != 1:
            return []
        return [str(base / name / "tasks") for base in self.bases.values()]

    def holds(self, name: str, pid: int) -> bool:
        """Whether process ``pid`` is in the session group ``name`` of every controller."""
        text = _read(Path(f"/proc/{pid}/cgroup"))
        paths: dict[str, str] = {}
        for line in text.splitlines():
            _, names, path = line.split(":", 2)
            for controller in names.split(",") if names else [""]:
                paths[controller] = path
        for controller, base in self.bases.items():
            found = paths.get(controller)
            if found is None or not str(base / name).endswith(found.rstrip("/") or "/"):
                return False
        return True

    def join_uploads(self, pid: int) -> None:
        """Put ``pid`` (the upload helper, ``charge``) into a leaf of the bound, ``uploads``:
        what it allocates counts toward the sessions' memory, not the server's."""
        base = self.bases["memory" if self.version == 1 else ""]
        (base / UPLOADS).mkdir(exist_ok=True)
        (base / UPLOADS / "cgroup.procs").write_text(str(pid))

    def reset_peak(self, name: str) -> None:
        """v1: restart a session's usage watermarks (at each new kernel; see oom_counters)."""
        if self.version == 1:
            for f in ("memory.max_usage_in_bytes", "memory.memsw.max_usage_in_bytes"):
                with contextlib.suppress(OSError):
                    (self.bases["memory"] / name / f).write_text("0")

    def oom_counters(self, name: str) -> OomCounters:
        """The OOM counts of a session's group and of the sessions' bound (see OomCounters)."""
        if self.version == 1:
            mem = self.bases["memory"]
            kills = _field(_read(mem / name / "memory.oom_control"), "oom_kill")
            return OomCounters(kills, _v1_limit_met(mem / name), _v1_limit_met(mem))
        base = self.bases[""]
        events = _read(base / name / "memory.events")
        # a leaf's counts are its own; the parent's own OOMs are in .local (Linux 5.2+)
        parent = _read(base / "memory.events.local") or _read(base / "memory.events")
        return OomCounters(
            _field(events, "oom_kill") or 0, _field(events, "oom") or 0, _field(parent, "oom") or 0
        )

    def usage(self, name: str) -> tuple[int | None, float | None]:
        """A session's memory in use (bytes) and the CPU time its processes used (seconds);
        None for a figure the kernel does not offer here."""
        if self.version == 1:
            mem = _read(self.bases["memory"] / name / "memory.usage_in_bytes").strip()
            cpu = _read(self.bases["cpu"] / name / "cpuacct.usage").strip()  # ns, cpu,cpuacct
            return (
                int(mem) if mem.isdigit() else None,
                int(cpu) / 1e9 if cpu.isdigit() else None,
            )
        group = self.bases[""] / name
        mem = _read(group / "memory.current").strip()
        usec = _field(_read(group / "cpu.stat"), "usage_usec")
        return int(mem) if mem.isdigit() else None, usec / 1e6 if usec is not None else None

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
