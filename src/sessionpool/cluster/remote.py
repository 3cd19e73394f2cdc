"""The gateway's side of a cluster: pools and sessions whose kernels run on other nodes.

``ClusterEngine`` stands where the local ``Engine`` stands (``pool.api.EngineHandle``), so every
face and the agents service work through it unchanged. Control goes through Ray: a new
identifier is placed by the directory (one actor call), and the route is kept here. The data
path is one HTTP request to the node engine that holds the session (``node.NodeServer``), with
uploads, downloads and streams passed through as they come, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from sessionpool import errors
from sessionpool.cluster import wire
from sessionpool.config import ClusterConfig, EngineConfig, PoolConfig
from sessionpool.pool import validate_identifier
from sessionpool.pool.api import ProcessFollower
from sessionpool.sandbox import runtimes
from sessionpool.types import (
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    FileInfo,
    ProcessInfo,
    ProcessSpec,
    RuntimeInfo,
    ShellResult,
)

log = logging.getLogger("sessionpool.cluster")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: how long a call waits for Ray's verdict on a node that stopped answering
UNREACHABLE_SECONDS = 30.0
#: how often a gateway refreshes its map of node engines from the directory
ROUTES_SECONDS = 1.0
#: how long ``start`` waits for the first node engine before serving anyway (readyz says so)
FIRST_NODE_SECONDS = 120.0
#: how long an idle connection to a node is kept; the node keeps it longer
#: (``wire.NODE_KEEP_ALIVE_SECONDS``), so the gateway always closes first and never sends on a
#: connection the node is closing at that very moment
KEEP_ALIVE_SECONDS = 5.0


@dataclass(frozen=True)
class Route:
    node_id: str
    url: str
    token: str
    incarnation: str

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Route:
        return cls(str(raw["node_id"]), str(raw["url"]), str(raw["token"]), str(raw["incarnation"]))


#: interrupts sent for cancelled calls, referenced until they are done
_pending: set[asyncio.Future[None]] = set()


class ClusterEngine:
    """The pools of a Ray cluster, as one engine."""

    def __init__(
        self,
        cluster: ClusterConfig,
        engine_config: EngineConfig,
        pools: list[PoolConfig],
    ) -> None:
        self.cluster = cluster
        self.engine_config = engine_config
        self.pool_configs = pools
        self._pools = {p.name: RemotePool(self, p) for p in pools}
        self.directory: Any = None
        self.nodes: dict[str, Route] = {}
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=256,
                keepalive_expiry=KEEP_ALIVE_SECONDS,
            ),
        )
        self._watcher: asyncio.Task[None] | None = None
        self.started = False
        #: the directory's HTTP endpoint for its hot calls: (url, token), or None (use Ray)
        self.directory_http: tuple[str, str] | None = None
        self.run_locks = ClusterRunLocks(self)

    @property
    def pools(self) -> Mapping[str, RemotePool]:
        return self._pools

    def pool(self, name: str) -> RemotePool:
        try:
            return self._pools[name]
        except KeyError:
            raise errors.PoolNotFound(name) from None

    def ready(self) -> bool:
        return self.started and bool(self.nodes)

    async def start(self) -> None:
        """Join the Ray cluster, find (or start) its directory, wait for a first node engine."""
        if self.cluster.node_ip_address in LOOPBACK:
            # a cluster on loopback (one machine, tests): a driver otherwise takes the machine's
            # interface address as its own and looks for the cluster there. Read when Ray is
            # first imported, which is just below.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        from sessionpool.cluster import directory, raylink

        try:
            await asyncio.to_thread(raylink.connect, self.cluster)
        except Exception as exc:
            raise errors.ConfigError(
                f"cannot join the Ray cluster at {self.cluster.address!r}: {exc}. Start it "
                "first (ray start --head ...) and check the address"
            ) from exc
        self.directory = await asyncio.to_thread(
            directory.directory, self.cluster, self.engine_config, self.pool_configs
        )
        await self.find_directory_http()
        deadline = time.monotonic() + FIRST_NODE_SECONDS
        while True:
            await self.refresh_routes()
            if self.nodes or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if not self.nodes:
            log.warning("cluster: no node engine is up yet; serving anyway (see GET /cluster)")
        self._watcher = asyncio.create_task(self._watch(), name="cluster-routes")
        self.started = True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(ROUTES_SECONDS)
            with contextlib.suppress(Exception):
                await self.refresh_routes()
            if self.directory_http is None:
                await self.find_directory_http()

    async def find_directory_http(self) -> None:
        """Ask the directory (through Ray) where it takes its hot calls over HTTP."""
        with contextlib.suppress(Exception):
            found = await self.directory.endpoint.remote()
            if found:
                self.directory_http = (str(found["url"]), str(found["token"]))

    async def ask(self, method: str, *args: Any) -> Any:
        """One call to the directory: over HTTP when it is a hot call and the endpoint is
        known, through Ray otherwise (and whenever HTTP fails: a restarted directory has a new
        address, found again on the next route refresh). Ray's errors (it is restarting, or
        out of reach) become a 503 that says so, never a 500."""
        if self.directory_http is not None and method in wire.DIRECTORY_HTTP_CALLS:
            url, token = self.directory_http
            try:
                r = await self.http.post(
                    f"{url}/{method}", json=list(args), headers={wire.TOKEN_HEADER: token}
                )
                if r.status_code == 200:
                    return r.json()
                log.warning("cluster: the directory answered %s over HTTP", r.status_code)
            except httpx.TransportError as exc:
                log.info("cluster: the directory's HTTP endpoint: %r; through Ray", exc)
            self.directory_http = None
        try:
            return await getattr(self.directory, method).remote(*args)
        except errors.ServiceError:
            raise
        except Exception as exc:
            raise errors.SandboxError(
                f"the cluster's directory did not answer {method!r} ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it is restarting or the Ray head is out of reach. Retry "
                "shortly; GET /cluster shows when it is back"
            ) from exc

    async def refresh_routes(self) -> None:
        routes = await self.ask("routes")
        self.nodes = {r["node_id"]: Route.of(r) for r in routes}
        for pool in self._pools.values():
            pool.drop_stale(self.nodes)

    async def unreachable(self, route: Route) -> None:
        """A node did not answer: wait (up to ``UNREACHABLE_SECONDS``) until Ray decides
        whether it is lost (its sessions then report the loss) or back, then take its view."""
        deadline = time.monotonic() + UNREACHABLE_SECONDS
        with contextlib.suppress(Exception):
            while time.monotonic() < deadline:
                state = await self.ask("unreachable", route.node_id)
                if state != "unknown":
                    break
                await asyncio.sleep(0.2)
            await self.refresh_routes()

    async def view(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.ask("view")
        return result

    async def locate(self, pool: str, identifier: str) -> Route | None:
        """The node that holds ``identifier`` now, if any (never places it)."""
        return await self.pool(pool).locate(identifier)

    async def drain(self, node_id: str, draining: bool) -> bool:
        result: bool = await self.ask("drain", node_id, draining)
        return result

    async def close(self, deadline_s: float = 10.0) -> None:
        """Leave the cluster; the node engines and their sessions stay (other gateways)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        await self.http.aclose()
        self.started = False
        from sessionpool.cluster import raylink

        await asyncio.to_thread(raylink.disconnect)

    # -- one request to a node -----------------------------------------------------------------

    async def send(
        self,
        route: Route,
        method: str,
        path: str,
        params: dict[str, str],
        *,
        json_body: Any = None,
        content: Any = None,
        stream: bool = False,
    ) -> httpx.Response:
        request = self.http.build_request(
            method,
            route.url + path,
            params=params,
            json=json_body,
            content=content,
            headers={wire.TOKEN_HEADER: route.token},
        )
        return await self.http.send(request, stream=stream)


class ClusterRunLocks:
    """Agent runs across gateways, kept by the directory: one run in flight per conversation,
    and a cancel sent to any gateway reaches the one that executes the run (it asks for
    cancels while it has runs in flight)."""

    def __init__(self, engine: ClusterEngine) -> None:
        self.engine = engine

    async def claim(self, conversation: str, run_id: str, until: float) -> str | None:
        held: str | None = await self.engine.ask("claim_run", conversation, run_id, until)
        return held

    async def release(self, conversation: str, run_id: str) -> None:
        await self.engine.ask("release_run", conversation, run_id)

    async def holder(self, conversation: str) -> str | None:
        held: str | None = await self.engine.ask("run_holder", conversation)
        return held

    async def cancel(self, run_id: str) -> None:
        await self.engine.ask("cancel_run", run_id)

    async def cancels(self, run_ids: list[str]) -> list[str]:
        found: list[str] = await self.engine.ask("run_cancels_for", run_ids)
        return found


class RemotePool:
    """One pool across the cluster: the directory places, the node engines hold."""

    def __init__(self, engine: ClusterEngine, config: PoolConfig) -> None:
        self.engine = engine
        self.config = config
        self.name = config.name
        self._routes: dict[str, Route] = {}

    def is_ready(self) -> bool:
        return self.engine.ready()

    def runtime(self) -> RuntimeInfo:
        # the node engines run the runtimes of this installation (one build, every node)
        return runtimes.describe(self.engine.engine_config.runtimes_dir, self.config)

    def drop_stale(self, nodes: Mapping[str, Route]) -> None:
        """Forget routes to nodes that left or whose engine restarted."""
        for ident, route in list(self._routes.items()):
            current = nodes.get(route.node_id)
            if current is None or current.incarnation != route.incarnation:
                del self._routes[ident]

    def forget_route(self, ident: str) -> None:
        self._routes.pop(ident, None)

    async def place(self, ident: str) -> tuple[Route | None, bool, str]:
        """(route, create, lost): the cached route, or the directory's placement (create=True:
        the node allocates on first use), or the message of a loss to report once."""
        route = self._routes.get(ident)
        if route is not None:
            return route, False, ""
        answer = await self.engine.ask("place", self.name, ident)
        if "lost" in answer:
            return None, False, str(answer["lost"])
        if "error" in answer:
            raise wire.error_in(answer)
        route = Route.of(answer["route"])
        self._routes[ident] = route
        return route, True, ""

    async def locate(self, ident: str) -> Route | None:
        """Where the directory says ``ident`` lives (not this gateway's cached route)."""
        answer = await self.engine.ask("locate", self.name, ident)
        if not answer or "route" not in answer:
            return None
        return Route.of(answer["route"])

    async def _locate(self, ident: str) -> Route | None:
        return self._routes.get(ident) or await self.locate(ident)

    async def acquire(self, identifier: str) -> RemoteSession:
        validate_identifier(self.name, identifier)
        route, create, lost = await self.place(identifier)
        return RemoteSession(self, identifier, route, create, lost)

    async def lookup(self, identifier: str) -> RemoteSession | None:
        route = await self._locate(identifier)
        if route is None:
            return None
        try:
            r = await self.engine.send(
                route, "GET", f"/pools/{self.name}/session", {"identifier": identifier}
            )
        except httpx.TransportError:
            await self.engine.unreachable(route)
            return None
        if r.status_code != 200:
            return None
        info = r.json()
        session = RemoteSession(self, identifier, route, False, "")
        session.created_at = float(info["created_at"])
        session.last_used = float(info["last_used"])
        session.expires_at = float(info["expires_at"])
        return session

    async def delete(self, identifier: str) -> bool:
        route = await self._locate(identifier)
        self.forget_route(identifier)
        deleted = route is not None and await self._delete_on(route, identifier)
        await self.engine.ask("forget", self.name, identifier)
        return deleted

    async def _delete_on(self, route: Route, identifier: str) -> bool:
        """Delete ``identifier`` on its node, sent once more if the connection failed. Never
        "deleted" for a session that may still run: a lost node took it with it, otherwise
        the caller hears it failed (and retries)."""
        for attempt in (1, 2):
            try:
                r = await self.engine.send(
                    route, "DELETE", f"/pools/{self.name}/session", {"identifier": identifier}
                )
            except httpx.TransportError as exc:
                if attempt == 1:
                    continue
                await self.engine.unreachable(route)
                if route.node_id in self.engine.nodes:
                    raise errors.SandboxError(
                        f"the node holding session {identifier!r} did not answer the delete "
                        f"({exc!r}); retry it"
                    ) from exc
                return False
            return r.status_code == 200 and bool(r.json().get("deleted"))
        return False

    async def list_sessions(self) -> list[RemoteSession]:
        """Every node's sessions of this pool (a node that does not answer is left out)."""
        routes = list(self.engine.nodes.values())

        async def one(route: Route) -> list[RemoteSession]:
            try:
                r = await self.engine.send(route, "GET", f"/pools/{self.name}/sessions", {})
            except httpx.TransportError:
                return []
            if r.status_code != 200:
                return []
            found = []
            for info in r.json():
                s = RemoteSession(self, info["identifier"], route, False, "")
                s.created_at, s.last_used = float(info["created_at"]), float(info["last_used"])
                s.expires_at = float(info["expires_at"])
                found.append(s)
            return found

        lists = await asyncio.gather(*(one(r) for r in routes))
        return [s for found in lists for s in found]


class RemoteSession:
    """A session held by a node engine, reached over its node API."""

    def __init__(
        self, pool: RemotePool, identifier: str, route: Route | None, create: bool, lost: str
    ) -> None:
        self.pool = pool
        self.identifier = identifier
        self._route = route
        self._create = create
        self._lost = lost
        now = time.time()
        self.created_at = now
        self.last_used = now
        self.expires_at = now + pool.config.cooldown_seconds

    @property
    def _path(self) -> str:
        return f"/pools/{self.pool.name}"

    def _take_loss(self) -> str:
        lost, self._lost = self._lost, ""
        return lost

    async def _request(
        self,
        method: str,
        op: str,
        params: dict[str, str] | None = None,
        *,
        json_body: Any = None,
        content: Any = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """One call to the session's node; a stale route is placed again (at most twice)."""
        engine = self.pool.engine
        for attempt in range(3):
            if self._route is None:
                self._route, self._create, lost = await self.pool.place(self.identifier)
                if lost:
                    raise errors.SessionLost(self.pool.name, self.identifier, lost)
            assert self._route is not None
            route, create = self._route, self._create
            query = {"identifier": self.identifier, **(params or {})}
            if create:
                query["create"] = "1"
            try:
                r = await engine.send(
                    route,
                    method,
                    self._path + op,
                    query,
                    json_body=json_body,
                    content=content,
                    stream=stream,
                )
            except httpx.TransportError as exc:
                self._route = None
                self.pool.forget_route(self.identifier)
                await engine.unreachable(route)
                if retry and attempt < 2 and isinstance(exc, httpx.ConnectError):
                    continue  # nothing was sent: place it again (or hear of its loss)
                _, _, lost = await self.pool.place(self.identifier)
                if lost:  # the node died under this call
                    raise errors.SessionLost(self.pool.name, self.identifier, lost) from exc
                raise errors.SandboxError(
                    f"the node holding session {self.identifier!r} did not answer ({exc})"
                ) from exc
            self._create = False
            if r.status_code == 404 and not create:
                body = (await r.aread()) if stream else r.content
                if wire.NOT_HERE.encode() in body:
                    # it cooled down there, or the route is stale: the directory decides
                    self._route = None
                    self.pool.forget_route(self.identifier)
                    continue
            if r.status_code >= 400:
                if stream:
                    await r.aread()
                raise wire.error_in(_json(r))
            return r
        raise errors.SandboxError(f"session {self.identifier!r} could not be placed")

    # -- executions -----------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        timeout: float | None = None,
        on_output: Callable[[str, str], None] | None = None,
        context: str | None = None,
    ) -> ExecutionResult:
        if context:
            raise _no_contexts()
        self.last_used = time.time()
        if lost := self._take_loss():
            return _lost_result(lost)
        body = {"code": code, "timeout": timeout, "stream": on_output is not None}
        try:
            if on_output is None:
                r = await self._request("POST", "/execute", json_body=body)
                return wire.result_in(r.json()["result"])
            return await self._streamed(body, on_output)
        except errors.SessionLost as exc:
            return _lost_result(exc.message)
        except asyncio.CancelledError:
            # nobody waits for the cell any more: stop it on its node, as a local session does
            task = asyncio.ensure_future(self._interrupt_quietly())
            _pending.add(task)
            task.add_done_callback(_pending.discard)
            raise

    async def _streamed(
        self, body: dict[str, Any], on_output: Callable[[str, str], None]
    ) -> ExecutionResult:
        r = await self._request("POST", "/execute", json_body=body, stream=True)
        try:
            async for line in r.aiter_lines():
                if not line:
                    continue
                item = json.loads(line)
                if "chunk" in item:
                    name, text = item["chunk"]
                    on_output(name, text)
                elif "result" in item:
                    return wire.result_in(item["result"])
                else:
                    raise wire.error_in(item)
        finally:
            await r.aclose()
        raise errors.SandboxError(f"the node of session {self.identifier!r} ended the stream")

    async def reset_context(self, name: str) -> None:
        raise _no_contexts()

    async def run_shell(self, command: str, timeout: float | None = None) -> ShellResult:
        self.last_used = time.time()
        if lost := self._take_loss():
            return ShellResult(exit_code=137, stdout="", stderr=lost + "\n")
        try:
            r = await self._request(
                "POST", "/shell", json_body={"command": command, "timeout": timeout}
            )
        except errors.SessionLost as exc:
            return ShellResult(exit_code=137, stdout="", stderr=exc.message + "\n")
        return wire.shell_in(r.json()["result"])

    def network(self) -> dict[str, object]:
        """The same shape as a single server's session (``recent``: its decisions, none)."""
        return {"mode": "off", "allow": [], "secrets": {}, "recent": []}

    async def set_network(
        self,
        mode: str,
        allow: Sequence[str] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, object]:
        """Not part of the cluster protocol yet: cluster pools have no network."""
        if mode == "off":
            return self.network()
        raise errors.EgressWidens(
            self.pool.name, "sessions of a cluster have no network yet", "network"
        )

    async def set_memory_limit(self, memory_bytes: int) -> None:
        """Not part of the cluster protocol yet: a cluster session has its pool's limit."""
        if memory_bytes != self.pool.config.limits.memory_bytes:
            raise errors.InvalidArgument(
                "a session's own memory limit is not supported in cluster mode yet: sessions "
                f"have their pool's ({self.pool.config.limits.memory_bytes} bytes)",
                "memory_limit",
            )

    def keep_alive_until(self, when: float) -> None:
        """Not part of the cluster protocol: the E2B face, its only user, refuses cluster mode."""
        raise errors.InvalidArgument(
            "keeping a session alive until a time is not supported in cluster mode"
        )

    async def interrupt(self) -> None:
        if self._route is not None:
            with contextlib.suppress(httpx.TransportError):
                await self.pool.engine.send(
                    self._route, "POST", self._path + "/interrupt", {"identifier": self.identifier}
                )

    async def _interrupt_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.interrupt()

    # -- files ----------------------------------------------------------------------------------

    def _lost_files(self) -> None:
        lost = self._take_loss()
        if lost:
            raise errors.SessionLost(self.pool.name, self.identifier, lost)

    async def write_file(self, path: str, data: bytes | AsyncIterator[bytes]) -> FileInfo:
        self._lost_files()
        r = await self._request(
            "PUT", "/files", {"path": path}, content=data, retry=isinstance(data, bytes)
        )
        return wire.file_in(r.json())

    async def read_file(self, path: str) -> bytes:
        self._lost_files()
        r = await self._request("GET", "/files/content", {"path": path})
        return r.content

    async def download(self, path: str) -> tuple[FileInfo, AsyncIterator[bytes]]:
        self._lost_files()
        r = await self._request("GET", "/files/content", {"path": path}, stream=True)
        info = wire.file_in(json.loads(r.headers["x-file-info"]))

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in r.aiter_raw():
                    yield chunk
            finally:
                await r.aclose()

        return info, chunks()

    async def stat_file(self, path: str) -> FileInfo:
        self._lost_files()
        r = await self._request("GET", "/files/stat", {"path": path})
        return wire.file_in(r.json())

    async def list_files(self, path: str = "", recursive: bool = False) -> list[FileInfo]:
        self._lost_files()
        r = await self._request(
            "GET", "/files", {"path": path, "recursive": "1" if recursive else "0"}
        )
        return [wire.file_in(i) for i in r.json()]

    async def delete_file(self, path: str) -> None:
        self._lost_files()
        await self._request("DELETE", "/files", {"path": path})

    # Directories, moves and processes are not part of the node API: the E2B face, their only
    # user, is refused in cluster mode (as keep_alive_until is).

    async def make_dir(self, path: str) -> bool:
        raise _not_in_cluster("creating directories")

    async def move_file(self, source: str, destination: str) -> FileInfo:
        raise _not_in_cluster("moving files")

    async def start_process(self, spec: ProcessSpec) -> ProcessFollower:
        raise _not_in_cluster("processes")

    def connect_process(self, pid: int) -> ProcessFollower:
        raise _not_in_cluster("processes")

    async def list_processes(self) -> list[ProcessInfo]:
        raise _not_in_cluster("processes")

    async def send_process_input(self, pid: int, data: bytes) -> None:
        raise _not_in_cluster("processes")

    async def close_process_stdin(self, pid: int) -> None:
        raise _not_in_cluster("processes")

    async def signal_process(self, pid: int, sig: int) -> None:
        raise _not_in_cluster("processes")

    async def resize_process(self, pid: int, cols: int, rows: int) -> None:
        raise _not_in_cluster("processes")


def _not_in_cluster(what: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{what} are not available in cluster mode (serve --cluster)")


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return {
            "error": {
                "class": "SandboxError",
                "message": r.text[:200],
                "attrs": {"detail": r.text[:200]},
            }
        }


def _lost_result(message: str) -> ExecutionResult:
    """A lost node answers like a session killed by a limit: a failed cell that says why."""
    return ExecutionResult(
        status=ExecutionStatus.LOST,
        stdout="",
        stderr=message + "\n",
        result=None,
        error=ErrorInfo("SessionLost", message, message),
        state_lost=True,
    )


def _no_contexts() -> errors.InvalidArgument:
    """The node wire carries no context name, so a named namespace cannot be reached there."""
    return errors.InvalidArgument("code contexts are not available in cluster mode")
