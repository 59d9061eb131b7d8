"""The manager's brain: handles peers' frames against the store, the dispatcher and the watchers.

Every peer — a WebSocket connection or the manager's own loopback — is a ``Peer``: something
that can be sent frames. ``Core.handle`` takes the frames of one message. Frames that need the
store (submit, done, watch of a finished job, lookup) continue in a task once the store has
answered, which keeps the two promises of the protocol: a job is ``accepted`` only after it is
committed, and a ``result`` is pushed only after it is committed.

Jobs that are not finished live in memory (``active``) as well as in the store, so dispatch needs
no database round trip; finished jobs live only in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..errors import EasyJobsError, ProtocolError, StoreError, UnknownTask
from ..jobs import TERMINAL, JobRecord, JobStatus
from ..protocol.frames import (
    Accepted,
    Assign,
    Credit,
    Done,
    Error,
    Frame,
    JobInfo,
    Lookup,
    Pause,
    Register,
    Result,
    Resume,
    Submit,
    Watch,
)
from ..store import Store
from ..tasks import TaskSpec, spec_from_wire
from .dispatcher import Dispatcher, Key, WorkerState

log = logging.getLogger("easyjobs.manager")


class Peer:
    """One party connected to the manager; subclasses say how frames reach it."""

    def __init__(self, peer_id: str, name: str, role: str) -> None:
        self.id = peer_id
        self.name = name
        self.role = role
        self.watching: set[str] = set()

    def send(self, frame: Frame) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class Active:
    """An unfinished job, as the manager tracks it in memory."""

    record: JobRecord
    worker_id: str | None = None
    finishing: bool = False
    watchers: set[Peer] = field(default_factory=set)


class Core:
    """State and rules of one manager; I/O layers call ``connect``, ``handle``, ``disconnect``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dispatcher = Dispatcher(self._assign)
        self.active: dict[str, Active] = {}
        self.tasks: dict[Key, TaskSpec] = {}
        self.peers: dict[str, Peer] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store and take back every unfinished job (running ones are requeued)."""
        await self.store.open()
        for queue, name, spec in await self.store.load_tasks():
            try:
                self.tasks[(queue, name)] = spec_from_wire(spec)
            except ProtocolError:
                log.warning("ignoring an unreadable stored spec for %s.%s", queue, name)
        jobs = await self.store.unfinished_jobs()
        running = [job.id for job in jobs if job.status is JobStatus.RUNNING]
        if running:
            await self.store.requeue(running)
        for job in jobs:
            job.status, job.worker = JobStatus.QUEUED, None
            self.active[job.id] = Active(job)
            self.dispatcher.enqueue(job.id, (job.queue, job.task))
        if jobs:
            log.info("recovered %d unfinished job(s), %d of them requeued", len(jobs), len(running))

    async def stop(self) -> None:
        """Wait for in-progress store work, then close the store."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.store.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ peers

    def connect(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        if peer.role == "worker":
            self.dispatcher.add_worker(peer.id, peer.name)

    def disconnect(self, peer: Peer) -> None:
        """The peer is gone: drop its watches and requeue what it was running."""
        self.peers.pop(peer.id, None)
        for job_id in peer.watching:
            active = self.active.get(job_id)
            if active is not None:
                active.watchers.discard(peer)
        peer.watching.clear()
        requeued = []
        for job_id in self.dispatcher.remove_worker(peer.id):
            active = self.active.get(job_id)
            if active is None or active.finishing or active.worker_id != peer.id:
                continue
            active.record.status, active.record.worker, active.worker_id = (
                JobStatus.QUEUED, None, None
            )
            requeued.append(job_id)
            self.dispatcher.enqueue(job_id, (active.record.queue, active.record.task))
        if requeued:
            log.warning("worker %s left with %d job(s) running; requeued", peer.name,
                        len(requeued))
            self._spawn(self._write(self.store.requeue(requeued)))

    def handle(self, peer: Peer, frames: list[Frame]) -> None:
        """Act on the frames of one message, in order. ``ProtocolError`` closes the peer."""
        submits: list[Submit] = []
        for frame in frames:
            if isinstance(frame, Submit):
                submits.append(frame)
                continue
            if submits:
                self._submit(peer, submits)
                submits = []
            if isinstance(frame, Done):
                self._done(frame)
            elif isinstance(frame, Credit):
                self.dispatcher.grant(peer.id, frame.n)
            elif isinstance(frame, Watch):
                self._watch(peer, frame.job, frame.ref)
            elif isinstance(frame, Lookup):
                self._lookup(peer, frame)
            elif isinstance(frame, Register):
                self._register(peer, frame)
            elif isinstance(frame, Pause):
                self.dispatcher.pause(peer.id, frame.paused)
            elif isinstance(frame, Resume):
                self._resume(peer, frame.jobs)
            elif isinstance(frame, Error):
                log.warning("peer %s reported %s: %s", peer.name, frame.code, frame.message)
        if submits:
            self._submit(peer, submits)

    # ------------------------------------------------------------------ submitting

    def _submit(self, peer: Peer, frames: list[Submit]) -> None:
        """Validate, dispatch at once, and acknowledge once the store has committed.

        Dispatch does not wait for the insert: the ack does, and so does the result (the store
        applies writes in order, so a job's result is never committed before the job). A job
        id that turns out to exist already in the store is taken back (``_retract``).
        """
        now = time.time()
        items: list[tuple[Submit, JobRecord, bool]] = []
        for frame in frames:
            try:
                self._check(frame)
            except EasyJobsError as exc:
                peer.send(Error(exc.code, str(exc), frame.ref))
                continue
            record = JobRecord(
                id=frame.job, queue=frame.queue, task=frame.task, args=frame.args,
                kwargs=frame.kwargs, parent=frame.parent, created_at=now,
            )
            optimistic = frame.job not in self.active
            if optimistic:
                self.active[record.id] = Active(record)
                self.dispatcher.enqueue(record.id, (record.queue, record.task))
            if frame.watch and frame.job in self.active:
                self._watch(peer, frame.job, None)
            items.append((frame, record, optimistic))
        if items:
            self._spawn(self._commit_submits(peer, items))

    def _check(self, frame: Submit) -> None:
        spec = self.tasks.get((frame.queue, frame.task))
        if spec is None:
            raise UnknownTask(f"no worker has registered task {frame.task!r} in queue "
                              f"{frame.queue!r}")
        spec.check(frame.args, frame.kwargs)

    async def _commit_submits(
        self, peer: Peer, items: list[tuple[Submit, JobRecord, bool]]
    ) -> None:
        try:
            created = await self.store.add_jobs([record for _, record, _ in items])
        except StoreError as exc:
            for frame, record, optimistic in items:
                if optimistic:
                    self._retract(record.id)
                peer.send(Error(exc.code, "the job store failed; see the manager's log",
                                frame.ref))
            return
        for (frame, record, optimistic), new in zip(items, created, strict=True):
            if optimistic and not new:
                self._retract(record.id)  # the id belongs to a job that had finished
            peer.send(Accepted(frame.ref, record.id, new))
            if frame.watch and not (optimistic and new):
                self._watch(peer, record.id, None)

    def _retract(self, job_id: str) -> None:
        """Forget a job dispatched before its insert failed or proved a duplicate."""
        active = self.active.pop(job_id, None)
        if active is None:
            return
        self.dispatcher.discard(job_id)
        self.dispatcher.finished(job_id, active.worker_id)
        for peer in active.watchers:
            peer.watching.discard(job_id)

    # ------------------------------------------------------------------ running

    def _assign(self, worker: WorkerState, job_id: str) -> None:
        active = self.active[job_id]
        record = active.record
        record.attempts += 1
        record.status, record.worker = JobStatus.RUNNING, worker.name
        record.started_at = time.time()
        active.worker_id = worker.id
        self.peers[worker.id].send(
            Assign(job_id, record.queue, record.task, record.args, record.kwargs, record.attempts)
        )
        self._spawn(self._write(
            self.store.mark_running(job_id, worker.name, record.attempts, record.started_at)
        ))

    def _resume(self, peer: Peer, jobs: list[str]) -> None:
        """A reconnected worker still runs these: count them as its own if still queued."""
        for job_id in jobs:
            active = self.active.get(job_id)
            if active is None or active.finishing or active.record.status is not JobStatus.QUEUED:
                continue
            self.dispatcher.discard(job_id)
            self.dispatcher.claim(peer.id, job_id)
            record = active.record
            record.status, record.worker, active.worker_id = JobStatus.RUNNING, peer.name, peer.id
            self._spawn(self._write(
                self.store.mark_running(job_id, peer.name, record.attempts, time.time())
            ))

    def _done(self, frame: Done) -> None:
        active = self.active.get(frame.job)
        if active is None or active.finishing:
            return  # a late or duplicate result: the first one won
        active.finishing = True
        if active.record.status is JobStatus.QUEUED:
            self.dispatcher.discard(frame.job)
        self.dispatcher.finished(frame.job, active.worker_id)
        self._spawn(self._finish(active, frame))

    async def _finish(self, active: Active, frame: Done) -> None:
        record = active.record
        status = JobStatus(frame.status)
        error = frame.error if status is JobStatus.FAILED else None
        value = frame.value if status is JobStatus.SUCCEEDED else None
        try:
            stored = await self.store.finish(record.id, status, value, error, time.time())
        except StoreError:
            log.error("could not record the result of job %s; requeueing it", record.id)
            active.finishing = False
            record.status, record.worker, active.worker_id = JobStatus.QUEUED, None, None
            self.dispatcher.enqueue(record.id, (record.queue, record.task))
            return
        if not stored:  # retracted meanwhile: the stored job and its result stand
            return
        self.active.pop(record.id, None)
        result = Result(record.id, status.value, value, error)
        for peer in active.watchers:
            peer.watching.discard(record.id)
            peer.send(result)

    # ------------------------------------------------------------------ reading

    def _watch(self, peer: Peer, job_id: str, ref: int | None) -> None:
        active = self.active.get(job_id)
        if active is not None:
            active.watchers.add(peer)
            peer.watching.add(job_id)
        else:
            self._spawn(self._watch_stored(peer, job_id, ref))

    async def _watch_stored(self, peer: Peer, job_id: str, ref: int | None) -> None:
        record = await self._stored(peer, job_id, ref)
        if record is None:
            return
        if record.status in TERMINAL:
            peer.send(Result(record.id, record.status.value, record.result, record.error))
        elif job_id in self.active:
            self._watch(peer, job_id, ref)
        else:
            log.error("job %s is unfinished in the store but unknown in memory", job_id)
            peer.send(Error("internal_error", "job state is inconsistent; see the manager's log",
                            ref))

    def _lookup(self, peer: Peer, frame: Lookup) -> None:
        active = self.active.get(frame.job)
        if active is not None:
            peer.send(JobInfo(frame.ref, active.record.to_wire()))
        else:
            self._spawn(self._lookup_stored(peer, frame))

    async def _lookup_stored(self, peer: Peer, frame: Lookup) -> None:
        record = await self._stored(peer, frame.job, frame.ref)
        if record is not None:
            peer.send(JobInfo(frame.ref, record.to_wire()))

    async def _stored(self, peer: Peer, job_id: str, ref: int | None) -> JobRecord | None:
        try:
            record = await self.store.get_job(job_id)
        except StoreError:
            peer.send(Error("store_error", "the job store failed; see the manager's log", ref))
            return None
        if record is None:
            peer.send(Error("unknown_job", f"no job {job_id!r}", ref))
        return record

    # ------------------------------------------------------------------ registering

    def _register(self, peer: Peer, frame: Register) -> None:
        if peer.role != "worker":
            raise ProtocolError("only workers register tasks")
        specs = [spec_from_wire(data) for data in frame.tasks]
        for spec in specs:
            self.tasks[(spec.queue, spec.name)] = spec
        self._spawn(self._write(
            self.store.save_tasks([(s.queue, s.name, s.to_wire()) for s in specs])
        ))
        self.dispatcher.serve(peer.id, [(s.queue, s.name) for s in specs])

    async def _write(self, write: Coroutine[Any, Any, Any]) -> None:
        """A store write nobody waits for; a failure is logged (the job stays recoverable)."""
        try:
            await write
        except StoreError:
            log.exception("background store write failed")

    # ------------------------------------------------------------------ control

    def toggle_workers(self, pause: bool, worker_id: str | None = None) -> None:
        """Pause (no new assignments) or resume all workers, or one."""
        self.dispatcher.pause(worker_id, pause)
