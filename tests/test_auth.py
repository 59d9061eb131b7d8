"""Authentication against a real manager: a wrong secret fails fast and loudly (once), never
leaks into the logs, and does not disturb peers that know the secret."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from easyjobs import (
    AuthenticationError,
    ConnectionLost,
    EasyJobsClient,
    EasyJobsWorker,
)

from .conftest import RunningManager
from .mesh import registered
from .utils import SECRET, TIMEOUT, wait_until

WRONG = "wrong-secret-c41d"
QUICKLY = 3.0
"""A refused peer must give up in well under its 10 s connect timeout."""

WorkerFactory = Callable[..., EasyJobsWorker]


def peer_side_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """easyjobs log lines about authentication written by the refused peer (not the manager)."""
    return [
        r.getMessage() for r in caplog.records
        if "authentication failed" in r.getMessage() and r.name.startswith("easyjobs.")
        and not r.name.startswith("easyjobs.manager")
    ]


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert SECRET not in text and WRONG not in text, record
    assert SECRET not in caplog.text and WRONG not in caplog.text


@pytest.fixture
async def serving(manager: RunningManager, worker_factory: WorkerFactory) -> EasyJobsWorker:
    """A worker with the right secret, serving ``ETL.add``."""
    worker = worker_factory()

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    await registered(manager, "ETL", "add")
    return worker


async def test_worker_with_wrong_secret_fails_fast(
    manager: RunningManager, serving: EasyJobsWorker, client: EasyJobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EasyJobsWorker.create with a wrong secret raises AuthenticationError at once, logs one
    line, and stops trying; the manager keeps serving a peer that knows the secret."""
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()

    async def refused() -> None:
        with pytest.raises(AuthenticationError):
            await EasyJobsWorker.create(
                None, server_secret=WRONG, manager_host=manager.host, manager_port=manager.port,
                manager_secret=WRONG, jobs_queue="ETL", max_tasks_per_worker=5,
            )

    async def served() -> list[int]:
        return [await client.call("ETL", "add", n, 1) for n in range(5)]

    _, results = await asyncio.wait_for(asyncio.gather(refused(), served()), TIMEOUT)
    assert time.monotonic() - started < QUICKLY
    assert results == [1, 2, 3, 4, 5]
    assert len(peer_side_lines(caplog)) == 1
    assert peer_side_lines(caplog)[0].startswith("authentication failed")
    assert_no_secret_logged(caplog)
    assert await client.call("ETL", "add", 20, 22) == 42


async def test_refused_worker_stops_trying(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a refused start the worker's link is finished: no retries, calls fail clearly."""
    caplog.set_level(logging.DEBUG)
    worker = worker_factory(secret=WRONG)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(worker.start(), QUICKLY)
    link_task = worker._link._task  # type: ignore[attr-defined]
    # Nothing is left that could retry (the link's own thread finishes its task just after).
    await wait_until(lambda: link_task is not None and link_task.done(), QUICKLY,
                     what="the refused link to end")
    with pytest.raises(AuthenticationError):
        await add(1, 2)
    manager_lines = [r for r in caplog.records if r.name == "easyjobs.manager"
                     and "authentication failed" in r.getMessage()]
    assert len(manager_lines) == 1  # the manager saw exactly one attempt
    assert len(peer_side_lines(caplog)) == 1
    assert_no_secret_logged(caplog)
    await worker.stop(grace=0)
    with pytest.raises(ConnectionLost):  # closed for good: refused at once, never hangs
        await asyncio.wait_for(add(1, 2), QUICKLY)


async def test_client_with_wrong_secret_fails_fast(
    manager: RunningManager, serving: EasyJobsWorker, client: EasyJobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EasyJobsClient with a wrong secret raises AuthenticationError on connect, logs one line,
    and the manager keeps serving the client that knows the secret."""
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    bad = EasyJobsClient(manager.host, manager.port, WRONG)

    async def refused() -> None:
        with pytest.raises(AuthenticationError):
            await bad.connect()

    async def served() -> int:
        return await client.call("ETL", "add", 1, 1)  # type: ignore[no-any-return]

    _, result = await asyncio.wait_for(asyncio.gather(refused(), served()), TIMEOUT)
    assert time.monotonic() - started < QUICKLY
    assert result == 2
    with pytest.raises(AuthenticationError):
        await bad.call("ETL", "add", 1, 2)
    await bad.close()
    assert len(peer_side_lines(caplog)) == 1
    assert_no_secret_logged(caplog)

    with pytest.raises(AuthenticationError):
        async with EasyJobsClient(manager.host, manager.port, WRONG.encode()):
            pass  # pragma: no cover
    assert len(peer_side_lines(caplog)) == 2  # one line per refused client
    assert_no_secret_logged(caplog)
    assert await client.call("ETL", "add", 2, 2) == 4


async def test_right_secret_as_bytes_or_str(
    manager: RunningManager, serving: EasyJobsWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """The secret may be given as str or bytes; a successful handshake logs no secret either."""
    caplog.set_level(logging.DEBUG)
    for secret in (SECRET, SECRET.encode()):
        async with EasyJobsClient(manager.host, manager.port, secret) as client:
            assert await client.call("ETL", "add", 1, 2) == 3
    assert_no_secret_logged(caplog)
