"""Wire models of the dynamic-sessions data plane, field names exactly as on the wire.

Requests ignore unknown keys (clients add their own); responses carry every field a known client
reads. ``$id`` fields are optional on the wire but harmless, so they are sent as the service does.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    def json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


# --- requests ----------------------------------------------------------------------------------


class NetworkPolicy(_Wire):
    """``PUT session/network`` (sessionpool): narrow a session's egress from its pool's.

    Unknown keys are refused, unlike the Azure bodies: no client adds its own to this one, and a
    misspelt ``allow`` ignored would leave the session the pool's whole allowlist."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "allowlist", "on"]
    #: hosts (``*.domain`` for subdomains, ``:port`` optional); omitted: the pool's
    allow: list[str] | None = None
    #: headers the proxy adds per domain; the session never sees them
    secrets: dict[str, dict[str, str]] | None = None


class ExecuteProperties(_Wire):
    codeInputType: str = "inline"
    executionType: str = "synchronous"
    code: str
    timeoutInSeconds: float | None = Field(default=None, gt=0)


class ExecuteRequest(_Wire):
    """``POST code/execute`` (2024-02-02-preview). A body without the envelope is accepted too."""

    properties: ExecuteProperties

    @model_validator(mode="before")
    @classmethod
    def _wrap_flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "properties" not in data and "code" in data:
            return {"properties": data}
        return data


class PythonExecuteProperties(_Wire):
    #: the session again, as the legacy clients send it; the query's ``identifier`` names it
    identifier: str | None = None
    codeInputType: str = "inline"
    executionType: str = "synchronous"
    pythonCode: str
    timeoutInSeconds: float | None = Field(default=None, gt=0)


class PythonExecuteRequest(_Wire):
    """``POST python/execute``: the first preview's route (LlamaIndex TS sends it), with
    ``pythonCode``. A body without the envelope is accepted too."""

    properties: PythonExecuteProperties

    @model_validator(mode="before")
    @classmethod
    def _wrap_flat(cls, data: Any) -> Any:
        if isinstance(data, dict) and "properties" not in data and "pythonCode" in data:
            return {"properties": data}
        return data


class ExecutionRequest(_Wire):
    """``POST executions`` (2024-10-02-preview and later): code, or a shell command."""

    codeInputType: str = "Inline"
    executionType: str = "Synchronous"
    code: str | None = None
    shellCommand: str | None = None
    timeoutInSeconds: float | None = Field(default=None, gt=0)
    outputStreamsMaxLength: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("properties"), dict):
            return data["properties"]
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> ExecutionRequest:
        if (self.code is None) == (self.shellCommand is None):
            raise ValueError("send exactly one of 'code' and 'shellCommand'")
        return self


# --- 2024-02-02-preview responses --------------------------------------------------------------


class ImageResult(_Wire):
    type: Literal["image"] = "image"
    format: Literal["png"] = "png"
    base64_data: str


class ExecuteResultProperties(_Wire):
    id_: str = Field(default="2", alias="$id")
    status: Literal["Success", "Failure"]
    stdout: str
    stderr: str
    #: the text repr of the last expression ("" when none), or an image
    result: str | ImageResult
    executionTimeInMilliseconds: int


class ExecuteResponse(_Wire):
    id_: str = Field(default="1", alias="$id")
    properties: ExecuteResultProperties


class FlatExecuteResponse(ExecuteResultProperties):
    """``python/execute``'s answer: the result's fields at the top level, no envelope."""

    id_: str = Field(default="1", alias="$id")


class FileProperties(_Wire):
    id_: str | None = Field(default=None, alias="$id")
    #: path relative to /mnt/data, e.g. "sub/x.txt"
    filename: str
    size: int
    lastModifiedTime: str


class FileItem(_Wire):
    id_: str | None = Field(default=None, alias="$id")
    properties: FileProperties


class FileList(_Wire):
    """``GET files`` and ``POST files/upload`` in 2024-02-02-preview."""

    id_: str = Field(default="1", alias="$id")
    value: list[FileItem]

    @classmethod
    def numbered(cls, props: list[FileProperties]) -> FileList:
        items = []
        for i, p in enumerate(props):
            p.id_ = str(3 + 2 * i)
            items.append(FileItem(**{"$id": str(2 + 2 * i)}, properties=p))
        return cls(value=items)


# --- executions family responses ---------------------------------------------------------------


class SessionResourceFile(_Wire):
    name: str
    type: Literal["File", "Directory"]
    contentType: str | None = None
    sizeInBytes: int
    lastModifiedAt: str
    #: absolute directory holding the entry, e.g. "/mnt/data/sub"
    directory: str


class SessionResourceFileList(_Wire):
    value: list[SessionResourceFile]
    nextLink: str | None = None

    def dump(self) -> dict[str, Any]:
        # nextLink is always present (null when there is no next page)
        return {"value": [f.dump() for f in self.value], "nextLink": self.nextLink}

    def json_bytes(self) -> bytes:
        return json.dumps(self.dump()).encode()


class ErrorDetail(_Wire):
    code: str
    message: str


class ErrorEnvelope(_Wire):
    error: ErrorDetail


class CodeExecutionResult(_Wire):
    stdout: str
    stderr: str
    executionResult: str | ImageResult
    executionTimeInMilliseconds: int
    outputStreamsMaxLength: int | None = None


class CodeExecutionResource(_Wire):
    id: str
    identifier: str
    executionType: Literal["Synchronous", "Asynchronous"]
    status: Literal["NotStarted", "Running", "Succeeded", "Failed", "Canceled"]
    result: CodeExecutionResult | None = None
    error: ErrorEnvelope | None = None


class ShellExecutionResult(_Wire):
    stdout: str
    stderr: str
    executionTimeInMilliseconds: int


class ShellExecutionResource(_Wire):
    id: str
    identifier: str
    executionType: Literal["Synchronous", "Asynchronous"] = "Synchronous"
    #: the command's exit code as a decimal string
    status: str
    result: ShellExecutionResult


class SessionResource(_Wire):
    identifier: str
    createdAt: str
    lastAccessedAt: str
    expireAt: str
    etag: str


class SessionList(_Wire):
    sessions: list[SessionResource]
    nextLink: str | None = None

    def dump(self) -> dict[str, Any]:
        return {"sessions": [s.dump() for s in self.sessions], "nextLink": self.nextLink}

    def json_bytes(self) -> bytes:
        return json.dumps(self.dump()).encode()


class NameVersion(_Wire):
    name: str
    version: str


class KernelInfo(_Wire):
    name: str
    version: str
    projectUrl: str
    description: str


class RuntimeDescription(_Wire):
    """sessionpool's own addition: which runtime the pool runs, and a digest of its packages."""

    name: str
    kind: str
    version: str
    packagesDigest: str
    image: str | None = None


class Metadata(_Wire):
    runtimes: list[NameVersion]
    preInstalledPackages: list[NameVersion]
    createdAt: str
    lastUpdatedAt: str
    jupyterKernel: KernelInfo
    runtime: RuntimeDescription
