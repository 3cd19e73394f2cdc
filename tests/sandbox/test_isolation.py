"""Isolation: what a jailed session must not see, reach, change or call.

Every test runs real code inside real jailed sessions and fails if the protection it names is
removed. Where the host can observe the effect (files, uids, listeners), the host checks too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pyseccomp as sc
import pytest

import sessionpool
from sessionpool.engine import Engine
from sessionpool.sandbox.seccomp import DENIED_SYSCALLS, TIOCLINUX, TIOCSTI
from sessionpool.session import Session
from tests.sandbox.helpers import ATTEMPT, value

pytestmark = pytest.mark.jail

# Set at import time, i.e. before the engine fixture starts the zygote: if the zygote or a
# session inherited the test process's environment, this variable would show up inside.
SECRET_NAME = "SP_TEST_SECRET_TOKEN"
SECRET_VALUE = secrets.token_hex(16)
os.environ[SECRET_NAME] = SECRET_VALUE

#: the variables a session is documented to get, and nothing else
SESSION_ENV_KEYS = {
    "PATH",
    "LANG",
    "HOME",
    "TMPDIR",
    "MPLBACKEND",
    "MPLCONFIGDIR",
    "PYTHONNOUSERSITE",
    "TERM",
}

REPO_ROOT = Path(sessionpool.__file__).resolve().parents[2]
SOURCE_DIR = Path(sessionpool.__file__).resolve().parent


@pytest.fixture
async def peer(engine: Engine) -> AsyncIterator[Session]:
    """A second session of the default pool, alive at the same time as ``session``."""
    pool = engine.pool("default")
    ident = f"peer-{secrets.token_hex(4)}"
    s = await pool.acquire(ident)
    yield s
    await pool.delete(ident)


def _proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _host_ipv4_addresses() -> list[str]:
    """The host's own IPv4 addresses other than loopback (SIOCGIFADDR per interface)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                ifreq = fcntl.ioctl(s, 0x8915, struct.pack("256s", name.encode()[:15]))
                address = socket.inet_ntoa(ifreq[20:24])
                if not address.startswith("127."):
                    found.append(address)
    return sorted(found)


def _env_key_documented(key: str) -> bool:
    return key in SESSION_ENV_KEYS or key.endswith("_NUM_THREADS") or key.startswith("VECLIB_")


# -- host files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/root/.bashrc",
        "/root/.ssh/authorized_keys",
        str(SOURCE_DIR / "__init__.py"),
        str(SOURCE_DIR / "sandbox" / "jail.py"),
        str(REPO_ROOT / "pyproject.toml"),
        str(Path(__file__).resolve()),
    ],
)
async def test_host_files_outside_the_view_cannot_be_read(session: Session, path: str) -> None:
    """Only the read-only binds Python needs are in the view; host secrets and the server's code
    do not exist there at all (ENOENT, not merely EACCES from file permissions)."""
    result = await value(session, ATTEMPT + f"attempt(lambda: open({path!r}, 'rb').read())")
    assert result == "ENOENT", f"{path} exists inside the session ({result})"


async def test_a_host_temp_file_cannot_be_read(session: Session, tmp_path: Path) -> None:
    """The host's /tmp (where the server and its tests keep files) is not the session's /tmp."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    result = await value(session, ATTEMPT + f"attempt(lambda: open({str(secret)!r}).read())")
    assert result == "ENOENT"


async def test_etc_is_a_curated_copy(session: Session) -> None:
    """/etc inside holds a generated passwd with root and nobody only, not the host's."""
    users = await value(
        session, "sorted(line.split(':')[0] for line in open('/etc/passwd') if line.strip())"
    )
    assert users == ["nobody", "root"]


async def test_server_source_tree_is_not_visible(session: Session) -> None:
    """The server's code, the repository around it and the server's environment are not in the
    session's view at all: the session runs its own runtime at /opt/python."""
    paths = [str(SOURCE_DIR), str(REPO_ROOT), sys.prefix, sys.base_prefix]
    found = await value(session, f"import os\n[os.path.exists(p) for p in {paths!r}]")
    assert found == [False] * len(paths), dict(zip(paths, found, strict=True))


async def test_root_home_is_not_visible(session: Session) -> None:
    """Root's home (where pyenv keeps the host's interpreters) does not exist in the session."""
    assert await value(session, "import os\nos.path.exists('/root')") is False


async def test_engine_data_dir_is_not_visible(engine: Engine, session: Session) -> None:
    """Other sessions' workspaces (under the engine's data dir) are not reachable by path."""
    data_dir = str(engine.backend.data_dir)
    assert await value(session, f"import os\nos.path.exists({data_dir!r})") is False


async def test_no_sys_and_a_minimal_dev(session: Session) -> None:
    """No /sys, and /dev holds only harmless nodes (no disks, no kvm, no host tty)."""
    found = await value(session, "import os\nos.path.exists('/sys'), sorted(os.listdir('/dev'))")
    sys_visible, dev = found
    assert not sys_visible
    assert set(dev) <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "shm",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "ptmx",
        "pts",
    }, dev
    # the terminals are a private devpts instance (the process service's PTYs): none of the
    # host's, and none of another session's
    pts = await value(session, "import os\nsorted(os.listdir('/dev/pts'))")
    assert pts == ["ptmx"]


# -- processes ----------------------------------------------------------------------------------


async def test_only_its_own_processes_are_visible(session: Session) -> None:
    """The session is pid 1 of its own pid namespace; /proc lists nothing else."""
    pids = await value(
        session, "import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())"
    )
    assert pids == [1]


async def test_host_processes_cannot_be_signalled(session: Session) -> None:
    """kill(pid, 0) on the zygote, the test process and every host process fails with ESRCH."""
    assert session.kernel is not None
    zygote_pid = int(_proc_status(session.kernel.pid)["PPid"])
    targets = [zygote_pid, os.getpid(), session.kernel.pid]
    results = await value(
        session,
        ATTEMPT + f"[attempt(os.kill, pid, 0) for pid in {targets!r}], attempt(os.kill, -1, 0)",
    )
    per_pid, broadcast = results
    assert per_pid == ["ESRCH"] * len(targets)
    assert broadcast == "ESRCH"  # no process other than itself to signal at all


async def test_another_sessions_processes_are_invisible(session: Session, peer: Session) -> None:
    """A process started in one session is not listed, nor signalable, in another."""
    marker = f"{secrets.randbelow(10**6) + 10**6}.5"
    await value(peer, f"import subprocess\np = subprocess.Popen(['sleep', {marker!r}])\np.pid")
    assert peer.kernel is not None
    try:
        found = await value(
            session,
            ATTEMPT
            + "import os\n"
            + "cmds = [open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc')"
            + " if p.isdigit()]\n"
            + f"any({marker.encode()!r} in c for c in cmds), "
            + f"attempt(os.kill, {peer.kernel.pid}, 0)",
        )
        assert tuple(found) == (False, "ESRCH")
    finally:
        await peer.execute("p.kill(); p.wait()")


# -- network ------------------------------------------------------------------------------------


def _listener(host: str) -> socket.socket:
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind((host, 0))
    lst.listen(8)
    lst.setblocking(False)
    return lst


def _assert_reachable_from_host(address: tuple[str, int], lst: socket.socket) -> None:
    """Control: the listener works, so a refusal inside the session is the jail's doing."""
    with socket.create_connection(address, timeout=2):
        pass
    lst.setblocking(True)
    lst.settimeout(2)
    conn, _ = lst.accept()
    conn.close()
    lst.setblocking(False)


def _assert_no_pending_connection(lst: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        conn, _ = lst.accept()
        conn.close()


async def test_cannot_connect_to_a_host_loopback_listener(session: Session) -> None:
    """The session has its own network namespace: 127.0.0.1 is its own loopback, not the host's."""
    lst = _listener("127.0.0.1")
    try:
        port = lst.getsockname()[1]
        _assert_reachable_from_host(("127.0.0.1", port), lst)
        result = await value(
            session,
            ATTEMPT
            + "import socket\n"
            + "attempt(lambda: socket.create_connection("
            + f"('127.0.0.1', {port}), timeout=2).close())",
        )
        assert result != "ok"
        _assert_no_pending_connection(lst)
    finally:
        lst.close()


async def test_cannot_reach_any_host_address(session: Session) -> None:
    """No route out: the host's own non-loopback addresses are unreachable too (no egress)."""
    addresses = _host_ipv4_addresses()
    if not addresses:
        pytest.skip("the host has no non-loopback IPv4 address")
    lst = _listener("0.0.0.0")
    try:
        port = lst.getsockname()[1]
        _assert_reachable_from_host((addresses[0], port), lst)
        results = await value(
            session,
            ATTEMPT
            + "import socket\n"
            + f"[attempt(lambda a=a: socket.create_connection((a, {port}), timeout=2).close())"
            + f" for a in {addresses!r}]",
        )
        assert "ok" not in results, dict(zip(addresses, results, strict=True))
        _assert_no_pending_connection(lst)
    finally:
        lst.close()


async def test_cannot_reach_a_host_abstract_unix_socket(session: Session) -> None:
    """Abstract AF_UNIX names belong to the network namespace: the host's are out of reach."""
    name = f"\0sessionpool-test-{secrets.token_hex(6)}"
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lst.bind(name)
        lst.listen(1)
        lst.setblocking(False)
        result = await value(
            session,
            ATTEMPT
            + "import socket\n"
            + "def connect(name):\n"
            + "    with socket.socket(socket.AF_UNIX) as s:\n"
            + "        s.connect(name)\n"
            + f"attempt(connect, {name!r})",
        )
        assert result == "ECONNREFUSED"
        _assert_no_pending_connection(lst)
    finally:
        lst.close()


async def test_network_namespace_has_only_loopback(session: Session) -> None:
    """The only interface is 'lo'; raw packet sockets are refused."""
    found = await value(
        session,
        ATTEMPT
        + "import socket\n"
        + "names = [line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]]\n"
        + "socket.if_nameindex(), names, "
        + "attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())",
    )
    interfaces, dev_names, packet = found
    assert [name for _, name in interfaces] == ["lo"]
    assert dev_names == ["lo"]
    assert packet == "EPERM"


async def test_network_namespace_is_own_with_loopback_up_and_fixed(session: Session) -> None:
    """The session's network namespace is not the host's; its loopback carries traffic, and the
    session cannot take it down (host root brought it up: the session holds no capability)."""
    found = await value(
        session,
        ATTEMPT
        + "import fcntl, os, socket, struct\n"
        + "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        + "req = struct.pack('16sh14x', b'lo', 0)\n"
        + "flags = struct.unpack('16sh14x', fcntl.ioctl(s, 0x8913, req))[1]\n"
        + "down = struct.pack('16sh14x', b'lo', flags & ~1)\n"
        + "srv = socket.create_server(('127.0.0.1', 0))\n"
        + "c = socket.create_connection(srv.getsockname())\n"
        + "a, _ = srv.accept(); c.sendall(b'x')\n"
        + "(os.readlink('/proc/self/ns/net'), flags & 1, a.recv(1),"
        + " attempt(fcntl.ioctl, s, 0x8914, down))",
    )
    netns, up, echoed, take_down = found
    assert netns != os.readlink("/proc/self/ns/net")
    assert (up, echoed, take_down) == (1, b"x", "EPERM")


async def test_hostname_is_sandbox_and_cannot_be_changed(session: Session) -> None:
    """A private UTS namespace named 'sandbox'; changing it is refused and never hits the host."""
    host_name = socket.gethostname()
    found = await value(
        session,
        ATTEMPT
        + "import os, socket\n"
        + "os.uname().nodename, socket.gethostname(), open('/etc/hostname').read().strip(), "
        + "attempt(socket.sethostname, 'pwned')",
    )
    assert list(found) == ["sandbox", "sandbox", "sandbox", "EPERM"]
    assert socket.gethostname() == host_name


# -- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "directory",
    ["/", "/usr", "/usr/lib", "/etc", "/mnt", "/dev", "/opt", "/opt/python", "/opt/sessionpool"],
)
async def test_cannot_write_outside_the_writable_mounts(session: Session, directory: str) -> None:
    """Everything but /mnt/data, /tmp and /dev/shm is a read-only mount (EROFS, not merely
    EACCES from permissions): no new file, no new directory."""
    name = f"sessionpool-write-test-{secrets.token_hex(4)}"
    path = os.path.join(directory, name)
    found = await value(
        session,
        ATTEMPT
        + "import os\n"
        + f"attempt(lambda: open({path + '.f'!r}, 'x').close()), attempt(os.mkdir, {path!r})",
    )
    assert tuple(found) == ("EROFS", "EROFS"), found
    assert not os.path.exists(path + ".f") and not os.path.exists(path)


async def test_cannot_modify_bound_host_files(session: Session) -> None:
    """Files bound from the host (the interpreter itself) cannot be opened for writing, chmod-ed
    or touched."""
    exe = os.path.realpath(sys.executable)
    before = os.stat(exe)
    found = await value(
        session,
        ATTEMPT
        + "import os\n"
        + f"attempt(lambda: open({exe!r}, 'r+b').close()), attempt(os.chmod, {exe!r}, 0o777), "
        + f"attempt(os.utime, {exe!r}, (0, 0)), attempt(os.unlink, {exe!r})",
    )
    assert "ok" not in found, found
    after = os.stat(exe)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


async def test_proc_sys_is_read_only(session: Session) -> None:
    """Kernel tunables cannot be written from a session."""
    result = await value(
        session, ATTEMPT + "attempt(lambda: open('/proc/sys/kernel/hostname', 'w').write('x'))"
    )
    assert result in ("EACCES", "EROFS", "EPERM")


async def test_tmp_and_dev_shm_are_private(session: Session, peer: Session) -> None:
    """Each session has its own /tmp and /dev/shm; nothing lands in the host's."""
    name = f"sessionpool-private-{secrets.token_hex(4)}"
    await value(
        session,
        f"for d in ('/tmp', '/dev/shm'):\n    open(d + '/' + {name!r}, 'w').write('mine')\n1",
    )
    seen = await value(
        peer, f"import os\n[os.path.exists(d + '/' + {name!r}) for d in ('/tmp', '/dev/shm')]"
    )
    assert seen == [False, False]
    assert not os.path.exists(f"/tmp/{name}") and not os.path.exists(f"/dev/shm/{name}")
    own = await value(session, f"import os\nos.path.exists('/tmp/' + {name!r})")
    assert own is True  # control: the file exists where it was written


async def test_another_sessions_files_are_invisible(
    engine: Engine, session: Session, peer: Session
) -> None:
    """A file in one session's /mnt/data cannot be found from another by any path."""
    name = f"peer-secret-{secrets.token_hex(6)}"
    await value(peer, f"open('/mnt/data/{name}', 'w').write('peer secret')")
    peer_ws = str(peer.slot.workspace.path)
    skip = ["/opt/python", "/proc", "/usr"]
    found = await value(
        session,
        "import os\n"
        + f"direct = [os.path.exists(p) for p in ('/mnt/data/{name}', '{peer_ws}/{name}',"
        + f" '{peer_ws}', '/tmp/{name}', '/dev/shm/{name}')]\n"
        + "hits = []\n"
        + "for root, dirs, files in os.walk('/'):\n"
        + f"    dirs[:] = [d for d in dirs if os.path.join(root, d) not in {skip!r}]\n"
        + f"    hits += [os.path.join(root, f) for f in files if {name!r} in f]\n"
        + "direct, hits",
    )
    direct, hits = found
    assert direct == [False] * 5
    assert hits == []
    # control: the file is really there on the host, in the peer's workspace
    assert (peer.slot.workspace.path / name).read_text() == "peer secret"


def _device(path: Path) -> str:
    """The ``major:minor`` of the filesystem at ``path``, as mountinfo writes it."""
    dev = os.stat(path).st_dev
    return f"{os.major(dev)}:{os.minor(dev)}"


async def test_no_mount_namespace_holds_other_sessions_workspaces(
    engine: Engine, session: Session, peer: Session
) -> None:
    """Each workspace reaches its session as a detached mount: the zygote's mount namespace,
    which every new session's is copied from, holds no live session's workspace, and a session
    forked while others are live has only its own."""
    pool = engine.pool("default")
    others = [await pool.acquire(f"live-{secrets.token_hex(4)}") for _ in range(3)]
    try:
        newest = await pool.acquire(f"newest-{secrets.token_hex(4)}")
        live = [session, peer, *others, newest]
        paths = [s.slot.workspace.path for s in live]
        host = Path("/proc/self/mountinfo").read_text()
        assert all(f" {p} " in host for p in paths)  # control: the host has them mounted
        assert newest.kernel is not None
        zygote_pid = int(_proc_status(newest.kernel.pid)["PPid"])
        zygote = Path(f"/proc/{zygote_pid}/mountinfo").read_text()
        assert str(paths[0].parent) not in zygote
        inside = await value(newest, "[line.split()[2] for line in open('/proc/self/mountinfo')]")
        devices = [_device(p) for p in paths]
        assert devices[-1] in inside
        assert not set(devices[:-1]) & set(inside)
    finally:
        for s in [*others, newest]:
            await pool.delete(s.identifier)


# -- identity and privileges --------------------------------------------------------------------


async def test_uids_differ_per_session_on_the_host(session: Session, peer: Session) -> None:
    """Each session runs as its own unprivileged host uid; its files are owned by that uid."""
    for s in (session, peer):
        await value(s, "open('/mnt/data/owner.txt', 'w').write('x')")
    uids = []
    for s in (session, peer):
        assert s.slot.uid is not None and s.kernel is not None
        st = (s.slot.workspace.path / "owner.txt").stat()
        assert (st.st_uid, st.st_gid) == (s.slot.uid, s.slot.uid)
        assert _proc_status(s.kernel.pid)["Uid"].split() == [str(s.slot.uid)] * 4
        uids.append(s.slot.uid)
    assert uids[0] != uids[1]
    assert 0 not in uids and os.getuid() not in uids


async def test_root_inside_without_capabilities(session: Session) -> None:
    """uid 0 inside, but no capabilities in any set, no_new_privs, and a seccomp filter."""
    status = await value(
        session,
        "dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in line)",
    )
    assert status["Uid"].split() == ["0"] * 4
    assert status["Gid"].split() == ["0"] * 4
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, (cap, status[cap])
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


async def test_cannot_become_another_uid(session: Session) -> None:
    """Only root is mapped in the user namespace; switching uid is refused."""
    found = await value(
        session, ATTEMPT + "import os\nattempt(os.setuid, 1000), attempt(os.setgroups, [1])"
    )
    assert "ok" not in found, found


def _setuid_root_binaries() -> list[str]:
    found = []
    for directory in ("/usr/bin", "/usr/sbin"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    regular = entry.is_file(follow_symlinks=False)
                    if regular and st.st_mode & 0o4000 and st.st_uid == 0:
                        found.append(entry.path)
    return sorted(found)[:4]


async def test_setuid_binaries_grant_nothing(session: Session) -> None:
    """Executing a setuid-root binary changes no credentials: the loader runs it without
    AT_SECURE, with the caller's own (inside) uid as the effective uid."""
    binaries = _setuid_root_binaries()
    if not binaries:
        pytest.skip("no setuid-root binary on this host")
    outputs = await value(
        session,
        "import subprocess\n"
        + "[subprocess.run([b, '--help'], env={'LD_SHOW_AUXV': '1'}, capture_output=True,"
        + f" timeout=10).stdout.decode(errors='replace') for b in {binaries!r}]",
    )
    for binary, out in zip(binaries, outputs, strict=True):
        # glibc drops LD_SHOW_AUXV for secure (setuid) executions: no auxv dump = privileges
        auxv = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in out.splitlines())
            if k.startswith("AT_")
        )
        assert auxv.get("AT_SECURE") == "0", f"{binary} ran as a privileged (secure) exec"
        assert auxv.get("AT_EUID") == auxv.get("AT_UID") == "0", binary


# -- system calls -------------------------------------------------------------------------------

NEWUSER = 0x10000000
NEWNET = 0x40000000
SIGCHLD = 17

#: (test id, syscall, arguments). The arguments are chosen so that, without the seccomp filter,
#: the kernel would answer something other than EPERM (or succeed) wherever that is possible;
#: pivot_root, unshare(CLONE_NEWNET), kexec, the module calls, reboot and swapon are also refused
#: by the missing capabilities, so for them the filter is a second layer.
SYSCALL_CASES: list[tuple[str, str, list[object]]] = [
    ("mount", "mount", [None, b"/nonexistent-dir", b"tmpfs", 0, None]),
    ("umount2", "umount2", [b"/nonexistent-dir", 0]),
    ("pivot_root", "pivot_root", [b"/nonexistent-dir", b"/nonexistent-dir"]),
    ("chroot", "chroot", [b"/nonexistent-dir"]),
    ("unshare-newuser", "unshare", [NEWUSER]),
    ("unshare-newnet", "unshare", [NEWNET]),
    ("setns", "setns", [-1, 0]),
    ("clone-newuser", "clone", [NEWUSER | SIGCHLD, 0, 0, 0, 0]),
    ("ptrace", "ptrace", [2, 0x3FFFFFFF, 0, 0]),  # PEEKDATA of a pid that does not exist
    ("process_vm_readv", "process_vm_readv", ["self", 0, 0, 0, 0, 0]),
    ("bpf", "bpf", [9999, 0, 0]),
    ("keyctl", "keyctl", [9999, 0, 0, 0, 0]),
    ("add_key", "add_key", [b"user", b"k", None, 0, -3]),
    ("userfaultfd", "userfaultfd", [1]),  # UFFD_USER_MODE_ONLY: allowed unprivileged
    ("io_uring_setup", "io_uring_setup", [0, 0]),
    ("perf_event_open", "perf_event_open", [0, 0, -1, -1, 0]),
    ("kexec_load", "kexec_load", [0, 0, 0, 0]),
    ("init_module", "init_module", [0, 0, b""]),
    ("finit_module", "finit_module", [-1, b"", 0]),
    ("delete_module", "delete_module", [b"nonexistent_module", 0]),
    ("reboot", "reboot", [0, 0, 0, 0]),
    ("swapon", "swapon", [b"/nonexistent-dir", 0]),
]

SYSCALL_PROBE = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def conv(a):
    if a is None:
        return ctypes.c_void_p(0)
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    if a == "self":
        return ctypes.c_long(os.getpid())
    return ctypes.c_long(a)
ctypes.set_errno(0)
r = libc.syscall(ctypes.c_long(NR), *[conv(a) for a in ARGS])
if r == 0 and FORKS:
    os._exit(0)  # a clone that was wrongly allowed: the child leaves at once
if r > 0 and FORKS:
    os.waitpid(r, 0)
elif r > 0 and NAME == "userfaultfd":
    os.close(r)
"ok" if r != -1 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
"""


def _nr(name: str) -> int:
    nr = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
    if nr < 0:
        pytest.skip(f"{name} does not exist on this architecture")
    return nr


@pytest.mark.parametrize(
    ("name", "args"), [(n, a) for _, n, a in SYSCALL_CASES], ids=[i for i, _, _ in SYSCALL_CASES]
)
async def test_denied_syscall_fails_with_eperm(
    session: Session, name: str, args: list[object]
) -> None:
    """Each call on the seccomp denylist fails with EPERM when session code makes it."""
    setup = f"NR = {_nr(name)}\nARGS = {args!r}\nFORKS = {name == 'clone'}\nNAME = {name!r}\n"
    assert await value(session, setup + SYSCALL_PROBE) == "EPERM"


async def test_clone3_cannot_bypass_the_clone_flag_check(session: Session) -> None:
    """clone3 (whose flags a filter cannot read) answers ENOSYS, so libc falls back to clone."""
    setup = f"NR = {_nr('clone3')}\nARGS = [0, 0]\nFORKS = True\nNAME = 'clone3'\n"
    assert await value(session, setup + SYSCALL_PROBE) == "ENOSYS"


async def test_terminal_injection_ioctls_fail_with_eperm(session: Session) -> None:
    """TIOCSTI and TIOCLINUX are refused by the filter (without it: ENOTTY on /dev/null)."""
    found = await value(
        session,
        "import ctypes, errno\n"
        + "libc = ctypes.CDLL(None, use_errno=True)\n"
        + "def ioctl(req):\n"
        + "    c = ctypes.c_char(b'x')\n"
        + "    r = libc.ioctl(0, ctypes.c_ulong(req), ctypes.byref(c))\n"
        + "    return 'ok' if r != -1 else errno.errorcode[ctypes.get_errno()]\n"
        + f"ioctl({TIOCSTI}), ioctl({TIOCLINUX})",
    )
    assert list(found) == ["EPERM", "EPERM"]


async def test_every_denylisted_syscall_fails_with_eperm(session: Session) -> None:
    """The whole denylist in seccomp.py, called with all-zero arguments, answers EPERM."""
    resolved = {name: int(sc.resolve_syscall(sc.Arch.NATIVE, name)) for name in DENIED_SYSCALLS}
    numbers = {name: nr for name, nr in resolved.items() if nr >= 0}
    found = await value(
        session,
        "import ctypes, errno\n"
        + "libc = ctypes.CDLL(None, use_errno=True)\n"
        + "libc.syscall.restype = ctypes.c_long\n"
        + "def call(nr):\n"
        + "    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(0)] * 6)\n"
        + "    return 'ok' if r != -1 else errno.errorcode.get(ctypes.get_errno(), '?')\n"
        + f"{{name: call(nr) for name, nr in {numbers!r}.items()}}",
    )
    assert found == dict.fromkeys(numbers, "EPERM")


# -- environment and descriptors ----------------------------------------------------------------


async def test_server_environment_is_not_visible(session: Session) -> None:
    """The session's environment holds only the documented keys: nothing of the server's (or
    this test process's) variables, neither in os.environ nor in the process's initial
    environment block, nor in a subprocess."""
    assert os.environ[SECRET_NAME] == SECRET_VALUE
    env, initial = await value(
        session,
        "import os\n"
        + "initial = open('/proc/self/environ', 'rb').read().decode(errors='replace')\n"
        + "dict(os.environ), initial",
    )
    shell = await session.run_shell("env")
    assert shell.exit_code == 0
    shell_keys = {line.split("=", 1)[0] for line in shell.stdout.splitlines() if "=" in line}
    initial_keys = {item.split("=", 1)[0] for item in initial.split("\0") if item}
    for keys in (set(env), initial_keys, shell_keys - {"PWD", "SHLVL", "_"}):
        undocumented = {k for k in keys if not _env_key_documented(k)}
        assert not undocumented, undocumented
    blob = repr(env) + initial + shell.stdout
    assert SECRET_VALUE not in blob and SECRET_NAME not in blob
    for key in os.environ:
        if any(word in key.upper() for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
            assert key not in blob, key


async def test_standard_fds_are_not_host_files_and_nothing_is_inherited(session: Session) -> None:
    """fds 0-2 are /dev/null and the kernel's own capture pipes (never a host log file); the
    only other descriptors are those pipes and the single session socket."""
    fds = await value(
        session,
        "import os\n"
        + "fds = {}\n"
        + "for fd in os.listdir('/proc/self/fd'):\n"
        + "    try:\n"
        + "        fds[int(fd)] = os.readlink(f'/proc/self/fd/{fd}')\n"
        + "    except OSError:\n"
        + "        pass  # the descriptor listdir itself used\n"
        + "fds",
    )
    assert fds[0] == "/dev/null"
    assert fds[1].startswith("pipe:") and fds[2].startswith("pipe:")
    for fd, target in fds.items():
        assert target == "/dev/null" or target.split(":")[0] in ("pipe", "socket", "anon_inode"), (
            fd,
            target,
        )
    assert sum(t.startswith("socket:") for t in fds.values()) == 1, fds
