"""Fixtures: real managers (uvicorn on an ephemeral loopback port, SQLite in tmp_path), real
workers and clients connected to them; every factory closes what it made."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from easyjobs import EasyJobsClient, EasyJobsManager, EasyJobsWorker
from easyjobs.manager.app import create_app
from easyjobs.workers.link import Backoff

from .postgres import pg_server, pg_url  # noqa: F401  (fixtures for every test)
from .utils import SECRET, TIMEOUT, free_port, wait_until

FAST_BACKOFF = Backoff(initial=0.01, maximum=0.05)


@dataclass
class RunningManager:
    """A manager served by a real uvicorn server on 127.0.0.1."""

    host: str
    port: int
    db: Path | str
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def manager(self) -> EasyJobsManager:
        return self.server.config.loaded_app.app.state.manager  # type: ignore[no-any-return]

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, TIMEOUT)


async def start_manager(db: Path | str, port: int = 0, heartbeat: float = 1.0,
                        retry_base: float | None = None, secret: str = SECRET,
                        api_token_file: Path | None = None, metrics_public: bool = False,
                        advertise: str | None = None) -> RunningManager:
    """The standalone manager app (``create_app``) served by uvicorn on 127.0.0.1; ``db``
    is an SQLite file or a PostgreSQL URL."""
    app = create_app(secret, str(db), heartbeat=heartbeat, retry_base=retry_base,
                     api_token_file=str(api_token_file) if api_token_file else None,
                     metrics_public=metrics_public, advertise=advertise)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), what="uvicorn to start")
    if task.done():
        task.result()
    bound = server.servers[0].sockets[0].getsockname()[1]
    running = RunningManager("127.0.0.1", bound, db, server, task)
    running.server.config.loaded_app.app.state  # noqa: B018  (fails early if the app changed)
    return running


@pytest.fixture
async def manager_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start managers on demand (``await manager_factory()``); all are stopped afterwards."""
    started: list[RunningManager] = []

    async def make(db: Path | None = None, **options: Any) -> RunningManager:
        """``options`` are those of ``start_manager`` (port, heartbeat, retry_base, ...)."""
        running = await start_manager(db or tmp_path / "jobs.db", **options)
        started.append(running)
        return running

    yield make
    for running in started:
        if not running.task.done():
            await running.stop()


@pytest.fixture
async def manager(manager_factory: Callable[..., Any]) -> RunningManager:
    """One running manager with its SQLite store in tmp_path."""
    return await manager_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def worker_factory(manager: RunningManager) -> AsyncIterator[Callable[..., EasyJobsWorker]]:
    """Build workers pointed at ``manager`` (not started); all are stopped afterwards."""
    made: list[EasyJobsWorker] = []

    def make(queue: str = "ETL", max_tasks: int = 10, port: int | None = None,
             secret: str = SECRET, **kwargs: Any) -> EasyJobsWorker:
        kwargs.setdefault("backoff", FAST_BACKOFF)
        worker = EasyJobsWorker(None, None, manager.host, port or manager.port, secret, queue,
                                max_tasks, **kwargs)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(grace=0)


@pytest.fixture
async def client_factory(manager: RunningManager) -> AsyncIterator[Callable[..., Any]]:
    """Connect clients to ``manager`` (``await client_factory()``); all are closed afterwards."""
    made: list[EasyJobsClient] = []

    async def make(port: int | None = None, secret: str = SECRET, **kwargs: Any
                   ) -> EasyJobsClient:
        kwargs.setdefault("backoff", FAST_BACKOFF)
        client = EasyJobsClient(manager.host, port or manager.port, secret, **kwargs)
        made.append(client)
        await client.connect()
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def client(client_factory: Callable[..., Any]) -> EasyJobsClient:
    return await client_factory()  # type: ignore[no-any-return]


@dataclass
class Process:
    """A child process running ``python -m easyjobs ...`` or a script, with its output file."""

    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start real child processes (secret in the environment only); all are killed afterwards."""
    procs: list[Process] = []

    def spawn(*args: str, env: dict[str, str] | None = None) -> Process:
        log = tmp_path / f"proc{len(procs)}.log"
        full_env = {**os.environ, "EASYJOBS_SECRET": SECRET, **(env or {})}
        repo = str(Path(__file__).resolve().parent.parent)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [repo, str(Path(__file__).resolve().parent), full_env.get("PYTHONPATH", "")])
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, *args], stdout=out,
                                     stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path)
        proc = Process(popen, log)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait(TIMEOUT)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own, unmounted afterwards; skipped where mounting is not allowed."""
    where = tmp_path / "fs"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root, as CI has): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its filesystem is full; the file, to delete later."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
    return ballast


__all__ = ["SECRET", "free_port", "wait_until"]
