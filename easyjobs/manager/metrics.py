"""Prometheus metrics for one manager, in a registry of its own (``GET /metrics``).

Counters and histograms follow the manager's job changes, labelled (queue, task). Each task's
series exist, at zero, from the moment it is advertised (a worker registers it, or the manager
loads it from the store), so ``rate()`` and ``increase()`` see the first burst. Everything else
is read when scraped, so it is never stale: queue depths and ages from the store, workers and
jobs in flight from the dispatcher, connections from the endpoint, commit costs from the
store's own statistics.

Labels stay bounded: queue, task, status, worker *name* (not the id, which changes at every
reconnect), role and close code; never a job id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..errors import StoreError
from ..jobs import JobRecord, JobStatus
from ..store.stats import Buckets

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .observers import Observers
    from .peers import Peer
    from .queries import Queries

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABELS = ("queue", "task")
ROLES = ("worker", "client", "unauthenticated")
"""The values of ``easyjobs_connections``' role label, each always shown."""

Key = tuple[str, str]
T = TypeVar("T")


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


class _Scrape(NamedTuple):
    """What one scrape read from the store; None where the store could not be read."""

    depth: dict[tuple[str, str], int] | None
    queued: dict[Key, tuple[int, float]] | None


class Metrics(Collector):
    """Observes a manager and renders the Prometheus text format."""

    def __init__(self, observers: Observers, queries: Queries, endpoint: Endpoint) -> None:
        self._queries = queries
        self._endpoint = endpoint
        self._scrape = _Scrape(None, None)
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
        self._tasks: dict[Key, _TaskMetrics] = {}
        self.registry.register(self)
        observers.append(self)

    def _task(self, key: Key) -> _TaskMetrics:
        """The children of ``key``, made (at zero) the first time; labels() is a lookup with
        locks, so it is done once per (queue, task)."""
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = _TaskMetrics(*(
                metric.labels(*key) for metric in (
                    self.submitted, self.succeeded, self.failed, self.cancelled, self.retried,
                    self.duplicates, self.duration, self.queue_wait)))
        return task

    def _advertised(self) -> list[Key]:
        """Every task this manager knows, its series made if they were not yet."""
        keys = [(spec.queue, spec.name) for spec in self._queries.task_specs()]
        for key in keys:
            self._task(key)
        return keys

    def job_changed(self, change: str, record: JobRecord) -> None:
        task = self._task((record.queue, record.task))
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
        """A registration advertises tasks: their series start at zero now, before any job of
        theirs is counted. Worker gauges are read at scrape time."""
        if change == "registered":
            self._advertised()

    def collect(self) -> Iterator[Metric]:
        """The gauges, computed from the manager's state at scrape time."""
        yield from self._jobs()
        yield GaugeMetricFamily("easyjobs_jobs_in_flight",
                                "Jobs running on workers, the manager's own tasks included",
                                value=self._queries.jobs_in_flight())
        yield from self._workers()
        yield from self._connections()
        yield from self._store()
        info = InfoMetricFamily("easyjobs_manager", "This manager process (one per process "
                                "lifetime; join on it to name the manager of an instance)")
        info.add_metric([], {"manager": self._queries.manager_id(),
                             "shared_store": str(self._queries.store_shared()).lower()})
        yield info
        forwarded, fell_back = self._queries.forward_counts()
        yield CounterMetricFamily(
            "easyjobs_submits_forwarded", "Submits sent straight to the manager whose workers "
            "serve their task (cluster mode)", value=forwarded)
        yield CounterMetricFamily(
            "easyjobs_submits_forward_fallbacks", "Of the forwarded submits, those that went "
            "through the store after all (the other manager failed them or its link was lost)",
            value=fell_back)
        yield GaugeMetricFamily("easyjobs_manager_lease_held",
                                "1 while this manager's lease lets it assign jobs (always on an "
                                "unshared store), 0 while it holds dispatch for its lease",
                                value=int(self._queries.lease_held()))

    def _jobs(self) -> Iterator[Metric]:
        depth, queued = self._scrape
        if depth is not None:  # None: the store could not be read for this scrape
            family = GaugeMetricFamily("easyjobs_jobs", "Unfinished jobs by queue and status",
                                       labels=["queue", "status"])
            for (queue, status), count in sorted(depth.items()):
                family.add_metric([queue, status], count)
            yield family
        if queued is not None:
            waiting = GaugeMetricFamily("easyjobs_queued_jobs",
                                      "Jobs waiting for a worker, by queue and task",
                                      labels=list(_LABELS))
            age = GaugeMetricFamily("easyjobs_queued_oldest_job_age_seconds",
                                    "How long the oldest queued job has existed (0: none)",
                                    labels=list(_LABELS))
            now = time.time()
            for key in sorted({*self._tasks, *queued}):
                n, oldest = queued.get(key, (0, now))
                waiting.add_metric(list(key), n)
                age.add_metric(list(key), max(0.0, now - oldest))
            yield waiting
            yield age

    def _workers(self) -> Iterator[Metric]:
        workers = self._queries.remote_workers()
        yield GaugeMetricFamily("easyjobs_workers_connected",
                                "Workers connected over WebSockets (not the manager's own tasks)",
                                value=self._queries.workers_connected())
        running = GaugeMetricFamily("easyjobs_worker_jobs_running",
                                    "Jobs running on the workers of a name", labels=["worker"])
        slots = GaugeMetricFamily("easyjobs_worker_slots",
                                  "Jobs the workers of a name can run at once", labels=["worker"])
        for name, (jobs, capacity) in sorted(workers.items()):
            running.add_metric([name], jobs)
            slots.add_metric([name], capacity)
        yield running
        yield slots

    def _connections(self) -> Iterator[Metric]:
        open_now = self._endpoint.open_by_role()
        gauge = GaugeMetricFamily("easyjobs_connections", "WebSocket connections open now",
                                  labels=["role"])
        for role in sorted({*ROLES, *open_now}):
            gauge.add_metric([role], open_now.get(role, 0))
        yield gauge
        closed = CounterMetricFamily(
            "easyjobs_connections_closed",
            "WebSocket connections ended, by role and close code (the manager's if it closed "
            "first, else the peer's; 1006 without a close frame)", labels=["role", "code"])
        for (role, code), count in sorted(self._endpoint.closed.items()):
            closed.add_metric([role, str(code)], count)
        yield closed

    def _store(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("easyjobs_store_writable",
                                "1 while the job store accepts writes, 0 while dispatch is held",
                                value=int(self._queries.store_writable()))
        durations, sizes = self._queries.commit_stats()
        yield _histogram("easyjobs_store_commit_duration_seconds",
                         "Store transactions, from BEGIN to COMMIT returning", durations)
        yield _histogram("easyjobs_store_commit_writes",
                         "Writes carried by one store transaction (group commit)", sizes)

    async def render(self) -> bytes:
        """The text format; what comes from the store is read first, both reads at once."""
        self._advertised()  # before the counters are collected: tasks loaded from the store
        depth, queued = await asyncio.gather(
            self._queries.unfinished(), self._queries.queued_by_task(), return_exceptions=True)
        self._scrape = _Scrape(_unless_failed(depth), _unless_failed(queued))
        return generate_latest(self.registry)


def _unless_failed(value: T | BaseException) -> T | None:
    """A read's answer; None if the store failed it (the others are re-raised)."""
    if isinstance(value, StoreError):
        return None
    if isinstance(value, BaseException):
        raise value
    return value


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], [("+Inf" if bound == float("inf") else repr(bound), count)
                           for bound, count in buckets.cumulative], buckets.total)
    return family
