"""The store contract, run against every backend; then what only SQLite promises."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs.errors import ConfigurationError, SerializationError, StoreError
from easyjobs.jobs import JobRecord, JobStatus, new_job_id
from easyjobs.store import SQLiteStore, Store, open_store

StoreFactory = Callable[[], Awaitable[Store]]

BACKENDS = ["sqlite"]


def make_backend(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        return SQLiteStore(str(tmp_path / "jobs.db"))
    raise AssertionError(f"no fixture for backend {backend}")


@pytest.fixture(params=BACKENDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Opens stores of one backend on one shared location; closes them all afterwards."""
    made: list[Store] = []

    async def factory() -> Store:
        store = make_backend(request.param, tmp_path)
        made.append(store)
        await store.open()
        return store

    yield factory
    for store in made:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()


def job(n: int = 0, **fields: Any) -> JobRecord:
    """A queued job; ``n`` orders it by created_at, ``fields`` override anything."""
    defaults: dict[str, Any] = {"id": new_job_id(), "queue": "default", "task": "add"}
    return JobRecord(**(defaults | {"created_at": 1000.0 + n} | fields))


class TestStoreContract:
    async def test_add_then_get_round_trips_every_field(self, store: Store) -> None:
        """Every field of a job, bytes, nested maps and unicode included, reads back as written."""
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
        )
        assert await store.add_jobs([record]) == [True]
        assert await store.get_job(record.id) == record

    async def test_none_result_and_defaults_round_trip(self, store: Store) -> None:
        """A job with no result, error, worker, parent or timestamps reads back with None."""
        record = job()
        await store.add_jobs([record])
        stored = await store.get_job(record.id)
        assert stored == record and stored.result is None and stored.started_at is None

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
        """Moves the lifecycle table forbids (requeue of queued, running a finished job) are no-ops."""
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

    async def test_requeue_moves_only_running_jobs(self, store: Store) -> None:
        """requeue puts running jobs back (worker cleared) and ignores queued, done and unknown."""
        running, queued, done = job(1), job(2), job(3)
        await store.add_jobs([running, queued, done])
        await store.mark_running(running.id, "w1", 1, at=10.0)
        await store.mark_running(done.id, "w1", 1, at=10.0)
        await store.finish(done.id, JobStatus.SUCCEEDED, None, None, at=11.0)
        await store.requeue([running.id, queued.id, done.id, new_job_id()])
        back = await store.get_job(running.id)
        assert back is not None
        assert (back.status, back.worker, back.attempts) == (JobStatus.QUEUED, None, 1)
        assert await store.get_job(queued.id) == queued
        finished = await store.get_job(done.id)
        assert finished is not None and finished.status is JobStatus.SUCCEEDED
        await store.mark_running(running.id, "w2", 2, at=12.0)
        again = await store.get_job(running.id)
        assert again is not None
        assert (again.status, again.worker, again.attempts) == (JobStatus.RUNNING, "w2", 2)

    async def test_unfinished_jobs_oldest_first(self, store: Store) -> None:
        """unfinished_jobs lists queued and running jobs by created_at then id, and no others."""
        a, b = job(created_at=5.0, id="b" * 32), job(created_at=5.0, id="a" * 32)
        late, early, done = job(created_at=9.0), job(created_at=1.0), job(created_at=0.5)
        await store.add_jobs([late, a, done, b, early])
        await store.mark_running(late.id, "w1", 1, at=10.0)
        await store.mark_running(done.id, "w1", 1, at=10.0)
        await store.finish(done.id, JobStatus.FAILED, None, None, at=11.0)
        unfinished = await store.unfinished_jobs()
        assert [j.id for j in unfinished] == [early.id, b.id, a.id, late.id]
        assert unfinished[0] == early
        assert unfinished[3].status is JobStatus.RUNNING

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

    async def test_state_survives_close_and_reopen(self, store_factory: StoreFactory) -> None:
        """Everything committed is there after the store is closed and opened again."""
        first = await store_factory()
        running, finished, queued = job(1, args=[b"x"]), job(2), job(3, kwargs={"k": "v"})
        await first.add_jobs([running, finished, queued])
        await first.mark_running(running.id, "w1", 1, at=10.0)
        await first.mark_running(finished.id, "w1", 1, at=10.0)
        await first.finish(finished.id, JobStatus.SUCCEEDED, {"r": 1}, None, at=11.0)
        await first.save_tasks([("default", "add", {"timeout": 5})])
        expected = [await first.get_job(j.id) for j in (running, finished, queued)]
        await first.close()

        second = await store_factory()
        assert [await second.get_job(j.id) for j in (running, finished, queued)] == expected
        assert [j.id for j in await second.unfinished_jobs()] == [running.id, queued.id]
        assert await second.load_tasks() == [("default", "add", {"timeout": 5})]

    async def test_concurrent_adds_commit_in_few_transactions(self, store: Store) -> None:
        """2,000 concurrent add_jobs calls all commit, sharing far fewer than 2,000 transactions."""
        jobs = [job(n) for n in range(2000)]
        before = store.commits
        results = await asyncio.gather(*(store.add_jobs([j]) for j in jobs))
        assert results == [[True]] * 2000
        assert store.commits - before <= 200, store.commits - before
        assert [j.id for j in await store.unfinished_jobs()] == [j.id for j in jobs]

    async def test_unencodable_value_raises_serialization_error(self, store: Store) -> None:
        """A value msgpack cannot carry fails at the call, writes nothing; the store serves on."""
        bad = job(kwargs={"when": object()})
        with pytest.raises(SerializationError):
            await store.add_jobs([job(), bad])
        assert await store.unfinished_jobs() == []
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

    async def test_calls_after_close_raise_store_error(self, store: Store) -> None:
        """Once closed, every call raises StoreError and close() may be repeated."""
        await store.close()
        await store.close()
        with pytest.raises(StoreError, match="store is closed"):
            await store.add_jobs([job()])
        with pytest.raises(StoreError, match="store is closed"):
            await store.get_job(new_job_id())

    async def test_close_drains_calls_already_issued(self, store_factory: StoreFactory) -> None:
        """Calls issued before close() still commit; close() returns after them."""
        first = await store_factory()
        jobs = [job(n) for n in range(50)]
        # gather starts its tasks in order, so every add is queued before close() runs.
        *added, _ = await asyncio.gather(*(first.add_jobs([j]) for j in jobs), first.close())
        assert added == [[True]] * 50
        second = await store_factory()
        assert [j.id for j in await second.unfinished_jobs()] == [j.id for j in jobs]

    async def test_cancelled_caller_does_not_break_the_store(self, store: Store) -> None:
        """Cancelling a caller mid-call leaves the store serving; the write itself still lands."""
        record = job()
        pending = asyncio.ensure_future(store.add_jobs([record]))
        # Runs right after the task's first step, which queued the write and began waiting.
        asyncio.get_running_loop().call_soon(pending.cancel)
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert await store.get_job(record.id) == record


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
            assert len(await store.unfinished_jobs()) == 20
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
            assert conn.execute("SELECT value FROM meta").fetchall() == [("1",)]
        conn.close()
        with pytest.raises(ConfigurationError, match="NORMAL or FULL"):
            SQLiteStore(path, synchronous="OFF")

    async def test_open_failure_is_a_store_error(self, tmp_path: Path) -> None:
        """A path SQLite cannot open fails open() with StoreError, and calls say it is not open."""
        store = SQLiteStore(str(tmp_path / "missing-dir" / "jobs.db"))
        with pytest.raises(StoreError):
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
        "location", ["", "sqlite://", "sqlite:///", "postgresql://u:secret@h/db", "redis://h"]
    )
    def test_unsupported_locations(self, location: str) -> None:
        """Anything else is a ConfigurationError naming the supported forms, never the password."""
        with pytest.raises(ConfigurationError, match="sqlite:///path") as caught:
            open_store(location)
        assert "secret" not in str(caught.value)
