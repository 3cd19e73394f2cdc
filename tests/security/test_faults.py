"""Faults: killed interpreters and zygotes, a full data disk, a session deleted mid-cell, a
server stopped or crashed with executions in flight. Clear errors, no other session harmed,
nothing left behind (processes, mounts, cgroups, workspace directories).

These cases start servers of their own (a fast template, no preload), so that killing things
cannot disturb the shared server of the rest of the suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from sessionpool.server.testing import ServerProcess
from tests.security.conftest import jail_possible
from tests.security.helpers import NEW, Api, q

pytestmark = pytest.mark.jail

FAST = {"SESSIONPOOL_POOL_PRELOAD": "", "SESSIONPOOL_POOL_READY_SESSIONS": "1"}


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not jail_possible():
        pytest.skip("the jail backend needs root")
    with ServerProcess(Path(tmp_path_factory.mktemp("faults")), env=FAST) as srv:
        yield srv


@pytest.fixture(scope="module")
def fapi(fault_server: ServerProcess) -> Iterator[Api]:
    with Api(fault_server) as a:
        yield a


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cgroups_of(pid: int) -> list[str]:
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d.startswith(f"sessionpool-{pid}-")]
        if root.count("/") > 6:
            dirs.clear()
    return found


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line for line in fh if str(path.resolve()) in line]


def kernel_pids_of(server: ServerProcess, api: Api, ident: str, pool: str = "default") -> list[int]:
    """Host pids of one session's processes: found through its workspace's owner uid."""
    marker = f"marker-{ident}"
    api.ok(ident, f"open('/mnt/data/{marker}', 'w').write('m')", pool)
    for ws in (server.data_dir / "workspaces").iterdir():
        if (ws / marker).exists():
            uid = ws.stat().st_uid
            break
    else:
        raise AssertionError("workspace not found")
    assert server.process is not None
    return [p.pid for p in descendants(server.process.pid) if p.uids().real == uid]


def run_in_thread(api: Api, ident: str, code: str) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def go() -> None:
        try:
            out["r"] = api.execute_raw(ident, code)
        except httpx.HTTPError as exc:
            out["exc"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, out


def test_kill_9_of_a_session_mid_execution(fault_server: ServerProcess, fapi: Api) -> None:
    fapi.ok("bystander", "y = 1")
    pids = kernel_pids_of(fault_server, fapi, "victim9")
    fapi.ok("victim9", "x = 1")
    t, out = run_in_thread(fapi, "victim9", "import time\ntime.sleep(30)")
    time.sleep(0.5)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    t.join(20)
    r = out["r"]
    assert isinstance(r, httpx.Response) and r.status_code == 200
    props = r.json()["properties"]
    assert props["status"] == "Failure" and "signal 9" in props["stderr"]
    assert fapi.value("victim9", "'x' in dir()") is False  # a fresh interpreter
    assert fapi.download("victim9", "marker-victim9").status_code == 200  # files kept
    assert fapi.value("bystander", "y + 1") == 2


def test_killing_the_zygote(fault_server: ServerProcess, fapi: Api) -> None:
    fapi.ok("before-zygote", "z = 5")
    assert fault_server.process is not None
    zygotes = [
        p
        for p in psutil.Process(fault_server.process.pid).children()
        if "sessionpool.sandbox.zygote" in " ".join(p.cmdline())
    ]
    assert zygotes
    for z in zygotes:
        z.kill()
    psutil.wait_procs(zygotes, timeout=5)
    assert fapi.value("before-zygote", "z + 1") == 6  # live sessions keep running
    for i in range(3):  # new sessions: a fresh zygote serves them
        assert fapi.value(f"after-zygote-{i}", "6 * 7") == 42
    assert fault_server.process.poll() is None


def test_deleting_a_session_while_its_cell_runs(fault_server: ServerProcess, fapi: Api) -> None:
    pids = kernel_pids_of(fault_server, fapi, "deleted-mid-cell")
    t, out = run_in_thread(fapi, "deleted-mid-cell", "import time\ntime.sleep(30)")
    time.sleep(0.5)
    r = fapi.client.delete(f"/pools/default/session{q('deleted-mid-cell', NEW)}")
    assert r.status_code == 204
    t.join(20)
    assert not t.is_alive()
    res = out.get("r")
    assert isinstance(res, httpx.Response) and res.status_code < 500, res
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 5)
    assert not alive


def test_a_full_data_disk(tmp_path: Path) -> None:
    """The data directory's filesystem is full: sessions (each with its own sized tmpfs
    workspace) keep working, new ones are made, uploads succeed, nothing answers 5xx."""
    if not jail_possible():
        pytest.skip("needs root")
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(data)], check=True)
    try:
        with ServerProcess(tmp_path, env=FAST) as srv, Api(srv) as api:
            api.ok("early", "e = 1")
            with open(data / "filler", "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
            assert os.statvfs(data).f_bavail == 0
            assert api.value("early", "e + 1") == 2
            assert api.value("late", "open('/mnt/data/a', 'w').write('abc')") == 3
            assert api.upload("late", "b.bin", b"x" * (1 << 20)).status_code == 200
            assert api.download("late", "a").content == b"abc"
            r = api.client.get(f"/pools/default/listSessions{q('x', NEW)}")
            assert r.status_code == 200
            assert srv.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_sigterm_with_executions_in_flight_leaves_nothing(tmp_path: Path) -> None:
    if not jail_possible():
        pytest.skip("needs root")
    srv = ServerProcess(tmp_path, env=FAST, args=["--shutdown-deadline", "1"])
    srv.start()
    assert srv.process is not None
    try:
        with Api(srv) as api:
            api.ok("a", "open('/mnt/data/f', 'w').write('x')")
            api.ok("b", "import subprocess\np = subprocess.Popen(['sleep', '600'])")
            threads = [run_in_thread(api, n, "import time\ntime.sleep(120)") for n in ("a", "b")]
            time.sleep(0.7)
            children = descendants(srv.process.pid)
            assert len(children) >= 3
            srv.process.send_signal(signal.SIGTERM)
            assert srv.process.wait(30) == 0
            for t, out in threads:
                t.join(10)
                r = out.get("r")
                assert isinstance(r, httpx.Response), out
                assert r.status_code == 503
                assert r.headers["x-ms-error-code"] == "ServerShuttingDown"
    finally:
        srv.stop(signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert mounts_under(srv.data_dir) == []
    assert cgroups_of(srv.process.pid) == []
    assert list((srv.data_dir / "workspaces").iterdir()) == []


def test_a_crashed_server_leaves_nothing_running_and_a_restart_cleans_up(tmp_path: Path) -> None:
    """SIGKILL of the server: every session sees EOF and exits; a new server on the same data
    directory sweeps the workspaces and cgroups the dead one left."""
    if not jail_possible():
        pytest.skip("needs root")
    srv = ServerProcess(tmp_path, env=FAST)
    srv.start()
    assert srv.process is not None
    with Api(srv) as api:
        api.ok("a", "import subprocess\np = subprocess.Popen(['sleep', '600'])")
        t, _ = run_in_thread(api, "b", "import time\ntime.sleep(120)")
        time.sleep(0.7)
        children = descendants(srv.process.pid)
        old_pid = srv.process.pid
        srv.process.kill()
        srv.process.wait()
        t.join(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    with ServerProcess(tmp_path, env=FAST) as again, Api(again) as api:
        assert api.value("c", "1 + 1") == 2
        assert mounts_under(again.data_dir / "workspaces") == [] or all(
            str(again.data_dir) in m for m in mounts_under(again.data_dir / "workspaces")
        )
        live = {p.name for p in (again.data_dir / "workspaces").iterdir()}
        assert len(live) <= 2, live  # only the new server's own (ready + 'c')
        assert cgroups_of(old_pid) == []
