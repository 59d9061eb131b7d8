"""An easyjobs cluster inside the test process: a real manager on a temporary SQLite file and a
free loopback port, the program's own workers pointed at it, and a connected client.

    async with cluster(worker) as running:   # the program's EasyJobsWorker, as imported
        assert await add(1, 2) == 3            # its tasks run through a real manager
        await running.start(other_worker)      # more workers, on the same manager

Works under any asyncio test runner; the pytest fixtures of ``easyjobs.testing`` wrap it. The
workers are retargeted (``EasyJobsWorker.retarget``) at the in-process manager with a fresh
secret, so the addresses and secret they were built with at import never matter, and they are
stopped on the way out, ready to be started again by the next test.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from ..client import EasyJobsClient
from ..errors import EasyJobsError
from ..manager import EasyJobsManager
from ..workers.worker import EasyJobsWorker

READY_TIMEOUT = 10.0
"""Seconds the manager may take to start, and a worker to connect and register its tasks."""


@dataclass
class Cluster:
    """A running in-process manager, its client, and the workers started on it."""

    address: str
    """``127.0.0.1:<port>`` of the manager, for workers and clients of the test's own."""
    secret: str
    db: Path
    manager: EasyJobsManager
    client: EasyJobsClient
    workers: list[EasyJobsWorker] = field(default_factory=list)

    async def start(self, *workers: EasyJobsWorker) -> None:
        """Point each worker at this manager, start it, and return once the manager knows
        every task it registered (so a call made next cannot meet ``UnknownTask``)."""
        for worker in workers:
            worker.retarget([self.address], self.secret)
            self.workers.append(worker)
            await worker.start()
            if not worker.connected:
                raise EasyJobsError(f"worker {worker.name} did not connect to the in-process "
                                    f"manager at {self.address}")
            await self._registered(worker)

    async def _registered(self, worker: EasyJobsWorker) -> None:
        wanted = {(spec.queue, spec.name) for spec in worker.specs}
        if not await _until(lambda: wanted <= self.manager.core.tasks.keys()):
            missing = sorted(f"{q}.{n}" for q, n in wanted - self.manager.core.tasks.keys())
            raise EasyJobsError(f"the manager did not register {', '.join(missing)} of worker "
                                f"{worker.name} within {READY_TIMEOUT:g}s (its log says why)")

    async def stop(self) -> None:
        """Stop the workers (running jobs are cancelled) and close the client."""
        for worker in self.workers:
            await worker.stop(grace=0)
        await self.client.close()


@asynccontextmanager
async def cluster(*workers: EasyJobsWorker, directory: str | Path | None = None,
                  **manager_options: Any) -> AsyncIterator[Cluster]:
    """Run a manager (its SQLite file in ``directory``, else a temporary one) with ``workers``
    started on it; ``manager_options`` go to ``EasyJobsManager`` (say, ``retry_base=0.01``)."""
    async with AsyncExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="easyjobs-"))
        db = Path(directory) / "easyjobs-test.db"
        secret = secrets.token_urlsafe(24)
        server = await _serve(secret, db, manager_options)
        stack.push_async_callback(_shut, server)
        port = server.servers[0].sockets[0].getsockname()[1]
        client = EasyJobsClient("127.0.0.1", port, secret, connect_timeout=READY_TIMEOUT)
        await client.connect()
        manager = server.config.loaded_app.app.state.manager
        running = Cluster(f"127.0.0.1:{port}", secret, db, manager, client)
        stack.push_async_callback(running.stop)
        await running.start(*workers)
        yield running


class _Server(uvicorn.Server):
    task: asyncio.Task[None]


async def _serve(secret: str, db: Path, options: dict[str, Any]) -> _Server:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.manager = await EasyJobsManager.create(
            app, server_secret=secret, db_path=str(db), **options)
        try:
            yield
        finally:
            await app.state.manager.close()

    server = _Server(uvicorn.Config(Starlette(lifespan=lifespan), host="127.0.0.1", port=0,
                                    log_level="warning", lifespan="on"))
    server.task = asyncio.get_running_loop().create_task(server.serve())
    if not await _until(lambda: server.started or server.task.done()):
        await _shut(server)
        raise EasyJobsError(f"the in-process manager did not start in {READY_TIMEOUT:g}s")
    if not server.started:
        server.task.result()
        raise EasyJobsError("the in-process manager failed to start (its log says why)")
    return server


async def _shut(server: _Server) -> None:
    server.should_exit = True
    await asyncio.wait_for(server.task, READY_TIMEOUT)


async def _until(ready: Callable[[], bool]) -> bool:
    """Whether ``ready()`` came true within ``READY_TIMEOUT`` (checked every few ms)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True
