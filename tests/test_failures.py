"""Failure handling against a real manager: late results are ignored, and a manager restart on
the same database loses no job. (Silent workers: ``test_heartbeats.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from easyjobs import EasyJobsClient, EasyJobsWorker, JobStatus
from easyjobs.protocol.frames import Assign, Credit, Done, JobInfo, Lookup

from .conftest import RunningManager
from .mesh import Gauge, raw_worker, registered, stored_job, work
from .utils import TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


async def test_late_duplicate_done_is_ignored(
    manager: RunningManager, client: EasyJobsClient
) -> None:
    """A second `done` for a finished job (same or another peer) changes nothing."""
    peer = await raw_worker(manager, "dup")
    job = await client.submit("ETL", "work", 1)
    assign = await peer.expect(Assign)
    await peer.send(Done(job.id, assign.attempt, "succeeded", 2))
    assert await job.result(timeout=TIMEOUT) == 2

    failure = {"type": "RuntimeError", "message": "late", "traceback": ""}
    await peer.send(Done(job.id, assign.attempt, "succeeded", 99))
    await peer.send(Done(job.id, assign.attempt + 1, "failed", None, failure))
    other = await raw_worker(manager, "other", credit=0)
    await other.send(Done(job.id, assign.attempt, "failed", None, failure))
    # Lookups travel behind the duplicates on each link, and the store applies writes in order:
    # a duplicate that had been taken would show in these records.
    for sender in (peer, other):
        await sender.send(Lookup(7, job.id))
        info = await sender.expect(JobInfo)
        assert info.ref == 7
        assert info.job["status"] == "succeeded" and info.job["result"] == 2
        assert info.job["error"] is None and info.job["attempts"] == 1
    assert await client.result(job.id, timeout=TIMEOUT) == 2
    row = stored_job(manager.db, job.id)
    assert row is not None and row["status"] == "succeeded" and row["error"] is None

    # The duplicates closed nothing: the first peer still takes work.
    await peer.send(Credit(1))
    second = await client.submit("ETL", "work", 5)
    assign2 = await peer.expect(Assign)
    assert assign2.job == second.id
    await peer.send(Done(second.id, assign2.attempt, "succeeded", 10))
    assert await second.result(timeout=TIMEOUT) == 10
    await peer.close()
    await other.close()


async def test_manager_restart_loses_no_job(
    manager: RunningManager,
    manager_factory: Callable[..., Any],
    worker_factory: WorkerFactory,
    client_factory: Callable[..., Any],
) -> None:
    """After a restart on the same database and port, reconnected peers finish every job and
    clients can await job ids submitted before the restart."""
    client: EasyJobsClient = await client_factory()
    worker = worker_factory(name="survivor", max_tasks=1)
    gauge = Gauge()

    @worker.task()
    async def hold(n: int) -> int:
        return await gauge.hold(n)  # type: ignore[no-any-return]

    await worker.start()
    finished = await hold.submit(0)
    await gauge.until_running(1)
    gauge.gate.set()
    assert await finished.result(timeout=TIMEOUT) == 0
    gauge.gate.clear()

    await registered(manager, "ETL", "hold")
    running = await client.submit("ETL", "hold", 1)
    await wait_until(lambda: gauge.running == 1, what="job 1 to start")
    waiting = await client.submit("ETL", "hold", 2)  # the only slot is taken
    assert await waiting.status() is JobStatus.QUEUED
    awaited = asyncio.ensure_future(running.result(timeout=3 * TIMEOUT))

    await manager.stop()
    restarted = await manager_factory(db=manager.db, port=manager.port)

    async def resumed() -> bool:  # the client's lookup waits for its reconnect
        info = await client.job(running.id)
        return info["status"] == "running" and info["worker"] == "survivor"

    await wait_until(resumed, what="the worker to reconnect and resume job 1")
    assert (await client.job(waiting.id))["status"] == "queued"
    gauge.gate.set()
    assert await asyncio.wait_for(awaited, TIMEOUT) == 1
    assert await waiting.result(timeout=TIMEOUT) == 2
    assert gauge.started == [0, 1, 2]  # job 1 kept running across the restart: no second attempt
    assert (await client.job(running.id))["attempts"] == 1

    fresh: EasyJobsClient = await client_factory(port=restarted.port)
    for job, value in ((finished, 0), (running, 1), (waiting, 2)):
        assert await fresh.result(job.id, timeout=TIMEOUT) == value
        row = stored_job(restarted.db, job.id)
        assert row is not None and row["status"] == "succeeded"


async def test_connections_end_at_once_when_either_side_leaves(
    manager: RunningManager,
    manager_factory: Callable[..., Any],
    worker_factory: WorkerFactory,
    client_factory: Callable[..., Any],
) -> None:
    """A closed socket ends its session at once on both ends, not at the next heartbeat."""
    loop = asyncio.get_running_loop()
    heartbeat = 1.0  # the fixture manager's interval: everything below must be well under it
    worker = worker_factory()
    worker.task()(work)
    await worker.start()
    leaving: EasyJobsClient = await client_factory()
    await leaving.close()  # the manager must let go of this connection at once...
    started = loop.time()
    await manager.stop()  # ...or stopping waits for its writer
    assert loop.time() - started < 0.8 * heartbeat

    started = loop.time()
    restarted = await manager_factory(db=manager.db, port=manager.port)
    # The worker saw its socket close when the manager stopped and is already retrying.
    await wait_until(lambda: len(restarted.manager.core.dispatcher.workers) == 2,
                     what="the worker to reconnect")
    assert loop.time() - started < 0.8 * heartbeat
    assert await worker.calls.call("ETL", "work", [4], {}) == 8
