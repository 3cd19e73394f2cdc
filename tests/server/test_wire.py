"""The server's HTTP protocol: a response's head leaves with its body, streamed heads at once.

A real uvicorn server on loopback with ``HttpProtocol``, read with raw sockets. Each app waits
between starting its response and sending the body, so what the first read returns tells
whether the head was held (it arrives with the body) or sent at once (it arrives alone). The
access line, written by the protocol once the response is complete, is read off the logger.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from sessionpool.server.wire import HttpProtocol, _HeadWithBody

DELAY = 0.3
BODY = b'{"ok":true}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:  # read the request body (this is what answers Expect: 100-continue)
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    streamed = scope["path"] == "/stream"
    headers = [(b"content-type", b"application/json")]
    if not streamed:
        headers.append((b"content-length", str(len(BODY) + len(body)).encode()))
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await asyncio.sleep(DELAY)
    await send({"type": "http.response.body", "body": BODY + body, "more_body": streamed})
    if streamed:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=HttpProtocol, log_config=None)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    await task
    sock.close()


async def first_read(port: int, request: bytes) -> tuple[bytes, float]:
    """What the first read after ``request`` returns, and how long it took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    writer.write(request)
    t0 = loop.time()
    data = await asyncio.wait_for(reader.read(65536), 5)
    elapsed = loop.time() - t0
    writer.close()
    return data, elapsed


async def test_a_known_length_answer_arrives_head_and_body_together(port: int) -> None:
    data, elapsed = await first_read(port, b"GET /json HTTP/1.1\r\nhost: t\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n" + BODY), data  # the body is in the same read
    assert elapsed >= DELAY * 0.9


async def test_a_streamed_answer_shows_its_head_at_once(port: int) -> None:
    data, elapsed = await first_read(port, b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in data
    assert data.endswith(b"\r\n\r\n"), data  # the head alone: the body comes later
    assert elapsed < DELAY


async def test_expect_100_continue_is_answered_before_the_body_is_sent(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /json HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"abc")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert await asyncio.wait_for(reader.readexactly(len(BODY) + 3), 5) == BODY + b"abc"
    writer.close()


async def test_keep_alive_requests_each_get_a_whole_answer(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):
        writer.write(b"GET /json HTTP/1.1\r\nhost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert await asyncio.wait_for(reader.readexactly(len(BODY)), 5) == BODY
    writer.close()


async def test_a_finished_request_leaves_no_garbage_cycle(port: int) -> None:
    """A request's cycle is freed when it is done with: left in a reference cycle, each one
    (its scope and headers with it) waited for the garbage collector, whose pauses grew with
    the load."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
    try:
        for _ in range(3):  # each request's cycle replaces the one before on the connection
            writer.write(b"GET /json HTTP/1.1\r\nhost: t\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            await asyncio.wait_for(reader.readexactly(len(BODY)), 5)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, RequestResponseCycle | _HeadWithBody)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        writer.close()
    assert left == []


async def test_a_head_request_is_not_held(port: int) -> None:
    # no body write follows a HEAD answer's head: holding it would hang the client
    data, _ = await first_read(port, b"HEAD /json HTTP/1.1\r\nhost: t\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 11" in data


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    """The access lines the server writes (uvicorn's logger), as their text."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("uvicorn.access")
    keep, level = Keep(), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(keep)
    logger.setLevel(level)


async def test_the_access_line_is_written_once_the_response_is_complete(
    access_lines: list[str], port: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream?a=1 HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert access_lines == []  # the head is out, the body not yet
    await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    writer.close()
    assert len(access_lines) == 1
    assert access_lines[0].startswith("127.0.0.1:")
    assert access_lines[0].endswith(' - "GET /stream?a=1 HTTP/1.1" 200')


async def test_the_access_line_has_the_status_the_app_answered(
    access_lines: list[str], port: int
) -> None:
    data, _ = await first_read(port, b"GET /missing HTTP/1.1\r\nhost: t\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 404 Not Found")
    assert len(access_lines) == 1
    assert access_lines[0].endswith(' - "GET /missing HTTP/1.1" 404')


async def test_a_response_the_client_cuts_short_is_logged_once(
    access_lines: list[str], port: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()  # before the body
    await asyncio.sleep(DELAY * 2)  # the app sends its body into the closed connection
    assert len(access_lines) == 1
    assert access_lines[0].endswith(' - "GET /stream HTTP/1.1" 200')
