"""envd's filesystem service (``/filesystem.Filesystem/``) on the session's workspace.

Every operation is one of the session's link-safe file operations (see ``common`` for paths).
Watching polls the workspace (E2B's envd uses inotify inside the sandbox; the server here sees
the workspace from the host side and never runs code for it): a snapshot of names, sizes and
modification times every ``POLL_SECONDS``, its differences reported as create, write and remove
events.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from sessionpool import errors
from sessionpool.faces.e2b.envd import filesystem_pb as pb
from sessionpool.faces.e2b.envd.common import (
    as_connect_errors,
    current_request,
    root_of,
    session_for,
    to_client,
    to_session,
)
from sessionpool.faces.e2b.envd.filesystem_connect import Filesystem
from sessionpool.faces.e2b.routing import FACE_KEY, current_sandbox
from sessionpool.pool.api import SessionHandle
from sessionpool.tenancy import Scope
from sessionpool.types import FileInfo

#: how often a watch looks at the workspace
POLL_SECONDS = 0.5
#: keepalive events on a quiet watch stream, so proxies keep the connection
KEEPALIVE_SECONDS = 30.0
#: watchers (CreateWatcher) a sandbox may hold at once
MAX_WATCHERS = 16

Snapshot = dict[str, tuple[int, float, bool]]


def _mode(info: FileInfo) -> tuple[int, str]:
    if info.is_dir:
        return 0o40755, "drwxr-xr-x"
    return 0o100644, "-rw-r--r--"


def entry(info: FileInfo, root: str) -> pb.EntryInfo:
    mode, permissions = _mode(info)
    seconds = int(info.mtime)
    return pb.EntryInfo(
        name=info.name if info.path else root.rsplit("/", 1)[-1],
        type=pb.FileType.DIRECTORY if info.is_dir else pb.FileType.FILE,
        path=to_client(info.path, root),
        size=info.size,
        mode=mode,
        permissions=permissions,
        # the sandbox's one user: the SDKs' "user" and "root" are both this user
        owner="user",
        group="user",
        modified_time=Timestamp(seconds=seconds, nanos=int((info.mtime - seconds) * 1e9)),
    )


async def _snapshot(session: SessionHandle, path: str, recursive: bool) -> Snapshot:
    return {f.path: (f.size, f.mtime, f.is_dir) for f in await session.list_files(path, recursive)}


def _changes(before: Snapshot, after: Snapshot, base: str) -> list[pb.FilesystemEvent]:
    """Events for what changed, named relative to the watched directory (as envd does)."""
    cut = len(base) + 1 if base else 0
    events = []
    for name in sorted(after.keys() - before.keys()):
        events.append(pb.FilesystemEvent(name=name[cut:], type=pb.EventType.CREATE))
    for name in sorted(after.keys() & before.keys()):
        if after[name] != before[name] and not after[name][2]:
            events.append(pb.FilesystemEvent(name=name[cut:], type=pb.EventType.WRITE))
    for name in sorted(before.keys() - after.keys()):
        events.append(pb.FilesystemEvent(name=name[cut:], type=pb.EventType.REMOVE))
    return events


@dataclass
class _Watcher:
    path: str
    recursive: bool
    snapshot: Snapshot


class FilesystemService(Filesystem):
    """The filesystem service; state (watchers) is kept per sandbox."""

    def __init__(self) -> None:
        #: (sandbox id, watcher id) -> watcher
        self._watchers: dict[tuple[str, str], _Watcher] = {}

    async def _session(self) -> SessionHandle:
        return await session_for(Scope.FILES, "envd filesystem")

    async def stat(
        self, request: pb.StatRequest, ctx: RequestContext[pb.StatRequest, pb.StatResponse], /
    ) -> pb.StatResponse:
        with as_connect_errors():
            session = await self._session()
            info = await session.stat_file(to_session(request.path))
        return pb.StatResponse(entry=entry(info, root_of(request.path)))

    async def make_dir(
        self,
        request: pb.MakeDirRequest,
        ctx: RequestContext[pb.MakeDirRequest, pb.MakeDirResponse],
        /,
    ) -> pb.MakeDirResponse:
        with as_connect_errors():
            session = await self._session()
            path = to_session(request.path)
            if not await session.make_dir(path):
                raise ConnectError(Code.ALREADY_EXISTS, f"{request.path} already exists")
            info = await session.stat_file(path)
        return pb.MakeDirResponse(entry=entry(info, root_of(request.path)))

    async def move(
        self, request: pb.MoveRequest, ctx: RequestContext[pb.MoveRequest, pb.MoveResponse], /
    ) -> pb.MoveResponse:
        with as_connect_errors():
            session = await self._session()
            info = await session.move_file(
                to_session(request.source), to_session(request.destination)
            )
        return pb.MoveResponse(entry=entry(info, root_of(request.destination)))

    async def list_dir(
        self,
        request: pb.ListDirRequest,
        ctx: RequestContext[pb.ListDirRequest, pb.ListDirResponse],
        /,
    ) -> pb.ListDirResponse:
        depth = request.depth or 1
        root = root_of(request.path)
        with as_connect_errors():
            session = await self._session()
            base = to_session(request.path)
            info = await session.stat_file(base)
            if not info.is_dir:
                raise ConnectError(Code.INVALID_ARGUMENT, f"{request.path} is not a directory")
            found = await session.list_files(base, recursive=depth > 1)
        cut = len(info.path) + 1 if info.path else 0
        entries = [entry(f, root) for f in found if f.path[cut:].count("/") < depth]
        return pb.ListDirResponse(entries=entries)

    async def remove(
        self,
        request: pb.RemoveRequest,
        ctx: RequestContext[pb.RemoveRequest, pb.RemoveResponse],
        /,
    ) -> pb.RemoveResponse:
        with as_connect_errors():
            session = await self._session()
            await session.delete_file(to_session(request.path))
        return pb.RemoveResponse()

    async def watch_dir(
        self,
        request: pb.WatchDirRequest,
        ctx: RequestContext[pb.WatchDirRequest, pb.WatchDirResponse],
        /,
    ) -> AsyncIterator[pb.WatchDirResponse]:
        with as_connect_errors():
            session = await self._session()
            path = to_session(request.path)
            await self._check_dir(session, path, request.path)
            before = await _snapshot(session, path, request.recursive)
        start: Oneof[Literal["start"], pb.WatchDirResponse.StartEvent] = Oneof(
            "start", pb.WatchDirResponse.StartEvent()
        )
        yield pb.WatchDirResponse(event=start)
        quiet_since = time.monotonic()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                after = await _snapshot(session, path, request.recursive)
            except errors.ServiceError:
                return  # the directory or the sandbox is gone: the watch ends
            events = _changes(before, after, path)
            before = after
            for event in events:
                change: Oneof[Literal["filesystem"], pb.FilesystemEvent] = Oneof(
                    "filesystem", event
                )
                yield pb.WatchDirResponse(event=change)
            if events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                keep: Oneof[Literal["keepalive"], pb.WatchDirResponse.KeepAlive] = Oneof(
                    "keepalive", pb.WatchDirResponse.KeepAlive()
                )
                yield pb.WatchDirResponse(event=keep)

    @staticmethod
    async def _check_dir(session: SessionHandle, path: str, shown: str) -> None:
        info = await session.stat_file(path)
        if not info.is_dir:
            raise ConnectError(Code.INVALID_ARGUMENT, f"{shown} is not a directory")

    async def create_watcher(
        self,
        request: pb.CreateWatcherRequest,
        ctx: RequestContext[pb.CreateWatcherRequest, pb.CreateWatcherResponse],
        /,
    ) -> pb.CreateWatcherResponse:
        sandbox = current_sandbox_id()
        self._forget_ended_sandboxes()
        with as_connect_errors():
            session = await self._session()
            path = to_session(request.path)
            await self._check_dir(session, path, request.path)
            if sum(1 for s, _ in self._watchers if s == sandbox) >= MAX_WATCHERS:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"a sandbox holds at most {MAX_WATCHERS} watchers: remove one first",
                )
            snapshot = await _snapshot(session, path, request.recursive)
        watcher_id = secrets.token_hex(8)
        self._watchers[sandbox, watcher_id] = _Watcher(path, request.recursive, snapshot)
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self,
        request: pb.GetWatcherEventsRequest,
        ctx: RequestContext[pb.GetWatcherEventsRequest, pb.GetWatcherEventsResponse],
        /,
    ) -> pb.GetWatcherEventsResponse:
        watcher = self._watcher(request.watcher_id)
        with as_connect_errors():
            session = await self._session()
            after = await _snapshot(session, watcher.path, watcher.recursive)
        events = _changes(watcher.snapshot, after, watcher.path)
        watcher.snapshot = after
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(
        self,
        request: pb.RemoveWatcherRequest,
        ctx: RequestContext[pb.RemoveWatcherRequest, pb.RemoveWatcherResponse],
        /,
    ) -> pb.RemoveWatcherResponse:
        self._watcher(request.watcher_id)
        del self._watchers[current_sandbox_id(), request.watcher_id]
        return pb.RemoveWatcherResponse()

    def _forget_ended_sandboxes(self) -> None:
        """Watchers of sandboxes that have ended (killed, timed out) are dropped, so they do
        not pile up over the server's life."""
        registry = current_request().scope[FACE_KEY].registry
        for key in [k for k in self._watchers if registry.get(k[0]) is None]:
            del self._watchers[key]

    def _watcher(self, watcher_id: str) -> _Watcher:
        watcher = self._watchers.get((current_sandbox_id(), watcher_id))
        if watcher is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id!r} not found")
        return watcher


def current_sandbox_id() -> str:
    """Watchers belong to a sandbox: another sandbox naming the id finds nothing."""
    return current_sandbox(current_request()).sandbox_id
