"""The store as the queue: a bounded look-ahead in memory, the rest claimed from the store.

Fake peers and a real SQLite store, as in ``test_core``; ``lookahead`` is small so that a
handful of jobs overflow it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from easyjobs.jobs import JobStatus, new_job_id
from easyjobs.manager.core import Core
from easyjobs.manager.lifecycle import JobPolicy
from easyjobs.protocol.frames import (
    Accepted,
    Assign,
    Cancel,
    Credit,
    Done,
    JobInfo,
    Register,
    Result,
    Resume,
    Submit,
    Watch,
)
from easyjobs.store import SQLiteStore
from easyjobs.tasks import make_options, spec_for

from ..utils import wait_until
from .test_core import REGISTER, FakePeer, submit

LOOKAHEAD = 4


def make_core(path: Path) -> Core:
    return Core(SQLiteStore(str(path)), JobPolicy(lookahead=LOOKAHEAD))


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    core = make_core(tmp_path / "jobs.db")
    await core.start()
    yield core
    await core.stop()


async def submit_all(core: Core, client: FakePeer, n: int) -> list[str]:
    """``n`` jobs in one message each, every one acknowledged."""
    jobs = [new_job_id() for _ in range(n)]
    before = len(client.of(Accepted))
    for ref, job in enumerate(jobs):
        core.handle(client, [submit(ref, job, ref)])
    await wait_until(lambda: len(client.of(Accepted)) == before + n, what="the acks")
    return jobs


async def run_all(core: Core, worker: FakePeer, n: int) -> list[str]:
    """Run ``n`` jobs one at a time on ``worker`` (credit 1 each); their ids in run order."""
    order: list[str] = []
    start = len(worker.of(Assign))
    for _ in range(n):
        core.handle(worker, [Credit(1)])
        await wait_until(lambda: len(worker.of(Assign)) > start + len(order),
                         what="an assignment")
        job = worker.of(Assign)[start + len(order)].job
        order.append(job)
        core.handle(worker, [Done(job, 1, "succeeded", 0)])
        await wait_until(lambda job=job: job not in core.active, what=f"job {job} to finish")
    return order


def known(core: Core) -> None:
    """Make task Q.add known with no worker left to serve it (its spec stays)."""
    worker = FakePeer("gone", "worker")
    core.connect(worker)
    core.handle(worker, [REGISTER])
    core.disconnect(worker)


async def test_jobs_nobody_serves_wait_in_the_store_only(core: Core) -> None:
    """No worker here runs the task: memory holds none of its jobs; the store holds all."""
    client = FakePeer("c")
    core.connect(client)
    known(core)
    jobs = await submit_all(core, client, 3 * LOOKAHEAD)
    assert core.active == {}
    queued = await core.store.list_jobs(status=JobStatus.QUEUED, limit=100)
    assert {j.id for j in queued} == set(jobs)
    assert await core.queries.unfinished() == {("Q", "queued"): 3 * LOOKAHEAD}


async def test_a_busy_worker_has_at_most_the_lookahead_held_for_it(core: Core) -> None:
    """A worker with no credit: ``lookahead`` jobs wait in memory, the rest in the store, and
    when the worker leaves, the held ones go back to the store's queue too."""
    client, worker = FakePeer("c"), FakePeer("w", "worker")
    core.connect(client)
    core.connect(worker)
    core.handle(worker, [REGISTER])
    jobs = await submit_all(core, client, 3 * LOOKAHEAD)
    assert set(core.active) == set(jobs[:LOOKAHEAD])
    core.disconnect(worker)
    assert core.active == {}
    stored = await core.store.list_jobs(limit=100)  # reads see the writes called before
    assert len(stored) == len(jobs) and all(j.owner is None for j in stored)


async def test_jobs_run_in_submit_order_across_the_lookahead(core: Core) -> None:
    """Held and stored jobs interleave in FIFO order: none overtakes an older stored one."""
    client, worker = FakePeer("c"), FakePeer("w", "worker")
    core.connect(client)
    known(core)
    early = await submit_all(core, client, 3 * LOOKAHEAD)
    core.connect(worker)
    core.handle(worker, [REGISTER])
    first = await run_all(core, worker, LOOKAHEAD)
    late = await submit_all(core, client, LOOKAHEAD)  # while older jobs wait in the store
    rest = await run_all(core, worker, 3 * LOOKAHEAD)
    assert first + rest == early + late
    assert core.active == {}


async def test_a_restarted_manager_serves_the_backlog_without_loading_it(tmp_path: Path) -> None:
    """Start-up holds nothing queued in memory; a worker then gets every job, oldest first."""
    path = tmp_path / "jobs.db"
    first = make_core(path)
    await first.start()
    client = FakePeer("c")
    first.connect(client)
    known(first)
    jobs = await submit_all(first, client, 3 * LOOKAHEAD)
    await first.stop()
    second = make_core(path)
    await second.start()
    try:
        assert second.active == {}
        worker = FakePeer("w", "worker")
        second.connect(worker)
        second.handle(worker, [REGISTER])
        assert await run_all(second, worker, len(jobs)) == jobs
        done = await second.store.list_jobs(status=JobStatus.SUCCEEDED, limit=100)
        assert len(done) == len(jobs)
    finally:
        await second.stop()


async def test_an_outcome_for_a_job_requeued_by_a_restart_is_recorded_once(
        tmp_path: Path) -> None:
    """A worker that kept running across a manager restart resumes and reports its job: the
    job is adopted from the store's queue, finished, and never given to another worker."""
    path = tmp_path / "jobs.db"
    first = make_core(path)
    await first.start()
    client, worker = FakePeer("c"), FakePeer("w", "worker")
    first.connect(client)
    first.connect(worker)
    first.handle(worker, [REGISTER, Credit(1)])
    (job,) = await submit_all(first, client, 1)
    assert [a.job for a in worker.of(Assign)] == [job]
    await first.stop()  # the job stays running in the store, as after a crash
    second = make_core(path)
    await second.start()
    try:
        assert second.active == {}
        other, again = FakePeer("w2", "worker"), FakePeer("w", "worker")
        second.connect(other)
        second.handle(other, [REGISTER])
        second.connect(again)
        second.handle(again, [REGISTER, Resume([job]), Done(job, 1, "succeeded", 7)])
        await wait_until(lambda: bool(again.sent) and job not in second.active,
                         what="the outcome to be recorded")
        second.handle(other, [Credit(5)])
        stored = await second.store.get_job(job)
        assert stored is not None and stored.status is JobStatus.SUCCEEDED
        assert stored.result == 7 and stored.attempts == 1
        assert other.of(Assign) == []
    finally:
        await second.stop()


async def test_cancelling_a_job_that_waits_in_the_store(core: Core) -> None:
    """The cancel adopts the job and answers with its cancelled record; it never runs."""
    client, worker = FakePeer("c"), FakePeer("w", "worker")
    core.connect(client)
    known(core)
    jobs = await submit_all(core, client, 2 * LOOKAHEAD)
    target = jobs[-1]
    assert target not in core.active
    core.handle(client, [Cancel(99, target)])
    await wait_until(lambda: bool(client.of(JobInfo)), what="the cancel's answer")
    assert client.of(JobInfo)[0].job["status"] == "cancelled"
    core.connect(worker)
    core.handle(worker, [REGISTER])
    assert target not in await run_all(core, worker, len(jobs) - 1)


async def test_watching_a_job_that_waits_in_the_store(core: Core) -> None:
    """The watch is kept by id and answered when the job is claimed, run and finished."""
    client, watcher, worker = FakePeer("c"), FakePeer("x"), FakePeer("w", "worker")
    core.connect(client)
    core.connect(watcher)
    known(core)
    jobs = await submit_all(core, client, 2 * LOOKAHEAD)
    target = jobs[-1]
    core.handle(watcher, [Watch(5, target)])
    core.connect(worker)
    core.handle(worker, [REGISTER])
    await run_all(core, worker, len(jobs))
    await wait_until(lambda: bool(watcher.of(Result)), what="the watched result")
    assert [r.job for r in watcher.of(Result)] == [target]


async def tick() -> None:
    """A scheduled task's body (never run here)."""


async def test_a_schedule_does_not_pile_up_jobs_that_wait_in_the_store(core: Core) -> None:
    """A tick is skipped while the previous tick's job, left in the store, has not started."""
    client, worker = FakePeer("c"), FakePeer("w", "worker")
    core.connect(client)
    core.connect(worker)
    core.handle(worker, [Register([spec_for(tick, "Q", make_options()).to_wire()])])
    core.disconnect(worker)  # its spec stays known; nobody runs the task
    for ref in range(2 * LOOKAHEAD):
        core.handle(client, [Submit(ref, new_job_id(), "Q", "tick", [], {})])
    await wait_until(lambda: len(client.of(Accepted)) == 2 * LOOKAHEAD, what="the acks")
    spec = core.registry.spec("Q", "tick")
    assert spec is not None
    assert await core.firing.fire(spec, 1.0)
    assert not await core.firing.fire(spec, 2.0)
    stored = await core.store.list_jobs(task="tick", limit=100)
    assert len(stored) == 2 * LOOKAHEAD + 1
    assert core.active == {}  # the fired job waits in the store


async def test_one_message_of_many_submits_holds_no_more_than_the_lookahead(core: Core) -> None:
    """A client that sends many submits at once (one message) gets the same bound."""
    client, worker = FakePeer("c"), FakePeer("w", "worker")
    core.connect(client)
    core.connect(worker)
    core.handle(worker, [REGISTER, Credit(1)])
    jobs = [new_job_id() for _ in range(3 * LOOKAHEAD)]
    core.handle(client, [submit(ref, job) for ref, job in enumerate(jobs)])
    assert set(core.active) == set(jobs[:LOOKAHEAD])
    assert [a.job for a in worker.of(Assign)] == jobs[:1]
    await wait_until(lambda: len(client.of(Accepted)) == len(jobs), what="the acks")
    core.handle(worker, [Done(jobs[0], 1, "succeeded", 0)])
    assert await run_all(core, worker, len(jobs) - 1) == jobs[1:]  # the rest, claimed, in order


async def test_a_pause_of_every_worker_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = make_core(path)
    await first.start()
    first.toggle_workers(True)
    await first.stop()
    second = make_core(path)
    await second.start()
    try:
        assert second.dispatcher.paused
        second.toggle_workers(False)
    finally:
        await second.stop()
    third = make_core(path)
    await third.start()
    try:
        assert not third.dispatcher.paused
    finally:
        await third.stop()
