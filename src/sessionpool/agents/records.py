"""Typed records over the store, off the event loop.

Every call runs the synchronous ``Store`` on one worker thread: the event loop never blocks on
the database, and SQLite never sees two writers. A record's row kind comes from its type
(``Record.record_kind``), so callers name the class, never the kind string.

A ``Records`` acts for one tenant (``scoped``): it writes that tenant's rows and reads nothing
else. The service's own unscoped instance (tenant None) sees every tenant's and creates nothing:
it only finds and closes the runs a stopped server left behind.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sessionpool import errors
from sessionpool.agents.store import Store
from sessionpool.agents.types import Page, PageRequest, Record

R = TypeVar("R")
K = TypeVar("K", bound=Record)


class Records:
    def __init__(
        self, store: Store, tenant: str | None = None, executor: ThreadPoolExecutor | None = None
    ) -> None:
        self.store = store
        #: whose records these are; None: every tenant's (the service's housekeeping only)
        self.tenant = tenant
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="agents-db")

    def scoped(self, tenant: str) -> Records:
        """``tenant``'s records, on the same database thread."""
        return Records(self.store, tenant, self._executor)

    def _owner(self) -> str:
        if self.tenant is None:
            raise RuntimeError("records without a tenant cannot write new records")
        return self.tenant

    async def _run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def open(self) -> None:
        """Open (and create) the database."""
        await self._run(self.store.open)

    async def close(self) -> None:
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    async def load(self, cls: type[K], record_id: str, noun: str | None = None) -> K:
        """The record, or ObjectNotFound naming it ``noun`` (the type's own by default)."""
        doc = await self._run(self.store.get, cls.record_kind, record_id, tenant=self.tenant)
        if doc is None:
            raise errors.ObjectNotFound(noun or cls.noun, record_id)
        return cls.model_validate(doc)

    async def insert(
        self, record: Record, parent: str | None = None, tag: str | None = None
    ) -> None:
        await self._run(
            self.store.insert,
            record.record_kind,
            record.id,
            record.created_at,
            record.model_dump(mode="json"),
            parent,
            tag,
            tenant=self._owner(),
        )

    async def save(self, record: Record) -> None:
        await self._run(
            self.store.update,
            record.record_kind,
            record.id,
            record.model_dump(mode="json"),
            tenant=self.tenant,
        )

    async def page(
        self,
        cls: type[K],
        page: PageRequest,
        parent: str | None = None,
        tag: str | None = None,
        exclude_tag: str | None = None,
    ) -> Page[K]:
        if not 1 <= page.limit <= 100:
            raise errors.InvalidArgument("limit must be between 1 and 100", "limit")
        docs, more = await self._run(
            self.store.page, cls.record_kind, page, parent, tag, exclude_tag, tenant=self.tenant
        )
        return Page[cls](items=[cls.model_validate(d) for d in docs], has_more=more)  # type: ignore[valid-type]

    async def all(self, cls: type[K], parent: str | None = None, tag: str | None = None) -> list[K]:
        """Every matching record, oldest first."""
        docs = await self._run(self.store.all, cls.record_kind, parent, tag, tenant=self.tenant)
        return [cls.model_validate(d) for d in docs]

    async def delete(self, cls: type[Record], record_id: str) -> bool:
        """Whether there was one to delete."""
        return await self._run(self.store.delete, cls.record_kind, record_id, tenant=self.tenant)

    async def delete_children(self, cls: type[Record], parent: str) -> list[str]:
        """Delete every ``cls`` record under ``parent``; their ids."""
        return await self._run(
            self.store.delete_children, cls.record_kind, parent, tenant=self.tenant
        )

    # --- blobs (a file's bytes, keyed by its id) -------------------------------------------------

    async def put_blob(self, blob_id: str, data: bytes) -> None:
        await self._run(self.store.put_blob, blob_id, data)

    async def get_blob(self, blob_id: str) -> bytes | None:
        return await self._run(self.store.get_blob, blob_id, tenant=self.tenant)

    async def delete_blob(self, blob_id: str) -> None:
        await self._run(self.store.delete_blob, blob_id)
