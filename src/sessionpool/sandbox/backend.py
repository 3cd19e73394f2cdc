"""The sandbox seam: what the session layer needs from a backend, and nothing more.

A backend decides where a session's kernel runs and what confines it. The session layer calls,
in order: ``start()`` once, ``create_slot()`` per session, ``spawn()`` per kernel (again after a
kernel dies), ``release_slot()`` when the session ends, ``close()`` at shutdown. A spawned
kernel speaks the framed protocol of docs/protocol.md through the ``Kernel`` interface.

The backends: ``jailed.JailBackend`` (the default: zygote fork into namespaces, seccomp,
cgroups and a sized tmpfs workspace), ``unsafe.UnsafeBackend`` (a plain fork, development
only) and ``fake.FakeBackend`` (in-process, for tests without root). ``backends.make_backend``
picks one from the configuration.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Protocol

from sessionpool import errors
from sessionpool.config import Limits, PoolConfig
from sessionpool.protocol import Message
from sessionpool.sandbox.cgroups import OomCounters
from sessionpool.sandbox.workspace import Workspace
from sessionpool.types import RuntimeInfo


class KernelDied(Exception):
    """The kernel's channel closed: the process is gone (or going)."""


class Kernel(Protocol):
    """One running kernel, as the session layer drives it."""

    pid: int

    async def send(self, header: Message) -> None:
        """Send one request; raises KernelDied when the kernel is gone."""

    async def read(
        self, max_header: int, max_blob: int, max_total: int
    ) -> tuple[Message, list[bytes]]:
        """The next message, size-checked before it is buffered; raises KernelDied at EOF and
        ``protocol.FrameError`` for anything malformed."""

    def signal(self, sig: int) -> None:
        """SIGINT interrupts the running request; SIGKILL ends the kernel."""

    def alive(self) -> bool: ...

    def outdated(self) -> bool:
        """Made by a process that has since retired and stays until its last kernel exits
        (a zygote past ``zygote_max_children``): a ready session to hand out first."""

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status (negative: killed by that signal), or None if not known in time."""

    def close(self) -> None:
        """Kill the kernel and release what the host holds for it."""


@dataclass
class Slot:
    """What one session holds from the backend for its whole life."""

    name: str
    #: the session's own host uid (jailed backends), None where sessions share the server's
    uid: int | None
    workspace: Workspace
    limits: Limits
    cgroup: str | None = None
    #: the cgroups' OOM counts when the current kernel started (deaths before don't count)
    oom_baseline: OomCounters | None = None
    #: kernels started in it so far (a restart starts another in the same slot)
    kernels: int = 0


def describe_status(status: int | None) -> str:
    """A process exit status in words."""
    if status is None:
        return "the process ended"
    if status < 0:
        return f"killed by signal {-status}"
    return f"exited with status {status}"


class Backend(ABC):
    name: ClassVar[str]
    #: sessions are isolated from the host and from each other
    isolated: ClassVar[bool]
    #: the CA bundle sessions with network trust (the egress proxy's), set before ``start``
    ca_bundle: Path | None = None

    @abstractmethod
    async def start(self) -> None:
        """Check the host and prepare; raise SandboxUnavailable if it cannot isolate."""

    @abstractmethod
    async def close(self) -> None:
        """Stop everything the backend started (kernels are closed by their sessions first)."""

    @abstractmethod
    async def create_slot(self, pool: PoolConfig) -> Slot:
        """Reserve what one session needs for its life: workspace, uid, cgroups."""

    @abstractmethod
    def release_slot(self, slot: Slot) -> None:
        """Undo create_slot; the kernel must already be dead. Called in a worker thread."""

    @abstractmethod
    async def spawn(self, pool: PoolConfig, slot: Slot) -> Kernel:
        """Start a kernel in ``slot`` and return it once it serves; raise SandboxError if the
        sandbox cannot be built."""

    async def open_listener(self, kernel: Kernel, host: str, port: int) -> socket.socket:
        """A listening TCP socket at ``host:port`` inside the kernel's network namespace (the
        egress proxy's door for that session). Only backends that give each session a network
        namespace of its own can."""
        raise errors.SandboxError(f"the {self.name} backend gives sessions no network of their own")

    def set_memory_limit(self, slot: Slot, memory_bytes: int) -> None:
        """Lower the memory limit of the session in ``slot`` (never above its pool's: the
        caller checks). A backend without cgroups records it as it records its pool's."""
        slot.limits = replace(slot.limits, memory_bytes=memory_bytes)

    def describe_exit(self, slot: Slot, status: int | None) -> str:
        """Why the kernel of ``slot`` ended, for the user (a backend may know more)."""
        return describe_status(status)

    def usage(self, slot: Slot, pid: int | None) -> tuple[int | None, float | None]:
        """The memory (bytes) and CPU time (seconds) the session in ``slot`` uses (``pid``: its
        kernel's, if one runs); None where the backend does not measure it."""
        return None, None

    def runtime_info(self, pool: PoolConfig) -> RuntimeInfo:
        """What the pool's sessions run (this backend runs no runtime of its own)."""
        return RuntimeInfo(pool.runtime, "unknown", "", image=pool.image)
