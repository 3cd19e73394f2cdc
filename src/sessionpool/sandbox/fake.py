"""An in-process backend for tests: kernels are objects in the server's process, not processes.

The analogue of an HTTP library's mock transport. Faces, pools and sessions run their real code
against kernels that answer in-process, so their logic is tested in seconds and without root.
Nothing is isolated and nothing is forked: no configuration can name this backend, tests hand
it to ``Engine(config, pools, backend=FakeBackend(...))``. Never run untrusted code with it.

Each kernel passes every request to a *handler* ``(kernel, request) -> (reply, blobs)``. The
default, ``run_python``, answers the protocol of docs/protocol.md with Python's own ``exec``:
one namespace per kernel (so state persists until the kernel is replaced), ``print`` output,
the last expression's value, ``display()``, tracebacks, streamed chunks, output limits, and
``SIGINT`` as ``KeyboardInterrupt`` in the running cell; ``shell`` requests run ``/bin/sh`` in
the workspace. A test passes its own handler to script a kernel that dies, hangs or answers
garbage::

    async def dies(kernel, request):
        kernel.kill(-9)
        raise KernelDied("killed")

    engine = Engine(EngineConfig(data_dir=tmp), [PoolConfig()], backend=FakeBackend(tmp, dies))

Cells see /mnt/data through ``open`` (there is no mount: ``open("/mnt/data/x")`` and relative
names land in the workspace directory). What the fake does not do: capture output written below
``print`` (``sys.stdout.write``, C code, subprocesses of a cell), map paths for anything but
``open``, render matplotlib figures, or enforce memory, CPU or process limits. Tests of those
run on the jail backend.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import ctypes
import importlib.metadata
import io
import itertools
import os
import platform
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sessionpool import paths, protocol
from sessionpool.config import PoolConfig
from sessionpool.protocol import Message
from sessionpool.sandbox.backend import Backend, KernelDied, Slot
from sessionpool.sandbox.runtimes import package_digest
from sessionpool.sandbox.workspace import Workspace
from sessionpool.types import RuntimeInfo

Reply = tuple[Message, list[bytes]]
Handler = Callable[["FakeKernel", Message], Awaitable[Reply]]
T = TypeVar("T")

_pids = itertools.count(1000)
#: the exit status of a kernel ended by SIGKILL
KILLED = -int(signal.SIGKILL)


class FakeKernel:
    """One in-process kernel (a ``backend.Kernel``); its handler answers each request."""

    def __init__(self, handler: Handler, slot: Slot) -> None:
        self.pid = next(_pids)
        self.slot = slot
        self.workspace = slot.workspace.path
        #: the default handler's globals: what "the interpreter" remembers between cells
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        #: every request received, in order (tests look at what the session sent)
        self.requests: list[Message] = []
        self._handler = handler
        self._outbox: asyncio.Queue[Reply | None] = asyncio.Queue()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: int | None = None  # ident of the thread running a cell
        self._cell = threading.Lock()  # guards _thread against a racing interrupt
        self._proc: asyncio.subprocess.Process | None = None  # a shell command running
        #: what ``outdated`` answers (a test retires the kernel's maker by setting it)
        self.maker_retired = False

    # -- the Kernel interface -------------------------------------------------------------------

    async def send(self, header: Message) -> None:
        if self._exit.done():
            raise KernelDied("the kernel has exited")
        self.requests.append(header)
        task = asyncio.get_running_loop().create_task(self._handle(header))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read(
        self, max_header: int, max_blob: int, max_total: int
    ) -> tuple[Message, list[bytes]]:
        item = await self._outbox.get()
        if item is None:
            self._outbox.put_nowait(None)  # every later read sees the end too
            raise KernelDied("the kernel closed its channel")
        header, blobs = item
        # the limits a real socket reader enforces before buffering
        size = len(protocol.encode(header))
        if size > max_header:
            raise protocol.FrameError(f"header of {size} bytes exceeds the limit of {max_header}")
        if any(len(b) > max_blob for b in blobs) or size + sum(map(len, blobs)) > max_total:
            raise protocol.FrameError("blob exceeds the limit")
        return header, blobs

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            self.kill(KILLED)
        elif sig == signal.SIGINT:
            self.interrupt()

    def alive(self) -> bool:
        return not self._exit.done()

    def outdated(self) -> bool:
        return self.maker_retired

    async def wait_exit(self, timeout: float) -> int | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.kill(KILLED)

    # -- for handlers and tests -----------------------------------------------------------------

    def emit(self, header: Message, blobs: list[bytes] | None = None) -> None:
        """Put a message on the channel now (a streamed chunk, a stray or malformed reply)."""
        if not self._exit.done():
            self._outbox.put_nowait((header, list(blobs or [])))

    def kill(self, status: int = KILLED) -> None:
        """End the kernel with ``status``: readers see the channel close."""
        if self._exit.done():
            return
        self._exit.set_result(status)
        self._outbox.put_nowait(None)
        for task in self._tasks:  # a dead process answers nothing more
            if task is not asyncio.current_task():
                task.cancel()
        self._raise_in_cell(SystemExit)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    def interrupt(self) -> None:
        """What SIGINT does to a kernel: KeyboardInterrupt in the running cell, if any."""
        self._raise_in_cell(KeyboardInterrupt)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def in_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread of its own, where ``interrupt()`` raises KeyboardInterrupt."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()

        def finish(ok: bool, value: Any) -> None:
            if done.done():
                return
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

        def target() -> None:
            ident = threading.get_ident()
            with self._cell:
                self._thread = ident
            ok: bool = False
            value: Any = None
            try:
                value, ok = fn(), True
            except BaseException as exc:  # handed to the awaiting task
                value = exc
            # An interrupt may land after fn returned: once _thread is cleared (under the lock
            # interrupt() takes) no new one can be set, and one already pending surfaces at the
            # next call, inside this loop, where it is caught. (Clearing it with
            # PyThreadState_SetAsyncExc(ident, NULL) would leave the interpreter's async
            # exception signal set for good: every thread then spins in the eval loop.)
            while True:
                try:
                    with self._cell:
                        self._thread = None
                    loop.call_soon_threadsafe(finish, ok, value)
                    break
                except RuntimeError:  # the loop closed meanwhile: nobody waits
                    break
                except BaseException:  # the late interrupt itself
                    continue

        threading.Thread(target=target, name=f"fake-kernel-{self.pid}", daemon=True).start()
        return await done

    def _raise_in_cell(self, exc: type[BaseException]) -> None:
        with self._cell:
            if self._thread is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread), ctypes.py_object(exc)
                )

    async def run_process(self, *argv: str) -> tuple[int, bytes, bytes]:
        """Run a command in the workspace (``interrupt()`` and ``kill()`` end it): its exit
        status (negative: the signal), stdout and stderr."""
        self._proc = proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.workspace,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await proc.communicate()
        finally:
            self._proc = None
        return (proc.returncode if proc.returncode is not None else 1), out, err

    async def _handle(self, header: Message) -> None:
        try:
            reply, blobs = await self._handler(self, header)
        except KernelDied:
            return
        except Exception:  # a broken handler is a broken kernel: tell the host, like a real one
            reply, blobs = {"op": "bad-request", "detail": traceback.format_exc(limit=3)}, []
        self.emit({**reply, "id": header.get("id")}, blobs)


class FakeBackend(Backend):
    """Kernels in the server's own process; workspaces are plain directories under data_dir."""

    name = "fake"
    isolated = False

    def __init__(self, data_dir: Path, handler: Handler | None = None) -> None:
        self.data_dir = data_dir
        self.workspaces = data_dir / "workspaces"
        self.handler: Handler = handler or run_python
        #: every kernel spawned, in order
        self.kernels: list[FakeKernel] = []

    def runtime_info(self, pool: PoolConfig) -> RuntimeInfo:
        """Kernels run in this process: this interpreter and its packages are the runtime."""
        packages = sorted(
            {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()},
            key=str.lower,
        )
        version = platform.python_version()
        digest = package_digest(packages)
        return RuntimeInfo(pool.runtime, "python", version, tuple(packages), digest, pool.image)

    async def start(self) -> None:
        self.workspaces.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        for kernel in self.kernels:
            kernel.close()

    async def create_slot(self, pool: PoolConfig) -> Slot:
        limits = pool.limits
        path = self.workspaces / secrets.token_hex(8)
        ws = Workspace.create(path, None, limits.disk_bytes, limits.file_bytes, False)
        return Slot(path.name, None, ws, limits)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()

    async def spawn(self, pool: PoolConfig, slot: Slot) -> FakeKernel:
        kernel = FakeKernel(self.handler, slot)
        self.kernels.append(kernel)
        return kernel


# --- the default handler: the protocol answered by Python's exec --------------------------------


class _Output:
    """A cell's stdout and stderr, capped like the real kernel's (docs/protocol.md)."""

    def __init__(self, limit: int, chunk: Callable[[str, str], None] | None) -> None:
        self.limit = limit
        self.chunk = chunk
        self.streams = {"stdout": io.StringIO(), "stderr": io.StringIO()}
        self.used = 0
        self.dropped = 0

    def write(self, name: str, text: str) -> None:
        room = self.limit - self.used
        kept = text[: max(0, room)]
        self.dropped += len(text) - len(kept)
        if kept:
            self.used += len(kept)
            self.streams[name].write(kept)
            if self.chunk is not None:
                self.chunk(name, kept)

    def finish(self) -> tuple[str, str, bool]:
        stderr = self.streams["stderr"].getvalue()
        if self.dropped:
            stderr += f"\n[output truncated: {self.dropped} characters dropped]\n"
        return self.streams["stdout"].getvalue(), stderr, bool(self.dropped)


def _bundle(value: Any, blobs: list[bytes]) -> dict[str, Any]:
    data: dict[str, Any] = {"text/plain": repr(value)}
    png = getattr(value, "_repr_png_", None)
    if callable(png):
        image = png()
        if isinstance(image, bytes):
            data["image/png"] = {"$blob": len(blobs)}
            blobs.append(image)
    return data


def _run_cell(kernel: FakeKernel, code: str, out: _Output, displays: list[Any]) -> Any:
    """Run ``code`` in the kernel's namespace; the last expression's value (or None)."""

    def print_(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None) -> None:
        if file is not None and file not in (sys.stdout, sys.stderr):
            builtins.print(*args, sep=sep, end=end, file=file)
            return
        text = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
        out.write("stderr" if file is sys.stderr else "stdout", text)

    def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
        # no chdir or mount per kernel: /mnt/data and relative names are the workspace
        if isinstance(file, str | os.PathLike):
            path = os.fspath(file)
            if isinstance(path, str) and not paths.relative(path).startswith("/"):
                file = kernel.workspace / paths.relative(path)
        return builtins.open(file, *args, **kwargs)

    scope = kernel.namespace
    scope["__builtins__"] = {
        **vars(builtins),
        "print": print_,
        "display": displays.append,
        "open": open_,
    }
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    tail = tree.body[-1] if tree.body else None
    if isinstance(tail, ast.Expr):
        tree.body.pop()
        last = ast.Expression(tail.value)
    exec(compile(tree, "<cell>", "exec"), scope)  # the fake's whole point
    if last is None:
        return None
    return eval(compile(last, "<cell>", "eval"), scope)


async def run_python(kernel: FakeKernel, request: Message) -> Reply:
    """The default handler: ``execute`` with exec, ``shell`` with /bin/sh, ``ping``."""
    op = request.get("op")
    if op == "ping":
        return {"op": "pong"}, []
    if op == "shell":
        return await _run_shell(kernel, request), []
    if op != "execute" or not isinstance(request.get("code"), str):
        return {"op": "bad-request", "detail": f"unknown or malformed op {op!r}"}, []
    loop = asyncio.get_running_loop()
    chunk = None
    if request.get("stream"):
        rid = request.get("id")

        def chunk(name: str, text: str) -> None:
            message = {"op": "chunk", "id": rid, "name": name, "text": text}
            loop.call_soon_threadsafe(kernel.emit, message)

    out = _Output(int(request.get("output_limit", 1 << 20)), chunk)
    displays: list[Any] = []
    start = time.perf_counter()
    error = None
    value = None
    try:
        value = await kernel.in_thread(lambda: _run_cell(kernel, request["code"], out, displays))
    except SystemExit:
        raise KernelDied("the kernel was killed during the cell") from None
    except BaseException as exc:  # the cell's own error, for the host
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next  # the cell's frames only, as an interpreter shows them
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        error = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": text}
    blobs: list[bytes] = []
    stdout, stderr, truncated = out.finish()
    return {
        "op": "result",
        "status": "error" if error else "ok",
        "stdout": stdout,
        "stderr": stderr,
        "truncated": truncated,
        "result": None if value is None else _bundle(value, blobs),
        "displays": [_bundle(d, blobs) for d in displays],
        "error": error,
        "interrupted": error is not None and error["ename"] == "KeyboardInterrupt",
        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
    }, blobs


async def _run_shell(kernel: FakeKernel, request: Message) -> Message:
    command = request.get("command")
    if not isinstance(command, str):
        return {"op": "bad-request", "detail": "command must be a string"}
    start = time.perf_counter()
    rc, raw_out, raw_err = await kernel.run_process(shutil.which("sh") or "/bin/sh", "-c", command)
    out = _Output(int(request.get("output_limit", 1 << 20)), None)
    out.write("stdout", raw_out.decode("utf-8", "replace"))
    out.write("stderr", raw_err.decode("utf-8", "replace"))
    stdout, stderr, truncated = out.finish()
    return {
        "op": "shell_result",
        "exit_code": 128 - rc if rc < 0 else rc,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": truncated,
        "interrupted": rc < 0,
        "duration_ms": round((time.perf_counter() - start) * 1000, 3),
    }
