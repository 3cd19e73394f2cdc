"""The cluster's pieces without Ray or root: the node API on the fake backend, the gateway's
remote sessions against it (the directory scripted), placement, the wire format, settings."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool import errors
from sessionpool.agents import AgentsConfig, AgentService
from sessionpool.agents.types import RunStatus
from sessionpool.cluster import wire
from sessionpool.cluster.directory import Directory, Node, choose
from sessionpool.cluster.node import NodeServer
from sessionpool.cluster.remote import ClusterEngine, RemotePool
from sessionpool.config import ClusterConfig, EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.faces.http import status_for
from sessionpool.sandbox.fake import FakeBackend, run_python
from sessionpool.server.settings import load_settings
from sessionpool.tenancy import DEFAULT_TENANT
from sessionpool.types import DisplayData, ErrorInfo, ExecutionResult, ExecutionStatus
from tests.agents.scripted_model import SLOW_CODE, ScriptedModel

TOKEN = "t" * 64


class _Method:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        async def call() -> Any:
            return self.fn(*args)

        return call()


class ScriptedDirectory:
    """Places every session on the one node; a test may mark one as lost."""

    def __init__(self) -> None:
        self.lost: dict[str, str] = {}
        self.placed: list[str] = []
        route = {"node_id": "n1", "url": "http://node", "token": TOKEN, "incarnation": "i1"}

        def place(pool: str, ident: str) -> dict[str, Any]:
            if ident in self.lost:
                return {"lost": self.lost.pop(ident)}
            self.placed.append(ident)
            return {"route": route}

        self.place = _Method(place)
        self.locate = _Method(lambda pool, ident: {"route": route})
        self.forget = _Method(lambda pool, ident: None)
        self.routes = _Method(lambda: [route])
        self.unreachable = _Method(lambda node_id: "up")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[NodeServer]:
    engine = Engine(
        EngineConfig(data_dir=tmp_path),
        [PoolConfig(ready_sessions=1, max_sessions=4)],
        backend=FakeBackend(tmp_path),
    )
    await engine.start()
    try:
        yield NodeServer(engine, TOKEN)
    finally:
        await engine.close()


@pytest.fixture
async def pool(node: NodeServer) -> AsyncIterator[RemotePool]:
    cluster = ClusterEngine(ClusterConfig("127.0.0.1:1"), EngineConfig(), [PoolConfig()])
    await cluster.http.aclose()
    cluster.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=node))
    cluster.directory = ScriptedDirectory()
    await cluster.refresh_routes()
    try:
        yield cluster.pool("default")
    finally:
        await cluster.http.aclose()


async def test_the_node_api_wants_its_token(node: NodeServer) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node), base_url="http://node"
    ) as http:
        r = await http.get("/pools/default/sessions")
        assert r.status_code == 401
        r = await http.get("/pools/default/sessions", headers={wire.TOKEN_HEADER: "x" * 64})
        assert r.status_code == 401
        r = await http.get("/pools/default/sessions", headers={wire.TOKEN_HEADER: TOKEN})
        assert (r.status_code, r.json()) == (200, [])


async def test_a_node_allocates_only_what_the_directory_placed(node: NodeServer) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node),
        base_url="http://node",
        headers={wire.TOKEN_HEADER: TOKEN},
    ) as http:
        body = {"code": "x = 41\nx + 1"}
        r = await http.post("/pools/default/execute", params={"identifier": "a"}, json=body)
        assert r.status_code == 404 and wire.NOT_HERE in r.text  # not placed here
        r = await http.post(
            "/pools/default/execute", params={"identifier": "a", "create": "1"}, json=body
        )
        assert wire.result_in(r.json()["result"]).result == DisplayData({"text/plain": "42"})
        r = await http.post("/pools/default/execute", params={"identifier": "a"}, json=body)
        assert r.status_code == 200  # now it is here


async def test_remote_sessions_keep_state_stream_and_move_files(pool: RemotePool) -> None:
    session = await pool.acquire("s1")
    assert (await session.execute("x = 1")).status is ExecutionStatus.OK
    again = await pool.acquire("s1")  # the route is cached: the node is not asked to create
    assert (await again.execute("x + 1")).result == DisplayData({"text/plain": "2"})
    seen: list[tuple[str, str]] = []
    res = await again.execute("print('a')\nprint('b')", on_output=lambda n, t: seen.append((n, t)))
    assert res.stdout == "a\nb\n" and "".join(t for _, t in seen) == "a\nb\n"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(4):
            yield bytes([i]) * 100_000

    info = await again.write_file("d/big.bin", chunks())
    assert (info.path, info.size) == ("d/big.bin", 400_000)
    got, stream = await again.download("d/big.bin")
    assert isinstance(stream, AsyncIterator)
    data = b"".join([c async for c in stream])
    assert got.size == 400_000 and data == b"".join(bytes([i]) * 100_000 for i in range(4))
    assert [f.path for f in await again.list_files("", recursive=True)] == ["d", "d/big.bin"]
    with pytest.raises(errors.FileNotFound) as caught:
        await again.stat_file("nope.txt")
    assert caught.value.identifier == "s1" and caught.value.pool == "default"
    assert (await pool.lookup("s1")) is not None
    assert [s.identifier for s in await pool.list_sessions()] == ["s1"]
    assert await pool.delete("s1")
    assert await pool.lookup("s1") is None


async def test_a_session_that_cooled_down_on_its_node_is_placed_again(
    pool: RemotePool, node: NodeServer
) -> None:
    session = await pool.acquire("cool")
    await session.execute("x = 1")
    await node.engine.pool("default").delete("cool")  # what the node's cooldown does
    res = await (await pool.acquire("cool")).execute("'x' in dir()")
    assert res.result == DisplayData({"text/plain": "False"})  # a fresh session, no error
    directory = pool.engine.directory
    assert isinstance(directory, ScriptedDirectory)
    assert directory.placed == ["cool", "cool"]


class _DropsDeletes(httpx.ASGITransport):
    """The node API, with the next ``drops`` DELETEs of a session cut off before they arrive."""

    def __init__(self, app: NodeServer, drops: int) -> None:
        super().__init__(app=app)
        self.drops = drops

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE" and request.url.path.endswith("/session") and self.drops:
            self.drops -= 1
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return await super().handle_async_request(request)


async def test_a_delete_cut_off_is_sent_again_and_never_claimed_when_it_failed(
    pool: RemotePool, node: NodeServer
) -> None:
    """The session really goes, or the caller hears that it may not have (a 503)."""
    engine = pool.engine
    for ident in ("once", "never"):
        assert (await (await pool.acquire(ident)).execute("1")).status is ExecutionStatus.OK
    await engine.http.aclose()
    engine.http = httpx.AsyncClient(transport=_DropsDeletes(node, drops=1))
    assert await pool.delete("once")
    assert node.engine.pool("default").get("once") is None
    await engine.http.aclose()
    engine.http = httpx.AsyncClient(transport=_DropsDeletes(node, drops=2))
    with pytest.raises(errors.SandboxError) as caught:
        await pool.delete("never")
    assert "did not answer the delete" in caught.value.message and status_for(caught.value) == 503
    assert node.engine.pool("default").get("never") is not None


async def test_a_lost_session_says_so_once_then_works(pool: RemotePool) -> None:
    directory = pool.engine.directory
    assert isinstance(directory, ScriptedDirectory)
    directory.lost["gone"] = "session 'gone' in pool 'default' was lost with node n0 (test)"
    res = await (await pool.acquire("gone")).execute("1")
    assert res.status is ExecutionStatus.LOST and res.state_lost
    assert "was lost with node n0" in res.stderr
    assert (await (await pool.acquire("gone")).execute("1")).status is ExecutionStatus.OK


async def test_capacity_errors_from_the_directory_keep_their_type(pool: RemotePool) -> None:
    directory = pool.engine.directory
    assert isinstance(directory, ScriptedDirectory)
    directory.place = _Method(
        lambda p, i: wire.error_out(errors.PoolAtCapacity(p, "full", "max_sessions"))
    )
    with pytest.raises(errors.PoolAtCapacity) as caught:
        await pool.acquire("new")
    assert (caught.value.pool, caught.value.limit) == ("default", "max_sessions")
    assert caught.value.code is errors.ErrorCode.POOL_AT_CAPACITY


async def test_a_directory_out_of_reach_is_a_503_that_says_so(pool: RemotePool) -> None:
    """Ray's errors from the directory (restarting, its node gone) never surface as a 500."""
    directory = pool.engine.directory
    assert isinstance(directory, ScriptedDirectory)

    def unavailable(p: str, i: str) -> dict[str, Any]:
        raise ConnectionError("the actor is temporarily unavailable")

    directory.place = _Method(unavailable)
    with pytest.raises(errors.SandboxError) as caught:
        await pool.acquire("new")
    assert "directory did not answer 'place'" in caught.value.message
    assert "ConnectionError" in caught.value.message and "Retry" in caught.value.message
    assert status_for(caught.value) == 503


def test_results_and_errors_cross_the_wire_whole() -> None:
    png = bytes(range(256))
    res = ExecutionResult(
        status=ExecutionStatus.ERROR,
        stdout="out",
        stderr="err",
        result=DisplayData({"text/plain": "1", "image/png": png}),
        displays=[DisplayData({"image/png": png})],
        error=ErrorInfo("ValueError", "bad", "Traceback ..."),
        truncated=True,
        duration_ms=1.5,
        state_lost=True,
    )
    assert wire.result_in(wire.result_out(res)) == res
    exc = wire.error_in(wire.error_out(errors.FileOverLimit("a.bin", 10)))
    assert isinstance(exc, errors.FileOverLimit)
    assert (exc.path, exc.limit_bytes, exc.limit) == ("a.bin", 10, "limits.file_bytes")
    assert isinstance(wire.error_in({"nonsense": 1}), errors.SandboxError)


def _node(node_id: str, ready: int, live: int, mem: int = 8 << 30, **kw: Any) -> Node:
    node = Node(node_id, "127.0.0.1", None, reachable=True, **kw)
    node.info = {"started": True, "incarnation": "i", "url": "u", "token": "t"}
    node.figures = {
        "mem_available": mem,
        "pools": {"p": {"ready": ready, "sessions": [f"s{i}" for i in range(live)]}},
    }
    return node


async def test_the_directory_takes_its_hot_calls_over_http_with_its_token() -> None:
    """place, locate and forget over the directory's HTTP endpoint answer what the Ray calls
    answer; anything else, or a wrong token, is refused."""
    directory = Directory(ClusterConfig("127.0.0.1:1"), EngineConfig(), [PoolConfig(name="p")])
    directory._poller = asyncio.get_running_loop().create_future()  # no Ray: no polling
    directory.nodes["n1"] = _node("n1", ready=1, live=0)
    headers = {wire.TOKEN_HEADER: directory.token}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=directory.http_app), base_url="http://directory"
    ) as http:
        placed = await http.post("/place", json=["p", "s1"], headers=headers)
        assert placed.status_code == 200, placed.text
        assert placed.json() == {"route": directory.nodes["n1"].route()}
        assert placed.json() == await directory.place("p", "s1")  # the same placement
        located = await http.post("/locate", json=["p", "s1"], headers=headers)
        assert located.json() == placed.json()
        assert (await http.post("/forget", json=["p", "s1"], headers=headers)).json() is None
        assert (await http.post("/locate", json=["p", "s1"], headers=headers)).json() is None
        assert (await http.post("/place", json=["p", "s1"])).status_code == 401
        wrong = {wire.TOKEN_HEADER: "x" * 64}
        assert (await http.post("/place", json=["p", "s1"], headers=wrong)).status_code == 401
        assert (await http.post("/drain", json=["n1", True], headers=headers)).status_code == 404


async def test_a_gateway_falls_back_to_ray_when_the_directory_http_is_gone(
    pool: RemotePool,
) -> None:
    engine = pool.engine
    engine.directory_http = ("http://127.0.0.1:9", "t" * 64)  # nothing listens there
    session = await pool.acquire("via-ray")
    assert (await session.execute("1")).status is ExecutionStatus.OK
    assert engine.directory_http is None  # found again at the next route refresh
    directory = engine.directory
    assert isinstance(directory, ScriptedDirectory) and directory.placed == ["via-ray"]


def test_placement_prefers_a_warm_session_then_the_emptiest_node() -> None:
    reserve = 512 << 20
    warm, cold = _node("warm", ready=1, live=5), _node("cold", ready=0, live=0)
    assert choose([cold, warm], "p", {}, reserve) is warm
    # the warm one is already promised to a placement not yet seen there
    assert choose([cold, warm], "p", {"warm": 1}, reserve) is cold
    a, b = _node("a", ready=2, live=3), _node("b", ready=2, live=1)
    assert choose([a, b], "p", {}, reserve) is b
    assert choose([a, _node("c", 2, 0, draining=True)], "p", {}, reserve) is a
    assert choose([a, _node("d", 2, 0, mem=100 << 20)], "p", {}, reserve) is a
    assert choose([_node("e", 2, 0, draining=True)], "p", {}, reserve) is None


def test_cluster_settings_come_from_the_table_the_environment_and_the_flag(
    tmp_path: Path,
) -> None:
    assert load_settings(environ={}).cluster is None
    toml = tmp_path / "c.toml"
    toml.write_text('[cluster]\naddress = "head:6379"\nnode_ip_address = "10.0.0.5"\n')
    cluster = load_settings(environ={}, config_file=toml).cluster
    assert cluster is not None
    assert (cluster.address, cluster.node_ip_address) == ("head:6379", "10.0.0.5")
    env = {"SESSIONPOOL_CLUSTER_NAMESPACE": "blue", "SESSIONPOOL_CLUSTER_POLL_SECONDS": "2"}
    cluster = load_settings(environ=env, config_file=toml, cluster_address="other:1").cluster
    assert cluster is not None
    assert (cluster.address, cluster.namespace, cluster.poll_seconds) == ("other:1", "blue", 2.0)
    toml.write_text('[cluster]\nnamespace = "x"\n')
    with pytest.raises(errors.ConfigError, match="needs an address"):
        load_settings(environ={}, config_file=toml)
    toml.write_text('[cluster]\naddress = "h:1"\nnodes = 3\n')
    with pytest.raises(errors.ConfigError, match="unknown setting 'nodes'"):
        load_settings(environ={}, config_file=toml)


def test_a_single_server_never_imports_ray() -> None:
    code = (
        "import sys\n"
        "from sessionpool.server.app import create_app, make_engine\n"
        "from sessionpool.server.settings import load_settings\n"
        "s = load_settings(environ={})\n"
        "print(type(make_engine(s)).__name__, 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Engine", "False"]


class _InProcessActor:
    """A ``Directory`` reached the way Ray reaches its actor (``actor.method.remote(...)``), in
    this process."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._directory, name)

        class _Remote:
            @staticmethod
            def remote(*args: Any) -> Any:
                return method(*args)

        return _Remote()


async def test_agent_runs_hold_one_per_conversation_and_cancel_across_gateways(
    tmp_path: Path, scripted_model: ScriptedModel
) -> None:
    """Two gateways' agents services on one database and one directory: a conversation has one
    run in flight whichever gateway is asked, and a cancel sent to the other gateway stops it
    (its code interrupted), after which the conversation takes a new run anywhere."""

    async def handler(kernel: Any, request: dict[str, Any]) -> Any:
        if request.get("code") == SLOW_CODE:  # a cell that runs until it is interrupted
            await asyncio.Event().wait()
        return await run_python(kernel, request)

    backend = FakeBackend(tmp_path / "engine", handler=handler)
    engine = Engine(
        EngineConfig(data_dir=tmp_path / "engine"),
        [PoolConfig(ready_sessions=1, max_sessions=4)],
        backend=backend,
    )
    await engine.start()
    directory = Directory(ClusterConfig("127.0.0.1:1"), EngineConfig(), [PoolConfig()])
    directory._poller = asyncio.get_running_loop().create_future()  # no Ray: no polling
    cluster = ClusterEngine(ClusterConfig("127.0.0.1:1"), EngineConfig(), [PoolConfig()])
    await cluster.http.aclose()
    cluster.directory = _InProcessActor(directory)

    def config(gateway: str) -> AgentsConfig:
        return AgentsConfig(
            model_base_url=scripted_model.url,
            default_model="scripted-slow",
            max_steps=3,
            model_timeout_seconds=5,
            data_dir=tmp_path / gateway,
            database_url=f"sqlite:///{tmp_path / 'agents.db'}",
        )

    gateway_a = AgentService(config("a"), engine, cluster.run_locks)
    gateway_b = AgentService(config("b"), engine, cluster.run_locks)
    await gateway_a.start()
    await gateway_b.start()
    a, b = gateway_a.for_tenant(DEFAULT_TENANT), gateway_b.for_tenant(DEFAULT_TENANT)
    try:
        assert gateway_a.owner != gateway_b.owner
        conversation = await a.create_conversation()
        await a.add_message(conversation.id, role="user", content="wait")
        run = await a.start_run(conversation.id, model="scripted-slow")

        def running() -> bool:  # the cell reached its kernel
            return any(
                r.get("code") == SLOW_CODE for k in backend.kernels for r in list(k.requests)
            )

        for _ in range(600):
            if running():
                break
            await asyncio.sleep(0.05)
        assert running(), await a.get_run(run.id)
        with pytest.raises(errors.Conflict, match=run.id):
            await b.start_run(conversation.id, model="scripted-slow")
        with pytest.raises(errors.Conflict, match=run.id):
            await b.add_message(conversation.id, role="user", content="more")
        cancelling = await b.cancel_run(run.id)
        assert cancelling.status == RunStatus.CANCELLING
        done = await a.wait_run(run.id, timeout=30)
        task = gateway_a.task(run.id)
        assert done.status == RunStatus.CANCELLED, (done.status, task and task.get_stack())
        assert done.cancelled_at is not None
        for _ in range(100):  # released once its task ended
            if await directory.run_holder(conversation.id) is None:
                break
            await asyncio.sleep(0.02)
        await b.add_message(conversation.id, role="user", content="hello")
        again = await b.start_run(conversation.id, model="scripted-hello")
        assert (await b.wait_run(again.id, timeout=30)).status == RunStatus.COMPLETED
        for _ in range(100):
            if await directory.run_holder(conversation.id) is None:
                break
            await asyncio.sleep(0.02)
        assert await directory.run_holder(conversation.id) is None
    finally:
        await gateway_a.close()
        await gateway_b.close()
        await engine.close()


async def test_cluster_sessions_have_no_network_and_say_so(pool: RemotePool) -> None:
    """Egress runs on a single server: a cluster session is always off, and asking for more is
    the 400 a narrowing beyond its pool gets, saying why."""
    session = await pool.acquire("net")
    off = {"mode": "off", "allow": [], "secrets": {}, "recent": []}
    assert session.network() == off
    assert await session.set_network("off") == off
    for mode in ("allowlist", "on"):
        with pytest.raises(errors.EgressWidens) as caught:
            await session.set_network(mode, ["api.example.com"])
        message = caught.value.message
        assert "pool 'default': sessions of a cluster have no network yet" in message
        assert "can only be narrowed from its pool's" in message
        assert (caught.value.pool, caught.value.param) == ("default", "network")
        assert status_for(caught.value) == 400
    # the session itself is untouched: it still runs code on its node
    assert (await session.execute("6 * 7")).result == DisplayData({"text/plain": "42"})
