"""This manager's lease in a store several managers share: renewed on a timer, and the fence
that keeps a manager cut off from the database from assigning jobs others may take over.

Each renewal extends the lease to ``LEASE_S`` past the database's clock, and takes over the
jobs of managers whose lease expired (``Store.renew``). The manager trusts its lease only until
``LEASE_S - MARGIN_S`` after the renewal was *sent*, a time the database's expiry cannot come
before: past it, dispatch is held, so it has stopped assigning before any other manager can
requeue its jobs. A lease found gone (this manager was taken over) holds dispatch for good: the
jobs it held belong to others now, and ``/healthz`` tells the operator to restart it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..errors import SerializationError, StoreError
from ..jobs import JobRecord
from ..store import LEASE_S, Store
from .dispatcher import Dispatcher

log = logging.getLogger("easyjobs.manager")

RENEW_S = LEASE_S / 5
"""Seconds between renewals."""
MARGIN_S = LEASE_S / 5
"""How long before the lease's end this manager stops trusting it."""


class Lease:
    """Renews ``owner``'s lease while the manager runs (only on a shared store)."""

    def __init__(self, store: Store, owner: str, dispatcher: Dispatcher,
                 taken: Callable[[list[JobRecord]], None],
                 workers: Callable[[], list[dict[str, Any]]]) -> None:
        self._store = store
        self.owner = owner
        self._workers = workers
        self._dispatcher = dispatcher
        self._taken = taken
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.lost = False
        """True once another manager took this one's jobs over."""
        self._holding = False
        self.on_renewed: list[Callable[[], None]] = []
        """Called after each renewal that found the lease alive."""

    @property
    def problem(self) -> str | None:
        """Why this manager does not assign jobs because of its lease, or None."""
        if self.lost:
            return "this manager's lease was taken over by other managers: restart it"
        if self._holding:
            return "this manager cannot renew its lease in the store"
        return None

    def start(self, joined: float) -> None:
        """Begin renewing the lease ``take_back`` made, sent at loop time ``joined``."""
        if self._store.shared:
            self._trust(joined)
            self._task = asyncio.get_running_loop().create_task(self._renew_forever(),
                                                                name="easyjobs lease")

    async def stop(self) -> None:
        """Stop renewing and leave: every job held is left to the other managers at once."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        if self._expiry is not None:
            self._expiry.cancel()
        if not self.lost:
            try:
                await self._store.leave(self.owner)
            except StoreError:
                log.warning("could not end this manager's lease; the others take its jobs "
                            "over once it expires (within %.0f s)", LEASE_S)

    async def _renew_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RENEW_S)  # the renewal period, not a synchronisation
            sent = loop.time()
            try:
                taken = await self._store.renew(self.owner)
            except StoreError:
                continue  # still trusted until the expiry timer says otherwise
            if taken is None:
                self._lose()
                return
            self._trust(sent)
            try:  # what the other managers list of this one's workers
                await self._store.share_workers(self.owner, self._workers())
            except (StoreError, SerializationError):
                log.debug("could not share this manager's workers", exc_info=True)
            for renewed in self.on_renewed:
                try:
                    renewed()
                except Exception:  # a bug of ours must not end the renewals
                    log.exception("could not act on the lease's renewal")
            if taken:
                log.info("took over %d waiting or retrying job(s) from managers whose lease "
                         "expired", len(taken))
                try:
                    self._taken(taken)
                except Exception:  # a bug of ours must not end the renewals
                    log.exception("could not hold the jobs taken over")

    def _trust(self, sent: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._holding:
            self._holding = False
            self._dispatcher.hold("lease", False)
            log.warning("this manager renewed its lease again; it assigns jobs again")
        self._expiry = asyncio.get_running_loop().call_at(
            sent + LEASE_S - MARGIN_S, self._expired)

    def _expired(self) -> None:
        log.error("this manager could not renew its lease in the store for %.0f s; it stops "
                  "assigning jobs until it can", LEASE_S - MARGIN_S)
        self._holding = True
        self._dispatcher.hold("lease", True)

    def _lose(self) -> None:
        self.lost = True
        if self._expiry is not None:
            self._expiry.cancel()
        self._holding = True
        self._dispatcher.hold("lease", True)
        log.error("this manager's lease expired and other managers took its jobs over; it "
                  "assigns nothing more: restart it")
