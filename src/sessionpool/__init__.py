"""sessionpool: secure, stateful, fast Python code-interpreter sessions for LLM agents.

The client is one import::

    from sessionpool import Client

    with Client("http://127.0.0.1:8080/pools/default", api_key="...") as client:
        with client.session("demo") as session:
            print(session.run("6 * 7").text)

The client's names load on first use (PEP 562): ``import sessionpool`` alone loads nothing, so
the kernel inside each session (which imports ``sessionpool.protocol``) never loads httpx, and
the client never loads the server's modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionpool._version import __version__

if TYPE_CHECKING:
    from sessionpool.client import (
        AsyncClient,
        AsyncSession,
        AuthenticationError,
        Client,
        ConnectionFailed,
        ExecutionError,
        ExecutionResult,
        ExecutionTimeout,
        FileInfo,
        FileTooLarge,
        Image,
        InvalidRequest,
        NotFound,
        OutputEvent,
        PoolExhausted,
        RemoteError,
        RequestTimeout,
        ServerError,
        Session,
        SessionInfo,
        SessionLost,
        SessionpoolError,
        ShellResult,
    )

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "AuthenticationError",
    "Client",
    "ConnectionFailed",
    "ExecutionError",
    "ExecutionResult",
    "ExecutionTimeout",
    "FileInfo",
    "FileTooLarge",
    "Image",
    "InvalidRequest",
    "NotFound",
    "OutputEvent",
    "PoolExhausted",
    "RemoteError",
    "RequestTimeout",
    "ServerError",
    "Session",
    "SessionInfo",
    "SessionLost",
    "SessionpoolError",
    "ShellResult",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sessionpool import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sessionpool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
