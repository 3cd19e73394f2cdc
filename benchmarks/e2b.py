"""The E2B face through the unmodified SDK, beside a local Jupyter kernel, in one run.

Run as ``.venv/bin/python -m benchmarks.e2b [--quick] [--json PATH]`` from the repository root,
as root (the jail backend). One real ``sessionpool serve`` on loopback; the
``e2b-code-interpreter`` SDK (sync) pointed at it with ``E2B_API_URL``/``E2B_SANDBOX_URL`` and an
``e2b_`` key. Measured, in this process (``time.perf_counter``; nearest-rank percentiles):

- **time to interactive**: ``Sandbox.create()`` -> the first ``run_code("print(1)")`` result,
  then ``kill()`` (not timed). Beside it, the published figure for E2B's own service (0.44 s
  median time-to-interactive, measured by ComputeSDK; not measured here) and a local
  ``jupyter_client`` + ``ipykernel``: ``start_kernel`` -> the first ``execute_reply``.
- **x += 1**: ``run_code("x += 1")`` round trips in one sandbox, back to back; beside it the
  same in the ipykernel (send -> ``execute_reply``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, IpykernelPeer, PhaseMeter, percentiles
from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess

CONFIG = """
[pools.default]
ready_sessions = 8
max_sessions = 64
"""
#: E2B's own service, as published (ComputeSDK's time-to-interactive benchmark): not measured here
E2B_PUBLISHED_TTI_MS = 440.0


def sessionpool_figures(n_tti: int, n_rt: int) -> dict[str, Any]:
    from e2b_code_interpreter import Sandbox

    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sp-bench-e2b-") as tmp,
        ServerProcess(Path(tmp), config=CONFIG) as server,
    ):
        _, key = KeyStore(server.data_dir / "keys.json").create("bench", e2b=True)
        os.environ.update(
            {"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": key}
        )
        tti: list[float] = []
        for i in range(n_tti + 1):
            t0 = time.perf_counter()
            sbx = Sandbox.create()
            ex = sbx.run_code("print(1)")
            elapsed = (time.perf_counter() - t0) * 1000
            assert "".join(ex.logs.stdout).strip() == "1", ex
            sbx.kill()
            if i:  # the first one warms the client's connections
                tti.append(elapsed)
            time.sleep(0.05)  # let the ready pool refill, as a user's pace would
        out["create -> first run_code result (ms)"] = percentiles(tti)
        sbx = Sandbox.create()
        sbx.run_code("x = 0")
        rt: list[float] = []
        for i in range(n_rt + 20):
            t0 = time.perf_counter()
            sbx.run_code("x += 1")
            if i >= 20:
                rt.append((time.perf_counter() - t0) * 1000)
        assert sbx.run_code("x").text == str(n_rt + 20)
        sbx.kill()
        out["run_code('x += 1') round trip (ms)"] = percentiles(rt)
    return out


class Peer(IpykernelPeer):
    def run(self) -> None:  # pragma: no cover - not used: the figures are taken one by one
        raise NotImplementedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", type=Path, help="where to write the figures")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.e2b needs root (the jail backend)", file=sys.stderr)
        return 2
    n_tti, n_rt, n_peer = (10, 200, 3) if args.quick else (40, 1000, 10)
    report: dict[str, Any] = {"sessionpool (E2B SDK 2.11.5, this machine)": {}}
    report["sessionpool (E2B SDK 2.11.5, this machine)"] = sessionpool_figures(n_tti, n_rt)
    peer = Peer(None, lambda s: None, PhaseMeter())
    starts, _ = peer.time_starts(n_peer)
    with peer.kernel() as (_, kc):
        to_reply, _ = peer.time_x_plus_1(kc, n_rt, 20)
    report["ipykernel (jupyter_client, this machine)"] = {
        "start_kernel -> first execute_reply (ms)": percentiles(starts),
        "x += 1 send -> execute_reply (ms)": percentiles(to_reply),
    }
    report["E2B service (published, not measured here)"] = {
        "time to interactive, median (ms)": E2B_PUBLISHED_TTI_MS,
        "source": "ComputeSDK's sandbox time-to-interactive benchmark",
    }
    text = json.dumps(report, indent=1)
    print(text)
    path = args.json or RESULTS / f"e2b-{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    path.write_text(text + "\n")
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
