"""The dedicated PostgreSQL connection on which a manager hears the other managers' news.

It LISTENs on the store's channel over a connection of its own (never a pooled one, which could
be reset under it), with the store's keepalives, so a dead server or a half-open socket is
noticed in seconds. Notifications sent while it is away are lost for good, so after every
(re)connect it calls ``on_connect`` first and the manager catches up from the tables; delivery
never depends on a poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from .signals import Signals

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("easyjobs.store")

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


class Listener:
    """Hears ``channel`` and hands each notification's news to ``on_signals``."""

    def __init__(self, connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
                 channel: str, where: str, on_signals: Callable[[Signals], None],
                 on_connect: Callable[[], None], origin: str | None = None) -> None:
        self._connect = connect
        self._channel = channel
        self._where = where
        self._on_signals = on_signals
        self.origin = origin
        """This manager's id: its own news, which it acted on already, is skipped unread."""
        self._on_connect = on_connect
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        """Set while LISTEN is in place (tests wait on it after killing the connection)."""
        self._tried = asyncio.Event()

    async def start(self) -> None:
        """Returns once LISTEN is in place, or its first attempt failed (it then retries)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._tried.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _hear(self, payload: str) -> None:
        try:
            if self.origin is not None and Signals.origin_of(payload) == self.origin:
                return
            self._on_signals(Signals.decode(payload))
        except Exception:  # a bug of ours must not end the listening
            log.exception("the news from another manager could not be handled")

    async def _run(self) -> None:
        import psycopg
        from psycopg import sql
        wait = RETRY_FIRST_S
        lost = False
        while True:
            try:
                self._conn = await self._connect()
                await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self.connected.set()
                self._tried.set()
                if lost:
                    log.info("the listener reconnected to PostgreSQL %s; catching up", self._where)
                lost, wait = False, RETRY_FIRST_S
                try:
                    self._on_connect()
                except Exception:  # a bug of ours must not end the listening
                    log.exception("could not catch up after connecting")
                async for notify in self._conn.notifies():
                    self._hear(notify.payload)
            except (psycopg.Error, StoreError, OSError) as exc:
                self.connected.clear()
                self._tried.set()
                if not lost:
                    log.warning("the listener lost PostgreSQL %s (%s); news from other managers "
                                "waits until it reconnects", self._where, type(exc).__name__)
                lost = True
            finally:
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)
