"""The job lifecycle: statuses, the one table of legal transitions, and the job record.

    waiting ──deps done──> queued ──assign──> running ──done──> succeeded
       │                   ^  ^                │ │ │
       │                   │  └──── requeue ───┘ │ └──failed, no retry left──> failed
       │                   └─── retry due ── retrying <──failed, retry left──┘
       └──a dependency failed──> failed        (any unfinished status) ──cancel──> cancelled

``waiting``: its run_before dependencies have not all succeeded; it holds no worker slot.
``retrying``: an attempt failed and the next one is due at ``next_attempt_at``.
A job is acknowledged only once its record is committed; every status change is a store write.
Pure data: no I/O here, so the manager, the stores and the tests share one definition.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class JobStatus(str, Enum):
    """Where a job is in its life; the string values are what the wire and the store carry."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)
UNFINISHED: frozenset[JobStatus] = frozenset(JobStatus) - TERMINAL

_S = JobStatus
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _S.WAITING: frozenset({_S.QUEUED, _S.FAILED, _S.CANCELLED}),
    # queued -> succeeded/failed: a worker that lost its link may still deliver the outcome of
    # a job that was requeued meanwhile; the first outcome wins.
    _S.QUEUED: frozenset({_S.RUNNING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.QUEUED, _S.RETRYING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
    _S.RETRYING: frozenset({_S.QUEUED, _S.CANCELLED}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    """True when the lifecycle table allows moving from ``current`` to ``new``."""
    return new in TRANSITIONS[current]


def new_job_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit milliseconds + 80 random bits).

    Callers make their own ids so that a submit re-sent after a reconnect is recognised as the
    same job instead of creating a second one.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def derived_job_id(parent: str, *role: str) -> str:
    """The id of a job that ``parent`` creates in a given ``role`` (e.g. a dependency).

    The same parent and role always give the same id, so creating it again — a submit re-sent
    after a reconnect — finds the job already there instead of making a second one. It keeps
    the parent's time prefix, so it sorts with its parent.
    """
    digest = hashlib.sha256("\x00".join((parent, *role)).encode()).hexdigest()
    return parent[:12] + digest[:20]


@dataclass(slots=True)
class JobRecord:
    """One job as the store keeps it. ``error`` is ``{"type", "message", "traceback"}``."""

    id: str
    queue: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.QUEUED
    attempts: int = 0
    worker: str | None = None
    parent: str | None = None
    result: Any = None
    error: dict[str, str] | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    dependencies: list[str] = field(default_factory=list)
    """Ids of the run_before jobs this job waits for."""
    on_failure_job: str | None = None
    """Id of the on_failure job created when this job failed for good."""
    handler_for: str | None = None
    """For an on_failure job: the id of the job whose failure it handles."""
    next_attempt_at: float | None = None
    """While retrying: when the next attempt is due (seconds since the epoch)."""
    trace: dict[str, str] | None = None
    """The W3C trace context the job continues (``traceparent``, ``tracestate``); the jobs it
    causes inherit it. Stored with the arguments; not part of ``to_wire``."""
    owner: str | None = None
    """The manager that holds this unfinished job in memory; None while it waits in the
    store's queue for any manager to claim it. Internal: not part of ``to_wire``."""

    def move(self, status: JobStatus) -> None:
        """Change status as ``TRANSITIONS`` allows; an illegal move is a bug (``ValueError``)."""
        if not can_transition(self.status, status):
            raise ValueError(f"job {self.id}: illegal transition "
                             f"{self.status.value} -> {status.value}")
        self.status = status

    def to_wire(self) -> dict[str, Any]:
        """The record as a msgpack-able map, the shape the ``job_info`` frame carries."""
        return {
            "id": self.id,
            "queue": self.queue,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "status": self.status.value,
            "attempts": self.attempts,
            "worker": self.worker,
            "parent": self.parent,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "dependencies": self.dependencies,
            "on_failure_job": self.on_failure_job,
            "handler_for": self.handler_for,
            "next_attempt_at": self.next_attempt_at,
        }
