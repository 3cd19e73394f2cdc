"""The engine: one sandbox backend and the configured pools. The server's single entry point."""

from __future__ import annotations

import asyncio
import logging
import resource

from sessionpool import errors
from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.egress.policy import pool_policy
from sessionpool.egress.proxy import EgressProxy
from sessionpool.pool import Pool
from sessionpool.sandbox import ksm
from sessionpool.sandbox.backend import Backend
from sessionpool.sandbox.backends import make_backend

log = logging.getLogger("sessionpool.engine")


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        pools: list[PoolConfig] | None = None,
        *,
        backend: Backend | None = None,
    ) -> None:
        """``backend`` overrides the one ``config`` names (tests pass ``FakeBackend``)."""
        self.config = config
        pool_configs = pools or [PoolConfig()]
        names = [p.name for p in pool_configs]
        if len(set(names)) != len(names):
            raise errors.ConfigError(f"pool names must be unique, got {names}")
        self.backend: Backend = backend if backend is not None else make_backend(config)
        self.pools: dict[str, Pool] = {
            p.name: Pool(p, self.backend, config.memory_reserve_bytes) for p in pool_configs
        }
        self.started = False
        #: the egress proxy, when a pool's sessions have network (``network`` not ``off``)
        self.egress: EgressProxy | None = None

    def _start_egress(self) -> None:
        """The proxy that is the only way out of sessions with network; checks every pool's
        egress settings first, so a bad rule stops the start, naming the pool."""
        wanted = [p for p in self.pools.values() if p.config.network != "off"]
        for pool in wanted:
            try:
                pool_policy(pool.config)
            except ValueError as exc:
                raise errors.ConfigError(f"pool {pool.name!r}: egress: {exc}") from None
        if not wanted:
            return
        if not self.backend.isolated:
            log.warning(
                "pools %s have network %s, but the %s backend does not isolate sessions: their "
                "network is the host's, and no egress policy is enforced",
                [p.name for p in wanted],
                sorted({p.config.network for p in wanted}),
                self.backend.name,
            )
            return
        try:
            proxy = EgressProxy(
                self.config.data_dir / "egress",
                self.config.egress_hosts,
                self.config.egress_allow_networks,
                self.config.egress_trust_ca_files,
            )
            proxy.start()
        except (OSError, ValueError) as exc:
            raise errors.ConfigError(f"the egress proxy could not start: {exc}") from None
        self.egress = proxy
        self.backend.ca_bundle = proxy.bundle
        for pool in wanted:
            pool.egress = proxy

    def _start_memory_merge(self) -> None:
        """Pools whose memory_merge is not ``off`` need ksmd running (machine-wide): start it
        if it is stopped, or refuse to start, naming those pools, if the kernel has no KSM."""
        wanted = [p.name for p in self.pools.values() if p.config.memory_merge != "off"]
        if not wanted:
            return
        done = ksm.ensure_running(
            wanted, self.config.ksm_pages_to_scan, self.config.ksm_sleep_millisecs
        )
        log.info("%s; for the memory_merge of pools %s", done, wanted)

    async def start(self) -> None:
        """Check the host (fail closed), start zygotes and the first warm sessions."""
        # every session holds a socket, a pidfd and a uid lock: allow thousands of descriptors
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self._start_egress()
        self._start_memory_merge()
        await self.backend.start()
        try:
            for pool in self.pools.values():
                await pool.start()
        except Exception as exc:
            await self.close()
            # the host passed the checks, yet no jailed session starts: fail closed
            typed = isinstance(exc, errors.ServiceError)
            broken = not typed or isinstance(exc, errors.SandboxError)
            if isinstance(exc, errors.SandboxUnavailable) or not (broken and self.backend.isolated):
                raise
            detail = exc.detail if isinstance(exc, errors.SandboxError) else str(exc)
            missing = [f"a jailed session could not start: {detail}"]
            raise errors.SandboxUnavailable(missing) from exc
        self.started = True

    def pool(self, name: str) -> Pool:
        try:
            return self.pools[name]
        except KeyError:
            raise errors.PoolNotFound(name) from None

    def ready(self) -> bool:
        return self.started and all(p.is_ready() for p in self.pools.values())

    async def close(self, deadline_s: float = 10.0) -> None:
        """Let executions in flight finish up to the deadline, then end every session."""
        await asyncio.gather(
            *(p.close(deadline_s) for p in self.pools.values()), return_exceptions=True
        )
        await self.backend.close()
        if self.egress is not None:
            self.egress.close()
            self.egress = None
        self.started = False
