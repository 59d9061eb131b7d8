"""The worker's link runs in a thread of its own: a task that blocks the worker's event loop for
longer than the heartbeat window is not taken for a dead worker, runs once, and is logged with
its name and the stall's length; the thread goes when the worker stops."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.protocol.session import MISSED_HEARTBEATS

from ..conftest import Process, RunningManager
from ..processes import QUEUE, serving, spawn_worker
from ..utils import SECRET, TIMEOUT, wait_until

HEARTBEAT = 0.5
"""The manager's heartbeat here: a peer silent for 2.5 s is dropped."""

WorkerFactory = Callable[..., EasyJobsWorker]


def _link_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("easyjobs link")]


async def test_task_blocking_the_loop_past_the_window_runs_once(
    manager_factory: Callable[..., Any], process_factory: Callable[..., Process], tmp_path: Path
) -> None:
    """A time.sleep longer than the heartbeat window, two workers up: one run, stall logged."""
    running: RunningManager = await manager_factory(heartbeat=HEARTBEAT)
    workers = {name: spawn_worker(process_factory, running.port, name) for name in ("wa", "wb")}
    await wait_until(lambda: all(serving(running, "block", name) for name in workers),
                     what="both workers to serve block")
    runs = tmp_path / "runs.txt"
    sleep = 2 * MISSED_HEARTBEATS * HEARTBEAT - 0.5  # 4.5 s: well past the 2.5 s window
    async with EasyJobsClient(running.host, running.port, SECRET) as client:
        job = await client.submit(QUEUE, "block", sleep, str(runs))
        assert await job.result(timeout=sleep + TIMEOUT) == "slept"
        info = await job.info()
    assert info["attempts"] == 1
    assert len(runs.read_text().splitlines()) == 1
    ran_on = workers[info["worker"]]
    pattern = re.compile(rf"task 'block job {job.id}' blocked the event loop for ([\d.]+)s")
    await wait_until(lambda: pattern.search(ran_on.output()) is not None,
                     what="the stall to be logged")
    match = pattern.search(ran_on.output())
    assert match is not None and abs(float(match.group(1)) - sleep) <= 0.5


async def test_stall_is_logged_while_it_lasts_and_when_it_ends(
    worker_factory: WorkerFactory, client: EasyJobsClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The watchdog names the blocking task during the stall and gives its length after it."""
    worker = worker_factory(max_tasks=1)

    @worker.task()
    async def stall() -> str:
        time.sleep(1.5)  # noqa: ASYNC251 (blocking the loop is what is tested)
        return "done"

    await worker.start()
    with caplog.at_level(logging.WARNING, logger="easyjobs.link"):
        job = await client.submit("ETL", "stall")
        assert await job.result(timeout=TIMEOUT) == "done"
        ended = re.compile(rf"task 'stall job {job.id}' blocked the event loop for ([\d.]+)s")
        await wait_until(lambda: ended.search(caplog.text) is not None,
                         what="the end of the stall to be logged")
    assert f"task 'stall job {job.id}' has blocked the event loop for" in caplog.text
    length = ended.search(caplog.text)
    assert length is not None and 1.0 <= float(length.group(1)) <= 2.0


async def test_link_thread_is_a_daemon_and_ends_with_the_worker(
    worker_factory: WorkerFactory,
) -> None:
    """The link's thread exists while the worker runs, is a daemon, and is gone after stop()."""
    before = set(_link_threads())
    worker = worker_factory(name="threaded")
    await worker.start()
    mine = [t for t in _link_threads() if t not in before]
    assert [t.name for t in mine] == ["easyjobs link threaded"]
    assert mine[0].daemon and mine[0].is_alive()
    await worker.stop(grace=0)
    assert not mine[0].is_alive()


async def test_calls_from_a_task_resolve_on_the_workers_loop(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A task awaiting another task gets its result on its own loop (futures never cross)."""
    worker = worker_factory(max_tasks=1)

    @worker.task()
    async def child(x: int) -> int:
        return x + 1

    @worker.task()
    async def parent(x: int) -> list[Any]:
        loop = asyncio.get_running_loop()
        value = await child(x)
        return [value, asyncio.get_running_loop() is loop, threading.current_thread().name]

    await worker.start()
    value, same_loop, thread = await client.call("ETL", "parent", 1)
    assert (value, same_loop) == (2, True)
    assert thread == threading.main_thread().name
