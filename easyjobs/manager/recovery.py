"""Start-up: take back what earlier runs left unfinished in the store."""

from __future__ import annotations

import logging

from ..store import Store
from .claims import Claims
from .lifecycle import Lifecycle
from .registry import TaskRegistry
from .scheduler import Scheduler

log = logging.getLogger("easyjobs.manager")


async def recover(store: Store, registry: TaskRegistry, lifecycle: Lifecycle, claims: Claims,
                  scheduler: Scheduler) -> None:
    """Reload task specs, take back the unfinished jobs, then start the schedules.

    One store write does it, whatever the backlog: running jobs go back to the queue (their
    workers' links are gone), queued jobs are left there for claims, and the waiting and
    retrying jobs, which need this manager's timers and dependency checks, are held here.
    Then the tasks with queued jobs are noted as having a backlog, claimed when served.
    """
    await registry.load()
    requeued, held = await store.take_back(claims.owner)
    claims.wake(await store.queued_tasks())
    lifecycle.take_over(held)
    if requeued or held:
        log.info("took back the unfinished jobs: %d requeued, %d waiting or retrying",
                 requeued, len(held))
    scheduler.load(await store.load_schedules())
    for spec in registry.specs.values():
        scheduler.update(spec)
