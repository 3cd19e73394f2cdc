"""Thin ctypes wrappers for the Linux calls Python 3.11's ``os`` module lacks.

unshare/setns arrived in ``os`` only in 3.12; mount, pivot_root, capset, madvise on any range
and the prctl calls the jail needs are not there at all. Every wrapper raises ``OSError`` with
the real errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# clone/unshare flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
#: kernel samepage merging for every mapping of the process, present and future (Linux 6.4);
#: kept across fork and exec
PR_SET_MEMORY_MERGE = 67
PR_GET_MEMORY_MERGE = 68
#: madvise: let KSM merge this mapping's pages (a flag of the mapping, kept across fork)
MADV_MERGEABLE = 12
#: madvise: make this range's pages transparent huge pages now, whatever the THP mode short of
#: ``never`` (Linux 6.1)
MADV_COLLAPSE = 25
#: the x86-64 PMD size: the span of one transparent huge page
HUGE_PAGE = 2 << 20
SECCOMP_MODE_FILTER = 2

# securebits: root gets no implicit capabilities, and the setting cannot be undone
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7
SECURE_ALL_LOCKED = (
    SECBIT_NOROOT
    | SECBIT_NOROOT_LOCKED
    | SECBIT_NO_SETUID_FIXUP
    | SECBIT_NO_SETUID_FIXUP_LOCKED
    | SECBIT_KEEP_CAPS_LOCKED
    | SECBIT_NO_CAP_AMBIENT_RAISE
    | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
)

SYS_pivot_root = 155
SYS_capset = 126
SYS_setns = 308
#: the new mount API's numbers are the same on every architecture (Linux 5.2)
SYS_open_tree = 428
SYS_move_mount = 429


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)))


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)))


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            ctypes.c_ulong(flags),
            data.encode() if data is not None else None,
        )
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)))


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_pivot_root, new_root.encode(), put_old.encode()))


#: mountinfo writes a space, tab, newline or backslash in a path as an octal escape
_OCTAL = re.compile(r"\\([0-7]{3})")


def mount_points() -> list[str]:
    """This mount namespace's mount points, in ``/proc/self/mountinfo``'s order (the oldest
    first), their octal escapes decoded."""
    with open("/proc/self/mountinfo") as f:
        return [_OCTAL.sub(lambda m: chr(int(m[1], 8)), line.split()[4]) for line in f]


def open_tree_clone(path: str) -> int:
    """An fd holding a detached copy of the mount at ``path`` (``open_tree(OPEN_TREE_CLONE)``):
    it is in no mount namespace until ``move_mount`` attaches it, and is unmounted when its
    last fd closes unattached. Close-on-exec."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC
    return _check(
        _libc.syscall(
            ctypes.c_long(SYS_open_tree),
            ctypes.c_long(AT_FDCWD),
            path.encode(),
            ctypes.c_long(flags),
        )
    )


def move_mount(fd: int, target: str) -> None:
    """Attach the detached mount ``fd`` (``open_tree_clone``) at ``target`` in this process's
    mount namespace."""
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_move_mount),
            ctypes.c_long(fd),
            b"",
            ctypes.c_long(AT_FDCWD),
            target.encode(),
            ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH),
        )
    )


#: prctl(2) with its argument types declared once, so a call converts plain ints in C: the
#: capability drop makes 40-odd calls while a session's jail is built, on the allocation's
#: path (a function object of its own: ``_libc.prctl`` keeps ctypes' default conversions)
_prctl = _libc["prctl"]
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_prctl(option, arg2, arg3, arg4, arg5))


def madvise(address: int, length: int, advice: int) -> None:
    """madvise(2) on any address range (``mmap.madvise`` only reaches mmap objects' own)."""
    _check(_libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), ctypes.c_int(advice)))


def drop_all_capabilities(cap_last: int) -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets, and lock root out.

    After this even uid 0 inside the user namespace gains nothing on execve.
    """
    for cap in range(cap_last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    prctl(PR_SET_SECUREBITS, SECURE_ALL_LOCKED)
    # capset v3: header {version, pid}, two data structs {effective, permitted, inheritable}
    header = struct.pack("Ii", 0x20080522, 0)
    data = bytes(24)
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(data, len(data))
    _check(_libc.syscall(SYS_capset, hbuf, dbuf))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load_seccomp_bpf(program: bytes) -> None:
    """Install a precompiled classic-BPF seccomp filter (needs no_new_privs first)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def close_fds_except(keep: set[int]) -> None:
    """Close every descriptor not in ``keep`` (a session must inherit nothing from its parent)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(n) for n in range(3, 1024)]
    for name in names:
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


#: the OOM killer's highest preference: a session is the first process it ends
OOM_SCORE_ADJ_MAX = 1000
#: the server, and the zygotes it starts (they inherit it), are among the last it picks; not
#: -1000 (never), so that a server that is itself the cause can still be stopped
SERVER_OOM_SCORE_ADJ = -900


def set_oom_score_adj(value: int, pid: str = "self") -> None:
    """Set how eagerly the OOM killer picks this process (-1000 never, 1000 first). Set with
    CAP_SYS_RESOURCE, the value is also the floor the process may later lower itself to."""
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(str(value))


def get_oom_score_adj(pid: str = "self") -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def lower_oom_score_adj(value: int) -> int | None:
    """Lower our own oom_score_adj to ``value`` (never raise it: an operator may have set it
    lower); the previous value if it changed, to restore later, else None. OSError (EACCES)
    without CAP_SYS_RESOURCE."""
    before = get_oom_score_adj()
    if before <= value:
        return None
    set_oom_score_adj(value)
    return before


CAP_SYS_RESOURCE = 24


def has_capability(cap: int) -> bool:
    """Whether this process holds ``cap`` in its effective set (some containers drop
    CAP_SYS_RESOURCE even for root)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return False
