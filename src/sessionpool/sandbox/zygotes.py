"""What the real backends share: kernels forked from a preloaded zygote per template.

A zygote imports a pool's preload list once, freezes its heap and forks one kernel per session
(``sandbox/zygote.py`` is the process, ``process.ZygoteHandle`` the host's end of it).
``ZygoteBackend`` keeps one ``ZygoteSet`` per template, builds the environments and forks;
its subclasses say how a slot is made and what the fork request asks for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from abc import abstractmethod
from pathlib import Path
from typing import Any

from sessionpool import errors
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.sandbox import runtimes
from sessionpool.sandbox.backend import Backend, Slot
from sessionpool.sandbox.process import KernelProcess, ZygoteHandle, ZygoteRetired
from sessionpool.sandbox.runtimes import NODE_KERNEL, Runtime
from sessionpool.types import RuntimeInfo

log = logging.getLogger("sessionpool.sandbox")

KERNEL_READY_TIMEOUT = 30.0
#: runtime, image, preload list, max children, network or not, memory_merge
ZygoteKey = tuple[str, str, tuple[str, ...], int, bool, str]
#: a fork request that meets a retired zygote asks its successor, this many times at most
SPAWN_ATTEMPTS = 8


def thread_env() -> dict[str, str]:
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


class ZygoteSet:
    """The zygote of one template (preload list): rotated after N children, restarted on death."""

    def __init__(
        self,
        preload: tuple[str, ...],
        max_children: int,
        config: dict[str, Any],
        env: dict[str, str],
        command: list[str],
    ) -> None:
        self.preload = preload
        self.max_children = max(1, max_children)
        self.config = {**config, "preload": list(preload)}
        self.env = env
        self.command = command
        self.current: ZygoteHandle | None = None
        self.retired: list[ZygoteHandle] = []
        self._starting: asyncio.Task[ZygoteHandle] | None = None

    async def get(self) -> ZygoteHandle:
        """The zygote to fork from, with one fork claimed on it (the caller forks, then calls
        ``release``). Claims count toward max_children with the live children: spawns made at
        once cannot all pass the check before any of them has forked (a burst of 500 went to
        one zygote of max 200). A full zygote retires once its claimed forks are answered."""
        while True:
            z = self.current
            if z is not None and not z.dead and not z.retired and not z.retiring:
                if len(z.live) + z.claimed < self.max_children:
                    z.claimed += 1
                    return z
                z.retiring = True
                self.retired.append(z)
                if not z.claimed:
                    z.retire()
            self.current = None
            if self._starting is None:
                self._starting = asyncio.create_task(self._start())
            try:
                await asyncio.shield(self._starting)  # then claim on it, if still room
            finally:
                if self._starting is not None and self._starting.done():
                    self._starting = None

    @staticmethod
    def release(z: ZygoteHandle) -> None:
        """A fork claimed by ``get`` is over (forked or failed)."""
        z.claimed -= 1
        if z.retiring and not z.claimed and not z.retired:
            z.retire()

    async def _start(self) -> ZygoteHandle:
        z = ZygoteHandle(self.config, self.env, self.command)
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


class ZygoteBackend(Backend):
    """A backend whose kernels are forked by zygotes; the data directory holds workspaces."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve() if config.data_dir.exists() else config.data_dir
        self.workspaces = self.data_dir / "workspaces"
        self._zygotes: dict[ZygoteKey, ZygoteSet] = {}
        self._runtimes: dict[str, Runtime] = {}
        self.instance = f"sessionpool-{os.getpid()}-{secrets.token_hex(3)}"

    async def close(self) -> None:
        for zs in self._zygotes.values():
            zs.close()
        self._zygotes.clear()

    def runtime(self, pool: PoolConfig) -> Runtime:
        """The pool's runtime (its manifest, read once). ConfigError names the build command."""
        rt = self._runtimes.get(pool.runtime)
        if rt is None:
            rt = self._runtimes[pool.runtime] = Runtime.load(self.config.runtimes_dir, pool.runtime)
        return rt

    def runtime_info(self, pool: PoolConfig) -> RuntimeInfo:
        return runtimes.describe(self.config.runtimes_dir, pool)

    @staticmethod
    def _zygote_key(pool: PoolConfig, rt: Runtime) -> ZygoteKey:
        """Pools with equal keys share zygotes: same runtime, image and preload list, and
        network or not (a zygote of a pool with network holds the egress CA bundle its
        sessions trust; one without network has none), and memory_merge (which the zygote
        applies to itself before it forks)."""
        preload = pool.preload if rt.kind == "python" else ()
        return (
            rt.name,
            pool.image,
            preload,
            pool.zygote_max_children,
            pool.network != "off",
            pool.memory_merge,
        )

    def zygote_set(self, pool: PoolConfig) -> ZygoteSet | None:
        """The zygotes serving ``pool``, once it has spawned a session."""
        return self._zygotes.get(self._zygote_key(pool, self.runtime(pool)))

    async def spawn(self, pool: PoolConfig, slot: Slot) -> KernelProcess:
        """Fork a kernel for ``slot`` from the pool's zygote and wait until it is serving."""
        rt = self.runtime(pool)
        key = self._zygote_key(pool, rt)
        preload = key[2]
        zs = self._zygotes.get(key)
        if zs is None:
            command = await self._zygote_command(rt, pool)
            config = {
                **self._zygote_config(pool, rt),
                "exec": rt.kind != "python",
                "memory_merge": pool.memory_merge,
            }
            zs = self._zygotes[key] = ZygoteSet(
                preload, pool.zygote_max_children, config, self._zygote_env(), command
            )
        request = self._spawn_request(slot, pool, rt)
        for _ in range(SPAWN_ATTEMPTS):
            zygote = await zs.get()
            try:
                fds = self._spawn_fds(slot)
                try:
                    kernel = await zygote.spawn(request, fds)
                    break
                finally:
                    for fd in fds:
                        os.close(fd)
            except ZygoteRetired:
                continue  # retired meanwhile: the next get() returns its successor
            finally:
                zs.release(zygote)
        else:
            raise errors.SandboxError(
                "zygotes kept retiring before forking; raise zygote_max_children"
            )
        try:
            await self._after_fork(slot, kernel)
        except BaseException:
            kernel.close()
            raise
        return kernel

    # -- what subclasses decide -------------------------------------------------------------------

    @abstractmethod
    def _spawn_request(self, slot: Slot, pool: PoolConfig, runtime: Runtime) -> dict[str, Any]:
        """The zygote's fork request for ``slot`` (docs in sandbox/zygote.py)."""

    def _spawn_fds(self, slot: Slot) -> list[int]:
        """Descriptors the fork request carries (fresh for each attempt; closed after it)."""
        return []

    @abstractmethod
    async def _zygote_command(self, runtime: Runtime, pool: PoolConfig) -> list[str]:
        """The argv that starts a zygote for this runtime (``{fd}``: its control socket)."""

    async def _after_fork(self, slot: Slot, kernel: KernelProcess) -> None:
        await kernel.connect(1 << 20, KERNEL_READY_TIMEOUT)

    # -- shared pieces --------------------------------------------------------------------------

    def _zygote_config(self, pool: PoolConfig, runtime: Runtime) -> dict[str, Any]:
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
            **thread_env(),
        }

    def _kernel_request(
        self, runtime: Runtime, home: str, python_root: str, kernel_lib: str
    ) -> dict[str, Any]:
        """The fork request's ``env`` (and ``exec``, for a Node.js kernel): a Python runtime's
        ``bin`` (under ``python_root``) leads the PATH; Node's kernel is in ``kernel_lib``."""
        if runtime.kind == "python":
            return {"env": self._session_env(home, f"{python_root}/bin")}
        return {
            "env": self._session_env(home, None),
            "exec": [runtime.executable, f"{kernel_lib}/{NODE_KERNEL}"],
        }

    def _session_env(self, home: str, bin_dir: str | None) -> dict[str, str]:
        path = "/usr/local/bin:/usr/bin:/bin"
        return {
            "PATH": f"{bin_dir}:{path}" if bin_dir else path,
            "LANG": "C.UTF-8",
            "HOME": home,
            "TMPDIR": "/tmp",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/.matplotlib",
            "PYTHONNOUSERSITE": "1",
            "TERM": "dumb",
            **thread_env(),
        }

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir = self.data_dir.resolve()
        self.workspaces = self.data_dir / "workspaces"
        self.workspaces.mkdir(exist_ok=True, mode=0o700)
        (self.data_dir / "cache" / "matplotlib").mkdir(parents=True, exist_ok=True)

    def _new_workspace_path(self) -> Path:
        return self.workspaces / secrets.token_hex(8)
