"""A manager process gives back what hostile peers cost it: after each round of peers that
never read, its RSS returns to within 10% of what it was before (memory.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.protocol.frames import Heartbeat, Lookup
from easyjobs.workers.link import WS_PATH

from ..conftest import FAST_BACKOFF, Process
from ..processes import handshake, spawn_manager, wait_listening
from ..utils import SECRET, TIMEOUT, free_port, wait_until

RECORD = 900_000
"""Bytes of the job's argument: each lookup answer is a frame of about this size."""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def never_reading_round(port: int, job_id: str, peers: int = 5) -> None:
    """``peers`` clients ask for the big record again and again and read nothing back, until the
    manager drops them (over its backlog); then they go."""
    opened = []
    for _ in range(peers):
        ws = await connect(f"ws://127.0.0.1:{port}{WS_PATH}", max_queue=1, max_size=None,
                           compression=None)
        opened.append((ws, await handshake(ws, "client")))

    async def flood(ws: object, session: object) -> None:
        with contextlib.suppress(Exception):  # the manager drops us: that is the point
            for ref in range(40):
                session.send(Lookup(ref, job_id))  # type: ignore[attr-defined]
                session.send(Heartbeat())  # type: ignore[attr-defined]
                for message in session.data_to_send():  # type: ignore[attr-defined]
                    await ws.send(message)  # type: ignore[attr-defined]
                await asyncio.sleep(0.05)  # a steady stream, as the campaign's peers sent

    await asyncio.gather(*(flood(ws, session) for ws, session in opened))
    for ws, _ in opened:
        ws.transport.abort()


@pytest.mark.timeout(120)
async def test_rss_comes_back_after_rounds_of_peers_that_never_read(
    tmp_path: Path, process_factory: Callable[..., Process],
) -> None:
    """Two rounds of five peers that never read: RSS comes back within 10% after each."""
    port = free_port()
    proc = spawn_manager(process_factory, port, tmp_path / "jobs.db")
    await wait_listening(proc, port)
    worker = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, "ETL", backoff=FAST_BACKOFF)

    @worker.task()
    async def keep(data: str) -> int:
        return len(data)

    await worker.start()
    client = EasyJobsClient("127.0.0.1", port, SECRET, backoff=FAST_BACKOFF)
    await client.connect()
    try:
        job = await client.submit("ETL", "keep", "x" * RECORD)
        assert await job.result(TIMEOUT) == RECORD
        pid = proc.popen.pid
        baseline = rss(pid)
        for round_ in (1, 2):
            await never_reading_round(port, job.id)
            # The manager collects and trims a few seconds after the last drop (DELAY).
            await wait_until(lambda: rss(pid) <= baseline * 1.10, timeout=20,
                             what=f"RSS back within 10% of {baseline >> 20} MiB after round "
                                  f"{round_}")
        assert await client.call("ETL", "keep", "y") == 1  # still serving everyone else
    finally:
        await client.close()
        await worker.stop(grace=0)
