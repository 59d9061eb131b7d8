"""A worker that names no manager, for ``easyjobs worker procs.listed_worker:worker --managers``:
it takes its managers from the command line (``EASYJOBS_MANAGERS``)."""

from __future__ import annotations

import os

from easyjobs import EasyJobsWorker
from easyjobs.workers.link import Backoff

worker = EasyJobsWorker(manager_secret=os.environ["EASYJOBS_SECRET"], jobs_queue="LISTED",
                        name="listed", backoff=Backoff(initial=0.02, maximum=0.2))


@worker.task()
async def add(a: int, b: int) -> int:
    return a + b
