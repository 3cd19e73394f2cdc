"""Per-tenant quotas, checked at the faces before work starts: live sessions, executions per
second, upload bytes per hour, agent runs in progress.

Each refusal is :class:`~sessionpool.errors.TenantQuotaExceeded` (429 with ``Retry-After``,
naming the quota). The counters are per tenant, so a tenant that bursts spends its own budget
and nobody else's: that is what keeps one tenant from starving another's allocations, together
with ``max_sessions`` (a tenant cannot hold more than its share of a pool).

Rates are token buckets refilled continuously (no window edges to time a burst against);
executions may burst one second's worth. The state lives in this process: in cluster mode the
gateway holds it, which is where every request passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from sessionpool.config import TenantQuotas
from sessionpool.errors import TenantQuotaExceeded
from sessionpool.telemetry import QUOTAS


@dataclass
class _Bucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` tokens are there (0: now)."""
        self._refill(time.monotonic())
        missing = amount - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        self._refill(time.monotonic())
        self.tokens -= amount


@dataclass
class _TenantState:
    executions: _Bucket | None = None
    uploads: _Bucket | None = None
    #: sessions being allocated now (counted until they show in the pool's listing)
    allocating: int = 0
    runs: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Quotas:
    """The quotas of every tenant, and their counters."""

    def __init__(
        self, default: TenantQuotas | None = None, tenants: Mapping[str, TenantQuotas] = {}
    ) -> None:
        self.default = default or TenantQuotas()
        self.tenants = dict(tenants)
        self._state: dict[str, _TenantState] = {}
        #: refusals by quota, for /metrics (no tenant label: tenants are unbounded)
        self.refusals = dict.fromkeys(QUOTAS, 0)

    def _refuse(self, tenant: str, quota: str, detail: str, retry_after: float) -> NoReturn:
        self.refusals[quota] += 1
        raise TenantQuotaExceeded(tenant, quota, detail, retry_after)

    def of(self, tenant: str) -> TenantQuotas:
        return self.tenants.get(tenant, self.default)

    def _tenant(self, tenant: str) -> _TenantState:
        state = self._state.get(tenant)
        if state is None:
            state = self._state[tenant] = _TenantState()
        return state

    def execution(self, tenant: str) -> None:
        """One execution is about to start."""
        rate = self.of(tenant).executions_per_second
        if rate <= 0:
            return
        state = self._tenant(tenant)
        if state.executions is None:
            state.executions = _Bucket(capacity=max(1.0, rate), rate=rate)
        wait = state.executions.wait_for(1.0)
        if wait > 0:
            self._refuse(tenant, "executions_per_second", f"{rate:g} executions per second", wait)
        state.executions.take(1.0)

    def upload_allowed(self, tenant: str, declared: int | None) -> None:
        """An upload of ``declared`` bytes (None: not said) may start: the budget is not spent
        and, if the size is known, it fits."""
        per_hour = self.of(tenant).upload_bytes_per_hour
        if per_hour <= 0:
            return
        bucket = self._upload_bucket(tenant, per_hour)
        need = max(1.0, float(declared or 0))
        if need > bucket.capacity:
            self._refuse(
                tenant,
                "upload_bytes_per_hour",
                f"this upload of {declared} bytes is more than the {per_hour} bytes per hour "
                "the tenant may upload",
                3600.0,
            )
        wait = bucket.wait_for(need)
        if wait > 0:
            self._refuse(tenant, "upload_bytes_per_hour", f"{per_hour} bytes per hour", wait)

    def uploaded(self, tenant: str, size: int) -> None:
        """``size`` bytes were stored (charged after the fact: a stream's size is known last)."""
        per_hour = self.of(tenant).upload_bytes_per_hour
        if per_hour > 0 and size > 0:
            self._upload_bucket(tenant, per_hour).take(float(size))

    def _upload_bucket(self, tenant: str, per_hour: int) -> _Bucket:
        state = self._tenant(tenant)
        if state.uploads is None:
            state.uploads = _Bucket(capacity=float(per_hour), rate=per_hour / 3600.0)
        return state.uploads

    @contextlib.asynccontextmanager
    async def new_session(
        self, tenant: str, count: Callable[[], Awaitable[int]]
    ) -> AsyncIterator[None]:
        """Around the allocation of a session the tenant does not have yet: refused when its
        live sessions (``count()``) and those being allocated reach ``max_sessions``."""
        limit = self.of(tenant).max_sessions
        if limit <= 0:
            yield
            return
        state = self._tenant(tenant)
        async with state.lock:  # one check at a time, so a burst cannot all pass together
            live = await count()
            if live + state.allocating >= limit:
                self._refuse(
                    tenant,
                    "max_sessions",
                    f"{limit} live sessions; delete sessions or wait for their cooldown",
                    5.0,
                )
            state.allocating += 1
        try:
            yield
        finally:
            state.allocating -= 1

    def admit_run(self, tenant: str) -> Callable[[], None]:
        """An agent run or response starts: counted until the returned release is called
        (once, when it ends however it ends)."""
        limit = self.of(tenant).agents_runs
        state = self._tenant(tenant)
        if 0 < limit <= state.runs:
            self._refuse(tenant, "agents_runs", f"{limit} agent runs in progress at once", 5.0)
        state.runs += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                state.runs -= 1

        return release
