"""The HTTP/1.1 protocol the server runs: uvicorn's, with a response's head and body sent together.

uvicorn writes the status line and headers when the application starts its response, and the
body in a second write: two sends, two TCP segments, and a client woken twice for one answer.
Here the head of a response whose length is known (``content-length``, every JSON answer) waits
for the body's first write and leaves with it in one send. Streamed responses (chunked: Server-
Sent Events, downloads) keep their head going out at once, so a client sees them start.

The access line is written once the response is complete, not before its head as uvicorn
writes it: the same logger, arguments and text, but made while the client already reads its
answer (a log record is a few dozen calls, with the caches cold after a quiet moment). A
response cut short by the client is logged when the connection goes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string


class _HeadWithBody:
    """A response cycle's view of the connection: holds the response head (the first write
    after the response started, when its length is known) until the next write or close.
    ``100 Continue`` is written only before the response starts, so it is never held."""

    __slots__ = ("_cycle", "_held", "_holding", "_transport", "status")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._held = b""
        self._holding = True  # until the head went by
        #: the response's status, read off its head (``HTTP/1.1 200 OK``); 0 until then
        self.status = 0

    def write(self, data: bytes) -> None:
        if not self.status and self._cycle.response_started:
            self.status = int(data[9:12])
        if self._held:
            data, self._held = self._held + data, b""
        elif (
            self._holding
            and self._cycle.response_started
            and self._cycle.chunked_encoding is False
            and self._cycle.scope["method"] != "HEAD"  # no body write follows
        ):
            self._holding = False
            self._held = data
            return
        elif self._cycle.response_started:
            self._holding = False
        self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            data, self._held = self._held, b""
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # everything else (is_closing, get_extra_info, pause/resume) is the connection's own
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each request's cycle writing through ``_HeadWithBody``
    and its access line written when the response is complete."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # the cycle was just made (its task has not run yet); an upgrade makes none
        if cycle is not None and cycle.scope is self.scope and not cycle.response_started:
            cycle.transport = _HeadWithBody(self.transport, cycle)  # type: ignore[assignment]
            cycle.access_log = False  # this protocol writes it: _log_access

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, _HeadWithBody):
            wire = cycle.transport
            wire.flush()  # a head with nothing after it (never held past the end)
            self._log_access(cycle, wire)
            self._unwrap(cycle, wire)
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, _HeadWithBody):
            wire = cycle.transport
            self._log_access(cycle, wire)  # a response the client cut short
            self._unwrap(cycle, wire)
        super().connection_lost(exc)

    @staticmethod
    def _unwrap(cycle: RequestResponseCycle, wire: _HeadWithBody) -> None:
        """The cycle and its view refer to each other: give the cycle the connection back,
        so that it (its scope, its headers, its event) is freed as soon as it is done with,
        not left for the garbage collector. Under load that garbage set off a young
        collection every few dozen requests, each finding thousands of dead objects to free
        while every request in flight waited."""
        cycle.transport = wire._transport

    def _log_access(self, cycle: RequestResponseCycle, wire: _HeadWithBody) -> None:
        """uvicorn's access line, as its cycle would have written it before the head. Once a
        cycle: both callers unwrap the cycle after it, and act only on a wrapped one."""
        if not self.access_log or not wire.status:
            return
        scope = cycle.scope
        self.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(scope),
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            wire.status,
        )
