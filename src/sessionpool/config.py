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
#: which of a session's pages kernel samepage merging (KSM) may merge with other processes'
#: identical pages: none, those of the mappings inherited from the zygote, or all of them
MemoryMerge = Literal["off", "zygote", "all"]

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


NetworkMode = Literal["off", "allowlist", "on"]
#: where a session with network finds the egress proxy: its own loopback, this port
EGRESS_PROXY_PORT = 3128


@dataclass(frozen=True)
class EgressSettings:
    """A pool's egress: the hosts its sessions may reach and the proxy's limits per session."""

    #: ``host`` or ``*.domain`` (any subdomain), optionally ``:port`` (else 80 and 443)
    allow: tuple[str, ...] = ()
    #: headers the proxy adds to requests for one domain (which it then terminates TLS for):
    #: ``((domain, ((header, value), ...)), ...)``; the session never sees the values
    secrets: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    #: bytes per second through the proxy, both directions together, per session
    bytes_per_second: int = 8 * MiB
    #: connections open at once, per session
    connections: int = 32
    #: new connections per second, per session (a burst of twice that is admitted)
    connections_per_second: float = 50.0


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
    #: the sessions' network: ``off`` (a private loopback, nothing else), ``allowlist`` (only
    #: the hosts ``egress.allow`` names, through the server's egress proxy) or ``on`` (any public
    #: host through the proxy: unsafe, the operator's explicit choice)
    network: NetworkMode = "off"
    #: what the egress proxy admits and how much (``network`` other than ``off``)
    egress: EgressSettings = field(default_factory=lambda: EgressSettings())
    #: a zygote is retired after forking this many live sessions (fork cost grows with them)
    zygote_max_children: int = 200
    #: what the sessions run: a runtime built in the engine's runtimes_dir (``python``,
    #: ``python-3.13``, ``node``; ``sessionpool runtime list`` shows them)
    runtime: str = "python"
    #: a custom root filesystem for the sessions (rootfs directory or tarball, OCI layout):
    #: the session's / is this image, read-only; the kernel is still the runtime's
    image: str = ""
    #: kernel samepage merging (density, at the price of a side channel; docs/security.md):
    #: ``off``; ``zygote``, only the mappings the session inherits from the zygote (the
    #: runtime and its preloaded libraries, and what later lands in those mappings); ``all``,
    #: everything the session allocates too (single-tenant pools only)
    memory_merge: MemoryMerge = "off"


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
    #: names the egress proxy resolves itself, before the system's resolver: ((name, address),)
    egress_hosts: tuple[tuple[str, str], ...] = ()
    #: non-public networks (CIDR) the egress proxy may still connect to (a private index);
    #: loopback, link-local and the metadata addresses are refused whatever this says
    egress_allow_networks: tuple[str, ...] = ()
    #: extra CA certificates (PEM files) the proxy and the sessions trust for upstream TLS
    egress_trust_ca_files: tuple[Path, ...] = ()
    #: the scan rate the engine gives kernel samepage merging when a pool's memory_merge needs it
    #: and KSM is not running yet: pages per wake-up of ksmd, and its sleep between wake-ups.
    #: ksmd rescans for as long as mergeable memory exists: 2000 merged 200 pandas sessions in
    #: about two minutes for a third of a core, 20000 in one for three quarters of one
    #: (benchmarks/results/ksm-2026-12-06*.json)
    ksm_pages_to_scan: int = 2000
    ksm_sleep_millisecs: int = 20


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
