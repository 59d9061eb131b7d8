"""What only the PostgreSQL store promises: clear connection errors, schema versions, surviving
a lost server connection, its connection options, and a real manager running on it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from easyjobs.client import EasyJobsClient
from easyjobs.errors import ConfigurationError, StoreError
from easyjobs.jobs import JobRecord, JobStatus, new_job_id
from easyjobs.manager import EasyJobsManager
from easyjobs.store import PostgresStore, SQLiteStore, StoreUnwritable, open_store, postgres
from easyjobs.store.signals import Signals
from easyjobs.workers.worker import EasyJobsWorker

from ..conftest import FAST_BACKOFF
from ..postgres import DEFAULT_URL, schema_of, with_query
from ..utils import SECRET, free_port, wait_until

Server = psycopg.Connection[tuple[object, ...]]


def job(n: int = 0, **fields: object) -> JobRecord:
    return JobRecord(**({"id": new_job_id(), "queue": "default", "task": "add",
                         "created_at": 1000.0 + n} | fields))  # type: ignore[arg-type]


NEW_INDEXES = {
    "ej_jobs_pkey": "(id)",
    "ej_jobs_created": "(created_at, id)",
    "ej_jobs_status": "(status, created_at, id)"
                      " WHERE (status <> ALL (ARRAY['queued'::text, 'running'::text]))",
    "ej_jobs_claim": "(queue, task, priority, created_at, id)"
                     " WHERE ((status = 'queued'::text) AND (owner IS NULL))",
    "ej_jobs_owner": "(owner) WHERE (owner IS NOT NULL)",
}
"""The indexes of ej_jobs in schema version 3, as pg_indexes shows them (after
``USING btree``)."""
VERSION_1_INDEXES = (
    "CREATE INDEX ej_jobs_unfinished ON ej_jobs (created_at, id)"
    " WHERE status IN ('queued', 'retrying', 'running', 'waiting')",
    "CREATE INDEX ej_jobs_claim ON ej_jobs (queue, task, priority, created_at, id)"
    " WHERE status = 'queued'",
)
"""The indexes schema version 1 had that version 2 replaced, as version 1 made them."""


def job_indexes(server: Server, schema: str) -> dict[str, str]:
    """The indexes of ``schema``'s ej_jobs: name to key columns and condition."""
    rows = server.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s"
        " AND tablename = 'ej_jobs'", (schema,)).fetchall()
    return {str(name): str(definition).partition(" USING btree ")[2]
            for name, definition in rows}


def terminate_own_connections(server: Server, url: str) -> int:
    """Kill every server connection of the store made from ``url``, as a failover would."""
    rows = server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (schema_of(url),),
    ).fetchall()
    return len(rows)


async def test_wrong_port_fails_open_in_one_line_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listening: open() fails with one line naming host:port/dbname, never the password."""
    port = free_port()
    store = PostgresStore(f"postgresql://easyjobs:hunter2@127.0.0.1:{port}/jobs")
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}/jobs: ")
    assert "refused" in message and "\n" not in message
    assert "hunter2" not in message and "hunter2" not in caplog.text
    with pytest.raises(StoreError, match="not open"):
        await store.get_job(new_job_id())
    await store.close()


async def test_wrong_database_names_it(pg_url: str) -> None:
    """A database that does not exist is named, with the server's reason."""
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(path="/no_such_db_ej"))
    store = PostgresStore(with_query(url, password="hunter2"))
    with pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert ":5432/no_such_db_ej: " in message or "/no_such_db_ej: " in message
    assert 'database "no_such_db_ej" does not exist' in message
    assert "hunter2" not in message and "\n" not in message


async def test_the_schema_is_versioned_and_prefixed(pg_url: str, pg_server: Server) -> None:
    """open() makes ej_ tables, the claim and owner indexes and version 5; opening again
    changes nothing."""
    for _ in range(2):
        store = PostgresStore(pg_url)
        await store.open()
        await store.add_jobs([job()])
        await store.close()
    schema = schema_of(pg_url)
    tables = {name for (name,) in pg_server.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}
    assert tables == {"ej_jobs", "ej_tasks", "ej_schedules", "ej_meta", "ej_job_counts",
                      "ej_job_count_deltas", "ej_managers", "ej_workers", "ej_credentials"}
    assert job_indexes(pg_server, schema) == NEW_INDEXES
    version = pg_server.execute(
        f"SELECT value FROM {schema}.ej_meta WHERE key = 'schema_version'").fetchall()
    assert version == [("5",)]
    assert pg_server.execute(f"SELECT count(*) FROM {schema}.ej_jobs").fetchone() == (2,)


async def test_an_older_store_refuses_a_newer_schema(pg_url: str, pg_server: Server) -> None:
    """A database migrated by a newer easyjobs is refused with a message saying what to do."""
    store = PostgresStore(pg_url)
    await store.open()
    await store.close()
    schema = schema_of(pg_url)
    pg_server.execute(f"UPDATE {schema}.ej_meta SET value = '99' WHERE key = 'schema_version'")
    newer = PostgresStore(pg_url)
    with pytest.raises(StoreError, match="schema version 99, newer than this easyjobs supports"
                                         r" \(5\): upgrade easyjobs"):
        await newer.open()


async def test_a_version_1_schema_keeps_its_jobs_and_they_are_claimable(
    pg_url: str, pg_server: Server
) -> None:
    """A version 1 schema (no owner, a claim index over every queued job) opens as version 5:
    its jobs are kept and free, its indexes replaced, and claims take its jobs."""
    store = PostgresStore(pg_url)
    await store.open()
    kept = [job(1), job(2, task="other"), job(3, status=JobStatus.WAITING), job(4)]
    await store.add_jobs(kept)
    await store.close()
    schema = schema_of(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        for index in ("ej_jobs_claim", "ej_jobs_owner", "ej_jobs_status"):
            conn.execute(f"DROP INDEX {index}")
        conn.execute("ALTER TABLE ej_jobs DROP COLUMN owner")
        conn.execute("DROP TABLE ej_managers, ej_workers, ej_credentials")
        conn.execute("DROP FUNCTION ej_fence")
        for statement in VERSION_1_INDEXES:
            conn.execute(statement)
        conn.execute("UPDATE ej_meta SET value = '1' WHERE key = 'schema_version'")
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert [await store.get_job(j.id) for j in kept] == kept
        claimed = await store.claim("default", "add", 10, "m1")
        assert [(j.id, j.owner) for j in claimed] == [(kept[0].id, "m1"), (kept[3].id, "m1")]
        assert await store.count_jobs() == {("default", "queued"): 3, ("default", "waiting"): 1}
    finally:
        await store.close()
    assert job_indexes(pg_server, schema) == NEW_INDEXES
    version = pg_server.execute(
        f"SELECT value FROM {schema}.ej_meta WHERE key = 'schema_version'").fetchall()
    assert version == [("5",)]


async def test_stores_claiming_at_once_never_get_the_same_job(pg_url: str) -> None:
    """Two stores on one schema claiming 500 jobs at once get disjoint sets covering all."""
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    await first.open()
    await second.open()
    try:
        records = [job(n) for n in range(500)]
        await first.add_jobs(records)

        async def drain(store: PostgresStore, owner: str) -> list[str]:
            got: list[str] = []
            while claimed := await store.claim("default", "add", 7, owner):
                assert {j.owner for j in claimed} == {owner}
                got += [j.id for j in claimed]
            return got

        mine, theirs = await asyncio.gather(drain(first, "m1"), drain(second, "m2"))
        assert not set(mine) & set(theirs)
        assert sorted(mine + theirs) == sorted(j.id for j in records)
        assert mine and theirs
        owners = {j.id: j.owner for j in await first.list_jobs(limit=500)}
        assert owners == {**dict.fromkeys(mine, "m1"), **dict.fromkeys(theirs, "m2")}
    finally:
        await first.close()
        await second.close()


async def test_claim_skips_jobs_another_claim_holds_instead_of_waiting(pg_url: str) -> None:
    """Jobs locked by another manager's claim in flight are skipped: the claim takes the next
    free ones at once."""
    store = PostgresStore(pg_url)
    await store.open()
    other = await psycopg.AsyncConnection.connect(pg_url)
    try:
        records = [job(n) for n in range(6)]
        await store.add_jobs(records)
        await other.execute("SELECT id FROM ej_jobs WHERE id = ANY(%s) FOR UPDATE",
                            ([r.id for r in records[:2]],))
        claimed = await asyncio.wait_for(store.claim("default", "add", 3, "m1"), 10)
        assert [j.id for j in claimed] == [r.id for r in records[2:5]]
        await other.rollback()
        claimed = await store.claim("default", "add", 10, "m2")
        assert [j.id for j in claimed] == [r.id for r in (*records[:2], records[5])]
    finally:
        await other.rollback()
        await other.close()
        await store.close()


async def test_stores_opening_together_migrate_once(pg_url: str) -> None:
    """Several stores opening at once on a fresh database all open (the advisory lock)."""
    stores = [PostgresStore(pg_url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        record = job()
        assert await stores[0].add_jobs([record]) == [True]
        assert await stores[3].get_job(record.id) == record
    finally:
        for store in stores:
            await store.close()


async def test_connections_carry_keepalives_and_a_name(pg_server: Server) -> None:
    """The store's connections set keepalives and application_name=easyjobs unless told."""
    url = os.environ.get("EASYJOBS_TEST_POSTGRES") or DEFAULT_URL
    schema = f"ej_test_keepalive_{new_job_id()[:12]}"
    pg_server.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(with_query(url, options=f"-csearch_path={schema}"))
    try:
        await store.open()
        rows = pg_server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'easyjobs'"
            " AND backend_type = 'client backend'").fetchone()
        assert rows is not None and int(str(rows[0])) >= 3  # the writer and both read pools
        assert store._options["keepalives_idle"] == 5  # noqa: SLF001
        assert store._options["tcp_user_timeout"] == 10_000  # noqa: SLF001
    finally:
        await store.close()
        pg_server.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_a_lost_server_connection_fails_calls_then_the_store_serves_again(
    pg_url: str, pg_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Its connections killed, writes fail with StoreUnwritable (nothing half-written), the
    store reconnects by itself and a later write and read succeed."""
    store = PostgresStore(with_query(pg_url, password="hunter2"))
    await store.open()
    try:
        kept = job(1)
        assert await store.add_jobs([kept]) == [True]
        assert terminate_own_connections(pg_server, pg_url) >= 3
        lost, lost_too = job(2), job(3)
        with pytest.raises(StoreUnwritable, match="cannot write") as caught:
            await store.add_jobs([lost, lost_too])
        assert "hunter2" not in str(caught.value)
        assert not store.writable and store.last_error is not None

        async def writes() -> bool:
            try:
                await store.probe()
            except StoreError:
                return False
            return True

        await wait_until(writes, what="a write after the reconnect")
        assert store.writable and store.last_error is None
        again = job(4)
        assert await store.add_jobs([again]) == [True]
        assert await store.get_job(kept.id) == kept
        assert await store.get_job(again.id) == again
        stored = [await store.get_job(j.id) is not None for j in (lost, lost_too)]
        assert stored in ([False, False], [True, True])  # the failed call: all or nothing
        assert "hunter2" not in caplog.text
    finally:
        await store.close()


async def test_lifecycle_misuse(pg_url: str) -> None:
    """Calls before open() raise StoreError; open() twice is fine; close() may race open()."""
    store = PostgresStore(pg_url)
    with pytest.raises(StoreError, match="not open"):
        await store.add_jobs([job()])
    await asyncio.gather(store.open(), store.open())
    assert await store.add_jobs([job()]) == [True]
    await store.close()
    with pytest.raises(StoreError, match="store is closed"):
        await store.open()
    racing = PostgresStore(pg_url)
    await asyncio.gather(racing.open(), racing.close())
    with pytest.raises(StoreError, match="store is closed"):
        await racing.get_job(new_job_id())


async def test_write_backlog_is_bounded(pg_url: str) -> None:
    """With the table locked, writes beyond max_pending fail at once; the rest commit later."""
    store = PostgresStore(pg_url, max_pending=10)
    await store.open()
    stall = await psycopg.AsyncConnection.connect(pg_url)
    try:
        await stall.execute("LOCK TABLE ej_jobs IN ACCESS EXCLUSIVE MODE")  # a stalled server
        waiting = [store.add_jobs([job(n)]) for n in range(10)]
        refused = store.add_jobs([job(10)])
        assert refused.done() and not any(write.done() for write in waiting)
        with pytest.raises(StoreError, match="overloaded"):
            await refused
        await stall.rollback()
        assert await asyncio.gather(*waiting) == [[True]] * 10
        assert await store.count_jobs() == {("default", "queued"): 10}
    finally:
        await stall.close()
        await store.close()
    with pytest.raises(ConfigurationError, match="max_pending"):
        PostgresStore(pg_url, max_pending=0)


async def test_database_failure_spares_neighbours_and_hides_values(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing op is a StoreError without argument values; its batch-mates commit."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute(
                "CREATE FUNCTION reject() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'rejected by trigger'; END $$")
            other.execute("CREATE TRIGGER reject BEFORE INSERT ON ej_jobs FOR EACH ROW"
                          " WHEN (NEW.queue = 'poison') EXECUTE FUNCTION reject()")
        good = [job(n) for n in range(20)]
        bad = job(kwargs={"password": "hunter2"}, queue="poison")
        calls = [store.add_jobs([j]) for j in good[:10]]
        calls += [store.add_jobs([bad])]
        calls += [store.add_jobs([j]) for j in good[10:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failure = results.pop(10)
        assert isinstance(failure, StoreError) and not isinstance(failure, psycopg.Error)
        assert not isinstance(failure, StoreUnwritable) and store.writable
        assert "hunter2" not in str(failure) and bad.id not in str(failure)
        assert results == [[True]] * 20
        assert "store op add_jobs failed" in caplog.text and "hunter2" not in caplog.text
        assert len(await store.list_jobs(status=JobStatus.QUEUED)) == 20
    finally:
        await store.close()


def test_a_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg installed, a PostgreSQL URL is a ConfigurationError naming the extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'easyjobs\[postgres\]'"):
        open_store("postgresql://u:secret@127.0.0.1/db")


async def test_a_manager_on_postgres_runs_a_job_from_a_worker_and_a_client(
    pg_url: str, manager_factory: Callable[..., Any]
) -> None:
    """A real manager on PostgreSQL: a client's call runs on a real worker and is stored."""
    manager = await manager_factory(pg_url)
    worker = EasyJobsWorker(None, None, manager.host, manager.port, SECRET, "math", 2,
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    try:
        async with EasyJobsClient(manager.host, manager.port, SECRET) as client:
            assert await client.call("math", "add", 2, 3) == 5
            listed, _ = await client.jobs(queue="math")
            assert [(j["task"], j["status"], j["result"]) for j in listed] == [
                ("add", "succeeded", 5)]
    finally:
        await worker.stop(grace=0)
        await manager.stop()
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store.count_jobs() == {("math", "succeeded"): 1}
    finally:
        await store.close()


async def test_a_manager_rides_out_lost_database_connections(
    pg_url: str, pg_server: Server, manager_factory: Callable[..., Any]
) -> None:
    """Its PostgreSQL connections killed, a manager answers a submit with StoreError, then
    reconnects by itself and runs the next submits of the same client and worker."""
    manager = await manager_factory(pg_url)
    worker = EasyJobsWorker(None, None, manager.host, manager.port, SECRET, "math", 2,
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    try:
        async with EasyJobsClient(manager.host, manager.port, SECRET) as client:
            assert await client.call("math", "add", 1, 1) == 2
            assert terminate_own_connections(pg_server, pg_url) >= 3
            with pytest.raises(StoreError):
                await client.call("math", "add", 2, 2)
            results: list[int] = []

            async def runs() -> bool:
                try:
                    results.append(await client.call("math", "add", 2, 3))
                except StoreError:
                    return False
                return True

            await wait_until(runs, what="a submit after the store reconnected")
            assert results == [5]
            assert manager.manager.store.writable
    finally:
        await worker.stop(grace=0)


def test_easyjobs_db_selects_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """EASYJOBS_DB names the manager's store (a URL or a path), ahead of its alias DB_PATH."""
    monkeypatch.setenv("DB_PATH", str(tmp_path / "old.db"))
    monkeypatch.setenv("EASYJOBS_DB", "postgresql://u:secret@127.0.0.1:5433/jobs")
    store = EasyJobsManager(server_secret=SECRET).store
    assert isinstance(store, PostgresStore) and store.where == "127.0.0.1:5433/jobs"
    monkeypatch.delenv("EASYJOBS_DB")
    fallback = EasyJobsManager(server_secret=SECRET).store
    assert isinstance(fallback, SQLiteStore) and fallback.path == str(tmp_path / "old.db")


async def test_a_live_lease_keeps_a_managers_jobs_and_an_expired_one_gives_them_up(
    pg_url: str, pg_server: Server
) -> None:
    """m2 joining takes nothing from m1 while m1's lease lives; once it has expired, m2's next
    renewal requeues m1's running job, frees its queued one and holds its waiting one, and
    m1's own renewal then reports its lease gone."""
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    await first.open()
    await second.open()
    try:
        assert await first.take_back("m1") == (0, [])
        running, queued = job(1, owner="m1"), job(2, owner="m1")
        waiting = job(3, owner="m1", status=JobStatus.WAITING)
        await first.add_jobs([running, queued, waiting])
        await first.mark_running(running.id, "w1", 1, at=2.0)
        assert await second.take_back("m2") == (0, [])
        assert await second.renew("m2") == []
        assert (await second.get_job(queued.id)).owner == "m1"  # type: ignore[union-attr]
        pg_server.execute(f"UPDATE {schema_of(pg_url)}.ej_managers SET lease_until = now()"
                          " - interval '1 second' WHERE id = 'm1'")
        taken = await second.renew("m2")
        assert taken is not None and [(j.id, j.owner) for j in taken] == [(waiting.id, "m2")]
        back = await second.get_job(running.id)
        assert back is not None and (back.status, back.owner, back.worker) == (
            JobStatus.QUEUED, None, None)
        assert [j.id for j in await second.claim("default", "add", 10, "m2")] == [
            running.id, queued.id]
        assert await first.renew("m1") is None
    finally:
        await first.close()
        await second.close()


@asynccontextmanager
async def two_managers(url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on ``url`` joined as managers m1 and m2; both closed after."""
    first, second = PostgresStore(url), PostgresStore(url)
    await first.open()
    await second.open()
    try:
        await first.take_back("m1")
        await second.take_back("m2")
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_a_manager_hears_the_news_of_the_others_but_not_its_own(pg_url: str) -> None:
    """m1's write (a job left free, with its outcome news) and then m2's: m1's listener hears
    m2's news only; notifications come in commit order, so m1's own would have come first."""
    heard: list[Signals] = []
    async with two_managers(pg_url) as (first, second):
        await first.listen(heard.append, lambda: None)
        mine, theirs = job(1, task="mine"), job(2, task="theirs")
        await first.add_jobs([mine])
        await first.finish(mine.id, JobStatus.SUCCEEDED, 1, None, at=2.0)
        await second.add_jobs([theirs])
        await wait_until(lambda: any(("default", "theirs") in n.ready for n in heard),
                         what="m2's news")
        assert all(news.origin == "m2" for news in heard)
        assert not any(("default", "mine") in n.ready or mine.id in n.done for n in heard)


async def test_the_directory_lists_the_other_live_managers_that_advertised(
    pg_url: str, pg_server: Server
) -> None:
    """advertise() publishes an address and the tasks served, and tells the others; the
    directory lists the other live managers that did, and drops one whose lease expired."""
    heard: list[Signals] = []
    async with two_managers(pg_url) as (first, second):
        await second.listen(heard.append, lambda: None)
        assert await second.directory("m2") == {}  # m1 has not advertised yet
        await first.advertise("m1", "ws://127.0.0.1:8220", [("Q", "add"), ("Q", "mul")])
        await wait_until(lambda: any(news.workers for news in heard), what="the news")
        assert await second.directory("m2") == {
            "m1": ("ws://127.0.0.1:8220", [("Q", "add"), ("Q", "mul")])}
        assert await first.directory("m1") == {}  # never itself
        pg_server.execute(f"UPDATE {schema_of(pg_url)}.ej_managers SET lease_until = now()"
                          " - interval '1 second' WHERE id = 'm1'")
        assert await second.directory("m2") == {}


async def test_leaving_hands_every_held_job_to_the_others_and_tells_them(pg_url: str) -> None:
    """leave() requeues the running job, frees the rest, and the listeners hear of it and of
    the directory entry gone."""
    heard: list[Signals] = []
    async with two_managers(pg_url) as (leaving, staying):
        await staying.listen(heard.append, lambda: None)
        running, retrying = job(1, owner="m1"), job(2, owner="m1", status=JobStatus.RETRYING)
        await leaving.add_jobs([running, retrying])
        await leaving.mark_running(running.id, "w1", 1, at=2.0)
        await leaving.leave("m1")
        await wait_until(lambda: any(news.all_ready and news.workers for news in heard),
                         what="the news")
        assert [j.id for j in await staying.claim("default", "add", 10, "m2")] == [running.id]
        assert [j.id for j in await staying.renew("m2") or []] == [retrying.id]


async def test_a_manager_whose_lease_expired_writes_nothing_until_it_renews(
    pg_url: str, pg_server: Server
) -> None:
    """Fencing: past its lease, every write of a manager fails as unwritable, naming the
    lease, while its renewal (beside the writer) still goes through, and writes resume."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.take_back("m1")
        pg_server.execute(f"UPDATE {schema_of(pg_url)}.ej_managers SET lease_until = now()"
                          " - interval '1 second' WHERE id = 'm1'")
        refused, renewed = store.add_jobs([job(1)]), store.renew("m1")
        with pytest.raises(StoreUnwritable, match="lease in the database has expired"):
            await refused
        assert await renewed == []
        lease = pg_server.execute(f"SELECT lease_until > now() FROM {schema_of(pg_url)}"
                                  ".ej_managers WHERE id = 'm1'").fetchall()
        assert lease == [(True,)]  # renewed, not taken for a dead manager's by itself
        assert await store.add_jobs([job(2)]) == [True]
        assert store.writable
    finally:
        await store.close()


def fake_op(sql: str, job_id: str) -> Any:
    """An op as the writer queues it, for ``_groups`` (nothing runs it)."""
    from easyjobs.store.postgres import FINISH, MARK_RUNNING
    params: dict[str, tuple[list[Any], ...]] = {
        MARK_RUNNING: ([1], ["w"], [1.0], [job_id], [job_id]),
        FINISH[JobStatus.SUCCEEDED]: ([None], [None], [2.0], [None], [job_id], [job_id]),
    }
    return ("op", sql, params.get(sql, ()), None, None, None)


def test_interleaved_ops_on_different_jobs_go_as_one_statement_per_kind() -> None:
    """Starts and outcomes of different jobs, interleaved as workers take jobs in turn, make a
    statement per kind; an op whose job a later group touched stays behind it, and an op that
    names no jobs lets nothing pass."""
    from easyjobs.store.postgres import FINISH, MARK_RUNNING, PROBE, _groups

    start, done = MARK_RUNNING, FINISH[JobStatus.SUCCEEDED]

    def shape(*ops: tuple[str, str]) -> list[list[str]]:
        return [[op[2][3 if op[1] is start else 4][0] for op in group]
                for group in _groups([fake_op(sql, job_id) for sql, job_id in ops])]

    assert shape((start, "a"), (done, "b"), (start, "c"), (done, "d")) == [["a", "c"],
                                                                           ["b", "d"]]
    assert shape((start, "a"), (done, "a"), (start, "b")) == [["a", "b"], ["a"]]
    assert shape((start, "a"), (done, "a"), (start, "a")) == [["a"], ["a"], ["a"]]
    probe = ("op", PROBE, (), None, None, None)
    groups = _groups([fake_op(start, "a"), probe, fake_op(start, "b")])
    assert [len(group) for group in groups] == [1, 1, 1]


async def test_interleaved_starts_and_outcomes_all_land_and_answer_in_call_order(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        jobs = [job(n) for n in range(6)]
        await store.add_jobs(jobs)
        calls: list[asyncio.Future[Any]] = []
        for n in range(6):  # a worker starting job n as it reports job n - 1
            calls.append(store.mark_running(jobs[n].id, "w", 1, 1.0))
            if n:
                calls.append(store.finish(jobs[n - 1].id, JobStatus.SUCCEEDED, n - 1, None, 2.0))
        calls.append(store.finish(jobs[5].id, JobStatus.SUCCEEDED, 5, None, 2.0))
        assert await asyncio.gather(*calls) == [None] + [None, True] * 5 + [True]
        for n, record in enumerate(jobs):
            stored = await store.get_job(record.id)
            assert stored is not None and (stored.status, stored.result) == (
                JobStatus.SUCCEEDED, n)
    finally:
        await store.close()


async def test_the_news_carries_the_outcomes_a_transaction_wrote(pg_url: str) -> None:
    """A finish's outcome rides in the notification; a finish that lost to an earlier outcome
    and one too big for the payload are announced as done only (the listener re-reads)."""
    writer, listening = PostgresStore(pg_url), PostgresStore(pg_url)
    await writer.open()
    await listening.open()
    heard: list[Signals] = []
    try:
        await writer.take_back("m1")
        await listening.take_back("m2")
        await listening.listen(heard.append, lambda: None)
        small, late, big = job(1, owner="m1"), job(2, owner="m1"), job(3, owner="m1")
        await writer.add_jobs([small, late, big])
        error = {"type": "JobCancelled", "message": "cancelled", "traceback": ""}
        assert await writer.finish(late.id, JobStatus.CANCELLED, None, error, at=3.0)
        finished = [writer.finish(small.id, JobStatus.SUCCEEDED, {"v": b"\x01"}, None, at=4.0),
                    writer.finish(late.id, JobStatus.SUCCEEDED, 7, None, at=5.0),
                    writer.finish(big.id, JobStatus.SUCCEEDED, "x" * 9000, None, at=6.0)]
        assert await asyncio.gather(*finished) == [True, False, True]
        await wait_until(lambda: {small.id, late.id, big.id} <= {
            job_id for news in heard for job_id in news.done}, what="the news of all three")
        outcomes = {job_id: outcome for news in heard for job_id, outcome in news.outcomes.items()}
        assert outcomes == {small.id: ("succeeded", {"v": b"\x01"}, None),
                            late.id: ("cancelled", None, error)}
    finally:
        await writer.close()
        await listening.close()


async def test_a_dispatched_jobs_insert_goes_with_its_start_and_outcome(pg_url: str) -> None:
    """``add_jobs(soon=True)`` (a job already given to a worker) waits for the next write:
    its insert, start and outcome commit in one transaction, in call order; alone, it goes
    within LAZY_S."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        quick, alone = job(1, owner="m1"), job(2, owner="m1")
        commits = store.commits
        inserted = store.add_jobs([quick], soon=True)
        started = store.mark_running(quick.id, "w1", 1, at=2.0, owner="m1")
        for _ in range(5):  # turns of the loop in which an eager writer would have sent it
            await asyncio.sleep(0)
        assert not inserted.done()
        finished = store.finish(quick.id, JobStatus.SUCCEEDED, 3, None, at=3.0)
        assert await inserted == [True] and await started is None and await finished
        assert store.commits == commits + 1
        stored = await store.get_job(quick.id)
        assert stored is not None and (stored.status, stored.result) == (JobStatus.SUCCEEDED, 3)
        assert await asyncio.wait_for(store.add_jobs([alone], soon=True), 10) == [True]
    finally:
        await store.close()


async def test_only_a_dispatched_job_inserted_started_and_finished_alone_is_collapsed() -> None:
    """``_collapsed`` (no I/O): a one-job ``add_dispatched``, its start and its finish become
    one insert in the finish's place; a second job's unfinished run, a run broken by an op
    that names no jobs (a claim), a two-job insert and a start under another owner stay as
    they are."""
    def add(*records: JobRecord) -> postgres.Op:
        return ("add_dispatched", postgres.INSERT_JOBS, postgres._job_columns(records),
                postgres._none, asyncio.get_running_loop().create_future(), None)

    def start(record: JobRecord, owner: str = "m1") -> postgres.Op:
        return ("mark_running", postgres.MARK_RUNNING,
                ([1], ["w1"], [2.0], [record.id], [owner], [record.id]), postgres._none,
                asyncio.get_running_loop().create_future(), None)

    def finish(record: JobRecord) -> postgres.Op:
        return ("finish", postgres.FINISH[JobStatus.SUCCEEDED],
                ([b"\x01"], [None], [3.0], [None], [record.id], [record.id]), postgres._none,
                asyncio.get_running_loop().create_future(), None)

    claim: postgres.Op = ("claim", postgres.CLAIM, ("m1", "default", "add", 1), postgres._none,
                          asyncio.get_running_loop().create_future(), None)
    one, two, three, four, five = (job(n, owner="m1") for n in range(5))
    batch = [add(one), start(one), add(two), finish(one), start(two), add(three), claim,
             start(three), finish(three), add(one, four), start(four), finish(four),
             add(five), start(five, owner="m2"), finish(five)]
    work, stands_for = postgres._collapsed(batch)
    assert [op[0] for op in work] == [
        "add_dispatched", "add_finished", "mark_running", "add_dispatched", "claim",
        "mark_running", "finish", "add_dispatched", "mark_running", "finish", "add_dispatched",
        "mark_running", "finish"]
    assert stands_for == {id(work[1][4]): (batch[0], batch[1], batch[3])}
    row = dict(zip(postgres.COLUMNS.split(", "), (column[0] for column in work[1][2]),
                   strict=True))
    assert (row["id"], row["status"], row["attempts"], row["worker"], row["result"],
            row["started_at"], row["finished_at"], row["owner"]) == (
        one.id, "succeeded", 1, "w1", b"\x01", 2.0, 3.0, None)
    assert postgres._collapsed(batch[:2]) == (batch[:2], {})


@pytest.mark.parametrize("before", ["none", "queued", "queued-elsewhere", "finished"])
async def test_a_job_inserted_started_and_finished_in_one_batch_ends_as_in_three_steps(
        pg_url: str, before: str) -> None:
    """Collapsed into one insert, a dispatched job's insert, start and finish leave the row,
    and answer each call, as the three statements in turn do; also when the id exists
    already (then the start and finish go in a transaction of their own): queued here (a
    re-sent submit), queued with another manager (the start's owner guard fails, the outcome
    still lands) or finished (nothing changes)."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        async def run(record: JobRecord, stepwise: bool) -> tuple[object, ...]:
            added = store.add_jobs([record], soon=True)
            if stepwise:
                await added
            started = store.mark_running(record.id, "w1", 1, at=2.5, owner="m1")
            if stepwise:
                await started
            finished = store.finish(record.id, JobStatus.SUCCEEDED, {"v": [1]}, None, at=3.5)
            return await added, await started, await finished

        answers, rows = [], []
        for stepwise in (True, False):
            record = job(1, owner="m1")
            if before != "none":
                existing = replace(record, owner="m2" if before == "queued-elsewhere" else "m1")
                await store.add_jobs([existing])
                if before == "finished":
                    await store.finish(record.id, JobStatus.FAILED, None,
                                       {"type": "E", "message": "m", "traceback": ""}, at=1.5)
            commits = store.commits
            answers.append(await run(record, stepwise))
            assert store.commits - commits == (
                3 if stepwise else 1 if before == "none" else 2)
            stored = await store.get_job(record.id)
            assert stored is not None
            rows.append(replace(stored, id="", created_at=0.0))
        assert answers[0] == answers[1]
        assert rows[0] == rows[1]
        assert answers[0] == {"none": ([True], None, True), "queued": ([False], None, True),
                              "queued-elsewhere": ([False], None, True),
                              "finished": ([False], None, False)}[before]
    finally:
        await store.close()


async def test_a_jobs_start_goes_with_the_next_write(pg_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A start waits for the next write: called with its job's outcome, both commit in one
    transaction. A read that must see a start sends it at once; alone, it goes within LAZY_S."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        quick, read, alone = job(1), job(2), job(3)
        await store.add_jobs([quick, read, alone])
        commits = store.commits
        started = store.mark_running(quick.id, "w1", 1, at=2.0)
        for _ in range(5):  # turns of the loop in which an eager writer would have sent it
            await asyncio.sleep(0)
        finished = store.finish(quick.id, JobStatus.SUCCEEDED, 3, None, at=3.0)
        assert await finished and await started is None
        assert store.commits == commits + 1
        monkeypatch.setattr(postgres, "LAZY_S", 60.0)
        store.mark_running(read.id, "w1", 1, at=4.0)
        stored = await asyncio.wait_for(store.get_job(read.id), 10)
        assert stored is not None and stored.status is JobStatus.RUNNING
        monkeypatch.undo()
        await store.mark_running(alone.id, "w1", 1, at=5.0)
        stored = await store.get_job(alone.id)
        assert stored is not None and stored.status is JobStatus.RUNNING
    finally:
        await store.close()
