"""Executions remembered for ``GET executions/<id>``: what the executions family looks up.

Bounded by count and by bytes (outputs dominate), the oldest forgotten first; a session's are
forgotten when it is deleted. An asynchronous execution's task is held here too, so a forgotten
or shut-down one is cancelled rather than left running.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from sessionpool.faces.aca import models

#: executions remembered, oldest forgotten first past either bound
EXECUTIONS_KEPT = 10_000
EXECUTIONS_KEPT_BYTES = 64 * 1024 * 1024

Key = tuple[str, str, str]  # pool, identifier, execution id


@dataclass
class Execution:
    pool: str
    identifier: str
    resource: models._Wire
    task: asyncio.Task[None] | None = None
    #: approximate bytes held (the outputs dominate)
    weight: int = 0
    execution_id: str = ""


def weight(resource: models._Wire) -> int:
    result = getattr(resource, "result", None)
    if result is None:
        return 256
    value = getattr(result, "executionResult", "")
    held = len(value) if isinstance(value, str) else len(value.base64_data)
    return 256 + len(result.stdout) + len(result.stderr) + held


class ExecutionStore:
    def __init__(
        self, max_count: int = EXECUTIONS_KEPT, max_bytes: int = EXECUTIONS_KEPT_BYTES
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._records: collections.OrderedDict[Key, Execution] = collections.OrderedDict()
        self._bytes = 0

    def get(self, pool: str, identifier: str, execution_id: str) -> Execution | None:
        return self._records.get((pool, identifier, execution_id))

    def remember(self, execution_id: str, record: Execution) -> None:
        record.execution_id = execution_id
        key = (record.pool, record.identifier, execution_id)
        old = self._records.pop(key, None)
        if old is not None:
            self._bytes -= old.weight
        record.weight = weight(record.resource)
        self._records[key] = record
        self._bytes += record.weight
        while len(self._records) > 1 and (
            len(self._records) > self.max_count or self._bytes > self.max_bytes
        ):
            _, evicted = self._records.popitem(last=False)
            self._bytes -= evicted.weight
            if evicted.task is not None and not evicted.task.done():
                evicted.task.cancel()

    def update(self, record: Execution, resource: models._Wire) -> None:
        """``record`` finished (or changed): keep its new resource, weighed again."""
        record.resource = resource
        key = (record.pool, record.identifier, record.execution_id)
        if self._records.get(key) is not record:
            return  # forgotten meanwhile
        new = weight(resource)
        self._bytes += new - record.weight
        record.weight = new

    def forget_session(self, pool: str, identifier: str) -> None:
        for key in [k for k in self._records if k[0] == pool and k[1] == identifier]:
            self._bytes -= self._records.pop(key).weight

    async def close(self) -> None:
        """Cancel asynchronous executions still running (their sessions are closing)."""
        tasks = [r.task for r in self._records.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
