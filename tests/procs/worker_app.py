"""A worker for tests that run it as a real process: ``easyjobs worker procs.worker_app:worker``.

It reads where to connect from the environment, as a deployed worker would: ``EASYJOBS_HOST``,
``EASYJOBS_PORT`` and ``EASYJOBS_SECRET``; ``WORKER_NAME`` names it and ``WORKER_SLOTS`` sets
``max_tasks_per_worker``, ``WORKER_CONNECT_TIMEOUT`` its ``connect_timeout``. Tasks that block
announce themselves by writing a marker file (holding the worker's pid), so a test can wait for
the file instead of sleeping; ``hold`` ends on SIGUSR1, so a test decides when a running job
finishes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from easyjobs import EasyJobsWorker
from easyjobs.workers.link import Backoff

QUEUE = "PROCS"

worker = EasyJobsWorker(
    None,
    None,
    os.environ.get("EASYJOBS_HOST", "127.0.0.1"),
    int(os.environ["EASYJOBS_PORT"]),
    os.environ["EASYJOBS_SECRET"],
    QUEUE,
    max_tasks_per_worker=int(os.environ.get("WORKER_SLOTS", "4")),
    name=os.environ.get("WORKER_NAME") or None,
    backoff=Backoff(initial=0.02, maximum=0.2),
    connect_timeout=float(os.environ.get("WORKER_CONNECT_TIMEOUT", "10")),
)


def _announce(marker: str) -> None:
    """Write the marker whole (renamed into place: the test must never read half a file)."""
    partial = Path(marker + ".partial")
    partial.write_text(str(os.getpid()))
    partial.rename(marker)


@worker.task()
async def add(a: int, b: int) -> int:
    return a + b


@worker.task()
async def fail(message: str) -> None:
    raise ValueError(message)


@worker.task()
async def hang(marker: str) -> str:
    """Write ``marker``, then never finish: only a kill or a stop ends this job."""
    _announce(marker)
    await asyncio.Event().wait()
    return "unreachable"


@worker.task()
async def hold(marker: str) -> str:
    """Write ``marker``, then finish when the process receives SIGUSR1."""
    loop = asyncio.get_running_loop()
    released = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, released.set)
    try:
        _announce(marker)
        await released.wait()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    return "released"


@worker.task(retry_policy="never")
async def crash() -> None:
    """Kill this worker's own process, as a segfault or the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


@worker.task()
async def block(seconds: float, runs: str) -> str:
    """Append a line to ``runs``, then block the event loop for ``seconds`` (as careless user
    code does, calling a blocking library from an ``async def``)."""
    with open(runs, "a") as fh:  # noqa: ASYNC230 (a few bytes)
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)  # noqa: ASYNC251 (what the task is for)
    return "slept"
