"""What a cron tick does: create the task's job, unless the previous tick's has not started."""

from __future__ import annotations

import logging
import time

from ..errors import EasyJobsError, StoreError
from ..jobs import JobRecord, new_job_id
from ..jsonlog import job_fields
from ..store import Store
from ..tasks import TaskSpec
from . import workflow
from .claims import Claims
from .dispatcher import Key
from .lifecycle import Lifecycle
from .registry import TaskRegistry

log = logging.getLogger("easyjobs.manager")


class ScheduleFiring:
    """Turns ticks into jobs; the store makes each tick fire at most once."""

    def __init__(self, store: Store, registry: TaskRegistry, lifecycle: Lifecycle,
                 claims: Claims) -> None:
        self._store = store
        self._claims = claims
        self._registry = registry
        self._lifecycle = lifecycle
        self._last: dict[Key, str] = {}
        """(queue, task) -> the job its last tick created"""

    async def fire(self, spec: TaskSpec, tick: float) -> bool:
        """One tick: True if it created the task's job (with its run_before dependencies).

        A tick is skipped while the previous tick's job has not started yet, so a schedule
        whose task no worker runs does not pile up jobs.
        """
        key = (spec.queue, spec.name)
        previous = self._last.get(key, "")
        if await self._lifecycle.not_started(previous):
            log.info("schedule of %s.%s skipped a tick: job %s has not started yet",
                     spec.queue, spec.name, previous)
            return False
        spec = self._registry.specs.get(key, spec)
        args, kwargs = workflow.default_arguments(spec)
        now = time.time()
        record = JobRecord(id=new_job_id(), queue=spec.queue, task=spec.name, args=args,
                           kwargs=kwargs, created_at=now)
        try:
            spec.check(args, kwargs)
            deps = workflow.dependency_jobs(self._registry.spec, record, now)
        except EasyJobsError as exc:
            log.error("schedule of %s.%s cannot fire: %s", spec.queue, spec.name, exc)
            return False
        try:
            spilled = self._claims.place([record, *deps])
            firing = self._store.fire_schedule(spec.queue, spec.name, tick, record, deps)
            for spilled_key in spilled:  # issued after the insert: a claim sees it
                self._claims.top_up(spilled_key)
            fired = await firing
        except StoreError:
            log.exception("schedule of %s.%s could not fire", spec.queue, spec.name)
            return False
        if fired:
            log.info("schedule fired %s.%s (job %s)", spec.queue, spec.name, record.id,
                     extra=job_fields(record))
            self._last[key] = record.id
            self._lifecycle.activate([record, *deps])
        return fired
