"""What ``Client`` and ``AsyncClient`` share besides the protocol: settings and defaults."""

from __future__ import annotations

import os
import ssl

from sessionpool.client._protocol import Credential

ENDPOINT_ENV = "SESSIONPOOL_ENDPOINT"
API_KEY_ENV = "SESSIONPOOL_API_KEY"
#: a CA bundle (PEM) to trust, for a server with a self-signed certificate
CA_ENV = "SESSIONPOOL_CA"
#: seconds to wait for anything but an execution or a transfer (those get their own)
DEFAULT_TIMEOUT = 60.0

Verify = bool | str | ssl.SSLContext


def resolve(endpoint: str | None, api_key: Credential) -> tuple[str, Credential]:
    """The endpoint and key, falling back to ``SESSIONPOOL_ENDPOINT`` / ``SESSIONPOOL_API_KEY``."""
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        raise ValueError(
            "no endpoint: pass Client(endpoint=...) or set SESSIONPOOL_ENDPOINT to the pool's URL, "
            "e.g. http://127.0.0.1:8080/pools/default"
        )
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    return endpoint, api_key


def verify_for(verify: Verify) -> bool | ssl.SSLContext:
    """httpx's ``verify``: a CA bundle path becomes a context that trusts it.

    ``True`` (the default) trusts ``SESSIONPOOL_CA`` when it is set, else the system's store
    (``SSL_CERT_FILE`` is honoured by httpx).
    """
    if verify is True and os.environ.get(CA_ENV):
        verify = os.path.expanduser(os.environ[CA_ENV])
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify
