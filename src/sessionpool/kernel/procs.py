"""Processes the kernel runs and supervises for the host (the E2B process service).

Runs inside the sandbox, on the session's runtime; standard library only. Requests are answered
at once by whichever kernel thread read them (the main thread while idle, the drain thread while
a cell runs), never blocking it: a process that does not read its stdin gets an error, not a
stuck kernel. One supervisor thread forwards every process's output as ``proc_data`` frames
(raw bytes as a blob) and its end as ``proc_end``.
Each process has its own session and process group, so a signal reaches what it started too.
Spec: docs/protocol.md, *Processes*.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: bytes read from a pipe at a time (one ``proc_data`` frame at most)
READ_CHUNK = 64 * 1024
#: the signals the host may send (SendSignal: SIGTERM, SIGKILL; and an interrupt)
SIGNALS = {signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP}

Send = Callable[[dict[str, Any], list[bytes]], None]


class _NoProcess(LookupError):
    pass


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    info: dict[str, Any]
    output_limit: int
    #: fds still read: fd -> stream name
    fds: dict[int, str] = field(default_factory=dict)
    stdin: int | None = None
    pidfd: int = -1
    pty_master: int | None = None
    used: int = 0
    dropped: int = 0


class Processes:
    """The session's supervised processes, by pid."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._procs: dict[int, _Proc] = {}
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    # -- requests (the thread that read them) ----------------------------------------------------

    def handle(self, request: dict[str, Any]) -> None:
        """Answer one ``proc_*`` request (the reply carries the request's id)."""
        rid = request.get("id")
        try:
            reply, after = self._dispatch(request)
        except _NoProcess as exc:
            reply, after = {"op": "proc_error", "kind": "not_found", "detail": str(exc)}, None
        except (OSError, ValueError, TypeError, subprocess.SubprocessError) as exc:
            reply, after = {"op": "proc_error", "kind": "invalid", "detail": _describe(exc)}, None
        reply["id"] = rid
        self._send(reply, [])
        if after is not None:
            after()  # output flows only after the reply: the host knows the pid first

    def _dispatch(
        self, request: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable[[], None] | None]:
        op = request.get("op")
        if op == "proc_start":
            return self._start(request)
        if op == "proc_list":
            with self._lock:
                infos = [dict(p.info) for p in self._procs.values()]
            return {"op": "proc_list_result", "processes": infos}, None
        proc = self._find(request.get("pid"))
        if op == "proc_input":
            data = request.get("data")
            if not isinstance(data, str):
                raise ValueError("data must be a string")
            self._write_input(proc, data.encode("latin-1"))
        elif op == "proc_close_stdin":
            self._close_stdin(proc)
        elif op == "proc_signal":
            sig = request.get("signal")
            if sig not in SIGNALS:
                raise ValueError(f"signal {sig!r} is not one of {sorted(int(s) for s in SIGNALS)}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, sig)
        elif op == "proc_resize":
            if proc.pty_master is None:
                raise ValueError("the process has no terminal to resize")
            cols, rows = int(request.get("cols", 80)), int(request.get("rows", 24))
            fcntl.ioctl(proc.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        else:
            raise ValueError(f"unknown op {op!r}")
        return {"op": "proc_ok"}, None

    def _find(self, pid: Any) -> _Proc:
        with self._lock:
            proc = self._procs.get(pid) if isinstance(pid, int) else None
        if proc is None:
            raise _NoProcess(f"no process with pid {pid!r}")
        return proc

    def _start(self, request: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], None]]:
        cmd, args = request.get("cmd"), request.get("args") or []
        if not isinstance(cmd, str) or not cmd:
            raise ValueError("cmd must be a non-empty string")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("args must be a list of strings")
        envs = request.get("envs") or {}
        if not isinstance(envs, dict):
            raise ValueError("envs must be an object")
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in envs.items()})
        cwd = request.get("cwd") or None
        pty_size = request.get("pty")
        stdin = bool(request.get("stdin", True))
        master: int | None = None
        if pty_size:
            master, slave = os.openpty()
            fcntl.ioctl(
                slave,
                termios.TIOCSWINSZ,
                struct.pack(
                    "HHHH", int(pty_size.get("rows", 24)), int(pty_size.get("cols", 80)), 0, 0
                ),
            )
            env.setdefault("TERM", "xterm-256color")
            try:
                popen = subprocess.Popen(
                    [cmd, *args],
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_take_terminal,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
        else:
            popen = subprocess.Popen(
                [cmd, *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        info = {
            "pid": popen.pid,
            "cmd": cmd,
            "args": args,
            "envs": {str(k): str(v) for k, v in envs.items()},
            "cwd": cwd or os.getcwd(),
            "tag": request.get("tag") if isinstance(request.get("tag"), str) else None,
            "pty": master is not None,
        }
        proc = _Proc(popen, info, int(request.get("output_limit", 1 << 20)))
        if master is not None:
            proc.pty_master = master
            proc.stdin = master
            os.set_blocking(master, False)
            proc.fds[master] = "pty"
        else:
            assert popen.stdout is not None and popen.stderr is not None
            for pipe, name in ((popen.stdout, "stdout"), (popen.stderr, "stderr")):
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                proc.fds[fd] = name
            if popen.stdin is not None:
                proc.stdin = popen.stdin.fileno()
                os.set_blocking(proc.stdin, False)
        proc.pidfd = os.pidfd_open(popen.pid)
        with self._lock:
            self._procs[popen.pid] = proc

        def watch() -> None:
            with self._lock:
                for fd, name in proc.fds.items():
                    self._sel.register(fd, selectors.EVENT_READ, (proc, name))
                self._sel.register(proc.pidfd, selectors.EVENT_READ, (proc, None))
            self._ensure_thread()
            _wake(self._wake_w)

        return {"op": "proc_started", "pid": popen.pid}, watch

    def _write_input(self, proc: _Proc, data: bytes) -> None:
        if proc.stdin is None:
            raise ValueError("the process's stdin is closed")
        view = memoryview(data)
        while view:
            try:
                n = os.write(proc.stdin, view)
            except BlockingIOError:
                raise ValueError(
                    "the process is not reading its stdin (the pipe is full); input dropped"
                ) from None
            view = view[n:]

    def _close_stdin(self, proc: _Proc) -> None:
        if proc.pty_master is not None:
            # a terminal has no end of file to close: send the EOF character instead
            self._write_input(proc, b"\x04")
            return
        if proc.stdin is not None and proc.popen.stdin is not None:
            proc.popen.stdin.close()
            proc.stdin = None

    # -- supervision (its own thread) ---------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name="procs", daemon=True)
            self._thread.start()

    def _supervise(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                proc, name = key.data
                # a key of this batch may be stale: a process handled earlier in it ended and
                # its fd numbers may already belong to a process started since
                if name is None:
                    if proc.pidfd >= 0:
                        self._finish(proc)
                elif proc.fds.get(key.fd) == name:
                    self._pump(proc, key.fd, name)

    def _pump(self, proc: _Proc, fd: int, name: str) -> bool:
        """Forward what ``fd`` holds now; False once it is at its end."""
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # EIO: a terminal whose last holder closed it
            chunk = b""
        if not chunk:
            self._unwatch(proc, fd)
            return False
        room = proc.output_limit - proc.used
        if room < len(chunk):
            proc.dropped += len(chunk) - max(room, 0)
            chunk = chunk[: max(room, 0)]
        if chunk:
            proc.used += len(chunk)
            self._send({"op": "proc_data", "pid": proc.popen.pid, "stream": name}, [chunk])
        return True

    def _unwatch(self, proc: _Proc, fd: int) -> None:
        with self._lock:
            if fd in proc.fds:
                del proc.fds[fd]
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(fd)

    def _finish(self, proc: _Proc) -> None:
        """The process exited: forward what it left in its pipes, then its end."""
        popen = proc.popen
        code = popen.wait()
        for fd, name in list(proc.fds.items()):
            # what the process wrote before it exited; a child it left behind may hold the
            # pipe open, so read what is there now rather than to the end
            while self._pump(proc, fd, name) and _readable(fd):
                pass
            self._unwatch(proc, fd)
        with self._lock:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(proc.pidfd)
            self._procs.pop(popen.pid, None)
        os.close(proc.pidfd)
        proc.pidfd = -1
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if proc.pty_master is not None:
            os.close(proc.pty_master)
        self._send(
            {
                "op": "proc_end",
                "pid": popen.pid,
                "exit_code": 128 - code if code < 0 else code,
                "signal": -code if code < 0 else None,
                "dropped": proc.dropped,
            },
            [],
        )


def _take_terminal() -> None:
    """In the child, after setsid: its terminal becomes the controlling one (job control)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _readable(fd: int) -> bool:
    sel = selectors.DefaultSelector()
    try:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(0))
    finally:
        sel.close()


def _wake(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b"x")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file or directory: {exc.filename!r}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename!r}" if exc.filename else str(exc)
    return str(exc) or type(exc).__name__
