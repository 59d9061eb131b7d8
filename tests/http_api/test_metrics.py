"""GET /metrics in the Prometheus text format, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from easyjobs import EasyJobsWorker

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


async def test_job_counters_gauges_and_histograms(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    api: httpx.AsyncClient,
) -> None:
    """Submitted, succeeded, failed and retried by queue and task; depth, in flight, workers;
    duration and queue-wait histograms with one observation per job."""
    worker = worker_factory(name="w-metrics")
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
    assert value(samples, "easyjobs_workers_connected") == len(workers) == 2
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
    assert value(samples, "easyjobs_workers_connected") == 1  # the manager's own


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
