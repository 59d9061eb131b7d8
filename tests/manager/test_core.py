"""The manager's parts together, with fake peers and a real SQLite store (no sockets)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs.errors import EasyJobsError, StoreError
from easyjobs.jobs import JobRecord, JobStatus, new_job_id
from easyjobs.manager.core import Core
from easyjobs.manager.endpoint import Endpoint
from easyjobs.manager.metrics import Metrics
from easyjobs.manager.peers import Peer
from easyjobs.protocol.frames import (
    Abort,
    Accepted,
    Assign,
    Credit,
    Done,
    DoneAck,
    Error,
    Frame,
    Register,
    Result,
    Submit,
)
from easyjobs.store import SQLiteStore
from easyjobs.tasks import make_options, spec_for

from ..utils import wait_until


class FakePeer(Peer):
    """Collects what the manager sends, and the close it asks for; ``on_send`` may act on each
    frame."""

    def __init__(self, peer_id: str, role: str = "client",
                 on_send: Callable[[FakePeer, Frame], None] | None = None) -> None:
        super().__init__(peer_id, peer_id, role)
        self.sent: list[Frame] = []
        self.closed: list[tuple[int, EasyJobsError]] = []
        self.on_send = on_send

    def send(self, frame: Frame) -> None:
        self.sent.append(frame)
        if self.on_send is not None:
            self.on_send(self, frame)

    def close(self, code: int, error: EasyJobsError) -> None:
        self.closed.append((code, error))

    def of(self, kind: type[Frame]) -> list[Any]:
        return [frame for frame in self.sent if isinstance(frame, kind)]


async def add(a: int, b: int) -> int:
    return a + b


REGISTER = Register([spec_for(add, "Q", make_options()).to_wire()], capacity=10)


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    core = Core(SQLiteStore(str(tmp_path / "jobs.db")))
    await core.start()
    yield core
    await core.stop()


def submit(ref: int, job: str, a: int = 1) -> Submit:
    return Submit(ref, job, "Q", "add", [a, 2], {})


async def test_a_job_runs_and_its_result_is_pushed_after_the_commit(core: Core) -> None:
    """submit -> assign -> done -> accepted and result, and the store holds the outcome."""
    worker, client = FakePeer("w", "worker"), FakePeer("c")
    core.connect(worker)
    core.connect(client)
    core.handle(worker, [REGISTER, Credit(1)])
    job = new_job_id()
    core.handle(client, [submit(1, job)])
    assert [a.job for a in worker.of(Assign)] == [job]
    core.handle(worker, [Done(job, 1, "succeeded", 3)])
    await wait_until(lambda: bool(client.of(Result)), what="the result")
    assert client.of(Accepted)[0].created
    assert client.of(Result)[0].value == 3
    stored = await core.store.get_job(job)
    assert stored is not None and stored.status is JobStatus.SUCCEEDED and stored.attempts == 1


async def test_two_submits_of_one_id_in_one_message_make_one_job(core: Core) -> None:
    """The second submit is a re-send: accepted (not created), and the job still runs (D2)."""
    worker, client = FakePeer("w", "worker"), FakePeer("c")
    core.connect(worker)
    core.connect(client)
    core.handle(worker, [REGISTER])
    job = new_job_id()
    core.handle(client, [submit(1, job), submit(2, job)])
    await wait_until(lambda: len(client.of(Accepted)) == 2, what="both acks")
    assert [a.created for a in client.of(Accepted)] == [True, False]
    assert not client.of(Error)
    assert job in core.active
    core.handle(worker, [Credit(1)])
    assert [a.job for a in worker.of(Assign)] == [job]
    core.handle(worker, [Done(job, 1, "succeeded", 3)])
    await wait_until(lambda: bool(client.of(Result)), what="the result")


async def test_a_worker_dropped_while_being_assigned_leaves_its_jobs_queued(core: Core) -> None:
    """A peer that disconnects from inside ``send`` gets nothing more; its jobs go to the next
    worker and none stays running on the gone one (D1)."""

    def drop_on_assign(peer: FakePeer, frame: Frame) -> None:
        if isinstance(frame, Assign):
            core.disconnect(peer)

    dropping = FakePeer("w1", "worker", on_send=drop_on_assign)
    client = FakePeer("c")
    core.connect(dropping)
    core.connect(client)
    core.handle(dropping, [REGISTER])
    jobs = [new_job_id() for _ in range(2)]
    core.handle(client, [submit(1, jobs[0]), submit(2, jobs[1])])
    core.handle(dropping, [Credit(2)])
    assert len(dropping.of(Assign)) == 1
    for job in jobs:  # back in the store's queue: no worker here serves their task any more
        stored = await core.store.get_job(job)
        assert stored is not None and stored.status is JobStatus.QUEUED
        assert stored.worker is None and stored.owner is None
    healthy = FakePeer("w2", "worker")
    core.connect(healthy)
    core.handle(healthy, [REGISTER, Credit(2)])  # it claims them from the store
    await wait_until(lambda: len(healthy.of(Assign)) == 2, what="both assignments")
    assert sorted(a.job for a in healthy.of(Assign)) == sorted(jobs)
    for job in jobs:
        core.handle(healthy, [Done(job, 1, "succeeded", 3)])
    await wait_until(lambda: len(client.of(Result)) == 2, what="both results")


async def test_a_failing_background_write_is_logged(core: Core,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Write-behind failures reach the log with what was being written (D5)."""

    async def broken() -> None:
        raise StoreError("disk on fire")

    with caplog.at_level(logging.ERROR, "easyjobs.manager"):
        core.background.write(broken(), "the start of job x")
        await core.background.drain()
    assert "could not record the start of job x in the store: disk on fire" in caplog.text


async def test_a_crashing_continuation_is_logged(core: Core,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A bug in a continuation is logged at once, not lost with the task (D5)."""

    async def crash() -> None:
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR, "easyjobs.manager"):
        core.background.spawn(crash())
        await core.background.drain()
        await wait_until(lambda: "crash failed" in caplog.text, what="the log line")
    assert "crash failed (a bug of ours)" in caplog.text and "RuntimeError: bug" in caplog.text


async def test_an_outcome_of_an_earlier_attempt_counts_as_a_duplicate(core: Core) -> None:
    """Attempt 1's worker is lost, attempt 2 succeeds, then attempt 1 reports too: the first
    outcome stands and /metrics counts one duplicate; a re-sent outcome of attempt 2 does not
    count."""
    metrics = Metrics(core.observers, core.queries, Endpoint(core, b"secret", 1.0, 1 << 20))
    first, second, client = FakePeer("w1", "worker"), FakePeer("w2", "worker"), FakePeer("c")
    for peer in (first, second, client):
        core.connect(peer)
    core.handle(first, [REGISTER, Credit(1)])
    core.handle(second, [REGISTER])
    job = new_job_id()
    core.handle(client, [submit(1, job)])
    assert [a.job for a in first.of(Assign)] == [job]
    core.disconnect(first)
    core.handle(second, [Credit(1)])
    assert [(a.job, a.attempt) for a in second.of(Assign)] == [(job, 2)]
    core.handle(second, [Done(job, 2, "succeeded", 3)])
    await wait_until(lambda: bool(client.of(Result)), what="the result")
    late = FakePeer("w1", "worker")
    core.connect(late)
    core.handle(late, [Done(job, 1, "succeeded", 3)])
    core.handle(second, [Done(job, 2, "succeeded", 3)])
    await wait_until(lambda: len(late.of(DoneAck)) == 1 and len(second.of(DoneAck)) == 2,
                     what="every outcome to be acknowledged")
    text = (await metrics.render()).decode()
    assert 'easyjobs_jobs_duplicate_outcomes_total{queue="Q",task="add"} 1.0' in text


async def test_a_resent_submit_of_a_job_another_manager_holds_leaves_it_alone(
        core: Core) -> None:
    """A client re-sends the submit of a job that another manager sharing the store holds
    (its ``accepted`` was lost in a reconnect). The copy dispatched here at once is retracted
    when the insert proves the job exists; its start must not have touched the stored job
    (marked running on this manager's worker, it would wait for nobody)."""
    job = new_job_id()
    await core.store.add_jobs([JobRecord(id=job, queue="Q", task="add", args=[1, 2],
                                         kwargs={}, created_at=time.time(),
                                         owner="another-manager")])
    worker, client = FakePeer("w", "worker"), FakePeer("c")
    core.connect(worker)
    core.connect(client)
    core.handle(worker, [REGISTER, Credit(1)])
    core.handle(client, [submit(1, job)])
    await wait_until(lambda: bool(client.of(Accepted)), what="the re-sent submit's answer")
    assert [a.created for a in client.of(Accepted)] == [False]
    await wait_until(lambda: bool(worker.of(Abort)), what="the copy to be retracted")
    assert job not in core.active
    stored = await core.store.get_job(job)
    assert stored is not None
    assert (stored.status, stored.worker, stored.owner) == (
        JobStatus.QUEUED, None, "another-manager")
