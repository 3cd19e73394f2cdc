"""``/metrics``: its scope, its formats, and counters that follow what the server really did.

The application runs in process on the fake backend (real pools, sessions and agents loop;
kernels answer in process); the exposition is read back with the client library's own parser.
One test runs a jailed session into its memory limit, for the OOM kill as the kernel reports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionpool.agents.config import AgentsConfig
from sessionpool.config import PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox.backend import KernelDied, Slot
from sessionpool.sandbox.fake import FakeBackend, FakeKernel, Reply, run_python
from sessionpool.server.keys import KeyStore
from sessionpool.tenancy import Scope
from tests.agents.scripted_model import ScriptedModel
from tests.fakes import fake_server

API = "api-version=2024-02-02-preview"
HANG = "hang"
DIE = "die"
TIMEOUT = 0.3


def body(code: str, timeout: float | None = None) -> dict[str, object]:
    """A cell; ``timeout`` only on the cells meant to time out, so a slow machine cannot turn a
    quick cell into a timeout (the pool's own limit is generous)."""
    props: dict[str, object] = {"codeInputType": "inline", "executionType": "synchronous"}
    props["code"] = code
    if timeout is not None:
        props["timeoutInSeconds"] = timeout
    return {"properties": props}


class OomBackend(FakeBackend):
    """Python kernels, except two cells: ``hang`` ignores its interrupt (an await, not a
    thread: SIGINT cannot stop it, SIGKILL does), ``die`` ends its process the way the OOM
    killer does, and the backend then says what the jail says of such a death."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, self.kernel)
        self.oom: set[str] = set()

    async def kernel(self, k: FakeKernel, request: dict[str, object]) -> Reply:
        if request.get("code") == HANG:
            await asyncio.sleep(3600)
        if request.get("code") == DIE:
            self.oom.add(k.slot.name)
            k.kill(-9)
            raise KernelDied("killed")
        return await run_python(k, request)

    def describe_exit(self, slot: Slot, status: int | None) -> str:
        text = super().describe_exit(slot, status)
        if slot.name in self.oom:
            return f"{text}: out of memory (the session's limit is 1 MiB)"
        return text


POOLS = (
    PoolConfig(
        name="default",
        ready_sessions=1,
        max_sessions=3,
        execution_timeout_seconds=30,
        interrupt_grace_seconds=0.2,
    ),
    PoolConfig(name="cold", ready_sessions=0, max_sessions=1),
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
async def http(tmp_path: Path, scripted_model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    agents = AgentsConfig(
        model_base_url=scripted_model.url, model_timeout_seconds=5, data_dir=tmp_path / "fake-data"
    )
    backend = OomBackend(tmp_path / "fake-data")
    async with fake_server(tmp_path, *POOLS, backend=backend, agents=agents) as client:
        yield client


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples(r.text)


async def test_counters_follow_allocations_executions_kills_uploads_and_runs(
    http: httpx.AsyncClient,
) -> None:
    run = "/pools/default/code/execute?identifier={}&" + API
    before = await scrape(http)
    assert value(before, "sessionpool_sessions", pool="default", state="ready") == 1
    assert value(before, "sessionpool_executions_total", pool="default", status="ok") == 0

    # a warm allocation, two good cells, an error, a timeout that interrupts
    assert (await http.post(run.format("a"), json=body("x = 1"))).status_code == 200
    assert (await http.post(run.format("a"), json=body("x + 1"))).status_code == 200
    assert (await http.post(run.format("a"), json=body("1 / 0"))).status_code == 200
    slow = await http.post(run.format("a"), json=body("while True:\n    pass", TIMEOUT))
    assert slow.json()["properties"]["status"] == "Failure"
    # a cell that ignores the interrupt is killed; one whose process dies "of memory"
    await http.post(run.format("b"), json=body(HANG, TIMEOUT))
    await http.post(run.format("c"), json=body(DIE))
    # the pool holds 3: a fourth identifier is refused; the cold pool forks on demand
    assert (await http.post(run.format("d"), json=body("1"))).status_code != 200
    cold = "/pools/cold/code/execute?identifier=e&" + API
    assert (await http.post(cold, json=body("1"))).status_code == 200
    upload = "/pools/default/files/upload?identifier=a&" + API
    files = {"file": ("data.csv", b"a,b\n1,2\n")}
    assert (await http.post(upload, files=files)).status_code == 200
    # agents: a run that answers, one whose model endpoint fails
    for model, status in (("scripted-hello", "completed"), ("scripted-error", "failed")):
        r = await http.post("/v1/responses", json={"model": model, "input": "hi"})
        assert r.status_code == 200 and r.json()["status"] == status, r.text

    found = await scrape(http)
    executions = {
        status: value(found, "sessionpool_executions_total", pool="default", status=status)
        for status in ("ok", "error", "timeout", "lost")
    }
    assert executions == {"ok": 2, "error": 1, "timeout": 2, "lost": 1}
    # the agents' containers are sessions of the default pool too: no cell ran in them here
    assert value(found, "sessionpool_execution_duration_seconds_count", pool="default") == 6
    slow_enough = value(
        found, "sessionpool_execution_duration_seconds_bucket", pool="default", le="0.25"
    )
    assert slow_enough == 4  # the timeouts took longer than 0.25 s
    assert value(found, "sessionpool_execution_duration_seconds_sum", pool="default") >= 0.6
    assert (
        value(found, "sessionpool_execution_timeouts_total", pool="default", action="interrupted")
        == 1
    )
    assert (
        value(found, "sessionpool_execution_timeouts_total", pool="default", action="killed") == 1
    )
    assert value(found, "sessionpool_interpreter_kills_total", pool="default", cause="timeout") == 1
    assert value(found, "sessionpool_interpreter_kills_total", pool="default", cause="oom") == 1
    assert value(found, "sessionpool_interpreter_kills_total", pool="default", cause="exited") == 0
    assert value(found, "sessionpool_allocations_total", pool="default", outcome="warm") >= 1
    assert value(found, "sessionpool_allocations_total", pool="default", outcome="refused") == 1
    assert value(found, "sessionpool_allocations_total", pool="cold", outcome="on_demand") == 1
    assert value(found, "sessionpool_allocations_total", pool="cold", outcome="warm") == 0
    assert value(found, "sessionpool_uploads_total", pool="default") == 1
    assert value(found, "sessionpool_upload_bytes_total", pool="default") == 8
    assert value(found, "sessionpool_sessions", pool="default", state="idle") == 3
    assert value(found, "sessionpool_sessions", pool="default", state="busy") == 0
    assert value(found, "sessionpool_sessions", pool="cold", state="ready") == 0
    assert value(found, "sessionpool_max_sessions", pool="default") == 3
    assert value(found, "sessionpool_ready_sessions_target", pool="default") == 1
    assert value(found, "sessionpool_agent_runs_total", status="completed") == 1
    assert value(found, "sessionpool_agent_runs_total", status="failed") == 1
    assert value(found, "sessionpool_agent_runs_started_total") == 2
    assert value(found, "sessionpool_agent_runs_in_progress") == 0
    assert value(found, "sessionpool_model_request_duration_seconds_count", outcome="ok") == 1
    assert value(found, "sessionpool_model_request_duration_seconds_count", outcome="error") == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in found)
    # bounded labels: no identifier, file name or tenant anywhere in the exposition
    labels = {v for _, pairs in found for _, v in pairs}
    assert not labels & {"a", "b", "c", "d", "e", "data.csv", "default-tenant"}


async def test_a_busy_session_shows_as_busy(http: httpx.AsyncClient) -> None:
    run = "/pools/default/code/execute?identifier=busy&" + API
    call = asyncio.create_task(http.post(run, json=body("import time\ntime.sleep(0.2)")))
    for _ in range(200):
        found = await scrape(http)
        if value(found, "sessionpool_sessions", pool="default", state="busy") == 1:
            break
        await asyncio.sleep(0.005)
    else:
        pytest.fail("the running session never showed as busy")
    await call
    found = await scrape(http)
    assert value(found, "sessionpool_sessions", pool="default", state="busy") == 0


async def test_openmetrics_when_the_scraper_asks_for_it(http: httpx.AsyncClient) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    r = await http.get("/metrics", headers={"accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")
    assert "# TYPE sessionpool_executions counter" in r.text


async def test_the_metrics_scope(tmp_path: Path, http: httpx.AsyncClient) -> None:
    assert (await http.get("/metrics", headers={"authorization": ""})).status_code == 401
    store = KeyStore(tmp_path / "fake-data" / "keys.json")
    _, runner = store.create("acme", frozenset({Scope.EXECUTE, Scope.FILES}))
    _, watcher = store.create("ops", frozenset({Scope.METRICS}))
    denied = await http.get("/metrics", headers={"authorization": f"Bearer {runner}"})
    assert denied.status_code == 403
    assert "metrics" in denied.text
    allowed = await http.get("/metrics", headers={"authorization": f"Bearer {watcher}"})
    assert allowed.status_code == 200
    assert "sessionpool_executions_total" in allowed.text
    # a metrics key runs nothing
    run = "/pools/default/code/execute?identifier=w&" + API
    r = await http.post(run, json=body("1"), headers={"authorization": f"Bearer {watcher}"})
    assert r.status_code == 403


async def test_without_a_started_runtime_only_the_build_info(tmp_path: Path) -> None:
    from sessionpool.server.observe import Metrics

    families = list(Metrics(lambda: None).collect())
    assert [f.name for f in families] == ["sessionpool_build_info"]


@pytest.mark.jail
async def test_an_oom_kill_is_counted_as_one(engine: Engine) -> None:
    pool = engine.pool("tight")  # 256 MiB per session
    before = dict(pool.stats.kills)
    session = await pool.acquire("metrics-oom")
    try:
        result = await session.execute("x = bytearray(600 * 1024 * 1024)")
        assert result.status == "lost", result
        assert "out of memory" in result.stderr
    finally:
        await pool.delete("metrics-oom")
    assert pool.stats.kills["oom"] == before["oom"] + 1
    assert pool.stats.kills["exited"] == before["exited"]
