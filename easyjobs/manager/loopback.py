"""The manager's own link: tasks registered with ``manager.task`` run in an ``EasyJobsWorker``
whose link loops back into the core instead of crossing a WebSocket, so they follow the same
runner, flow control and rules as any remote worker.

Frames cross on a later loop iteration and through the msgpack codec, as on a socket: no reply
arrives before the call that caused it returns, and a task cannot mutate the manager's copy of
its arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import EasyJobsError
from ..protocol.frames import Frame, decode_message, encode_frame
from ..remote import Calls
from .core import Core
from .peers import Peer


class _LoopbackPeer(Peer):
    """The core's view of the loopback: frames sent to it reach the link."""

    def __init__(self, link: LoopbackLink, name: str) -> None:
        super().__init__("loopback", name, "worker")
        self.local = True
        self._link = link

    def send(self, frame: Frame) -> None:
        if self._link.is_open:
            copy = _copy(frame, self._link.max_message)
            asyncio.get_running_loop().call_soon(self._link.deliver, copy)


class LoopbackLink:
    """A link with the same surface as ``workers.link.Link``, wired straight into ``core``."""

    def __init__(self, core: Core, max_message: int, name: str = "manager") -> None:
        self._core = core
        self.max_message = max_message
        self.name = name
        self.peer = _LoopbackPeer(self, name)
        self.calls = Calls(self.send)
        self.is_open = False
        self.error: EasyJobsError | None = None
        self.on_frame: Callable[[Frame], None] | None = None
        self.on_open: Callable[[], None] | None = None
        self.on_lost: Callable[[], None] | None = None

    def send(self, frame: Frame) -> None:
        """Local worker or caller -> core."""
        copy = _copy(frame, self.max_message)
        asyncio.get_running_loop().call_soon(self._to_core, copy)

    def _to_core(self, frame: Frame) -> None:
        if self.is_open:
            self._core.handle(self.peer, [frame])

    def deliver(self, frame: Frame) -> None:
        """Core -> local worker or caller."""
        if not self.calls.handle(frame) and self.on_frame is not None:
            self.on_frame(frame)

    async def start(self, connect_timeout: float = 0.0) -> None:
        self._core.connect(self.peer)
        self.is_open = True
        if self.on_open is not None:
            self.on_open()

    async def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self._core.disconnect(self.peer)
            if self.on_lost is not None:
                self.on_lost()


def _copy(frame: Frame, max_message: int) -> Frame:
    """The frame as the other side of a socket would see it (raises ``SerializationError``),
    held to the same size limit as the manager's WebSocket peers."""
    return decode_message(encode_frame(frame, max_message), max_message)[0]
