"""Workflow rules, pure: which jobs a submit, a success or a failure creates, and retry timing.

The core applies these decisions with the store (children are created in the same transaction
as their parent's outcome) and the dispatcher. Nothing here does I/O, so every rule is tested
directly.

- run_before: a job for a task with dependencies starts ``waiting``; one job per dependency is
  created with it (recursively), with no arguments or the dependency's ``default_args``.
- run_after: a success creates one job per listed task; a dict result becomes keyword
  arguments, anything else the single positional argument.
- on_failure: a job that failed for good creates a job for the handler with ``job_failed``;
  a failure handler's own failure never creates another handler.
- trace: every job these rules create continues the trace of the job that caused it.
- retry_policy: ``never`` = one attempt, ``retry_once`` = two, ``retry_always`` = unbounded,
  with exponential backoff, jitter and a cap between attempts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError, EasyJobsError, InvalidArguments, UnknownTask
from ..jobs import JobRecord, JobStatus, derived_job_id, new_job_id
from ..jsonlog import job_fields
from ..tasks import TaskSpec

Lookup = Callable[[str, str], "TaskSpec | None"]
MAX_TEXT = 16_000
"""The most of a failure's message (first) and traceback (last) that job_failed carries."""
log = logging.getLogger("easyjobs.manager")


def dependency_jobs(
    lookup: Lookup, job: JobRecord, now: float, _path: tuple[str, ...] = ()
) -> list[JobRecord]:
    """Give ``job`` its run_before dependency jobs (recursively); returns the new jobs.

    ``job`` becomes ``waiting`` when it has dependencies. Raises ``UnknownTask`` or
    ``InvalidArguments`` naming the dependency that cannot be created.
    """
    spec = lookup(job.queue, job.task)
    if spec is None or not spec.options.run_before:
        return []
    path = (*_path, job.task)
    created: list[JobRecord] = []
    for name in spec.options.run_before:
        if name in path:
            raise ConfigurationError(f"run_before cycle: {' -> '.join((*path, name))}")
        dep_spec = lookup(job.queue, name)
        if dep_spec is None:
            raise UnknownTask(f"{job.task} runs after {name!r}, which no worker has registered")
        args, kwargs = default_arguments(dep_spec)
        try:
            dep_spec.check(args, kwargs)
        except InvalidArguments as exc:
            raise InvalidArguments(f"dependency {name} of {job.task}: {exc}") from None
        dep = JobRecord(id=derived_job_id(job.id, "run_before", name), queue=job.queue,
                        task=name, args=args, kwargs=kwargs, parent=job.id, created_at=now,
                        trace=job.trace)
        job.dependencies.append(dep.id)
        created.append(dep)
        created.extend(dependency_jobs(lookup, dep, now, path))
    job.status = JobStatus.WAITING
    return created


def default_arguments(spec: TaskSpec) -> tuple[list[Any], dict[str, Any]]:
    """The task's ``default_args`` as (args, kwargs); empty when it has none."""
    defaults = spec.options.default_args or {}
    return list(defaults.get("args", [])), dict(defaults.get("kwargs", {}))


def run_after_jobs(lookup: Lookup, parent: JobRecord, result: Any, now: float
                   ) -> list[JobRecord]:
    """The jobs a success of ``parent`` creates (with their dependencies and handlers).

    A child whose arguments do not bind, or whose task is unknown, is created already
    ``failed`` with that error, so the failure is visible and its on_failure still fires.
    """
    spec = lookup(parent.queue, parent.task)
    if spec is None:
        return []
    if isinstance(result, Mapping) and all(isinstance(k, str) for k in result):
        args, kwargs = [], dict(result)
    else:
        args, kwargs = [result], {}
    created: list[JobRecord] = []
    for name in spec.options.run_after:
        child = JobRecord(id=new_job_id(), queue=parent.queue, task=name, args=list(args),
                          kwargs=dict(kwargs), parent=parent.id, created_at=now,
                          trace=parent.trace)
        child_spec = lookup(parent.queue, name)
        try:
            if child_spec is None:
                log.warning("run_after task %r of %s is not registered; job %s's child %s "
                            "fails with UnknownTask", name, parent.task, parent.id, child.id)
                raise UnknownTask(f"run_after task {name!r} of {parent.task} is not registered")
            child_spec.check(child.args, child.kwargs)
            deps = dependency_jobs(lookup, child, now)
        except EasyJobsError as exc:
            child.status, child.finished_at = JobStatus.FAILED, now
            child.error = error_info(exc)
            created.append(child)
            created.extend(failure_jobs(lookup, child, now))
            continue
        created.append(child)
        created.extend(deps)
    return created


def failure_jobs(lookup: Lookup, failed: JobRecord, now: float) -> list[JobRecord]:
    """The on_failure job for ``failed`` (which must carry its ``error``), if it has one.

    Sets ``failed.on_failure_job``. A failure handler's failure creates nothing.
    """
    spec = lookup(failed.queue, failed.task)
    if spec is None or spec.options.on_failure is None or failed.handler_for is not None:
        return []
    handler_spec = lookup(failed.queue, spec.options.on_failure)
    kwargs = {"job_failed": describe_failure(failed)}
    if handler_spec is None:
        log.warning("on_failure task %r of %s is not registered; job %s has no handler",
                    spec.options.on_failure, failed.task, failed.id, extra=job_fields(failed))
        return []
    try:
        handler_spec.check([], kwargs)
    except InvalidArguments as exc:
        log.warning("on_failure task %s cannot take job_failed (%s); job %s has no handler",
                    handler_spec.name, exc, failed.id, extra=job_fields(failed))
        return []
    handler = JobRecord(id=new_job_id(), queue=failed.queue, task=handler_spec.name,
                        kwargs=kwargs, parent=failed.id, handler_for=failed.id, created_at=now,
                        trace=failed.trace)
    failed.on_failure_job = handler.id
    return [handler]


def describe_failure(job: JobRecord) -> dict[str, Any]:
    """The ``job_failed`` argument an on_failure task receives (documented in the README)."""
    error = job.error or {}
    return {
        "job_id": job.id,
        "queue": job.queue,
        "task": job.task,
        "args": job.args,
        "kwargs": job.kwargs,
        "error_type": error.get("type", ""),
        "message": error.get("message", "")[:MAX_TEXT],
        "traceback": error.get("traceback", "")[-MAX_TEXT:],
        "attempts": job.attempts,
    }


def error_info(exc: BaseException | EasyJobsError) -> dict[str, str]:
    """An error raised by the manager itself as an ``error`` map (no traceback to show)."""
    return {"type": type(exc).__name__, "message": str(exc), "traceback": ""}


def retry_delay(
    policy: str, attempts: int, base: float, cap: float,
    jitter: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt, or None when the policy allows no more attempts.

    Attempt n+1 waits ``min(cap, base * 2**(n-1))``, scaled by a random factor in [0.5, 1).
    """
    if policy == "never" or (policy == "retry_once" and attempts >= 2):
        return None
    # A float power, its exponent bounded: an int 2**n over ~1024 bits cannot become a float,
    # and a retry_always job reaches that many attempts in a day at the cap.
    exponent = min(max(0, attempts - 1), 1023)
    return float(min(cap, base * 2.0**exponent) * (0.5 + jitter() / 2))
