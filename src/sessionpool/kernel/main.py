"""The kernel's serve loop: read a request from the session socket, run it, send the reply.

Runs inside the sandbox as the session's pid 1, after the jail is built. Imports nothing from
the server. See docs/protocol.md for the messages.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, NoReturn

from sessionpool import protocol
from sessionpool.kernel.procs import Processes
from sessionpool.kernel.shell import CellOutput, SessionShell, reseed_after_fork

#: largest request (code or command) the kernel accepts
MAX_REQUEST = 16 * 1024 * 1024

#: how often the drain thread looks for orphaned zombies while a cell runs
REAP_INTERVAL_MS = 250

#: every subprocess.Popen user code creates, so orphan reaping never steals its exit status
_popens: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()


#: held while a Popen is made, from its fork to its registration in ``_popens``: the orphan
#: reaper does not scan meanwhile, so it cannot take a child that has already exited but is not
#: registered yet (a quick command, started while the machine is slow). Re-entrant: a Popen's
#: preexec_fn runs in the forked child, which inherits the lock as held by its own thread.
_popen_making = threading.RLock()


def _track_popens() -> None:
    original = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        with _popen_making:
            original(self, *args, **kwargs)
            _popens.add(self)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]


def reap_orphans(seen_before: set[int] | None = None) -> set[int] | None:
    """As pid 1 of the session, collect zombies whose parents died (they would pile up until
    the pids limit). Children that user code still owns (a live Popen or multiprocessing
    child) are left alone so their exit status stays with their owner.

    With ``seen_before`` (used while a cell runs, from another thread) a zombie is reaped only
    if it was already a zombie at the previous scan: a child that user code has just forked
    is registered long before that. Returns the zombies left for the next scan, or None if a
    Popen was being made and nothing was scanned (look again later).
    """
    if not _popen_making.acquire(blocking=False):
        return None
    try:
        return _reap_unowned(seen_before)
    finally:
        _popen_making.release()


def _reap_unowned(seen_before: set[int] | None) -> set[int]:
    try:
        owned = {p.pid for p in list(_popens) if p.returncode is None}
        mp = sys.modules.get("multiprocessing")
        if mp is not None and seen_before is None:
            owned |= {p.pid for p in mp.active_children() if p.pid is not None}
    except RuntimeError:  # the set changed under us (another thread): try next time
        return set()
    waiting: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return set()
    for name in names:
        if not name.isdigit() or int(name) in owned or name == "1":
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z" and fields[1] == b"1":
            pid = int(name)
            if seen_before is not None and pid not in seen_before:
                waiting.add(pid)
                continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
    return waiting


class Kernel:
    def __init__(self, shell: SessionShell) -> None:
        self.shell = shell
        self.sock: socket.socket | None = None
        self.busy = False
        self._pipes: dict[int, tuple[str, Any]] = {}
        #: the pipes' read ends, for ``_drain_once`` (which holds ``_drain_lock`` around it)
        self._pipe_poll = select.poll()
        self._drain_lock = threading.Lock()
        self._chld_r = -1
        #: streaming: output chunks (or a flush Event) for the sender thread, in order. A
        #: SimpleQueue because put() is one C call: a SIGINT cannot leave it half done, and
        #: user code (print) never blocks on the socket
        self._chunks: queue.SimpleQueue[tuple[int, str, str] | threading.Event] = (
            queue.SimpleQueue()
        )
        self._send_lock = threading.Lock()
        #: started by the first streaming cell: a session that never streams keeps two threads
        self._sender: threading.Thread | None = None
        #: requests for the main thread (cells and commands) that the drain thread read while
        #: the main thread was busy
        self._requests: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        #: held by whichever thread reads a message off the socket (one frame at a time)
        self._read_lock = threading.Lock()
        #: the drain thread's epoll: it watches the socket for input only while the main
        #: thread is busy (``_watch_input``); an idle main thread reads the socket itself
        self._epoll: select.epoll | None = None
        #: the processes of the process service (``proc_*`` requests), served while a cell
        #: runs; made after the fork (its pipes and selector must be the session's own)
        self.procs: Processes | None = None
        #: the session socket, for an idle main thread to wait on (``_wait_for_request``)
        self._request_poll = select.poll()

    # -- setup after fork ---------------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # A deadline interrupt that lands between cells must not kill the loop.
        if self.busy:
            raise KeyboardInterrupt

    def _capture_fds(self) -> None:
        """Point fds 1 and 2 at pipes so output of C code and subprocesses is captured too."""
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self._pipes[r] = (name, codecs.getincrementaldecoder("utf-8")("replace"))
            self._pipe_poll.register(r, select.POLLIN)
        # SIGCHLD wakes the drain thread (through the signal wakeup fd): an idle session costs
        # no periodic wakeups, and a long cell that orphans children cannot fill the pids limit.
        # Signal handlers can only be set from the main thread, hence here.
        self._chld_r, chld_w = os.pipe()
        os.set_blocking(self._chld_r, False)
        os.set_blocking(chld_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(chld_w, warn_on_full_buffer=False)
        self.shell.before_write = self._drain_once
        self._epoll = select.epoll()
        for r in self._pipes:
            self._epoll.register(r, select.EPOLLIN)
        self._epoll.register(self._chld_r, select.EPOLLIN)
        assert self.sock is not None
        self._epoll.register(self.sock.fileno(), select.EPOLLRDHUP)
        threading.Thread(target=self._drain_forever, name="fd-drain", daemon=True).start()

    def _drain_once(self) -> None:
        """Read what waits in the fd pipes into the running cell's output. One ``poll`` asks
        which pipes hold anything, so the usual answer (none) costs one system call and no
        exception (a read of an empty pipe raises ``BlockingIOError``)."""
        with self._drain_lock:
            for r, _ in self._pipe_poll.poll(0):
                name, decoder = self._pipes[r]
                while True:
                    try:
                        chunk = os.read(r, 65536)
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    out = self.shell.current
                    text = decoder.decode(chunk)
                    if out is not None and text:
                        out.write(name, text)

    def _drain_forever(self) -> None:
        """Keep fd pipes empty (a subprocess must never block on a full pipe), read requests
        while the main thread is busy, and exit when the server goes away, even in the middle
        of a cell."""
        assert self.sock is not None and self._epoll is not None
        sock_fd, chld_r = self.sock.fileno(), self._chld_r
        zombies: set[int] = set()
        rescan = False  # the last scan was skipped while a Popen was being made
        while True:
            events = self._epoll.poll(REAP_INTERVAL_MS / 1000 if zombies or rescan else -1)
            for fd, ev in events:
                if fd == sock_fd:
                    if ev & select.EPOLLIN:
                        self._read_while_busy()
                    if ev & (select.EPOLLRDHUP | select.EPOLLHUP):
                        os._exit(0)
                if fd == chld_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(chld_r, 4096)
            self._drain_once()
            if os.getpid() == 1 and (zombies or rescan or any(fd == chld_r for fd, _ in events)):
                left = reap_orphans(zombies)
                rescan = left is None
                if left is not None:
                    zombies = left

    # -- streaming ----------------------------------------------------------------------------

    def _send_chunks_forever(self) -> None:
        """Send queued output chunks as ``chunk`` messages, merging neighbours (one frame per
        burst, not per print). An Event in the queue is set once everything before it is sent."""
        assert self.sock is not None
        pending: list[tuple[int, str, str] | threading.Event] = []
        while True:
            pending.append(self._chunks.get())
            while len(pending) < 256:
                try:
                    pending.append(self._chunks.get_nowait())
                except queue.Empty:
                    break
            merged: list[list[Any]] = []
            flushed: list[threading.Event] = []
            for item in pending:
                if isinstance(item, threading.Event):
                    flushed.append(item)
                    continue
                rid, name, text = item
                if merged and merged[-1][0] == rid and merged[-1][1] == name:
                    merged[-1][2] += text
                else:
                    merged.append([rid, name, text])
            pending.clear()
            try:
                for rid, name, text in merged:
                    with self._send_lock:
                        protocol.send_message(
                            self.sock, {"op": "chunk", "id": rid, "name": name, "text": text}
                        )
            except OSError:
                os._exit(0)
            for event in flushed:
                event.set()

    def _flush_chunks(self) -> None:
        """Wait until every chunk queued so far is on the socket (before the reply goes out)."""
        done = threading.Event()
        self._chunks.put(done)
        done.wait()

    # -- the loop -----------------------------------------------------------------------------

    def _send(self, header: dict[str, Any], blobs: list[bytes]) -> None:
        """Send one message from any thread (the host reads one message at a time)."""
        assert self.sock is not None
        try:
            with self._send_lock:
                protocol.send_message(self.sock, header, blobs)
        except OSError:
            os._exit(0)

    def _recv(self) -> dict[str, Any]:
        """One request off the socket (the caller holds ``_read_lock``); exits with the host."""
        assert self.sock is not None
        try:
            request, _ = protocol.recv_message(self.sock, max_blob=MAX_REQUEST)
        except (EOFError, OSError, protocol.FrameError):
            os._exit(0)
        if request.get("op") == "exit":
            os._exit(0)
        return request

    def _answer_now(self, request: dict[str, Any]) -> bool:
        """Answer a ``proc_*`` request at once, from whichever thread read it (a process can be
        started, fed or signalled while a cell runs). False for anything else."""
        op = request.get("op")
        if not (isinstance(op, str) and op.startswith("proc_")):
            return False
        if self.procs is None:
            self.procs = Processes(self._send)
        self.procs.handle(request)
        return True

    def _wait_for_request(self) -> None:
        """Block until the socket has input (or the host hung up), in ``poll``.

        A thread blocked in ``recv`` on a Unix stream socket sleeps on the socket's one wait
        queue, and Linux wakes every sleeper on that queue whenever write space is freed, that
        is, every time the host reads one of our replies: each request cost the kernel a
        spurious wake-up and a second sleep. A ``poll`` for input is not woken by that.
        """
        self._request_poll.poll()

    def _next_request(self) -> dict[str, Any]:
        """The main thread's next request to run: one the drain thread queued while the main
        thread was busy, else one read off the socket here. An idle kernel reads its own
        socket: a request then wakes one thread, not a reader thread that hands it to the
        main thread (under load that hand-off was a good part of a small cell's CPU)."""
        while True:
            with self._read_lock:
                try:
                    return self._requests.get_nowait()
                except queue.Empty:
                    pass
                self._wait_for_request()
                request = self._recv()
            if not self._answer_now(request):
                return request

    def _watch_input(self, busy: bool) -> None:
        """While the main thread runs a request, the drain thread reads the socket."""
        assert self.sock is not None and self._epoll is not None
        events = select.EPOLLRDHUP | (select.EPOLLIN if busy else 0)
        self._epoll.modify(self.sock.fileno(), events)

    def _read_while_busy(self) -> None:
        """On the drain thread: read what arrived while the main thread is busy. A request
        the main thread picks up itself (it went idle meanwhile) is left to it: this thread
        never waits for a request, so output keeps draining."""
        assert self.sock is not None
        if not self._read_lock.acquire(blocking=False):
            return  # the main thread is reading
        try:
            try:
                waiting = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                os._exit(0)
            if not waiting:
                os._exit(0)  # the host closed the socket
            request = self._recv()
            if not self._answer_now(request):
                self._requests.put(request)
        finally:
            self._read_lock.release()

    def serve(self, sock: socket.socket, release: int = -1) -> NoReturn:
        """Answer requests on ``sock`` until the host closes it. ``release``: a descriptor
        closed once ``ready`` is sent, before any request is read (``jail.enter``)."""
        self.sock = sock
        self._request_poll.register(sock.fileno(), select.POLLIN)
        reseed_after_fork()
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        _track_popens()
        self._capture_fds()
        protocol.send_message(sock, {"op": "ready", "pid": os.getpid(), "uid": os.getuid()})
        if release >= 0:
            os.close(release)
        while True:
            request = self._next_request()
            self._watch_input(True)
            op = request.get("op")
            if op == "execute":
                header, blobs = self.execute(request)
            elif op == "shell":
                header, blobs = self.run_shell(request), []
            elif op == "ping":
                header, blobs = {"op": "pong"}, []
            elif op == "context_reset":
                header, blobs = self.reset_context(request), []
            else:
                header, blobs = {"op": "bad-request", "detail": f"unknown op {op!r}"}, []
            header["id"] = request.get("id")
            if op == "execute" and request.get("stream"):
                self._flush_chunks()  # every chunk of the cell reaches the host before its reply
            self._watch_input(False)
            self._send(header, blobs)

    def warm_up(self) -> None:
        """Run the throwaway cell a ready session runs (``protocol.WARMUP_CELL``, silent), in a
        child forked ahead of demand before its request arrives: the copy-on-write faults of
        its first run are then taken while no request waits for them. The host's request
        itself, so every session starts in the same state."""
        self.execute({"op": "execute", "code": protocol.WARMUP_CELL, "silent": True})

    def execute(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        code = request.get("code")
        if not isinstance(code, str):
            return {"op": "bad-request", "detail": "code must be a string"}, []
        context = request.get("context")
        if context is not None and not isinstance(context, str):
            return {"op": "bad-request", "detail": "context must be a string"}, []
        sink = None
        if request.get("stream"):
            if self._sender is None:
                self._sender = threading.Thread(
                    target=self._send_chunks_forever, name="chunks", daemon=True
                )
                self._sender.start()
            rid = request.get("id")
            rid = rid if isinstance(rid, int) else -1
            put = self._chunks.put

            def sink(name: str, text: str) -> None:
                put((rid, name, text))

        # A silent cell (the pool's warm-up) runs as a counted one and then leaves no trace:
        # the first user cell then finds the history's pages already private (copy-on-write).
        # In a named context it is simply not counted.
        silent = bool(request.get("silent", False))
        trace = self.shell.no_trace() if silent and not context else contextlib.nullcontext()
        self.busy = True
        try:
            with trace:
                return self.shell.run(
                    code,
                    output_limit=int(request.get("output_limit", 1 << 20)),
                    image_limit=int(request.get("image_limit", 16 << 20)),
                    max_images=int(request.get("max_images", 32)),
                    after=self._drain_once,
                    store_history=not (silent and context),
                    sink=sink,
                    context=context,
                )
        finally:
            self.busy = False

    def reset_context(self, request: dict[str, Any]) -> dict[str, Any]:
        context = request.get("context")
        if not isinstance(context, str) or not context:
            return {"op": "bad-request", "detail": "context must be a non-empty string"}
        return {"op": "context_reset", "existed": self.shell.reset_context(context)}

    def run_shell(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if not isinstance(command, str):
            return {"op": "bad-request", "detail": "command must be a string"}
        out = CellOutput(int(request.get("output_limit", 1 << 20)), 0, 0)
        start = time.perf_counter()
        interrupted = False
        self.busy = True
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # one process group: a timeout kills all of it
            )
            assert proc.stdout is not None and proc.stderr is not None
            sel = selectors.DefaultSelector()
            decoders = {}
            for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
                sel.register(stream, selectors.EVENT_READ, name)
                decoders[name] = codecs.getincrementaldecoder("utf-8")("replace")
            while sel.get_map():
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    out.write(key.data, decoders[key.data].decode(chunk))
            proc.wait()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.busy = False
            if proc is not None:
                if proc.returncode is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
        rc = proc.returncode if proc is not None else 127
        stdout, stderr, truncated = out.finish()
        return {
            "op": "shell_result",
            "exit_code": 128 - rc if rc is not None and rc < 0 else rc,
            "stdout": stdout,
            "stderr": stderr,
            "truncated": truncated,
            "interrupted": interrupted,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
        }
