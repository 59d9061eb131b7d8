"""Helpers for the in-process mesh tests: a peer that speaks the wire protocol by hand, a gauge
that measures how many task bodies run at once, and direct reads of the manager's SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from easyjobs.protocol.auth import new_nonce
from easyjobs.protocol.frames import Credit, DoneAck, Frame, Register
from easyjobs.protocol.session import ClientSession, State
from easyjobs.tasks import TaskSpec, describe
from easyjobs.workers.link import WS_PATH

from .utils import SECRET, TIMEOUT, wait_until

F = TypeVar("F", bound=Frame)


class RawPeer:
    """A worker or client driven frame by frame over a real WebSocket.

    ``ClientSession`` builds and checks the bytes; nothing drives its clock, so the peer sends
    no heartbeats: it goes silent as soon as the test stops calling ``send``. ``done_ack``
    frames are collected in ``acks`` rather than expected.
    """

    def __init__(self, ws: ClientConnection, session: ClientSession) -> None:
        self.ws = ws
        self.session = session
        self._inbox: list[Frame] = []
        self.acks: list[DoneAck] = []
        self.last_sent = 0.0

    @classmethod
    async def connect(cls, host: str, port: int, *, role: str = "worker", name: str = "raw",
                      secret: str = SECRET) -> RawPeer:
        """Open a connection and complete the handshake."""
        loop = asyncio.get_running_loop()
        ws = await connect(f"ws://{host}:{port}{WS_PATH}", max_size=None, compression=None,
                           ping_interval=None)
        session = ClientSession(secret.encode(), loop.time(), role=role, name=name,
                                nonce=new_nonce())
        peer = cls(ws, session)
        while session.state is not State.OPEN:
            data = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert isinstance(data, bytes)
            session.receive(data, loop.time())
            assert session.state is not State.CLOSED, session.error
            await peer._flush()
        return peer

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for message in self.session.data_to_send(loop.time()):
            await self.ws.send(message)
            self.last_sent = loop.time()

    async def send(self, *frames: Frame) -> None:
        """Send ``frames`` in one message."""
        for frame in frames:
            self.session.send(frame)
        await self._flush()

    async def expect(self, kind: type[F], timeout: float = TIMEOUT) -> F:
        """The next frame of type ``kind``; any other frame (but a heartbeat) fails the test."""
        await asyncio.wait_for(self._receive(), timeout)
        frame = self._inbox.pop(0)
        assert isinstance(frame, kind), f"expected {kind.type}, got {frame}"
        return frame

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._inbox:
            data = await self.ws.recv()
            assert isinstance(data, bytes)
            for frame in self.session.receive(data, loop.time()):
                if isinstance(frame, DoneAck):
                    self.acks.append(frame)
                else:
                    self._inbox.append(frame)

    async def close(self) -> None:
        await self.ws.close()


class Gauge:
    """Counts task bodies running at once; every body waits for ``gate`` before it returns."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[Any] = []
        self.gate = asyncio.Event()

    async def hold(self, label: Any) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started.append(label)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return label

    async def until_running(self, n: int) -> None:
        await wait_until(lambda: self.running == n, what=f"{n} running task bodies")


def count_jobs(db: Path, task: str) -> int:
    """How many rows the manager's SQLite file holds for ``task`` (read-only, a new connection)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE task = ?", (task,)).fetchone()
    return int(n)


def stored_job(db: Path, job_id: str) -> dict[str, Any] | None:
    """The row of one job in the manager's SQLite file, as a dict (blobs left encoded)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else dict(row)


async def registered(running: Any, queue: str, *names: str) -> None:
    """Wait until the manager knows ``names`` in ``queue`` (another link registered them)."""
    await wait_until(lambda: all((queue, n) in running.manager.core.tasks for n in names),
                     what=f"{queue}.{names} to be registered")


async def work(n: int) -> int:
    """The task raw workers serve (and real workers stand in for them with)."""
    return n * 2


WORK_SPEC = TaskSpec("work", "ETL", describe(work)).to_wire()


async def raw_worker(running: Any, name: str, credit: int = 1) -> RawPeer:
    """A hand-driven worker serving ``ETL.work``, known to the manager when this returns."""
    peer = await RawPeer.connect(running.host, running.port, name=name)
    frames: list[Frame] = [Register([WORK_SPEC])]
    if credit:
        frames.append(Credit(credit))
    await peer.send(*frames)
    await registered(running, "ETL", "work")
    return peer
