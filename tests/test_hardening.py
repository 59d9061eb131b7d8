"""Edge paths of the manager against a real server and store: an outcome the store refuses,
an assignment too big to send, repeated dependency names, and schedules that cannot run."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import ConfigurationError, EasyJobsClient, EasyJobsWorker, StoreError, TaskFailed

from .conftest import RunningManager
from .mesh import registered
from .utils import TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


def refuse_cancelling(manager: RunningManager, refuse: bool) -> None:
    """From a second connection, make the database refuse (or allow again) any cancel."""
    other = sqlite3.connect(manager.db)
    with other:
        if refuse:
            other.execute(
                "CREATE TRIGGER refuse_cancel BEFORE UPDATE OF status ON jobs"
                " WHEN NEW.status = 'cancelled' BEGIN SELECT RAISE(ABORT, 'refused'); END")
        else:
            other.execute("DROP TRIGGER refuse_cancel")
    other.close()


async def test_a_refused_cancel_leaves_a_retrying_job_retrying(
    manager_factory: Callable[..., Any], worker_factory: WorkerFactory,
    client_factory: Callable[..., Any],
) -> None:
    """When the store refuses a cancel, the caller gets StoreError and the retries go on."""
    running = await manager_factory(retry_base=0.02)
    worker = worker_factory()
    attempts: list[int] = []

    @worker.task(retry_policy="retry_always")
    async def flaky() -> None:
        attempts.append(1)
        raise ValueError("again")

    await worker.start()
    client: EasyJobsClient = await client_factory()
    job = await client.submit("ETL", "flaky")
    await wait_until(lambda: len(attempts) >= 2, what="a retry")
    refuse_cancelling(running, True)
    with pytest.raises(StoreError):
        await client.cancel(job.id)
    seen = len(attempts)
    await wait_until(lambda: len(attempts) >= seen + 2, what="retries after the refused cancel")
    refuse_cancelling(running, False)
    assert (await client.cancel(job.id))["status"] == "cancelled"


async def test_a_refused_cancel_leaves_a_waiting_job_waiting(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A waiting job whose cancel the store refused still starts when its dependency is done."""
    worker = worker_factory()
    release = asyncio.Event()

    @worker.task()
    async def prepare() -> str:
        await release.wait()
        return "ready"

    @worker.task(run_before=["prepare"])
    async def main_step() -> str:
        return "done"

    await worker.start()
    job = await client.submit("ETL", "main_step")
    await wait_until(lambda: manager.manager.core.active[job.id].pending != set(),
                     what="the job to wait on its dependency")
    refuse_cancelling(manager, True)
    with pytest.raises(StoreError):
        await client.cancel(job.id)
    refuse_cancelling(manager, False)
    release.set()
    assert await job.result(timeout=TIMEOUT) == "done"


async def test_a_failure_report_too_big_to_assign_fails_the_handler(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """An on_failure job whose job_failed outgrew a frame fails with SerializationError, and the
    worker keeps serving."""
    worker = worker_factory()

    @worker.task(on_failure="notify", retry_policy="never")
    async def crunch(data: str) -> None:
        raise ValueError("x" * 20_000)

    @worker.task()
    async def notify(job_failed: dict[str, Any]) -> str:
        return "notified"

    @worker.task()
    async def ping() -> str:
        return "pong"

    await worker.start()
    job = await client.submit("ETL", "crunch", "d" * 1_030_000)
    with pytest.raises(TaskFailed):
        await job.result(timeout=TIMEOUT)
    # Its record is too big for a job_info frame too (that answer is a SerializationError), so
    # the link to its handler is read from the database file.
    with sqlite3.connect(manager.db) as db:
        (handler,) = db.execute("SELECT on_failure_job FROM jobs WHERE id = ?",
                                (job.id,)).fetchone()
    assert handler is not None
    with pytest.raises(TaskFailed) as failed:
        await client.result(handler, timeout=TIMEOUT)
    assert failed.value.type == "SerializationError"
    assert await client.call("ETL", "ping") == "pong"


def test_a_dependency_named_twice_is_refused(worker_factory: WorkerFactory) -> None:
    """run_before (and run_after) may not list a task twice."""
    worker = worker_factory()
    with pytest.raises(ConfigurationError, match="twice"):
        @worker.task(run_before=["a", "a"])
        async def twice() -> None:
            return None


async def test_a_schedule_nobody_runs_does_not_pile_up_jobs(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """While a scheduled job waits for a worker, later ticks are skipped, not queued."""
    worker = worker_factory()

    @worker.task(schedule="* * * * * *")
    async def every_second() -> str:
        return "tick"

    await worker.start()
    await registered(manager, "ETL", "every_second")
    await worker.stop(grace=0)
    await wait_until(lambda: not any(w.name == worker.name for w in
                                     manager.manager.core.dispatcher.workers.values()),
                     what="the worker to leave")

    async def scheduled() -> list[dict[str, Any]]:
        jobs, _ = await client.jobs(task="every_second", limit=100)
        return jobs

    queued_at_start = len([j for j in await scheduled() if j["status"] == "queued"])
    first_fire = manager.manager.core.scheduler.info()[0]["next_fire"]
    # Two more ticks pass: their due times come and go.
    await wait_until(lambda: manager.manager.core.scheduler.info()[0]["next_fire"]
                     >= first_fire + 2, timeout=5, what="two more ticks")
    queued = [j for j in await scheduled() if j["status"] == "queued"]
    assert len(queued) <= max(1, queued_at_start)
