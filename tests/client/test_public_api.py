"""The public names of the client: a cheap guard of API stability."""

from __future__ import annotations

import subprocess
import sys

import sessionpool

PUBLIC = {
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
}

ERRORS = {
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
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(sessionpool.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(sessionpool, name), name


def test_every_error_derives_from_the_base() -> None:
    for name in ERRORS:
        cls = getattr(sessionpool, name)
        assert issubclass(cls, sessionpool.SessionpoolError), name
        assert cls.__doc__, f"{name} needs a docstring"


def test_session_methods() -> None:
    for cls in (sessionpool.Session, sessionpool.AsyncSession):
        for method in (
            "run",
            "stream",
            "run_shell",
            "upload",
            "download",
            "files",
            "delete_file",
            "close",
        ):
            assert callable(getattr(cls, method)), (cls, method)


def test_importing_the_client_does_not_load_the_server() -> None:
    code = (
        "import sys, sessionpool; from sessionpool import Client, AsyncClient; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', "
        "'uvicorn', 'pydantic') or m.startswith(('sessionpool.server', 'sessionpool.engine'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kernel_side_does_not_load_the_client() -> None:
    code = (
        "import sys, sessionpool, sessionpool.protocol; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore') "
        "or m.startswith('sessionpool.client')]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError):
        _ = sessionpool.NoSuchThing  # type: ignore[attr-defined]
