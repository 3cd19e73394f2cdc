"""What the layers above use of a pool and of a session, wherever the session runs.

A session lives either in this process (``pool.Pool`` and ``session.Session``) or on another
node of a cluster (``cluster.remote``): faces and the agents service see only these protocols,
so every API works the same on one machine and on many.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Protocol

from sessionpool.config import PoolConfig
from sessionpool.types import (
    ExecutionResult,
    FileInfo,
    ProcessEvent,
    ProcessInfo,
    ProcessSpec,
    RuntimeInfo,
    ShellResult,
)

#: a download's bytes: read from the workspace here, or streamed from another node
Chunks = Iterator[bytes] | AsyncIterator[bytes]


class ProcessFollower(Protocol):
    """One follower of a process the session runs: its events, then one ``end``."""

    pid: int

    def events(self) -> AsyncGenerator[ProcessEvent, None]: ...

    def detach(self) -> None:
        """Stop following; the process runs on."""


class SessionInfo(Protocol):
    """What a listing shows of one session."""

    @property
    def identifier(self) -> str: ...

    @property
    def created_at(self) -> float: ...

    @property
    def last_used(self) -> float: ...

    @property
    def expires_at(self) -> float: ...


class SessionHandle(SessionInfo, Protocol):
    """One session: calls run one at a time; files are served beside the interpreter."""

    async def execute(
        self,
        code: str,
        timeout: float | None = None,
        on_output: Callable[[str, str], None] | None = None,
        context: str | None = None,
    ) -> ExecutionResult: ...

    async def reset_context(self, name: str) -> None:
        """Drop a named namespace (see ``execute``'s ``context``)."""

    async def run_shell(self, command: str, timeout: float | None = None) -> ShellResult: ...

    async def interrupt(self) -> None: ...

    def keep_alive_until(self, when: float) -> None:
        """Not reaped for idleness before ``when`` (epoch seconds)."""
        ...

    def network(self) -> dict[str, object]:
        """The session's egress policy: ``mode``, ``allow`` and the secrets' domains and header
        names (never their values)."""
        ...

    async def set_network(
        self,
        mode: str,
        allow: Sequence[str] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, object]:
        """Narrow the session's egress from its pool's (``errors.EgressWidens`` if it asks
        for more); holds at once. ``allow`` None keeps the pool's hosts."""
        ...

    async def set_memory_limit(self, memory_bytes: int) -> None:
        """Lower the session's memory limit from its pool's (``InvalidArgument`` above it)."""
        ...

    async def write_file(self, path: str, data: bytes | AsyncIterator[bytes]) -> FileInfo: ...

    async def read_file(self, path: str) -> bytes: ...

    async def download(self, path: str) -> tuple[FileInfo, Chunks]: ...

    async def stat_file(self, path: str) -> FileInfo: ...

    async def list_files(self, path: str = "", recursive: bool = False) -> list[FileInfo]: ...

    async def delete_file(self, path: str) -> None: ...

    async def make_dir(self, path: str) -> bool: ...

    async def move_file(self, source: str, destination: str) -> FileInfo: ...

    # processes (the E2B process service): run and supervised by the session's kernel
    async def start_process(self, spec: ProcessSpec) -> ProcessFollower: ...

    def connect_process(self, pid: int) -> ProcessFollower: ...

    async def list_processes(self) -> list[ProcessInfo]: ...

    async def send_process_input(self, pid: int, data: bytes) -> None: ...

    async def close_process_stdin(self, pid: int) -> None: ...

    async def signal_process(self, pid: int, sig: int) -> None: ...

    async def resize_process(self, pid: int, cols: int, rows: int) -> None: ...


class PoolHandle(Protocol):
    """Sessions by identifier, allocated on first use, within the pool's limits."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> PoolConfig: ...

    async def acquire(self, identifier: str) -> SessionHandle: ...

    async def lookup(self, identifier: str) -> SessionHandle | None:
        """The live session named ``identifier``, or None (never allocates)."""
        ...

    async def delete(self, identifier: str) -> bool: ...

    async def list_sessions(self) -> Sequence[SessionInfo]: ...

    def is_ready(self) -> bool: ...

    def runtime(self) -> RuntimeInfo:
        """What the pool's sessions run (its runtime's name, version and packages)."""
        ...


class EngineHandle(Protocol):
    """The pools a server serves from: the local engine, or a cluster's."""

    @property
    def pools(self) -> Mapping[str, PoolHandle]: ...

    def pool(self, name: str) -> PoolHandle: ...

    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self, deadline_s: float = 10.0) -> None: ...
