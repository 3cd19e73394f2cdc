"""One session: a workspace, a slot of host resources, and the kernel currently serving it.

Executions are serialised (one at a time; later calls queue on a lock). A kernel that dies or
must be killed at a timeout is replaced on next use in the same slot, so the session keeps its
uid, cgroup and files; only the interpreter state is lost, and the caller is told so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from sessionpool import errors, protocol
from sessionpool.config import PoolConfig
from sessionpool.sandbox.backend import Backend, Kernel, KernelDied, Slot
from sessionpool.telemetry import FILES_WRITTEN, PoolStats
from sessionpool.types import (
    DisplayData,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    FileInfo,
    ShellResult,
)

log = logging.getLogger("sessionpool.session")

_ids = itertools.count(1)
WARMUP_CODE = "1 + 1"


class Session:
    def __init__(
        self, pool: PoolConfig, backend: Backend, slot: Slot, stats: PoolStats | None = None
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

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        pool: PoolConfig,
        backend: Backend,
        warm_up: bool = True,
        stats: PoolStats | None = None,
    ) -> Session:
        """Reserve a slot and fork a kernel into it. Sessions for the ready pool also run a
        throwaway cell, so the user's first cell does not pay the copy-on-write faults; an
        on-demand session skips it (the user's cell would wait for it anyway)."""
        slot = await backend.create_slot(pool)
        session = cls(pool, backend, slot, stats)
        try:
            await session._start_kernel()
            if warm_up:
                await session._run_warmup()
        except BaseException:
            await session.close()
            raise
        return session

    async def _start_kernel(self) -> Kernel:
        self.kernel = await self.backend.spawn(self.pool_config, self.slot)
        self.kernels_started += 1
        return self.kernel

    async def _run_warmup(self) -> None:
        """Run one throwaway cell so the first user cell does not pay the copy-on-write faults."""
        kernel = self.kernel
        assert kernel is not None
        await kernel.send({"op": "execute", "id": 0, "code": WARMUP_CODE, "silent": True})
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

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.close()
            await kernel.wait_exit(2.0)
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
        return self.backend.describe_exit(self.slot, status)

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
        try:
            await kernel.send({**request, "id": rid})
        except KernelDied:
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
        max_header, max_blob, max_total = self._limits()
        #: streamed output forwarded, bounded like the output the reply carries
        budget = self.pool_config.limits.output_bytes
        while True:
            header, blobs = await kernel.read(max_header, max_blob, max_total)
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
    ) -> ExecutionResult:
        """Run ``code``. ``on_output(name, text)``, if given, is called (in the event loop) with
        stdout and stderr as the cell writes them; the result still carries all of it."""
        request: dict[str, Any] = {}
        if on_output is not None:
            request["stream"] = True
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
        stats.execution_seconds.observe(time.perf_counter() - began)
        if outcome in ("killed", "died"):
            status = ExecutionStatus.TIMEOUT if outcome == "killed" else ExecutionStatus.LOST
            stats.executions[status] += 1
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
