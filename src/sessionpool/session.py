"""One session: a workspace, a slot of host resources, and the kernel currently serving it.

Executions are serialised (one at a time; later calls queue on a lock). A kernel that dies or
must be killed at a timeout is replaced on next use in the same slot, so the session keeps its
uid, cgroup and files; only the interpreter state is lost, and the caller is told so.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from sessionpool import errors, protocol
from sessionpool.config import PoolConfig
from sessionpool.egress.policy import narrow, pool_policy
from sessionpool.egress.proxy import LISTEN_HOST, LISTEN_PORT, EgressProxy, Gate
from sessionpool.sandbox.backend import Backend, Kernel, KernelDied, Slot
from sessionpool.telemetry import FILES_WRITTEN, PoolStats
from sessionpool.types import (
    DisplayData,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    FileInfo,
    ProcessEvent,
    ProcessInfo,
    ProcessSpec,
    ShellResult,
)

log = logging.getLogger("sessionpool.session")

_ids = itertools.count(1)
#: executions a session remembers for its listing (the console's "last executions")
RECENT_EXECUTIONS = 5


class Session:
    def __init__(
        self,
        pool: PoolConfig,
        backend: Backend,
        slot: Slot,
        stats: PoolStats | None = None,
        egress: EgressProxy | None = None,
    ) -> None:
        self.pool_config = pool
        self.pool_name = pool.name
        self.backend = backend
        self.slot = slot
        self.identifier = ""
        self.created_at = time.time()
        self.last_used = self.created_at
        #: not reaped before this time, however long idle (an E2B sandbox's lifetime)
        self.kept_until = 0.0
        self.kernel: Kernel | None = None
        self.closed = False
        self.busy = False
        self.kernels_started = 0
        self._replaced_note = ""
        self._abandoned: asyncio.Future[tuple[dict[str, Any], list[bytes]]] | None = None
        self._lock = asyncio.Lock()
        #: its pool's counters (executions, timeouts, kills, uploads)
        self.stats = stats if stats is not None else PoolStats()
        #: processes of the process service: the current kernel's, by pid
        self._procs: dict[int, _ProcessRecord] = {}
        #: process requests waiting for their reply, by request id
        self._proc_waiters: dict[
            int, asyncio.Future[tuple[dict[str, Any], _ProcessRecord | None]]
        ] = {}
        #: calls reading the kernel's socket themselves (``_read_reply``)
        self._readers = 0
        #: calls whose reply is due (from their request until their reply is read): the pump
        #: keeps messages for them, and drops every other one (late replies, or junk that code
        #: in the session wrote to the socket, which must not pile up in the server)
        self._expecting = 0
        #: reads the socket between calls once processes run (their output must flow then too);
        #: calls then take their messages from the inbox
        self._pump: asyncio.Task[None] | None = None
        self._pump_kernel: Kernel | None = None
        self._pump_error: BaseException | None = None
        self._inbox: asyncio.Queue[tuple[dict[str, Any], list[bytes]] | BaseException] = (
            asyncio.Queue()
        )
        #: the latest executions, newest last: (started, epoch seconds; status; milliseconds)
        self.recent: collections.deque[tuple[float, str, float]] = collections.deque(
            maxlen=RECENT_EXECUTIONS
        )
        #: the session's door to the egress proxy (pools with network only)
        self.egress: Gate | None = None
        if egress is not None and pool.network != "off":
            self.egress = egress.gate(self._label, pool_policy(pool), pool.egress)

    def _label(self) -> str:
        return f"{self.pool_name}/{self.identifier or '(unassigned)'}"

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        pool: PoolConfig,
        backend: Backend,
        warm_up: bool = True,
        stats: PoolStats | None = None,
        egress: EgressProxy | None = None,
        slot: Slot | None = None,
    ) -> Session:
        """Reserve a slot (or take ``slot``, made ahead) and fork a kernel into it. Sessions
        for the ready pool also run a throwaway cell, so the user's first cell does not pay the
        copy-on-write faults; an on-demand session skips it (the user's cell would wait for it;
        the zygote's child forked ahead of demand ran it while it waited)."""
        if slot is None:
            slot = await backend.create_slot(pool)
        session = cls(pool, backend, slot, stats, egress)
        try:
            await session._start_kernel()
            if warm_up:
                await session._run_warmup()
        except BaseException:
            await session.close()
            raise
        return session

    async def _start_kernel(self) -> Kernel:
        kernel = await self.backend.spawn(self.pool_config, self.slot)
        if self.egress is not None:
            # every kernel has a network namespace of its own: the proxy's door is opened in
            # it before any code runs there
            try:
                sock = await self.backend.open_listener(kernel, LISTEN_HOST, LISTEN_PORT)
                await self.egress.attach(sock)
            except BaseException:
                kernel.close()
                raise
        self.kernel = kernel
        self.kernels_started += 1
        return kernel

    async def _run_warmup(self) -> None:
        """Run one throwaway cell so the first user cell does not pay the copy-on-write faults."""
        kernel = self.kernel
        assert kernel is not None
        await kernel.send({"op": "execute", "id": 0, "code": protocol.WARMUP_CELL, "silent": True})
        await kernel.read(1 << 20, 0, 1 << 20)

    @property
    def expires_at(self) -> float:
        return max(self.last_used + self.pool_config.cooldown_seconds, self.kept_until)

    def keep_alive_until(self, when: float) -> None:
        """Not reaped for idleness before ``when`` (an E2B sandbox lives to its end however
        idle); a later call moves it, earlier or later."""
        self.kept_until = when

    def touch(self) -> None:
        self.last_used = time.time()

    # -- network ----------------------------------------------------------------------------

    def usage(self) -> tuple[int | None, float | None]:
        """Memory in use (bytes) and CPU time used (seconds), where the backend measures them
        (a few small reads of the session's cgroups)."""
        kernel = self.kernel
        return self.backend.usage(self.slot, kernel.pid if kernel is not None else None)

    def network(self) -> dict[str, object]:
        """The session's egress policy (secrets by domain and header name, never values)."""
        if self.egress is None:
            return {"mode": "off", "allow": [], "secrets": {}, "recent": []}
        recent = [
            {"time": t, "host": host, "port": port, "verdict": verdict, "reason": reason}
            for t, host, port, verdict, reason in list(self.egress.decisions)
        ]
        return {**self.egress.policy.describe(), "recent": recent}

    async def set_network(
        self,
        mode: str,
        allow: Sequence[str] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, object]:
        """Narrow the session's egress from its pool's (never wider: ``EgressWidens``); holds
        at once, and open connections the new policy does not admit are closed."""
        if mode not in ("off", "allowlist", "on"):
            raise errors.InvalidArgument(
                f"network mode {mode!r}: expected off, allowlist or on", "network"
            )
        base = pool_policy(self.pool_config)
        policy = narrow(self.pool_name, base, mode, allow, secrets)  # type: ignore[arg-type]
        if self.egress is None:
            if policy.mode != "off":
                # not a sandbox failure (a 503 clients would retry): it can never work here
                raise errors.InvalidArgument(
                    f"session {self._label()}: the {self.backend.name} backend gives sessions "
                    "no network of their own, so no egress policy can be enforced for them "
                    "(their network is the host's); serve with the jail backend",
                    "network",
                )
            return policy.describe()
        self.egress.set_policy(policy)
        log.info("session %s: network now %s", self._label(), policy.describe())
        return self.network()

    async def set_memory_limit(self, memory_bytes: int) -> None:
        """Lower the session's memory limit (``InvalidArgument`` above its pool's); holds for
        every kernel the session runs from now on."""
        ceiling = self.pool_config.limits.memory_bytes
        if not 0 < memory_bytes <= ceiling:
            raise errors.InvalidArgument(
                f"memory limit {memory_bytes} bytes: a session of pool {self.pool_name!r} may "
                f"have at most its pool's {ceiling} bytes",
                "memory_limit",
            )
        await asyncio.to_thread(self.backend.set_memory_limit, self.slot, memory_bytes)
        log.info("session %s: memory limit now %d bytes", self._label(), memory_bytes)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.close()
            await kernel.wait_exit(2.0)
        self._processes_lost("the session ended")
        await self._stop_pump()
        if self.egress is not None:
            self.egress.close()
        await asyncio.to_thread(self.backend.release_slot, self.slot)

    def _error(self, message: str) -> errors.InterpreterLost:
        return errors.InterpreterLost(self.pool_name, self.identifier or "(unassigned)", message)

    async def _ensure_kernel(self) -> tuple[Kernel, str]:
        """The live kernel, or a fresh one; the note says why state was lost, if it was."""
        if self.closed:
            raise errors.SessionNotFound(self.pool_name, self.identifier)
        if self.kernel is not None and self.kernel.alive():
            return self.kernel, ""
        note = ""
        if self.kernel is not None:
            # it ended between calls (a background thread exited, an OOM kill ...)
            note = await self._kill_kernel(self.kernel)
            self._ended("exited", note)
        try:
            return await self._start_kernel(), note
        except Exception as exc:
            raise self._error(f"a new interpreter could not be started: {exc}") from exc

    def _ended(self, cause: str, reason: str) -> None:
        """Count and log the end of an interpreter (``telemetry.KILL_CAUSES``)."""
        # the backend's account of an exit says so when the OOM killer ended it
        if "out of memory" in reason:
            cause = "oom"
        self.stats.kills[cause] += 1
        log.warning(
            "pool %s: session %s: interpreter ended (%s): %s",
            self.pool_name,
            self.identifier or "(unassigned)",
            cause,
            reason,
        )

    async def _kill_kernel(self, kernel: Kernel) -> str:
        kernel.close()
        status = await kernel.wait_exit(1.0)
        if self.kernel is kernel:
            self.kernel = None
        reason = self.backend.describe_exit(self.slot, status)
        self._processes_lost(f"the session's interpreter ended ({reason})")
        return reason

    # -- execution ------------------------------------------------------------------------------

    def _limits(self) -> tuple[int, int, int]:
        limits = self.pool_config.limits
        max_header = 8 * limits.output_bytes + (1 << 20)
        max_total = max_header + limits.images_per_execution * limits.image_bytes
        return max_header, limits.image_bytes, max_total

    def _deadline(self, timeout: float | None) -> float:
        default = self.pool_config.execution_timeout_seconds
        if timeout is None or timeout <= 0:
            return default
        return min(timeout, default)

    async def _roundtrip(
        self,
        request: dict[str, Any],
        timeout: float | None,
        on_output: Callable[[str, str], None] | None = None,
    ) -> tuple[str, dict[str, Any], list[bytes], str]:
        """Send one request; returns (outcome, header, blobs, note).

        outcome: "ok" (reply in time), "interrupted" (reply after SIGINT, state kept),
        "killed" (no reply after SIGINT: the kernel was killed), "died" (it ended by itself).
        The deadline is two timers (SIGINT, then SIGKILL after the grace period), so the
        common path awaits the reply and nothing else.
        """
        await self._settle_abandoned()
        kernel, replaced = await self._ensure_kernel()
        self._replaced_note = replaced
        rid = next(_ids)
        deadline = self._deadline(timeout)
        grace = self.pool_config.interrupt_grace_seconds
        self._expecting += 1  # until _read_reply ends
        try:
            await kernel.send({**request, "id": rid})
        except KernelDied:
            self._expecting -= 1
            reason = await self._kill_kernel(kernel)
            self._ended("exited", reason)
            return "died", {}, [], reason
        loop = asyncio.get_running_loop()
        phase = "running"
        kill_timer: asyncio.TimerHandle | None = None

        def kill() -> None:
            nonlocal phase
            phase = "killed"
            kernel.signal(signal.SIGKILL)  # the reader then sees EOF

        def interrupt() -> None:
            nonlocal phase, kill_timer
            phase = "interrupted"
            kernel.signal(signal.SIGINT)
            kill_timer = loop.call_later(grace, kill)

        timer = loop.call_later(deadline, interrupt)
        reply = asyncio.ensure_future(self._read_reply(kernel, rid, on_output))
        try:
            header, blobs = await asyncio.shield(reply)
        except KernelDied:
            reason = await self._kill_kernel(kernel)
            if phase == "killed":
                self.stats.timeouts["killed"] += 1
                self._ended("timeout", reason)
                return (
                    "killed",
                    {},
                    [],
                    f"timed out after {deadline:g} s and did not stop within {grace:g} s of "
                    f"the interrupt; the interpreter was killed ({reason})",
                )
            self._ended("exited", reason)
            return "died", {}, [], reason
        except protocol.FrameError as exc:
            await self._kill_kernel(kernel)
            self._ended("protocol", str(exc))
            return "died", {}, [], f"the interpreter sent a malformed reply ({exc}) and was killed"
        except asyncio.CancelledError:
            # Nobody waits for this cell any more: interrupt it, and let the next call collect
            # its reply first, so replies never reach the wrong caller.
            kernel.signal(signal.SIGINT)
            self._abandoned = reply
            # a session closed before that next call: its end is nobody's error
            reply.add_done_callback(_observed)
            raise
        finally:
            timer.cancel()
            if kill_timer is not None:
                kill_timer.cancel()
        if phase == "interrupted":
            self.stats.timeouts["interrupted"] += 1
            log.warning(
                "pool %s: session %s: timed out after %g s; interrupted",
                self.pool_name,
                self.identifier,
                deadline,
            )
            return "interrupted", header, blobs, f"timed out after {deadline:g} s"
        return "ok", header, blobs, ""

    async def _read_reply(
        self,
        kernel: Kernel,
        rid: int,
        on_output: Callable[[str, str], None] | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        #: streamed output forwarded, bounded like the output the reply carries
        budget = self.pool_config.limits.output_bytes
        self._readers += 1
        try:
            return await self._read_reply_loop(kernel, rid, on_output, budget)
        finally:
            self._readers -= 1
            self._expecting -= 1
            if not self._expecting:
                while not self._inbox.empty():  # stale: no call is due a reply
                    self._inbox.get_nowait()
            self._maybe_pump()

    async def _next_message(self, kernel: Kernel) -> tuple[dict[str, Any], list[bytes]]:
        """The kernel's next message for a call: from the socket, or from the pump's inbox
        while it reads the socket (processes of this kernel are running)."""
        if self._pump_kernel is kernel:
            if self._inbox.empty() and self._pump_error is not None:
                raise self._pump_error
            item = await self._inbox.get()
            if isinstance(item, BaseException):
                raise item
            return item
        return await kernel.read(*self._limits())

    async def _read_reply_loop(
        self,
        kernel: Kernel,
        rid: int,
        on_output: Callable[[str, str], None] | None,
        budget: int,
    ) -> tuple[dict[str, Any], list[bytes]]:
        while True:
            header, blobs = await self._next_message(kernel)
            if self._route_process_message(header, blobs):
                continue
            if header.get("op") == "chunk":
                name, text = header.get("name"), header.get("text")
                if (
                    on_output is not None
                    and header.get("id") == rid
                    and name in ("stdout", "stderr")
                    and isinstance(text, str)
                    and budget > 0
                ):
                    text = text[:budget]
                    budget -= len(text)
                    on_output(name, text)
                continue  # streamed output of this call, or a late chunk of an earlier one
            if header.get("id") == rid:
                return header, blobs
            # a late reply to a call whose caller went away: drop it

    async def _settle_abandoned(self) -> None:
        """Collect the reply of an abandoned call (or kill its kernel if it will not stop)."""
        reply, self._abandoned = self._abandoned, None
        if reply is None or reply.done():
            if reply is not None and not reply.cancelled():
                reply.exception()  # retrieved: nobody needs it
            return
        try:
            await asyncio.wait_for(reply, self.pool_config.interrupt_grace_seconds)
        except BaseException:
            if self.kernel is not None:
                reason = await self._kill_kernel(self.kernel)
                self._ended("abandoned", reason)

    async def execute(
        self,
        code: str,
        timeout: float | None = None,
        on_output: Callable[[str, str], None] | None = None,
        context: str | None = None,
    ) -> ExecutionResult:
        """Run ``code``. ``on_output(name, text)``, if given, is called (in the event loop) with
        stdout and stderr as the cell writes them; the result still carries all of it.

        ``context`` names a separate namespace in the same interpreter (E2B's code contexts:
        own variables, shared files and process); None is the session's default namespace.
        """
        request: dict[str, Any] = {}
        if on_output is not None:
            request["stream"] = True
        if context:
            request["context"] = context
        async with self._lock:
            self.touch()
            self.busy = True
            limits = self.pool_config.limits
            began = time.perf_counter()
            try:
                outcome, header, blobs, note = await self._roundtrip(
                    {
                        "op": "execute",
                        "code": code,
                        "output_limit": limits.output_bytes,
                        "image_limit": limits.image_bytes,
                        "max_images": limits.images_per_execution,
                        **request,
                    },
                    timeout,
                    on_output,
                )
            finally:
                self.busy = False
                self.touch()
        stats = self.stats
        elapsed = time.perf_counter() - began
        stats.execution_seconds.observe(elapsed)
        started = time.time() - elapsed
        if outcome in ("killed", "died"):
            status = ExecutionStatus.TIMEOUT if outcome == "killed" else ExecutionStatus.LOST
            stats.executions[status] += 1
            self.recent.append((started, status.value, elapsed * 1000))
            message = (
                f"{note}. Variables and imports of this session are lost; files in /mnt/data "
                "are kept. The next call starts a fresh interpreter."
            )
            return ExecutionResult(
                status=status,
                stdout="",
                stderr=message + "\n",
                result=None,
                error=ErrorInfo(
                    "TimeoutError" if outcome == "killed" else "SessionLost", note, message
                ),
                state_lost=True,
            )
        result = self._to_result(outcome, header, blobs, note)
        stats.executions[result.status] += 1
        self.recent.append((started, result.status.value, elapsed * 1000))
        if self._replaced_note:
            message = (
                f"note: the previous interpreter of this session had ended "
                f"({self._replaced_note}); this code ran in a fresh one. Earlier variables and "
                "imports are lost; files in /mnt/data are kept.\n"
            )
            result = dataclasses.replace(result, stderr=message + result.stderr, state_lost=True)
        return result

    def _to_result(
        self, outcome: str, header: dict[str, Any], blobs: list[bytes], note: str
    ) -> ExecutionResult:
        if header.get("op") != "result":
            detail = header.get("detail", header.get("op"))
            raise errors.ProtocolError(self.pool_name, self.identifier, f"bad reply: {detail}")
        try:
            raw_result = protocol.resolve_blobs(header.get("result"), blobs)
            raw_displays = protocol.resolve_blobs(header.get("displays") or [], blobs)
        except protocol.FrameError as exc:
            raise errors.ProtocolError(self.pool_name, self.identifier, str(exc)) from None
        result = _bundle(raw_result)
        displays = [d for d in (_bundle(x) for x in raw_displays) if d is not None]
        raw_error = header.get("error")
        error = None
        if isinstance(raw_error, dict):
            error = ErrorInfo(
                str(raw_error.get("ename", "")),
                str(raw_error.get("evalue", "")),
                str(raw_error.get("traceback", "")),
            )
        stderr = _text(header.get("stderr"))
        if outcome == "interrupted":
            status = ExecutionStatus.TIMEOUT
            stderr += (
                f"\nExecution {note} and was interrupted (KeyboardInterrupt); the session's "
                "variables are kept.\n"
            )
        elif error is not None:
            status = ExecutionStatus.ERROR
        else:
            status = ExecutionStatus.OK
        duration = header.get("duration_ms", 0.0)
        return ExecutionResult(
            status=status,
            stdout=_text(header.get("stdout")),
            stderr=stderr,
            result=result,
            displays=displays,
            error=error,
            truncated=bool(header.get("truncated")),
            duration_ms=float(duration) if isinstance(duration, (int, float)) else 0.0,
        )

    async def reset_context(self, name: str) -> None:
        """Drop the named namespace; its next cell starts with fresh variables (files stay)."""
        async with self._lock:
            self.touch()
            outcome, header, _, note = await self._roundtrip(
                {"op": "context_reset", "context": name}, None
            )
        if outcome in ("killed", "died"):
            return  # the interpreter is gone, and every namespace with it
        if header.get("op") != "context_reset":
            raise self._error(f"context reset failed: {header.get('detail', note)}")

    async def run_shell(self, command: str, timeout: float | None = None) -> ShellResult:
        async with self._lock:
            self.touch()
            self.busy = True
            try:
                outcome, header, _, note = await self._roundtrip(
                    {
                        "op": "shell",
                        "command": command,
                        "output_limit": self.pool_config.limits.output_bytes,
                    },
                    timeout,
                )
            finally:
                self.busy = False
                self.touch()
        if outcome in ("killed", "died"):
            return ShellResult(
                exit_code=137, stdout="", stderr=note + "\n", timed_out=outcome == "killed"
            )
        if header.get("op") != "shell_result":
            raise errors.ProtocolError(self.pool_name, self.identifier, "bad shell reply")
        code = header.get("exit_code")
        stderr = _text(header.get("stderr"))
        if outcome == "interrupted":
            stderr += f"\ncommand {note} and was killed\n"
        duration = header.get("duration_ms", 0.0)
        return ShellResult(
            exit_code=code if isinstance(code, int) else 1,
            stdout=_text(header.get("stdout")),
            stderr=stderr,
            truncated=bool(header.get("truncated")),
            timed_out=outcome == "interrupted",
            duration_ms=float(duration) if isinstance(duration, (int, float)) else 0.0,
        )

    async def interrupt(self) -> None:
        """Send KeyboardInterrupt to the running cell (no effect when idle)."""
        if self.kernel is not None:
            self.kernel.signal(signal.SIGINT)

    # -- files (served by the host, never through the kernel) ----------------------------------

    @contextlib.contextmanager
    def _files(self) -> Iterator[None]:
        """A file operation of this session: refused once it is closed; a workspace's error
        (which knows no session) is told which pool and session it concerns."""
        if self.closed:
            raise errors.SessionNotFound(self.pool_name, self.identifier)
        self.touch()
        try:
            yield
        except errors.FileError as exc:
            exc.pool, exc.identifier = self.pool_name, self.identifier
            raise

    async def write_file(self, path: str, data: bytes | AsyncIterator[bytes]) -> FileInfo:
        with self._files():
            info = await self.slot.workspace.write(path, data)
        self.stats.uploads += 1
        self.stats.upload_bytes += info.size
        written = FILES_WRITTEN.get()
        if written is not None:
            written.append(info.path)
        return info

    async def read_file(self, path: str) -> bytes:
        with self._files():
            return await asyncio.to_thread(self.slot.workspace.read, path)

    def open_file(self, path: str) -> tuple[FileInfo, Iterator[bytes]]:
        """Stat and open now, stream later (for large downloads)."""
        with self._files():
            return self.slot.workspace.iter_read(path)

    async def download(self, path: str) -> tuple[FileInfo, Iterator[bytes]]:
        return self.open_file(path)

    async def stat_file(self, path: str) -> FileInfo:
        with self._files():
            return self.slot.workspace.stat(path)

    async def list_files(self, path: str = "", recursive: bool = False) -> list[FileInfo]:
        with self._files():
            return await asyncio.to_thread(self.slot.workspace.list, path, recursive)

    async def delete_file(self, path: str) -> None:
        with self._files():
            await asyncio.to_thread(self.slot.workspace.delete, path)

    async def make_dir(self, path: str) -> bool:
        """Create a directory (and its parents) in /mnt/data; False if it existed."""
        with self._files():
            return await asyncio.to_thread(self.slot.workspace.make_dir, path)

    async def move_file(self, source: str, destination: str) -> FileInfo:
        """Rename a file or directory inside /mnt/data."""
        with self._files():
            return await asyncio.to_thread(self.slot.workspace.move, source, destination)

    # -- processes (the E2B process service; the kernel runs and supervises them) ------------
    #
    # Process requests do not wait for a running cell: the kernel answers them from its reader
    # thread, and their replies and output share the socket with the cell's. Whoever reads the
    # socket routes them: the running call's ``_read_reply``, or between calls the pump, which
    # starts with the first process and reads until the kernel ends.

    async def start_process(self, spec: ProcessSpec) -> ProcessHandle:
        """Start a process; its handle's events begin with its first output."""
        request: dict[str, Any] = {
            "op": "proc_start",
            "cmd": spec.cmd,
            "args": list(spec.args),
            "envs": dict(spec.envs),
            "cwd": spec.cwd,
            "tag": spec.tag,
            "stdin": spec.stdin,
            "output_limit": self.pool_config.limits.output_bytes,
        }
        if spec.pty is not None:
            request["pty"] = {"cols": spec.pty[0], "rows": spec.pty[1]}
        _, record = await self._process_call(request)
        assert record is not None
        return ProcessHandle(self, record, record.subscribers[0])

    def connect_process(self, pid: int) -> ProcessHandle:
        """Follow a running process's events from now on (output already sent is not kept)."""
        record = self._procs.get(pid)
        if record is None or self.closed:
            raise errors.ObjectNotFound("process", str(pid))
        queue: asyncio.Queue[ProcessEvent] = asyncio.Queue()
        record.subscribers.append(queue)
        return ProcessHandle(self, record, queue)

    async def list_processes(self) -> list[ProcessInfo]:
        header, _ = await self._process_call({"op": "proc_list"})
        infos = []
        for raw in header.get("processes") or []:
            if isinstance(raw, dict) and isinstance(raw.get("pid"), int):
                infos.append(_process_info(raw))
        return infos

    async def send_process_input(self, pid: int, data: bytes) -> None:
        # latin-1 carries any bytes in a JSON string, one character each
        await self._process_call({"op": "proc_input", "pid": pid, "data": data.decode("latin-1")})

    async def close_process_stdin(self, pid: int) -> None:
        await self._process_call({"op": "proc_close_stdin", "pid": pid})

    async def signal_process(self, pid: int, sig: int) -> None:
        """Send ``sig`` (SIGTERM, SIGKILL, SIGINT or SIGHUP) to the process and its group."""
        await self._process_call({"op": "proc_signal", "pid": pid, "signal": int(sig)})

    async def resize_process(self, pid: int, cols: int, rows: int) -> None:
        await self._process_call({"op": "proc_resize", "pid": pid, "cols": cols, "rows": rows})

    async def _process_call(
        self, request: dict[str, Any], timeout: float = 30.0
    ) -> tuple[dict[str, Any], _ProcessRecord | None]:
        if self.closed:
            raise errors.SessionNotFound(self.pool_name, self.identifier)
        self.touch()
        kernel = self.kernel
        if kernel is None or not kernel.alive():
            async with self._lock:  # a dead kernel is replaced as a call would replace it
                kernel, _ = await self._ensure_kernel()
        rid = next(_ids)
        waiter: asyncio.Future[tuple[dict[str, Any], _ProcessRecord | None]]
        waiter = asyncio.get_running_loop().create_future()
        self._proc_waiters[rid] = waiter
        try:
            try:
                await kernel.send({**request, "id": rid})
            except KernelDied:
                raise self._error("the session's interpreter ended") from None
            self._maybe_pump()
            try:
                header, record = await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise self._error("the interpreter did not answer a process request") from None
        finally:
            self._proc_waiters.pop(rid, None)
        op = header.get("op")
        if op == "proc_error":
            detail = _text(header.get("detail"))
            if header.get("kind") == "not_found":
                raise errors.ObjectNotFound("process", str(request.get("pid")))
            raise errors.InvalidArgument(detail or "the process request was refused")
        if op == "bad-request":
            raise errors.InvalidArgument(
                f"processes are not supported by this pool's runtime ({self.pool_config.runtime})"
            )
        return header, record

    def _route_process_message(self, header: dict[str, Any], blobs: list[bytes]) -> bool:
        """Deliver a process message (output, an end, a reply to a process request); False
        for every other message."""
        op = header.get("op")
        if op == "proc_data" or op == "proc_end":
            record = self._procs.get(header.get("pid"))  # type: ignore[arg-type]
            if record is not None:
                if op == "proc_data":
                    stream = header.get("stream")
                    if stream in ("stdout", "stderr", "pty") and len(blobs) == 1:
                        record.output(str(stream), blobs[0])
                else:
                    del self._procs[record.pid]
                    code = header.get("exit_code")
                    sig = header.get("signal")
                    dropped = header.get("dropped")
                    record.end(
                        ProcessEvent(
                            "end",
                            exit_code=code if isinstance(code, int) else -1,
                            signal=sig if isinstance(sig, int) else None,
                            dropped=(dropped if isinstance(dropped, int) else 0) + record.dropped,
                        )
                    )
            return True
        rid = header.get("id")
        waiter = self._proc_waiters.get(rid) if isinstance(rid, int) else None
        if waiter is None:
            return False
        record = None
        if op == "proc_started" and isinstance(header.get("pid"), int):
            # registered before anyone awaits: its output may be the very next message
            record = _ProcessRecord(header["pid"], self.pool_config.limits.output_bytes)
            self._procs[record.pid] = record
        if not waiter.done():
            waiter.set_result((header, record))
        return True

    def _maybe_pump(self) -> None:
        """Start reading the socket between calls when processes need it and no call reads."""
        kernel = self.kernel
        if (
            self._readers
            or kernel is None
            or self.closed
            or not (self._procs or self._proc_waiters)
            or (self._pump_kernel is kernel)
        ):
            return
        self._pump_kernel = kernel
        self._pump_error = None
        # a few messages at most: the pump waits for the call to take them (as the socket
        # would make the kernel wait), so a flood is never buffered in the server
        self._inbox = asyncio.Queue(maxsize=4)
        self._pump = asyncio.ensure_future(self._pump_loop(kernel))

    async def _pump_loop(self, kernel: Kernel) -> None:
        try:
            while True:
                header, blobs = await kernel.read(*self._limits())
                if not self._route_process_message(header, blobs) and self._expecting:
                    await self._inbox.put((header, blobs))
        except (KernelDied, protocol.FrameError) as exc:
            if isinstance(exc, protocol.FrameError):
                kernel.signal(signal.SIGKILL)  # a hostile kernel: as a call would
            self._pump_error = exc
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(exc)  # wakes a call waiting (it finds the error anyway)
            if self.kernel is kernel or self.kernel is None:
                self._processes_lost("the session's interpreter ended")

    async def _stop_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    def _processes_lost(self, reason: str) -> None:
        """The kernel ended, and its processes with it (they live in its pid namespace)."""
        records, self._procs = self._procs, {}
        for record in records.values():
            record.end(ProcessEvent("end", exit_code=-1, signal=signal.SIGKILL, error=reason))
        for waiter in self._proc_waiters.values():
            if not waiter.done():
                waiter.set_exception(self._error(reason))


class _ProcessRecord:
    """A running process of the current kernel: where its events go."""

    def __init__(self, pid: int, output_limit: int) -> None:
        self.pid = pid
        #: one queue per follower (the starter's first); bounded by the output budget below
        self.subscribers: list[asyncio.Queue[ProcessEvent]] = [asyncio.Queue()]
        #: output bytes still forwarded (the kernel bounds them too; it is not trusted)
        self.budget = output_limit
        self.dropped = 0

    def output(self, stream: str, data: bytes) -> None:
        if len(data) > self.budget:
            self.dropped += len(data) - self.budget
            data = data[: self.budget]
        if not data:
            return
        self.budget -= len(data)
        event = ProcessEvent(stream, data)
        for queue in self.subscribers:
            queue.put_nowait(event)

    def end(self, event: ProcessEvent) -> None:
        for queue in self.subscribers:
            queue.put_nowait(event)


class ProcessHandle:
    """One follower of a process: its events until the end, and the controls."""

    def __init__(
        self, session: Session, record: _ProcessRecord, queue: asyncio.Queue[ProcessEvent]
    ) -> None:
        self.pid = record.pid
        self._session = session
        self._record = record
        self._queue = queue

    async def events(self) -> AsyncGenerator[ProcessEvent, None]:
        """Output events, then one ``end`` event; following stops when the iterator does."""
        try:
            while True:
                event = await self._queue.get()
                yield event
                if event.kind == "end":
                    return
        finally:
            self.detach()

    def detach(self) -> None:
        """Stop following (the process runs on)."""
        with contextlib.suppress(ValueError):
            self._record.subscribers.remove(self._queue)


def _process_info(raw: dict[str, Any]) -> ProcessInfo:
    args = raw.get("args")
    envs = raw.get("envs")
    tag = raw.get("tag")
    return ProcessInfo(
        pid=raw["pid"],
        cmd=_text(raw.get("cmd")),
        args=tuple(str(a) for a in args) if isinstance(args, list) else (),
        envs={str(k): str(v) for k, v in envs.items()} if isinstance(envs, dict) else {},
        cwd=_text(raw.get("cwd")),
        tag=tag if isinstance(tag, str) else None,
        pty=bool(raw.get("pty")),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _bundle(raw: Any) -> DisplayData | None:
    if not isinstance(raw, dict) or not raw:
        return None
    data: dict[str, str | bytes] = {}
    for mime, value in raw.items():
        if isinstance(value, (str, bytes)):
            data[str(mime)] = value
    return DisplayData(data) if data else None


def _observed(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned reply's outcome as seen, so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()
