"""Prometheus metrics for one manager, in a registry of its own (``GET /metrics``).

Counters and histograms follow the manager's job changes; queue depth (the store's counts),
jobs in flight and connected workers are read through ``Queries`` when scraped, so they are
never stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import StoreError
from ..jobs import JobRecord, JobStatus

if TYPE_CHECKING:
    from .observers import Observers
    from .peers import Peer
    from .queries import Queries

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABELS = ("queue", "task")


class _TaskMetrics(NamedTuple):
    """The labelled children of one (queue, task)."""

    submitted: Any
    succeeded: Any
    failed: Any
    cancelled: Any
    retried: Any
    duplicates: Any
    duration: Any
    queue_wait: Any


class Metrics(Collector):
    """Observes a manager and renders the Prometheus text format."""

    def __init__(self, observers: Observers, queries: Queries) -> None:
        self._queries = queries
        self._depth: dict[tuple[str, str], int] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.submitted = Counter("easyjobs_jobs_submitted", "Jobs created", _LABELS,
                                 registry=self.registry)
        self.succeeded = Counter("easyjobs_jobs_succeeded", "Jobs that succeeded", _LABELS,
                                 registry=self.registry)
        self.failed = Counter("easyjobs_jobs_failed", "Jobs that failed for good", _LABELS,
                              registry=self.registry)
        self.cancelled = Counter("easyjobs_jobs_cancelled", "Jobs cancelled", _LABELS,
                                 registry=self.registry)
        self.retried = Counter("easyjobs_jobs_retried", "Failed attempts that will be retried",
                               _LABELS, registry=self.registry)
        self.duplicates = Counter(
            "easyjobs_jobs_duplicate_outcomes",
            "Outcomes of another attempt than the one recorded: jobs that ran more than once",
            _LABELS, registry=self.registry)
        self.duration = Histogram("easyjobs_job_duration_seconds",
                                  "From the last attempt's start to the outcome", _LABELS,
                                  registry=self.registry)
        self.queue_wait = Histogram("easyjobs_job_queue_wait_seconds",
                                    "From creation to the first attempt's start", _LABELS,
                                    registry=self.registry)
        self._tasks: dict[tuple[str, str], _TaskMetrics] = {}
        self.registry.register(self)
        observers.append(self)

    def job_changed(self, change: str, record: JobRecord) -> None:
        task = self._tasks.get((record.queue, record.task))
        if task is None:  # labels() is a lookup with locks: done once per (queue, task)
            labels = (record.queue, record.task)
            task = self._tasks[labels] = _TaskMetrics(*(
                metric.labels(*labels) for metric in (
                    self.submitted, self.succeeded, self.failed, self.cancelled, self.retried,
                    self.duplicates, self.duration, self.queue_wait)))
        if change == "created":
            task.submitted.inc()
        elif change == "started" and record.attempts == 1:
            task.queue_wait.observe(max(0.0, (record.started_at or 0.0) - record.created_at))
        elif change == "retrying":
            task.retried.inc()
        elif change == "duplicate":
            task.duplicates.inc()
        elif change == "finished":
            outcome = {JobStatus.SUCCEEDED: task.succeeded, JobStatus.FAILED: task.failed}
            outcome.get(record.status, task.cancelled).inc()
            if record.started_at is not None and record.finished_at is not None:
                task.duration.observe(max(0.0, record.finished_at - record.started_at))

    def worker_changed(self, change: str, peer: Peer) -> None:
        """Worker gauges are read at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges, computed from the manager's state at scrape time."""
        if self._depth is not None:  # None: the store could not be read for this scrape
            depth = GaugeMetricFamily("easyjobs_jobs", "Unfinished jobs by queue and status",
                                      labels=["queue", "status"])
            for (queue, status), count in sorted(self._depth.items()):
                depth.add_metric([queue, status], count)
            yield depth
        yield GaugeMetricFamily("easyjobs_jobs_in_flight", "Jobs running on workers",
                                value=self._queries.jobs_in_flight())
        yield GaugeMetricFamily("easyjobs_workers_connected", "Connected workers",
                                value=self._queries.workers_connected())
        yield GaugeMetricFamily("easyjobs_store_writable",
                                "1 while the job store accepts writes, 0 while dispatch is held",
                                value=int(self._queries.store_writable()))

    async def render(self) -> bytes:
        """The text format; the queue depths are read from the store first."""
        try:
            self._depth = await self._queries.unfinished()
        except StoreError:
            self._depth = None
        return generate_latest(self.registry)
