"""Cluster mode through real gateways over a real 3-node Ray cluster (tests/cluster/conftest.py).

Placement, state per identifier across gateways, cluster-wide limits, streams and files
through the gateway, drain, an engine crash, and a node lost mid-traffic then a node joining.
The node-loss test runs last: it changes the cluster (and leaves three nodes again).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.cluster.conftest import wait_for_nodes
from tests.cluster.helpers import holder, new_ident, view, wait_until

pytestmark = pytest.mark.jail

V = "2024-02-02-preview"
Gateways = tuple[ServerProcess, ServerProcess]
TICKS = (
    "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n'done'"
)


def run(gw: ServerProcess, ident: str, code: str, pool: str = "default") -> httpx.Response:
    return httpx.post(
        f"{gw.url}/pools/{pool}/code/execute",
        params={"identifier": ident, "api-version": V},
        json={
            "properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}
        },
        headers=gw.auth,
        timeout=60,
    )


def result_of(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    props: dict[str, Any] = r.json()["properties"]
    return props


def delete(gw: ServerProcess, pool: str, ident: str) -> None:
    r = httpx.delete(
        f"{gw.url}/pools/{pool}/session",
        params={"identifier": ident, "api-version": "2025-02-02-preview"},
        headers=gw.auth,
        timeout=30,
    )
    assert r.status_code == 204, r.text


def test_cluster_view_needs_the_key_and_shows_every_node(
    gateways: Gateways, ray_cluster: Any
) -> None:
    a, _ = gateways
    assert httpx.get(a.url + "/cluster").status_code == 401
    # the directory sits on the head, never on a node whose loss it must report
    directory = view(a)["directory"]
    assert directory["node_id"] == ray_cluster.head_node_id
    assert directory["url"].startswith("http://127.0.0.1:")  # its hot calls over HTTP
    nodes = view(a)["nodes"]
    assert len(nodes) == 3
    assert {n["state"] for n in nodes} == {"active"}
    assert len({n["node_id"] for n in nodes}) == 3
    for node in nodes:
        assert node["url"].startswith("http://127.0.0.1:")
        assert node["pools"]["default"]["ready"] >= 0 and node["mem_available"] > 0


def test_sessions_spread_and_keep_state_across_two_gateways(gateways: Gateways) -> None:
    a, b = gateways
    idents = [new_ident(f"spread-{i}") for i in range(12)]
    for i, ident in enumerate(idents):
        assert result_of(run(a if i % 2 else b, ident, f"x = {i}"))["status"] == "Success"
    for round_ in range(3):  # alternating gateways: each call reaches its own session
        for i, ident in enumerate(idents):
            via = a if (i + round_) % 2 else b
            props = result_of(run(via, ident, f"x += 100\nx - {100 * (round_ + 1)}"))
            assert props["result"] == str(i), props
    holders = [holder(a, ident) for ident in idents]
    assert holders == [holder(b, ident) for ident in idents]  # both gateways agree
    per_node = {node: holders.count(node) for node in set(holders)}
    assert len(per_node) == 3, per_node  # placed by free capacity: every node took some
    assert max(per_node.values()) - min(per_node.values()) <= 2, per_node
    # listSessions covers every node, from either gateway
    listed = httpx.get(
        f"{b.url}/pools/default/listSessions",
        params={"api-version": "2025-02-02-preview"},
        headers=b.auth,
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    names = {s["identifier"] for s in listed.json()["sessions"]}
    assert set(idents) <= names
    for ident in idents:
        delete(a, "default", ident)


def test_cluster_wide_limit_holds_under_a_burst_across_gateways(gateways: Gateways) -> None:
    a, b = gateways
    idents = [new_ident(f"burst-{i}") for i in range(14)]
    with concurrent.futures.ThreadPoolExecutor(14) as workers:
        answers = list(
            workers.map(
                lambda pair: run(pair[1] if pair[0] % 2 else a, pair[2], "1", pool="small"),
                [(i, b, ident) for i, ident in enumerate(idents)],
            )
        )
    ok = [ident for ident, r in zip(idents, answers, strict=True) if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert len(ok) == 5, [r.status_code for r in answers]  # max_sessions = 5, cluster-wide
    for r in refused:
        assert r.status_code == 404 and "max_sessions" in r.text, r.text
    counts = [n["pools"]["small"]["sessions"] for n in view(a)["nodes"]]
    deadline = time.monotonic() + 5
    while sum(counts) != 5 and time.monotonic() < deadline:  # the view is a poll behind
        time.sleep(0.2)
        counts = [n["pools"]["small"]["sessions"] for n in view(a)["nodes"]]
    assert sum(counts) == 5, counts
    for ident in ok:
        delete(b, "small", ident)
    # deleted sessions free their places at once: a new one fits again
    assert result_of(run(a, new_ident("after"), "2", pool="small"))["result"] == "2"


def peak_rss(server: ServerProcess) -> int:
    """The process's peak resident memory so far, in bytes (VmHWM)."""
    assert server.process is not None
    status = (Path("/proc") / str(server.process.pid) / "status").read_text()
    kib = next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
    return int(kib) * 1024


def test_streams_and_large_files_pass_through_the_gateway(gateways: Gateways) -> None:
    """A file near the 128 MB limit goes up through one gateway and down through the other;
    neither holds it whole (their peak memory grows by far less than the file)."""
    a, b = gateways
    ident = new_ident("files")
    payload = os.urandom(120 * 1024 * 1024)
    peaks = (peak_rss(a), peak_rss(b))
    up = httpx.post(
        f"{a.url}/pools/default/files/upload",
        params={"identifier": ident, "api-version": V},
        files={"file": ("big.bin", payload, "application/octet-stream")},
        headers=a.auth,
        timeout=120,
    )
    assert up.status_code == 200, up.text
    with httpx.stream(
        "GET",
        f"{b.url}/pools/default/files/content/big.bin",
        params={"identifier": ident, "api-version": V},
        headers=b.auth,
        timeout=120,
    ) as down:
        assert down.status_code == 200
        assert down.headers["content-length"] == str(len(payload))
        got = b"".join(down.iter_bytes())
    assert got == payload
    grown = (peak_rss(a) - peaks[0], peak_rss(b) - peaks[1])
    assert max(grown) < len(payload) // 4, f"gateway peak memory grew by {grown} bytes"
    props = result_of(
        run(a, ident, "import hashlib\nhashlib.sha256(open('big.bin','rb').read()).hexdigest()")
    )
    import hashlib

    assert props["result"].strip("'") == hashlib.sha256(payload).hexdigest()
    events: list[tuple[str, Any]] = []
    with httpx.stream(
        "POST",
        f"{b.url}/pools/default/executions/stream",
        params={"identifier": ident, "api-version": "2025-02-02-preview"},
        json={"code": TICKS},
        headers=b.auth,
        timeout=60,
    ) as stream:
        assert stream.status_code == 200
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    stdout = "".join(e[1]["text"] for e in events if e[0] == "stdout")
    assert stdout == "tick 0\ntick 1\ntick 2\n"
    assert [e[0] for e in events][-1] == "result"
    assert sum(1 for e in events if e[0] == "stdout") >= 2  # as written, not at the end


def test_a_drained_node_takes_no_new_sessions(gateways: Gateways) -> None:
    a, b = gateways
    drained = view(a)["nodes"][0]["node_id"]
    r = httpx.post(
        f"{a.url}/cluster/nodes/{drained}/drain", json={"draining": True}, headers=a.auth
    )
    assert r.status_code == 200, r.text
    try:
        assert httpx.post(f"{a.url}/cluster/nodes/nope/drain", headers=a.auth).status_code == 404
        idents = [new_ident(f"drain-{i}") for i in range(6)]
        for i, ident in enumerate(idents):
            assert result_of(run(a if i % 2 else b, ident, "1"))["status"] == "Success"
        assert drained not in {holder(a, ident) for ident in idents}
        assert {n["state"] for n in view(b)["nodes"] if n["node_id"] == drained} == {"draining"}
    finally:
        r = httpx.post(
            f"{b.url}/cluster/nodes/{drained}/drain", json={"draining": False}, headers=b.auth
        )
        assert r.status_code == 200, r.text


def test_a_crashed_engine_is_restarted_by_ray_and_its_sessions_report_the_loss(
    gateways: Gateways,
) -> None:
    a, b = gateways
    idents = [new_ident(f"crash-{i}") for i in range(6)]
    for i, ident in enumerate(idents):
        assert result_of(run(a, ident, f"x = {i}"))["status"] == "Success"
    victim = holder(a, idents[0])
    on_victim = [i for i in idents if holder(a, i) == victim]
    others = [i for i in idents if i not in on_victim]
    node = next(n for n in view(a)["nodes"] if n["node_id"] == victim)
    os.kill(int(node["pid"]), signal.SIGKILL)

    def restarted() -> bool:
        now = {n["node_id"]: n for n in view(a)["nodes"]}
        n = now.get(victim)
        return n is not None and n["state"] == "active" and n["incarnation"] != node["incarnation"]

    wait_until(restarted, 120, "Ray did not restart the node engine")
    for ident in on_victim:
        lost = result_of(run(b, ident, "x"))
        assert lost["status"] == "Failure", lost
        assert "was lost" in lost["stderr"] and ident in lost["stderr"], lost
        again = result_of(run(a, ident, "x = 7\nx"))
        assert (again["status"], again["result"]) == ("Success", "7"), again
    for ident in others:  # the other nodes' sessions were never touched
        props = result_of(run(b, ident, "x"))
        assert props["result"] == str(idents.index(ident)), props


def test_node_loss_mid_traffic_then_a_node_joins(gateways: Gateways, ray_cluster: Any) -> None:
    a, b = gateways
    idents = [new_ident(f"loss-{i}") for i in range(9)]
    for i, ident in enumerate(idents):
        assert result_of(run(a if i % 2 else b, ident, f"x = {i}"))["status"] == "Success"
    holders = {ident: holder(a, ident) for ident in idents}
    victim_id = holders[idents[0]]
    lost = [i for i in idents if holders[i] == victim_id]
    kept = [i for i in idents if holders[i] != victim_id]
    assert kept, holders
    victim = next(n for n in ray_cluster.nodes if ray_cluster.node_id(n) == victim_id)

    problems: list[str] = []
    calls = 0
    stop = threading.Event()

    def traffic() -> None:  # the kept sessions answer, with their state, all along
        nonlocal calls
        while not stop.is_set():
            for ident in kept:
                via = a if calls % 2 else b
                r = run(via, ident, "x")
                calls += 1
                if r.status_code != 200 or r.json()["properties"]["result"] != str(
                    idents.index(ident)
                ):
                    problems.append(f"{ident}: {r.status_code} {r.text[:300]}")

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        lost_at = time.monotonic()
        ray_cluster.remove_node(victim)
        for ident in lost:
            while True:
                first = run(a, ident, "x")
                assert first.status_code < 500, first.text
                props = result_of(first)
                if props["status"] != "Success":
                    break
                assert props["result"] == str(idents.index(ident)), props
                assert time.monotonic() - lost_at < 60, "the loss was never reported"
                time.sleep(0.05)
            assert "was lost" in props["stderr"] and ident in props["stderr"], props
            again = result_of(run(b, ident, "x = 7\nx"))
            assert (again["status"], again["result"]) == ("Success", "7"), again
            assert holder(a, ident) != victim_id
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert not problems, problems[:5]
    assert calls > len(kept)
    assert len(view(a)["nodes"]) == 2

    # a node joins: it takes new sessions as soon as its engine is up
    joined = ray_cluster.add_node()
    wait_for_nodes(a, 3)
    wait_for_nodes(b, 3)
    fresh = [new_ident(f"joined-{i}") for i in range(4)]
    for ident in fresh:
        assert result_of(run(a, ident, "1"))["status"] == "Success"
    assert ray_cluster.node_id(joined) in {holder(b, ident) for ident in fresh}
