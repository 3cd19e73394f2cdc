"""Uploads charged to the sessions' memory bound, not to the server.

A session's /mnt/data is a tmpfs: its pages are memory, charged to the cgroup of the process
that allocates them. Code in a session writes its files itself, within the bound; uploads are
written by the server, which lives outside it, so without this they would escape the bound
(measured: a 64 MiB upload raised the server's group by 64 MiB, the sessions' by nothing).
Here a helper process that lives inside the bound (its own leaf group, ``uploads``) allocates
an upload's pages first, with fallocate on the temporary file the server is about to write;
the server's writes then land in pages already charged to the bound.

The helper is the server's own interpreter, started by exec; it keeps no state and only ever
receives the descriptors of upload files the server opened::

    host -> helper   {"id": n, "offset": o, "length": l}   + the file's descriptor
    helper -> host   {"id": n, "errno": 0 | e}
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger("sessionpool.sandbox")

#: requests sent before earlier ones are answered (a SOCK_SEQPACKET queue holds about 10)
MAX_IN_FLIGHT = 8
START_TIMEOUT = 30.0


class ChargerUnavailable(Exception):
    """The helper is gone and could not be started again: write without it."""


class Charger:
    """The host's end of the helper. ``join(pid)`` puts the helper into the bound's group."""

    def __init__(self, join: Callable[[int], None]) -> None:
        self.join = join
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._next = 0
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._starting: asyncio.Lock = asyncio.Lock()

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "sessionpool.sandbox.charge", str(theirs.fileno())],
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
            )
        finally:
            theirs.close()
        try:
            await asyncio.to_thread(self.join, self.proc.pid)
            ours.setblocking(False)
            # the helper says it is ready once it runs: no request reaches it before it joined
            ready = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 64), 30)
            if ready != b"ready":
                raise OSError(errno.EPROTO, "the upload helper did not start")
        except BaseException:
            ours.close()
            self._kill()
            raise
        self.sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            with contextlib.suppress(ValueError, KeyError, TypeError):
                msg = json.loads(data)
                fut = self._pending.pop(int(msg["id"]), None)
                if fut is not None and not fut.done():
                    fut.set_result(int(msg["errno"]))

    def _lost(self) -> None:
        """The helper is gone: fail what waits on it; the next request starts a new one."""
        if self.sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ChargerUnavailable("the upload helper exited"))
        self._pending.clear()
        self._kill()

    async def allocate(self, fd: int, offset: int, length: int) -> None:
        """Allocate ``length`` bytes of ``fd`` from ``offset`` in the helper (so charged to
        the bound); OSError with the helper's errno (ENOSPC: the workspace is full). A helper
        found gone is started again, once per request."""
        for attempt in range(2):
            async with self._starting:
                if self.sock is None:
                    log.warning("the upload helper was gone: starting it again")
                    try:
                        await self.start()
                    except (OSError, TimeoutError) as exc:
                        raise ChargerUnavailable(str(exc)) from None
            try:
                code = await self._request(fd, offset, length)
            except ChargerUnavailable:
                if attempt:
                    raise
                continue
            if code:
                raise OSError(code, os.strerror(code))
            return

    async def _request(self, fd: int, offset: int, length: int) -> int:
        async with self._in_flight:
            sock = self.sock
            if sock is None:
                raise ChargerUnavailable("the upload helper exited")
            self._next += 1
            req = self._next
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._pending[req] = fut
            try:
                body = json.dumps({"id": req, "offset": offset, "length": length}).encode()
                try:
                    socket.send_fds(sock, [body], [fd])
                except OSError as exc:  # EPIPE: it died before we heard of it
                    self._lost()
                    raise ChargerUnavailable(str(exc)) from None
                return await fut
            finally:
                self._pending.pop(req, None)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def close(self) -> None:
        self._lost()
        self.proc = None


def main() -> NoReturn:
    """The helper: wait until the host has put us into the bound, then allocate on request."""
    from sessionpool.sandbox import linux

    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.send(b"ready")
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)
        code = 0
        msg: dict[str, object] = {}
        try:
            msg = json.loads(data)
            if len(fds) != 1:
                code = errno.EBADF
            else:
                offset, length = msg["offset"], msg["length"]
                assert isinstance(offset, int) and isinstance(length, int)
                os.posix_fallocate(fds[0], offset, length)
        except OSError as exc:
            code = exc.errno or errno.EIO
        except (ValueError, KeyError, TypeError, AssertionError):
            code = errno.EINVAL
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(json.dumps({"id": msg.get("id"), "errno": code}).encode())
        except OSError:
            os._exit(0)


if __name__ == "__main__":
    main()
