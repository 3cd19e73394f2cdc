"""The sessionpool client SDK. Import it from the top level: ``from sessionpool import Client``.

Modules here are private (``_protocol`` builds and parses requests without I/O; ``_sync`` and
``_async`` only send them), so the public surface is what ``sessionpool.__all__`` lists.
"""

from sessionpool.client._async import AsyncClient, AsyncSession
from sessionpool.client._exceptions import (
    AuthenticationError,
    ConnectionFailed,
    ExecutionTimeout,
    FileTooLarge,
    InvalidRequest,
    NotFound,
    PoolExhausted,
    RemoteError,
    RequestTimeout,
    ServerError,
    SessionLost,
    SessionpoolError,
)
from sessionpool.client._models import (
    ExecutionError,
    ExecutionResult,
    FileInfo,
    Image,
    OutputEvent,
    SessionInfo,
    ShellResult,
)
from sessionpool.client._sync import Client, Session

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
]
