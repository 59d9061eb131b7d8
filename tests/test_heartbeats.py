"""Heartbeats against a real manager that beats every ``HEARTBEAT`` seconds: a worker that goes
silent is dropped within five intervals and the job it held runs on another worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from easyjobs import EasyJobsClient, EasyJobsWorker, JobStatus
from easyjobs.protocol.frames import Assign
from easyjobs.protocol.session import CLOSE_TIMEOUT, MISSED_HEARTBEATS

from .conftest import RunningManager
from .mesh import RawPeer, raw_worker, work
from .utils import TIMEOUT

HEARTBEAT = 0.1
SLACK = 0.5
"""How late (seconds) a heartbeat timeout may fire on a busy 2-core machine."""

WorkerFactory = Callable[..., EasyJobsWorker]


@pytest.fixture
async def manager(manager_factory: Callable[..., Any]) -> RunningManager:
    """This module's manager: peers silent for 5 x 0.1 s are dropped."""
    return await manager_factory(heartbeat=HEARTBEAT)  # type: ignore[no-any-return]


async def closed_by_manager(peer: RawPeer) -> float:
    """Read (and ignore) until the manager closes the connection; the loop time it did."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await peer.ws.recv()
    return asyncio.get_running_loop().time()


async def test_silent_worker_is_dropped_and_its_job_runs_elsewhere(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A worker that stops talking is closed (4003) within 5 heartbeats; its job runs elsewhere."""
    silent = await raw_worker(manager, "silent")
    job = await client.submit("ETL", "work", 21)
    assign = await silent.expect(Assign)
    assert (assign.job, assign.attempt, assign.args) == (job.id, 1, [21])
    assert await job.status() is JobStatus.RUNNING
    went_silent = silent.last_sent

    alive = worker_factory(name="alive")
    alive.task()(work)
    await alive.start()

    dropped_at = await asyncio.wait_for(closed_by_manager(silent), TIMEOUT)
    assert silent.ws.close_code == CLOSE_TIMEOUT
    timeout = MISSED_HEARTBEATS * HEARTBEAT
    assert timeout - HEARTBEAT <= dropped_at - went_silent <= timeout + SLACK

    assert await job.result(timeout=TIMEOUT) == 42
    info = await job.info()
    assert info["worker"] == "alive" and info["attempts"] == 2


async def test_quiet_but_alive_peers_stay_connected(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A worker running a long task and a client awaiting it keep their sessions: heartbeats."""
    worker = worker_factory(max_tasks=1)

    @worker.task()
    async def slow() -> str:
        await asyncio.sleep(2 * MISSED_HEARTBEATS * HEARTBEAT)  # time passing is what is tested
        return "done"

    await worker.start()
    sessions = set(manager.manager.core.peers.by_id)
    assert await client.call("ETL", "slow") == "done"
    assert set(manager.manager.core.peers.by_id) == sessions  # nobody was dropped and reconnected
