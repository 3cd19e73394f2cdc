"""The jail backend (the default): every session is confined, and confined apart.

A session gets its own host uid (``uids``), a sized tmpfs as /mnt/data (``workspace``), memory,
pids and CPU cgroups (``cgroups``), and a kernel forked from the zygote that builds the jail
(``jail``: user, mount, pid, network, ipc, uts and cgroup namespaces, a read-only view of the
interpreter, seccomp, no capabilities). ``start`` fails closed when the host cannot do this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import Any

from sessionpool import errors
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.sandbox import linux
from sessionpool.sandbox.backend import Slot
from sessionpool.sandbox.cgroups import CgroupLimits, Cgroups
from sessionpool.sandbox.doctor import check_host
from sessionpool.sandbox.process import KernelProcess
from sessionpool.sandbox.uids import UidClaims
from sessionpool.sandbox.workspace import Workspace
from sessionpool.sandbox.zygotes import KERNEL_READY_TIMEOUT, ZygoteBackend


class JailBackend(ZygoteBackend):
    name = "jail"
    isolated = True

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.cgroups: Cgroups | None = None
        self.jail_root = self.data_dir / "jail-root"
        self.ro_binds: list[str] = []
        self.uids = UidClaims(config.uid_base, config.uid_count)

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
        index = self.uids.claim()
        if index is None:
            raise errors.PoolAtCapacity(
                pool.name, "no free session uid left (raise uid_count)", "uid_count"
            )
        uid = self.config.uid_base + index
        limits = pool.limits
        name = f"s{index}"
        try:
            ws = Workspace.create(
                self._new_workspace_path(), uid, limits.disk_bytes, limits.file_bytes, True
            )
        except BaseException as exc:
            self.uids.release(index)
            if isinstance(exc, OSError):
                raise errors.SandboxError(f"the workspace could not be mounted: {exc}") from exc
            raise
        try:
            self.cgroups.create(name, CgroupLimits(limits.memory_bytes, limits.pids, limits.cpus))
        except BaseException as exc:
            ws.destroy()
            self.uids.release(index)
            if isinstance(exc, OSError):
                detail = f"the session's cgroups could not be made: {exc}"
                raise errors.SandboxError(detail) from exc
            raise
        return Slot(name, uid, ws, limits, cgroup=name)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()
        if slot.cgroup is not None and self.cgroups is not None:
            self.cgroups.remove(slot.cgroup)
        if slot.uid is not None:
            self.uids.release(slot.uid - self.config.uid_base)

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
