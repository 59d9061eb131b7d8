"""A worker that names neither its managers nor its secret, for ``easyjobs worker
procs.listed_worker:worker`` with ``--managers`` or ``--host``/``--port`` and ``--secret-file``:
it takes them from the command line or the environment, as the CLI's own commands do."""

from __future__ import annotations

from easyjobs import EasyJobsWorker
from easyjobs.workers.link import Backoff

worker = EasyJobsWorker(jobs_queue="LISTED", name="listed",
                        backoff=Backoff(initial=0.02, maximum=0.2))


@worker.task()
async def add(a: int, b: int) -> int:
    return a + b
