"""The storage seam: what the manager needs from a durable job store, and nothing more.

Every backend (one file each) implements ``Store`` and passes the one contract suite in
``tests/store/test_store_contract.py``. The contract, for every method:

- it is a coroutine, and any write is committed before the awaitable returns, so the caller may
  acknowledge the job to its submitter;
- operations issued one after another from the same event loop are applied in that order;
- a backend failure raises ``StoreError`` (the cause goes to the ``easyjobs.store`` log, never
  into the message); a value msgpack cannot carry raises ``SerializationError`` at the call and
  writes nothing; after ``close()`` every call raises ``StoreError("store is closed")``;
- status changes follow ``easyjobs.jobs.TRANSITIONS``: a change the table does not allow from
  the job's current status leaves the job untouched (and creates nothing);
- a call that writes several rows (``add_jobs``, ``finish`` with children, ``fire_schedule``)
  commits all of them or none: a crash between them is impossible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import msgpack

from easyjobs.errors import SerializationError
from easyjobs.jobs import JobRecord, JobStatus

TaskSpec = tuple[str, str, dict[str, Any]]
"""``(queue, name, spec)``: a registered task; ``spec`` is any msgpack-able map."""

MAX_PAGE = 1000
"""The most jobs one ``list_jobs`` call returns."""


class Store(ABC):
    """A durable home for job records and registered tasks.

    Call ``open()`` before anything else and ``close()`` when done; a closed store is not
    reopened, make a new one (``open_store``) instead. Backends call ``super().__init__()``
    and add one to ``_commits`` per committed transaction.
    """

    def __init__(self) -> None:
        self._commits = 0

    @property
    def commits(self) -> int:
        """Statistic: transactions committed so far. Many calls share one under load."""
        return self._commits

    @abstractmethod
    async def open(self) -> None:
        """Connect, create the schema if missing (safe on an existing store) and start serving."""

    @abstractmethod
    async def close(self) -> None:
        """Finish every call already issued, then release the store. Safe to call twice."""

    @abstractmethod
    async def add_jobs(self, jobs: Sequence[JobRecord]) -> list[bool]:
        """Insert new jobs as they are, status included; one bool per job, False for a known id.

        An existing job is left exactly as it was, so re-sending a submit is harmless. One call
        is one atomic unit: the manager adds a job's ``waiting`` dependents together with the
        run_before jobs they wait for, so a crash never leaves a dependent without them.
        """

    @abstractmethod
    async def mark_running(self, job_id: str, worker: str, attempt: int, at: float) -> None:
        """Move a queued job to running on ``worker``; other jobs are left alone."""

    @abstractmethod
    async def requeue(self, job_ids: Sequence[str]) -> None:
        """Queue jobs again: running (worker lost), waiting (dependencies done), retrying (due).

        Clears the worker and ``next_attempt_at``; keeps ``attempts`` and the last error.
        Jobs in any other status, and unknown ids, are left alone.
        """

    @abstractmethod
    async def retry(self, job_id: str, error: dict[str, str], next_attempt_at: float) -> bool:
        """Move a running job to retrying after a failed attempt that has a retry left.

        Stores the attempt's ``error`` and when the next attempt is due, and clears the worker.
        Returns False, changing nothing, when the job is not running; the caller should then
        drop the outcome. When the attempt is due, the caller ``requeue``s the job.
        """

    @abstractmethod
    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: Any,
        error: dict[str, str] | None,
        at: float,
        *,
        children: Sequence[JobRecord] = (),
        on_failure_job: str | None = None,
    ) -> bool:
        """Record a job's outcome and, in the same transaction, create the jobs it leads to.

        ``status`` must be terminal (else ``ValueError``). ``children`` (run_after jobs, the
        on_failure job) are inserted like ``add_jobs``, an existing id being left as it was;
        ``on_failure_job``, when given, is stored as the id of this job's failure handler.
        ``next_attempt_at`` is cleared, the worker kept. Either all of it commits or none of it,
        so a crash can neither lose nor duplicate a child.

        Returns False, changing nothing and creating no child, when the job is unknown or the
        lifecycle table does not allow ``status`` from its current one (already terminal, a
        waiting or retrying job cannot succeed). The caller should then drop the outcome.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job as last committed, or None if there is no such job."""

    @abstractmethod
    async def unfinished_jobs(self) -> list[JobRecord]:
        """Every job in ``UNFINISHED`` (waiting, queued, running, retrying), oldest first.

        Ordered by ``created_at``, then id. The manager calls this at start-up to take back the
        work a previous run left behind: requeue running jobs, re-arm retry timers, re-check
        waiting jobs' dependencies.
        """

    @abstractmethod
    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[JobRecord]:
        """One page of jobs, newest first (``created_at`` descending, then id descending).

        ``queue``, ``task`` and ``status`` filter by exact match when given. ``limit`` is
        clamped to 1..``MAX_PAGE``. ``before`` is a cursor: pass the id of the last job of the
        previous page to get the jobs strictly after it in this order (it need not match the
        filters); an unknown cursor id gives ``[]``. A page shorter than ``limit`` is the last.
        """

    @abstractmethod
    async def save_tasks(self, tasks: Sequence[TaskSpec]) -> None:
        """Insert or replace registered tasks, keyed by ``(queue, name)``."""

    @abstractmethod
    async def load_tasks(self) -> list[TaskSpec]:
        """Every saved task, ordered by queue then name."""

    @abstractmethod
    async def count_jobs(self) -> dict[tuple[str, str], int]:
        """How many jobs each (queue, status) pair has, finished ones included."""

    @abstractmethod
    async def load_schedules(self) -> dict[tuple[str, str], float]:
        """The last fire time of every cron schedule that has fired, keyed by ``(queue, task)``.

        The manager computes each schedule's next tick from this at start-up, so ticks missed
        while it was down are skipped rather than replayed.
        """

    @abstractmethod
    async def fire_schedule(
        self, queue: str, task: str, tick: float, job: JobRecord,
        dependencies: Sequence[JobRecord] = (),
    ) -> bool:
        """Fire the schedule of ``(queue, task)`` for ``tick``: at most one job per tick, ever.

        In one transaction: when the schedule has never fired or last fired before ``tick``,
        record ``tick`` as its last fire and insert ``job`` with its run_before
        ``dependencies`` (as ``add_jobs`` would), returning True. Otherwise (the tick, or a
        later one, already fired, e.g. before a restart) change nothing and return False; the
        caller then drops ``job``.
        """


def pack(value: Any, what: str) -> bytes:
    """Encode ``value`` for a BLOB column; ``what`` names it in the error, the value never does."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        # msgpack's messages name the offending type, never the value.
        raise SerializationError(f"{what} cannot be encoded as msgpack: {exc}") from exc


def unpack(raw: bytes) -> Any:
    """Decode a BLOB written by ``pack``."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)
