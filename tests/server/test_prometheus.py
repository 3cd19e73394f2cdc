"""A real Prometheus server (Debian's package, installed by ``make install``) scrapes a real
``serve`` with a bearer key, and its query API returns what the server did; a job with a wrong
key is refused (``up`` 0, HTTP 401)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from sessionpool.server.testing import ServerProcess

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.jail,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="no prometheus binary (make install installs Debian's package: apt-get install "
        "prometheus)",
    ),
]

CONFIG = """
[pools.default]
preload = []
ready_sessions = 1
max_sessions = 4
"""

SCRAPE = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sessionpool
    authorization:
      credentials: {key}
    static_configs:
      - targets: ["{target}"]
  - job_name: wrong-key
    authorization:
      credentials: not-the-key
    static_configs:
      - targets: ["{target}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def query(api: httpx.Client, expr: str) -> list[dict[str, Any]]:
    r = api.get("/api/v1/query", params={"query": expr})
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def scalar(api: httpx.Client, expr: str) -> float | None:
    result = query(api, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_servers_metrics(tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    with ServerProcess(tmp_path / "server", config=CONFIG) as server:
        run = server.endpoint() + "/code/execute?identifier=p&api-version=2024-02-02-preview"
        with httpx.Client(headers=server.auth, timeout=30) as client:
            for code in ("x = 1", "x += 1", "x += 1", "1 / 0"):
                body = {"properties": {"codeInputType": "inline", "code": code}}
                assert client.post(run, json=body).status_code == 200
        assert server.api_key is not None
        config = tmp_path / "prometheus.yml"
        config.write_text(SCRAPE.format(key=server.api_key, target=urlparse(server.url).netloc))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:
                ok = 'sessionpool_executions_total{job="sessionpool",pool="default",status="ok"}'
                deadline = time.monotonic() + 25
                while True:
                    try:
                        up = scalar(api, 'up{job="sessionpool"}')
                        executions = scalar(api, ok)
                        refused = scalar(api, 'up{job="wrong-key"}')
                    except httpx.TransportError:
                        up = executions = refused = None  # not listening yet
                    except httpx.HTTPStatusError as exc:
                        if exc.response.status_code != 503:
                            raise
                        up = executions = refused = None  # listening, its storage not open yet
                    if up == 1 and executions == 3 and refused == 0:
                        break
                    assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
                    assert time.monotonic() < deadline, (up, executions, refused)
                    time.sleep(0.2)
                errors = 'sessionpool_executions_total{job="sessionpool",status="error"}'
                assert scalar(api, errors) == 1
                count = 'sessionpool_execution_duration_seconds_count{job="sessionpool"}'
                assert scalar(api, count) == 4
                median = scalar(
                    api,
                    "histogram_quantile(0.5, "
                    'sessionpool_execution_duration_seconds_bucket{job="sessionpool"})',
                )
                assert median is not None and 0 < median < 1
                ready = 'sessionpool_sessions{job="sessionpool",state="ready"}'
                assert scalar(api, ready) == 1
                # the job with a wrong key was refused (up 0), and Prometheus says how
                targets = api.get("/api/v1/targets").json()["data"]["activeTargets"]
                wrong = next(t for t in targets if t["labels"]["job"] == "wrong-key")
                assert "401" in wrong["lastError"]
        finally:
            prometheus.terminate()
            prometheus.wait(10)
            log.close()
