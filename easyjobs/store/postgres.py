"""PostgreSQL backend: one writer connection with group commit, and two small read pools.

Callers never touch a connection. A write becomes an op (one SQL statement and how to read its
answer), put on a FIFO when the method is called; the writer task takes everything queued (up
to ``MAX_BATCH``) and sends it as ``BEGIN; op; op; ...; COMMIT`` in one pipeline, one round
trip, then resolves the whole batch. Every op is a single statement (data-modifying CTEs make
``finish`` with children, ``fire_schedule`` and ``take_back`` one statement each), so the batch
needs no answer back before it commits; consecutive calls of one kind (e.g. a burst of
``add_jobs``) go as one statement over arrays of rows. A job's start, and the insert of a job
already dispatched (``LAZY``), wait a few milliseconds for another write to go with (or a read
that must see it); a job inserted, started and finished in one batch goes in as it ends, one
statement for the three (``_collapsed``). At most
``max_pending`` writes may wait to commit; one more fails at once with ``StoreError``.

Reads run on pooled autocommit connections beside the writer: one pool for point reads (a job,
the counts, tasks, schedules) and one for listings, so a burst of ``list_jobs`` neither delays a
lookup nor queues on the writer. A read notes how many writes were called before it and waits
until the writer has applied that many: read-your-writes, and no read waits on a later write.
``count_jobs`` reads ``ej_job_counts``, which triggers keep exact in every writing transaction
(see ``SCHEMA``).

If an op fails, its batch has committed nothing; the ops are then run again one transaction
each, so the bad op fails alone (with ``StoreError``) and its neighbours still commit.

A lost connection, a full disk or a read-only server is no op's fault: the batch fails with
``StoreUnwritable`` (nothing of it was acknowledged as committed) and the store reports itself
unwritable until a write commits. The writer reconnects on the next write, waiting a backoff
between failed attempts. Reads retry once on a fresh connection when theirs was lost.

The schema is made or migrated by ``open()`` inside one transaction holding an advisory lock, so
managers starting together on one database do it once; ``ej_meta`` holds its version, and a
store older than the database's schema refuses to open. Tables are made in the first schema of
the connection's ``search_path`` (e.g. ``?options=-csearch_path%3Dmyschema`` in the URL).

Use one event loop per store: its connections belong to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from easyjobs.errors import ConfigurationError, StoreError
from easyjobs.jobs import TERMINAL, TRANSITIONS, JobRecord, JobStatus
from easyjobs.store.base import (
    LEASE_S,
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
from easyjobs.store.listener import Listener
from easyjobs.store.signals import MAX_PAYLOAD, OUTCOME_PREFIX, Signals
from easyjobs.store.stats import CommitStats

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

logger = logging.getLogger("easyjobs.store")

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
Extract = Callable[[int, Rows], Any]
"""Turns a statement's row count and returned rows into the op's value."""
Op = tuple[str, str, Sequence[Any], Extract, "asyncio.Future[Any]", "Signals | None"]
Outcome = tuple["asyncio.Future[Any]", "BaseException | None", Any]

MAX_BATCH = 1000
MAX_PENDING = 50_000
"""Default bound on writes called but not yet committed."""
POINT_READERS = 2
SCAN_READERS = 2
POOL_TIMEOUT_S = 5.0
"""How long a read waits for a pooled connection (e.g. while the server is away)."""
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0
SCHEMA_VERSION = 5
LOCK_CLASS = 0x656A  # "ej": with hashtext(current_schema()) the key of the migration lock
CONNECT_DEFAULTS: dict[str, Any] = {
    "application_name": "easyjobs",
    "connect_timeout": 5,
    # A dead peer is noticed in seconds, not after the kernel's two hours.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""Connection options the URL may override."""
FENCED = "EJ001"
"""The SQLSTATE ``ej_fence`` raises."""
UNWRITABLE_STATES = {
    "53100": "the database disk is full",
    "53200": "the database is out of memory",
    "53300": "the database has too many connections",
    "25006": "the database is read-only",
    "57P01": "the database is shutting down",
    "57P02": "the database is shutting down",
    "57P03": "the database is starting or shutting down",
    FENCED: "this manager's lease in the database has expired; other managers may take its jobs"
            " over, so it writes nothing until it renews the lease",
}

FREE = "status = 'queued' AND owner IS NULL"
# One row per live manager; a lease is extended by the database's clock, never a manager's.
# ``address`` and ``serves`` (a msgpack list of [queue, task]) are its entry in the directory.
MANAGERS = (
    "CREATE TABLE ej_managers (id text PRIMARY KEY, name text NOT NULL,"
    " lease_until timestamptz NOT NULL, address text, serves bytea)"
)
ADVERTISE = (
    "WITH entry AS (UPDATE ej_managers SET address = %s, serves = %s WHERE id = %s RETURNING 1)"
    " SELECT pg_notify(%s, %s) FROM entry"
)
DIRECTORY = (
    "SELECT id, address, serves FROM ej_managers WHERE lease_until > now() AND id <> %s"
    " AND address IS NOT NULL AND serves IS NOT NULL"
)
# What each live manager's workers look like, as of its last lease renewal (msgpack maps).
WORKERS = (
    "CREATE TABLE ej_workers (manager text NOT NULL, id text NOT NULL, info bytea NOT NULL,"
    " PRIMARY KEY (manager, id))"
)
# Named credentials: a salt to derive each key from the manager secret, never the key.
CREDENTIALS = (
    "CREATE TABLE ej_credentials (name text PRIMARY KEY, role text NOT NULL, queues text,"
    " salt bytea NOT NULL, created_at double precision NOT NULL)"
)
ADD_CREDENTIAL = (
    "INSERT INTO ej_credentials (name, role, queues, salt, created_at)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING 1"
)
SHARE_WORKERS = (
    "WITH kept AS (INSERT INTO ej_workers (manager, id, info)"
    " SELECT %s, id, info FROM unnest(%s::text[], %s::bytea[]) AS w(id, info)"
    " ON CONFLICT (manager, id) DO UPDATE SET info = excluded.info RETURNING 1)"
    " DELETE FROM ej_workers WHERE manager = %s AND id <> ALL(%s::text[])"
)
OTHER_WORKERS = (
    "SELECT w.manager, w.info FROM ej_workers w JOIN ej_managers m ON m.id = w.manager"
    " WHERE m.lease_until > now() AND w.manager <> %s ORDER BY w.manager, w.id"
)
# By status, but only the statuses a job rests in: the queued and running rows churn (every
# job passes through both), and an index holding them would fill with dead entries that the
# writes by id would then walk, slower with every job done, if the planner picked it. A
# running job is found by its owner instead (ej_jobs_owner).
STATUS_INDEX = (
    "CREATE INDEX ej_jobs_status ON ej_jobs (status, created_at, id)"
    f" WHERE status NOT IN ('{JobStatus.QUEUED.value}', '{JobStatus.RUNNING.value}')"
)
# Every write transaction of a manager that joined starts with it: once its lease has expired,
# another manager may have taken its jobs over, and nothing it writes may land on top.
FENCE_FUNCTION = f"""CREATE FUNCTION ej_fence(manager text) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        -- The lock makes a take-over (which deletes the row) wait until this transaction ends.
        PERFORM FROM ej_managers WHERE id = manager AND lease_until > now() FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'easyjobs manager % holds no live lease', manager
                USING ERRCODE = '{FENCED}';
        END IF;
    END $$"""
BY_ID_OPS = frozenset({"add_jobs", "add_dispatched", "add_finished", "mark_running", "finish",
                       "retry", "requeue", "release"})
"""Ops whose statements find every row by its id: a batch of only these runs with sequential
scans off (``BY_ID`` alone does not do, as a queue table grows by thousands of rows a second
and its statistics lag far behind: the planner would scan the whole table per statement)."""
UNACKNOWLEDGED = frozenset({"claim", "adopt", "mark_running", "requeue", "announce"})
LAZY = frozenset({"add_dispatched", "mark_running"})
"""Ops that may wait up to ``LAZY_S`` for the next write to go with: a short job's insert (it
went to a worker before it) and start then commit in its outcome's transaction, one commit
where there were two in turn."""
LAZY_S = 0.005
"""Ops whose commit nobody is told of and whose loss in a server crash at-least-once already
allows (a job back in the queue or with its manager, to run again): a batch of only these
commits without waiting for the WAL flush (``synchronous_commit = off``)."""
"""A job waiting in the queue for any manager; spelled out so the claim index matches it."""
INDEXES = (
    # take_back() finds running, waiting and retrying jobs by it; list_jobs(status=...) too.
    "CREATE INDEX ej_jobs_status ON ej_jobs (status, created_at, id)",
    # claim() reads the first free jobs of one task in order, whatever the rest of the queue.
    f"CREATE INDEX ej_jobs_claim ON ej_jobs (queue, task, priority, created_at, id) WHERE {FREE}",
    # take_back() frees owned jobs without reading the free ones.
    "CREATE INDEX ej_jobs_owner ON ej_jobs (owner) WHERE owner IS NOT NULL",
)
"""The indexes schema version 2 added or changed."""
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Version 1 had no owner, claimed every queued job, and listed unfinished jobs by an index
    # that also held the whole queued backlog.
    1: (
        "ALTER TABLE ej_jobs ADD COLUMN owner text",
        "DROP INDEX ej_jobs_claim",
        "DROP INDEX ej_jobs_unfinished",
        *INDEXES,
    ),
    # Version 2 had no leases (one manager only), and indexed the churning statuses.
    2: (MANAGERS, WORKERS, FENCE_FUNCTION, "DROP INDEX ej_jobs_status", STATUS_INDEX),
    # Version 3 had no named credentials.
    3: (CREDENTIALS,),
    # Version 4 had no directory of managers (``MANAGERS`` above has it: version 2 made it).
    4: ("ALTER TABLE ej_managers ADD COLUMN IF NOT EXISTS address text,"
        " ADD COLUMN IF NOT EXISTS serves bytea",),
}
"""The statements that take a schema from a version to the next, run by ``open()``."""

SCHEMA = (
    """CREATE TABLE ej_jobs (
        id text PRIMARY KEY, queue text NOT NULL, task text NOT NULL, payload bytea NOT NULL,
        status text NOT NULL, attempts integer NOT NULL, worker text, parent text,
        result bytea, error bytea, created_at double precision NOT NULL,
        started_at double precision, finished_at double precision,
        dependencies bytea NOT NULL, on_failure_job text, handler_for text,
        next_attempt_at double precision, priority integer NOT NULL DEFAULT 0, owner text)""",
    # list_jobs() reads it backwards: newest first, and the cursor is a range on the key.
    "CREATE INDEX ej_jobs_created ON ej_jobs (created_at, id)",
    STATUS_INDEX,
    *INDEXES[1:],
    MANAGERS,
    WORKERS,
    CREDENTIALS,
    FENCE_FUNCTION,
    """CREATE TABLE ej_tasks (
        queue text NOT NULL, name text NOT NULL, spec bytea NOT NULL,
        updated_at double precision NOT NULL, PRIMARY KEY (queue, name))""",
    """CREATE TABLE ej_schedules (
        queue text NOT NULL, task text NOT NULL, last_fire double precision NOT NULL,
        PRIMARY KEY (queue, task))""",
    # count_jobs() reads this instead of scanning jobs. Updating one counts row once per
    # statement would pile up row versions (a transaction that updates a row k times walks
    # k versions each time), so the triggers append one delta per (queue, status) and
    # statement, and every writing transaction folds them in once, at its end (FOLD_COUNTS).
    # Deltas another writer left unfolded are still counted by count_jobs(): exact, whoever
    # writes. Counts at zero stay, as rows for next time.
    """CREATE TABLE ej_job_counts (
        queue text NOT NULL, status text NOT NULL, n bigint NOT NULL,
        PRIMARY KEY (queue, status))""",
    "CREATE TABLE ej_job_count_deltas ("
    " queue text NOT NULL, status text NOT NULL, n bigint NOT NULL)",
    """CREATE FUNCTION ej_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO ej_job_count_deltas (queue, status, n)
            SELECT queue, status, -count(*) FROM old_rows GROUP BY queue, status;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO ej_job_count_deltas (queue, status, n)
            SELECT queue, status, count(*) FROM new_rows GROUP BY queue, status;
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER ej_job_counts_insert AFTER INSERT ON ej_jobs REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION ej_count_jobs()",
    "CREATE TRIGGER ej_job_counts_update AFTER UPDATE ON ej_jobs"
    " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION ej_count_jobs()",
    "CREATE TRIGGER ej_job_counts_delete AFTER DELETE ON ej_jobs REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION ej_count_jobs()",
)
NOTIFY = "SELECT pg_notify(%s, %s)"
# The payload, then the tokens of the outcomes this transaction wrote (its xmin, and the status
# and time it set; a job another transaction finished first keeps that outcome): see Signals.
NOTIFY_OUTCOMES = (
    "SELECT pg_notify(%s, %s || coalesce((SELECT %s || string_agg(t.token, ' ' ORDER BY t.n)"
    " FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[]) WITH ORDINALITY"
    " AS t(id, status, at, token, n) JOIN ej_jobs j ON j.id = t.id"
    " WHERE j.xmin = pg_current_xact_id()::xid AND j.status = t.status"
    " AND j.finished_at = t.at), ''))"
)
REMEMBER_PAUSE = (
    "INSERT INTO ej_meta (key, value) VALUES ('paused', %s)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
CHANNEL_MAX = 63
"""Bytes of a channel name PostgreSQL keeps."""
FOLDING = (
    "WITH d AS (DELETE FROM ej_job_count_deltas RETURNING queue, status, n),"
    " folded AS (INSERT INTO ej_job_counts (queue, status, n)"
    " SELECT queue, status, sum(n) FROM d GROUP BY queue, status"
    " ON CONFLICT (queue, status) DO UPDATE SET n = ej_job_counts.n + excluded.n) "
)
"""Folds the count deltas in, before the statement it starts (one round of the pipeline less)."""
FOLD_COUNTS = FOLDING + "SELECT"
COUNT_JOBS = (
    "SELECT queue, status, sum(n)::bigint FROM"
    " (SELECT queue, status, n FROM ej_job_counts"
    " UNION ALL SELECT queue, status, n FROM ej_job_count_deltas) c"
    " GROUP BY queue, status HAVING sum(n) > 0"
)

COLUMNS = (
    "id, queue, task, payload, status, attempts, worker, parent, result, error,"
    " created_at, started_at, finished_at,"
    " dependencies, on_failure_job, handler_for, next_attempt_at, owner"
)
ARRAY_TYPES = (
    "text", "text", "text", "bytea", "text", "int4", "text", "text", "bytea", "bytea",
    "float8", "float8", "float8", "bytea", "text", "text", "float8", "text",
)  # fmt: skip
"""The element type of each of ``COLUMNS``, for inserting many rows as arrays."""
# Rows go in in call order (the first of two records with one id wins) and an existing id is
# left as it was. ``{cond}`` makes the insert depend on another part of the statement.
INSERT_ROWS = (
    f"INSERT INTO ej_jobs ({COLUMNS}) SELECT {COLUMNS}"
    f" FROM unnest({', '.join(f'%b::{t}[]' for t in ARRAY_TYPES)})"
    f" WITH ORDINALITY AS j({COLUMNS}, n){{cond}} ORDER BY n ON CONFLICT (id) DO NOTHING"
)
INSERT_JOBS = INSERT_ROWS.format(cond="") + " RETURNING id"
SELECT_JOB_COLUMNS = f"SELECT {COLUMNS} FROM ej_jobs"


def _when(new: JobStatus) -> str:
    """SQL condition true only where the lifecycle table allows moving to ``new``."""
    old = sorted(s.value for s, targets in TRANSITIONS.items() if new in targets)
    return f"status IN ({', '.join(repr(s) for s in old)})"


# The status changes take one row per job as arrays (ending with the ids), so that the writer
# can send consecutive calls of one kind as one statement; RETURNING says which jobs changed.
BY_ID = "j.id = ANY(%b::text[])"
"""The ids again, as a condition the primary key serves: without it the planner, its row
estimates stale under a queue's churn, joins the ids with a scan of the whole table, once per
statement of a group commit."""
MARK_RUNNING = (
    f"UPDATE ej_jobs j SET status = '{JobStatus.RUNNING.value}', attempts = u.attempts,"
    " worker = u.worker, started_at = u.at"
    " FROM unnest(%b::int4[], %b::text[], %b::float8[], %b::text[], %b::text[])"
    " AS u(attempts, worker, at, id, owner)"
    f" WHERE j.id = u.id AND (u.owner IS NULL OR j.owner = u.owner) AND {BY_ID}"
    f" AND {_when(JobStatus.RUNNING)} RETURNING j.id"
)
REQUEUE = (
    f"UPDATE ej_jobs SET status = '{JobStatus.QUEUED.value}', worker = NULL,"
    f" next_attempt_at = NULL WHERE id = ANY(%b::text[]) AND {_when(JobStatus.QUEUED)}"
)
RETRY = (
    f"UPDATE ej_jobs j SET status = '{JobStatus.RETRYING.value}', error = u.error,"
    " next_attempt_at = u.due, worker = NULL"
    " FROM unnest(%b::bytea[], %b::float8[], %b::text[]) AS u(error, due, id)"
    f" WHERE j.id = u.id AND {BY_ID} AND {_when(JobStatus.RETRYING)} RETURNING j.id"
)
FINISH = {
    status: f"UPDATE ej_jobs j SET status = '{status.value}', result = u.result,"
    " error = u.error, finished_at = u.at,"
    " on_failure_job = COALESCE(u.on_failure_job, j.on_failure_job), next_attempt_at = NULL,"
    " owner = NULL"
    " FROM unnest(%b::bytea[], %b::bytea[], %b::float8[], %b::text[], %b::text[])"
    " AS u(result, error, at, on_failure_job, id)"
    f" WHERE j.id = u.id AND {BY_ID} AND {_when(status)} RETURNING j.id"
    for status in TERMINAL
}
MERGEABLE = {
    INSERT_JOBS: (0, False),
    REQUEUE: (0, False),
    MARK_RUNNING: (3, True),
    RETRY: (2, True),
    **{sql: (4, True) for sql in FINISH.values()},
}
"""Statements whose consecutive calls may be sent as one: the index of the ids among their
arrays, and whether an id already in the statement must start a new one (an update changes a
row at most once per statement, where calls one after the other would see each other)."""
# The children go in only if the outcome did, in the same statement: all or nothing.
FINISH_WITH_CHILDREN = {
    status: f"WITH done AS ({sql}),"
    f" children AS ({INSERT_ROWS.format(cond=' WHERE EXISTS (SELECT FROM done)')})"
    " SELECT count(*) FROM done"
    for status, sql in FINISH.items()
}
FINISHED_BY = {sql: status for status, sql in FINISH.items()}
"""The outcome each ``FINISH`` statement writes."""
# Changes one row exactly when the schedule is new or ``tick`` is later than its last fire.
FIRE_SCHEDULE = (
    "WITH fired AS (INSERT INTO ej_schedules (queue, task, last_fire) VALUES (%s, %s, %s)"
    " ON CONFLICT (queue, task) DO UPDATE SET last_fire = excluded.last_fire"
    " WHERE ej_schedules.last_fire < excluded.last_fire RETURNING 1),"
    f" jobs AS ({INSERT_ROWS.format(cond=' WHERE EXISTS (SELECT FROM fired)')})"
    " SELECT count(*) FROM fired"
)
UPSERT_TASKS = (
    "INSERT INTO ej_tasks (queue, name, spec, updated_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::float8[])"
    " ON CONFLICT (queue, name)"
    " DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at"
)
# A write that touches no job, for probe().
PROBE = (
    "INSERT INTO ej_meta (key, value) VALUES ('probed_at', %s)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
# Rows another manager is claiming are skipped, not waited for; a row it has claimed since
# this statement began fails the recheck of FREE once locked. RETURNING has no order: the
# caller sorts by the priority returned last.
CLAIM = (
    "UPDATE ej_jobs SET owner = %s WHERE id IN (SELECT id FROM ej_jobs"
    f" WHERE queue = %s AND task = %s AND {FREE}"
    " ORDER BY priority, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
    f" RETURNING {COLUMNS}, priority"
)
ADOPT = f"UPDATE ej_jobs SET owner = %s WHERE id = ANY(%s::text[]) AND {FREE} RETURNING {COLUMNS}"
RELEASE = (
    "UPDATE ej_jobs SET owner = NULL WHERE id = ANY(%s::text[]) AND owner = %s"
    f" AND status = '{JobStatus.QUEUED.value}'"
)
QUEUED_TASKS = f"SELECT DISTINCT queue, task FROM ej_jobs WHERE {FREE}"
QUEUED_BY_TASK = (
    f"SELECT queue, task, count(*), min(created_at) FROM ej_jobs WHERE {FREE}"
    " GROUP BY queue, task"
    " UNION ALL SELECT queue, task, count(*), min(created_at) FROM ej_jobs"
    " WHERE owner IS NOT NULL AND status = 'queued' GROUP BY queue, task"
)
"""The free queued jobs by the claim index, the owned ones by the owner index."""
HELD = f"'{JobStatus.WAITING.value}', '{JobStatus.RETRYING.value}'"
"""The unfinished statuses whose jobs stay with the manager that takes them back."""
# Sub-statements see one snapshot and must not change a row twice, so each takes its own
# statuses: running jobs are requeued and freed, other owned jobs freed (by the owner index),
# waiting and retrying jobs owned (by the status index). One row even when none is held.


def _taking_over(gone: str, first: str, guard: str = "true") -> str:
    """The end of a statement that takes over the jobs of the managers whose ``owner`` matches
    ``gone``: their running jobs requeued, their queued jobs freed (and every listener told,
    once), their waiting and retrying jobs, and any left with no owner, held by the caller.
    Placeholders: the caller's id, then the channel. Sub-statements see one snapshot and must
    not change a row twice, so each takes its own statuses."""
    return (
        f" requeued AS (UPDATE ej_jobs SET status = '{JobStatus.QUEUED.value}', worker = NULL,"
        f" owner = NULL WHERE {gone} AND status = '{JobStatus.RUNNING.value}' RETURNING 1),"
        f" freed AS (UPDATE ej_jobs SET owner = NULL WHERE {gone}"
        f" AND status = '{JobStatus.QUEUED.value}' RETURNING 1),"
        f" held AS (UPDATE ej_jobs SET owner = %s WHERE ({gone} OR owner IS NULL)"
        f" AND status IN ({HELD}) AND {guard} RETURNING {COLUMNS}),"
        " told AS (SELECT pg_notify(%s, 'ready *')"
        " WHERE EXISTS (SELECT FROM requeued) OR EXISTS (SELECT FROM freed))"
        f" SELECT {first}, (SELECT count(*) FROM told), held.*"
        " FROM (VALUES (1)) AS one (x) LEFT JOIN held ON true ORDER BY held.created_at, held.id"
    )


# Join with a fresh lease, and take over from the managers whose lease expired, and from
# owners no lease names at all (e.g. a store from before leases).
TAKE_BACK = (
    "WITH joined AS (INSERT INTO ej_managers (id, name, lease_until)"
    " VALUES (%s, %s, now() + make_interval(secs => %s))"
    " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until RETURNING 1),"
    " dead AS (DELETE FROM ej_managers WHERE lease_until < now() AND id <> %s RETURNING id),"
    " unlisted AS (DELETE FROM ej_workers WHERE manager IN (SELECT id FROM dead)),"
    + _taking_over("owner IS NOT NULL AND (owner IN (SELECT id FROM dead)"
                   " OR owner NOT IN (SELECT id FROM ej_managers))",
                   "(SELECT count(*) FROM requeued)")
)
# Extend the lease (by the database's clock), then take over from the managers whose lease
# expired, and from owners no lease names (a write of a manager taken over while its
# transaction ran); a manager whose lease is gone (taken over itself) takes nothing.
RENEW = (
    "WITH renewed AS (UPDATE ej_managers SET lease_until = now() + make_interval(secs => %s)"
    " WHERE id = %s RETURNING 1),"
    " dead AS (DELETE FROM ej_managers WHERE lease_until < now() AND id <> %s"
    " AND EXISTS (SELECT FROM renewed) RETURNING id),"
    " unlisted AS (DELETE FROM ej_workers WHERE manager IN (SELECT id FROM dead)),"
    + _taking_over("EXISTS (SELECT FROM renewed) AND owner IS NOT NULL"
                   " AND (owner IN (SELECT id FROM dead)"
                   " OR owner NOT IN (SELECT id FROM ej_managers))",
                   "(SELECT count(*) FROM renewed)", "EXISTS (SELECT FROM renewed)")
)
# A manager stopping: its lease ends and every job it holds is left for the others, who are
# told, and that its entry in the directory is gone.
LEAVE = (
    "WITH gone AS (DELETE FROM ej_managers WHERE id = %s),"
    " unlisted AS (DELETE FROM ej_workers WHERE manager = %s),"
    f" requeued AS (UPDATE ej_jobs SET status = '{JobStatus.QUEUED.value}', worker = NULL,"
    f" owner = NULL WHERE owner = %s AND status = '{JobStatus.RUNNING.value}' RETURNING 1),"
    f" freed AS (UPDATE ej_jobs SET owner = NULL WHERE owner = %s"
    f" AND status <> '{JobStatus.RUNNING.value}' RETURNING 1)"
    " SELECT pg_notify(%s, CASE WHEN EXISTS (SELECT FROM requeued) OR EXISTS (SELECT FROM freed)"
    " THEN E'ready *\\nworkers' ELSE 'workers' END)"
)
SELECT_JOB = f"{SELECT_JOB_COLUMNS} WHERE id = %s"
# Strictly after the cursor in list_jobs() order (created_at DESC, id DESC); an unknown cursor
# compares as NULL, so the page is empty.
OLDER_THAN_CURSOR = "(created_at, id) < (SELECT created_at, id FROM ej_jobs WHERE id = %s)"


class PostgresStore(Store):
    """A store in a PostgreSQL database (15 or later), for the coroutines of one event loop.

    ``url`` is a libpq URL, ``postgresql://user@host:5432/dbname``; its query string may set any
    libpq option (``sslmode``, ``options``, and the keepalives this store otherwise sets).
    A password in it never appears in a message or the log. ``max_pending`` bounds the writes
    called but not yet committed.
    """

    def __init__(self, url: str, *, max_pending: int = MAX_PENDING) -> None:
        if max_pending < 1:
            raise ConfigurationError(f"max_pending must be at least 1, not {max_pending}")
        _driver()
        import psycopg
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise ConfigurationError(
                "the PostgreSQL URL cannot be parsed; use postgresql://user@host:5432/dbname"
            ) from None
        self._url = url
        self._options = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in params}
        host = str(params.get("host") or "localhost")
        self._where = f"{host}:{params.get('port') or 5432}/{params.get('dbname') or '(default)'}"
        self._password = str(params.get("password") or "")
        self._max_pending = max_pending
        self._writes: deque[Op] = deque()
        self._wake = asyncio.Event()
        self._eager = 0
        """Writes queued that the writer must not hold back (all but ``LAZY`` ones)."""
        self._hurry = False
        """The ``LAZY`` writes queued must go now (their time is up, or a read waits)."""
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._issued = 0  # writes queued so far
        self._applied = 0  # of those, writes the writer has committed or failed
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_order = itertools.count()
        self._reads: set[asyncio.Task[Any]] = set()
        self._commits = 0
        self.commit_stats = CommitStats()
        self._writable = True
        self._last_error: str | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._reconnect_at = 0.0
        self._reconnect_wait = RECONNECT_FIRST_S
        self._point_pool: AsyncConnectionPool | None = None
        self._scan_pool: AsyncConnectionPool | None = None
        self._lease_pool: AsyncConnectionPool | None = None
        self._writer: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[None] | None = None
        self._closed = False
        self._channel = ""
        """The channel of this schema's notifications (set at open)."""
        self._listener: Listener | None = None
        self._fence: str | None = None
        """The manager whose live lease every write transaction checks (set by take_back)."""

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the database, for messages (never the password)."""
        return self._where

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
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
        opening = self._opening
        try:
            await asyncio.shield(opening)
        except StoreError:
            if self._opening is opening:  # nothing was left open; open() may be retried
                self._opening = None
            raise

    async def close(self) -> None:
        if self._opening is not None and not self._opening.done():
            with contextlib.suppress(StoreError):  # let an open() in flight settle first
                await asyncio.shield(self._opening)
        if self._closed:
            if self._writer is not None:
                await asyncio.shield(self._writer)
            return
        self._closed = True
        self._wake.set()
        if self._listener is not None:
            await self._listener.stop()
        if self._writer is not None:  # it drains every write already called, then returns
            await asyncio.shield(self._writer)
        while self._reads:
            await asyncio.gather(*self._reads, return_exceptions=True)
        await self._release()

    def probe(self) -> asyncio.Future[None]:
        return self._write("probe", PROBE, (repr(time.time()),), _none)

    def add_jobs(self, jobs: Sequence[JobRecord], *, soon: bool = False
                 ) -> asyncio.Future[list[bool]]:
        columns = _job_columns(jobs)
        news = _left_free(jobs)
        ids = [job.id for job in jobs]

        def extract(_: int, rows: Rows) -> list[bool]:
            fresh = {row[0] for row in rows}
            answers = []
            for job_id in ids:  # only the first record of an id can have been inserted
                answers.append(job_id in fresh)
                fresh.discard(job_id)
            return answers

        return self._write("add_dispatched" if soon else "add_jobs", INSERT_JOBS, columns,
                           extract, news)

    def mark_running(
        self, job_id: str, worker: str, attempt: int, at: float, owner: str | None = None
    ) -> asyncio.Future[None]:
        params = ([attempt], [worker], [float(at)], [job_id], [owner], [job_id])
        return self._write("mark_running", MARK_RUNNING, params, _none)

    def requeue(self, job_ids: Sequence[str]) -> asyncio.Future[None]:
        return self._write("requeue", REQUEUE, (list(job_ids),), _none)

    def retry(
        self, job_id: str, error: dict[str, str], next_attempt_at: float
    ) -> asyncio.Future[bool]:
        params = ([pack(error, f"job {job_id} error")], [float(next_attempt_at)], [job_id],
                  [job_id])
        return self._write("retry", RETRY, params, _changed_one)

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
        params: tuple[list[Any], ...] = (
            [None if result is None else pack(result, f"job {job_id} result")],
            [None if error is None else pack(error, f"job {job_id} error")],
            [float(at)],
            [on_failure_job],
            [job_id],
            [job_id],
        )
        news = _left_free(children)
        news.done.add(job_id)
        news.outcomes[job_id] = (status.value, result, error)
        if status is JobStatus.CANCELLED:
            news.cancelled.add(job_id)
        if not children:
            return self._write("finish", FINISH[status], params, _changed_one, news)
        params += _job_columns(children)
        return self._write("finish", FINISH_WITH_CHILDREN[status], params, _counted_one, news)

    def fire_schedule(
        self, queue: str, task: str, tick: float, job: JobRecord,
        dependencies: Sequence[JobRecord] = (),
    ) -> asyncio.Future[bool]:
        params = (queue, task, tick, *_job_columns([job, *dependencies]))
        return self._write("fire_schedule", FIRE_SCHEDULE, params, _counted_one,
                           _left_free([job, *dependencies]))

    def save_tasks(self, tasks: Sequence[TaskSpec]) -> asyncio.Future[None]:
        # One statement may not upsert a key twice; the last spec of a key wins, as in order.
        specs = {(q, name): pack(spec, f"task {q}/{name} spec") for q, name, spec in tasks}
        now = time.time()
        params = (
            [q for q, _ in specs], [name for _, name in specs], list(specs.values()),
            [now] * len(specs),
        )
        return self._write("save_tasks", UPSERT_TASKS, params, _none, Signals(tasks=True))

    def get_job(self, job_id: str) -> asyncio.Future[JobRecord | None]:
        return self._read(
            "get_job", SELECT_JOB, (job_id,),
            lambda rows: record_from_row(rows[0]) if rows else None, scan=False,
        )

    def get_jobs(self, job_ids: Sequence[str]) -> asyncio.Future[list[JobRecord]]:
        return self._read("get_jobs", f"{SELECT_JOB_COLUMNS} WHERE id = ANY(%s::text[])",
                          (list(dict.fromkeys(job_ids)),), _job_records, scan=False)

    def claim(
        self, queue: str, task: str, limit: int, owner: str
    ) -> asyncio.Future[list[JobRecord]]:
        if limit < 1:
            return self._answer([])

        def extract(_: int, rows: Rows) -> list[JobRecord]:
            rows.sort(key=lambda row: (row[-1], row[10], row[0]))  # priority, created_at, id
            return [record_from_row(row[:-1]) for row in rows]

        return self._write("claim", CLAIM, (owner, queue, task, limit), extract)

    def adopt(self, job_ids: Sequence[str], owner: str) -> asyncio.Future[list[JobRecord]]:
        if not job_ids:
            return self._answer([])
        order = {job_id: n for n, job_id in enumerate(dict.fromkeys(job_ids))}

        def extract(_: int, rows: Rows) -> list[JobRecord]:
            rows.sort(key=lambda row: order[row[0]])
            return _job_records(rows)

        return self._write("adopt", ADOPT, (owner, list(job_ids)), extract)

    def release(self, jobs: Sequence[JobRecord], owner: str) -> asyncio.Future[None]:
        news = Signals(ready={(job.queue, job.task) for job in jobs})
        return self._write("release", RELEASE, ([job.id for job in jobs], owner), _none, news)

    def announce(self, news: Signals) -> asyncio.Future[None]:
        if news.pause is None:
            return self._write("announce", "SELECT 1", (), _none, news)
        return self._write("pause", REMEMBER_PAUSE, ("1" if news.pause else "0",), _none,
                           news)

    def paused(self) -> asyncio.Future[bool]:
        return self._read("paused", "SELECT value FROM ej_meta WHERE key = 'paused'", (),
                          lambda rows: rows == [("1",)], scan=False)

    async def listen(self, on_signals: Callable[[Signals], None],
                     on_connect: Callable[[], None]) -> None:
        if self._listener is not None or self._refusal() is not None:
            raise StoreError("listen() needs an open store, and is called once")
        self._listener = Listener(self._connect, self._channel, self._where, on_signals,
                                  on_connect, self._fence)
        await self._listener.start()

    def queued_tasks(self) -> asyncio.Future[set[tuple[str, str]]]:
        return self._read("queued_tasks", QUEUED_TASKS, (),
                          lambda rows: {(q, t) for q, t in rows}, scan=True)

    def take_back(self, owner: str) -> asyncio.Future[tuple[int, list[JobRecord]]]:
        def extract(_: int, rows: Rows) -> tuple[int, list[JobRecord]]:
            self._fence = owner  # joined: every later transaction checks the lease
            if self._listener is not None:  # and names its news, which it skips
                self._listener.origin = owner
            return rows[0][0], _held(rows)

        self._fence = None  # (re)joining: the lease to check is the one this makes
        params = (owner, f"{socket.gethostname()}:{os.getpid()}", LEASE_S, owner, owner,
                  self._channel)
        return self._write("take_back", TAKE_BACK, params, extract)

    def renew(self, owner: str) -> asyncio.Future[list[JobRecord] | None]:
        # Beside the writer, on a pooled connection (one statement, its own transaction): a
        # lease must never wait behind a backlog of job writes. It touches only other
        # managers' jobs, so its order among this manager's writes does not matter.
        return self._beside("renew", RENEW, (LEASE_S, owner, owner, owner, self._channel),
                            lambda rows: _held(rows) if rows[0][0] else None)

    def _beside(self, name: str, sql: str, params: Sequence[Any],
                extract: Callable[[Rows], T]) -> asyncio.Future[T]:
        """Run one statement (its own transaction) now, beside the writer and the reads, on a
        connection of its own: the lease must not wait behind a backlog of either."""
        return self._pooled(name, sql, params, extract, "lease", after_writes=False)

    def leave(self, owner: str) -> asyncio.Future[None]:
        return self._write("leave", LEAVE, (owner, owner, owner, owner, self._channel), _none)

    def share_workers(self, owner: str, workers: Sequence[dict[str, Any]]
                      ) -> asyncio.Future[None]:
        ids = [str(worker["id"]) for worker in workers]
        infos = [pack(worker, "a worker's description") for worker in workers]
        return self._beside("share_workers", SHARE_WORKERS, (owner, ids, infos, owner, ids),
                            lambda rows: None)

    def other_workers(self, owner: str) -> asyncio.Future[list[dict[str, Any]]]:
        return self._read("other_workers", OTHER_WORKERS, (owner,),
                          lambda rows: [unpack(info) | {"manager": m} for m, info in rows],
                          scan=False)

    def advertise(self, owner: str, address: str, serves: Sequence[tuple[str, str]]
                  ) -> asyncio.Future[None]:
        entry = pack([list(key) for key in serves], "the tasks a manager serves")
        news = Signals(workers=True, origin=owner).encode()
        return self._beside("advertise", ADVERTISE, (address, entry, owner, self._channel, news),
                            lambda rows: None)

    def directory(self, owner: str) -> asyncio.Future[dict[str, tuple[str, list[tuple[str, str]]]]]:
        def extract(rows: Rows) -> dict[str, tuple[str, list[tuple[str, str]]]]:
            return {manager: (address, [(q, t) for q, t in unpack(serves)])
                    for manager, address, serves in rows}

        return self._pooled("directory", DIRECTORY, (owner,), extract, "point",
                            after_writes=False)

    @property
    def shared(self) -> bool:
        return True

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
        for clause, value in (("queue = %s", queue), ("task = %s", task),
                              ("status = %s", status), (OLDER_THAN_CURSOR, before),
                              ("queue = ANY(%s)", None if queues is None else list(queues))):
            if value is not None:
                clauses.append(clause)
                params.append(value.value if isinstance(value, JobStatus) else value)
        sql = SELECT_JOB_COLUMNS
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at DESC, id DESC LIMIT %s"
        params.append(max(1, min(limit, MAX_PAGE)))
        return self._read("list_jobs", sql, params, _job_records, scan=True)

    def add_credential(self, credential: CredentialRecord) -> asyncio.Future[bool]:
        params = (credential.name, credential.role, queues_text(credential.queues),
                  credential.salt, credential.created_at)
        return self._write("add_credential", ADD_CREDENTIAL, params,
                           lambda _, rows: bool(rows), Signals(credentials=True))

    def revoke_credential(self, name: str) -> asyncio.Future[bool]:
        return self._write("revoke_credential", "DELETE FROM ej_credentials WHERE name = %s",
                           (name,), _changed_one, Signals(credentials=True))

    def load_credentials(self) -> asyncio.Future[list[CredentialRecord]]:
        return self._read(
            "load_credentials",
            "SELECT name, role, queues, salt, created_at FROM ej_credentials ORDER BY name", (),
            lambda rows: [credential_from_row(row) for row in rows], scan=False,
        )

    def load_tasks(self) -> asyncio.Future[list[TaskSpec]]:
        return self._read(
            "load_tasks", "SELECT queue, name, spec FROM ej_tasks ORDER BY queue, name", (),
            lambda rows: [(q, n, unpack(spec)) for q, n, spec in rows], scan=False,
        )

    def count_jobs(self) -> asyncio.Future[dict[tuple[str, str], int]]:
        return self._read(
            "count_jobs", COUNT_JOBS, (),
            lambda rows: {(q, s): n for q, s, n in rows}, scan=False,
        )

    def queued_by_task(self) -> asyncio.Future[dict[tuple[str, str], tuple[int, float]]]:
        return self._read("queued_by_task", QUEUED_BY_TASK, (), merge_queued, scan=True)

    def load_schedules(self) -> asyncio.Future[dict[tuple[str, str], float]]:
        return self._read(
            "load_schedules", "SELECT queue, task, last_fire FROM ej_schedules", (),
            lambda rows: {(q, t): last for q, t, last in rows}, scan=False,
        )

    # --- calls: queued at once, in call order

    def _write(
        self, name: str, sql: str, params: Sequence[Any], extract: Extract,
        news: Signals | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one statement for the writer now; the future resolves once it has committed.

        ``news`` is what the other managers are told once it commits (in its transaction's
        one notification). Cancelling the future does not withdraw the op: it still runs.
        """
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        refusal = self._refusal()
        if refusal is None and self._issued - self._applied >= self._max_pending:
            refusal = StoreError(
                f"the job store is overloaded ({self._max_pending} writes are waiting for"
                " the database); try again later"
            )
        if refusal is not None:
            fut.set_exception(refusal)
            return fut
        self._issued += 1
        self._writes.append((name, sql, params, extract, fut, news or None))
        if name not in LAZY:
            self._eager += 1
            self._wake.set()
        elif self._lazy_timer is None:
            self._lazy_timer = asyncio.get_running_loop().call_later(LAZY_S, self._send_lazy)
        return fut

    def _send_lazy(self) -> None:
        """The queued ``LAZY`` writes go with the next batch, now."""
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        self._hurry = True
        self._wake.set()

    def _read(
        self, name: str, sql: str, params: Sequence[Any], extract: Callable[[Rows], T],
        *, scan: bool,
    ) -> asyncio.Future[T]:
        """Run ``sql`` on a pooled connection once every write called so far is applied."""
        return self._pooled(name, sql, params, extract, "scan" if scan else "point",
                            after_writes=True)

    def _pooled(
        self, name: str, sql: str, params: Sequence[Any], extract: Callable[[Rows], T],
        lane: str, *, after_writes: bool,
    ) -> asyncio.Future[T]:
        """Run ``sql`` on a connection of ``lane``'s pool (tracked until ``close``), after
        the writes called so far if ``after_writes``."""
        refusal = self._refusal()
        if refusal is not None:
            fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            fut.set_exception(refusal)
            return fut
        pool = {"point": self._point_pool, "scan": self._scan_pool,
                "lease": self._lease_pool}[lane]
        assert pool is not None  # serving: open() made every pool
        writes = self._issued_not_applied() if after_writes else None
        task = asyncio.get_running_loop().create_task(
            self._run_read(name, sql, params, extract, pool, writes))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        return task

    def _answer(self, value: T) -> asyncio.Future[T]:
        """A call that needs nothing from the database, answered at once unless refused."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        refusal = self._refusal()
        if refusal is not None:
            fut.set_exception(refusal)
        else:
            fut.set_result(value)
        return fut

    def _issued_not_applied(self) -> asyncio.Future[None] | None:
        """A future that resolves once every write called so far is applied, or None if they are."""
        if self._applied >= self._issued:
            return None
        self._send_lazy()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (self._issued, next(self._waiter_order), fut))
        return fut

    def _refusal(self) -> StoreError | None:
        """Why no call may be queued now, or None."""
        if self._closed:
            return StoreError("store is closed")
        if self._writer is None:
            return StoreError("store is not open; await open() first")
        return None

    # --- opening and closing

    async def _open(self) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        conn = await self._connect()
        try:
            await self._create_schema(conn)
            cur = await conn.execute("SELECT current_schema()")
            (schema,) = await cur.fetchone() or ("",)
            self._channel = f"easyjobs {schema}"[:CHANNEL_MAX]
            pools = [
                AsyncConnectionPool(
                    self._url, kwargs={**self._options, "autocommit": True},
                    min_size=1, max_size=size, open=False, timeout=POOL_TIMEOUT_S,
                    name=f"easyjobs-{lane}",
                )
                for lane, size in (("point-reads", POINT_READERS), ("scans", SCAN_READERS),
                                   ("lease", 1))
            ]
            self._point_pool, self._scan_pool, self._lease_pool = pools
            for pool in pools:
                await pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except BaseException as exc:
            self._conn = conn
            await self._release()
            if isinstance(exc, psycopg.Error):
                raise self._open_error(exc) from None
            if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                logger.exception("cannot prepare the PostgreSQL store at %s", self._where)
                raise StoreError(
                    f"cannot prepare the store at PostgreSQL {self._where} (see the log)"
                ) from None
            raise
        self._conn = conn
        self._writer = asyncio.get_running_loop().create_task(self._serve())

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection, or ``StoreError`` in one line saying why not."""
        import psycopg
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, **self._options
            )
        except psycopg.Error as exc:
            raise self._open_error(exc) from None

    def _open_error(self, exc: BaseException) -> StoreError:
        return StoreError(f"cannot connect to PostgreSQL at {self._where}: {self._reason(exc)}")

    def _reason(self, exc: BaseException) -> str:
        """libpq's own reason, on one line and without a password (it has none, to be sure)."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = text.rpartition(" failed: ")[2].replace("FATAL:", "").strip()
        if self._password:
            text = text.replace(self._password, "***")
        return text

    async def _create_schema(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (LOCK_CLASS,)
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS ej_meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            cur = await conn.execute("SELECT value FROM ej_meta WHERE key = 'schema_version'")
            row = await cur.fetchone()
            if row is None:
                for statement in SCHEMA:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO ej_meta (key, value) VALUES ('schema_version', %s)",
                    (str(SCHEMA_VERSION),),
                )
            elif not row[0].isdigit() or int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"the database at PostgreSQL {self._where} has easyjobs schema version"
                    f" {row[0]}, newer than this easyjobs supports ({SCHEMA_VERSION}):"
                    " upgrade easyjobs here to match the managers that migrated it"
                )
            elif int(row[0]) < SCHEMA_VERSION:
                for version in range(int(row[0]), SCHEMA_VERSION):
                    for statement in MIGRATIONS[version]:
                        await conn.execute(statement)
                await conn.execute(
                    "UPDATE ej_meta SET value = %s WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )

    async def _release(self) -> None:
        """Close every connection; safe on a half-opened store."""
        for pool in (self._point_pool, self._scan_pool, self._lease_pool):
            if pool is not None:
                await pool.close()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # --- the writer task

    async def _serve(self) -> None:
        while True:
            while not (self._writes and (self._eager or self._hurry or self._closed)):
                if self._closed:  # close() queues nothing after it, so the FIFO is drained
                    return
                await self._wake.wait()
                self._wake.clear()
            count = min(len(self._writes), MAX_BATCH)
            batch = [self._writes.popleft() for _ in range(count)]
            self._eager -= sum(op[0] not in LAZY for op in batch)
            self._hurry = False
            if self._lazy_timer is not None:  # what it would send goes now
                self._lazy_timer.cancel()
                self._lazy_timer = None
            if self._writes and not self._eager:  # more than a batch: the rest go next
                self._hurry = True
            outcomes = await self._execute(batch)
            self._applied += len(batch)
            for fut, exc, value in outcomes:
                if fut.done():  # its caller was cancelled
                    continue
                if exc is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(exc)
            waiters = self._applied_waiters
            while waiters and waiters[0][0] <= self._applied:
                waiter = heapq.heappop(waiters)[2]
                if not waiter.done():
                    waiter.set_result(None)

    async def _execute(
        self, batch: list[Op]
    ) -> list[Outcome]:
        """Commit ``batch`` in one transaction; if an op fails, commit each op on its own."""
        try:
            return await self._transaction(batch)
        except Exception as exc:  # the driver's errors, and a value it cannot send
            if self._unwritable(exc):
                return self._fail_unwritable(batch, exc)
            if len(batch) == 1:
                # The cause stays in the log: its text may quote stored values.
                logger.error("store op %s failed", batch[0][0], exc_info=exc)
                error = StoreError(f"store op {batch[0][0]} failed; the cause is in the log")
                return [(batch[0][4], error, None)]
        outcomes: list[Outcome] = []
        for position, op in enumerate(batch):  # nothing of the batch committed: one by one
            outcomes += await self._execute([op])
            if isinstance(outcomes[-1][1], StoreUnwritable):  # the server went away meanwhile
                return outcomes + self._fail_unwritable(batch[position + 1 :], None)
        return outcomes

    async def _transaction(self, batch: list[Op]) -> list[Outcome]:
        """Run ``batch`` as BEGIN, its statements and COMMIT, in one round trip.

        Consecutive ops of one kind (``MERGEABLE``) become one statement, their rows in call
        order, which the database runs far faster than one statement each.
        """
        work, whole = _collapsed(batch)
        groups = _groups(work)
        news = Signals()
        finished_at: dict[str, float] = {}
        for op in batch:
            if op[5] is not None:
                news.merge(op[5])
                if op[0] == "finish":  # its params: result, error, [at], on_failure, [id], ...
                    finished_at.setdefault(op[2][4][0], op[2][2][0])
        conn = await self._writer_connection()
        cursors = []
        began = time.perf_counter()
        prelude, prelude_params = self._prelude(batch)
        try:
            async with conn.pipeline():
                await conn.execute("BEGIN")
                if prelude:
                    await conn.execute(prelude, prelude_params)
                for group in groups:
                    cursor = conn.cursor()
                    await cursor.execute(group[0][1], _merged(group))
                    cursors.append(cursor)
                if news:  # delivered to the listeners only if this transaction commits
                    news.origin = self._fence
                    notify, params = self._notify(news, finished_at)
                    await conn.execute(FOLDING + notify, params)
                else:
                    await conn.execute(FOLD_COUNTS)
                await conn.execute("COMMIT")
        except BaseException:
            if not conn.closed and conn.info.transaction_status != 0:  # 0: idle
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            raise
        self._commits += 1
        self.commit_stats.committed(time.perf_counter() - began, len(batch))
        if not self._writable:
            logger.warning("the job store at PostgreSQL %s is writable again", self._where)
            self._writable = True
        outcomes: list[Outcome] = []
        later: list[tuple[Op, Op]] = []
        for group, cursor in zip(groups, cursors, strict=True):
            rows = await cursor.fetchall() if cursor.description is not None else []
            if group[0][0] == "add_finished":
                add, start, finish = whole[id(group[0][4])]
                if rows:  # the row went in as it ends: the three calls are answered
                    outcomes += [(add[4], None, [True]), (start[4], None, None),
                                 (finish[4], None, True)]
                else:  # its id exists (a re-sent submit): start and finish that row now
                    outcomes.append((add[4], None, [False]))
                    later.append((start, finish))
                continue
            if len(group) == 1:
                outcomes.append((group[0][4], None, group[0][3](cursor.rowcount, rows)))
                continue
            changed = {row[0] for row in rows}
            column = MERGEABLE[group[0][1]][0]
            for _, _, params, extract, fut, _ in group:  # a changed row is its first op's
                ids = params[column]
                mine = [(job_id,) for job_id in dict.fromkeys(ids) if job_id in changed]
                changed.difference_update(ids)
                outcomes.append((fut, None, extract(len(mine), mine)))
        if later:
            outcomes += await self._execute([op for pair in later for op in pair])
        called = {id(op[4]): position for position, op in enumerate(batch)}
        outcomes.sort(key=lambda outcome: called[id(outcome[0])])  # answered in call order
        return outcomes

    def _prelude(self, batch: list[Op]) -> tuple[str, list[Any]]:
        """The one statement that starts a transaction's work (or none): the lease's fence,
        and the settings for the transaction (``SET LOCAL`` as ``set_config``)."""
        parts, params = [], []
        if self._fence is not None:
            parts.append("ej_fence(%s)")
            params.append(self._fence)
        if all(op[0] in UNACKNOWLEDGED for op in batch):
            parts.append("set_config('synchronous_commit', 'off', true)")
        if all(op[0] in BY_ID_OPS for op in batch):  # and no JIT: the cost a table without
            # an index now shows (the deltas' in FOLDING) would have it compile for 100+ ms
            parts += ["set_config('enable_seqscan', 'off', true)",
                      "set_config('jit', 'off', true)"]
        return ("SELECT " + ", ".join(parts) if parts else ""), params

    def _notify(self, news: Signals, finished_at: dict[str, float]
                ) -> tuple[str, Sequence[Any]]:
        """The statement telling the listeners ``news``, with the outcomes that fit."""
        payload = news.encode()
        carried = news.tokens(MAX_PAYLOAD - len(payload.encode()))
        if not carried:
            return NOTIFY, (self._channel, payload)
        return NOTIFY_OUTCOMES, (
            self._channel, payload, OUTCOME_PREFIX, [job_id for job_id, _, _ in carried],
            [status for _, status, _ in carried],
            [finished_at[job_id] for job_id, _, _ in carried],
            [token for _, _, token in carried],
        )

    async def _writer_connection(self) -> psycopg.AsyncConnection[Any]:
        """The writer's connection, reconnecting (with backoff between failures) when lost."""
        import psycopg
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            return self._conn
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if time.monotonic() < self._reconnect_at:
            raise psycopg.OperationalError("connection lost; waiting before reconnecting")
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, **self._options
            )
        except psycopg.Error:
            self._reconnect_at = time.monotonic() + self._reconnect_wait
            self._reconnect_wait = min(self._reconnect_wait * 2, RECONNECT_MAX_S)
            raise
        self._reconnect_wait = RECONNECT_FIRST_S
        logger.info("the job store reconnected to PostgreSQL %s", self._where)
        return self._conn

    def _unwritable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the server's or the network's fault rather than the op's."""
        import psycopg
        state = getattr(exc, "sqlstate", None) or ""
        return (
            self._conn is None or self._conn.broken or self._conn.closed
            or state in UNWRITABLE_STATES or state.startswith("08")
            or (isinstance(exc, psycopg.OperationalError) and not state)
        )

    def _fail_unwritable(
        self, batch: list[Op], exc: BaseException | None
    ) -> list[Outcome]:
        """Fail ``batch`` as unwritable; log the first failure only, not one per batch."""
        if exc is not None:
            state = getattr(exc, "sqlstate", None) or ""
            why = UNWRITABLE_STATES.get(state) or f"connection lost: {self._reason(exc)}"
            self._last_error = (
                f"the job store at PostgreSQL {self._where} cannot write ({why});"
                " writes resume by themselves once it answers"
            )
            if self._writable:
                logger.error("%s", self._last_error)
            else:
                logger.debug("%s", self._last_error)
            self._writable = False
        error = StoreUnwritable(self._last_error or "the job store cannot write")
        return [(op[4], error, None) for op in batch]

    # --- reads

    async def _run_read(
        self, name: str, sql: str, params: Sequence[Any], extract: Callable[[Rows], T],
        pool: AsyncConnectionPool, writes_before: asyncio.Future[None] | None,
    ) -> T:
        import psycopg
        from psycopg_pool import PoolTimeout

        if writes_before is not None:
            await writes_before
        for attempt in range(2):
            try:
                async with pool.connection() as conn:
                    try:
                        cursor = await conn.execute(sql, params, binary=True)
                        rows = await cursor.fetchall() if cursor.description else []
                    except psycopg.OperationalError:
                        if attempt == 0 and conn.broken:  # a connection lost while pooled
                            continue
                        raise
                return extract(rows)
            except (psycopg.Error, PoolTimeout) as exc:
                logger.error("store op %s failed", name, exc_info=exc)
                if isinstance(exc, PoolTimeout):
                    raise StoreError(
                        f"store op {name} failed: no connection to PostgreSQL {self._where}"
                    ) from None
                raise StoreError(f"store op {name} failed; the cause is in the log") from None
        raise StoreError(f"store op {name} failed; the cause is in the log")


def _driver() -> None:
    """Import psycopg on first use (SQLite users need not install it), or say how to get it."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the PostgreSQL store needs psycopg: pip install 'easyjobs[postgres]'"
        ) from None


def _groups(batch: list[Op]) -> list[list[Op]]:
    """``batch`` as groups of ops that one statement each can do (see ``MERGEABLE``).

    An op joins the latest group of its statement unless a group after that one touches one
    of its jobs, or cannot say which jobs it touches: ops on different jobs commute, so the
    batch's effect is the one of its call order, in a statement per kind of op rather than
    one per change of kind (finish, start, finish, start... as workers take jobs in turn).
    """
    groups: list[tuple[list[Op], set[str] | None]] = []
    for op in batch:
        merge = None if op[0] == "add_finished" else MERGEABLE.get(op[1])
        if merge is None:
            groups.append(([op], None))  # touches jobs it does not name: nothing passes it
            continue
        ids, once = set(op[2][merge[0]]), merge[1]
        target: tuple[list[Op], set[str]] | None = None
        for group, touched in reversed(groups):
            if touched is None:
                break
            if group[0][1] is op[1] and (not once or touched.isdisjoint(ids)):
                target = (group, touched)
                break
            if not touched.isdisjoint(ids):
                break
        if target is None:
            groups.append(([op], ids))
        else:
            target[0].append(op)
            target[1].update(ids)
    return [group for group, _ in groups]


def _collapsed(batch: list[Op]) -> tuple[list[Op], dict[int, tuple[Op, Op, Op]]]:
    """``batch`` with each job that is inserted (``add_dispatched``, alone), started and
    finished (without children) in it, and touched by nothing else, inserted as it ends by one
    statement in the finish's place (``add_finished``): a short job's three writes cost one.
    Ops on other jobs commute with it; an op that names no jobs ends every such run. Returns
    the ops to run, and the three ops each ``add_finished`` stands for, by its future's id."""
    runs: dict[str, list[int]] = {}  # job id -> positions of its add, then its start
    whole: list[list[int]] = []
    for position, op in enumerate(batch):
        merge = MERGEABLE.get(op[1])
        if merge is None:
            runs.clear()
            continue
        ids = op[2][merge[0]]
        if op[0] == "add_dispatched" and len(ids) == 1:
            runs[ids[0]] = [position]
            continue
        for job_id in ids:
            run = runs.pop(job_id, None)
            if run is None:
                continue
            if len(run) == 1 and op[0] == "mark_running" and op[2][4][0] in (
                    None, batch[run[0]][2][17][0]):  # its owner guard holds for the new row
                runs[job_id] = [*run, position]
            elif len(run) == 2 and op[1] in FINISHED_BY:
                whole.append([*run, position])
    if not whole:
        return batch, {}
    stands_for: dict[int, tuple[Op, Op, Op]] = {}
    replaced: dict[int, Op] = {}
    for a, b, c in whole:
        op = replaced[c] = _add_finished(batch[a], batch[b], batch[c])
        stands_for[id(op[4])] = (batch[a], batch[b], batch[c])
    dropped = {position for run in whole for position in run[:2]}
    return ([replaced.get(position, op) for position, op in enumerate(batch)
             if position not in dropped], stands_for)


def _add_finished(add: Op, start: Op, finish: Op) -> Op:
    """The insert of ``add``'s job as ``start`` and ``finish`` leave it (``_collapsed``)."""
    attempts, worker, started, _, _, _ = start[2]
    result, error, at, on_failure, _, _ = finish[2]
    row = [list(column) for column in add[2]]  # COLUMNS, one value each
    row[4], row[5], row[6] = [FINISHED_BY[finish[1]].value], attempts, worker
    row[8], row[9], row[11], row[12] = result, error, started, at
    row[16], row[17] = [None], [None]  # no next attempt, and no owner once finished
    if on_failure[0] is not None:
        row[14] = on_failure
    marker: asyncio.Future[Any] = asyncio.get_running_loop().create_future()  # never resolved
    return ("add_finished", INSERT_JOBS, tuple(row), _none, marker, None)


def _merged(group: list[Op]) -> Sequence[Any]:
    """The parameters of one statement doing ``group``'s ops: column lists joined in order."""
    if len(group) == 1:
        return group[0][2]
    columns = zip(*(op[2] for op in group), strict=True)
    return tuple([value for part in parts for value in part] for parts in columns)


def _none(_: int, __: Rows) -> None:
    return None


def _changed_one(count: int, _: Rows) -> bool:
    return count == 1


def _counted_one(_: int, rows: Rows) -> bool:
    return bool(rows[0][0] == 1)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _held(rows: Rows) -> list[JobRecord]:
    """The jobs a take-over statement held, from its rows (two counts first)."""
    return [record_from_row(row[2:]) for row in rows if row[2] is not None]


def _left_free(jobs: Sequence[JobRecord]) -> Signals:
    """The news that ``jobs`` holds queued jobs no manager owns (any manager may claim them)."""
    return Signals(ready={(job.queue, job.task) for job in jobs
                          if job.status is JobStatus.QUEUED and job.owner is None})


def _job_columns(jobs: Sequence[JobRecord]) -> tuple[list[Any], ...]:
    """The records as one list per column of ``COLUMNS``, for ``INSERT_ROWS``."""
    rows = [
        (
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
            float(job.created_at),
            _float(job.started_at),
            _float(job.finished_at),
            pack(job.dependencies, f"job {job.id} dependencies"),
            job.on_failure_job,
            job.handler_for,
            _float(job.next_attempt_at),
            job.owner,
        )
        for job in jobs
    ]
    return tuple([row[i] for row in rows] for i in range(len(ARRAY_TYPES)))


def _job_records(rows: Rows) -> list[JobRecord]:
    return [record_from_row(row) for row in rows]
