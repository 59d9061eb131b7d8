"""The seed's ETL worker example (``examples/etl.py``, served by uvicorn in its own process)
against a real manager: the docs' whole flow runs, its subprocess ``compute`` included.

The seed's tasks really sleep (5 s each, deploy_environment and prepare_db in parallel before
configure_environment; compute's script 1 s), so one flow and one pipeline call, run side by
side, take about 12 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import EasyJobsClient

from .conftest import Process, RunningManager
from .mesh import registered
from .utils import free_port, wait_until

EXAMPLE_SECRET = "abcd1234"
"""The secret the seed's example hard-codes."""

SEED_TASKS = (
    "extract", "transform", "load", "failure_notify", "deploy_environment", "prepare_db",
    "configure_environment", "compute", "pipeline",
)

FLOW_TIMEOUT = 60.0
"""Bounds a whole flow of 5 s sleeps (longer than ``TIMEOUT``, which bounds single steps)."""


@pytest.fixture
async def manager(manager_factory: Callable[..., Any]) -> RunningManager:
    """This module's manager knows the example's secret."""
    return await manager_factory(secret=EXAMPLE_SECRET)  # type: ignore[no-any-return]


@pytest.fixture
async def etl_worker(manager: RunningManager, process_factory: Callable[..., Process]
                     ) -> Process:
    """``uvicorn examples.etl:server`` pointed at ``manager``, once all its tasks are known."""
    proc = process_factory(
        "-W", "ignore::DeprecationWarning", "-m", "uvicorn", "examples.etl:server",
        "--host", "127.0.0.1", "--port", str(free_port()), "--log-level", "warning",
        env={"EASYJOBS_PORT": str(manager.port), "PYTHONUNBUFFERED": "1"},
    )

    async def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"the ETL example exited early:\n{proc.output()}")
        return all(("ETL", name) in manager.manager.core.tasks for name in SEED_TASKS)

    await wait_until(ready, timeout=30, what="the ETL example to register its tasks")
    await registered(manager, "ETL", *SEED_TASKS)
    return proc


async def child_of(client: EasyJobsClient, parent: str, task: str) -> dict[str, Any]:
    """The ``task`` job that ``parent`` created (it exists once the parent's result is in)."""
    jobs, _ = await client.jobs(task=task, limit=50)
    (child,) = [job for job in jobs if job["parent"] == parent]
    return child


async def test_seed_flow_and_pipeline_run_to_compute(
    manager: RunningManager, etl_worker: Process, client_factory: Callable[..., Any]
) -> None:
    """The seed flow runs from extract to compute, and pipeline returns compute's result."""
    client: EasyJobsClient = await client_factory(secret=EXAMPLE_SECRET)
    pipeline = asyncio.ensure_future(client.call("ETL", "pipeline"))
    extract = await client.submit("ETL", "extract", url="http://stats")
    results = {"extract": await extract.result(timeout=FLOW_TIMEOUT)}
    parent = extract.id
    jobs: dict[str, dict[str, Any]] = {}
    for task in ("transform", "load", "compute"):
        jobs[task] = await child_of(client, parent, task)
        results[task] = await client.result(jobs[task]["id"], timeout=FLOW_TIMEOUT)
        parent = jobs[task]["id"]

    data = {"a": 3, "b": 4, "c": 5}
    assert results == {
        "extract": {"data": {"a": 1, "b": 2, "c": 3}},
        "transform": {"data": data},
        "load": {"data": data},
        "compute": {"result": f"I slept for 1 second - blocking with {data}"},
    }

    compute = await client.job(jobs["compute"]["id"])
    (configure_id,) = compute["dependencies"]
    configure = await client.job(configure_id)
    assert configure["task"] == "configure_environment"
    assert configure["result"] == "configure_environment - finished"
    deps = [await client.job(dep) for dep in configure["dependencies"]]
    assert sorted(dep["task"] for dep in deps) == ["deploy_environment", "prepare_db"]
    assert all(dep["status"] == "succeeded" for dep in deps)
    assert max(dep["finished_at"] for dep in deps) <= configure["started_at"]
    assert configure["finished_at"] <= compute["started_at"]

    assert await asyncio.wait_for(pipeline, FLOW_TIMEOUT) == {
        "result": "I slept for 1 second - blocking with {'test': 'data'}"
    }
    output = etl_worker.output()
    for line in ("extract started", "transform finished", "load finished",
                 "deploy_environment - completed", "configure_environment - finished",
                 f"pipline - result is {pipeline.result()} - finished"):
        assert line in output
