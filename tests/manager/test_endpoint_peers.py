"""Peers that stop reading, links that stall, and writer bugs, against a real manager: each
is dropped within its bound and its jobs go to another worker as on a clean disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.protocol.frames import Lookup
from easyjobs.protocol.session import ServerSession, State
from easyjobs.workers.link import WS_PATH, Backoff

from ..conftest import FAST_BACKOFF, RunningManager
from ..processes import handshake
from ..proxy import TcpProxy
from ..utils import SECRET, TIMEOUT, wait_until
from .serving import guarded_factory

__all__ = ["guarded_factory"]

BIG = "x" * 900_000
"""An argument that makes each assignment (or job record) nearly a whole message."""
NO_RECONNECT = Backoff(initial=60.0, maximum=60.0)


def measuring_worker(running: RunningManager, name: str, slots: int, backoff: Backoff,
                     port: int | None = None) -> EasyJobsWorker:
    """A worker (not started) serving ``ETL.measure``, the length of its argument."""
    worker = EasyJobsWorker(None, None, "127.0.0.1", port or running.port, SECRET, "ETL",
                            slots, name=name, backoff=backoff)

    @worker.task()
    async def measure(data: str) -> int:
        return len(data)

    return worker


def worker_named(running: RunningManager, name: str) -> bool:
    """Whether a worker of that name is connected to the manager."""
    return any(w.name == name for w in running.manager.core.dispatcher.workers.values())


async def test_a_stalled_link_with_a_large_backlog_is_dropped_and_its_jobs_requeued(
    guarded_factory: Callable[..., Any],
) -> None:
    """A worker behind a proxy that stops forwarding, with ~11 MB of assignments queued for it,
    is dropped within the heartbeat window, another worker runs its jobs, and the stuck socket
    is closed."""
    running = await guarded_factory(heartbeat=0.5, max_backlog=64 << 20)
    proxy = await TcpProxy(running.port).start()
    stalled = measuring_worker(running, "behind-proxy", 12, NO_RECONNECT, port=proxy.port)
    rescuer = measuring_worker(running, "rescuer", 12, FAST_BACKOFF)
    client = EasyJobsClient("127.0.0.1", running.port, SECRET, backoff=FAST_BACKOFF)
    loop = asyncio.get_running_loop()
    try:
        await stalled.start()
        await wait_until(lambda: worker_named(running, "behind-proxy"), what="the worker")
        await client.connect()
        proxy.stall()
        stalled_at = loop.time()
        jobs = [await client.submit("ETL", "measure", BIG) for _ in range(12)]
        core = running.manager.core
        await wait_until(lambda: all(core.active[j.id].worker_id for j in jobs),
                         what="the jobs to be assigned to the stalled worker")
        await wait_until(lambda: not worker_named(running, "behind-proxy"),
                         what="the stalled worker to be dropped")
        dropped_after = loop.time() - stalled_at
        await rescuer.start()
        results = await asyncio.gather(*(job.result(timeout=TIMEOUT) for job in jobs))
        assert results == [len(BIG)] * 12
        # The socket to the proxy never drains; the server aborts it rather than keep it.
        # Only that socket is watched: under load the client or the rescuer may reconnect too
        # (heartbeats delayed), which changes how many other connections are open.
        stuck = {path.manager.get_extra_info("sockname")[:2] for path in proxy.paths}

        def behind_proxy() -> list[Any]:
            return [c for c in running.server.server_state.connections
                    if tuple(getattr(c, "client", None) or ())[:2] in stuck]

        await wait_until(lambda: not behind_proxy(), timeout=3 * TIMEOUT,
                         what="the server to close the stuck socket behind the proxy")
        logging.getLogger(__name__).info("stalled worker dropped after %.2fs", dropped_after)
    finally:
        await client.close()
        await rescuer.stop(grace=0)
        await proxy.close()
        await stalled.stop(grace=0)


async def test_a_peer_that_never_reads_is_dropped_at_the_backlog(
    guarded_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that keeps asking for a big record but never reads is dropped once its socket
    is full and 4 MiB (the default backlog) wait for it; everyone else keeps working."""
    running = await guarded_factory(heartbeat=5.0)
    worker = EasyJobsWorker(None, None, running.host, running.port, SECRET, "ETL",
                            backoff=FAST_BACKOFF)
    release = asyncio.Event()

    @worker.task()
    async def hold(data: str) -> int:
        await release.wait()
        return len(data)

    await worker.start()
    client = EasyJobsClient(running.host, running.port, SECRET, backoff=FAST_BACKOFF)
    await client.connect()
    core = running.manager.core
    try:
        job = await client.submit("ETL", "hold", BIG)  # running: looked up from memory
        await wait_until(lambda: core.active[job.id].worker_id is not None, what="it to run")
        caplog.set_level(logging.WARNING, "easyjobs.manager")
        uri = f"ws://{running.host}:{running.port}{WS_PATH}"
        async with connect(uri, max_queue=1, max_size=None, compression=None) as ws:
            session = await handshake(ws, "client")
            (theirs,) = [s for s in running.manager.endpoint._open if s.name == "fuzz-client"]
            peers = len(core.peers)
            ref = 0
            while not theirs.write_blocked:  # one lookup at a time until the socket is full
                heard = theirs.last_received
                session.send(Lookup(ref, job.id))
                ref += 1
                for message in session.data_to_send():
                    await ws.send(message)
                await wait_until(lambda: theirs.last_received > heard,  # noqa: B023
                                 what="the lookup to be answered")
            for more in range(10):  # ~9 MB more, sent at once
                session.send(Lookup(ref + more, job.id))
            for message in session.data_to_send():
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(message)
            await wait_until(lambda: len(core.peers) < peers,
                             what="the peer that does not read to be dropped")
        assert any("over 4194304 bytes queued" in r.getMessage() for r in caplog.records)
        release.set()
        assert await job.result(timeout=TIMEOUT) == len(BIG)
    finally:
        release.set()
        await client.close()
        await worker.stop(grace=0)


async def test_a_burst_over_the_backlog_requeues_every_job_it_assigned(
    guarded_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker dropped by the backlog in the middle of being assigned a burst of jobs (18 MB,
    over the 16 MiB a burst may queue) leaves all of them queued, none stuck running on it, and
    another worker runs them."""
    running = await guarded_factory(max_backlog=2 << 20)
    client = EasyJobsClient(running.host, running.port, SECRET, backoff=FAST_BACKOFF)
    registrar = measuring_worker(running, "registrar", 1, FAST_BACKOFF)
    greedy = measuring_worker(running, "greedy", 20, NO_RECONNECT)
    rescuer = measuring_worker(running, "rescuer", 1, FAST_BACKOFF)
    caplog.set_level(logging.WARNING, "easyjobs.manager")
    try:
        await registrar.start()  # registers the task, then leaves the jobs to the greedy one
        await registrar.stop(grace=0)
        await wait_until(lambda: not worker_named(running, "registrar"), what="it to leave")
        await client.connect()
        jobs = [await client.submit("ETL", "measure", BIG) for _ in range(20)]
        await greedy.start()
        await wait_until(lambda: any("over 16777216 bytes queued" in r.getMessage()
                                     for r in caplog.records), what="the backlog drop")
        await greedy.stop(grace=0)
        assert not any("internal error" in r.getMessage() for r in caplog.records)
        await rescuer.start()
        results = await asyncio.gather(*(job.result(timeout=TIMEOUT) for job in jobs))
        assert results == [len(BIG)] * 20
    finally:
        await client.close()
        for worker in (registrar, greedy, rescuer):
            await worker.stop(grace=0)


async def test_a_writer_that_fails_ends_its_connection_and_is_logged(
    guarded_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug raising RuntimeError in the writer closes that connection (logged), instead of
    leaving one that reads but never writes; the peer reconnects and is served."""
    running = await guarded_factory()
    worker = EasyJobsWorker(None, None, running.host, running.port, SECRET, "ETL",
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def ping() -> str:
        return "pong"

    await worker.start()
    client = EasyJobsClient(running.host, running.port, SECRET, backoff=FAST_BACKOFF)
    await client.connect()
    broken: set[ServerSession] = set()
    original = ServerSession.data_to_send

    def failing(self: ServerSession, now: float | None = None) -> list[bytes]:
        if self in broken:
            raise RuntimeError("a bug in the writer")
        return original(self, now)

    monkeypatch.setattr(ServerSession, "data_to_send", failing)
    caplog.set_level(logging.ERROR, "easyjobs.manager")
    try:
        core = running.manager.core
        (client_id,) = [p.id for p in core.peers.by_id.values() if p.role == "client"]
        broken.update(s for s in running.manager.endpoint._open
                      if s.state is State.OPEN and s.role == "client")
        call = asyncio.ensure_future(client.call("ETL", "ping"))
        await wait_until(lambda: client_id not in core.peers,
                         what="the connection with the failed writer to end")
        assert any(r.exc_info and "a bug in the writer" in str(r.exc_info[1])
                   for r in caplog.records)
        assert await asyncio.wait_for(call, TIMEOUT) == "pong"
    finally:
        await client.close()
        await worker.stop(grace=0)
