"""``serve`` end to end: refusals, --no-auth, TLS, and graceful shutdown without leftovers."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionpool.server.testing import ServerProcess
from sessionpool.server.tls import CA_CERT, SERVER_CERT, SERVER_KEY, ensure_self_signed

FAST_POOL = {"SESSIONPOOL_POOL_PRELOAD": "", "SESSIONPOOL_POOL_READY_SESSIONS": "1"}
EXECUTE = "/pools/default/code/execute?identifier={}&api-version=2024-02-02-preview"


def body(code: str) -> dict[str, object]:
    return {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": code}}


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionpool.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_no_auth_is_refused_off_loopback(tmp_path: Path) -> None:
    result = serve("--no-auth", "--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "refusing --no-auth" in result.stderr
    assert not (tmp_path / "api-key").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tls-cert", "/nonexistent.pem"], "together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot use"),
        (["--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(tmp_path: Path, args: list[str], needle: str) -> None:
    result = serve(*args, "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert needle in result.stderr


def test_bad_pool_setting_in_the_environment(tmp_path: Path) -> None:
    result = serve("--data-dir", str(tmp_path), env={"SESSIONPOOL_POOL_MAX_SESSIONS": "lots"})
    assert result.returncode == 2
    assert "SESSIONPOOL_POOL_MAX_SESSIONS" in result.stderr


@pytest.mark.jail
def test_no_auth_on_loopback_serves_without_a_key(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, api_key=None, args=["--no-auth"], env=FAST_POOL) as server:
        r = httpx.post(server.url + EXECUTE.format("open"), json=body("'open'"), timeout=30)
        assert r.status_code == 200
        assert r.json()["properties"]["result"] == "'open'"
        assert "authentication: OFF" in server.log()
    assert not (server.data_dir / "api-key").exists()


def _gc_passes(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", headers=server.auth, timeout=30).text
    return {
        s.labels["generation"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "python_gc_collections_total"
    }


@pytest.mark.jail
def test_served_heap_is_collected_rarely(tmp_path: Path) -> None:
    """``serve`` freezes its startup heap and raises the collector's thresholds (settle_heap):
    300 executions then run without a pass of the older generations and with at most a couple
    of young ones. With CPython's defaults the same calls made six young passes and an older
    one on this machine."""
    with (
        ServerProcess(tmp_path, env=FAST_POOL) as server,
        httpx.Client(base_url=server.url, headers=server.auth, timeout=30) as client,
    ):
        assert client.post(EXECUTE.format("gc"), json=body("x = 0")).status_code == 200
        before = _gc_passes(server)
        for _ in range(300):
            r = client.post(EXECUTE.format("gc"), json=body("x += 1"))
            assert r.status_code == 200
        after = _gc_passes(server)
    assert before.keys() == {"0", "1", "2"}
    assert after["2"] == before["2"]
    assert after["1"] == before["1"]
    assert after["0"] - before["0"] <= 2


def test_settle_heap_freezes_what_startup_built() -> None:
    code = (
        "import gc, sessionpool.server.cli as cli\n"
        "cli.settle_heap()\n"
        "print(gc.get_freeze_count(), gc.get_threshold() == cli.GC_THRESHOLDS)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    frozen, thresholds = out.stdout.split()
    assert int(frozen) > 10_000  # the server's modules, as imported
    assert thresholds == "True"


def test_self_signed_files_are_reused(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, "127.0.0.1")
    assert first.ca == tmp_path / CA_CERT
    assert (tmp_path / SERVER_KEY).stat().st_mode & 0o077 == 0
    ca = (tmp_path / CA_CERT).read_bytes()
    cert = (tmp_path / SERVER_CERT).read_bytes()
    ensure_self_signed(tmp_path, "127.0.0.1")
    assert (tmp_path / CA_CERT).read_bytes() == ca
    assert (tmp_path / SERVER_CERT).read_bytes() == cert
    # a new host name: a new server certificate from the same CA
    ensure_self_signed(tmp_path, "sessions.internal")
    assert (tmp_path / CA_CERT).read_bytes() == ca
    assert (tmp_path / SERVER_CERT).read_bytes() != cert


@pytest.mark.jail
def test_tls_self_signed_serves_https_trusted_by_the_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_dir = tmp_path / "tls"
    with ServerProcess(tmp_path, args=["--tls-self-signed", str(tls_dir)], env=FAST_POOL) as server:
        assert server.url.startswith("https://127.0.0.1:")
        ca = str(tls_dir / CA_CERT)
        assert f"SSL_CERT_FILE={ca}" in server.log()
        for host in ("127.0.0.1", "localhost"):
            url = server.url.replace("127.0.0.1", host) + EXECUTE.format("tls")
            with httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=30) as client:
                r = client.post(url, json=body("'secure'"), headers=server.auth)
            assert r.status_code == 200
            assert r.json()["properties"]["result"] == "'secure'"
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz")  # the system store does not know the local CA
        # the documented recipe for clients that build their own HTTP client
        monkeypatch.setenv("SSL_CERT_FILE", ca)
        assert httpx.get(server.url + "/healthz").status_code == 200
        monkeypatch.delenv("SSL_CERT_FILE")
        plain = server.url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            httpx.get(plain + "/healthz", timeout=5)


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _cgroups_of(pid: int) -> list[str]:
    """Cgroup directories the server with this pid created (its tree is named after it)."""
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d.startswith(f"sessionpool-{pid}-")]
        if root.count("/") > 6:
            dirs.clear()
    return found


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line for line in fh if str(path) in line]


@pytest.mark.jail
def test_graceful_shutdown_finishes_executions_and_leaves_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env=FAST_POOL, args=["--shutdown-deadline", "20"])
    server.start()
    assert server.process is not None
    try:
        r = httpx.post(
            server.url + EXECUTE.format("warm"), json=body("1"), headers=server.auth, timeout=30
        )
        assert r.status_code == 200
        children = _descendants(server.process.pid)
        assert children, "sessions run in child processes"
        assert _cgroups_of(server.process.pid), "sessions are confined by cgroups"

        outcome: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            outcome["r"] = httpx.post(
                server.url + EXECUTE.format("slow"),
                json=body("import time\ntime.sleep(2)\n'finished'"),
                headers=server.auth,
                timeout=60,
            )

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.7)  # the cell is running
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        thread.join(30)
        assert outcome["r"].status_code == 200
        assert outcome["r"].json()["properties"]["result"] == "'finished'"
        assert server.process.wait(30) == 0
        assert time.monotonic() - started < 15
    finally:
        server.stop(signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left behind: {alive}"
    assert _mounts_under(server.data_dir) == []
    assert _cgroups_of(server.process.pid) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=2)


@pytest.mark.jail
def test_shutdown_deadline_ends_long_executions_with_503(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, env=FAST_POOL, args=["--shutdown-deadline", "1"])
    server.start()
    assert server.process is not None
    outcome: dict[str, httpx.Response] = {}

    def endless() -> None:
        outcome["r"] = httpx.post(
            server.url + EXECUTE.format("endless"),
            json=body("import time\ntime.sleep(120)"),
            headers=server.auth,
            timeout=60,
        )

    try:
        thread = threading.Thread(target=endless)
        thread.start()
        time.sleep(0.7)
        children = _descendants(server.process.pid)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert time.monotonic() - started < 10
        thread.join(10)
    finally:
        server.stop(signal.SIGKILL)
    assert outcome["r"].status_code == 503
    assert outcome["r"].headers["x-ms-error-code"] == "ServerShuttingDown"
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left behind: {alive}"
    assert _mounts_under(server.data_dir) == []
