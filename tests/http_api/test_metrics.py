"""GET /metrics in the Prometheus text format, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.errors import TaskFailed

from ..conftest import RunningManager
from ..mesh import registered
from ..utils import TIMEOUT, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: httpx.AsyncClient) -> Samples:
    """Every sample of one scrape, keyed by (name, labels)."""
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def serving_three(manager: RunningManager, worker: EasyJobsWorker) -> asyncio.Event:
    """``worker`` serving ETL.add, ETL.flaky (fails, retried once) and ETL.hold (runs until
    the returned event is set), once the manager knows all three."""
    gate = asyncio.Event()

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @worker.task(retry_policy="retry_once")
    async def flaky(n: int) -> None:
        raise RuntimeError(f"attempt for {n}")

    @worker.task()
    async def hold() -> None:
        await gate.wait()

    await worker.start()
    await registered(manager, "ETL", "add", "flaky", "hold")
    return gate


async def test_job_counters_gauges_and_histograms(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    api: httpx.AsyncClient,
) -> None:
    """Submitted, succeeded, failed and retried by queue and task; depth, in flight, workers;
    duration and queue-wait histograms with one observation per job."""
    worker = worker_factory(name="w-metrics")
    gate = await serving_three(manager, worker)
    before = await scrape(api)
    assert value(before, "easyjobs_jobs_submitted_total", queue="ETL", task="add") == 0
    for i in range(3):
        response = await api.post("/ETL/task/add", params={"wait": TIMEOUT}, json={"a": i, "b": 1})
        assert response.status_code == 200
    response = await api.post("/ETL/task/flaky", params={"wait": TIMEOUT}, json={"n": 1})
    assert response.json()["status"] == "failed"

    held = (await api.post("/ETL/task/hold")).json()["job_id"]
    core = manager.manager.core
    await wait_until(lambda: core.active[held].worker_id is not None, what="hold to run")
    await api.post("/workers/pause")
    queued = [(await api.post("/ETL/task/add", json={"a": i, "b": 0})).json()["job_id"]
              for i in range(2)]

    samples = await scrape(api)
    add_labels = {"queue": "ETL", "task": "add"}
    flaky_labels = {"queue": "ETL", "task": "flaky"}
    assert value(samples, "easyjobs_jobs_submitted_total", **add_labels) == 5
    assert value(samples, "easyjobs_jobs_succeeded_total", **add_labels) == 3
    assert value(samples, "easyjobs_jobs_failed_total", **add_labels) == 0
    assert value(samples, "easyjobs_jobs_submitted_total", **flaky_labels) == 1
    assert value(samples, "easyjobs_jobs_retried_total", **flaky_labels) == 1
    assert value(samples, "easyjobs_jobs_failed_total", **flaky_labels) == 1
    assert value(samples, "easyjobs_jobs_succeeded_total", **flaky_labels) == 0
    assert value(samples, "easyjobs_jobs", queue="ETL", status="queued") == 2
    assert value(samples, "easyjobs_jobs", queue="ETL", status="running") == 1
    assert value(samples, "easyjobs_jobs_in_flight") == 1
    workers = (await api.get("/workers")).json()["workers"]
    assert len(workers) == 2  # the API lists the manager's own; the metric counts workers
    assert value(samples, "easyjobs_workers_connected") == 1
    assert value(samples, "easyjobs_job_duration_seconds_count", **add_labels) == 3
    assert value(samples, "easyjobs_job_duration_seconds_count", **flaky_labels) == 1
    assert value(samples, "easyjobs_job_duration_seconds_sum", **add_labels) >= 0
    assert value(samples, "easyjobs_job_duration_seconds_bucket", le="+Inf", **add_labels) == 3
    assert value(samples, "easyjobs_job_queue_wait_seconds_count", **add_labels) == 3
    assert value(samples, "easyjobs_job_queue_wait_seconds_count", **flaky_labels) == 1
    assert value(samples, "easyjobs_job_queue_wait_seconds_count",
                 queue="ETL", task="hold") == 1

    await api.post("/workers/resume")
    gate.set()
    for job_id in [held, *queued]:
        await api.get(f"/jobs/{job_id}/result", params={"timeout": TIMEOUT})
    await wait_until(lambda: not core.active, what="every job to finish")
    samples = await scrape(api)
    assert value(samples, "easyjobs_jobs_succeeded_total", **add_labels) == 5
    assert value(samples, "easyjobs_jobs_in_flight") == 0
    assert not any(name == "easyjobs_jobs" and count for (name, _), count in samples.items())
    await worker.stop(grace=0)
    samples = await scrape(api)
    assert value(samples, "easyjobs_workers_connected") == 0  # the manager's own is no worker


async def test_cancelled_jobs_are_counted(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    api: httpx.AsyncClient,
) -> None:
    """A cancelled job counts as cancelled, neither succeeded nor failed."""
    worker = worker_factory()

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    await registered(manager, "ETL", "add")
    await api.post("/workers/pause")
    job_id = (await api.post("/ETL/task/add", json={"a": 1, "b": 2})).json()["job_id"]
    await api.post(f"/jobs/{job_id}/cancel")
    samples = await scrape(api)
    labels = {"queue": "ETL", "task": "add"}
    assert value(samples, "easyjobs_jobs_cancelled_total", **labels) == 1
    assert value(samples, "easyjobs_jobs_failed_total", **labels) == 0
    assert value(samples, "easyjobs_jobs_succeeded_total", **labels) == 0
    assert value(samples, "easyjobs_job_queue_wait_seconds_count", **labels) == 0


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


async def test_a_burst_between_two_scrapes_is_seen_by_rate_and_increase(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    client: EasyJobsClient, api: httpx.AsyncClient,
) -> None:
    """Every advertised (queue, task) has its series at zero before its first job, so a
    burst that ends between two scrapes shows as their difference; the gauges operators alert
    on (queue depth and age, jobs per worker, connections, store commits) are all there."""
    worker = worker_factory(name="w-burst", max_tasks=8)
    gate = await serving_three(manager, worker)
    add_labels = {"queue": "ETL", "task": "add"}
    before = await scrape(api)
    for task in ("add", "flaky", "hold"):
        labels = {"queue": "ETL", "task": task}
        for name in ("easyjobs_jobs_submitted_total", "easyjobs_jobs_succeeded_total",
                     "easyjobs_jobs_failed_total", "easyjobs_jobs_cancelled_total",
                     "easyjobs_jobs_retried_total", "easyjobs_jobs_duplicate_outcomes_total",
                     "easyjobs_job_duration_seconds_count", "easyjobs_job_queue_wait_seconds_count",
                     "easyjobs_queued_jobs", "easyjobs_queued_oldest_job_age_seconds"):
            assert before[(name, frozenset(labels.items()))] == 0, (name, task)
        assert before[("easyjobs_job_duration_seconds_bucket",
                       frozenset({**labels, "le": "+Inf"}.items()))] == 0
    assert value(before, "easyjobs_workers_connected") == 1
    assert before[("easyjobs_worker_jobs_running", frozenset({("worker", "w-burst")}))] == 0
    assert value(before, "easyjobs_worker_slots", worker="w-burst") == 8
    assert value(before, "easyjobs_connections", role="worker") == 1
    assert value(before, "easyjobs_connections", role="client") == 1
    assert ("easyjobs_connections", frozenset({("role", "unauthenticated")})) in before

    results = await asyncio.gather(*(client.call("ETL", "add", i, 1) for i in range(200)))
    assert results == [i + 1 for i in range(200)]
    with pytest.raises(TaskFailed):
        await client.call("ETL", "flaky", 1)
    after = await scrape(api)

    def increase(name: str, **labels: str) -> float:
        return after[(name, frozenset(labels.items()))] - before[(name, frozenset(labels.items()))]

    assert increase("easyjobs_jobs_submitted_total", **add_labels) == 200
    assert increase("easyjobs_jobs_succeeded_total", **add_labels) == 200
    assert increase("easyjobs_job_duration_seconds_count", **add_labels) == 200
    assert increase("easyjobs_job_duration_seconds_bucket", le="+Inf", **add_labels) == 200
    assert increase("easyjobs_job_queue_wait_seconds_count", **add_labels) == 200
    flaky_labels = {"queue": "ETL", "task": "flaky"}
    assert increase("easyjobs_jobs_retried_total", **flaky_labels) == 1
    assert increase("easyjobs_jobs_failed_total", **flaky_labels) == 1
    assert increase("easyjobs_jobs_duplicate_outcomes_total", **flaky_labels) == 0
    commits = increase("easyjobs_store_commit_duration_seconds_count")
    assert 1 <= commits == increase("easyjobs_store_commit_writes_count")
    assert increase("easyjobs_store_commit_writes_sum") >= 2 * 200  # each job's insert, outcome
    assert increase("easyjobs_store_commit_duration_seconds_sum") > 0

    held = await client.submit("ETL", "hold")
    core = manager.manager.core
    await wait_until(lambda: core.active[held.id].worker_id is not None, what="hold to run")
    await api.post("/workers/pause")
    submitted_at = time.time()
    for i in range(3):
        await client.submit("ETL", "add", i, 0)
    response = await api.get("/metrics")
    scraped_at = time.time()
    parsed = families(response.text)
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in parsed.values() for s in family.samples}
    assert value(samples, "easyjobs_queued_jobs", **add_labels) == 3
    assert 0 < value(samples, "easyjobs_queued_oldest_job_age_seconds", **add_labels) <= (
        scraped_at - submitted_at)
    assert value(samples, "easyjobs_queued_jobs", queue="ETL", task="hold") == 0
    assert value(samples, "easyjobs_worker_jobs_running", worker="w-burst") == 1
    assert value(samples, "easyjobs_jobs_in_flight") == 1
    for name, kind in [("easyjobs_queued_jobs", "gauge"), ("easyjobs_jobs_submitted", "counter"),
                       ("easyjobs_connections_closed", "counter"),
                       ("easyjobs_store_commit_duration_seconds", "histogram"),
                       ("easyjobs_store_commit_writes", "histogram"),
                       ("easyjobs_manager_info", "gauge")]:  # info, in text format 0.0.4
        assert parsed[name].type == kind, name
    (info,) = parsed["easyjobs_manager_info"].samples
    assert info.labels == {"manager": core.id, "shared_store": "false"} and info.value == 1
    assert value(samples, "easyjobs_manager_lease_held") == 1
    assert value(samples, "easyjobs_submits_forwarded_total") == 0  # no other manager
    assert value(samples, "easyjobs_submits_forward_fallbacks_total") == 0
    assert not any("job_id" in labels or held.id in str(labels) for _, labels in samples)

    async with connect(f"ws://{manager.host}:{manager.port}/ws/jobs"):
        pass  # closed by us (1000) before saying hello
    await api.post("/workers/resume")
    gate.set()
    await held.result(timeout=TIMEOUT)
    await worker.stop(grace=TIMEOUT)
    await wait_until(lambda: not core.dispatcher.workers.keys() - {"loopback"},
                     what="the worker to be gone")
    last = await scrape(api)
    assert value(last, "easyjobs_workers_connected") == 0
    assert value(last, "easyjobs_connections", role="worker") == 0
    assert ("easyjobs_worker_jobs_running", frozenset({("worker", "w-burst")})) not in last
    closed = {labels: n for (name, labels), n in last.items()
              if name == "easyjobs_connections_closed_total"}
    assert closed == {frozenset({("role", "worker"), ("code", "1000")}): 1,
                      frozenset({("role", "unauthenticated"), ("code", "1000")}): 1}


DOCS = Path(__file__).resolve().parents[2] / "docs"


def documented_names(page: str) -> set[str]:
    return set(re.findall(r"easyjobs_[a-z_]+", (DOCS / page).read_text()))


async def test_the_documented_rules_and_dashboard_use_only_exposed_series(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    api: httpx.AsyncClient,
) -> None:
    """Every easyjobs_* name in docs/alerts.md and docs/grafana-dashboard.json is a sample
    of a scrape (a renamed metric breaks this test, not an operator's alerts)."""
    worker = worker_factory(name="w-docs")

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    await registered(manager, "ETL", "add")
    assert (await api.post("/ETL/task/add", params={"wait": TIMEOUT},
                           json={"a": 1, "b": 2})).status_code == 200
    async with connect(f"ws://{manager.host}:{manager.port}/ws/jobs"):
        pass  # one closed connection, so the counter has a sample
    await wait_until(lambda: bool(manager.manager.endpoint.closed), what="the close to be counted")
    exposed = {name for name, _ in await scrape(api)}
    for page in ("alerts.md", "grafana-dashboard.json"):
        used = documented_names(page)
        assert used and used <= exposed, (page, used - exposed)
