"""Tasks registered on the manager run inside the manager process, through the same runner and
rules as worker tasks, and can call worker tasks (and be called by them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import (
    EasyJobsClient,
    EasyJobsWorker,
    InvalidArguments,
    RemoteTask,
    TaskFailed,
)

from .conftest import RunningManager
from .mesh import registered
from .utils import TIMEOUT

WorkerFactory = Callable[..., EasyJobsWorker]


async def test_manager_task_runs_in_the_manager(
    manager: RunningManager, client: EasyJobsClient
) -> None:
    """@manager.task(namespace='general') runs in the manager, with no worker connected."""
    running_in: list[asyncio.AbstractEventLoop] = []

    @manager.manager.task(namespace="general")
    async def general_work(general_data: dict[str, Any]) -> dict[str, Any]:
        running_in.append(asyncio.get_running_loop())
        return {"general_results": general_data}

    assert isinstance(general_work, RemoteTask)
    assert await general_work({"a": 1}) == {"general_results": {"a": 1}}
    assert running_in == [asyncio.get_running_loop()]  # the manager's own event loop

    assert await client.call("general", "general_work", {"b": 2}) == {"general_results": {"b": 2}}
    job = await client.submit("general", "general_work", general_data={"c": 3})
    assert await job.result(timeout=TIMEOUT) == {"general_results": {"c": 3}}
    assert (await job.info())["worker"] == "manager"


async def test_manager_task_arguments_and_failures(
    manager: RunningManager, client: EasyJobsClient
) -> None:
    """Manager tasks get the same argument checks and failure reporting as worker tasks."""

    @manager.manager.task(namespace="general")
    async def more_general_work(general_results: Any) -> str:
        raise RuntimeError(f"cannot handle {general_results}")

    await registered(manager, "general", "more_general_work")
    with pytest.raises(InvalidArguments, match="missing 1 required argument"):
        await client.call("general", "more_general_work")
    with pytest.raises(TaskFailed) as caught:
        await client.call("general", "more_general_work", "x")
    assert caught.value.type == "RuntimeError"
    assert caught.value.message == "cannot handle x"
    assert 'raise RuntimeError(f"cannot handle {general_results}")' in caught.value.traceback


async def test_manager_task_awaits_a_worker_task(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A manager task can await a task that runs on a worker."""
    worker = worker_factory(max_tasks=1)

    @worker.task()
    async def increment(x: int) -> int:
        return x + 1

    await worker.start()
    mgr = manager.manager
    remote_increment = RemoteTask(lambda: mgr.calls, "ETL", "increment")

    @mgr.task(namespace="general")
    async def orchestrate(x: int) -> list[int]:
        first = await remote_increment(x)
        second = await remote_increment(first)
        return [first, second]

    await registered(manager, "ETL", "increment")
    assert await orchestrate(1) == [2, 3]
    assert await client.call("general", "orchestrate", 10) == [11, 12]


async def test_worker_task_awaits_a_manager_task(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A worker task (one slot) can await a task that runs in the manager."""

    @manager.manager.task(namespace="general")
    async def double(x: int) -> int:
        return 2 * x

    await registered(manager, "general", "double")
    worker = worker_factory(max_tasks=1)
    remote_double = RemoteTask(lambda: worker.calls, "general", "double")

    @worker.task()
    async def quadruple(x: int) -> int:
        return await remote_double(await remote_double(x))  # type: ignore[no-any-return]

    await worker.start()
    assert await quadruple(3) == 12
    await registered(manager, "ETL", "quadruple")
    assert await client.call("ETL", "quadruple", 5) == 20


async def test_manager_and_worker_tasks_nest_both_ways(
    manager: RunningManager, worker_factory: WorkerFactory
) -> None:
    """worker -> manager -> worker nesting completes with one slot on the worker."""
    worker = worker_factory(max_tasks=1)
    mgr = manager.manager

    @worker.task()
    async def leaf(x: int) -> int:
        return x + 100

    middle_on_worker = RemoteTask(lambda: worker.calls, "general", "middle")

    @worker.task()
    async def top(x: int) -> int:
        return await middle_on_worker(x)  # type: ignore[no-any-return]

    leaf_from_manager = RemoteTask(lambda: mgr.calls, "ETL", "leaf")

    @mgr.task(namespace="general")
    async def middle(x: int) -> int:
        return await leaf_from_manager(x) * 2  # type: ignore[no-any-return]

    await worker.start()
    await registered(manager, "general", "middle")
    assert await asyncio.wait_for(top(1), TIMEOUT) == 202
