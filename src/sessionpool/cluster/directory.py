"""The directory: which node holds which session, and where a new one goes.

One named, detached Ray actor per cluster (``cluster.raylink`` starts it; Ray restarts it). It
reads Ray's node table, keeps one node engine actor on every node that offers sessionpool's
resource, asks each engine for its figures every ``poll_seconds`` and places new sessions on
the node with the most free capacity. Membership, failure detection and supervision are
Ray's; what the directory holds is derived (every node engine knows its own sessions), so a
restarted directory rebuilds it from the first round of figures.

Calls answer plain dicts (a route, ``{"lost": message}`` or an error from ``wire``), so Ray
never wraps an expected answer in an exception. The calls on the allocation path (``place``,
``locate``, ``forget``) are also served over HTTP (``endpoint``): an idle Ray actor call costs
about 3 ms here against well under one for a request on a kept connection. Ray still hands out
the address and token, and every other call goes through Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sessionpool import errors
from sessionpool.cluster import raylink as glue
from sessionpool.cluster import wire
from sessionpool.cluster.node import serve_http
from sessionpool.config import ClusterConfig, EngineConfig, PoolConfig

log = logging.getLogger("sessionpool.cluster.directory")

#: how long one node engine may take to answer for its figures before it counts as unresponsive
FIGURES_TIMEOUT = 5.0
#: memory a node must keep free beyond its reserve to be offered a new session
NEW_SESSION_BYTES = 16 * 1024 * 1024


@dataclass
class Node:
    node_id: str
    address: str
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    #: answered its last figures call
    reachable: bool = False
    draining: bool = False
    error: str = ""
    started_at: float = field(default_factory=time.time)

    @property
    def incarnation(self) -> str:
        return str(self.info.get("incarnation", ""))

    @property
    def usable(self) -> bool:
        return self.reachable and bool(self.info.get("started")) and not self.draining

    def live(self, pool: str) -> list[str]:
        pools = self.figures.get("pools", {})
        return list(pools.get(pool, {}).get("sessions", []))

    def ready(self, pool: str) -> int:
        return int(self.figures.get("pools", {}).get(pool, {}).get("ready", 0))

    def route(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "url": self.info.get("url", ""),
            "token": self.info.get("token", ""),
            "incarnation": self.incarnation,
        }


@dataclass
class Placement:
    node_id: str
    incarnation: str
    at: float
    #: the node's figures have shown the session (until then it may still be on its way)
    seen: bool = False


def choose(nodes: list[Node], pool: str, pending: dict[str, int], reserve: int) -> Node | None:
    """The node with the most free capacity for one more session of ``pool``.

    A warm session first (allocation is then a queue pop), then the fewest sessions (counting
    those placed but not yet seen), then the most free memory. Nodes short of memory are
    skipped: their own admission would refuse.
    """
    best: tuple[bool, int, int] | None = None
    chosen: Node | None = None
    for node in nodes:
        if not node.usable:
            continue
        mem = node.figures.get("mem_available")
        if isinstance(mem, int) and mem < reserve + NEW_SESSION_BYTES:
            continue
        waiting = pending.get(node.node_id, 0)
        score = (
            node.ready(pool) - waiting > 0,
            -(len(node.live(pool)) + waiting),
            mem if isinstance(mem, int) else 0,
        )
        if best is None or score > best:
            best, chosen = score, node
    return chosen


class Directory:
    """The body of the directory actor (``cluster.raylink`` wraps it with ``ray.remote``)."""

    def __init__(
        self, cluster: ClusterConfig, engine_config: EngineConfig, pools: list[PoolConfig]
    ) -> None:
        self.cluster = cluster
        self.engine_config = engine_config
        self.pool_configs = {p.name: p for p in pools}
        self.nodes: dict[str, Node] = {}
        self.placements: dict[tuple[str, str], Placement] = {}
        self.lost: dict[tuple[str, str], str] = {}
        self._draining: set[str] = set()
        self._poller: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Lock | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        #: agent runs in flight, cluster-wide: conversation -> (run id, until when it holds)
        self.runs: dict[str, tuple[str, float]] = {}
        #: runs asked to stop through a gateway that does not execute them
        self.run_cancels: set[str] = set()
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.url = ""
        self._serving: asyncio.Future[None] | None = None
        self.http_app = HttpCalls(self)

    def _background(self, call: Coroutine[Any, Any, Any]) -> None:
        """Run a call without waiting for it (kept referenced until it ends)."""
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the loop --------------------------------------------------------------------------------

    def _ensure_polling(self) -> None:
        if self._poller is None:
            self._refreshing = asyncio.Lock()
            self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("directory: refresh failed")
            await asyncio.sleep(self.cluster.poll_seconds)

    async def refresh(self) -> None:
        """Read Ray's node table, keep an engine on every offering node, read their figures."""
        assert self._refreshing is not None
        async with self._refreshing:
            table = await asyncio.to_thread(glue.node_table, self.cluster.resource)
            for node_id, address in table.items():
                if node_id not in self.nodes:
                    actor = glue.node_actor(
                        self.cluster, self.engine_config, self.pool_configs, node_id, address
                    )
                    self.nodes[node_id] = Node(
                        node_id, address, actor, draining=node_id in self._draining
                    )
                    log.info("directory: node %s joined (%s)", node_id[:12], address)
            for node_id in list(self.nodes):
                if node_id not in table:
                    self._node_lost(node_id, "the node left the cluster")
            await asyncio.gather(*(self._read(n) for n in list(self.nodes.values())))

    async def _read(self, node: Node) -> None:
        try:
            figures = await asyncio.wait_for(glue.call(node.actor, "figures"), FIGURES_TIMEOUT)
        except TimeoutError:
            node.reachable, node.error = False, "its engine did not answer in time"
            return
        except Exception as exc:  # Ray's errors: the actor is gone or restarting
            log.info("directory: node %s: %s: %s", node.node_id[:12], type(exc).__name__, exc)
            if glue.actor_dead(exc):
                self._node_lost(node.node_id, "its engine died with the node")
            else:
                node.reachable, node.error = (
                    False,
                    f"its engine is restarting ({type(exc).__name__})",
                )
            return
        if node.incarnation and figures.get("incarnation") != node.incarnation:
            self._placements_lost(node.node_id, "its engine restarted", node.incarnation)
        if not figures.get("started"):
            # a new (or restarted) engine: start it; the call returns once it is up
            self._background(glue.call(node.actor, "start"))
        node.info = {k: figures.get(k) for k in ("incarnation", "url", "token", "started")}
        node.error = str(figures.get("error") or "")
        node.figures = figures
        node.reachable = True
        if node.draining != bool(figures.get("draining")) and figures.get("started"):
            self._background(glue.call(node.actor, "drain", node.draining))
        self._reconcile(node)

    def _reconcile(self, node: Node) -> None:
        """Placements follow what the node holds: seen ones that are gone cooled down (or were
        deleted); sessions the directory did not know (it restarted) are placed where they are."""
        now = time.time()
        for pool in self.pool_configs:
            live = set(node.live(pool))
            for ident in live:
                key = (pool, ident)
                placement = self.placements.get(key)
                if placement is None:
                    self.placements[key] = Placement(node.node_id, node.incarnation, now, True)
                elif placement.node_id == node.node_id:
                    placement.seen = True
            for key, placement in list(self.placements.items()):
                if key[0] != pool or placement.node_id != node.node_id or key[1] in live:
                    continue
                if placement.seen or now - placement.at > self.cluster.placement_grace_seconds:
                    del self.placements[key]

    def _node_lost(self, node_id: str, why: str) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        log.warning("directory: node %s lost: %s", node_id[:12], why)
        self._placements_lost(node_id, why, None)
        with contextlib.suppress(Exception):
            glue.forget_actor(node.actor)

    def _placements_lost(self, node_id: str, why: str, incarnation: str | None) -> None:
        for key, placement in list(self.placements.items()):
            if placement.node_id != node_id:
                continue
            if incarnation is not None and placement.incarnation != incarnation:
                continue
            pool, ident = key
            del self.placements[key]
            where = "on node" if incarnation is not None else "with node"
            self.lost[key] = (
                f"session {ident!r} in pool {pool!r} was lost {where} {node_id[:12]} ({why}): "
                "its variables, imports and session files are gone. The next call with this "
                "identifier starts a fresh session wherever there is free capacity."
            )

    # -- the HTTP face of the hot calls -----------------------------------------------------------

    async def endpoint(self) -> dict[str, str]:
        """Where gateways make ``wire.DIRECTORY_HTTP_CALLS`` over HTTP (started on the first
        ask); empty if it could not start (they keep calling through Ray)."""
        self._ensure_polling()
        if self._serving is None:
            self._serving = asyncio.ensure_future(self._serve())
        with contextlib.suppress(Exception):
            await asyncio.shield(self._serving)
        return {"url": self.url, "token": self.token} if self.url else {}

    async def _serve(self) -> None:
        host = glue.node_ip()
        try:
            _, task, self.url = serve_http(self.http_app, host)
        except Exception:
            log.exception("directory: its HTTP endpoint did not start; calls go through Ray")
            raise
        self._tasks.add(task)

    # -- calls from the gateways -----------------------------------------------------------------

    async def place(self, pool: str, ident: str) -> dict[str, Any]:
        """Where ``ident`` lives, placing it on first use; ``{"lost": why}`` once after a loss."""
        self._ensure_polling()
        key = (pool, ident)
        if key in self.lost:
            return {"lost": self.lost.pop(key)}
        placement = self.placements.get(key)
        if placement is not None and placement.node_id in self.nodes:
            return {"route": self.nodes[placement.node_id].route()}
        config = self.pool_configs.get(pool)
        if config is None:
            return wire.error_out(errors.PoolNotFound(pool))
        placed = sum(1 for k in self.placements if k[0] == pool)
        if placed >= config.max_sessions:
            return wire.error_out(
                errors.PoolAtCapacity(
                    pool,
                    f"max_sessions ({config.max_sessions}) sessions are allocated across the "
                    "cluster",
                    "max_sessions",
                )
            )
        pending: dict[str, int] = {}
        for (p, _), pl in self.placements.items():
            if p == pool and not pl.seen:
                pending[pl.node_id] = pending.get(pl.node_id, 0) + 1
        node = choose(
            list(self.nodes.values()), pool, pending, self.engine_config.memory_reserve_bytes
        )
        if node is None:
            if not any(n.usable for n in self.nodes.values()):
                return wire.error_out(
                    errors.SandboxError(
                        "no node of the cluster serves sessions now (none offers the "
                        f"{self.cluster.resource!r} resource, or their engines are starting or "
                        "draining); see GET /cluster"
                    )
                )
            return wire.error_out(
                errors.PoolAtCapacity(
                    pool, "every node of the cluster is short of memory", "memory_reserve_bytes"
                )
            )
        self.placements[key] = Placement(node.node_id, node.incarnation, time.time())
        return {"route": node.route()}

    async def locate(self, pool: str, ident: str) -> dict[str, Any] | None:
        """Where ``ident`` lives now, without placing it."""
        self._ensure_polling()
        placement = self.placements.get((pool, ident))
        if placement is None or placement.node_id not in self.nodes:
            return None
        return {"route": self.nodes[placement.node_id].route()}

    async def forget(self, pool: str, ident: str) -> None:
        self.placements.pop((pool, ident), None)
        self.lost.pop((pool, ident), None)

    async def unreachable(self, node_id: str) -> str:
        """A gateway could not reach ``node_id``: look at it now rather than at the next poll.

        ``"lost"`` (Ray says it is gone: its sessions are reported lost), ``"up"`` (its
        engine answers) or ``"unknown"`` (not yet decided: ask again shortly).
        """
        self._ensure_polling()
        node = self.nodes.get(node_id)
        if node is None:
            return "lost"
        await self._read(node)
        if node_id not in self.nodes:
            return "lost"
        if node_id not in await asyncio.to_thread(glue.node_table, self.cluster.resource):
            self._node_lost(node_id, "the node left the cluster")
            return "lost"
        return "up" if node.reachable else "unknown"

    # -- agent runs: one in flight per conversation, and cancels, across the gateways ----------

    async def claim_run(self, conversation: str, run_id: str, until: float) -> str | None:
        """Hold ``conversation`` for ``run_id`` until it is released or ``until`` passes (a
        gateway that died holding it); the run that holds it instead, if any."""
        held = await self.run_holder(conversation)
        if held is not None and held != run_id:
            return held
        self.runs[conversation] = (run_id, until)
        return None

    async def release_run(self, conversation: str, run_id: str) -> None:
        if self.runs.get(conversation, ("", 0.0))[0] == run_id:
            del self.runs[conversation]
        self.run_cancels.discard(run_id)

    async def run_holder(self, conversation: str) -> str | None:
        held = self.runs.get(conversation)
        if held is None or held[1] < time.time():
            return None
        return held[0]

    async def cancel_run(self, run_id: str) -> None:
        """Pass a cancel on to the gateway that executes ``run_id`` (it asks ``run_cancels``)."""
        if any(held[0] == run_id for held in self.runs.values()):
            self.run_cancels.add(run_id)

    async def run_cancels_for(self, run_ids: list[str]) -> list[str]:
        """Which of a gateway's runs were asked to stop elsewhere (each said once)."""
        found = [r for r in run_ids if r in self.run_cancels]
        self.run_cancels.difference_update(found)
        return found

    async def routes(self) -> list[dict[str, Any]]:
        """Every node engine that is up: what the gateways need to reach them."""
        self._ensure_polling()
        return [n.route() for n in self.nodes.values() if n.reachable and n.info.get("started")]

    async def drain(self, node_id: str, draining: bool) -> bool:
        node = self.nodes.get(node_id)
        if node is None:
            return False
        (self._draining.add if draining else self._draining.discard)(node_id)
        node.draining = draining
        await glue.call(node.actor, "drain", draining)
        return True

    async def view(self) -> dict[str, Any]:
        """The nodes, their sessions, ready pools, memory and health (GET /cluster)."""
        self._ensure_polling()
        nodes = []
        for node in self.nodes.values():
            if not node.info.get("started"):
                state = "failed" if node.error else "starting"
            elif not node.reachable:
                state = "unreachable"
            else:
                state = "draining" if node.draining else "active"
            pools = {
                name: {
                    "sessions": len(node.live(name)),
                    "ready": node.ready(name),
                    "busy": int(node.figures.get("pools", {}).get(name, {}).get("busy", 0)),
                }
                for name in self.pool_configs
            }
            nodes.append(
                {
                    "node_id": node.node_id,
                    "address": node.address,
                    "url": node.info.get("url", ""),
                    "state": state,
                    "incarnation": node.incarnation,
                    "pid": node.figures.get("pid"),
                    "mem_available": node.figures.get("mem_available"),
                    "pools": pools,
                    "error": node.error,
                }
            )
        pools = {
            name: {
                "max_sessions": cfg.max_sessions,
                "placed": sum(1 for k in self.placements if k[0] == name),
            }
            for name, cfg in self.pool_configs.items()
        }
        return {
            "nodes": nodes,
            "pools": pools,
            "lost_pending": len(self.lost),
            "directory": {
                "node_id": glue.ray.get_runtime_context().get_node_id(),
                "url": self.url,
            },
        }


class HttpCalls:
    """The directory's hot calls over HTTP (an ASGI app): POST /<call> with a JSON list of
    arguments answers the call's answer as JSON."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response: Response
        call = request.url.path.strip("/")
        if not wire.token_ok(scope, self.directory.token):
            response = JSONResponse({"error": {"message": "bad directory token"}}, 401)
        elif request.method != "POST" or call not in wire.DIRECTORY_HTTP_CALLS:
            response = JSONResponse({"error": {"message": f"no call {call!r}"}}, 404)
        else:
            args = json.loads(await request.body())
            response = JSONResponse(await getattr(self.directory, call)(*args))
        await response(scope, receive, send)


def directory(config: ClusterConfig, engine_config: EngineConfig, pools: list[PoolConfig]) -> Any:
    """The cluster's directory actor, started by the first gateway that asks.

    Pinned to the head node by the head's own resource (a soft node affinity was not kept
    there): it lives and dies with Ray's control plane, never with a node that holds sessions,
    so a node's loss is reported by a directory that still knows its placements.
    """
    actor_class = glue.ray.remote(Directory)
    return actor_class.options(
        name=glue.DIRECTORY,
        namespace=config.namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=0,
        resources={glue.HEAD_RESOURCE: 0.001},
    ).remote(config, engine_config, pools)
