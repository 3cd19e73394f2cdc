"""Authentication: a plain ASGI middleware in front of every route but the public ones.

Clients send ``Authorization: Bearer <credential>`` (every dynamic-sessions client) or
``api-key: <key>`` (the Azure OpenAI convention). A credential is one of the server's own keys
(the default tenant, every scope), a stored tenant key (``server/keys.py``) or an identity token
from a configured issuer (``server/tokens.py``); it becomes the request's principal, whose scopes
and pools the routes check. The server's keys are compared in constant time against every
configured key, so the answer's timing says nothing about how much of a key was right, nor which
key matched.

The server is never open by accident: with no key configured, one is generated, printed once and
kept in a file only its owner can read (see :func:`load_or_create_key`).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from sessionpool.errors import ConfigError
from sessionpool.faces.base import PRINCIPAL_KEY
from sessionpool.faces.http import ERROR_CODE_HEADER
from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import ROOT, Principal


def keys_match(candidate: str, keys: Iterable[bytes]) -> bool:
    """True if ``candidate`` equals one of ``keys``; every key is compared, whatever matches."""
    given = candidate.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


def credentials(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Keys offered by a request: the Bearer token, and the ``api-key`` and ``x-api-key``
    (E2B's) headers, if present."""
    found: list[str] = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found.append(token.strip())
        elif name == b"api-key" or name == b"x-api-key":
            token = value.decode("latin-1").strip()
            if token:
                found.append(token)
    return found


class InvalidToken(Exception):
    """A bearer token that is a token but not a valid one: the message says why (expired,
    wrong audience, unknown issuer, bad signature ...), without echoing the token."""


class TokenVerifier(Protocol):
    """Identity tokens (JWT) from the issuers the operator configured (``server/tokens.py``)."""

    async def verify(self, token: str) -> Principal:
        """The principal the token names; raises :class:`InvalidToken` if it is not valid."""
        ...


def looks_like_jwt(credential: str) -> bool:
    """Three base64url segments, the first a JSON object (``eyJ``: ``{"``). API keys never
    look so (``sp-...``, ``spk_...``)."""
    return credential.startswith("eyJ") and credential.count(".") == 2


class Authenticator:
    """Credentials to a principal: the server's own keys (the default tenant, every scope),
    the stored tenant keys, then identity tokens."""

    def __init__(
        self,
        server_keys: Iterable[str],
        store: KeyStore | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.server_keys = tuple(k.encode("utf-8") for k in server_keys)
        self.store = store
        self.tokens = tokens

    async def authenticate(self, offered: list[str]) -> Principal:
        """The principal of the first valid credential; :class:`InvalidToken` with the reason
        (for the 401) if none is."""
        reason = "the API key is not valid for this server"
        for credential in offered:
            if keys_match(credential, self.server_keys):
                return ROOT
            if self.store is not None:
                principal = self.store.lookup(credential)
                if principal is not None:
                    return principal
            if self.tokens is not None and looks_like_jwt(credential):
                try:
                    return await self.tokens.verify(credential)
                except InvalidToken as exc:
                    reason = f"the bearer token is not valid: {exc}"
        raise InvalidToken(reason)


class AuthMiddleware:
    """Authenticates every request but the public paths and leaves its principal in the ASGI
    scope (``faces.base.PRINCIPAL_KEY``) for the routes to check rights against."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        public_paths: Iterable[str],
        own_auth: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = frozenset(public_paths)
        #: requests that carry their own credential, checked further in (E2B sandbox traffic
        #: and its access token)
        self.own_auth = own_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.public_paths
            or (self.own_auth is not None and self.own_auth(scope))
        ):
            await self.app(scope, receive, send)
            return
        offered = credentials(scope["headers"])
        if offered:
            try:
                principal = await self.authenticator.authenticate(offered)
            except InvalidToken as exc:
                message = str(exc)
            else:
                scope[PRINCIPAL_KEY] = principal
                await self.app(scope, receive, send)
                return
        else:
            message = "no credentials: send 'Authorization: Bearer <key>' or 'api-key: <key>'"
        if any(name == b"x-api-key" for name, _ in scope["headers"]):
            # an E2B client: its SDKs read E2B's error shape
            body = json.dumps({"code": 401, "message": message}).encode()
        else:
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
