"""Calling tasks: pending calls as futures keyed by ref, ``Job`` handles, awaitable remote tasks.

``Calls`` is the caller's side of the protocol's request frames. It never touches a socket: it
hands frames to a ``send`` callable and is fed the manager's replies through ``handle``. Because
job ids are chosen here and every request is idempotent, ``pending_frames`` can be re-sent as-is
after a reconnect; only ``fail_all`` (the link closed for good) and ``expire`` (the link has been
down too long) fail the waiting callers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from . import tracing
from .errors import (
    ConfigurationError,
    EasyJobsError,
    JobCancelled,
    ResultTimeout,
    TaskFailed,
    WorkerLost,
    error_from_code,
)
from .jobs import JobStatus, new_job_id
from .protocol.frames import (
    Accepted,
    Cancel,
    Error,
    Frame,
    JobInfo,
    JobList,
    ListJobs,
    Lookup,
    Result,
    ScheduleInfo,
    Schedules,
    Submit,
    Watch,
)

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

current_slot: ContextVar[Callable[[], AbstractAsyncContextManager[None]] | None] = ContextVar(
    "easyjobs_current_slot", default=None
)
"""Set by the runner while a task runs: ``lend()`` frees its slot while it awaits a child."""

current_job: ContextVar[str | None] = ContextVar("easyjobs_current_job", default=None)
"""The id of the job whose task is running in this context (the parent of jobs it submits)."""


@dataclass(slots=True)
class _Pending:
    frame: Frame
    future: asyncio.Future[Any]
    since: float
    """The loop time the call was made."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an exception as seen: a caller that gave up must not cause a warning later."""
    if not future.cancelled():
        future.exception()


class Calls:
    """Requests in flight from one caller to the manager, resolved by pushed frames.

    ``send`` must raise ``SerializationError`` for a frame that cannot be encoded, and must not
    deliver a reply before it returns (replies arrive through ``handle`` on a later callback).
    """

    def __init__(self, send: Callable[[Frame], None]) -> None:
        self._send = send
        self._refs = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._watching: dict[str, int] = {}
        self._closed: EasyJobsError | None = None

    def request(self, make: Callable[[int], Frame]) -> asyncio.Future[Any]:
        """Send the frame ``make`` builds with a fresh ref; the future gets its reply frame
        (an ``Error`` reply raises its exception), re-sent after a reconnect until then."""
        if self._closed is not None:
            raise self._closed
        ref = next(self._refs)
        frame = make(ref)
        self._send(frame)  # raises SerializationError before anything is registered
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending[ref] = _Pending(frame, future, loop.time())
        return future

    async def submit(
        self,
        queue: str,
        task: str,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        watch: bool = False,
        job_id: str | None = None,
    ) -> Job[Any]:
        """Create a job and return its handle once the manager has committed it; ``watch``:
        the manager pushes the outcome unasked (the handle's ``result`` gets it)."""
        job = job_id or new_job_id()
        parent = current_job.get()
        with tracing.submitting(queue, task, job) as trace:
            accepted = self.request(
                lambda ref: Submit(ref, job, queue, task, list(args), kwargs, parent, watch, trace)
            )
            # Registered after the submit, so a re-send after a reconnect keeps order; held by
            # the handle, since the outcome may come in the very message that accepts the job.
            outcome = self._watch(job, send=False) if watch else None
            try:
                await accepted
            except BaseException:
                if watch:
                    self._forget_watch(job)
                raise
        return Job(job, self, outcome)

    async def call(self, queue: str, task: str, args: Any, kwargs: dict[str, Any]) -> Any:
        """Submit a job and return its result: the remote function call."""
        lend = current_slot.get()
        async with lend() if lend is not None else nullcontext():
            job = await self.submit(queue, task, args, kwargs, watch=True)
            return await job.result()

    def _watch(self, job: str, send: bool = True) -> asyncio.Future[Any]:
        ref = self._watching.get(job)
        if ref is not None:
            return self._pending[ref].future
        if self._closed is not None:
            raise self._closed
        ref = next(self._refs)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending[ref] = _Pending(Watch(ref, job), future, loop.time())
        self._watching[job] = ref
        if send:
            self._send(self._pending[ref].frame)
        return future

    def _forget_watch(self, job: str) -> None:
        ref = self._watching.pop(job, None)
        if ref is not None:
            self._pending.pop(ref, None)

    async def result(self, job: str, timeout: float | None = None,
                     outcome: asyncio.Future[Any] | None = None) -> Any:
        """The job's result, pushed by the manager; raises ``TaskFailed`` if it failed.
        ``outcome``: the watch a submit made (``Job`` holds it), else one is sent now."""
        future = outcome if outcome is not None else self._watch(job)
        try:
            frame: Result = await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            raise ResultTimeout(f"job {job} did not finish within {timeout}s") from None
        if frame.status == JobStatus.SUCCEEDED.value:
            return frame.value
        if frame.status == JobStatus.CANCELLED.value:
            raise JobCancelled(job)
        error = frame.error or {"type": "EasyJobsError", "message": "job failed"}
        if error["type"] == "WorkerLost":
            raise WorkerLost(error["message"], error.get("traceback", ""), job)
        raise TaskFailed(error["type"], error["message"], error.get("traceback", ""), job)

    async def lookup(self, job: str) -> dict[str, Any]:
        """The job's record as the manager's store has it."""
        info: JobInfo = await self.request(lambda ref: Lookup(ref, job))
        return info.job

    async def cancel(self, job: str) -> dict[str, Any]:
        """Cancel a job that has not finished (a running attempt is stopped on its worker).

        Returns the job's record afterwards; a job that had already finished keeps its outcome.
        """
        info: JobInfo = await self.request(lambda ref: Cancel(ref, job))
        return info.job

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
        queues: list[str] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Recent job records, newest first, and the cursor (``before``) for the next page;
        ``queues`` keeps only the jobs of those queues."""
        page: JobList = await self.request(
            lambda ref: ListJobs(ref, queue, task, status, limit, before, queues)
        )
        return page.jobs, page.next

    async def schedules(self) -> list[dict[str, Any]]:
        """Every cron schedule the manager runs, with its last and next fire times."""
        info: ScheduleInfo = await self.request(lambda ref: Schedules(ref))
        return info.schedules

    def handle(self, frame: Frame) -> bool:
        """Resolve what ``frame`` answers; False if it is not a reply to a call."""
        if isinstance(frame, Result):
            ref = self._watching.pop(frame.job, None)
            pending = self._pending.pop(ref, None) if ref is not None else None
            if pending is not None and not pending.future.done():
                pending.future.set_result(frame)
            return True
        if isinstance(frame, (Accepted, JobInfo, JobList, ScheduleInfo, Error)) \
                and frame.ref is not None:
            pending = self._pending.pop(frame.ref, None)
            if pending is None or pending.future.done():
                return True
            if isinstance(frame, Error):
                if isinstance(pending.frame, Watch):
                    self._watching.pop(pending.frame.job, None)
                pending.future.set_exception(error_from_code(frame.code, frame.message))
            else:
                pending.future.set_result(frame)
            return True
        return False

    def pending_frames(self) -> list[Frame]:
        """Every unanswered request, in the order it was made, to re-send after a reconnect."""
        return [p.frame for _, p in sorted(self._pending.items())]

    def expire(self, before: float, error: EasyJobsError) -> float | None:
        """Fail the requests made before loop time ``before`` with ``error`` (watches wait on:
        a result has its own timeout); returns when the oldest request left was made."""
        oldest: float | None = None
        for ref, pending in list(self._pending.items()):
            if isinstance(pending.frame, Watch):
                continue
            if pending.since > before:
                oldest = pending.since if oldest is None else min(oldest, pending.since)
                continue
            del self._pending[ref]
            if not pending.future.done():
                pending.future.set_exception(error)
        return oldest

    def fail_all(self, error: EasyJobsError) -> None:
        """The link is gone for good: fail every waiting caller with ``error``, refuse new calls."""
        self._closed = error
        pending, self._pending = self._pending, {}
        self._watching.clear()
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(error)


class Job(Generic[R_co]):
    """A handle on a submitted job: its id, its status, and (awaited) its result.

    ``R_co`` is the task's return type when the job came from a typed ``task.submit(...)``.
    """

    __slots__ = ("id", "_calls", "_outcome")

    def __init__(self, job_id: str, calls: Calls,
                 outcome: asyncio.Future[Any] | None = None) -> None:
        self.id = job_id
        self._calls = calls
        self._outcome = outcome
        """The watch its submit made, if it asked the manager to push the outcome."""

    async def result(self, timeout: float | None = None) -> R_co:
        """Wait (pushed, not polled) for the result; ``TaskFailed`` if the job failed."""
        value: R_co = await self._calls.result(self.id, timeout, self._outcome)
        return value

    async def info(self) -> dict[str, Any]:
        """The job's full record (status, attempts, worker, timestamps, result or error)."""
        return await self._calls.lookup(self.id)

    async def status(self) -> JobStatus:
        """The job's current status."""
        return JobStatus((await self.info())["status"])

    async def cancel(self) -> dict[str, Any]:
        """Cancel the job (and stop a running attempt); returns its record afterwards."""
        return await self._calls.cancel(self.id)

    def __repr__(self) -> str:
        return f"Job({self.id!r})"


class RemoteTask(Generic[P, R]):
    """A task as a remote function: ``await task(...)`` runs it on some worker.

    Decorating ``def f(a: int) -> str`` (or ``async def``) gives a ``RemoteTask`` with ``f``'s
    parameters and result ``str``, so a type checker checks the arguments of ``task(...)`` and
    ``task.submit(...)`` and types their results; a task named by a string (``remote``,
    ``client.task``) takes anything and returns ``Any``.
    """

    def __init__(
        self,
        calls: Callable[[], Calls],
        queue: str,
        name: str,
        fn: Callable[P, Any] | None = None,
        local: Callable[[tuple[Any, ...], dict[str, Any]], Coroutine[Any, Any, Any]] | None = None,
    ) -> None:
        self._calls = calls
        self._local = local
        self.queue = queue
        self.name = name
        self.fn = fn
        self.__name__ = name
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return self._calls().call(self.queue, self.name, args, kwargs)

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Queue the job and return its handle without waiting for the result."""
        return await self._calls().submit(self.queue, self.name, args, kwargs)

    async def run_local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body here, without a manager, the arguments checked as a remote call's are
        (see ``easyjobs.workers.local``); only for a task declared in this process."""
        if self._local is None:
            raise ConfigurationError(f"{self!r} has no body in this process to run locally: "
                                     "run_local needs the task as its decorator returned it")
        result: R = await self._local(args, kwargs)
        return result

    def __repr__(self) -> str:
        return f"<task {self.queue}.{self.name}>"


class TaskDecorator(Protocol):
    """What ``worker.task(...)`` and ``manager.task(...)`` return: it turns a function into a
    ``RemoteTask`` with the function's parameters and (awaited) return type."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> RemoteTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> RemoteTask[P, R]: ...
