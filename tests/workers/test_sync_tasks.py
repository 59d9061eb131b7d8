"""Sync (``def``) tasks against a real manager: they run in threads bounded by the worker's slots,
with the job's context, a timeout fails them while their thread keeps its slot, and calling other
tasks from them is refused with a message that says what to do.

Task bodies block on ``threading.Event``s the test sets: nothing waits a fixed time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import ConfigurationError, EasyJobsClient, EasyJobsWorker, TaskFailed
from easyjobs.errors import JobCancelled
from easyjobs.protocol.session import MISSED_HEARTBEATS
from easyjobs.remote import current_job

from ..conftest import RunningManager
from ..mesh import registered
from ..utils import TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


async def test_sync_task_runs_in_a_thread_with_its_job_context(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A def task runs off the event loop's thread, sees current_job, and returns its result."""
    worker = worker_factory()
    seen: list[tuple[int, str | None]] = []

    @worker.task()
    def add(a: int, b: int) -> int:
        seen.append((threading.get_ident(), current_job.get()))
        return a + b

    await worker.start()
    job = await client.submit("ETL", "add", 2, 3)
    assert await job.result(timeout=TIMEOUT) == 5
    assert await add(4, 5) == 9
    assert seen[0] == (seen[0][0], job.id)
    assert threading.get_ident() not in {thread for thread, _ in seen}


async def test_sync_tasks_run_in_parallel_up_to_the_slots(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Blocking def tasks run two at a time on a two-slot worker, never more, loop still free."""
    worker = worker_factory(max_tasks=2)
    gate = threading.Event()
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @worker.task()
    def block(n: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(TIMEOUT)
        with lock:
            running[0] -= 1
        return n

    await worker.start()
    jobs = [await client.submit("ETL", "block", n) for n in range(5)]
    await wait_until(lambda: running[0] == 2, what="two blocking bodies at once")
    # The loop is free while both slots block: the manager still answers this worker's link.
    assert (await jobs[0].info())["status"] == "running"
    gate.set()
    assert [await job.result(timeout=TIMEOUT) for job in jobs] == list(range(5))
    assert peak[0] == 2


async def test_sync_task_sleeping_past_the_heartbeat_window_completes_once(
    manager_factory: Callable[..., Any], tmp_path: Path, worker_factory: WorkerFactory,
    client_factory: Callable[..., Any],
) -> None:
    """A def task in time.sleep for twice the heartbeat window: no drop, one attempt."""
    heartbeat = 0.2
    fast = await manager_factory(db=tmp_path / "fast.db", heartbeat=heartbeat)
    worker = worker_factory(port=fast.port, max_tasks=1)
    client: EasyJobsClient = await client_factory(port=fast.port)
    runs: list[float] = []

    @worker.task()
    def nap(seconds: float) -> str:
        runs.append(seconds)
        time.sleep(seconds)  # the blocking call is the workload under test
        return "rested"

    await worker.start()
    sessions = set(fast.manager.core.peers)
    job = await client.submit("ETL", "nap", 2 * MISSED_HEARTBEATS * heartbeat)
    assert await job.result(timeout=TIMEOUT) == "rested"
    info = await job.info()
    assert (info["status"], info["attempts"], len(runs)) == ("succeeded", 1, 1)
    assert set(fast.manager.core.peers) == sessions  # nobody was dropped and reconnected


async def test_sync_task_over_its_timeout_fails_and_keeps_its_slot_until_it_returns(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A def task over its timeout fails with TaskTimeout; its slot frees only when it returns."""
    worker = worker_factory(max_tasks=1)
    release = threading.Event()
    returned = threading.Event()

    @worker.task(timeout=0.2, retry_policy="never")
    def stuck() -> str:
        release.wait(TIMEOUT)
        returned.set()
        return "late"

    @worker.task()
    def quick() -> str:
        return "quick"

    await worker.start()
    first = await client.submit("ETL", "stuck")
    with pytest.raises(TaskFailed) as caught:
        await first.result(timeout=TIMEOUT)
    assert caught.value.type == "TaskTimeout" and "0.2s timeout" in caught.value.message
    assert not returned.is_set()

    # A freed slot would have been granted back before the timeout was reported, and the
    # manager assigns on a grant at once: the next job is still waiting for the thread.
    second = await client.submit("ETL", "quick")
    assert (await second.info())["status"] == "queued"
    release.set()
    assert await second.result(timeout=TIMEOUT) == "quick"
    info = await first.info()
    assert (info["status"], info["attempts"], info["result"]) == ("failed", 1, None)


async def test_sync_task_cannot_call_other_tasks(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Calling or submitting a task from a def task fails that job, saying to use async def."""
    worker = worker_factory()

    @worker.task()
    async def child(n: int) -> int:
        return n

    @worker.task()
    def calls_child(n: int) -> int:
        return asyncio.run(child(n))

    @worker.task()
    def submits_child(n: int) -> str:
        return asyncio.run(child.submit(n)).id

    @worker.task()
    def calls_through_a_client(n: int) -> int:
        return asyncio.run(client.call("ETL", "child", n))

    await worker.start()
    names = ("calls_child", "submits_child", "calls_through_a_client")
    await registered(manager, "ETL", "child", *names)
    for name in names:
        job = await client.submit("ETL", name, 1)
        with pytest.raises(TaskFailed) as caught:
            await job.result(timeout=TIMEOUT)
        assert caught.value.type == "ConfigurationError"
        assert "make the task 'async def'" in caught.value.message
    assert await child(3) == 3  # the worker is unharmed


async def test_cancelled_sync_task_keeps_its_slot_until_its_thread_returns(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelling a running def task reports nothing; the next job waits for the thread. The
    worker's log lines about it name the job and the worker."""
    worker = worker_factory(max_tasks=1)
    started = threading.Event()
    release = threading.Event()

    @worker.task()
    def stuck() -> str:
        started.set()
        release.wait(TIMEOUT)
        return "late"

    @worker.task()
    def quick() -> str:
        return "quick"

    await worker.start()
    first = await client.submit("ETL", "stuck")
    await asyncio.to_thread(started.wait, TIMEOUT)
    assert (await first.cancel())["status"] == "cancelled"
    with pytest.raises(JobCancelled):
        await first.result(timeout=TIMEOUT)
    second = await client.submit("ETL", "quick")
    assert (await second.info())["status"] == "queued"
    release.set()
    assert await second.result(timeout=TIMEOUT) == "quick"
    assert (await first.info())["status"] == "cancelled"
    about = [r for r in caplog.records if r.name == "easyjobs.runner" and "thread" in r.message]
    assert about and {(r.__dict__["job_id"], r.__dict__["worker"]) for r in about} == {
        (first.id, worker.name)}


def test_generators_and_non_functions_are_refused_at_decoration() -> None:
    """A generator function or a callable object cannot be a task: the error says why."""
    worker = EasyJobsWorker(None, None, "127.0.0.1", 1, "secret", "ETL")

    def produce() -> object:
        yield 1

    with pytest.raises(ConfigurationError, match="generator function: a task must return"):
        worker.task()(produce)

    class Handler:
        __name__ = "callable_object"

        def __call__(self) -> None: ...

    with pytest.raises(ConfigurationError, match="must be a function .def or async def., not"):
        worker.task()(Handler())
