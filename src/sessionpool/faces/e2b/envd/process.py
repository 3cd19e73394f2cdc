"""envd's process service (``/process.Process/``): processes the session's kernel runs in its
jail (``SessionHandle.start_process`` and the rest; docs/protocol.md, *Processes*).

The jail has one user, so the SDKs' ``user`` ("user", "root", sent as a Basic authorization
header) is accepted and ignored: every process runs as the session's own unprivileged user.
A process is named by its pid or by its tag; pids are the session's own (its pid namespace), so
another sandbox's pid names nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any, Literal, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from sessionpool.faces.e2b.envd import process_pb as pb
from sessionpool.faces.e2b.envd.common import as_connect_errors, cwd_in_session, session_for
from sessionpool.faces.e2b.envd.process_connect import Process
from sessionpool.pool.api import ProcessFollower, SessionHandle
from sessionpool.tenancy import Scope
from sessionpool.types import ProcessEvent, ProcessInfo, ProcessSpec

#: keepalive events on a quiet stream, unless the client asks for another interval
#: (``Keepalive-Ping-Interval``, seconds)
KEEPALIVE_SECONDS = 30.0
KEEPALIVE_HEADER = "keepalive-ping-interval"

_SIGNALS = {pb.Signal.SIGTERM: signal.SIGTERM, pb.Signal.SIGKILL: signal.SIGKILL}

R = TypeVar("R", pb.StartResponse, pb.ConnectResponse)


async def _session() -> SessionHandle:
    return await session_for(Scope.EXECUTE, "envd processes")


async def _pid(session: SessionHandle, selector: pb.ProcessSelector | None) -> int:
    """The pid a selector names (a tag is looked up among the running processes)."""
    match selector.selector if selector is not None else None:
        case Oneof(field="pid", value=pid):
            return int(pid)
        case Oneof(field="tag", value=tag):
            for info in await session.list_processes():
                if info.tag == tag:
                    return info.pid
            raise ConnectError(Code.NOT_FOUND, f"no process with tag {tag!r}")
    raise ConnectError(Code.INVALID_ARGUMENT, "a process (pid or tag) is required")


def _keepalive(ctx: RequestContext[Any, Any]) -> float:
    raw = ctx.request_headers.get(KEEPALIVE_HEADER)
    try:
        seconds = float(raw) if raw else KEEPALIVE_SECONDS
    except ValueError:
        seconds = KEEPALIVE_SECONDS
    return min(max(seconds, 1.0), 300.0)


def _event(event: ProcessEvent) -> pb.ProcessEvent:
    if event.kind == "end":
        code = event.exit_code if event.exit_code is not None else -1
        if event.error:
            status = "killed"
        elif event.signal is not None:
            status = f"signal: {signal.Signals(event.signal).name.lower()[3:]}"
            status = "signal: killed" if event.signal == signal.SIGKILL else status
        else:
            status = f"exit status {code}"
        end = pb.ProcessEvent.EndEvent(
            exit_code=code, exited=event.signal is None and not event.error, status=status
        )
        if event.error:
            end.error = event.error
        elif event.dropped:
            end.error = f"{event.dropped} bytes of output were dropped past the session's limit"
        ended: Oneof[Literal["end"], pb.ProcessEvent.EndEvent] = Oneof("end", end)
        return pb.ProcessEvent(event=ended)
    output: Oneof[Literal["stdout", "stderr", "pty"], bytes] = Oneof(
        event.kind,  # type: ignore[arg-type]
        event.data,
    )
    data: Oneof[Literal["data"], pb.ProcessEvent.DataEvent] = Oneof(
        "data",
        pb.ProcessEvent.DataEvent(output=output),  # type: ignore[arg-type]
    )
    return pb.ProcessEvent(event=data)


async def _stream(follower: ProcessFollower, wrap: type[R], keepalive: float) -> AsyncIterator[R]:
    """The start event, the process's events, keepalives while it is quiet."""
    start: Oneof[Literal["start"], pb.ProcessEvent.StartEvent] = Oneof(
        "start", pb.ProcessEvent.StartEvent(pid=follower.pid)
    )
    yield wrap(event=pb.ProcessEvent(event=start))
    events = follower.events()
    # one wait for the next event outlives the keepalives sent meanwhile: cancelling it
    # would end the follower's event generator
    pending: asyncio.Future[ProcessEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                keep: Oneof[Literal["keepalive"], pb.ProcessEvent.KeepAlive] = Oneof(
                    "keepalive", pb.ProcessEvent.KeepAlive()
                )
                yield wrap(event=pb.ProcessEvent(event=keep))
                continue
            finished, pending = pending, None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            yield wrap(event=_event(event))
            if event.kind == "end":
                return
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        follower.detach()
        await events.aclose()


class ProcessService(Process):
    async def start(
        self, request: pb.StartRequest, ctx: RequestContext[pb.StartRequest, pb.StartResponse], /
    ) -> AsyncIterator[pb.StartResponse]:
        config = request.process or pb.ProcessConfig()
        pty = None
        if request.pty is not None:
            size = request.pty.size or pb.PTY.Size(cols=80, rows=24)
            pty = (size.cols or 80, size.rows or 24)
        spec = ProcessSpec(
            cmd=config.cmd,
            args=tuple(config.args),
            envs=dict(config.envs),
            cwd=cwd_in_session(config.cwd if config.has_field("cwd") else None),
            tag=request.tag if request.has_field("tag") else None,
            pty=pty,
            # envd keeps stdin open unless told otherwise (SDKs >= envd 0.3.0 say)
            stdin=request.stdin if request.has_field("stdin") else True,
        )
        with as_connect_errors():
            session = await _session()
            follower = await session.start_process(spec)
        async for response in _stream(follower, pb.StartResponse, _keepalive(ctx)):
            yield response

    async def connect(
        self,
        request: pb.ConnectRequest,
        ctx: RequestContext[pb.ConnectRequest, pb.ConnectResponse],
        /,
    ) -> AsyncIterator[pb.ConnectResponse]:
        with as_connect_errors():
            session = await _session()
            follower = session.connect_process(await _pid(session, request.process))
        async for response in _stream(follower, pb.ConnectResponse, _keepalive(ctx)):
            yield response

    async def list(
        self, request: pb.ListRequest, ctx: RequestContext[pb.ListRequest, pb.ListResponse], /
    ) -> pb.ListResponse:
        with as_connect_errors():
            session = await _session()
            infos = await session.list_processes()
        return pb.ListResponse(processes=[_info(i) for i in infos])

    async def update(
        self,
        request: pb.UpdateRequest,
        ctx: RequestContext[pb.UpdateRequest, pb.UpdateResponse],
        /,
    ) -> pb.UpdateResponse:
        if request.pty is None or request.pty.size is None:
            return pb.UpdateResponse()
        with as_connect_errors():
            session = await _session()
            pid = await _pid(session, request.process)
            await session.resize_process(pid, request.pty.size.cols, request.pty.size.rows)
        return pb.UpdateResponse()

    async def stream_input(
        self,
        request: AsyncIterator[pb.StreamInputRequest],
        ctx: RequestContext[pb.StreamInputRequest, pb.StreamInputResponse],
        /,
    ) -> pb.StreamInputResponse:
        with as_connect_errors():
            session = await _session()
            pid: int | None = None
            async for message in request:
                value = message.event.value if message.event is not None else None
                if isinstance(value, pb.StreamInputRequest.StartEvent):
                    pid = await _pid(session, value.process)
                elif isinstance(value, pb.StreamInputRequest.DataEvent):
                    if pid is None:
                        raise ConnectError(Code.INVALID_ARGUMENT, "start before data")
                    await _send(session, pid, value.input)
        return pb.StreamInputResponse()

    async def send_input(
        self,
        request: pb.SendInputRequest,
        ctx: RequestContext[pb.SendInputRequest, pb.SendInputResponse],
        /,
    ) -> pb.SendInputResponse:
        with as_connect_errors():
            session = await _session()
            await _send(session, await _pid(session, request.process), request.input)
        return pb.SendInputResponse()

    async def send_signal(
        self,
        request: pb.SendSignalRequest,
        ctx: RequestContext[pb.SendSignalRequest, pb.SendSignalResponse],
        /,
    ) -> pb.SendSignalResponse:
        sig = _SIGNALS.get(request.signal)
        if sig is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "signal must be SIGTERM or SIGKILL")
        with as_connect_errors():
            session = await _session()
            await session.signal_process(await _pid(session, request.process), sig)
        return pb.SendSignalResponse()

    async def close_stdin(
        self,
        request: pb.CloseStdinRequest,
        ctx: RequestContext[pb.CloseStdinRequest, pb.CloseStdinResponse],
        /,
    ) -> pb.CloseStdinResponse:
        with as_connect_errors():
            session = await _session()
            await session.close_process_stdin(await _pid(session, request.process))
        return pb.CloseStdinResponse()


async def _send(session: SessionHandle, pid: int, data: pb.ProcessInput | None) -> None:
    match data.input if data is not None else None:
        case Oneof(field="stdin", value=raw) | Oneof(field="pty", value=raw):
            await session.send_process_input(pid, bytes(raw))


def _info(info: ProcessInfo) -> pb.ProcessInfo:
    config = pb.ProcessConfig(cmd=info.cmd, args=list(info.args), envs=dict(info.envs))
    config.cwd = info.cwd
    out = pb.ProcessInfo(config=config, pid=info.pid)
    if info.tag is not None:
        out.tag = info.tag
    return out
