"""Cron schedules: the manager fires each scheduled task once per tick, on the loop's timer.

One timer per (queue, task), however many workers advertise the task. Whether a tick fires is
decided by the store (``fire_schedule`` records the tick and inserts the job in one transaction),
so a tick never fires twice, also across restarts. Ticks missed while the manager was down are
skipped, not replayed: the next tick is computed from the later of now and the last fire.
Schedules are in UTC unless the task names a ``timezone``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from ..tasks import TaskSpec

log = logging.getLogger("easyjobs.scheduler")

Key = tuple[str, str]


@dataclass(slots=True)
class _Entry:
    spec: TaskSpec
    last_fire: float | None
    next_fire: float = 0.0
    timer: asyncio.TimerHandle | None = None


def next_tick(schedule: str, timezone: str | None, after: float) -> float:
    """The first tick of ``schedule`` strictly after ``after`` (seconds since the epoch)."""
    base = datetime.fromtimestamp(after, tz=ZoneInfo(timezone or "UTC"))
    return float(croniter(schedule, base).get_next(float))


class Scheduler:
    """Keeps one timer per scheduled task; ``fire(spec, tick)`` creates the tick's job and
    says whether it did."""

    def __init__(
        self,
        fire: Callable[[TaskSpec, float], Coroutine[Any, Any, bool]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._last_fires: dict[Key, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def load(self, last_fires: dict[Key, float]) -> None:
        """Last fire times from the store, read at start-up."""
        self._last_fires.update(last_fires)

    def update(self, spec: TaskSpec) -> None:
        """A task was registered: start, change or stop its schedule."""
        key = (spec.queue, spec.name)
        entry = self._entries.get(key)
        if entry is not None:
            same = (entry.spec.options.schedule, entry.spec.options.timezone) == (
                spec.options.schedule, spec.options.timezone)
            entry.spec = spec
            if same:
                return
            if entry.timer is not None:
                entry.timer.cancel()
            del self._entries[key]
        if spec.options.schedule is None:
            return
        entry = _Entry(spec, self._last_fires.get(key))
        self._entries[key] = entry
        self._plan(key, entry)

    def _plan(self, key: Key, entry: _Entry) -> None:
        now = self._clock()
        after = max(now, entry.last_fire or now)
        schedule = entry.spec.options.schedule
        assert schedule is not None
        entry.next_fire = next_tick(schedule, entry.spec.options.timezone, after)
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_at(loop.time() + entry.next_fire - now, self._due, key)

    def _due(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        tick = entry.next_fire
        task = asyncio.get_running_loop().create_task(self._fire_tick(key, entry, tick))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._plan(key, entry)

    async def _fire_tick(self, key: Key, entry: _Entry, tick: float) -> None:
        if await self._fire(entry.spec, tick):  # a skipped tick is not a fire
            entry.last_fire = self._last_fires[key] = max(tick, entry.last_fire or tick)

    def info(self) -> list[dict[str, Any]]:
        """Every schedule with its last and next fire time."""
        return [
            {
                "queue": key[0],
                "task": key[1],
                "schedule": entry.spec.options.schedule,
                "timezone": entry.spec.options.timezone or "UTC",
                "last_fire": entry.last_fire,
                "next_fire": entry.next_fire,
            }
            for key, entry in sorted(self._entries.items())
        ]

    async def stop(self) -> None:
        """Cancel every timer and wait for fires in progress."""
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
        self._entries.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
