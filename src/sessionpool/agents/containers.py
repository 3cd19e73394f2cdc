"""Containers: a session of the agents pool bound to a conversation, and the files it holds.

Every file in a container's /mnt/data is also a record with its bytes in the store, so the
container outlives its session: when the session has cooled down (or the server restarted),
``session_for`` starts a fresh one and writes the files back. Idle past its expiry, a container
is ``expired``: its session ends and its files are no longer served.

A container's session lives in the agents pool under :func:`session_key`, a name no face can
say: dynamic-sessions identifiers never hold the tenant separator, and every tenant's session
key starts with its tenant name or is the bare identifier, never with the separator. So no
client of any tenant reaches a container's interpreter through the sessions API (nor sees it
in a session listing), and the key carries the owning tenant for whoever counts its sessions.
"""

from __future__ import annotations

import asyncio
import contextlib

from sessionpool import errors, paths
from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.files import Files, clean_filename
from sessionpool.agents.records import Records
from sessionpool.agents.types import (
    Container,
    ContainerNetwork,
    ContainerStatus,
    Conversation,
    FilePurpose,
    Page,
    PageRequest,
    StoredFile,
    new_id,
    now,
)
from sessionpool.egress.policy import narrow, pool_policy
from sessionpool.pool import EngineHandle, PoolHandle, SessionHandle
from sessionpool.tenancy import SEPARATOR

#: the first component of every container session key
CONTAINER_KEYS = "agents"


def format_memory(n: int) -> str:
    """Bytes as a memory limit is written (``2g``, ``512m``; binary units, as Docker's)."""
    for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


def session_key(tenant: str, container_id: str) -> str:
    """Where ``tenant``'s container ``container_id`` keeps its session in the agents pool."""
    return f"{SEPARATOR}{CONTAINER_KEYS}{SEPARATOR}{tenant}{SEPARATOR}{container_id}"


class Containers:
    """One tenant's containers (``records`` and ``files`` are that tenant's)."""

    def __init__(
        self,
        config: AgentsConfig,
        records: Records,
        files: Files,
        engine: EngineHandle,
        pool_name: str,
        tenant: str,
        locks: dict[str, asyncio.Lock],
    ) -> None:
        self._config = config
        self._records = records
        self._files = files
        self._engine = engine
        self._pool_name = pool_name
        self._tenant = tenant
        #: one per container, shared by every view of the service: a fresh session is filled once
        self._locks = locks

    def _pool(self) -> PoolHandle:
        return self._engine.pool(self._pool_name)

    def _key(self, container: Container) -> str:
        """The container's session key, always made from its owner and id: what the record
        stores (``session_id``; containers made before tenants stored the bare id, a name the
        sessions API accepts) never decides which session a container reaches."""
        return session_key(self._tenant, container.id)

    # --- containers -----------------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str | None = None,
        file_ids: list[str] | None = None,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        memory_bytes: int | None = None,
        metadata: dict[str, str] | None = None,
        network: ContainerNetwork | None = None,
    ) -> Container:
        """A new container; ``file_ids`` are copied into its /mnt/data. ``network`` narrows its
        pool's egress (checked now: ``EgressWidens`` if it asks for more than the pool has);
        ``memory_bytes`` lowers its session's memory limit (``memory_limit``: as the client
        wrote it), refused above the pool's."""
        if network is not None:
            self.check_network(network)
        if memory_bytes is not None:
            self.check_memory(memory_bytes, memory_limit)
        sources = [await self._files.get(fid) for fid in file_ids or []]
        minutes = expires_after_minutes or self._config.container_expiry_minutes
        if minutes < 1:
            raise errors.InvalidArgument(
                "expires_after.minutes must be at least 1", "expires_after"
            )
        cid = new_id("cntr_")
        container = Container(
            id=cid,
            name=name,
            session_id=session_key(self._tenant, cid),
            expires_after_minutes=minutes,
            memory_limit=memory_limit,
            memory_bytes=memory_bytes,
            metadata=metadata or {},
            network=network,
        )
        await self._records.insert(container)
        for source in sources:
            await self.copy_in(container, source)
        return container

    # --- memory -------------------------------------------------------------------------------

    def check_memory(self, memory_bytes: int, label: str | None = None) -> None:
        """``InvalidArgument`` unless a session of the pool may be limited to ``memory_bytes``:
        a container narrows its pool's limit, never widens it."""
        ceiling = self._pool().config.limits.memory_bytes
        if not 0 < memory_bytes <= ceiling:
            asked = repr(label) if label is not None else f"{memory_bytes} bytes"
            raise errors.InvalidArgument(
                f"memory_limit {asked} is above what this server allows: a container's session "
                f"may have at most its pool's memory limit, {format_memory(ceiling)}",
                "memory_limit",
            )

    async def set_memory(
        self, container: Container, memory_bytes: int, label: str | None = None
    ) -> None:
        """Set the container's memory limit (its live session's at once, fresh ones when
        made); ``label``: as the client wrote it."""
        self.check_memory(memory_bytes, label)
        if container.memory_bytes == memory_bytes:
            return
        lock = self._locks.setdefault(container.id, asyncio.Lock())
        async with lock:
            session = await self._pool().lookup(self._key(container))
            if session is not None:
                await session.set_memory_limit(memory_bytes)
            container.memory_bytes = memory_bytes
            container.memory_limit = label
            await self._records.save(container)

    # --- network ------------------------------------------------------------------------------

    def check_network(self, network: ContainerNetwork) -> None:
        """Raises what the session would (``EgressWidens``, ``InvalidArgument``) before any
        session is taken: a container's session starts only at its first use."""
        config = self._pool().config
        narrow(config.name, pool_policy(config), network.mode, network.allow)

    def network_of(self, container: Container) -> ContainerNetwork | None:
        """The container's egress: what it asked for, else its pool's (None: the pool's
        network is unrestricted, which no narrowed form says)."""
        if container.network is not None:
            return container.network
        config = self._pool().config
        if config.network == "off":
            return ContainerNetwork(mode="off")
        if config.network == "allowlist":
            return ContainerNetwork(mode="allowlist", allow=list(config.egress.allow))
        return None

    async def set_network(self, container: Container, network: ContainerNetwork) -> None:
        """Narrow the container's egress (its live session at once, fresh ones when made)."""
        self.check_network(network)
        lock = self._locks.setdefault(container.id, asyncio.Lock())
        async with lock:
            container.network = network
            await self._records.save(container)
            session = await self._pool().lookup(self._key(container))
            if session is not None:
                await session.set_network(network.mode, network.allow)

    async def _expire_if_idle(self, container: Container) -> Container:
        if container.status == ContainerStatus.RUNNING and now() >= container.expires_at:
            container.status = ContainerStatus.EXPIRED
            await self._records.save(container)
            await self._pool().delete(self._key(container))
        return container

    async def get(self, container_id: str) -> Container:
        """Status ``expired`` once idle past its expiry (then files are no longer served)."""
        container = await self._records.load(Container, container_id)
        return await self._expire_if_idle(container)

    async def _live(self, container_id: str) -> Container:
        container = await self.get(container_id)
        if container.status == ContainerStatus.EXPIRED:
            raise errors.InvalidArgument(
                f"container {container_id!r} expired after {container.expires_after_minutes} idle "
                "minutes; its files are gone. Create a new container.",
                "container_id",
            )
        return container

    async def page(self, page: PageRequest) -> Page[Container]:
        result = await self._records.page(Container, page)
        return Page[Container](
            items=[await self._expire_if_idle(c) for c in result.items], has_more=result.has_more
        )

    async def delete(self, container_id: str) -> None:
        """Ends its session and deletes its files."""
        container = await self._records.load(Container, container_id)
        await self._pool().delete(self._key(container))
        for fid in await self._records.delete_children(StoredFile, container.id):
            await self._records.delete_blob(fid)
        await self._records.delete(Container, container_id)

    async def for_conversation(self, conversation_id: str) -> Container:
        """The conversation's container, created on first use (or again after it expired)."""
        conversation = await self._records.load(Conversation, conversation_id)
        if conversation.container_id:
            with contextlib.suppress(errors.ObjectNotFound):
                container = await self.get(conversation.container_id)
                if container.status == ContainerStatus.RUNNING:
                    return container
        container = await self.create(name=f"conversation {conversation_id}")
        conversation.container_id = container.id
        conversation.auto_container = True
        await self._records.save(conversation)
        return container

    async def bind(self, conversation_id: str, container_id: str) -> None:
        """Make ``container_id`` the conversation's container (an explicit choice)."""
        conversation = await self._records.load(Conversation, conversation_id)
        if conversation.container_id != container_id:
            conversation.container_id = container_id
            conversation.auto_container = False
            await self._records.save(conversation)

    async def session_for(self, container: Container) -> SessionHandle:
        """The container's live session; a fresh one gets the container's files back."""
        lock = self._locks.setdefault(container.id, asyncio.Lock())
        async with lock:
            pool = self._pool()
            key = self._key(container)
            fresh = await pool.lookup(key) is None
            session = await pool.acquire(key)
            if fresh:
                if container.memory_bytes is not None:
                    # before the container's first cell, like its network; a pool lowered
                    # since the container was made holds it to the pool's
                    ceiling = pool.config.limits.memory_bytes
                    try:
                        await session.set_memory_limit(min(container.memory_bytes, ceiling))
                    except BaseException:
                        await pool.delete(key)
                        raise
                if container.network is not None:
                    # before the container's first cell: it runs under its policy
                    try:
                        await session.set_network(container.network.mode, container.network.allow)
                    except BaseException:
                        await pool.delete(key)
                        raise
                for record in await self.all_files(container.id):
                    data = await self._records.get_blob(record.id)
                    if data is not None and record.path:
                        await session.write_file(record.path, data)
            container.last_active_at = now()
            await self._records.save(container)
            return session

    # --- the files in a container -------------------------------------------------------------

    async def all_files(self, container_id: str) -> list[StoredFile]:
        """Every file the container holds, oldest first."""
        return await self._records.all(StoredFile, container_id)

    async def copy_in(self, container: Container, source: StoredFile) -> StoredFile:
        """The container's copy of file object ``source`` at /mnt/data/<its name>."""
        data = await self._files.content(source.id)
        return await self.put_file(
            container,
            path=paths.absolute(source.filename),
            data=data,
            source="user",
            origin_id=source.id,
        )

    async def put_file(
        self,
        container: Container,
        *,
        path: str,
        data: bytes,
        source: str,
        origin_id: str | None = None,
        write: bool = True,
    ) -> StoredFile:
        """Record (and, with ``write``, write into the live session) the file at ``path``.

        One record per path: a file rewritten later keeps its id and gets the new bytes.
        """
        self._files.check_size(path, data)
        existing = next((f for f in await self.all_files(container.id) if f.path == path), None)
        if existing is not None:
            record = existing
            record.bytes = len(data)
            record.origin_id = origin_id or record.origin_id
            await self._records.put_blob(record.id, data)
            await self._records.save(record)
        else:
            record = StoredFile(
                id=new_id("cfile_"),
                filename=path.rsplit("/", 1)[-1],
                bytes=len(data),
                purpose=FilePurpose.OUTPUT if source == "assistant" else FilePurpose.CONTAINER,
                container_id=container.id,
                path=path,
                source=source,  # type: ignore[arg-type]
                origin_id=origin_id,
            )
            await self._files.add(record, data)
        if write and await self._pool().lookup(self._key(container)):
            session = await self.session_for(container)
            await session.write_file(path, data)
        return record

    async def forget_file(self, record: StoredFile) -> None:
        """Drop the record (and bytes) of a container file that is gone from /mnt/data."""
        await self._files.discard(record.id)

    async def add_file(
        self,
        container_id: str,
        *,
        filename: str | None = None,
        data: bytes | None = None,
        file_id: str | None = None,
    ) -> StoredFile:
        """Upload bytes (``filename`` + ``data``) or copy an existing file (``file_id``) into
        the container's /mnt/data. Returns the container file record (``path`` set)."""
        container = await self._live(container_id)
        if file_id is not None:
            return await self.copy_in(container, await self._files.get(file_id))
        if data is None or not filename:
            raise errors.InvalidArgument("give a file upload or a file_id", "file")
        name = clean_filename(filename)
        return await self.put_file(container, path=paths.absolute(name), data=data, source="user")

    async def add_missing_files(self, container_id: str, file_ids: list[str]) -> None:
        """Copy the files in, skipping names the container has already (an agent's tool
        resources come with every turn)."""
        present = {f.filename for f in await self.all_files(container_id)}
        for file_id in file_ids:
            stored = await self._files.get(file_id)
            if stored.filename not in present:
                await self.add_file(container_id, file_id=file_id)
                present.add(stored.filename)

    async def page_files(self, container_id: str, page: PageRequest) -> Page[StoredFile]:
        await self._live(container_id)
        return await self._records.page(StoredFile, page, container_id)

    async def get_file(self, container_id: str, file_id: str) -> StoredFile:
        await self._live(container_id)
        record = await self._records.load(StoredFile, file_id, "container file")
        if record.container_id != container_id:
            raise errors.ObjectNotFound("container file", file_id)
        return record

    async def file_content(self, container_id: str, file_id: str) -> bytes:
        await self.get_file(container_id, file_id)
        data = await self._records.get_blob(file_id)
        if data is None:
            raise errors.ObjectNotFound("container file", file_id)
        return data

    async def delete_file(self, container_id: str, file_id: str) -> None:
        container = await self._live(container_id)
        record = await self.get_file(container_id, file_id)
        await self._files.discard(file_id)
        session = await self._pool().lookup(self._key(container))
        if session is not None and record.path:
            with contextlib.suppress(errors.FileError):
                await session.delete_file(record.path)
