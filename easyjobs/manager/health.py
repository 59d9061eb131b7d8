"""Whether the store can write: while it cannot, dispatch stops and a probe waits for it.

A job whose outcome cannot be recorded must not be run again and again, so the first write the
store refuses as unwritable (disk full, read-only file) holds every assignment, and submits are
refused with ``StoreError`` at once. A probe write with backoff finds out when writes succeed
again; then dispatch resumes and the outcomes that could not be recorded are recorded. The
failure is logged when it starts, at most once per ``log_every`` seconds while it lasts, and
when it ends: never once per job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..errors import StoreError
from ..store import Store
from .dispatcher import Dispatcher

log = logging.getLogger("easyjobs.manager")


class StoreHealth:
    """Tracks the store's writability for the manager; ``failed`` is told of every failure."""

    def __init__(self, store: Store, dispatcher: Dispatcher, *, probe_first: float = 0.2,
                 probe_max: float = 10.0, log_every: float = 30.0) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._probe_first = probe_first
        self._probe_max = probe_max
        self._log_every = log_every
        self.reason: str | None = None
        """Why writes fail, while they do; None while the store writes."""
        self._failures = 0
        self._logged_at = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._checked_at = -1.0
        self.on_writable: list[Callable[[], None]] = []
        """Called once writes succeed again (after dispatch resumed)."""

    @property
    def writable(self) -> bool:
        return self.reason is None

    def failed(self, exc: StoreError, what: str) -> None:
        """A store operation failed; an unwritable store stops dispatch until a probe passes."""
        if self._store.writable:  # not a full disk: a one-off failure of that write
            log.error("could not record %s in the store: %s", what, exc)
            return
        self._failures += 1
        now = time.monotonic()
        if self.reason is None:
            self.reason = self._store.last_error or str(exc)
            self._logged_at = now
            log.error("%s; dispatch is held and submits are refused until writes succeed "
                      "again (probing with backoff)", self.reason)
            self._dispatcher.hold("store", True)
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_writable(),
                                                                 name="easyjobs store probe")
        elif now - self._logged_at >= self._log_every:
            self._logged_at = now
            log.error("the job store is still unwritable (%d failed writes so far): %s",
                      self._failures, self.reason)

    async def _probe_until_writable(self) -> None:
        delay = self._probe_first
        while True:
            await asyncio.sleep(delay)  # backoff between probes, not synchronisation
            try:
                await self._store.probe()
            except StoreError:
                delay = min(self._probe_max, delay * 2)
                continue
            break
        log.warning("the job store writes again after %d failed writes; dispatch resumes",
                    self._failures)
        self.reason, self._failures, self._probe = None, 0, None
        self._dispatcher.hold("store", False)
        for resume in self.on_writable:
            resume()

    async def check(self) -> str | None:
        """The reason the store cannot write, or None; probes it (at most once a second)."""
        now = time.monotonic()
        if self.reason is None and now - self._checked_at >= 1.0:
            self._checked_at = now
            try:
                await self._store.probe()
            except StoreError as exc:
                self.failed(exc, "a health probe")
                return self.reason or str(exc)
        return self.reason

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
