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
  the job's current status leaves the job untouched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]

from easyjobs.errors import SerializationError
from easyjobs.jobs import JobRecord, JobStatus

TaskSpec = tuple[str, str, dict[str, Any]]
"""``(queue, name, spec)``: a registered task; ``spec`` is any msgpack-able map."""


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
        """Insert new jobs; one bool per job, False where that id already existed.

        An existing job is left exactly as it was, so re-sending a submit is harmless.
        """

    @abstractmethod
    async def mark_running(self, job_id: str, worker: str, attempt: int, at: float) -> None:
        """Move a queued job to running on ``worker``; other jobs are left alone."""

    @abstractmethod
    async def requeue(self, job_ids: Sequence[str]) -> None:
        """Put running jobs back in the queue (worker cleared); other jobs are left alone."""

    @abstractmethod
    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: Any,
        error: dict[str, str] | None,
        at: float,
    ) -> bool:
        """Record a job's outcome; ``status`` must be terminal.

        Returns False, changing nothing, when the job is unknown, already terminal, or (for
        ``SUCCEEDED``) was never marked running. The caller should then drop the outcome.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job as last committed, or None if there is no such job."""

    @abstractmethod
    async def unfinished_jobs(self) -> list[JobRecord]:
        """Every queued or running job, oldest first (``created_at``, then id).

        The manager calls this at start-up to requeue work a previous run left behind.
        """

    @abstractmethod
    async def save_tasks(self, tasks: Sequence[TaskSpec]) -> None:
        """Insert or replace registered tasks, keyed by ``(queue, name)``."""

    @abstractmethod
    async def load_tasks(self) -> list[TaskSpec]:
        """Every saved task, ordered by queue then name."""


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
