"""Streaming multipart uploads: parts are handed on chunk by chunk, never held whole.

An upload may be as large as the pool's per-file limit (128 MB by default) and arrive chunked
without a Content-Length, so the body is parsed as it arrives and each file part is passed to the
session as an async iterator. A part that grows past the limit stops the upload at once.

Some clients label a multipart body ``application/json`` (a shared client whose default headers
leak into uploads); the boundary is then recovered from the body's first line.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from sessionpool import errors
from sessionpool.faces.base import Runtime, principal_of
from sessionpool.faces.http import HttpError

#: the longest boundary RFC 2046 allows is 70 characters; leave room for sloppy clients
_MAX_BOUNDARY = 200
#: after a limit is hit, read and discard at most this much more so the client sees the answer
DRAIN_LIMIT = 64 * 1024 * 1024
#: allowance for multipart framing on top of the file bytes when judging Content-Length
FRAMING_ALLOWANCE = 1024 * 1024


def _bad(message: str) -> HttpError:
    return HttpError(400, "InvalidMultipartBody", message)


@dataclass
class Part:
    name: str | None
    filename: str | None
    content_type: str | None
    _reader: MultipartReader = field(repr=False)
    _done: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The part's bytes; raises FileOverLimit once they pass the reader's limit."""
        size = 0
        while True:
            kind, data = await self._reader._next_event()
            if kind == "data":
                size += len(data)
                if size > self._reader.max_part_bytes:
                    self._reader.overflowed = True
                    reader = self._reader
                    raise errors.FileOverLimit(
                        self.filename or "upload", reader.max_part_bytes, reader.limit
                    )
                yield data
            elif kind == "end":
                self._done = True
                return
            else:  # pragma: no cover - the parser never nests parts
                raise _bad("malformed multipart body")


class MultipartReader:
    """Pull-style reader over a push parser: events are produced as body chunks are fed."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        boundary: bytes,
        max_part_bytes: int,
        limit: str = "limits.file_bytes",
    ) -> None:
        self.max_part_bytes = max_part_bytes
        #: the setting behind max_part_bytes, named on the error
        self.limit = limit
        self.overflowed = False
        self._body = body
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._ended = False
        self._eof = False
        self._current: Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        # headers of parts announced but not yet handed out (one chunk may hold several parts)
        self._pending_headers: collections.deque[dict[str, str]] = collections.deque()
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
                max_header_count=16,
            )
        except FormParserError as exc:
            raise _bad(str(exc)) from exc

    # parser callbacks (synchronous, during write())
    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = bytes(self._header_field).decode("latin-1").strip().lower()
        # latin-1 is lossless here: parse_options_header re-encodes to latin-1, and a file name
        # is decoded as UTF-8 from the original bytes afterwards (a UTF-8 name such as
        # "données.csv" or "数据.csv" must not make the header parser raise)
        self._headers[name] = bytes(self._header_value).decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._pending_headers.append(self._headers)
        self._events.append(("begin", b""))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(("data", bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append(("end", b""))

    def _on_end(self) -> None:
        self._ended = True

    async def _feed(self) -> bool:
        """Parse the next body chunk; False at the end of the body."""
        while True:
            chunk = await anext(self._body, None)
            if chunk is None:
                self._eof = True
                return False
            if not chunk:
                continue
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise _bad(f"malformed multipart body: {exc}") from exc
            return True

    async def _next_event(self) -> tuple[str, bytes]:
        while not self._events:
            if self._eof or not await self._feed():
                raise _bad("the multipart body ended in the middle of a part")
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """The next part, skipping whatever the caller left unread of the previous one."""
        if self._current is not None and not self._current._done:
            async for _ in self._current.chunks():
                pass
        self._current = None
        while not self._events:
            if self._ended:
                return None
            if self._eof or not await self._feed():
                if self._ended:
                    return None
                raise _bad("the multipart body ended before its closing boundary")
        kind, _ = self._events.popleft()
        if kind != "begin":  # pragma: no cover - the parser always announces a part first
            raise _bad("malformed multipart body")
        headers = self._pending_headers.popleft()
        _, options = parse_options_header(headers.get("content-disposition", ""))
        name = options.get(b"name")
        filename = options.get(b"filename")
        self._current = Part(
            name=name.decode("utf-8", "replace") if name is not None else None,
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=headers.get("content-type"),
            _reader=self,
        )
        return self._current

    async def drain(self, limit: int = DRAIN_LIMIT) -> None:
        """Read and drop the rest of the body, up to ``limit`` bytes, without parsing it.

        Answering before the body is read makes many clients see a reset connection instead of
        the status, so a refused upload is drained while that stays cheap.
        """
        seen = 0
        while not self._eof and seen <= limit:
            chunk = await anext(self._body, None)
            if chunk is None:
                self._eof = True
            else:
                seen += len(chunk)


async def open_multipart(
    content_type: str | None,
    body: AsyncIterator[bytes],
    max_part_bytes: int,
    limit: str = "limits.file_bytes",
) -> MultipartReader:
    """A reader for ``body``, taking the boundary from the header or, failing that, the body."""
    ctype, options = parse_options_header(content_type)
    boundary = options.get(b"boundary") if ctype == b"multipart/form-data" else None
    if boundary:
        return MultipartReader(body, boundary, max_part_bytes, limit)

    head = b""
    while b"\r\n" not in head and len(head) <= _MAX_BOUNDARY + 4:
        chunk = await anext(body, None)
        if chunk is None:
            break
        head += chunk
    line = head.split(b"\r\n", 1)[0].rstrip(b" \t")
    if not (line.startswith(b"--") and 2 < len(line) <= _MAX_BOUNDARY + 2 and b"\r\n" in head):
        raise HttpError(
            400,
            "UnsupportedMediaType",
            "expected a multipart/form-data body with a 'file' part",
        )

    async def replay() -> AsyncIterator[bytes]:
        yield head
        async for chunk in body:
            yield chunk

    return MultipartReader(replay(), line[2:], max_part_bytes, limit)


#: a text field of a form (``purpose``, ``file_id``) is never longer than this
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Form:
    """A small multipart form: its text fields, and at most one file part held in memory."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    data: bytes | None = None


async def read_form(
    content_type: str | None,
    body: AsyncIterator[bytes],
    max_file_bytes: int,
    declared_length: str | None = None,
    limit: str = "limits.file_bytes",
) -> Form:
    """Parse a form with one file part (``file``), refusing a file past ``max_file_bytes``
    (413, as soon as it is seen: from Content-Length, or while the bytes arrive) and never
    spooling more than that to memory or disk."""
    if (
        declared_length is not None
        and declared_length.isdigit()
        and int(declared_length) > max_file_bytes + FRAMING_ALLOWANCE + DRAIN_LIMIT
    ):
        raise errors.FileOverLimit("upload", max_file_bytes, limit)
    reader = await open_multipart(content_type, body, max(max_file_bytes, MAX_FIELD_BYTES), limit)
    form = Form()
    try:
        while (part := await reader.next_part()) is not None:
            if part.filename is not None:
                if form.data is not None:
                    raise _bad("send one file part per request")
                form.filename = part.filename
                form.data = b"".join([chunk async for chunk in part.chunks()])
                if len(form.data) > max_file_bytes:
                    raise errors.FileOverLimit(part.filename or "upload", max_file_bytes, limit)
            elif part.name:
                too_long = _bad(f"the form field {part.name!r} is longer than {MAX_FIELD_BYTES}")
                try:
                    value = b"".join([chunk async for chunk in part.chunks()])
                except errors.FileOverLimit:
                    raise too_long from None
                if len(value) > MAX_FIELD_BYTES:
                    raise too_long
                form.fields[part.name] = value.decode("utf-8", "replace")
    except (errors.ServiceError, HttpError):
        await reader.drain()
        raise
    return form


async def read_upload(request: Request, max_file_bytes: int, limit: str) -> Form:
    """``request``'s multipart form with one file part, bounded (see ``read_form``); ``limit``
    names the setting behind ``max_file_bytes``. The bytes count against the caller's tenant's
    upload quota, as uploads into sessions do."""
    tenant = principal_of(request).tenant
    runtime = getattr(request.app.state, "runtime", None)
    quotas = runtime.quotas if isinstance(runtime, Runtime) else None
    declared = request.headers.get("content-length", "")
    if quotas is not None:
        quotas.upload_allowed(tenant, int(declared) if declared.isdigit() else None)
    try:
        form = await read_form(
            request.headers.get("content-type"),
            request.stream(),
            max_file_bytes,
            request.headers.get("content-length"),
            limit=limit,
        )
    except ClientDisconnect as exc:
        raise HttpError(400, "ClientDisconnected", "the client went away mid-upload") from exc
    if quotas is not None and form.data:
        quotas.uploaded(tenant, len(form.data))
    return form
