"""The store contract, run against every backend; then what only SQLite promises."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from easyjobs.errors import ConfigurationError, SerializationError, StoreError
from easyjobs.jobs import TERMINAL, UNFINISHED, JobRecord, JobStatus, can_transition, new_job_id
from easyjobs.store import PostgresStore, SQLiteStore, Store, StoreUnwritable, open_store
from easyjobs.store.base import MAX_PAGE, CredentialRecord
from easyjobs.store.signals import Signals
from easyjobs.store.sqlite import (
    CLAIM,
    FREE_OWNED,
    HELD,
    HOLD,
    REQUEUE_RUNNING,
    SCHEMA_VERSION,
)

from ..utils import is_job_id

StoreFactory = Callable[[], Awaitable[Store]]
RejectInserts = Callable[[str], None]
SetPriority = Callable[[str, int], None]

BACKENDS = ["sqlite", "postgres"]
ERROR = {"type": "RuntimeError", "message": "boom", "traceback": "tb"}


def make_backend(backend: str, location: str) -> Store:
    if backend == "sqlite":
        return SQLiteStore(location)
    if backend == "postgres":
        return PostgresStore(location)
    raise AssertionError(f"no fixture for backend {backend}")


def reject_inserts_of(backend: str, location: str, job_id: str) -> None:
    """Make the database itself refuse to insert ``job_id``, as a failing constraint would."""
    assert is_job_id(job_id)  # it is spliced into DDL, which takes no parameters
    if backend == "sqlite":
        # A second connection, as another process would: the store's own sees the new schema.
        other = sqlite3.connect(location)
        with other:
            other.execute(
                f"CREATE TRIGGER reject_{job_id} BEFORE INSERT ON jobs WHEN NEW.id = '{job_id}'"
                " BEGIN SELECT RAISE(ABORT, 'rejected by trigger'); END"
            )
        other.close()
        return
    if backend == "postgres":
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(
                f"CREATE FUNCTION reject_{job_id}() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'rejected by trigger'; END $$"
            )
            conn.execute(
                f"CREATE TRIGGER reject_{job_id} BEFORE INSERT ON ej_jobs FOR EACH ROW"
                f" WHEN (NEW.id = '{job_id}') EXECUTE FUNCTION reject_{job_id}()"
            )
        return
    raise AssertionError(f"no insert rejecter for backend {backend}")


def set_priority_of(backend: str, location: str, job_id: str, priority: int) -> None:
    """Give a job a claim priority in the database itself (records do not carry one)."""
    if backend == "sqlite":
        other = sqlite3.connect(location)
        with other:
            other.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, job_id))
        other.close()
        return
    if backend == "postgres":
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("UPDATE ej_jobs SET priority = %s WHERE id = %s", (priority, job_id))
        return
    raise AssertionError(f"no priority setter for backend {backend}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where this test's stores live: a file in tmp_path, or a PostgreSQL schema of its own."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "jobs.db")


@pytest.fixture
async def store_factory(backend: str, location: str) -> AsyncIterator[StoreFactory]:
    """Opens stores of one backend on one shared location; closes them all afterwards."""
    made: list[Store] = []

    async def factory() -> Store:
        store = make_backend(backend, location)
        made.append(store)
        await store.open()
        return store

    yield factory
    for store in made:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()


@pytest.fixture
def reject_inserts(backend: str, location: str) -> RejectInserts:
    """Call with a job id to make the open store's database refuse to insert that job."""
    return lambda job_id: reject_inserts_of(backend, location, job_id)


@pytest.fixture
def set_priority(backend: str, location: str) -> SetPriority:
    """Call with a job id and a priority to set that job's claim priority."""
    return lambda job_id, priority: set_priority_of(backend, location, job_id, priority)


async def unfinished(store: Store) -> list[JobRecord]:
    """Every waiting, queued, running and retrying job, oldest first (created_at, then id)."""
    found: list[JobRecord] = []
    for status in UNFINISHED:
        before: str | None = None
        while True:
            page = await store.list_jobs(status=status, limit=MAX_PAGE, before=before)
            found += page
            if len(page) < MAX_PAGE:
                break
            before = page[-1].id
    return sorted(found, key=lambda record: (record.created_at, record.id))


def job(n: int = 0, **fields: Any) -> JobRecord:
    """A queued job; ``n`` orders it by created_at, ``fields`` override anything."""
    defaults: dict[str, Any] = {"id": new_job_id(), "queue": "default", "task": "add"}
    return JobRecord(**(defaults | {"created_at": 1000.0 + n} | fields))


StatusOp = Callable[[Store, str], Awaitable[Any]]


def finish_as(status: JobStatus) -> StatusOp:
    return lambda store, job_id: store.finish(job_id, status, None, None, at=50.0)


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

STATUS_OPS: dict[str, tuple[JobStatus, StatusOp]] = {
    "mark_running": (JobStatus.RUNNING, lambda s, i: s.mark_running(i, "w9", 2, at=50.0)),
    "requeue": (JobStatus.QUEUED, lambda s, i: s.requeue([i])),
    "retry": (JobStatus.RETRYING, lambda s, i: s.retry(i, ERROR, next_attempt_at=60.0)),
    **{f"finish_{status.value}": (status, finish_as(status)) for status in sorted(TERMINAL)},
}
"""Every status-changing operation, with the status it moves a job to."""


class TestStoreContract:
    async def test_add_then_get_round_trips_every_field(self, store: Store) -> None:
        """Every field of a job, bytes, nested maps, unicode and the trace context included,
        reads back as written (and as claimed)."""
        record = JobRecord(
            id=new_job_id(),
            queue="emails",
            task="send_ünïcode ✉",
            args=[1, -2.5, b"\x00\xffraw", "héllo", None, True, [1, [2, {"k": b"v"}]]],
            kwargs={"nested": {"a": {"b": [1, 2]}, "bytes": b"\x01"}, "emoji": "🚀"},
            status=JobStatus.QUEUED,
            attempts=3,
            worker="worker-1",
            parent=new_job_id(),
            result={"ok": [1, 2, b"x"]},
            error={"type": "ValueError", "message": "bad ✗", "traceback": "Traceback..."},
            created_at=1700000000.125,
            started_at=1700000001.5,
            finished_at=1700000002.75,
            dependencies=[new_job_id(), new_job_id()],
            on_failure_job=new_job_id(),
            handler_for=new_job_id(),
            next_attempt_at=1700000003.0625,
            trace={"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"},
        )
        assert await store.add_jobs([record]) == [True]
        assert await store.get_job(record.id) == record
        assert await store.claim("emails", record.task, 1, "m1") == [
            dataclasses.replace(record, owner="m1")]

    async def test_none_result_and_defaults_round_trip(self, store: Store) -> None:
        """A job with no result, error, worker, parent, links or timestamps reads back so."""
        record = job()
        await store.add_jobs([record])
        stored = await store.get_job(record.id)
        assert stored == record and stored.result is None and stored.started_at is None
        assert stored.dependencies == [] and stored.next_attempt_at is None

    async def test_a_start_for_an_owner_leaves_the_jobs_of_others_alone(
            self, store: Store) -> None:
        """``mark_running`` with an owner starts only a job that owner holds: one held by
        another manager, or free in the queue, keeps its row (a re-sent submit's copy)."""
        mine, theirs, free = job(1, owner="m1"), job(2, owner="m2"), job(3)
        await store.add_jobs([mine, theirs, free])
        for record in (mine, theirs, free):
            await store.mark_running(record.id, "w1", 1, at=2.0, owner="m1")
        rows = {r.id: r for r in await store.get_jobs([mine.id, theirs.id, free.id])}
        assert (rows[mine.id].status, rows[mine.id].worker) == (JobStatus.RUNNING, "w1")
        for other in (theirs, free):
            assert (rows[other.id].status, rows[other.id].worker) == (JobStatus.QUEUED, None)
        await store.mark_running(free.id, "w1", 1, at=3.0)  # no owner: any queued job
        stored = await store.get_job(free.id)
        assert stored is not None and stored.status is JobStatus.RUNNING

    async def test_get_unknown_job_returns_none(self, store: Store) -> None:
        """Asking for an id never added gives None."""
        assert await store.get_job(new_job_id()) is None

    async def test_duplicate_id_returns_false_and_keeps_the_original(self, store: Store) -> None:
        """Re-adding an id reports False and leaves the first record untouched."""
        first = job(args=[1])
        again = job(id=first.id, args=[2], task="other")
        assert await store.add_jobs([first]) == [True]
        assert await store.add_jobs([again, job()]) == [False, True]
        assert await store.get_job(first.id) == first

    async def test_duplicate_within_one_call(self, store: Store) -> None:
        """The second of two records with one id in one call is reported as a duplicate."""
        first = job(args=[1])
        assert await store.add_jobs([first, job(id=first.id, args=[2])]) == [True, False]
        assert await store.get_job(first.id) == first

    async def test_duplicates_across_calls_issued_together(self, store: Store) -> None:
        """Of adds called together, only the first call with an id inserts it, as if awaited."""
        first, other = job(1, args=[1]), job(2)
        calls = [
            store.add_jobs([first]),
            store.add_jobs([job(3, id=first.id, args=[2]), other, job(4, id=other.id)]),
            store.add_jobs([job(5, id=first.id, args=[3]), job(6, id=other.id)]),
        ]
        assert await asyncio.gather(*calls) == [[True], [False, True, False], [False, False]]
        assert await store.get_job(first.id) == first
        assert await store.get_job(other.id) == other
        assert await store.count_jobs() == {("default", "queued"): 2}

    async def test_status_changes_called_together_apply_one_after_another(
        self, store: Store
    ) -> None:
        """Changes called together act as if awaited in turn: the first start and outcome win."""
        a, b, c = job(1), job(2), job(3)
        await store.add_jobs([a, b, c])
        calls = [
            store.mark_running(a.id, "w1", 1, at=2.0),
            store.mark_running(b.id, "w1", 1, at=2.0),
            store.mark_running(a.id, "w2", 2, at=3.0),
            store.mark_running(c.id, "w3", 1, at=3.0),
        ]
        assert await asyncio.gather(*calls) == [None] * 4
        outcomes = [
            store.finish(a.id, JobStatus.SUCCEEDED, "first", None, at=4.0),
            store.finish(b.id, JobStatus.SUCCEEDED, "b", None, at=4.0),
            store.finish(a.id, JobStatus.SUCCEEDED, "second", None, at=5.0),
            store.retry(c.id, ERROR, next_attempt_at=9.0),
            store.retry(c.id, ERROR, next_attempt_at=10.0),
            store.finish(new_job_id(), JobStatus.SUCCEEDED, 1, None, at=5.0),
        ]
        assert await asyncio.gather(*outcomes) == [True, True, False, True, False, False]
        first, second, third = [await store.get_job(j.id) for j in (a, b, c)]
        assert first is not None and (first.worker, first.attempts, first.result) == (
            "w1", 1, "first")
        assert second is not None and second.result == "b"
        assert third is not None and (third.status, third.next_attempt_at) == (
            JobStatus.RETRYING, 9.0)
        store.requeue([c.id])
        store.requeue([c.id, a.id])
        assert await store.count_jobs() == {("default", "succeeded"): 2, ("default", "queued"): 1}

    async def test_mark_running_then_finish_succeeded(self, store: Store) -> None:
        """queued -> running -> succeeded records worker, attempt, result and both timestamps."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2000.0)
        running = await store.get_job(record.id)
        assert running is not None
        assert (running.status, running.worker, running.attempts, running.started_at) == (
            JobStatus.RUNNING,
            "w1",
            1,
            2000.0,
        )
        assert await store.finish(record.id, JobStatus.SUCCEEDED, [b"ok"], None, at=2001.0)
        done = await store.get_job(record.id)
        assert done is not None
        assert (done.status, done.result, done.error, done.finished_at, done.worker) == (
            JobStatus.SUCCEEDED,
            [b"ok"],
            None,
            2001.0,
            "w1",
        )

    async def test_finish_failed_records_error(self, store: Store) -> None:
        """A failed outcome stores the error map and no result."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2000.0)
        error = {"type": "KeyError", "message": "'x'", "traceback": "tb"}
        assert await store.finish(record.id, JobStatus.FAILED, None, error, at=2001.0)
        done = await store.get_job(record.id)
        assert done is not None
        assert (done.status, done.error, done.result) == (JobStatus.FAILED, error, None)

    async def test_queued_job_can_fail_without_running(self, store: Store) -> None:
        """queued -> failed is legal (e.g. no worker has the task)."""
        record = job()
        await store.add_jobs([record])
        error = {"type": "UnknownTask", "message": "add", "traceback": ""}
        assert await store.finish(record.id, JobStatus.FAILED, None, error, at=5.0)

    async def test_illegal_transitions_change_nothing(self, store: Store) -> None:
        """Moves the lifecycle table forbids (requeue queued, run a finished job) are no-ops."""
        record = job()
        await store.add_jobs([record])
        await store.requeue([record.id])
        assert await store.get_job(record.id) == record
        assert await store.finish(record.id, JobStatus.SUCCEEDED, 1, None, at=5.0)
        finished = await store.get_job(record.id)
        await store.mark_running(record.id, "w1", 1, at=6.0)
        await store.requeue([record.id])
        assert await store.get_job(record.id) == finished

    async def test_finish_on_terminal_or_unknown_job_returns_false(self, store: Store) -> None:
        """A second outcome, or one for an unknown job, is refused and changes nothing."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2.0)
        assert await store.finish(record.id, JobStatus.SUCCEEDED, "first", None, at=3.0)
        before = await store.get_job(record.id)
        err = {"type": "E", "message": "m", "traceback": ""}
        assert not await store.finish(record.id, JobStatus.FAILED, None, err, at=4.0)
        assert not await store.finish(record.id, JobStatus.SUCCEEDED, "second", None, at=4.0)
        assert await store.get_job(record.id) == before
        assert not await store.finish(new_job_id(), JobStatus.SUCCEEDED, 1, None, at=4.0)

    async def test_finish_needs_a_terminal_status(self, store: Store) -> None:
        """finish() with a non-terminal status is a programming error."""
        record = job()
        await store.add_jobs([record])
        with pytest.raises(ValueError):
            await store.finish(record.id, JobStatus.QUEUED, None, None, at=1.0)

    async def test_terminal_job_is_not_marked_running_again(self, store: Store) -> None:
        """mark_running on a finished job leaves it finished."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2.0)
        await store.finish(record.id, JobStatus.SUCCEEDED, 1, None, at=3.0)
        await store.mark_running(record.id, "w2", 2, at=4.0)
        done = await store.get_job(record.id)
        assert done is not None
        assert (done.status, done.worker, done.attempts) == (JobStatus.SUCCEEDED, "w1", 1)

    async def test_requeue_moves_running_waiting_and_retrying_jobs(self, store: Store) -> None:
        """requeue queues running, waiting and retrying jobs (worker and due time cleared) only."""
        running, queued, done = job(1), job(2), job(3)
        waiting = job(4, status=JobStatus.WAITING, dependencies=[running.id])
        retrying = job(5)
        await store.add_jobs([running, queued, done, waiting, retrying])
        await store.mark_running(running.id, "w1", 1, at=10.0)
        await store.mark_running(done.id, "w1", 1, at=10.0)
        await store.finish(done.id, JobStatus.SUCCEEDED, None, None, at=11.0)
        await store.mark_running(retrying.id, "w1", 1, at=10.0)
        await store.retry(retrying.id, ERROR, next_attempt_at=20.0)
        await store.requeue([running.id, queued.id, done.id, waiting.id, retrying.id, new_job_id()])
        back = await store.get_job(running.id)
        assert back is not None
        assert (back.status, back.worker, back.attempts) == (JobStatus.QUEUED, None, 1)
        assert await store.get_job(queued.id) == queued
        finished = await store.get_job(done.id)
        assert finished is not None and finished.status is JobStatus.SUCCEEDED
        assert await store.get_job(waiting.id) == job(
            id=waiting.id, created_at=waiting.created_at, dependencies=[running.id]
        )
        due = await store.get_job(retrying.id)
        assert due is not None
        assert (due.status, due.worker, due.next_attempt_at, due.attempts, due.error) == (
            JobStatus.QUEUED,
            None,
            None,
            1,
            ERROR,
        )
        await store.mark_running(running.id, "w2", 2, at=12.0)
        again = await store.get_job(running.id)
        assert again is not None
        assert (again.status, again.worker, again.attempts) == (JobStatus.RUNNING, "w2", 2)

    async def test_claim_takes_free_jobs_of_one_task_by_priority_then_fifo(
        self, store: Store, set_priority: SetPriority
    ) -> None:
        """claim owns the free queued jobs of its (queue, task): lowest priority value first,
        then created_at, then id; owned, unqueued and other tasks' jobs are not taken."""
        tie_b, tie_a = job(5, id="b" * 32), job(5, id="a" * 32)
        late, early, urgent, lazy = job(9), job(1), job(8), job(0)
        others = [job(0, task="other"), job(0, queue="q2"), job(0, owner="m0"),
                  job(0, status=JobStatus.WAITING), running := job(0)]
        await store.add_jobs([late, tie_b, urgent, early, tie_a, lazy, *others])
        await store.mark_running(running.id, "w1", 1, at=2.0)
        set_priority(urgent.id, -1)
        set_priority(lazy.id, 5)
        first = await store.claim("default", "add", 3, "m1")
        assert first == [job(8, id=urgent.id, owner="m1"), job(1, id=early.id, owner="m1"),
                         job(5, id=tie_a.id, owner="m1")]
        assert [await store.get_job(j.id) for j in first] == first
        rest = await store.claim("default", "add", 10, "m2")
        assert [(j.id, j.owner) for j in rest] == [
            (tie_b.id, "m2"), (late.id, "m2"), (lazy.id, "m2")]
        assert await store.claim("default", "add", 10, "m3") == []
        assert [j.id for j in await store.claim("default", "other", 10, "m3")] == [others[0].id]
        held = await store.get_job(others[2].id)
        assert held is not None and held.owner == "m0"
        assert await store.count_jobs() == {
            ("default", "queued"): 8, ("q2", "queued"): 1, ("default", "waiting"): 1,
            ("default", "running"): 1}

    async def test_claim_sees_writes_called_before_it_and_a_limit_below_one_writes_nothing(
        self, store: Store
    ) -> None:
        """A claim is ordered with the writes around it; limit < 1 answers [] at once."""
        records = [job(n) for n in range(5)]
        store.add_jobs(records)
        claimed = store.claim("default", "add", 2, "m1")
        store.finish(records[0].id, JobStatus.CANCELLED, None, None, at=3.0)
        later = store.claim("default", "add", 10, "m2")
        assert [j.id for j in await claimed] == [records[0].id, records[1].id]
        assert [j.id for j in await later] == [r.id for r in records[2:]]
        cancelled = await store.get_job(records[0].id)
        assert cancelled is not None and cancelled.owner is None  # finish frees it
        assert isinstance(store, SQLiteStore | PostgresStore)
        commits = store.commits
        for limit in (0, -1):
            none = store.claim("default", "add", limit, "m3")
            assert none.done() and await none == []
        assert store.commits == commits

    async def test_owner_is_stored_kept_through_status_changes_and_cleared_by_finish(
        self, store: Store
    ) -> None:
        """add_jobs, finish's children and fire_schedule store the owner given; mark_running,
        retry and requeue keep it; finish clears it."""
        record = job(1, owner="m1")
        assert await store.add_jobs([record]) == [True]
        assert await store.get_job(record.id) == record
        await store.mark_running(record.id, "w1", 1, at=2.0)
        assert await store.retry(record.id, ERROR, next_attempt_at=5.0)
        await store.requeue([record.id])
        await store.mark_running(record.id, "w1", 2, at=6.0)
        running = await store.get_job(record.id)
        assert running is not None and (running.status, running.owner) == (
            JobStatus.RUNNING, "m1")
        child = job(2, owner="m1", parent=record.id)
        assert await store.finish(record.id, JobStatus.SUCCEEDED, 1, None, at=7.0,
                                  children=[child])
        done = await store.get_job(record.id)
        assert done is not None and done.owner is None
        assert await store.get_job(child.id) == child
        ticked, dependency = job(3, owner="m2", status=JobStatus.WAITING), job(4, owner="m2")
        assert await store.fire_schedule("q", "tick", 60.0, ticked, [dependency])
        assert [await store.get_job(j.id) for j in (ticked, dependency)] == [ticked, dependency]

    async def test_adopt_owns_only_free_queued_jobs_in_the_order_asked(
        self, store: Store
    ) -> None:
        """adopt takes the given jobs that are queued with no owner, in the order of the ids;
        unknown, owned, waiting, running and finished jobs are left as they are."""
        free_a, free_b, owned = job(1), job(2), job(3, owner="m0")
        waiting, running, done = job(4, status=JobStatus.WAITING), job(5), job(6)
        await store.add_jobs([free_a, free_b, owned, waiting, running, done])
        await store.mark_running(running.id, "w1", 1, at=2.0)
        await store.finish(done.id, JobStatus.CANCELLED, None, None, at=2.0)
        untouched = [await store.get_job(j.id) for j in (owned, waiting, running, done)]
        asked = [free_b.id, new_job_id(), owned.id, waiting.id, free_a.id, running.id, done.id,
                 free_b.id]
        adopted = await store.adopt(asked, "m1")
        assert adopted == [job(2, id=free_b.id, owner="m1"), job(1, id=free_a.id, owner="m1")]
        assert [await store.get_job(j.id) for j in (free_b, free_a)] == adopted
        assert [await store.get_job(j.id) for j in (owned, waiting, running, done)] == untouched
        assert await store.adopt([free_a.id], "m2") == []
        assert await store.adopt([], "m2") == []
        assert await store.claim("default", "add", 10, "m2") == []

    async def test_get_jobs_reads_many_in_one_call(self, store: Store) -> None:
        """get_jobs returns the existing ones of the ids asked (repeats and unknown ids
        ignored), as committed, more than one query's worth too."""
        jobs = [job(n) for n in range(1200)]
        await store.add_jobs(jobs)
        await store.finish(jobs[3].id, JobStatus.CANCELLED, None, None, at=2.0)
        asked = [j.id for j in jobs] + [jobs[0].id, new_job_id()]
        found = {j.id: j for j in await store.get_jobs(asked)}
        assert set(found) == {j.id for j in jobs}
        assert found[jobs[3].id].status is JobStatus.CANCELLED
        assert found[jobs[5].id] == jobs[5]
        assert await store.get_jobs([]) == []

    async def test_an_announced_pause_is_remembered(self, store: Store) -> None:
        """paused() says what the last announced pause said; other news leaves it alone."""
        assert await store.paused() is False
        await store.announce(Signals(pause=True))
        await store.announce(Signals(tasks=True))
        assert await store.paused() is True
        await store.announce(Signals(pause=False))
        assert await store.paused() is False

    async def test_release_frees_only_queued_jobs_of_that_owner(self, store: Store) -> None:
        """release gives the owner's queued jobs back to the queue; others keep their owner."""
        mine, theirs, running = job(1, owner="m1"), job(2, owner="m2"), job(3, owner="m1")
        await store.add_jobs([mine, theirs, running])
        await store.mark_running(running.id, "w1", 1, at=2.0)
        await store.release([mine, theirs, running, job(4)], "m1")
        stored = [await store.get_job(j.id) for j in (mine, theirs, running)]
        assert [j.owner for j in stored if j is not None] == [None, "m2", "m1"]
        assert [j.id for j in await store.claim("default", "add", 10, "m3")] == [mine.id]

    async def test_queued_tasks_are_the_tasks_with_free_queued_jobs(self, store: Store) -> None:
        """Owned, running and finished jobs do not count; each pair is named once."""
        await store.add_jobs([
            job(1, task="a"), job(2, task="a"), job(3, queue="Q", task="a"),
            job(4, task="held", owner="m1"), job(5, task="waits", status=JobStatus.WAITING),
            job(6, task="ran"),
        ])
        (ran,) = await store.list_jobs(task="ran")
        await store.finish(ran.id, JobStatus.CANCELLED, None, None, at=2.0)
        assert await store.queued_tasks() == {("default", "a"), ("Q", "a")}

    async def test_queued_by_task_counts_owned_and_free_queued_jobs_and_the_oldest(
        self, store: Store
    ) -> None:
        """Per (queue, task): every queued job, free or owned, and the oldest created_at;
        running, waiting and finished jobs do not count, nor tasks without queued jobs."""
        running, done = job(0, task="a"), job(0, task="ran")
        await store.add_jobs([
            job(3, task="a"), job(2, task="a", owner="m1"), job(5, task="a"), running,
            job(4, queue="Q", task="a", owner="m2"), job(1, task="waits", status=JobStatus.WAITING),
            done,
        ])
        await store.mark_running(running.id, "w1", 1, at=2.0)
        await store.finish(done.id, JobStatus.CANCELLED, None, None, at=2.0)
        assert await store.queued_by_task() == {("default", "a"): (3, 1002.0),
                                               ("Q", "a"): (1, 1004.0)}

    async def test_commits_are_counted_with_their_duration_and_writes(self, store: Store) -> None:
        """Every commit adds one observation to both histograms; a batch counts its writes."""
        durations, sizes = store.commit_stats.snapshot()
        before_commits, before_writes = durations.cumulative[-1][1], sizes.total
        await asyncio.gather(*(store.add_jobs([job(n)]) for n in range(5)))
        durations, sizes = store.commit_stats.snapshot()
        commits = durations.cumulative[-1][1] - before_commits
        assert 1 <= commits <= 5
        assert sizes.cumulative[-1][1] - before_commits == commits
        assert sizes.total - before_writes == 5
        assert durations.total > 0
        assert [n for _, n in durations.cumulative] == sorted(n for _, n in durations.cumulative)

    async def test_take_back_requeues_running_frees_queued_and_holds_the_rest(
        self, store: Store
    ) -> None:
        """take_back requeues running jobs (worker and owner cleared, attempts kept), frees
        owned queued jobs, and owns waiting and retrying jobs, returning them oldest first."""
        running, queued_owned, queued_free = job(1, owner="m0"), job(2, owner="m0"), job(3)
        waiting_b = job(5, id="b" * 32, status=JobStatus.WAITING, owner="m0")
        waiting_a = job(5, id="a" * 32, status=JobStatus.WAITING)
        retrying, done = job(4, owner="m0"), job(0, owner="m0")
        await store.add_jobs(
            [waiting_b, running, queued_owned, queued_free, waiting_a, retrying, done])
        await store.mark_running(running.id, "w1", 2, at=10.0)
        await store.mark_running(retrying.id, "w1", 1, at=10.0)
        await store.retry(retrying.id, ERROR, next_attempt_at=12.0)
        await store.mark_running(done.id, "w1", 1, at=10.0)
        await store.finish(done.id, JobStatus.FAILED, None, ERROR, at=11.0)
        finished = await store.get_job(done.id)
        requeued, held = await store.take_back("m1")
        assert requeued == 1
        assert [(j.id, j.status, j.owner) for j in held] == [
            (retrying.id, JobStatus.RETRYING, "m1"), (waiting_a.id, JobStatus.WAITING, "m1"),
            (waiting_b.id, JobStatus.WAITING, "m1")]
        assert held[0].next_attempt_at == 12.0 and held[0].error == ERROR
        assert [await store.get_job(j.id) for j in held] == held
        back = await store.get_job(running.id)
        assert back is not None
        assert (back.status, back.worker, back.owner, back.attempts) == (
            JobStatus.QUEUED, None, None, 2)
        assert await store.get_job(queued_free.id) == queued_free
        assert await store.get_job(done.id) == finished
        assert await store.count_jobs() == {
            ("default", "queued"): 3, ("default", "waiting"): 2, ("default", "retrying"): 1,
            ("default", "failed"): 1}
        claimed = await store.claim("default", "add", 10, "m1")
        assert [j.id for j in claimed] == [running.id, queued_owned.id, queued_free.id]
        await store.leave("m1")  # on a shared store, m1's lease would keep its jobs with it
        requeued, held_again = await store.take_back("m2")
        assert requeued == 0 and [(j.id, j.owner) for j in held_again] == [
            (j.id, "m2") for j in held]
        reclaimed = await store.claim("default", "add", 10, "m3")  # m1's claims were freed
        assert [(j.id, j.owner) for j in reclaimed] == [(j.id, "m3") for j in claimed]

    async def test_operations_apply_in_issue_order(self, store: Store) -> None:
        """Calls issued together without awaiting in between are applied in the order issued."""
        record = job()
        results = await asyncio.gather(
            store.add_jobs([record]),
            store.mark_running(record.id, "w1", 1, at=2.0),
            store.finish(record.id, JobStatus.SUCCEEDED, "r", None, at=3.0),
            store.get_job(record.id),
        )
        assert results[0] == [True] and results[2] is True
        assert results[3] is not None and results[3].status is JobStatus.SUCCEEDED

    async def test_writes_apply_in_call_order_whatever_is_awaited_first(
        self, store: Store
    ) -> None:
        """A write is queued when its method is called: awaiting the last call first is fine."""
        record = job()
        added = store.add_jobs([record])
        started = store.mark_running(record.id, "w1", 1, at=2.0)
        finished = store.finish(record.id, JobStatus.SUCCEEDED, "r", None, at=3.0)
        assert await finished is True
        await started
        assert await added == [True]
        done = await store.get_job(record.id)
        assert done is not None and (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)

    async def test_unawaited_writes_still_happen_in_order(self, store: Store) -> None:
        """Writes nobody awaits are applied, in call order, before a read called after them."""
        records = [job(n) for n in range(3)]
        store.add_jobs(records)
        for record in records:
            store.mark_running(record.id, "w1", 1, at=2.0)
        store.requeue([records[0].id])
        store.finish(records[1].id, JobStatus.FAILED, None, ERROR, at=3.0)
        seen = store.get_job(records[0].id), store.count_jobs(), store.list_jobs()
        first, counts, listed = await asyncio.gather(*seen)
        assert first is not None and (first.status, first.attempts) == (JobStatus.QUEUED, 1)
        assert counts == {("default", "queued"): 1, ("default", "failed"): 1,
                          ("default", "running"): 1}
        assert [j.status for j in listed] == [
            JobStatus.RUNNING, JobStatus.FAILED, JobStatus.QUEUED]

    async def test_a_heavy_read_burst_delays_neither_writes_nor_lookups(
        self, store: Store
    ) -> None:
        """With 200 full-table listings in flight, a write and a lookup called after them finish
        before the listings all have: reads do not queue behind each other or the writer."""
        await store.add_jobs([job(n) for n in range(20_000)])
        heavy = [store.list_jobs(queue="nowhere", limit=MAX_PAGE) for _ in range(200)]
        record = job(30_000)
        added, found = store.add_jobs([record]), store.get_job(record.id)
        assert await found == record and await added == [True]
        assert await store.count_jobs() == {("default", "queued"): 20_001}
        assert not all(listing.done() for listing in heavy)
        assert await asyncio.gather(*heavy) == [[]] * 200

    async def test_state_survives_close_and_reopen(self, store_factory: StoreFactory) -> None:
        """Everything committed is there after the store is closed and opened again."""
        first = await store_factory()
        running, finished, queued = job(1, args=[b"x"]), job(2), job(3, kwargs={"k": "v"})
        await first.add_jobs([running, finished, queued])
        await first.mark_running(running.id, "w1", 1, at=10.0)
        await first.mark_running(finished.id, "w1", 1, at=10.0)
        await first.finish(finished.id, JobStatus.SUCCEEDED, {"r": 1}, None, at=11.0)
        await first.save_tasks([("default", "add", {"timeout": 5})])
        waiting = job(4, status=JobStatus.WAITING, dependencies=[queued.id])
        handler = job(5, task="alert", handler_for=running.id)
        await first.add_jobs([waiting])
        await first.finish(
            running.id,
            JobStatus.FAILED,
            None,
            ERROR,
            at=12.0,
            children=[handler],
            on_failure_job=handler.id,
        )
        await first.fire_schedule("default", "tick", 60.0, ticked := job(6, task="tick"))
        ids = (running.id, finished.id, queued.id, waiting.id, handler.id, ticked.id)
        expected = [await first.get_job(job_id) for job_id in ids]
        await first.close()

        second = await store_factory()
        assert [await second.get_job(job_id) for job_id in ids] == expected
        assert [j.id for j in await unfinished(second)] == list(ids[2:])
        assert await second.load_tasks() == [("default", "add", {"timeout": 5})]
        assert await second.load_schedules() == {("default", "tick"): 60.0}

    async def test_concurrent_adds_commit_in_few_transactions(self, store: Store) -> None:
        """2,000 concurrent add_jobs calls all commit, sharing far fewer than 2,000 transactions."""
        jobs = [job(n) for n in range(2000)]
        assert isinstance(store, SQLiteStore | PostgresStore)
        before = store.commits
        results = await asyncio.gather(*(store.add_jobs([j]) for j in jobs))
        assert results == [[True]] * 2000
        assert store.commits - before <= 200, store.commits - before
        assert [j.id for j in await unfinished(store)] == [j.id for j in jobs]

    async def test_unencodable_value_raises_serialization_error(self, store: Store) -> None:
        """A value msgpack cannot carry fails at the call, writes nothing; the store serves on."""
        bad = job(kwargs={"when": object()})
        with pytest.raises(SerializationError):
            await store.add_jobs([job(), bad])
        assert await unfinished(store) == []
        good = job()
        await store.add_jobs([good])
        await store.mark_running(good.id, "w1", 1, at=1.0)
        with pytest.raises(SerializationError):
            await store.finish(good.id, JobStatus.SUCCEEDED, {1, 2}, None, at=2.0)
        with pytest.raises(SerializationError):
            await store.save_tasks([("default", "add", {"bad": object()})])
        assert await store.finish(good.id, JobStatus.SUCCEEDED, 3, None, at=2.0)

    async def test_save_tasks_upserts(self, store: Store) -> None:
        """save_tasks inserts new (queue, name) pairs and replaces the spec of existing ones."""
        assert await store.load_tasks() == []
        await store.save_tasks([("q2", "b", {"v": 1}), ("q1", "a", {"v": 1, "raw": b"\x00"})])
        await store.save_tasks([("q2", "b", {"v": 2, "nested": {"x": [1]}}), ("q1", "c", {})])
        assert await store.load_tasks() == [
            ("q1", "a", {"v": 1, "raw": b"\x00"}),
            ("q1", "c", {}),
            ("q2", "b", {"v": 2, "nested": {"x": [1]}}),
        ]

    async def test_count_jobs_groups_by_queue_and_status(self, store: Store) -> None:
        """count_jobs counts every job, finished ones included, per (queue, status)."""
        assert await store.count_jobs() == {}
        a, b, c = job(1, queue="q1"), job(2, queue="q1"), job(3, queue="q2")
        await store.add_jobs([a, b, c])
        await store.mark_running(a.id, "w1", 1, at=1.0)
        assert await store.finish(a.id, JobStatus.SUCCEEDED, None, None, at=2.0)
        assert await store.count_jobs() == {
            ("q1", "succeeded"): 1, ("q1", "queued"): 1, ("q2", "queued"): 1}

    async def test_counts_stay_exact_through_children_duplicates_and_failures(
        self, store: Store, reject_inserts: RejectInserts
    ) -> None:
        """count_jobs matches a recount after duplicates, children, fires and refused writes."""

        async def recount() -> dict[tuple[str, str], int]:
            counts: dict[tuple[str, str], int] = {}
            for record in await store.list_jobs(limit=MAX_PAGE):
                key = (record.queue, record.status.value)
                counts[key] = counts.get(key, 0) + 1
            return counts

        parent, other = job(1, queue="a"), job(2, queue="b", status=JobStatus.WAITING)
        await store.add_jobs([parent, other, job(3, id=parent.id, queue="b")])
        await store.mark_running(parent.id, "w1", 1, at=2.0)
        child, handler, rejected = job(4, queue="b"), job(5, queue="c"), job(6, queue="c")
        reject_inserts(rejected.id)
        with pytest.raises(StoreError):
            await store.finish(parent.id, JobStatus.FAILED, None, ERROR, at=3.0,
                               children=[handler, rejected])
        with pytest.raises(StoreError):
            await store.add_jobs([job(7, queue="c"), rejected])
        assert await store.count_jobs() == await recount() == {
            ("a", "running"): 1, ("b", "waiting"): 1}
        assert await store.finish(parent.id, JobStatus.SUCCEEDED, 1, None, at=3.0,
                                  children=[child, job(8, id=other.id)])
        assert not await store.finish(parent.id, JobStatus.FAILED, None, ERROR, at=4.0,
                                      children=[handler])
        assert await store.fire_schedule("c", "tick", 60.0, handler)
        assert not await store.fire_schedule("c", "tick", 60.0, job(9, queue="c"))
        await store.requeue([other.id])
        assert await store.count_jobs() == await recount() == {
            ("a", "succeeded"): 1, ("b", "queued"): 2, ("c", "queued"): 1}

    async def test_a_writable_store_answers_the_probe(self, store: Store) -> None:
        """A healthy store is writable, has no error, and its probe write succeeds."""
        assert store.writable and store.last_error is None
        await store.probe()
        assert store.writable and store.last_error is None

    async def test_calls_after_close_raise_store_error(self, store: Store) -> None:
        """Once closed, every call raises StoreError and close() may be repeated."""
        await store.close()
        await store.close()
        with pytest.raises(StoreError, match="store is closed"):
            await store.add_jobs([job()])
        with pytest.raises(StoreError, match="store is closed"):
            await store.get_job(new_job_id())
        with pytest.raises(StoreError, match="store is closed"):
            await store.probe()
        for call in (store.claim("default", "add", 1, "m1"), store.claim("default", "add", 0, "m1"),
                     store.adopt([new_job_id()], "m1"), store.adopt([], "m1"),
                     store.take_back("m1")):
            with pytest.raises(StoreError, match="store is closed"):
                await call

    async def test_close_drains_calls_already_issued(self, store_factory: StoreFactory) -> None:
        """Calls issued before close() still commit; close() returns after them."""
        first = await store_factory()
        jobs = [job(n) for n in range(50)]
        # gather starts its tasks in order, so every add is queued before close() runs.
        *added, _ = await asyncio.gather(*(first.add_jobs([j]) for j in jobs), first.close())
        assert added == [[True]] * 50
        second = await store_factory()
        assert [j.id for j in await unfinished(second)] == [j.id for j in jobs]

    async def test_cancelled_caller_does_not_break_the_store(self, store: Store) -> None:
        """Cancelling a caller mid-call leaves the store serving; the write itself still lands."""
        record = job()
        pending = asyncio.ensure_future(store.add_jobs([record]))
        # Runs right after the task's first step, which queued the write and began waiting.
        asyncio.get_running_loop().call_soon(pending.cancel)
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert await store.get_job(record.id) == record

    async def test_add_jobs_keeps_the_status_given(self, store: Store) -> None:
        """add_jobs inserts each record with its own status, e.g. waiting with its dependencies."""
        first, second = job(1), job(2)
        dependent = job(3, status=JobStatus.WAITING, dependencies=[first.id, second.id])
        assert await store.add_jobs([first, second, dependent]) == [True, True, True]
        assert await store.get_job(dependent.id) == dependent
        await store.mark_running(dependent.id, "w1", 1, at=4.0)
        assert await store.get_job(dependent.id) == dependent

    async def test_add_jobs_is_all_or_nothing(
        self, store: Store, reject_inserts: RejectInserts
    ) -> None:
        """When the database refuses one record of a call, none of that call's records land."""
        dependency, dependent = job(1), job(2, status=JobStatus.WAITING)
        dependent.dependencies = [dependency.id]
        reject_inserts(dependent.id)
        with pytest.raises(StoreError):
            await store.add_jobs([dependency, dependent])
        assert await store.get_job(dependency.id) is None
        assert await store.add_jobs([dependency]) == [True]

    async def test_retry_records_the_attempt_and_the_due_time(self, store: Store) -> None:
        """retry moves a running job to retrying with the error and due time, worker cleared."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2.0)
        assert await store.retry(record.id, ERROR, next_attempt_at=9.5)
        retrying = await store.get_job(record.id)
        assert retrying is not None
        assert (retrying.status, retrying.error, retrying.next_attempt_at) == (
            JobStatus.RETRYING,
            ERROR,
            9.5,
        )
        assert (retrying.worker, retrying.attempts, retrying.started_at) == (None, 1, 2.0)
        assert not await store.retry(record.id, ERROR, next_attempt_at=20.0)
        assert await store.get_job(record.id) == retrying
        assert not await store.retry(new_job_id(), ERROR, next_attempt_at=20.0)

    async def test_retrying_job_runs_again_after_requeue(self, store: Store) -> None:
        """retrying -> queued -> running (attempt 2) -> succeeded, the due time cleared."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2.0)
        await store.retry(record.id, ERROR, next_attempt_at=9.5)
        assert not await store.finish(record.id, JobStatus.SUCCEEDED, 1, None, at=3.0)
        await store.requeue([record.id])
        await store.mark_running(record.id, "w2", 2, at=10.0)
        assert await store.finish(record.id, JobStatus.SUCCEEDED, "ok", None, at=11.0)
        done = await store.get_job(record.id)
        assert done is not None
        assert (done.status, done.attempts, done.worker, done.result, done.next_attempt_at) == (
            JobStatus.SUCCEEDED,
            2,
            "w2",
            "ok",
            None,
        )

    @pytest.mark.parametrize("start", list(JobStatus))
    @pytest.mark.parametrize("op", list(STATUS_OPS))
    async def test_status_changes_follow_the_lifecycle_table(
        self, store: Store, start: JobStatus, op: str
    ) -> None:
        """Each operation moves a job exactly when TRANSITIONS allows it, else changes nothing."""
        record = job(status=start)
        await store.add_jobs([record])
        target, call = STATUS_OPS[op]
        outcome = await call(store, record.id)
        allowed = can_transition(start, target)
        after = await store.get_job(record.id)
        assert after is not None and after.status is (target if allowed else start)
        if not allowed:
            assert after == record
        if outcome is not None:
            assert outcome is allowed
        assert await store.count_jobs() == {("default", after.status.value): 1}

    async def test_cancel_clears_the_due_time(self, store: Store) -> None:
        """Cancelling a retrying job finishes it as cancelled with no next attempt pending."""
        record = job()
        await store.add_jobs([record])
        await store.mark_running(record.id, "w1", 1, at=2.0)
        await store.retry(record.id, ERROR, next_attempt_at=9.5)
        assert await store.finish(record.id, JobStatus.CANCELLED, None, None, at=3.0)
        cancelled = await store.get_job(record.id)
        assert cancelled is not None
        assert (cancelled.status, cancelled.finished_at, cancelled.next_attempt_at) == (
            JobStatus.CANCELLED,
            3.0,
            None,
        )
        await store.requeue([record.id])
        assert await store.get_job(record.id) == cancelled

    async def test_finish_creates_children_with_the_outcome(self, store: Store) -> None:
        """A succeeded finish inserts its run_after children in the same call, as given."""
        parent = job(1)
        await store.add_jobs([parent])
        await store.mark_running(parent.id, "w1", 1, at=2.0)
        children = [
            job(2, task="transform", kwargs={"data": [1, 2]}, parent=parent.id),
            job(3, task="load", args=[[1, 2]], parent=parent.id),
        ]
        assert await store.finish(
            parent.id, JobStatus.SUCCEEDED, {"data": [1, 2]}, None, at=3.0, children=children
        )
        assert [await store.get_job(child.id) for child in children] == children
        done = await store.get_job(parent.id)
        assert done is not None and done.on_failure_job is None
        assert [j.id for j in await unfinished(store)] == [c.id for c in children]

    async def test_finish_failed_links_the_failure_handler(self, store: Store) -> None:
        """A failed finish inserts the on_failure job and stores its id on the failed job."""
        failed = job(1)
        handler = job(2, task="alert", kwargs={"job_failed": {"id": failed.id}})
        handler.handler_for = failed.id
        await store.add_jobs([failed])
        await store.mark_running(failed.id, "w1", 2, at=2.0)
        assert await store.finish(
            failed.id,
            JobStatus.FAILED,
            None,
            ERROR,
            at=3.0,
            children=[handler],
            on_failure_job=handler.id,
        )
        stored = await store.get_job(failed.id)
        assert stored is not None
        assert (stored.status, stored.error, stored.on_failure_job) == (
            JobStatus.FAILED,
            ERROR,
            handler.id,
        )
        assert await store.get_job(handler.id) == handler

    async def test_waiting_job_fails_when_a_dependency_fails(self, store: Store) -> None:
        """waiting -> failed is legal and may create the dependent's failure handler."""
        dependent = job(1, status=JobStatus.WAITING, dependencies=[new_job_id()])
        handler = job(2, task="alert", handler_for=dependent.id)
        await store.add_jobs([dependent])
        assert await store.finish(
            dependent.id,
            JobStatus.FAILED,
            None,
            ERROR,
            at=3.0,
            children=[handler],
            on_failure_job=handler.id,
        )
        assert await store.get_job(handler.id) == handler

    async def test_refused_finish_creates_no_child(self, store: Store) -> None:
        """A finish the table refuses (already terminal, unknown job) inserts no child."""
        record = job(1)
        await store.add_jobs([record])
        assert await store.finish(record.id, JobStatus.CANCELLED, None, None, at=2.0)
        before = await store.get_job(record.id)
        child, handler = job(2), job(3)
        assert not await store.finish(
            record.id,
            JobStatus.FAILED,
            None,
            ERROR,
            at=3.0,
            children=[child, handler],
            on_failure_job=handler.id,
        )
        assert not await store.finish(
            new_job_id(), JobStatus.SUCCEEDED, 1, None, at=3.0, children=[child]
        )
        assert await store.get_job(record.id) == before
        assert await store.get_job(child.id) is None and await store.get_job(handler.id) is None

    async def test_finish_leaves_an_existing_child_id_alone(self, store: Store) -> None:
        """A child whose id already exists is skipped, keeping the original; the finish stands."""
        parent, existing = job(1), job(2, args=["original"])
        await store.add_jobs([parent, existing])
        await store.mark_running(parent.id, "w1", 1, at=2.0)
        again, fresh = job(3, id=existing.id, args=["again"]), job(4)
        assert await store.finish(
            parent.id, JobStatus.SUCCEEDED, 1, None, at=3.0, children=[again, fresh]
        )
        assert await store.get_job(existing.id) == existing
        assert await store.get_job(fresh.id) == fresh

    async def test_finish_is_atomic_with_its_children(
        self, store: Store, reject_inserts: RejectInserts
    ) -> None:
        """If a child cannot be inserted, the outcome is not recorded either: all or nothing."""
        parent = job(1)
        await store.add_jobs([parent])
        await store.mark_running(parent.id, "w1", 1, at=2.0)
        running = await store.get_job(parent.id)
        first, rejected, handler = job(2), job(3), job(4)
        reject_inserts(rejected.id)
        with pytest.raises(StoreError):
            await store.finish(
                parent.id,
                JobStatus.FAILED,
                None,
                ERROR,
                at=3.0,
                children=[first, rejected, handler],
                on_failure_job=handler.id,
            )
        assert await store.get_job(parent.id) == running
        for child in (first, rejected, handler):
            assert await store.get_job(child.id) is None
        # The store serves on, and the outcome can still be recorded without the bad child.
        assert await store.finish(
            parent.id,
            JobStatus.FAILED,
            None,
            ERROR,
            at=4.0,
            children=[first, handler],
            on_failure_job=handler.id,
        )
        assert [j.id for j in await unfinished(store)] == [first.id, handler.id]

    async def test_finish_children_must_be_encodable(self, store: Store) -> None:
        """A child msgpack cannot carry fails the call before anything is written."""
        parent = job(1)
        await store.add_jobs([parent])
        await store.mark_running(parent.id, "w1", 1, at=2.0)
        running = await store.get_job(parent.id)
        with pytest.raises(SerializationError):
            await store.finish(
                parent.id,
                JobStatus.SUCCEEDED,
                1,
                None,
                at=3.0,
                children=[job(2, kwargs={"bad": object()})],
            )
        assert await store.get_job(parent.id) == running

    async def test_list_jobs_pages_newest_first_with_filters(self, store: Store) -> None:
        """Walking 25 matching jobs in pages of 10 yields each once, newest first, ties by id."""
        # Three jobs share each created_at, so pages break inside ties.
        matching = [job(n // 3, queue="emails", task="send") for n in range(25)]
        others = [
            *(job(n, queue="other", task="send") for n in range(10)),
            *(job(n, queue="emails", task="other") for n in range(10)),
            *(job(n, queue="emails", task="send", status=JobStatus.WAITING) for n in range(10)),
        ]
        await store.add_jobs([*others[:15], *matching, *others[15:]])
        expected = sorted(matching, key=lambda j: (j.created_at, j.id), reverse=True)
        filters: dict[str, Any] = {"queue": "emails", "task": "send", "status": JobStatus.QUEUED}
        pages: list[list[JobRecord]] = []
        before: str | None = None
        while not pages or len(pages[-1]) == 10:
            pages.append(await store.list_jobs(**filters, limit=10, before=before))
            before = pages[-1][-1].id if pages[-1] else None
        assert [len(page) for page in pages] == [10, 10, 5]
        assert [j for page in pages for j in page] == expected

        everything = await store.list_jobs(limit=1000)
        assert len(everything) == 55
        assert everything == sorted(everything, key=lambda j: (j.created_at, j.id), reverse=True)
        assert len(await store.list_jobs(status=JobStatus.WAITING)) == 10
        assert len(await store.list_jobs(queue="other")) == 10
        assert len(await store.list_jobs(task="other", queue="emails")) == 10
        assert await store.list_jobs(queue="nowhere") == []

    async def test_list_jobs_cursor_is_a_position(self, store: Store) -> None:
        """The cursor need not match the filters; an unknown cursor id gives an empty page."""
        jobs = [job(n, queue="a" if n % 2 else "b") for n in range(6)]
        await store.add_jobs(jobs)
        after_b4 = await store.list_jobs(queue="a", before=jobs[4].id)
        assert [j.id for j in after_b4] == [jobs[3].id, jobs[1].id]
        assert await store.list_jobs(before=jobs[0].id) == []
        assert await store.list_jobs(before=new_job_id()) == []

    async def test_list_jobs_clamps_the_limit(self, store: Store) -> None:
        """limit is clamped to 1..1000."""
        await store.add_jobs([job(n) for n in range(1005)])
        assert len(await store.list_jobs(limit=0)) == 1
        assert len(await store.list_jobs(limit=-3)) == 1
        assert len(await store.list_jobs(limit=5000)) == 1000
        assert len(await store.list_jobs()) == 50

    async def test_list_jobs_keeps_the_queues_given(self, store: Store) -> None:
        """``queues`` keeps the jobs of those queues, with the other filters and the cursor;
        an empty collection keeps none."""
        jobs = [job(n, queue=("a", "b", "c")[n % 3]) for n in range(9)]
        await store.add_jobs(jobs)
        newest_first = list(reversed(jobs))
        assert await store.list_jobs(queues=["a", "c"]) == [
            j for j in newest_first if j.queue in ("a", "c")]
        assert await store.list_jobs(queues={"b"}) == [j for j in newest_first if j.queue == "b"]
        assert await store.list_jobs(queues=["a", "c"], queue="c") == [
            j for j in newest_first if j.queue == "c"]
        assert await store.list_jobs(queues=["a"], queue="b") == []
        assert await store.list_jobs(queues=["a", "b"], before=jobs[4].id) == [
            jobs[3], jobs[1], jobs[0]]
        assert await store.list_jobs(queues=["nowhere"]) == []
        assert await store.list_jobs(queues=[]) == []
        assert len(await store.list_jobs(queues=None)) == 9

    async def test_credentials_are_added_loaded_and_revoked(
            self, store_factory: StoreFactory) -> None:
        """A credential reads back as written (bytes salt, queues or None for every queue),
        from another store too; a taken name and an unknown revoke are refused."""
        store = await store_factory()
        worker = CredentialRecord("etl-worker", "worker", ("A", "b q"), bytes(range(16)),
                                  1700000000.125)
        admin = CredentialRecord("Ops_1", "admin", None, b"\xff" * 16, 1700000001.5)
        assert await store.load_credentials() == []
        assert await store.add_credential(worker)
        assert await store.add_credential(admin)
        assert not await store.add_credential(
            CredentialRecord("etl-worker", "client", ("Z",), bytes(16), 1.0))
        assert await store.load_credentials() == [admin, worker]  # by name
        other = await store_factory()
        assert await other.load_credentials() == [admin, worker]
        assert await other.revoke_credential("etl-worker")
        assert not await other.revoke_credential("etl-worker")
        assert not await store.revoke_credential("never")
        assert await store.load_credentials() == [admin]
        again = CredentialRecord("etl-worker", "worker", ("A",), bytes(16), 1700000002.0)
        assert await store.add_credential(again)  # a revoked name may be made again
        assert await other.load_credentials() == [admin, again]

    async def test_fire_schedule_once_per_tick(self, store: Store) -> None:
        """A tick fires once; the same or an older tick is refused, a newer one fires."""
        assert await store.load_schedules() == {}
        first, same, older, newer = job(1), job(2), job(3), job(4)
        assert await store.fire_schedule("q", "report", 120.0, first)
        assert not await store.fire_schedule("q", "report", 120.0, same)
        assert not await store.fire_schedule("q", "report", 60.0, older)
        assert await store.load_schedules() == {("q", "report"): 120.0}
        assert await store.fire_schedule("q", "report", 180.0, newer)
        assert await store.fire_schedule("q", "other", 60.0, job(5))
        assert await store.load_schedules() == {("q", "report"): 180.0, ("q", "other"): 60.0}
        assert await store.get_job(first.id) == first and await store.get_job(newer.id) == newer
        assert await store.get_job(same.id) is None and await store.get_job(older.id) is None

    async def test_concurrent_fires_of_one_tick_make_one_job(self, store: Store) -> None:
        """Many fires of the same tick issued at once create exactly one job."""
        jobs = [job(n) for n in range(20)]
        fired = await asyncio.gather(*(store.fire_schedule("q", "t", 60.0, j) for j in jobs))
        assert fired == [True] + [False] * 19
        assert [j.id for j in await unfinished(store)] == [jobs[0].id]

    async def test_fire_schedule_inserts_dependencies_with_the_job(self, store: Store) -> None:
        """A fired job's run_before dependencies are inserted in the same transaction."""
        dependent = job(1, task="report", status=JobStatus.WAITING)
        deps = [job(2, task="prepare", parent=dependent.id), job(3, task="fetch")]
        dependent.dependencies = [d.id for d in deps]
        assert await store.fire_schedule("q", "report", 60.0, dependent, deps)
        assert not await store.fire_schedule("q", "report", 60.0, job(4), [job(5)])
        ids = [j.id for j in await unfinished(store)]
        assert ids == [dependent.id, *(d.id for d in deps)]

    async def test_fire_schedule_survives_reopen(self, store_factory: StoreFactory) -> None:
        """After a restart the last fire time is loaded and the same tick is not fired again."""
        first = await store_factory()
        fired = job(1, task="report")
        assert await first.fire_schedule("q", "report", 120.0, fired)
        await first.close()
        second = await store_factory()
        assert await second.load_schedules() == {("q", "report"): 120.0}
        assert not await second.fire_schedule("q", "report", 120.0, job(2))
        assert await second.fire_schedule("q", "report", 180.0, job(3))
        assert [j.id for j in await unfinished(second)][0] == fired.id

    async def test_fire_schedule_is_atomic_with_its_job(
        self, store: Store, reject_inserts: RejectInserts
    ) -> None:
        """If the job cannot be inserted, the tick is not recorded as fired either."""
        rejected = job(1)
        reject_inserts(rejected.id)
        with pytest.raises(StoreError):
            await store.fire_schedule("q", "report", 120.0, rejected)
        assert await store.load_schedules() == {}
        retried = job(2)
        assert await store.fire_schedule("q", "report", 120.0, retried)
        assert await store.get_job(retried.id) == retried


CLAIM_PLAN = [
    "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)",
    "LIST SUBQUERY 1",
    "SEARCH jobs USING INDEX jobs_claim (queue=? AND task=?)",
]
"""A claim: the first free jobs of one task from the claim index in order (no scan, no sort),
then each row by its rowid."""


def plan_of(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    """What SQLite's EXPLAIN QUERY PLAN says it would do for ``sql``, one line per step."""
    return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


class TestSQLiteStore:
    async def test_database_failure_is_a_store_error_and_spares_neighbours(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A real SQLite failure is a StoreError without argument values; batch-mates commit."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path)
        await store.open()
        try:
            with sqlite3.connect(path) as other:  # another process's trigger rejects one queue
                other.execute(
                    "CREATE TRIGGER reject BEFORE INSERT ON jobs WHEN NEW.queue = 'poison'"
                    " BEGIN SELECT RAISE(ABORT, 'rejected by trigger'); END"
                )
            other.close()
            good = [job(n) for n in range(20)]
            bad = job(kwargs={"password": "hunter2"})
            bad.queue = "poison"
            calls = [store.add_jobs([j]) for j in good[:10]]
            calls += [store.add_jobs([bad])]
            calls += [store.add_jobs([j]) for j in good[10:]]
            results = await asyncio.gather(*calls, return_exceptions=True)
            failure = results.pop(10)
            assert isinstance(failure, StoreError) and not isinstance(failure, sqlite3.Error)
            assert "hunter2" not in str(failure) and bad.id not in str(failure)
            assert failure.__cause__ is None and failure.__context__ is None
            assert results == [[True]] * 20
            assert "store op add_jobs failed" in caplog.text
            assert "hunter2" not in caplog.text
            assert len(await store.list_jobs(status=JobStatus.QUEUED)) == 20
        finally:
            await store.close()

    async def test_wal_mode_and_synchronous_pragma(self, tmp_path: Path) -> None:
        """The file is in WAL mode; synchronous accepts NORMAL or FULL, case-insensitively."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path, synchronous="full")
        await store.open()
        await store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT value FROM meta").fetchall() == [("4",)]
        conn.close()
        with pytest.raises(ConfigurationError, match="NORMAL or FULL"):
            SQLiteStore(path, synchronous="OFF")

    async def test_open_failure_is_a_store_error(self, tmp_path: Path) -> None:
        """A path SQLite cannot open fails open() as unwritable, and calls say it is not open."""
        path = str(tmp_path / "missing-dir" / "jobs.db")
        store = SQLiteStore(path)
        with pytest.raises(StoreUnwritable, match=re.escape(f"full or unwritable ({path})")):
            await store.open()
        with pytest.raises(StoreError, match="not open"):
            await store.get_job(new_job_id())
        await store.close()

    async def test_lifecycle_misuse(self, tmp_path: Path) -> None:
        """Calls before open() raise StoreError; open() twice is fine; close() may race open()."""
        store = SQLiteStore(str(tmp_path / "jobs.db"))
        with pytest.raises(StoreError, match="not open"):
            await store.add_jobs([job()])
        await asyncio.gather(store.open(), store.open())
        assert await store.add_jobs([job()]) == [True]
        await store.close()
        with pytest.raises(StoreError, match="store is closed"):
            await store.open()
        racing = SQLiteStore(str(tmp_path / "jobs.db"))
        await asyncio.gather(racing.open(), racing.close())
        with pytest.raises(StoreError, match="store is closed"):
            await racing.get_job(new_job_id())

    async def test_write_backlog_is_bounded(self, tmp_path: Path) -> None:
        """With the disk stalled, writes beyond max_pending fail at once; the rest commit later."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path, max_pending=10)
        await store.open()
        stall = sqlite3.connect(path, isolation_level=None)
        try:
            stall.execute("BEGIN IMMEDIATE")  # holds the write lock, as a stalled disk would
            waiting = [store.add_jobs([job(n)]) for n in range(10)]
            refused = store.add_jobs([job(10)])
            assert refused.done() and not any(write.done() for write in waiting)
            with pytest.raises(StoreError, match="overloaded"):
                await refused
            stall.execute("ROLLBACK")
            assert await asyncio.gather(*waiting) == [[True]] * 10
            assert await store.add_jobs([job(11)]) == [True]
            assert await store.count_jobs() == {("default", "queued"): 11}
        finally:
            stall.close()
            await store.close()
        with pytest.raises(ConfigurationError, match="max_pending"):
            SQLiteStore(path, max_pending=0)

    @pytest.mark.parametrize("version", ["1", "2"])
    async def test_an_older_store_keeps_its_jobs_and_they_are_claimable(
        self, tmp_path: Path, version: str
    ) -> None:
        """A version 1 (no counts, no owner) or 2 (no owner) file opens as version 3: its jobs
        are kept, counted, free and claimable through the claim index."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path)
        await store.open()
        kept = [job(1), job(2, queue="q2"), job(3, status=JobStatus.WAITING), job(4)]
        await store.add_jobs(kept)
        await store.close()
        with sqlite3.connect(path) as conn:  # back to what that version had
            for index in ("jobs_claim", "jobs_owner"):
                conn.execute(f"DROP INDEX {index}")
            conn.execute("ALTER TABLE jobs DROP COLUMN owner")
            conn.execute("ALTER TABLE jobs DROP COLUMN priority")
            if version == "1":
                for trigger in ("insert", "update", "delete"):
                    conn.execute(f"DROP TRIGGER job_counts_{trigger}")
                conn.execute("DROP TABLE job_counts")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        conn.close()
        store = SQLiteStore(path)
        await store.open()
        try:
            assert [await store.get_job(j.id) for j in kept] == kept
            assert await store.count_jobs() == {
                ("default", "queued"): 2, ("q2", "queued"): 1, ("default", "waiting"): 1}
            claimed = await store.claim("default", "add", 10, "m1")
            assert [(j.id, j.owner) for j in claimed] == [(kept[0].id, "m1"), (kept[3].id, "m1")]
            await store.add_jobs([job(5)])
            assert (await store.count_jobs())[("default", "queued")] == 3
        finally:
            await store.close()
        with sqlite3.connect(path) as conn:
            version_now = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            assert version_now.fetchone() == (SCHEMA_VERSION,)
            assert plan_of(conn, CLAIM, ("m1", "default", "add", 10)) == CLAIM_PLAN
        conn.close()

    async def test_a_newer_store_is_refused(self, tmp_path: Path) -> None:
        """A file of a schema version this easyjobs does not know fails open() and is kept."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path)
        await store.open()
        await store.close()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
        conn.close()
        with pytest.raises(StoreError, match="schema version 5 is not supported"):
            await SQLiteStore(path).open()
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT value FROM meta").fetchall() == [("5",)]
        conn.close()

    async def test_claim_searches_its_index_in_a_large_backlog(self, tmp_path: Path) -> None:
        """With 200,000 free jobs of another task and 1,000 of this one, the claim reads the
        claim index from its first free job of this task on: no scan and no sort."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path)
        await store.open()
        try:
            mine = [job(n, task="mine") for n in range(1000)]
            for start in range(0, 200_000, 20_000):
                await store.add_jobs([job(start + n) for n in range(20_000)])
            await store.add_jobs(mine)
            with sqlite3.connect(path) as conn:
                assert plan_of(conn, CLAIM, ("m1", "default", "mine", 100)) == CLAIM_PLAN
                conn.execute("ANALYZE")  # and still so once the planner knows the numbers
                assert plan_of(conn, CLAIM, ("m1", "default", "mine", 100)) == CLAIM_PLAN
            conn.close()
            claimed = await store.claim("default", "mine", 100, "m1")
            assert [j.id for j in claimed] == [j.id for j in mine[:100]]
        finally:
            await store.close()

    async def test_take_back_reads_only_owned_running_waiting_and_retrying_rows(
        self, tmp_path: Path
    ) -> None:
        """take_back's statements search the status and owner indexes, never the backlog."""
        path = str(tmp_path / "jobs.db")
        store = SQLiteStore(path)
        await store.open()
        await store.close()
        with sqlite3.connect(path) as conn:
            assert plan_of(conn, REQUEUE_RUNNING, ()) == [
                "SEARCH jobs USING COVERING INDEX jobs_status (status=?)"]
            assert plan_of(conn, FREE_OWNED, ()) == [
                "SEARCH jobs USING INDEX jobs_owner (owner>?)"]
            assert plan_of(conn, HOLD, ("m1", *HELD)) == [
                "SEARCH jobs USING COVERING INDEX jobs_status (status=?)"]
        conn.close()

    async def test_schema_creation_is_idempotent(self, tmp_path: Path) -> None:
        """Opening an existing store again neither fails nor loses data."""
        path = str(tmp_path / "jobs.db")
        record = job()
        for _ in range(2):
            store = SQLiteStore(path)
            await store.open()
            await store.add_jobs([record])
            await store.close()
        store = SQLiteStore(path)
        await store.open()
        try:
            assert await store.get_job(record.id) == record
        finally:
            await store.close()


class TestOpenStore:
    @pytest.mark.parametrize(
        ("location", "expected"),
        [
            ("jobs.db", "jobs.db"),
            ("sqlite:///jobs.db", "jobs.db"),
            ("sqlite:////a/b.db", "/a/b.db"),
        ],
    )
    def test_sqlite_locations(self, location: str, expected: str) -> None:
        """A plain path or sqlite:///path gives an SQLiteStore on that path."""
        store = open_store(location)
        assert isinstance(store, SQLiteStore)
        assert store.path == expected

    @pytest.mark.parametrize(
        "location", ["postgresql://u:secret@h:5433/db", "postgres://u@h/db?sslmode=require"]
    )
    def test_postgres_urls(self, location: str) -> None:
        """A postgresql:// or postgres:// URL gives a PostgresStore; its name hides the password."""
        store = open_store(location)
        assert isinstance(store, PostgresStore)
        assert store.where in ("h:5433/db", "h:5432/db") and "secret" not in store.where

    @pytest.mark.parametrize(
        "location", ["", "sqlite://", "sqlite:///", "redis://u:secret@h", "mysql://u:secret@h/db"]
    )
    def test_unsupported_locations(self, location: str) -> None:
        """Anything else is a ConfigurationError naming the supported forms, never the password."""
        with pytest.raises(ConfigurationError, match="sqlite:///path") as caught:
            open_store(location)
        assert "secret" not in str(caught.value)
        assert "postgresql://" in str(caught.value)
