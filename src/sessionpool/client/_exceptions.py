"""Errors raised by the sessionpool client.

Every error says what went wrong and what to do about it; those that come from an HTTP answer
carry its ``status`` and the server's error ``code`` (the ``x-ms-error-code`` header).

    SessionpoolError              base class: ``except sessionpool.SessionpoolError`` catches all
    ├── ConnectionFailed          the endpoint could not be reached (DNS, refused, TLS)
    ├── RequestTimeout            the server did not answer within the client's timeout
    ├── AuthenticationError       401/403: the API key (or Azure token) was missing or wrong
    ├── InvalidRequest            400: the server refused the input (bad identifier, path ...)
    ├── NotFound                  404: no such pool, session, file or execution
    ├── PoolExhausted             404 SessionPoolExhausted: no session can be allocated now
    ├── FileTooLarge              413: an upload over the per-file limit or the session's quota
    ├── ExecutionTimeout          the code ran past its timeout (``.result`` has partial output)
    ├── SessionLost               the interpreter died: variables are gone, files are kept
    ├── RemoteError               raised by ``ExecutionResult.raise_for_error()``: the code raised
    └── ServerError               5xx: the server failed (its log has the details)

These are the client's errors; the server's engine has its own tree in ``sessionpool.errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessionpool.client._models import ExecutionError, ExecutionResult

__all__ = [
    "AuthenticationError",
    "ConnectionFailed",
    "ExecutionTimeout",
    "FileTooLarge",
    "InvalidRequest",
    "NotFound",
    "PoolExhausted",
    "RemoteError",
    "RequestTimeout",
    "ServerError",
    "SessionLost",
    "SessionpoolError",
]


class SessionpoolError(Exception):
    """Base class of every error the client raises."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        #: the HTTP status of the answer, when the error came from one
        self.status = status
        #: the server's machine-readable error code (``x-ms-error-code``), when it sent one
        self.code = code


class ConnectionFailed(SessionpoolError):
    """The endpoint could not be reached."""


class RequestTimeout(SessionpoolError):
    """No answer within the client's timeout."""


class AuthenticationError(SessionpoolError):
    """The server refused the credentials."""


class InvalidRequest(SessionpoolError):
    """The server refused the request as malformed."""


class NotFound(SessionpoolError):
    """No such pool, session, file or execution."""


class PoolExhausted(SessionpoolError):
    """The pool cannot allocate another session now."""


class FileTooLarge(SessionpoolError):
    """An upload over the per-file limit, or one that does not fit the session's quota."""


class ServerError(SessionpoolError):
    """The server failed to answer (5xx)."""


class _ExecutionFailure(SessionpoolError):
    def __init__(
        self,
        message: str,
        *,
        result: ExecutionResult | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        #: what the execution produced before it stopped (stdout, stderr), when known
        self.result = result


class ExecutionTimeout(_ExecutionFailure):
    """The code ran past its timeout and was interrupted (or the interpreter was restarted)."""


class SessionLost(_ExecutionFailure):
    """The session's interpreter died; its variables and imports are gone, its files are kept."""


class RemoteError(SessionpoolError):
    """The session's code raised ``error`` (from :meth:`ExecutionResult.raise_for_error`)."""

    def __init__(self, error: ExecutionError) -> None:
        super().__init__(f"{error}\n{error.traceback}".rstrip(), code=error.name)
        self.error = error
