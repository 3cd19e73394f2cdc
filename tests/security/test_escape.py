"""Escape to the host and reading host data, through the HTTP API of a real server.

Each case runs attack code in a jailed session via ``POST code/execute`` and asserts that the
attack failed (and, where the host can tell, that nothing happened on the host).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sessionpool
from sessionpool.server.testing import ServerProcess
from tests.security.conftest import CANARY, CANARY_ENV
from tests.security.helpers import ATTEMPT, Api

pytestmark = pytest.mark.jail

SOURCE = Path(sessionpool.__file__).resolve().parent
REPO = SOURCE.parents[1]


def host_paths(server: ServerProcess) -> dict[str, str]:
    data = server.data_dir.resolve()
    return {
        "shadow": "/etc/shadow",
        "gshadow": "/etc/gshadow",
        "root-ssh": "/root/.ssh/authorized_keys",
        "server-source": str(SOURCE / "server" / "auth.py"),
        "repo-pyproject": str(REPO / "pyproject.toml"),
        "server-config": str(server.workdir.resolve() / "sessionpool.toml"),
        "server-log": str(server.log_path.resolve()),
        "data-dir-secret": str(data / "host-secret.txt"),
        "uid-locks": "/run/sessionpool/uids",
    }


@pytest.mark.parametrize(
    "which",
    [
        "shadow",
        "gshadow",
        "root-ssh",
        "server-source",
        "repo-pyproject",
        "server-config",
        "server-log",
        "data-dir-secret",
        "uid-locks",
    ],
)
def test_host_file_cannot_be_read(api: Api, server: ServerProcess, ident: str, which: str) -> None:
    path = host_paths(server)[which]
    found = api.value(
        ident,
        ATTEMPT + f"p = {path!r}\n"
        "r = attempt(lambda: open(p, 'rb').read()) if not os.path.isdir(p) else 'dir-visible'\n"
        "r, os.path.exists(p)",
    )
    assert found == ("ENOENT", False), (which, found)


def test_host_environment_is_not_visible_anywhere(api: Api, ident: str) -> None:
    """The server's variables (a canary planted in its environment) show up in no environ block
    under the session's /proc, nor in a shell's environment."""
    assert os.environ.get(CANARY_ENV) is None  # the canary lives in the server process only
    blob = api.value(
        ident,
        "import os\nblob = repr(dict(os.environ))\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit() or p == 'self':\n"
        "        try:\n"
        "            blob += open(f'/proc/{p}/environ', 'rb').read().decode(errors='replace')\n"
        "        except OSError:\n"
        "            pass\n"
        "blob",
    )
    shell = api.shell(ident, "env; cat /proc/1/environ")
    for text in (blob, shell["result"]["stdout"]):
        assert CANARY not in text and CANARY_ENV not in text
        assert "SESSIONPOOL_API_KEYS" not in text and "test-key" not in text


def test_server_process_is_not_in_the_session_proc(
    api: Api, server: ServerProcess, ident: str
) -> None:
    """/proc inside is the session's pid namespace: the server's pid (and every host process)
    is absent; pid 1 is the session's own interpreter."""
    assert server.process is not None
    pid = server.process.pid
    found = api.value(
        ident,
        ATTEMPT + f"sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),"
        f" attempt(lambda: open('/proc/{pid}/environ', 'rb').read()),"
        f" attempt(lambda: os.kill({pid}, 0)),"
        " open('/proc/1/cmdline', 'rb').read().split(b'\\0')[0].decode()",
    )
    pids, environ, kill, cmdline = found
    assert pids[0] == 1 and max(pids) < 200, pids
    assert pid not in pids or pid < 200  # small pids are the session's own
    assert environ == "ENOENT" or pid in pids
    assert kill in ("ESRCH", "ok") and (kill == "ESRCH" or pid in pids)
    assert "python" in cmdline


def test_sys_secrets_and_kernel_interfaces_are_absent(api: Api, ident: str) -> None:
    """(/home holds only the jail's own link to the workspace: checked below, with the root.)"""
    found = api.value(
        ident,
        ATTEMPT + "[os.path.exists(p) for p in ('/sys/kernel', '/sys/firmware', '/sys/fs/cgroup',"
        " '/boot', '/var/lib', '/home/user/.ssh', '/root/.ssh', '/root/.bashrc')],"
        " attempt(lambda: open('/proc/sysrq-trigger', 'w').write('h')),"
        " attempt(lambda: open('/proc/sys/kernel/hostname', 'w').write('x'))",
    )
    exists, sysrq, proc_sys = found
    assert not any(exists), exists
    assert sysrq in ("EACCES", "EPERM", "EROFS", "ENOENT"), sysrq
    assert proc_sys in ("EACCES", "EPERM", "EROFS"), proc_sys


def test_kcore_and_kmsg_cannot_be_read(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "[attempt(lambda p=p: open(p, 'rb').read(16)) for p in"
        " ('/proc/kcore', '/dev/kmsg', '/dev/mem', '/proc/kallsyms_nonexistent')]",
    )
    assert "ok" not in found[:3], found


def test_kernel_modules_cannot_be_loaded(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(nr, *a):\n"
        "    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])\n"
        "    return 'ok' if r != -1 else errno.errorcode.get(ctypes.get_errno())\n"
        "import platform\n"
        "nrs = {'x86_64': (175, 313, 176), 'aarch64': (105, 273, 106)}[platform.machine()]\n"
        "[call(nrs[0], 0, 0, 0), call(nrs[1], -1, 0, 0), call(nrs[2], 0, 0)]",
    )
    assert found == ["EPERM", "EPERM", "EPERM"], found


def test_dev_is_minimal_and_nodes_cannot_be_made(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "import stat\n"
        "modes = {n: os.lstat('/dev/' + n).st_mode for n in os.listdir('/dev')}\n"
        "devs = sorted(n for n, m in modes.items() if stat.S_ISCHR(m) or stat.S_ISBLK(m))\n"
        "devs, attempt(os.mknod, '/mnt/data/sda', stat.S_IFBLK | 0o600, os.makedev(8, 0)),"
        " attempt(os.mknod, '/tmp/mem', stat.S_IFCHR | 0o600, os.makedev(1, 1))",
    )
    devs, blk, mem = found
    assert set(devs) <= {"null", "zero", "full", "random", "urandom"}, devs
    assert blk == "EPERM" and mem == "EPERM"


@pytest.mark.parametrize("directory", ["/", "/usr", "/etc", "/usr/lib", "/mnt", "/proc/1"])
def test_cannot_write_outside_the_writable_mounts(api: Api, ident: str, directory: str) -> None:
    found = api.value(
        ident, ATTEMPT + f"attempt(lambda: open({directory!r} + '/sp-escape', 'w').write('x'))"
    )
    assert found in ("EROFS", "EACCES", "EPERM", "ENOENT"), found
    assert not os.path.exists(directory.rstrip("/") + "/sp-escape")


def test_setuid_binaries_grant_nothing(api: Api, ident: str) -> None:
    """no_new_privs is set and every capability set is empty, in the session and in whatever it
    executes (a setuid binary included)."""
    candidates = [
        p for p in ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount") if os.path.exists(p)
    ]
    found = api.value(
        ident,
        "import subprocess\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        f"runs = [subprocess.run([b, '--help'], env={{'LD_SHOW_AUXV': '1'}}, capture_output=True,"
        f" timeout=10).stdout.decode(errors='replace') for b in {candidates!r}]\n"
        "[status['NoNewPrivs'].strip(), status['CapEff'].strip(), status['CapPrm'].strip(),"
        " status['CapBnd'].strip(), status['CapAmb'].strip()],"
        " ['AT_SECURE:       0' in r or 'AT_SECURE: 0' in ' '.join(r.split()) for r in runs]",
    )
    flags, insecure = found
    assert flags == ["1", "0" * 16, "0" * 16, "0" * 16, "0" * 16], flags
    assert all(insecure), insecure


def test_no_inherited_descriptor_leads_to_the_host(api: Api, ident: str) -> None:
    """The runc CVE-2024-21626 class: no inherited fd is a host directory, and walking up from
    /proc/self/fd/N, /proc/1/cwd or /proc/1/root never reaches host files."""
    found = api.value(
        ident,
        "import os, stat\n"
        "dirs, targets = [], {}\n"
        "for pid in ('self', '1'):\n"
        "    for fd in os.listdir(f'/proc/{pid}/fd'):\n"
        "        p = f'/proc/{pid}/fd/{fd}'\n"
        "        try:\n"
        "            targets[p] = os.readlink(p)\n"
        "            if stat.S_ISDIR(os.stat(p).st_mode):\n"
        "                dirs.append(p)\n"
        "        except OSError:\n"
        "            pass\n"
        "up = sorted(os.listdir('/proc/1/cwd/../../..')), sorted(os.listdir('/proc/1/root'))\n"
        "home = {n: os.readlink('/home/' + n) for n in os.listdir('/home')}\n"
        "dirs, sorted(set(targets.values())), up, home",
    )
    dirs, targets, (up, root), home = found
    assert dirs == [], dirs  # no directory fd at all (the leaked-cwd attack needs one)
    for target in targets:
        assert (
            target.split(":")[0] in ("pipe", "socket", "anon_inode")
            or target
            in (
                "/dev/null",
                "/proc",
            )
            or target.startswith("/proc/")
        ), target
    assert up == root  # ../../.. of /mnt/data is the jail's own root
    assert "var" not in root and "srv" not in root, root
    # /home is the jail's own: E2B's home directory, a link to the workspace; no host home
    assert home == {"user": "/mnt/data"}, home
    # the system directories and /opt (the runtime and the kernel), wherever this checkout lives
    system = {"bin", "dev", "etc", "home", "lib", "lib32", "lib64", "mnt", "opt", "proc", "sbin"}
    system.add("tmp")
    assert set(root) <= system | {"usr"}, root


SYSCALLS = {
    # name: (x86_64 nr, aarch64 nr, args)
    "mount": (165, 40, ["0", "b'/tmp'", "b'tmpfs'", "0", "0"]),
    "umount2": (166, 39, ["b'/mnt/data'", "2"]),
    "unshare-user": (272, 97, ["0x10000000"]),
    "unshare-mount": (272, 97, ["0x00020000"]),
    "clone-newuser": (56, 220, ["0x10000000 | 17", "0", "0", "0", "0"]),
    "pivot_root": (155, 41, ["b'/tmp'", "b'/tmp'"]),
    "chroot": (161, 51, ["b'/tmp'"]),
    "setns": (308, 268, ["0", "0"]),
    "ptrace-attach": (101, 117, ["16", "1", "0", "0"]),
    "process_vm_readv": (310, 270, ["1", "0", "0", "0", "0", "0"]),
    "bpf": (321, 280, ["0", "0", "0"]),
    "io_uring_setup": (425, 425, ["1", "0"]),
    "userfaultfd": (323, 282, ["1"]),
    "perf_event_open": (298, 241, ["0", "0", "-1", "-1", "0"]),
    "keyctl": (250, 219, ["0", "0", "0", "0", "0"]),
    "open_by_handle_at": (304, 265, ["-100", "0", "0"]),
}


@pytest.mark.parametrize("name", list(SYSCALLS))
def test_dangerous_syscall_is_refused(api: Api, ident: str, name: str) -> None:
    x86, arm, args = SYSCALLS[name]
    found = api.value(
        ident,
        "import ctypes, errno, os, platform\n"
        "libc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
        f"nr = {x86} if platform.machine() == 'x86_64' else {arm}\n"
        "def conv(a):\n"
        "    return ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a)\n"
        f"r = libc.syscall(ctypes.c_long(nr), *[conv(a) for a in [{', '.join(args)}]])\n"
        "if r == 0 and nr in (56, 220):\n"
        "    os._exit(0)\n"
        "'ok' if r != -1 else errno.errorcode.get(ctypes.get_errno())",
    )
    assert found == "EPERM", (name, found)


def test_tiocsti_terminal_injection_is_refused(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import ctypes, errno, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "c = ctypes.c_char(b'x')\n"
        "fd = os.open('/dev/null', os.O_RDWR)\n"
        "r = libc.ioctl(fd, ctypes.c_ulong(0x5412), ctypes.byref(c))\n"
        "'ok' if r != -1 else errno.errorcode[ctypes.get_errno()], os.getsid(0) == os.getpid()",
    )
    assert found == ("EPERM", True)  # and the session leads its own session: no host tty


def test_rlimits_cannot_be_raised(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "import resource\n"
        "s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "n = resource.getrlimit(resource.RLIMIT_NPROC)\n"
        "def up(which, lim):\n"
        "    try:\n"
        "        resource.setrlimit(which, (lim[1] + 1, lim[1] + 1))\n"
        "    except (ValueError, OSError) as e:\n"
        "        return type(e).__name__\n"
        "    return 'ok'\n"
        "up(resource.RLIMIT_NOFILE, (s, h)), up(resource.RLIMIT_NPROC, n), h",
    )
    nofile, nproc, hard = found
    assert nofile != "ok" and nproc != "ok", found
    assert hard <= 1024


def test_hostname_cannot_be_changed(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "import socket\nattempt(socket.sethostname, 'pwned'), socket.gethostname()",
    )
    assert found == ("EPERM", "sandbox")
    assert os.uname().nodename != "pwned"


def test_cannot_change_uid_or_gain_capabilities(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        ATTEMPT + "attempt(os.setuid, 1), attempt(os.setgid, 1), attempt(os.setgroups, [1]),"
        " attempt(os.chown, '/mnt/data', 1, 1), os.getuid()",
    )
    assert found[:4] == ("EINVAL", "EINVAL", "EPERM", "EINVAL") or all(
        r != "ok" for r in found[:4]
    ), found
    assert found[4] == 0


def test_session_runs_as_an_unprivileged_host_uid(
    api: Api, server: ServerProcess, ident: str
) -> None:
    """Seen from the host, the session's processes belong to a uid of the session range, not
    root, and hold no capabilities."""
    import psutil

    api.ok(ident, "import os\nopen('/mnt/data/uid-probe', 'w').write('x')")
    assert server.process is not None
    uids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            uids.add(child.uids().real)
        except psutil.Error:
            pass
    session_uids = {u for u in uids if u >= 1_000_000_000}
    assert session_uids, uids
    assert 0 in uids  # the zygote; sessions are not
