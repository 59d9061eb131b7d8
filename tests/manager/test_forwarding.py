"""Forwarding between managers on one PostgreSQL schema, each a real uvicorn server in this
process: a job submitted on A for a task whose workers are all on B goes to B over A's link;
when that manager does not answer, or its link cannot open, the job goes through the store
instead, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.errors import ConfigurationError, UnknownTask
from easyjobs.jobs import JobStatus
from easyjobs.manager import EasyJobsManager
from easyjobs.manager.forwarding import ANSWER_TIMEOUT_S
from easyjobs.protocol.frames import Accepted, Result
from easyjobs.remote import Calls

from ..conftest import FAST_BACKOFF, RunningManager, start_manager
from ..proxy import TcpProxy
from ..utils import SECRET, TIMEOUT, free_port, wait_until

QUEUE = "FWD"
Start = Callable[..., Awaitable[RunningManager]]


@pytest.fixture
async def start(pg_url: str) -> AsyncIterator[Start]:
    """Start managers on the test's schema; ``advertise`` as ``create_app`` takes it."""
    started: list[RunningManager] = []

    async def make(port: int = 0, advertise: str | None = None) -> RunningManager:
        running = await start_manager(pg_url, port=port, advertise=advertise)
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        if not running.task.done():
            await running.stop()


@pytest.fixture
async def ends() -> AsyncIterator[list[Any]]:
    """Workers, clients and proxies to stop after the test, last first."""
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        if isinstance(thing, EasyJobsWorker):
            await thing.stop(grace=0)
        else:
            await thing.close()


async def serving(running: RunningManager, ends: list[Any], runs: list[int] | None = None
                  ) -> EasyJobsWorker:
    """A worker on ``running`` serving ``double``, and ``count``, which notes each run."""
    worker = EasyJobsWorker(None, None, running.host, running.port, SECRET, QUEUE, 4,
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def double(x: int) -> int:
        return 2 * x

    @worker.task()
    async def count(x: int) -> int:
        (runs if runs is not None else []).append(x)
        return x

    ends.append(worker)
    await worker.start()
    return worker


async def client_of(running: RunningManager, ends: list[Any]) -> EasyJobsClient:
    client = EasyJobsClient(running.host, running.port, SECRET, backoff=FAST_BACKOFF)
    ends.append(client)
    await client.connect()
    return client


def counts(running: RunningManager) -> tuple[int, int]:
    """Submits ``running`` forwarded, and of those the ones that came back to its store."""
    return running.manager.core.queries.forward_counts()


async def forwarding_to_b(a: RunningManager, client: EasyJobsClient) -> None:
    """Call until A has heard of B's workers and forwards (the directory is read on news)."""
    double = client.task(QUEUE, "double")

    async def forwarded() -> bool:
        try:
            assert await double(1) == 2
        except UnknownTask:  # A has not heard of B's task yet
            return False
        return counts(a)[0] > 0

    await wait_until(forwarded, what="A to forward to B")


async def test_a_job_for_a_task_served_only_on_another_manager_runs_there_forwarded(
        start: Start, ends: list[Any]) -> None:
    """Calls on A of a task only B's worker serves are forwarded to B, each once, with no
    fallback; the job's record on A shows it done, and its handle gets the result."""
    port = free_port()
    b = await start(port, advertise=f"127.0.0.1:{port}")
    a = await start()
    await serving(b, ends)
    client = await client_of(a, ends)
    await forwarding_to_b(a, client)
    before = counts(a)
    double = client.task(QUEUE, "double")
    assert await asyncio.gather(*(double(n) for n in range(20))) == [2 * n for n in range(20)]
    job = await double.submit(21)
    assert await job.result() == 42
    assert await job.status() is JobStatus.SUCCEEDED
    assert counts(a) == (before[0] + 21, 0)
    assert counts(b) == (0, 0)  # what B got from A's link, it ran: it forwards nothing on


async def test_a_forwarded_submit_left_unanswered_goes_through_the_store_once(
        start: Start, ends: list[Any]) -> None:
    """B is reached through a proxy, which stalls with a forwarded submit inside: the link
    still looks open, but no answer comes within ANSWER_TIMEOUT_S, so the submit goes through
    A's store, and B's worker (connected to B directly) runs it once from the queue. B is then
    passed over: the next call is not forwarded into the stall."""
    port = free_port()
    proxy = await TcpProxy(port).start()
    ends.append(proxy)
    b = await start(port, advertise=f"127.0.0.1:{proxy.port}")
    a = await start()
    runs: list[int] = []
    await serving(b, ends, runs)
    client = await client_of(a, ends)
    await forwarding_to_b(a, client)
    proxy.stall()
    forwarded = counts(a)[0]
    count = client.task(QUEUE, "count")
    assert await asyncio.wait_for(count(7), ANSWER_TIMEOUT_S + TIMEOUT) == 7
    assert counts(a) == (forwarded + 1, 1)
    assert await asyncio.wait_for(count(8), TIMEOUT) == 8
    assert counts(a) == (forwarded + 1, 1)
    assert runs == [7, 8]


async def test_a_manager_that_cannot_be_reached_still_gets_its_jobs_through_the_store(
        start: Start, ends: list[Any]) -> None:
    """B advertises an address where nothing listens: A's link never opens, nothing is
    forwarded, and B's worker gets A's jobs from the store's queue."""
    b = await start(advertise=f"127.0.0.1:{free_port()}")
    a = await start()
    await serving(b, ends)
    client = await client_of(a, ends)
    double = client.task(QUEUE, "double")
    await wait_until(lambda: a.manager.core.registry.spec(QUEUE, "double") is not None,
                     what="A to know the task")
    assert await asyncio.gather(*(double(n) for n in range(10))) == [2 * n for n in range(10)]
    assert counts(a) == (0, 0)


async def test_an_accept_and_the_outcome_in_one_message_need_no_second_watch() -> None:
    """A forwarded job is accepted and finished in one commit, so both frames can come in one
    message: the handle keeps the outcome, and ``result`` sends no watch for it."""
    sent: list[Any] = []
    calls = Calls(sent.append)
    submitted = asyncio.ensure_future(calls.submit(QUEUE, "double", [2], {}, watch=True))
    await wait_until(lambda: bool(sent), what="the submit")
    job_id = sent[0].job
    calls.handle(Accepted(sent[0].ref, job_id, True))
    calls.handle(Result(job_id, JobStatus.SUCCEEDED.value, 4, None))
    job = await submitted
    assert await job.result() == 4
    assert [type(frame).__name__ for frame in sent] == ["Submit"]


def test_an_advertised_address_that_is_not_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown scheme 'http'"):
        EasyJobsManager(server_secret=SECRET, db_path=str(tmp_path / "jobs.db"),
                        advertise="http://h:1")
