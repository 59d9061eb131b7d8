"""The dashboard's live feed: job and worker changes fanned out to bounded subscriber queues.

A subscriber that falls ``limit`` events behind is dropped (its stream ends and the dashboard
reloads a snapshot), so a slow browser can never make the manager hold unbounded memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..jobs import JobRecord

if TYPE_CHECKING:
    from .observers import Observers
    from .peers import Peer

_END: dict[str, Any] = {}


class EventHub:
    """Observes a manager; ``stream()`` yields its changes as JSON-ready dicts."""

    def __init__(self, observers: Observers, limit: int = 1000) -> None:
        self._limit = limit
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self._credential: dict[asyncio.Queue[dict[str, Any]], str] = {}
        """Whose credential each stream reads under ("" for the manager secret)."""
        observers.append(self)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def job_changed(self, change: str, record: JobRecord) -> None:
        if self._queues:
            self._publish({"kind": "job", "change": change, "job": _summary(record)})

    def worker_changed(self, change: str, peer: Peer) -> None:
        if self._queues:
            self._publish({"kind": "worker", "change": change, "worker": peer.id,
                           "name": peer.name, "at": time.time()})

    def _publish(self, event: dict[str, Any]) -> None:
        for queue in list(self._queues):
            if queue.full():
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(_END)  # the slow subscriber's stream ends
            else:
                queue.put_nowait(event)

    def subscribe(self, credential: str = "") -> asyncio.Queue[dict[str, Any]]:
        """A subscriber's queue, taking events from now on (``stream`` reads it): made before
        the response starts, so a revocation from then on ends it."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._limit)
        self._queues.add(queue)
        self._credential[queue] = credential
        return queue

    async def stream(self, queue: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The events of a ``subscribe``d queue, until the subscriber falls too far behind or
        goes away, or its credential is revoked (``end``)."""
        try:
            while True:
                event = await queue.get()
                if event is _END:
                    return
                yield event
        finally:
            self._queues.discard(queue)
            self._credential.pop(queue, None)

    def end(self, credentials: set[str]) -> None:
        """End the streams read under these credentials (they were revoked)."""
        self._stop([q for q in self._queues if self._credential.get(q) in credentials])

    def close(self) -> None:
        """End every stream (the manager is stopping)."""
        self._stop(list(self._queues))

    def _stop(self, queues: list[asyncio.Queue[dict[str, Any]]]) -> None:
        """Drop what these streams have not read yet; their next read ends them."""
        for queue in queues:
            self._queues.discard(queue)
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_END)


def _summary(record: JobRecord) -> dict[str, Any]:
    """What the dashboard's job list shows; the full record is one ``GET /jobs/{id}`` away."""
    return {
        "id": record.id, "queue": record.queue, "task": record.task,
        "status": record.status.value, "attempts": record.attempts, "worker": record.worker,
        "created_at": record.created_at, "started_at": record.started_at,
        "finished_at": record.finished_at, "parent": record.parent,
        "error_type": (record.error or {}).get("type"),
    }
