"""The client's logic without I/O: requests to build, answers to parse, errors to raise.

Each operation is a :class:`Call`: an ``httpx.Request`` plus the function that turns the answer
into a result. :mod:`._sync` and :mod:`._async` only send calls; everything they have in common
lives here, once.

The wire API is Azure Container Apps dynamic sessions, ``2025-02-02-preview`` (``executions``,
``files``, ``session``, ``listSessions``), which both sessionpool and Azure serve.
"""

from __future__ import annotations

import base64
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from sessionpool import paths
from sessionpool._version import __version__
from sessionpool.client._exceptions import (
    AuthenticationError,
    ConnectionFailed,
    ExecutionTimeout,
    FileTooLarge,
    InvalidRequest,
    NotFound,
    PoolExhausted,
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

API_VERSION = "2025-02-02-preview"
#: seconds the client waits beyond an execution's own timeout before giving up on the answer
TIMEOUT_MARGIN = 30.0
#: the server's longest execution when the caller names none (Azure: 220 s)
DEFAULT_EXECUTION_TIMEOUT = 220.0

T = TypeVar("T")
#: an API key, or a function returning a fresh token (an Azure credential's ``get_token``)
Credential = str | Callable[[], str] | None
Progress = Callable[[int, int | None], None]


@dataclass
class Call(Generic[T]):
    """One HTTP exchange: the request and how to read its answer (which checks the status)."""

    request: httpx.Request
    parse: Callable[[httpx.Response], T]


def _seconds(ms: Any) -> float:
    return float(ms) / 1000.0 if isinstance(ms, int | float) else 0.0


class Protocol:
    """Builds the requests of one pool endpoint; shared by ``Client`` and ``AsyncClient``."""

    def __init__(self, endpoint: str, credential: Credential) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"endpoint {endpoint!r} is not an http(s) URL; it is the pool endpoint, e.g. "
                "http://127.0.0.1:8080/pools/default"
            )
        self.endpoint = endpoint.rstrip("/")
        self.credential = credential

    # --- building ------------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"sessionpool-python/{__version__}"}
        token = self.credential() if callable(self.credential) else self.credential
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def request(
        self,
        method: str,
        operation: str,
        *,
        identifier: str | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Request:
        query = {"api-version": API_VERSION}
        if identifier is not None:
            query["identifier"] = identifier
        query.update(params or {})
        request = httpx.Request(
            method,
            f"{self.endpoint}/{operation}",
            params=query,
            headers=self.headers(),
            **kwargs,
        )
        if timeout is not None:
            request.extensions["timeout"] = httpx.Timeout(timeout, connect=10.0).as_dict()
        return request

    def run(self, identifier: str, code: str, timeout: float | None) -> Call[ExecutionResult]:
        body: dict[str, Any] = {
            "codeInputType": "Inline",
            "executionType": "Synchronous",
            "code": code,
            # an integer: Azure's 2025-02-02-preview schema says int32
            "timeoutInSeconds": math.ceil(timeout or DEFAULT_EXECUTION_TIMEOUT),
        }
        wait = (timeout or DEFAULT_EXECUTION_TIMEOUT) + TIMEOUT_MARGIN
        request = self.request("POST", "executions", identifier=identifier, json=body, timeout=wait)
        return Call(request, lambda r: parse_execution(r, identifier))

    def stream(self, identifier: str, code: str, timeout: float | None) -> httpx.Request:
        """``POST executions/stream`` (sessionpool's Server-Sent Events extension)."""
        body: dict[str, Any] = {
            "codeInputType": "Inline",
            "executionType": "Synchronous",
            "code": code,
            "timeoutInSeconds": math.ceil(timeout or DEFAULT_EXECUTION_TIMEOUT),
        }
        request = self.request(
            "POST",
            "executions/stream",
            identifier=identifier,
            json=body,
            timeout=(timeout or DEFAULT_EXECUTION_TIMEOUT) + TIMEOUT_MARGIN,
        )
        request.headers["Accept"] = "text/event-stream"
        return request

    def run_shell(self, identifier: str, command: str, timeout: float | None) -> Call[ShellResult]:
        body: dict[str, Any] = {"shellCommand": command}
        if timeout is not None:
            body["timeoutInSeconds"] = math.ceil(timeout)
        wait = (timeout or DEFAULT_EXECUTION_TIMEOUT) + TIMEOUT_MARGIN
        request = self.request("POST", "executions", identifier=identifier, json=body, timeout=wait)
        return Call(request, lambda r: parse_shell(r, identifier))

    def upload(
        self,
        identifier: str,
        data: bytes | str | os.PathLike[str] | IO[bytes],
        name: str | None,
        progress: Progress | None = None,
    ) -> tuple[Call[FileInfo], IO[bytes] | None]:
        """The upload call, and a file the caller must close once it is sent (if one was opened)."""
        opened: IO[bytes] | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            if name is None:
                raise ValueError("uploading bytes needs a name: upload(data, 'name.ext')")
            body: IO[bytes] | bytes = bytes(data)
            total: int | None = len(data)
        elif isinstance(data, str | os.PathLike):
            path = Path(data)
            opened = body = path.open("rb")
            total = path.stat().st_size
            name = name or path.name
        else:
            body = data
            total = None
            name = name or Path(getattr(data, "name", "") or "upload.bin").name
        directory, base = split_name(name)
        sent: Any = body if progress is None else _ProgressReader(body, total, progress)
        params = {"path": directory} if directory else {}
        request = self.request(
            "POST",
            "files",
            identifier=identifier,
            params=params,
            files={"file": (base, sent, "application/octet-stream")},
            timeout=600.0,
        )
        return Call(request, lambda r: parse_file(r, name)), opened

    def files(self, identifier: str, path: str = "") -> Call[list[FileInfo]]:
        params = {"path": relative(path)} if relative(path) else {}
        request = self.request("GET", "files", identifier=identifier, params=params)
        return Call(request, parse_files)

    def download(self, identifier: str, name: str) -> Call[bytes]:
        directory, base = split_name(name)
        params = {"path": directory} if directory else {}
        request = self.request(
            "GET",
            f"files/{quote(base, safe='')}/content",
            identifier=identifier,
            params=params,
            timeout=600.0,
        )
        return Call(request, lambda r: check(r, f"file {name!r}").content)

    def delete_file(self, identifier: str, name: str) -> Call[None]:
        directory, base = split_name(name)
        params = {"path": directory} if directory else {}
        request = self.request(
            "DELETE", f"files/{quote(base, safe='')}", identifier=identifier, params=params
        )
        return Call(request, lambda r: _none(check(r, f"file {name!r}")))

    def delete_session(self, identifier: str) -> Call[None]:
        request = self.request("DELETE", "session", identifier=identifier)
        return Call(request, lambda r: _none(check(r, f"session {identifier!r}")))

    def sessions(self, url: str | None = None) -> Call[tuple[list[SessionInfo], str | None]]:
        if url is None:
            request = self.request("GET", "listSessions")
        else:
            request = httpx.Request("GET", url, headers=self.headers())
        return Call(request, parse_sessions)


def new_identifier() -> str:
    return f"sp-{uuid.uuid4()}"


def relative(path: str) -> str:
    """A name relative to /mnt/data (``/mnt/data/x`` and ``x`` are the same file), as the
    server takes it; surrounding whitespace is dropped (a pasted name)."""
    return paths.relative(path.strip())


def split_name(name: str) -> tuple[str, str]:
    """``"a/b/c.txt"`` -> (``"a/b"``, ``"c.txt"``): the directory goes in ``?path=``."""
    rel = relative(name)
    if not rel:
        raise ValueError(f"{name!r} names no file")
    directory, _, base = rel.rpartition("/")
    return directory, base


def _none(_: object) -> None:
    return None


class _ProgressReader:
    """A binary file (or bytes) that reports how much has been read, for upload progress."""

    def __init__(self, body: IO[bytes] | bytes, total: int | None, progress: Progress) -> None:
        import io

        self._file: IO[bytes] = io.BytesIO(body) if isinstance(body, bytes) else body
        self._total = total
        self._done = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._done += len(chunk)
        self._progress(self._done, self._total)
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __iter__(self) -> Any:  # httpx streams files by read(); never by iteration
        raise TypeError("read() only")


# --- parsing -----------------------------------------------------------------------------------


def _error_body(response: httpx.Response) -> tuple[str, str]:
    code = response.headers.get("x-ms-error-code", "")
    message = ""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = code or str(body["error"].get("code", ""))
        message = str(body["error"].get("message", ""))
    if not message:
        message = response.text.strip()[:500] or response.reason_phrase
    return code, message


def error_for(response: httpx.Response, what: str = "") -> SessionpoolError:
    """The exception for a non-2xx answer, with a message saying what to do."""
    status = response.status_code
    code, message = _error_body(response)
    subject = f"{what}: " if what else ""
    kw: dict[str, Any] = {"status": status, "code": code or None}
    if status in (401, 403):
        return AuthenticationError(
            f"{subject}{message} (HTTP {status}). Pass the server's API key: "
            "Client(endpoint, api_key=...), --api-key or SESSIONPOOL_API_KEY; a generated key "
            "is kept in <data_dir>/api-key on the server",
            **kw,
        )
    if status == 404 and code in ("SessionPoolExhausted", "PoolExhausted"):
        return PoolExhausted(
            _hint(
                message,
                "max_sessions",
                "close sessions you no longer need (session.close()), wait for idle ones to "
                "cool down, or raise the pool's max_sessions",
            ),
            **kw,
        )
    if status == 404:
        hint = ""
        if code == "PoolNotFound" or "no operation at" in message:
            hint = "check the endpoint: it is the pool's URL, e.g. http://HOST:8080/pools/default"
        elif code == "FileNotFound":
            hint = "list what exists with session.files()"
        return NotFound(
            subject + _hint(message, "endpoint" if hint[:5] == "check" else "", hint), **kw
        )
    if status == 413:
        return FileTooLarge(
            subject
            + _hint(
                message,
                "",
                "split or compress the file, or ask the operator to raise the pool's "
                "file_bytes / disk_bytes limits",
            ),
            **kw,
        )
    if status == 503 and code == "SessionLost":
        return SessionLost(
            f"{subject}{message}. Run the call again: it gets a fresh interpreter", **kw
        )
    if 400 <= status < 500:
        return InvalidRequest(f"{subject}{message} (HTTP {status})", **kw)
    return ServerError(
        f"{subject}{message} (HTTP {status}). The server failed; retry, and if it persists, "
        "check the server's log",
        **kw,
    )


def _hint(message: str, already: str, hint: str) -> str:
    """``message`` and what to do, unless the server's message already says it."""
    if not hint or (already and already in message):
        return message
    return f"{message.rstrip().rstrip('.')}. {hint[0].upper()}{hint[1:]}"


def check(response: httpx.Response, what: str = "") -> httpx.Response:
    if response.is_success:
        return response
    raise error_for(response, what)


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    check(response, what)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ServerError(
            f"{what}: the server's answer is not JSON ({response.text[:200]!r}); is the endpoint "
            "a sessionpool or Azure dynamic-sessions pool URL?",
            status=response.status_code,
        ) from exc
    if not isinstance(body, dict):
        raise ServerError(f"{what}: unexpected answer {body!r}", status=response.status_code)
    return body


def _traceback(stderr: str) -> str:
    at = stderr.find("Traceback")
    if at < 0:
        at = stderr.find(
            "---------------------------------------------------------------------------"
        )
    return stderr[at:] if at >= 0 else stderr


def parse_execution(response: httpx.Response, identifier: str) -> ExecutionResult:
    return execution_from(_json(response, f"session {identifier!r}"), identifier)


def execution_from(body: dict[str, Any], identifier: str) -> ExecutionResult:
    """An ``executions`` resource as a result; raises for a timeout or a lost interpreter."""
    result = body.get("result") or {}
    value = result.get("executionResult", "")
    images: list[Image] = []
    text = ""
    if isinstance(value, dict) and value.get("type") == "image":
        images.append(
            Image(base64.b64decode(value.get("base64_data", "")), str(value.get("format", "png")))
        )
    elif value is not None:
        text = value if isinstance(value, str) else json.dumps(value)
    stderr = str(result.get("stderr", ""))
    outcome = ExecutionResult(
        stdout=str(result.get("stdout", "")),
        stderr=stderr,
        text=text,
        images=images,
        duration=_seconds(result.get("executionTimeInMilliseconds")),
        execution_id=str(body.get("id", "")),
    )
    status = body.get("status")
    if status in ("Succeeded", None):
        return outcome
    detail = (body.get("error") or {}).get("error") or {}
    code = str(detail.get("code", "ExecutionError"))
    message = str(detail.get("message", ""))
    if code == "ExecutionTimeout":
        raise ExecutionTimeout(
            f"session {identifier!r}: {message or 'the execution timed out'}. Pass a longer "
            "timeout= (the pool's execution_timeout_seconds is the ceiling), or split the work; "
            "the partial output is in .result",
            result=outcome,
            code=code,
        )
    if code == "SessionLost":
        raise SessionLost(
            f"session {identifier!r}: {message or 'the interpreter died'}. Variables and imports "
            "are gone (files in /mnt/data are kept); run the setup code again. A memory limit is "
            "the usual cause",
            result=outcome,
            code=code,
        )
    if status == "Failed" and not body.get("result"):
        raise ServerError(f"session {identifier!r}: {code}: {message}", code=code)
    name, _, value_text = message.partition(": ")
    if name != code:
        name, value_text = code, message
    error = ExecutionError(name=name, value=value_text, traceback=_traceback(stderr))
    return ExecutionResult(
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        text=outcome.text,
        images=outcome.images,
        error=error,
        duration=outcome.duration,
        execution_id=outcome.execution_id,
    )


def parse_shell(response: httpx.Response, identifier: str) -> ShellResult:
    body = _json(response, f"session {identifier!r}")
    result = body.get("result") or {}
    raw = str(body.get("status", ""))
    try:
        exit_code = int(raw)
    except ValueError:
        detail = (body.get("error") or {}).get("error") or {}
        raise ServerError(
            f"session {identifier!r}: the shell command did not run ({raw}: "
            f"{detail.get('message', 'no exit code')}); does this pool support shell commands?",
            code=detail.get("code"),
        ) from None
    return ShellResult(
        stdout=str(result.get("stdout", "")),
        stderr=str(result.get("stderr", "")),
        exit_code=exit_code,
        duration=_seconds(result.get("executionTimeInMilliseconds")),
    )


def _file_info(item: Mapping[str, Any]) -> FileInfo:
    name = str(item.get("name", ""))
    directory = relative(str(item.get("directory", "") or ""))
    return FileInfo(
        name=f"{directory}/{name}" if directory else name,
        size=int(item.get("sizeInBytes") or 0),
        modified=str(item.get("lastModifiedAt", "")),
        is_dir=item.get("type") == "Directory",
    )


def parse_file(response: httpx.Response, name: str) -> FileInfo:
    body = _json(response, f"upload of {name!r}")
    info = _file_info(body)
    return FileInfo(relative(name), info.size, info.modified, info.is_dir)


def parse_files(response: httpx.Response) -> list[FileInfo]:
    body = _json(response, "files")
    return [_file_info(item) for item in body.get("value", [])]


def parse_sessions(response: httpx.Response) -> tuple[list[SessionInfo], str | None]:
    body = _json(response, "sessions")
    sessions = [
        SessionInfo(
            identifier=str(s.get("identifier", "")),
            created_at=str(s.get("createdAt", "")),
            last_accessed_at=str(s.get("lastAccessedAt", "")),
            expires_at=str(s.get("expireAt", "")),
        )
        for s in body.get("sessions", [])
    ]
    next_link = body.get("nextLink")
    return sessions, next_link if isinstance(next_link, str) and next_link else None


def content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def transport_error(request: httpx.Request, exc: httpx.TransportError) -> SessionpoolError:
    """The client error for a request that got no answer."""
    where = f"{request.url.scheme}://{request.url.netloc.decode()}"
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(
            f"{request.method} {request.url.path}: no answer from {where} in time. The server may "
            "be overloaded; retry, or give the client a longer timeout (Client(timeout=...))"
        )
    return ConnectionFailed(
        f"cannot reach {where}: {exc or type(exc).__name__}. Is the server running "
        "(sessionpool serve) and the endpoint right? For a self-signed certificate pass "
        "verify='<ca.pem>' or set SSL_CERT_FILE"
    )


class EventParser:
    """Server-Sent Events, line by line (``httpx``'s ``iter_lines``), without I/O."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """The (event, data) that ``line`` completes, if it ends one."""
        if not line:
            if not self._data:
                self._event = "message"
                return None
            done = (self._event, "\n".join(self._data))
            self._event, self._data = "message", []
            return done
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


def stream_event(event: str, data: str, identifier: str) -> OutputEvent | None:
    """The client's event for one server event; raises for errors (timeout, lost session)."""
    try:
        body = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ServerError(f"session {identifier!r}: a malformed event ({data[:200]!r})") from exc
    if event in ("stdout", "stderr"):
        return OutputEvent(event, str(body.get("text", "")))  # type: ignore[arg-type]
    if event == "result":
        result = execution_from(body, identifier)
        return OutputEvent("result", result.text, result)
    if event == "error":
        detail = body.get("error") or {}
        code, message = str(detail.get("code", "")), str(detail.get("message", ""))
        if code == "SessionLost":
            raise SessionLost(
                f"session {identifier!r}: {message}. Run the setup code again (files are kept)",
                code=code,
            )
        raise ServerError(f"session {identifier!r}: {code}: {message}", code=code)
    return None  # an event this client does not know: ignored, for forward compatibility
