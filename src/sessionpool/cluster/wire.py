"""The node API's bodies: internal values as JSON, both ways (gateway <-> node engine).

Both ends are this package, so the format is whatever carries ``types`` and ``errors`` whole:
bytes (images) as base64, an error as its class name and attributes. Nothing here is public.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from sessionpool import errors
from sessionpool.types import (
    DisplayData,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    FileInfo,
    ShellResult,
)

#: the header that carries the node's token (handed out through Ray to the gateways only)
TOKEN_HEADER = "x-sessionpool-node-token"
#: the answer of a node that does not hold the session and was not asked to create it
NOT_HERE = "not_here"
#: how long a node keeps an idle connection from a gateway: longer than the gateways keep it
#: (``remote.KEEP_ALIVE_SECONDS``), so a node never closes one a gateway is about to reuse
NODE_KEEP_ALIVE_SECONDS = 75
#: the directory's calls a gateway makes over HTTP: POST /<call>, the arguments as a JSON list
DIRECTORY_HTTP_CALLS = ("place", "locate", "forget")


def token_ok(scope: Any, token: str) -> bool:
    """An ASGI request carries ``token`` (the node's, or the directory's) in its header."""
    given = dict(scope["headers"]).get(TOKEN_HEADER.encode(), b"")
    return hmac.compare_digest(given, token.encode())


def _bundle_out(bundle: DisplayData) -> dict[str, Any]:
    return {
        mime: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
        for mime, v in bundle.data.items()
    }


def _bundle_in(raw: dict[str, Any]) -> DisplayData:
    data: dict[str, str | bytes] = {}
    for mime, v in raw.items():
        data[mime] = base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v)
    return DisplayData(data)


def result_out(res: ExecutionResult) -> dict[str, Any]:
    return {
        "status": res.status.value,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "result": _bundle_out(res.result) if res.result is not None else None,
        "displays": [_bundle_out(d) for d in res.displays],
        "error": [res.error.ename, res.error.evalue, res.error.traceback] if res.error else None,
        "truncated": res.truncated,
        "duration_ms": res.duration_ms,
        "state_lost": res.state_lost,
    }


def result_in(raw: dict[str, Any]) -> ExecutionResult:
    error = raw.get("error")
    result = raw.get("result")
    return ExecutionResult(
        status=ExecutionStatus(raw["status"]),
        stdout=raw["stdout"],
        stderr=raw["stderr"],
        result=_bundle_in(result) if result is not None else None,
        displays=[_bundle_in(d) for d in raw.get("displays", [])],
        error=ErrorInfo(*error) if error else None,
        truncated=bool(raw.get("truncated")),
        duration_ms=float(raw.get("duration_ms", 0.0)),
        state_lost=bool(raw.get("state_lost")),
    )


def shell_out(res: ShellResult) -> dict[str, Any]:
    return {
        "exit_code": res.exit_code,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "truncated": res.truncated,
        "timed_out": res.timed_out,
        "duration_ms": res.duration_ms,
    }


def shell_in(raw: dict[str, Any]) -> ShellResult:
    return ShellResult(**raw)


def file_out(info: FileInfo) -> dict[str, Any]:
    return {"path": info.path, "size": info.size, "mtime": info.mtime, "is_dir": info.is_dir}


def file_in(raw: dict[str, Any]) -> FileInfo:
    return FileInfo(**raw)


def error_out(exc: errors.ServiceError) -> dict[str, Any]:
    """The error's class and every plain attribute, so the gateway raises the same error."""
    attrs = {
        k: v
        for k, v in vars(exc).items()
        if isinstance(v, (str, int, float, bool, type(None))) or _str_list(v)
    }
    return {"error": {"class": type(exc).__name__, "message": exc.message, "attrs": attrs}}


def _str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def error_in(raw: dict[str, Any]) -> errors.ServiceError:
    body = raw.get("error") if isinstance(raw, dict) else None
    if not isinstance(body, dict):
        return errors.SandboxError(f"a node answered something unexpected: {str(raw)[:200]}")
    cls = getattr(errors, str(body.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ServiceError)):
        cls = errors.ServiceError
    exc = cls.__new__(cls)
    message = str(body.get("message", ""))
    Exception.__init__(exc, message)
    attrs = body.get("attrs")
    if isinstance(attrs, dict):
        exc.__dict__.update(attrs)
    exc.message = message
    return exc
