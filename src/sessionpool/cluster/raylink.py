"""Everything that touches Ray: joining the cluster, the node table, the actors and their calls.

Imported only in cluster mode, so a single server never imports Ray. The actors:

- ``directory`` (one per namespace): ``directory.Directory``, detached, restarted by Ray,
  pinned to the head node (it lives and dies with Ray's control plane, not with a node that
  holds sessions).
- ``node-<node id>`` (one per offering node): ``node.NodeEngine``, detached, pinned to its node
  with a hard node affinity, restarted by Ray on that node when its process dies; it dies for
  good with its node, which is how the directory learns of the loss.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ray
from ray.exceptions import ActorDiedError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sessionpool.cluster.node import NodeEngine
from sessionpool.config import ClusterConfig, EngineConfig, PoolConfig

__all__ = ["NodeAffinitySchedulingStrategy", "ray"]

log = logging.getLogger("sessionpool.cluster")

DIRECTORY = "directory"
#: the resource Ray gives the head node alone
HEAD_RESOURCE = "node:__internal_head__"


def connect(config: ClusterConfig) -> None:
    """Join the Ray cluster at ``config.address`` as a driver (once per process)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if config.node_ip_address:
        kwargs["_node_ip_address"] = config.node_ip_address
    ray.init(
        address=config.address,
        namespace=config.namespace,
        logging_level=logging.WARNING,
        log_to_driver=False,
        **kwargs,
    )


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def node_table(resource: str) -> dict[str, str]:
    """Alive nodes that offer ``resource``: node id -> address (Ray's GCS node table)."""
    return {
        n["NodeID"]: n["NodeManagerAddress"]
        for n in ray.nodes()  # type: ignore[no-untyped-call]
        if n.get("Alive") and n.get("Resources", {}).get(resource, 0) > 0
    }


def node_ip() -> str:
    """This Ray node's address (inside an actor: the node it runs on)."""
    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def node_engine_config(config: EngineConfig, node_id: str) -> EngineConfig:
    """Each node engine its own data directory (several nodes may share a machine)."""
    return dataclasses.replace(config, data_dir=config.data_dir / "nodes" / node_id[:16])


def node_actor(
    config: ClusterConfig,
    engine_config: EngineConfig,
    pools: dict[str, PoolConfig],
    node_id: str,
    address: str,
) -> Any:
    """The node engine of ``node_id``, pinned there (existing, or started now)."""
    actor_class = ray.remote(NodeEngine)
    return actor_class.options(
        name=f"node-{node_id}",
        namespace=config.namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(node_engine_config(engine_config, node_id), list(pools.values()), node_id, address)


async def call(actor: Any, method: str, *args: Any) -> Any:
    """``await actor.method(*args)`` through Ray."""
    return await getattr(actor, method).remote(*args)


def actor_dead(exc: BaseException) -> bool:
    """Ray says the actor is gone for good (its node died), not merely restarting."""
    return isinstance(exc, ActorDiedError)


def forget_actor(actor: Any) -> None:
    """Drop a dead node's actor, so its name is free if a node with that id ever comes back."""
    ray.kill(actor, no_restart=True)
