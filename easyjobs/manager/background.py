"""Work the manager does not wait for: continuations after a store answer, and write-behind.

Every store operation is *issued* where the decision is made, in the order the decisions are
made, and the store applies writes in the order they were issued. Only what happens after the
store answers runs later, in a continuation. So write order follows from the code's order, not
from when asyncio starts a task. Both kinds of background work log their failures here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..errors import StoreError

log = logging.getLogger("easyjobs.manager")

T = TypeVar("T")


def issue(operation: Awaitable[T]) -> asyncio.Future[T]:
    """Start a store operation now (in call order) and return its outcome to await later."""
    return asyncio.ensure_future(operation)


class Background:
    """Tracks continuations and write-behind until they finish; ``drain`` waits for them all."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        self.on_store_error: Callable[[StoreError, str], None] = _log_store_error
        """Told of every write-behind ``StoreError`` with what was being written."""

    def spawn(self, continuation: Coroutine[Any, Any, None]) -> None:
        """Run ``continuation`` (it awaits an operation already issued); log if it raises."""
        task = asyncio.get_running_loop().create_task(continuation)
        task.add_done_callback(_log_continuation)
        self._track(task)

    def write(self, operation: Awaitable[Any], what: str) -> None:
        """A store write nobody awaits: issued now; a failure is logged with ``what``.

        The job it concerns stays recoverable: the store still holds its previous state.
        """
        future = issue(operation)
        future.add_done_callback(lambda done: self._written(done, what))
        self._track(future)

    def _written(self, future: asyncio.Future[Any], what: str) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, StoreError):
            self.on_store_error(exc, what)
        elif exc is not None:
            log.error("store write (%s) failed unexpectedly", what,
                      exc_info=(type(exc), exc, exc.__traceback__))

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for every pending continuation and write (continuations may issue more)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _log_continuation(task: asyncio.Task[None]) -> None:
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        log.error("%s failed (a bug of ours)", task.get_coro().__qualname__,  # type: ignore[union-attr]
                  exc_info=(type(exc), exc, exc.__traceback__))


def _log_store_error(exc: StoreError, what: str) -> None:
    log.error("could not record %s in the store: %s", what, exc)
