"""Read-only views of the manager: jobs, listings and schedules for peers; workers, queues and
tasks for the HTTP API and metrics, which read the manager through this module only."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..errors import SerializationError, StoreError, UnknownJob
from ..jobs import UNFINISHED, JobRecord, JobStatus
from ..protocol.frames import Error, JobInfo, JobList, ListJobs, Lookup, ScheduleInfo, Schedules
from ..store import Store
from ..store.stats import Buckets
from ..tasks import TaskSpec
from . import openapi
from .active import ActiveJobs
from .background import Background
from .dispatcher import Dispatcher
from .health import StoreHealth
from .lease import Lease
from .peers import Peer, Peers
from .registry import TaskRegistry
from .scheduler import Scheduler

if TYPE_CHECKING:
    from .forwarding import ForwardCounts

UNFINISHED_VALUES = frozenset(status.value for status in UNFINISHED)


class Queries:
    """Answers from memory for the jobs held here, from the store for the rest."""

    def __init__(self, active: ActiveJobs, store: Store, peers: Peers, background: Background,
                 dispatcher: Dispatcher, registry: TaskRegistry, scheduler: Scheduler,
                 health: StoreHealth, lease: Lease, forwards: ForwardCounts) -> None:
        self._lease = lease
        self._forwards = forwards
        self._active = active
        self._store = store
        self._peers = peers
        self._background = background
        self._dispatcher = dispatcher
        self._registry = registry
        self._scheduler = scheduler
        self._health = health

    # ------------------------------------------------------------------ peers' requests

    def lookup(self, peer: Peer, frame: Lookup) -> None:
        active = self._active.get(frame.job)
        if active is not None:
            self._peers.reply(peer, JobInfo(frame.ref, active.record.to_wire()))
        else:
            self._background.spawn(self._lookup_stored(peer, frame))

    async def _lookup_stored(self, peer: Peer, frame: Lookup) -> None:
        record = await self.stored(peer, frame.job, frame.ref)
        if record is not None:
            self._peers.reply(peer, JobInfo(frame.ref, record.to_wire()))

    async def stored(self, peer: Peer, job_id: str, ref: int | None) -> JobRecord | None:
        """The stored job, or None once the peer has been told why there is none (or is gone).

        A peer's reads take turns (``Peer.reads``), so one peer asking for many big records at
        once cannot make the manager hold them all.
        """
        try:
            async with peer.reads:
                if peer.id not in self._peers:
                    return None
                record = await self._store.get_job(job_id)
        except StoreError:
            self._peers.store_failed(peer, ref)
            return None
        if record is None:
            self._peers.reply(peer, Error(UnknownJob.code, f"no job {job_id!r}", ref))
        return record

    def list_jobs(self, peer: Peer, frame: ListJobs) -> None:
        self._background.spawn(self._send_page(peer, frame))

    async def _send_page(self, peer: Peer, request: ListJobs) -> None:
        limit, ref = max(1, min(request.limit or 50, 1000)), request.ref
        queues = request.queues
        if peer.grant.queues is not None:  # a credential sees its own queues only
            queues = sorted(peer.grant.queues & set(queues if queues is not None
                                                    else peer.grant.queues))
        try:
            async with peer.reads:  # see ``stored``
                if peer.id not in self._peers:
                    return
                records = await self._store.list_jobs(
                    queue=request.queue, task=request.task,
                    status=JobStatus(request.status) if request.status else None, limit=limit,
                    before=request.before, queues=queues,
                )
        except StoreError:
            self._peers.store_failed(peer, ref)
            return
        jobs = [(self._active[r.id].record if r.id in self._active else r).to_wire()
                for r in records]
        more = len(records) == limit
        while True:  # a page too big for a frame is cut until it fits; ``next`` goes on from it
            frame = JobList(ref, jobs, jobs[-1]["id"] if jobs and more else None)
            try:
                peer.send(frame)
                return
            except SerializationError:
                if len(jobs) <= 1:
                    self._peers.reply(peer, frame)
                    return
                jobs, more = jobs[: len(jobs) // 2], True

    def schedules(self, peer: Peer, frame: Schedules) -> None:
        self._peers.reply(peer, ScheduleInfo(frame.ref, [
            s for s in self._scheduler.info() if peer.grant.covers(s["queue"])]))

    # ------------------------------------------------------------------ read models

    def task_specs(self) -> list[TaskSpec]:
        return list(self._registry.specs.values())

    def task_spec(self, queue: str, name: str) -> TaskSpec | None:
        return self._registry.spec(queue, name)

    def has_worker(self, worker_id: str) -> bool:
        return worker_id in self._dispatcher.workers

    async def workers(self) -> list[dict[str, Any]]:
        """The workers of every manager sharing the store, this one's first; the others' as
        their managers last shared them (at their last lease renewal)."""
        mine = self.local_workers()
        try:
            return mine + await self._store.other_workers(self._lease.owner)
        except StoreError:
            return mine

    def local_workers(self) -> list[dict[str, Any]]:
        """This manager's connected workers as the HTTP API shows them."""
        loop_now, wall_now = asyncio.get_running_loop().time(), time.time()
        out = []
        for worker in self._dispatcher.workers.values():
            session = getattr(self._peers.get(worker.id), "session", None)
            out.append({
                "id": worker.id,
                "name": worker.name,
                "queues": sorted({queue for queue, _ in worker.keys}),
                "tasks": sorted(f"{queue}.{task}" for queue, task in worker.keys),
                "in_flight": len(worker.in_flight),
                "capacity": worker.capacity,
                "connected_at": self._peers.connected_at.get(worker.id),
                "last_heartbeat": (wall_now - (loop_now - session.last_received)
                                   if session is not None else None),
                "paused": worker.paused or self._dispatcher.paused,
                "manager": self._lease.owner,
            })
        return out

    async def queues(self) -> dict[str, dict[str, Any]]:
        """Each queue's job counts by status and its tasks (parameters, options, next fire)."""
        counts = await self._store.count_jobs()
        schedules = {(s["queue"], s["task"]): s for s in self._scheduler.info()}
        queues: dict[str, dict[str, Any]] = {}
        for (queue, status), count in counts.items():
            queues.setdefault(queue, {"counts": {}, "tasks": []})["counts"][status] = count
        for (queue, name), spec in sorted(self._registry.specs.items()):
            entry = queues.setdefault(queue, {"counts": {}, "tasks": []})
            schedule = schedules.get((queue, name))
            entry["tasks"].append({
                "name": name,
                "params": [p.to_wire() for p in spec.params],
                "schema": openapi.parameters_schema(spec.params),
                "options": spec.options.to_wire(),
                "next_fire": schedule["next_fire"] if schedule else None,
            })
        return queues

    async def unfinished(self) -> dict[tuple[str, str], int]:
        """Unfinished jobs by (queue, status), from the store's counts (held here or not)."""
        counts = await self._store.count_jobs()
        return {key: n for key, n in counts.items() if key[1] in UNFINISHED_VALUES}

    async def queued_by_task(self) -> dict[tuple[str, str], tuple[int, float]]:
        """Queued jobs and the oldest one's ``created_at`` per (queue, task), from the store."""
        return await self._store.queued_by_task()

    def jobs_in_flight(self) -> int:
        return sum(len(w.in_flight) for w in self._dispatcher.workers.values())

    def workers_connected(self) -> int:
        """Workers connected over WebSockets (not the manager's own loopback)."""
        return sum(1 for worker_id in self._dispatcher.workers
                   if (peer := self._peers.get(worker_id)) is not None and not peer.local)

    def remote_workers(self) -> dict[str, tuple[int, int]]:
        """(jobs running, slots) of the workers connected over WebSockets, by name (the
        connections of one name summed); the manager's own tasks are not among them."""
        by_name: dict[str, tuple[int, int]] = {}
        for worker in self._dispatcher.workers.values():
            peer = self._peers.get(worker.id)
            if peer is None or peer.local:
                continue
            running, slots = by_name.get(worker.name, (0, 0))
            by_name[worker.name] = (
                running + len(worker.in_flight),
                slots + (worker.capacity or worker.credit + len(worker.in_flight)))
        return by_name

    def commit_stats(self) -> tuple[Buckets, Buckets]:
        """The store's commit durations and writes per commit so far."""
        return self._store.commit_stats.snapshot()

    def forward_counts(self) -> tuple[int, int]:
        """Submits forwarded to other managers so far, and of those the ones that came back."""
        return self._forwards.forwarded, self._forwards.fell_back

    def manager_id(self) -> str:
        """This manager process's id, as ``/workers`` and the store's leases name it."""
        return self._lease.owner

    def store_shared(self) -> bool:
        return self._store.shared

    def lease_held(self) -> bool:
        """Whether this manager's lease lets it assign jobs (always, on an unshared store)."""
        return self._lease.problem is None

    def store_writable(self) -> bool:
        return self._health.writable

    async def store_problem(self) -> str | None:
        """Why the store cannot write (probed now, at most once a second) or this manager's
        lease holds its dispatch, or None."""
        return self._lease.problem or await self._health.check()
