"""Several real manager processes on one PostgreSQL schema, with workers and clients spread
across them: a manager SIGKILLed mid-load, its database connections terminated, and a schedule
of every second fired by three managers at once."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.errors import StoreError
from easyjobs.remote import Job
from easyjobs.store import LEASE_S
from easyjobs.workers.link import Backoff

from .conftest import Process
from .postgres import schema_of
from .processes import wait_listening
from .utils import SECRET, TIMEOUT, free_port, wait_until

log = logging.getLogger(__name__)

QUEUE = "CLUSTER"
BACKOFF = Backoff(initial=0.02, maximum=0.2)
Server = psycopg.Connection[tuple[object, ...]]


class Cluster:
    """Manager processes on the test's schema, started on ports of their own."""

    def __init__(self, spawn: Callable[..., Process], url: str) -> None:
        self._spawn = spawn
        self.url = url
        self.procs: list[Process] = []
        self.ports: list[int] = []

    async def start(self, n: int) -> None:
        for _ in range(n):
            port = free_port()
            proc = self._spawn("-m", "easyjobs", "manager", "--host", "127.0.0.1",
                               "--port", str(port), "--advertise", f"127.0.0.1:{port}",
                               env={"EASYJOBS_DB": self.url})
            self.procs.append(proc)
            self.ports.append(port)
        for proc, port in zip(self.procs[-n:], self.ports[-n:], strict=True):
            await wait_listening(proc, port)

    def addresses(self, *which: int) -> list[str]:
        return [f"127.0.0.1:{self.ports[i]}" for i in which]

    def metric(self, which: int, name: str) -> float:
        """One unlabelled series of manager ``which``'s ``/metrics``."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports[which]}/metrics",
                                         headers={"Authorization": f"Bearer {SECRET}"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise AssertionError(f"no {name} in the metrics of manager {which}")


@pytest.fixture
async def cluster(process_factory: Callable[..., Process], pg_url: str
                  ) -> AsyncIterator[Cluster]:
    yield Cluster(process_factory, pg_url)


def worker_on(cluster: Cluster, name: str, *which: int, slots: int = 4) -> EasyJobsWorker:
    return EasyJobsWorker(manager_secret=SECRET, jobs_queue=QUEUE, max_tasks_per_worker=slots,
                          managers=cluster.addresses(*which), name=name, backoff=BACKOFF)


def client_on(cluster: Cluster, *which: int) -> EasyJobsClient:
    return EasyJobsClient(managers=cluster.addresses(*which), secret=SECRET, backoff=BACKOFF)


async def submitted(client: EasyJobsClient, task: str, *args: Any) -> Job:
    """Submit, again while the manager answers ``StoreError`` (its database connection was
    just lost: the first write finds out, then it reconnects with backoff)."""
    job: Job | None = None

    async def accepted() -> bool:
        nonlocal job
        try:
            job = await client.submit(QUEUE, task, *args)
        except StoreError:
            return False
        return True

    await wait_until(accepted, what="the manager to write again")
    assert job is not None
    return job


async def saved(pg_server: Server, url: str, *tasks: str) -> None:
    """Wait until the specs of ``tasks`` are in the store: a manager hears of a task once the
    one its worker registered with has saved the spec (it writes it after the register)."""
    schema = schema_of(url)
    await wait_until(lambda: pg_server.execute(
        f"SELECT count(*) FROM {schema}.ej_tasks WHERE name = ANY(%s)", (list(tasks),)
    ).fetchone() == (len(tasks),), what=f"the specs of {', '.join(tasks)} to be saved")


CHAINS = 150


def orphans(pg_server: Server, url: str) -> int:
    """Jobs owned by a manager that holds no lease (any more)."""
    schema = schema_of(url)
    row = pg_server.execute(
        f"SELECT count(*) FROM {schema}.ej_jobs WHERE owner IS NOT NULL"
        f" AND owner NOT IN (SELECT id FROM {schema}.ej_managers)").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


async def test_a_manager_killed_mid_load_loses_no_acknowledged_job_and_every_chain_completes(
        cluster: Cluster, pg_server: Server) -> None:
    """Three managers; chains submitted on A run on workers of B and C (A forwards them). B is
    SIGKILLed while it holds running and queued jobs: its worker moves to C, its jobs are back
    in the queue within 15 s, and every acknowledged chain completes, each step at least once."""
    await cluster.start(3)
    first_steps: Counter[int] = Counter()
    done: Counter[int] = Counter()
    workers = [worker_on(cluster, "on-b", 1, 2), worker_on(cluster, "on-c", 2, 1)]
    for worker in workers:

        @worker.task(run_after=["finish"])
        async def start(i: int) -> int:
            first_steps[i] += 1
            await asyncio.sleep(0.01)  # the task's own work, so the load lasts a while
            return i

        @worker.task()
        async def finish(i: int) -> None:
            done[i] += 1

    client = client_on(cluster, 0)
    for worker in workers:
        await worker.start()
    await client.connect()
    try:
        await wait_until(lambda: all(w.connected for w in workers), what="both workers")
        await saved(pg_server, cluster.url, "start", "finish")
        acked = [await client.submit(QUEUE, "start", i) for i in range(CHAINS // 2)]
        await wait_until(lambda: sum(done.values()) >= 10, what="some chains to complete")
        cluster.procs[1].popen.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert cluster.procs[1].popen.wait(TIMEOUT) == -signal.SIGKILL
        acked += [await client.submit(QUEUE, "start", i) for i in range(CHAINS // 2, CHAINS)]
        managers = f"{schema_of(cluster.url)}.ej_managers"

        def taken_over() -> bool:
            rows = pg_server.execute(f"SELECT count(*) FROM {managers}").fetchone()
            return rows == (2,) and orphans(pg_server, cluster.url) == 0

        await wait_until(taken_over, timeout=LEASE_S + 10, what="B's jobs to be taken over")
        assert time.monotonic() - killed_at <= 15.0
        await wait_until(lambda: len(done) == CHAINS, timeout=LEASE_S + 20,
                         what="every chain to complete")
        took = time.monotonic() - killed_at
        assert set(done) == set(range(CHAINS)) and set(first_steps) == set(range(CHAINS))
        records = [await client.job(job.id) for job in acked]
        assert {r["status"] for r in records} == {"succeeded"}
        reruns = sum(n - 1 for n in first_steps.values()) + sum(n - 1 for n in done.values())
        log.info("B killed; every chain done %.1f s later, %d step(s) ran twice", took, reruns)
        assert reruns <= 2 * workers[0].max_tasks  # only what B's worker was running
        forwarded = cluster.metric(0, "easyjobs_submits_forwarded_total")
        fell_back = cluster.metric(0, "easyjobs_submits_forward_fallbacks_total")
        log.info("A forwarded %d submit(s), %d of them back through its store", forwarded,
                 fell_back)
        assert forwarded > 0
    finally:
        await client.close()
        for worker in workers:
            await worker.stop(grace=0)


async def test_managers_reconnect_to_the_database_and_catch_up(
        cluster: Cluster, pg_server: Server) -> None:
    """Every database connection of both managers terminated, then their LISTEN connections
    alone: each time they reconnect, and a job submitted on A still runs on B's worker."""
    await cluster.start(2)
    worker = worker_on(cluster, "on-b", 1)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    client = client_on(cluster, 0)
    await worker.start()
    await client.connect()
    try:
        await wait_until(lambda: worker.connected, what="the worker")
        await saved(pg_server, cluster.url, "add")
        assert await (await client.submit(QUEUE, "add", 1, 2)).result(timeout=TIMEOUT) == 3
        for only_listen in (False, True):
            killed = pg_server.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s AND (NOT %s OR query LIKE 'LISTEN%%')",
                (schema_of(cluster.url), only_listen)).fetchone()
            assert killed is not None and int(killed[0]) >= 2  # type: ignore[call-overload]
            job = await submitted(client, "add", 20, 22)
            assert await job.result(timeout=2 * TIMEOUT) == 42
    finally:
        await client.close()
        await worker.stop(grace=0)


async def test_a_schedule_of_every_second_fires_once_per_tick_across_three_managers(
        cluster: Cluster, pg_server: Server) -> None:
    """Three managers each run the schedule's timer; the store lets one job per tick through,
    also while a manager stops and another starts."""
    await cluster.start(3)
    worker = worker_on(cluster, "ticker", 0, 1, 2)
    ran: list[float] = []

    @worker.task(schedule="* * * * * *")
    async def tick() -> None:
        ran.append(time.time())

    await worker.start()
    try:
        await wait_until(lambda: len(ran) >= 3, what="the schedule to fire")
        cluster.procs[2].popen.terminate()
        await cluster.start(1)
        await wait_until(lambda: len(ran) >= 20, timeout=30, what="20 ticks")
    finally:
        await worker.stop(grace=0)
    schema = schema_of(cluster.url)
    created = [row[0] for row in pg_server.execute(
        f"SELECT created_at FROM {schema}.ej_jobs WHERE task = 'tick' ORDER BY created_at")]
    ticks = Counter(int(at) for at in created)
    assert max(ticks.values()) == 1, ticks  # never two jobs for one tick
    span = int(created[-1]) - int(created[0]) + 1
    assert len(ticks) >= span - 1, (len(ticks), span)  # at most one tick missed (a restart)
