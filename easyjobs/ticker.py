"""Drives a session's clock from the event loop's timer: heartbeats and timeouts, no polling.

Shared by both I/O pumps (the manager's endpoint and the worker's link).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .protocol.session import ClientSession, ServerSession, State


class Ticker:
    """Calls ``session.tick`` whenever it asked to be called, then ``wake`` to flush output."""

    def __init__(self, session: ServerSession | ClientSession, wake: Callable[[], None]) -> None:
        self._session = session
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self.reschedule()

    def reschedule(self) -> None:
        """Tick now (e.g. after the handshake changed the deadlines) and plan the next tick."""
        self.cancel()
        deadline = self._session.tick(self._loop.time())
        self._wake()
        if self._session.state is not State.CLOSED:
            self._handle = self._loop.call_at(deadline, self.reschedule)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
