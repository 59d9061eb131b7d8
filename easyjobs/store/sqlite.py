"""SQLite backend: one writer thread and group commit.

Callers never touch the connection. Each call becomes an op (a function of the connection) on a
thread-safe FIFO; the writer thread takes everything queued (up to ``MAX_BATCH``), runs it in one
transaction, commits, then wakes the whole batch with one ``call_soon_threadsafe`` per event
loop. Reads travel the same FIFO, so a read sees every write issued before it, and the event
loop never waits on SQLite.

If an op raises, the batch is rolled back and rerun without it, so a bad op fails alone (with
``StoreError``) and its neighbours still commit. An op that writes several rows (``finish`` with
children, ``fire_schedule``) is thus all or nothing. Values are encoded on the caller's
side, so a value msgpack cannot carry raises ``SerializationError`` before anything is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from easyjobs.errors import ConfigurationError, StoreError
from easyjobs.jobs import TERMINAL, TRANSITIONS, UNFINISHED, JobRecord, JobStatus
from easyjobs.store.base import MAX_PAGE, Store, TaskSpec, pack, unpack

logger = logging.getLogger("easyjobs.store")

T = TypeVar("T")
Op = tuple[str, Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", "BaseException | None", Any]

MAX_BATCH = 1000
BUSY_TIMEOUT_S = 5.0
SCHEMA_VERSION = "1"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, queue TEXT NOT NULL, task TEXT NOT NULL, payload BLOB NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL, worker TEXT, parent TEXT,
        result BLOB, error BLOB, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        dependencies BLOB NOT NULL, on_failure_job TEXT, handler_for TEXT,
        next_attempt_at REAL)""",
    # Leads with status for unfinished_jobs(); the rest of the key serves its ORDER BY.
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at, id)",
    # list_jobs() reads it backwards: newest first, and the cursor is a range on the key.
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id)",
    """CREATE TABLE IF NOT EXISTS tasks (
        queue TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (queue, name))""",
    """CREATE TABLE IF NOT EXISTS schedules (
        queue TEXT NOT NULL, task TEXT NOT NULL, last_fire REAL NOT NULL,
        PRIMARY KEY (queue, task))""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

COLUMNS = (
    "id, queue, task, payload, status, attempts, worker, parent, result, error,"
    " created_at, started_at, finished_at,"
    " dependencies, on_failure_job, handler_for, next_attempt_at"
)


def _allowed_from(new: JobStatus) -> tuple[str, ...]:
    """The statuses the lifecycle table lets a job leave for ``new``."""
    return tuple(sorted(old.value for old, targets in TRANSITIONS.items() if new in targets))


def _when(new: JobStatus) -> str:
    """SQL condition (with its placeholders) true only where moving to ``new`` is legal."""
    return f"status IN ({', '.join('?' * len(_allowed_from(new)))})"


UNFINISHED_VALUES = tuple(sorted(status.value for status in UNFINISHED))

INSERT_JOB = (
    f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS.split(',')))})"
    " ON CONFLICT (id) DO NOTHING"
)
MARK_RUNNING = (
    "UPDATE jobs SET status = ?, attempts = ?, worker = ?, started_at = ?"
    f" WHERE id = ? AND {_when(JobStatus.RUNNING)}"
)
REQUEUE = (
    "UPDATE jobs SET status = ?, worker = NULL, next_attempt_at = NULL"
    f" WHERE id = ? AND {_when(JobStatus.QUEUED)}"
)
RETRY = (
    "UPDATE jobs SET status = ?, error = ?, next_attempt_at = ?, worker = NULL"
    f" WHERE id = ? AND {_when(JobStatus.RETRYING)}"
)
FINISH = {
    status: "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?,"
    " on_failure_job = COALESCE(?, on_failure_job), next_attempt_at = NULL"
    f" WHERE id = ? AND {_when(status)}"
    for status in TERMINAL
}
SELECT_JOB = f"SELECT {COLUMNS} FROM jobs WHERE id = ?"
SELECT_UNFINISHED = (
    f"SELECT {COLUMNS} FROM jobs WHERE status IN ({', '.join('?' * len(UNFINISHED_VALUES))})"
    " ORDER BY created_at, id"
)
SELECT_CURSOR = "SELECT created_at, id FROM jobs WHERE id = ?"
# Strictly after the cursor in list_jobs() order (created_at DESC, id DESC); ties on
# created_at are broken by id, so a page boundary inside a tie neither skips nor repeats a job.
OLDER_THAN_CURSOR = "(created_at < ? OR (created_at = ? AND id < ?))"
UPSERT_TASK = (
    "INSERT INTO tasks (queue, name, spec, updated_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (queue, name)"
    " DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at"
)
# Changes one row exactly when the schedule is new or ``tick`` is later than its last fire.
FIRE_SCHEDULE = (
    "INSERT INTO schedules (queue, task, last_fire) VALUES (?, ?, ?)"
    " ON CONFLICT (queue, task) DO UPDATE SET last_fire = excluded.last_fire"
    " WHERE schedules.last_fire < excluded.last_fire"
)


class SQLiteStore(Store):
    """A store in one SQLite file (WAL mode), safe to share across the coroutines of one process.

    ``synchronous`` is the SQLite pragma: ``NORMAL`` may lose the last commits on power loss
    (never on a process crash); ``FULL`` survives power loss at the cost of an fsync per batch.
    """

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        super().__init__()
        mode = synchronous.upper()
        if mode not in ("NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self._path = path
        self._synchronous = mode
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()  # None: stop
        # Held while checking state and putting, so nothing lands after the stop marker.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready: asyncio.Future[None] | None = None  # open() in flight or done
        self._serving = False  # set by the writer once the schema is in place
        self._closed = False
        self._stopped: asyncio.Future[None] | None = None

    @property
    def path(self) -> str:
        """The database file this store uses."""
        return self._path

    async def open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._thread = threading.Thread(
                target=self._run, args=(self._ready,), name="easyjobs-store-writer", daemon=True
            )
            self._thread.start()
        ready = self._ready
        try:
            await asyncio.shield(ready)
        except StoreError:
            if self._ready is ready:  # the writer has exited; open() may be retried
                self._ready = self._thread = None
            raise

    async def close(self) -> None:
        if self._ready is not None and not self._ready.done():
            with contextlib.suppress(StoreError):  # let an open() in flight settle first
                await asyncio.shield(self._ready)
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._serving:
                    self._stopped = asyncio.get_running_loop().create_future()
                    self._queue.put(None)
        if self._stopped is not None and self._thread is not None:
            await asyncio.shield(self._stopped)
            self._thread.join()  # returns at once: the writer resolved _stopped on its way out

    async def add_jobs(self, jobs: Sequence[JobRecord]) -> list[bool]:
        rows = [_job_row(job) for job in jobs]
        return await self._call(
            "add_jobs", lambda conn: [conn.execute(INSERT_JOB, row).rowcount == 1 for row in rows]
        )

    async def mark_running(self, job_id: str, worker: str, attempt: int, at: float) -> None:
        tail = _allowed_from(JobStatus.RUNNING)
        params = (JobStatus.RUNNING.value, attempt, worker, at, job_id, *tail)
        await self._call("mark_running", lambda conn: conn.execute(MARK_RUNNING, params).rowcount)

    async def requeue(self, job_ids: Sequence[str]) -> None:
        tail = _allowed_from(JobStatus.QUEUED)
        rows = [(JobStatus.QUEUED.value, job_id, *tail) for job_id in job_ids]
        await self._call("requeue", lambda conn: conn.executemany(REQUEUE, rows).rowcount)

    async def retry(self, job_id: str, error: dict[str, str], next_attempt_at: float) -> bool:
        params = (
            JobStatus.RETRYING.value,
            pack(error, f"job {job_id} error"),
            next_attempt_at,
            job_id,
            *_allowed_from(JobStatus.RETRYING),
        )
        return await self._call("retry", lambda conn: conn.execute(RETRY, params).rowcount == 1)

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: Any,
        error: dict[str, str] | None,
        at: float,
        *,
        children: Sequence[JobRecord] = (),
        on_failure_job: str | None = None,
    ) -> bool:
        if status not in TERMINAL:
            raise ValueError(f"finish() needs a terminal status, not {status.value!r}")
        params = (
            status.value,
            None if result is None else pack(result, f"job {job_id} result"),
            None if error is None else pack(error, f"job {job_id} error"),
            at,
            on_failure_job,
            job_id,
            *_allowed_from(status),
        )
        sql = FINISH[status]
        child_rows = [_job_row(child) for child in children]

        def apply(conn: sqlite3.Connection) -> bool:
            if conn.execute(sql, params).rowcount != 1:
                return False
            # Same transaction: if a child cannot be inserted, the op raises and the outcome
            # above is rolled back with it.
            conn.executemany(INSERT_JOB, child_rows)
            return True

        return await self._call("finish", apply)

    async def get_job(self, job_id: str) -> JobRecord | None:
        def read(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
            return None if row is None else _job_record(row)

        return await self._call("get_job", read)

    async def unfinished_jobs(self) -> list[JobRecord]:
        return await self._call(
            "unfinished_jobs",
            lambda conn: [
                _job_record(row) for row in conn.execute(SELECT_UNFINISHED, UNFINISHED_VALUES)
            ],
        )

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[JobRecord]:
        # Only fixed clauses are joined into the SQL; every value is a parameter.
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (("queue = ?", queue), ("task = ?", task), ("status = ?", status)):
            if value is not None:
                clauses.append(clause)
                params.append(value.value if isinstance(value, JobStatus) else value)
        page = max(1, min(limit, MAX_PAGE))

        def read(conn: sqlite3.Connection) -> list[JobRecord]:
            where, args = list(clauses), list(params)
            if before is not None:
                cursor = conn.execute(SELECT_CURSOR, (before,)).fetchone()
                if cursor is None:
                    return []
                where.append(OLDER_THAN_CURSOR)
                args += [cursor[0], cursor[0], cursor[1]]
            sql = f"SELECT {COLUMNS} FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            return [_job_record(row) for row in conn.execute(sql, (*args, page))]

        return await self._call("list_jobs", read)

    async def save_tasks(self, tasks: Sequence[TaskSpec]) -> None:
        now = time.time()
        rows = [(q, name, pack(spec, f"task {q}/{name} spec"), now) for q, name, spec in tasks]
        await self._call("save_tasks", lambda conn: conn.executemany(UPSERT_TASK, rows).rowcount)

    async def load_tasks(self) -> list[TaskSpec]:
        sql = "SELECT queue, name, spec FROM tasks ORDER BY queue, name"
        return await self._call(
            "load_tasks", lambda conn: [(q, n, unpack(spec)) for q, n, spec in conn.execute(sql)]
        )

    async def count_jobs(self) -> dict[tuple[str, str], int]:
        sql = "SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status"
        return await self._call(
            "count_jobs", lambda conn: {(q, s): n for q, s, n in conn.execute(sql)}
        )

    async def load_schedules(self) -> dict[tuple[str, str], float]:
        sql = "SELECT queue, task, last_fire FROM schedules"
        return await self._call(
            "load_schedules", lambda conn: {(q, t): last for q, t, last in conn.execute(sql)}
        )

    async def fire_schedule(
        self, queue: str, task: str, tick: float, job: JobRecord,
        dependencies: Sequence[JobRecord] = (),
    ) -> bool:
        rows = [_job_row(record) for record in (job, *dependencies)]

        def apply(conn: sqlite3.Connection) -> bool:
            if conn.execute(FIRE_SCHEDULE, (queue, task, tick)).rowcount != 1:
                return False
            conn.executemany(INSERT_JOB, rows)  # a failure here rolls the fire time back too
            return True

        return await self._call("fire_schedule", apply)

    async def _call(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``fn`` for the writer and wait for its batch to commit.

        Cancelling the caller does not withdraw the op: it still runs, in order.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            if not self._serving:
                raise StoreError("store is not open; await open() first")
            self._queue.put((name, fn, fut))
        return await fut

    # --- everything below runs on the writer thread, which alone owns the connection ---

    def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error:
            logger.exception("cannot open SQLite store at %s", self._path)
            _deliver([(ready, StoreError("cannot open the store (see the log)"), None)])
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")  # validated in __init__
            self._create_schema(conn)
        except Exception as exc:
            _rollback(conn)
            conn.close()
            if not isinstance(exc, StoreError):
                logger.exception("cannot prepare SQLite store at %s", self._path)
                exc = StoreError("cannot prepare the store (see the log)")
            _deliver([(ready, exc, None)])
            return
        self._serving = True
        _deliver([(ready, None, None)])
        try:
            self._serve(conn)
        finally:
            conn.close()
            if self._stopped is not None:
                _deliver([(self._stopped, None, None)])

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO NOTHING",
            (SCHEMA_VERSION,),
        )
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version != SCHEMA_VERSION:
            raise StoreError(f"store schema version {version} is not supported")
        conn.execute("COMMIT")

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            batch: list[Op] = []
            item = self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) == MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                _deliver(self._execute(conn, batch))
            if item is None:  # close() put nothing after its marker, so the queue is drained
                return

    def _execute(self, conn: sqlite3.Connection, batch: list[Op]) -> list[Outcome]:
        """Commit ``batch`` in one transaction; an op that raises is dropped and the rest rerun.

        A failure outside the ops (BEGIN after the busy timeout, COMMIT on a full or failing
        disk) belongs to no single op, so the whole batch fails without retries.
        """
        outcomes: list[Outcome] = []
        while batch:
            values: list[Any] = []
            in_ops = False
            try:
                conn.execute("BEGIN IMMEDIATE")
                in_ops = True
                for _, fn, _ in batch:
                    values.append(fn(conn))
                in_ops = False
                conn.execute("COMMIT")
            except Exception as exc:
                _rollback(conn)
                if in_ops:  # batch[len(values)] raised: fail it alone, rerun the others
                    culprit = len(values)
                    logger.error("store op %s failed", batch[culprit][0], exc_info=exc)
                    failed, batch = [batch[culprit]], batch[:culprit] + batch[culprit + 1 :]
                else:
                    logger.error("store transaction of %d ops failed", len(batch), exc_info=exc)
                    failed, batch = batch, []
                # The cause stays in the log: its text may quote stored values.
                outcomes += [
                    (fut, StoreError(f"store op {name} failed; the cause is in the log"), None)
                    for name, _, fut in failed
                ]
            else:
                self._commits += 1
                outcomes += [(fut, None, v) for (_, _, fut), v in zip(batch, values, strict=True)]
                batch = []
        return outcomes


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        logger.exception("rollback failed")


def _deliver(outcomes: list[Outcome]) -> None:
    """Hand outcomes to their loops: one thread-safe wake-up per loop, not one per op."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # that loop is closed; nobody is left waiting on it
            pass


def _settle(outcomes: list[Outcome]) -> None:
    for fut, exc, value in outcomes:
        if fut.done():  # its caller was cancelled
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


def _job_row(job: JobRecord) -> tuple[Any, ...]:
    """The record as INSERT_JOB's parameters, in ``COLUMNS`` order."""
    return (
        job.id,
        job.queue,
        job.task,
        pack([job.args, job.kwargs], f"job {job.id} arguments"),
        job.status.value,
        job.attempts,
        job.worker,
        job.parent,
        None if job.result is None else pack(job.result, f"job {job.id} result"),
        None if job.error is None else pack(job.error, f"job {job.id} error"),
        job.created_at,
        job.started_at,
        job.finished_at,
        pack(job.dependencies, f"job {job.id} dependencies"),
        job.on_failure_job,
        job.handler_for,
        job.next_attempt_at,
    )


def _job_record(row: tuple[Any, ...]) -> JobRecord:
    """A row selected as ``COLUMNS`` back as a record."""
    (
        job_id, q, task, payload, status, attempts, worker, parent, result, error,
        created_at, started_at, finished_at,
        dependencies, on_failure_job, handler_for, next_attempt_at,
    ) = row  # fmt: skip
    args, kwargs = unpack(payload)
    return JobRecord(
        id=job_id,
        queue=q,
        task=task,
        args=args,
        kwargs=kwargs,
        status=JobStatus(status),
        attempts=attempts,
        worker=worker,
        parent=parent,
        result=None if result is None else unpack(result),
        error=None if error is None else unpack(error),
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        dependencies=unpack(dependencies),
        on_failure_job=on_failure_job,
        handler_for=handler_for,
        next_attempt_at=next_attempt_at,
    )
