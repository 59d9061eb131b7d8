"""Flow control against a real manager: nested calls with one slot, the per-worker limit, load
sharing, FIFO order, and pausing (manager-wide and per worker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from easyjobs import EasyJobsClient, EasyJobsWorker, JobStatus

from .conftest import RunningManager
from .mesh import Gauge, registered
from .utils import TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


async def statuses(client: EasyJobsClient, job_ids: list[str]) -> list[str]:
    return [(await client.job(job_id))["status"] for job_id in job_ids]


async def test_nested_call_with_one_slot(worker_factory: WorkerFactory) -> None:
    """The seed's pipeline -> compute completes on a single worker with max_tasks_per_worker=1."""
    worker = worker_factory(max_tasks=1)

    @worker.task()
    async def compute(data: dict[str, Any]) -> dict[str, Any]:
        return {"computed": data}

    @worker.task()
    async def pipeline() -> Any:
        result = await compute(data={"test": "data"})
        return result

    await worker.start()
    assert await asyncio.wait_for(pipeline(), TIMEOUT) == {"computed": {"test": "data"}}


async def test_gathered_children_with_one_slot(worker_factory: WorkerFactory) -> None:
    """A task awaiting two children via asyncio.gather completes with one slot, one at a time."""
    worker = worker_factory(max_tasks=1)
    gauge = Gauge()
    gauge.gate.set()

    @worker.task()
    async def child(n: int) -> int:
        await gauge.hold(n)
        return n * 10

    @worker.task()
    async def parent() -> list[int]:
        return list(await asyncio.gather(child(1), child(2)))

    @worker.task()
    async def grandparent() -> list[Any]:
        return [await parent(), await child(3)]

    await worker.start()
    assert await asyncio.wait_for(parent(), TIMEOUT) == [10, 20]
    assert await asyncio.wait_for(grandparent(), TIMEOUT) == [[10, 20], 30]
    assert gauge.peak == 1  # the lent slot is the only one: children never overlap


async def test_at_most_max_tasks_run_at_once(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """With max_tasks_per_worker=3 and 12 jobs, 3 run and 9 wait in the manager's queue."""
    worker = worker_factory(max_tasks=3)
    gauge = Gauge()

    @worker.task()
    async def hold(n: int) -> int:
        return await gauge.hold(n)  # type: ignore[no-any-return]

    await worker.start()
    jobs = [await hold.submit(n) for n in range(12)]
    await gauge.until_running(3)
    found = await statuses(client, [job.id for job in jobs])
    assert found.count("running") == 3 and found.count("queued") == 9
    gauge.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs)), TIMEOUT)
    assert results == list(range(12))
    assert gauge.peak == 3


async def test_two_workers_share_the_load(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Jobs go to the least-loaded worker: four jobs on two idle workers run two on each."""
    gauges = {"w1": Gauge(), "w2": Gauge()}
    for name, gauge in gauges.items():
        worker = worker_factory(name=name, max_tasks=10)

        def bind(worker: EasyJobsWorker, gauge: Gauge) -> None:
            @worker.task()
            async def hold(n: int) -> int:
                return await gauge.hold(n)  # type: ignore[no-any-return]

        bind(worker, gauge)
        await worker.start()
    dispatcher = manager.manager.core.dispatcher
    await wait_until(
        lambda: {w.name for w in dispatcher.workers.values() if w.credit == 10} >= {"w1", "w2"},
        what="both workers to grant their credit",
    )
    jobs = [await client.submit("ETL", "hold", n) for n in range(4)]
    await wait_until(lambda: sum(g.running for g in gauges.values()) == 4, what="4 running")
    assert [g.running for g in gauges.values()] == [2, 2]
    for gauge in gauges.values():
        gauge.gate.set()
    for job in jobs:
        assert (await job.info())["worker"] in gauges
    assert sorted([await j.result(timeout=TIMEOUT) for j in jobs]) == [0, 1, 2, 3]


async def test_capacity_spills_over_to_the_second_worker(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Two workers with two slots each run four gated jobs at once, two each."""
    gauges: dict[str, Gauge] = {}
    for name in ("a", "b"):
        gauge = gauges[name] = Gauge()
        worker = worker_factory(name=name, max_tasks=2)

        def bind(worker: EasyJobsWorker, gauge: Gauge) -> None:
            @worker.task()
            async def hold(n: int) -> int:
                return await gauge.hold(n)  # type: ignore[no-any-return]

        bind(worker, gauge)
        await worker.start()
    await registered(manager, "ETL", "hold")
    jobs = [await client.submit("ETL", "hold", n) for n in range(6)]
    await wait_until(lambda: [g.running for g in gauges.values()] == [2, 2], what="2 + 2 running")
    assert (await statuses(client, [j.id for j in jobs])).count("queued") == 2
    for gauge in gauges.values():
        gauge.gate.set()
    assert sorted([await j.result(timeout=TIMEOUT) for j in jobs]) == list(range(6))
    assert max(g.peak for g in gauges.values()) == 2


async def test_fifo_within_a_queue(worker_factory: WorkerFactory) -> None:
    """A 1-slot worker runs a queue's jobs in submission order, across the queue's tasks."""
    worker = worker_factory(max_tasks=1)
    gauge = Gauge()
    order: list[str] = []

    @worker.task()
    async def block() -> None:
        await gauge.hold("block")

    @worker.task()
    async def first_kind(n: int) -> None:
        order.append(f"a{n}")

    @worker.task()
    async def second_kind(n: int) -> None:
        order.append(f"b{n}")

    await worker.start()
    blocker = await block.submit()
    await gauge.until_running(1)
    expected = []
    jobs = []
    for n in range(8):
        task, tag = (first_kind, "a") if n % 3 else (second_kind, "b")
        jobs.append(await task.submit(n))
        expected.append(f"{tag}{n}")
    gauge.gate.set()
    await blocker.result(timeout=TIMEOUT)
    for job in jobs:
        await job.result(timeout=TIMEOUT)
    assert order == expected


async def test_manager_pause_and_resume(
    manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """manager.toggle_workers(pause=True) stops new assignments but lets running jobs finish."""
    worker = worker_factory(max_tasks=2)
    gauge = Gauge()

    @worker.task()
    async def hold(n: int) -> int:
        return await gauge.hold(n)  # type: ignore[no-any-return]

    await worker.start()
    running = await hold.submit(1)
    await gauge.until_running(1)
    manager.manager.toggle_workers(pause=True)
    waiting = await hold.submit(2)
    assert await waiting.status() is JobStatus.QUEUED  # a free slot, but paused
    gauge.gate.set()
    assert await running.result(timeout=TIMEOUT) == 1  # the running job finished
    assert await waiting.status() is JobStatus.QUEUED  # its freed slot was not used either
    manager.manager.toggle_workers(pause=False)
    assert await waiting.result(timeout=TIMEOUT) == 2


async def test_worker_pause_and_resume(worker_factory: WorkerFactory) -> None:
    """worker.toggle_workers(True) stops its assignments while its running job finishes."""
    worker = worker_factory(max_tasks=2)
    gauge = Gauge()

    @worker.task()
    async def hold(n: int) -> int:
        return await gauge.hold(n)  # type: ignore[no-any-return]

    await worker.start()
    running = await hold.submit(1)
    await gauge.until_running(1)
    worker.toggle_workers(True)
    waiting = await hold.submit(2)  # over the same link: ordered after the pause frame
    assert await waiting.status() is JobStatus.QUEUED
    gauge.gate.set()
    assert await running.result(timeout=TIMEOUT) == 1
    assert await waiting.status() is JobStatus.QUEUED
    worker.toggle_workers(False)
    assert await waiting.result(timeout=TIMEOUT) == 2


async def test_paused_worker_leaves_jobs_to_the_others(worker_factory: WorkerFactory) -> None:
    """While one worker is paused, every new job runs on the other one."""
    paused = worker_factory(name="paused")
    active = worker_factory(name="active")
    for worker in (paused, active):

        @worker.task()
        async def whoami() -> str:
            return "ran"

        await worker.start()
    paused.toggle_workers(True)
    remote = paused.calls  # submitted over the paused worker's link, after its pause frame
    jobs = [await remote.submit("ETL", "whoami", [], {}) for _ in range(6)]
    for job in jobs:
        assert await job.result(timeout=TIMEOUT) == "ran"
        assert (await job.info())["worker"] == "active"
    paused.toggle_workers(False)


async def test_paused_worker_keeps_its_pause_across_manager_dispatch(
    worker_factory: WorkerFactory, client: EasyJobsClient, manager: RunningManager
) -> None:
    """A worker paused before it connects takes no jobs until it resumes."""
    worker = worker_factory()

    @worker.task()
    async def ping() -> str:
        return "pong"

    worker.toggle_workers(True)
    await worker.start()
    job = await ping.submit()
    assert await job.status() is JobStatus.QUEUED
    worker.toggle_workers(False)
    assert await job.result(timeout=TIMEOUT) == "pong"
    await registered(manager, "ETL", "ping")
    assert await client.call("ETL", "ping") == "pong"


async def test_resumed_parent_takes_its_slot_back(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A task that lent its slot to a child revokes the credit when it resumes, so with one slot
    a job submitted meanwhile waits for the parent instead of running beside it."""
    worker = worker_factory(max_tasks=1)
    resumed, release = asyncio.Event(), asyncio.Event()

    @worker.task()
    async def child() -> int:
        return 1

    @worker.task()
    async def parent() -> int:
        value = await child()
        resumed.set()
        await release.wait()
        return int(value)

    @worker.task()
    async def other() -> str:
        return "ran"

    await worker.start()
    job = await parent.submit()
    await asyncio.wait_for(resumed.wait(), TIMEOUT)
    state = next(w for w in manager.manager.core.dispatcher.workers.values()
                 if w.name == worker.name)
    await wait_until(lambda: state.credit == 0, what="the lent credit to be revoked")
    queued = await client.submit("ETL", "other")
    assert (await client.job(queued.id))["status"] == "queued"
    release.set()
    assert await job.result(timeout=TIMEOUT) == 1
    assert await queued.result(timeout=TIMEOUT) == "ran"
