"""Per-tenant quotas on a real server: a tenant over one gets 429 with Retry-After naming it,
and one tenant's burst does not starve another's allocations or executions."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail

POOL_MAX = 16
TENANT_MAX = 4
RATE = 5
UPLOAD_BUDGET = 100_000

CONFIG = f"""
[pools.default]
preload = []
ready_sessions = 2
max_sessions = {POOL_MAX}

[quotas]
max_sessions = {TENANT_MAX}

[tenants.flood]
executions_per_second = {RATE}
upload_bytes_per_hour = {UPLOAD_BUDGET}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if os.geteuid() != 0:
        pytest.skip("the jail backend needs root")
    with ServerProcess(Path(tmp_path_factory.mktemp("quota-server")), config=CONFIG) as srv:
        yield srv


def key_for(server: ServerProcess, tenant: str) -> dict[str, str]:
    secret = KeyStore(server.data_dir / "keys.json").create(tenant)[1]
    return {"Authorization": f"Bearer {secret}"}


def execute(ident: str, code: str = "1") -> tuple[str, dict[str, object]]:
    return "/pools/default/code/execute", {
        "params": {"identifier": ident},
        "json": {"properties": {"code": code}},
    }


async def allocate(client: httpx.AsyncClient, idents: list[str]) -> list[httpx.Response]:
    async def one(ident: str) -> httpx.Response:
        path, kw = execute(ident)
        return await client.post(path, **kw)  # type: ignore[arg-type]

    return list(await asyncio.gather(*(one(i) for i in idents)))


def assert_quota(r: httpx.Response, quota: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["x-ms-error-code"] == "TooManyRequests"
    assert int(r.headers["retry-after"]) >= 1
    assert f"{quota} quota" in r.json()["error"]["message"]


async def test_a_burst_of_sessions_spends_only_its_own_tenants_share(
    server: ServerProcess,
) -> None:
    flood_h, calm_h = key_for(server, "burst"), key_for(server, "calm")
    async with (
        httpx.AsyncClient(base_url=server.url, headers=flood_h, timeout=60) as flood,
        httpx.AsyncClient(base_url=server.url, headers=calm_h, timeout=60) as calm,
    ):
        burst = [f"b-{uuid.uuid4().hex[:8]}" for _ in range(2 * POOL_MAX)]
        answers = await allocate(flood, burst)
        ok = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code != 200]
        # the pool had room for all of them; the tenant's share stopped the burst
        assert len(ok) == TENANT_MAX, [r.status_code for r in answers]
        for r in refused:
            assert_quota(r, "max_sessions")
        metrics = httpx.get(server.url + "/metrics", headers=server.auth, timeout=30).text
        line = 'sessionpool_quota_refusals_total{quota="max_sessions"} '
        counted = [float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line)]
        assert counted == [len(refused)], counted
        # meanwhile another tenant allocates its whole share at once
        mine = await allocate(calm, [f"c-{uuid.uuid4().hex[:8]}" for _ in range(TENANT_MAX)])
        assert [r.status_code for r in mine] == [200] * TENANT_MAX
        # an existing session is never refused; a deleted one frees its slot
        kept = [i for i, r in zip(burst, answers, strict=True) if r.status_code == 200]
        path, kw = execute(kept[0], "2")
        assert (await flood.post(path, **kw)).status_code == 200  # type: ignore[arg-type]
        await flood.delete("/pools/default/session", params={"identifier": kept[0]})
        again = await allocate(flood, [f"b-{uuid.uuid4().hex[:8]}"])
        assert again[0].status_code == 200, again[0].text


async def test_an_execution_flood_is_throttled_and_others_run(server: ServerProcess) -> None:
    flood_h, calm_h = key_for(server, "flood"), key_for(server, "quiet")
    async with (
        httpx.AsyncClient(base_url=server.url, headers=flood_h, timeout=60) as flood,
        httpx.AsyncClient(base_url=server.url, headers=calm_h, timeout=60) as calm,
    ):
        fpath, fkw = execute("f-one", "x = 1")
        cpath, ckw = execute("c-one", "y = 1")
        started = time.monotonic()
        answers = await asyncio.gather(
            *(flood.post(fpath, **fkw) for _ in range(6 * RATE)),  # type: ignore[arg-type]
            *(calm.post(cpath, **ckw) for _ in range(10)),  # type: ignore[arg-type]
        )
        elapsed = time.monotonic() - started
        flooded, calmed = answers[: 6 * RATE], answers[6 * RATE :]
        passed = sum(r.status_code == 200 for r in flooded)
        # a burst of one second's worth, then the rate: nowhere near the 30 asked
        assert 1 <= passed <= RATE + RATE * elapsed + 1, (passed, elapsed)
        for r in flooded:
            if r.status_code != 200:
                assert_quota(r, "executions_per_second")
        assert [r.status_code for r in calmed] == [200] * 10


async def test_uploads_beyond_the_hourly_budget_are_refused(server: ServerProcess) -> None:
    async with httpx.AsyncClient(
        base_url=server.url, headers=key_for(server, "flood"), timeout=60
    ) as flood:
        url = "/pools/default/files"
        params = {"identifier": "f-files", "api-version": "2025-10-02-preview"}
        chunk = os.urandom(UPLOAD_BUDGET * 6 // 10)
        first = await flood.post(url, params=params, files={"file": ("a.bin", chunk)})
        assert first.status_code in (200, 201), first.text
        second = await flood.post(url, params=params, files={"file": ("b.bin", chunk)})
        assert_quota(second, "upload_bytes_per_hour")
        too_big = os.urandom(UPLOAD_BUDGET * 2)
        r = await flood.post(url, params=params, files={"file": ("c.bin", too_big)})
        assert_quota(r, "upload_bytes_per_hour")
        listing = await flood.get(url, params=params)
        assert [f["name"] for f in listing.json()["value"]] == ["a.bin"]  # nothing partial kept


async def test_soak_one_tenant_floods_while_another_works(server: ServerProcess) -> None:
    """For a while, one tenant floods every way it can (new sessions, executions, uploads)
    while another works steadily: every call of the quiet tenant succeeds with its state intact
    and stays fast, the flood is refused with 429s, and the server stays healthy."""
    seconds = 12.0
    flood_h, quiet_h = key_for(server, "flood"), key_for(server, "steady")
    flood_answers: dict[int, int] = {}
    stop = asyncio.Event()

    async def flooder(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            kind = i % 3
            if kind == 0:  # a new session each time
                path, kw = execute(f"flood-{n}-{i}", "sum(range(10**5))")
                r = await client.post(path, **kw)  # type: ignore[arg-type]
            elif kind == 1:  # executions in one session, as fast as it goes
                path, kw = execute(f"flood-{n}", "sum(range(10**5))")
                r = await client.post(path, **kw)  # type: ignore[arg-type]
            else:
                r = await client.post(
                    "/pools/default/files",
                    params={"identifier": f"flood-{n}", "api-version": "2025-10-02-preview"},
                    files={"file": (f"f{i}.bin", os.urandom(20_000))},
                )
            flood_answers[r.status_code] = flood_answers.get(r.status_code, 0) + 1

    latencies: list[float] = []
    async with (
        httpx.AsyncClient(base_url=server.url, headers=flood_h, timeout=60) as flood,
        httpx.AsyncClient(base_url=server.url, headers=quiet_h, timeout=60) as quiet,
    ):
        path, kw = execute("steady", "x = 0")
        assert (await quiet.post(path, **kw)).status_code == 200  # type: ignore[arg-type]
        tasks = [asyncio.create_task(flooder(flood, n)) for n in range(8)]
        started = time.monotonic()
        expected = 0
        while time.monotonic() - started < seconds:
            expected += 1
            path, kw = execute("steady", "x += 1\nx")
            t0 = time.monotonic()
            r = await quiet.post(path, **kw)  # type: ignore[arg-type]
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
            assert r.json()["properties"]["result"] == str(expected)
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*tasks)
        assert (await quiet.get("/healthz")).status_code == 200
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert p99 < 0.5, f"the quiet tenant's p99 was {p99 * 1000:.0f} ms"
    assert flood_answers.get(429, 0) > flood_answers.get(200, 0), flood_answers
    assert set(flood_answers) <= {200, 201, 429}, flood_answers
