"""The storage seam: what the manager needs from a durable job store, and nothing more.

Every backend (one file each) implements ``Store`` and passes the one contract suite in
``tests/store/test_store_contract.py``. The contract, for every method but ``open``/``close``:

- it is a plain method, called on the event loop, that returns an ``asyncio.Future``: the
  operation is queued when the method is *called*, not when the future is awaited, so
  **writes are applied in the order the methods were called**, whatever order tasks start
  in. A write's future resolves once it is committed, so the caller may then acknowledge the
  job to its submitter. Nobody has to await a write for it to happen; a caller that does not
  await should still look at the outcome (``add_done_callback``) to log a failure;
- **a read sees every write called before it** (read-your-writes): it waits for those writes
  to commit, then runs beside other reads and beside later writes, never queued behind them.
  A read never waits for a write called after it;
- a backend failure resolves the future with ``StoreError`` (the cause goes to the
  ``easyjobs.store`` log, never into the message); ``StoreUnwritable`` when the disk is full
  or the database refuses writes. A value msgpack cannot carry raises ``SerializationError``
  at the call itself and queues nothing. After ``close()`` every call fails with
  ``StoreError("store is closed")``;
- writes are bounded: when too many are waiting to commit (a stalled disk), further writes
  fail at once with ``StoreError`` saying the store is overloaded, rather than queue without
  limit; the caller sheds that work (answers ``StoreError``) and the store catches up;
- status changes follow ``easyjobs.jobs.TRANSITIONS``: a change the table does not allow from
  the job's current status leaves the job untouched (and creates nothing);
- a call that writes several rows (``add_jobs``, ``finish`` with children, ``fire_schedule``,
  ``take_back``) commits all of them or none: a crash between them is impossible.

The store is the queue: a queued job with no ``owner`` waits there for any manager to
``claim`` it; a manager holds in memory only the unfinished jobs it owns. ``add_jobs`` (and the
jobs ``finish`` and ``fire_schedule`` create) store each record's owner as given, ``finish``
clears it, and the other status changes leave it as it is.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from easyjobs.errors import SerializationError, StoreError
from easyjobs.jobs import JobRecord, JobStatus
from easyjobs.store.signals import Signals
from easyjobs.store.stats import CommitStats

TaskSpec = tuple[str, str, dict[str, Any]]
"""``(queue, name, spec)``: a registered task; ``spec`` is any msgpack-able map."""

MAX_PAGE = 1000
"""The most jobs one ``list_jobs`` call returns."""
LEASE_S = 10.0
"""How long a manager's lease in a shared store lasts past its last renewal."""


class StoreUnwritable(StoreError):
    """The store cannot write (disk full, read-only or failing); it recovers by itself.

    Reads still work. ``Store.writable`` says whether the last write went through, and
    ``Store.probe()`` tells when writes succeed again.
    """


class Store(ABC):
    """A durable home for job records and registered tasks.

    Call ``open()`` before anything else and ``close()`` when done; a closed store is not
    reopened, make a new one (``open_store``) instead.
    """

    commit_stats: CommitStats
    """How long each commit took and how many writes it carried (for ``/metrics``)."""

    @property
    @abstractmethod
    def writable(self) -> bool:
        """False from a write that failed with ``StoreUnwritable`` until one succeeds again."""

    @property
    @abstractmethod
    def last_error(self) -> str | None:
        """Why the store cannot write (the ``StoreUnwritable`` message), None while writable."""

    @abstractmethod
    def probe(self) -> asyncio.Future[None]:
        """A tiny write that touches no job: resolves once writes succeed, fails while not.

        Call it with backoff while ``writable`` is False to learn when to resume.
        """

    @abstractmethod
    async def open(self) -> None:
        """Connect, create the schema if missing (safe on an existing store) and start serving."""

    @abstractmethod
    async def close(self) -> None:
        """Finish every call already issued, then release the store. Safe to call twice."""

    @abstractmethod
    def add_jobs(self, jobs: Sequence[JobRecord], *, soon: bool = False
                 ) -> asyncio.Future[list[bool]]:
        """Insert new jobs as they are, status included; one bool per job, False for a known id.

        An existing job is left exactly as it was, so re-sending a submit is harmless. One call
        is one atomic unit: the manager adds a job's ``waiting`` dependents together with the
        run_before jobs they wait for, so a crash never leaves a dependent without them.
        ``soon``: the jobs already went to workers, so a store whose commits cost much may hold
        the insert back a moment, to commit it with their start and outcome.
        """

    @abstractmethod
    def mark_running(
        self, job_id: str, worker: str, attempt: int, at: float, owner: str | None = None
    ) -> asyncio.Future[None]:
        """Move a queued job to running on ``worker``; other jobs are left alone, and with
        ``owner`` so is a job not held by that manager (a re-sent submit's id may name a job
        queued in the store for anyone: starting it there would strand it)."""

    @abstractmethod
    def requeue(self, job_ids: Sequence[str]) -> asyncio.Future[None]:
        """Queue jobs again: running (worker lost), waiting (dependencies done), retrying (due).

        Clears the worker and ``next_attempt_at``; keeps ``attempts`` and the last error.
        Jobs in any other status, and unknown ids, are left alone.
        """

    @abstractmethod
    def retry(
        self, job_id: str, error: dict[str, str], next_attempt_at: float
    ) -> asyncio.Future[bool]:
        """Move a running job to retrying after a failed attempt that has a retry left.

        Stores the attempt's ``error`` and when the next attempt is due, and clears the worker.
        Returns False, changing nothing, when the job is not running; the caller should then
        drop the outcome. When the attempt is due, the caller ``requeue``s the job.
        """

    @abstractmethod
    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: Any,
        error: dict[str, str] | None,
        at: float,
        *,
        children: Sequence[JobRecord] = (),
        on_failure_job: str | None = None,
    ) -> asyncio.Future[bool]:
        """Record a job's outcome and, in the same transaction, create the jobs it leads to.

        ``status`` must be terminal (else ``ValueError``). ``children`` (run_after jobs, the
        on_failure job) are inserted like ``add_jobs``, an existing id being left as it was;
        ``on_failure_job``, when given, is stored as the id of this job's failure handler.
        ``next_attempt_at`` and the owner are cleared, the worker kept. Either all of it commits
        or none of it, so a crash can neither lose nor duplicate a child.

        Returns False, changing nothing and creating no child, when the job is unknown or the
        lifecycle table does not allow ``status`` from its current one (already terminal, a
        waiting or retrying job cannot succeed). The caller should then drop the outcome.
        """

    @abstractmethod
    def get_job(self, job_id: str) -> asyncio.Future[JobRecord | None]:
        """The job as last committed, or None if there is no such job."""

    @abstractmethod
    def get_jobs(self, job_ids: Sequence[str]) -> asyncio.Future[list[JobRecord]]:
        """Those of ``job_ids`` that exist, as last committed, in any order: one read for
        many (a manager re-reading the jobs its clients watch once others finished them)."""

    @abstractmethod
    def claim(
        self, queue: str, task: str, limit: int, owner: str
    ) -> asyncio.Future[list[JobRecord]]:
        """Take up to ``limit`` free queued jobs of ``(queue, task)`` for manager ``owner``.

        A write. Free means queued with no owner. The lowest value of the ``priority`` column
        (0 unless set in the database) goes first, then ``created_at``, then id (FIFO); their
        owner becomes ``owner`` and they are returned in that order, with it set. Managers
        claiming at once never get the same job. An index serves it, however large the
        backlog of other tasks. ``limit`` < 1 gives ``[]`` without a write.
        """

    @abstractmethod
    def adopt(self, job_ids: Sequence[str], owner: str) -> asyncio.Future[list[JobRecord]]:
        """Make ``owner`` the owner of those of ``job_ids`` that are queued with no owner.

        A write, for jobs a worker reports on (an outcome, a resume) or a client cancels
        while they wait in the store's queue. Returns the jobs it took, in the order of
        ``job_ids``; any other id (unknown, owned, not queued) is left alone and not returned.
        """

    @abstractmethod
    def release(self, jobs: Sequence[JobRecord], owner: str) -> asyncio.Future[None]:
        """Give those of ``jobs`` that are queued and owned by ``owner`` back to the queue.

        A write, for the jobs a manager held for tasks none of its workers serves any more.
        Other jobs are left alone.
        """

    @abstractmethod
    def queued_tasks(self) -> asyncio.Future[set[tuple[str, str]]]:
        """The ``(queue, task)`` pairs that have queued jobs no manager owns (by the claim
        index; a manager reads it at start to know which tasks to claim for)."""

    @property
    @abstractmethod
    def shared(self) -> bool:
        """Whether several managers may use this store at once (then each holds a lease)."""

    @abstractmethod
    def take_back(self, owner: str) -> asyncio.Future[tuple[int, list[JobRecord]]]:
        """At a manager's start: take back what managers no longer running left, in one write.

        On a shared store the manager first joins with a lease of ``LEASE_S`` seconds, and
        the managers gone are those whose lease expired (or that hold none); otherwise every
        earlier owner is gone. Their running jobs go back to the queue (worker and owner
        cleared, attempts kept), their queued jobs lose their owner, so they are free for
        claims, and their waiting and retrying jobs get ``owner``, whose dependency checks
        and retry timers the caller re-arms. Returns how many running jobs were requeued, and
        the waiting and retrying jobs taken, oldest first (``created_at``, then id). It
        touches only owned, running, waiting and retrying rows, never the queued backlog.
        """

    @abstractmethod
    def renew(self, owner: str) -> asyncio.Future[list[JobRecord] | None]:
        """Extend ``owner``'s lease (shared stores), then take over from managers whose lease
        expired, as ``take_back`` does; returns the waiting and retrying jobs it took, or
        None when ``owner`` holds no lease any more (another manager took its jobs over)."""

    @abstractmethod
    def share_workers(self, owner: str, workers: Sequence[dict[str, Any]]
                      ) -> asyncio.Future[None]:
        """Replace what the store shows of ``owner``'s workers (msgpack-able maps with an
        ``"id"``); on a shared store the other managers list them (``other_workers``)."""

    @abstractmethod
    def other_workers(self, owner: str) -> asyncio.Future[list[dict[str, Any]]]:
        """The workers the other live managers shared last, each with its ``"manager"``; a
        store only one manager can use has none."""

    @abstractmethod
    def advertise(self, owner: str, address: str, serves: Sequence[tuple[str, str]]
                  ) -> asyncio.Future[None]:
        """Publish where other managers reach ``owner`` (a ``ws://`` or ``wss://`` URL) and
        the tasks its workers serve now, and tell them (news of ``workers``)."""

    @abstractmethod
    def directory(self, owner: str) -> asyncio.Future[dict[str, tuple[str, list[tuple[str, str]]]]]:
        """The other live managers that advertised: id -> (address, tasks served); a store
        only one manager can use has none."""

    @abstractmethod
    def leave(self, owner: str) -> asyncio.Future[None]:
        """``owner`` stops (shared stores): its lease ends and every job it holds is left to
        the others at once (running ones requeued)."""

    @abstractmethod
    def list_jobs(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        before: str | None = None,
        queues: Collection[str] | None = None,
    ) -> asyncio.Future[list[JobRecord]]:
        """One page of jobs, newest first (``created_at`` descending, then id descending).

        ``queue``, ``task`` and ``status`` filter by exact match when given; ``queues`` keeps
        only the jobs of those queues (what a credential may see). ``limit`` is
        clamped to 1..``MAX_PAGE``. ``before`` is a cursor: pass the id of the last job of the
        previous page to get the jobs strictly after it in this order (it need not match the
        filters); an unknown cursor id gives ``[]``. A page shorter than ``limit`` is the last.
        """

    @abstractmethod
    def save_tasks(self, tasks: Sequence[TaskSpec]) -> asyncio.Future[None]:
        """Insert or replace registered tasks, keyed by ``(queue, name)``."""

    @abstractmethod
    def add_credential(self, credential: CredentialRecord) -> asyncio.Future[bool]:
        """Keep a new named credential; False (and nothing written) if the name is taken.
        The other managers are told (``Signals.credentials``)."""

    @abstractmethod
    def revoke_credential(self, name: str) -> asyncio.Future[bool]:
        """Forget a named credential; False if there was none. The other managers are told."""

    @abstractmethod
    def load_credentials(self) -> asyncio.Future[list[CredentialRecord]]:
        """Every named credential, by name."""

    @abstractmethod
    def load_tasks(self) -> asyncio.Future[list[TaskSpec]]:
        """Every saved task, ordered by queue then name."""

    @abstractmethod
    def count_jobs(self) -> asyncio.Future[dict[tuple[str, str], int]]:
        """How many jobs each (queue, status) pair has, finished ones included; no zero counts.

        Cheap enough for every dashboard refresh: the backend keeps the counts up to date in
        the transactions that change them, so this never scans the jobs.
        """

    @abstractmethod
    def queued_by_task(self) -> asyncio.Future[dict[tuple[str, str], tuple[int, float]]]:
        """For each ``(queue, task)`` with queued jobs (owned or free): how many, and the
        ``created_at`` of the oldest; no entry for the others.

        Read at every metrics scrape: the free jobs are counted from the claim index alone,
        the owned ones (a look-ahead's worth per manager) from the owner index.
        """

    @abstractmethod
    def load_schedules(self) -> asyncio.Future[dict[tuple[str, str], float]]:
        """The last fire time of every cron schedule that has fired, keyed by ``(queue, task)``.

        The manager computes each schedule's next tick from this at start-up, so ticks missed
        while it was down are skipped rather than replayed.
        """

    @abstractmethod
    def fire_schedule(
        self, queue: str, task: str, tick: float, job: JobRecord,
        dependencies: Sequence[JobRecord] = (),
    ) -> asyncio.Future[bool]:
        """Fire the schedule of ``(queue, task)`` for ``tick``: at most one job per tick, ever.

        In one transaction: when the schedule has never fired or last fired before ``tick``,
        record ``tick`` as its last fire and insert ``job`` with its run_before
        ``dependencies`` (as ``add_jobs`` would), returning True. Otherwise (the tick, or a
        later one, already fired, e.g. before a restart) change nothing and return False; the
        caller then drops ``job``.
        """


    @abstractmethod
    async def listen(self, on_signals: Callable[[Signals], None],
                     on_connect: Callable[[], None]) -> None:
        """Hear what the managers sharing this store commit, from its return until ``close``.

        ``on_signals`` gets the news of the other managers' write transactions.
        ``on_connect`` runs each time the hearing (re)starts: news sent while it was down is
        lost, so the caller then catches up from the tables. A store only one manager can use
        (SQLite) has nothing to hear and calls neither.
        """

    @abstractmethod
    def announce(self, news: Signals) -> asyncio.Future[None]:
        """Tell the managers sharing this store ``news``: a write, in order with the others.

        A pause in it is also remembered (``paused``), for the managers that start later.
        """

    @abstractmethod
    def paused(self) -> asyncio.Future[bool]:
        """Whether every worker is to be paused, as the last announced pause said (False if
        none was): a manager reads it at start."""


def pack(value: Any, what: str) -> bytes:
    """Encode ``value`` for a BLOB column; ``what`` names it in the error, the value never does."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        # msgpack's messages name the offending type, never the value.
        raise SerializationError(f"{what} cannot be encoded as msgpack: {exc}") from exc


def pack_payload(job: JobRecord) -> bytes:
    """The ``payload`` column: ``[args, kwargs]``, and the trace context third when the job
    has one (inside the payload, so tracing needs no schema change)."""
    payload = [job.args, job.kwargs] if job.trace is None else [job.args, job.kwargs, job.trace]
    return pack(payload, f"job {job.id} arguments")


def unpack(raw: bytes) -> Any:
    """Decode a BLOB written by ``pack``."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


_STATUSES = {status.value: status for status in JobStatus}
"""Status by stored value: a dict lookup, several times cheaper than ``JobStatus(value)``
(every claimed or read job goes through it)."""


def merge_queued(
    rows: Iterable[tuple[str, str, int, float]],
) -> dict[tuple[str, str], tuple[int, float]]:
    """``queued_by_task``'s answer from rows of (queue, task, count, oldest created_at), a
    key appearing once for its free jobs and once for its owned ones."""
    merged: dict[tuple[str, str], tuple[int, float]] = {}
    for queue, task, count, oldest in rows:
        before = merged.get((queue, task))
        merged[(queue, task)] = ((count, oldest) if before is None
                                 else (before[0] + count, min(before[1], oldest)))
    return merged


def record_from_row(row: tuple[Any, ...]) -> JobRecord:
    """A job row (the columns in the order every backend's ``COLUMNS`` selects them) back as
    a record; both backends store the same columns, encoded by ``pack``."""
    (
        job_id, q, task, payload, status, attempts, worker, parent, result, error,
        created_at, started_at, finished_at,
        dependencies, on_failure_job, handler_for, next_attempt_at, owner,
    ) = row  # fmt: skip
    args, kwargs, *traced = unpack(payload)
    return JobRecord(
        id=job_id,
        queue=q,
        task=task,
        args=args,
        kwargs=kwargs,
        status=_STATUSES.get(status) or JobStatus(status),  # which raises for an unknown one
        attempts=attempts,
        worker=worker,
        parent=parent,
        result=None if result is None else unpack(result),
        error=None if error is None else unpack(error),
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        dependencies=unpack(dependencies),
        on_failure_job=on_failure_job,
        handler_for=handler_for,
        next_attempt_at=next_attempt_at,
        owner=owner,
        trace=traced[0] if traced else None,
    )


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A named credential as a store keeps it: the salt its key is derived with, never the key."""

    name: str
    role: str
    queues: tuple[str, ...] | None
    """The queues it may use; None for every queue (an admin)."""
    salt: bytes
    created_at: float


def queues_text(queues: tuple[str, ...] | None) -> str | None:
    """A credential's queues as the column holds them: a JSON list, NULL for every queue."""
    return None if queues is None else json.dumps(list(queues))


def credential_from_row(row: tuple[Any, ...]) -> CredentialRecord:
    """A credentials row (name, role, queues, salt, created_at) back as a record."""
    name, role, queues, salt, created_at = row
    return CredentialRecord(name, role, None if queues is None else tuple(json.loads(queues)),
                            bytes(salt), created_at)
