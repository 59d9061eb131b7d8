"""Several managers on one PostgreSQL schema: jobs, results, cancels, pauses and task specs
cross from one to another through the store and its notifications (no polling anywhere).

Each manager is a ``Core`` with fake peers, as in ``test_core``; the database is real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from easyjobs.errors import AuthenticationError
from easyjobs.jobs import JobStatus, new_job_id
from easyjobs.manager.access import Grant
from easyjobs.manager.claims import SLOTS_AHEAD
from easyjobs.manager.core import Core
from easyjobs.manager.lease import RENEW_S
from easyjobs.manager.lifecycle import JobPolicy
from easyjobs.protocol import auth
from easyjobs.protocol.frames import (
    Abort,
    Accepted,
    Assign,
    Cancel,
    Credit,
    Done,
    JobInfo,
    Register,
    Result,
    Submit,
)
from easyjobs.protocol.session import CLOSE_AUTH_FAILED
from easyjobs.store.postgres import PostgresStore
from easyjobs.tasks import make_options, spec_for

from ..postgres import schema_of
from ..utils import wait_until
from .test_core import REGISTER, FakePeer, submit

Cores = Callable[[], Awaitable[Core]]


@pytest.fixture
async def cores(pg_url: str) -> AsyncIterator[Cores]:
    """Start managers on the test's schema; all are stopped after the test."""
    started: list[Core] = []

    async def start() -> Core:
        core = Core(PostgresStore(pg_url), JobPolicy(retry_base=0.02), secret=b"s")
        await core.start()
        started.append(core)
        return core

    yield start
    for core in reversed(started):
        await core.stop()


async def serving(core: Core, worker: FakePeer, credit: int = 0) -> None:
    """``worker`` connects to ``core`` and registers Q.add (with ``credit``)."""
    core.connect(worker)
    core.handle(worker, [REGISTER, *([Credit(credit)] if credit else [])])


async def knows_add(core: Core) -> None:
    await wait_until(lambda: core.registry.spec("Q", "add") is not None,
                     what="the task spec to reach the other manager")


async def test_a_job_submitted_on_one_manager_runs_on_another_and_its_result_comes_back(
        cores: Cores) -> None:
    """The spec registered on B reaches A; a job submitted on A is pushed to B's worker; the
    result is pushed to the client waiting on A and to a watcher on a third manager."""
    a, b, c = await cores(), await cores(), await cores()
    worker, client, watcher = FakePeer("w", "worker"), FakePeer("client"), FakePeer("watcher")
    await serving(b, worker, credit=1)
    await knows_add(a)
    a.connect(client)
    job = new_job_id()
    a.handle(client, [submit(1, job, 40)])
    await wait_until(lambda: bool(worker.of(Assign)), what="the job to reach B's worker")
    assert worker.of(Assign)[0].job == job and worker.of(Assign)[0].args == [40, 2]
    c.connect(watcher)
    c.watchers.watch(watcher, job, 7)
    b.handle(worker, [Done(job, 1, "succeeded", 42)])
    await wait_until(lambda: bool(client.of(Result)) and bool(watcher.of(Result)),
                     what="the result on A and on C")
    assert client.of(Accepted)[0].created
    assert client.of(Result)[0].value == 42 and watcher.of(Result)[0].value == 42
    # B forgets the job after its commit, A's watcher may hear the news of it first
    await wait_until(lambda: a.active == {} and b.active == {}, what="both to forget the job")


async def test_a_result_too_big_for_the_news_is_read_from_the_store(cores: Cores) -> None:
    """The outcome of a job finished on B rides in B's news only while it fits the payload;
    a bigger one reaches the client on A all the same, re-read from the store."""
    a, b = await cores(), await cores()
    worker, client = FakePeer("w", "worker"), FakePeer("client")
    await serving(b, worker, credit=2)
    await knows_add(a)
    a.connect(client)
    small, big = new_job_id(), new_job_id()
    a.handle(client, [submit(1, small), submit(2, big)])
    await wait_until(lambda: len(worker.of(Assign)) == 2, what="both jobs on B's worker")
    b.handle(worker, [Done(small, 1, "succeeded", 3), Done(big, 1, "succeeded", "x" * 9000)])
    await wait_until(lambda: len(client.of(Result)) == 2, what="both results on A")
    assert {r.job: r.value for r in client.of(Result)} == {small: 3, big: "x" * 9000}


async def test_a_cancel_on_one_manager_aborts_the_job_running_on_another(cores: Cores) -> None:
    a, b = await cores(), await cores()
    worker, client = FakePeer("w", "worker"), FakePeer("client")
    await serving(b, worker, credit=1)
    await knows_add(a)
    a.connect(client)
    job = new_job_id()
    a.handle(client, [submit(1, job)])
    await wait_until(lambda: bool(worker.of(Assign)), what="the job to run on B")
    a.handle(client, [Cancel(2, job)])
    await wait_until(lambda: bool(client.of(JobInfo)), what="the cancel's answer")
    assert client.of(JobInfo)[0].job["status"] == "cancelled"
    await wait_until(lambda: [f.job for f in worker.of(Abort)] == [job],
                     what="B to abort its worker's attempt")
    await wait_until(lambda: job not in b.active, what="B to drop the job")
    b.handle(worker, [Done(job, 1, "succeeded", 3)])  # too late: the cancel won
    stored = await a.store.get_job(job)
    assert stored is not None and stored.status is JobStatus.CANCELLED
    # The client watched the job (its submit did): its manager made the cancel and tells it.
    await wait_until(lambda: bool(client.of(Result)), what="the watched job's outcome")
    assert [(r.job, r.status) for r in client.of(Result)] == [(job, "cancelled")]


async def test_pausing_on_one_manager_pauses_the_workers_of_all(cores: Cores) -> None:
    a, b = await cores(), await cores()
    worker = FakePeer("w", "worker")
    await serving(b, worker)
    a.toggle_workers(True)
    await wait_until(lambda: b.dispatcher.paused, what="B's workers to pause")
    a.toggle_workers(False)
    await wait_until(lambda: not b.dispatcher.paused, what="B's workers to resume")


async def prepare() -> None:
    """A run_before dependency (never run here: the test reports its outcome)."""


async def deploy() -> None:
    """Waits for ``prepare``."""


async def test_a_job_waiting_on_one_manager_is_released_by_its_dependency_on_another(
        cores: Cores) -> None:
    """The waiting job stays with A; its dependency runs on B; A hears it finished and
    hands the now queued job to the store, where B's worker gets it."""
    a, b = await cores(), await cores()
    worker, client = FakePeer("w", "worker"), FakePeer("client")
    b.connect(worker)
    specs = [spec_for(prepare, "Q", make_options()),
             spec_for(deploy, "Q", make_options(run_before=["prepare"]))]
    b.handle(worker, [Register([s.to_wire() for s in specs]), Credit(2)])
    await wait_until(lambda: a.registry.spec("Q", "deploy") is not None, what="the specs on A")
    a.connect(client)
    job = new_job_id()
    a.handle(client, [Submit(1, job, "Q", "deploy", [], {})])
    await wait_until(lambda: bool(worker.of(Assign)), what="the dependency to run on B")
    (dependency,) = worker.of(Assign)
    assert dependency.task == "prepare" and a.active[job].record.status is JobStatus.WAITING
    b.handle(worker, [Done(dependency.job, 1, "succeeded", None)])
    await wait_until(lambda: len(worker.of(Assign)) == 2, what="the released job on B")
    assert worker.of(Assign)[1].job == job
    b.handle(worker, [Done(job, 1, "succeeded", None)])
    await wait_until(lambda: bool(client.of(Result)), what="the result on A")


async def test_a_manager_whose_listener_was_killed_catches_up(cores: Cores, pg_url: str,
                                                              pg_server: psycopg.Connection[
                                                                  tuple[object, ...]]) -> None:
    """Its LISTEN connection terminated, B reconnects it and reads what it missed: a job
    submitted on A meanwhile still reaches B's worker."""
    a, b = await cores(), await cores()
    worker, client = FakePeer("w", "worker"), FakePeer("client")
    await serving(b, worker, credit=1)
    await knows_add(a)
    listener = b.store._listener  # type: ignore[attr-defined]
    assert listener is not None and listener.connected.is_set()
    pg_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND query LIKE 'LISTEN%%'", (schema_of(pg_url),))
    await wait_until(lambda: not listener.connected.is_set(), what="B to see its listener gone")
    a.connect(client)
    job = new_job_id()
    a.handle(client, [submit(1, job)])
    await wait_until(lambda: bool(client.of(Accepted)), what="the submit")
    await wait_until(lambda: bool(worker.of(Assign)), timeout=15,
                     what="B to catch up and run the job")
    assert worker.of(Assign)[0].job == job


async def test_every_manager_lists_the_workers_of_all(cores: Cores) -> None:
    """A's worker list holds B's worker, as B shared it at its last lease renewal; once B
    stops, A lists it no more."""
    a, b = await cores(), await cores()
    mine, theirs = FakePeer("mine", "worker"), FakePeer("theirs", "worker")
    await serving(a, mine)
    await serving(b, theirs, credit=3)

    async def listed() -> list[tuple[str, str, int | None]]:
        return sorted((w["name"], w["manager"], w["capacity"]) for w in await a.queries.workers())

    async def both() -> bool:
        return len(await listed()) == 2

    await wait_until(both, timeout=3 * RENEW_S, what="B to share its worker")
    assert await listed() == [("mine", a.id, 10), ("theirs", b.id, 10)]
    await b.stop()

    async def only_mine() -> bool:
        return [name for name, _, _ in await listed()] == ["mine"]

    await wait_until(only_mine, what="B's worker to leave A's list")


async def flaky(x: int) -> int:
    """Fails (as the test reports it)."""
    return x


async def cleanup(job_failed: dict[str, object]) -> None:
    """The on_failure handler of ``flaky``."""


async def test_a_retry_and_an_on_failure_handler_for_a_job_submitted_elsewhere(
        cores: Cores) -> None:
    """A job submitted on A fails on B's worker, is retried there, fails for good; its
    on_failure handler runs, and A's client gets the failure."""
    a, b = await cores(), await cores()
    worker, client = FakePeer("w", "worker"), FakePeer("client")
    b.connect(worker)
    specs = [spec_for(flaky, "Q", make_options(on_failure="cleanup", retry_policy="retry_once")),
             spec_for(cleanup, "Q", make_options(retry_policy="never"))]
    b.handle(worker, [Register([s.to_wire() for s in specs]), Credit(3)])
    await wait_until(lambda: a.registry.spec("Q", "flaky") is not None, what="the specs on A")
    a.connect(client)
    job = new_job_id()
    a.handle(client, [Submit(1, job, "Q", "flaky", [1], {})])
    error = {"type": "ValueError", "message": "no", "traceback": ""}
    for attempt in (1, 2):
        await wait_until(lambda n=attempt: len(worker.of(Assign)) == n,
                         what=f"attempt {attempt} on B")
        assert (worker.of(Assign)[-1].job, worker.of(Assign)[-1].attempt) == (job, attempt)
        b.handle(worker, [Done(job, attempt, "failed", None, error)])
    await wait_until(lambda: len(worker.of(Assign)) == 3, what="the on_failure handler")
    handler = worker.of(Assign)[2]
    assert handler.task == "cleanup" and handler.kwargs["job_failed"]["job_id"] == job
    b.handle(worker, [Done(handler.job, 1, "succeeded", None)])
    await wait_until(lambda: bool(client.of(Result)), what="the failure on A")
    assert client.of(Result)[0].status == "failed"
    stored = await a.store.get_job(job)
    assert stored is not None and (stored.attempts, stored.on_failure_job) == (2, handler.job)


async def test_a_manager_with_a_busy_worker_leaves_the_queue_to_the_others(
        cores: Cores) -> None:
    """A's one-slot worker is busy: A holds only a few jobs ahead for it; B's idle workers
    claim the rest of what A's client submits."""
    a, b = await cores(), await cores()
    slow, fast, client = FakePeer("slow", "worker"), FakePeer("fast", "worker"), FakePeer("c")
    a.connect(slow)
    a.handle(slow, [Register(REGISTER.tasks, capacity=1), Credit(1)])
    await serving(b, fast, credit=10)
    await knows_add(a)
    a.connect(client)
    jobs = [new_job_id() for _ in range(30)]
    a.handle(client, [submit(ref, job) for ref, job in enumerate(jobs)])
    assert len(slow.of(Assign)) == 1
    assert len(a.active) <= SLOTS_AHEAD  # the one running, and a few ready for it
    await wait_until(lambda: len(fast.of(Assign)) == 10, what="B's worker to be fed")
    assert not {f.job for f in fast.of(Assign)} & set(a.active)


async def test_a_manager_started_while_every_worker_is_paused_pauses_its_own(
        cores: Cores) -> None:
    a = await cores()
    a.toggle_workers(True)
    await a.background.drain()  # the pause is written
    b = await cores()
    assert b.dispatcher.paused
    b.toggle_workers(False)
    await wait_until(lambda: not a.dispatcher.paused, what="A to resume")


async def test_a_credential_made_on_one_manager_works_and_is_revoked_on_another(
        cores: Cores) -> None:
    """B learns of a credential added on A (the same key: both hold the secret); when A
    revokes it, the links under it close on both managers, and the others stay."""
    a, b = await cores(), await cores()
    token = await a.credentials.add("etl", "worker", ["Q"])
    _, key = auth.split_secret(token.encode())
    await wait_until(lambda: b.credentials.key("etl") == key, what="B to learn the credential")
    grant = b.credentials.grant("etl")
    assert grant == Grant("etl", "worker", frozenset({"Q"}))
    on_a, on_b, bystander = FakePeer("wa", "worker"), FakePeer("wb", "worker"), FakePeer("w")
    on_a.grant = grant
    on_b.grant = grant
    a.connect(on_a)
    b.connect(on_b)
    b.connect(bystander)
    assert await a.credentials.revoke("etl")
    assert [code for code, _ in on_a.closed] == [CLOSE_AUTH_FAILED]
    await wait_until(lambda: bool(on_b.closed), what="B to close the revoked credential's link")
    [(code, error)] = on_b.closed
    assert code == CLOSE_AUTH_FAILED and isinstance(error, AuthenticationError)
    assert str(error) == "credential 'etl' was revoked"
    assert b.credentials.key("etl") is None and bystander.closed == []
