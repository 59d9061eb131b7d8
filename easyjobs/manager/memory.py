"""Give freed memory back to the OS once broken or hostile peers are dropped.

A dropped connection leaves reference cycles behind (its connection, session and peer objects
and the error that ended it), which hold what it could not send until Python's cyclic
collector runs a full pass, which it seldom does; and glibc keeps freed heap pages for reuse. So
after peers that made the manager hold large frames are gone the process would stay at its
peak RSS, round after round. ``Trimmer.soon`` runs a full collection, then asks glibc to release
its free pages (``malloc_trim``), once ``DELAY`` seconds have passed without another drop: a
flood of drops costs one of each when it ends. Where there is no ``malloc_trim`` (musl, macOS,
Windows) only the collection runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

DELAY = 5.0
"""Seconds between a drop and the trim: by then the pump has given up on the socket
(``CLOSE_GRACE``) and the server has aborted it, freeing its buffers."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):
        return None
    return trim


class Trimmer:
    """Schedules one ``malloc_trim`` ``DELAY`` seconds after the last call to ``soon``."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._handle: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        self.cancel()
        self._handle = asyncio.get_running_loop().call_later(DELAY, self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        gc.collect()
        if self._trim is not None:
            self._trim(0)
