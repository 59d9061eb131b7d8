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

Each attempt runs in its trace span (``easyjobs.tracing``; nothing without the otel extra).

Sync (``def``) tasks run in threads of their own, one per running job, with the job's context
(``current_job`` and the caller's context variables) copied in. A thread cannot be stopped: a
sync task that times out fails at once with ``TaskTimeout`` and one that is cancelled reports
nothing, as async ones do, but its slot stays taken until its thread returns, so a worker never
runs more task bodies at once than it has slots. A sync task cannot call other tasks (they run
on the event loop): it gets a ``ConfigurationError`` saying to make it ``async def``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .. import tracing
from ..errors import ConfigurationError, SerializationError, TaskTimeout
from ..jobs import JobStatus
from ..jsonlog import assign_fields
from ..protocol.frames import MAX_DEPTH, Assign, Done, is_plain
from ..remote import current_job, current_slot
from .child import ChildFailed

log = logging.getLogger("easyjobs.runner")


NESTED_CALL_IN_THREAD = (
    "a sync (def) task cannot call or submit other tasks: tasks are called on the worker's "
    "event loop, and a sync task runs in a thread; make the task 'async def' and await them"
)


@dataclass(slots=True)
class _Running:
    assign: Assign
    task: asyncio.Task[None] | None = None
    lent: int = 0
    holds_slot: bool = True
    thread: asyncio.Future[Any] | None = None
    """A sync task's body, running in a thread: its slot is held until it returns."""


_thread_state = threading.local()


def in_task_thread() -> bool:
    """True in the thread of a sync task (where calling other tasks is refused)."""
    return getattr(_thread_state, "task_thread", False)


def _refuse_nested_call() -> AbstractAsyncContextManager[None]:
    """``current_slot`` in a sync task's thread: lending a slot from there is refused."""
    raise ConfigurationError(NESTED_CALL_IN_THREAD)


_Body = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context,
              Callable[..., Any], list[Any], dict[str, Any]]


class _TaskThreads:
    """The threads that run sync task bodies: an idle one is reused, else one more starts.

    The runner hands it at most one body per slot, so there are never more threads than
    slots have been busy at once. Daemon threads: a body stuck in a blocking call must not keep
    the process alive after the worker stopped (``ThreadPoolExecutor`` joins its threads at exit).
    """

    def __init__(self) -> None:
        self._bodies: queue.SimpleQueue[_Body] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    def run(self, context: contextvars.Context, fn: Callable[..., Any], args: list[Any],
            kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in ``context`` in a thread; the future gets its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        self._bodies.put((loop, future, context, fn, args, kwargs))
        if not reuse:
            self._started += 1
            threading.Thread(target=self._serve, name=f"easyjobs task thread {self._started}",
                             daemon=True).start()
        return future

    def _serve(self) -> None:
        _thread_state.task_thread = True
        while True:
            loop, future, context, fn, args, kwargs = self._bodies.get()
            try:
                outcome: tuple[bool, Any] = (True, context.run(fn, *args, **kwargs))
            except BaseException as exc:  # the task's to report, whatever it is
                outcome = (False, exc)
            del context, fn, args, kwargs
            with self._lock:  # idle before the loop hears of it: the next body may come at once
                self._idle += 1
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop is closed: nobody waits for this body any more
                pass
            del loop, future, outcome


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if not future.done():
        if outcome[0]:
            future.set_result(outcome[1])
        else:
            future.set_exception(outcome[1])


def check_result(task: str, value: Any) -> None:
    """Raise ``SerializationError`` unless ``value`` can be sent back as ``task``'s result."""
    if not is_plain(value, MAX_DEPTH - 2):
        raise SerializationError(
            f"the result of {task} ({type(value).__name__}) is not "
            "msgpack-serializable: return None, bool, int, float, str, bytes, list or dict"
        )


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
        name: str = "",
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.name = name
        """The worker's name, in the spans and log lines of its attempts."""
        self._grant = grant
        self._report = report
        self._revoke = revoke
        self._running: dict[str, _Running] = {}
        self._active = 0
        self._granted = 0
        self._accepting = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._threads = _TaskThreads()

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
        self, assign: Assign, fn: Callable[..., Any] | None, timeout: float | None = None,
        in_thread: bool = False,
    ) -> None:
        """Run one assigned attempt; ``fn`` is None when this worker does not have the task.

        ``fn`` is a coroutine function, or with ``in_thread`` a plain function run in a thread.
        An attempt running longer than ``timeout`` seconds is cancelled (a thread is left to
        return) and fails with ``TaskTimeout``.
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
            self._run(running, fn, timeout, in_thread), name=f"{assign.task} job {assign.job}"
        )

    def abort(self, job_id: str) -> bool:
        """Cancel a running job (the manager cancelled it); nothing is reported for it."""
        running = self._running.get(job_id)
        if running is None or running.task is None:
            return False
        running.task.cancel()
        return True

    async def _run(
        self, running: _Running, fn: Callable[..., Any] | None, timeout: float | None,
        in_thread: bool,
    ) -> None:
        assign = running.assign
        current_job.set(assign.job)
        current_slot.set(lambda: self._lend(running))
        with tracing.attempt(assign, self.name) as span:
            try:
                if fn is None:
                    raise LookupError(f"this worker has no task {assign.task!r}")
                if in_thread:
                    value = await self._run_in_thread(running, fn, timeout)
                elif timeout is None:
                    value = await fn(*assign.args, **assign.kwargs)
                else:
                    try:
                        value = await asyncio.wait_for(fn(*assign.args, **assign.kwargs),
                                                       timeout)
                    except asyncio.TimeoutError:
                        raise TaskTimeout(
                            f"{assign.task} ran longer than its {timeout:g}s timeout"
                        ) from None
                check_result(assign.task, value)
                done = Done(assign.job, assign.attempt, JobStatus.SUCCEEDED.value, value)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                if span is not None:
                    tracing.finished(span, JobStatus.CANCELLED.value)
                self._finish(running)  # cancelled, or the process was told to stop: it does
                raise
            except BaseException as exc:  # anything else the task raised fails its attempt
                done = Done(assign.job, assign.attempt, JobStatus.FAILED.value, None,
                            failure(exc))
                if span is not None:
                    tracing.finished(span, done.status, exc)
            else:
                if span is not None:
                    tracing.finished(span, done.status)
        self._finish(running)
        try:
            self._report(done)
        except SerializationError as exc:  # too big for a frame
            self._report(Done(assign.job, assign.attempt, JobStatus.FAILED.value, None,
                              failure(exc)))

    async def _run_in_thread(
        self, running: _Running, fn: Callable[..., Any], timeout: float | None
    ) -> Any:
        """Run a sync task's body in a thread; a timeout fails the attempt without waiting."""
        assign = running.assign
        context = contextvars.copy_context()
        context.run(current_slot.set, _refuse_nested_call)
        running.thread = self._threads.run(context, fn, assign.args, assign.kwargs)
        finished, _ = await asyncio.wait((running.thread,), timeout=timeout)
        if not finished:
            raise TaskTimeout(f"{assign.task} ran longer than its {timeout:g}s timeout")
        return running.thread.result()

    def _finish(self, running: _Running) -> None:
        if self._running.get(running.assign.job) is running:
            del self._running[running.assign.job]
        if not self._running:
            self._idle.set()
        thread = running.thread
        if thread is not None and not thread.done():
            log.warning("%s (job %s) timed out or was cancelled while its thread runs; a thread "
                        "cannot be stopped, so it keeps its slot until it returns",
                        running.assign.task, running.assign.job,
                        extra=assign_fields(running.assign, self.name))
            thread.add_done_callback(lambda _: self._thread_returned(running))
        else:
            self._release(running)

    def _thread_returned(self, running: _Running) -> None:
        assert running.thread is not None
        if not running.thread.cancelled():
            running.thread.exception()  # nobody wants this outcome any more: mark it seen
        log.info("the thread of %s (job %s) returned; its slot is free",
                 running.assign.task, running.assign.job,
                 extra=assign_fields(running.assign, self.name))
        self._release(running)

    def _release(self, running: _Running) -> None:
        if running.holds_slot:
            running.holds_slot = False
            self._active -= 1
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
