"""Building the jail inside a freshly forked child, before any user code runs.

The child arrives here as host root and pid 1 of a new pid namespace (the zygote unshared
CLONE_NEWPID before forking). In order:

1. setsid, fds 0-2 on /dev/null, every other fd closed except the session socket (and what
   came with the spawn request until it is used);
2. a private mount namespace; a tmpfs root holding read-only binds of the host's /usr and the
   runtime (/opt/python) and kernel (/opt/sessionpool), a curated /etc, a minimal /dev and
   fresh /proc; the tmpfs root is then made read-only. With a custom image, the image is the
   root instead;
3. a new network namespace with its loopback up;
4. pivot_root into the new root and detach the host's tree;
5. on cgroup v1, into the session's cgroups (the host attaches it on v2), through the groups'
   files the host opened and sent with the request (the host's /sys is gone after step 4);
6. the session's own mounts on the root: size-capped /tmp and /dev/shm, and its workspace on
   /mnt/data (a detached mount the host passed as an fd: no other session's workspace is ever
   in the namespace the jail is copied from);
7. drop to the session's unique host uid, then unshare user, mount, ipc, uts and cgroup
   namespaces, mapping root inside to that uid only; /proc read-only; hostname;
8. rlimits; every capability dropped and root locked out (securebits); no_new_privs; seccomp.

Steps 1-4 are the same for every session of a zygote: the zygote's embryo does them before its
request arrives (``prepare``), off the allocation's path; a child forked for a request does
them after step 5. The network namespace is owned by the host's user namespace, not the
session's: no process of the session holds a capability in it anyway (step 8), and the
loopback is brought up by host root before the drop.

Any failure raises; the caller reports it on the socket and exits, so a half-built jail never
runs code. ``JailSpec`` is plain data so the zygote can build it from a JSON request.
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket
import struct
from dataclasses import dataclass, field

from sessionpool.sandbox import linux

DEV_NODES = ("null", "zero", "full", "random", "urandom")

_PASSWD = "root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"
_HOSTS = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_NSSWITCH = "passwd: files\ngroup: files\nhosts: files\n"

#: host files under /etc that are safe and that programs commonly need
ETC_BINDS = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "mime.types", "ssl")


@dataclass
class JailSpec:
    uid: int  # the session's unique host uid (root inside maps to it)
    root: str  # an empty directory to build the new root on
    ro_binds: list[str]  # paths bound read-only at the same path inside
    #: a custom image's root filesystem (read-only) to use as the session's root instead of a
    #: tmpfs with the host's /usr; it has every mount point the jail needs (``images``)
    image: str = ""
    hostname: str = "sandbox"
    tmp_bytes: int = 256 * 1024 * 1024
    open_files: int = 1024
    file_bytes: int = 1 << 30
    nproc: int = 256
    seccomp_bpf: bytes = b""
    cap_last: int = 40
    env: dict[str, str] = field(default_factory=dict)
    #: cgroup v1 ``tasks`` files of the session's groups, opened for writing by the host and
    #: passed with the spawn request: the child moves itself into them while it is one thread
    #: and host root (``cgroups.Cgroups.self_attach_files``), then closes them
    cgroup_fds: list[int] = field(default_factory=list)
    #: the session's workspace as a detached mount (``linux.open_tree_clone``, made by the host
    #: and passed with the spawn request), attached at /mnt/data and then closed. Not a bind of
    #: the host path: that needs the host's workspace mounts in the zygote's namespace, and every
    #: child's namespace would copy all of them (``launch``)
    workspace_fd: int = -1


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _bind_ro(src: str, dst: str) -> None:
    linux.mount(src, dst, None, linux.MS_BIND | linux.MS_REC)
    linux.mount(
        None,
        dst,
        None,
        linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
    )


def _mkpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


def _build_skeleton(spec: JailSpec) -> str:
    """Build what every session of the zygote has in its root under ``spec.root``: all but
    its sized /tmp and /dev/shm and its workspace (``_finish_root``). Returns the directory
    to pivot into."""
    root = spec.root
    nosuid_nodev = linux.MS_NOSUID | linux.MS_NODEV
    linux.mount("tmpfs", root, "tmpfs", nosuid_nodev, "size=4m,nr_inodes=4096,mode=0755")
    if spec.image:
        # the image is the root; the tmpfs below it only holds the generated /etc files
        etc = f"{root}/.etc"
        new = f"{root}/image"
        os.makedirs(new)
        _bind_ro(spec.image, new)
    else:
        etc = f"{root}/etc"
        new = root
        # merged-/usr hosts have /bin -> usr/bin etc.; mirror links, bind real directories
        for top in ("bin", "sbin", "lib", "lib64", "lib32"):
            host = "/" + top
            if os.path.islink(host):
                os.symlink(os.readlink(host), f"{root}/{top}")
            elif os.path.isdir(host) and host not in spec.ro_binds:
                spec.ro_binds.append(host)
    # /etc: generated identity files plus a few harmless host files; never shadow, never keys
    os.makedirs(etc, exist_ok=True)
    generated = {
        "passwd": _PASSWD,
        "group": _GROUP,
        "hosts": _HOSTS,
        "hostname": spec.hostname + "\n",
        "nsswitch.conf": _NSSWITCH,
        "resolv.conf": "",
    }
    for name, text in generated.items():
        _write(f"{etc}/{name}", text)
    # mount points of the session's own /tmp and /dev/shm (``_finish_root``); no bind is
    # below them
    dev = f"{new}/dev"
    if spec.image:
        linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "size=64k,mode=0755")
    os.makedirs(f"{dev}/shm", exist_ok=True)
    os.makedirs(f"{new}/tmp", exist_ok=True)
    for src in sorted(spec.ro_binds):
        if not os.path.exists(src):
            continue
        dst = new + src
        if not spec.image:
            _mkpoint(dst, os.path.isdir(src))
        _bind_ro(src, dst)
    if spec.image:
        for name in generated:
            _bind_ro(f"{etc}/{name}", f"{new}/etc/{name}")
    else:
        # the host's harmless /etc files (an image brings its own)
        if os.path.islink("/etc/localtime"):
            os.symlink(os.readlink("/etc/localtime"), f"{etc}/localtime")
        for name in ETC_BINDS:
            src = f"/etc/{name}"
            if os.path.exists(src):
                _mkpoint(f"{etc}/{name}", os.path.isdir(src))
                _bind_ro(src, f"{etc}/{name}")
    # /dev: a handful of harmless nodes bound from the host
    for node in DEV_NODES:
        _mkpoint(f"{dev}/{node}", False)
        linux.mount(f"/dev/{node}", f"{dev}/{node}", None, linux.MS_BIND)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
    os.symlink("/proc/self/fd", f"{dev}/fd")
    # terminals (the process service's PTYs): a private devpts instance, at most 64 of them;
    # the host's terminals are not in it, and TIOCSTI is refused by the seccomp filter
    os.makedirs(f"{dev}/pts", exist_ok=True)
    linux.mount(
        "devpts",
        f"{dev}/pts",
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,max=64",
    )
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    if spec.image:
        linux.mount(None, dev, None, linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID)
    # the session's workspace goes here
    os.makedirs(f"{new}/mnt/data", exist_ok=True)
    if not spec.image:
        # E2B's home (the SDKs' default directory) is the workspace
        os.makedirs(f"{new}/home", exist_ok=True)
        os.symlink("/mnt/data", f"{new}/home/user")
    # /proc of the new pid namespace: the session sees only its own processes
    os.makedirs(f"{new}/proc", exist_ok=True)
    linux.mount("proc", f"{new}/proc", "proc", nosuid_nodev | linux.MS_NOEXEC)
    # the skeleton is complete: nothing in it may change from now on (mounts on it may)
    linux.mount(None, root, None, linux.MS_REMOUNT | linux.MS_RDONLY | nosuid_nodev)
    return new


def _finish_root(spec: JailSpec) -> None:
    """Mount what is the session's own on the skeleton, once it is the root: a sized /tmp and
    /dev/shm, and its workspace on /mnt/data."""
    nosuid_nodev = linux.MS_NOSUID | linux.MS_NODEV
    tmpfs_opts = f"size={spec.tmp_bytes},mode=1777"
    linux.mount("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, tmpfs_opts)
    linux.mount("tmpfs", "/tmp", "tmpfs", nosuid_nodev, tmpfs_opts)
    if spec.workspace_fd < 0:
        raise ValueError("no workspace mount came with the spawn request")
    linux.move_mount(spec.workspace_fd, "/mnt/data")
    os.close(spec.workspace_fd)
    spec.workspace_fd = -1
    linux.mount(None, "/mnt/data", None, linux.MS_REMOUNT | linux.MS_BIND | nosuid_nodev)


def _loopback_up() -> None:
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def prepare(spec: JailSpec, keep: set[int]) -> None:
    """The part of the jail that no session's request changes (steps 1-4): a new session, fds
    0-2 on /dev/null and every other fd but ``keep`` closed, a private mount namespace with the
    root's skeleton (``_build_skeleton``), a network namespace with its loopback up, and the
    pivot into the new root. The embryo does it before its request arrives (``zygote``), off
    the allocation's path."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    linux.close_fds_except({0, 1, 2, *keep})
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    new_root = _build_skeleton(spec)
    linux.unshare(linux.CLONE_NEWNET)
    _loopback_up()
    # Pivot as host root, before the user namespace: mounts copied into a less privileged
    # namespace are locked, and pivot_root refuses a locked new root.
    linux.mount(new_root, new_root, None, linux.MS_BIND | linux.MS_REC)
    os.chdir(new_root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # the host's tree is gone from this namespace
    os.chdir("/")


def same_skeleton(a: dict[str, object], b: dict[str, object]) -> bool:
    """Whether two spawn requests' ``jail`` fields build the same skeleton (``prepare``)."""
    return all(a.get(k) == b.get(k) for k in ("root", "ro_binds", "image", "hostname"))


def enter(spec: JailSpec, keep_fd: int, prepared: bool = False) -> int:
    """Turn the calling process into a jailed session. Raises on any failure. ``prepared``:
    ``prepare`` ran in this process for a spec with the same skeleton (the embryo's).

    Returns a descriptor (close-on-exec) of the mount namespace the jail left behind, which
    the caller closes once it has told the host it is ready, before any request is read. It is
    that namespace's last reference: dropping it unmounts its tree and waits for an RCU grace
    period (0.2-0.9 ms measured), a wait the host's handling of the ready message then
    overlaps instead of following. The namespace holds the jail's own tree only (the skeleton
    and this session's mounts; the host's tree was detached from it), and nothing in the
    session can use the descriptor: it holds no capability, and seccomp refuses setns."""
    # Into the session's cgroups before the rest of its jail, so its pages and processes are
    # charged there (a prepared skeleton's few mounts were charged where its embryo was
    # forked, as that fork's page tables were). "0" moves the calling thread only, which skips
    # the global lock a whole-process move takes (and its RCU grace period); a forked child is
    # one thread.
    for fd in spec.cgroup_fds:
        os.write(fd, b"0")
        os.close(fd)
    spec.cgroup_fds = []
    if prepared:
        linux.close_fds_except({0, 1, 2, keep_fd, spec.workspace_fd})
    else:
        prepare(spec, {keep_fd, spec.workspace_fd})
    _finish_root(spec)

    uid = spec.uid
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    linux.prctl(linux.PR_SET_DUMPABLE, 1)  # so we may write our own uid_map
    left = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    linux.unshare(
        linux.CLONE_NEWUSER
        | linux.CLONE_NEWNS
        | linux.CLONE_NEWIPC
        | linux.CLONE_NEWUTS
        | linux.CLONE_NEWCGROUP
    )
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1\n")
    _write("/proc/self/gid_map", f"0 {uid} 1\n")
    # /proc is read-only from here on: nothing in it is the session's to write, and its own
    # oom_score_adj least of all (where the kernel kept no floor, it could lower it and have
    # the OOM killer end its neighbours first)
    linux.mount(
        None,
        "/proc",
        None,
        linux.MS_REMOUNT
        | linux.MS_BIND
        | linux.MS_RDONLY
        | linux.MS_NOSUID
        | linux.MS_NODEV
        | linux.MS_NOEXEC,
    )

    socket.sethostname(spec.hostname)

    resource.setrlimit(resource.RLIMIT_NOFILE, (spec.open_files, spec.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec.file_bytes, spec.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (spec.nproc, spec.nproc))

    linux.drop_all_capabilities(spec.cap_last)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if spec.seccomp_bpf:
        linux.load_seccomp_bpf(spec.seccomp_bpf)

    os.chdir("/mnt/data")
    os.environ.clear()
    os.environ.update(spec.env)
    os.umask(0o022)
    return left
