"""What envd's services share: the request in hand, E2B's paths, errors as Connect codes.

Paths. E2B's sandboxes start in ``/home/user``; a session's files live in ``/mnt/data``. Here the
sandbox's home *is* the workspace: ``/home/user/x``, ``x`` (relative to the home, as envd takes
it) and ``/mnt/data/x`` all name the workspace's ``x``, and every path goes through the session's
link-safe file operations, so it is confined exactly as the dynamic-sessions file API is (no
``..``, no absolute path elsewhere, no link followed). Answers name files the way the request
did (under ``/home/user`` unless it said ``/mnt/data``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from starlette.requests import Request
from starlette.types import Scope as AsgiScope

from sessionpool import errors, paths
from sessionpool.faces.base import require
from sessionpool.faces.e2b.routing import open_session
from sessionpool.pool.api import SessionHandle
from sessionpool.tenancy import Scope

#: the sandbox's home directory, as the SDKs name it
HOME = "/home/user"

#: the ASGI scope of the envd request being served (Connect handlers get no request object)
current_scope: ContextVar[AsgiScope] = ContextVar("envd_scope")


def current_request() -> Request:
    return Request(current_scope.get())


async def session_for(scope: Scope, operation: str) -> SessionHandle:
    """The sandbox's session, if the sandbox's owner may do ``operation`` (``scope``)."""
    request = current_request()
    require(request, scope, operation)
    return await open_session(request)


def to_session(path: str) -> str:
    """An E2B path as the session's file operations take it (relative to /mnt/data, or left
    absolute for them to refuse)."""
    if path == "~" or path.startswith("~/"):
        path = HOME + path[1:]
    if path == HOME or path.startswith(HOME + "/"):
        return path[len(HOME) :].lstrip("/")
    return path


def root_of(path: str) -> str:
    """Where answers about ``path`` put the workspace: /mnt/data if the request said so."""
    return paths.MOUNT if path == paths.MOUNT or path.startswith(paths.MOUNT + "/") else HOME


def to_client(relative: str, root: str) -> str:
    return f"{root}/{relative}" if relative else root


def cwd_in_session(cwd: str | None) -> str:
    """A process's working directory: the home is the workspace; relative ones are under it."""
    if not cwd:
        return paths.MOUNT
    if cwd == "~" or cwd.startswith("~/"):
        cwd = HOME + cwd[1:]
    if cwd == HOME or cwd.startswith(HOME + "/"):
        return paths.MOUNT + cwd[len(HOME) :]
    if not cwd.startswith("/"):
        return f"{paths.MOUNT}/{cwd}"
    return cwd  # elsewhere in the jail (/tmp ...): the jail confines it


_CODES: dict[errors.ErrorCode, Code] = {
    errors.ErrorCode.FILE_NOT_FOUND: Code.NOT_FOUND,
    errors.ErrorCode.OBJECT_NOT_FOUND: Code.NOT_FOUND,
    errors.ErrorCode.SESSION_NOT_FOUND: Code.NOT_FOUND,
    errors.ErrorCode.POOL_NOT_FOUND: Code.NOT_FOUND,
    errors.ErrorCode.INVALID_PATH: Code.INVALID_ARGUMENT,
    errors.ErrorCode.NOT_A_REGULAR_FILE: Code.INVALID_ARGUMENT,
    errors.ErrorCode.INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
    errors.ErrorCode.FILE_OVER_LIMIT: Code.RESOURCE_EXHAUSTED,
    errors.ErrorCode.QUOTA_EXCEEDED: Code.RESOURCE_EXHAUSTED,
    errors.ErrorCode.TENANT_QUOTA: Code.RESOURCE_EXHAUSTED,
    errors.ErrorCode.POOL_AT_CAPACITY: Code.RESOURCE_EXHAUSTED,
    errors.ErrorCode.SCOPE_DENIED: Code.PERMISSION_DENIED,
    errors.ErrorCode.CONFLICT: Code.ALREADY_EXISTS,
    errors.ErrorCode.INTERPRETER_LOST: Code.UNAVAILABLE,
}


def connect_error(exc: errors.ServiceError) -> ConnectError:
    return ConnectError(_CODES.get(exc.code, Code.INTERNAL), str(exc))


@contextlib.contextmanager
def as_connect_errors() -> Iterator[None]:
    """The service's errors as Connect errors (anything else would be a 500 without a body)."""
    try:
        yield
    except errors.ServiceError as exc:
        raise connect_error(exc) from None
