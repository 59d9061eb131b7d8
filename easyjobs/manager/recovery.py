"""Start-up: take back what earlier runs left unfinished in the store."""

from __future__ import annotations

import logging

from ..jobs import JobStatus
from ..store import Store
from .lifecycle import Lifecycle
from .registry import TaskRegistry
from .scheduler import Scheduler

log = logging.getLogger("easyjobs.manager")


async def recover(store: Store, registry: TaskRegistry, lifecycle: Lifecycle,
                  scheduler: Scheduler) -> None:
    """Reload task specs and every unfinished job, then start the schedules.

    Running jobs are requeued (their workers' links are gone), retries get their timers back,
    and waiting jobs are matched with their dependencies' outcomes.
    """
    await registry.load()
    jobs = await store.unfinished_jobs()
    running = [job.id for job in jobs if job.status is JobStatus.RUNNING]
    if running:
        await store.requeue(running)
    for job in jobs:
        if job.status is JobStatus.RUNNING:
            job.move(JobStatus.QUEUED)
            job.worker = None
    lifecycle.activate(jobs, recovered=True)
    for job in jobs:
        if job.status is JobStatus.WAITING:
            for dep_id in job.dependencies:
                if dep_id not in lifecycle.active:
                    await lifecycle.settle_dependency(dep_id)
    if jobs:
        log.info("recovered %d unfinished job(s), %d of them requeued", len(jobs), len(running))
    scheduler.load(await store.load_schedules())
    for spec in registry.specs.values():
        scheduler.update(spec)
