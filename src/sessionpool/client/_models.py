"""What the client returns: plain frozen dataclasses, no wire vocabulary."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sessionpool.client._exceptions import RemoteError

__all__ = [
    "ExecutionError",
    "ExecutionResult",
    "FileInfo",
    "Image",
    "OutputEvent",
    "SessionInfo",
    "ShellResult",
]


@dataclass(frozen=True)
class Image:
    """An image the code displayed (a matplotlib figure, ``display(img)`` ...)."""

    data: bytes
    format: str = "png"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the image to ``path`` (a directory gets ``image.<format>`` inside it)."""
        target = Path(path)
        if target.is_dir():
            target = target / f"image.{self.format}"
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True)
class ExecutionError:
    """An exception the code raised: its class name, its message and the traceback text."""

    name: str
    value: str
    traceback: str

    def __str__(self) -> str:
        return f"{self.name}: {self.value}" if self.value else self.name


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of ``Session.run``.

    ``text`` is the text form of the cell's last expression ("" when it has none); ``error`` is
    set when the code raised (the call itself still succeeds: raise it with
    :meth:`raise_for_error` if you want an exception).
    """

    stdout: str
    stderr: str
    text: str
    images: list[Image] = field(default_factory=list)
    error: ExecutionError | None = None
    #: seconds the server spent running the code
    duration: float = 0.0
    execution_id: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> ExecutionResult:
        """Raise :class:`RemoteError` if the code raised; return ``self`` otherwise."""
        if self.error is not None:
            raise RemoteError(self.error)
        return self


@dataclass(frozen=True)
class ShellResult:
    """The outcome of ``Session.run_shell``."""

    stdout: str
    stderr: str
    exit_code: int
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class FileInfo:
    """A file (or directory) in the session's ``/mnt/data``."""

    #: path relative to ``/mnt/data``, e.g. ``"out/plot.png"``
    name: str
    size: int
    #: RFC 3339 time of the last change, as the server wrote it
    modified: str
    is_dir: bool = False


@dataclass(frozen=True)
class SessionInfo:
    """A session allocated in the pool (``Client.sessions()``)."""

    identifier: str
    created_at: str
    last_accessed_at: str
    expires_at: str


@dataclass(frozen=True)
class OutputEvent:
    """One event of ``Session.stream``: output as the code writes it, then the result.

    ``kind`` is ``"stdout"`` or ``"stderr"`` (``text`` holds the new output), or ``"result"``
    (the last event; ``result`` holds the same :class:`ExecutionResult` ``run`` returns).
    """

    kind: Literal["stdout", "stderr", "result"]
    text: str = ""
    result: ExecutionResult | None = None
