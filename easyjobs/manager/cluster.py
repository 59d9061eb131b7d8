"""What this manager does with the news of the managers sharing its store (PostgreSQL).

Every write transaction tells all managers, itself included, what it changed (``Signals``):
queued jobs left free, jobs finished, task specs saved, a pause. Each manager acts only on what
concerns it: it claims for the tasks its workers serve, re-reads the jobs its clients watch or
its waiting jobs depend on, drops the jobs it held that another manager finished, reloads the
specs, the credentials (closing the links of revoked ones) and the directory of managers,
pauses its workers. An outcome carried in the news is pushed to its watchers as it is, without
a re-read. News missed while the listener was away is made up by ``caught_up``, which re-reads
all of that from the tables.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import StoreError
from ..protocol.frames import Result
from ..store import Store
from ..store.signals import Signals
from .access import Credentials
from .background import Background
from .claims import Claims
from .forwarding import Forwarding
from .lifecycle import Lifecycle
from .registry import TaskRegistry
from .watchers import Watchers

log = logging.getLogger("easyjobs.manager")

RELOAD_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6)
"""Seconds between the tries of re-reading the credentials after news of them."""


class ClusterNews:
    """Turns the store's notifications into this manager's claims, pushes and reloads."""

    def __init__(self, store: Store, claims: Claims, watchers: Watchers, lifecycle: Lifecycle,
                 registry: TaskRegistry, credentials: Credentials, background: Background,
                 forwarding: Forwarding, pause: Callable[[bool], None]) -> None:
        self._forwarding = forwarding
        self._credentials = credentials
        self._store = store
        self._claims = claims
        self._watchers = watchers
        self._lifecycle = lifecycle
        self._registry = registry
        self._background = background
        self._pause = pause

    def heard(self, news: Signals) -> None:
        if news.all_ready or news.ready:
            self._lifecycle.retry_stranded()
        if news.all_ready:
            self._background.spawn(self._reclaim())
        elif news.ready:
            self._claims.wake(news.ready)
        self._forwarding.heard(news)
        for job_id, (status, value, error) in news.outcomes.items():
            self._watchers.deliver(Result(job_id, status, value, error))
        if news.all_done:  # re-reads skip the jobs delivered above (no one watches them now)
            self._watchers.reread_all()
        else:
            for job_id in news.done:
                self._watchers.reread(job_id)
        if news.all_done or news.done or news.all_cancelled or news.cancelled:
            self._lifecycle.finished_elsewhere(None if news.all_done else news.done,
                                               None if news.all_cancelled else news.cancelled)
        if news.tasks:
            self._background.spawn(self._registry.reload())
        if news.credentials:
            self._background.spawn(self._reload_credentials())
        if news.workers:
            self._forwarding.refresh()
        if news.pause is not None:
            self._pause(news.pause)

    def caught_up(self) -> None:
        """The listener (re)connected: whatever it missed is re-read from the tables."""
        self.heard(Signals(all_ready=True, all_done=True, all_cancelled=True, tasks=True,
                           credentials=True, workers=True))

    async def _reload_credentials(self) -> None:
        """Re-read the credentials, a few times if need be: a revocation elsewhere must not
        stay unheard here for want of one read (a stop waits for this: the tries are few)."""
        for delay in RELOAD_DELAYS:
            try:
                await self._credentials.load()
                return
            except StoreError:
                log.warning("could not re-read the credentials after another manager changed "
                            "them; trying again in %gs", delay)
            await asyncio.sleep(delay)
        log.error("the credentials could not be re-read: a revocation made on another manager "
                  "takes effect here at the next news of credentials or database reconnect")

    async def _reclaim(self) -> None:
        try:
            tasks = await self._store.queued_tasks()
        except StoreError:
            log.warning("could not read which tasks have queued jobs; they are claimed when "
                        "the next news or catch-up comes")
            return
        self._claims.wake(tasks)
