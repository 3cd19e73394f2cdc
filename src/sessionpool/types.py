"""Internal value types shared by the layers above the kernel.

Faces translate these to their wire formats; the session layer builds them from kernel replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ExecutionStatus(StrEnum):
    OK = "ok"  # the cell ran to the end
    ERROR = "error"  # an uncaught exception; the session is intact
    TIMEOUT = "timeout"  # interrupted at the deadline; state kept unless ``state_lost``
    LOST = "lost"  # the interpreter died during the cell (OOM, segfault, os._exit, kill)


@dataclass(frozen=True)
class RuntimeInfo:
    """What a pool's sessions run (``sandbox/runtimes.py`` builds it from a runtime manifest)."""

    name: str
    kind: str  # "python", "node"; "unknown" when the runtime is not built here
    version: str
    #: ``name==version`` of every package in the runtime
    packages: tuple[str, ...] = ()
    #: sha256 over the sorted package lines: equal digests, equal package sets
    digest: str = ""
    #: the pool's custom image, if any
    image: str = ""


@dataclass(frozen=True)
class ErrorInfo:
    ename: str
    evalue: str
    traceback: str  # plain text, no ANSI codes


@dataclass(frozen=True)
class DisplayData:
    """One rich output: text MIME types as str, binary ones (image/png ...) as bytes."""

    data: dict[str, str | bytes]

    @property
    def png(self) -> bytes | None:
        value = self.data.get("image/png")
        return value if isinstance(value, bytes) else None


@dataclass(frozen=True)
class ExecutionResult:
    status: ExecutionStatus
    stdout: str
    stderr: str
    #: MIME bundle of the last expression's value (``text/plain`` at least), or None
    result: DisplayData | None
    #: display() calls and figures left open, in order
    displays: list[DisplayData] = field(default_factory=list)
    error: ErrorInfo | None = None
    #: output past the per-execution cap was dropped
    truncated: bool = False
    duration_ms: float = 0.0
    #: the interpreter was replaced during this call (timeout escalation or death)
    state_lost: bool = False

    @property
    def images(self) -> list[bytes]:
        return [png for d in self.displays if (png := d.png) is not None]


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool = False
    timed_out: bool = False
    duration_ms: float = 0.0


@dataclass(frozen=True)
class FileInfo:
    #: path relative to /mnt/data, "/"-separated
    path: str
    size: int
    mtime: float
    is_dir: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ProcessSpec:
    """A process to start in a session (the E2B process service): ``cmd`` with ``args``, run as
    the session's one user, in its own process group."""

    cmd: str
    args: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    #: the working directory inside the session (default: the workspace, /mnt/data)
    cwd: str | None = None
    tag: str | None = None
    #: a terminal of (cols, rows) instead of pipes; stdout and stderr then arrive as "pty"
    pty: tuple[int, int] | None = None
    #: keep stdin open for input (otherwise it reads /dev/null)
    stdin: bool = True


@dataclass(frozen=True)
class ProcessInfo:
    """A running process the session started (listings)."""

    pid: int
    cmd: str
    args: tuple[str, ...]
    envs: dict[str, str]
    cwd: str
    tag: str | None
    pty: bool


@dataclass(frozen=True)
class ProcessEvent:
    """One event of a running process: output (``stdout``, ``stderr`` or ``pty`` bytes), or its
    end (``end``) with the exit code; ``error`` says why it ended without one of its own (the
    session's interpreter ended, which ends its processes)."""

    kind: str
    data: bytes = b""
    exit_code: int | None = None
    #: the signal that killed it, if one did
    signal: int | None = None
    #: output bytes dropped past the session's output limit
    dropped: int = 0
    error: str = ""
