"""A Ray cluster of several nodes on this one machine, for tests and benchmarks.

Ray's own test cluster (``ray.cluster_utils.Cluster``): each node is a real raylet with its own
processes, so removing one is a real node loss. Every node listens on 127.0.0.1 only (Ray would
otherwise pick the machine's interface address). Nodes that serve sessions offer the
``sessionpool`` resource; the head does not, so it holds the directory and nothing else.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"
#: each raylet's object store; sessionpool moves no objects through it (the data path is HTTP)
OBJECT_STORE_BYTES = 80 * 1024 * 1024


def unmount_under(root: Path) -> int:
    """Detach every mount below ``root``; how many. Ray kills node engines rather than closing
    them, so their sessions' workspace mounts outlive them: a test or benchmark that removed
    a node, or shut its cluster down, calls this on the node engines' data directories."""
    from sessionpool.sandbox import linux

    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    done = 0
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        with contextlib.suppress(OSError):
            linux.umount2(point, linux.MNT_DETACH)
            done += 1
    return done


class LocalCluster:
    def __init__(self, nodes: int = 3, resource: str = "sessionpool") -> None:
        from ray.cluster_utils import Cluster

        self.resource = resource
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "node_ip_address": LOOPBACK,
                "include_dashboard": False,
                "object_store_memory": OBJECT_STORE_BYTES,
            },
        )
        self.nodes: list[Any] = []
        for _ in range(nodes):
            self.add_node()

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_node(self) -> Any:
        node = self.cluster.add_node(
            num_cpus=1,
            resources={self.resource: 1},
            node_ip_address=LOOPBACK,
            object_store_memory=OBJECT_STORE_BYTES,
        )
        self.nodes.append(node)
        return node

    @property
    def head_node_id(self) -> str:
        head: Any = self.cluster.head_node  # set: the cluster is made with its head
        return str(head.node_id)

    @staticmethod
    def node_id(node: Any) -> str:
        return str(node.node_id)

    def remove_node(self, node: Any) -> None:
        """A real loss: the node's raylet and every process of it are killed."""
        self.nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        self.cluster.shutdown()  # type: ignore[no-untyped-call]

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
