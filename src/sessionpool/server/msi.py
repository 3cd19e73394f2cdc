"""A managed-identity token endpoint, so unmodified Azure clients authenticate to sessionpool.

Azure SDK clients insist on an Entra bearer token. ``DefaultAzureCredential`` asks the
App Service managed-identity endpoint named by ``IDENTITY_ENDPOINT`` for one, presenting the
secret in ``IDENTITY_HEADER``. Pointing those two variables at this endpoint, with an API key as
the secret, makes the credential chain hand that key back as the token: the client then sends
``Authorization: Bearer <key>``, which the API checks like any other key. Nothing is issued that
the caller did not already hold, so the endpoint needs no authentication of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sessionpool.faces.http import error_response
from sessionpool.server.auth import keys_match

MSI_PATH = "/msi/token"
TOKEN_LIFETIME_SECONDS = 3600


def install_msi(app: FastAPI, keys: Iterable[str], no_auth: bool) -> None:
    encoded = [k.encode() for k in keys]

    @app.get(MSI_PATH, tags=["auth"], summary="Managed-identity token (App Service protocol)")
    async def msi_token(request: Request, resource: str = "") -> JSONResponse:
        # 2019-08-01 sends X-IDENTITY-HEADER; the older 2017-09-01 protocol sends "secret"
        secret = request.headers.get("x-identity-header") or request.headers.get("secret") or ""
        if not no_auth and not keys_match(secret, encoded):
            return error_response(
                401,
                "Unauthorized",
                "the identity header is not an API key of this server: set IDENTITY_HEADER to "
                "an API key (see docs/agents.md)",
            )
        expires = int(time.time()) + TOKEN_LIFETIME_SECONDS
        return JSONResponse(
            {
                "access_token": secret or "no-auth",
                "expires_on": str(expires),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": "sessionpool",
            }
        )
