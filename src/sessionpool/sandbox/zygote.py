"""The zygote: a preloaded interpreter that forks one child per session.

Started by the host with exec and a scrubbed environment (it never holds the server's secrets),
with the runtime's interpreter (``launch`` sets up its neutral paths), it imports the template's
modules, builds the IPython shell, warms up, makes its objects immortal where the interpreter has
immortal objects (``immortalize``) and freezes the GC, so pages stay shared after fork.
Then it serves requests on a SOCK_SEQPACKET control socket (its fd number is argv[1]; the first
message from the host is the configuration, with the host-built seccomp filter). With
``"exec": true`` in the configuration it preloads nothing: each child builds its jail and execs
the spawn request's ``exec`` argv (another language's kernel), the session socket's fd appended.
``"memory_merge"`` (the pool's setting) marks its memory for kernel samepage merging before it
serves (``merge_memory``); a pool that does not merge has its heap and arenas backed by huge
pages instead (``collapse_huge_pages``), which makes each fork and each session's exit cheaper.

    host -> zygote   {"op": "spawn", "req": n, "jail": {...JailSpec fields...} | null,
                      "workspace": path, "env": {...}, "exec": [argv] | null}
                     + fds under the jail: [the workspace's detached mount, then on
                       cgroup v1 the session's groups' tasks files, open for writing]
    zygote -> host   {"op": "spawned", "req": n, "pid": pid}   + fds [session socket, pidfd]
                     {"op": "spawn-failed", "req": n, "error": "..."}
                     {"op": "exited", "pid": pid, "status": code or -signal}
    host -> zygote   {"op": "retire"}   fork no more; exit once every child has exited

Each child becomes pid 1 of a new pid namespace with a single fork: the zygote unshares
CLONE_NEWPID, forks, then setns()es back to its own pid namespace.

The zygote forks one child ahead of demand (the "embryo", as Android's zygote keeps
unspecialized app processes): it builds the part of the jail no request changes
(``jail.prepare``: its mount namespace and its root's skeleton, which the host sends in the
configuration, its network namespace, and the pivot into that root), then waits, running
nothing else, for the next spawn request (and its fds) on a socket, then builds the rest of
that session's jail. Forking a zygote that holds ~90 MB of
anonymous memory costs milliseconds of page-table copying; this way a spawn does not wait for
it. The next embryo is forked as soon as the spawn is answered, and builds its part of the jail
once the session just spawned has had the CPU to start (``EMBRYO_PREPARE_DELAY_MS``) or at
once when a request comes first; a request that finds no embryo forks for itself.
"""

from __future__ import annotations

import base64
import errno
import gc
import importlib
import json
import os
import select
import selectors
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

from sessionpool import protocol

MAX_CONTROL_MESSAGE = 1 << 20
#: descriptors a spawn request may carry: the workspace and up to three cgroup files, with room
MAX_REQUEST_FDS = 8


def _send(ctl: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(ctl, [data], fds)
    else:
        ctl.send(data)


#: how long the child forked ahead waits for a request before it runs the warm-up cell: the
#: session spawned just before it is still starting (its jail, its first cells), and the two
#: would share the CPU. A request within the delay is served at once, without the warm-up.
#: Probes of 100 sequential new identifiers from a warm pool: p99 3.7-4.2 ms with the delay,
#: 5.5-7.3 ms warming up at once; on demand p50 10.6-10.7 ms against 10.7-11.7
EMBRYO_WARMUP_DELAY_MS = 20
#: how long the child forked ahead waits before it builds the shared part of its jail
#: (``jail.prepare``, milliseconds of CPU), unless a request arrives first: the session
#: spawned just before it is building the rest of its own jail and starting, and would share
#: the CPU with it. A request that arrives meanwhile is prepared for at once, as without the delay
EMBRYO_PREPARE_DELAY_MS = 15


def _readable(sock: socket.socket, timeout_ms: int) -> bool:
    """Whether ``sock`` has something to read within ``timeout_ms``."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(timeout_ms))


def _close_all(fds: list[int]) -> None:
    """Close ``fds`` and empty the list, so that closing it again closes nothing."""
    while fds:
        os.close(fds.pop())


class Zygote:
    def __init__(self, ctl: socket.socket, config: dict[str, Any]) -> None:
        from sessionpool.sandbox import linux

        self.linux = linux
        self.ctl = ctl
        self.jail = bool(config.get("jail"))
        self.preloaded: list[str] = []
        self.failed: dict[str, str] = {}
        #: None: each child execs its kernel (another language's), so nothing is preloaded
        self.kernel: Any = None
        if not config.get("exec"):
            from sessionpool.kernel.main import Kernel
            from sessionpool.kernel.shell import SessionShell

            for name in config.get("preload", []):
                try:
                    importlib.import_module(name)
                    self.preloaded.append(name)
                except Exception as exc:  # a missing module must not stop the pool; report it
                    self.failed[name] = repr(exc)
            shell = SessionShell()
            shell.enable_matplotlib()
            shell.warm_up()
            self.kernel = Kernel(shell)
        #: built by the host (its libseccomp binding is not the runtime's business)
        self.seccomp_bpf = base64.b64decode(config.get("seccomp_bpf", ""))
        self.pidns_fd = -1
        #: the ``jail`` fields every spawn request of this zygote shares: the embryo builds
        #: that much of its jail before its request arrives (``jail.prepare``)
        self.skeleton: dict[str, Any] = config.get("jail_skeleton") or {}
        if self.jail:
            from sessionpool.sandbox import jail

            self.jail_module: Any = jail  # imported once, not per fork
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.cap_last = linux.cap_last_cap()
        self.children: set[int] = set()
        self.retired = False
        #: the child forked ahead of demand: (pid, its session socket, the socket its spawn
        #: request arrives on)
        self.embryo: tuple[int, socket.socket, socket.socket] | None = None
        # here, not in each child: a child that popped them copied 1.7 MB of shared pages
        _hide_kernel_modules()
        # Every allocation from here on would be copied into each child on first write; the
        # freeze keeps the collector from touching (and so copying) the preloaded objects, and
        # on a CPython with immortal objects, reference counting from writing to them.
        gc.collect()
        immortalize()
        gc.freeze()
        merge = config.get("memory_merge", "off")
        if merge == "off":
            collapse_huge_pages(linux)
        # last, so that "zygote" covers every mapping the preloading made
        merge_memory(linux, merge)

    def serve(self) -> NoReturn:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        sel = selectors.DefaultSelector()
        sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        sel.register(rfd, selectors.EVENT_READ, "sig")
        _send(
            self.ctl,
            {
                "op": "ready",
                "pid": os.getpid(),
                "preloaded": self.preloaded,
                "failed": self.failed,
            },
        )
        self._prefork()
        while True:
            for key, _ in sel.select():
                if key.data == "sig":
                    try:
                        os.read(rfd, 4096)
                    except BlockingIOError:
                        pass
                    self._reap()
                else:
                    try:
                        data, fds, _, _ = socket.recv_fds(
                            self.ctl, MAX_CONTROL_MESSAGE, MAX_REQUEST_FDS
                        )
                    except OSError:
                        data, fds = b"", []
                    if not data:
                        # the host is gone: children notice on their own sockets
                        os._exit(0)
                    try:
                        self._handle(json.loads(data), fds)
                    finally:
                        _close_all(fds)  # what _handle did not close already
            if self.retired:
                self._drop_embryo()
            if self.retired and not self.children:
                os._exit(0)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            if self.embryo is not None and self.embryo[0] == pid:
                self._drop_embryo()
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            try:
                _send(self.ctl, {"op": "exited", "pid": pid, "status": code})
            except OSError:
                pass

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        if op == "retire":
            self.retired = True
        elif op == "spawn" and self.retired:
            # a request queued before the retirement: say so, the host asks the new zygote
            _send(self.ctl, {"op": "spawn-failed", "req": msg.get("req"), "retired": True})
        elif op == "spawn":
            try:
                pid, parent_end = self._spawn(msg, fds)
            except Exception:
                _close_all(fds)
                _send(
                    self.ctl,
                    {
                        "op": "spawn-failed",
                        "req": msg.get("req"),
                        "error": traceback.format_exc(limit=4),
                    },
                )
                return
            # the child has its own copies: the next embryo (below) must not inherit them
            _close_all(fds)
            pidfd = os.pidfd_open(pid)
            try:
                _send(
                    self.ctl,
                    {"op": "spawned", "req": msg.get("req"), "pid": pid},
                    [parent_end.fileno(), pidfd],
                )
            finally:
                parent_end.close()
                os.close(pidfd)
            # The next request's child. Forked now it competes for the CPU with this session's
            # jail, yet measured faster than forking it 30 ms later: requests that close together
            # found no child ready and forked for themselves.
            self._prefork()

    def _spawn(self, msg: dict[str, Any], fds: list[int]) -> tuple[int, socket.socket]:
        embryo, self.embryo = self.embryo, None
        jail = msg.get("jail")
        prepared = embryo is not None and bool(self.skeleton) and bool(jail)
        if prepared and not self.jail_module.same_skeleton(self.skeleton, jail):
            # never expected (the host builds both alike): a fresh child builds it all
            self.embryo = embryo
            self._drop_embryo()
            embryo = None
        if embryo is not None:
            pid, parent_end, request = embryo
            try:
                # one datagram, well under the socket's buffer: sent at once, never blocks
                _send(request, msg, fds)
                return pid, parent_end
            except OSError:  # it died meanwhile (reaped later): fork one now instead
                parent_end.close()
            finally:
                request.close()
        return self._fork(lambda sock: self._child(msg, sock, fds))

    def _prefork(self) -> None:
        """Fork the embryo for the next request, unless there is one or this zygote retired."""
        if self.embryo is not None or self.retired:
            return
        r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid, parent_end = self._fork(lambda sock: self._embryo(r, w, sock))
        except Exception:  # no embryo: the next request forks for itself
            w.close()
            return
        finally:
            r.close()
        self.embryo = (pid, parent_end, w)

    def _drop_embryo(self) -> None:
        """The embryo reads EOF and exits (its exit is reaped like any child's)."""
        embryo, self.embryo = self.embryo, None
        if embryo is not None:
            embryo[1].close()
            embryo[2].close()

    def _embryo(self, r: socket.socket, w: socket.socket, sock: socket.socket) -> NoReturn:
        """The child forked ahead: it holds nothing of the zygote's but what a child holds at
        fork, runs nothing, and waits for its spawn request (EOF without one: exit)."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.ctl.close()
            w.close()
            prepared = False
            if _readable(r, EMBRYO_PREPARE_DELAY_MS) and not r.recv(1, socket.MSG_PEEK):
                os._exit(0)  # dropped before it was needed (its zygote retired): build nothing
            if self.jail and self.skeleton:
                # a separate spec: prepare() adds the bind of /bin etc. to its ro_binds
                skeleton = {**self.skeleton, "ro_binds": list(self.skeleton["ro_binds"])}
                spec = self.jail_module.JailSpec(uid=-1, **skeleton)
                self.jail_module.prepare(spec, {r.fileno(), sock.fileno()})
                prepared = True
            if self.kernel is not None and not _readable(r, EMBRYO_WARMUP_DELAY_MS):
                # a first run's copy-on-write faults, taken before any request waits on them
                self.kernel.warm_up()
            data, fds, _, _ = socket.recv_fds(r, MAX_CONTROL_MESSAGE, MAX_REQUEST_FDS)
            r.close()
            if not data:
                os._exit(0)
            msg = json.loads(data)
        except BaseException:
            os._exit(70)
        self._child(msg, sock, fds, prepared)

    def _fork(self, child: Any) -> tuple[int, socket.socket]:
        """Fork ``child(session socket)`` as pid 1 of a new pid namespace (under the jail)."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.jail:
            self.linux.unshare(self.linux.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            if self.jail:
                self.linux.setns(self.pidns_fd, self.linux.CLONE_NEWPID)
            parent_end.close()
            child_end.close()
            raise
        if pid == 0:
            parent_end.close()
            child(child_end)
        if self.jail:
            # back to our own pid namespace for children, or the next fork would join this one
            self.linux.setns(self.pidns_fd, self.linux.CLONE_NEWPID)
        child_end.close()
        self.children.add(pid)
        return pid, parent_end

    def _child(
        self, msg: dict[str, Any], sock: socket.socket, fds: list[int], prepared: bool = False
    ) -> NoReturn:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.ctl.close()
            # Sessions are the first the OOM killer ends (the zygote and the server the last).
            # Written as host root before the jail: with CAP_SYS_RESOURCE 1000 is also the
            # kernel's floor for it, and the jail's /proc is read-only besides.
            self.linux.set_oom_score_adj(self.linux.OOM_SCORE_ADJ_MAX)
            # the mount namespace the jail left: closed once ready is sent (close-on-exec, so
            # an exec'd kernel drops it as it starts)
            left = -1
            if self.jail:
                spec = self.jail_module.JailSpec(**msg["jail"])
                spec.seccomp_bpf = self.seccomp_bpf
                spec.cap_last = self.cap_last
                spec.env = msg["env"]
                spec.workspace_fd = fds[0] if fds else -1
                spec.cgroup_fds = fds[1:]
                left = self.jail_module.enter(spec, sock.fileno(), prepared)
            else:
                self._enter_unsafe(msg, sock.fileno())
            argv = msg.get("exec")
            if argv:
                # another language's kernel: it inherits the session socket, its fd last in argv
                os.set_inheritable(sock.fileno(), True)
                os.execve(argv[0], [*argv, str(sock.fileno())], os.environ)
        except BaseException:
            try:
                err = traceback.format_exc(limit=6)
                protocol.send_message(sock, {"op": "failed", "error": err})
            finally:
                os._exit(70)
        self.kernel.serve(sock, left)
        os._exit(0)  # serve never returns

    def _enter_unsafe(self, msg: dict[str, Any], keep_fd: int) -> None:
        """Development backend: a plain forked process, no isolation at all."""
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        self.linux.close_fds_except({0, 1, 2, keep_fd})
        os.chdir(msg["workspace"])
        os.environ.clear()
        os.environ.update(msg["env"])


#: mappings the kernel provides (madvise refuses them or they hold no anonymous pages)
KERNEL_MAPPINGS = ("[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]")


def immortalize() -> int:
    """Make every object this process holds immortal, where the interpreter has immortal
    objects (CPython 3.12 and later); how many objects changed.

    Reference counting writes to every object a cell touches, a function it calls, a module
    it reads, a type it looks up, and each write copies a 4 KiB page a session shared with the
    zygote. The interpreter never writes the count of an immortal object (PEP 683), so those
    pages stay shared. An immortal object is never freed, which costs nothing here: the
    zygote's objects live as long as it does, and a session's would be freed at its exit.
    The counts are written with the representation the interpreter gives ``None``."""
    if sys.version_info < (3, 12) or sys.byteorder != "little":
        return 0  # no immortal objects (every Py_INCREF writes), or a layout not handled here
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return 0  # the free-threaded build counts references in two fields
    try:
        import ctypes
    except ImportError:  # an interpreter built without it: its sessions copy, as on 3.11
        return 0

    # every object's first word is its reference count; an object is immortal when the count's
    # low 32 bits, as a signed number, are negative. Indexing one pointer reads and writes any
    # address without making an object per address.
    words = ctypes.cast(ctypes.c_void_p(8), ctypes.POINTER(ctypes.c_ssize_t))
    immortal = words[(id(None) - 8) >> 3]
    # the collector's objects, then layer by layer what they hold that it does not track
    # (strings, numbers); an object already immortal was seen before, or was from the start
    layer = gc.get_objects()
    changed = 0
    while layer:
        fresh = []
        for obj in layer:
            word = (id(obj) - 8) >> 3
            if not words[word] & 0x80000000:
                words[word] = immortal
                fresh.append(obj)
        changed += len(fresh)
        layer = [r for r in gc.get_referents(*fresh) if not gc.is_tracked(r)]
    return changed


def collapse_huge_pages(linux: Any) -> int:
    """Back the heap and the interpreter's arenas with transparent huge pages where a whole
    aligned 2 MiB of them lies in one mapping; how many bytes now are.

    Every fork copies the page table entries of the zygote's anonymous memory, one per 4 KiB
    page (~90 MB of it), and every session's exit frees them: a huge page is one entry. A
    session's write to a page shared with the zygote still copies that 4 KiB page only (the
    kernel splits the huge page's mapping in that process). Not for a merging pool: ksmd
    merges 4 KiB pages and would split them again. Best effort: THP ``never``, or memory too
    fragmented for a huge page, leaves the pages as they are. Paired runs of new identifiers
    (``benchmarks/paired.py --new-identifier``): the sandbox's CPU per new session (fork,
    jail, warm-up, first cell, exit: 14-20 ms) 7-11 % lower, its latency unchanged."""
    collapsed = 0
    with open("/proc/self/maps") as f:
        spans = [line.split() for line in f]
    for fields in spans:
        name = fields[5] if len(fields) > 5 else ""
        if fields[1][1] != "w" or fields[1][3] != "p" or name not in ("", "[heap]"):
            continue  # the heap and anonymous mappings only (the arenas, large buffers)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        first = -(-start // linux.HUGE_PAGE) * linux.HUGE_PAGE
        last = end // linux.HUGE_PAGE * linux.HUGE_PAGE
        if last <= first:
            continue
        try:
            linux.madvise(first, last - first, linux.MADV_COLLAPSE)
        except OSError:
            continue  # EINVAL (THP never, or a kernel before 6.1), EAGAIN/ENOMEM: no huge page
        collapsed += last - first
    return collapsed


def merge_memory(linux: Any, mode: str) -> int:
    """Apply the pool's ``memory_merge`` to this process before it forks; how many mappings
    were marked (-1: all of them).

    ``zygote``: MADV_MERGEABLE on every private writable mapping present now (the heap, the
    interpreter's arenas, the libraries' data), where a session's copy-on-write copies of
    the zygote's pages appear; the flag is the mapping's, so each child inherits it, while a
    mapping a session makes later is not mergeable. Only these can be private copies: a page
    of a read-only or shared mapping is never copied. ``all``: PR_SET_MEMORY_MERGE, every
    mapping of this process and its children, present and future (user data included).
    """
    if mode == "all":
        linux.prctl(linux.PR_SET_MEMORY_MERGE, 1)
        return -1
    if mode != "zygote":
        return 0
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            perms = fields[1]
            name = fields[5] if len(fields) > 5 else ""
            if perms[1] == "w" and perms[3] == "p" and name not in KERNEL_MAPPINGS:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    for start, end in ranges:
        try:
            linux.madvise(start, end - start, linux.MADV_MERGEABLE)
        except OSError as exc:
            if exc.errno != errno.ENOMEM:  # ENOMEM: unmapped since the read (a freed buffer)
                raise
    return len(ranges)


#: the kernel's own modules, out of sys.modules but still referenced (freeing them would write
#: to pages every session shares with the zygote)
_hidden: list[Any] = []


def _hide_kernel_modules() -> None:
    """Take the kernel's own package out of the sessions' reach: user code finds no
    ``sessionpool`` to import. Everything the kernel needs is imported by now and referenced."""
    lib = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[:] = [p for p in sys.path if p != lib]
    for name in [n for n in sys.modules if n == "sessionpool" or n.startswith("sessionpool.")]:
        _hidden.append(sys.modules.pop(name))


def main() -> NoReturn:
    sys.dont_write_bytecode = True
    from sessionpool.sandbox import linux

    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the server
    ctl = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(ctl.recv(MAX_CONTROL_MESSAGE))
    os.environ.update(config.get("env", {}))  # host paths: not in the exec-time environment
    zygote = Zygote(ctl, config)
    zygote.serve()


if __name__ == "__main__":
    main()
