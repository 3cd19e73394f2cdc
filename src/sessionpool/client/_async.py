"""The asyncio client: sends the protocol's calls with ``httpx.AsyncClient``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import IO, TypeVar

import httpx

from sessionpool.client._base import DEFAULT_TIMEOUT, Verify, resolve, verify_for
from sessionpool.client._models import (
    ExecutionResult,
    FileInfo,
    OutputEvent,
    SessionInfo,
    ShellResult,
)
from sessionpool.client._protocol import (
    Call,
    Credential,
    EventParser,
    Progress,
    Protocol,
    check,
    content_length,
    new_identifier,
    stream_event,
    transport_error,
)

T = TypeVar("T")


class AsyncClient:
    """A pool endpoint: ``Client("http://127.0.0.1:8080/pools/default", api_key="...")``.

    ``endpoint`` and ``api_key`` default to ``SESSIONPOOL_ENDPOINT`` and
    ``SESSIONPOOL_API_KEY``. ``api_key`` may be a function returning a fresh token (for Azure:
    ``lambda: credential.get_token("https://dynamicsessions.io/.default").token``). ``verify`` is
    httpx's: ``False``, a CA bundle path, or an ``ssl.SSLContext``.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: Credential = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        verify: Verify = True,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        endpoint, api_key = resolve(endpoint, api_key)
        self._protocol = Protocol(endpoint, api_key)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, verify=verify_for(verify))

    @property
    def endpoint(self) -> str:
        return self._protocol.endpoint

    def session(self, identifier: str | None = None) -> AsyncSession:
        """The session named ``identifier`` (a new random one if omitted); made on first use."""
        return AsyncSession(self, identifier or new_identifier())

    async def sessions(self) -> list[SessionInfo]:
        """Sessions allocated in the pool now."""
        found: list[SessionInfo] = []
        page, next_link = await self._send(self._protocol.sessions())
        found += page
        while next_link:
            page, next_link = await self._send(self._protocol.sessions(next_link))
            found += page
        return found

    async def delete_session(self, identifier: str) -> None:
        """Destroy a session and its files (no error if it does not exist)."""
        await self._send(self._protocol.delete_session(identifier))

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- transport -----------------------------------------------------------------------------

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(call.request)
        except httpx.TransportError as exc:
            raise transport_error(call.request, exc) from exc
        return call.parse(response)

    async def _events(self, request: httpx.Request, identifier: str) -> AsyncIterator[OutputEvent]:
        parser = EventParser()
        try:
            async with self._http.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.content,
                extensions=request.extensions,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    check(response, f"session {identifier!r}")
                async for line in response.aiter_lines():
                    done = parser.feed(line)
                    if done is not None and (event := stream_event(*done, identifier)):
                        yield event
        except httpx.TransportError as exc:
            raise transport_error(request, exc) from exc

    async def _download(self, call: Call[bytes], progress: Progress | None) -> bytes:
        try:
            async with self._http.stream(
                call.request.method,
                call.request.url,
                headers=call.request.headers,
                extensions=call.request.extensions,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    return call.parse(response)
                total = content_length(response)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if progress is not None:
                        progress(len(data), total)
                return bytes(data)
        except httpx.TransportError as exc:
            raise transport_error(call.request, exc) from exc


class AsyncSession:
    """One session: a persistent interpreter and its ``/mnt/data``. Made on first use."""

    def __init__(self, client: AsyncClient, identifier: str) -> None:
        self.client = client
        self.identifier = identifier

    async def run(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run Python ``code``; state persists between calls. Raises ``ExecutionTimeout``."""
        return await self.client._send(self.client._protocol.run(self.identifier, code, timeout))

    def stream(self, code: str, *, timeout: float | None = None) -> AsyncIterator[OutputEvent]:
        """Run ``code``, yielding stdout and stderr as they are written, then the result
        (``async for event in session.stream(code)``); see ``Session.stream``."""
        return self.client._events(
            self.client._protocol.stream(self.identifier, code, timeout), self.identifier
        )

    async def run_shell(self, command: str, *, timeout: float | None = None) -> ShellResult:
        """Run a shell command in the session (its exit code is in the result)."""
        return await self.client._send(
            self.client._protocol.run_shell(self.identifier, command, timeout)
        )

    async def upload(
        self,
        data: bytes | str | os.PathLike[str] | IO[bytes],
        name: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Upload bytes, a local path or a binary file as ``/mnt/data/<name>``."""
        call, opened = self.client._protocol.upload(self.identifier, data, name, progress)
        try:
            return await self.client._send(call)
        finally:
            if opened is not None:
                opened.close()

    async def download(self, name: str, *, progress: Progress | None = None) -> bytes:
        """The content of ``/mnt/data/<name>``."""
        return await self.client._download(
            self.client._protocol.download(self.identifier, name), progress
        )

    async def files(self, path: str = "") -> list[FileInfo]:
        """Files in ``/mnt/data`` (or a directory under it)."""
        return await self.client._send(self.client._protocol.files(self.identifier, path))

    async def delete_file(self, name: str) -> None:
        await self.client._send(self.client._protocol.delete_file(self.identifier, name))

    async def close(self) -> None:
        """Destroy the session: its interpreter and its files."""
        await self.client.delete_session(self.identifier)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Session({self.identifier!r}, endpoint={self.client.endpoint!r})"
