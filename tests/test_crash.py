"""Crashes with real processes: a worker killed or frozen mid-job, a manager killed and restarted.

Workers and managers here are child processes (``python -m easyjobs ...``) that the tests kill
with real signals; the tests wait on marker files, job records and ports, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.workers.link import Backoff

from .conftest import FAST_BACKOFF, Process, RunningManager
from .processes import (
    QUEUE,
    assert_secret_hidden,
    serving,
    spawn_manager,
    spawn_worker,
    wait_listening,
)
from .utils import SECRET, TIMEOUT, free_port, wait_until

log = logging.getLogger(__name__)

WorkerMaker = Callable[..., EasyJobsWorker]


@pytest.fixture
async def local_workers() -> AsyncIterator[WorkerMaker]:
    """Build in-process workers for any port (not started); all are stopped afterwards."""
    made: list[EasyJobsWorker] = []

    def make(port: int, name: str, max_tasks: int = 4) -> EasyJobsWorker:
        worker = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, QUEUE, max_tasks,
                                name=name, backoff=FAST_BACKOFF)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(grace=0)


async def start_finisher(make: WorkerMaker, running: RunningManager) -> EasyJobsWorker:
    """Worker B: its ``hang`` returns at once, so a job requeued to it completes."""
    worker_b = make(running.port, "worker-b")

    @worker_b.task()
    async def hang(marker: str) -> str:
        return "finished by B"

    await worker_b.start()
    await wait_until(lambda: serving(running, "hang", "worker-b"), what="worker B to register")
    return worker_b


async def job_running_on_a(running: RunningManager, spawn: Callable[..., Process],
                           client: EasyJobsClient, tmp_path: Path) -> tuple[Any, Process]:
    """Start worker A as a process and a ``hang`` job on it; returns (job, A) once it runs."""
    worker_a = spawn_worker(spawn, running.port, "worker-a")
    await wait_until(lambda: serving(running, "hang", "worker-a"), what="worker A to register")
    marker = tmp_path / "running-on-a"
    job = await client.submit(QUEUE, "hang", marker=str(marker))
    await wait_until(marker.exists, what="the job to start on worker A")
    assert int(marker.read_text()) == worker_a.popen.pid
    info = await job.info()
    assert (info["status"], info["worker"], info["attempts"]) == ("running", "worker-a", 1)
    return job, worker_a


async def test_worker_killed_mid_job_is_detected_by_tcp_close_and_job_completes_elsewhere(
    manager_factory: Callable[..., Any], process_factory: Callable[..., Process],
    local_workers: WorkerMaker, tmp_path: Path,
) -> None:
    """SIGKILL of a worker process mid-job: the manager sees the TCP close and reruns the job."""
    # Heartbeat 30 s: silence would take 150 s to notice, so only the closed socket can
    # explain a recovery within TIMEOUT.
    running = await manager_factory(db=tmp_path / "kill.db", heartbeat=30.0)
    async with EasyJobsClient("127.0.0.1", running.port, SECRET, backoff=FAST_BACKOFF) as client:
        job, worker_a = await job_running_on_a(running, process_factory, client, tmp_path)
        await start_finisher(local_workers, running)
        assert_secret_hidden(worker_a)

        worker_a.popen.send_signal(signal.SIGKILL)
        assert await job.result(timeout=TIMEOUT) == "finished by B"
        info = await job.info()
        assert (info["status"], info["worker"], info["attempts"]) == ("succeeded", "worker-b", 2)
        assert worker_a.popen.wait(TIMEOUT) == -signal.SIGKILL


async def test_frozen_worker_is_dropped_by_heartbeat_and_job_completes_elsewhere(
    manager_factory: Callable[..., Any], process_factory: Callable[..., Process],
    local_workers: WorkerMaker, tmp_path: Path,
) -> None:
    """SIGSTOP of a worker mid-job: heartbeats time out, the job reruns; thawed, A rejoins."""
    running = await manager_factory(db=tmp_path / "stop.db", heartbeat=0.2)
    async with EasyJobsClient("127.0.0.1", running.port, SECRET, backoff=FAST_BACKOFF) as client:
        job, worker_a = await job_running_on_a(running, process_factory, client, tmp_path)
        await start_finisher(local_workers, running)

        worker_a.popen.send_signal(signal.SIGSTOP)
        try:
            # 5 missed heartbeats of 0.2 s: the manager gives up on A after about 1 s.
            assert await job.result(timeout=TIMEOUT) == "finished by B"
            assert not serving(running, "hang", "worker-a")
        finally:
            worker_a.popen.send_signal(signal.SIGCONT)
        info = await job.info()
        assert (info["status"], info["worker"], info["attempts"]) == ("succeeded", "worker-b", 2)

        # Thawed, A reconnects and says it still runs the job; the finished job stays finished.
        await wait_until(lambda: serving(running, "hang", "worker-a"), what="worker A to rejoin")
        assert await client.result(job.id, timeout=TIMEOUT) == "finished by B"
        info = await job.info()
        assert (info["status"], info["worker"], info["attempts"]) == ("succeeded", "worker-b", 2)


JOBS = 200


async def test_manager_killed_and_restarted_loses_no_acknowledged_job(
    process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """kill -9 of the manager mid-stream: restarted on the same DB, every acked job finishes."""
    port, db = free_port(), tmp_path / "jobs.db"
    first = spawn_manager(process_factory, port, db)
    await wait_listening(first, port)

    runs: Counter[int] = Counter()
    backoff = Backoff(initial=0.01, maximum=0.1)
    worker = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, QUEUE, 4,
                            name="steady", backoff=backoff)

    @worker.task()
    async def double(i: int) -> int:
        runs[i] += 1
        await asyncio.sleep(0.02)  # the task's own work; 200 jobs keep 4 slots busy ~1 s
        return i * 2

    client = EasyJobsClient("127.0.0.1", port, SECRET, backoff=backoff)
    await worker.start()
    await client.connect()
    acked: dict[str, int] = {}
    halfway = asyncio.Event()

    async def submit_all() -> None:
        for i in range(JOBS):
            if i == JOBS // 2:
                await halfway.wait()
            job = await client.submit(QUEUE, "double", i)
            acked[job.id] = i

    submitting = asyncio.get_running_loop().create_task(submit_all())
    try:
        await wait_until(lambda: len(acked) == JOBS // 2 and sum(runs.values()) >= 10,
                         what="half the jobs acknowledged and some run")
        halfway.set()
        await wait_until(lambda: len(acked) >= JOBS // 2 + 20, what="submitting to go on")
        first.popen.send_signal(signal.SIGKILL)
        assert first.popen.wait(TIMEOUT) == -signal.SIGKILL
        killed_at = (len(acked), sum(runs.values()))
        assert killed_at[0] < JOBS and killed_at[1] < JOBS, "killed mid-stream"

        second = spawn_manager(process_factory, port, db)
        await wait_listening(second, port)
        await asyncio.wait_for(submitting, TIMEOUT)
        assert len(acked) == JOBS

        results = await asyncio.wait_for(
            asyncio.gather(*(client.result(job_id) for job_id in acked)), TIMEOUT)
        assert results == [i * 2 for i in acked.values()]
        records = await asyncio.gather(*(client.job(job_id) for job_id in acked))
        assert {r["status"] for r in records} == {"succeeded"}
        assert all(runs[i] >= 1 for i in range(JOBS))

        duplicates = sum(n - 1 for n in runs.values())
        log.info("killed with %d acked and %d run; %d of %d jobs ran more than once "
                 "(%d extra runs); max attempts %d", *killed_at,
                 sum(1 for n in runs.values() if n > 1), JOBS, duplicates,
                 max(r["attempts"] for r in records))
        # At-least-once: only jobs running when the manager died (at most 4 slots) may rerun.
        assert duplicates <= worker.max_tasks
        assert_secret_hidden(first)
        assert_secret_hidden(second)
    finally:
        submitting.cancel()
        await asyncio.gather(submitting, return_exceptions=True)
        await client.close()
        await worker.stop(grace=0)
