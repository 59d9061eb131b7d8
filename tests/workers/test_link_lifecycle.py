"""The worker's link from the host's side: a worker started before its manager keeps trying and
says "running" only once connected; a link that fails for good after start-up is reported (the
worker's ``error``, ``wait_closed`` raising, ``easyjobs worker`` exiting 1); a bad address
fails at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import AuthenticationError, ConfigurationError, EasyJobsWorker

from ..conftest import Process, RunningManager
from ..processes import finished, spawn_worker
from ..utils import SECRET, TIMEOUT, free_port, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


async def test_worker_started_before_its_manager_says_running_only_once_connected(
    manager_factory: Callable[..., Any], process_factory: Callable[..., Process]
) -> None:
    """No manager yet: a warning naming the address and no "running"; then both, in order."""
    port = free_port()
    proc = spawn_worker(process_factory, port, "early", env={"WORKER_CONNECT_TIMEOUT": "0.3"})
    await wait_until(lambda: "no manager answered at" in proc.output(),
                     what="the worker to warn")
    assert f"127.0.0.1:{port}" in proc.output() and "easyjobs manager" in proc.output()
    assert "worker early running" not in proc.output()
    assert "connected to manager" not in proc.output()

    await manager_factory(port=port)
    await wait_until(lambda: "worker early running" in proc.output(),
                     what="the worker to say it runs")
    out = proc.output()
    assert out.index(f"connected to manager at 127.0.0.1:{port}") < out.index("early running")
    assert proc.popen.poll() is None


async def test_fatal_close_after_start_up_ends_the_worker_process(
    manager_factory: Callable[..., Any], process_factory: Callable[..., Process]
) -> None:
    """The manager comes back with another secret: `easyjobs worker` logs it and exits 1."""
    first: RunningManager = await manager_factory()
    proc = spawn_worker(process_factory, first.port, "orphan")
    await wait_until(lambda: "worker orphan running" in proc.output(), what="the worker")
    await first.stop()
    await manager_factory(port=first.port, secret="another-secret")
    assert await finished(proc, TIMEOUT) == 1
    assert "ERROR" in proc.output() and "authentication failed" in proc.output()


async def test_wait_closed_raises_when_the_link_fails_for_good(
    manager: RunningManager, manager_factory: Callable[..., Any],
    worker_factory: WorkerFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    """After start-up, a fatal close reaches the host: error set, wait_closed raises, logged."""
    worker = worker_factory()
    await worker.start()
    assert worker.connected and worker.error is None
    await manager.stop()
    with caplog.at_level(logging.ERROR):
        await manager_factory(port=manager.port, secret="another-secret")
        with pytest.raises(AuthenticationError):
            await worker.wait_closed()
    assert isinstance(worker.error, AuthenticationError)
    assert not worker.connected
    assert any(r.levelno == logging.ERROR and "takes no more jobs" in r.getMessage()
               for r in caplog.records)


async def test_wait_closed_returns_after_stop(worker_factory: WorkerFactory) -> None:
    """A worker stopped on purpose: wait_closed returns and error stays None."""
    worker = worker_factory()
    await worker.start()
    await worker.stop(grace=0)
    await worker.wait_closed()
    assert worker.error is None


def test_bad_manager_address_fails_at_construction() -> None:
    """An address that can never be connected to raises ConfigurationError, not retries."""
    with pytest.raises(ConfigurationError, match="host ''"):
        EasyJobsWorker(None, None, "", 8220, SECRET)
    with pytest.raises(ConfigurationError, match="port 99999"):
        EasyJobsWorker(None, None, "127.0.0.1", 99999, SECRET)
