"""The streaming multipart reader, fed the way a network feeds it: in arbitrary pieces."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessionpool import errors
from sessionpool.faces.http import HttpError
from sessionpool.faces.uploads import MAX_FIELD_BYTES, open_multipart, read_form

BOUNDARY = "----formdata-0123456789"


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]
    yield b""


async def read_all(
    body: bytes, size: int, content_type: str | None, limit: int = 1 << 20
) -> list[tuple[str | None, str | None, bytes]]:
    reader = await open_multipart(content_type, pieces(body, size), limit)
    out = []
    while (part := await reader.next_part()) is not None:
        data = b"".join([chunk async for chunk in part.chunks()])
        out.append((part.name, part.filename, data))
    return out


BODY = multipart(
    ("note", None, b"a form field"),
    ("file", "/mnt/data/a.bin", bytes(range(256)) * 3 + b"\r\n--not-the-boundary"),
    ("file", "b.txt", b""),
)
EXPECTED = [
    ("note", None, b"a form field"),
    ("file", "/mnt/data/a.bin", bytes(range(256)) * 3 + b"\r\n--not-the-boundary"),
    ("file", "b.txt", b""),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, len(BODY)])
async def test_parts_survive_any_chunking(size: int) -> None:
    assert await read_all(BODY, size, f"multipart/form-data; boundary={BOUNDARY}") == EXPECTED


@pytest.mark.parametrize("content_type", ["application/json", None, "multipart/form-data"])
@pytest.mark.parametrize("size", [1, 5, 4096])
async def test_boundary_is_recovered_from_the_body(content_type: str | None, size: int) -> None:
    assert await read_all(BODY, size, content_type) == EXPECTED


async def test_unread_parts_are_skipped() -> None:
    reader = await open_multipart(
        f"multipart/form-data; boundary={BOUNDARY}", pieces(BODY, 10), 1 << 20
    )
    names = []
    while (part := await reader.next_part()) is not None:
        names.append(part.filename)
    assert names == [None, "/mnt/data/a.bin", "b.txt"]


async def test_part_past_the_limit_raises_file_too_large() -> None:
    body = multipart(("file", "big.bin", b"x" * 1001))
    with pytest.raises(errors.FileOverLimit):
        await read_all(body, 100, f"multipart/form-data; boundary={BOUNDARY}", limit=1000)
    body = multipart(("file", "ok.bin", b"x" * 1000))
    parts = await read_all(body, 100, f"multipart/form-data; boundary={BOUNDARY}", limit=1000)
    assert parts[0][2] == b"x" * 1000


@pytest.mark.parametrize(
    "body",
    [
        b"not multipart at all",
        b"",
        multipart(("file", "a", b"data"))[:-20],  # cut before the closing boundary
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file\r\n\r\nno end".encode(),
    ],
)
async def test_malformed_bodies_are_http_400(body: bytes) -> None:
    with pytest.raises(HttpError) as info:
        await read_all(body, 3, "application/json")
    assert info.value.status == 400


CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def test_form_gives_fields_and_the_file() -> None:
    body = multipart(("purpose", None, b"assistants"), ("file", "data.csv", b"a,b\n1,2\n"))
    form = await read_form(CTYPE, pieces(body, 5), max_file_bytes=100)
    assert form.fields == {"purpose": "assistants"}
    assert (form.filename, form.data) == ("data.csv", b"a,b\n1,2\n")
    empty = await read_form(CTYPE, pieces(multipart(("file_id", None, b"file-1")), 5), 100)
    assert empty.fields == {"file_id": "file-1"} and empty.data is None


async def test_form_refuses_a_file_past_the_limit_while_it_arrives() -> None:
    body = multipart(("file", "big.bin", b"x" * 101))
    with pytest.raises(errors.FileOverLimit):
        await read_form(CTYPE, pieces(body, 7), max_file_bytes=100)
    with pytest.raises(errors.FileOverLimit):  # a declared length says so before any byte
        await read_form(CTYPE, pieces(b"", 1), 100, declared_length=str(1 << 40))


async def test_form_refuses_two_files_and_huge_fields() -> None:
    two = multipart(("file", "a", b"1"), ("file", "b", b"2"))
    with pytest.raises(HttpError) as raised:
        await read_form(CTYPE, pieces(two, 64), max_file_bytes=100)
    assert raised.value.status == 400
    huge = multipart(("purpose", None, b"p" * (MAX_FIELD_BYTES + 1)))
    with pytest.raises(HttpError):
        await read_form(CTYPE, pieces(huge, 4096), max_file_bytes=100)
