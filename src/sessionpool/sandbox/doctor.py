"""Which parts of the jail this host can provide, line by line.

``sessionpool doctor`` prints the report; the jail backend runs the same checks at start and
refuses to start (fail closed) if any required one fails. Namespace and seccomp probes run in a
throwaway child process (``--probe``) so the caller's own process is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sessionpool.config import EngineConfig
from sessionpool.sandbox import linux


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


_NS = {
    "user namespace": linux.CLONE_NEWUSER,
    "mount namespace": linux.CLONE_NEWNS,
    "pid namespace": linux.CLONE_NEWPID,
    "network namespace": linux.CLONE_NEWNET,
    "ipc namespace": linux.CLONE_NEWIPC,
    "uts namespace": linux.CLONE_NEWUTS,
    "cgroup namespace": linux.CLONE_NEWCGROUP,
}


def _probe() -> dict[str, str]:
    """Runs in a child: try each namespace, seccomp and no_new_privs; 'ok' or the error."""
    results: dict[str, str] = {}
    for name, flag in _NS.items():
        pid = os.fork()
        if pid == 0:
            try:
                linux.unshare(flag)
                os._exit(0)
            except OSError as exc:
                os._exit(exc.errno or 1)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        results[name] = "ok" if code == 0 else os.strerror(code)
    try:
        from sessionpool.sandbox.seccomp import build_filter_bpf

        bpf = build_filter_bpf()
        pid = os.fork()
        if pid == 0:
            try:
                linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
                linux.load_seccomp_bpf(bpf)
                os._exit(0)
            except OSError as exc:
                os._exit(exc.errno or 1)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        results["seccomp filter (libseccomp)"] = (
            f"ok ({len(bpf) // 8} BPF instructions)" if code == 0 else os.strerror(code)
        )
    except Exception as exc:
        results["seccomp filter (libseccomp)"] = f"cannot build: {exc!r}"
    return results


def check_host(data_dir: Path, config: EngineConfig | None = None) -> list[Check]:
    """Every check; ``config`` (default: the built-in settings) gives the sessions' bound."""
    checks: list[Check] = []
    is_root = os.geteuid() == 0
    checks.append(
        Check(
            "running as root",
            is_root,
            "yes" if is_root else "the jail maps each session to its own host uid: run as root",
        )
    )
    if sys.platform != "linux":
        checks.append(Check("Linux", False, f"unsupported platform {sys.platform}"))
        return checks
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-m", "sessionpool.sandbox.doctor", "--probe"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        probed = json.loads(out.stdout or "{}")
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
        probed = {}
        checks.append(Check("namespace probe", False, repr(exc)))
    for name in [*_NS, "seccomp filter (libseccomp)"]:
        detail = probed.get(name, "not probed")
        checks.append(Check(name, detail.startswith("ok"), detail))
    if is_root:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                linux.mount("tmpfs", tmp, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m")
                linux.umount2(tmp, linux.MNT_DETACH)
            checks.append(Check("tmpfs mounts (sized workspaces)", True, "ok"))
        except OSError as exc:
            checks.append(Check("tmpfs mounts (sized workspaces)", False, str(exc)))
        checks.append(_loop_devices())
        from sessionpool.sandbox.cgroups import Cgroups

        try:
            cg = Cgroups.detect(f"sessionpool-doctor-{os.getpid()}")
            cg.remove_base()
            checks.append(Check("cgroups (memory, pids, cpu)", True, f"ok (cgroup v{cg.version})"))
        except OSError as exc:
            checks.append(Check("cgroups (memory, pids, cpu)", False, str(exc)))
        checks.append(_favordynmods())
    checks.append(_memory_merge())
    checks.append(_memory_bound(config or EngineConfig()))
    return checks


def _memory_bound(config: EngineConfig) -> Check:
    """The limit all sessions share, what it leaves to the server and the host, and who the OOM
    killer picks first."""
    from sessionpool.sandbox.cgroups import memory_ceiling, resolve_bound

    name = "sessions' shared memory bound"
    try:
        bound = resolve_bound(
            config.sessions_memory_bytes, config.sessions_memory_reserve_bytes, memory_ceiling()
        )
    except (OSError, ValueError) as exc:
        return Check(name, False, str(exc))
    server = (
        str(linux.SERVER_OOM_SCORE_ADJ)
        if linux.has_capability(linux.CAP_SYS_RESOURCE)
        else "unchanged (lowering it needs CAP_SYS_RESOURCE, which this process lacks)"
    )
    return Check(
        name,
        True,
        f"{bound.describe()}; oom_score_adj: sessions {linux.OOM_SCORE_ADJ_MAX}, server and "
        f"zygotes {server}",
    )


def _loop_devices() -> Check:
    """Runtimes and custom images are squashfs images mounted through loop devices."""
    name = "loop devices (runtime images)"
    if not os.path.exists("/dev/loop-control"):
        return Check(name, False, "/dev/loop-control is missing (load the loop module)")
    if shutil.which("losetup") is None:
        return Check(name, False, "losetup is not installed (util-linux)")
    with open("/proc/filesystems") as f:
        if "squashfs" not in f.read():
            return Check(name, False, "the kernel has no squashfs (load the squashfs module)")
    return Check(name, True, "ok")


def _favordynmods() -> Check:
    """Advice, never a failure: without favordynmods, moving a process into a cgroup waits
    for an RCU grace period (about 8 ms here), which on-demand allocations pay."""
    name = "cgroup fast attach (favordynmods, advisory)"
    try:
        with open("/proc/mounts") as f:
            on = any("favordynmods" in line for line in f if " cgroup" in line)
    except OSError:
        on = False
    if on:
        return Check(name, True, "on")
    return Check(
        name,
        True,
        "off: on cgroup v2 each session's cgroup attach waits ~8 ms; boot with "
        "cgroup_favordynmods=true (or mount cgroup2 with -o favordynmods) to take it off "
        "on-demand allocations (on v1 sessions move themselves, without that wait)",
    )


def _memory_merge() -> Check:
    """Advice, never a failure: only pools with memory_merge need KSM (and refuse to start
    without it); the others never use it."""
    from sessionpool.sandbox import ksm

    name = "kernel samepage merging (memory_merge, advisory)"
    status = ksm.status()
    if status is None:
        return Check(name, True, f'absent ({ksm.KSM_DIR}): pools need memory_merge = "off"')
    writable = os.access(ksm.KSM_DIR / "run", os.W_OK)
    start = "the server can start it" if writable else "not writable here: start it as root"
    return Check(name, True, f"{status.describe()}; {start}")


def format_runtimes(runtimes_dir: Path) -> str:
    """The runtimes built in ``runtimes_dir``: what each pool's ``runtime`` setting may name."""
    from sessionpool.sandbox.runtimes import available

    found = available(runtimes_dir)
    if not found:
        return f"no runtimes built in {runtimes_dir}: run `make runtimes`"
    lines = [f"runtimes in {runtimes_dir}:"]
    for rt in found:
        lines.append(
            f"  {rt.name}: {rt.kind} {rt.version}, {len(rt.packages)} packages, {rt.digest}"
        )
    return "\n".join(lines)


def format_report(checks: list[Check]) -> str:
    lines = [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks]
    verdict = (
        "this host can run the jail backend"
        if all(c.ok for c in checks)
        else "the jail backend will refuse to start on this host"
    )
    return "\n".join([*lines, verdict])


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(_probe()))
