"""API-key authentication: a plain ASGI middleware in front of every route but the public ones.

Clients send ``Authorization: Bearer <key>`` (every dynamic-sessions client) or ``api-key: <key>``
(the Azure OpenAI convention). Keys are compared in constant time against every configured key, so
the answer's timing says nothing about how much of a key was right, nor which key matched.

The server is never open by accident: with no key configured, one is generated, printed once and
kept in a file only its owner can read (see :func:`load_or_create_key`).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from sessionpool.errors import ConfigError
from sessionpool.faces.http import ERROR_CODE_HEADER


def keys_match(candidate: str, keys: Iterable[bytes]) -> bool:
    """True if ``candidate`` equals one of ``keys``; every key is compared, whatever matches."""
    given = candidate.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


def credentials(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Keys offered by a request: the Bearer token and the ``api-key`` header, if present."""
    found: list[str] = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        elif name == b"api-key":
            token = value.decode("latin-1").strip()
            if token:
                found.append(token)
    return found


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Iterable[str], public_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = tuple(k.encode("utf-8") for k in keys)
        if not self.keys:
            raise ConfigError("authentication is on but no API key is configured")
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        offered = credentials(scope["headers"])
        if offered and any(keys_match(c, self.keys) for c in offered):
            await self.app(scope, receive, send)
            return
        if offered:
            message = "the API key is not valid for this server"
        else:
            message = "no credentials: send 'Authorization: Bearer <key>' or 'api-key: <key>'"
        body = json.dumps({"error": {"code": "Unauthorized", "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="sessionpool"'),
                    (ERROR_CODE_HEADER.encode(), b"Unauthorized"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def generate_key() -> str:
    return "sp-" + secrets.token_urlsafe(32)


def load_or_create_key(path: Path) -> tuple[list[str], bool]:
    """The keys stored in ``path`` (one per line), creating it with a new key if it is missing.

    Returns the keys and whether a key was just generated (the caller prints it once). A file
    that others could read is refused rather than trusted: a leaked key runs arbitrary code.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # pragma: no cover - another server created it just now
            return load_or_create_key(path)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return [key], True
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc}") from exc
    with os.fdopen(fd, "r") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"API key file {path} is not a regular file")
        if info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise ConfigError(
                f"refusing the API key file {path}: it must belong to this user and be readable "
                f"by it alone (chmod 600 {path})"
            )
        keys = [line.strip() for line in fh.read().splitlines() if line.strip()]
    if not keys:
        raise ConfigError(f"API key file {path} holds no key; delete it to generate a new one")
    return keys, False
