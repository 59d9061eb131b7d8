"""Which queued jobs this manager holds in memory: a bounded look-ahead per task, claimed from
the store's queue as workers drain it; every other queued job waits in the store alone.

A task has a *backlog* while the store may hold queued jobs of it that no manager holds: from
start-up if the store had some, and whenever the look-ahead overflows. Without one, a new job
of the task is held in memory (and may go to a worker before its insert commits) as long as the
look-ahead has room. With one, the job is inserted free and waits its turn in the store, which
hands jobs out in priority-then-FIFO order, so a new job never overtakes an older one waiting
there; the backlog ends when a claim finds fewer jobs than it asked for and no job was left in
the store meanwhile. A claim is a store write, so it sees every insert issued before it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

from ..errors import StoreError
from ..jobs import TERMINAL, JobRecord, JobStatus
from ..store import Store
from .background import Background, issue
from .dispatcher import Dispatcher, Key
from .health import StoreHealth

SLOTS_AHEAD = 4
"""Ready jobs held per slot of the workers serving a task (their credit and jobs in flight)."""


class Claims:
    """Decides where each new queued job waits, and refills the look-ahead from the store."""

    def __init__(self, store: Store, owner: str, dispatcher: Dispatcher, background: Background,
                 health: StoreHealth, lookahead: int,
                 activate: Callable[[list[JobRecord]], None]) -> None:
        self.owner = owner
        self._store = store
        self._dispatcher = dispatcher
        self._background = background
        self._health = health
        self._lookahead = lookahead
        self._activate = activate
        self._backlog: set[Key] = set()
        self._spills: dict[Key, int] = {}
        """key -> how many of its jobs were left free in the store (a claim's evidence clock)"""
        self._claiming: set[Key] = set()

    def wake(self, keys: Iterable[Key]) -> None:
        """The store may hold free queued jobs of these tasks (found at start-up, or left
        there by another manager): claim them if a worker here serves them."""
        for key in keys:
            self._backlog.add(key)
            self._spills[key] = self._spills.get(key, 0) + 1  # a claim in flight may miss them
            self.top_up(key)

    def place(self, records: Iterable[JobRecord], placing: Counter[Key] | None = None
              ) -> set[Key]:
        """Set the owner of new unfinished jobs before their insert; returns the tasks whose
        jobs were left free in the store (``top_up`` them once the insert is issued).

        A queued job is held only if a worker here serves its task (any manager's workers may
        claim it from the store otherwise). A job that waits for dependencies or a retry is
        always held: it needs this manager's attention, not a worker's. ``placing`` counts the
        jobs held by earlier calls whose activation is still to come (one message's submits),
        so that they count against the look-ahead too.
        """
        placing = Counter() if placing is None else placing
        spilled: set[Key] = set()
        for record in records:
            if record.status in TERMINAL:
                continue
            key = (record.queue, record.task)
            if record.status is not JobStatus.QUEUED:
                record.owner = self.owner
                continue
            if (key not in self._backlog and self._dispatcher.serves(key)
                    and self._dispatcher.ready(key) + placing[key] < self._target(key)):
                record.owner = self.owner
                placing[key] += 1
                continue
            record.owner = None
            self._backlog.add(key)
            self._spills[key] = self._spills.get(key, 0) + 1
            spilled.add(key)
        return spilled

    def top_up(self, key: Key) -> None:
        """Claim jobs of ``key`` when its look-ahead is below three quarters of its target
        (``_target``) and a worker serves it."""
        if (key not in self._backlog or key in self._claiming or not self._health.writable
                or not self._dispatcher.serves(key)):
            return
        target = self._target(key)
        want = target - self._dispatcher.ready(key)
        if want < 1 or want * 4 < target:
            return
        self._claiming.add(key)
        spills = self._spills.setdefault(key, 0)
        claimed = issue(self._store.claim(key[0], key[1], want, self.owner))
        self._background.spawn(self._claimed(key, want, spills, claimed))

    def _target(self, key: Key) -> int:
        """How many ready jobs of ``key`` to hold: ``lookahead`` at most, and no more than
        its unpaused workers here can take in a few rounds, so that a manager with slow or
        paused workers leaves the rest of the queue to the other managers' workers."""
        return min(self._lookahead, SLOTS_AHEAD * self._dispatcher.slots(key))

    def top_up_all(self) -> None:
        """Refill every task with a backlog (after the store writes again)."""
        for key in list(self._backlog):
            self.top_up(key)

    async def _claimed(self, key: Key, want: int, spills: int,
                       claimed: asyncio.Future[list[JobRecord]]) -> None:
        try:
            records = await claimed
        except StoreError as exc:
            self._health.failed(exc, f"a claim of {key[0]}.{key[1]} jobs")
            return  # claimed again once the store writes (top_up_all)
        finally:
            self._claiming.discard(key)
        if len(records) < want and self._spills[key] == spills:
            self._backlog.discard(key)  # no job was left free since the claim was issued
        self._activate(records)
        self.top_up(key)
