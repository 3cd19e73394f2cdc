"""Runs in flight: which conversation each holds, cancel requests, and their event streams.

A run's events are kept from its start until a minute after ``done``, so a face may subscribe
at any point (a stream opened just after the run was created, or resumed late) and still see
everything. The ``done`` event also releases the run's conversation for the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sessionpool.agents.records import Records
from sessionpool.agents.types import Run, RunEvent

#: how long a finished run's events stay replayable for late stream subscribers
EVENT_HISTORY_SECONDS = 60.0


class RunEvents:
    def __init__(self, records: Records) -> None:
        self._records = records
        self._active: dict[str, str] = {}  # conversation id -> its run in flight
        self._cancel_requested: set[str] = set()
        self._history: dict[str, list[RunEvent]] = {}
        self._subscribers: dict[str, list[asyncio.Queue[RunEvent]]] = {}

    # --- one run per conversation -----------------------------------------------------------

    def active_run(self, conversation_id: str) -> str | None:
        return self._active.get(conversation_id)

    def claim(self, conversation_id: str, run_id: str) -> None:
        """``run_id`` is now in flight on the conversation (until its ``done``)."""
        self._active[conversation_id] = run_id

    def release(self, conversation_id: str) -> None:
        """Undo ``claim`` for a run that never started."""
        self._active.pop(conversation_id, None)

    def request_cancel(self, run_id: str) -> None:
        self._cancel_requested.add(run_id)

    def cancel_requested(self, run_id: str) -> bool:
        return run_id in self._cancel_requested

    # --- events -----------------------------------------------------------------------------

    def open(self, run_id: str) -> None:
        """Start keeping the run's events (before its first one)."""
        self._history[run_id] = []

    def emit(self, run_id: str, event: RunEvent) -> None:
        history = self._history.get(run_id)
        if history is not None:
            history.append(event)
        for queue in self._subscribers.get(run_id, []):
            queue.put_nowait(event)
        if event.kind == "done":
            self._done(run_id)

    def subscribe(self, run_id: str) -> AsyncIterator[RunEvent]:
        """Events of a run from its start, ending with ``done``.

        Everything since the run started is replayed first, so a face may subscribe at any
        point while the run is in flight (and up to a minute after it ended).
        """
        queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        history = list(self._history.get(run_id, []))
        live = run_id in self._history
        if live:
            self._subscribers.setdefault(run_id, []).append(queue)
        return self._drain(run_id, queue, history, live)

    async def _drain(
        self, run_id: str, queue: asyncio.Queue[RunEvent], history: list[RunEvent], live: bool
    ) -> AsyncIterator[RunEvent]:
        try:
            for event in history:
                yield event
                if event.kind == "done":
                    return
            if not live:  # long finished: its final state, then done
                yield RunEvent(kind="run", run=await self._records.load(Run, run_id))
                yield RunEvent(kind="done")
                return
            while True:
                event = await queue.get()
                yield event
                if event.kind == "done":
                    return
        finally:
            subscribers = self._subscribers.get(run_id)
            if subscribers is not None and queue in subscribers:
                subscribers.remove(queue)

    def _done(self, run_id: str) -> None:
        for conversation, active in list(self._active.items()):
            if active == run_id:
                del self._active[conversation]
        self._cancel_requested.discard(run_id)

        def forget() -> None:
            self._history.pop(run_id, None)
            self._subscribers.pop(run_id, None)

        asyncio.get_running_loop().call_later(EVENT_HISTORY_SECONDS, forget)
