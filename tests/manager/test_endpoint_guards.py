"""Hostile connections against a real guarded manager: idle and half-sent requests are closed
by the deadline, connections over the caps get HTTP 503, and real peers keep working."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.workers.link import WS_PATH

from ..conftest import FAST_BACKOFF, RunningManager
from ..utils import SECRET, TIMEOUT, wait_until
from .serving import guarded_factory

__all__ = ["guarded_factory"]

UPGRADE_HEAD = (b"GET /ws/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n")
"""The start of a WebSocket upgrade request, cut off before its key and its blank line."""


async def answer(running: RunningManager, data: bytes) -> bytes:
    """Open a raw connection, send ``data`` and read what comes back until the manager closes."""
    reader, writer = await asyncio.open_connection(running.host, running.port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


async def start_peers(running: RunningManager) -> tuple[EasyJobsWorker, EasyJobsClient]:
    """A worker serving ``ETL.ping`` and a client, both connected to ``running``."""
    worker = EasyJobsWorker(None, None, running.host, running.port, SECRET, "ETL",
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def ping() -> str:
        return "pong"

    await worker.start()
    client = EasyJobsClient(running.host, running.port, SECRET, backoff=FAST_BACKOFF)
    await client.connect()
    return worker, client


async def test_silent_and_half_sent_requests_are_closed_with_408(
    guarded_factory: Callable[..., Any],
) -> None:
    """Connections that send nothing, half an upgrade or half a body get 408 by the deadline."""
    running = await guarded_factory(handshake_timeout=0.5)
    worker, client = await start_peers(running)
    try:
        silent = [answer(running, b"") for _ in range(20)]
        upgrades = [answer(running, UPGRADE_HEAD) for _ in range(10)]
        body = [answer(running, b"POST /ETL/task/ping HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Bearer " + SECRET.encode() +
                       b"\r\nContent-Length: 50\r\n\r\n{")]
        replies = await asyncio.gather(*silent, *upgrades, *body)
        assert all(reply.startswith(b"HTTP/1.1 408 Request Timeout") for reply in replies)
        assert await client.call("ETL", "ping") == "pong"
    finally:
        await client.close()
        await worker.stop(grace=0)


async def test_a_request_that_arrives_in_time_is_served(
    guarded_factory: Callable[..., Any],
) -> None:
    """A whole request is answered by the app, and the next one on the same connection too."""
    running = await guarded_factory(handshake_timeout=0.5)
    reader, writer = await asyncio.open_connection(running.host, running.port)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    finally:
        writer.close()


async def test_connections_waiting_to_send_over_the_cap_get_503(
    guarded_factory: Callable[..., Any],
) -> None:
    """Past max_unauthenticated silent connections a new one gets 503; real peers still work."""
    running = await guarded_factory(handshake_timeout=30.0, max_unauthenticated=5)
    worker, client = await start_peers(running)
    silent = [await asyncio.open_connection(running.host, running.port) for _ in range(5)]
    try:
        await wait_until(lambda: len(running.server.server_state.connections) >= 7,
                         what="the silent connections to be accepted")
        reply = await answer(running, b"")
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable")
        assert b"retry later" in reply
        assert await client.call("ETL", "ping") == "pong"
    finally:
        for _, writer in silent:
            writer.close()
        await client.close()
        await worker.stop(grace=0)


async def test_websockets_that_do_not_authenticate_over_the_cap_get_503(
    guarded_factory: Callable[..., Any],
) -> None:
    """Past max_unauthenticated upgraded but silent WebSockets a new one gets HTTP 503."""
    running = await guarded_factory(handshake_timeout=30.0, max_unauthenticated=3)
    worker, client = await start_peers(running)
    uri = f"ws://{running.host}:{running.port}{WS_PATH}"
    silent = [await connect(uri) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(uri)
        assert refused.value.response.status_code == 503
        assert b"authenticating" in refused.value.response.body
        assert await client.call("ETL", "ping") == "pong"
    finally:
        for ws in silent:
            await ws.close()
        await client.close()
        await worker.stop(grace=0)


async def test_connections_over_max_connections_get_503(
    guarded_factory: Callable[..., Any],
) -> None:
    """With max_connections open, the next WebSocket gets HTTP 503 and the mesh keeps working."""
    running = await guarded_factory(max_connections=4)
    worker, client = await start_peers(running)
    uri = f"ws://{running.host}:{running.port}{WS_PATH}"
    others = [await connect(uri) for _ in range(2)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(uri)
        assert refused.value.response.status_code == 503
        assert await client.call("ETL", "ping") == "pong"
    finally:
        for ws in others:
            await ws.close()
        await client.close()
        await worker.stop(grace=0)
