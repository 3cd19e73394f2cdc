"""The blocking client: sends the protocol's calls with ``httpx.Client``."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


class Client:
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
        http_client: httpx.Client | None = None,
    ) -> None:
        endpoint, api_key = resolve(endpoint, api_key)
        self._protocol = Protocol(endpoint, api_key)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, verify=verify_for(verify))

    @property
    def endpoint(self) -> str:
        return self._protocol.endpoint

    def session(self, identifier: str | None = None) -> Session:
        """The session named ``identifier`` (a new random one if omitted); made on first use."""
        return Session(self, identifier or new_identifier())

    def sessions(self) -> list[SessionInfo]:
        """Sessions allocated in the pool now."""
        found: list[SessionInfo] = []
        page, next_link = self._send(self._protocol.sessions())
        found += page
        while next_link:
            page, next_link = self._send(self._protocol.sessions(next_link))
            found += page
        return found

    def delete_session(self, identifier: str) -> None:
        """Destroy a session and its files (no error if it does not exist)."""
        self._send(self._protocol.delete_session(identifier))

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.send(call.request)
        except httpx.TransportError as exc:
            raise transport_error(call.request, exc) from exc
        return call.parse(response)

    def _events(self, request: httpx.Request, identifier: str) -> Iterator[OutputEvent]:
        parser = EventParser()
        try:
            with self._http.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.content,
                extensions=request.extensions,
            ) as response:
                if not response.is_success:
                    response.read()
                    check(response, f"session {identifier!r}")
                for line in response.iter_lines():
                    done = parser.feed(line)
                    if done is not None and (event := stream_event(*done, identifier)):
                        yield event
        except httpx.TransportError as exc:
            raise transport_error(request, exc) from exc

    def _download(self, call: Call[bytes], progress: Progress | None) -> bytes:
        try:
            with self._http.stream(
                call.request.method,
                call.request.url,
                headers=call.request.headers,
                extensions=call.request.extensions,
            ) as response:
                if not response.is_success:
                    response.read()
                    return call.parse(response)
                total = content_length(response)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if progress is not None:
                        progress(len(data), total)
                return bytes(data)
        except httpx.TransportError as exc:
            raise transport_error(call.request, exc) from exc


class Session:
    """One session: a persistent interpreter and its ``/mnt/data``. Made on first use."""

    def __init__(self, client: Client, identifier: str) -> None:
        self.client = client
        self.identifier = identifier

    def run(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run Python ``code``; state persists between calls. Raises ``ExecutionTimeout``."""
        return self.client._send(self.client._protocol.run(self.identifier, code, timeout))

    def stream(self, code: str, *, timeout: float | None = None) -> Iterator[OutputEvent]:
        """Run ``code``, yielding stdout and stderr as they are written, then the result.

        ``for event in session.stream(code)``: ``event.kind`` is ``"stdout"``, ``"stderr"`` or
        ``"result"`` (the last one; ``event.result`` is what ``run`` returns). Raises like
        ``run``. Needs a sessionpool server (Azure has no streaming route: ``NotFound``).
        """
        return self.client._events(
            self.client._protocol.stream(self.identifier, code, timeout), self.identifier
        )

    def run_shell(self, command: str, *, timeout: float | None = None) -> ShellResult:
        """Run a shell command in the session (its exit code is in the result)."""
        return self.client._send(self.client._protocol.run_shell(self.identifier, command, timeout))

    def upload(
        self,
        data: bytes | str | os.PathLike[str] | IO[bytes],
        name: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> FileInfo:
        """Upload bytes, a local path or a binary file as ``/mnt/data/<name>``."""
        call, opened = self.client._protocol.upload(self.identifier, data, name, progress)
        try:
            return self.client._send(call)
        finally:
            if opened is not None:
                opened.close()

    def download(self, name: str, *, progress: Progress | None = None) -> bytes:
        """The content of ``/mnt/data/<name>``."""
        return self.client._download(
            self.client._protocol.download(self.identifier, name), progress
        )

    def files(self, path: str = "") -> list[FileInfo]:
        """Files in ``/mnt/data`` (or a directory under it)."""
        return self.client._send(self.client._protocol.files(self.identifier, path))

    def delete_file(self, name: str) -> None:
        self.client._send(self.client._protocol.delete_file(self.identifier, name))

    def close(self) -> None:
        """Destroy the session: its interpreter and its files."""
        self.client.delete_session(self.identifier)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.identifier!r}, endpoint={self.client.endpoint!r})"
