"""JSON log lines, for log pipelines that index fields (``easyjobs --log-format json``).

Each line is one object: ``time`` (ISO 8601 UTC), ``level``, ``logger``, ``message``, and, on
every job-related line, ``job_id``, ``queue``, ``task``, ``attempt`` and ``worker`` (the
worker's name; null before the job has one) as fields of their own. Call sites attach them with
``log.info(..., extra=job_fields(job))``. Only those names are copied from a record: task
arguments, results and secrets never reach a line, whatever a caller passes in ``extra``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jobs import JobRecord
    from .protocol.frames import Assign

JOB_FIELDS = ("job_id", "queue", "task", "attempt", "worker")


def job_fields(job: JobRecord) -> dict[str, Any]:
    """The ``extra`` of a log call about ``job``: its id, queue, task, attempt and worker."""
    return {"job_id": job.id, "queue": job.queue, "task": job.task, "attempt": job.attempts,
            "worker": job.worker}


def assign_fields(assign: Assign, worker: str) -> dict[str, Any]:
    """The ``extra`` of a log call of the worker named ``worker`` about the attempt ``assign``
    runs."""
    return {"job_id": assign.job, "queue": assign.queue, "task": assign.task,
            "attempt": assign.attempt, "worker": worker}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; an exception's traceback goes in ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        about_job = "job_id" in record.__dict__  # then every field, null where unknown
        for name in JOB_FIELDS:
            value = record.__dict__.get(name)
            if value is not None or about_job:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def use_json(logger: logging.Logger | None = None) -> None:
    """Make the handlers of ``logger`` (default: the root logger) write JSON lines."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())
