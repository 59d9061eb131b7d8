"""SQLite backend: one writer thread with group commit, and reader threads beside it.

Callers never touch a connection. A write becomes an op (a function of the connection) when the
method is called; the ops called in one turn of the event loop go to a thread-safe FIFO
together at its end (a submit's insert and its job's start share a transaction). The writer
thread takes everything queued (about ``MAX_BATCH``), runs it in one transaction, commits,
then wakes the whole batch with one ``call_soon_threadsafe`` per event loop. Checkpoints run on
a thread of their own, beside the commits. At most ``max_pending`` writes may wait to commit; one
more fails at once with ``StoreError``, so a stalled disk cannot grow memory without bound.

Reads run on read-only connections in threads of their own, which WAL lets run beside the
writer: one thread for point reads (a job, the counts, tasks, schedules) and ``SCAN_READERS``
for listings, so a burst of ``list_jobs`` neither delays a lookup nor queues on the writer. A
read notes how many writes were called before it, and its thread waits until the writer has
applied that many: a read sees every write called before it, and no read waits on another.
``count_jobs`` reads a table of counts that triggers keep exact in every writing transaction.

If an op raises, the batch is rolled back and rerun without it, so a bad op fails alone (with
``StoreError``) and its neighbours still commit. An op that writes several rows (``finish`` with
children, ``fire_schedule``) is thus all or nothing. Values are encoded on the caller's
side, so a value msgpack cannot carry raises ``SerializationError`` before anything is queued.

A full disk or a database that refuses writes is no op's fault. The WAL only grows between
checkpoints, so it would soon fill any space freed: the writer checkpoints it into the
database file and truncates it, then retries the batch once. If that fails too, the batch
fails with ``StoreUnwritable`` and the store reports itself unwritable until a write commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from easyjobs.errors import ConfigurationError, StoreError
from easyjobs.jobs import TERMINAL, TRANSITIONS, JobRecord, JobStatus
from easyjobs.store.base import (
    MAX_PAGE,
    CredentialRecord,
    Store,
    StoreUnwritable,
    TaskSpec,
    credential_from_row,
    merge_queued,
    pack,
    pack_payload,
    queues_text,
    record_from_row,
    unpack,
)
from easyjobs.store.signals import Signals
from easyjobs.store.stats import CommitStats

logger = logging.getLogger("easyjobs.store")

T = TypeVar("T")
Op = tuple[str, Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
Read = tuple[str, Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", int]
"""A read and how many writes it must see applied before it runs."""
Outcome = tuple["asyncio.Future[Any]", "BaseException | None", Any]

MAX_BATCH = 1000
MAX_PENDING = 50_000
"""Default bound on writes called but not yet committed."""
SCAN_READERS = 2
BUSY_TIMEOUT_S = 5.0
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""Bytes of WAL file kept after a checkpoint restarts it; the rest goes back to the disk."""
TIGHT_WAL_PAGES = 64
"""WAL pages between checkpoints once the store has run out of space (SQLite's default: 1000)."""
CHECKPOINT_COMMITS = 200
"""Commits between two background checkpoints (a few MiB of WAL at most in between)."""
SCHEMA_VERSION = "4"
OLDER_VERSIONS = ("1", "2", "3")
"""Schema versions ``open()`` migrates: 1 had no counts table, 1 and 2 no owner or priority,
1 to 3 no credentials table."""
UNWRITABLE_CODES = frozenset(
    (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
)

COUNT_NEW = (
    "INSERT INTO job_counts (queue, status, n) VALUES (NEW.queue, NEW.status, 1)"
    " ON CONFLICT (queue, status) DO UPDATE SET n = n + 1"
)
UNCOUNT_OLD = "UPDATE job_counts SET n = n - 1 WHERE queue = OLD.queue AND status = OLD.status"

FREE = "status = 'queued' AND owner IS NULL"
"""A job waiting in the queue for any manager. Written out, not bound: SQLite uses a partial
index only for a query whose WHERE clause spells out the index's own condition."""

TABLES = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, queue TEXT NOT NULL, task TEXT NOT NULL, payload BLOB NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL, worker TEXT, parent TEXT,
        result BLOB, error BLOB, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        dependencies BLOB NOT NULL, on_failure_job TEXT, handler_for TEXT,
        next_attempt_at REAL, owner TEXT, priority INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS tasks (
        queue TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (queue, name))""",
    """CREATE TABLE IF NOT EXISTS schedules (
        queue TEXT NOT NULL, task TEXT NOT NULL, last_fire REAL NOT NULL,
        PRIMARY KEY (queue, task))""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Named credentials: a salt to derive each key from the manager secret, never the key.
    """CREATE TABLE IF NOT EXISTS credentials (
        name TEXT PRIMARY KEY, role TEXT NOT NULL, queues TEXT, salt BLOB NOT NULL,
        created_at REAL NOT NULL)""",
    # count_jobs() reads this instead of scanning jobs; the triggers keep it exact in the
    # transaction of every change, whoever writes. Counts at zero stay, as rows for next time.
    """CREATE TABLE IF NOT EXISTS job_counts (
        queue TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (queue, status)) WITHOUT ROWID""",
)
ADD_OWNER = (
    "ALTER TABLE jobs ADD COLUMN owner TEXT",
    "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
)
"""What versions 1 and 2 lack in ``jobs``; existing jobs come out free, at priority 0."""
ON_JOBS = (
    # take_back() finds running, waiting and retrying jobs by it; list_jobs(status=...) too.
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at, id)",
    # list_jobs() reads it backwards: newest first, and the cursor is a range on the key.
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id)",
    # claim() reads the first free jobs of one task in order, whatever the rest of the queue.
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (queue, task, priority, created_at, id)"
    f" WHERE {FREE}",
    # take_back() frees owned jobs without reading the free ones.
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner) WHERE owner IS NOT NULL",
    f"""CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
        {COUNT_NEW}; END""",
    f"""CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF queue, status ON jobs
        WHEN OLD.queue IS NOT NEW.queue OR OLD.status IS NOT NEW.status BEGIN
        {UNCOUNT_OLD}; {COUNT_NEW}; END""",
    f"""CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
        {UNCOUNT_OLD}; END""",
)
"""The indexes and triggers of ``jobs``, made once its columns are all there."""

COLUMNS = (
    "id, queue, task, payload, status, attempts, worker, parent, result, error,"
    " created_at, started_at, finished_at,"
    " dependencies, on_failure_job, handler_for, next_attempt_at, owner"
)


@cache  # bound in every start and outcome
def _allowed_from(new: JobStatus) -> tuple[str, ...]:
    """The statuses the lifecycle table lets a job leave for ``new``."""
    return tuple(sorted(old.value for old, targets in TRANSITIONS.items() if new in targets))


def _when(new: JobStatus) -> str:
    """SQL condition (with its placeholders) true only where moving to ``new`` is legal."""
    return f"status IN ({', '.join('?' * len(_allowed_from(new)))})"


INSERT_JOB = (
    f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS.split(',')))})"
    " ON CONFLICT (id) DO NOTHING"
)
MARK_RUNNING = (
    "UPDATE jobs SET status = ?, attempts = ?, worker = ?, started_at = ?"
    f" WHERE id = ? AND (? IS NULL OR owner = ?) AND {_when(JobStatus.RUNNING)}"
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
    " on_failure_job = COALESCE(?, on_failure_job), next_attempt_at = NULL, owner = NULL"
    f" WHERE id = ? AND {_when(status)}"
    for status in TERMINAL
}
SELECT_JOB = f"SELECT {COLUMNS} FROM jobs WHERE id = ?"
IDS_PER_QUERY = 500
"""Ids bound in one ``get_jobs`` query (SQLite caps the parameters of a statement)."""
# claim() owns the first free jobs in one statement: the subquery reads their rowids from the
# claim index in order (before any row changes), the update finds each row by its rowid.
# RETURNING gives no order, so the rows carry their priority to be sorted by.
CLAIMABLE = (
    f"SELECT rowid FROM jobs WHERE queue = ? AND task = ? AND {FREE}"
    " ORDER BY priority, created_at, id LIMIT ?"
)
CLAIM = f"UPDATE jobs SET owner = ? WHERE rowid IN ({CLAIMABLE}) RETURNING {COLUMNS}, priority"
ADOPT = f"UPDATE jobs SET owner = ? WHERE id = ? AND {FREE} RETURNING {COLUMNS}"
RELEASE = (
    f"UPDATE jobs SET owner = NULL WHERE id = ? AND owner = ?"
    f" AND status = '{JobStatus.QUEUED.value}'"
)
QUEUED_TASKS = f"SELECT DISTINCT queue, task FROM jobs WHERE {FREE}"
QUEUED_BY_TASK = (
    f"SELECT queue, task, COUNT(*), MIN(created_at) FROM jobs WHERE {FREE} GROUP BY queue, task",
    "SELECT queue, task, COUNT(*), MIN(created_at) FROM jobs"
    " WHERE owner IS NOT NULL AND status = 'queued' GROUP BY queue, task",
)
"""The free queued jobs by the claim index, the owned ones by the owner index."""
# take_back(), in this order: requeue the running jobs, free the other owned ones (by the
# owner index), then own the waiting and retrying ones (by the status index).
REQUEUE_RUNNING = (
    f"UPDATE jobs SET status = '{JobStatus.QUEUED.value}', worker = NULL, owner = NULL,"
    f" next_attempt_at = NULL WHERE status = '{JobStatus.RUNNING.value}'"
)
HELD = (JobStatus.WAITING.value, JobStatus.RETRYING.value)
"""The unfinished statuses whose jobs stay with the manager that takes them back."""
FREE_OWNED = (
    "UPDATE jobs SET owner = NULL WHERE owner IS NOT NULL"
    f" AND status NOT IN ('{HELD[0]}', '{HELD[1]}')"
)
HOLD = f"UPDATE jobs SET owner = ? WHERE status IN (?, ?) RETURNING {COLUMNS}"
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

REMEMBER_PAUSE = (
    "INSERT INTO meta (key, value) VALUES ('paused', ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
SELECT_PAUSED = "SELECT value FROM meta WHERE key = 'paused'"
# A write that touches no job, for probe().
PROBE = (
    "INSERT INTO meta (key, value) VALUES ('probed_at', ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class SQLiteStore(Store):
    """A store in one SQLite file (WAL mode), safe to share across the coroutines of one process.

    ``synchronous`` is the SQLite pragma: ``NORMAL`` may lose the last commits on power loss
    (never on a process crash); ``FULL`` survives power loss at the cost of an fsync per batch.
    ``max_pending`` bounds the writes called but not yet committed.
    """

    def __init__(
        self, path: str, synchronous: str = "NORMAL", *, max_pending: int = MAX_PENDING
    ) -> None:
        mode = synchronous.upper()
        if mode not in ("NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        if max_pending < 1:
            raise ConfigurationError(f"max_pending must be at least 1, not {max_pending}")
        self._path = path
        self._synchronous = mode
        self._max_pending = max_pending
        self._writes: queue.SimpleQueue[list[Op] | None] = queue.SimpleQueue()  # None: stop
        self._held: list[Op] = []  # called in this turn of the loop, handed over at its end
        self._point_reads: queue.SimpleQueue[Read | None] = queue.SimpleQueue()
        self._scan_reads: queue.SimpleQueue[Read | None] = queue.SimpleQueue()
        # Held while checking state and putting, so nothing lands after the stop marker.
        self._lock = threading.Lock()
        self._applied_changed = threading.Condition(self._lock)
        self._issued = 0  # writes queued so far
        self._applied = 0  # of those, writes the writer has committed or failed
        self._commits = 0
        self.commit_stats = CommitStats()
        self._since_checkpoint = 0  # commits since the checkpointer was last asked to run
        self._checkpoint_due = threading.Event()
        self._stopping = False
        self._writable = True
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._ready: asyncio.Future[None] | None = None  # open() in flight or done
        self._serving = False  # set by the writer once the schema is in place
        self._closed = False
        self._stopped: asyncio.Future[None] | None = None

    @property
    def path(self) -> str:
        """The database file this store uses."""
        return self._path

    @property
    def commits(self) -> int:
        """Statistic: transactions committed so far. Many writes share one under load."""
        return self._commits

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def last_error(self) -> str | None:
        return None if self._writable else self._last_error

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
                    self._hand_over_locked()
                    self._writes.put(None)
        if self._stopped is not None and self._thread is not None:
            await asyncio.shield(self._stopped)
            self._thread.join()  # returns at once: the writer resolved _stopped on its way out

    def probe(self) -> asyncio.Future[None]:
        def touch(conn: sqlite3.Connection) -> None:
            conn.execute(PROBE, (repr(time.time()),))

        return self._write("probe", touch)

    def add_jobs(self, jobs: Sequence[JobRecord], *, soon: bool = False
                 ) -> asyncio.Future[list[bool]]:
        rows = [_job_row(job) for job in jobs]  # a commit here is cheap: it never waits
        return self._write(
            "add_jobs", lambda conn: [conn.execute(INSERT_JOB, row).rowcount == 1 for row in rows]
        )

    def mark_running(
        self, job_id: str, worker: str, attempt: int, at: float, owner: str | None = None
    ) -> asyncio.Future[None]:
        tail = _allowed_from(JobStatus.RUNNING)
        params = (JobStatus.RUNNING.value, attempt, worker, at, job_id, owner, owner, *tail)

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(MARK_RUNNING, params)

        return self._write("mark_running", apply)

    def requeue(self, job_ids: Sequence[str]) -> asyncio.Future[None]:
        tail = _allowed_from(JobStatus.QUEUED)
        rows = [(JobStatus.QUEUED.value, job_id, *tail) for job_id in job_ids]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(REQUEUE, rows)

        return self._write("requeue", apply)

    def retry(
        self, job_id: str, error: dict[str, str], next_attempt_at: float
    ) -> asyncio.Future[bool]:
        params = (
            JobStatus.RETRYING.value,
            pack(error, f"job {job_id} error"),
            next_attempt_at,
            job_id,
            *_allowed_from(JobStatus.RETRYING),
        )
        return self._write("retry", lambda conn: conn.execute(RETRY, params).rowcount == 1)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: Any,
        error: dict[str, str] | None,
        at: float,
        *,
        children: Sequence[JobRecord] = (),
        on_failure_job: str | None = None,
    ) -> asyncio.Future[bool]:
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
            if child_rows:
                conn.executemany(INSERT_JOB, child_rows)
            return True

        return self._write("finish", apply)

    def get_job(self, job_id: str) -> asyncio.Future[JobRecord | None]:
        def read(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute(SELECT_JOB, (job_id,)).fetchone()
            return None if row is None else record_from_row(row)

        return self._read("get_job", read, self._point_reads)

    def get_jobs(self, job_ids: Sequence[str]) -> asyncio.Future[list[JobRecord]]:
        ids = list(dict.fromkeys(job_ids))

        def read(conn: sqlite3.Connection) -> list[JobRecord]:
            found = []
            for start in range(0, len(ids), IDS_PER_QUERY):
                part = ids[start:start + IDS_PER_QUERY]
                sql = f"SELECT {COLUMNS} FROM jobs WHERE id IN ({', '.join('?' * len(part))})"
                found += [record_from_row(row) for row in conn.execute(sql, part)]
            return found

        return self._read("get_jobs", read, self._point_reads)

    def claim(
        self, queue: str, task: str, limit: int, owner: str
    ) -> asyncio.Future[list[JobRecord]]:
        if limit < 1:
            return self._answer([])

        def apply(conn: sqlite3.Connection) -> list[JobRecord]:
            rows = conn.execute(CLAIM, (owner, queue, task, limit)).fetchall()
            rows.sort(key=_claim_order)
            return [record_from_row(row[:-1]) for row in rows]

        return self._write("claim", apply)

    def adopt(self, job_ids: Sequence[str], owner: str) -> asyncio.Future[list[JobRecord]]:
        if not job_ids:
            return self._answer([])
        ids = list(dict.fromkeys(job_ids))

        def apply(conn: sqlite3.Connection) -> list[JobRecord]:
            return [record_from_row(row)
                    for job_id in ids for row in conn.execute(ADOPT, (owner, job_id))]

        return self._write("adopt", apply)

    def release(self, jobs: Sequence[JobRecord], owner: str) -> asyncio.Future[None]:
        rows = [(job.id, owner) for job in jobs]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(RELEASE, rows)

        return self._write("release", apply)

    async def listen(self, on_signals: Callable[[Signals], None],
                     on_connect: Callable[[], None]) -> None:
        """One manager per file: there is nobody else to hear."""

    def announce(self, news: Signals) -> asyncio.Future[None]:
        if news.pause is None:
            return self._answer(None)  # one manager per file: nobody else to tell
        flag = "1" if news.pause else "0"

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(REMEMBER_PAUSE, (flag,))

        return self._write("announce", apply)

    def paused(self) -> asyncio.Future[bool]:
        return self._read(
            "paused", lambda conn: conn.execute(SELECT_PAUSED).fetchone() == ("1",),
            self._point_reads,
        )

    @property
    def shared(self) -> bool:
        return False

    def renew(self, owner: str) -> asyncio.Future[list[JobRecord] | None]:
        return self._answer([])  # one manager per file: nobody to take over from

    def leave(self, owner: str) -> asyncio.Future[None]:
        return self._answer(None)  # the next start takes everything back

    def share_workers(self, owner: str, workers: Sequence[dict[str, Any]]
                      ) -> asyncio.Future[None]:
        return self._answer(None)  # one manager per file: nobody else lists them

    def other_workers(self, owner: str) -> asyncio.Future[list[dict[str, Any]]]:
        return self._answer([])

    def advertise(self, owner: str, address: str, serves: Sequence[tuple[str, str]]
                  ) -> asyncio.Future[None]:
        return self._answer(None)  # one manager per file: nobody to reach it

    def directory(self, owner: str) -> asyncio.Future[dict[str, tuple[str, list[tuple[str, str]]]]]:
        return self._answer({})

    def queued_tasks(self) -> asyncio.Future[set[tuple[str, str]]]:
        return self._read(
            "queued_tasks", lambda conn: {(q, t) for q, t in conn.execute(QUEUED_TASKS)},
            self._scan_reads,
        )

    def take_back(self, owner: str) -> asyncio.Future[tuple[int, list[JobRecord]]]:
        def apply(conn: sqlite3.Connection) -> tuple[int, list[JobRecord]]:
            requeued = conn.execute(REQUEUE_RUNNING).rowcount
            conn.execute(FREE_OWNED)
            held = [record_from_row(row) for row in conn.execute(HOLD, (owner, *HELD))]
            held.sort(key=lambda record: (record.created_at, record.id))  # RETURNING has no order
            return requeued, held

        return self._write("take_back", apply)

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        before: str | None = None,
        queues: Collection[str] | None = None,
    ) -> asyncio.Future[list[JobRecord]]:
        # Only fixed clauses are joined into the SQL; every value is a parameter.
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (("queue = ?", queue), ("task = ?", task), ("status = ?", status)):
            if value is not None:
                clauses.append(clause)
                params.append(value.value if isinstance(value, JobStatus) else value)
        if queues is not None:
            clauses.append(f"queue IN ({', '.join('?' * len(queues))})" if queues else "0")
            params.extend(queues)
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
            return [record_from_row(row) for row in conn.execute(sql, (*args, page))]

        return self._read("list_jobs", read, self._scan_reads)

    def save_tasks(self, tasks: Sequence[TaskSpec]) -> asyncio.Future[None]:
        now = time.time()
        rows = [(q, name, pack(spec, f"task {q}/{name} spec"), now) for q, name, spec in tasks]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(UPSERT_TASK, rows)

        return self._write("save_tasks", apply)

    def add_credential(self, credential: CredentialRecord) -> asyncio.Future[bool]:
        row = (credential.name, credential.role, queues_text(credential.queues),
               credential.salt, credential.created_at)

        def apply(conn: sqlite3.Connection) -> bool:
            return conn.execute(
                "INSERT INTO credentials (name, role, queues, salt, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING", row).rowcount == 1

        return self._write("add_credential", apply)

    def revoke_credential(self, name: str) -> asyncio.Future[bool]:
        def apply(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM credentials WHERE name = ?",
                                (name,)).rowcount == 1

        return self._write("revoke_credential", apply)

    def load_credentials(self) -> asyncio.Future[list[CredentialRecord]]:
        sql = "SELECT name, role, queues, salt, created_at FROM credentials ORDER BY name"
        return self._read(
            "load_credentials",
            lambda conn: [credential_from_row(row) for row in conn.execute(sql)],
            self._point_reads,
        )

    def load_tasks(self) -> asyncio.Future[list[TaskSpec]]:
        sql = "SELECT queue, name, spec FROM tasks ORDER BY queue, name"
        return self._read(
            "load_tasks",
            lambda conn: [(q, n, unpack(spec)) for q, n, spec in conn.execute(sql)],
            self._point_reads,
        )

    def count_jobs(self) -> asyncio.Future[dict[tuple[str, str], int]]:
        sql = "SELECT queue, status, n FROM job_counts WHERE n > 0"
        return self._read(
            "count_jobs",
            lambda conn: {(q, s): n for q, s, n in conn.execute(sql)},
            self._point_reads,
        )

    def queued_by_task(self) -> asyncio.Future[dict[tuple[str, str], tuple[int, float]]]:
        return self._read("queued_by_task", lambda conn: merge_queued(
            row for sql in QUEUED_BY_TASK for row in conn.execute(sql)), self._scan_reads)

    def load_schedules(self) -> asyncio.Future[dict[tuple[str, str], float]]:
        sql = "SELECT queue, task, last_fire FROM schedules"
        return self._read(
            "load_schedules",
            lambda conn: {(q, t): last for q, t, last in conn.execute(sql)},
            self._point_reads,
        )

    def fire_schedule(
        self, queue: str, task: str, tick: float, job: JobRecord,
        dependencies: Sequence[JobRecord] = (),
    ) -> asyncio.Future[bool]:
        rows = [_job_row(record) for record in (job, *dependencies)]

        def apply(conn: sqlite3.Connection) -> bool:
            if conn.execute(FIRE_SCHEDULE, (queue, task, tick)).rowcount != 1:
                return False
            conn.executemany(INSERT_JOB, rows)  # a failure here rolls the fire time back too
            return True

        return self._write("fire_schedule", apply)

    def _write(self, name: str, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` for the writer now; the future resolves when its batch has committed.

        Cancelling the future does not withdraw the op: it still runs, in order.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            refusal = self._refusal()
            if refusal is None and self._issued - self._applied >= self._max_pending:
                refusal = StoreError(
                    f"the job store is overloaded ({self._max_pending} writes are waiting for"
                    " the disk); try again later"
                )
            if refusal is None:
                self._issued += 1
                self._held.append((name, fn, fut))
                if len(self._held) == 1:
                    fut.get_loop().call_soon(self._hand_over)
        if refusal is not None:
            fut.set_exception(refusal)
        return fut

    def _answer(self, value: T) -> asyncio.Future[T]:
        """A call that needs nothing from the database, answered at once unless refused."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            refusal = self._refusal()
        if refusal is not None:
            fut.set_exception(refusal)
        else:
            fut.set_result(value)
        return fut

    def _hand_over(self) -> None:
        with self._lock:
            self._hand_over_locked()

    def _hand_over_locked(self) -> None:
        """Give the writer the ops held so far, as one item (they share a batch)."""
        if self._held:
            self._writes.put(self._held)
            self._held = []

    def _read(
        self,
        name: str,
        fn: Callable[[sqlite3.Connection], T],
        lane: queue.SimpleQueue[Read | None],
    ) -> asyncio.Future[T]:
        """Queue ``fn`` for a reader of ``lane``, to run once every write called so far is in."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            refusal = self._refusal()
            if refusal is None:
                lane.put((name, fn, fut, self._issued))
        if refusal is not None:
            fut.set_exception(refusal)
        return fut

    def _refusal(self) -> StoreError | None:
        """Why no call may be queued now, or None. Called with ``_lock`` held."""
        if self._closed:
            return StoreError("store is closed")
        if not self._serving:
            return StoreError("store is not open; await open() first")
        return None

    # --- below runs on the store's threads: the writer owns its connection, each reader its own

    def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            logger.exception("cannot open SQLite store at %s", self._path)
            _deliver([(ready, self._open_error(exc, "cannot open the store (see the log)"), None)])
            return
        readers: list[tuple[sqlite3.Connection, queue.SimpleQueue[Read | None]]] = []
        checkpointer: sqlite3.Connection | None = None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")  # validated in __init__
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            # Statement journals in memory: each statement of a batch (with the jobs triggers
            # and partial indexes) keeps one, and once one outgrew SQLite's 64 KiB the rest of
            # the transaction wrote every touched page to a temporary file (8 writes a job).
            # It holds the pages of one statement at a time, and is never durable anyway.
            conn.execute("PRAGMA temp_store=MEMORY")
            # Checkpoints run on a thread of their own (``_serve_checkpoints``), never inside a
            # commit, so a commit does not wait for the database file to be written and synced.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._create_schema(conn)
            uri = Path(self._path).absolute().as_uri() + "?mode=ro"
            checkpointer = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S,
                                           isolation_level=None, check_same_thread=False)
            for lane in (self._point_reads, *[self._scan_reads] * SCAN_READERS):
                reader = sqlite3.connect(
                    uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                    check_same_thread=False,
                )
                readers.append((reader, lane))
        except Exception as exc:
            _rollback(conn)
            for reader, _ in readers:
                reader.close()
            if checkpointer is not None:
                checkpointer.close()
            conn.close()
            if not isinstance(exc, StoreError):
                logger.exception("cannot prepare SQLite store at %s", self._path)
                exc = self._open_error(exc, "cannot prepare the store (see the log)")
            _deliver([(ready, exc, None)])
            return
        threads = [
            threading.Thread(
                target=self._serve_reads, args=reader, name="easyjobs-store-reader", daemon=True
            )
            for reader in readers
        ]
        threads.append(threading.Thread(target=self._serve_checkpoints, args=(checkpointer,),
                                        name="easyjobs-store-checkpointer", daemon=True))
        for thread in threads:
            thread.start()
        self._serving = True
        _deliver([(ready, None, None)])
        try:
            self._serve(conn)
        finally:
            for _, lane in readers:  # one marker per reader, after every read already queued
                lane.put(None)
            self._stopping = True
            self._checkpoint_due.set()
            for thread in threads:
                thread.join()
            conn.close()
            if self._stopped is not None:
                _deliver([(self._stopped, None, None)])

    def _open_error(self, exc: BaseException, otherwise: str) -> StoreError:
        """What open() raises for ``exc``: say so plainly when the file cannot be written."""
        if _unwritable(exc):
            return StoreUnwritable(self._unwritable_message())
        return StoreError(otherwise)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for statement in TABLES:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO NOTHING",
            (SCHEMA_VERSION,),
        )
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version != SCHEMA_VERSION and version not in OLDER_VERSIONS:
            raise StoreError(f"store schema version {version} is not supported")
        if version in ("1", "2"):  # the indexes below need the new columns
            for statement in ADD_OWNER:
                conn.execute(statement)
        for statement in ON_JOBS:
            conn.execute(statement)
        if version == "1":  # made before the counts table: count once, the triggers go on
            conn.execute(
                "INSERT INTO job_counts (queue, status, n)"
                " SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status"
            )
        if version != SCHEMA_VERSION:
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,)
            )
        conn.execute("COMMIT")

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            batch: list[Op] = []
            item = self._writes.get()
            while item is not None:
                batch.extend(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
            if batch:
                outcomes = self._execute(conn, batch)
                with self._applied_changed:
                    self._applied += len(batch)
                    self._applied_changed.notify_all()
                _deliver(outcomes)
            if item is None:  # close() put nothing after its marker, so the queue is drained
                return

    def _serve_reads(
        self, conn: sqlite3.Connection, lane: queue.SimpleQueue[Read | None]
    ) -> None:
        try:
            while (item := lane.get()) is not None:
                name, fn, fut, writes_before = item
                self._await_writes(writes_before)
                try:
                    outcome: Outcome = (fut, None, fn(conn))
                except Exception as exc:
                    logger.error("store op %s failed", name, exc_info=exc)
                    error = StoreError(f"store op {name} failed; the cause is in the log")
                    outcome = (fut, error, None)
                _deliver([outcome])
        finally:
            conn.close()

    def _serve_checkpoints(self, conn: sqlite3.Connection) -> None:
        """Move the WAL into the database file when the writer asks, beside its commits."""
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._stopping:
                    return
                if self._writable:  # while not, the writer checkpoints itself (TRUNCATE)
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:
                        logger.debug("background WAL checkpoint failed", exc_info=exc)
        finally:
            conn.close()

    def _await_writes(self, count: int) -> None:
        """Block until the writer has applied ``count`` writes (committed or failed)."""
        if self._applied < count:
            with self._applied_changed:
                self._applied_changed.wait_for(lambda: self._applied >= count)

    def _execute(self, conn: sqlite3.Connection, batch: list[Op]) -> list[Outcome]:
        """Commit ``batch`` in one transaction; an op that raises is dropped and the rest rerun.

        A failure outside the ops (BEGIN after the busy timeout, COMMIT on a failing disk)
        belongs to no single op, so the whole batch fails without retries; so does a full or
        unwritable database, after one retry behind a WAL checkpoint.
        """
        # While the store cannot write, the WAL gives its space back first: a batch written
        # before would spend the space just freed, and the WAL could never be moved out.
        checkpointed = not self._writable
        if checkpointed and not self._checkpoint(conn):
            return self._unwritable_outcomes(conn, batch, None)
        outcomes: list[Outcome] = []
        while batch:
            values: list[Any] = []
            in_ops = False
            try:
                began = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                in_ops = True
                for _, fn, _ in batch:
                    values.append(fn(conn))
                in_ops = False
                conn.execute("COMMIT")
            except Exception as exc:
                _rollback(conn)
                if _unwritable(exc):
                    if not checkpointed and self._checkpoint(conn):
                        checkpointed = True  # the WAL held the space this batch needs
                        continue
                    return outcomes + self._unwritable_outcomes(conn, batch, exc)
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
                self.commit_stats.committed(time.perf_counter() - began, len(batch))
                self._since_checkpoint += 1
                if self._since_checkpoint >= CHECKPOINT_COMMITS:
                    self._since_checkpoint = 0
                    self._checkpoint_due.set()
                if not self._writable:
                    logger.warning("the job store at %s is writable again", self._path)
                    self._writable = True
                outcomes += [(fut, None, v) for (_, _, fut), v in zip(batch, values, strict=True)]
                batch = []
        return outcomes

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        """Move the WAL into the database file and truncate it; True if that worked."""
        try:
            busy: int = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            logger.debug("WAL checkpoint failed", exc_info=exc)
            return False
        return busy == 0

    def _unwritable_outcomes(
        self, conn: sqlite3.Connection, batch: list[Op], exc: BaseException | None
    ) -> list[Outcome]:
        """Fail ``batch`` as unwritable; log the first failure only, not one per batch."""
        self._last_error = self._unwritable_message()
        if self._writable:
            self._writable = False
            logger.error("the job store at %s cannot write", self._path, exc_info=exc)
            # From now on keep the WAL small, so that on a tight disk only the data itself
            # needs new space and freeing a little is enough to go on.
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA wal_autocheckpoint={TIGHT_WAL_PAGES}")
        else:
            logger.debug("the job store at %s still cannot write", self._path, exc_info=exc)
        return [(fut, StoreUnwritable(self._last_error), None) for _, _, fut in batch]

    def _unwritable_message(self) -> str:
        return (
            f"the job store is full or unwritable ({self._path}): free disk space or make the"
            " file writable; writes resume by themselves once they succeed"
        )


def _unwritable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot write at all (full, read-only, failing)."""
    return isinstance(exc, sqlite3.Error) and (
        (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in UNWRITABLE_CODES
    )


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


def _claim_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of ``CLAIM`` (``COLUMNS``, then priority): its place in the claim order."""
    return row[-1], row[10], row[0]


def _job_row(job: JobRecord) -> tuple[Any, ...]:
    """The record as INSERT_JOB's parameters, in ``COLUMNS`` order."""
    return (
        job.id,
        job.queue,
        job.task,
        pack_payload(job),
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
        job.owner,
    )
