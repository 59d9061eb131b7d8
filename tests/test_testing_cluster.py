"""The in-process cluster behind the pytest plugin (``easyjobs.testing.cluster``) and
``EasyJobsWorker.retarget``, which lets it run a worker built for another manager."""

from __future__ import annotations

import asyncio

import pytest

from easyjobs import ConfigurationError, EasyJobsManager, EasyJobsWorker
from easyjobs.testing.cluster import cluster

from .utils import SECRET, TIMEOUT


def production_worker() -> EasyJobsWorker:
    """A worker as a program builds it at import: for a manager the tests never reach."""
    return EasyJobsWorker(manager_host="jobs.invalid", manager_port=8220,
                          manager_secret="production-secret", jobs_queue="shop")


async def test_a_worker_runs_on_one_cluster_after_another() -> None:
    """The cluster retargets the worker at its own manager, stops it on the way out, and the
    next cluster starts it again on a fresh manager with a fresh secret."""
    worker = production_worker()

    @worker.task()
    async def double(n: int) -> int:
        return n * 2

    secrets = []
    for n in (1, 2):
        async with cluster(worker) as running:
            assert [str(address) for address in worker.managers] == [running.address]
            assert await double(n) == n * 2
            assert (await running.client.call("shop", "double", n)) == n * 2
            secrets.append(running.secret)
        assert not worker.connected
    assert secrets[0] != secrets[1]


async def test_leaving_the_cluster_cancels_a_job_still_running() -> None:
    """A job still running at the end of a test does not hold up the teardown."""
    worker = production_worker()
    started = asyncio.Event()

    @worker.task()
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with cluster(worker) as running:
        await running.client.submit("shop", "forever")
        await asyncio.wait_for(started.wait(), TIMEOUT)
    assert not worker.connected


async def test_a_running_worker_cannot_be_retargeted() -> None:
    """Retargeting a running worker is refused; stopped, it can be."""
    worker = production_worker()
    async with cluster(worker) as running:
        with pytest.raises(ConfigurationError, match="stop the worker before retargeting it"):
            worker.retarget([running.address], running.secret)
    worker.retarget(["127.0.0.1:1"], SECRET)
    assert [str(address) for address in worker.managers] == ["127.0.0.1:1"]


async def test_a_managers_local_worker_cannot_be_retargeted() -> None:
    """The worker inside a manager has no link of its own to point elsewhere."""
    manager = EasyJobsManager(server_secret=SECRET, db_path=":memory:")
    with pytest.raises(ConfigurationError, match="local worker cannot be retargeted"):
        manager._local.retarget(["127.0.0.1:1"], SECRET)
