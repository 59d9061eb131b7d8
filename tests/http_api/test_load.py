"""Bad input and load: oversized and deeply nested bodies, a flood of result waiters and a slow
event-stream reader must neither block the manager's event loop nor grow its memory unbounded."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker, JobStatus
from easyjobs.protocol.frames import Watch

from ..conftest import RunningManager
from ..mesh import registered
from ..utils import SECRET, TIMEOUT, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


class LoopLag:
    """The longest the event loop kept a 5 ms timer waiting, measured while in the block."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.monotonic() - t0 - 0.005)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def raw_get(running: RunningManager, path: str) -> tuple[int, Any]:
    """GET over a fresh connection, written by hand: httpx's pool slows down with a thousand
    connections at once (it scans them all per request), which would measure the client."""
    reader, writer = await asyncio.open_connection(running.host, running.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {SECRET}\r\n"
                 "Connection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def adder(manager: RunningManager, worker_factory: WorkerFactory) -> EasyJobsWorker:
    worker = worker_factory()

    @worker.task()
    async def add(a: int, b: int = 2) -> int:
        return a + b

    await worker.start()
    await registered(manager, "ETL", "add")
    return worker


async def test_oversized_and_deeply_nested_bodies_are_refused_quickly(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient,
    api: httpx.AsyncClient,
) -> None:
    """8 MiB bodies (declared or chunked) get 413 and 100,000 levels of nesting 400 (deeper
    than a frame may nest: 422), each quickly, while worker calls keep completing promptly."""
    await adder(manager, worker_factory)
    add = client.task("ETL", "add")
    calls: list[float] = []
    stop = asyncio.Event()

    async def keep_calling() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            assert await add(len(calls)) == len(calls) + 2
            calls.append(time.monotonic() - t0)

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(128):
            yield b"x" * 65536

    deep = "[" * 100_000 + "]" * 100_000
    bad: list[tuple[dict[str, Any], int]] = [
        ({"content": b'{"a": "' + b"x" * (8 << 20) + b'"}'}, 413),
        ({"content": chunked()}, 413),
        ({"content": deep}, 400),
        ({"content": '{"a": ' + deep + "}"}, 400),
        ({"content": '{"a": ' + "[" * 900 + "]" * 900 + "}"}, 422),
        ({"content": '{"a": ' + '{"k": ' * 900 + "1" + "}" * 900 + "}"}, 422),
        ({"json": {"a": 1, "b": json.loads("[" * 40 + "]" * 40)}}, 422),
    ]
    caller = asyncio.get_running_loop().create_task(keep_calling())
    await wait_until(lambda: len(calls) >= 5, what="worker calls to flow")
    async with LoopLag() as lag:
        for request, status in bad:
            t0 = time.monotonic()
            response = await api.post("/ETL/task/add", **request)
            assert response.status_code == status, (status, response.text[:200])
            assert time.monotonic() - t0 < 2.0
            assert "error" in response.json()
        counted = len(calls)
        await wait_until(lambda: len(calls) >= counted + 5, what="worker calls to go on")
    stop.set()
    await caller
    assert lag.worst < 0.5, lag.worst
    assert max(calls) < 1.0, max(calls)
    assert manager.manager.core.active == {}


async def test_a_thousand_result_waiters_share_one_watch(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient,
) -> None:
    """1,000 concurrent GET /jobs/{id}/result all answer when the job finishes (or at their
    timeout), through one watch on the job, and nothing of them is left afterwards."""
    worker = worker_factory()
    gate = asyncio.Event()

    @worker.task()
    async def hold(x: int) -> int:
        await gate.wait()
        return x

    await worker.start()
    await registered(manager, "ETL", "hold")
    core = manager.manager.core
    calls = manager.manager.calls
    loopback = core.peers.by_id["loopback"]
    state = manager.server.server_state
    baseline = len(state.tasks)  # the worker's WebSocket
    job_id = (await api.post("/ETL/task/hold", json={"x": 9})).json()["job_id"]
    await wait_until(lambda: core.active[job_id].record.status is JobStatus.RUNNING,
                     what="the job to run")

    def watches() -> list[Any]:
        return [f for f in calls.pending_frames() if isinstance(f, Watch)]

    def flood(timeout: float) -> list[asyncio.Task[tuple[int, Any]]]:
        loop = asyncio.get_running_loop()
        path = f"/jobs/{job_id}/result?timeout={timeout}"
        return [loop.create_task(raw_get(manager, path)) for _ in range(1000)]

    # Waiters that give up: each answers 202, and they leave one watch, not a thousand.
    async with LoopLag() as lag:
        t0 = time.monotonic()
        answers = await asyncio.gather(*flood(0.5))
        gave_up = time.monotonic() - t0
    assert {status for status, _ in answers} == {202}
    assert {body["status"] for _, body in answers} == {"running"}
    assert gave_up < 5, gave_up
    assert len(watches()) == 1 and core.watchers.of(job_id) == {loopback}

    # Waiters that get the result: all of them, right after it is pushed.
    async with LoopLag() as lag2:
        waiting = flood(TIMEOUT)
        await wait_until(lambda: len(state.tasks) == baseline + 1000,
                         what="1,000 requests in the manager")
        assert len(watches()) == 1
        released = time.monotonic()
        gate.set()
        answers = await asyncio.gather(*waiting)
        answered = time.monotonic() - released
    assert {status for status, _ in answers} == {200}
    assert {body["result"] for _, body in answers} == {9}
    assert answered < 3, answered
    assert job_id not in core.active
    assert loopback.watching == set() and calls.pending_frames() == []
    await wait_until(lambda: len(state.tasks) == baseline, what="the requests to be done")
    assert max(lag.worst, lag2.worst) < 1.0, (lag.worst, lag2.worst)


async def test_a_slow_event_reader_is_dropped_not_buffered(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient,
) -> None:
    """A client that reads /events far slower than events come is dropped once its bounded
    queue fills; its stream then ends, and new subscribers are served."""
    await adder(manager, worker_factory)
    hub = manager.manager.http.events  # type: ignore[union-attr]
    core = manager.manager.core
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, set early
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (manager.host, manager.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
                 "Connection: close\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b": connected\n\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert hub.subscribers == 1

    events, pause = 0, True
    while hub.subscribers and events < 500_000:
        for _ in range(50):  # each toggle is one event per worker (ours and the manager's)
            core.toggle_workers(pause)
            pause = not pause
            events += 2
        await reader.read(64)  # the client reads, but very slowly
    core.toggle_workers(False)
    assert hub.subscribers == 0, "the slow reader was never dropped"
    assert events > 1000  # not before its queue (1,000 events) had filled

    rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # read fast now: the stream ends
    assert rest.endswith(b"0\r\n\r\n")
    writer.close()

    async with api.stream("GET", "/events") as stream:
        lines = (line async for line in stream.aiter_lines() if line)
        assert await asyncio.wait_for(anext(lines), TIMEOUT) == ": connected"
        assert hub.subscribers == 1
        await api.post("/workers/pause")
        line = await asyncio.wait_for(anext(lines), TIMEOUT)
        assert line.startswith("data: ")
        event = json.loads(line[len("data: "):])
        assert event["kind"] == "worker" and event["change"] == "paused"
    await wait_until(lambda: hub.subscribers == 0, what="the closed stream to unsubscribe")
    await api.post("/workers/resume")


async def test_a_client_that_hangs_up_mid_body_is_no_error(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Closing the connection halfway through a body logs no error and creates no job."""
    await adder(manager, worker_factory)
    state = manager.server.server_state
    baseline = len(state.tasks)
    for _ in range(20):
        reader, writer = await asyncio.open_connection(manager.host, manager.port)
        writer.write(f"POST /ETL/task/add HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n"
                     f"Authorization: Bearer {SECRET}\r\n\r\n" '{"a": '.encode())
        await writer.drain()
        await wait_until(lambda: len(state.tasks) > baseline, what="the request to start")
        writer.close()
        await wait_until(lambda: len(state.tasks) == baseline, what="the request to end")
    assert manager.manager.core.active == {}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (await api.post("/ETL/task/add", params={"wait": TIMEOUT},
                           json={"a": 1})).json()["result"] == 3
