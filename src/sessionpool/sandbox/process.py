"""Host-side handles: the zygote process, and each kernel process it forked.

Everything read from a kernel is untrusted: sizes are checked before buffering, JSON only.
Signals go through pidfds, so a recycled pid can never be hit by mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
from typing import Any

from sessionpool import errors, protocol
from sessionpool.sandbox.backend import KernelDied

log = logging.getLogger("sessionpool.sandbox")

ZYGOTE_START_TIMEOUT = 120.0
#: fork requests sent to one zygote before earlier ones are answered (its queue holds 10)
MAX_SPAWNS_IN_FLIGHT = 4


class ZygoteRetired(Exception):
    """The zygote stopped forking before this request's turn came: ask its successor."""


class KernelProcess:
    """One running kernel (a ``backend.Kernel``): its pid, a pidfd for signals, and the framed
    socket to it."""

    def __init__(
        self, pid: int, pidfd: int, sock: socket.socket, zygote: ZygoteHandle | None = None
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.sock = sock
        #: the zygote that forked it (it exits only after its last child, retired or not)
        self.zygote = zygote
        self.exit_status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, max_header: int, timeout: float) -> None:
        """Attach asyncio streams and wait for the kernel's ``ready`` (or ``failed``)."""
        self.sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.sock, limit=1 << 20)
        header, _ = await asyncio.wait_for(self.read(max_header, 0, max_header), timeout)
        if header.get("op") == "failed":
            raise errors.SandboxError(f"the jail could not be built: {header.get('error')}")
        if header.get("op") != "ready":
            raise protocol.FrameError(f"expected ready, got {header.get('op')!r}")

    async def read(
        self, max_header: int, max_blob: int, max_total: int
    ) -> tuple[protocol.Message, list[bytes]]:
        assert self.reader is not None
        try:
            return await protocol.read_message(self.reader, max_header, max_blob, max_total)
        except (EOFError, ConnectionError) as exc:
            raise KernelDied(str(exc)) from None

    async def send(self, header: protocol.Message) -> None:
        assert self.writer is not None
        try:
            self.writer.write(protocol.encode(header))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise KernelDied(str(exc)) from None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, sig)

    def alive(self) -> bool:
        """True until the process has exited (the pidfd turns readable at exit).

        poll, not select: a server with a few hundred sessions holds pidfds above 1023, which
        select cannot watch (it raised, and every such session looked dead and was replaced).
        """
        if self.pidfd < 0:
            return False
        poller = select.poll()
        try:
            poller.register(self.pidfd, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def outdated(self) -> bool:
        zygote = self.zygote
        return zygote is not None and (zygote.retired or zygote.retiring)

    async def wait_exit(self, timeout: float) -> int | None:
        """Exit status (negative: killed by that signal) once the zygote reports it."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.exit_status), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        """Kill the kernel (its whole pid namespace dies with it) and release descriptors."""
        self.signal(signal.SIGKILL)
        if self.writer is not None:
            self.writer.close()
        else:
            self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        self.pidfd = -1


class ZygoteHandle:
    """The host's end of one zygote: start it, ask for forks, hear about exits."""

    def __init__(self, config: dict[str, Any], env: dict[str, str], command: list[str]) -> None:
        """``command`` starts the zygote; its ``{fd}`` item becomes the control socket's fd."""
        self.config = config
        self.env = env
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: socket.socket | None = None
        self.pid = 0
        self.spawned = 0
        self.live: dict[int, KernelProcess] = {}
        self.preloaded: list[str] = []
        self.failed_modules: dict[str, str] = {}
        self._pending: dict[int, asyncio.Future[tuple[int, socket.socket, int]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._next_req = 0
        self._in_flight = asyncio.Semaphore(MAX_SPAWNS_IN_FLIGHT)
        self.dead = False
        self.retired = False
        #: forks promised to callers of ``ZygoteSet.get`` and not answered yet
        self.claimed = 0
        #: full: retires once the claimed forks are answered (``ZygoteSet.release``)
        self.retiring = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # exec, not fork: the zygote starts from a clean interpreter holding no server state.
        # Its configuration (host paths included) arrives on the socket, not in argv or the
        # environment, which every session inherits in /proc/self/{cmdline,environ}.
        fd = str(theirs.fileno())
        cmd = [fd if part == "{fd}" else part for part in self.command]

        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            close_fds=True,
            pass_fds=(theirs.fileno(),),
            cwd="/",
        )
        theirs.close()
        ours.send(json.dumps(self.config).encode())
        ours.setblocking(False)
        self.ctl = ours
        self.pid = self.proc.pid
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), ZYGOTE_START_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        self.preloaded = list(ready.get("preloaded", []))
        self.failed_modules = dict(ready.get("failed", {}))

    def _on_readable(self) -> None:
        assert self.ctl is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 20, 4)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self._die("control socket closed")
                return
            try:
                msg = json.loads(data)
            except json.JSONDecodeError:
                for fd in fds:
                    os.close(fd)
                continue
            self._dispatch(msg, fds)

    def _dispatch(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(msg)
        elif op == "spawned":
            fut = self._pending.pop(msg.get("req", -1), None)
            if fut is None or len(fds) != 2 or fut.done():
                for fd in fds:
                    os.close(fd)
                return
            sock = socket.socket(fileno=fds[0])
            fut.set_result((int(msg["pid"]), sock, fds[1]))
        elif op == "spawn-failed":
            fut = self._pending.pop(msg.get("req", -1), None)
            if fut is not None and not fut.done():
                if msg.get("retired"):
                    fut.set_exception(ZygoteRetired(f"zygote {self.pid} is retired"))
                else:
                    fut.set_exception(
                        errors.SandboxError(f"the zygote could not fork: {msg.get('error')}")
                    )
        elif op == "exited":
            kernel = self.live.pop(int(msg.get("pid", 0)), None)
            if kernel is not None and not kernel.exit_status.done():
                kernel.exit_status.set_result(int(msg.get("status", -1)))
        else:
            for fd in fds:
                os.close(fd)

    def _die(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        if reason != "killed" and not self.retired:  # ours to expect: not news
            log.warning("zygote %s died: %s", self.pid, reason)
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.ctl.fileno())
            self.ctl.close()
        err = errors.SandboxError(f"zygote {self.pid} died: {reason}")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)
        if self.proc is not None:
            # EOF on the control socket means the process is exiting: reap it now
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1.0)

    async def spawn(
        self, request: dict[str, Any], fds: list[int] | None = None, timeout: float = 30.0
    ) -> KernelProcess:
        """Fork a kernel; ``fds`` go with the request (the zygote's copies, the caller keeps
        its own)."""
        if self.dead or self.ctl is None:
            raise errors.SandboxError(f"zygote {self.pid} is not running")
        self._next_req += 1
        req = self._next_req
        fut: asyncio.Future[tuple[int, socket.socket, int]] = (
            asyncio.get_running_loop().create_future()
        )
        # The zygote forks one child at a time, and a SOCK_SEQPACKET queue holds only
        # net.unix.max_dgram_qlen (10) messages: more requests in flight would fail with
        # EAGAIN under a burst. Queue them here instead.
        async with self._in_flight:
            if self.retired:  # retired while this request waited its turn
                raise ZygoteRetired(f"zygote {self.pid} is retired")
            if self.dead:
                raise errors.SandboxError(f"zygote {self.pid} is not running")
            self._pending[req] = fut
            try:
                data = json.dumps({**request, "op": "spawn", "req": req}).encode()
                if fds:
                    socket.send_fds(self.ctl, [data], fds)
                else:
                    self.ctl.send(data)
                pid, sock, pidfd = await asyncio.wait_for(fut, timeout)
            finally:
                self._pending.pop(req, None)
        self.spawned += 1
        kernel = KernelProcess(pid, pidfd, sock, self)
        self.live[pid] = kernel
        return kernel

    def retire(self) -> None:
        """Fork no more; the zygote exits by itself once its last child has gone."""
        self.retired = True
        if self.ctl is not None and not self.dead:
            with contextlib.suppress(OSError):
                self.ctl.send(json.dumps({"op": "retire"}).encode())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._die("killed")
