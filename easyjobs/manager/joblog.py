"""A line per job change on the ``easyjobs.jobs`` logger, with the job's fields (``jsonlog``).

Failures for good and duplicate runs are INFO; the rest (created, started, retrying,
requeued, other outcomes) DEBUG, so a busy manager at INFO writes a line only for what an
operator looks into. Never arguments or results.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..jobs import JobRecord, JobStatus
from ..jsonlog import job_fields

if TYPE_CHECKING:
    from .peers import Peer

log = logging.getLogger("easyjobs.jobs")


class JobLog:
    """An observer of the manager that logs job changes."""

    def job_changed(self, change: str, record: JobRecord) -> None:
        failed = change == "finished" and record.status is JobStatus.FAILED
        level = logging.INFO if failed or change == "duplicate" else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        what = record.status.value if change == "finished" else change
        if change == "duplicate":
            what = "an outcome of another attempt (it ran more than once)"
        log.log(level, "job %s (%s.%s) %s, attempt %d", record.id, record.queue, record.task,
                what, record.attempts, extra=job_fields(record))

    def worker_changed(self, change: str, peer: Peer) -> None:
        """Workers' connections are logged by the endpoint."""
