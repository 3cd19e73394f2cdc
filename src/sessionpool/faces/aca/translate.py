"""Engine results to wire shapes. The only place that knows both vocabularies."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from datetime import UTC, datetime

from sessionpool import paths
from sessionpool.faces.aca import models
from sessionpool.types import ExecutionResult, ExecutionStatus, FileInfo, ShellResult


def timestamp(epoch: float) -> str:
    """RFC 3339 in UTC with a ``Z``, as the service writes it."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


def _append(text: str, note: str) -> str:
    if not note:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + note + ("" if note.endswith("\n") else "\n")


def stderr_with_notes(res: ExecutionResult, timeout_s: float) -> str:
    """stderr plus what the caller must know: the traceback, a timeout, a lost interpreter.

    The session already explains timeouts and lost interpreters in stderr; a note is added here
    only where it said nothing, so every Failure carries a reason.
    """
    text = res.stderr
    if res.status is ExecutionStatus.ERROR and res.error is not None:
        trace = res.error.traceback or f"{res.error.ename}: {res.error.evalue}"
        if trace.strip() not in text:
            text = _append(text, trace)
    elif res.status is ExecutionStatus.TIMEOUT and not text.strip():
        if res.state_lost:
            state = (
                "the interpreter did not stop and was restarted: variables and imports are lost, "
                "files in /mnt/data are kept"
            )
        else:
            state = "the cell was interrupted; variables and imports are kept"
        text = _append(text, f"TimeoutError: execution exceeded {timeout_s:g} seconds; {state}.")
    elif res.status is ExecutionStatus.LOST and not text.strip():
        detail = f" ({res.error.evalue})" if res.error is not None and res.error.evalue else ""
        text = _append(
            text,
            f"SessionLost: the interpreter died during execution{detail}; variables and imports "
            "are lost, files in /mnt/data are kept. The next call starts a fresh interpreter.",
        )
    if res.truncated:
        text = _append(text, "[output truncated: the per-execution output limit was reached]")
    return text


def result_value(res: ExecutionResult) -> str | models.ImageResult:
    """The last expression's text repr, or an image when the cell produced one.

    An image the value itself renders to wins over figures shown along the way; the first figure
    is reported when several were produced.
    """
    png = res.result.png if res.result is not None else None
    if png is None and res.images:
        png = res.images[0]
    if png is not None:
        return models.ImageResult(base64_data=base64.b64encode(png).decode("ascii"))
    if res.status is ExecutionStatus.OK and res.result is not None:
        text = res.result.data.get("text/plain")
        if isinstance(text, str):
            return text
    return ""


def execute_response(res: ExecutionResult, timeout_s: float) -> models.ExecuteResponse:
    return models.ExecuteResponse(
        properties=models.ExecuteResultProperties(
            status="Success" if res.status is ExecutionStatus.OK else "Failure",
            stdout=res.stdout,
            stderr=stderr_with_notes(res, timeout_s),
            result=result_value(res),
            executionTimeInMilliseconds=round(res.duration_ms),
        )
    )


def lost_response(message: str) -> models.ExecuteResponse:
    """A Failure result for a session that could not run the cell at all."""
    return models.ExecuteResponse(
        properties=models.ExecuteResultProperties(
            status="Failure",
            stdout="",
            stderr=message + "\n",
            result="",
            executionTimeInMilliseconds=0,
        )
    )


def _clip(text: str, limit: int | None) -> str:
    return text if limit is None else text[:limit]


def _error_code(res: ExecutionResult) -> str:
    if res.status is ExecutionStatus.TIMEOUT:
        return "ExecutionTimeout"
    if res.status is ExecutionStatus.LOST:
        return "SessionLost"
    return res.error.ename if res.error is not None and res.error.ename else "ExecutionError"


def execution_resource(
    res: ExecutionResult,
    *,
    execution_id: str,
    identifier: str,
    execution_type: str,
    timeout_s: float,
    max_length: int | None,
) -> models.CodeExecutionResource:
    stderr = stderr_with_notes(res, timeout_s)
    error = None
    if res.status is not ExecutionStatus.OK:
        if res.error is not None and res.status is ExecutionStatus.ERROR:
            message = f"{res.error.ename}: {res.error.evalue}"
        else:
            message = stderr.strip().rsplit("\n", 1)[-1]
        error = models.ErrorEnvelope(
            error=models.ErrorDetail(code=_error_code(res), message=message)
        )
    value = result_value(res)
    return models.CodeExecutionResource(
        id=execution_id,
        identifier=identifier,
        executionType="Asynchronous" if execution_type == "Asynchronous" else "Synchronous",
        status="Succeeded" if res.status is ExecutionStatus.OK else "Failed",
        result=models.CodeExecutionResult(
            stdout=_clip(res.stdout, max_length),
            stderr=_clip(stderr, max_length),
            executionResult=_clip(value, max_length) if isinstance(value, str) else value,
            executionTimeInMilliseconds=round(res.duration_ms),
            outputStreamsMaxLength=max_length,
        ),
        error=error,
    )


def shell_resource(
    res: ShellResult, *, execution_id: str, identifier: str, timeout_s: float
) -> models.ShellExecutionResource:
    stderr = res.stderr
    if res.timed_out:
        stderr = _append(
            stderr, f"TimeoutError: the command exceeded {timeout_s:g} seconds and was killed."
        )
    if res.truncated:
        stderr = _append(stderr, "[output truncated: the per-execution output limit was reached]")
    return models.ShellExecutionResource(
        id=execution_id,
        identifier=identifier,
        status=str(res.exit_code),
        result=models.ShellExecutionResult(
            stdout=res.stdout,
            stderr=stderr,
            executionTimeInMilliseconds=round(res.duration_ms),
        ),
    )


def file_properties(info: FileInfo) -> models.FileProperties:
    return models.FileProperties(
        filename=info.path, size=info.size, lastModifiedTime=timestamp(info.mtime)
    )


def resource_file(info: FileInfo) -> models.SessionResourceFile:
    content_type = None
    if not info.is_dir:
        content_type = mimetypes.guess_type(info.name)[0] or "application/octet-stream"
    return models.SessionResourceFile(
        name=info.name,
        type="Directory" if info.is_dir else "File",
        contentType=content_type,
        sizeInBytes=info.size,
        lastModifiedAt=timestamp(info.mtime),
        directory=paths.parent(info.path),
    )


def session_resource(
    pool: str, identifier: str, created_at: float, last_used: float, expires_at: float
) -> models.SessionResource:
    tag = hashlib.sha256(f"{pool}\0{identifier}\0{created_at!r}".encode()).hexdigest()[:16]
    return models.SessionResource(
        identifier=identifier,
        createdAt=timestamp(created_at),
        lastAccessedAt=timestamp(last_used),
        expireAt=timestamp(expires_at),
        etag=f'"{tag}"',
    )
