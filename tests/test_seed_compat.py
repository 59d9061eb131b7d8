"""Our users' existing code: the seed's FastAPI worker example (``@server.on_event('startup')``
with ``EasyJobsWorker.create(server, ...)``) connects to a real manager and its plain tasks run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from easyjobs import EasyJobsClient

from . import seed_app
from .conftest import RunningManager
from .mesh import registered
from .utils import SECRET, TIMEOUT, wait_until

SCALE = 0.001
"""The seed's tasks sleep 5 s; under test they sleep 5 ms."""

SEED_TASKS = (
    "extract", "transform", "load", "failure_notify", "deploy_environment", "prepare_db",
    "configure_environment", "compute", "pipeline",
)

COMPUTE_SCRIPT = """\
from easyjobs.workers.task import subprocess

@subprocess
def work(data):
    return {'computed': data}

if __name__ == '__main__':
    work()
"""
"""``$WORKER_TASK_DIR/compute.py``, following the seed's "Subprocess Template"."""

ON_EVENT_DEPRECATED = r"ignore:\s*on_event is deprecated:DeprecationWarning"


class ScaledAsyncio:
    """``asyncio`` with every sleep ``SCALE`` times as long; everything else is the real module."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        return await asyncio.sleep(delay * SCALE, result)


@pytest.fixture
def seed_server(
    manager: RunningManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The seed's FastAPI app pointed at ``manager``, its sleeps scaled, its env change undone;
    ``compute``'s script written from the seed's subprocess template."""
    (tmp_path / "compute.py").write_text(COMPUTE_SCRIPT)
    monkeypatch.setattr(seed_app, "asyncio", ScaledAsyncio())
    monkeypatch.setenv("WORKER_TASK_DIR", "restored-after-the-test")
    return seed_app.build_server(manager.host, manager.port, SECRET, str(tmp_path))


@pytest.mark.filterwarnings(ON_EVENT_DEPRECATED)
async def test_seed_worker_example_runs_its_plain_tasks(
    manager: RunningManager, client: EasyJobsClient, seed_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The seed app's startup connects its worker, and a client runs every plain task."""
    async with seed_server.router.lifespan_context(seed_server):
        await registered(manager, "ETL", *SEED_TASKS)

        assert await client.call("ETL", "extract", url="http://stats") == {
            "data": {"a": 1, "b": 2, "c": 3}
        }
        assert await client.call("ETL", "transform", data={"a": 1, "b": "2"}) == {
            "data": {"a": 3, "b": 4}
        }
        assert await client.call("ETL", "load", {"a": 3}) == {"data": {"a": 3}}
        assert await client.call("ETL", "failure_notify", "job 42 failed") == "job 42 failed"

        slow = await asyncio.wait_for(asyncio.gather(
            client.call("ETL", "deploy_environment"),
            client.call("ETL", "prepare_db"),
            client.call("ETL", "configure_environment"),
        ), TIMEOUT)
        assert slow == [
            "deploy_environment - completed",
            "prepare_db - completed",
            "configure_environment - finished",
        ]
    output = capsys.readouterr().out
    for line in ("extract started", "get_data: http://stats", "transform finished",
                 "load finished", "deploy_environment - started", "prepare_db - completed"):
        assert line in output


@pytest.mark.filterwarnings(ON_EVENT_DEPRECATED)
async def test_seed_worker_advertises_its_options_and_stops_with_the_app(
    manager: RunningManager, seed_server: Any
) -> None:
    """Every option of the seed's decorators is advertised; the app's shutdown stops the worker."""
    dispatcher = manager.manager.core.dispatcher

    def seed_workers() -> int:
        return sum(1 for w in dispatcher.workers.values() if ("ETL", "extract") in w.keys)

    async with seed_server.router.lifespan_context(seed_server):
        await registered(manager, "ETL", *SEED_TASKS)
        await wait_until(lambda: seed_workers() == 1, what="the seed worker to serve its tasks")
        specs = manager.manager.core.tasks
        extract = specs[("ETL", "extract")]
        assert extract.options.schedule == "* * * * *"
        assert extract.options.run_after == ("transform",)
        assert extract.options.default_args == {"args": [], "kwargs": {"url": ["http://stats"]}}
        assert [p.name for p in extract.params] == ["url"]
        assert specs[("ETL", "load")].options.on_failure == "failure_notify"
        assert specs[("ETL", "load")].options.run_after == ("compute",)
        assert specs[("ETL", "configure_environment")].options.run_before == (
            "deploy_environment", "prepare_db",
        )
        assert specs[("ETL", "compute")].options.subprocess is True
        assert specs[("ETL", "compute")].options.run_before == ("configure_environment",)
        assert specs[("ETL", "failure_notify")].options.retry_policy == "retry_once"
    await wait_until(lambda: seed_workers() == 0, what="the seed worker to leave")


@pytest.mark.filterwarnings(ON_EVENT_DEPRECATED)
async def test_seed_pipeline_awaits_compute(
    manager: RunningManager, client: EasyJobsClient, seed_server: Any
) -> None:
    """The seed's pipeline awaits its subprocess task compute and returns compute's result."""
    async with seed_server.router.lifespan_context(seed_server):
        await registered(manager, "ETL", *SEED_TASKS)
        result = await asyncio.wait_for(client.call("ETL", "pipeline"), TIMEOUT)
    assert result == {"computed": {"test": "data"}}
