"""One pool: identifier -> session, a warm ready stack, refill, limits and the cooldown reaper.

Allocation is a pop from the warm ready stack when a session is ready (the kernel is forked,
jailed, attached to its cgroups and has run a throwaway cell); an empty stack falls back to an
on-demand fork.
Everything slow (forks, cgroup attaches, teardown) happens in background tasks. When memory
admission would refuse an on-demand fork while the refill is already making a session (admitted
before), the allocation waits for that session instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque

from sessionpool import errors
from sessionpool.config import PoolConfig
from sessionpool.egress.proxy import EgressProxy
from sessionpool.sandbox.backend import Backend, Slot
from sessionpool.session import Session
from sessionpool.telemetry import PoolStats
from sessionpool.types import RuntimeInfo

log = logging.getLogger("sessionpool.pool")

MAX_IDENTIFIER = 256
REFILL_RETRY_SECONDS = 1.0
#: the longest a refill waits for running cells before forking anyway (no starvation)
REFILL_YIELD_SECONDS = 0.05
#: how long after an on-demand allocation the next one's slot is made (``Pool._make_spare``)
SPARE_DELAY_SECONDS = 0.01
#: the longest an allocation refused by memory admission waits for a refill's session
REFILL_WAIT_SECONDS = 30.0


#: the characters an identifier may not hold (one regex search on every request, not a loop)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_identifier(pool: str, identifier: str) -> None:
    if not identifier or len(identifier) > MAX_IDENTIFIER:
        raise errors.InvalidIdentifier(
            pool, identifier[:64], f"identifiers are 1 to {MAX_IDENTIFIER} characters long"
        )
    if _CONTROL.search(identifier) is not None:
        raise errors.InvalidIdentifier(
            pool, identifier[:64].encode("unicode_escape").decode(), "control characters"
        )


#: memory a session being forked is assumed to take until MemAvailable shows it: about what a
#: fresh session costs (13 MB measured). Not more: a burst of 500 must still fit on 24 GiB.
CREATING_ESTIMATE = 16 * 1024 * 1024


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Pool:
    def __init__(
        self,
        config: PoolConfig,
        backend: Backend,
        memory_reserve: int,
        creating_estimate: int = CREATING_ESTIMATE,
    ) -> None:
        #: the engine's egress proxy (set before ``start`` when a pool has network)
        self.egress: EgressProxy | None = None
        self.config = config
        self.name = config.name
        self.backend = backend
        self.memory_reserve = memory_reserve
        self.creating_estimate = creating_estimate
        #: sessions admitted whose memory MemAvailable does not show yet (being forked)
        self._creating = 0
        self._sessions: dict[str, Session] = {}
        self._allocating: dict[str, asyncio.Future[Session]] = {}
        self._ready: deque[Session] = deque()
        self._refill_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._filling = 0
        #: sessions the refill loop is making (each admitted already)
        self._refilling = 0
        #: allocations waiting for the refill's next session (admission refused them a fork)
        self._waiters: deque[asyncio.Future[Session]] = deque()
        #: a slot (uid, workspace, cgroups; no process, no memory) made ahead for the next
        #: on-demand session, once this pool has made one: ~1 ms that allocation would wait for
        self._spare: Slot | None = None
        self._spare_task: asyncio.Task[None] | None = None
        self.last_refill_error: str | None = None
        #: allocations here, and executions, timeouts, kills and uploads of its sessions
        self.stats = PoolStats()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the zygote and the first ready session; a jail failure surfaces here."""
        if self.config.ready_sessions > 0:
            self._ready.append(
                await Session.create(
                    self.config, self.backend, stats=self.stats, egress=self.egress
                )
            )
        self._tasks.append(asyncio.create_task(self._refill_loop(), name=f"refill:{self.name}"))
        self._tasks.append(asyncio.create_task(self._reaper_loop(), name=f"reaper:{self.name}"))

    async def close(self, deadline_s: float = 10.0) -> None:
        self._closing = True
        self._refuse_waiters(errors.PoolClosed(self.name))
        tasks = self._tasks + ([self._spare_task] if self._spare_task is not None else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        spare, self._spare = self._spare, None
        if spare is not None:
            await asyncio.to_thread(self.backend.release_slot, spare)
        end = time.monotonic() + deadline_s
        # allocations in flight finish (and close themselves, seeing _closing) first
        while self._allocating and time.monotonic() < end:
            await asyncio.sleep(0.01)
        while any(s.busy for s in self._sessions.values()) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        sessions = list(self._sessions.values()) + list(self._ready)
        self._sessions.clear()
        self._ready.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    @property
    def spare_slot(self) -> Slot | None:
        """The slot made ahead for the next on-demand session, if there is one."""
        return self._spare

    def runtime(self) -> RuntimeInfo:
        return self.backend.runtime_info(self.config)

    def is_ready(self) -> bool:
        return len(self._ready) >= self.config.ready_sessions

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def states(self) -> dict[str, int]:
        """Sessions by state (for the metrics): ``ready`` (warm, not yet allocated),
        ``starting`` (being forked), ``busy`` (running a call), ``idle`` (allocated, between
        calls)."""
        busy = sum(s.busy for s in self._sessions.values())
        return {
            "ready": len(self._ready),
            "starting": self._creating,
            "busy": busy,
            "idle": len(self._sessions) - busy,
        }

    async def list_sessions(self) -> list[Session]:
        return self.sessions()

    # -- allocation -----------------------------------------------------------------------------

    def get(self, identifier: str) -> Session | None:
        session = self._sessions.get(identifier)
        if session is not None:
            session.touch()
        return session

    async def lookup(self, identifier: str) -> Session | None:
        return self.get(identifier)

    async def acquire(self, identifier: str) -> Session:
        """The session named ``identifier``, allocating it on first use."""
        validate_identifier(self.name, identifier)
        session = self.get(identifier)
        if session is not None:
            return session
        if self._closing:
            raise errors.PoolClosed(self.name)
        pending = self._allocating.get(identifier)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self._sessions) + len(self._allocating) >= self.config.max_sessions:
            self.stats.allocations["refused"] += 1
            raise errors.PoolAtCapacity(
                self.name,
                f"max_sessions ({self.config.max_sessions}) sessions are allocated",
                "max_sessions",
            )
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._allocating[identifier] = future
        try:
            session = await self._take()
            if self._closing:  # the pool closed while this session was being made
                await session.close()
                raise errors.PoolClosed(self.name)
            session.identifier = identifier
            session.touch()
            self._sessions[identifier] = session
            future.set_result(session)
            return session
        except BaseException as exc:
            if isinstance(exc, errors.PoolAtCapacity):  # the memory reserve
                self.stats.allocations["refused"] += 1
            elif isinstance(exc, Exception) and not isinstance(exc, errors.PoolClosed):
                self.stats.allocations["failed"] += 1  # the sandbox could not start one
            future.set_exception(exc)
            future.exception()  # mark retrieved: other waiters re-raise it themselves
            raise
        finally:
            del self._allocating[identifier]
            self._refill_wakeup.set()

    async def _take(self) -> Session:
        while self._ready:
            # the newest first: its warm-up ran last, so more of its pages and page tables are
            # still in the CPU's caches (a first result ~0.1 ms sooner, paired); the oldest wait,
            # and are the ones page merging has had time to share. But the oldest goes first
            # when its zygote has retired: that zygote exits only after its last session
            oldest = self._ready[0].kernel
            session = self._ready.popleft() if oldest and oldest.outdated() else self._ready.pop()
            if session.kernel is not None and session.kernel.alive():
                self.stats.allocations["warm"] += 1
                return session
            await session.close()
        try:
            self._admit()
        except errors.PoolAtCapacity:
            if not self._refilling:
                raise
            return await self._wait_for_refill()
        self._creating += 1
        slot, self._spare = self._spare, None
        try:
            session = await Session.create(
                self.config,
                self.backend,
                warm_up=False,
                stats=self.stats,
                egress=self.egress,
                slot=slot,
            )
            self.stats.allocations["on_demand"] += 1
            self._make_spare()
            return session
        except errors.ServiceError:
            raise
        except Exception as exc:  # a backend fault that is not typed yet: still not the user's
            raise errors.SandboxError(f"a new session could not start: {exc}") from exc
        finally:
            self._creating -= 1

    def _make_spare(self) -> None:
        """Make the next on-demand session's slot in the background."""
        if self._spare is None and not self._closing and self._spare_task is None:
            self._spare_task = asyncio.create_task(self._new_spare(), name=f"spare:{self.name}")

    async def _new_spare(self) -> None:
        try:
            # after the cell its allocation was for, not during it (that cell starts running
            # a moment after the allocation returns)
            await asyncio.sleep(SPARE_DELAY_SECONDS)
            await self._yield_to_users()
            try:
                slot = await self.backend.create_slot(self.config)
            except Exception:  # the next on-demand session makes its own, and says why
                return
            if self._closing or self._spare is not None:
                await asyncio.to_thread(self.backend.release_slot, slot)
                return
            self._spare = slot
        finally:
            self._spare_task = None

    async def _wait_for_refill(self) -> Session:
        """The refill's next session, for an allocation memory admission refused a fork of its
        own: that session was admitted already, so taking it adds nothing to the machine's
        memory. PoolAtCapacity again if the refill fails or stops, or after
        ``REFILL_WAIT_SECONDS``."""
        waiter: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._refill_wakeup.set()
        try:
            session = await asyncio.wait_for(waiter, REFILL_WAIT_SECONDS)
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._ready.append(waiter.result())  # handed over as this call gave up
            if isinstance(exc, TimeoutError):
                self._admit()  # refuses with the figures of now (unless memory came back)
                raise errors.PoolAtCapacity(
                    self.name,
                    f"no session came from the refill in {REFILL_WAIT_SECONDS:g} s",
                    "memory_reserve_bytes",
                ) from None
            raise
        self.stats.allocations["warm"] += 1  # made (and warmed) by the refill
        return session

    def _hand_to_waiter(self, session: Session) -> bool:
        """Give a refill's session to the oldest allocation waiting for one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(session)
                return True
        return False

    def _refuse_waiters(self, exc: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    def _admit(self) -> None:
        """Refuse a new session before the machine runs out of memory, not after.

        Sessions admitted a moment ago are still being forked and MemAvailable does not show
        them yet: each counts ``creating_estimate`` against what is available, or a burst of
        concurrent allocations would all pass the same check and overshoot the reserve.
        """
        available = mem_available()
        if available is None:
            return
        expected = available - self._creating * self.creating_estimate
        if expected < self.memory_reserve:
            raise errors.PoolAtCapacity(
                self.name,
                f"only {available // (1024 * 1024)} MiB of memory is available, "
                f"{self._creating} session(s) being created (reserve "
                f"{self.memory_reserve // (1024 * 1024)} MiB)",
                "memory_reserve_bytes",
            )

    async def delete(self, identifier: str) -> bool:
        session = self._sessions.pop(identifier, None)
        if session is None:
            return False
        await session.close()
        self._refill_wakeup.set()
        return True

    # -- background -----------------------------------------------------------------------------

    async def _yield_to_users(self) -> None:
        """Forking a refill competes for the CPU with the cell a user is waiting for (two
        cores): wait, briefly, until no session of this pool is running code."""
        deadline = time.monotonic() + REFILL_YIELD_SECONDS
        while time.monotonic() < deadline and any(s.busy for s in self._sessions.values()):
            await asyncio.sleep(0.002)

    async def _refill_loop(self) -> None:
        while not self._closing:
            # allocations waiting for a session are demand beyond the ready depth
            while (
                len(self._ready) < self.config.ready_sessions + len(self._waiters)
                and not self._closing
            ):
                if not self._waiters:  # a waiting allocation is a user waiting too
                    await self._yield_to_users()
                try:
                    self._admit()
                    self._creating += 1
                    self._refilling += 1
                    try:
                        session = await Session.create(
                            self.config, self.backend, stats=self.stats, egress=self.egress
                        )
                    finally:
                        self._creating -= 1
                        self._refilling -= 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.last_refill_error = str(exc)
                    log.warning("pool %s: refill failed: %s", self.name, exc)
                    refusal = exc if isinstance(exc, errors.ServiceError) else None
                    self._refuse_waiters(
                        refusal or errors.SandboxError(f"a new session could not start: {exc}")
                    )
                    await asyncio.sleep(REFILL_RETRY_SECONDS)
                    continue
                self.last_refill_error = None
                if self._closing:
                    await session.close()
                    return
                if not self._hand_to_waiter(session):
                    self._ready.append(session)
            self._refill_wakeup.clear()
            await self._refill_wakeup.wait()

    async def _reaper_loop(self) -> None:
        interval = max(0.2, min(5.0, self.config.cooldown_seconds / 4))
        while not self._closing:
            await asyncio.sleep(interval)
            now = time.time()
            expired = [
                ident for ident, s in self._sessions.items() if not s.busy and s.expires_at <= now
            ]
            for ident in expired:
                log.info("pool %s: session %s cooled down", self.name, ident)
                with contextlib.suppress(Exception):
                    await self.delete(ident)
