"""The watchdog of a threaded link: it tells a blocked event loop from a dead manager.

It runs on the link's I/O loop and pings the owner's loop (the worker's, where tasks run). A
ping left unanswered for ``STALL_WARNING`` seconds means some task is blocking that loop: it is
logged with the task's name while it lasts, and again with its length when it ends. The
heartbeats go on meanwhile from the link's thread, so the manager keeps the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("easyjobs.link")

STALL_WARNING = 1.0
"""Seconds the owner's loop may be blocked before the watchdog logs the task blocking it."""

WATCHDOG_INTERVAL = 0.25
"""How often the watchdog pings the owner's loop (a stall's length is known to about this)."""


class Watchdog:
    """``start()`` and ``stop()`` on the I/O loop; ``post`` runs a callable on the owner's."""

    def __init__(self, owner_loop: asyncio.AbstractEventLoop,
                 io_loop: asyncio.AbstractEventLoop,
                 post: Callable[..., Any]) -> None:
        self._owner_loop = owner_loop
        self._io_loop = io_loop
        self._post = post
        self._ping = 0
        self._ping_at = 0.0
        self._pong = 0
        self._pong_at = 0.0
        self._stall: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        self._io_loop.call_soon(self._check)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def _answer(self, ping: int) -> None:
        """On the owner's loop: it is running callbacks again."""
        self._pong_at = time.monotonic()
        self._pong = ping

    def _check(self) -> None:
        """Ping the owner's loop; log a ping left unanswered as a stall, naming its task."""
        now = time.monotonic()
        if self._pong == self._ping:
            if self._stall is not None:
                log.warning("%s blocked the event loop for %.1fs", self._stall,
                            self._pong_at - self._ping_at)
                self._stall = None
            self._ping += 1
            self._ping_at = now
            self._post(self._answer, self._ping)
        elif not self._owner_loop.is_running():  # stopped, not blocked: nothing to blame
            self._ping_at = now
        elif self._stall is None and now - self._ping_at >= STALL_WARNING:
            task = asyncio.current_task(self._owner_loop)
            self._stall = f"task {task.get_name()!r}" if task is not None else "a callback"
            log.warning("%s has blocked the event loop for %.1fs so far (heartbeats go on "
                        "from the link's thread; move blocking work to a thread or process)",
                        self._stall, now - self._ping_at)
        if not self._stopped:
            self._timer = self._io_loop.call_later(WATCHDOG_INTERVAL, self._check)
