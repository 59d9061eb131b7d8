"""A list of managers: workers and clients connect to the first that answers, and when it goes
they move to the next by themselves and carry on there (each manager here has a store of its
own: SQLite serves one manager, so what moves is the link, not the jobs)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker

from ..conftest import FAST_BACKOFF, RunningManager
from ..processes import serving
from ..utils import SECRET, TIMEOUT, free_port, wait_until

Factory = Callable[..., Any]


@pytest.fixture
async def made() -> AsyncIterator[list[EasyJobsWorker | EasyJobsClient]]:
    """Workers and clients a test made; stopped or closed afterwards."""
    things: list[EasyJobsWorker | EasyJobsClient] = []
    yield things
    for thing in things:
        if isinstance(thing, EasyJobsWorker):
            await thing.stop(grace=0)
        else:
            await thing.close()


def adder(managers: list[str], made: list[EasyJobsWorker | EasyJobsClient]) -> EasyJobsWorker:
    worker = EasyJobsWorker(manager_secret=SECRET, jobs_queue="ETL", managers=managers,
                            name="adder", backoff=FAST_BACKOFF)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    made.append(worker)
    return worker


async def test_worker_and_client_move_to_the_second_manager_when_the_first_stops(
    manager_factory: Factory, tmp_path: Path, made: list[EasyJobsWorker | EasyJobsClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both on A, A stops: both switch to B (one line each naming B), and submit → result works
    there, including a call made while the client was between managers."""
    first: RunningManager = await manager_factory(tmp_path / "a.db")
    second: RunningManager = await manager_factory(tmp_path / "b.db")
    managers = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    worker = adder(managers, made)
    await worker.start()
    client = EasyJobsClient(managers=managers, secret=SECRET, backoff=FAST_BACKOFF,
                            request_timeout=TIMEOUT)
    made.append(client)
    await client.connect()
    assert client.address == f"127.0.0.1:{first.port}"
    assert await client.call("ETL", "add", 1, 2) == 3
    assert not serving(second, "add", "adder")

    with caplog.at_level(logging.INFO, logger="easyjobs.link"):
        await first.stop()
        pending = asyncio.ensure_future(client.call("ETL", "add", 20, 22))
        await wait_until(lambda: serving(second, "add", "adder"), what="the worker on B")
        assert await asyncio.wait_for(pending, TIMEOUT) == 42
    assert client.address == f"127.0.0.1:{second.port}"
    job = await client.submit("ETL", "add", 2, 3)
    assert await job.result(TIMEOUT) == 5
    switched = [r.getMessage() for r in caplog.records
                if f"switching to the manager at 127.0.0.1:{second.port}" in r.getMessage()]
    assert len(switched) == 2, switched  # one for the worker, one for the client
    assert all(f"manager unreachable at 127.0.0.1:{first.port} (connection lost" in line
               for line in switched)


async def test_a_first_address_that_refuses_connections_is_passed_over(
    manager_factory: Factory, tmp_path: Path, made: list[EasyJobsWorker | EasyJobsClient],
) -> None:
    """Nothing listens on the first address: both connect to the second and work there."""
    serving_one: RunningManager = await manager_factory(tmp_path / "b.db")
    managers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{serving_one.port}"]
    worker = adder(managers, made)
    await worker.start()
    assert worker.connected
    client = EasyJobsClient(managers=managers, secret=SECRET, backoff=FAST_BACKOFF)
    made.append(client)
    await client.connect()
    assert client.address == f"127.0.0.1:{serving_one.port}"
    job = await client.submit("ETL", "add", 4, 5)
    assert await job.result(TIMEOUT) == 9


async def test_after_a_round_without_success_the_backoff_applies(
    manager_factory: Factory, tmp_path: Path, made: list[EasyJobsWorker | EasyJobsClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither manager answers yet: the client tries both, then waits (longer each round), and
    gets in once the second one starts."""
    caplog.set_level(logging.INFO, logger="easyjobs.link")
    ports = [free_port(), free_port()]
    waits: list[tuple[int, int]] = []  # (attempt, failed tries so far) at each wait

    def backoff(attempt: int) -> float:
        tries = sum("manager unreachable at" in r.getMessage() for r in caplog.records)
        waits.append((attempt, tries))
        return 0.05

    client = EasyJobsClient(managers=[f"127.0.0.1:{port}" for port in ports], secret=SECRET,
                            backoff=backoff)
    made.append(client)
    await client._link.start(0.2)
    await wait_until(lambda: len(waits) >= 3, what="three rounds")
    assert waits[:3] == [(0, 2), (1, 4), (2, 6)]  # a wait per round of two, not per try
    await manager_factory(tmp_path / "b.db", port=ports[1])
    await wait_until(lambda: client._link.is_open, what="the client to get in")
    assert client.address == f"127.0.0.1:{ports[1]}"
