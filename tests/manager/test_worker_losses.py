"""A job that kills its worker is failed with ``WorkerLost`` after a bounded number of losses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from easyjobs import EasyJobsClient, WorkerLost

from ..conftest import Process, RunningManager
from ..processes import QUEUE, finished, serving, spawn_worker
from ..utils import wait_until


async def test_a_poison_job_fails_after_three_lost_workers(
    manager: RunningManager, client: EasyJobsClient, process_factory: Callable[..., Process],
) -> None:
    """Each run SIGKILLs its worker; the third loss fails the job and the fourth worker lives."""
    first = spawn_worker(process_factory, manager.port, "w0")
    await wait_until(lambda: serving(manager, "crash", "w0"), what="w0 to serve crash")
    job = await client.submit(QUEUE, "crash")
    worker, deaths = first, 0
    while True:
        assert await finished(worker) != 0
        deaths += 1
        status = ""

        async def settled() -> bool:
            nonlocal status
            status = (await job.info())["status"]
            return status in ("queued", "failed")

        await wait_until(settled, what="the manager to see the worker gone")
        if status == "failed":
            break
        assert deaths < 3, "the job should have failed after its third lost worker"
        worker = spawn_worker(process_factory, manager.port, f"w{deaths}")
    assert deaths == 3
    with pytest.raises(WorkerLost) as failure:
        await job.result()
    assert "lost its worker 3 times" in failure.value.message
    assert (await job.info())["attempts"] == 3
    survivor = spawn_worker(process_factory, manager.port, "w3")
    await wait_until(lambda: serving(manager, "add", "w3"), what="w3 to serve")
    assert await client.call(QUEUE, "add", 2, 3) == 5
    assert survivor.popen.poll() is None
