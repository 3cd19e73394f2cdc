"""Agents benchmark: what the agent loop itself costs, with a model that answers at once.

Run as ``.venv/bin/python -m benchmarks.agents [--quick] [--json PATH]`` from the repository
root (as root: the jail backend needs it; the root is then on ``sys.path``, for ``tests``). It
starts the scripted chat-completions server of the test suite (replies in well under a
millisecond, so the figures are sessionpool's overhead, not a model's) and a real ``sessionpool
serve`` child on loopback with the agents service on SQLite, then measures with ``httpx``
(``time.perf_counter`` in this process, nearest-rank percentiles, warm-ups discarded):

- **answer without code**: ``POST /v1/responses`` (no background) with a model that answers
  directly: conversation, message, run, one model call, the answer stored and returned.
- **one code cell**: the same with a model that asks for one cell (a matplotlib bar chart
  saved to /mnt/data plus a CSV) and then answers: the container's session, the cell, the PNG,
  two captured files, the annotated answer.
- **Assistants run**: thread + message + run created, then ``GET run`` polled every 5 ms until
  ``completed`` (the loop's latency as a polling client sees it, without its poll interval).
- **concurrent**: N responses at once, without code and with one code cell; runs per second.

Writes the JSON to ``--json`` or ``benchmarks/results/agents-<UTC date>.json`` and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tests.agents.scripted_model import ScriptedModel

from benchmarks._common import RESULTS, nearest_rank
from sessionpool.server.testing import ServerProcess

CONFIG = """
[pools.default]
ready_sessions = 8
max_sessions = 500  # every one-cell response keeps its container's session

[agents]
model_base_url = "{model}"
default_model = "scripted-hello"
"""

TOOLS = [{"type": "code_interpreter", "container": {"type": "auto"}}]


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "n": len(ms),
        "p50_ms": round(nearest_rank(ms, 50), 2),
        "p95_ms": round(nearest_rank(ms, 95), 2),
        "p99_ms": round(nearest_rank(ms, 99), 2),
    }


def response(client: httpx.Client, model: str) -> dict[str, Any]:
    r = client.post("/v1/responses", json={"model": model, "input": "go", "tools": TOOLS})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    if body["status"] != "completed":
        raise RuntimeError(f"response ended {body['status']}: {body.get('error')}")
    return body


def timed_responses(client: httpx.Client, model: str, n: int, warmup: int) -> list[float]:
    samples = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        response(client, model)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return samples


def timed_assistant_runs(client: httpx.Client, n: int, warmup: int) -> list[float]:
    agent = client.post("/v1/assistants", json={"model": "scripted-chart", "tools": TOOLS[:0]})
    agent.raise_for_status()
    agent_id = agent.json()["id"]
    samples = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        thread = client.post("/v1/threads", json={}).json()["id"]
        client.post(f"/v1/threads/{thread}/messages", json={"role": "user", "content": "chart"})
        run = client.post(f"/v1/threads/{thread}/runs", json={"assistant_id": agent_id}).json()
        while run["status"] in ("queued", "in_progress"):
            time.sleep(0.005)
            run = client.get(f"/v1/threads/{thread}/runs/{run['id']}").json()
        if run["status"] != "completed":
            raise RuntimeError(f"run ended {run['status']}: {run.get('last_error')}")
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return samples


async def concurrent(url: str, headers: dict[str, str], n: int, model: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:

        async def one() -> float:
            t0 = time.perf_counter()
            r = await client.post(
                "/v1/responses", json={"model": model, "input": "go", "tools": TOOLS}
            )
            r.raise_for_status()
            if r.json()["status"] != "completed":
                raise RuntimeError(str(r.json().get("error")))
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        latencies = await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return {"runs": n, "wall_s": round(wall, 2), "runs_per_s": round(n / wall, 1)} | summary(
        list(latencies)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (about 30 s)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()
    n, warmup, burst = (20, 3, 10) if args.quick else (100, 10, 40)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
    }
    with ScriptedModel() as model, tempfile.TemporaryDirectory() as tmp:
        config = CONFIG.format(model=model.url)
        with ServerProcess(Path(tmp), config=config) as server:
            with httpx.Client(base_url=server.url, headers=server.auth, timeout=300) as client:
                results["answer_without_code"] = summary(
                    timed_responses(client, "scripted-hello", n, warmup)
                )
                results["one_code_cell"] = summary(
                    timed_responses(client, "scripted-chart", n, warmup)
                )
                results["assistants_run_one_cell"] = summary(
                    timed_assistant_runs(client, n // 2, warmup)
                )
            for key, model in (
                ("concurrent_without_code", "scripted-hello"),
                ("concurrent_one_cell", "scripted-chart"),
            ):
                results[key] = asyncio.run(concurrent(server.url, server.auth, burst, model))
    rows = [
        ("answer without code (Responses)", results["answer_without_code"]),
        ("one code cell: chart + CSV (Responses)", results["one_code_cell"]),
        ("one code cell (Assistants, 5 ms polling)", results["assistants_run_one_cell"]),
        (f"{burst} concurrent responses without code", results["concurrent_without_code"]),
        (f"{burst} concurrent one-cell responses", results["concurrent_one_cell"]),
    ]
    print("| measure | n | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['n']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |")
    for key in ("concurrent_without_code", "concurrent_one_cell"):
        c = results[key]
        print(f"{key}: {c['runs']} runs in {c['wall_s']} s = {c['runs_per_s']} runs/s")
    out = args.json or RESULTS / f"agents-{dt.date.today()}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
