"""The jail backend (the default): every session is confined, and confined apart.

A session gets its own host uid (``uids``), a sized tmpfs as /mnt/data (``workspace``), memory,
pids and CPU cgroups (``cgroups``), and a kernel forked from the zygote that builds the jail
(``jail``: user, mount, pid, network, ipc, uts and cgroup namespaces, a read-only view of the
host's /usr and the pool's runtime, seccomp, no capabilities). Zygotes start through
``launch``, at neutral paths. ``start`` fails closed when the host cannot do this.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from sessionpool import errors
from sessionpool.config import EGRESS_PROXY_PORT, EngineConfig, PoolConfig
from sessionpool.sandbox import images, linux
from sessionpool.sandbox.backend import Kernel, Slot
from sessionpool.sandbox.cgroups import (
    CgroupLimits,
    Cgroups,
    MemoryBound,
    memory_ceiling,
    process_cpu_seconds,
    resolve_bound,
)
from sessionpool.sandbox.charge import Charger
from sessionpool.sandbox.doctor import check_host
from sessionpool.sandbox.process import KernelProcess
from sessionpool.sandbox.runtimes import (
    IMAGE_MOUNT,
    JAIL_BUILD,
    KERNEL_LIB,
    KERNEL_MOUNT,
    PACKAGE,
    PYTHON_MOUNT,
    SESSION_CA_BUNDLE,
    ZYGOTE_HOME,
    LoopDevices,
    Runtime,
)
from sessionpool.sandbox.seccomp import build_filter_bpf
from sessionpool.sandbox.uids import UidClaims
from sessionpool.sandbox.workspace import Workspace
from sessionpool.sandbox.zygotes import KERNEL_READY_TIMEOUT, ZygoteBackend

log = logging.getLogger("sessionpool.sandbox")


def proxy_env(ca_bundle: str) -> dict[str, str]:
    """What points a session's HTTP clients at the egress proxy and its CA bundle (the
    proxy's address is the same in every session: each has its own loopback)."""
    url = f"http://127.0.0.1:{EGRESS_PROXY_PORT}"
    local = "localhost,127.0.0.1,::1"
    env = {"HTTP_PROXY": url, "HTTPS_PROXY": url, "NO_PROXY": local}
    env.update({k.lower(): v for k, v in env.items()})
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT"):
        env[name] = ca_bundle
    env["NODE_EXTRA_CA_CERTS"] = ca_bundle
    return env


def listen_in_namespace(pidfd: int, host: str, port: int) -> socket.socket:
    """A listening socket in the network namespace of the process behind ``pidfd``.

    ``setns`` moves only the calling thread, so this runs in a thread of its own that ends
    afterwards: should the switch back ever fail, no thread left in the session's namespace
    serves anything else. A pidfd, not a pid: a recycled pid cannot lead into another
    session's namespace.
    """
    box: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(pidfd, linux.CLONE_NEWNET)
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((host, port))
                    sock.listen(256)
                    sock.setblocking(False)
                    box.append(sock)
                finally:
                    linux.setns(own, linux.CLONE_NEWNET)
            finally:
                os.close(own)
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, name="egress-listen")
    thread.start()
    thread.join()
    result = box[0]
    if isinstance(result, BaseException):
        raise errors.SandboxError(f"the egress listener could not be opened: {result}")
    return result


class JailBackend(ZygoteBackend):
    name = "jail"
    isolated = True

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.cgroups: Cgroups | None = None
        self.uids = UidClaims(config.uid_base, config.uid_count)
        self.loops = LoopDevices()
        self._seccomp_bpf = ""
        self._images: dict[str, Path] = {}
        self.bound: MemoryBound | None = None
        #: allocates uploads' pages inside the bound (``charge``)
        self.charger: Charger | None = None
        #: the server's oom_score_adj before start lowered it (restored at close)
        self._oom_score_adj: int | None = None

    async def start(self) -> None:
        checks = await asyncio.to_thread(check_host, self.data_dir, self.config)
        missing = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        if missing:
            raise errors.SandboxUnavailable(missing)
        self._prepare_dirs()
        self._sweep_stale_mounts()
        try:
            self.bound = resolve_bound(
                self.config.sessions_memory_bytes,
                self.config.sessions_memory_reserve_bytes,
                memory_ceiling(),
            )
        except ValueError as exc:
            raise errors.ConfigError(str(exc)) from None
        try:
            self.cgroups = Cgroups.detect(self.instance, self.bound.limit)
        except OSError as exc:
            raise errors.SandboxUnavailable([f"cgroups: {exc}"]) from None
        log.info("sessions' shared memory bound: %s", self.bound.describe())
        self.charger = Charger(self.cgroups.join_uploads)
        try:
            await self.charger.start()
        except (OSError, TimeoutError) as exc:
            raise errors.SandboxUnavailable([f"the upload helper could not start: {exc}"]) from None
        try:
            self._oom_score_adj = linux.lower_oom_score_adj(linux.SERVER_OOM_SCORE_ADJ)
        except OSError as exc:
            log.warning(
                "the server's oom_score_adj stays as it is (%s; it needs CAP_SYS_RESOURCE): the "
                "host's OOM killer still ends sessions first",
                exc.strerror,
            )
        # built here, not in the zygote: the libseccomp binding is the server's, not the runtime's
        self._seccomp_bpf = base64.b64encode(build_filter_bpf()).decode()

    def _zygote_config(self, pool: PoolConfig, runtime: Runtime) -> dict[str, Any]:
        # the zygote's home is in its private /opt: no host path in the memory sessions inherit
        env = {"HOME": ZYGOTE_HOME, "MPLCONFIGDIR": f"{ZYGOTE_HOME}/matplotlib"}
        return {
            "jail": True,
            "env": env,
            "seccomp_bpf": self._seccomp_bpf,
            "jail_skeleton": self._skeleton(pool, runtime),
        }

    @staticmethod
    def _skeleton(pool: PoolConfig, runtime: Runtime) -> dict[str, Any]:
        """The ``jail`` fields that are the same for every session of a zygote (its key holds
        the image and the runtime): what an embryo builds ahead (``jail.prepare``)."""
        # an image brings its own /usr; a Node.js kernel needs no Python runtime
        binds = [KERNEL_MOUNT] if pool.image else ["/usr", KERNEL_MOUNT]
        if runtime.kind == "python":
            binds.append(PYTHON_MOUNT)
        return {
            "root": JAIL_BUILD,
            "ro_binds": binds,
            "image": IMAGE_MOUNT if pool.image else "",
            "hostname": "sandbox",
        }

    async def _zygote_command(self, runtime: Runtime, pool: PoolConfig) -> list[str]:
        """The launcher sets up the zygote's mount namespace (``launch``), then execs it."""
        images: list[list[str]] = []
        plan: dict[str, Any] = {
            "images": images,
            "workspaces": str(self.workspaces),
            "kernel_package": str(PACKAGE),
        }
        if runtime.kind == "python":
            images.append([self.loops.attach(runtime.image), PYTHON_MOUNT])
            plan["python"] = f"{PYTHON_MOUNT}/{runtime.executable}"
            plan["matplotlib_cache"] = f"{PYTHON_MOUNT}/share/matplotlib"
        else:
            plan["python"] = sys.executable  # it only builds jails and execs the kernel
        if pool.image:
            image = await self._image(pool.image)
            images.append([self.loops.attach(image), IMAGE_MOUNT])
        if pool.network != "off" and self.ca_bundle is not None:
            plan["ca_bundle"] = str(self.ca_bundle)
        return [sys.executable, "-I", "-m", "sessionpool.sandbox.launch", "{fd}", json.dumps(plan)]

    async def _image(self, source: str) -> Path:
        image = self._images.get(source)
        if image is None:
            # seconds to minutes, once per image and server: unpack and pack off the loop
            image = await asyncio.to_thread(images.prepare, Path(source), self.config.runtimes_dir)
            self._images[source] = image
        return image

    def _sweep_stale_mounts(self) -> None:
        """Unmount workspaces a crashed earlier server left behind."""
        prefix = str(self.workspaces) + "/"
        try:
            points = linux.mount_points()
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
            ws.charge = self.charger.allocate if self.charger is not None else None
        except BaseException as exc:
            self.uids.release(index)
            if isinstance(exc, OSError):
                raise errors.SandboxError(f"the workspace could not be mounted: {exc}") from exc
            raise
        try:
            self.cgroups.create(name, CgroupLimits(limits.memory_bytes, limits.pids, limits.cpus))
            # the first kernel's baseline, here in this thread rather than on the event loop
            # as the slot's first kernel starts (the on-demand path waits for it there): the
            # fresh groups' watermarks are zero, and the bound's counts move only when it
            # kills, which these milliseconds before the fork may as well precede
            baseline = self.cgroups.oom_counters(name)
        except BaseException as exc:
            ws.destroy()
            self.uids.release(index)
            if isinstance(exc, OSError):
                detail = f"the session's cgroups could not be made: {exc}"
                raise errors.SandboxError(detail) from exc
            raise
        return Slot(name, uid, ws, limits, cgroup=name, oom_baseline=baseline)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()
        if slot.cgroup is not None and self.cgroups is not None:
            self.cgroups.remove(slot.cgroup)
        if slot.uid is not None:
            self.uids.release(slot.uid - self.config.uid_base)

    def _spawn_request(self, slot: Slot, pool: PoolConfig, runtime: Runtime) -> dict[str, Any]:
        assert slot.uid is not None
        limits = slot.limits
        kernel = self._kernel_request(runtime, "/tmp", PYTHON_MOUNT, KERNEL_LIB)
        if pool.network != "off":
            kernel["env"].update(proxy_env(SESSION_CA_BUNDLE))
        return {
            "jail": {
                **self._skeleton(pool, runtime),
                "uid": slot.uid,
                "tmp_bytes": limits.tmp_bytes,
                "open_files": limits.open_files,
                "file_bytes": limits.disk_bytes,
                "nproc": limits.pids,
            },
            "workspace": "/mnt/data",
            **kernel,
        }

    def _spawn_fds(self, slot: Slot) -> list[int]:
        """The workspace as a detached mount, which the child attaches at /mnt/data: no
        zygote's mount namespace holds any session's workspace (see ``jail.JailSpec``). On
        cgroup v1, then the session's groups' ``tasks`` files, open for writing: the child
        moves itself in after its pivot into the jail's root, where no /sys is to be found."""
        fds: list[int] = []
        try:
            fds.append(linux.open_tree_clone(str(slot.workspace.path)))
            if self.cgroups is not None and slot.cgroup is not None:
                for path in self.cgroups.self_attach_files(slot.cgroup):
                    fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            detail = f"the session's workspace or cgroups could not be passed on: {exc}"
            raise errors.SandboxError(detail) from exc
        return fds

    async def open_listener(self, kernel: Kernel, host: str, port: int) -> socket.socket:
        assert isinstance(kernel, KernelProcess)
        return await asyncio.to_thread(listen_in_namespace, kernel.pidfd, host, port)

    async def spawn(self, pool: PoolConfig, slot: Slot) -> KernelProcess:
        # the baseline before the kernel exists, so whatever it meets counts after it; the
        # first kernel's was read with the slot's fresh groups (_create_slot)
        assert self.cgroups is not None and slot.cgroup is not None
        if slot.kernels or slot.oom_baseline is None:  # a restart: the earlier kernel's are history
            self.cgroups.reset_peak(slot.cgroup)
            slot.oom_baseline = self.cgroups.oom_counters(slot.cgroup)
        slot.kernels += 1
        return await super().spawn(pool, slot)

    async def _after_fork(self, slot: Slot, kernel: KernelProcess) -> None:
        assert self.cgroups is not None and slot.cgroup is not None
        if self.cgroups.version == 1:
            # the child moved itself in as it built its jail (``JailSpec.cgroup_fds``)
            await kernel.connect(1 << 20, KERNEL_READY_TIMEOUT)
            if not self.cgroups.holds(slot.cgroup, kernel.pid):  # never expected: fail closed
                raise errors.SandboxError("the session's kernel is not in its cgroups")
            return
        # v2: the host attaches it (slow without favordynmods), overlapping the jail's build
        attach = asyncio.create_task(
            asyncio.to_thread(self.cgroups.attach, slot.cgroup, kernel.pid)
        )
        try:
            await kernel.connect(1 << 20, KERNEL_READY_TIMEOUT)
        finally:
            await attach

    def usage(self, slot: Slot, pid: int | None) -> tuple[int | None, float | None]:
        if self.cgroups is None or slot.cgroup is None:
            return None, None
        memory, cpu = self.cgroups.usage(slot.cgroup)
        if cpu is None and pid is not None:
            # v1 with cpuacct mounted apart from cpu: the session's group has no CPU count;
            # the kernel's own time and that of the children it waited for
            cpu = process_cpu_seconds(pid)
        return memory, cpu

    def set_memory_limit(self, slot: Slot, memory_bytes: int) -> None:
        assert self.cgroups is not None and slot.cgroup is not None
        try:
            self.cgroups.set_memory(slot.cgroup, memory_bytes)
        except OSError as exc:  # v1: EBUSY when the session already uses more
            detail = f"the session's memory limit could not be set: {exc}"
            raise errors.SandboxError(detail) from exc
        super().set_memory_limit(slot, memory_bytes)

    def describe_exit(self, slot: Slot, status: int | None) -> str:
        text = super().describe_exit(slot, status)
        before = slot.oom_baseline
        if self.cgroups is None or slot.cgroup is None or before is None:
            return text
        now = self.cgroups.oom_counters(slot.cgroup)
        own, bound = now.own > before.own, now.bound > before.bound
        if now.kills is not None and before.kills is not None:
            killed = now.kills > before.kills
        else:  # a v1 kernel without the counter: a SIGKILL while a limit was reached
            killed = status == -signal.SIGKILL and (own or bound)
        if not killed:
            return text
        if own:
            # both met in this kernel's life: the kernel does not say which one the kill
            # answered (v1 counts meeting a limit, not OOMs at it); its own is the likelier
            return (
                f"{text}: out of memory (the session's limit is "
                f"{slot.limits.memory_bytes // (1024 * 1024)} MiB)"
            )
        if bound and self.bound is not None:
            return (
                f"{text}: out of memory: this server's sessions together reached their shared "
                f"memory bound (sessions_memory_bytes, {self.bound.limit // (1024 * 1024)} MiB), "
                "and the kernel ended this session to stay within it"
            )
        return f"{text}: out of memory: the host (or a limit above the server) ran out of memory"

    async def close(self) -> None:
        await super().close()
        if self.charger is not None:
            self.charger.close()
            self.charger = None
        self.loops.close()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_base)
        if self._oom_score_adj is not None:
            with contextlib.suppress(OSError):
                linux.set_oom_score_adj(self._oom_score_adj)
            self._oom_score_adj = None
