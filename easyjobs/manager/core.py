"""The manager's brain: handles peers' frames against the store, the dispatcher and the watchers.

Every peer — a WebSocket connection or the manager's own loopback — is a ``Peer``: something
that can be sent frames. ``Core.handle`` takes the frames of one message. Frames that need the
store (submit, done, watch of a finished job, lookup) continue in a task once the store has
answered, which keeps the two promises of the protocol: a job is ``accepted`` only after it is
committed, and a ``result`` is pushed only after it is committed.

Jobs that are not finished live in memory (``active``) as well as in the store, so dispatch needs
no database round trip; finished jobs live only in the store. Workflow decisions (run_after
children, run_before dependencies, on_failure handlers, retries) come from ``workflow``; the
jobs they create are written in the same transaction as the outcome that caused them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import (
    EasyJobsError,
    ProtocolError,
    SerializationError,
    StoreError,
    UnknownTask,
)
from ..jobs import TERMINAL, JobRecord, JobStatus, new_job_id
from ..protocol.frames import (
    Abort,
    Accepted,
    Assign,
    Cancel,
    Credit,
    Done,
    DoneAck,
    Error,
    Frame,
    JobInfo,
    JobList,
    ListJobs,
    Lookup,
    Pause,
    Register,
    Result,
    Resume,
    Revoke,
    ScheduleInfo,
    Schedules,
    Submit,
    Watch,
)
from ..store import Store
from ..tasks import TaskSpec, find_cycle, spec_from_wire
from . import workflow
from .dispatcher import Dispatcher, Key, WorkerState
from .scheduler import Scheduler

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


class Observer(Protocol):
    """Told of every job and worker change (metrics, the dashboard's live feed).

    ``change`` is ``created``, ``started``, ``retrying``, ``requeued`` or ``finished`` for jobs
    (the record holds the new status) and ``connected``, ``registered``, ``disconnected``,
    ``paused`` or ``resumed`` for workers. Called synchronously on the manager's loop:
    observers must be quick.
    """

    def job_changed(self, change: str, record: JobRecord) -> None: ...
    def worker_changed(self, change: str, peer: Peer) -> None: ...


@dataclass(slots=True)
class Active:
    """An unfinished job, as the manager tracks it in memory."""

    record: JobRecord
    worker_id: str | None = None
    finishing: bool = False
    """An outcome is being committed: further results for this job are ignored."""
    watchers: set[Peer] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    """While waiting: the dependencies that have not succeeded yet."""
    timer: asyncio.TimerHandle | None = None
    """While retrying: the timer of the next attempt."""
    cancel_waiters: list[tuple[Peer, int]] = field(default_factory=list)
    """Cancel requests (peer, ref) to answer once the job's final record is committed."""
    acks: list[tuple[Peer, DoneAck]] = field(default_factory=list)
    """``done_ack`` frames owed once the outcome being committed is settled."""


class Core:
    """State and rules of one manager; I/O layers call ``connect``, ``handle``, ``disconnect``."""

    def __init__(self, store: Store, retry_base: float = 1.0, retry_cap: float = 60.0) -> None:
        self.store = store
        self.dispatcher = Dispatcher(self._assign)
        self.scheduler = Scheduler(self._fire_schedule)
        self.active: dict[str, Active] = {}
        self.tasks: dict[Key, TaskSpec] = {}
        self.peers: dict[str, Peer] = {}
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._blocked: dict[str, set[str]] = {}
        """dependency id -> ids of the waiting jobs it blocks"""
        self.observers: list[Observer] = []
        self._last_scheduled: dict[Key, str] = {}
        self.connected_at: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, take back every unfinished job, and start the schedules.

        Running jobs are requeued (their workers' links are gone), retries get their timers
        back, and waiting jobs are matched with their dependencies' outcomes.
        """
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
            if job.status is JobStatus.RUNNING:
                job.move(JobStatus.QUEUED)
                job.worker = None
        self._activate(jobs, recovered=True)
        for job in jobs:
            if job.status is JobStatus.WAITING:
                for dep_id in job.dependencies:
                    if dep_id not in self.active:
                        await self._settle_dependency(dep_id)
        if jobs:
            log.info("recovered %d unfinished job(s), %d of them requeued", len(jobs), len(running))
        self.scheduler.load(await self.store.load_schedules())
        for known in self.tasks.values():
            self.scheduler.update(known)

    async def _settle_dependency(self, dep_id: str) -> None:
        """At start-up: a waiting job's dependency finished before the restart."""
        record = await self.store.get_job(dep_id)
        if record is None:
            record = JobRecord(id=dep_id, queue="", task="?", status=JobStatus.FAILED,
                               error={"type": "UnknownJob", "message": "missing", "traceback": ""})
        self._dependency_finished(record)

    async def stop(self) -> None:
        """Stop the schedules and timers, wait for in-progress store work, close the store."""
        await self.scheduler.stop()
        for active in self.active.values():
            if active.timer is not None:
                active.timer.cancel()
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
        self.connected_at[peer.id] = time.time()
        if peer.role == "worker":
            self.dispatcher.add_worker(peer.id, peer.name)
            self._worker_changed("connected", peer)

    def disconnect(self, peer: Peer) -> None:
        """The peer is gone: drop its watches and requeue what it was running (once)."""
        if self.peers.pop(peer.id, None) is None:
            return
        self.connected_at.pop(peer.id, None)
        if peer.role == "worker":
            self._worker_changed("disconnected", peer)
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
            active.record.move(JobStatus.QUEUED)
            active.record.worker, active.worker_id = None, None
            requeued.append(job_id)
        if not requeued:
            return
        log.warning("worker %s left with %d job(s) running; requeued", peer.name, len(requeued))
        # The requeue write goes to the store before the next assignment's ``mark_running``
        # (writes apply in order); the other way round, the requeue would undo the new attempt.
        self._spawn(self._write(self.store.requeue(requeued)))
        for job_id in requeued:
            record = self.active[job_id].record
            self._job_changed("requeued", record)
            self.dispatcher.enqueue(job_id, (record.queue, record.task))

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
                self._done(peer, frame)
            elif isinstance(frame, Credit):
                self.dispatcher.grant(peer.id, frame.n)
            elif isinstance(frame, Revoke):
                self.dispatcher.revoke(peer.id, frame.n)
            elif isinstance(frame, Watch):
                self._watch(peer, frame.job, frame.ref)
            elif isinstance(frame, Lookup):
                self._lookup(peer, frame)
            elif isinstance(frame, Register):
                self._register(peer, frame)
            elif isinstance(frame, Pause):
                self.toggle_workers(frame.paused, peer.id)
            elif isinstance(frame, Resume):
                self._resume(peer, frame.jobs)
            elif isinstance(frame, Cancel):
                self._cancel(peer, frame)
            elif isinstance(frame, ListJobs):
                self._spawn(self._list_jobs(peer, frame))
            elif isinstance(frame, Schedules):
                self._reply(peer, ScheduleInfo(frame.ref, self.scheduler.info()))
            elif isinstance(frame, Error):
                log.warning("peer %r reported %s: %.200r", peer.name, frame.code[:40],
                            frame.message)
        if submits:
            self._submit(peer, submits)

    # ------------------------------------------------------------------ submitting

    def _submit(self, peer: Peer, frames: list[Submit]) -> None:
        """Validate, dispatch at once, and acknowledge once the store has committed.

        Dispatch does not wait for the insert: the ack does, and so does the result (the store
        applies writes in order, so a job's result is never committed before the job). A job
        id that turns out to exist already in the store is taken back (``_retract``). Jobs
        with run_before dependencies are activated only after the commit, with them.
        """
        now = time.time()
        items: list[tuple[Submit, list[JobRecord], bool]] = []
        for frame in frames:
            record = JobRecord(
                id=frame.job, queue=frame.queue, task=frame.task, args=frame.args,
                kwargs=frame.kwargs, parent=frame.parent, created_at=now,
            )
            try:
                self._check(frame)
                duplicate = frame.job in self.active
                deps = [] if duplicate else workflow.dependency_jobs(self._spec, record, now)
            except EasyJobsError as exc:
                self._reply(peer, Error(exc.code, str(exc), frame.ref))
                continue
            items.append((frame, [record, *deps], not duplicate and not deps))
        if not items:
            return
        # The insert goes to the store first: anything dispatch writes about these jobs
        # (a failed assignment's outcome, say) must land after it (writes apply in order).
        self._spawn(self._commit_submits(peer, items))
        for frame, group, optimistic in items:
            if optimistic:
                self._activate(group[:1])
            if frame.watch and frame.job in self.active:
                self._watch(peer, frame.job, None)

    def _spec(self, queue: str, task: str) -> TaskSpec | None:
        return self.tasks.get((queue, task))

    def _check(self, frame: Submit) -> None:
        spec = self.tasks.get((frame.queue, frame.task))
        if spec is None:
            raise UnknownTask(f"no worker has registered task {frame.task!r} in queue "
                              f"{frame.queue!r}")
        spec.check(frame.args, frame.kwargs)

    async def _commit_submits(
        self, peer: Peer, items: list[tuple[Submit, list[JobRecord], bool]]
    ) -> None:
        records = [record for _, group, _ in items for record in group]
        try:
            created = await self.store.add_jobs(records)
        except StoreError:
            for frame, group, optimistic in items:
                if optimistic:
                    self._retract(group[0].id)
                self._store_failed(peer, frame.ref)
            return
        position = 0
        for frame, group, optimistic in items:
            new = created[position]
            position += len(group)
            if optimistic and not new:
                self._retract(frame.job)  # the id belongs to a job that had finished
            elif new and not optimistic:
                self._activate(group)
            self._reply(peer, Accepted(frame.ref, frame.job, new))
            if frame.watch and not (optimistic and new):
                self._watch(peer, frame.job, None)

    def _activate(self, records: list[JobRecord], recovered: bool = False) -> None:
        """Track new unfinished jobs: dispatch the queued, tie the waiting to their deps."""
        records = [r for r in records if r.id not in self.active]  # each job is tracked once
        for record in records:
            if record.status not in TERMINAL:
                self.active[record.id] = Active(record)
            if not recovered:
                self._job_changed("created" if record.status not in TERMINAL else "finished",
                                  record)
        for record in records:
            active = self.active.get(record.id)
            if active is None:
                continue
            if record.status is JobStatus.QUEUED:
                self.dispatcher.enqueue(record.id, (record.queue, record.task))
            elif record.status is JobStatus.WAITING:
                for dep_id in record.dependencies:
                    active.pending.add(dep_id)
                    self._blocked.setdefault(dep_id, set()).add(record.id)
            elif record.status is JobStatus.RETRYING:
                self._plan_retry(active)

    def _retract(self, job_id: str) -> None:
        """Forget a job dispatched before its insert failed or proved a duplicate."""
        active = self.active.pop(job_id, None)
        if active is None:
            return
        if active.record.status is JobStatus.RUNNING and active.worker_id in self.peers:
            self.peers[active.worker_id].send(Abort(job_id))
        self.dispatcher.discard(job_id)
        self.dispatcher.finished(job_id, active.worker_id)
        for peer in active.watchers:
            peer.watching.discard(job_id)

    # ------------------------------------------------------------------ running

    def _reply(self, peer: Peer, frame: Frame) -> None:
        """Send ``frame``; one too big for a frame becomes a ``serialization_error`` instead.

        (A job record can outgrow the limit: its arguments and its result are each within it.)
        """
        try:
            peer.send(frame)
        except SerializationError as exc:
            log.warning("a %s frame for %s was too big to send: %s", frame.type, peer.name, exc)
            if isinstance(frame, Result):
                self._reply(peer, Result(frame.job, JobStatus.FAILED.value, None, {
                    "type": "SerializationError", "traceback": "",
                    "message": f"the outcome of job {frame.job} is too big to send: {exc}"}))
            else:
                self._reply(peer, Error(exc.code, str(exc), getattr(frame, "ref", None)))

    def _store_failed(self, peer: Peer, ref: int | None) -> None:
        """Tell a peer its request failed in the store (the cause is in this manager's log)."""
        self._reply(peer, Error("store_error", "the job store failed; see the manager's log", ref))

    def _job_changed(self, change: str, record: JobRecord) -> None:
        for observer in self.observers:
            observer.job_changed(change, record)

    def _worker_changed(self, change: str, peer: Peer) -> None:
        for observer in self.observers:
            observer.worker_changed(change, peer)

    def _assign(self, worker: WorkerState, job_id: str) -> None:
        active = self.active[job_id]
        record = active.record
        record.move(JobStatus.RUNNING)
        frame = Assign(job_id, record.queue, record.task, record.args, record.kwargs,
                       record.attempts + 1)
        try:
            self.peers[worker.id].send(frame)
        except SerializationError as exc:  # e.g. a job_failed argument grown over the limit
            record.move(JobStatus.QUEUED)
            worker.credit += 1
            self.dispatcher.finished(job_id, worker.id)
            active.finishing = True
            self._spawn(self._fail(active, workflow.error_info(exc)))
            return
        record.attempts += 1
        record.worker = worker.name
        record.started_at = time.time()
        active.worker_id = worker.id
        self._job_changed("started", record)
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
            record.move(JobStatus.RUNNING)
            record.worker, active.worker_id = peer.name, peer.id
            # It runs an attempt even if a crash lost the record of its start.
            record.attempts = max(record.attempts, 1)
            self._spawn(self._write(
                self.store.mark_running(job_id, peer.name, record.attempts, time.time())
            ))

    def _done(self, peer: Peer, frame: Done) -> None:
        active = self.active.get(frame.job)
        ack = DoneAck(frame.job, frame.attempt)
        if active is not None and active.finishing:
            active.acks.append((peer, ack))  # settled when the outcome being committed is
            return
        if active is None or active.record.status not in (JobStatus.RUNNING, JobStatus.QUEUED):
            peer.send(ack)  # a late or duplicate result: the first one won
            return
        active.finishing = True
        active.acks.append((peer, ack))
        record = active.record
        if frame.attempt == record.attempts + 1:
            record.attempts = frame.attempt  # a crash lost the record of this attempt's start
        if record.status is JobStatus.QUEUED:
            # Finished while the link was down, or before a restarted manager saw it running:
            # record the attempt first, so the outcome lands on a running job (writes apply in
            # order) with the attempt counted, as for any other attempt.
            self.dispatcher.discard(frame.job)
            record.move(JobStatus.RUNNING)
            record.worker = peer.name
            self._spawn(self._write(self.store.mark_running(
                frame.job, peer.name, record.attempts, record.started_at or time.time())))
        if active.worker_id not in (None, peer.id) and active.worker_id in self.peers:
            self.peers[active.worker_id].send(Abort(frame.job))  # an earlier attempt won
        self.dispatcher.finished(frame.job, active.worker_id)
        if frame.status == JobStatus.SUCCEEDED.value:
            self._spawn(self._succeed(active, frame.value))
        else:
            error = frame.error or {"type": "EasyJobsError", "message": "failed", "traceback": ""}
            self._spawn(self._failed_attempt(active, error))

    async def _succeed(self, active: Active, value: Any) -> None:
        record = active.record
        now = time.time()
        children = workflow.run_after_jobs(self._spec, record, value, now)
        await self._conclude(active, JobStatus.SUCCEEDED, value, None, children)

    async def _failed_attempt(self, active: Active, error: dict[str, str]) -> None:
        """Retry if the task's policy allows another attempt, else fail for good."""
        record = active.record
        spec = self._spec(record.queue, record.task)
        policy = spec.options.retry_policy if spec is not None else "never"
        delay = workflow.retry_delay(policy, record.attempts, self.retry_base, self.retry_cap)
        if delay is None:
            await self._fail(active, error)
            return
        next_at = time.time() + delay
        try:
            if not await self.store.retry(record.id, error, next_at):
                log.warning("job %s was not running in the store when it failed", record.id)
        except StoreError:
            log.error("could not record the retry of job %s; requeueing it now", record.id)
            active.acks.clear()  # not committed: the workers keep their outcomes
            next_at = time.time()
        else:
            self._send_acks(active)
        record.move(JobStatus.RETRYING)
        record.worker, active.worker_id = None, None
        record.error, record.next_attempt_at = error, next_at
        self._job_changed("retrying", record)
        active.finishing = False
        if active.cancel_waiters:  # cancelled while the failed attempt was being recorded
            self._cancel_now(active)
        else:
            self._plan_retry(active)

    def _plan_retry(self, active: Active) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (active.record.next_attempt_at or 0.0) - time.time())
        active.timer = loop.call_at(loop.time() + delay, self._retry_due, active.record.id)

    def _retry_due(self, job_id: str) -> None:
        active = self.active.get(job_id)
        if active is None or active.record.status is not JobStatus.RETRYING:
            return
        active.timer = None
        self._requeue(active)

    def _requeue(self, active: Active) -> None:
        """Retrying or waiting -> queued, in the store first (writes apply in order)."""
        record = active.record
        self._spawn(self._write(self.store.requeue([record.id])))
        record.move(JobStatus.QUEUED)
        record.next_attempt_at = None
        self._job_changed("requeued", record)
        self.dispatcher.enqueue(record.id, (record.queue, record.task))

    async def _fail(self, active: Active, error: dict[str, str]) -> None:
        """Fail a job for good: its on_failure handler is created in the same transaction."""
        record = active.record
        record.error = error
        handlers = workflow.failure_jobs(self._spec, record, time.time())
        await self._conclude(active, JobStatus.FAILED, None, error, handlers)

    async def _conclude(
        self, active: Active, status: JobStatus, value: Any, error: dict[str, str] | None,
        children: list[JobRecord],
    ) -> None:
        """Commit a final outcome with the jobs it creates, then push it and go on."""
        record = active.record
        active.finishing = True
        if active.timer is not None:
            active.timer.cancel()
            active.timer = None
        try:
            stored = await self.store.finish(
                record.id, status, value, error, time.time(),
                children=children, on_failure_job=record.on_failure_job,
            )
        except StoreError:
            active.finishing = False
            active.acks.clear()  # not committed: the workers keep their outcomes
            record.on_failure_job = None
            for peer, ref in active.cancel_waiters:
                self._store_failed(peer, ref)
            active.cancel_waiters.clear()
            if record.status in (JobStatus.RUNNING, JobStatus.QUEUED):
                log.error("could not record the outcome of job %s; requeueing it", record.id)
                if record.status is JobStatus.RUNNING:
                    record.move(JobStatus.QUEUED)
                record.worker, active.worker_id = None, None
                self.dispatcher.enqueue(record.id, (record.queue, record.task))
            else:
                log.error("could not record the outcome of %s job %s; it stays %s",
                          record.status.value, record.id, record.status.value)
                self._restore(active)
            return
        self._send_acks(active)
        if not stored:  # retracted or finished meanwhile: the stored job and its result stand
            self.active.pop(record.id, None)
            for peer in active.watchers:
                peer.watching.discard(record.id)
                self._spawn(self._watch_stored(peer, record.id, None))
            for peer, ref in active.cancel_waiters:
                self._lookup(peer, Lookup(ref, record.id))
            return
        self.active.pop(record.id, None)
        record.move(status)
        record.result, record.error = value, error
        record.finished_at = time.time()
        self._job_changed("finished", record)
        result = Result(record.id, status.value, value, error)
        for peer in active.watchers:
            peer.watching.discard(record.id)
            self._reply(peer, result)
        for peer, ref in active.cancel_waiters:
            self._reply(peer, JobInfo(ref, record.to_wire()))
        self._activate(children)
        self._dependency_finished(record)

    def _send_acks(self, active: Active) -> None:
        """The outcome is settled: the workers that reported it for this job may forget it."""
        for peer, ack in active.acks:
            if peer.id in self.peers:
                peer.send(ack)
        active.acks.clear()

    def _restore(self, active: Active) -> None:
        """An outcome could not be committed: a waiting or retrying job goes on as it was."""
        record = active.record
        if record.status is JobStatus.RETRYING:
            self._plan_retry(active)
        elif record.status is JobStatus.WAITING:
            for dep_id in active.pending:
                self._blocked.setdefault(dep_id, set()).add(record.id)
                if dep_id not in self.active:  # it finished: apply its outcome again
                    self._spawn(self._settle_dependency(dep_id))

    def _dependency_finished(self, dep: JobRecord) -> None:
        """Release or fail the jobs waiting on ``dep``."""
        for job_id in self._blocked.pop(dep.id, ()):
            waiting = self.active.get(job_id)
            if waiting is None or waiting.finishing:
                continue
            if dep.status is JobStatus.SUCCEEDED:
                waiting.pending.discard(dep.id)
                if not waiting.pending:
                    self._requeue(waiting)
                continue
            reason = dep.error or {}
            error = {
                "type": "DependencyFailed",
                "message": f"run_before dependency {dep.task} ({dep.id}) {dep.status.value}: "
                           f"{reason.get('type', '')}: {reason.get('message', '')}",
                "traceback": reason.get("traceback", ""),
            }
            waiting.finishing = True
            self._spawn(self._fail(waiting, error))

    def _cancel(self, peer: Peer, frame: Cancel) -> None:
        """Cancel a job; the answer is its final record, once committed.

        A job whose outcome is being committed is cancelled right after if that outcome was a
        retry, and otherwise keeps it (the answer then shows the outcome).
        """
        active = self.active.get(frame.job)
        if active is None:
            self._lookup(peer, Lookup(frame.ref, frame.job))
            return
        active.cancel_waiters.append((peer, frame.ref))
        if not active.finishing:
            self._cancel_now(active)

    def _cancel_now(self, active: Active) -> None:
        record = active.record
        active.finishing = True
        if record.status is JobStatus.RUNNING and active.worker_id in self.peers:
            self.peers[active.worker_id].send(Abort(record.id))
        self.dispatcher.discard(record.id)
        self.dispatcher.finished(record.id, active.worker_id)
        for dep_id in active.pending:
            self._blocked.get(dep_id, set()).discard(record.id)
        error = {"type": "JobCancelled", "message": "cancelled", "traceback": ""}
        self._spawn(self._conclude(active, JobStatus.CANCELLED, None, error, []))

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
            self._reply(peer, Result(record.id, record.status.value, record.result, record.error))
        elif job_id in self.active:
            self._watch(peer, job_id, ref)
        else:
            log.error("job %s is unfinished in the store but unknown in memory", job_id)
            self._reply(peer, Error("internal_error",
                                    "job state is inconsistent; see the manager's log", ref))

    def _lookup(self, peer: Peer, frame: Lookup) -> None:
        active = self.active.get(frame.job)
        if active is not None:
            self._reply(peer, JobInfo(frame.ref, active.record.to_wire()))
        else:
            self._spawn(self._lookup_stored(peer, frame))

    async def _lookup_stored(self, peer: Peer, frame: Lookup) -> None:
        record = await self._stored(peer, frame.job, frame.ref)
        if record is not None:
            self._reply(peer, JobInfo(frame.ref, record.to_wire()))

    async def _list_jobs(self, peer: Peer, frame: ListJobs) -> None:
        limit = max(1, min(frame.limit or 50, 1000))
        try:
            records = await self.store.list_jobs(
                queue=frame.queue, task=frame.task,
                status=JobStatus(frame.status) if frame.status else None, limit=limit,
                before=frame.before,
            )
        except StoreError:
            self._store_failed(peer, frame.ref)
            return
        jobs = [(self.active[r.id].record if r.id in self.active else r).to_wire()
                for r in records]
        more = len(records) == limit
        while True:  # a page too big for a frame is cut until it fits; ``next`` goes on from it
            page = JobList(frame.ref, jobs, jobs[-1]["id"] if jobs and more else None)
            try:
                peer.send(page)
                return
            except SerializationError:
                if len(jobs) <= 1:
                    self._reply(peer, page)
                    return
                jobs, more = jobs[: len(jobs) // 2], True

    async def _stored(self, peer: Peer, job_id: str, ref: int | None) -> JobRecord | None:
        try:
            record = await self.store.get_job(job_id)
        except StoreError:
            self._store_failed(peer, ref)
            return None
        if record is None:
            self._reply(peer, Error("unknown_job", f"no job {job_id!r}", ref))
        return record

    # ------------------------------------------------------------------ registering

    def _register(self, peer: Peer, frame: Register) -> None:
        if peer.role != "worker":
            raise ProtocolError("only workers register tasks")
        try:
            specs = [spec_from_wire(data) for data in frame.tasks]
        except ProtocolError as exc:  # e.g. a timezone this manager does not know
            self._reply(peer, Error("configuration_error", f"{exc}; no task of this register "
                                                          "frame was registered"))
            return
        merged = {**self.tasks, **{(s.queue, s.name): s for s in specs}}
        cycle = find_cycle(merged)
        if cycle:
            self._reply(peer, Error("configuration_error",
                            f"run_before cycle: {' -> '.join(cycle)}; these tasks were refused: "
                            f"{', '.join(s.name for s in specs)}"))
            return
        for spec in specs:
            self.tasks[(spec.queue, spec.name)] = spec
            self.scheduler.update(spec)
        if frame.capacity is not None:
            self.dispatcher.workers[peer.id].capacity = frame.capacity
        self._spawn(self._write(
            self.store.save_tasks([(s.queue, s.name, s.to_wire()) for s in specs])
        ))
        self.dispatcher.serve(peer.id, [(s.queue, s.name) for s in specs])
        self._worker_changed("registered", peer)

    def _not_started(self, active: Active) -> bool:
        """Queued, or waiting on a dependency that is itself still queued."""
        if active.record.status is JobStatus.WAITING:
            return any(self._not_started(self.active[dep]) for dep in active.pending
                       if dep in self.active)
        return active.record.status is JobStatus.QUEUED

    async def _fire_schedule(self, spec: TaskSpec, tick: float) -> bool:
        """One cron tick: create the task's job, unless this tick already fired.

        A tick is skipped while the previous tick's job has not started yet, so a schedule
        whose task no worker runs does not pile up jobs.
        """
        key = (spec.queue, spec.name)
        previous = self.active.get(self._last_scheduled.get(key, ""))
        if previous is not None and self._not_started(previous):
            log.info("schedule of %s.%s skipped a tick: job %s has not started yet",
                     spec.queue, spec.name, previous.record.id)
            return False
        spec = self.tasks.get(key, spec)
        args, kwargs = workflow.default_arguments(spec)
        now = time.time()
        record = JobRecord(id=new_job_id(), queue=spec.queue, task=spec.name, args=args,
                           kwargs=kwargs, created_at=now)
        try:
            spec.check(args, kwargs)
            deps = workflow.dependency_jobs(self._spec, record, now)
        except EasyJobsError as exc:
            log.error("schedule of %s.%s cannot fire: %s", spec.queue, spec.name, exc)
            return False
        try:
            fired = await self.store.fire_schedule(spec.queue, spec.name, tick, record, deps)
        except StoreError:
            log.exception("schedule of %s.%s could not fire", spec.queue, spec.name)
            return False
        if fired:
            log.info("schedule fired %s.%s (job %s)", spec.queue, spec.name, record.id)
            self._last_scheduled[key] = record.id
            self._activate([record, *deps])
        return fired

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
        for peer_id in [worker_id] if worker_id else list(self.dispatcher.workers):
            peer = self.peers.get(peer_id)
            if peer is not None:
                self._worker_changed("paused" if pause else "resumed", peer)
