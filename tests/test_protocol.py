"""The frame format: round trips and the checks that protect the host from a hostile kernel."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from sessionpool import protocol


def _reader_for(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_round_trip_with_blobs() -> None:
    png = b"\x89PNG" + bytes(range(256))
    data = protocol.encode({"op": "result", "displays": [{"image/png": {"$blob": 0}}]}, [png])
    header, blobs = await protocol.read_message(_reader_for(data), 1 << 20, 1 << 20, 1 << 21)
    assert blobs == [png]
    assert protocol.resolve_blobs(header["displays"], blobs) == [{"image/png": png}]


async def test_text_travels_as_utf_8_both_ways() -> None:
    text = "héllo ✓ 日本 \U0001f600"
    data = protocol.encode({"op": "chunk", "text": text})
    assert text.encode() in data  # raw UTF-8, not \\u escapes
    header, _ = await protocol.read_message(_reader_for(data), 1024, 1024, 4096)
    assert header == {"op": "chunk", "text": text}
    a, b = socket.socketpair()
    with a, b:
        protocol.send_message(a, {"op": "chunk", "text": text})
        assert protocol.recv_message(b)[0]["text"] == text


def test_blocking_side_round_trip() -> None:
    a, b = socket.socketpair()
    with a, b:
        protocol.send_message(a, {"op": "execute", "code": "1 + 1"}, [b"raw"])
        header, blobs = protocol.recv_message(b)
    assert header["code"] == "1 + 1"
    assert blobs == [b"raw"]


async def test_oversized_header_is_refused_before_buffering() -> None:
    data = struct.pack(">I", 10_000_000) + b"{}"
    with pytest.raises(protocol.FrameError, match="exceeds"):
        await protocol.read_message(_reader_for(data), 1024, 1024, 4096)


async def test_oversized_blob_is_refused() -> None:
    data = protocol.encode({"op": "x"}, [b"a" * 5000])
    with pytest.raises(protocol.FrameError, match="blob"):
        await protocol.read_message(_reader_for(data), 1024, 1024, 1 << 20)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"nblobs": -1}',
        b'{"nblobs": 1000}',
        b"\xff\xfe",
        '{"op": "x"}'.encode("utf-16"),  # JSON, but the frames are UTF-8
    ],
)
async def test_malformed_headers_are_frame_errors(body: bytes) -> None:
    data = struct.pack(">I", len(body)) + body
    with pytest.raises(protocol.FrameError):
        await protocol.read_message(_reader_for(data), 1024, 1024, 4096)


async def test_truncated_message_is_eof() -> None:
    data = protocol.encode({"op": "x"}, [b"abc"])[:-1]
    with pytest.raises(EOFError):
        await protocol.read_message(_reader_for(data), 1024, 1024, 4096)


@pytest.mark.parametrize("ref", [{"$blob": 5}, {"$blob": "0"}, {"$blob": -1}])
def test_bad_blob_references_are_refused(ref: dict[str, object]) -> None:
    with pytest.raises(protocol.FrameError):
        protocol.resolve_blobs({"image/png": ref}, [b"only one"])
