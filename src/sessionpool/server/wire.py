"""The HTTP/1.1 protocol the server runs: uvicorn's, with a response's head and body sent together.

uvicorn writes the status line and headers when the application starts its response, and the
body in a second write: two sends, two TCP segments, and a client woken twice for one answer.
Here the head of a response whose length is known (``content-length``, every JSON answer) waits
for the body's first write and leaves with it in one send. Streamed responses (chunked: Server-
Sent Events, downloads) keep their head going out at once, so a client sees them start.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _HeadWithBody:
    """A response cycle's view of the connection: holds the response head (the first write
    after the response started, when its length is known) until the next write or close.
    ``100 Continue`` is written only before the response starts, so it is never held."""

    __slots__ = ("_cycle", "_held", "_holding", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._held = b""
        self._holding = True  # until the head went by

    def write(self, data: bytes) -> None:
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
    """uvicorn's httptools protocol, each request's cycle writing through ``_HeadWithBody``."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # the cycle was just made (its task has not run yet); an upgrade makes none
        if cycle is not None and cycle.scope is self.scope and not cycle.response_started:
            cycle.transport = _HeadWithBody(self.transport, cycle)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, _HeadWithBody):
            cycle.transport.flush()  # a head with nothing after it (never held past the end)
        super().on_response_complete()
