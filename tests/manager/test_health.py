"""A manager whose store fills up: dispatch holds, submits are refused with the reason, no
outcome is lost or re-run, and everything resumes by itself once space is freed."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker, StoreError

from ..conftest import FAST_BACKOFF, fill
from ..utils import SECRET, TIMEOUT, wait_until


async def test_a_full_disk_holds_dispatch_and_loses_no_outcome(
    small_fs: Path, manager_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    """Outcomes that arrive while the disk is full are recorded once it has room, each job
    having run once; meanwhile /healthz answers 503 and submits fail with StoreError."""
    running = await manager_factory(db=small_fs / "jobs.db")
    gate = asyncio.Event()
    runs: Counter[int] = Counter()
    worker = EasyJobsWorker(None, None, running.host, running.port, SECRET, "ETL", 1,
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def step(n: int) -> int:
        runs[n] += 1
        await gate.wait()
        return n

    await worker.start()
    client = EasyJobsClient(running.host, running.port, SECRET, backoff=FAST_BACKOFF)
    await client.connect()
    api = httpx.AsyncClient(base_url=f"http://{running.host}:{running.port}")
    health = running.manager.core.health
    try:
        first = await client.submit("ETL", "step", 1)
        second = await client.submit("ETL", "step", 2)  # waits for the only slot
        await wait_until(lambda: runs[1] == 1, what="step 1 to start")
        ballast = fill(small_fs)
        with caplog.at_level(logging.WARNING, "easyjobs.manager"):
            gate.set()  # step 1 ends; its outcome cannot be recorded
            await wait_until(lambda: not health.writable, what="the manager to see the full disk")
            answer = await api.get("/healthz")
            assert answer.status_code == 503
            assert answer.json()["status"] == "store_unwritable"
            assert "full or unwritable" in answer.json()["reason"]
            with pytest.raises(StoreError, match="full or unwritable"):
                await client.submit("ETL", "step", 3)
            assert running.manager.core.dispatcher.held
            ballast.unlink()
            assert await first.result(TIMEOUT) == 1
            assert await second.result(TIMEOUT) == 2
        assert runs == {1: 1, 2: 1}  # nothing ran twice for want of a place to record it
        assert (await api.get("/healthz")).status_code == 200
        assert await client.call("ETL", "step", 4) == 4
        held = [r for r in caplog.records if "dispatch is held" in r.getMessage()]
        assert len(held) == 1 and "dispatch resumes" in caplog.text
    finally:
        await api.aclose()
        await client.close()
        await worker.stop(grace=0)
