"""A TCP proxy on 127.0.0.1 between a peer and the manager, that a test can make misbehave as a
network path would: stall (stop forwarding without closing), swallow (read and drop what the
peer sends), or cut (close). Each applies to the connections open at that moment; later ones
go through normally, so a peer that reconnects finds a working path."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Path:
    """One proxied connection: the peer's side, the manager's side, and what flows."""

    peer: asyncio.StreamWriter
    manager: asyncio.StreamWriter
    up: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while bytes from the peer reach the manager."""
    down: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while bytes from the manager reach the peer."""
    swallowing: bool = False


class TcpProxy:
    """``await TcpProxy(manager_port).start()``; point the peer at ``.port``; ``close()``."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self.paths: list[_Path] = []
        self.swallowed = 0
        """Bytes the peer sent that were dropped (``swallow``)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stall(self, up: bool = True, down: bool = True) -> None:
        """Stop forwarding (peer->manager if ``up``, manager->peer if ``down``); the sockets
        stay open and unread, so the kernel buffers behind them fill, as on a dead path."""
        for path in self.paths:
            if up:
                path.up.clear()
            if down:
                path.down.clear()

    def swallow(self) -> None:
        """From now on, what the peer sends on its current connections is read and dropped."""
        for path in self.paths:
            path.swallowing = True

    def cut(self) -> None:
        """Close the current connections on both sides."""
        for path in self.paths:
            path.peer.transport.abort()
            path.manager.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        manager_reader, manager_writer = await asyncio.open_connection("127.0.0.1", self._target)
        path = _Path(writer, manager_writer)
        path.up.set()
        path.down.set()
        self.paths.append(path)
        for source, sink, flowing, upstream in ((reader, manager_writer, path.up, True),
                                                (manager_reader, writer, path.down, False)):
            task = asyncio.get_running_loop().create_task(
                self._pump(path, source, sink, flowing, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, path: _Path, source: asyncio.StreamReader,
                    sink: asyncio.StreamWriter, flowing: asyncio.Event, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                await flowing.wait()
                data = await source.read(1 << 16)
                if not data:
                    break
                await flowing.wait()  # a stall holds what it read, as a dead path would
                if upstream and path.swallowing:
                    self.swallowed += len(data)
                    continue
                sink.write(data)
                await sink.drain()
        sink.close()
