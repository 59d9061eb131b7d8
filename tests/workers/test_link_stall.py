"""A half-dead path between worker and manager: a TCP proxy written here stops forwarding (without
closing) while the worker has megabytes of results to send. The worker must notice within the
heartbeat window and reconnect, as on a clean disconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker, JobStatus
from easyjobs.protocol.session import MISSED_HEARTBEATS

from ..conftest import RunningManager
from ..utils import wait_until

HEARTBEAT = 0.2
WINDOW = MISSED_HEARTBEATS * HEARTBEAT
SLACK = 1.5
"""How late (seconds) detection may come on a busy 2-core machine."""

JOBS = 16
RESULT = 900_000
"""Bytes per result: 16 of them (14 MB) are far more than the socket buffers hold."""

WorkerFactory = Callable[..., EasyJobsWorker]


@pytest.fixture
async def manager(manager_factory: Callable[..., Any]) -> RunningManager:
    """This module's manager: peers silent for 5 x 0.2 s are dropped."""
    return await manager_factory(heartbeat=HEARTBEAT)  # type: ignore[no-any-return]


@dataclass
class _Pair:
    """One proxied connection; its pumps wait on ``flowing`` before forwarding each chunk."""

    up: asyncio.Event = field(default_factory=asyncio.Event)
    down: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class StallingProxy:
    """Forwards 127.0.0.1 TCP to a target port; ``stall`` freezes the connections open now."""

    def __init__(self, target: int) -> None:
        self._target = target
        self.pairs: list[_Pair] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self, up: bool = True, down: bool = True) -> None:
        """Stop forwarding (worker->manager if ``up``, manager->worker if ``down``); the
        sockets stay open and unread, so the kernel buffers behind them fill."""
        for pair in self.pairs:
            if up:
                pair.up.clear()
            if down:
                pair.down.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self._target)
        pair = _Pair(writers=[writer, target_writer])
        pair.up.set()
        pair.down.set()
        self.pairs.append(pair)
        for args in ((reader, target_writer, pair.up), (target_reader, writer, pair.down)):
            task = asyncio.get_running_loop().create_task(self._pump(*args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    flowing: asyncio.Event) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                await flowing.wait()
                writer.write(data)
                await writer.drain()
            await flowing.wait()
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pair in self.pairs:
            for writer in pair.writers:
                writer.transport.abort()
        await self._server.wait_closed()


async def _stalled_with_results_pending(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient,
    up: bool, down: bool,
) -> float:
    """Stall the worker's path as asked while 14 MB of results are on their way; seconds until
    the worker had a new connection through the proxy (the stalled one still open)."""
    proxy = StallingProxy(manager.port)
    await proxy.start()
    try:
        worker = worker_factory(max_tasks=JOBS, port=proxy.port)
        release = asyncio.Event()

        @worker.task()
        async def blob(n: int) -> bytes:
            await release.wait()
            return b"x" * n

        await worker.start()
        jobs = [await client.submit("ETL", "blob", RESULT) for _ in range(JOBS)]

        async def all_running() -> bool:
            return all([await job.status() is JobStatus.RUNNING for job in jobs])

        await wait_until(all_running, what="every job to run")
        loop = asyncio.get_running_loop()
        proxy.stall(up=up, down=down)
        stalled_at = loop.time()
        release.set()
        await wait_until(lambda: len(proxy.pairs) > 1 and worker.connected,
                         timeout=WINDOW + SLACK + 5, what="the worker to reconnect")
        return loop.time() - stalled_at
    finally:
        await proxy.close()


async def test_worker_leaves_a_stalled_path_within_the_window(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Both directions stalled, results queued: the worker reconnects within the window."""
    took = await _stalled_with_results_pending(manager, worker_factory, client, True, True)
    assert took <= WINDOW + SLACK


async def test_worker_leaves_a_path_that_stopped_taking_its_writes(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Only worker->manager stalled (the manager's frames still arrive): reconnect in time."""
    took = await _stalled_with_results_pending(manager, worker_factory, client, True, False)
    assert took <= WINDOW + SLACK
