"""Engine and pool settings as plain dataclasses.

The server reads TOML, flags and environment variables and builds these; the engine below it
knows nothing about where a setting came from.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MiB = 1024 * 1024
GiB = 1024 * MiB

BackendName = Literal["jail", "unsafe"]

DEFAULT_PRELOAD: tuple[str, ...] = ("numpy", "pandas", "matplotlib.pyplot", "IPython")


def default_runtimes_dir() -> Path:
    """Where ``make`` builds the runtimes: beside the server's environment, not inside it."""
    env = os.environ.get("SESSIONPOOL_RUNTIMES_DIR")
    return Path(env) if env else Path(sys.prefix) / "share" / "sessionpool" / "runtimes"


@dataclass(frozen=True)
class Limits:
    """Per-session resource limits."""

    memory_bytes: int = 2 * GiB
    pids: int = 256
    #: CPU bandwidth in cores (1.0 = one full core)
    cpus: float = 1.0
    open_files: int = 1024
    #: size of the session's /mnt/data (enforced by the kernel: it is a sized tmpfs)
    disk_bytes: int = 1 * GiB
    #: largest single file accepted by the file API
    file_bytes: int = 128 * 1000 * 1000
    #: size of the session's private /tmp and /dev/shm, each
    tmp_bytes: int = 256 * MiB
    #: stdout+stderr kept per execution; the rest is dropped and reported
    output_bytes: int = 1 * MiB
    #: largest single image (PNG) kept from one execution, and how many
    image_bytes: int = 16 * MiB
    images_per_execution: int = 32


def default_max_sessions() -> int:
    """Size the pool to the machine: one slot per 16 MiB of RAM, Azure's 600 as a floor cap."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-Linux
        return 600
    return max(16, pages // (16 * MiB))


@dataclass(frozen=True)
class PoolConfig:
    name: str = "default"
    #: modules imported once in the zygote and shared copy-on-write by every session
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    max_sessions: int = field(default_factory=default_max_sessions)
    ready_sessions: int = 8
    cooldown_seconds: float = 300.0
    execution_timeout_seconds: float = 220.0
    #: after SIGINT at the deadline, how long the cell may take to stop before the kill
    interrupt_grace_seconds: float = 2.0
    limits: Limits = field(default_factory=Limits)
    #: only "disabled" exists for now: sessions get a private loopback and nothing else
    network: Literal["disabled"] = "disabled"
    #: a zygote is retired after forking this many live sessions (fork cost grows with them)
    zygote_max_children: int = 200
    #: what the sessions run: a runtime built in the engine's runtimes_dir (``python``,
    #: ``python-3.13``, ``node``; ``sessionpool runtime list`` shows them)
    runtime: str = "python"
    #: a custom root filesystem for the sessions (rootfs directory or tarball, OCI layout):
    #: the session's / is this image, read-only; the kernel is still the runtime's
    image: str = ""


@dataclass(frozen=True)
class EngineConfig:
    backend: BackendName = "jail"
    #: workspaces, the jail's mount point and caches live here
    data_dir: Path = Path("/var/lib/sessionpool")
    #: host uids for sessions are uid_base .. uid_base+uid_count-1, one per live session
    uid_base: int = 1_000_000_000
    uid_count: int = 65536
    #: refuse new sessions when MemAvailable would drop below this
    memory_reserve_bytes: int = 512 * MiB
    #: the memory all sessions share (one cgroup over theirs); 0: the machine's memory (or the
    #: server's own cgroup limit, if lower) minus sessions_memory_reserve_bytes
    sessions_memory_bytes: int = 0
    #: what a derived bound leaves to the server, its zygotes and the host; 0: max(1 GiB, 10%)
    sessions_memory_reserve_bytes: int = 0
    #: built session runtimes (``sessionpool runtime build``) and prepared custom images
    runtimes_dir: Path = field(default_factory=lambda: default_runtimes_dir())


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster mode: this server is a gateway of the Ray cluster at ``address``.

    Every Ray node that offers the custom resource ``resource`` runs a node engine (its own
    zygotes, jails and cgroups); the gateway places sessions on them and routes calls to them.
    """

    #: the Ray cluster to join (``host:port`` of its head, or ``auto``)
    address: str
    #: this machine's address in the Ray cluster (empty: Ray's choice, the interface address)
    node_ip_address: str = ""
    #: the Ray namespace of sessionpool's named actors: one namespace is one cluster of pools
    namespace: str = "sessionpool"
    #: nodes that offer this custom Ray resource run a node engine
    resource: str = "sessionpool"
    #: how often the directory reads the node table and the node engines' figures
    poll_seconds: float = 0.5
    #: a placement not yet seen on its node is kept this long before it counts as unused
    placement_grace_seconds: float = 30.0


@dataclass(frozen=True)
class TenantQuotas:
    """What one tenant may use at once or per unit of time; 0 is no limit.

    ``[quotas]`` in the server configuration sets them for every tenant, ``[tenants.<name>]``
    for one; exceeding one answers 429 with ``Retry-After``.
    """

    #: live sessions of the tenant, over all pools (counted when a new one is allocated)
    max_sessions: int = 0
    #: executions (code and shell) started per second, with a burst of one second's worth
    executions_per_second: float = 0.0
    #: bytes uploaded into sessions per hour (a bucket refilled continuously)
    upload_bytes_per_hour: int = 0
    #: agent runs and responses in progress at once
    agents_runs: int = 0
