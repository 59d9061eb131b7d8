"""Which tasks exist: the specs workers advertised, checked for cycles, persisted and reloaded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import ConfigurationError, ProtocolError, StoreError, UnknownTask
from ..protocol.frames import Submit
from ..store import Store
from ..tasks import TaskSpec, find_cycle, spec_from_wire
from .background import Background
from .dispatcher import Key
from .scheduler import Scheduler

log = logging.getLogger("easyjobs.manager")

TARGETS_GRACE = 1.0
"""Seconds after a register before its tasks' run_after and on_failure targets are checked."""


class TaskRegistry:
    """Task specs by (queue, name); a new spec replaces the old one and updates its schedule."""

    def __init__(self, store: Store, background: Background, scheduler: Scheduler) -> None:
        self._store = store
        self._background = background
        self._scheduler = scheduler
        self.specs: dict[Key, TaskSpec] = {}
        self._warned: set[tuple[str, str, str, str]] = set()

    async def load(self) -> None:
        """Take back the specs stored by earlier runs (their schedules start with them)."""
        for queue, name, spec in await self._store.load_tasks():
            try:
                self.specs[(queue, name)] = spec_from_wire(spec)
            except ProtocolError:
                log.warning("ignoring an unreadable stored spec for %s.%s", queue, name)

    async def reload(self) -> None:
        """Another manager saved specs: take them, and their schedules, from the store."""
        try:
            await self.load()
        except StoreError:
            log.warning("could not reload the task specs; they are read again at the next "
                        "change or catch-up")
            return
        for spec in self.specs.values():
            self._scheduler.update(spec)

    def _warn_unknown_targets(self, keys: list[Key]) -> None:
        """A run_after or on_failure target no one has registered: most likely a typo, and
        each job that reaches it fails (run_after) or goes unhandled (on_failure)."""
        for key in keys:
            spec = self.specs.get(key)
            if spec is not None:
                self._warn_targets_of(spec)

    def _warn_targets_of(self, spec: TaskSpec) -> None:
        targets = [("run_after", name) for name in spec.options.run_after]
        if spec.options.on_failure is not None:
            targets.append(("on_failure", spec.options.on_failure))
        for option, name in targets:
            warning = (spec.queue, spec.name, option, name)
            if (spec.queue, name) not in self.specs and warning not in self._warned:
                self._warned.add(warning)  # once per manager, not at every reconnect
                log.warning("task %s.%s: its %s task %r is not registered in queue %r (by "
                            "any worker or the manager) yet; until it is, %s", spec.queue,
                            spec.name, option, name, spec.queue,
                            "each success creates a job that fails with UnknownTask"
                            if option == "run_after" else "its failures go unhandled")

    def spec(self, queue: str, task: str) -> TaskSpec | None:
        return self.specs.get((queue, task))

    def check(self, frame: Submit) -> None:
        """Raise ``UnknownTask`` or ``InvalidArguments`` unless ``frame`` can become a job.

        A caller's arguments must also match the annotations; the jobs the manager makes itself
        (schedules, run_before, run_after, on_failure) only have to bind, as they always have.
        """
        spec = self.specs.get((frame.queue, frame.task))
        if spec is None:
            raise UnknownTask(f"no worker has registered task {frame.task!r} in queue "
                              f"{frame.queue!r}")
        spec.check(frame.args, frame.kwargs)
        spec.check_types(frame.args, frame.kwargs)

    def add(self, wire_specs: list[dict[str, Any]]) -> list[TaskSpec]:
        """Register the specs of one ``register`` frame, all or none.

        Raises ``ConfigurationError`` (sent back to the worker) for a spec this manager cannot
        read or a run_before cycle.
        """
        try:
            specs = [spec_from_wire(data) for data in wire_specs]
        except ProtocolError as exc:  # e.g. a timezone this manager does not know
            raise ConfigurationError(
                f"{exc}; no task of this register frame was registered") from None
        cycle = find_cycle({**self.specs, **{(s.queue, s.name): s for s in specs}})
        if cycle:
            raise ConfigurationError(
                f"run_before cycle: {' -> '.join(cycle)}; these tasks were refused: "
                f"{', '.join(s.name for s in specs)}")
        for spec in specs:
            self.specs[(spec.queue, spec.name)] = spec
            self._scheduler.update(spec)
        # A worker that registers its tasks one by one (the original docs' example does) names
        # targets it registers a moment later: look once they have had the time to arrive.
        asyncio.get_running_loop().call_later(
            TARGETS_GRACE, self._warn_unknown_targets, [(s.queue, s.name) for s in specs])
        self._background.write(
            self._store.save_tasks([(s.queue, s.name, s.to_wire()) for s in specs]),
            "task specs")
        return specs
