"""A half-dead path between worker and manager: a TCP proxy stops forwarding (without
closing) while the worker has megabytes of results to send. The worker must notice within the
heartbeat window and reconnect, as on a clean disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker, JobStatus
from easyjobs.protocol.session import MISSED_HEARTBEATS

from ..conftest import RunningManager
from ..proxy import TcpProxy
from ..utils import wait_until

HEARTBEAT = 0.2
WINDOW = MISSED_HEARTBEATS * HEARTBEAT
SLACK = 1.5
"""How late (seconds) detection may come on a busy 2-core machine."""

JOBS = 16
RESULT = 900_000
"""Bytes per result: 16 of them (14 MB) are far more than the socket buffers hold."""

WorkerFactory = Callable[..., EasyJobsWorker]


@pytest.fixture
async def manager(manager_factory: Callable[..., Any]) -> RunningManager:
    """This module's manager: peers silent for 5 x 0.2 s are dropped."""
    return await manager_factory(heartbeat=HEARTBEAT)  # type: ignore[no-any-return]


async def _stalled_with_results_pending(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient,
    up: bool, down: bool,
) -> float:
    """Stall the worker's path as asked while 14 MB of results are on their way; seconds until
    the worker had a new connection through the proxy (the stalled one still open)."""
    proxy = await TcpProxy(manager.port).start()
    try:
        worker = worker_factory(max_tasks=JOBS, port=proxy.port)
        release = asyncio.Event()

        @worker.task()
        async def blob(n: int) -> bytes:
            await release.wait()
            return b"x" * n

        await worker.start()
        jobs = [await client.submit("ETL", "blob", RESULT) for _ in range(JOBS)]

        async def all_running() -> bool:
            return all([await job.status() is JobStatus.RUNNING for job in jobs])

        await wait_until(all_running, what="every job to run")
        loop = asyncio.get_running_loop()
        proxy.stall(up=up, down=down)
        stalled_at = loop.time()
        release.set()
        await wait_until(lambda: len(proxy.paths) > 1 and worker.connected,
                         timeout=WINDOW + SLACK + 5, what="the worker to reconnect")
        return loop.time() - stalled_at
    finally:
        await proxy.close()


async def test_worker_leaves_a_stalled_path_within_the_window(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Both directions stalled, results queued: the worker reconnects within the window."""
    took = await _stalled_with_results_pending(manager, worker_factory, client, True, True)
    assert took <= WINDOW + SLACK


async def test_worker_leaves_a_path_that_stopped_taking_its_writes(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Only worker->manager stalled (the manager's frames still arrive): reconnect in time."""
    took = await _stalled_with_results_pending(manager, worker_factory, client, True, False)
    assert took <= WINDOW + SLACK
