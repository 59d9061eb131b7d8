"""The state machine of unfinished jobs: submit, dispatch, run, retry, finish, cancel.

How a job moves (the statuses and their legal moves are the table in ``easyjobs/jobs.py``):

- **Submit.** A job is checked, ``claims`` decides whether this manager holds it in memory or
  leaves it in the store's queue, and its insert is issued. A held job is dispatched at once,
  before the insert commits (optimistic dispatch); the ``accepted`` reply waits for the commit.
  An id that proves to exist in the store already is taken back (``_retract``): its assignment
  is aborted. A job with run_before dependencies is activated only after the commit, with them.
- **Jobs not in memory.** An outcome, a resume or a cancel for a job that waits in the store's
  queue first adopts it (``_adopt``), then is handled as for any job held here.
- **Write order.** Every store operation is issued where the decision is made
  (``background.issue``/``background.write``), and the store applies writes in the order they
  were issued. So an insert lands before anything about the job it inserted, and a requeue
  before the next attempt's start. Only what follows the store's answer runs later.
- **Finish.** The first outcome wins. It is committed with the jobs it creates (run_after
  children, an on_failure handler) in one transaction, then pushed to the watchers; then the
  children are dispatched and the jobs waiting on it are released or failed.
- **Workers leaving.** Their running jobs are requeued at the front of their queues.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import EasyJobsError, SerializationError, StoreError, UnknownTask
from ..jobs import TERMINAL, JobRecord, JobStatus
from ..jsonlog import job_fields
from ..protocol.frames import (
    Abort,
    Accepted,
    Assign,
    Cancel,
    Done,
    DoneAck,
    Error,
    JobInfo,
    Lookup,
    Result,
    Submit,
)
from ..store import Store
from . import workflow
from .active import Active, ActiveJobs
from .background import Background, issue
from .claims import Claims
from .dispatcher import Dispatcher, Key, WorkerState
from .health import StoreHealth
from .observers import Observers
from .peers import Peer, Peers
from .queries import Queries
from .registry import TaskRegistry
from .watchers import Watchers

log = logging.getLogger("easyjobs.manager")

@dataclass(frozen=True, slots=True)
class JobPolicy:
    """How hard the manager tries: retry backoff, and how many lost workers a job may cost."""

    retry_base: float = 1.0
    retry_cap: float = 60.0
    max_worker_losses: int = 3
    """A job whose worker is lost while running it this many times fails with ``WorkerLost``."""
    lookahead: int = 1000
    """Queued jobs of one task held in memory, ready for workers; the rest wait in the store."""


DEFAULT_POLICY = JobPolicy()
CANCELLED_ERROR = {"type": "JobCancelled", "message": "cancelled", "traceback": ""}
"""The error a cancelled job is recorded with."""

_Items = list[tuple[Submit, list[JobRecord], bool]]
"""Accepted submits: the frame, its job and dependency records, whether it was dispatched."""


class Lifecycle:
    """Moves the manager's unfinished jobs through their lifecycle, store first."""

    def __init__(self, active: ActiveJobs, store: Store, peers: Peers, observers: Observers,
                 dispatcher: Dispatcher, registry: TaskRegistry, watchers: Watchers,
                 queries: Queries, background: Background, health: StoreHealth, claims: Claims,
                 policy: JobPolicy = DEFAULT_POLICY) -> None:
        self.active = active
        self._claims = claims
        self._store = store
        self._peers = peers
        self._observers = observers
        self._dispatcher = dispatcher
        self._registry = registry
        self._watchers = watchers
        self._queries = queries
        self._background = background
        self._health = health
        self.policy = policy
        self._blocked: dict[str, set[str]] = {}
        """dependency id -> ids of the waiting jobs it blocks"""
        self._stranded: dict[str, tuple[Peer, Done]] = {}
        """Outcomes for jobs another manager held when they came, by job id."""
        self._stranded_resumes: dict[str, Peer] = {}
        """Resumed jobs another manager held when the resume came, by job id."""
        self._losses: dict[str, int] = {}
        """job id -> how many times a worker was lost while running it (this manager's count,
        kept while the job waits in the store's queue)"""
        self._unrecorded: list[Callable[[], None]] = []
        """Outcomes to commit again once the store writes (it could not when they came)."""

    def stop(self) -> None:
        for active in self.active.values():
            if active.timer is not None:
                active.timer.cancel()

    # ------------------------------------------------------------------ submitting

    def submit(self, peer: Peer, frames: list[Submit], reloaded: bool = False) -> None:
        """Validate, dispatch at once, and acknowledge once the store has committed.

        On a store several managers share, a task unknown here may have been registered on
        another manager a moment ago: the specs are re-read once before it is refused.
        """
        if not self._health.writable:
            refusal = f"{self._health.reason}; new jobs are refused until it writes again"
            for frame in frames:
                self._peers.store_failed(peer, frame.ref, refusal)
            return
        now = time.time()
        items: _Items = []
        spilled: set[Key] = set()
        placing: Counter[Key] = Counter()  # held by this message, not activated yet
        seen: set[str] = set()  # two submits of one id in one message: the second is a re-send
        unknown: list[Submit] = []
        for position, frame in enumerate(frames):
            record = JobRecord(  # a microsecond apart: the store's FIFO keeps the message's order
                id=frame.job, queue=frame.queue, task=frame.task, args=frame.args,
                kwargs=frame.kwargs, parent=frame.parent, created_at=now + position * 1e-6,
                trace=frame.trace,
            )
            try:
                self._registry.check(frame)
                duplicate = frame.job in self.active or frame.job in seen
                deps = [] if duplicate else workflow.dependency_jobs(
                    self._registry.spec, record, now)
            except UnknownTask as exc:
                if self._store.shared and not reloaded:
                    unknown.append(frame)
                else:
                    self._peers.reply(peer, Error(exc.code, str(exc), frame.ref))
                continue
            except EasyJobsError as exc:
                self._peers.reply(peer, Error(exc.code, str(exc), frame.ref))
                continue
            seen.add(frame.job)
            if not duplicate:
                spilled |= self._claims.place([record, *deps], placing)
            held = record.owner is not None
            items.append((frame, [record, *deps], not duplicate and not deps and held))
        if unknown:
            self._background.spawn(self._submit_reloaded(peer, unknown))
        if not items:
            return
        inserted = issue(self._store.add_jobs(
            [record for _, group, _ in items for record in group],
            soon=all(optimistic for _, _, optimistic in items)))
        self._top_up(spilled)
        self._background.spawn(self._submitted(peer, items, inserted))
        for frame, group, optimistic in items:
            if optimistic:
                self.activate(group[:1])
            if frame.watch:  # _submitted checks the store if the job proves to exist already
                self._watchers.watch(peer, frame.job, None, known=True)

    async def _submit_reloaded(self, peer: Peer, frames: list[Submit]) -> None:
        await self._registry.reload()
        if peer.id in self._peers:
            self.submit(peer, frames, reloaded=True)

    def _top_up(self, keys: Iterable[Key]) -> None:
        """Claim the jobs just left in the store if a worker waits for them (after their
        insert was issued: a claim sees only the writes issued before it)."""
        for key in keys:
            self._claims.top_up(key)

    async def _submitted(self, peer: Peer, items: _Items,
                         inserted: asyncio.Future[list[bool]]) -> None:
        try:
            created = await inserted
        except StoreError as exc:
            self._health.failed(exc, f"{len(items)} new job(s)")
            for frame, group, optimistic in items:
                if optimistic:
                    self._retract(group[0].id)
                if frame.watch:
                    self._watchers.unwatch(peer, frame.job)
                self._peers.store_failed(peer, frame.ref, self._health.reason)
            return
        position = 0
        for frame, group, optimistic in items:
            new = created[position]
            position += len(group)
            if optimistic and not new:  # the id is an existing job's (finished, or queued
                self._retract(frame.job)  # in the store): it stands; free, it is claimed
                self._claims.top_up((frame.queue, frame.task))
            elif new and not optimistic:
                self.activate(group)
            self._peers.reply(peer, Accepted(frame.ref, frame.job, new))
            if frame.watch and not new:
                self._watchers.check(peer, frame.job)

    def activate(self, records: list[JobRecord], notify: bool = True) -> None:
        """Track the unfinished jobs this manager holds: dispatch the queued, tie the waiting
        to their dependencies. ``notify``: the jobs are new (not recovered or claimed)."""
        records = [r for r in records if r.id not in self.active]  # each job is tracked once
        for record in records:
            if record.status not in TERMINAL and record.owner == self._claims.owner:
                self.active[record.id] = Active(record)
            if notify:
                self._observers.job_changed(
                    "created" if record.status not in TERMINAL else "finished", record)
        for record in records:
            active = self.active.get(record.id)
            if active is None:
                continue
            if record.status is JobStatus.QUEUED:
                self._queue(active)
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
        self._abort(active)
        self._dispatcher.discard(job_id)
        self._dispatcher.finished(job_id, active.worker_id)

    def _abort(self, active: Active) -> None:
        """Tell the worker running ``active`` (if any) to stop it."""
        worker = self._peers.get(active.worker_id)
        if active.record.status is JobStatus.RUNNING and worker is not None:
            worker.send(Abort(active.record.id))

    # ------------------------------------------------------------------ running

    def assign(self, worker: WorkerState, job_id: str) -> None:
        """The dispatcher gave ``job_id`` to ``worker``: send it and record its start."""
        active = self.active[job_id]
        record = active.record
        record.move(JobStatus.RUNNING)
        active.worker_id = worker.id  # first: a worker dropped while sending requeues the job
        frame = Assign(job_id, record.queue, record.task, record.args, record.kwargs,
                       record.attempts + 1, record.trace, record.created_at)
        peer = self._peers.get(worker.id)
        try:
            if peer is not None:
                peer.send(frame)
        except SerializationError as exc:  # e.g. a job_failed argument grown over the limit
            record.move(JobStatus.QUEUED)
            active.worker_id = None
            worker.credit += 1
            self._dispatcher.finished(job_id, worker.id)
            active.finishing = True
            self._fail(active, workflow.error_info(exc))
            return
        if peer is None or active.worker_id != worker.id:
            return  # the worker is gone: its jobs were (or will be) requeued
        record.attempts += 1
        record.worker = worker.name
        record.started_at = time.time()
        self._observers.job_changed("started", record)
        self._background.write(
            self._store.mark_running(job_id, worker.name, record.attempts, record.started_at,
                                     self._claims.owner),
            f"the start of job {job_id}")
        self._claims.top_up((record.queue, record.task))

    def resume(self, peer: Peer, jobs: list[str], adopted: bool = False) -> None:
        """A reconnected worker still runs these: count them as its own if still queued."""
        if peer.id not in self._dispatcher.workers:
            return  # gone meanwhile: what was adopted for it goes to other workers
        missing = []
        for job_id in jobs:
            active = self.active.get(job_id)
            if active is None:
                missing.append(job_id)
                continue
            if active.finishing or active.record.status is not JobStatus.QUEUED:
                continue
            self._dispatcher.discard(job_id)
            self._dispatcher.claim(peer.id, job_id)
            record = active.record
            record.move(JobStatus.RUNNING)
            record.worker, active.worker_id = peer.name, peer.id
            # It runs an attempt even if a crash lost the record of its start.
            record.attempts = max(record.attempts, 1)
            self._background.write(
                self._store.mark_running(job_id, peer.name, record.attempts, time.time(),
                                         self._claims.owner),
                f"the resumed start of job {job_id}")
        if missing and adopted:  # finished, or held by another manager (perhaps one that died)
            self._background.spawn(self._strand(peer, missing))
        elif missing:
            self._adopt(missing, lambda: self.resume(peer, missing, adopted=True),
                        f"the resume of {len(missing)} job(s)")

    def worker_left(self, peer: Peer) -> None:
        """Requeue, once, what a departed worker was running; fail a job that lost too many.

        The queued jobs of tasks no worker here serves any more go back to the store's queue.
        """
        state = self._dispatcher.workers.get(peer.id)
        keys = set(state.keys) if state is not None else set()
        requeued = []
        for job_id in self._dispatcher.remove_worker(peer.id):
            active = self.active.get(job_id)
            if active is None or active.finishing or active.worker_id != peer.id:
                continue
            losses = self._losses[job_id] = self._losses.get(job_id, 0) + 1
            if losses >= self.policy.max_worker_losses:
                self._lost_too_often(active, peer)
                continue
            active.record.move(JobStatus.QUEUED)
            active.record.worker, active.worker_id = None, None
            requeued.append(job_id)
        if requeued:
            log.warning("worker %s left with %d job(s) running; requeued", peer.name,
                        len(requeued), extra={"worker": peer.name})
            self._background.write(self._store.requeue(requeued),
                                   f"the requeue of {len(requeued)} job(s)")
            for job_id in requeued:
                record = self.active[job_id].record
                self._observers.job_changed("requeued", record)
                self._dispatcher.enqueue(job_id, (record.queue, record.task))
        self._release([key for key in keys if not self._dispatcher.serves(key)])

    def _release(self, keys: list[Key]) -> None:
        """Hand the queued jobs of ``keys`` back to the store's queue, for any manager."""
        released = []
        for key in keys:
            for job_id in self._dispatcher.take_all(key):
                active = self.active.pop(job_id, None)
                if active is not None:
                    released.append(active.record)
        if released:
            self._background.write(self._store.release(released, self._claims.owner),
                                   f"the release of {len(released)} queued job(s)")
            self._claims.wake(keys)

    def _lost_too_often(self, active: Active, peer: Peer) -> None:
        record = active.record
        log.error("job %s (%s.%s) lost its worker %d times, the last %s; failing it",
                  record.id, record.queue, record.task, self._losses[record.id], peer.name,
                  extra=job_fields(record))
        active.finishing = True
        self._fail(active, {
            "type": "WorkerLost", "traceback": "",
            "message": f"job {record.id} ({record.queue}.{record.task}) lost its worker "
                       f"{self._losses[record.id]} times, the last {peer.name}; it failed for good "
                       f"(max_worker_losses={self.policy.max_worker_losses}). See that "
                       "worker's log for how its process or connection ended.",
        })

    def done(self, peer: Peer, frame: Done, adopted: bool = False) -> None:
        """An outcome from a worker; it is acknowledged (``done_ack``) once settled."""
        active = self.active.get(frame.job)
        ack = DoneAck(frame.job, frame.attempt)
        if active is None:
            if adopted:
                self._background.spawn(self._ack_if_settled(peer, frame))
            else:  # it may wait in the store's queue (e.g. requeued by a restart)
                self._adopt([frame.job], lambda: self.done(peer, frame, adopted=True),
                            f"the outcome of job {frame.job}")
            return
        if active.finishing:
            self._duplicate(active.record, frame.attempt)
            active.acks.append((peer, ack))  # settled when the outcome being committed is
            return
        if active.record.status not in (JobStatus.RUNNING, JobStatus.QUEUED):
            self._duplicate(active.record, frame.attempt)
            peer.send(ack)  # a late or duplicate result: the first one won
            return
        active.finishing = True
        active.acks.append((peer, ack))
        record = active.record
        if frame.attempt == record.attempts + 1:
            record.attempts = frame.attempt  # a crash lost the record of this attempt's start
        if record.status is JobStatus.QUEUED:
            # Finished while the link was down, or before a restarted manager saw it running:
            # record the attempt first, so the outcome lands on a running job with the attempt
            # counted, as for any other attempt.
            self._dispatcher.discard(frame.job)
            record.move(JobStatus.RUNNING)
            record.worker = peer.name
            self._background.write(self._store.mark_running(
                frame.job, peer.name, record.attempts, record.started_at or time.time(),
                self._claims.owner),
                f"the start of job {frame.job}")
        if active.worker_id not in (None, peer.id):
            self._abort(active)  # an earlier attempt won
        self._dispatcher.finished(frame.job, active.worker_id)
        if frame.status == JobStatus.SUCCEEDED.value:
            children = workflow.run_after_jobs(self._registry.spec, record, frame.value,
                                               time.time())
            self._conclude(active, JobStatus.SUCCEEDED, frame.value, None, children)
        else:
            error = frame.error or {"type": "EasyJobsError", "message": "failed", "traceback": ""}
            self._failed_attempt(active, error)

    def _duplicate(self, record: JobRecord, attempt: int) -> None:
        """An outcome of another attempt than the one that counts: the job ran twice (the
        at-least-once rule); a re-sent outcome of the same attempt is no duplicate."""
        if attempt != record.attempts:
            self._observers.job_changed("duplicate", record)

    async def _ack_if_settled(self, peer: Peer, frame: Done) -> None:
        """Acknowledge an outcome for a job not held here once the store shows it finished (a
        late or duplicate result). An unfinished one is held by another manager, perhaps one
        that died: the outcome is tried again once jobs are handed back (``retry_stranded``)."""
        try:
            record = await self._store.get_job(frame.job)
        except StoreError:
            return
        if record is None or record.status in TERMINAL:
            if record is not None:
                self._duplicate(record, frame.attempt)
            if peer.id in self._peers:
                peer.send(DoneAck(frame.job, frame.attempt))
        else:
            log.info("job %s is %s and held by another manager; its outcome is recorded once "
                     "that manager hands it back", frame.job, record.status.value,
                     extra=job_fields(record))
            self._stranded[frame.job] = (peer, frame)

    async def _strand(self, peer: Peer, jobs: list[str]) -> None:
        """Keep the resumed jobs still unfinished for ``retry_stranded``."""
        for job_id in jobs:
            try:
                record = await self._store.get_job(job_id)
            except StoreError:
                return
            if record is not None and record.status not in TERMINAL:
                self._stranded_resumes[job_id] = peer

    def retry_stranded(self) -> None:
        """Jobs were handed back to the store's queue: try again the resumes and outcomes
        that found their job held by another manager (before anyone claims them)."""
        resumes, self._stranded_resumes = self._stranded_resumes, {}
        by_peer: dict[Peer, list[str]] = {}
        for job_id, peer in resumes.items():
            by_peer.setdefault(peer, []).append(job_id)
        for peer, jobs in by_peer.items():
            if peer.id in self._peers:
                self.resume(peer, jobs)
        outcomes, self._stranded = self._stranded, {}
        for peer, frame in outcomes.values():
            if peer.id in self._peers:
                self.done(peer, frame)

    def _adopt(self, job_ids: list[str], then: Callable[[], None], what: str) -> None:
        """Take jobs that wait free in the store's queue into memory, then call ``then``."""
        adopted = issue(self._store.adopt(job_ids, self._claims.owner))
        self._background.spawn(self._adopted(adopted, then, what))

    async def _adopted(self, adopted: asyncio.Future[list[JobRecord]], then: Callable[[], None],
                       what: str) -> None:
        try:
            records = await adopted
        except StoreError as exc:
            self._health.failed(exc, what)
            records = []
        for record in records:
            self.active.setdefault(record.id, Active(record))
        then()
        for record in records:  # what ``then`` left queued goes to any worker
            active = self.active.get(record.id)
            if (active is not None and active.record is record and not active.finishing
                    and record.status is JobStatus.QUEUED):
                self._queue(active)

    # ------------------------------------------------------------------ retrying

    def _failed_attempt(self, active: Active, error: dict[str, str]) -> None:
        """Retry if the task's policy allows another attempt, else fail for good."""
        record = active.record
        spec = self._registry.spec(record.queue, record.task)
        policy = spec.options.retry_policy if spec is not None else "never"
        delay = workflow.retry_delay(policy, record.attempts, self.policy.retry_base,
                                       self.policy.retry_cap)
        if delay is None:
            self._fail(active, error)
            return
        next_at = time.time() + delay
        retried = issue(self._store.retry(record.id, error, next_at))
        self._background.spawn(self._retried(active, error, next_at, retried))

    async def _retried(self, active: Active, error: dict[str, str], next_at: float,
                       retried: asyncio.Future[bool]) -> None:
        record = active.record
        try:
            if not await retried:
                log.warning("job %s was not running in the store when it failed", record.id,
                            extra=job_fields(record))
        except StoreError as exc:
            self._health.failed(exc, f"the retry of job {record.id} (it is requeued now)")
            active.acks.clear()  # not committed: the workers keep their outcomes
            next_at = time.time()
        else:
            self._send_acks(active)
        record.move(JobStatus.RETRYING)
        record.worker, active.worker_id = None, None
        record.error, record.next_attempt_at = error, next_at
        self._observers.job_changed("retrying", record)
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
        """Retrying or waiting -> queued, in the store first."""
        record = active.record
        self._background.write(self._store.requeue([record.id]), f"the requeue of {record.id}")
        record.move(JobStatus.QUEUED)
        record.next_attempt_at = None
        self._observers.job_changed("requeued", record)
        self._queue(active)

    def _queue(self, active: Active) -> None:
        """A held job is queued: in memory if a worker here serves its task, else back in
        the store's queue, where any manager's workers may claim it."""
        record = active.record
        key = (record.queue, record.task)
        if self._dispatcher.serves(key):
            self._dispatcher.enqueue(record.id, key)
            return
        self.active.pop(record.id)
        self._background.write(self._store.release([record], self._claims.owner),
                               f"the release of job {record.id}")
        self._claims.wake([key])

    # ------------------------------------------------------------------ finishing

    def _fail(self, active: Active, error: dict[str, str]) -> None:
        """Fail a job for good: its on_failure handler is created in the same transaction."""
        record = active.record
        record.error = error
        handlers = workflow.failure_jobs(self._registry.spec, record, time.time())
        self._conclude(active, JobStatus.FAILED, None, error, handlers)

    def _conclude(self, active: Active, status: JobStatus, value: Any,
                  error: dict[str, str] | None, children: list[JobRecord]) -> None:
        """Issue the commit of a final outcome with the jobs it creates; go on once stored."""
        record = active.record
        active.finishing = True
        if active.timer is not None:
            active.timer.cancel()
            active.timer = None
        spilled = self._claims.place(children) if children else set()
        stored = issue(self._store.finish(
            record.id, status, value, error, time.time(),
            children=children, on_failure_job=record.on_failure_job,
        ))
        self._top_up(spilled)
        self._background.spawn(self._concluded(active, status, value, error, children, stored))

    async def _concluded(self, active: Active, status: JobStatus, value: Any,
                         error: dict[str, str] | None, children: list[JobRecord],
                         stored: asyncio.Future[bool]) -> None:
        """Push the committed outcome and go on: children, released dependents."""
        record = active.record
        try:
            committed = await stored
        except StoreError as exc:
            self._health.failed(exc, f"the outcome of job {record.id}")
            if self._health.writable:
                self._not_concluded(active)
            else:  # kept, not run again: recorded (and acknowledged) once the store writes
                self._unrecorded.append(
                    lambda: self._conclude(active, status, value, error, children))
            return
        self.active.pop(record.id, None)
        self._losses.pop(record.id, None)
        if not committed:  # retracted or finished meanwhile: the stored job and its result stand
            self._send_acks(active)
            self._watchers.reread(record.id)
            for peer, ref in active.cancel_waiters:
                self._queries.lookup(peer, Lookup(ref, record.id))
            return
        record.move(status)
        record.result, record.error = value, error
        record.finished_at = time.time()
        self._observers.job_changed("finished", record)
        self._watchers.deliver(Result(record.id, status.value, value, error))
        self._send_acks(active)  # after the result: the caller waits, the worker does not
        for peer, ref in active.cancel_waiters:
            self._peers.reply(peer, JobInfo(ref, record.to_wire()))
        self.activate(children)
        self._dependency_finished(record)

    def _send_acks(self, active: Active) -> None:
        """The outcome is settled: the workers that reported it for this job may forget it."""
        for peer, ack in active.acks:
            if peer.id in self._peers:
                peer.send(ack)
        active.acks.clear()

    def store_writable(self) -> None:
        """The store writes again: record the outcomes it refused meanwhile."""
        unrecorded, self._unrecorded = self._unrecorded, []
        for conclude in unrecorded:
            conclude()
        self.retry_stranded()

    def _not_concluded(self, active: Active) -> None:
        """The outcome could not be committed: the job goes on as the store still has it."""
        record = active.record
        active.finishing = False
        active.acks.clear()  # not committed: the workers keep their outcomes
        record.on_failure_job = None
        for peer, ref in active.cancel_waiters:
            self._peers.store_failed(peer, ref)
        active.cancel_waiters.clear()
        if record.status in (JobStatus.RUNNING, JobStatus.QUEUED):
            log.error("could not record the outcome of job %s; requeueing it", record.id,
                      extra=job_fields(record))
            if record.status is JobStatus.RUNNING:
                record.move(JobStatus.QUEUED)
                self._background.write(self._store.requeue([record.id]),
                                       f"the requeue of {record.id}")
            record.worker, active.worker_id = None, None
            self._queue(active)
            return
        log.error("could not record the outcome of %s job %s; it stays %s",
                  record.status.value, record.id, record.status.value,
                  extra=job_fields(record))
        if record.status is JobStatus.RETRYING:
            self._plan_retry(active)
        elif record.status is JobStatus.WAITING:
            for dep_id in active.pending:
                self._blocked.setdefault(dep_id, set()).add(record.id)
                if dep_id not in self.active:  # it finished: apply its outcome again
                    self._background.spawn(self.settle_dependency(dep_id))

    # ------------------------------------------------------------------ dependencies

    async def settle_dependency(self, dep_id: str) -> None:
        """A waiting job's dependency is not held here: apply its outcome if it has one (else
        this manager sees it finish once it claims and runs it)."""
        try:
            record = await self._store.get_job(dep_id)
        except StoreError:  # read again in a moment: nothing else would tell the waiting job
            asyncio.get_running_loop().call_later(
                1.0, lambda: self._background.spawn(self.settle_dependency(dep_id)))
            return
        if record is not None and record.status not in TERMINAL:
            return
        if record is None:
            record = JobRecord(id=dep_id, queue="", task="?", status=JobStatus.FAILED,
                               error={"type": "UnknownJob", "message": "missing", "traceback": ""})
        self._dependency_finished(record)

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
            self._fail(waiting, error)

    def take_over(self, records: list[JobRecord]) -> None:
        """Hold waiting and retrying jobs taken back from a manager gone (or an earlier run):
        re-arm their retry timers, and release or fail the waiting ones whose dependencies
        have finished meanwhile."""
        self.activate(records, notify=False)
        for record in records:
            if record.status is JobStatus.WAITING:
                for dep_id in record.dependencies:
                    if dep_id not in self.active:
                        self._background.spawn(self.settle_dependency(dep_id))

    def finished_elsewhere(self, done: set[str] | None, cancelled: set[str] | None) -> None:
        """Other managers finished ``done`` and cancelled ``cancelled`` (None: perhaps any):
        re-read the ones this manager's waiting jobs depend on, and the cancelled ones it
        holds (the only jobs held here that another manager may finish)."""
        depended = set(self._blocked) if done is None else done & self._blocked.keys()
        held = set(self.active) if cancelled is None else cancelled & self.active.keys()
        for job_id in depended | held:
            self._background.spawn(self._reread(job_id))

    async def _reread(self, job_id: str) -> None:
        try:
            record = await self._store.get_job(job_id)
        except StoreError:
            return  # read again at the next catch-up
        if record is None or record.status not in TERMINAL:
            return
        active = self.active.get(job_id)
        if active is not None and not active.finishing:  # e.g. cancelled on another manager
            log.info("job %s was %s by another manager; dropping it here", job_id,
                     record.status.value, extra=job_fields(record))
            self._abort(active)
            self.active.pop(job_id)
            self._dispatcher.discard(job_id)
            self._dispatcher.finished(job_id, active.worker_id)
            if active.timer is not None:
                active.timer.cancel()
            for dep_id in active.pending:
                self._unblock(dep_id, job_id)
            self._losses.pop(job_id, None)
        if job_id in self._blocked:
            self._dependency_finished(record)

    def _unblock(self, dep_id: str, job_id: str) -> None:
        """``job_id`` waits for ``dep_id`` no more (its set goes once empty)."""
        waiting = self._blocked.get(dep_id)
        if waiting is not None:
            waiting.discard(job_id)
            if not waiting:
                del self._blocked[dep_id]

    async def not_started(self, job_id: str) -> bool:
        """Queued, or waiting on a dependency that is itself still queued."""
        active = self.active.get(job_id)
        if active is None:  # perhaps waiting in the store's queue
            try:
                record = await self._store.get_job(job_id) if job_id else None
            except StoreError:
                return False
            return record is not None and record.status is JobStatus.QUEUED
        if active.record.status is JobStatus.WAITING:
            for dep in active.pending:
                if await self.not_started(dep):
                    return True
            return False
        return active.record.status is JobStatus.QUEUED

    # ------------------------------------------------------------------ cancelling

    def cancel(self, peer: Peer, frame: Cancel, adopted: bool = False) -> None:
        """Cancel a job; the answer is its final record, once committed.

        A job whose outcome is being committed is cancelled right after if that outcome was a
        retry, and otherwise keeps it (the answer then shows the outcome).
        """
        active = self.active.get(frame.job)
        if active is None:
            if adopted:  # finished, or held by another manager, which drops it once told
                self._background.spawn(self._cancel_in_store(peer, frame))
            else:
                self._adopt([frame.job], lambda: self.cancel(peer, frame, adopted=True),
                            f"the cancel of job {frame.job}")
            return
        active.cancel_waiters.append((peer, frame.ref))
        if not active.finishing:
            self._cancel_now(active)

    async def _cancel_in_store(self, peer: Peer, frame: Cancel) -> None:
        """Cancel a job this manager does not hold: in the store, where the first outcome
        wins; the manager holding it hears it finished. The answer is the record then."""
        try:
            await self._store.finish(frame.job, JobStatus.CANCELLED, None, CANCELLED_ERROR,
                                     time.time())
        except StoreError as exc:
            self._health.failed(exc, f"the cancel of job {frame.job}")
            self._peers.store_failed(peer, frame.ref)
            return
        self._queries.lookup(peer, Lookup(frame.ref, frame.job))
        # This manager skips its own news: its watchers and waiting jobs are told here.
        self._watchers.reread(frame.job)
        if frame.job in self._blocked:
            self._background.spawn(self._reread(frame.job))

    def _cancel_now(self, active: Active) -> None:
        record = active.record
        active.finishing = True
        self._abort(active)
        self._dispatcher.discard(record.id)
        self._dispatcher.finished(record.id, active.worker_id)
        for dep_id in active.pending:
            self._unblock(dep_id, record.id)
        self._conclude(active, JobStatus.CANCELLED, None, dict(CANCELLED_ERROR), [])
