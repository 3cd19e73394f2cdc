"""Frames between a session (host side) and its kernel (inside the sandbox).

Spec: docs/protocol.md. A *frame* is a 4-byte big-endian length followed by that many bytes. A
*message* is one frame holding a UTF-8 JSON object, followed by ``nblobs`` raw frames (images,
file bytes) that the JSON refers to as ``{"$blob": i}``. Nothing is ever unpickled: everything
coming from a kernel is untrusted and is only ever JSON-decoded and size-checked.

This module is imported by the kernel inside the jail, so it imports only the standard library.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

_LEN = struct.Struct(">I")
#: a header larger than this is a protocol violation (code, stdout and stderr travel in it)
MAX_HEADER = 64 * 1024 * 1024
MAX_BLOBS = 64
#: the throwaway cell a session runs (silently) before its first user cell, so that cell does not
#: pay the copy-on-write faults of the first run after fork: a ready session's is sent by the
#: host; a child forked ahead of demand runs it while it waits for its request
WARMUP_CELL = "1 + 1"


#: one encoder and one decoder for every message (``json.dumps`` with arguments builds an
#: encoder per call; ``json.loads`` of bytes first guesses their encoding: the spec says UTF-8)
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_decode_json = json.JSONDecoder().decode


class FrameError(Exception):
    """The peer sent something that is not a valid message."""


Message = dict[str, Any]


def encode(header: Message, blobs: list[bytes] | None = None) -> bytes:
    """Serialise one message (header plus blobs) to bytes ready for sendall()."""
    blobs = blobs or []
    if blobs:
        header = {**header, "nblobs": len(blobs)}
    body = _encode_json(header).encode()
    parts = [_LEN.pack(len(body)), body]
    for blob in blobs:
        parts.append(_LEN.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def _decode_header(body: bytes) -> Message:
    try:
        # what json.loads does with UTF-8 bytes (lone surrogates kept, as it keeps them)
        header = _decode_json(body.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("header is not a JSON object")
    nblobs = header.get("nblobs", 0)
    if not isinstance(nblobs, int) or not 0 <= nblobs <= MAX_BLOBS:
        raise FrameError(f"bad blob count {nblobs!r}")
    return header


# -- blocking side (the kernel) -----------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def recv_message(sock: socket.socket, max_blob: int = MAX_HEADER) -> tuple[Message, list[bytes]]:
    (size,) = _LEN.unpack(_recv_exact(sock, 4))
    if size > MAX_HEADER:
        raise FrameError(f"header of {size} bytes exceeds {MAX_HEADER}")
    header = _decode_header(_recv_exact(sock, size))
    blobs = []
    for _ in range(header.get("nblobs", 0)):
        (blen,) = _LEN.unpack(_recv_exact(sock, 4))
        if blen > max_blob:
            raise FrameError(f"blob of {blen} bytes exceeds {max_blob}")
        blobs.append(_recv_exact(sock, blen))
    return header, blobs


def send_message(sock: socket.socket, header: Message, blobs: list[bytes] | None = None) -> None:
    sock.sendall(encode(header, blobs))


# -- asyncio side (the host) ---------------------------------------------------------------


async def read_message(
    reader: asyncio.StreamReader, max_header: int, max_blob: int, max_total: int
) -> tuple[Message, list[bytes]]:
    """Read one message, enforcing size limits *before* buffering (a hostile kernel can lie)."""
    try:
        (size,) = _LEN.unpack(await reader.readexactly(4))
        if size > max_header:
            raise FrameError(f"header of {size} bytes exceeds the limit of {max_header}")
        header = _decode_header(await reader.readexactly(size))
        total = size
        blobs = []
        for _ in range(header.get("nblobs", 0)):
            (blen,) = _LEN.unpack(await reader.readexactly(4))
            total += blen
            if blen > max_blob or total > max_total:
                raise FrameError(f"blob of {blen} bytes exceeds the limit")
            blobs.append(await reader.readexactly(blen))
    except asyncio.IncompleteReadError:
        raise EOFError("kernel closed the connection") from None
    return header, blobs


def resolve_blobs(value: Any, blobs: list[bytes]) -> Any:
    """Replace ``{"$blob": i}`` references by the bytes they name (one level of MIME bundle)."""
    if isinstance(value, dict):
        if set(value) == {"$blob"}:
            index = value["$blob"]
            if not isinstance(index, int) or not 0 <= index < len(blobs):
                raise FrameError(f"bad blob reference {index!r}")
            return blobs[index]
        return {k: resolve_blobs(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_blobs(v, blobs) for v in value]
    return value
