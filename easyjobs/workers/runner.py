"""Runs assigned jobs: slots, credit, slot lending for nested calls, and result reporting.

The runner knows nothing about sockets. It is given an ``Assign`` and the function to run, and
talks back through two callables: ``grant(n)`` (n more assignments may come) and ``report(done)``.

Slots: a slot is either held by a running job, granted to the manager as credit, or free, and
credit is granted only for free slots, so ``active + granted <= capacity`` whenever the runner
grants. A job that awaits another job's result lends its slot (``lend``) so the child can run
even with one slot. When it resumes it takes a slot back at once (waiting for one could wait on
credit the manager holds but has no job to spend: a deadlock) and revokes the credit its slot
became. Only an assignment already on its way when the revoke leaves can make ``active`` exceed
``capacity``, by one per resumed job, until a job finishes; no credit is granted meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import SerializationError, TaskTimeout
from ..jobs import JobStatus
from ..protocol.frames import MAX_DEPTH, Assign, Done, is_plain
from ..remote import current_job, current_slot
from .child import ChildFailed

log = logging.getLogger("easyjobs.runner")


@dataclass(slots=True)
class _Running:
    assign: Assign
    task: asyncio.Task[None] | None = None
    lent: int = 0
    holds_slot: bool = True


def failure(exc: BaseException) -> dict[str, str]:
    """An exception as the ``error`` map of a ``done`` frame (a child's as the child told)."""
    if isinstance(exc, ChildFailed):
        return exc.error
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


class Runner:
    """Runs jobs within ``capacity`` slots and reports each attempt's outcome."""

    def __init__(
        self,
        capacity: int,
        grant: Callable[[int], None],
        report: Callable[[Done], None],
        revoke: Callable[[int], None],
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._grant = grant
        self._report = report
        self._revoke = revoke
        self._running: dict[str, _Running] = {}
        self._active = 0
        self._granted = 0
        self._accepting = False
        self._idle = asyncio.Event()
        self._idle.set()

    # ---------------------------------------------------------------- credit

    def open(self) -> None:
        """A (new) link is up: forget old credit and grant every free slot afresh."""
        self._granted = 0
        self._accepting = True
        self._rebalance()

    def link_lost(self) -> None:
        """The link is down: credit granted over it is void."""
        self._granted = 0

    def stop_accepting(self) -> None:
        """Grant no more credit (shutdown); running jobs go on."""
        self._accepting = False

    def _rebalance(self) -> None:
        free = self.capacity - self._active - self._granted
        if free > 0 and self._accepting:
            self._granted += free
            self._grant(free)

    @property
    def running_jobs(self) -> list[str]:
        """Ids of the jobs running now."""
        return list(self._running)

    # ---------------------------------------------------------------- running

    def start(
        self, assign: Assign, fn: Callable[..., Any] | None, timeout: float | None = None
    ) -> None:
        """Run one assigned attempt; ``fn`` is None when this worker does not have the task.

        An attempt running longer than ``timeout`` seconds is cancelled and fails with
        ``TaskTimeout``.
        """
        if self._granted > 0:
            self._granted -= 1
        else:  # a credit revoked while this assignment was on its way: run it anyway
            log.debug("assignment on a revoked credit for job %s", assign.job)
        self._active += 1
        self._idle.clear()
        running = _Running(assign)
        previous = self._running.get(assign.job)
        self._running[assign.job] = running
        if previous is not None and previous.task is not None:
            previous.task.cancel()
        running.task = asyncio.get_running_loop().create_task(
            self._run(running, fn, timeout), name=f"{assign.task} job {assign.job}"
        )

    def abort(self, job_id: str) -> bool:
        """Cancel a running job (the manager cancelled it); nothing is reported for it."""
        running = self._running.get(job_id)
        if running is None or running.task is None:
            return False
        running.task.cancel()
        return True

    async def _run(
        self, running: _Running, fn: Callable[..., Any] | None, timeout: float | None
    ) -> None:
        assign = running.assign
        current_job.set(assign.job)
        current_slot.set(lambda: self._lend(running))
        try:
            if fn is None:
                raise LookupError(f"this worker has no task {assign.task!r}")
            if timeout is None:
                value = await fn(*assign.args, **assign.kwargs)
            else:
                try:
                    value = await asyncio.wait_for(fn(*assign.args, **assign.kwargs), timeout)
                except asyncio.TimeoutError:
                    raise TaskTimeout(
                        f"{assign.task} ran longer than its {timeout:g}s timeout"
                    ) from None
            if not is_plain(value, MAX_DEPTH - 2):
                raise SerializationError(
                    f"the result of {assign.task} ({type(value).__name__}) is not "
                    "msgpack-serializable: return None, bool, int, float, str, bytes, list or dict"
                )
            done = Done(assign.job, assign.attempt, JobStatus.SUCCEEDED.value, value)
        except asyncio.CancelledError:
            self._finish(running)
            raise
        except Exception as exc:
            done = Done(assign.job, assign.attempt, JobStatus.FAILED.value, None, failure(exc))
        self._finish(running)
        try:
            self._report(done)
        except SerializationError as exc:  # too big for a frame
            self._report(Done(assign.job, assign.attempt, JobStatus.FAILED.value, None,
                              failure(exc)))

    def _finish(self, running: _Running) -> None:
        if self._running.get(running.assign.job) is running:
            del self._running[running.assign.job]
        if running.holds_slot:
            running.holds_slot = False
            self._active -= 1
        if not self._running:
            self._idle.set()
        self._rebalance()

    @asynccontextmanager
    async def _lend(self, running: _Running) -> AsyncIterator[None]:
        """Free ``running``'s slot while the body awaits another job; take it back after."""
        running.lent += 1
        if running.lent == 1 and running.holds_slot:
            running.holds_slot = False
            self._active -= 1
            self._rebalance()
        try:
            yield
        finally:
            running.lent -= 1
            if running.lent == 0 and not running.holds_slot:
                running.holds_slot = True
                self._active += 1
                over = min(self._granted, self._active + self._granted - self.capacity)
                if over > 0:  # its slot went back to the manager as credit: take that back
                    self._granted -= over
                    self._revoke(over)

    # ---------------------------------------------------------------- stopping

    async def drain(self, grace: float) -> list[str]:
        """Wait up to ``grace`` seconds for running jobs, then cancel the rest; returns those."""
        self.stop_accepting()
        if self._running:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except asyncio.TimeoutError:
                pass
        leftover = list(self._running)
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return leftover
