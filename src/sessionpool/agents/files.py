"""File objects: uploads, figures a run showed, and the bytes of every file a container holds.

A record (``StoredFile``) and its bytes (a blob under the same id) are written and deleted
together. Upload names are cut to their last component: a name never reaches a path.
"""

from __future__ import annotations

from sessionpool import errors
from sessionpool.agents.config import AgentsConfig
from sessionpool.agents.records import Records
from sessionpool.agents.types import FilePurpose, Page, PageRequest, StoredFile, new_id


class Files:
    def __init__(self, config: AgentsConfig, records: Records) -> None:
        self._config = config
        self._records = records

    def check_size(self, filename: str, data: bytes) -> None:
        """FileOverLimit (413) past ``max_file_bytes``."""
        if len(data) > self._config.max_file_bytes:
            raise errors.FileOverLimit(
                filename, self._config.max_file_bytes, "agents.max_file_bytes"
            )

    async def create(
        self, *, filename: str, data: bytes, purpose: str = "assistants"
    ) -> StoredFile:
        """Store an uploaded file. Over-limit uploads -> FileOverLimit (413)."""
        name = clean_filename(filename)
        self.check_size(name, data)
        record = StoredFile(
            id=new_id("file-"), filename=name, bytes=len(data), purpose=purpose or "assistants"
        )
        await self.add(record, data)
        return record

    async def add(self, record: StoredFile, data: bytes) -> None:
        """Store a new record and its bytes (listed under its container, if it has one)."""
        await self._records.put_blob(record.id, data)
        await self._records.insert(record, record.container_id, record.purpose)

    async def get(self, file_id: str) -> StoredFile:
        return await self._records.load(StoredFile, file_id)

    async def page(self, page: PageRequest, purpose: str | None = None) -> Page[StoredFile]:
        """Every file object (uploads and generated outputs), optionally of one purpose."""
        return await self._records.page(
            StoredFile, page, tag=purpose, exclude_tag=FilePurpose.CONTAINER
        )

    async def content(self, file_id: str) -> bytes:
        await self.get(file_id)
        data = await self._records.get_blob(file_id)
        if data is None:
            raise errors.ObjectNotFound("file content", file_id)
        return data

    async def delete(self, file_id: str) -> None:
        if not await self._records.delete(StoredFile, file_id):
            raise errors.ObjectNotFound("file", file_id)
        await self._records.delete_blob(file_id)

    async def discard(self, file_id: str) -> None:
        """Delete the record and its bytes, whether or not the record is still there."""
        await self._records.delete(StoredFile, file_id)
        await self._records.delete_blob(file_id)


def clean_filename(filename: str) -> str:
    """The last component of an uploaded name, without NULs or path tricks."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "").strip()
    if name in ("", ".", ".."):
        raise errors.InvalidArgument(f"invalid file name {filename!r}", "file")
    return name[:255]
