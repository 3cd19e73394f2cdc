"""Sandbox backends: where a session's kernel runs and what confines it.

``Backend`` is the seam for isolation tiers. Two exist: ``JailBackend`` (the default: zygote
fork into namespaces + seccomp + cgroups + a sized tmpfs workspace) and ``UnsafeBackend`` (a
plain fork, for development only, loudly logged). The session layer calls, in order:
``start()`` once, ``create_slot()`` per session, ``spawn()`` per kernel (again after a kernel
dies), ``release_slot()`` when the session ends, ``close()`` at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sessionpool import errors
from sessionpool.config import EngineConfig, Limits, PoolConfig
from sessionpool.sandbox.cgroups import CgroupLimits, Cgroups
from sessionpool.sandbox.doctor import check_host
from sessionpool.sandbox.process import KernelProcess, ZygoteHandle, ZygoteRetired
from sessionpool.sandbox.workspace import Workspace

log = logging.getLogger("sessionpool.sandbox")

KERNEL_READY_TIMEOUT = 30.0


@dataclass
class Slot:
    """What one session holds from the backend for its whole life."""

    name: str
    uid: int | None
    workspace: Workspace
    limits: Limits
    cgroup: str | None = None
    #: the cgroup's OOM-kill count when the current kernel started (deaths before don't count)
    oom_baseline: int = 0


def _thread_env() -> dict[str, str]:
    # one BLAS/OpenMP thread per session: hundreds of sessions share two cores
    return {
        name: "1"
        for name in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMEXPR_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS",
        )
    }


class UidClaims:
    """Hands out session uids so that no two live sessions on this host ever share one.

    Within a process a set suffices; across processes (two servers with the same uid range) an
    exclusive flock on /run/sessionpool/uids/<uid> decides, held for the session's life.
    """

    LOCK_DIR = Path("/run/sessionpool/uids")

    def __init__(self) -> None:
        self._held: dict[int, int] = {}  # uid -> lock fd
        self._next = 0
        self._lock = threading.Lock()  # slots are made and released in worker threads

    def claim(self, base: int, count: int) -> int | None:
        with self._lock:
            return self._claim(base, count)

    def _claim(self, base: int, count: int) -> int | None:
        import fcntl

        with contextlib.suppress(OSError):
            self.LOCK_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        for step in range(count):
            index = (self._next + step) % count
            uid = base + index
            if uid in self._held:
                continue
            try:
                fd = os.open(self.LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                fd = -1  # no lock directory (unsafe mode, non-root): in-process only
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
            self._held[uid] = fd
            self._next = index + 1
            return index
        return None

    def release(self, base: int, index: int) -> None:
        with self._lock:
            fd = self._held.pop(base + index, -1)
        if fd >= 0:
            os.close(fd)


_UIDS = UidClaims()


class ZygoteSet:
    """The zygote of one template (preload list): rotated after N children, restarted on death."""

    def __init__(
        self,
        preload: tuple[str, ...],
        max_children: int,
        config: dict[str, Any],
        env: dict[str, str],
    ) -> None:
        self.preload = preload
        self.max_children = max_children
        self.config = {**config, "preload": list(preload)}
        self.env = env
        self.current: ZygoteHandle | None = None
        self.retired: list[ZygoteHandle] = []
        self._starting: asyncio.Task[ZygoteHandle] | None = None

    async def get(self) -> ZygoteHandle:
        z = self.current
        if z is not None and not z.dead and not z.retired and len(z.live) < self.max_children:
            return z
        if z is not None:
            self.current = None
            if not z.dead and not z.retired:
                z.retire()
                self.retired.append(z)
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        try:
            return await asyncio.shield(self._starting)
        finally:
            if self._starting is not None and self._starting.done():
                self._starting = None

    async def _start(self) -> ZygoteHandle:
        z = ZygoteHandle(self.config, self.env)
        await z.start()
        if z.failed_modules:
            log.warning("zygote could not preload %s", z.failed_modules)
        self.current = z
        return z

    def close(self) -> None:
        for z in [self.current, *self.retired]:
            if z is not None:
                z.kill()
        self.current = None
        self.retired.clear()


class Backend(ABC):
    name: ClassVar[str]
    isolated: ClassVar[bool]

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve() if config.data_dir.exists() else config.data_dir
        self.workspaces = self.data_dir / "workspaces"
        self._zygotes: dict[tuple[tuple[str, ...], int], ZygoteSet] = {}
        self.instance = f"sessionpool-{os.getpid()}-{secrets.token_hex(3)}"

    # -- called by the engine -------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Check the host, prepare directories. Raise SandboxUnavailable if it cannot isolate."""

    async def close(self) -> None:
        for zs in self._zygotes.values():
            zs.close()
        self._zygotes.clear()

    # -- called by sessions ---------------------------------------------------------------------

    @abstractmethod
    async def create_slot(self, pool: PoolConfig) -> Slot:
        """Reserve a uid, make the workspace and the cgroups for one session."""

    @abstractmethod
    def release_slot(self, slot: Slot) -> None:
        """Undo create_slot; the kernel must already be dead."""

    async def spawn(self, pool: PoolConfig, slot: Slot) -> KernelProcess:
        """Fork a kernel for ``slot`` from the pool's zygote and wait until it is serving."""
        key = (pool.preload, pool.zygote_max_children)
        zs = self._zygotes.get(key)
        if zs is None:
            zs = self._zygotes[key] = ZygoteSet(
                pool.preload, pool.zygote_max_children, self._zygote_config(), self._zygote_env()
            )
        for _ in range(8):
            zygote = await zs.get()
            try:
                kernel = await zygote.spawn(self._spawn_request(slot))
                break
            except ZygoteRetired:
                continue  # rotated under a burst: the next get() returns its successor
        else:
            raise RuntimeError("zygotes kept retiring before forking; raise zygote_max_children")
        try:
            await self._after_fork(slot, kernel)
        except BaseException:
            kernel.close()
            raise
        return kernel

    def describe_exit(self, slot: Slot, status: int | None) -> str:
        if status is None:
            return "the process ended"
        if status < 0:
            return f"killed by signal {-status}"
        return f"exited with status {status}"

    # -- backend specifics ----------------------------------------------------------------------

    def _zygote_config(self) -> dict[str, Any]:
        cache = self.data_dir / "cache"
        # set by the zygote at run time, so they never show in a session's /proc/self/environ
        env = {"HOME": str(cache), "MPLCONFIGDIR": str(cache / "matplotlib")}
        return {"jail": self.isolated, "env": env}

    def _zygote_env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/",
            "MPLBACKEND": "Agg",
            **_thread_env(),
        }

    def _session_env(self, home: str) -> dict[str, str]:
        return {
            "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": home,
            "TMPDIR": "/tmp",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/.matplotlib",
            "PYTHONNOUSERSITE": "1",
            "TERM": "dumb",
            **_thread_env(),
        }

    @abstractmethod
    def _spawn_request(self, slot: Slot) -> dict[str, Any]: ...

    async def _after_fork(self, slot: Slot, kernel: KernelProcess) -> None:
        await kernel.connect(1 << 20, KERNEL_READY_TIMEOUT)

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir = self.data_dir.resolve()
        self.workspaces = self.data_dir / "workspaces"
        self.workspaces.mkdir(exist_ok=True, mode=0o700)
        (self.data_dir / "cache" / "matplotlib").mkdir(parents=True, exist_ok=True)

    def _take_uid(self) -> int:
        index = _UIDS.claim(self.config.uid_base, self.config.uid_count)
        if index is None:
            raise errors.PoolExhausted("*", "no free session uid left (raise uid_count)")
        return index

    def _new_workspace_path(self) -> Path:
        return self.workspaces / secrets.token_hex(8)


class JailBackend(Backend):
    name = "jail"
    isolated = True

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.cgroups: Cgroups | None = None
        self.jail_root = self.data_dir / "jail-root"
        self.ro_binds: list[str] = []

    async def start(self) -> None:
        checks = await asyncio.to_thread(check_host, self.data_dir)
        missing = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        if missing:
            raise errors.SandboxUnavailable(missing)
        self._prepare_dirs()
        self._sweep_stale_mounts()
        self.jail_root = self.data_dir / "jail-root"
        self.jail_root.mkdir(exist_ok=True, mode=0o755)
        try:
            self.cgroups = Cgroups.detect(self.instance)
        except OSError as exc:
            raise errors.SandboxUnavailable([f"cgroups: {exc}"]) from None
        binds: list[str] = []
        for path in ("/usr", sys.base_prefix, sys.prefix):
            real = os.path.realpath(path)
            if not any(real == b or real.startswith(b + "/") for b in binds):
                binds.append(real)
        self.ro_binds = binds

    def _sweep_stale_mounts(self) -> None:
        """Unmount workspaces a crashed earlier server left behind."""
        prefix = str(self.workspaces) + "/"
        try:
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
        except OSError:
            return
        from sessionpool.sandbox import linux

        for point in points:
            if point.startswith(prefix):
                with contextlib.suppress(OSError):
                    linux.umount2(point, linux.MNT_DETACH)
                with contextlib.suppress(OSError):
                    os.rmdir(point)

    async def create_slot(self, pool: PoolConfig) -> Slot:
        # a mount and a dozen cgroup file writes: ~1 ms the event loop should not wait for
        return await asyncio.to_thread(self._create_slot, pool)

    def _create_slot(self, pool: PoolConfig) -> Slot:
        assert self.cgroups is not None
        index = self._take_uid()
        uid = self.config.uid_base + index
        limits = pool.limits
        try:
            ws = Workspace.create(
                self._new_workspace_path(), uid, limits.disk_bytes, limits.file_bytes, True
            )
        except BaseException:
            _UIDS.release(self.config.uid_base, index)
            raise
        name = f"s{index}"
        try:
            self.cgroups.create(name, CgroupLimits(limits.memory_bytes, limits.pids, limits.cpus))
        except BaseException:
            ws.destroy()
            _UIDS.release(self.config.uid_base, index)
            raise
        return Slot(name, uid, ws, limits, cgroup=name)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()
        if slot.cgroup is not None and self.cgroups is not None:
            self.cgroups.remove(slot.cgroup)
        if slot.uid is not None:
            _UIDS.release(self.config.uid_base, slot.uid - self.config.uid_base)

    def _spawn_request(self, slot: Slot) -> dict[str, Any]:
        assert slot.uid is not None
        limits = slot.limits
        return {
            "jail": {
                "uid": slot.uid,
                "workspace": str(slot.workspace.path),
                "root": str(self.jail_root),
                "ro_binds": list(self.ro_binds),
                "tmp_bytes": limits.tmp_bytes,
                "open_files": limits.open_files,
                "file_bytes": limits.disk_bytes,
                "nproc": limits.pids,
            },
            "workspace": "/mnt/data",
            "env": self._session_env("/tmp"),
        }

    async def _after_fork(self, slot: Slot, kernel: KernelProcess) -> None:
        # The cgroup attach (slow on v1) overlaps with the child building its jail.
        assert self.cgroups is not None and slot.cgroup is not None
        slot.oom_baseline = self.cgroups.oom_kills(slot.cgroup)
        attach = asyncio.create_task(
            asyncio.to_thread(self.cgroups.attach, slot.cgroup, kernel.pid)
        )
        try:
            await kernel.connect(1 << 20, KERNEL_READY_TIMEOUT)
        finally:
            await attach

    def describe_exit(self, slot: Slot, status: int | None) -> str:
        text = super().describe_exit(slot, status)
        if self.cgroups and slot.cgroup and self.cgroups.oom_kills(slot.cgroup) > slot.oom_baseline:
            return (
                f"{text}: out of memory (the session's limit is "
                f"{slot.limits.memory_bytes // (1024 * 1024)} MiB)"
            )
        return text

    async def close(self) -> None:
        await super().close()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_base)


class UnsafeBackend(Backend):
    """No isolation at all: forked processes on the host. Development only."""

    name = "unsafe"
    isolated = False

    async def start(self) -> None:
        log.warning(
            "UNSAFE backend: sessions run WITHOUT isolation, as the server's own user, with the "
            "host's network and files. Never expose this server to untrusted code."
        )
        self._prepare_dirs()

    async def create_slot(self, pool: PoolConfig) -> Slot:
        limits = pool.limits
        ws = Workspace.create(
            self._new_workspace_path(), None, limits.disk_bytes, limits.file_bytes, False
        )
        return Slot(ws.path.name, None, ws, limits)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()

    def _spawn_request(self, slot: Slot) -> dict[str, Any]:
        return {
            "jail": None,
            "workspace": str(slot.workspace.path),
            "env": self._session_env(str(slot.workspace.path)),
        }


def make_backend(config: EngineConfig) -> Backend:
    if config.backend == "jail":
        return JailBackend(config)
    if config.backend == "unsafe":
        return UnsafeBackend(config)
    raise errors.ConfigError(f"unknown backend {config.backend!r}; choose 'jail' or 'unsafe'")
