"""What a store's commits cost, kept by the store and read by the manager's ``/metrics``.

Two cumulative histograms: how long each commit took (from BEGIN to COMMIT returning) and how
many writes it carried (group commit puts many in one). The writer records a commit with one
lock and a few additions; nothing here knows Prometheus: the collector reads ``snapshot``.
"""

from __future__ import annotations

import bisect
import threading
from typing import NamedTuple

DURATION_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: a commit on a local disk takes well under 5 ms; a remote database a round trip."""
SIZE_BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
"""Writes per commit, up to the backends' ``MAX_BATCH``."""


class Buckets(NamedTuple):
    """One histogram as Prometheus shows it: cumulative counts per upper bound (the last one
    ``inf``, equal to the count of observations) and their sum."""

    cumulative: list[tuple[float, int]]
    total: float


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, the last for values above all
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> Buckets:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return Buckets(cumulative, self.total)


class CommitStats:
    """Every commit's duration and size; safe to record from the writer's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._duration = _Histogram(DURATION_BOUNDS)
        self._size = _Histogram(SIZE_BOUNDS)

    def committed(self, seconds: float, writes: int) -> None:
        """A transaction of ``writes`` writes committed ``seconds`` after it began."""
        with self._lock:
            self._duration.observe(seconds)
            self._size.observe(writes)

    def snapshot(self) -> tuple[Buckets, Buckets]:
        """(durations in seconds, writes per commit), consistent with each other."""
        with self._lock:
            return self._duration.buckets(), self._size.buckets()
