"""The gate: each frame of a scoped peer checked against its grant before the core acts on it,
with fake peers and a real SQLite store (as in ``test_core``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from easyjobs.errors import PermissionDenied
from easyjobs.jobs import JobStatus, new_job_id
from easyjobs.manager.access import Grant
from easyjobs.manager.core import Core
from easyjobs.manager.gate import MAX_WAITING
from easyjobs.protocol.frames import (
    Accepted,
    Assign,
    Cancel,
    Credit,
    Done,
    Error,
    JobInfo,
    JobList,
    ListJobs,
    Lookup,
    Pause,
    Register,
    Result,
    Submit,
    Watch,
)
from easyjobs.protocol.session import CLOSE_BACKLOG, CLOSE_PERMISSION_DENIED
from easyjobs.store import SQLiteStore
from easyjobs.tasks import make_options, spec_for

from ..utils import wait_until
from .test_core import REGISTER, FakePeer, add

REGISTER_A = Register([spec_for(add, "A", make_options()).to_wire()], capacity=10)


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    core = Core(SQLiteStore(str(tmp_path / "jobs.db")), secret=b"s")
    await core.start()
    yield core
    await core.stop()


@pytest.fixture
async def worker(core: Core) -> FakePeer:
    """A worker under the manager secret serving Q.add and A.add, without credit yet."""
    worker = FakePeer("w", "worker")
    core.connect(worker)
    core.handle(worker, [REGISTER, REGISTER_A])
    return worker


@pytest.fixture
async def admin(core: Core) -> FakePeer:
    """A client under the manager secret."""
    admin = FakePeer("admin")
    core.connect(admin)
    return admin


def scoped(core: Core, peer_id: str, role: str, *queues: str) -> FakePeer:
    """A peer connected under a credential of ``role`` for ``queues``."""
    peer = FakePeer(peer_id, role)
    peer.grant = Grant(peer_id, role, frozenset(queues))
    core.connect(peer)
    return peer


def denied(peer: FakePeer) -> list[Error]:
    return [e for e in peer.of(Error) if e.code == "permission_denied"]


async def held(core: Core, admin: FakePeer, queue: str) -> str:
    """A job of ``queue`` committed and held in memory, queued (no worker has credit)."""
    job = new_job_id()
    ref = len(admin.sent) + 100
    core.handle(admin, [Submit(ref, job, queue, "add", [1, 2], {})])
    await wait_until(lambda: any(a.ref == ref for a in admin.of(Accepted)), what="the ack")
    assert job in core.active
    return job


async def finished(core: Core, admin: FakePeer, worker: FakePeer, queue: str) -> str:
    """A job of ``queue`` that ran: it is in the store only, no longer in memory. (Make these
    before any ``held`` job: the credit goes to the oldest queued job.)"""
    job = await held(core, admin, queue)
    core.handle(worker, [Credit(1)])
    await wait_until(lambda: any(a.job == job for a in worker.of(Assign)), what="the assign")
    core.handle(worker, [Done(job, 1, "succeeded", 3)])
    await wait_until(lambda: any(r.job == job for r in admin.of(Result)), what="the result")
    assert job not in core.active
    return job


async def test_a_client_submits_to_its_queues_only(core: Core, worker: FakePeer) -> None:
    """A submit to another queue is answered permission_denied with its ref (and makes no
    job); the one to its own queue in the same message is accepted."""
    client = scoped(core, "c", "client", "A")
    foreign, own = new_job_id(), new_job_id()
    core.handle(client, [Submit(1, foreign, "Q", "add", [1, 2], {}),
                         Submit(2, own, "A", "add", [1, 2], {})])
    await wait_until(lambda: bool(client.of(Accepted)), what="the ack of the allowed submit")
    [error] = client.of(Error)
    assert (error.code, error.ref) == ("permission_denied", 1)
    assert error.message == "credential 'c' (client) may not submit to queue 'Q'"
    assert [a.ref for a in client.of(Accepted)] == [2]
    assert await core.store.get_job(foreign) is None
    assert await core.store.get_job(own) is not None


async def test_a_worker_advertising_another_queues_tasks_is_closed_4005(core: Core) -> None:
    """A register naming a queue the credential may not serve closes the link; the same
    register from a worker for that queue serves it."""
    other = scoped(core, "wb", "worker", "B")
    core.handle(other, [REGISTER])
    [(code, error)] = other.closed
    assert code == CLOSE_PERMISSION_DENIED and isinstance(error, PermissionDenied)
    assert "may not serve queue 'Q'" in str(error)
    assert core.dispatcher.workers["wb"].keys == set()
    own = scoped(core, "wq", "worker", "Q")
    core.handle(own, [REGISTER])
    assert own.closed == [] and core.dispatcher.workers["wq"].keys == {("Q", "add")}


async def test_a_held_job_of_another_queue_cannot_be_read_watched_or_cancelled(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    job = await held(core, admin, "Q")
    client = scoped(core, "c", "client", "A")
    core.handle(client, [Lookup(1, job), Watch(2, job), Cancel(3, job)])
    assert [(e.ref, e.code) for e in client.of(Error)] == [
        (1, "permission_denied"), (2, "permission_denied"), (3, "permission_denied")]
    assert f"may not lookup job {job} of queue 'Q'" in client.of(Error)[0].message
    assert job in core.active and job not in client.watching
    stored = await core.store.get_job(job)
    assert stored is not None and stored.status is JobStatus.QUEUED
    reader = scoped(core, "cq", "client", "Q")  # a client for Q may
    core.handle(reader, [Lookup(4, job)])
    assert [(i.ref, i.job["id"]) for i in reader.of(JobInfo)] == [(4, job)]


async def test_a_worker_may_not_report_on_a_job_of_another_queue(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    job = await held(core, admin, "Q")
    core.handle(worker, [Credit(1)])
    await wait_until(lambda: bool(worker.of(Assign)), what="the assign")
    intruder = scoped(core, "wa", "worker", "A")
    core.handle(intruder, [Done(job, 1, "succeeded", 666)])
    assert [e.code for e in intruder.of(Error)] == ["permission_denied"]
    assert job in core.active
    core.handle(worker, [Done(job, 1, "succeeded", 3)])
    await wait_until(lambda: bool(admin.of(Result)), what="the real outcome")
    assert admin.of(Result)[0].value == 3


async def test_a_stored_job_of_another_queue_is_refused_after_the_read_in_order(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    """A finished job is read from the store before its lookup is judged; the peer's next
    message waits behind it, so the answers come in the order asked."""
    foreign = await finished(core, admin, worker, "Q")
    own = await held(core, admin, "A")
    client = scoped(core, "c", "client", "A")
    core.handle(client, [Lookup(1, foreign)])
    core.handle(client, [Lookup(2, own)])  # held: answerable at once, yet it waits its turn
    assert client.sent == []
    await wait_until(lambda: len(client.sent) == 2, what="both answers")
    first, second = client.sent
    assert isinstance(first, Error) and (first.ref, first.code) == (1, "permission_denied")
    assert f"job {foreign} of queue 'Q'" in first.message
    assert isinstance(second, JobInfo) and (second.ref, second.job["id"]) == (2, own)


async def test_a_stored_job_of_its_own_queue_and_an_unknown_job_are_answered_as_for_anyone(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    own = await finished(core, admin, worker, "A")
    client = scoped(core, "c", "client", "A")
    missing = new_job_id()
    core.handle(client, [Lookup(1, own), Lookup(2, missing), Watch(3, own)])
    await wait_until(lambda: len(client.sent) == 3, what="the three answers")
    assert [(i.ref, i.job["status"]) for i in client.of(JobInfo)] == [(1, "succeeded")]
    assert [(e.ref, e.code) for e in client.of(Error)] == [(2, "unknown_job")]
    assert [(r.job, r.value) for r in client.of(Result)] == [(own, 3)]


async def test_a_listing_holds_the_grants_queues_and_names_no_other(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    own = {await finished(core, admin, worker, "A")}
    await finished(core, admin, worker, "Q")
    own.add(await held(core, admin, "A"))
    await held(core, admin, "Q")
    client = scoped(core, "c", "client", "A")
    core.handle(client, [ListJobs(1), ListJobs(2, queue="Q"), ListJobs(3, queues=["A", "Q"]),
                         ListJobs(4, queues=["A"])])
    await wait_until(lambda: len(client.of(JobList)) == 2, what="the two listings")
    assert sorted((page.ref, {job["id"] for job in page.jobs}) for page in client.of(JobList)) == [
        (1, own), (4, own)]
    assert [(e.ref, e.code) for e in client.of(Error)] == [
        (2, "permission_denied"), (3, "permission_denied")]
    assert "may not list queue 'Q'" in client.of(Error)[1].message
    everything = FakePeer("everything")
    core.connect(everything)
    core.handle(everything, [ListJobs(5)])
    await wait_until(lambda: bool(everything.of(JobList)), what="the admin's listing")
    assert len(everything.of(JobList)[0].jobs) == 4


async def test_a_worker_credential_pauses_itself_only_and_may_not_list(
        core: Core, worker: FakePeer) -> None:
    """A worker's ``pause`` is of itself (as when it drains to stop): allowed, and no other
    worker is paused; listing jobs is a client's, refused."""
    scoped_worker = scoped(core, "wq", "worker", "Q")
    core.handle(scoped_worker, [REGISTER, Pause(True), ListJobs(1), ListJobs(2, queue="Q")])
    assert [(e.ref, e.code) for e in scoped_worker.of(Error)] == [
        (1, "permission_denied"), (2, "permission_denied")]
    assert core.dispatcher.workers["wq"].paused
    assert not core.dispatcher.workers[worker.id].paused and not core.dispatcher.paused


async def test_an_admin_credentials_frames_go_straight_through(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    """Any queue, any job, pause: nothing waits at the gate and nothing is refused."""
    stored = await finished(core, admin, worker, "Q")
    ops = scoped(core, "ops", "worker", "Q")
    ops.grant = Grant("ops", "admin", None)
    job = new_job_id()
    core.handle(ops, [REGISTER_A, Pause(True), Lookup(1, stored),
                      Submit(2, job, "Q", "add", [1, 2], {}), ListJobs(3, queue="Q")])
    assert core.dispatcher.workers["ops"].paused
    assert core.dispatcher.workers["ops"].keys == {("A", "add")}
    await wait_until(lambda: len(ops.sent) == 3, what="the three answers")
    assert ops.of(Error) == [] and ops.closed == []
    assert [i.ref for i in ops.of(JobInfo)] == [1] and [a.ref for a in ops.of(Accepted)] == [2]
    assert [len(page.jobs) for page in ops.of(JobList)] == [2]


async def test_a_refusal_is_answered_in_its_place_among_the_frames_of_a_message(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    """The frames of a message are handled in order (PROTOCOL.md section 1): a refused frame's
    answer comes after those of the allowed frames before it."""
    own, foreign = await held(core, admin, "A"), await held(core, admin, "Q")
    client = scoped(core, "c", "client", "A")
    core.handle(client, [Lookup(1, own), Lookup(2, foreign), Lookup(3, own)])
    assert [(type(f).__name__, getattr(f, "ref", None)) for f in client.sent] == [
        ("JobInfo", 1), ("Error", 2), ("JobInfo", 3)]


async def test_a_submit_reusing_the_id_of_a_stored_job_of_another_queue_is_refused(
        core: Core, worker: FakePeer, admin: FakePeer) -> None:
    """A re-sent submit names an existing job: one of a queue the peer may not use is refused
    after the store read (it must neither run again nor be awaited under the peer's queue),
    and the stored job is left as it was."""
    stored = await finished(core, admin, worker, "A")
    client = scoped(core, "cq", "client", "Q")
    fresh = new_job_id()
    core.handle(client, [Submit(1, stored, "Q", "add", [1, 2], {}),
                         Submit(2, fresh, "Q", "add", [1, 2], {})])
    await wait_until(lambda: len(client.sent) >= 2, what="both answers")
    assert [(e.ref, e.code) for e in client.of(Error)] == [(1, "permission_denied")]
    assert "may not submit to queue 'A'" in client.of(Error)[0].message
    assert [a.job for a in client.of(Accepted)] == [fresh]
    record = await core.store.get_job(stored)
    assert record is not None and (record.queue, record.status) == ("A", JobStatus.SUCCEEDED)


async def test_a_peer_that_sends_faster_than_its_frames_are_checked_is_closed(
        core: Core) -> None:
    """While a store read holds a scoped peer's frames, its later messages wait in memory; past
    ``MAX_WAITING`` of them the link closes (4004) instead of holding more."""
    client = scoped(core, "cq", "client", "Q")
    for ref in range(MAX_WAITING):  # in one turn of the loop: the first read is not back
        core.handle(client, [Lookup(ref, new_job_id())])
    assert client.closed == []
    core.handle(client, [Lookup(MAX_WAITING, new_job_id())])
    assert [code for code, _ in client.closed] == [CLOSE_BACKLOG]
