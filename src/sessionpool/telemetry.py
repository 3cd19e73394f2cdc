"""What the layers below the server count for operations, as plain numbers.

The pool, the session and the agents service update these where things happen (an allocation,
an execution, a kill, a model call); the server's ``/metrics`` reads them when it is scraped
(``server/observe.py``). Nothing here knows Prometheus, so the layers below the server import
no metrics library, and recording costs a few integer additions: everything runs on the event
loop's thread, so no lock is taken.

``FILES_WRITTEN`` is the audit log's one note from below: the files a request wrote (an upload's
names are in its body, which only the session sees whole).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from contextvars import ContextVar

#: bucket bounds (seconds) of a cell's execution: a trivial cell takes under a millisecond, a
#: long one the pool's whole timeout (at most minutes)
EXECUTION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
#: bucket bounds (seconds) of one call to the model endpoint
MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

#: how an execution ended (``types.ExecutionStatus`` values)
EXECUTION_STATUSES = ("ok", "error", "timeout", "lost")
#: where an allocated session came from, or why none was: ``warm`` (the ready queue),
#: ``on_demand`` (forked for the call), ``refused`` (max_sessions or the memory reserve),
#: ``failed`` (the sandbox could not start one)
ALLOCATION_OUTCOMES = ("warm", "on_demand", "refused", "failed")
#: why an interpreter ended: ``timeout`` (it ignored the interrupt at its deadline and was
#: killed), ``oom`` (the kernel's OOM killer), ``exited`` (it ended by itself otherwise),
#: ``protocol`` (a malformed reply), ``abandoned`` (its caller left and it would not stop)
KILL_CAUSES = ("timeout", "oom", "exited", "protocol", "abandoned")
#: what a deadline did: ``interrupted`` (KeyboardInterrupt, state kept), ``killed`` (state lost)
TIMEOUT_ACTIONS = ("interrupted", "killed")
#: the per-tenant quotas (``config.TenantQuotas``), as refusals are counted
QUOTAS = ("max_sessions", "executions_per_second", "upload_bytes_per_hour", "agents_runs")
#: terminal statuses of an agents run
RUN_STATUSES = ("completed", "failed", "cancelled", "expired", "incomplete")

#: the files (paths under /mnt/data) the current request wrote; None outside an audited request
FILES_WRITTEN: ContextVar[list[str] | None] = ContextVar("sessionpool_files_written", default=None)


class Latency:
    """A histogram as plain counts: observing is one bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        #: per bucket, not cumulative; the last one is past the largest bound
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


def _zeros(names: Iterable[str]) -> dict[str, int]:
    # every label value present from the start, so a rate over a quiet series is 0, not absent
    return dict.fromkeys(names, 0)


class PoolStats:
    """One pool's counters, shared by the pool and each of its sessions."""

    __slots__ = (
        "allocations",
        "execution_seconds",
        "executions",
        "kills",
        "timeouts",
        "upload_bytes",
        "uploads",
    )

    def __init__(self) -> None:
        self.allocations = _zeros(ALLOCATION_OUTCOMES)
        self.executions = _zeros(EXECUTION_STATUSES)
        #: the kernel's round trip of each execution, once its turn came
        self.execution_seconds = Latency(EXECUTION_BUCKETS)
        self.timeouts = _zeros(TIMEOUT_ACTIONS)
        self.kills = _zeros(KILL_CAUSES)
        self.uploads = 0
        self.upload_bytes = 0


class AgentStats:
    """The agents service's counters: runs and the model endpoint's latency."""

    __slots__ = ("model_seconds", "runs", "runs_started")

    def __init__(self) -> None:
        self.runs_started = 0
        #: runs that ended, by terminal status
        self.runs = _zeros(RUN_STATUSES)
        #: by outcome: ``ok``, ``error`` (an HTTP error, a timeout, a malformed reply)
        self.model_seconds = {"ok": Latency(MODEL_BUCKETS), "error": Latency(MODEL_BUCKETS)}

    def run_ended(self, status: str) -> None:
        self.runs[status] = self.runs.get(status, 0) + 1

    @property
    def runs_in_progress(self) -> int:
        return self.runs_started - sum(self.runs.values())
