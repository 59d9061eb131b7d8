"""The runner against a real manager: whatever a task raises, its attempt is reported and its
slot comes back (D14)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker, TaskFailed

from ..conftest import RunningManager
from ..utils import TIMEOUT

WorkerFactory = Callable[..., EasyJobsWorker]


class Abandoned(BaseException):
    """Not an ``Exception``: what ``except Exception`` lets through."""


async def test_task_raising_a_base_exception_fails_and_frees_its_slot(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A BaseException (not Exception) fails the job with its details; the slot is reused."""
    worker = worker_factory(max_tasks=1)

    @worker.task(retry_policy="never")
    async def abandon() -> None:
        raise Abandoned("gave up")

    @worker.task()
    async def after() -> str:
        return "ran"

    await worker.start()
    job = await client.submit("ETL", "abandon")
    with pytest.raises(TaskFailed) as caught:
        await job.result(timeout=TIMEOUT)
    assert (caught.value.type, caught.value.message) == ("Abandoned", "gave up")
    assert "raise Abandoned" in caught.value.traceback
    assert await client.call("ETL", "after") == "ran"
