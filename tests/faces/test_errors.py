"""Every engine error has a deliberate HTTP status; only the server's own faults are 500."""

from __future__ import annotations

import inspect

from sessionpool import errors
from sessionpool.faces.http import status_for

EXPECTED = {
    "SessionpoolError": 500,
    "ConfigError": 500,
    "SandboxError": 503,
    "SandboxUnavailable": 503,
    "PoolError": 500,
    "PoolNotFound": 404,
    "PoolExhausted": 404,  # what Azure answers, and what its clients expect
    "PoolClosed": 503,
    "SessionError": 500,
    "InvalidIdentifier": 400,
    "SessionNotFound": 404,
    "SessionLost": 503,
    "ProtocolError": 502,
    "FileError": 500,
    "InvalidPath": 400,
    "FileNotFound": 404,
    "NotARegularFile": 400,
    "FileTooLarge": 413,
    "QuotaExceeded": 413,
    "AgentsError": 500,
    "ObjectNotFound": 404,
    "InvalidRequest": 400,
    "Conflict": 409,
}


def _instance(cls: type[errors.SessionpoolError]) -> errors.SessionpoolError:
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.default is inspect.Parameter.empty
    ]
    args: list[object] = []
    for p in params:
        args.append(1 if p.name in ("limit", "quota") else ["x"] if p.name == "missing" else "x")
    return cls(*args)


def test_every_error_class_has_a_deliberate_status() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.SessionpoolError)
    }
    assert set(classes) == set(EXPECTED), "a new error class needs a status in faces.http"
    for name, cls in classes.items():
        assert status_for(_instance(cls)) == EXPECTED[name], name
