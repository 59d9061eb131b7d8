"""Which job goes to which worker: ready queues, worker credit, least-loaded choice. No I/O.

Jobs wait in one heap per (queue, task), ordered by arrival, so a job that comes back from a lost
worker keeps its place at the front. Taking a job out of its heap is O(1): its entry stays behind
as a tombstone, skipped when it reaches the top. A worker takes jobs only while it has credit
and is not paused; among the workers that can take a job, the one with the fewest jobs in
flight wins.
``assign`` callbacks are how decisions leave this module.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Key = tuple[str, str]
"""(queue, task)"""


@dataclass(slots=True)
class WorkerState:
    """What the dispatcher knows about one connected worker."""

    id: str
    name: str
    keys: set[Key] = field(default_factory=set)
    credit: int = 0
    paused: bool = False
    in_flight: set[str] = field(default_factory=set)
    capacity: int | None = None
    """The worker's max_tasks_per_worker, as it advertised it (for display)."""

    @property
    def available(self) -> bool:
        return self.credit > 0 and not self.paused


class Dispatcher:
    """Matches ready jobs with workers that have credit; calls ``assign(worker, job_id)``."""

    def __init__(self, assign: Callable[[WorkerState, str], None]) -> None:
        self._assign = assign
        self._seq = itertools.count()
        self._pushes = itertools.count()
        self._ready: dict[Key, list[tuple[int, int, str]]] = {}
        self._queued: dict[str, int] = {}
        """job id -> the push number of its live heap entry; other entries are tombstones"""
        self._waiting: dict[Key, int] = {}
        """How many live entries each heap holds (its length counts the tombstones too)."""
        self._order: dict[str, int] = {}
        self._key_of: dict[str, Key] = {}
        self.workers: dict[str, WorkerState] = {}
        self._serving: dict[Key, set[str]] = {}
        self.paused = False
        self._holds: set[str] = set()

    # ------------------------------------------------------------------ jobs

    def enqueue(self, job_id: str, key: Key) -> None:
        """A job is ready to run: assign it now if a worker can take it, else queue it."""
        order = self._order.setdefault(job_id, next(self._seq))
        self._key_of[job_id] = key
        worker = self._pick(key)
        if worker is not None:
            self._give(worker, job_id)
        else:
            push = self._queued[job_id] = next(self._pushes)
            heapq.heappush(self._ready.setdefault(key, []), (order, push, job_id))
            self._waiting[key] = self._waiting.get(key, 0) + 1

    def finished(self, job_id: str, worker_id: str | None) -> None:
        """A job left the running state for good: forget it."""
        self.discard(job_id)
        self._order.pop(job_id, None)
        self._key_of.pop(job_id, None)
        worker = self.workers.get(worker_id) if worker_id else None
        if worker is not None:
            worker.in_flight.discard(job_id)

    def discard(self, job_id: str) -> bool:
        """Take a queued job out of its heap (it finished or was claimed); True if it was there."""
        if self._queued.pop(job_id, None) is None:
            return False
        self._waiting[self._key_of[job_id]] -= 1
        return True

    def take_all(self, key: Key) -> list[str]:
        """Take every queued job of ``key`` out of memory, oldest first (nobody serves it)."""
        heap = sorted(self._ready.pop(key, []))
        jobs = [job_id for _, push, job_id in heap if self._queued.get(job_id) == push]
        for job_id in jobs:
            del self._queued[job_id]
            self._order.pop(job_id, None)
            self._key_of.pop(job_id, None)
        self._waiting.pop(key, None)
        return jobs

    def ready(self, key: Key) -> int:
        """How many jobs of ``key`` wait in memory for a worker."""
        return self._waiting.get(key, 0)

    def slots(self, key: Key) -> int:
        """The slots of the unpaused workers that serve ``key``: what they advertised, else
        their credit and jobs in flight."""
        if self.paused:
            return 0
        total = 0
        for worker_id in self._serving.get(key, ()):
            worker = self.workers[worker_id]
            if not worker.paused:
                total += worker.capacity or worker.credit + len(worker.in_flight)
        return total

    def serves(self, key: Key) -> bool:
        """Whether a connected worker advertised ``key`` (paused or not)."""
        return bool(self._serving.get(key))

    def served(self) -> list[Key]:
        """Every key a connected worker advertised, in order."""
        return sorted(key for key, workers in self._serving.items() if workers)

    def _head(self, key: Key) -> tuple[int, int, str] | None:
        """The oldest live entry of ``key``'s heap, dropping tombstones on the way."""
        heap = self._ready.get(key)
        while heap:
            entry = heap[0]
            if self._queued.get(entry[2]) == entry[1]:
                return entry
            heapq.heappop(heap)
        return None

    # ------------------------------------------------------------------ workers

    def add_worker(self, worker_id: str, name: str) -> WorkerState:
        worker = WorkerState(worker_id, name)
        self.workers[worker_id] = worker
        return worker

    def remove_worker(self, worker_id: str) -> list[str]:
        """A worker is gone; returns the jobs it was running, which the caller requeues."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return []
        for key in worker.keys:
            self._serving.get(key, set()).discard(worker_id)
        return sorted(worker.in_flight, key=lambda j: self._order.get(j, 0))

    def serve(self, worker_id: str, keys: Iterable[Key]) -> None:
        """The worker advertised these tasks."""
        worker = self.workers[worker_id]
        for key in keys:
            worker.keys.add(key)
            self._serving.setdefault(key, set()).add(worker_id)
        self._fill(worker)

    def grant(self, worker_id: str, n: int) -> None:
        worker = self.workers[worker_id]
        worker.credit += n
        self._fill(worker)

    def revoke(self, worker_id: str, n: int) -> None:
        """The worker takes back up to ``n`` credits it has not seen used."""
        worker = self.workers[worker_id]
        worker.credit = max(0, worker.credit - n)

    def claim(self, worker_id: str, job_id: str) -> None:
        """Count ``job_id`` as running on the worker (it kept running across a reconnect)."""
        self.workers[worker_id].in_flight.add(job_id)

    def pause(self, worker_id: str | None, paused: bool) -> None:
        """Pause or resume one worker, or every worker (``worker_id`` None)."""
        if worker_id is None:
            self.paused = paused
            targets = list(self.workers.values())
        else:
            targets = [self.workers[worker_id]]
            targets[0].paused = paused
        if not paused:
            for worker in targets:
                self._fill(worker)

    @property
    def held(self) -> bool:
        """Every assignment stops, whatever the pauses say (the store cannot write, the
        lease is not known to be valid)."""
        return bool(self._holds)

    def hold(self, reason: str, held: bool) -> None:
        """Stop every assignment for ``reason``, or lift that reason; on top of the pauses."""
        if held:
            self._holds.add(reason)
            return
        self._holds.discard(reason)
        if not self._holds:
            for worker in list(self.workers.values()):
                self._fill(worker)

    # ------------------------------------------------------------------ choosing

    def _pick(self, key: Key) -> WorkerState | None:
        if self.paused or self.held:
            return None
        best: WorkerState | None = None
        for worker_id in self._serving.get(key, ()):
            worker = self.workers[worker_id]
            if worker.available and (
                best is None or len(worker.in_flight) < len(best.in_flight)
            ):
                best = worker
        return best

    def _fill(self, worker: WorkerState) -> None:
        """Give the worker ready jobs, oldest first across its tasks, while it has credit.

        Stops as soon as the worker is gone: an assignment can drop it.
        """
        while (worker.available and not self.paused and not self.held
               and self.workers.get(worker.id) is worker):
            best_key: Key | None = None
            best_order = -1
            for key in worker.keys:
                head = self._head(key)
                if head is not None and (best_key is None or head[0] < best_order):
                    best_key, best_order = key, head[0]
            if best_key is None:
                return
            _, _, job_id = heapq.heappop(self._ready[best_key])
            del self._queued[job_id]
            self._waiting[best_key] -= 1
            self._give(worker, job_id)

    def _give(self, worker: WorkerState, job_id: str) -> None:
        worker.credit -= 1
        worker.in_flight.add(job_id)
        self._assign(worker, job_id)
