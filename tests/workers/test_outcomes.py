"""Outcome delivery: a worker keeps every outcome until the manager's ``done_ack``, which the
manager sends only once the outcome is committed (or the job had already finished), and re-sends
the unacknowledged ones on its next connection. Real manager, real workers, real sockets; the
connection is cut by a small TCP proxy between the worker and the manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.jobs import new_job_id
from easyjobs.protocol.frames import Assign, Credit, Done, DoneAck, JobInfo, Lookup

from ..conftest import RunningManager
from ..mesh import RawPeer, raw_worker, stored_job
from ..proxy import TcpProxy
from ..utils import TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


@pytest.fixture
async def proxy(manager: RunningManager) -> AsyncIterator[TcpProxy]:
    """A proxy in front of ``manager``."""
    running = await TcpProxy(manager.port).start()
    yield running
    await running.close()


async def test_outcome_sent_into_a_dropped_connection_arrives_after_the_reconnect(
    manager: RunningManager, proxy: TcpProxy, worker_factory: WorkerFactory,
    client: EasyJobsClient,
) -> None:
    """A done written to a link the manager never reads is re-sent: the job runs once."""
    worker = worker_factory(port=proxy.port, max_tasks=1)
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    @worker.task()
    async def finish(size: int) -> str:
        runs.append(size)
        started.set()
        await release.wait()
        return "x" * size

    await worker.start()
    job = await client.submit("ETL", "finish", 5000)
    await asyncio.wait_for(started.wait(), TIMEOUT)
    proxy.swallow()
    release.set()
    await wait_until(lambda: proxy.swallowed > 5000, what="the done frame to be swallowed")
    proxy.cut()

    assert await job.result(timeout=TIMEOUT) == "x" * 5000
    info = await job.info()
    assert (info["status"], info["attempts"], runs) == ("succeeded", 1, [5000])
    await wait_until(lambda: not worker._unacked, what="the worker to forget the outcome")


async def acks_after(peer: RawPeer, job_id: str, count: int) -> list[DoneAck]:
    """Read from ``peer`` (lookups keep frames coming) until it holds ``count`` done_acks."""

    async def enough() -> bool:
        await peer.send(Lookup(9, job_id))
        await peer.expect(JobInfo)
        return len(peer.acks) >= count

    await wait_until(enough, what=f"{count} done_ack frame(s)")
    return peer.acks


async def test_manager_acknowledges_each_outcome_once_it_is_committed(
    manager: RunningManager, client: EasyJobsClient
) -> None:
    """done_ack follows the commit: success, duplicate, unknown job and recorded retry alike."""
    peer = await raw_worker(manager, "acked")
    job = await client.submit("ETL", "work", 1)
    assign = await peer.expect(Assign)
    await peer.send(Done(job.id, assign.attempt, "succeeded", 2))
    assert await acks_after(peer, job.id, 1) == [DoneAck(job.id, assign.attempt)]
    row = stored_job(manager.db, job.id)
    assert row is not None and row["status"] == "succeeded"  # committed before the ack

    unknown = new_job_id()
    await peer.send(Done(job.id, assign.attempt, "succeeded", 99), Done(unknown, 1, "succeeded"))
    assert (await acks_after(peer, job.id, 3))[1:] == [DoneAck(job.id, assign.attempt),
                                                       DoneAck(unknown, 1)]

    failure = {"type": "RuntimeError", "message": "again", "traceback": ""}
    retried = await client.submit("ETL", "work", 3)
    await peer.send(Credit(1))  # the first job used the only credit
    assign = await peer.expect(Assign)
    await peer.send(Done(retried.id, assign.attempt, "failed", None, failure))
    assert (await acks_after(peer, retried.id, 4))[3] == DoneAck(retried.id, assign.attempt)
    row = stored_job(manager.db, retried.id)
    assert row is not None and row["status"] == "retrying"
    await peer.close()


async def test_manager_task_outcomes_are_acknowledged_through_the_loopback(
    manager: RunningManager, client: EasyJobsClient
) -> None:
    """The manager's own tasks get done_ack through the loopback and keep nothing."""
    local = manager.manager._local

    @manager.manager.task(namespace="general")
    async def local_work(n: int) -> int:
        return n + 1

    assert await client.call("general", "local_work", 1) == 2
    await wait_until(lambda: not local._unacked, what="the loopback worker to forget it")
